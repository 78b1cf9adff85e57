//! ONNX Runtime's graph optimization levels, the closed set a model's
//! `optimization.graph_optimization_level` names.

use ort::session::builder::GraphOptimizationLevel as OrtLevel;
use serde::Deserialize;

/// How much ONNX Runtime rewrites a model's graph before running it.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GraphOptimizationLevel {
    /// No graph optimizations.
    Disable,
    /// Semantics-preserving rewrites: constant folding, redundant nodes removed.
    Basic,
    /// Basic plus complex node fusions.
    Extended,
    /// Extended plus layout optimizations (the default).
    #[default]
    All,
}

impl GraphOptimizationLevel {
    /// The name a config file uses.
    pub fn name(self) -> &'static str {
        match self {
            GraphOptimizationLevel::Disable => "disable",
            GraphOptimizationLevel::Basic => "basic",
            GraphOptimizationLevel::Extended => "extended",
            GraphOptimizationLevel::All => "all",
        }
    }

    /// ONNX Runtime's own value.
    pub fn to_ort(self) -> OrtLevel {
        match self {
            GraphOptimizationLevel::Disable => OrtLevel::Disable,
            GraphOptimizationLevel::Basic => OrtLevel::Level1,
            GraphOptimizationLevel::Extended => OrtLevel::Level2,
            GraphOptimizationLevel::All => OrtLevel::Level3,
        }
    }

    /// Triton's `optimization.graph.level` as its ONNX Runtime backend reads
    /// it: -1 basic, 1 extended, anything else all.
    pub fn from_triton(level: i64) -> GraphOptimizationLevel {
        match level {
            -1 => GraphOptimizationLevel::Basic,
            1 => GraphOptimizationLevel::Extended,
            _ => GraphOptimizationLevel::All,
        }
    }

    /// The level written in Triton's model configuration, the inverse of
    /// [`Self::from_triton`]. Triton's ONNX Runtime backend has no level
    /// that disables optimizations; `disable` is written as -1, which
    /// Triton's model_config.proto documents as "disabled".
    pub fn triton_level(self) -> i32 {
        match self {
            GraphOptimizationLevel::Disable | GraphOptimizationLevel::Basic => -1,
            GraphOptimizationLevel::Extended => 1,
            GraphOptimizationLevel::All => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Holder {
        level: GraphOptimizationLevel,
    }

    #[test]
    fn a_bad_level_is_refused_with_the_valid_ones() {
        let err = toml::from_str::<Holder>("level = \"max\"").unwrap_err();
        let message = err.message();
        assert!(message.contains("unknown variant `max`"), "{message}");
        assert!(
            message.contains("disable") && message.contains("extended"),
            "{message}"
        );
        let ok: Holder = toml::from_str("level = \"extended\"").unwrap();
        assert_eq!(ok.level, GraphOptimizationLevel::Extended);
    }

    #[test]
    fn triton_levels_round_trip() {
        for level in [
            GraphOptimizationLevel::Basic,
            GraphOptimizationLevel::Extended,
            GraphOptimizationLevel::All,
        ] {
            let back = GraphOptimizationLevel::from_triton(i64::from(level.triton_level()));
            assert_eq!(back, level, "{}", level.name());
        }
    }
}

//! The roles one mlserve process can take.

use std::fmt;
use std::str::FromStr;

/// A service role. `mlserve` runs every compiled-in role; `--role` picks a subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// External REST entry point: auth, rate limits, routing, canary split.
    Gateway,
    /// Registered models, versions, aliases and artifacts.
    Registry,
    /// Feature definitions, online/offline stores and transforms.
    Features,
    /// Model repository, dynamic batching and ONNX Runtime execution.
    Inference,
    /// Training workflows and their executors.
    Training,
    /// Metrics aggregation, SLOs, drift and the autoscaling signal.
    Monitoring,
}

impl Role {
    /// Every role, in start-up order.
    pub const ALL: [Role; 6] = [
        Role::Registry,
        Role::Features,
        Role::Inference,
        Role::Training,
        Role::Monitoring,
        Role::Gateway,
    ];

    /// The role's name as given on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Registry => "registry",
            Role::Features => "features",
            Role::Inference => "inference",
            Role::Training => "training",
            Role::Monitoring => "monitoring",
        }
    }

    /// Parses a comma-separated list (possibly given several times), checking
    /// each name against the roles compiled into this binary.
    pub fn parse_list<S: AsRef<str>>(items: &[S], compiled: &[Role]) -> Result<Vec<Role>, String> {
        let mut roles = Vec::new();
        for item in items {
            for name in item
                .as_ref()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                let role: Role = name.parse()?;
                if !compiled.contains(&role) {
                    return Err(format!(
                        "role '{name}' is not compiled into this binary; valid roles: {}",
                        join(compiled)
                    ));
                }
                if !roles.contains(&role) {
                    roles.push(role);
                }
            }
        }
        if roles.is_empty() {
            roles.extend_from_slice(compiled);
        }
        roles.sort();
        Ok(roles)
    }
}

fn join(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role '{s}'; valid roles: {}", join(&Role::ALL)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_comma_separated_repeatable_and_deduplicated() {
        let all = Role::ALL;
        let roles = Role::parse_list(&["inference,gateway", "inference"], &all).unwrap();
        assert_eq!(roles, vec![Role::Gateway, Role::Inference]);
    }

    #[test]
    fn empty_means_every_compiled_role() {
        let empty: [&str; 0] = [];
        assert_eq!(
            Role::parse_list(&empty, &[Role::Inference]).unwrap(),
            vec![Role::Inference]
        );
    }

    #[test]
    fn unknown_and_compiled_out_roles_name_the_valid_ones() {
        let err = Role::parse_list(&["bogus"], &[Role::Inference]).unwrap_err();
        assert!(
            err.contains("unknown role 'bogus'") && err.contains("inference"),
            "{err}"
        );
        let err = Role::parse_list(&["gateway"], &[Role::Inference]).unwrap_err();
        assert!(
            err.contains("not compiled") && err.contains("valid roles: inference"),
            "{err}"
        );
    }
}

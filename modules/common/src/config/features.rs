//! The features role: configuration section `[features]`.

use serde::{Deserialize, Serialize};

/// The features role.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FeaturesConfig {}

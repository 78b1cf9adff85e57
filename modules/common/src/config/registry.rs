//! The registry role: configuration section `[registry]`.

use serde::{Deserialize, Serialize};

/// The registry role.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {}

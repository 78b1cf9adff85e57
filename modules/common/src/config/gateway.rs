//! The gateway role: configuration section `[gateway]`.

use serde::{Deserialize, Serialize};

/// The gateway role.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {}

//! The event bus (alias moves, model versions, data arrival): configuration section `[events]`.

use serde::{Deserialize, Serialize};

/// The event bus (alias moves, model versions, data arrival).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {}

//! The in-memory online store (the embedded default).

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;

use super::{OnlineRow, OnlineStore, Stored};
use crate::error::{FeaturesError, Result};

/// Latest rows in a map guarded by a lock held only for map operations.
#[derive(Default)]
pub struct MemoryStore {
    rows: RwLock<HashMap<(String, String), (i64, String)>>,
}

#[async_trait]
impl OnlineStore for MemoryStore {
    async fn write(&self, view: &str, rows: &[OnlineRow], _ttl_secs: i64) -> Result<usize> {
        let mut map = self
            .rows
            .write()
            .map_err(|_| FeaturesError::Internal("online store lock poisoned".into()))?;
        let mut written = 0;
        for row in rows {
            let entry = map.entry((view.to_string(), row.key.clone()));
            match entry {
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    if e.get().0 <= row.event_ts {
                        e.insert((row.event_ts, row.values_json.clone()));
                        written += 1;
                    }
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert((row.event_ts, row.values_json.clone()));
                    written += 1;
                }
            }
        }
        Ok(written)
    }

    async fn read(&self, keys: &[(String, String)]) -> Result<Vec<Stored>> {
        let map = self
            .rows
            .read()
            .map_err(|_| FeaturesError::Internal("online store lock poisoned".into()))?;
        Ok(keys.iter().map(|k| map.get(k).cloned()).collect())
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

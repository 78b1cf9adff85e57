//! get-online-features: many `view:feature` references for many entities in
//! one online-store round trip, each value with a status and event time.

use mlserve_proto::features::{
    EntityRow, FeatureValue, GetOnlineFeaturesResponse, OnlineFeatureRow, NOT_FOUND, NULL,
    OUTSIDE_MAX_AGE, PRESENT,
};
use serde_json::Value;

use crate::catalog::Catalog;
use crate::error::{invalid, FeaturesError, Result};
use crate::online::OnlineStore;
use crate::values::{entity_key, join_keys, now_micros};

/// The requested features of one view, with their positions in the request.
#[derive(Debug, Clone)]
pub struct ViewRefs {
    /// The view.
    pub view: String,
    /// (position in the request, feature name).
    pub features: Vec<(usize, String)>,
}

/// Parses and checks `view:feature` references, grouped by view in order of
/// first appearance.
pub fn parse_refs(catalog: &Catalog, refs: &[String]) -> Result<Vec<ViewRefs>> {
    if refs.is_empty() {
        return Err(invalid("no features requested"));
    }
    let mut groups: Vec<ViewRefs> = Vec::new();
    for (position, reference) in refs.iter().enumerate() {
        let (view_name, feature) = reference.split_once(':').ok_or_else(|| {
            invalid(format!(
                "feature reference '{reference}' must be 'view:feature'"
            ))
        })?;
        let view = catalog.view(view_name)?;
        if !view.fields.iter().any(|f| f.name == feature) {
            return Err(FeaturesError::NotFound(format!(
                "feature view '{view_name}' has no feature '{feature}'"
            )));
        }
        match groups.iter_mut().find(|g| g.view == view_name) {
            Some(group) => group.features.push((position, feature.to_string())),
            None => groups.push(ViewRefs {
                view: view_name.to_string(),
                features: vec![(position, feature.to_string())],
            }),
        }
    }
    Ok(groups)
}

/// The error of a lookup naming more entities than `max_entities`;
/// `requested` says how many it named (a count, or "at least N" from a
/// parse that stopped at the first entity past the limit).
pub fn too_many_entities(requested: impl std::fmt::Display, max_entities: usize) -> FeaturesError {
    invalid(format!(
        "{requested} entities requested, more than the limit of {max_entities}"
    ))
}

/// Looks up `refs` for `entities` in `store`.
pub async fn get_online(
    catalog: &Catalog,
    store: &dyn OnlineStore,
    refs: &[String],
    entities: &[EntityRow],
    max_entities: usize,
) -> Result<GetOnlineFeaturesResponse> {
    if entities.len() > max_entities {
        return Err(too_many_entities(entities.len(), max_entities));
    }
    let groups = parse_refs(catalog, refs)?;
    let mut keys = Vec::with_capacity(groups.len() * entities.len());
    for group in &groups {
        let view = catalog.view(&group.view)?;
        if !view.online {
            return Err(invalid(format!(
                "feature view '{}' is not online",
                view.name
            )));
        }
        let join = join_keys(catalog, view);
        for entity in entities {
            keys.push((
                view.name.clone(),
                entity_key(&join, &entity.keys, &view.name)?,
            ));
        }
    }
    let stored = store.read(&keys).await?;
    let now = now_micros();
    let mut rows: Vec<OnlineFeatureRow> = (0..entities.len())
        .map(|_| OnlineFeatureRow {
            values: vec![FeatureValue::default(); refs.len()],
        })
        .collect();
    for (g, group) in groups.iter().enumerate() {
        let ttl = catalog.view(&group.view)?.ttl_secs;
        for (e, row) in rows.iter_mut().enumerate() {
            let found = &stored[g * entities.len() + e];
            let object = match found {
                Some((_, json)) => Some(
                    serde_json::from_str::<serde_json::Map<String, Value>>(json).map_err(|e| {
                        FeaturesError::Internal(format!("online value of '{}': {e}", group.view))
                    })?,
                ),
                None => None,
            };
            for (position, feature) in &group.features {
                row.values[*position] = match (found, &object) {
                    (Some((ts, _)), Some(object)) => status_of(object.get(feature), *ts, ttl, now),
                    _ => FeatureValue {
                        value_json: "null".into(),
                        status: NOT_FOUND.into(),
                        event_ts: 0,
                    },
                };
            }
        }
    }
    Ok(GetOnlineFeaturesResponse {
        features: refs.to_vec(),
        rows,
    })
}

fn status_of(value: Option<&Value>, ts: i64, ttl_secs: i64, now: i64) -> FeatureValue {
    let expired = ttl_secs > 0 && now.saturating_sub(ts) > ttl_secs.saturating_mul(1_000_000);
    let (value_json, status) = match value {
        _ if expired => ("null".to_string(), OUTSIDE_MAX_AGE),
        None | Some(Value::Null) => ("null".to_string(), NULL),
        Some(v) => (v.to_string(), PRESENT),
    };
    FeatureValue {
        value_json,
        status: status.into(),
        event_ts: ts,
    }
}

//! The REST bodies under `/v1/features/`: plain JSON values under plain
//! names. The gRPC messages carry dynamically typed values as JSON text
//! (`value_json`, `spec_json`, `rows_json`, maps of JSON text) and tensors
//! as bytes; the mapping between both shapes lives here and nowhere else.
//!
//! Request bodies reject unknown fields, so a misspelt (or old) name is an
//! error instead of a silently empty request.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use mlserve_proto::features as pb;
use mlserve_proto::http::{decode_base64_payload, AtMost};
use serde::de::{DeserializeSeed, Error as _, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::error::{invalid, FeaturesError, Result};
use crate::lookup::too_many_entities;

/// A JSON object: column (or join key) → value.
pub type Object = Map<String, Value>;

/// An object's values as the JSON text the gRPC messages carry.
fn to_text(object: Object) -> HashMap<String, String> {
    object
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect()
}

/// JSON text of a service answer as a JSON value (empty text is null).
fn to_value(text: &str, what: &str) -> Result<Value> {
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text)
        .map_err(|e| FeaturesError::Internal(format!("{what} is not valid JSON text: {e}")))
}

/// Decodes standard base64, with or without a `data:...;base64,` prefix.
fn from_base64(text: &str, what: &str) -> Result<Vec<u8>> {
    decode_base64_payload(text).map_err(|e| invalid(format!("{what} is not valid base64: {e}")))
}

/// `POST /v1/features/apply`: definitions to create or update.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyBody {
    /// Entities.
    #[serde(default)]
    pub entities: Vec<pb::Entity>,
    /// Feature views.
    #[serde(default)]
    pub feature_views: Vec<pb::FeatureView>,
}

impl From<ApplyBody> for pb::ApplyRequest {
    fn from(body: ApplyBody) -> Self {
        pb::ApplyRequest {
            entities: body.entities,
            feature_views: body.feature_views,
        }
    }
}

/// What apply (or storing a pipeline) did, one line per object.
#[derive(Debug, Serialize)]
pub struct ChangesBody {
    /// "created entity driver (v1)", "unchanged ...".
    pub changes: Vec<String>,
}

impl From<pb::ApplyResponse> for ChangesBody {
    fn from(response: pb::ApplyResponse) -> Self {
        ChangesBody {
            changes: response.changes,
        }
    }
}

/// `GET /v1/features/entities`.
#[derive(Debug, Serialize)]
pub struct EntitiesBody {
    /// Every entity.
    pub entities: Vec<pb::Entity>,
}

/// `GET /v1/features/views`.
#[derive(Debug, Serialize)]
pub struct ViewsBody {
    /// Every feature view.
    pub feature_views: Vec<pb::FeatureView>,
    /// How fresh each one's data is, in the same order.
    pub freshness: Vec<pb::ViewFreshness>,
}

/// One row to write: `{"values": {"driver_id": 1, "rate": 0.5}, "event_ts": ...}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowBody {
    /// Join keys and feature values.
    pub values: Object,
    /// Event time, microseconds since the Unix epoch.
    #[serde(default)]
    pub event_ts: i64,
}

impl From<RowBody> for pb::Row {
    fn from(row: RowBody) -> Self {
        pb::Row {
            values: to_text(row.values),
            event_ts: row.event_ts,
        }
    }
}

/// `POST /v1/features/ingest`: rows appended to a view's offline store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestBody {
    /// The feature view written to.
    pub feature_view: String,
    /// The rows.
    pub rows: Vec<RowBody>,
}

impl From<IngestBody> for pb::IngestRequest {
    fn from(b: IngestBody) -> Self {
        pb::IngestRequest {
            feature_view: b.feature_view,
            rows: b.rows.into_iter().map(Into::into).collect(),
        }
    }
}

/// `POST /v1/features/push`: fresh rows, online by default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushBody {
    /// The feature view written to.
    pub feature_view: String,
    /// The rows.
    pub rows: Vec<RowBody>,
    /// `online` (default), `offline` or `online_and_offline`.
    #[serde(default)]
    pub to: String,
}

impl From<PushBody> for pb::PushRequest {
    fn from(b: PushBody) -> Self {
        pb::PushRequest {
            feature_view: b.feature_view,
            rows: b.rows.into_iter().map(Into::into).collect(),
            to: b.to,
        }
    }
}

/// Rows written by ingest or push.
#[derive(Debug, Serialize)]
pub struct WrittenBody {
    /// Rows appended to the offline store.
    pub offline_rows: i64,
    /// Rows written to the online store.
    pub online_rows: i64,
}

impl From<pb::WriteResponse> for WrittenBody {
    fn from(r: pb::WriteResponse) -> Self {
        WrittenBody {
            offline_rows: r.offline_rows,
            online_rows: r.online_rows,
        }
    }
}

/// `POST /v1/features/materialize`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaterializeBody {
    /// Views (default: every online view).
    #[serde(default)]
    pub feature_views: Vec<String>,
    /// Start of the event-time range (ignored when incremental).
    #[serde(default)]
    pub start_ts: i64,
    /// End of the event-time range.
    pub end_ts: i64,
    /// Start after the previous run's end.
    #[serde(default)]
    pub incremental: bool,
}

impl From<MaterializeBody> for pb::MaterializeRequest {
    fn from(b: MaterializeBody) -> Self {
        pb::MaterializeRequest {
            feature_views: b.feature_views,
            start_ts: b.start_ts,
            end_ts: b.end_ts,
            incremental: b.incremental,
        }
    }
}

/// What materialize wrote.
#[derive(Debug, Serialize)]
pub struct MaterializedBody {
    /// One entry per view.
    pub views: Vec<MaterializedView>,
}

/// One view's materialization.
#[derive(Debug, Serialize)]
pub struct MaterializedView {
    /// The view.
    pub feature_view: String,
    /// Start of the range copied.
    pub start_ts: i64,
    /// End of the range copied.
    pub end_ts: i64,
    /// Entities written to the online store.
    pub rows_written: i64,
}

impl From<pb::MaterializeResponse> for MaterializedBody {
    fn from(r: pb::MaterializeResponse) -> Self {
        let views = r
            .views
            .into_iter()
            .map(|v| MaterializedView {
                feature_view: v.feature_view,
                start_ts: v.start_ts,
                end_ts: v.end_ts,
                rows_written: v.rows_written,
            })
            .collect();
        MaterializedBody { views }
    }
}

/// An entity row: `{"keys": {"driver_id": 1001}}`, with a time for
/// historical retrieval.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityBody {
    /// Join key → value.
    pub keys: Object,
    /// Historical retrieval only: the row's time.
    #[serde(default)]
    pub event_ts: i64,
}

impl From<EntityBody> for pb::EntityRow {
    fn from(e: EntityBody) -> Self {
        pb::EntityRow {
            keys: to_text(e.keys),
            event_ts: e.event_ts,
        }
    }
}

/// `POST /v1/features/online` and `POST /v1/features/historical`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupBody {
    /// `view:feature` references.
    pub features: Vec<String>,
    /// The entities, in order.
    #[serde(default)]
    pub entities: Vec<EntityBody>,
}

impl LookupBody {
    /// Parses the body of `POST /v1/features/online`, refusing it as soon as
    /// the parser reaches entity `max_entities + 1`: a lookup over the limit
    /// costs its body and `max_entities` parsed entities, never its whole
    /// list (a million entities once cost 180 MB before the service counted
    /// them). The error is the service's own for a lookup over the limit.
    pub fn parse_online(body: &[u8], max_entities: usize) -> Result<LookupBody> {
        let over = Cell::new(false);
        let mut de = serde_json::Deserializer::from_slice(body);
        let parsed = LookupSeed {
            max_entities,
            over: &over,
        }
        .deserialize(&mut de)
        .and_then(|body| de.end().map(|()| body));
        parsed.map_err(|e| {
            if over.get() {
                too_many_entities(format!("at least {}", max_entities + 1), max_entities)
            } else {
                invalid(format!("invalid request body: {e}"))
            }
        })
    }
}

/// [`LookupBody`] with its entities bounded (the derived `Deserialize`,
/// unbounded, serves historical retrieval).
struct LookupSeed<'a> {
    max_entities: usize,
    /// Set when the entities passed the bound.
    over: &'a Cell<bool>,
}

/// The fields of [`LookupBody`].
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum LookupField {
    Features,
    Entities,
}

impl<'de> DeserializeSeed<'de> for LookupSeed<'_> {
    type Value = LookupBody;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<LookupBody, D::Error> {
        deserializer.deserialize_struct("LookupBody", &["features", "entities"], self)
    }
}

impl<'de> Visitor<'de> for LookupSeed<'_> {
    type Value = LookupBody;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a lookup: {\"features\": [...], \"entities\": [...]}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LookupBody, A::Error> {
        let (mut features, mut entities) = (None, None);
        while let Some(field) = map.next_key::<LookupField>()? {
            match field {
                LookupField::Features if features.is_some() => {
                    return Err(A::Error::duplicate_field("features"))
                }
                LookupField::Features => features = Some(map.next_value()?),
                LookupField::Entities if entities.is_some() => {
                    return Err(A::Error::duplicate_field("entities"))
                }
                LookupField::Entities => {
                    let over = self.over;
                    entities = Some(map.next_value_seed(AtMost::new(self.max_entities, || {
                        over.set(true);
                        String::from("too many entities")
                    }))?);
                }
            }
        }
        Ok(LookupBody {
            features: features.ok_or_else(|| A::Error::missing_field("features"))?,
            entities: entities.unwrap_or_default(),
        })
    }
}

impl From<LookupBody> for pb::GetOnlineFeaturesRequest {
    fn from(b: LookupBody) -> Self {
        pb::GetOnlineFeaturesRequest {
            features: b.features,
            entities: b.entities.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<LookupBody> for pb::GetHistoricalFeaturesRequest {
    fn from(b: LookupBody) -> Self {
        pb::GetHistoricalFeaturesRequest {
            features: b.features,
            entities: b.entities.into_iter().map(Into::into).collect(),
        }
    }
}

/// Online features: `{"features": [...], "rows": [{"values": [{"value": 0.5,
/// "status": "PRESENT", "event_ts": ...}]}]}`.
#[derive(Debug, Serialize)]
pub struct OnlineBody {
    /// The requested references; each row's values follow this order.
    pub features: Vec<String>,
    /// One per requested entity, in order.
    pub rows: Vec<OnlineRow>,
}

/// The values of one entity.
#[derive(Debug, Serialize)]
pub struct OnlineRow {
    /// One per requested feature.
    pub values: Vec<FeatureValue>,
}

/// One feature value with its status.
#[derive(Debug, Serialize)]
pub struct FeatureValue {
    /// The value (null unless PRESENT).
    pub value: Value,
    /// PRESENT, NOT_FOUND, NULL or OUTSIDE_MAX_AGE.
    pub status: String,
    /// Event time of the value, microseconds since the Unix epoch.
    pub event_ts: i64,
}

impl TryFrom<pb::GetOnlineFeaturesResponse> for OnlineBody {
    type Error = FeaturesError;

    fn try_from(r: pb::GetOnlineFeaturesResponse) -> Result<Self> {
        let rows = r
            .rows
            .into_iter()
            .map(|row| {
                let values = row
                    .values
                    .into_iter()
                    .map(|v| {
                        Ok(FeatureValue {
                            value: to_value(&v.value_json, "a feature value")?,
                            status: v.status,
                            event_ts: v.event_ts,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(OnlineRow { values })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(OnlineBody {
            features: r.features,
            rows,
        })
    }
}

/// A model's pipeline: `{"model": "fraud", "kind": "tabular", "spec": {...}}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineBody {
    /// The model.
    pub model: String,
    /// tabular | image | text (optional in a request: the spec says it).
    #[serde(default)]
    pub kind: String,
    /// The spec (see [`crate::transform::PipelineSpec`]).
    pub spec: Value,
}

impl From<PipelineBody> for pb::Pipeline {
    fn from(b: PipelineBody) -> Self {
        pb::Pipeline {
            model: b.model,
            kind: b.kind,
            spec_json: b.spec.to_string(),
        }
    }
}

impl TryFrom<pb::Pipeline> for PipelineBody {
    type Error = FeaturesError;

    fn try_from(p: pb::Pipeline) -> Result<Self> {
        Ok(PipelineBody {
            spec: to_value(&p.spec_json, "a pipeline spec")?,
            model: p.model,
            kind: p.kind,
        })
    }
}

/// `GET /v1/features/pipelines`.
#[derive(Debug, Serialize)]
pub struct PipelinesBody {
    /// Every pipeline.
    pub pipelines: Vec<PipelineBody>,
}

impl TryFrom<pb::ListPipelinesResponse> for PipelinesBody {
    type Error = FeaturesError;

    fn try_from(r: pb::ListPipelinesResponse) -> Result<Self> {
        let pipelines = r
            .pipelines
            .into_iter()
            .map(PipelineBody::try_from)
            .collect::<Result<_>>()?;
        Ok(PipelinesBody { pipelines })
    }
}

/// `POST /v1/features/transform`: `rows` (tabular: JSON objects of join keys
/// and request values), `images` (base64, a data URL prefix allowed) or
/// `texts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformBody {
    /// The model whose pipeline runs.
    pub model: String,
    /// Tabular rows.
    #[serde(default)]
    pub rows: Vec<Object>,
    /// Encoded JPEG/PNG images as base64.
    #[serde(default)]
    pub images: Vec<String>,
    /// Texts.
    #[serde(default)]
    pub texts: Vec<String>,
}

impl TryFrom<TransformBody> for pb::TransformRequest {
    type Error = FeaturesError;

    fn try_from(b: TransformBody) -> Result<Self> {
        let images = b
            .images
            .iter()
            .enumerate()
            .map(|(i, text)| from_base64(text, &format!("image {i}")))
            .collect::<Result<_>>()?;
        Ok(pb::TransformRequest {
            model: b.model,
            rows_json: b
                .rows
                .into_iter()
                .map(|row| Value::Object(row).to_string())
                .collect(),
            images,
            texts: b.texts,
        })
    }
}

/// A transform's input tensors.
#[derive(Debug, Serialize)]
pub struct TensorsBody {
    /// The tensors, in input order.
    pub tensors: Vec<TensorBody>,
}

/// One input tensor: its raw little-endian contents as base64.
#[derive(Debug, Serialize)]
pub struct TensorBody {
    /// Input name.
    pub name: String,
    /// Open Inference Protocol datatype (FP32, INT64, ...).
    pub datatype: String,
    /// Shape.
    pub shape: Vec<i64>,
    /// Little-endian raw bytes, standard base64.
    pub data: String,
}

impl From<pb::TransformResponse> for TensorsBody {
    fn from(r: pb::TransformResponse) -> Self {
        let engine = base64::engine::general_purpose::STANDARD;
        let tensors = r
            .tensors
            .into_iter()
            .map(|t| TensorBody {
                data: engine.encode(&t.data),
                name: t.name,
                datatype: t.datatype,
                shape: t.shape,
            })
            .collect();
        TensorsBody { tensors }
    }
}

#[cfg(test)]
#[path = "bodies_tests.rs"]
mod tests;

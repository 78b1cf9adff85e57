//! Serde adapters for the feature messages: fields that carry JSON text on the
//! gRPC wire are plain JSON values in REST bodies, and bytes are base64.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

fn to_value<E: serde::ser::Error>(text: &str) -> Result<Value, E> {
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text).map_err(|e| E::custom(format!("invalid JSON text: {e}")))
}

/// Serializes JSON text as the JSON value it holds.
pub fn serialize<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    to_value::<S::Error>(text)?.serialize(s)
}

/// Deserializes any JSON value into its JSON text.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Value::deserialize(d)?.to_string())
}

/// Maps of JSON text, as JSON objects.
pub mod map {
    use std::collections::HashMap;

    use super::*;

    /// Serializes each value as the JSON it holds.
    pub fn serialize<S: Serializer>(
        map: &HashMap<String, String>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut out = serde_json::Map::new();
        for (k, v) in map {
            out.insert(k.clone(), to_value::<S::Error>(v)?);
        }
        Value::Object(out).serialize(s)
    }

    /// Deserializes a JSON object into JSON text per key.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<HashMap<String, String>, D::Error> {
        let map = serde_json::Map::deserialize(d)?;
        Ok(map.into_iter().map(|(k, v)| (k, v.to_string())).collect())
    }
}

/// Lists of JSON text, as JSON arrays.
pub mod vec {
    use super::*;

    /// Serializes each element as the JSON it holds.
    pub fn serialize<S: Serializer>(items: &[String], s: S) -> Result<S::Ok, S::Error> {
        let values = items
            .iter()
            .map(|t| to_value::<S::Error>(t))
            .collect::<Result<Vec<_>, _>>()?;
        values.serialize(s)
    }

    /// Deserializes a JSON array into JSON text per element.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Ok(Vec::<Value>::deserialize(d)?
            .into_iter()
            .map(|v| v.to_string())
            .collect())
    }
}

/// Bytes as a base64 string.
pub mod base64 {
    use ::base64::Engine;

    use super::*;

    /// Encodes as standard base64.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        ::base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .serialize(s)
    }

    /// Decodes standard base64.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        ::base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| D::Error::custom(format!("invalid base64: {e}")))
    }
}

/// Lists of bytes as base64 strings.
pub mod base64_vec {
    use ::base64::Engine;

    use super::*;

    /// Encodes each element as standard base64.
    pub fn serialize<S: Serializer>(items: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let engine = ::base64::engine::general_purpose::STANDARD;
        items
            .iter()
            .map(|b| engine.encode(b))
            .collect::<Vec<_>>()
            .serialize(s)
    }

    /// Decodes each element from standard base64.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let engine = ::base64::engine::general_purpose::STANDARD;
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| {
                engine
                    .decode(t.as_bytes())
                    .map_err(|e| D::Error::custom(format!("invalid base64: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::features::{FeatureValue, Row};

    #[test]
    fn json_text_fields_are_plain_json_over_rest() {
        let row: Row =
            serde_json::from_str(r#"{"values":{"id":1001,"name":"a","x":null},"event_ts":5}"#)
                .unwrap();
        assert_eq!(row.values["id"], "1001");
        assert_eq!(row.values["name"], "\"a\"");
        assert_eq!(row.values["x"], "null");
        let back = serde_json::to_value(&row).unwrap();
        assert_eq!(back["values"]["name"], "a");
        assert_eq!(back["event_ts"], 5);
        let value = FeatureValue {
            value_json: "0.5".into(),
            status: "PRESENT".into(),
            event_ts: 1,
        };
        assert_eq!(
            serde_json::to_string(&value).unwrap(),
            r#"{"value_json":0.5,"status":"PRESENT","event_ts":1}"#
        );
    }
}

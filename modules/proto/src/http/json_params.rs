//! A JSON `parameters` object of an inference request, as parsed: a short
//! list whose keys borrow the request body where they hold no escapes.
//!
//! A request carries one or two parameters per tensor (`binary_data_size`,
//! `binary_data`), which the HTTP layer takes out; a map with owned keys
//! cost an allocation per key and a tree node per object on every request.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// A `parameters` object: keys in the order given. Parsing only appends;
/// a repeated key keeps its last value (as `serde_json::Map` does), which
/// [`JsonParams::remove`] and [`super::params::infer_params`] resolve in one
/// pass, so a body of many repeated keys costs linear time.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct JsonParams<'de>(Vec<(Cow<'de, str>, Value)>);

impl<'de> JsonParams<'de> {
    /// Takes every entry of `key` out and returns the last one's value.
    pub(super) fn remove(&mut self, key: &str) -> Option<Value> {
        self.0
            .extract_if(.., |(k, _)| k == key)
            .last()
            .map(|(_, v)| v)
    }

    /// Whether `key` is there.
    pub(super) fn contains_key(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }
}

impl<'de> IntoIterator for JsonParams<'de> {
    type Item = (Cow<'de, str>, Value);
    type IntoIter = std::vec::IntoIter<(Cow<'de, str>, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// A key, borrowed from the input when it can be.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a parameter name")
            }

            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for JsonParams<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ParamsVisitor<'a>(PhantomData<JsonParams<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for ParamsVisitor<'a> {
            type Value = JsonParams<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a parameters object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonParams<'a>, A::Error> {
                let mut params = JsonParams(Vec::with_capacity(map.size_hint().unwrap_or(2)));
                while let Some(Key::<'de>(key)) = map.next_key()? {
                    params.0.push((key, map.next_value()?));
                }
                Ok(params)
            }
        }
        deserializer.deserialize_map(ParamsVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_keys_borrow_the_body_and_escaped_ones_are_owned() {
        let body = br#"{"binary_data_size": 8, "a\u0062c": true}"#;
        let params: JsonParams = serde_json::from_slice(body).unwrap();
        let keys: Vec<_> = params.0.iter().map(|(k, _)| k.clone()).collect();
        assert!(matches!(keys[0], Cow::Borrowed("binary_data_size")));
        assert!(matches!(&keys[1], Cow::Owned(k) if k == "abc"));
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_and_remove_takes_it_out() {
        let body = br#"{"k": 1, "other": "x", "k": 2}"#;
        let mut params: JsonParams = serde_json::from_slice(body).unwrap();
        assert!(params.contains_key("other"));
        assert_eq!(params.remove("k"), Some(json!(2)));
        assert_eq!(params.remove("k"), None);
        let rest: Vec<_> = params.into_iter().collect();
        assert_eq!(rest, vec![(Cow::Borrowed("other"), json!("x"))]);
    }

    #[test]
    fn anything_but_an_object_is_refused() {
        for body in [&b"[1]"[..], b"\"x\"", b"3", b"{\"k\": }"] {
            assert!(serde_json::from_slice::<JsonParams>(body).is_err());
        }
    }
}

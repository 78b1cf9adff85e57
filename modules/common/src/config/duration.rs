//! Durations in configuration: humantime strings such as `"30s"`, `"5ms"`,
//! `"1m"` or `"1h 30m"`, everywhere a duration is configured. A bare number
//! is an error that says which unit to add, so `timeout = 500` cannot be
//! read as seconds by one key and milliseconds by another.
//!
//! Used as `#[serde(with = "duration")]` on `Duration` fields and
//! `#[serde(with = "duration::option")]` on `Option<Duration>` fields.

use std::fmt;
use std::time::Duration;

use serde::de::{Error, Visitor};
use serde::{Deserializer, Serializer};

/// Writes a duration the way it is read back (`"1m 30s"`).
pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*value))
}

/// Reads a humantime string; numbers without a unit are refused.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

/// Parses one humantime duration, the form every duration key takes.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("'{text}' is not a duration ({e}); write e.g. \"30s\", \"500ms\", \"1m\"")
    })
}

struct DurationVisitor;

impl DurationVisitor {
    fn unitless<E: Error>(number: impl fmt::Display) -> E {
        E::custom(format!(
            "a duration needs a unit: write \"{number}s\" or \"{number}ms\", not {number}"
        ))
    }
}

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration such as \"30s\", \"500ms\" or \"1m\"")
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<Duration, E> {
        Err(Self::unitless(v))
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<Duration, E> {
        Err(Self::unitless(v))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<Duration, E> {
        Err(Self::unitless(v))
    }
}

/// The same for `Option<Duration>`: absent or a humantime string.
pub mod option {
    use super::*;
    use serde::Deserialize;

    /// Writes `Some` as a humantime string; `None` is skipped by the field's
    /// `skip_serializing_if`, or written as none.
    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => super::serialize(d, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// Reads an optional humantime string.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super")] Duration);
        Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humantime_strings_parse_and_print_back() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5ms"), Ok(Duration::from_millis(5)));
        assert_eq!(parse("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(
            humantime::format_duration(Duration::from_millis(1500)).to_string(),
            "1s 500ms"
        );
        assert!(parse("30").unwrap_err().contains("\"30s\""));
        assert!(parse("soon").is_err());
    }
}

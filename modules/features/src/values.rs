//! Feature values: types, validation of incoming rows, entity keys, times.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::catalog::Catalog;
use crate::error::{invalid, Result};
use mlserve_proto::features::FeatureView;

/// The value types a field or entity may declare.
pub const DTYPES: [&str; 4] = ["int64", "float64", "string", "bool"];

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Parses JSON text carried in a message field.
pub fn parse_json(text: &str, what: &str) -> Result<Value> {
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text).map_err(|e| invalid(format!("{what}: invalid JSON value: {e}")))
}

/// Checks `value` against `dtype`; null always passes. Integers are accepted
/// for float64.
pub fn check_type(value: &Value, dtype: &str, what: &str) -> Result<()> {
    let ok = match (dtype, value) {
        (_, Value::Null) => true,
        ("int64", Value::Number(n)) => n.is_i64(),
        ("float64", Value::Number(_)) => true,
        ("string", Value::String(_)) => true,
        ("bool", Value::Bool(_)) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("{what}: {value} is not a {dtype}")))
    }
}

/// The canonical text of one entity key value: an int64 entity's value is an
/// integer (a string of digits is accepted), a string entity's a string.
fn key_value(value: &Value, value_type: &str, key: &str) -> Result<Value> {
    match (value_type, value) {
        ("int64", Value::Number(n)) if n.is_i64() => Ok(value.clone()),
        ("int64", Value::String(s)) => s
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| invalid(format!("join key '{key}': '{s}' is not an int64"))),
        ("string", Value::String(_)) => Ok(value.clone()),
        ("string", Value::Number(n)) => Ok(Value::String(n.to_string())),
        _ => Err(invalid(format!(
            "join key '{key}': {value} is not a {value_type}"
        ))),
    }
}

/// The join keys of `view`, in order, with their entity's value type.
pub fn join_keys<'a>(catalog: &'a Catalog, view: &'a FeatureView) -> Vec<(&'a str, &'a str)> {
    let mut keys = Vec::new();
    for name in &view.entities {
        if let Some(entity) = catalog.entities.get(name) {
            for key in &entity.join_keys {
                keys.push((key.as_str(), entity.value_type.as_str()));
            }
        }
    }
    keys
}

/// The entity key of `view` for a row of JSON-text columns: the JSON array of
/// its join key values, e.g. `[1001]`.
pub fn entity_key(
    keys: &[(&str, &str)],
    columns: &HashMap<String, String>,
    view: &str,
) -> Result<String> {
    let mut values = Vec::with_capacity(keys.len());
    for (key, value_type) in keys {
        let text = columns.get(*key).ok_or_else(|| {
            invalid(format!(
                "feature view '{view}' needs join key '{key}', which the row lacks"
            ))
        })?;
        values.push(key_value(&parse_json(text, key)?, value_type, key)?);
    }
    Ok(Value::Array(values).to_string())
}

/// Validates a row of `view` (join keys + features) and returns its entity
/// key and its feature values as a JSON object (absent features are null).
pub fn feature_row(
    keys: &[(&str, &str)],
    view: &FeatureView,
    columns: &HashMap<String, String>,
) -> Result<(String, String)> {
    let key = entity_key(keys, columns, &view.name)?;
    let mut values = Map::new();
    for (column, text) in columns {
        if keys.iter().any(|(k, _)| k == column) {
            continue;
        }
        let field = view
            .fields
            .iter()
            .find(|f| &f.name == column)
            .ok_or_else(|| {
                invalid(format!(
                    "feature view '{}' has no field '{column}'",
                    view.name
                ))
            })?;
        let value = parse_json(text, column)?;
        check_type(&value, &field.dtype, &format!("{}.{column}", view.name))?;
        values.insert(column.clone(), value);
    }
    for field in &view.fields {
        values.entry(field.name.clone()).or_insert(Value::Null);
    }
    Ok((key, Value::Object(values).to_string()))
}

/// Parses a time: an integer (microseconds since the epoch) or an RFC 3339
/// UTC text such as `2024-05-01T12:00:00Z` or `2024-05-01 12:00:00.250`.
pub fn parse_time(text: &str) -> Result<i64> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i64>() {
        return Ok(n);
    }
    let bad = || {
        invalid(format!(
            "'{text}' is not a time (microseconds or RFC 3339 UTC)"
        ))
    };
    let given = text;
    let text = text.trim_end_matches('Z').trim_end_matches("+00:00");
    let (date, time) = text.split_once(['T', ' ']).unwrap_or((text, "00:00:00"));
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>());
    let (y, m, day) = match (d.next(), d.next(), d.next()) {
        (Some(Ok(y)), Some(Ok(m)), Some(Ok(day))) => (y, m, day),
        _ => return Err(bad()),
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>());
    let (h, mi, s) = match (t.next(), t.next(), t.next()) {
        (Some(Ok(h)), Some(Ok(mi)), Some(Ok(s))) => (h, mi, s),
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || !(0..=23).contains(&h)
        || !(0..=59).contains(&mi)
        || !(0..=60).contains(&s)
    {
        return Err(bad());
    }
    let micros = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(6).collect();
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        format!("{digits:0<6}").parse::<i64>().map_err(|_| bad())?
    };
    // Days from the civil date (Howard Hinnant's algorithm); a year whose
    // microseconds do not fit an i64 is refused.
    let since_epoch = || {
        let y = if m <= 2 { y.checked_sub(1)? } else { y };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era.checked_mul(146_097)?.checked_add(doe - 719_468)?;
        days.checked_mul(86_400)?
            .checked_add(h * 3600 + mi * 60 + s)?
            .checked_mul(1_000_000)?
            .checked_add(micros)
    };
    since_epoch().ok_or_else(|| {
        invalid(format!(
            "'{given}' is out of range: microseconds since 1970 must fit 64 bits"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_microseconds() {
        assert_eq!(parse_time("0").unwrap(), 0);
        assert_eq!(parse_time("1970-01-02T00:00:00Z").unwrap(), 86_400_000_000);
        assert_eq!(
            parse_time("2024-05-01T12:00:00.25Z").unwrap(),
            1_714_564_800_250_000
        );
        assert_eq!(
            parse_time("2000-03-01 00:00:00").unwrap(),
            951_868_800_000_000
        );
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2024-13-01T00:00:00Z").is_err());
    }

    /// Found by the `features_csv` fuzz target: a year this large overflowed
    /// (a wrong time in the release build, a panic with overflow checks).
    #[test]
    fn years_past_the_i64_range_are_refused() {
        for text in [
            "2022224-01-01T00:00:00Z",
            "9223372036854775807-03-01",
            "-0-01-01",
        ] {
            let err = parse_time(text).unwrap_err();
            assert!(err.to_string().contains(text), "{err}");
        }
        // Negative hours, minutes and seconds are no time either.
        for text in [
            "2024-01-01T-9223372036854775808:00:00",
            "2024-01-01T00:-1:00",
        ] {
            assert!(parse_time(text).is_err(), "{text}");
        }
        // The last year that fits, and the first one that does not.
        assert_eq!(
            parse_time("294247-01-01").unwrap(),
            9_223_371_244_800_000_000
        );
        assert!(parse_time("294248-01-01").is_err());
    }

    #[test]
    fn types_are_checked() {
        assert!(check_type(&Value::from(1), "int64", "x").is_ok());
        assert!(check_type(&Value::from(1.5), "int64", "x").is_err());
        assert!(check_type(&Value::from(1), "float64", "x").is_ok());
        assert!(check_type(&Value::from("a"), "bool", "x").is_err());
        assert!(check_type(&Value::Null, "string", "x").is_ok());
    }

    #[test]
    fn entity_keys_are_canonical() {
        let keys = [("driver_id", "int64"), ("city", "string")];
        let mut columns = HashMap::new();
        columns.insert("driver_id".to_string(), "\"1001\"".to_string());
        columns.insert("city".to_string(), "\"paris\"".to_string());
        assert_eq!(
            entity_key(&keys, &columns, "v").unwrap(),
            r#"[1001,"paris"]"#
        );
        columns.remove("city");
        let err = entity_key(&keys, &columns, "v").unwrap_err();
        assert!(err.to_string().contains("city"), "{err}");
    }
}

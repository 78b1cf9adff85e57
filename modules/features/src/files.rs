//! Rows from files: CSV (RFC 4180) with a header, typed by the feature view's
//! fields and its entities' value types, for `mlserve features ingest`.

use std::collections::HashMap;

use mlserve_proto::features::{Entity, FeatureView, Row};
use serde_json::Value;

use crate::error::{invalid, Result};
use crate::values::parse_time;

/// Splits CSV text into records of fields (quotes, doubled quotes and
/// newlines inside quotes handled).
pub fn parse_csv(text: &str) -> Result<Vec<Vec<String>>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut line = 1;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c);
            }
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                line += 1;
                record.push(std::mem::take(&mut field));
                if !(record.len() == 1 && record[0].is_empty()) {
                    records.push(std::mem::take(&mut record));
                }
                record.clear();
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err(invalid(format!(
            "CSV: unterminated quote before line {line}"
        )));
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    Ok(records)
}

fn typed(cell: &str, dtype: &str, column: &str, line: usize) -> Result<Value> {
    if cell.is_empty() {
        return Ok(Value::Null);
    }
    let bad = || {
        invalid(format!(
            "CSV line {line}: column '{column}': '{cell}' is not a {dtype}"
        ))
    };
    Ok(match dtype {
        "int64" => Value::from(cell.trim().parse::<i64>().map_err(|_| bad())?),
        "float64" => {
            let x = cell.trim().parse::<f64>().map_err(|_| bad())?;
            serde_json::Number::from_f64(x)
                .map(Value::Number)
                .ok_or_else(bad)?
        }
        "bool" => match cell.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err(bad()),
        },
        _ => Value::String(cell.to_string()),
    })
}

/// Checks a file's columns against `view`: every column is the timestamp
/// column, a join key or a field. Returns the timestamp column's index and
/// the type of every other column.
pub fn plan_columns<'a>(
    header: &[String],
    view: &'a FeatureView,
    entities: &'a [Entity],
    timestamp_column: &str,
) -> Result<(usize, HashMap<&'a str, &'a str>)> {
    let mut types: HashMap<&str, &str> = HashMap::new();
    for name in &view.entities {
        let entity = entities
            .iter()
            .find(|e| &e.name == name)
            .ok_or_else(|| invalid(format!("unknown entity '{name}'")))?;
        for key in &entity.join_keys {
            types.insert(key, &entity.value_type);
        }
    }
    for field in &view.fields {
        types.insert(&field.name, &field.dtype);
    }
    let ts_index = header
        .iter()
        .position(|h| h == timestamp_column)
        .ok_or_else(|| invalid(format!("no timestamp column '{timestamp_column}'")))?;
    for (i, name) in header.iter().enumerate() {
        if i != ts_index && !types.contains_key(name.as_str()) {
            return Err(invalid(format!(
                "column '{name}' is neither a join key nor a field of '{}'",
                view.name
            )));
        }
    }
    Ok((ts_index, types))
}

/// Turns CSV text into rows of `view`: every join key and the timestamp
/// column are required; other columns must be fields of the view.
pub fn rows_from_csv(
    text: &str,
    view: &FeatureView,
    entities: &[Entity],
    timestamp_column: &str,
) -> Result<Vec<Row>> {
    let records = parse_csv(text)?;
    let Some((header, body)) = records.split_first() else {
        return Ok(Vec::new());
    };
    let (ts_index, types) = plan_columns(header, view, entities, timestamp_column)?;
    let mut rows = Vec::with_capacity(body.len());
    for (n, record) in body.iter().enumerate() {
        let line = n + 2;
        if record.len() != header.len() {
            return Err(invalid(format!(
                "CSV line {line}: {} fields, the header has {}",
                record.len(),
                header.len()
            )));
        }
        let mut values = HashMap::new();
        let mut event_ts = 0;
        for (i, (name, cell)) in header.iter().zip(record).enumerate() {
            if i == ts_index {
                event_ts =
                    parse_time(cell).map_err(|e| invalid(format!("CSV line {line}: {e}")))?;
            } else {
                values.insert(
                    name.clone(),
                    typed(cell, types[name.as_str()], name, line)?.to_string(),
                );
            }
        }
        rows.push(Row { values, event_ts });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlserve_proto::features::Field;

    #[test]
    fn csv_quotes_and_types() {
        let records = parse_csv("a,b\n\"x,\"\"y\"\"\",2\r\n\n3,\"multi\nline\"\n").unwrap();
        assert_eq!(records[1], vec!["x,\"y\"", "2"]);
        assert_eq!(records[2], vec!["3", "multi\nline"]);
        let view = FeatureView {
            name: "s".into(),
            entities: vec!["d".into()],
            fields: vec![
                Field {
                    name: "rate".into(),
                    dtype: "float64".into(),
                },
                Field {
                    name: "ok".into(),
                    dtype: "bool".into(),
                },
            ],
            ..Default::default()
        };
        let entities = vec![Entity {
            name: "d".into(),
            join_keys: vec!["id".into()],
            value_type: "int64".into(),
            ..Default::default()
        }];
        let rows = rows_from_csv(
            "id,ts,rate,ok\n7,1970-01-01T00:00:01Z,0.5,true\n8,5,,0\n",
            &view,
            &entities,
            "ts",
        )
        .unwrap();
        assert_eq!(rows[0].event_ts, 1_000_000);
        assert_eq!(rows[0].values["rate"], "0.5");
        assert_eq!(rows[1].values["rate"], "null");
        assert_eq!(rows[1].values["ok"], "false");
        let err = rows_from_csv("id,ts,x\n1,2,3\n", &view, &entities, "ts").unwrap_err();
        assert!(err.to_string().contains("'x'"), "{err}");
    }
}

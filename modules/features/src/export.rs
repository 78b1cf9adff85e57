//! Writing historical rows out: newline-delimited JSON or CSV.

use mlserve_proto::features::HistoricalRow;
use serde_json::{Map, Value};

/// Output formats of a training set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line: `event_ts`, the join keys, the features.
    Ndjson,
    /// A header line then one line per row, RFC 4180 quoting.
    Csv,
}

impl Format {
    /// Parses `ndjson`/`json`/`jsonl` or `csv`.
    pub fn parse(text: &str) -> Option<Format> {
        match text {
            "" | "json" | "ndjson" | "jsonl" => Some(Format::Ndjson),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    /// The MIME type of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Ndjson => "application/x-ndjson",
            Format::Csv => "text/csv",
        }
    }
}

fn value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// One row as a JSON line (with its newline).
pub fn json_line(row: &HistoricalRow, features: &[String]) -> String {
    let mut object = Map::new();
    object.insert("event_ts".into(), Value::from(row.event_ts));
    let mut keys: Vec<_> = row.keys.iter().collect();
    keys.sort();
    for (k, v) in keys {
        object.insert(k.clone(), value(v));
    }
    for (name, v) in features.iter().zip(&row.values_json) {
        object.insert(name.clone(), value(v));
    }
    let mut line = Value::Object(object).to_string();
    line.push('\n');
    line
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn csv_value(text: &str) -> String {
    match value(text) {
        Value::Null => String::new(),
        Value::String(s) => csv_field(&s),
        other => csv_field(&other.to_string()),
    }
}

/// The CSV header: `event_ts`, the join keys (sorted), the features.
pub fn csv_header(keys: &[String], features: &[String]) -> String {
    let mut cols = vec!["event_ts".to_string()];
    cols.extend(keys.iter().map(|k| csv_field(k)));
    cols.extend(features.iter().map(|f| csv_field(f)));
    cols.join(",") + "\n"
}

/// One row as a CSV line, columns as in [`csv_header`].
pub fn csv_line(row: &HistoricalRow, keys: &[String]) -> String {
    let mut cols = vec![row.event_ts.to_string()];
    for k in keys {
        cols.push(row.keys.get(k).map(|v| csv_value(v)).unwrap_or_default());
    }
    cols.extend(row.values_json.iter().map(|v| csv_value(v)));
    cols.join(",") + "\n"
}

/// One row as Parquet cells: the time, the join keys, the features.
pub fn parquet_cells(row: &HistoricalRow, keys: &[String]) -> Vec<Value> {
    let mut cells = vec![Value::from(row.event_ts)];
    for k in keys {
        cells.push(row.keys.get(k).map_or(Value::Null, |v| value(v)));
    }
    cells.extend(row.values_json.iter().map(|v| value(v)));
    cells
}

/// The join key columns of a training set: the first row's keys, sorted.
pub fn key_columns(first: Option<&HistoricalRow>) -> Vec<String> {
    let mut keys: Vec<String> = first
        .map(|r| r.keys.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_render_as_json_and_csv() {
        let row = HistoricalRow {
            row: 0,
            keys: [("id".to_string(), "7".to_string())].into_iter().collect(),
            event_ts: 5,
            values_json: vec!["0.5".into(), "\"a,b\"".into(), "null".into()],
        };
        let features = vec!["v:x".to_string(), "v:s".to_string(), "v:n".to_string()];
        assert_eq!(
            json_line(&row, &features),
            "{\"event_ts\":5,\"id\":7,\"v:n\":null,\"v:s\":\"a,b\",\"v:x\":0.5}\n"
        );
        let keys = key_columns(Some(&row));
        assert_eq!(csv_header(&keys, &features), "event_ts,id,v:x,v:s,v:n\n");
        assert_eq!(csv_line(&row, &keys), "5,7,0.5,\"a,b\",\n");
    }
}

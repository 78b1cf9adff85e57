//! Parquet without Arrow: feature rows read through the record API (for
//! `mlserve features ingest`), and tables of JSON values written with typed
//! column writers (for `mlserve features history --out x.parquet`).
//! Synchronous: call from a blocking pool.

use std::sync::Arc;

use bytes::Bytes;
use mlserve_proto::features::{Entity, FeatureView, Row};
use parquet::basic::{Compression, LogicalType, Repetition, TimeUnit, Type as Physical};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::Field;
use parquet::schema::types::Type;
use serde_json::Value;

use crate::error::{invalid, FeaturesError, Result};
use crate::files::plan_columns;
use crate::values::parse_time;

/// Rows per row group written.
const ROW_GROUP: usize = 65_536;

fn bad(e: parquet::errors::ParquetError) -> FeaturesError {
    invalid(format!("parquet: {e}"))
}

fn value_of(field: &Field, column: &str) -> Result<Value> {
    Ok(match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(v) => Value::from(*v),
        Field::Short(v) => Value::from(*v),
        Field::Int(v) => Value::from(*v),
        Field::Long(v) => Value::from(*v),
        Field::UByte(v) => Value::from(*v),
        Field::UShort(v) => Value::from(*v),
        Field::UInt(v) => Value::from(*v),
        Field::ULong(v) => Value::from(*v),
        Field::Float(v) => Value::from(*v as f64),
        Field::Double(v) => Value::from(*v),
        Field::Str(s) => Value::String(s.clone()),
        Field::TimestampMillis(v) => Value::from(v.saturating_mul(1000)),
        Field::TimestampMicros(v) => Value::from(*v),
        other => {
            return Err(invalid(format!(
                "parquet column '{column}': unsupported value {other}"
            )))
        }
    })
}

/// Reads the rows of `view` from a Parquet file's bytes: the join keys, the
/// event-time column (a timestamp, microseconds as integers, or RFC 3339
/// text) and fields of the view.
pub fn rows_from_parquet(
    data: Vec<u8>,
    view: &FeatureView,
    entities: &[Entity],
    timestamp_column: &str,
) -> Result<Vec<Row>> {
    let reader = SerializedFileReader::new(Bytes::from(data)).map_err(bad)?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let header: Vec<String> = schema
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let (ts_index, _) = plan_columns(&header, view, entities, timestamp_column)?;
    // Integer nanosecond timestamps (pandas' default) become microseconds.
    let ts_divisor = match schema.column(ts_index).logical_type_ref() {
        Some(LogicalType::Timestamp(t)) if matches!(t.unit, TimeUnit::NANOS) => 1000,
        _ => 1,
    };
    let mut rows = Vec::new();
    for (n, record) in reader.get_row_iter(None).map_err(bad)?.enumerate() {
        let record = record.map_err(bad)?;
        let mut row = Row::default();
        for (name, field) in record.get_column_iter() {
            let value = value_of(field, name)?;
            if name == timestamp_column {
                row.event_ts = match value {
                    Value::Number(v) => v.as_i64().unwrap_or(0) / ts_divisor,
                    Value::String(s) => parse_time(&s)?,
                    _ => return Err(invalid(format!("parquet row {n}: no event time"))),
                };
            } else {
                row.values.insert(name.clone(), value.to_string());
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Writes a table: `columns` as (name, type) with type `timestamp` (µs),
/// `int64`, `float64`, `bool` or `string`, every column nullable; `rows` of
/// JSON values in column order.
pub fn write_parquet<W: std::io::Write + Send>(
    out: W,
    columns: &[(String, String)],
    rows: &[Vec<Value>],
) -> Result<()> {
    let fields = columns
        .iter()
        .map(|(name, dtype)| {
            let (physical, logical) = match dtype.as_str() {
                "timestamp" => (
                    Physical::INT64,
                    Some(LogicalType::timestamp(true, TimeUnit::MICROS)),
                ),
                "int64" => (Physical::INT64, None),
                "float64" => (Physical::DOUBLE, None),
                "bool" => (Physical::BOOLEAN, None),
                _ => (Physical::BYTE_ARRAY, Some(LogicalType::String)),
            };
            Type::primitive_type_builder(name, physical)
                .with_repetition(Repetition::OPTIONAL)
                .with_logical_type(logical)
                .build()
                .map(Arc::new)
                .map_err(bad)
        })
        .collect::<Result<Vec<_>>>()?;
    let schema = Type::group_type_builder("schema")
        .with_fields(fields)
        .build()
        .map_err(bad)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer =
        SerializedFileWriter::new(out, Arc::new(schema), Arc::new(props)).map_err(bad)?;
    for chunk in rows.chunks(ROW_GROUP) {
        let mut group = writer.next_row_group().map_err(bad)?;
        let mut index = 0;
        while let Some(mut column) = group.next_column().map_err(bad)? {
            let cells = chunk.iter().map(|r| r.get(index).unwrap_or(&Value::Null));
            let defs: Vec<i16> = cells.clone().map(|v| i16::from(!v.is_null())).collect();
            match columns[index].1.as_str() {
                "timestamp" | "int64" => {
                    let values: Vec<i64> = cells.filter_map(|v| v.as_i64()).collect();
                    column
                        .typed::<Int64Type>()
                        .write_batch(&values, Some(&defs), None)
                }
                "float64" => {
                    let values: Vec<f64> = cells.filter_map(|v| v.as_f64()).collect();
                    column
                        .typed::<DoubleType>()
                        .write_batch(&values, Some(&defs), None)
                }
                "bool" => {
                    let values: Vec<bool> = cells.filter_map(|v| v.as_bool()).collect();
                    column
                        .typed::<BoolType>()
                        .write_batch(&values, Some(&defs), None)
                }
                _ => {
                    let values: Vec<ByteArray> = cells
                        .filter(|v| !v.is_null())
                        .map(|v| match v {
                            Value::String(s) => ByteArray::from(s.as_str()),
                            other => ByteArray::from(other.to_string().as_str()),
                        })
                        .collect();
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&values, Some(&defs), None)
                }
            }
            .map_err(bad)?;
            column.close().map_err(bad)?;
            index += 1;
        }
        group.close().map_err(bad)?;
    }
    writer.close().map_err(bad)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlserve_proto::features::Field as ViewField;

    #[test]
    fn written_rows_read_back_as_feature_rows() {
        let columns: Vec<(String, String)> = [
            ("driver_id", "int64"),
            ("event_timestamp", "timestamp"),
            ("rate", "float64"),
            ("tier", "string"),
            ("ok", "bool"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let rows = vec![
            vec![
                Value::from(7),
                Value::from(1_000_000),
                Value::from(0.5),
                Value::from("gold"),
                Value::Bool(true),
            ],
            vec![
                Value::from(8),
                Value::from(2_000_000),
                Value::Null,
                Value::Null,
                Value::Null,
            ],
        ];
        let mut out = Vec::new();
        write_parquet(&mut out, &columns, &rows).unwrap();
        let view = FeatureView {
            name: "s".into(),
            entities: vec!["d".into()],
            fields: ["rate:float64", "tier:string", "ok:bool"]
                .iter()
                .map(|f| {
                    let (name, dtype) = f.split_once(':').unwrap();
                    ViewField {
                        name: name.into(),
                        dtype: dtype.into(),
                    }
                })
                .collect(),
            ..Default::default()
        };
        let entities = vec![Entity {
            name: "d".into(),
            join_keys: vec!["driver_id".into()],
            value_type: "int64".into(),
            ..Default::default()
        }];
        let read = rows_from_parquet(out, &view, &entities, "event_timestamp").unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].event_ts, 1_000_000);
        assert_eq!(read[0].values["driver_id"], "7");
        assert_eq!(read[0].values["rate"], "0.5");
        assert_eq!(read[0].values["tier"], "\"gold\"");
        assert_eq!(read[0].values["ok"], "true");
        assert_eq!(read[1].values["rate"], "null");
        assert!(
            rows_from_parquet(b"PAR1 nope".to_vec(), &view, &entities, "event_timestamp").is_err()
        );
    }
}

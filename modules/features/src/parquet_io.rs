//! Parquet without Arrow: feature rows read through the record API (for
//! `mlserve features ingest`), and tables of JSON values written with typed
//! column writers (for `mlserve features history --out x.parquet`).
//! Synchronous: call from a blocking pool.

use std::sync::Arc;

use bytes::Bytes;
use mlserve_proto::features::{Entity, FeatureView, Row};
use parquet::basic::{Compression, LogicalType, Repetition, TimeUnit, Type as Physical};
use parquet::column::page::Page;
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

/// Runs a call into the parquet crate's reader, which panics on some
/// malformed files (a dictionary-encoded page with no dictionary page, for
/// one): such a panic is the file's fault, and becomes the error any other
/// malformed file gets.
fn guarded<T>(read: impl FnOnce() -> parquet::errors::Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)) {
        Ok(result) => result.map_err(bad),
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("the reader failed");
            Err(invalid(format!("parquet: malformed file: {why}")))
        }
    }
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

/// Refuses a file with a dictionary page that declares more values than its
/// bytes can hold (a value takes at least one byte, a boolean one bit): the
/// parquet crate's reader allocates a dictionary of the declared size before
/// decoding it, gigabytes for a page of a few bytes.
fn check_dictionary_pages(reader: &SerializedFileReader<Bytes>) -> Result<()> {
    for g in 0..reader.num_row_groups() {
        let group = guarded(|| reader.get_row_group(g))?;
        for c in 0..group.num_columns() {
            let booleans = group.metadata().column(c).column_type() == Physical::BOOLEAN;
            let mut pages = guarded(|| group.get_column_page_reader(c))?;
            while let Some(page) = guarded(|| pages.get_next_page())? {
                let Page::DictionaryPage {
                    buf, num_values, ..
                } = page
                else {
                    continue;
                };
                let room = if booleans {
                    buf.len().saturating_mul(8)
                } else {
                    buf.len()
                };
                if num_values as usize > room {
                    return Err(invalid(format!(
                        "parquet: a dictionary page of column {c} declares {num_values} values in {} bytes",
                        buf.len()
                    )));
                }
            }
        }
    }
    Ok(())
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
    let reader = guarded(|| SerializedFileReader::new(Bytes::from(data)))?;
    check_dictionary_pages(&reader)?;
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
    let mut records = guarded(|| reader.get_row_iter(None))?;
    while let Some(record) = guarded(|| records.next().transpose())? {
        let n = rows.len();
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

    /// A view `s` of entity `d` (join key `key`, int64) with `fields` given
    /// as `name:dtype`.
    fn view_of(key: &str, fields: &[&str]) -> (FeatureView, Vec<Entity>) {
        let view = FeatureView {
            name: "s".into(),
            entities: vec!["d".into()],
            fields: fields
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
            join_keys: vec![key.into()],
            value_type: "int64".into(),
            ..Default::default()
        }];
        (view, entities)
    }

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
        let (view, entities) = view_of("driver_id", &["rate:float64", "tier:string", "ok:bool"]);
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

    /// Reads a file of the `features_parquet` fuzz target's view, which must fail.
    fn read_fuzz_input(data: &[u8]) -> FeaturesError {
        let (view, entities) = view_of(
            "user_id",
            &[
                "amount:float64",
                "count:int64",
                "active:bool",
                "city:string",
            ],
        );
        rows_from_parquet(data.to_vec(), &view, &entities, "ts").unwrap_err()
    }

    /// Found by the `features_parquet` fuzz target: a dictionary-encoded
    /// data page in a column chunk without a dictionary page made the
    /// parquet crate's reader panic ("Decoder for dict should have been
    /// set"). This file now fails earlier, on a later page header that the
    /// dictionary check reads; a panic of the reader is an error too.
    #[test]
    fn a_data_page_without_its_dictionary_is_an_error() {
        let data = include_bytes!("../testdata/parquet_dictionary_page_missing.parquet");
        let err = read_fuzz_input(data);
        assert!(err.to_string().starts_with("parquet: "), "{err}");
        let err = guarded::<()>(|| panic!("Decoder for dict should have been set")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "parquet: malformed file: Decoder for dict should have been set"
        );
    }

    /// Found by the `features_parquet` fuzz target: a 1.8 KB file whose
    /// dictionary page declares about 2^31 values made the reader allocate
    /// a 16 GB dictionary.
    #[test]
    fn a_dictionary_page_declaring_more_values_than_bytes_is_refused() {
        let data = include_bytes!("../testdata/parquet_dictionary_too_many_values.parquet");
        let err = read_fuzz_input(data);
        assert!(err.to_string().contains("dictionary page"), "{err}");
        assert!(err.to_string().contains("declares"), "{err}");
    }
}

//! CSV ingest (`files.rs`, what `mlserve features ingest` reads): RFC 4180
//! records typed by a feature view's fields and its entity's join key, the
//! event time parsed from column `ts`. Checked: no panic (an error is fine);
//! one row per record after the header, each with a value for every
//! column named in the header but the event time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlserve_features::files::{parse_csv, rows_from_csv};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (view, entities) = mlserve_fuzz::ingest_view();
    let Ok(rows) = rows_from_csv(text, &view, &entities, "ts") else {
        return;
    };
    let records = parse_csv(text).expect("the records of ingested CSV parse");
    assert_eq!(rows.len(), records.len().saturating_sub(1));
    if let Some(header) = records.first() {
        let columns: std::collections::BTreeSet<&str> = header
            .iter()
            .map(String::as_str)
            .filter(|c| *c != "ts")
            .collect();
        for row in &rows {
            assert_eq!(row.values.len(), columns.len(), "{header:?} {row:?}");
        }
    }
});

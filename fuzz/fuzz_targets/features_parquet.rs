//! Parquet ingest (`parquet_io.rs`, what `mlserve features ingest` reads):
//! the file's footer, schema and row groups through the parquet crate's
//! record API, columns checked against a feature view, the event time from
//! column `ts`. Checked: no panic escapes (an error is fine).
//!
//! The parquet crate's reader panics on some malformed files, and
//! `rows_from_parquet` turns such a panic into an error. libFuzzer's panic
//! hook aborts on every panic, caught or not, so this target lets panics
//! raised inside crates.io dependencies through to that catch; a panic in
//! mlserve's own code still aborts at once, and one that escapes
//! `rows_from_parquet` aborts when it reaches the fuzz harness.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use mlserve_features::parquet_io::rows_from_parquet;

fn let_dependency_panics_unwind() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let libfuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_dependency = info
                .location()
                .is_some_and(|at| at.file().contains("/registry/src/"));
            if !in_dependency {
                libfuzzer_hook(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    let_dependency_panics_unwind();
    let (view, entities) = mlserve_fuzz::ingest_view();
    let _ = rows_from_parquet(data.to_vec(), &view, &entities, "ts");
});

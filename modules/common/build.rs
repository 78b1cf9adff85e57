//! Embeds every file of `migrations/sqlite` and `migrations/postgres` (at the
//! workspace root) into the binary, so a single executable can create and
//! upgrade its schema. Adding a migration is adding a file.
use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let mut out = String::new();
    for dialect in ["sqlite", "postgres"] {
        let dir = root.join(dialect);
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "sql"));
        files.sort();
        writeln!(
            out,
            "/// Migrations of the `{dialect}` dialect: (file stem, SQL)."
        )
        .unwrap();
        writeln!(
            out,
            "pub const {}: &[(&str, &str)] = &[",
            dialect.to_uppercase()
        )
        .unwrap();
        for file in files {
            let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
            let path = file.canonicalize().unwrap();
            writeln!(
                out,
                "    ({stem:?}, include_str!({:?})),",
                path.display().to_string()
            )
            .unwrap();
        }
        writeln!(out, "];").unwrap();
    }
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("migrations.rs");
    std::fs::write(dest, out).unwrap();
}

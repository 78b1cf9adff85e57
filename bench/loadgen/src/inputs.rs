//! Request payloads from real data: `DIR/inputs/manifest.json` (written by
//! `scripts/make_models.py --set bench-inputs --out DIR`) describes, per
//! model, a raw file whose rows are the model's inputs. Row `i` of an input
//! is bytes `[offset + i * row_bytes, offset + (i + 1) * row_bytes)`, raw
//! little-endian, C order; the shape excludes the batch dimension.
//!
//! A run sends the rows round-robin: request `j` of batch `b` carries rows
//! `j*b .. j*b + b` (modulo the row count).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use mlserve_proto::DataType;
use serde::Deserialize;

use crate::tensor::{concrete_shape, InputSpec, InputTensor};

#[derive(Debug, Deserialize)]
struct Manifest {
    models: std::collections::BTreeMap<String, Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    file: String,
    rows: usize,
    inputs: Vec<EntryInput>,
    #[serde(default)]
    outputs: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct EntryInput {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    offset: usize,
    row_bytes: usize,
}

/// The payload rows of one model, read into memory.
#[derive(Debug)]
pub struct Rows {
    /// Where they came from (for the report).
    pub file: PathBuf,
    /// Number of rows.
    pub rows: usize,
    /// The outputs a client should ask for (empty: all).
    pub outputs: Vec<String>,
    inputs: Vec<(EntryInput, DataType, Bytes)>,
}

/// The manifest path under `dir` (`dir/inputs/manifest.json`, or
/// `dir/manifest.json` when `dir` is the inputs folder itself).
fn manifest_path(dir: &Path) -> PathBuf {
    let nested = dir.join("inputs").join("manifest.json");
    if nested.is_file() {
        nested
    } else {
        dir.join("manifest.json")
    }
}

impl Rows {
    /// Reads the rows of manifest entry `key` under `dir`.
    pub fn load(dir: &Path, key: &str) -> Result<Rows> {
        let path = manifest_path(dir);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{} is not an inputs manifest", path.display()))?;
        let Some(entry) = manifest
            .models
            .into_iter()
            .find_map(|(k, e)| (k == key).then_some(e))
        else {
            bail!("{} has no entry '{key}'", path.display());
        };
        let file = path.with_file_name(&entry.file);
        let data =
            std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let data = Bytes::from(data);
        let mut inputs = Vec::new();
        for input in entry.inputs {
            let Some(datatype) = DataType::parse(&input.datatype) else {
                bail!(
                    "{}: input '{}' has unknown datatype '{}'",
                    path.display(),
                    input.name,
                    input.datatype
                );
            };
            let end = input.offset + input.row_bytes * entry.rows;
            if end > data.len() || input.row_bytes == 0 {
                bail!(
                    "{}: input '{}' needs bytes up to {end}, {} has {}",
                    path.display(),
                    input.name,
                    file.display(),
                    data.len()
                );
            }
            let slice = data.slice(input.offset..end);
            inputs.push((input, datatype, slice));
        }
        if entry.rows == 0 {
            bail!("{}: entry '{key}' has no rows", path.display());
        }
        Ok(Rows {
            file,
            rows: entry.rows,
            outputs: entry.outputs,
            inputs,
        })
    }

    /// The tensors of request `j` (rows `j*batch ..`), checked against the
    /// model's declared inputs.
    pub fn request(&self, specs: &[InputSpec], batch: usize, j: usize) -> Result<Vec<InputTensor>> {
        let mut out = Vec::with_capacity(specs.len());
        for spec in specs {
            let Some((input, datatype, data)) =
                self.inputs.iter().find(|(i, ..)| i.name == spec.name)
            else {
                bail!(
                    "the payload file {} has no input '{}'",
                    self.file.display(),
                    spec.name
                );
            };
            if *datatype != spec.datatype {
                bail!(
                    "input '{}': the payload is {datatype}, the model wants {}",
                    spec.name,
                    spec.datatype
                );
            }
            let shape = concrete_shape(spec, batch, 1)?;
            let row_shape: &[i64] = if spec.shape.first() == Some(&-1) {
                &shape[1..]
            } else {
                &shape
            };
            let declared = if spec.shape.first() == Some(&-1) {
                &spec.shape[1..]
            } else {
                &spec.shape[..]
            };
            let fits = input.shape.len() == declared.len()
                && input
                    .shape
                    .iter()
                    .zip(declared)
                    .all(|(&p, &d)| d < 0 || p == d);
            if !fits {
                bail!(
                    "input '{}': payload rows are {:?}, the model wants {:?}",
                    spec.name,
                    input.shape,
                    row_shape
                );
            }
            let mut shape = shape;
            let rank = shape.len();
            shape[rank - input.shape.len()..].copy_from_slice(&input.shape);
            let mut raw = BytesMut::with_capacity(input.row_bytes * batch);
            for r in 0..batch {
                let row = (j * batch + r) % self.rows;
                raw.extend_from_slice(&data[row * input.row_bytes..(row + 1) * input.row_bytes]);
            }
            out.push(InputTensor {
                name: spec.name.clone(),
                datatype: spec.datatype,
                shape,
                raw: raw.freeze(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_fixture(dir: &Path) {
        let inputs = dir.join("inputs");
        std::fs::create_dir_all(&inputs).unwrap();
        // 3 rows of FP32 [2] then 3 rows of INT64 [1].
        let mut data = Vec::new();
        for v in [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        for v in [7i64, 8, 9] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(inputs.join("m.bin"), data).unwrap();
        let manifest = serde_json::json!({"models": {"m": {
        "file": "m.bin", "rows": 3, "bytes": 48, "outputs": ["y"],
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [2], "offset": 0, "row_bytes": 8, "bytes": 24},
            {"name": "b", "datatype": "INT64", "shape": [1], "offset": 24, "row_bytes": 8, "bytes": 24}
        ]}}});
        std::fs::write(inputs.join("manifest.json"), manifest.to_string()).unwrap();
    }

    #[test]
    fn requests_take_rows_round_robin() {
        let dir = std::env::temp_dir().join(format!("loadgen-inputs-{}", std::process::id()));
        write_fixture(&dir);
        let rows = Rows::load(&dir, "m").unwrap();
        assert_eq!(rows.rows, 3);
        assert_eq!(rows.outputs, ["y"]);
        let specs = [
            InputSpec {
                name: "b".into(),
                datatype: DataType::Int64,
                shape: vec![-1, 1],
            },
            InputSpec {
                name: "a".into(),
                datatype: DataType::Fp32,
                shape: vec![-1, -1],
            },
        ];
        // Request 1 at batch 2: rows 2 and 0 (wrapping).
        let t = rows.request(&specs, 2, 1).unwrap();
        assert_eq!(t[0].name, "b");
        assert_eq!(t[0].shape, vec![2, 1]);
        assert_eq!(&t[0].raw[..8], &9i64.to_le_bytes());
        assert_eq!(&t[0].raw[8..], &7i64.to_le_bytes());
        assert_eq!(t[1].shape, vec![2, 2]);
        assert_eq!(&t[1].raw[..4], &5.0f32.to_le_bytes());
        // A wrong datatype or row shape is refused.
        let bad = [InputSpec {
            name: "a".into(),
            datatype: DataType::Fp32,
            shape: vec![-1, 3],
        }];
        assert!(rows.request(&bad, 1, 0).is_err());
        let bad = [InputSpec {
            name: "a".into(),
            datatype: DataType::Fp64,
            shape: vec![-1, 2],
        }];
        assert!(rows.request(&bad, 1, 0).is_err());
        assert!(Rows::load(&dir, "other").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

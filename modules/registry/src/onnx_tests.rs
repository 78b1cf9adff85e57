//! The ONNX walk over hand-encoded protobuf.

use super::*;
use crate::testing::{len_field, varint};

fn varint_field(field: u64, v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(field << 3, &mut out);
    varint(v, &mut out);
    out
}

fn tensor_with_location(location: &str) -> Vec<u8> {
    let mut entry = len_field(1, b"location");
    entry.extend(len_field(2, location.as_bytes()));
    let mut tensor = len_field(8, b"weight");
    tensor.extend(len_field(13, &entry));
    tensor.extend(varint_field(14, 1));
    tensor
}

fn model(graph: &[u8]) -> Vec<u8> {
    let mut m = varint_field(1, 8);
    m.extend(len_field(2, b"pytorch"));
    m.extend(len_field(7, graph));
    m
}

#[test]
fn a_model_with_inline_weights_has_no_external_data() {
    let mut graph = len_field(2, b"main");
    graph.extend(len_field(5, &len_field(9, &[0u8; 4096])));
    let summary = walk(model(&graph).as_slice()).unwrap();
    assert_eq!(summary.ir_version, 8);
    assert!(summary.external_locations.is_empty());
}

#[test]
fn external_locations_are_found_in_graphs_subgraphs_and_sparse_tensors() {
    let mut subgraph = len_field(5, &tensor_with_location("sub.bin"));
    subgraph.extend(len_field(2, b"body"));
    let attribute = len_field(6, &subgraph);
    let node = len_field(5, &attribute);
    let sparse = len_field(1, &tensor_with_location("sparse.bin"));
    let mut graph = len_field(5, &tensor_with_location("weights.bin"));
    graph.extend(len_field(1, &node));
    graph.extend(len_field(15, &sparse));
    let summary = walk(model(&graph).as_slice()).unwrap();
    assert_eq!(
        summary.external_locations,
        vec!["weights.bin", "sub.bin", "sparse.bin"]
    );
}

#[test]
fn garbage_truncation_and_graphless_files_are_refused() {
    assert!(walk(b"\x80\x02\x63pickle".as_slice()).is_err());
    assert!(walk(b"not an onnx model at all".as_slice()).is_err());
    let mut graph = len_field(5, &tensor_with_location("weights.bin"));
    graph.extend(len_field(2, b"main"));
    let full = model(&graph);
    assert!(walk(&full[..full.len() - 3]).is_err());
    assert!(walk(varint_field(1, 8).as_slice()).is_err());
    assert!(walk(b"".as_slice()).is_err());
    // A nested length running past its parent.
    let mut bad = model(&graph);
    let i = bad.iter().position(|&b| b == (7 << 3 | 2)).unwrap();
    bad[i + 1] += 1;
    assert!(walk(bad.as_slice()).is_err());
}

/// Found by the `onnx_walk` fuzz target: a field length of 2^64 - 1 at the
/// top level made the end offset overflow (a panic with overflow checks,
/// a wrapped offset in release).
#[test]
fn a_field_length_past_the_u64_range_is_refused() {
    let input = b":\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01:\x00\x00\xff";
    let err = walk(input.as_slice()).unwrap_err();
    assert!(matches!(err, OnnxError::Malformed(_)), "{err}");
    assert!(err.to_string().contains("out of range"), "{err}");
}

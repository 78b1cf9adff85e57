//! Tests of request decoding (JSON, the binary extension, raw requests).

use super::*;
use crate::pb::infer_parameter::ParameterChoice;
use crate::ErrorCode;
use serde_json::json;

fn body(doc: &Value) -> Bytes {
    Bytes::from(doc.to_string())
}

/// A JSON header followed by binary chunks, and the header's length.
fn binary_body(doc: &Value, chunks: &[&[u8]]) -> (Bytes, usize) {
    let header = doc.to_string();
    let mut out = header.clone().into_bytes();
    for c in chunks {
        out.extend_from_slice(c);
    }
    (Bytes::from(out), header.len())
}

fn bad(result: Result<Decoded, ServiceError>) -> String {
    let err = result.expect_err("the request should be refused");
    assert_eq!(err.code, ErrorCode::BadRequest, "{err}");
    err.message
}

fn i32s(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn json_inputs_become_raw_contents_in_order() {
    let doc = json!({
        "id": "r1",
        "inputs": [
            {"name": "A", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]},
            {"name": "B", "shape": [2], "datatype": "BYTES", "data": ["x", "yz"]},
            {"name": "C", "shape": [1], "datatype": "FP16", "data": [1.5]}
        ]
    });
    let d = decode(body(&doc), None).unwrap();
    let r = &d.request;
    assert_eq!(r.id, "r1");
    assert_eq!(
        r.inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["A", "B", "C"]
    );
    assert_eq!(r.inputs[0].shape, vec![2, 2]);
    assert_eq!(r.inputs[1].datatype, "BYTES");
    assert_eq!(&r.raw_input_contents[0][..], &i32s(&[1, 2, 3, 4])[..]);
    assert_eq!(&r.raw_input_contents[1][..], b"\x01\0\0\0x\x02\0\0\0yz");
    assert_eq!(
        &r.raw_input_contents[2][..],
        &half::f16::from_f32(1.5).to_le_bytes()
    );
    assert!(r.inputs.iter().all(|i| i.contents.is_none()));
    assert!(!d.plan.binary_default);
}

#[test]
fn binary_inputs_are_sliced_in_order() {
    let doc = json!({
        "inputs": [
            {"name": "A", "shape": [2], "datatype": "INT32", "parameters": {"binary_data_size": 8}},
            {"name": "J", "shape": [1], "datatype": "BOOL", "data": [true]},
            {"name": "B", "shape": [3], "datatype": "UINT8", "parameters": {"binary_data_size": 3}}
        ]
    });
    let a = i32s(&[7, -7]);
    let (b, n) = binary_body(&doc, &[&a, &[1, 2, 3]]);
    let d = decode(b.clone(), Some(n)).unwrap();
    assert_eq!(&d.request.raw_input_contents[0][..], &a[..]);
    assert_eq!(&d.request.raw_input_contents[1][..], &[1]);
    assert_eq!(&d.request.raw_input_contents[2][..], &[1, 2, 3]);
    // The slices share the body's memory (no copy).
    assert_eq!(d.request.raw_input_contents[0].as_ptr(), b[n..].as_ptr());
    // binary_data_size is not passed on to the service.
    assert!(d
        .request
        .inputs
        .iter()
        .all(|i| !i.parameters.contains_key("binary_data_size")));
}

#[test]
fn binary_sizes_must_add_up_exactly() {
    let doc = json!({"inputs": [
        {"name": "A", "shape": [1], "datatype": "INT32", "parameters": {"binary_data_size": 4}}
    ]});
    let (b, n) = binary_body(&doc, &[&[0; 5]]);
    assert!(bad(decode(b, Some(n))).contains("add up to 4"));
    let (b, n) = binary_body(&doc, &[&[0; 3]]);
    assert!(bad(decode(b, Some(n))).contains("input 'A'"));
    // Without the header there is no binary section at all.
    let (b, _) = binary_body(&doc, &[]);
    assert!(bad(decode(b, None)).contains("input 'A'"));
}

#[test]
fn binary_size_must_match_the_shape_for_fixed_size_types() {
    let doc = json!({"inputs": [
        {"name": "A", "shape": [2], "datatype": "INT32", "parameters": {"binary_data_size": 4}}
    ]});
    let (b, n) = binary_body(&doc, &[&[0; 4]]);
    let msg = bad(decode(b, Some(n)));
    assert!(
        msg.contains("input 'A'") && msg.contains("needs 8"),
        "{msg}"
    );
}

#[test]
fn header_length_past_the_body_is_refused() {
    let (b, n) = binary_body(&json!({"inputs": []}), &[]);
    assert!(bad(decode(b, Some(n + 1))).contains("Inference-Header-Content-Length"));
}

#[test]
fn data_and_binary_size_are_exclusive_and_one_is_required() {
    let both = json!({"inputs": [
        {"name": "A", "shape": [1], "datatype": "INT32", "data": [1], "parameters": {"binary_data_size": 4}}
    ]});
    let (b, n) = binary_body(&both, &[&[0; 4]]);
    assert!(bad(decode(b, Some(n))).contains("input 'A' has both"));
    let neither = json!({"inputs": [{"name": "A", "shape": [1], "datatype": "INT32"}]});
    assert!(bad(decode(body(&neither), None)).contains("input 'A' has neither"));
}

#[test]
fn json_errors_name_the_input() {
    let cases = [
        (
            json!({"name": "A", "shape": [3], "datatype": "INT32", "data": [1, 2]}),
            "3 elements",
        ),
        (
            json!({"name": "A", "shape": [1], "datatype": "UINT8", "data": [256]}),
            "out of range",
        ),
        (
            json!({"name": "A", "shape": [1], "datatype": "FP33", "data": [1]}),
            "unknown datatype",
        ),
        (
            json!({"name": "A", "shape": [1], "datatype": "TYPE_FP32", "data": [1]}),
            "unknown datatype",
        ),
        (
            json!({"name": "A", "shape": [-1], "datatype": "INT32", "data": [1]}),
            "invalid shape",
        ),
        (
            json!({"name": "A", "shape": [i64::MAX, i64::MAX], "datatype": "INT8", "data": [1]}),
            "invalid shape",
        ),
        (
            json!({"name": "A", "shape": [2], "datatype": "INT32", "data": [[1], 2]}),
            "nesting",
        ),
    ];
    for (input, want) in cases {
        let msg = bad(decode(body(&json!({"inputs": [input]})), None));
        assert!(
            msg.contains("input 'A'") && msg.contains(want),
            "{msg} lacks {want}"
        );
    }
}

#[test]
fn malformed_json_is_refused() {
    assert!(bad(decode(Bytes::from_static(b"{"), None)).contains("invalid inference request JSON"));
    assert!(bad(decode(Bytes::from_static(b"{}"), None)).contains("inputs"));
    assert!(bad(decode(Bytes::new(), None)).contains("JSON"));
    let wrong =
        json!({"inputs": [{"name": "A", "shape": ["x"], "datatype": "INT32", "data": [1]}]});
    assert!(bad(decode(body(&wrong), None)).contains("JSON"));
}

#[test]
fn a_repeated_input_field_is_refused() {
    // Found by the infer_json fuzz target: `data` converted as BOOL, then a
    // second `datatype` made the input FP16 with half the bytes it needs.
    let doc = br#"{"inputs":[{"name":"b","datatype":"BOOL","shape":[2],"data":[true,false],"datatype":"FP16"}]}"#;
    let msg = bad(decode(Bytes::from_static(doc), None));
    assert!(msg.contains("duplicate field `datatype`"), "{msg}");
    for field in [
        r#""name":"c""#,
        r#""shape":[1]"#,
        r#""data":[1]"#,
        r#""parameters":{}"#,
    ] {
        let repeated = format!(
            r#"{{"inputs":[{{"name":"A","shape":[1],"datatype":"INT32","data":[1],"parameters":{{}},{field}}}]}}"#
        );
        let msg = bad(decode(Bytes::from(repeated), None));
        assert!(msg.contains("duplicate field"), "{field}: {msg}");
    }
}

#[test]
fn parameters_are_converted_and_http_ones_taken_out() {
    let doc = json!({
        "parameters": {"binary_data_output": true, "priority": 2, "timeout": 1000, "tag": "t", "w": 0.5},
        "inputs": [{"name": "A", "shape": [1], "datatype": "INT32", "data": [1], "parameters": {"x": false}}],
        "outputs": [
            {"name": "O1", "parameters": {"binary_data": false}},
            {"name": "O2", "parameters": {"classification": 3, "keep": 1}},
            {"name": "O3"}
        ]
    });
    let d = decode(body(&doc), None).unwrap();
    let p = |k: &str| d.request.parameters[k].parameter_choice.clone().unwrap();
    assert_eq!(p("priority"), ParameterChoice::Int64Param(2));
    assert_eq!(p("timeout"), ParameterChoice::Int64Param(1000));
    assert_eq!(p("tag"), ParameterChoice::StringParam("t".into()));
    assert_eq!(p("w"), ParameterChoice::DoubleParam(0.5));
    assert!(!d.request.parameters.contains_key("binary_data_output"));
    assert!(d.request.inputs[0].parameters.contains_key("x"));
    assert!(d.plan.binary_default);
    assert_eq!(
        d.plan.outputs["O1"],
        OutputPlan {
            binary: Some(false),
            classification: None
        }
    );
    assert_eq!(
        d.plan.outputs["O2"],
        OutputPlan {
            binary: None,
            classification: Some(3)
        }
    );
    assert_eq!(d.plan.outputs["O3"], OutputPlan::default());
    assert!(d.plan.classifies());
    let outs = &d.request.outputs;
    assert_eq!(
        outs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
        ["O1", "O2", "O3"]
    );
    assert!(outs[0].parameters.is_empty());
    assert_eq!(outs[1].parameters.keys().collect::<Vec<_>>(), ["keep"]);
}

#[test]
fn wrong_parameter_kinds_are_refused() {
    let input = json!({"name": "A", "shape": [1], "datatype": "INT32", "data": [1]});
    let cases = [
        json!({"parameters": {"binary_data_output": "yes"}, "inputs": [input]}),
        json!({"parameters": {"nested": {"a": 1}}, "inputs": [input]}),
        json!({"inputs": [input], "outputs": [{"name": "O", "parameters": {"binary_data": 1}}]}),
        json!({"inputs": [input], "outputs": [{"name": "O", "parameters": {"classification": 0}}]}),
        json!({"inputs": [input], "outputs": [{"name": "O", "parameters": {"classification": -2}}]}),
    ];
    for doc in cases {
        bad(decode(body(&doc), None));
    }
}

#[test]
fn header_length_header_parses() {
    let mut h = HeaderMap::new();
    assert_eq!(header_length(&h).unwrap(), None);
    h.insert(HEADER_LENGTH, "12".parse().unwrap());
    assert_eq!(header_length(&h).unwrap(), Some(12));
    h.insert(HEADER_LENGTH, "-1".parse().unwrap());
    assert!(header_length(&h).is_err());
    h.insert(HEADER_LENGTH, "abc".parse().unwrap());
    assert!(header_length(&h).is_err());
}

fn metadata(inputs: &[(&str, &str, &[i64])]) -> pb::ModelMetadataResponse {
    pb::ModelMetadataResponse {
        name: "m".into(),
        inputs: inputs
            .iter()
            .map(|(n, dt, s)| pb::model_metadata_response::TensorMetadata {
                name: n.to_string(),
                datatype: dt.to_string(),
                shape: s.to_vec(),
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn raw_request_resolves_the_batch_and_one_variable_dimension() {
    let d = decode_raw(
        Bytes::from(vec![0u8; 24]),
        &metadata(&[("IN", "FP32", &[-1, 2, -1])]),
    )
    .unwrap();
    assert_eq!(d.request.inputs[0].shape, vec![1, 2, 3]);
    assert_eq!(d.request.inputs[0].name, "IN");
    assert_eq!(d.request.raw_input_contents[0].len(), 24);
    assert!(d.plan.binary_default);
    let d = decode_raw(
        Bytes::from(vec![0u8; 64]),
        &metadata(&[("IN", "INT32", &[-1, 16])]),
    )
    .unwrap();
    assert_eq!(d.request.inputs[0].shape, vec![1, 16]);
    let d = decode_raw(
        Bytes::from(vec![0u8; 64]),
        &metadata(&[("IN", "INT32", &[1, 16])]),
    )
    .unwrap();
    assert_eq!(d.request.inputs[0].shape, vec![1, 16]);
}

#[test]
fn raw_request_errors() {
    let two = metadata(&[("A", "FP32", &[-1]), ("B", "FP32", &[-1])]);
    assert!(bad(decode_raw(Bytes::from(vec![0u8; 4]), &two)).contains("single input"));
    let fixed = metadata(&[("A", "INT32", &[-1, 16])]);
    assert!(bad(decode_raw(Bytes::from(vec![0u8; 60]), &fixed)).contains("needs 64"));
    let var = metadata(&[("A", "FP32", &[-1, 3, -1])]);
    assert!(bad(decode_raw(Bytes::from(vec![0u8; 16]), &var)).contains("do not fill"));
    let two_var = metadata(&[("A", "FP32", &[2, -1, -1])]);
    assert!(bad(decode_raw(Bytes::from(vec![0u8; 16]), &two_var)).contains("more than one"));
}

#[test]
fn raw_bytes_request_is_one_element() {
    let d = decode_raw(
        Bytes::from_static(b"hello"),
        &metadata(&[("T", "BYTES", &[-1, 1])]),
    )
    .unwrap();
    assert_eq!(d.request.inputs[0].shape, vec![1, 1]);
    assert_eq!(&d.request.raw_input_contents[0][..], b"\x05\0\0\0hello");
}

/// An input written as clients write it (name, shape, datatype, then data):
/// its data is converted while it is parsed.
fn client_order(name: &str, shape: &str, datatype: &str, data: &str) -> String {
    format!(r#"{{"name":"{name}","shape":{shape},"datatype":"{datatype}","data":{data}}}"#)
}

#[test]
fn data_after_its_datatype_converts_while_parsing_as_data_before_it_does() {
    let cases = [
        ("[2,2]", "INT32", "[[1,2],[3,4]]"),
        ("[3]", "FP32", "[0.1,-2,3.5]"),
        ("[2]", "BYTES", r#"["x","y\u0000z"]"#),
        ("[2]", "BOOL", "[true,false]"),
        ("[1]", "UINT64", "[18446744073709551615]"),
    ];
    for (shape, datatype, data) in cases {
        let streamed = format!(
            r#"{{"inputs":[{}]}}"#,
            client_order("A", shape, datatype, data)
        );
        let deferred = format!(
            r#"{{"inputs":[{{"data":{data},"datatype":"{datatype}","name":"A","shape":{shape}}}]}}"#
        );
        let a = decode(Bytes::from(streamed), None).unwrap();
        let b = decode(Bytes::from(deferred), None).unwrap();
        assert_eq!(
            a.request.raw_input_contents, b.request.raw_input_contents,
            "{datatype}"
        );
        assert_eq!(a.request.inputs, b.request.inputs, "{datatype}");
    }
    for (shape, datatype, data, problem) in [
        (
            "[2]",
            "INT8",
            "[1,128]",
            "element 1 (128) is out of range for INT8",
        ),
        (
            "[2]",
            "INT32",
            "[1,1.0]",
            "element 1 (1) is not an integer for INT32",
        ),
        ("[3]", "INT32", "[[1],[2,3]]", "is ragged"),
        (
            "[2]",
            "INT32",
            "[1,2,3]",
            "its shape has 2 elements but its data has more",
        ),
        (
            "[3]",
            "INT32",
            "[1,2]",
            "its shape has 3 elements but its data has 2",
        ),
        ("[1]", "FP32", r#"[{"a":1}]"#, "holds an object"),
    ] {
        let streamed = format!(
            r#"{{"inputs":[{}]}}"#,
            client_order("A", shape, datatype, data)
        );
        let message = bad(decode(Bytes::from(streamed), None));
        assert!(
            message.contains("input 'A'") && message.contains(problem),
            "{data}: {message}"
        );
    }
}

#[test]
fn a_request_naming_too_many_tensors_is_refused_while_parsing() {
    let one = client_order("A", "[1]", "INT32", "[1]");
    let inputs = vec![one.as_str(); MAX_TENSORS_PER_REQUEST + 1].join(",");
    let message = bad(decode(
        Bytes::from(format!(r#"{{"inputs":[{inputs}]}}"#)),
        None,
    ));
    assert!(message.contains("at most 4096 inputs"), "{message}");
    let outputs = vec![r#"{"name":"y"}"#; MAX_TENSORS_PER_REQUEST + 1].join(",");
    let message = bad(decode(
        Bytes::from(format!(r#"{{"inputs":[{one}],"outputs":[{outputs}]}}"#)),
        None,
    ));
    assert!(message.contains("4096 outputs"), "{message}");
}

//! Regions over real POSIX shared-memory objects (files in /dev/shm).

use std::collections::HashMap;

use super::*;

/// A shared-memory object of `size` bytes, removed when dropped.
struct Object {
    key: String,
    path: PathBuf,
}

impl Object {
    fn new(tag: &str, size: u64) -> Object {
        let name = format!(
            "mlserve-test-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        );
        let path = PathBuf::from(SHM_DIR).join(&name);
        let file = std::fs::File::create(&path).expect("create in /dev/shm");
        file.set_len(size).unwrap();
        Object {
            key: format!("/{name}"),
            path,
        }
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn region_param(region: &str, size: i64, offset: i64) -> HashMap<String, pb::InferParameter> {
    let int = |v| pb::InferParameter {
        parameter_choice: Some(ParameterChoice::Int64Param(v)),
    };
    HashMap::from([
        (
            REGION.to_string(),
            pb::InferParameter {
                parameter_choice: Some(ParameterChoice::StringParam(region.into())),
            },
        ),
        (BYTE_SIZE.to_string(), int(size)),
        (OFFSET.to_string(), int(offset)),
    ])
}

fn input(
    name: &str,
    parameters: HashMap<String, pb::InferParameter>,
) -> pb::model_infer_request::InferInputTensor {
    pb::model_infer_request::InferInputTensor {
        name: name.into(),
        datatype: "INT32".into(),
        shape: vec![1, 2],
        parameters,
        contents: None,
    }
}

#[test]
fn a_region_must_lie_inside_its_object_and_have_a_valid_key() {
    let object = Object::new("bounds", 64);
    let regions = SharedMemoryRegions::default();
    let refused = |name: &str, key: &str, offset: u64, size: u64| {
        regions.register(name, key, offset, size).unwrap_err().code
    };
    use mlserve_proto::ErrorCode::{BadRequest, Conflict};
    assert_eq!(refused("r", &object.key, 0, 65), BadRequest);
    assert_eq!(refused("r", &object.key, 60, 8), BadRequest);
    assert_eq!(refused("r", &object.key, u64::MAX, 2), BadRequest);
    assert_eq!(refused("r", &object.key, 0, 0), BadRequest);
    assert_eq!(refused("r", "/../etc/passwd", 0, 1), BadRequest);
    assert_eq!(refused("r", "/", 0, 1), BadRequest);
    assert_eq!(refused("r", "/mlserve-no-such-object", 0, 1), BadRequest);
    assert_eq!(refused("", &object.key, 0, 8), BadRequest);
    regions.register("r", &object.key, 32, 32).unwrap();
    assert_eq!(refused("r", &object.key, 0, 8), Conflict);
    let status = regions.status("r").unwrap();
    assert_eq!((status[0].offset, status[0].byte_size), (32, 32));
    assert!(regions.status("other").is_err());
    regions.unregister("r");
    assert!(regions.status("").unwrap().is_empty());
}

#[test]
fn inputs_are_read_from_and_outputs_written_to_their_range() {
    let object = Object::new("io", 64);
    std::fs::write(&object.path, (0u8..64).collect::<Vec<_>>()).unwrap();
    let regions = SharedMemoryRegions::default();
    regions.register("in", &object.key, 16, 16).unwrap();
    regions.register("out", &object.key, 32, 32).unwrap();

    let mut request = pb::ModelInferRequest {
        inputs: vec![
            input("A", region_param("in", 8, 4)),
            input("B", HashMap::new()),
        ],
        raw_input_contents: vec![Bytes::from_static(&[9; 8])],
        outputs: vec![pb::model_infer_request::InferRequestedOutputTensor {
            name: "O".into(),
            parameters: region_param("out", 8, 24),
        }],
        ..Default::default()
    };
    regions.resolve_inputs(&mut request).unwrap();
    assert_eq!(
        request.raw_input_contents[0].as_ref(),
        &[20, 21, 22, 23, 24, 25, 26, 27]
    );
    assert_eq!(request.raw_input_contents[1].as_ref(), &[9; 8]);
    assert!(request.inputs[0].parameters.is_empty());

    let places = regions.output_places(&mut request).unwrap();
    let mut response = pb::ModelInferResponse {
        outputs: vec![pb::model_infer_response::InferOutputTensor {
            name: "O".into(),
            datatype: "INT32".into(),
            shape: vec![1, 2],
            ..Default::default()
        }],
        raw_output_contents: vec![Bytes::from_static(&[7; 8])],
        ..Default::default()
    };
    regions.write_outputs(&places, &mut response).unwrap();
    assert!(response.raw_output_contents[0].is_empty());
    assert!(response.outputs[0].parameters.contains_key(REGION));
    let memory = std::fs::read(&object.path).unwrap();
    assert_eq!(&memory[56..64], &[7; 8]);
    assert_eq!(&memory[48..56], &(48u8..56).collect::<Vec<_>>()[..]);
}

#[test]
fn ranges_outside_a_region_and_unknown_regions_are_refused() {
    let object = Object::new("refuse", 64);
    let regions = SharedMemoryRegions::default();
    regions.register("r", &object.key, 0, 16).unwrap();
    let read = |params| {
        let mut request = pb::ModelInferRequest {
            inputs: vec![input("A", params)],
            ..Default::default()
        };
        regions.resolve_inputs(&mut request).unwrap_err().code
    };
    use mlserve_proto::ErrorCode::{BadRequest, NotFound};
    assert_eq!(read(region_param("r", 8, 12)), BadRequest);
    assert_eq!(read(region_param("r", 17, 0)), BadRequest);
    assert_eq!(read(region_param("r", 8, -1)), BadRequest);
    assert_eq!(read(region_param("r", i64::MAX, i64::MAX)), BadRequest);
    assert_eq!(read(region_param("gone", 8, 0)), NotFound);

    let mut request = pb::ModelInferRequest {
        outputs: vec![pb::model_infer_request::InferRequestedOutputTensor {
            name: "O".into(),
            parameters: region_param("r", 4, 0),
        }],
        ..Default::default()
    };
    let places = regions.output_places(&mut request).unwrap();
    let mut response = pb::ModelInferResponse {
        outputs: vec![pb::model_infer_response::InferOutputTensor {
            name: "O".into(),
            ..Default::default()
        }],
        raw_output_contents: vec![Bytes::from_static(&[1; 8])],
        ..Default::default()
    };
    let err = regions.write_outputs(&places, &mut response).unwrap_err();
    assert!(err.message.contains("at least 8 bytes"), "{}", err.message);
}

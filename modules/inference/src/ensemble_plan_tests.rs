use super::*;

/// Model "a": x FP32 [-1, 4] -> y FP32 [-1, 4]; model "b": y FP32 [-1, 4]
/// -> z FP32 [-1, 1] and w INT64 [-1]; model "c" is not served.
fn composing(name: &str, _version: &str) -> Result<Arc<ModelSpec>, String> {
    let fp32 = |n: &str, shape: Vec<i64>| (n.to_string(), DataType::Fp32, shape);
    let signature = match name {
        "a" => OnnxSignature {
            inputs: vec![fp32("x", vec![-1, 4])],
            outputs: vec![fp32("y", vec![-1, 4])],
        },
        "b" => OnnxSignature {
            inputs: vec![fp32("y", vec![-1, 4])],
            outputs: vec![
                fp32("z", vec![-1, 1]),
                ("w".into(), DataType::Int64, vec![-1]),
            ],
        },
        _ => return Err(format!("Request for unknown model: '{name}' is not found")),
    };
    let spec =
        resolve(name, &ModelConfigFile::default(), &signature, 8).map_err(|e| e.to_string())?;
    Ok(Arc::new(spec))
}

/// An ensemble "e" (IN [4] -> OUT [1], batching 8) over `steps`.
fn ensemble_text(steps: &str) -> String {
    format!(
        r#"
        name: "e"
        platform: "ensemble"
        max_batch_size: 8
        input [ {{ name: "IN" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        output [ {{ name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] }} ]
        ensemble_scheduling {{ step [ {steps} ] }}
        "#
    )
}

const A: &str = r#"{ model_name: "a" model_version: -1
    input_map { key: "x" value: "IN" } output_map { key: "y" value: "mid" } }"#;
const B: &str = r#"{ model_name: "b" model_version: -1
    input_map { key: "y" value: "mid" } output_map { key: "z" value: "OUT" } }"#;

fn planned(steps: &str) -> Result<EnsemblePlan, String> {
    let file = crate::pbtxt::parse(&ensemble_text(steps)).map_err(|e| e.to_string())?;
    let spec = ensemble_spec("e", &file, 8)?;
    plan(&spec, file.ensemble_scheduling.as_ref().unwrap(), composing)
}

fn refused(steps: &str) -> String {
    planned(steps).expect_err("the plan was accepted")
}

#[test]
fn a_triton_ensemble_config_parses_unchanged() {
    let file = crate::pbtxt::parse(&ensemble_text(&format!("{A}, {B}"))).unwrap();
    assert!(is_ensemble(&file));
    let steps = &file.ensemble_scheduling.as_ref().unwrap().step;
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].model_name, "a");
    assert_eq!(steps[0].model_version, -1);
    assert_eq!(steps[0].input_map["x"], "IN");
    assert_eq!(steps[1].output_map["z"], "OUT");
    let spec = ensemble_spec("e", &file, 8).unwrap();
    assert_eq!(spec.max_batch_size, 8);
    assert_eq!(spec.inputs[0].datatype, DataType::Fp32);
    assert_eq!(spec.outputs[0].dims, vec![1]);
}

#[test]
fn steps_run_after_the_steps_they_depend_on_whatever_their_order() {
    let plan = planned(&format!("{B}, {A}")).unwrap();
    let models: Vec<&str> = plan.steps.iter().map(|s| s.model_name.as_str()).collect();
    assert_eq!(models, ["b", "a"], "steps stay in the config's order");
    assert_eq!(plan.order, [1, 0], "a runs first");
    assert_eq!(
        plan.steps[0].inputs,
        vec![("y".to_string(), "mid".to_string())]
    );
    assert_eq!(plan.steps[0].tensor_of_output("z"), Some("OUT"));
    assert_eq!(plan.steps[0].tensor_of_output("w"), None);
    assert_eq!(plan.steps[1].model_version, "");
}

#[test]
fn a_step_whose_model_is_not_served_is_refused() {
    let missing = B.replace("\"b\"", "\"c\"");
    let err = refused(&format!("{A}, {missing}"));
    assert!(
        err.contains("model 'c'") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn an_input_nothing_produces_is_refused() {
    let err = refused(&format!(
        "{A}, {}",
        B.replace("value: \"mid\"", "value: \"nowhere\"")
    ));
    assert!(
        err.contains("'nowhere'") && err.contains("produced by no ensemble input"),
        "{err}"
    );
}

#[test]
fn steps_that_feed_each_other_are_a_cycle() {
    // Every tensor is produced once, but `t1` and `t2` only by each other.
    let step = |input: &str, output: &str| EnsembleStepConfig {
        model_name: "a".into(),
        model_version: -1,
        input_map: [("x".to_string(), input.to_string())].into(),
        output_map: [("y".to_string(), output.to_string())].into(),
    };
    let config = EnsembleConfig {
        step: vec![step("t1", "t2"), step("t2", "t1"), step("IN", "OUT")],
    };
    let wide = ensemble_text(A).replace("dims: [ 1 ]", "dims: [ 4 ]");
    let spec = ensemble_spec("e", &crate::pbtxt::parse(&wide).unwrap(), 8).unwrap();
    let err = plan(&spec, &config, composing).unwrap_err();
    assert!(
        err.contains("cycle") && err.contains(r#"["a", "a"]"#),
        "{err}"
    );
    let acyclic = EnsembleConfig {
        step: vec![step("t1", "t2"), step("IN", "t1"), step("t2", "OUT")],
    };
    assert_eq!(plan(&spec, &acyclic, composing).unwrap().order, [1, 0, 2]);
}

#[test]
fn a_tensor_produced_twice_is_refused() {
    let twice = A.replace("value: \"mid\"", "value: \"OUT\"");
    let err = refused(&format!("{A}, {B}, {twice}"));
    assert!(err.contains("'OUT' is produced twice"), "{err}");
    let shadowing_an_input = A.replace("value: \"mid\"", "value: \"IN\"");
    let err = refused(&format!("{shadowing_an_input}, {B}"));
    assert!(
        err.contains("'IN' is produced twice") && err.contains("ensemble input"),
        "{err}"
    );
}

#[test]
fn unused_inputs_and_outputs_are_allowed() {
    let text = ensemble_text(&format!("{A}, {B}")).replace(
        "input [ {",
        "input [ { name: \"SPARE\" data_type: TYPE_INT32 dims: [ 2 ] }, {",
    );
    let file = crate::pbtxt::parse(&text).unwrap();
    let spec = ensemble_spec("e", &file, 8).unwrap();
    let plan = plan(&spec, file.ensemble_scheduling.as_ref().unwrap(), composing).unwrap();
    assert_eq!(
        plan.steps.len(),
        2,
        "b's unmapped output 'w' and 'SPARE' are fine"
    );
}

#[test]
fn types_shapes_and_mappings_must_agree() {
    let w_out = B.replace("key: \"z\"", "key: \"w\"");
    let err = refused(&format!("{A}, {w_out}"));
    assert!(
        err.contains("INT64") && err.contains("ensemble output 'OUT'"),
        "{err}"
    );
    let wide = ensemble_text(&format!("{A}, {B}")).replace("dims: [ 1 ]", "dims: [ 3 ]");
    let file = crate::pbtxt::parse(&wide).unwrap();
    let spec = ensemble_spec("e", &file, 8).unwrap();
    let err = plan(&spec, file.ensemble_scheduling.as_ref().unwrap(), composing).unwrap_err();
    assert!(
        err.contains("shape [-1, 1]") && err.contains("[-1, 3]"),
        "{err}"
    );
    let err = refused(&format!(
        "{}, {B}",
        A.replace("key: \"x\"", "key: \"nope\"")
    ));
    assert!(err.contains("maps input 'nope'"), "{err}");
    let err = refused(&format!("{A}, {}", B.replace("key: \"z\"", "key: \"q\"")));
    assert!(err.contains("maps output 'q'"), "{err}");
    let err = refused("{ model_name: \"a\" output_map { key: \"y\" value: \"OUT\" } }");
    assert!(err.contains("does not map the model's input 'x'"), "{err}");
}

#[test]
fn an_ensemble_config_must_be_complete() {
    let spec = |text: &str| ensemble_spec("e", &crate::pbtxt::parse(text).unwrap(), 8);
    let err = spec("platform: \"ensemble\"").unwrap_err();
    assert!(err.contains("at least one"), "{err}");
    let no_io = "ensemble_scheduling { step [ { model_name: \"a\" } ] }";
    assert!(spec(no_io).unwrap_err().contains("declare its inputs"));
    let onnx = ensemble_text(A).replace("\"ensemble\"", "\"onnxruntime_onnx\"");
    assert!(spec(&onnx)
        .unwrap_err()
        .contains("platform 'onnxruntime_onnx'"));
    let renamed = spec(&ensemble_text(A)).map(|s| s.name);
    assert_eq!(renamed, Ok("e".to_string()));
    let file = crate::pbtxt::parse(&ensemble_text(A)).unwrap();
    assert!(ensemble_spec("other", &file, 8)
        .unwrap_err()
        .contains("does not match"));
    let narrow = ensemble_text(A).replace("max_batch_size: 8", "max_batch_size: 16");
    let file = crate::pbtxt::parse(&narrow).unwrap();
    let spec = ensemble_spec("e", &file, 8).unwrap();
    let err = plan(&spec, file.ensemble_scheduling.as_ref().unwrap(), composing).unwrap_err();
    assert!(
        err.contains("max_batch_size 8, below the ensemble's 16"),
        "{err}"
    );
}

#[test]
fn config_toml_takes_the_same_ensemble() {
    let file: ModelConfigFile = toml::from_str(
        r#"
        platform = "ensemble"
        [[ensemble_scheduling.step]]
        model_name = "a"
        input_map = { x = "IN" }
        output_map = { y = "OUT" }
        "#,
    )
    .unwrap();
    let step = &file.ensemble_scheduling.unwrap().step[0];
    assert_eq!(
        (step.model_version, step.version_label()),
        (-1, String::new())
    );
    assert_eq!(step.output_map["y"], "OUT");
}

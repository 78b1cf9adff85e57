//! Workflow definitions (`spec.rs`: TOML when the first byte is even, YAML,
//! Argo's style, when odd), then every check a submission runs
//! (`validate.rs`) and the Argo export (`argo.rs`). Checked: no panic (an
//! error is fine); a parsed spec survives a serde round trip unchanged
//! (finite numbers); the Argo export is YAML that reads back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlserve_training::{argo, spec, validate, WorkflowSpec};

fuzz_target!(|data: &[u8]| {
    let Some((pick, text)) = mlserve_fuzz::selector_and_text(data) else {
        return;
    };
    let parsed = if pick & 1 == 0 {
        spec::parse_toml(text)
    } else {
        spec::parse_yaml(text)
    };
    let Ok(workflow) = parsed else {
        return;
    };
    let shown = format!("{workflow:?}");
    if !shown.contains("NaN") && !shown.contains("inf") {
        let json = serde_json::to_string(&workflow).expect("a spec serializes");
        let again: WorkflowSpec =
            serde_json::from_str(&json).expect("a serialized spec reads back");
        assert_eq!(again, workflow, "{json}");
    }
    let _ = validate::check(&workflow);
    let yaml = argo::export_yaml(&workflow);
    let _: serde_json::Value = serde_norway::from_str(&yaml).expect("the Argo export reads back");
});

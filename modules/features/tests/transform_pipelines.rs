//! Image and text pipelines through the feature service (registered through
//! the API and from the configuration): the tensors `transform` returns are
//! exactly the transforms' own outputs, named and typed for inference.

#[path = "support/python.rs"]
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use mlserve_common::db::testing;
use mlserve_features::online::MemoryStore;
use mlserve_features::transform::image::{self, ImageSpec};
use mlserve_features::transform::text::{TextSpec, TextTransform};
use mlserve_features::transform::PipelineSpec;
use mlserve_features::{LocalFeatures, Options};
use mlserve_proto::features::*;
use mlserve_proto::CallContext;
use mlserve_proto::ErrorCode;

fn png(width: u32, height: u32) -> Vec<u8> {
    let pixels: Vec<u8> = (0..width * height * 3)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .unwrap()
        .write_image_data(&pixels)
        .unwrap();
    out
}

async fn service(pipelines: BTreeMap<String, PipelineSpec>) -> LocalFeatures {
    let db = testing::sqlite(&support::scratch("pipelines")).await;
    let options = Options {
        pipelines,
        ..Options::default()
    };
    LocalFeatures::new(db, Arc::new(MemoryStore::default()), options)
}

#[tokio::test]
async fn image_pipeline_returns_the_image_transform_output() {
    let features = service(BTreeMap::new()).await;
    let spec = serde_json::json!({"kind": "image", "output": "pixels", "image": {}});
    features
        .put_pipeline(
            CallContext::new(),
            Pipeline {
                model: "resnet".into(),
                kind: "image".into(),
                spec_json: spec.to_string(),
            },
        )
        .await
        .unwrap();
    let images = vec![png(300, 260), png(256, 256)];
    let response = features
        .transform(
            CallContext::new(),
            TransformRequest {
                model: "resnet".into(),
                images: images.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let tensor = &response.tensors[0];
    assert_eq!(
        (tensor.name.as_str(), tensor.datatype.as_str()),
        ("pixels", "FP32")
    );
    assert_eq!(tensor.shape, vec![2, 3, 224, 224]);
    let (_, want) = image::transform_batch(&ImageSpec::default(), &images).unwrap();
    let want: Vec<u8> = want.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert!(
        tensor.data == want,
        "service output differs from the transform"
    );

    let bad = features
        .transform(
            CallContext::new(),
            TransformRequest {
                model: "resnet".into(),
                images: vec![b"not an image".to_vec()],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(bad.code, ErrorCode::BadRequest, "{}", bad.message);
}

#[tokio::test]
async fn configured_text_pipeline_returns_the_tokenizer_output() {
    let tokenizer = support::minilm_tokenizer();
    let config = serde_json::json!({
        "kind": "text",
        "text": {"tokenizer": tokenizer, "max_length": 16}
    });
    let spec = PipelineSpec::from_json(config, "minilm").unwrap();
    let features = service([("minilm".to_string(), spec)].into_iter().collect()).await;
    let texts = vec!["Hello, world!".to_string(), "feature stores".to_string()];
    let response = features
        .transform(
            CallContext::new(),
            TransformRequest {
                model: "minilm".into(),
                texts: texts.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let want = TextTransform::load(TextSpec {
        max_length: 16,
        ..TextSpec::new(&tokenizer)
    })
    .unwrap()
    .encode(&texts)
    .unwrap();
    let names: Vec<&str> = response.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["input_ids", "attention_mask", "token_type_ids"]);
    for (tensor, expected) in response.tensors.iter().zip(&want.tensors) {
        assert_eq!(tensor.datatype, "INT64");
        assert_eq!(tensor.shape, vec![2, 16]);
        let values: Vec<i64> = tensor
            .data
            .chunks(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(values, expected.data);
    }
    let listed = features
        .list_pipelines(CallContext::new(), ListRequest {})
        .await
        .unwrap()
        .pipelines;
    assert_eq!(
        (listed[0].model.as_str(), listed[0].kind.as_str()),
        ("minilm", "text")
    );
    let one = features
        .get_pipeline(
            CallContext::new(),
            GetPipelineRequest {
                model: "minilm".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(one, listed[0]);
    let missing = features
        .get_pipeline(
            CallContext::new(),
            GetPipelineRequest {
                model: "nope".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        missing.code,
        mlserve_proto::ErrorCode::NotFound,
        "{missing}"
    );
    let request = response.into_infer_request("minilm");
    assert_eq!(request.raw_input_contents.len(), 3);
}

#[tokio::test]
async fn invalid_pipelines_are_refused() {
    let features = service(BTreeMap::new()).await;
    for spec in [
        serde_json::json!({"kind": "sound"}),
        serde_json::json!({"kind": "text", "text": {"tokenizer": "/nonexistent.json"}}),
        serde_json::json!({"kind": "tabular", "features": []}),
        serde_json::json!({"kind": "tabular", "features": [{"name": "nope:x"}]}),
    ] {
        let err = features
            .put_pipeline(
                CallContext::new(),
                Pipeline {
                    model: "m".into(),
                    kind: String::new(),
                    spec_json: spec.to_string(),
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err.code, ErrorCode::BadRequest | ErrorCode::NotFound),
            "{spec}: {err:?}"
        );
    }
}

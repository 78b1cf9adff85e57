use serde_json::json;

use super::*;

fn parse<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

#[test]
fn rows_and_entities_become_json_text() {
    let body: PushBody = parse(json!({
        "feature_view": "v",
        "rows": [{"values": {"id": 1001, "name": "a", "x": null}, "event_ts": 5}],
    }));
    let request = pb::PushRequest::from(body);
    let row = &request.rows[0];
    assert_eq!(row.values["id"], "1001");
    assert_eq!(row.values["name"], "\"a\"");
    assert_eq!(row.values["x"], "null");
    assert_eq!((row.event_ts, request.to.as_str()), (5, ""));

    let body: LookupBody = parse(json!({
        "features": ["v:f"], "entities": [{"keys": {"id": "k"}, "event_ts": 9}],
    }));
    let request = pb::GetHistoricalFeaturesRequest::from(body);
    assert_eq!(request.entities[0].keys["id"], "\"k\"");
    assert_eq!(request.entities[0].event_ts, 9);
}

#[test]
fn feature_values_are_plain_json_under_value() {
    let response = pb::GetOnlineFeaturesResponse {
        features: vec!["v:f".into(), "v:g".into()],
        rows: vec![pb::OnlineFeatureRow {
            values: vec![
                pb::FeatureValue {
                    value_json: "0.5".into(),
                    status: "PRESENT".into(),
                    event_ts: 1,
                },
                pb::FeatureValue {
                    value_json: String::new(),
                    status: "NOT_FOUND".into(),
                    event_ts: 0,
                },
            ],
        }],
    };
    let body = serde_json::to_value(OnlineBody::try_from(response).unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"features": ["v:f", "v:g"], "rows": [{"values": [
            {"value": 0.5, "status": "PRESENT", "event_ts": 1},
            {"value": null, "status": "NOT_FOUND", "event_ts": 0},
        ]}]})
    );
    let broken = pb::GetOnlineFeaturesResponse {
        rows: vec![pb::OnlineFeatureRow {
            values: vec![pb::FeatureValue {
                value_json: "{not json".into(),
                ..Default::default()
            }],
        }],
        ..Default::default()
    };
    assert!(matches!(
        OnlineBody::try_from(broken),
        Err(FeaturesError::Internal(_))
    ));
}

#[test]
fn pipelines_carry_their_spec_as_an_object() {
    let spec = json!({"kind": "image", "image": {}});
    let body: PipelineBody = parse(json!({"model": "m", "spec": spec}));
    let message = pb::Pipeline::from(body);
    assert_eq!((message.model.as_str(), message.kind.as_str()), ("m", ""));
    assert_eq!(
        serde_json::from_str::<Value>(&message.spec_json).unwrap(),
        spec
    );

    let listed = pb::ListPipelinesResponse {
        pipelines: vec![pb::Pipeline {
            kind: "image".into(),
            ..message
        }],
    };
    let body = serde_json::to_value(PipelinesBody::try_from(listed).unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"pipelines": [{"model": "m", "kind": "image", "spec": spec}]})
    );
}

#[test]
fn transform_rows_images_and_tensors() {
    let body: TransformBody = parse(json!({
        "model": "m",
        "rows": [{"id": 1}],
        "images": ["data:image/png;base64,AAEC"],
        "texts": ["hi"],
    }));
    let request = pb::TransformRequest::try_from(body).unwrap();
    assert_eq!(request.rows_json, vec![r#"{"id":1}"#]);
    assert_eq!(request.images, vec![vec![0u8, 1, 2]]);
    assert_eq!(request.texts, vec!["hi"]);

    let bad: TransformBody = parse(json!({"model": "m", "images": ["%%%"]}));
    let err = pb::TransformRequest::try_from(bad).unwrap_err();
    assert!(
        matches!(&err, FeaturesError::Invalid(m) if m.contains("image 0")),
        "{err}"
    );

    let tensors = TensorsBody::from(pb::TransformResponse {
        tensors: vec![pb::Tensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1],
            data: vec![0, 0, 128, 63],
        }],
    });
    assert_eq!(
        serde_json::to_value(tensors).unwrap(),
        json!({"tensors": [{"name": "x", "datatype": "FP32", "shape": [1], "data": "AACAPw=="}]})
    );
}

#[test]
fn old_and_misspelt_names_are_rejected() {
    let err = serde_json::from_value::<TransformBody>(json!({"model": "m", "rows_json": [{}]}))
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown field `rows_json`"),
        "{err}"
    );
    let err =
        serde_json::from_value::<PipelineBody>(json!({"model": "m", "spec_json": {}})).unwrap_err();
    assert!(
        err.to_string().contains("unknown field `spec_json`"),
        "{err}"
    );
    assert!(serde_json::from_value::<IngestBody>(
        json!({"feature_view": "v", "rows": [], "to": "online"})
    )
    .is_err());
    assert!(serde_json::from_value::<TransformBody>(json!({"model": "m", "rows": [1]})).is_err());
}

#[test]
fn an_online_lookup_over_the_limit_is_refused_while_parsed() {
    let lookup = |n: usize| {
        let entities = vec![r#"{"keys": {"id": 1}}"#; n].join(",");
        format!(r#"{{"features": ["v:f"], "entities": [{entities}]}}"#)
    };
    let body = LookupBody::parse_online(lookup(3).as_bytes(), 3).unwrap();
    assert_eq!((body.features.len(), body.entities.len()), (1, 3));

    // Refused at the fourth entity: the rest of the body is not JSON at all.
    let text = lookup(4).replace("]}", ", not json");
    let err = LookupBody::parse_online(text.as_bytes(), 3).unwrap_err();
    assert!(matches!(err, FeaturesError::Invalid(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "at least 4 entities requested, more than the limit of 3"
    );
    // The service's own check says the same, with the count.
    assert_eq!(
        crate::lookup::too_many_entities(4, 3).to_string(),
        "4 entities requested, more than the limit of 3"
    );
}

#[test]
fn a_bounded_online_lookup_parses_as_the_derived_one() {
    let body = LookupBody::parse_online(br#"{"features": ["v:f"]}"#, 3).unwrap();
    assert!(body.entities.is_empty());
    for (text, expected) in [
        (&br#"{"entities": []}"#[..], "missing field `features`"),
        (br#"{"features": [], "rows": []}"#, "unknown field `rows`"),
        (
            br#"{"features": [], "features": []}"#,
            "duplicate field `features`",
        ),
        (br#"{"features": []} x"#, "trailing characters"),
        (
            br#"{"features": [], "entities": [{"key": {}}]}"#,
            "unknown field `key`",
        ),
        (b"{not json", "key must be a string"),
    ] {
        let err = LookupBody::parse_online(text, 3).unwrap_err().to_string();
        assert!(err.starts_with("invalid request body: "), "{err}");
        assert!(err.contains(expected), "{err}");
    }
}

use super::*;

fn settings(rate: f64) -> RequestLogConfig {
    RequestLogConfig {
        sample_rate: rate,
        max_rows_per_second: 0.0,
        queue_rows: 2,
        ..Default::default()
    }
}

fn fp32(values: &[f32]) -> bytes::Bytes {
    values
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect::<Vec<u8>>()
        .into()
}

/// A batch of three rows of two features, answered with one score per row,
/// plus an image-sized input that the log leaves out.
fn exchange() -> (pb::ModelInferRequest, pb::ModelInferResponse) {
    let tensor = |name: &str, shape: Vec<i64>| pb::model_infer_request::InferInputTensor {
        name: name.into(),
        datatype: "FP32".into(),
        shape,
        ..Default::default()
    };
    let request = pb::ModelInferRequest {
        model_name: "churn".into(),
        inputs: vec![tensor("x", vec![3, 2]), tensor("image", vec![3, 100])],
        raw_input_contents: vec![fp32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), fp32(&[0.5; 300])],
        ..Default::default()
    };
    let response = pb::ModelInferResponse {
        model_name: "churn".into(),
        model_version: "2".into(),
        outputs: vec![pb::model_infer_response::InferOutputTensor {
            name: "score".into(),
            datatype: "FP32".into(),
            shape: vec![3, 1],
            ..Default::default()
        }],
        raw_output_contents: vec![fp32(&[0.1, 0.2, 0.3])],
        ..Default::default()
    };
    (request, response)
}

#[test]
fn rows_name_columns_and_leave_wide_tensors_out() {
    let (request, response) = exchange();
    let rows = served_rows(&request, &response, "2", &settings(1.0));
    assert_eq!(rows.len(), 3);
    let second = &rows[1];
    assert_eq!(
        (second.model.as_str(), second.version.as_str()),
        ("churn", "2")
    );
    let mut names: Vec<&String> = second.features.keys().collect();
    names.sort();
    assert_eq!(
        names,
        ["x[0]", "x[1]"],
        "the 100-wide image is not a feature"
    );
    assert_eq!(second.features["x[1]"], 4.0);
    assert_eq!(second.prediction["score"] as f32, 0.2);
}

#[test]
fn only_the_first_rows_of_a_batch_are_kept() {
    let (request, response) = exchange();
    let one = RequestLogConfig {
        max_rows_per_request: 1,
        ..settings(1.0)
    };
    let rows = served_rows(&request, &response, "2", &one);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].features["x[0]"], 1.0);
}

#[test]
fn a_full_queue_drops_rows_instead_of_waiting() {
    let counts = Arc::new(LogCounts::default());
    let (log, mut rx) = RequestLog::new(&settings(1.0), counts.clone())
        .unwrap()
        .unwrap();
    let (request, response) = exchange();
    // Nobody reads the queue (a store that does not answer): the offer
    // returns at once, two rows wait and the rest are dropped.
    log.offer(&request, &response, "2");
    log.offer(&request, &response, "2");
    assert_eq!(counts.queued.load(Ordering::Relaxed), 2);
    assert_eq!(counts.dropped.load(Ordering::Relaxed), 4);
    assert_eq!(rx.try_recv().unwrap().features["x[0]"], 1.0);
}

#[test]
fn the_rate_bound_and_the_sample_rate_hold() {
    let counts = Arc::new(LogCounts::default());
    let bounded = RequestLogConfig {
        max_rows_per_second: 2.0,
        queue_rows: 100,
        ..settings(1.0)
    };
    let (log, _rx) = RequestLog::new(&bounded, counts.clone()).unwrap().unwrap();
    let (request, response) = exchange();
    for _ in 0..10 {
        log.offer(&request, &response, "2");
    }
    assert_eq!(
        counts.queued.load(Ordering::Relaxed),
        2,
        "a burst of one second's rows"
    );

    let counts = Arc::new(LogCounts::default());
    let sampled = RequestLogConfig {
        sample_rate: 0.1,
        max_rows_per_request: 1,
        queue_rows: 100_000,
        ..settings(0.1)
    };
    let (log, _rx) = RequestLog::new(&sampled, counts.clone()).unwrap().unwrap();
    for _ in 0..20_000 {
        log.offer(&request, &response, "2");
    }
    let queued = counts.queued.load(Ordering::Relaxed);
    // Binomial(20000, 0.1): mean 2000, sd 42; 10 sd either side.
    assert!((1_580..=2_420).contains(&queued), "{queued} rows sampled");

    assert!(RequestLog::new(&settings(0.0), counts.clone())
        .unwrap()
        .is_none());
    assert!(RequestLog::new(&settings(1.5), counts).is_err());
}

//! The router end to end over a fake service that echoes its inputs.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::http::{header, HeaderMap, Request, StatusCode};
use bytes::Bytes;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{v2_router, HttpOptions};
use crate::fake_inference::Echo;
use crate::pb;

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    /// Asserts the protocol's error form and returns the message.
    fn error(&self, status: StatusCode) -> String {
        assert_eq!(self.status, status, "body {:?}", self.body);
        assert_eq!(self.headers[header::CONTENT_TYPE], "application/json");
        let doc = self.json();
        assert_eq!(doc.as_object().map(|o| o.len()), Some(1), "{doc}");
        doc["error"]
            .as_str()
            .expect("error must be a string")
            .to_string()
    }
}

async fn send_to(service: Arc<Echo>, options: HttpOptions, request: Request<Body>) -> Reply {
    let client = crate::inference::InferenceClient::from_arc(service);
    let response = v2_router(client, options).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

async fn send(request: Request<Body>) -> Reply {
    send_to(Arc::new(Echo::default()), HttpOptions::default(), request).await
}

async fn get(path: &str) -> Reply {
    send(Request::get(path).body(Body::empty()).unwrap()).await
}

fn post(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path).body(body.into()).unwrap()
}

#[tokio::test]
async fn health_and_server_metadata() {
    let r = get("/v2/health/live").await;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, 0));
    let r = get("/v2/health/ready").await;
    assert_eq!(r.status, StatusCode::OK);
    let not_ready = Arc::new(Echo {
        not_ready: true,
        ..Default::default()
    });
    let r = send_to(
        not_ready,
        HttpOptions::default(),
        Request::get("/v2/health/ready")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!((r.status, r.body.len()), (StatusCode::BAD_REQUEST, 0));
    let r = get("/v2").await;
    assert_eq!(
        r.json(),
        json!({"name": "mlserve", "version": "0.1.0", "extensions": ["binary_tensor_data"]})
    );
}

#[tokio::test]
async fn model_metadata_ready_and_config() {
    let r = get("/v2/models/echo").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json()["inputs"],
        json!([{"name": "IN", "datatype": "FP32", "shape": [-1, 3]}])
    );
    assert_eq!(
        get("/v2/models/echo/versions/1").await.json()["versions"],
        json!(["1"])
    );
    assert!(get("/v2/models/nope")
        .await
        .error(StatusCode::NOT_FOUND)
        .contains("nope"));
    assert_eq!(get("/v2/models/echo/ready").await.status, StatusCode::OK);
    assert_eq!(
        get("/v2/models/echo/versions/1/ready").await.status,
        StatusCode::OK
    );
    let r = get("/v2/models/sleepy/ready").await;
    assert_eq!((r.status, r.body.len()), (StatusCode::BAD_REQUEST, 0));
    get("/v2/models/nope/ready")
        .await
        .error(StatusCode::NOT_FOUND);
    let r = get("/v2/models/echo/config").await;
    assert_eq!(
        (r.json()["name"].clone(), r.json()["max_batch_size"].clone()),
        (json!("echo"), json!(4))
    );
}

#[tokio::test]
async fn statistics_routes() {
    for path in [
        "/v2/models/stats",
        "/v2/models/echo/stats",
        "/v2/models/echo/versions/1/stats",
    ] {
        let r = get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.json()["model_stats"][0]["inference_count"], 3, "{path}");
    }
    get("/v2/models/nope/stats")
        .await
        .error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn invalid_names_unknown_routes_and_methods() {
    for path in [
        "/v2/models/a%2Fb",
        "/v2/models/..",
        "/v2/models/a%00b/ready",
        "/v2/models/a%0Ab/config",
        "/v2/models//ready",
        "/v2/models/",
    ] {
        get(path).await.error(StatusCode::BAD_REQUEST);
    }
    get("/v2/models/echo/versions/abc")
        .await
        .error(StatusCode::BAD_REQUEST);
    get("/v2/models/%FF").await.error(StatusCode::BAD_REQUEST);
    assert!(get("/v2/nothing/here")
        .await
        .error(StatusCode::NOT_FOUND)
        .contains("/v2/nothing/here"));
    get("/").await.error(StatusCode::NOT_FOUND);
    get("/v2/models/echo/infer")
        .await
        .error(StatusCode::METHOD_NOT_ALLOWED);
    for path in [
        "/v2/repository/models/a%2F..%2Fb/load",
        "/v2/repository/models//unload",
    ] {
        send(post(path, "")).await.error(StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn json_inference_round_trip() {
    let doc = json!({"id": "q1", "inputs": [{"name": "IN", "shape": [1, 3], "datatype": "FP32", "data": [[1, 2.5, -3]]}]});
    let r = send(post("/v2/models/echo/infer", doc.to_string())).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
    assert!(r.headers.get("inference-header-content-length").is_none());
    assert_eq!(
        r.json(),
        json!({"model_name": "echo", "model_version": "1", "id": "q1",
               "outputs": [{"name": "IN", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2.5, -3.0]}]})
    );
    let r = send(post("/v2/models/nope/infer", doc.to_string())).await;
    assert!(r.error(StatusCode::NOT_FOUND).contains("nope"));
    let r = send(post("/v2/models/echo/infer", "{\"inputs\": [")).await;
    r.error(StatusCode::BAD_REQUEST);
}

/// A tritonclient-style binary request: two inputs in binary, all outputs binary.
fn binary_request() -> (Vec<u8>, usize, Vec<u8>, Vec<u8>) {
    let a: Vec<u8> = [1.0f32, 2.0, 3.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let b: Vec<u8> = [7i32, 8].iter().flat_map(|v| v.to_le_bytes()).collect();
    let doc = json!({
        "parameters": {"binary_data_output": true},
        "inputs": [
            {"name": "IN", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": a.len()}},
            {"name": "B", "shape": [2], "datatype": "INT32", "parameters": {"binary_data_size": b.len()}}
        ]
    });
    let mut body = doc.to_string().into_bytes();
    let n = body.len();
    body.extend_from_slice(&a);
    body.extend_from_slice(&b);
    (body, n, a, b)
}

#[tokio::test]
async fn binary_inference_round_trip() {
    let (body, n, a, b) = binary_request();
    let request = Request::post("/v2/models/echo/versions/1/infer")
        .header("Inference-Header-Content-Length", n.to_string())
        .body(Body::from(body))
        .unwrap();
    let r = send(request).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/octet-stream");
    let len: usize = r.headers["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let doc: Value = serde_json::from_slice(&r.body[..len]).unwrap();
    assert_eq!(doc["outputs"][0]["parameters"]["binary_data_size"], 12);
    assert_eq!(doc["outputs"][1]["parameters"]["binary_data_size"], 8);
    assert_eq!(&r.body[len..], &[a, b].concat()[..]);
}

#[tokio::test]
async fn compressed_request_and_response() {
    let (body, n, a, b) = binary_request();
    let packed = super::body::compress(super::body::Coding::Gzip, &body).unwrap();
    let request = Request::post("/v2/models/echo/infer")
        .header("Inference-Header-Content-Length", n.to_string())
        .header(header::CONTENT_ENCODING, "gzip")
        .header(header::ACCEPT_ENCODING, "deflate")
        .body(Body::from(packed))
        .unwrap();
    let r = send(request).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.headers[header::CONTENT_ENCODING], "deflate");
    let plain = super::body::decompress(super::body::Coding::Deflate, &r.body, 1 << 20).unwrap();
    let len: usize = r.headers["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    serde_json::from_slice::<Value>(&plain[..len])
        .expect("the header length is the uncompressed JSON's");
    assert_eq!(&plain[len..], &[a, b].concat()[..]);
}

#[tokio::test]
async fn over_limit_bodies_are_413() {
    let small = HttpOptions { max_body_bytes: 64 };
    let (body, n, _, _) = binary_request();
    assert!(body.len() > 64);
    let request = Request::post("/v2/models/echo/infer")
        .header("Inference-Header-Content-Length", n.to_string())
        .body(Body::from(body.clone()))
        .unwrap();
    let msg = send_to(Arc::new(Echo::default()), small, request)
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(msg, "request body exceeds the limit of 64 bytes");
    // Small once compressed, too big once inflated.
    let packed = super::body::compress(super::body::Coding::Gzip, &vec![b' '; 1000]).unwrap();
    assert!(packed.len() < 64);
    let request = Request::post("/v2/models/echo/infer")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(packed))
        .unwrap();
    send_to(Arc::new(Echo::default()), small, request)
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn raw_binary_request_uses_the_model_metadata() {
    let data: Vec<u8> = [1.0f32, 2.0, 3.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let service = Arc::new(Echo::default());
    let raw = |body: Vec<u8>| {
        Request::post("/v2/models/echo/infer")
            .header("Inference-Header-Content-Length", "0")
            .body(Body::from(body))
            .unwrap()
    };
    let r = send_to(service.clone(), HttpOptions::default(), raw(data.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let len: usize = r.headers["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let doc: Value = serde_json::from_slice(&r.body[..len]).unwrap();
    // Metadata shape [-1, 3]: the batch dimension becomes 1.
    assert_eq!(doc["outputs"][0]["shape"], json!([1, 3]));
    assert_eq!(doc["outputs"][0]["parameters"]["binary_data_size"], 12);
    assert_eq!(&r.body[len..], &data[..]);
    assert_eq!(
        service.requests.lock().unwrap().pop().unwrap().inputs[0].shape,
        vec![1, 3]
    );
    // 24 bytes are two rows, which a raw request (batch 1) cannot carry.
    let msg = send(raw([data.clone(), data].concat()))
        .await
        .error(StatusCode::BAD_REQUEST);
    assert!(msg.contains("input 'IN'"), "{msg}");
}

#[tokio::test]
async fn classification_over_the_router() {
    let doc = json!({
        "inputs": [{"name": "IN", "shape": [2, 3], "datatype": "FP32", "data": [0.1, 0.7, 0.2, 0.5, 0.4, 0.6]}],
        "outputs": [{"name": "IN", "parameters": {"classification": 2}}]
    });
    let r = send(post("/v2/models/echo/infer", doc.to_string())).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        r.json()["outputs"][0],
        json!({"name": "IN", "datatype": "BYTES", "shape": [2, 2],
               "data": ["0.700000:1", "0.200000:2", "0.600000:2", "0.500000:0"]})
    );
}

#[tokio::test]
async fn repository_index_load_and_unload() {
    let r = send(post("/v2/repository/index", "")).await;
    assert_eq!(
        r.json(),
        json!([{"name": "echo", "version": "1", "state": "READY"}, {"name": "sleepy", "state": "UNAVAILABLE"}])
    );
    let r = send(post("/v2/repository/index", r#"{"ready": true}"#)).await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    send(post("/v2/repository/index", r#"{"ready": 1}"#))
        .await
        .error(StatusCode::BAD_REQUEST);

    let service = Arc::new(Echo::default());
    let body = r#"{"parameters": {"config": "{}", "file:1/model.onnx": "AQI="}}"#;
    let r = send_to(
        service.clone(),
        HttpOptions::default(),
        post("/v2/repository/models/echo/load", body),
    )
    .await;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, 0));
    let (name, params) = service.loads.lock().unwrap().pop().unwrap();
    assert_eq!(name, "echo");
    assert_eq!(
        params["file:1/model.onnx"].parameter_choice,
        Some(pb::model_repository_parameter::ParameterChoice::BytesParam(
            vec![1, 2]
        ))
    );
    let r = send(post("/v2/repository/models/echo/load", "")).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(post("/v2/repository/models/nope/load", "{}")).await;
    assert!(r.error(StatusCode::NOT_FOUND).contains("nope"));
    let r = send(post("/v2/repository/models/echo/unload", "{}")).await;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, 0));
    send(post(
        "/v2/repository/models/echo/load",
        "{\"parameters\": 3}",
    ))
    .await
    .error(StatusCode::BAD_REQUEST);
}

//! The service suite, run against the local implementation and through the
//! gRPC adapters (server adapter + remote client): both must answer the same,
//! errors and their codes included.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_stream::wrappers::TcpListenerStream;

use super::*;
use crate::fake_inference::Echo;
use crate::{ErrorCode, ServiceError};

async fn remote_over_grpc(local: InferenceClient) -> InferenceClient {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = inference_grpc_server(local, MAX_GRPC_MESSAGE_BYTES);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    Arc::new(connect_inference(&format!("http://{addr}"), Duration::from_secs(5)).unwrap())
}

fn infer_request(id: &str) -> pb::ModelInferRequest {
    let data: Vec<u8> = [1.5f32, -2.0, 3.25]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    pb::ModelInferRequest {
        model_name: "echo".into(),
        id: id.into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "IN".into(),
            datatype: "FP32".into(),
            shape: vec![1, 3],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(data)],
        ..Default::default()
    }
}

/// Every call of the trait, with its expected answers; `client` is either side.
async fn suite(client: &InferenceClient) -> Vec<String> {
    let mut seen = Vec::new();
    assert!(client.server_live().await.unwrap());
    assert!(client.server_ready().await.unwrap());
    seen.push(format!("{:?}", client.server_metadata().await.unwrap()));
    assert!(client.model_ready("echo", "").await.unwrap());
    seen.push(format!(
        "{:?}",
        client.model_metadata("echo", "").await.unwrap()
    ));
    seen.push(format!(
        "{:?}",
        client.model_config("echo", "").await.unwrap()
    ));
    seen.push(format!(
        "{:?}",
        client.model_statistics("echo", "").await.unwrap()
    ));
    let response = client.model_infer(infer_request("r1")).await.unwrap();
    assert_eq!(response.id, "r1");
    assert_eq!(
        response.raw_output_contents,
        infer_request("r1").raw_input_contents
    );
    seen.push(format!("{response:?}"));
    seen.push(format!(
        "{:?}",
        client.repository_index(false).await.unwrap()
    ));
    assert_eq!(client.repository_index(true).await.unwrap().len(), 1);
    let mut params = LoadParameters::new();
    params.insert(
        "config".into(),
        pb::ModelRepositoryParameter {
            parameter_choice: Some(
                pb::model_repository_parameter::ParameterChoice::StringParam("{}".into()),
            ),
        },
    );
    client.load_model("echo", params).await.unwrap();
    client.unload_model("echo").await.unwrap();
    let missing: ServiceError = client.model_metadata("nope", "").await.unwrap_err();
    assert_eq!(missing.code, ErrorCode::NotFound);
    seen.push(missing.message);
    let mut unknown = infer_request("r2");
    unknown.model_name = "nope".into();
    assert_eq!(
        client.model_infer(unknown).await.unwrap_err().code,
        ErrorCode::NotFound
    );
    seen
}

#[tokio::test]
async fn local_and_grpc_clients_answer_the_same() {
    let local: InferenceClient = Arc::new(Echo::default());
    let remote = remote_over_grpc(local.clone()).await;
    let direct = suite(&local).await;
    let through_grpc = suite(&remote).await;
    assert_eq!(direct, through_grpc);
}

#[tokio::test]
async fn an_unreachable_inference_role_is_unavailable() {
    let client = connect_inference("http://127.0.0.1:9", Duration::from_millis(300)).unwrap();
    let err = client.server_live().await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable, "{err:?}");
}

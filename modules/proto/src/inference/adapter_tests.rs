//! The service suite, run against the local implementation and through the
//! generated gRPC adapters (server adapter + remote client): both must
//! answer the same, errors and their codes included, and the call context
//! must cross the boundary.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;

use super::*;
use crate::context::{Caller, MODEL_VERSION_HEADER};
use crate::fake_inference::Echo;
use crate::rpc::GrpcOptions;
use crate::{ErrorCode, ServiceError, ServiceResult, Transport};

async fn remote_over_grpc(local: InferenceClient) -> InferenceClient {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = inference_grpc_server(Arc::new(local), MAX_GRPC_MESSAGE_BYTES);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    InferenceClient::connect_lazy(&format!("http://{addr}"), &GrpcOptions::default()).unwrap()
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

fn ctx() -> CallContext {
    CallContext::new()
}

/// Every call of the trait, with its expected answers; `client` is either side.
async fn suite(client: &InferenceClient) -> Vec<String> {
    let mut seen = Vec::new();
    let live = client.server_live(ctx(), pb::ServerLiveRequest {});
    assert!(live.await.unwrap().live);
    let ready = client.server_ready(ctx(), pb::ServerReadyRequest {});
    assert!(ready.await.unwrap().ready);
    let md = client.server_metadata(ctx(), pb::ServerMetadataRequest {});
    seen.push(format!("{:?}", md.await.unwrap()));
    let echo = || ("echo".to_string(), String::new());
    let (name, version) = echo();
    let ready = client.model_ready(ctx(), pb::ModelReadyRequest { name, version });
    assert!(ready.await.unwrap().ready);
    let unknown = pb::ModelReadyRequest {
        name: "nope".into(),
        version: String::new(),
    };
    assert!(!client.model_ready(ctx(), unknown).await.unwrap().ready);
    let (name, version) = echo();
    let md = client.model_metadata(ctx(), pb::ModelMetadataRequest { name, version });
    seen.push(format!("{:?}", md.await.unwrap()));
    let (name, version) = echo();
    let config = client.model_config(ctx(), pb::ModelConfigRequest { name, version });
    seen.push(format!("{:?}", config.await.unwrap()));
    let (name, version) = echo();
    let stats = client.model_statistics(ctx(), pb::ModelStatisticsRequest { name, version });
    seen.push(format!("{:?}", stats.await.unwrap()));
    let response = client
        .model_infer(ctx(), infer_request("r1"))
        .await
        .unwrap();
    assert_eq!(response.id, "r1");
    assert_eq!(
        response.raw_output_contents,
        infer_request("r1").raw_input_contents
    );
    seen.push(format!("{response:?}"));
    let index = |ready| pb::RepositoryIndexRequest {
        repository_name: String::new(),
        ready,
    };
    let all = client.repository_index(ctx(), index(false)).await.unwrap();
    seen.push(format!("{all:?}"));
    let ready = client.repository_index(ctx(), index(true)).await.unwrap();
    assert_eq!(ready.models.len(), 1);
    let mut parameters = LoadParameters::new();
    parameters.insert(
        "config".into(),
        pb::ModelRepositoryParameter {
            parameter_choice: Some(
                pb::model_repository_parameter::ParameterChoice::StringParam("{}".into()),
            ),
        },
    );
    let load = pb::RepositoryModelLoadRequest {
        repository_name: String::new(),
        model_name: "echo".into(),
        parameters,
    };
    client.repository_model_load(ctx(), load).await.unwrap();
    let unload = pb::RepositoryModelUnloadRequest {
        repository_name: String::new(),
        model_name: "echo".into(),
        parameters: Default::default(),
    };
    client.repository_model_unload(ctx(), unload).await.unwrap();
    let md = pb::ModelMetadataRequest {
        name: "nope".into(),
        version: String::new(),
    };
    let missing: ServiceError = client.model_metadata(ctx(), md).await.unwrap_err();
    assert_eq!(missing.code, ErrorCode::NotFound);
    seen.push(missing.message);
    let mut unknown = infer_request("r2");
    unknown.model_name = "nope".into();
    let err = client.model_infer(ctx(), unknown).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    let shm = pb::SystemSharedMemoryStatusRequest::default();
    let err = client.system_shared_memory_status(ctx(), shm);
    let err = err.await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unimplemented);
    seen.push(err.message);
    seen
}

#[tokio::test]
async fn local_and_grpc_clients_answer_the_same() {
    let local = InferenceClient::local(Echo::default());
    let remote = remote_over_grpc(local.clone()).await;
    assert!(!local.is_remote() && remote.is_remote());
    let direct = suite(&local).await;
    let through_grpc = suite(&remote).await;
    assert_eq!(direct, through_grpc);
}

#[tokio::test]
async fn the_context_crosses_the_boundary_and_reply_notes_come_back() {
    let echo = Echo::default();
    let remote = remote_over_grpc(InferenceClient::local(echo.clone())).await;
    let sent = CallContext {
        request_id: Some("req-42".into()),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        caller: Some(Arc::new(Caller {
            identity: "alice".into(),
            scopes: vec!["infer".into()],
            priority: 3,
        })),
        ..CallContext::default()
    }
    .with_timeout(Duration::from_secs(30));
    remote
        .model_infer(sent.clone(), infer_request("r1"))
        .await
        .unwrap();
    assert_eq!(sent.reply_note(MODEL_VERSION_HEADER).as_deref(), Some("1"));
    let got = echo.contexts.lock().unwrap().last().cloned().unwrap();
    assert_eq!(got.request_id, sent.request_id);
    assert_eq!(got.traceparent, sent.traceparent);
    assert_eq!(got.caller, sent.caller);
    let left = got.remaining().expect("the deadline crossed");
    assert!(left <= Duration::from_secs(30) && left > Duration::from_secs(20));
}

#[tokio::test]
async fn streams_keep_their_context() {
    let echo = Echo::default();
    let remote = remote_over_grpc(InferenceClient::local(echo.clone())).await;
    let sent = CallContext {
        request_id: Some("stream-1".into()),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        ..CallContext::default()
    }
    .with_timeout(Duration::from_secs(30));
    let requests: Vec<ServiceResult<pb::ModelInferRequest>> = (0..3)
        .map(|i| Ok(infer_request(&format!("s{i}"))))
        .collect();
    let answers = remote
        .model_stream_infer(sent.clone(), Box::pin(tokio_stream::iter(requests)))
        .await
        .unwrap();
    let answers: Vec<_> = answers.collect().await;
    assert_eq!(answers.len(), 3);
    for answer in answers {
        let answer = answer.unwrap();
        assert!(answer.error_message.is_empty(), "{}", answer.error_message);
    }
    let contexts = echo.contexts.lock().unwrap();
    assert_eq!(contexts.len(), 3);
    for got in contexts.iter() {
        assert_eq!(got.request_id, sent.request_id);
        assert_eq!(got.traceparent, sent.traceparent);
        assert!(got.deadline.is_some());
    }
}

#[tokio::test]
async fn an_unreachable_inference_role_is_a_transport_failure_that_sent_nothing() {
    let options = GrpcOptions {
        connect_timeout: Duration::from_millis(300),
        ..GrpcOptions::default()
    };
    // Bind and drop a listener: its port refuses connections.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client =
        InferenceClient::connect_lazy(&format!("http://127.0.0.1:{port}"), &options).unwrap();
    let err = client
        .server_live(ctx(), pb::ServerLiveRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable, "{err:?}");
    assert_eq!(err.transport, Some(Transport::NotSent), "{err:?}");
}

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use mlserve_proto::inference::inference_grpc_server;
use tokio::net::TcpListener;

use super::*;
use crate::endpoints::{Endpoint, EndpointOptions};

/// A fake inference role: answers every inference with its own name as the
/// request id and records the last request and its context.
pub(crate) struct FakeInference {
    name: String,
    pub calls: AtomicUsize,
    pub last: Mutex<Option<(CallContext, pb::ModelInferRequest)>>,
    pub delay: Duration,
}

impl FakeInference {
    pub fn new(name: &str) -> FakeInference {
        FakeInference {
            name: name.into(),
            calls: AtomicUsize::new(0),
            last: Mutex::new(None),
            delay: Duration::ZERO,
        }
    }
}

fn not_here<T>() -> ServiceResult<T> {
    Err(ServiceError::unimplemented("not in the fake"))
}

#[async_trait]
impl InferenceService for FakeInference {
    async fn server_live(
        &self,
        _: CallContext,
        _: pb::ServerLiveRequest,
    ) -> ServiceResult<pb::ServerLiveResponse> {
        Ok(pb::ServerLiveResponse { live: true })
    }
    async fn server_ready(
        &self,
        _: CallContext,
        _: pb::ServerReadyRequest,
    ) -> ServiceResult<pb::ServerReadyResponse> {
        Ok(pb::ServerReadyResponse { ready: true })
    }
    async fn model_ready(
        &self,
        _: CallContext,
        _: pb::ModelReadyRequest,
    ) -> ServiceResult<pb::ModelReadyResponse> {
        Ok(pb::ModelReadyResponse { ready: true })
    }
    async fn server_metadata(
        &self,
        _: CallContext,
        _: pb::ServerMetadataRequest,
    ) -> ServiceResult<pb::ServerMetadataResponse> {
        Ok(pb::ServerMetadataResponse {
            name: self.name.clone(),
            ..Default::default()
        })
    }
    async fn model_metadata(
        &self,
        _: CallContext,
        request: pb::ModelMetadataRequest,
    ) -> ServiceResult<pb::ModelMetadataResponse> {
        Ok(pb::ModelMetadataResponse {
            name: request.name,
            ..Default::default()
        })
    }
    async fn model_infer(
        &self,
        ctx: CallContext,
        request: pb::ModelInferRequest,
    ) -> ServiceResult<pb::ModelInferResponse> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        *self.last.lock().unwrap() = Some((ctx, request.clone()));
        if request.model_name == "missing" {
            return Err(ServiceError::not_found("unknown model 'missing'"));
        }
        if request.model_name == "full" {
            return Err(ServiceError::unavailable("exceeds maximum queue size"));
        }
        tokio::time::sleep(self.delay).await;
        Ok(pb::ModelInferResponse {
            model_name: request.model_name,
            model_version: request.model_version,
            id: self.name.clone(),
            ..Default::default()
        })
    }
    async fn model_stream_infer(
        &self,
        _: CallContext,
        _: ServiceStream<pb::ModelInferRequest>,
    ) -> ServiceResult<ServiceStream<pb::ModelStreamInferResponse>> {
        not_here()
    }
    async fn model_config(
        &self,
        _: CallContext,
        _: pb::ModelConfigRequest,
    ) -> ServiceResult<pb::ModelConfigResponse> {
        Ok(Default::default())
    }
    async fn model_statistics(
        &self,
        _: CallContext,
        _: pb::ModelStatisticsRequest,
    ) -> ServiceResult<pb::ModelStatisticsResponse> {
        Ok(Default::default())
    }
    async fn repository_index(
        &self,
        _: CallContext,
        _: pb::RepositoryIndexRequest,
    ) -> ServiceResult<pb::RepositoryIndexResponse> {
        Ok(Default::default())
    }
    async fn repository_model_load(
        &self,
        _: CallContext,
        _: pb::RepositoryModelLoadRequest,
    ) -> ServiceResult<pb::RepositoryModelLoadResponse> {
        Ok(pb::RepositoryModelLoadResponse {})
    }
    async fn repository_model_unload(
        &self,
        _: CallContext,
        _: pb::RepositoryModelUnloadRequest,
    ) -> ServiceResult<pb::RepositoryModelUnloadResponse> {
        Ok(pb::RepositoryModelUnloadResponse {})
    }
}

/// Serves `service` over gRPC on a free loopback port; returns its URI and the server task.
async fn serve(service: Arc<FakeInference>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    let incoming = tokio_stream_incoming(listener);
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(inference_grpc_server(service, 1 << 20))
            .serve_with_incoming(incoming)
            .await;
    });
    (uri, task)
}

fn tokio_stream_incoming(
    listener: TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |l| async move {
        Some((l.accept().await.map(|(s, _)| s), l))
    })
}

fn options() -> EndpointOptions {
    EndpointOptions {
        connect_timeout: Duration::from_millis(300),
        eject_for: Duration::from_secs(60),
        max_concurrency: 64,
        internal_token: None,
    }
}

fn router(uris: &[String], canary: CanaryTable) -> RoutingInference {
    let set = Arc::new(EndpointSet::new(vec![], options()));
    set.replace(uris);
    RoutingInference::new(
        set,
        Arc::new(canary),
        Duration::from_secs(5),
        2,
        Arc::new(GatewayMetrics::default()),
    )
}

fn infer(model: &str) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: model.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn refused_connections_are_retried_on_another_endpoint() {
    let live = Arc::new(FakeInference::new("live"));
    let (uri, _server) = serve(live.clone()).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let routing = router(&[dead.clone(), uri], CanaryTable::default());
    // Ties are broken at random: 64 requests all missing the dead endpoint has odds 2^-64.
    for _ in 0..64 {
        let response = routing
            .model_infer(CallContext::new(), infer("m"))
            .await
            .expect("retried on the live endpoint");
        assert_eq!(response.id, "live");
    }
    let ejected = routing
        .endpoints()
        .snapshot()
        .iter()
        .find(|e| e.name == dead)
        .map(|e| !e.healthy());
    assert_eq!(ejected, Some(true), "the refusing endpoint is ejected");
}

#[tokio::test]
async fn server_answers_are_final_and_keep_their_code() {
    let a = Arc::new(FakeInference::new("a"));
    let b = Arc::new(FakeInference::new("b"));
    let (ua, _sa) = serve(a.clone()).await;
    let (ub, _sb) = serve(b.clone()).await;
    let routing = router(&[ua, ub], CanaryTable::default());
    let err = routing
        .model_infer(CallContext::new(), infer("missing"))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    let err = routing
        .model_infer(CallContext::new(), infer("full"))
        .await
        .unwrap_err();
    assert_eq!(
        err.code,
        ErrorCode::Unavailable,
        "overload is a 503, never retried"
    );
    let calls = a.calls.load(Ordering::SeqCst) + b.calls.load(Ordering::SeqCst);
    assert_eq!(calls, 2, "each request reached exactly one model");
}

#[tokio::test]
async fn deadlines_are_handed_down_and_enforced() {
    let mut slow = FakeInference::new("slow");
    slow.delay = Duration::from_secs(30);
    let slow = Arc::new(slow);
    let (uri, _server) = serve(slow.clone()).await;
    let routing = router(&[uri], CanaryTable::default());
    let ctx = CallContext {
        request_id: Some("req-7".into()),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        ..CallContext::default()
    }
    .with_timeout(Duration::from_millis(300));
    let err = routing
        .model_infer(ctx.clone(), infer("m"))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable);
    let (seen, _) = slow
        .last
        .lock()
        .unwrap()
        .clone()
        .expect("the request reached the model");
    let left = seen.remaining().expect("the deadline crossed the hop");
    assert!(left <= Duration::from_millis(300), "{left:?}");
    assert_eq!(seen.request_id, ctx.request_id);
    assert_eq!(seen.traceparent, ctx.traceparent);
}

#[tokio::test]
async fn the_canary_split_picks_the_version_and_reports_it() {
    let fake = Arc::new(FakeInference::new("x"));
    let local = Arc::new(EndpointSet::new(
        vec![Arc::new(Endpoint::local(
            InferenceClient::from_arc(fake),
            8,
        ))],
        options(),
    ));
    let canary = CanaryTable::default();
    canary
        .apply(
            "m",
            crate::canary::CanaryAction::Set {
                stable: "1".into(),
                canary: "2".into(),
                weight: 0.5,
            },
        )
        .await
        .unwrap();
    let routing = RoutingInference::new(
        local,
        Arc::new(canary),
        Duration::from_secs(5),
        0,
        Arc::new(GatewayMetrics::default()),
    );
    let mut seen = std::collections::HashSet::new();
    for i in 0..64 {
        let ctx = CallContext {
            request_id: Some(format!("r{i}")),
            ..Default::default()
        };
        let response = routing.model_infer(ctx.clone(), infer("m")).await.unwrap();
        assert_eq!(
            ctx.reply_note(MODEL_VERSION_HEADER),
            Some(response.model_version.clone())
        );
        seen.insert(response.model_version);
    }
    assert_eq!(seen.len(), 2, "both versions served");
    let mut pinned = infer("m");
    pinned.model_version = "1".into();
    assert_eq!(
        routing
            .model_infer(CallContext::new(), pinned)
            .await
            .unwrap()
            .model_version,
        "1",
        "an explicit version is kept"
    );
}

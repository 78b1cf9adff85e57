use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use mlserve_proto::inference::inference_grpc_server;
use tokio::net::TcpListener;

use super::*;
use crate::endpoints::{Endpoint, EndpointOptions};

/// A fake inference role: answers every inference with its own name as the
/// request id and records the last request.
pub(crate) struct FakeInference {
    name: String,
    pub calls: AtomicUsize,
    pub last: Mutex<Option<pb::ModelInferRequest>>,
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

#[async_trait]
impl InferenceService for FakeInference {
    async fn server_live(&self) -> ServiceResult<bool> {
        Ok(true)
    }
    async fn server_ready(&self) -> ServiceResult<bool> {
        Ok(true)
    }
    async fn server_metadata(&self) -> ServiceResult<pb::ServerMetadataResponse> {
        Ok(pb::ServerMetadataResponse {
            name: self.name.clone(),
            ..Default::default()
        })
    }
    async fn model_ready(&self, _: &str, _: &str) -> ServiceResult<bool> {
        Ok(true)
    }
    async fn model_metadata(
        &self,
        name: &str,
        _: &str,
    ) -> ServiceResult<pb::ModelMetadataResponse> {
        Ok(pb::ModelMetadataResponse {
            name: name.into(),
            ..Default::default()
        })
    }
    async fn model_config(&self, _: &str, _: &str) -> ServiceResult<pb::ModelConfig> {
        Ok(Default::default())
    }
    async fn model_statistics(
        &self,
        _: &str,
        _: &str,
    ) -> ServiceResult<pb::ModelStatisticsResponse> {
        Ok(Default::default())
    }
    async fn model_infer(
        &self,
        request: pb::ModelInferRequest,
    ) -> ServiceResult<pb::ModelInferResponse> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        *self.last.lock().unwrap() = Some(request.clone());
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
    async fn repository_index(&self, _: bool) -> ServiceResult<Vec<ModelIndex>> {
        Ok(vec![])
    }
    async fn load_model(&self, _: &str, _: LoadParameters) -> ServiceResult<()> {
        Ok(())
    }
    async fn unload_model(&self, _: &str) -> ServiceResult<()> {
        Ok(())
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
    for _ in 0..6 {
        let response = routing
            .model_infer(infer("m"))
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
    let err = routing.model_infer(infer("missing")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    let err = routing.model_infer(infer("full")).await.unwrap_err();
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
    let ctx = RequestContext::with_timeout(Duration::from_millis(300));
    let err = ctx
        .scope(routing.model_infer(infer("m")))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable);
    let sent = slow
        .last
        .lock()
        .unwrap()
        .clone()
        .expect("the request reached the model");
    match sent
        .parameters
        .get("timeout")
        .and_then(|p| p.parameter_choice.clone())
    {
        Some(ParameterChoice::Int64Param(us)) => assert!(us > 0 && us <= 300_000, "{us}"),
        other => panic!("no timeout parameter: {other:?}"),
    }
}

#[tokio::test]
async fn the_canary_split_picks_the_version_and_reports_it() {
    let fake = Arc::new(FakeInference::new("x"));
    let local = Arc::new(EndpointSet::new(
        vec![Arc::new(Endpoint::local(fake, 8))],
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
        let ctx = RequestContext {
            request_id: Some(format!("r{i}")),
            ..Default::default()
        };
        let slot = ctx.clone();
        let response = ctx.scope(routing.model_infer(infer("m"))).await.unwrap();
        assert_eq!(slot.served_version(), Some(response.model_version.clone()));
        seen.insert(response.model_version);
    }
    assert_eq!(seen.len(), 2, "both versions served");
    let mut pinned = infer("m");
    pinned.model_version = "1".into();
    assert_eq!(
        routing.model_infer(pinned).await.unwrap().model_version,
        "1",
        "an explicit version is kept"
    );
}

#[test]
fn connect_failures_are_not_sent_and_others_may_be() {
    let refused =
        tonic::Status::unavailable("tcp connect error: Connection refused (os error 111)");
    assert_eq!(classify(&refused), (Attempt::NotSent, true));
    let reset = tonic::Status::unavailable("error reading a body from connection");
    assert_eq!(classify(&reset), (Attempt::MaybeSent, true));
    let broken = tonic::Status::unknown("transport error");
    assert_eq!(classify(&broken), (Attempt::MaybeSent, true));
    let from_server: tonic::Status = ServiceError::unavailable("exceeds maximum queue size").into();
    assert_eq!(classify(&from_server), (Attempt::MaybeSent, false));
    let goaway = tonic::Status::resource_exhausted(
        "h2 protocol error: connection error received: not a result of an error",
    );
    assert_eq!(
        classify(&goaway),
        (Attempt::MaybeSent, true),
        "a GOAWAY is the connection's failure (503), not a rate limit (429)"
    );
    let rate_limited: tonic::Status = ServiceError::new(ErrorCode::RateLimited, "slow down").into();
    assert_eq!(classify(&rate_limited), (Attempt::MaybeSent, false));
}

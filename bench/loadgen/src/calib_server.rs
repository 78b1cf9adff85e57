//! A server with a known, fixed service time, for `loadgen calibrate`: it
//! speaks enough of the Open Inference Protocol over HTTP/1.1 (model
//! metadata, infer) for the load generator, and serves ONE request at a
//! time, first come first served, each taking exactly `service` (slept,
//! then spun for the last few hundred microseconds). Its capacity is
//! `1 / service`. It also records each request's time inside the server
//! (body read to answer ready), the server's own view of the latency.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// How long before the end of a service time the service thread stops
/// sleeping and spins (sleep overshoots by tens of microseconds).
const SPIN: Duration = Duration::from_micros(300);

const METADATA: &str = r#"{"name":"calib","versions":["1"],"platform":"fixed_service_time","inputs":[{"name":"x","datatype":"FP32","shape":[-1,4]}],"outputs":[{"name":"y","datatype":"FP32","shape":[-1,4]}]}"#;
const ANSWER: &str = r#"{"model_name":"calib","model_version":"1","outputs":[]}"#;

type Job = (Instant, oneshot::Sender<()>);

/// The running server.
pub struct CalibServer {
    /// Where it listens.
    pub addr: SocketAddr,
    service_us: Arc<AtomicU64>,
    inside: Arc<Mutex<Histogram<u64>>>,
}

impl CalibServer {
    /// Starts the server on 127.0.0.1:0 (its own threads: an accept/IO
    /// runtime and the single service thread).
    pub fn start() -> Result<CalibServer> {
        let service_us = Arc::new(AtomicU64::new(0));
        let inside = Arc::new(Mutex::new(
            Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
        ));
        let (jobs, queue) = mpsc::channel::<Job>();
        {
            let (service_us, inside) = (service_us.clone(), inside.clone());
            std::thread::Builder::new()
                .name("calib-service".into())
                .spawn(move || serve_queue(&queue, &service_us, &inside))
                .context("spawn the service thread")?;
        }
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        std::thread::Builder::new()
            .name("calib-io".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("calibration server runtime");
                runtime.block_on(accept(std_listener, jobs));
            })
            .context("spawn the server thread")?;
        Ok(CalibServer {
            addr,
            service_us,
            inside,
        })
    }

    /// The HTTP URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets the service time and clears the server's own measurements.
    pub fn set_service(&self, service: Duration) {
        self.service_us
            .store(service.as_micros() as u64, Ordering::SeqCst);
        if let Ok(mut h) = self.inside.lock() {
            h.reset();
        }
    }

    /// The time inside the server at quantile `q`, ms (since the last
    /// [`set_service`](Self::set_service)).
    pub fn inside_ms(&self, q: f64) -> f64 {
        self.inside
            .lock()
            .map(|h| h.value_at_quantile(q) as f64 / 1000.0)
            .unwrap_or(0.0)
    }
}

fn serve_queue(
    queue: &mpsc::Receiver<Job>,
    service_us: &AtomicU64,
    inside: &Mutex<Histogram<u64>>,
) {
    for (arrived, reply) in queue {
        let service = Duration::from_micros(service_us.load(Ordering::SeqCst));
        let deadline = Instant::now() + service;
        if service > SPIN {
            std::thread::sleep(service - SPIN);
        }
        while Instant::now() < deadline {
            std::hint::spin_loop();
        }
        let micros = (arrived.elapsed().as_micros() as u64).max(1);
        if let Ok(mut h) = inside.lock() {
            h.saturating_record(micros);
        }
        let _ = reply.send(());
    }
}

async fn accept(listener: std::net::TcpListener, jobs: mpsc::Sender<Job>) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let jobs = jobs.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(request, jobs.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    request: Request<Incoming>,
    jobs: mpsc::Sender<Job>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_string();
    let is_post = request.method() == http::Method::POST;
    // Read the whole body first: the request has arrived when it is in.
    let _ = request.into_body().collect().await;
    let (status, body) = if is_post && path.ends_with("/infer") {
        let (tx, rx) = oneshot::channel();
        if jobs.send((Instant::now(), tx)).is_err() || rx.await.is_err() {
            (StatusCode::SERVICE_UNAVAILABLE, r#"{"error":"stopped"}"#)
        } else {
            (StatusCode::OK, ANSWER)
        }
    } else if path.starts_with("/v2/models/") {
        (StatusCode::OK, METADATA)
    } else if path.starts_with("/v2/health") {
        (StatusCode::OK, "")
    } else {
        (StatusCode::NOT_FOUND, r#"{"error":"not found"}"#)
    };
    let response = Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("a valid response");
    Ok(response)
}

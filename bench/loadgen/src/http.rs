//! A lean HTTP/1.1 client, as wrk's: one kept-alive connection per load task,
//! each request encoded once to the bytes it puts on the wire, the answer's
//! head parsed by `httparse` into a buffer the connection keeps, and no task,
//! channel or header map per request. It reconnects after a transport error,
//! and sends once more on a fresh connection when a kept-alive one turns out
//! to have been closed by the server before answering.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::http_answer::{read_answer, Failure};

/// Where HTTP requests go.
#[derive(Debug, Clone)]
pub struct HttpEndpoint {
    /// `host:port` to connect to.
    pub addr: String,
    /// Value of the `Host` header.
    pub host: HeaderValue,
    /// Path prefix of the v2 API (empty, or a prefix without a trailing `/`).
    pub prefix: String,
}

impl HttpEndpoint {
    /// Parses `http://host[:port][/prefix]`.
    pub fn parse(target: &str) -> Result<HttpEndpoint> {
        let uri: Uri = target
            .parse()
            .with_context(|| format!("bad target '{target}'"))?;
        if uri.scheme_str() != Some("http") {
            bail!("target '{target}' must start with http:// (TLS is not supported)");
        }
        let authority = uri.authority().context("target has no host")?;
        let port = authority.port_u16().unwrap_or(80);
        Ok(HttpEndpoint {
            addr: format!("{}:{port}", authority.host()),
            host: HeaderValue::from_str(authority.as_str())?,
            prefix: uri.path().trim_end_matches('/').to_string(),
        })
    }
}

/// A request encoded once: the bytes of its head and body, sent as they are
/// by every send.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    wire: Bytes,
}

impl HttpRequest {
    /// Encodes `method path` to `endpoint` with `headers` (the host header
    /// and, for a body or a method that carries one, the content length are
    /// added) and `body`.
    pub fn new(
        endpoint: &HttpEndpoint,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: &[u8],
    ) -> HttpRequest {
        let mut wire = BytesMut::with_capacity(256 + body.len());
        wire.extend_from_slice(method.as_str().as_bytes());
        wire.extend_from_slice(b" ");
        wire.extend_from_slice(path.as_bytes());
        wire.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        wire.extend_from_slice(endpoint.host.as_bytes());
        wire.extend_from_slice(b"\r\n");
        let bodiless = matches!(method, Method::GET | Method::HEAD) && body.is_empty();
        if !bodiless {
            wire.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        }
        for (name, value) in headers {
            wire.extend_from_slice(name.as_str().as_bytes());
            wire.extend_from_slice(b": ");
            wire.extend_from_slice(value.as_bytes());
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(body);
        HttpRequest {
            wire: wire.freeze(),
        }
    }

    /// The bytes it puts on the wire.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }
}

/// Why a request failed before a status came back.
#[derive(Debug)]
pub struct TransportError(pub String);

/// One connection, opened on first use and again after a failure.
pub struct HttpConnection {
    endpoint: Arc<HttpEndpoint>,
    stream: Option<TcpStream>,
    buffer: BytesMut,
}

impl HttpConnection {
    /// A connection to `endpoint`; nothing is opened yet.
    pub fn new(endpoint: Arc<HttpEndpoint>) -> HttpConnection {
        HttpConnection {
            endpoint,
            stream: None,
            buffer: BytesMut::new(),
        }
    }

    /// Opens the connection now (it otherwise opens on the first send).
    pub async fn connect(&mut self) -> Result<(), TransportError> {
        self.open().await
    }

    /// The endpoint this connection goes to.
    pub fn endpoint(&self) -> Arc<HttpEndpoint> {
        self.endpoint.clone()
    }

    async fn open(&mut self) -> Result<(), TransportError> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.endpoint.addr)
                .await
                .map_err(|e| TransportError(format!("connect {}: {e}", self.endpoint.addr)))?;
            let _ = stream.set_nodelay(true);
            self.stream = Some(stream);
        }
        Ok(())
    }

    /// Drops the connection and whatever was read from it.
    fn close(&mut self) {
        self.stream = None;
        self.buffer.clear();
    }

    /// Sends `request`, reading the whole response body.
    pub async fn send(&mut self, request: &HttpRequest) -> Result<Answer, TransportError> {
        let reused = self.stream.is_some();
        match self.exchange(request).await {
            Ok(answer) => Ok(answer),
            // The server closed an idle kept-alive connection: nothing of
            // this request was answered, so it goes again on a new one.
            Err(Failure::ClosedBeforeAnswer) if reused => {
                self.close();
                self.exchange(request).await.map_err(|f| self.fail(f))
            }
            Err(failure) => Err(self.fail(failure)),
        }
    }

    fn fail(&mut self, failure: Failure) -> TransportError {
        self.close();
        TransportError(failure.to_string())
    }

    async fn exchange(&mut self, request: &HttpRequest) -> Result<Answer, Failure> {
        self.open().await.map_err(|e| Failure::Other(e.0))?;
        let stream = self.stream.as_mut().expect("opened above");
        if let Err(err) = stream.write_all(&request.wire).await {
            return Err(Failure::closed_or(err));
        }
        let (answer, keep) = read_answer(stream, &mut self.buffer).await?;
        if !keep {
            self.close();
        }
        Ok(answer)
    }
}

/// A whole HTTP response, as the load generator needs it.
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its `Retry-After` in whole seconds, when it has one.
    pub retry_after: Option<u64>,
    /// Its body.
    pub body: Bytes,
}

/// One GET on a fresh connection, failing unless the status is 200.
pub async fn get(endpoint: &Arc<HttpEndpoint>, path: &str) -> Result<Bytes> {
    let full_path = format!("{}{path}", endpoint.prefix);
    let request = HttpRequest::new(endpoint, Method::GET, &full_path, &[], &[]);
    let mut connection = HttpConnection::new(endpoint.clone());
    let Answer { status, body, .. } = connection
        .send(&request)
        .await
        .map_err(|e| anyhow::anyhow!("GET {path}: {}", e.0))?;
    if status != StatusCode::OK {
        bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(body)
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;

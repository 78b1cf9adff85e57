//! A lean HTTP/1.1 client: one kept-alive connection per load task (as
//! perf_analyzer's concurrency mode), reconnecting after a transport error.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{handshake, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

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

/// A prepared request: method, path, headers and a body shared by every send.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// Method.
    pub method: Method,
    /// Path, prefix included.
    pub path: String,
    /// Extra headers (the host header is added on send).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
    /// Body.
    pub body: Bytes,
}

/// Why a request failed before a status came back.
#[derive(Debug)]
pub struct TransportError(pub String);

/// One connection, opened on first use and again after a failure.
pub struct HttpConnection {
    endpoint: Arc<HttpEndpoint>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl HttpConnection {
    /// A connection to `endpoint`; nothing is opened yet.
    pub fn new(endpoint: Arc<HttpEndpoint>) -> HttpConnection {
        HttpConnection {
            endpoint,
            sender: None,
        }
    }

    /// Opens the connection now (it otherwise opens on the first send).
    pub async fn connect(&mut self) -> Result<(), TransportError> {
        self.ready().await.map(|_| ())
    }

    /// The endpoint this connection goes to.
    pub fn endpoint(&self) -> Arc<HttpEndpoint> {
        self.endpoint.clone()
    }

    async fn ready(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, TransportError> {
        if let Some(sender) = &mut self.sender {
            if sender.ready().await.is_ok() {
                return Ok(self.sender.as_mut().expect("checked above"));
            }
            self.sender = None;
        }
        let stream = TcpStream::connect(&self.endpoint.addr)
            .await
            .map_err(|e| TransportError(format!("connect {}: {e}", self.endpoint.addr)))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = handshake(TokioIo::new(stream))
            .await
            .map_err(|e| TransportError(format!("handshake: {e}")))?;
        tokio::spawn(connection);
        Ok(self.sender.insert(sender))
    }

    /// Sends `request`, reading the whole response body.
    pub async fn send(&mut self, request: &HttpRequest) -> Result<Answer, TransportError> {
        let host = self.endpoint.host.clone();
        let mut builder = Request::builder()
            .method(request.method.clone())
            .uri(request.path.as_str())
            .header(header::HOST, host);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let built = builder
            .body(Full::new(request.body.clone()))
            .map_err(|e| TransportError(format!("request: {e}")))?;
        let sender = self.ready().await?;
        let outcome = async {
            let response = sender.send_request(built).await?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>(Answer {
                status,
                retry_after,
                body,
            })
        }
        .await;
        outcome.map_err(|e| {
            self.sender = None;
            TransportError(e.to_string())
        })
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
    let request = HttpRequest {
        method: Method::GET,
        path: format!("{}{path}", endpoint.prefix),
        headers: Vec::new(),
        body: Bytes::new(),
    };
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
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let e = HttpEndpoint::parse("http://127.0.0.1:8000").unwrap();
        assert_eq!(e.addr, "127.0.0.1:8000");
        assert_eq!(e.host, "127.0.0.1:8000");
        assert_eq!(e.prefix, "");
        let e = HttpEndpoint::parse("http://localhost/api/").unwrap();
        assert_eq!(e.addr, "localhost:80");
        assert_eq!(e.prefix, "/api");
        assert!(HttpEndpoint::parse("https://x:1").is_err());
    }
}

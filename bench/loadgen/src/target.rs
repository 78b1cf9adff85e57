//! The thing under load: a model behind one protocol, with its requests
//! encoded once (one of random data, or one per group of payload rows). A
//! [`Target`] hands out [`Client`]s (one per load task or connection); a
//! client sends a prepared request and says how it went.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::ValueEnum;
use http::{header, HeaderValue, Method};
use mlserve_proto::pb;
use mlserve_proto::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::encode::{grpc_request, http_binary, http_json, HEADER_LENGTH};
use crate::http::{HttpConnection, HttpEndpoint, HttpRequest};
use crate::inputs::Rows;
use crate::metadata;
use crate::tensor::{random_inputs, InputSpec, InputTensor};

/// Largest gRPC message either side of the client accepts.
const MAX_GRPC_MESSAGE: usize = 1 << 30;

/// The wire form of the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// HTTP/1.1, inputs and outputs as JSON `data` arrays.
    HttpJson,
    /// HTTP/1.1 with the binary tensor extension both ways.
    HttpBinary,
    /// gRPC over one HTTP/2 channel, inputs in `raw_input_contents`.
    Grpc,
}

impl Protocol {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::HttpJson => "http-json",
            Protocol::HttpBinary => "http-binary",
            Protocol::Grpc => "grpc",
        }
    }
}

/// How one request ended.
#[derive(Debug)]
pub enum Outcome {
    /// A success status.
    Ok,
    /// An error status or a transport failure: a label to count it under
    /// (`http 503`, `grpc Unavailable`, `transport`) and what was said.
    Failed {
        /// Counting label.
        label: String,
        /// Error text.
        detail: String,
        /// When the server said to retry (HTTP `Retry-After`, gRPC
        /// `retry-after` metadata), whole seconds.
        retry_after: Option<u64>,
    },
}

enum Prepared {
    Http {
        endpoint: Arc<HttpEndpoint>,
        requests: Arc<[HttpRequest]>,
    },
    Grpc {
        channel: Channel,
        requests: Arc<[pb::ModelInferRequest]>,
    },
}

/// What the requests carry: random data (one request, sent every time) or
/// rows of a payload file (requests round-robin over the rows).
#[derive(Debug, Clone, Default)]
pub struct Payload {
    /// `DIR` of `DIR/inputs/manifest.json`; `None`: random data.
    pub inputs: Option<PathBuf>,
    /// The manifest entry to use (default: the model name).
    pub inputs_key: Option<String>,
    /// Outputs to ask for; `None`: the manifest's choice, else all.
    pub outputs: Option<Vec<String>>,
    /// Most bytes of encoded requests to keep (fewer distinct requests
    /// beyond that).
    pub max_bytes: usize,
}

/// Distinct requests kept at most.
const MAX_REQUESTS: usize = 256;

/// A model behind one protocol, with its requests encoded once.
pub struct Target {
    prepared: Prepared,
    /// Bytes of one request's tensor data.
    pub request_bytes: usize,
    /// Distinct requests sent round-robin.
    pub distinct_requests: usize,
    /// Where the request data came from (`random` or the payload file).
    pub source: String,
}

/// The tensors of every distinct request.
fn request_tensors(
    specs: &[InputSpec],
    batch: usize,
    payload: &Payload,
    model: &str,
) -> Result<(Vec<Vec<InputTensor>>, Vec<String>, String)> {
    let Some(dir) = &payload.inputs else {
        let outputs = payload.outputs.clone().unwrap_or_default();
        return Ok((
            vec![random_inputs(specs, batch, 42)?],
            outputs,
            "random".into(),
        ));
    };
    let rows = Rows::load(dir, payload.inputs_key.as_deref().unwrap_or(model))?;
    let outputs = payload
        .outputs
        .clone()
        .unwrap_or_else(|| rows.outputs.clone());
    let one = rows.request(specs, batch, 0)?;
    let bytes_each = data_bytes(&one).max(1);
    // Every row once (rows / batch requests, at least 1), within the byte budget.
    let wanted = rows.rows.div_ceil(batch).clamp(1, MAX_REQUESTS);
    let budget = (payload.max_bytes.max(1) / bytes_each).max(1);
    let count = wanted.min(budget);
    let mut all = vec![one];
    for j in 1..count {
        all.push(rows.request(specs, batch, j)?);
    }
    let source = format!("{} ({} rows)", rows.file.display(), rows.rows);
    Ok((all, outputs, source))
}

impl Target {
    /// Learns the model's inputs from the server, makes the inputs of
    /// `batch` rows (random, or rows of a payload file) and encodes the
    /// requests every send will carry.
    pub async fn prepare(
        url: &str,
        protocol: Protocol,
        model: &str,
        batch: usize,
        payload: &Payload,
    ) -> Result<Target> {
        match protocol {
            Protocol::HttpJson | Protocol::HttpBinary => {
                let endpoint = Arc::new(HttpEndpoint::parse(url)?);
                let specs = metadata::http_inputs(&endpoint, model).await?;
                let (sets, outputs, source) = request_tensors(&specs, batch, payload, model)?;
                let mut requests = Vec::with_capacity(sets.len());
                for inputs in &sets {
                    let encoded = if protocol == Protocol::HttpBinary {
                        http_binary(inputs, &outputs)?
                    } else {
                        http_json(inputs, &outputs)?
                    };
                    let mut headers = Vec::new();
                    let content_type = match encoded.header_len {
                        Some(len) => {
                            headers.push((
                                header::HeaderName::from_static(HEADER_LENGTH),
                                HeaderValue::from(len),
                            ));
                            "application/octet-stream"
                        }
                        None => "application/json",
                    };
                    headers.push((header::CONTENT_TYPE, HeaderValue::from_static(content_type)));
                    let path = format!("{}/v2/models/{model}/infer", endpoint.prefix);
                    requests.push(HttpRequest::new(
                        &endpoint,
                        Method::POST,
                        &path,
                        &headers,
                        &encoded.body,
                    ));
                    // JSON bodies are large: keep within the byte budget.
                    let kept: usize = requests.iter().map(|r| r.wire().len()).sum();
                    if payload.max_bytes > 0 && kept >= payload.max_bytes {
                        break;
                    }
                }
                Ok(Target {
                    request_bytes: data_bytes(&sets[0]),
                    distinct_requests: requests.len(),
                    source,
                    prepared: Prepared::Http {
                        endpoint,
                        requests: requests.into(),
                    },
                })
            }
            Protocol::Grpc => {
                let channel = Endpoint::from_shared(url.to_string())
                    .with_context(|| format!("bad target '{url}'"))?
                    .tcp_nodelay(true)
                    .connect_timeout(Duration::from_secs(10))
                    .connect()
                    .await
                    .with_context(|| format!("cannot connect to {url}"))?;
                let specs = metadata::grpc_inputs(grpc_client(channel.clone()), model).await?;
                let (sets, outputs, source) = request_tensors(&specs, batch, payload, model)?;
                let requests: Vec<pb::ModelInferRequest> = sets
                    .iter()
                    .map(|inputs| grpc_request(model, "", inputs, &outputs))
                    .collect();
                Ok(Target {
                    request_bytes: data_bytes(&sets[0]),
                    distinct_requests: requests.len(),
                    source,
                    prepared: Prepared::Grpc {
                        requests: requests.into(),
                        channel,
                    },
                })
            }
        }
    }

    /// A client for one load task: its own HTTP connection, or a handle on
    /// the shared gRPC channel (requests multiplexed over HTTP/2).
    pub fn client(&self) -> Client {
        match &self.prepared {
            Prepared::Http { endpoint, requests } => Client::Http {
                connection: HttpConnection::new(endpoint.clone()),
                requests: requests.clone(),
            },
            Prepared::Grpc { channel, requests } => Client::Grpc {
                client: grpc_client(channel.clone()),
                requests: requests.clone(),
            },
        }
    }
}

fn data_bytes(inputs: &[InputTensor]) -> usize {
    inputs.iter().map(|t| t.raw.len()).sum()
}

/// The generated gRPC client on `channel`, with message limits that fit
/// large tensors.
pub fn grpc_client(channel: Channel) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::new(channel)
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE)
}

/// Sends the prepared requests of a [`Target`].
pub enum Client {
    /// Over an HTTP/1.1 connection of its own.
    Http {
        /// The connection.
        connection: HttpConnection,
        /// The requests.
        requests: Arc<[HttpRequest]>,
    },
    /// Over the shared gRPC channel.
    Grpc {
        /// The generated client.
        client: GrpcInferenceServiceClient<Channel>,
        /// The requests.
        requests: Arc<[pb::ModelInferRequest]>,
    },
}

impl Client {
    /// Opens its HTTP connection now (a no-op for gRPC, whose channel is
    /// already connected).
    pub async fn warm(&mut self) {
        if let Client::Http { connection, .. } = self {
            let _ = connection.connect().await;
        }
    }

    /// Sends request `n` (modulo the distinct requests) and waits for the
    /// whole answer.
    pub async fn infer(&mut self, n: usize) -> Outcome {
        match self {
            Client::Http {
                connection,
                requests,
            } => match connection.send(&requests[n % requests.len()]).await {
                Ok(answer) if answer.status.is_success() => Outcome::Ok,
                Ok(answer) => Outcome::Failed {
                    label: format!("http {}", answer.status.as_u16()),
                    detail: String::from_utf8_lossy(&answer.body).into_owned(),
                    retry_after: answer.retry_after,
                },
                Err(err) => Outcome::Failed {
                    label: "transport".into(),
                    detail: err.0,
                    retry_after: None,
                },
            },
            Client::Grpc { client, requests } => {
                let request = pb::ModelInferRequest::clone(&requests[n % requests.len()]);
                match client.model_infer(request).await {
                    Ok(_) => Outcome::Ok,
                    Err(status) => Outcome::Failed {
                        label: format!("grpc {:?}", status.code()),
                        detail: status.message().to_string(),
                        retry_after: status
                            .metadata()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse().ok()),
                    },
                }
            }
        }
    }
}

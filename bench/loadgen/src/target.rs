//! The thing under load: a model behind one protocol, with its request
//! encoded once. A [`Target`] hands out [`Client`]s (one per load task); a
//! client sends the prepared request and says how it went.

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
use crate::metadata;
use crate::tensor::{random_inputs, InputTensor};

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
    },
}

enum Prepared {
    Http {
        endpoint: Arc<HttpEndpoint>,
        request: Arc<HttpRequest>,
    },
    Grpc {
        channel: Channel,
        request: Arc<pb::ModelInferRequest>,
    },
}

/// A model behind one protocol, with its request encoded once.
pub struct Target {
    prepared: Prepared,
    /// Bytes of one request's tensor data.
    pub request_bytes: usize,
}

impl Target {
    /// Learns the model's inputs from the server, makes random inputs of
    /// `batch` rows and encodes the one request every send will carry.
    pub async fn prepare(
        url: &str,
        protocol: Protocol,
        model: &str,
        batch: usize,
    ) -> Result<Target> {
        match protocol {
            Protocol::HttpJson | Protocol::HttpBinary => {
                let endpoint = Arc::new(HttpEndpoint::parse(url)?);
                let specs = metadata::http_inputs(&endpoint, model).await?;
                let inputs = random_inputs(&specs, batch, 42)?;
                let encoded = if protocol == Protocol::HttpBinary {
                    http_binary(&inputs)?
                } else {
                    http_json(&inputs)?
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
                let request = HttpRequest {
                    method: Method::POST,
                    path: format!("{}/v2/models/{model}/infer", endpoint.prefix),
                    headers,
                    body: encoded.body,
                };
                Ok(Target {
                    request_bytes: data_bytes(&inputs),
                    prepared: Prepared::Http {
                        endpoint,
                        request: Arc::new(request),
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
                let inputs = random_inputs(&specs, batch, 42)?;
                Ok(Target {
                    request_bytes: data_bytes(&inputs),
                    prepared: Prepared::Grpc {
                        request: Arc::new(grpc_request(model, "", &inputs)),
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
            Prepared::Http { endpoint, request } => Client::Http {
                connection: HttpConnection::new(endpoint.clone()),
                request: request.clone(),
            },
            Prepared::Grpc { channel, request } => Client::Grpc {
                client: grpc_client(channel.clone()),
                request: request.clone(),
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

/// Sends the prepared request of a [`Target`].
pub enum Client {
    /// Over an HTTP/1.1 connection of its own.
    Http {
        /// The connection.
        connection: HttpConnection,
        /// The request.
        request: Arc<HttpRequest>,
    },
    /// Over the shared gRPC channel.
    Grpc {
        /// The generated client.
        client: GrpcInferenceServiceClient<Channel>,
        /// The request.
        request: Arc<pb::ModelInferRequest>,
    },
}

impl Client {
    /// Sends one request and waits for the whole answer.
    pub async fn infer(&mut self) -> Outcome {
        match self {
            Client::Http {
                connection,
                request,
            } => match connection.send(request).await {
                Ok((status, _)) if status.is_success() => Outcome::Ok,
                Ok((status, body)) => Outcome::Failed {
                    label: format!("http {}", status.as_u16()),
                    detail: String::from_utf8_lossy(&body).into_owned(),
                },
                Err(err) => Outcome::Failed {
                    label: "transport".into(),
                    detail: err.0,
                },
            },
            Client::Grpc { client, request } => {
                match client
                    .model_infer(pb::ModelInferRequest::clone(request))
                    .await
                {
                    Ok(_) => Outcome::Ok,
                    Err(status) => Outcome::Failed {
                        label: format!("grpc {:?}", status.code()),
                        detail: status.message().to_string(),
                    },
                }
            }
        }
    }
}

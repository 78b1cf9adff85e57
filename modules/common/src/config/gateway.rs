//! The gateway role: configuration section `[gateway]`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// The gateway role: the external entry point (own HTTP and gRPC listeners),
/// routing to inference, auth, rate limits, canary splits and pipelines.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// External HTTP port (v2 REST, predict API, admin). 0 picks a free port.
    pub http_port: u16,
    /// External gRPC port (Open Inference Protocol). 0 picks a free port.
    pub grpc_port: u16,
    /// gRPC URIs of inference roles (`http://host:port`), or `dns:///name:port`
    /// resolved every `dns_refresh_interval` to all its addresses (a headless
    /// Service). Empty: the in-process inference role. (The predict
    /// pipeline's features role is `features.endpoint`.)
    pub inference_endpoints: Vec<String>,
    /// Time between DNS resolutions of `dns:///` endpoints.
    #[serde(with = "duration")]
    pub dns_refresh_interval: Duration,
    /// How long to wait for a TCP connection to an inference endpoint.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Time between readiness checks of each inference endpoint.
    #[serde(with = "duration")]
    pub health_check_interval: Duration,
    /// How long an endpoint stays out of rotation after a failed check or a
    /// transport failure.
    #[serde(with = "duration")]
    pub eject_for: Duration,
    /// Requests in flight per inference endpoint; beyond it the request goes
    /// to another endpoint or is shed with 503.
    pub max_concurrency_per_endpoint: usize,
    /// Extra attempts on another endpoint, only when the request cannot have
    /// reached a model (connection refused, endpoint at capacity).
    pub max_retries: u32,
    /// Deadline of a request that names none (`Mlserve-Timeout-Ms` header,
    /// `grpc-timeout`); handed down as the queue timeout. (The largest
    /// request body is `server.http_max_body_bytes`.)
    #[serde(with = "duration")]
    pub default_timeout: Duration,
    /// `Retry-After` of a shed (503) response, sent in whole seconds
    /// (rounded up, at least one).
    #[serde(with = "duration")]
    pub retry_after: Duration,
    /// `off` or `on`: API keys or JWTs required on every external request
    /// except health checks.
    pub auth: AuthMode,
    /// SQL database of API keys; unset: `sqlite://<server.data_dir>/mlserve.db`.
    pub database_url: Option<String>,
    /// How long the gateway trusts a looked-up API key (or its absence)
    /// before asking the database again: a key revoked by another process
    /// (`mlserve keys revoke`) stops working within this time. 0s: every
    /// request asks the database.
    #[serde(with = "duration")]
    pub key_cache_ttl: Duration,
    /// How often each gateway reloads the canary splits from its database,
    /// so a split changed through one replica applies on every other within it.
    #[serde(with = "duration")]
    pub canary_refresh_interval: Duration,
    /// Accepted JWTs.
    pub jwt: JwtConfig,
    /// Rate limits.
    pub rate_limit: RateLimitConfig,
    /// Canary splits at start, by model name (changed at run time through
    /// `POST /v1/gateway/canary/{model}`).
    pub canary: BTreeMap<String, CanaryConfig>,
    /// Predict pipelines, by model name (`POST /v1/models/{model}:predict`).
    pub pipelines: BTreeMap<String, PipelineConfig>,
    /// Cross-origin requests from browsers.
    pub cors: CorsConfig,
    /// The request log: a sample of served rows written to the offline store.
    pub request_log: RequestLogConfig,
}

/// The request log (`[gateway.request_log]`): the gateway samples served
/// inference requests and writes their rows (the input feature vector, the
/// prediction and the model version) to the features role's offline store,
/// where the monitoring role reads them for drift. Sampling never delays an
/// answer: rows wait in a bounded queue, and a full queue drops the sample
/// (counted) rather than block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RequestLogConfig {
    /// Share of successful inference requests sampled, 0 to 1; 0 turns the
    /// log off.
    pub sample_rate: f64,
    /// Most rows logged per second by one gateway process, so the log's
    /// cost stays bounded under any load; 0: no bound.
    pub max_rows_per_second: f64,
    /// Rows kept of one sampled request's batch (the first ones).
    pub max_rows_per_request: usize,
    /// An input or output with more values per row than this (an image,
    /// token ids) is left out of the row.
    pub max_values_per_row: usize,
    /// Rows waiting to be written; past it new samples are dropped.
    pub queue_rows: usize,
    /// Rows per write to the offline store.
    pub batch_rows: usize,
    /// Longest time a row waits before its batch is written.
    #[serde(with = "duration")]
    pub flush_interval: Duration,
}

impl Default for RequestLogConfig {
    fn default() -> Self {
        RequestLogConfig {
            sample_rate: 0.01,
            max_rows_per_second: 100.0,
            max_rows_per_request: 4,
            max_values_per_row: 64,
            queue_rows: 4096,
            batch_rows: 500,
            flush_interval: Duration::from_secs(1),
        }
    }
}

/// CORS: which web origins may call the gateway's HTTP API from a browser.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed (`https://console.example.com`), or `["*"]` for any.
    /// Empty: no CORS headers, so browsers refuse cross-origin calls.
    pub allowed_origins: Vec<String>,
    /// How long a browser may cache a preflight answer.
    #[serde(with = "duration")]
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allowed_origins: Vec::new(),
            max_age: Duration::from_secs(600),
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            http_port: 8080,
            grpc_port: 8081,
            inference_endpoints: Vec::new(),
            dns_refresh_interval: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            health_check_interval: Duration::from_secs(1),
            eject_for: Duration::from_secs(5),
            max_concurrency_per_endpoint: 512,
            max_retries: 2,
            default_timeout: Duration::from_secs(30),
            retry_after: Duration::from_secs(1),
            auth: AuthMode::Off,
            database_url: None,
            key_cache_ttl: Duration::from_secs(1),
            canary_refresh_interval: Duration::from_secs(1),
            jwt: JwtConfig::default(),
            rate_limit: RateLimitConfig::default(),
            canary: BTreeMap::new(),
            pipelines: BTreeMap::new(),
            cors: CorsConfig::default(),
            request_log: RequestLogConfig::default(),
        }
    }
}

/// Whether the gateway requires credentials.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Anonymous access (rate-limited per IP).
    #[default]
    Off,
    /// An API key or a JWT is required.
    On,
}

/// Keys that verify JWTs (`alg` HS256, RS256 or ES256); `exp` and `nbf` are checked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// Shared secret for HS256; unset: HS256 tokens are refused.
    pub hs256_secret: Option<String>,
    /// PEM file of the RSA public key for RS256.
    pub rs256_public_key: Option<PathBuf>,
    /// PEM file of the P-256 public key for ES256.
    pub es256_public_key: Option<PathBuf>,
    /// Required `iss` claim, when set.
    pub issuer: Option<String>,
    /// Required `aud` claim, when set.
    pub audience: Option<String>,
    /// URL of the identity provider's JSON Web Key Set (its `jwks_uri`):
    /// RSA keys verify RS256 tokens and P-256 keys ES256, chosen by the
    /// token's `kid`.
    pub jwks_url: Option<String>,
    /// How long a fetched key set is used before it is fetched again (a
    /// token naming a key id the set lacks fetches it sooner, at most every
    /// 10 s, so a rotated key works at once).
    #[serde(with = "duration")]
    pub jwks_refresh: Duration,
    /// Clock skew tolerated on `exp` and `nbf` (whole seconds count; at
    /// most 5 minutes).
    #[serde(with = "duration")]
    pub leeway: Duration,
    /// The claim holding a token's scopes: a space-separated string (OAuth 2's
    /// `scope`) or a list of strings (`scp`). Unset: `scope`.
    pub scopes_claim: Option<String>,
    /// The scopes of a token without that claim. Unset: `infer` and `predict`.
    pub default_scopes: Option<Vec<String>>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            hs256_secret: None,
            rs256_public_key: None,
            es256_public_key: None,
            issuer: None,
            audience: None,
            jwks_url: None,
            jwks_refresh: Duration::from_secs(300),
            leeway: Duration::ZERO,
            scopes_claim: None,
            default_scopes: None,
        }
    }
}

/// What happens to requests when Redis (shared counters) is unreachable.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// Let requests through unlimited (logged).
    #[default]
    Open,
    /// Refuse requests with 503.
    Closed,
}

/// Where rate-limit counters live.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitBackend {
    /// In this process.
    #[default]
    Local,
    /// In Redis, shared by every gateway pod.
    Redis,
}

/// Token-bucket rate limits: `rate` requests per second refill a bucket of
/// `burst` tokens; one request takes one token. A rate of 0 is unlimited.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per second per client IP when there is no credential.
    pub anonymous_rate: f64,
    /// Bucket size per client IP.
    pub anonymous_burst: f64,
    /// Requests per second per JWT subject.
    pub jwt_rate: f64,
    /// Bucket size per JWT subject.
    pub jwt_burst: f64,
    /// `local` (counters in this process) or `redis` (shared by every
    /// gateway pod).
    pub backend: RateLimitBackend,
    /// Redis URL of the `redis` backend.
    pub redis_url: String,
    /// `open` or `closed`, when Redis cannot be reached.
    pub redis_failure: FailureMode,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            anonymous_rate: 0.0,
            anonymous_burst: 0.0,
            jwt_rate: 0.0,
            jwt_burst: 0.0,
            backend: RateLimitBackend::Local,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_failure: FailureMode::Open,
        }
    }
}

/// A model served as a stable and a canary version.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CanaryConfig {
    /// The version most requests go to.
    pub stable: String,
    /// The version under test.
    pub canary: String,
    /// Share of requests for the canary, 0.0 to 1.0.
    pub weight: f64,
}

/// What the gateway makes of a model's output in `POST /v1/models/{model}:predict`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Postprocess {
    /// Softmax over logits, then the `top_k` classes with their labels.
    SoftmaxTopk,
    /// The `top_k` classes of an output that already holds probabilities.
    ProbabilitiesTopk,
    /// The first value of each output row.
    Regression,
    /// The output rows, L2-normalised.
    Embedding,
}

/// How `POST /v1/models/{model}:predict` turns the model's outputs into an
/// answer. The request becomes model inputs through the model's features
/// pipeline (`features.pipelines.<model>` or one registered with the
/// features API).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Model output that post-processing reads; unset: the first output.
    #[serde(default)]
    pub output: Option<String>,
    /// softmax_topk | probabilities_topk | regression | embedding (required).
    pub postprocess: Postprocess,
    /// How many classes `*_topk` returns.
    #[serde(default)]
    pub top_k: usize,
    /// Class labels by index, for `*_topk`.
    #[serde(default)]
    pub labels: Vec<String>,
}

//! The gateway assembled from configuration: the routing inference client,
//! the canary table, authentication, rate limits and metrics that the HTTP
//! router and the gRPC layer share.

use std::sync::Arc;
use std::time::Duration;

use mlserve_common::config::{AuthMode, GatewayConfig, RateLimitBackend};
use mlserve_common::{Config, Databases, ShutdownSignal};
use mlserve_proto::features::FeaturesClient;
use mlserve_proto::inference::InferenceClient;
use mlserve_proto::registry::RegistryClient;

use crate::auth::Authenticator;
use crate::canary::CanaryTable;
use crate::endpoints::{resolve, Endpoint, EndpointOptions, EndpointSet, Target};
use crate::jwt::JwtVerifier;
use crate::keys::KeyStore;
use crate::metrics::GatewayMetrics;
use crate::pipelines::Pipelines;
use crate::ratelimit::RateLimiter;
use crate::request_log::RequestLog;
use crate::routing::{maintain, RoutingInference};
use crate::scoped::ScopedInference;

/// Everything a gateway request goes through.
pub struct Gateway {
    /// The routing inference client.
    pub router: Arc<RoutingInference>,
    /// The router behind the caller's scopes: what the v2 HTTP routes and
    /// the gRPC service serve.
    pub scoped: Arc<ScopedInference>,
    /// The same, as a service client.
    pub inference: InferenceClient,
    /// Canary splits.
    pub canary: Arc<CanaryTable>,
    /// Credentials.
    pub auth: Authenticator,
    /// The API keys (the keys API manages them; `auth` checks them when on).
    pub keys: Arc<KeyStore>,
    /// Rate limits.
    pub limiter: RateLimiter,
    /// Counters.
    pub metrics: Arc<GatewayMetrics>,
    /// The features service, for the predict pipeline.
    pub features: Option<FeaturesClient>,
    /// Predict pipelines: configured, else declared in the registry.
    pub pipelines: Pipelines,
    /// The `[gateway]` settings.
    pub settings: GatewayConfig,
    /// CORS for browsers, when origins are configured.
    pub cors: Option<tower_http::cors::CorsLayer>,
    /// Largest request body in bytes (`server.http_max_body_bytes`, the
    /// same limit as the node's listeners): 413 above it.
    pub max_body_bytes: usize,
}

impl Gateway {
    /// The deadline of a request that names none.
    pub fn default_timeout(&self) -> Duration {
        self.settings.default_timeout.max(Duration::from_millis(1))
    }

    /// `Retry-After` of a shed (503) response in whole seconds, rounded up
    /// and at least one.
    pub fn retry_after_secs(&self) -> u64 {
        let after = self.settings.retry_after;
        (after.as_secs() + u64::from(after.subsec_nanos() > 0)).max(1)
    }

    /// Builds the gateway of `config`. `local` is the in-process inference
    /// service, used when no endpoints are configured; `features` is the
    /// features client of this process (local, or remote via
    /// `features.endpoint`), `registry` the registry client (pipelines
    /// declared as model tags); the API keys' database comes from
    /// `databases`, shared with the other roles of the process. Background
    /// endpoint maintenance (DNS, health checks) runs until `signal`.
    pub async fn build(
        config: &Config,
        local: Option<InferenceClient>,
        features: Option<FeaturesClient>,
        registry: Option<RegistryClient>,
        databases: &Databases,
        signal: ShutdownSignal,
    ) -> anyhow::Result<Gateway> {
        let settings = config.gateway.clone();
        // First, so a bad key or a short secret fails the start before anything else.
        let jwt = JwtVerifier::from_config(&settings.jwt).map_err(anyhow::Error::msg)?;
        let cors = crate::cors::layer(&settings.cors).map_err(anyhow::Error::msg)?;
        let options = EndpointOptions {
            connect_timeout: settings.connect_timeout.max(Duration::from_millis(10)),
            eject_for: settings.eject_for,
            max_concurrency: settings.max_concurrency_per_endpoint.max(1),
            internal_token: config.server.internal_token.clone(),
        };
        let targets = settings
            .inference_endpoints
            .iter()
            .map(|s| Target::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        let endpoints = if targets.is_empty() {
            let local = local.ok_or_else(|| {
                anyhow::anyhow!(
                    "the gateway needs inference: run the inference role in this process or set gateway.inference_endpoints (--inference-endpoints)"
                )
            })?;
            Arc::new(EndpointSet::new(
                vec![Arc::new(Endpoint::local(local, options.max_concurrency))],
                options,
            ))
        } else {
            let set = Arc::new(EndpointSet::new(Vec::new(), options));
            set.replace(&resolve(&targets).await);
            set
        };
        let health_every = settings
            .health_check_interval
            .max(Duration::from_millis(50));
        let dns_every = settings
            .dns_refresh_interval
            .max(Duration::from_millis(100));
        tokio::spawn(maintain(
            endpoints.clone(),
            targets,
            dns_every,
            health_every,
            signal.clone(),
        ));

        // Splits live in the gateway's database, shared by every replica
        // (and kept across restarts); each replica refreshes its copy.
        let url = settings
            .database_url
            .clone()
            .unwrap_or_else(|| mlserve_common::db::default_url(&config.server.data_dir));
        let db = databases.open(&url).await?;
        let canary = Arc::new(CanaryTable::stored(db.clone(), &settings.canary).await?);
        tokio::spawn(refresh_canaries(
            canary.clone(),
            settings
                .canary_refresh_interval
                .max(Duration::from_millis(50)),
            signal.clone(),
        ));
        let metrics = Arc::new(GatewayMetrics::default());
        let request_log = match &features {
            Some(features) => RequestLog::start(
                &settings.request_log,
                features.clone(),
                metrics.request_log.clone(),
                signal,
            )
            .map_err(anyhow::Error::msg)?,
            None => {
                if settings.request_log.sample_rate > 0.0 {
                    tracing::info!(
                        "the request log is off: no features role here and no features.endpoint"
                    );
                }
                None
            }
        };
        let router = Arc::new(
            RoutingInference::new(
                endpoints,
                canary.clone(),
                settings.default_timeout.max(Duration::from_millis(1)),
                settings.max_retries,
                metrics.clone(),
            )
            .with_request_log(request_log),
        );
        let keys = Arc::new(KeyStore::new(db).with_cache_ttl(settings.key_cache_ttl));
        let checked_keys = (settings.auth == AuthMode::On).then(|| keys.clone());
        let auth = Authenticator::new(
            settings.auth,
            checked_keys,
            jwt,
            settings.rate_limit.clone(),
        );
        let limits = &settings.rate_limit;
        let limiter = match limits.backend {
            RateLimitBackend::Redis => RateLimiter::redis(&limits.redis_url, limits.redis_failure)
                .map_err(anyhow::Error::msg)?,
            RateLimitBackend::Local => RateLimiter::local(),
        };
        let pipelines = Pipelines::new(settings.pipelines.clone(), registry);
        let scoped = Arc::new(ScopedInference::new(router.clone()));
        Ok(Gateway {
            pipelines,
            features,
            inference: InferenceClient::from_arc(scoped.clone()),
            scoped,
            router,
            canary,
            auth,
            keys,
            limiter,
            metrics,
            settings,
            cors,
            max_body_bytes: config.server.http_max_body_bytes,
        })
    }
}

/// Reloads the canary splits every `every` until shutdown, so a change made
/// through another replica applies here within that time.
async fn refresh_canaries(table: Arc<CanaryTable>, every: Duration, signal: ShutdownSignal) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = signal.clone().wait() => return,
        }
        if let Err(err) = table.refresh().await {
            tracing::warn!(error = %err, "cannot refresh the canary splits; the last ones stay");
        }
    }
}

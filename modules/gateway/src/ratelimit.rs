//! Token-bucket rate limits per caller: `rate` tokens per second refill a
//! bucket of `burst`; a request takes one. Counters live in this process by
//! default, or in Redis (one atomic Lua script per request, Redis's own
//! clock) so that every gateway pod shares them. When Redis cannot be
//! reached the configured failure mode decides: `open` lets the request
//! through (logged), `closed` answers 503.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use fred::prelude::{Builder, Client, ClientLike, Config, LuaInterface, ReconnectPolicy};
use mlserve_common::config::FailureMode;

use crate::error::GatewayError;

/// Longest wait for Redis before the failure mode applies.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// Local buckets kept before idle (full) ones are dropped.
const LOCAL_MAX: usize = 100_000;

/// A caller's limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Tokens per second; 0 is unlimited.
    pub rate: f64,
    /// Bucket size (at least 1 when limited).
    pub burst: f64,
}

impl Limit {
    /// A limit; a burst below 1 becomes 1 so a limited caller can ever pass.
    pub fn new(rate: f64, burst: f64) -> Limit {
        Limit {
            rate,
            burst: if burst < 1.0 { rate.max(1.0) } else { burst },
        }
    }

    /// Whether there is no limit.
    pub fn unlimited(&self) -> bool {
        self.rate <= 0.0
    }
}

/// One decision, with what the rate-limit headers report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Whether the request may pass.
    pub allowed: bool,
    /// `RateLimit-Limit`: the bucket size.
    pub limit: u64,
    /// `RateLimit-Remaining`: whole tokens left.
    pub remaining: u64,
    /// `RateLimit-Reset`: seconds until the bucket is full again.
    pub reset_secs: u64,
    /// `Retry-After` on 429: seconds until one token is back.
    pub retry_after_secs: u64,
}

/// The decision for a bucket holding `tokens` after refill.
fn decide(limit: Limit, tokens_before: f64) -> (Decision, f64) {
    let allowed = tokens_before >= 1.0;
    let tokens = if allowed {
        tokens_before - 1.0
    } else {
        tokens_before
    };
    let secs = |missing: f64| (missing.max(0.0) / limit.rate).ceil() as u64;
    (
        Decision {
            allowed,
            limit: limit.burst as u64,
            remaining: tokens.floor().max(0.0) as u64,
            reset_secs: secs(limit.burst - tokens),
            retry_after_secs: secs(1.0 - tokens).max(1),
        },
        tokens,
    )
}

/// A token bucket: `tokens` as of `at`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    pub(crate) tokens: f64,
    pub(crate) at: Instant,
}

impl Bucket {
    /// A full bucket of `limit`.
    pub(crate) fn full(limit: Limit) -> Bucket {
        Bucket {
            tokens: limit.burst,
            at: Instant::now(),
        }
    }

    /// Refills the bucket to `now` at `limit`'s rate, up to its burst.
    pub(crate) fn refill(&mut self, limit: Limit, now: Instant) {
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * limit.rate).min(limit.burst);
        self.at = now;
    }
}

/// The rate limiter.
pub struct RateLimiter {
    local: Mutex<HashMap<String, Bucket>>,
    redis: Option<Client>,
    failure: FailureMode,
}

/// The bucket script: refill by Redis's clock, take one token if there is
/// one, store, expire idle buckets. Returns {allowed, tokens}.
const SCRIPT: &str = r#"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local data = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(data[1])
local at = tonumber(data[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(tokens + allowed)}
"#;

impl RateLimiter {
    /// Counters in this process.
    pub fn local() -> RateLimiter {
        RateLimiter {
            local: Mutex::new(HashMap::new()),
            redis: None,
            failure: FailureMode::Open,
        }
    }

    /// Counters in Redis at `url`; connects in the background (reconnecting
    /// forever), so a Redis that is down at start is a failure-mode case, not
    /// a start-up error.
    pub fn redis(url: &str, failure: FailureMode) -> Result<RateLimiter, String> {
        let config = Config::from_url(url).map_err(|e| format!("invalid redis url: {e}"))?;
        let client = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(1);
            })
            .set_policy(ReconnectPolicy::new_constant(0, 500))
            .build()
            .map_err(|e| format!("redis client: {e}"))?;
        // The connection task runs on its own; dropping its handle detaches it.
        drop(client.connect());
        Ok(RateLimiter {
            local: Mutex::new(HashMap::new()),
            redis: Some(client),
            failure,
        })
    }

    /// Takes one token from `key`'s bucket.
    pub async fn check(&self, key: &str, limit: Limit) -> Result<Option<Decision>, GatewayError> {
        if limit.unlimited() {
            return Ok(None);
        }
        match &self.redis {
            None => Ok(Some(self.check_local(key, limit))),
            Some(client) => match self.check_redis(client, key, limit).await {
                Ok(decision) => Ok(Some(decision)),
                Err(err) => match self.failure {
                    FailureMode::Open => {
                        tracing::warn!(error = %err, "rate limit store unreachable: letting the request through (fail open)");
                        Ok(None)
                    }
                    FailureMode::Closed => {
                        tracing::warn!(error = %err, "rate limit store unreachable: refusing the request (fail closed)");
                        Err(GatewayError::Unavailable(
                            "rate limit store unavailable".into(),
                        ))
                    }
                },
            },
        }
    }

    fn check_local(&self, key: &str, limit: Limit) -> Decision {
        let now = Instant::now();
        let mut buckets = match self.local.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        if buckets.len() >= LOCAL_MAX && !buckets.contains_key(key) {
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.at).as_secs_f64() * limit.rate < limit.burst
            });
        }
        let bucket = buckets
            .entry(key.to_string())
            .or_insert_with(|| Bucket::full(limit));
        bucket.refill(limit, now);
        let (decision, tokens) = decide(limit, bucket.tokens);
        bucket.tokens = tokens;
        decision
    }

    async fn check_redis(
        &self,
        client: &Client,
        key: &str,
        limit: Limit,
    ) -> Result<Decision, String> {
        let call = client.eval::<(i64, String), _, _, _>(
            SCRIPT,
            vec![format!("mlserve:ratelimit:{key}")],
            vec![limit.rate.to_string(), limit.burst.to_string()],
        );
        let (allowed, before) = tokio::time::timeout(REDIS_TIMEOUT, call)
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let before: f64 = before
            .parse()
            .map_err(|_| format!("bad token count '{before}'"))?;
        let (mut decision, _) = decide(limit, before);
        decision.allowed = allowed == 1;
        Ok(decision)
    }
}

#[cfg(test)]
#[path = "ratelimit_tests.rs"]
mod tests;

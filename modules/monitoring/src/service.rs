//! The `MonitoringService` contract over the engine.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mlserve_proto::monitoring::*;
use mlserve_proto::{CallContext, ServiceError, ServiceResult};

use crate::drift_watch::DriftWatch;
use crate::engine::Engine;

/// The monitoring role's implementation of the contract.
#[derive(Clone)]
pub struct LocalMonitoring {
    engine: Arc<Engine>,
    drift: Option<Arc<DriftWatch>>,
}

impl LocalMonitoring {
    /// Wraps an engine.
    pub fn new(engine: Arc<Engine>) -> LocalMonitoring {
        LocalMonitoring {
            engine,
            drift: None,
        }
    }

    /// Serves `drift`'s reports (`None`: drift analysis is off).
    pub fn with_drift(mut self, drift: Option<Arc<DriftWatch>>) -> LocalMonitoring {
        self.drift = drift;
        self
    }

    fn windows_of(&self, model: &str, window: Duration) -> Vec<VersionWindow> {
        let mut out: Vec<VersionWindow> = self
            .engine
            .windows(window)
            .into_iter()
            .filter(|((m, _), _)| model.is_empty() || m == model)
            .map(|((model, version), s)| VersionWindow {
                model,
                version,
                window_ms: s.span.as_millis() as i64,
                requests: s.totals.requests,
                client_errors: s.totals.client_errors,
                server_errors: s.totals.server_errors,
                requests_per_second: s.rate(),
                error_rate: s.error_rate(),
                p50_ms: s.totals.quantile(0.5).unwrap_or(0.0) * 1e3,
                p99_ms: s.totals.quantile(0.99).unwrap_or(0.0) * 1e3,
            })
            .collect();
        out.sort_by(|a, b| (&a.model, &a.version).cmp(&(&b.model, &b.version)));
        out
    }
}

fn who(ctx: &CallContext) -> String {
    ctx.caller
        .as_ref()
        .map_or_else(|| "api".to_string(), |c| c.identity.clone())
}

/// `reason (by caller)`, or `by caller` without a reason: what a pause or
/// an abort records.
fn reason_with_caller(reason: &str, ctx: &CallContext) -> String {
    if reason.is_empty() {
        format!("by {}", who(ctx))
    } else {
        format!("{reason} (by {})", who(ctx))
    }
}

#[async_trait]
impl MonitoringService for LocalMonitoring {
    async fn start_rollout(
        &self,
        ctx: CallContext,
        request: StartRolloutRequest,
    ) -> ServiceResult<Rollout> {
        self.engine.start(request, &who(&ctx)).await
    }

    async fn get_rollout(
        &self,
        _ctx: CallContext,
        request: GetRolloutRequest,
    ) -> ServiceResult<RolloutStatus> {
        let store = self.engine.store();
        let found = if !request.id.is_empty() {
            store.get(&request.id).await?
        } else {
            store.latest(&request.model).await?
        };
        let (rollout, _) = found.ok_or_else(|| {
            ServiceError::not_found(if request.id.is_empty() {
                format!("model '{}' has no rollout", request.model)
            } else {
                format!("no rollout '{}'", request.id)
            })
        })?;
        let records = store.records(&rollout.id).await?;
        let interval = rollout
            .analysis
            .as_ref()
            .map_or(self.engine.default_window(), |a| {
                Duration::from_millis(a.interval_ms.max(10) as u64)
            });
        let windows = self
            .windows_of(&rollout.model, interval)
            .into_iter()
            .filter(|w| {
                w.version == rollout.stable.to_string() || w.version == rollout.canary.to_string()
            })
            .collect();
        Ok(RolloutStatus {
            rollout: Some(rollout),
            records,
            windows,
        })
    }

    async fn list_rollouts(
        &self,
        _ctx: CallContext,
        request: ListRolloutsRequest,
    ) -> ServiceResult<ListRolloutsResponse> {
        let rollouts = self
            .engine
            .store()
            .list(&request.model, request.active, request.limit)
            .await?
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        Ok(ListRolloutsResponse { rollouts })
    }

    async fn pause_rollout(
        &self,
        ctx: CallContext,
        request: RolloutActionRequest,
    ) -> ServiceResult<Rollout> {
        let reason = reason_with_caller(&request.reason, &ctx);
        self.engine.pause(&request.model, &reason).await
    }

    async fn resume_rollout(
        &self,
        _ctx: CallContext,
        request: RolloutActionRequest,
    ) -> ServiceResult<Rollout> {
        self.engine.resume(&request.model).await
    }

    async fn promote_rollout(
        &self,
        _ctx: CallContext,
        request: RolloutActionRequest,
    ) -> ServiceResult<Rollout> {
        self.engine.promote(&request.model).await
    }

    async fn abort_rollout(
        &self,
        ctx: CallContext,
        request: RolloutActionRequest,
    ) -> ServiceResult<Rollout> {
        let reason = reason_with_caller(&request.reason, &ctx);
        self.engine.abort(&request.model, &reason).await
    }

    async fn get_windows(
        &self,
        _ctx: CallContext,
        request: GetWindowsRequest,
    ) -> ServiceResult<GetWindowsResponse> {
        let window = if request.window_ms > 0 {
            Duration::from_millis(request.window_ms as u64)
        } else {
            self.engine.default_window()
        };
        Ok(GetWindowsResponse {
            windows: self.windows_of(&request.model, window),
        })
    }

    async fn get_drift(
        &self,
        _ctx: CallContext,
        request: GetDriftRequest,
    ) -> ServiceResult<GetDriftResponse> {
        let drift = self.drift.as_ref().ok_or_else(|| {
            ServiceError::unavailable(
                "drift analysis is off: it needs the features role (here or at features.endpoint) and monitoring.drift.interval above 0",
            )
        })?;
        let reports = drift.reports(&request.model, &request.version);
        if reports.is_empty() && !request.model.is_empty() {
            return Err(ServiceError::not_found(format!(
                "no served rows of model '{}'{} in the drift window",
                request.model,
                if request.version.is_empty() {
                    String::new()
                } else {
                    format!(" version {}", request.version)
                }
            )));
        }
        Ok(GetDriftResponse { reports })
    }
}

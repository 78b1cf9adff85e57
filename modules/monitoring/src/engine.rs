//! The rollout driver. After every reading of the metrics it carries each
//! unfinished rollout one move on, and every move is written to SQL (with a
//! record of it) before it acts:
//!
//! - `waiting`: until every inference process that follows the model serves
//!   the canary (`mlserve_inference_registry_followed_version`), so no
//!   request is sent to a version nobody serves; then the first step.
//! - `progressing`: every `interval` a check of the last interval's window
//!   (canary against stable). A failed check counts; `threshold` of them
//!   abort. A step ends when its duration is over and it has had one
//!   passing check (a canary without traffic does not advance). After the
//!   last step: promotion.
//! - `promoting`: 100% to the canary, the production alias moves to it
//!   (alias history records the move), the split makes it the stable
//!   version, `rollout_promoted` is published.
//! - a model with no production version yet: its first canary becomes it at
//!   once, without analysis (Flagger's initialization).
//! - abort (checks, by hand, or a newer canary): weight 0, the canary alias
//!   back where it was (if nobody moved it since), `rollout_aborted` with
//!   the reason.
//!
//! The gateways' split is the canary table in the same database: each
//! gateway reloads it every `gateway.canary_refresh_interval` and at once on
//! a `rollout_*` event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mlserve_common::config::{check_steps, RolloutsConfig, StepConfig};
use mlserve_common::events::{publish_bounded, Event, EventBus};
use mlserve_gateway::canary::{CanaryAction, CanaryTable};
use mlserve_proto::monitoring::{Analysis, Rollout, RolloutStep, StartRolloutRequest};
use mlserve_proto::registry::{pb, RegistryClient, RegistryService};
use mlserve_proto::{CallContext, ErrorCode, ServiceError, ServiceResult};

use crate::alerts::{Webhook, WebhookMessage};
use crate::analysis::{check, Thresholds, Verdict};
use crate::metrics::MonitoringMetrics;
use crate::store::{now_us, states, Store};
use crate::window::{History, Reading, WindowStats};

/// What the engine needs besides its store.
pub struct EngineParts {
    /// Rollouts in SQL.
    pub store: Store,
    /// The gateways' traffic splits (same database).
    pub splits: Arc<CanaryTable>,
    /// Aliases and versions.
    pub registry: RegistryClient,
    /// Where rollout events go.
    pub events: Arc<dyn EventBus>,
    /// Defaults and triggers.
    pub defaults: RolloutsConfig,
    /// The window `windows` shows by default.
    pub window: Duration,
    /// Counters and gauges.
    pub metrics: Arc<MonitoringMetrics>,
    /// Where aborts are alerted (none: nowhere).
    pub webhook: Option<Webhook>,
}

/// Drives every rollout.
pub struct Engine {
    parts: EngineParts,
    history: Mutex<History>,
    /// Passing checks in the current step, per rollout (in memory: after a
    /// restart a step needs one more pass, never one less).
    passes: Mutex<HashMap<String, (u32, u32)>>,
    /// One move at a time: the tick and the API's actions.
    moving: tokio::sync::Mutex<()>,
}

impl Engine {
    /// An engine over `parts`, keeping readings for the longest window it
    /// may be asked for.
    pub fn new(parts: EngineParts) -> Arc<Engine> {
        let keep = parts
            .window
            .max(parts.defaults.interval)
            .max(Duration::from_secs(600));
        Arc::new(Engine {
            history: Mutex::new(History::new(keep)),
            passes: Mutex::new(HashMap::new()),
            moving: tokio::sync::Mutex::new(()),
            parts,
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.parts.store
    }

    /// The default window.
    pub fn default_window(&self) -> Duration {
        self.parts.window
    }

    /// Adds a reading of the metrics.
    pub fn observe(&self, reading: Reading) {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(reading);
    }

    /// Every model version's counts over the last `window`.
    pub fn windows(&self, window: Duration) -> HashMap<(String, String), WindowStats> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .window(window)
    }

    fn ctx() -> CallContext {
        CallContext::new().with_timeout(Duration::from_secs(30))
    }

    /// Starts a rollout; `started_by` says who or what asked.
    pub async fn start(
        &self,
        request: StartRolloutRequest,
        started_by: &str,
    ) -> ServiceResult<Rollout> {
        let _moving = self.moving.lock().await;
        self.start_locked(request, started_by).await
    }

    async fn start_locked(
        &self,
        request: StartRolloutRequest,
        started_by: &str,
    ) -> ServiceResult<Rollout> {
        let model = request.model.trim().to_string();
        if model.is_empty() || request.canary == 0 {
            return Err(ServiceError::bad_request(
                "a rollout needs a model and a canary version (> 0)",
            ));
        }
        let registry = &self.parts.registry;
        registry
            .get_version(
                Self::ctx(),
                pb::GetVersionRequest {
                    name: model.clone(),
                    version: request.canary,
                },
            )
            .await?;
        let production = &self.parts.defaults.production_alias;
        let stable = if request.stable > 0 {
            request.stable
        } else {
            match self.alias(&model, production).await? {
                Some(v) => v,
                None => {
                    return Err(ServiceError::conflict(format!(
                        "model '{model}' has no '{production}' alias: there is no stable version \
                         to roll out against (set the alias, or name the stable version)"
                    )))
                }
            }
        };
        if stable == request.canary {
            return Err(ServiceError::conflict(format!(
                "version {stable} of '{model}' is already the stable version"
            )));
        }
        let steps = if request.steps.is_empty() {
            self.parts
                .defaults
                .resolved_steps()
                .map_err(ServiceError::bad_request)?
                .iter()
                .map(|s| RolloutStep {
                    weight: s.weight,
                    duration_ms: s.duration.as_millis() as i64,
                })
                .collect()
        } else {
            let configs: Vec<StepConfig> = request
                .steps
                .iter()
                .map(|s| StepConfig {
                    weight: s.weight,
                    duration: Duration::from_millis(s.duration_ms.max(0) as u64),
                })
                .collect();
            check_steps(&configs).map_err(ServiceError::bad_request)?;
            request.steps.clone()
        };
        let analysis = self.filled(request.analysis.unwrap_or_default())?;
        let previous_canary = match request.previous_canary {
            0 => self.trigger_alias_before(&model, request.canary).await?,
            given => given,
        };
        let now = now_us();
        let rollout = Rollout {
            id: format!("{model}-{:08x}", fastrand::u32(..)),
            model: model.clone(),
            stable,
            canary: request.canary,
            previous_canary,
            state: states::WAITING.into(),
            step: 0,
            steps,
            analysis: Some(analysis),
            weight: 0,
            failed_checks: 0,
            reason: String::new(),
            created_at_us: now,
            updated_at_us: now,
            finished_at_us: 0,
            step_started_at_us: now,
            started_by: started_by.to_string(),
        };
        self.parts.store.insert(&rollout, now).await?;
        self.note(
            &rollout,
            "decision",
            "",
            &format!(
                "started by {started_by}: version {} against stable {stable}, steps {}",
                rollout.canary,
                steps_text(&rollout.steps)
            ),
        )
        .await;
        self.split(&rollout, 0.0).await?;
        self.publish(Event::RolloutStarted {
            model: model.clone(),
            stable: Some(stable as i64),
            canary: rollout.canary as i64,
            at: now,
        })
        .await;
        tracing::info!(%model, canary = rollout.canary, stable, id = %rollout.id, "rollout started");
        Ok(rollout)
    }

    /// The analysis with every unset field taken from the defaults.
    fn filled(&self, a: Analysis) -> ServiceResult<Analysis> {
        let d = &self.parts.defaults;
        let pick = |v: f64, default: f64| if v > 0.0 { v } else { default };
        let filled = Analysis {
            interval_ms: if a.interval_ms > 0 {
                a.interval_ms
            } else {
                d.interval.as_millis() as i64
            },
            threshold: if a.threshold > 0 {
                a.threshold
            } else {
                d.threshold
            },
            max_error_rate: pick(a.max_error_rate, d.max_error_rate),
            max_error_rate_increase: pick(a.max_error_rate_increase, d.max_error_rate_increase),
            max_p99_ms: if a.max_p99_ms > 0 {
                a.max_p99_ms
            } else {
                d.max_p99.as_millis() as i64
            },
            max_p99_ratio: pick(a.max_p99_ratio, d.max_p99_ratio),
            min_requests: if a.min_requests > 0 {
                a.min_requests
            } else {
                d.min_requests
            },
        };
        if filled.max_error_rate > 1.0 || filled.threshold == 0 || filled.interval_ms < 10 {
            return Err(ServiceError::bad_request(
                "analysis: max_error_rate must be at most 1, threshold at least 1, interval at least 10ms",
            ));
        }
        Ok(filled)
    }

    /// The version `alias` of `model` names, if it exists.
    async fn alias(&self, model: &str, alias: &str) -> ServiceResult<Option<u64>> {
        let found = self
            .parts
            .registry
            .get_alias(
                Self::ctx(),
                pb::GetAliasRequest {
                    name: model.to_string(),
                    alias: alias.to_string(),
                },
            )
            .await;
        match found {
            Ok(a) => Ok(Some(a.version)),
            Err(e) if e.code == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Where the trigger alias points before `canary` (0: nowhere, or at the
    /// canary already): for a rollout started by hand, where an abort moves
    /// the alias back to once it has moved to the canary.
    async fn trigger_alias_before(&self, model: &str, canary: u64) -> ServiceResult<u64> {
        let trigger = &self.parts.defaults.trigger_alias;
        if trigger.is_empty() {
            return Ok(0);
        }
        Ok(self
            .alias(model, trigger)
            .await?
            .filter(|v| *v != canary)
            .unwrap_or(0))
    }

    /// Carries every unfinished rollout one move on.
    pub async fn tick(&self) {
        let _moving = self.moving.lock().await;
        let active = match self.parts.store.list("", true, 1000).await {
            Ok(active) => active,
            Err(err) => {
                tracing::warn!(error = %err.message, "rollouts: cannot read the unfinished rollouts");
                return;
            }
        };
        for (rollout, last_check) in active {
            let id = rollout.id.clone();
            if let Err(err) = self.drive(rollout, last_check).await {
                tracing::warn!(rollout = %id, error = %err.message, "rollout move failed; retried next tick");
            }
        }
    }

    async fn drive(&self, mut r: Rollout, last_check: i64) -> ServiceResult<()> {
        let now = now_us();
        self.parts.metrics.weight(&r.model, r.weight);
        match r.state.as_str() {
            states::WAITING => {
                if self.serves(&r.model, r.canary) {
                    self.enter_step(&mut r, 0, now).await?;
                } else if now - r.created_at_us
                    > self.parts.defaults.serve_timeout.as_micros() as i64
                {
                    let reason = format!(
                        "version {} was not served by every inference process within {}",
                        r.canary,
                        humantime_text(self.parts.defaults.serve_timeout)
                    );
                    self.abort_locked(r, &reason, true).await?;
                }
                Ok(())
            }
            states::PROGRESSING => self.progress(r, last_check, now).await,
            states::PROMOTING => self.promote_locked(r).await,
            _ => Ok(()),
        }
    }

    async fn progress(&self, mut r: Rollout, last_check: i64, now: i64) -> ServiceResult<()> {
        let analysis = r.analysis.unwrap_or_default();
        let t = thresholds(&analysis, self.parts.defaults.p99_ratio_floor);
        let mut last_check = last_check;
        if now - last_check >= t.interval.as_micros() as i64 {
            last_check = now;
            let windows = self.windows(t.interval);
            let key = |v: u64| (r.model.clone(), v.to_string());
            let canary = windows.get(&key(r.canary)).cloned().unwrap_or_default();
            let stable = windows.get(&key(r.stable));
            let verdict = check(&canary, stable, &t);
            self.parts.metrics.check(&r.model, verdict.result());
            self.note(&r, "check", verdict.result(), verdict.message())
                .await;
            match &verdict {
                Verdict::Fail(why) => {
                    r.failed_checks += 1;
                    if r.failed_checks >= t.threshold {
                        let reason = format!(
                            "{} of {} checks failed; last: {why}",
                            r.failed_checks, t.threshold
                        );
                        return self.abort_locked(r, &reason, true).await;
                    }
                }
                Verdict::Pass(_) => {
                    let mut passes = self.passes.lock().unwrap_or_else(|p| p.into_inner());
                    let entry = passes.entry(r.id.clone()).or_insert((r.step, 0));
                    if entry.0 != r.step {
                        *entry = (r.step, 0);
                    }
                    entry.1 += 1;
                }
                Verdict::Inconclusive(_) => {}
            }
        }
        let passed = self
            .passes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&r.id)
            .is_some_and(|(step, n)| *step == r.step && *n > 0);
        let duration = r
            .steps
            .get(r.step as usize)
            .map_or(0, |s| s.duration_ms.max(0) * 1000);
        if passed && now - r.step_started_at_us >= duration {
            let next = r.step + 1;
            if next as usize >= r.steps.len() {
                r.state = states::PROMOTING.into();
                r.step = next;
                r.updated_at_us = now;
                self.parts.store.update(&r, last_check).await?;
                self.note(&r, "decision", "", "every step passed: promoting")
                    .await;
                return self.promote_locked(r).await;
            }
            return self.enter_step(&mut r, next, now).await;
        }
        r.updated_at_us = now;
        self.parts.store.update(&r, last_check).await
    }

    /// Moves `r` to step `step` (0-based): its weight goes to the canary.
    async fn enter_step(&self, r: &mut Rollout, step: u32, now: i64) -> ServiceResult<()> {
        let weight = r.steps.get(step as usize).map_or(100, |s| s.weight);
        r.state = states::PROGRESSING.into();
        r.step = step;
        r.weight = weight;
        r.step_started_at_us = now;
        r.updated_at_us = now;
        self.split(r, f64::from(weight) / 100.0).await?;
        // The first check of a step reads a whole interval at its weight.
        self.parts.store.update(r, now).await?;
        self.parts.metrics.weight(&r.model, weight);
        self.note(
            r,
            "step",
            "",
            &format!(
                "step {}/{}: {weight}% of traffic to version {} for {}",
                step + 1,
                r.steps.len(),
                r.canary,
                humantime_text(Duration::from_millis(
                    r.steps[step as usize].duration_ms.max(0) as u64
                ))
            ),
        )
        .await;
        self.publish(Event::RolloutStep {
            model: r.model.clone(),
            canary: r.canary as i64,
            weight,
            at: now,
        })
        .await;
        Ok(())
    }

    /// The promotion: every move idempotent, so a restart mid-way finishes it.
    async fn promote_locked(&self, mut r: Rollout) -> ServiceResult<()> {
        let production = self.parts.defaults.production_alias.clone();
        if r.weight != 100 {
            r.weight = 100;
            self.split(&r, 1.0).await?;
            self.parts.store.update(&r, now_us()).await?;
            self.parts.metrics.weight(&r.model, 100);
            self.note(
                &r,
                "step",
                "",
                &format!("100% of traffic to version {}", r.canary),
            )
            .await;
            self.publish(Event::RolloutStep {
                model: r.model.clone(),
                canary: r.canary as i64,
                weight: 100,
                at: now_us(),
            })
            .await;
        }
        if self.alias(&r.model, &production).await? != Some(r.canary) {
            self.parts
                .registry
                .set_alias(
                    Self::ctx(),
                    pb::SetAliasRequest {
                        name: r.model.clone(),
                        alias: production.clone(),
                        version: r.canary,
                        actor: format!("monitoring:{}", r.id),
                    },
                )
                .await?;
            self.note(
                &r,
                "decision",
                "",
                &format!(
                    "alias '{production}' moved from {} to {}",
                    r.stable, r.canary
                ),
            )
            .await;
        }
        self.parts
            .splits
            .apply(
                &r.model,
                CanaryAction::Set {
                    stable: r.canary.to_string(),
                    canary: String::new(),
                    weight: 0.0,
                },
            )
            .await
            .map_err(ServiceError::from)?;
        let now = now_us();
        r.state = states::PROMOTED.into();
        r.finished_at_us = now;
        r.updated_at_us = now;
        r.reason = format!("version {} promoted to '{production}'", r.canary);
        self.parts.store.update(&r, now).await?;
        self.parts.metrics.finished(&r.model, "promoted");
        self.note(&r, "decision", "", &r.reason.clone()).await;
        self.publish(Event::RolloutPromoted {
            model: r.model.clone(),
            version: r.canary as i64,
            at: now,
        })
        .await;
        tracing::info!(model = %r.model, version = r.canary, id = %r.id, "rollout promoted");
        Ok(())
    }

    /// Aborts `r`: weight 0, and (when `restore_alias`) the canary alias
    /// back where it was if it still names this canary.
    async fn abort_locked(
        &self,
        mut r: Rollout,
        reason: &str,
        restore_alias: bool,
    ) -> ServiceResult<()> {
        r.weight = 0;
        self.split(&r, 0.0).await?;
        let trigger = self.parts.defaults.trigger_alias.clone();
        if restore_alias
            && !trigger.is_empty()
            && self.alias(&r.model, &trigger).await? == Some(r.canary)
        {
            let actor = format!("monitoring:{}", r.id);
            if r.previous_canary > 0 {
                self.parts
                    .registry
                    .set_alias(
                        Self::ctx(),
                        pb::SetAliasRequest {
                            name: r.model.clone(),
                            alias: trigger.clone(),
                            version: r.previous_canary,
                            actor,
                        },
                    )
                    .await?;
            } else {
                self.parts
                    .registry
                    .delete_alias(
                        Self::ctx(),
                        pb::DeleteAliasRequest {
                            name: r.model.clone(),
                            alias: trigger.clone(),
                            actor,
                        },
                    )
                    .await?;
            }
        }
        let now = now_us();
        r.state = states::ABORTED.into();
        r.reason = reason.to_string();
        r.finished_at_us = now;
        r.updated_at_us = now;
        self.parts.store.update(&r, now).await?;
        self.parts.metrics.weight(&r.model, 0);
        self.parts.metrics.finished(&r.model, "aborted");
        self.note(&r, "decision", "", &format!("aborted: {reason}"))
            .await;
        self.publish(Event::RolloutAborted {
            model: r.model.clone(),
            canary: r.canary as i64,
            reason: reason.to_string(),
            at: now,
        })
        .await;
        if let Some(webhook) = &self.parts.webhook {
            webhook.send(WebhookMessage::firing(
                "MlserveRolloutAborted",
                "warning",
                &[
                    ("model", r.model.clone()),
                    ("canary", r.canary.to_string()),
                    ("stable", r.stable.to_string()),
                    ("rollout", r.id.clone()),
                ],
                &format!(
                    "the rollout of {} version {} was aborted",
                    r.model, r.canary
                ),
                reason,
                std::time::SystemTime::now(),
            ));
        }
        tracing::warn!(model = %r.model, canary = r.canary, id = %r.id, %reason, "rollout aborted");
        Ok(())
    }

    /// The model's unfinished rollout (404 without one).
    async fn active(&self, model: &str) -> ServiceResult<(Rollout, i64)> {
        self.parts
            .store
            .list(model, true, 1)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                ServiceError::not_found(format!("model '{model}' has no rollout in progress"))
            })
    }

    /// Holds the rollout at its weight.
    pub async fn pause(&self, model: &str, reason: &str) -> ServiceResult<Rollout> {
        let _moving = self.moving.lock().await;
        let (mut r, last_check) = self.active(model).await?;
        if r.state == states::PROMOTING {
            return Err(ServiceError::conflict("the rollout is already promoting"));
        }
        if r.state != states::PAUSED {
            r.state = states::PAUSED.into();
            r.updated_at_us = now_us();
            self.parts.store.update(&r, last_check).await?;
            self.note(&r, "decision", "", &format!("paused: {reason}"))
                .await;
        }
        Ok(r)
    }

    /// Carries a paused rollout on from its step (the step's time restarts).
    pub async fn resume(&self, model: &str) -> ServiceResult<Rollout> {
        let _moving = self.moving.lock().await;
        let (mut r, _) = self.active(model).await?;
        if r.state != states::PAUSED {
            return Err(ServiceError::conflict(format!(
                "the rollout is {}, not paused",
                r.state
            )));
        }
        let now = now_us();
        r.state = if r.weight == 0 {
            states::WAITING.into()
        } else {
            states::PROGRESSING.into()
        };
        r.step_started_at_us = now;
        r.updated_at_us = now;
        self.parts.store.update(&r, now).await?;
        self.note(&r, "decision", "", "resumed").await;
        Ok(r)
    }

    /// Skips the remaining steps and promotes now.
    pub async fn promote(&self, model: &str) -> ServiceResult<Rollout> {
        let _moving = self.moving.lock().await;
        let (mut r, last_check) = self.active(model).await?;
        r.state = states::PROMOTING.into();
        r.updated_at_us = now_us();
        self.parts.store.update(&r, last_check).await?;
        self.note(&r, "decision", "", "promoted by hand").await;
        let id = r.id.clone();
        self.promote_locked(r).await?;
        self.get(&id).await
    }

    /// Aborts now.
    pub async fn abort(&self, model: &str, reason: &str) -> ServiceResult<Rollout> {
        let _moving = self.moving.lock().await;
        let (r, _) = self.active(model).await?;
        let id = r.id.clone();
        let reason = if reason.trim().is_empty() {
            "aborted by hand".to_string()
        } else {
            format!("aborted by hand: {}", reason.trim())
        };
        self.abort_locked(r, &reason, true).await?;
        self.get(&id).await
    }

    /// A rollout by id.
    pub async fn get(&self, id: &str) -> ServiceResult<Rollout> {
        self.parts
            .store
            .get(id)
            .await?
            .map(|(r, _)| r)
            .ok_or_else(|| ServiceError::not_found(format!("no rollout '{id}'")))
    }

    /// Starts a rollout for an alias move (the trigger alias, moved by
    /// someone other than this role); a rollout in progress for the model
    /// is superseded.
    pub async fn on_alias_moved(&self, model: &str, to: u64, from: Option<u64>, by: &str) {
        let _moving = self.moving.lock().await;
        if let Ok((old, _)) = self.active(model).await {
            if old.canary == to {
                return;
            }
            let reason = format!("superseded: alias moved to version {to}");
            if let Err(err) = self.abort_locked(old, &reason, false).await {
                tracing::warn!(%model, error = %err.message, "cannot supersede the rollout in progress");
                return;
            }
        }
        let request = StartRolloutRequest {
            model: model.to_string(),
            canary: to,
            previous_canary: from.unwrap_or(0),
            ..Default::default()
        };
        let alias = &self.parts.defaults.trigger_alias;
        let started_by = format!("alias '{alias}' moved by {by}");
        let production = self.parts.defaults.production_alias.clone();
        let result = match self.alias(model, &production).await {
            // Nothing is stable yet: the first version becomes it without
            // analysis (Flagger's initialization), there being nothing to
            // compare it with and no traffic to protect.
            Ok(None) => self.initialize(model, to, &started_by).await,
            Ok(Some(_)) => self.start_locked(request, &started_by).await.map(|_| ()),
            Err(err) => Err(err),
        };
        if let Err(err) = result {
            tracing::warn!(%model, version = to, error = %err.message, "alias moved but no rollout started");
        }
    }

    /// The first version of a model: `production` moves to it at once, and
    /// the rollout is recorded as promoted without analysis.
    async fn initialize(&self, model: &str, version: u64, started_by: &str) -> ServiceResult<()> {
        let production = self.parts.defaults.production_alias.clone();
        let now = now_us();
        let mut rollout = Rollout {
            id: format!("{model}-{:08x}", fastrand::u32(..)),
            model: model.to_string(),
            canary: version,
            state: states::PROMOTING.into(),
            weight: 100,
            created_at_us: now,
            updated_at_us: now,
            step_started_at_us: now,
            started_by: started_by.to_string(),
            ..Default::default()
        };
        self.parts.store.insert(&rollout, now).await?;
        self.parts
            .registry
            .set_alias(
                Self::ctx(),
                pb::SetAliasRequest {
                    name: model.to_string(),
                    alias: production.clone(),
                    version,
                    actor: format!("monitoring:{}", rollout.id),
                },
            )
            .await?;
        rollout.state = states::PROMOTED.into();
        rollout.finished_at_us = now_us();
        rollout.reason = format!(
            "first version: '{production}' set to {version} without analysis (no stable version to compare with)"
        );
        self.parts.store.update(&rollout, now).await?;
        self.parts.metrics.finished(model, "promoted");
        self.note(&rollout, "decision", "", &rollout.reason.clone())
            .await;
        self.publish(Event::RolloutPromoted {
            model: model.to_string(),
            version: version as i64,
            at: rollout.finished_at_us,
        })
        .await;
        tracing::info!(%model, version, "first version promoted without analysis");
        Ok(())
    }

    /// Whether every inference process that follows `model` serves
    /// `version` (under any alias). True when no process reports following
    /// it: nothing can be told, so nothing waits.
    fn serves(&self, model: &str, version: u64) -> bool {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let Some(latest) = history.latest() else {
            return false;
        };
        latest.sources.values().all(|source| {
            let mut entries = source
                .followed
                .iter()
                .filter(|((m, _), _)| m == model)
                .peekable();
            entries.peek().is_none() || entries.any(|(_, v)| *v == version)
        })
    }

    async fn split(&self, r: &Rollout, weight: f64) -> ServiceResult<()> {
        self.parts
            .splits
            .apply(
                &r.model,
                CanaryAction::Set {
                    stable: r.stable.to_string(),
                    canary: r.canary.to_string(),
                    weight,
                },
            )
            .await
            .map(|_| ())
            .map_err(ServiceError::from)
    }

    async fn note(&self, r: &Rollout, kind: &str, result: &str, message: &str) {
        if let Err(err) = self.parts.store.record(&r.id, kind, result, message).await {
            tracing::warn!(rollout = %r.id, error = %err.message, "cannot record a rollout event");
        }
    }

    async fn publish(&self, event: Event) {
        if let Err(err) = publish_bounded(self.parts.events.as_ref(), &event).await {
            tracing::warn!(error = %err, "cannot publish a rollout event");
        }
    }
}

/// The thresholds of an analysis (filled), with the server's `p99_ratio_floor`.
pub fn thresholds(a: &Analysis, p99_ratio_floor: Duration) -> Thresholds {
    Thresholds {
        interval: Duration::from_millis(a.interval_ms.max(10) as u64),
        threshold: a.threshold.max(1),
        max_error_rate: a.max_error_rate,
        max_error_rate_increase: a.max_error_rate_increase,
        max_p99: Duration::from_millis(a.max_p99_ms.max(0) as u64),
        max_p99_ratio: a.max_p99_ratio,
        p99_ratio_floor,
        min_requests: a.min_requests,
    }
}

fn humantime_text(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// `10% for 15m, 100%`.
pub fn steps_text(steps: &[RolloutStep]) -> String {
    let mut parts: Vec<String> = steps
        .iter()
        .map(|s| {
            format!(
                "{}% for {}",
                s.weight,
                humantime_text(Duration::from_millis(s.duration_ms.max(0) as u64))
            )
        })
        .collect();
    parts.push("100%".into());
    parts.join(", ")
}

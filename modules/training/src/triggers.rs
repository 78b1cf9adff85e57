//! What submits runs besides the API: cron schedules and events.
//!
//! - Schedules: [`Scheduler::tick`] fires every slot that is due at a given
//!   time (the injectable clock: tests pass fake times). A slot is recorded in
//!   SQL under a unique key before its run is submitted, so it fires at most
//!   once, across restarts and replicas; slots missed while the role was down
//!   follow the schedule's `missed` policy.
//! - Events: `data_arrived` (the feature store's ingest and materialize) and
//!   `drift_detected` (monitoring) submit the workflows whose `triggers`
//!   match, one event run at a time per workflow. An event that arrives while
//!   that run has not started a step yet is absorbed by it (it will read the
//!   new data); one that arrives after it started asks for one follow-up run,
//!   stored in SQL, which every later event joins until it is submitted, when
//!   the run in progress ends (the scheduler's tick submits it). No event's
//!   data is left untrained on, and events never pile up runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mlserve_common::events::{self, Event, EventBus, Subscription};

use crate::cron::{due_slot, Schedule};
use crate::engine::Engine;
use crate::error::Result;
use crate::spec::TriggerSpec;
use crate::store::now_us;

/// How late a slot may fire and still count as on time.
const ON_TIME_US: i64 = 60_000_000;

/// Fires cron schedules.
pub struct Scheduler {
    engine: Arc<Engine>,
    /// When this scheduler began: schedules without a fired slot count
    /// their slots from here (nothing before it is "missed").
    began_us: i64,
}

impl Scheduler {
    /// A scheduler whose history begins at `began_us`.
    pub fn new(engine: Arc<Engine>, began_us: i64) -> Scheduler {
        Scheduler { engine, began_us }
    }

    /// Fires what is due at `now_us`, and the follow-up runs whose event
    /// run ended; returns the runs submitted.
    pub async fn tick(&self, now_us: i64) -> Result<Vec<String>> {
        let mut submitted = submit_followups(&self.engine).await?;
        for workflow in self.engine.store().workflows().await? {
            for (index, spec) in workflow.spec.schedules.iter().enumerate() {
                let Ok(schedule) = Schedule::parse(&spec.cron, &spec.timezone) else {
                    continue;
                };
                let name = &workflow.spec.name;
                let last = self.engine.store().last_slot(name, index as i64).await?;
                let since = last.unwrap_or(self.began_us.max(workflow.created_ts));
                let Some(slot) = due_slot(&schedule, since, now_us, spec.missed, ON_TIME_US) else {
                    continue;
                };
                let claimed = self
                    .engine
                    .store()
                    .claim_slot(name, index as i64, slot, "")
                    .await?;
                if !claimed {
                    continue;
                }
                match self.engine.submit(name, &spec.parameters, "schedule").await {
                    Ok(run) => {
                        tracing::info!(workflow = %name, slot, run = %run.id, "schedule fired");
                        submitted.push(run.id);
                    }
                    Err(err) => {
                        tracing::warn!(workflow = %name, slot, error = %err, "scheduled run refused")
                    }
                }
            }
        }
        Ok(submitted)
    }

    /// Ticks every second until `stop` resolves.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            if let Err(err) = self.tick(now_us()).await {
                tracing::warn!(error = %err, "schedule check failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = &mut stop => return,
            }
        }
    }
}

/// Submits each follow-up run whose workflow has no event run going.
pub async fn submit_followups(engine: &Arc<Engine>) -> Result<Vec<String>> {
    let mut submitted = Vec::new();
    for name in engine.store().followups().await? {
        let busy = engine
            .store()
            .runs(Some(&name), 20)
            .await?
            .iter()
            .any(|r| r.trigger == "event" && !r.state.is_terminal());
        if busy {
            continue;
        }
        let Some(parameters) = engine.store().take_followup(&name).await? else {
            continue;
        };
        submitted.extend(submit_event_run(engine, &name, &parameters, "follow-up run").await);
    }
    Ok(submitted)
}

/// Submits an event run of `workflow`; its id, or none when refused
/// (logged with `what`).
async fn submit_event_run(
    engine: &Arc<Engine>,
    workflow: &str,
    parameters: &BTreeMap<String, crate::spec::Scalar>,
    what: &str,
) -> Option<String> {
    match engine.submit(workflow, parameters, "event").await {
        Ok(run) => {
            tracing::info!(%workflow, run = %run.id, "{what} submitted");
            Some(run.id)
        }
        Err(err) => {
            tracing::warn!(%workflow, error = %err, "{what} refused");
            None
        }
    }
}

/// Whether `trigger` asks for a run on `event`.
pub fn matches(trigger: &TriggerSpec, event: &Event) -> bool {
    let (name, subject) = match event {
        Event::DataArrived { feature_view, .. } => ("data_arrived", feature_view.as_str()),
        Event::DriftDetected { model, .. } => ("drift_detected", model.as_str()),
        _ => return false,
    };
    trigger.event == name && trigger.filter.as_deref().is_none_or(|f| f == subject)
}

/// Submits the workflows whose triggers match `event`; returns the runs.
pub async fn on_event(engine: &Arc<Engine>, event: &Event) -> Result<Vec<String>> {
    let mut submitted = Vec::new();
    for workflow in engine.store().workflows().await? {
        let Some(trigger) = workflow.spec.triggers.iter().find(|t| matches(t, event)) else {
            continue;
        };
        let name = &workflow.spec.name;
        let parameters: BTreeMap<_, _> = trigger.parameters.clone();
        let runs = engine.store().runs(Some(name), 20).await?;
        if let Some(busy) = runs
            .iter()
            .find(|r| r.trigger == "event" && !r.state.is_terminal())
        {
            if busy.started_ts.is_none() {
                tracing::info!(workflow = %name, run = %busy.id, "event absorbed by the run not started yet");
            } else if engine.store().request_followup(name, &parameters).await? {
                tracing::info!(workflow = %name, run = %busy.id, "event arrived mid-run: a follow-up run will start when it ends");
            } else {
                tracing::info!(workflow = %name, "event joined the follow-up run already asked for");
            }
            continue;
        }
        submitted.extend(submit_event_run(engine, name, &parameters, "event-triggered run").await);
    }
    Ok(submitted)
}

/// Subscribes the training role to the data and monitoring topics.
pub async fn subscribe(
    engine: Arc<Engine>,
    bus: &Arc<dyn EventBus>,
) -> std::result::Result<Vec<Subscription>, events::EventError> {
    let mut subscriptions = Vec::new();
    for topic in [events::DATA_TOPIC, events::MONITORING_TOPIC] {
        let engine = engine.clone();
        let handler = events::handler(move |event: Event| {
            let engine = engine.clone();
            async move {
                on_event(&engine, &event)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        });
        subscriptions.push(bus.subscribe(topic, "training", handler).await?);
    }
    Ok(subscriptions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_toml;

    const MIN: i64 = 60_000_000;

    async fn engine(dir: &std::path::Path) -> Arc<Engine> {
        crate::engine::test_engine(dir, Arc::new(crate::executor::LocalExecutor)).await
    }

    fn workflow(name: &str, missed: &str) -> crate::spec::WorkflowSpec {
        parse_toml(&format!(
            r#"
            name = "{name}"
            [[schedules]]
            cron = "*/5 * * * *"
            missed = "{missed}"
            [[steps]]
            name = "a"
            command = ["true"]
            "#
        ))
        .unwrap()
    }

    /// A five-minute slot boundary at least ten minutes from now, so the
    /// workflows' real creation times are before every fake time.
    fn base() -> i64 {
        let slot = 5 * MIN;
        (now_us() / slot + 2) * slot
    }

    #[tokio::test]
    async fn a_slot_fires_once_and_never_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path()).await;
        engine.apply(&workflow("every5", "skip")).await.unwrap();
        let t0 = base();
        let first = Scheduler::new(engine.clone(), t0 - 4 * MIN);
        assert!(first.tick(t0 - 1).await.unwrap().is_empty());
        assert_eq!(first.tick(t0).await.unwrap().len(), 1);
        assert!(first.tick(t0 + MIN / 2).await.unwrap().is_empty());
        // A restart in the same slot: the slot is recorded, nothing fires.
        let restarted = Scheduler::new(engine.clone(), t0 + MIN);
        assert!(restarted.tick(t0 + MIN).await.unwrap().is_empty());
        assert_eq!(restarted.tick(t0 + 5 * MIN).await.unwrap().len(), 1);
        // Two schedulers (replicas) at the same slot: one run between them.
        let other = Scheduler::new(engine.clone(), t0);
        let a = restarted.tick(t0 + 10 * MIN).await.unwrap().len();
        let b = other.tick(t0 + 10 * MIN).await.unwrap().len();
        assert_eq!(a + b, 1);
        let runs = engine.store().runs(Some("every5"), 10).await.unwrap();
        assert_eq!(runs.len(), 3);
        assert!(runs.iter().all(|r| r.trigger == "schedule"));
    }

    #[tokio::test]
    async fn slots_missed_while_down_follow_the_policy() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path()).await;
        engine.apply(&workflow("skipper", "skip")).await.unwrap();
        engine
            .apply(&workflow("catcher", "run_once"))
            .await
            .unwrap();
        let t0 = base();
        let before = Scheduler::new(engine.clone(), t0 - MIN);
        assert_eq!(before.tick(t0).await.unwrap().len(), 2);
        // Down for an hour, back two minutes after a slot.
        let after = Scheduler::new(engine.clone(), t0 + 62 * MIN);
        let fired = after.tick(t0 + 62 * MIN).await.unwrap();
        assert_eq!(fired.len(), 1);
        assert!(fired[0].starts_with("catcher-"));
        assert!(after.tick(t0 + 63 * MIN).await.unwrap().is_empty());
    }

    fn data() -> Event {
        Event::DataArrived {
            feature_view: "labels".into(),
            rows: 10,
            source: "ingest".into(),
            newest_event: None,
            at: 0,
        }
    }

    #[tokio::test]
    async fn events_mid_run_coalesce_into_one_follow_up_run() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path()).await;
        let spec = parse_toml(
            r#"
            name = "retrain"
            [[triggers]]
            event = "data_arrived"
            [[steps]]
            name = "train"
            command = ["sleep", "3"]
            "#,
        )
        .unwrap();
        engine.apply(&spec).await.unwrap();
        let first = on_event(&engine, &data()).await.unwrap();
        assert_eq!(first.len(), 1);
        // Until its step starts, the run absorbs events: it reads the data.
        let store = engine.store().clone();
        let started = || async {
            store.runs(Some("retrain"), 10).await.unwrap()[0]
                .started_ts
                .is_some()
        };
        for _ in 0..3000 {
            if started().await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(started().await, "the run never started");
        // Three events mid-run: no new run now, one follow-up asked for.
        for _ in 0..3 {
            assert!(on_event(&engine, &data()).await.unwrap().is_empty());
        }
        assert_eq!(
            store.followups().await.unwrap(),
            vec!["retrain".to_string()]
        );
        assert!(
            submit_followups(&engine).await.unwrap().is_empty(),
            "not while it runs"
        );
        for _ in 0..500 {
            if store.runs(Some("retrain"), 10).await.unwrap()[0]
                .state
                .is_terminal()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let followed = submit_followups(&engine).await.unwrap();
        assert_eq!(followed.len(), 1, "one follow-up for the three events");
        assert!(submit_followups(&engine).await.unwrap().is_empty());
        assert!(store.followups().await.unwrap().is_empty());
        let runs = store.runs(Some("retrain"), 10).await.unwrap();
        assert_eq!(runs.len(), 2);
        assert!(runs.iter().all(|r| r.trigger == "event"));
    }

    #[test]
    fn triggers_match_their_event_and_filter() {
        let trigger = |event: &str, filter: Option<&str>| TriggerSpec {
            event: event.into(),
            filter: filter.map(str::to_string),
            parameters: BTreeMap::new(),
        };
        let data = Event::DataArrived {
            feature_view: "churn".into(),
            rows: 10,
            source: "ingest".into(),
            newest_event: None,
            at: 0,
        };
        assert!(matches(&trigger("data_arrived", None), &data));
        assert!(matches(&trigger("data_arrived", Some("churn")), &data));
        assert!(!matches(&trigger("data_arrived", Some("other")), &data));
        assert!(!matches(&trigger("drift_detected", None), &data));
    }
}

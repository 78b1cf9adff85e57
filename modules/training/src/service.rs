//! The `TrainingService` contract over the engine.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use mlserve_proto::training::*;
use mlserve_proto::{CallContext, ServiceResult};

use crate::engine::Engine;
use crate::error::TrainingError;
use crate::spec::{self, Scalar};
use crate::state::StepState;
use crate::store::{RunRow, StepRow, WorkflowRow};

/// Most bytes one `ReadLogs` returns.
const MAX_LOG_CHUNK: u64 = 1 << 20;

/// The training role's implementation of the contract.
#[derive(Clone)]
pub struct LocalTraining {
    engine: Arc<Engine>,
}

impl LocalTraining {
    /// Wraps an engine.
    pub fn new(engine: Arc<Engine>) -> LocalTraining {
        LocalTraining { engine }
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    async fn run_message(&self, run: RunRow) -> ServiceResult<Run> {
        let store = self.engine.store();
        let steps = store.steps(&run.id).await?;
        let spec = self.engine.spec_of(&run).await?;
        let mut out = run_summary(run.clone());
        for template in spec.steps.iter().chain(spec.on_exit.iter()) {
            let instances: Vec<&StepRow> = steps
                .iter()
                .filter(|s| s.template == template.name)
                .collect();
            if instances.is_empty() {
                out.steps.push(Step {
                    name: template.name.clone(),
                    template: template.name.clone(),
                    state: StepState::Pending.as_str().into(),
                    dependencies: template.dependencies.clone(),
                    ..Default::default()
                });
            }
            for step in instances {
                out.steps.push(step_message(step, &template.dependencies));
            }
        }
        out.artifacts = store
            .artifacts(&run.id)
            .await?
            .into_iter()
            .map(|a| Artifact {
                step: a.step,
                name: a.name,
                key: a.object_key,
                sha256: a.sha256,
                size: a.size,
            })
            .collect();
        out.metrics = store
            .metrics(&run.id)
            .await?
            .into_iter()
            .map(|(step, name, value)| Metric { step, name, value })
            .collect();
        Ok(out)
    }
}

fn run_summary(run: RunRow) -> Run {
    Run {
        id: run.id,
        workflow: run.workflow,
        workflow_version: run.workflow_version,
        state: run.state.as_str().into(),
        parameters: run.parameters.into_iter().collect(),
        trigger: run.trigger,
        message: run.message,
        created_at_us: run.created_ts,
        started_at_us: run.started_ts.unwrap_or(0),
        finished_at_us: run.finished_ts.unwrap_or(0),
        owner: run.owner,
        ..Default::default()
    }
}

fn step_message(step: &StepRow, dependencies: &[String]) -> Step {
    Step {
        name: step.name.clone(),
        template: step.template.clone(),
        state: step.state.as_str().into(),
        attempt: step.attempt,
        started_at_us: step.started_ts.unwrap_or(0),
        finished_at_us: step.finished_ts.unwrap_or(0),
        exit_code: step.exit_code,
        message: step.message.clone(),
        outputs: step.outputs.clone().into_iter().collect(),
        dependencies: dependencies.to_vec(),
        item: step.item.clone().unwrap_or_default(),
        next_attempt_at_us: step.next_attempt_ts.unwrap_or(0),
    }
}

fn workflow_message(row: WorkflowRow) -> Workflow {
    Workflow {
        name: row.spec.name.clone(),
        version: row.version,
        description: row.spec.description.clone(),
        spec_json: serde_json::to_string(&row.spec).unwrap_or_default(),
        created_at_us: row.created_ts,
        steps: row
            .spec
            .steps
            .iter()
            .map(|s| {
                if s.dependencies.is_empty() {
                    s.name.clone()
                } else {
                    format!("{}<-{}", s.name, s.dependencies.join(","))
                }
            })
            .collect(),
    }
}

#[async_trait]
impl TrainingService for LocalTraining {
    async fn apply_workflow(
        &self,
        _ctx: CallContext,
        request: ApplyWorkflowRequest,
    ) -> ServiceResult<ApplyWorkflowResponse> {
        let spec = match request.format.as_str() {
            "" | "toml" => spec::parse_toml(&request.text),
            "yaml" | "yml" => spec::parse_yaml(&request.text),
            other => {
                return Err(TrainingError::Invalid(format!(
                    "format must be toml or yaml, not '{other}'"
                ))
                .into())
            }
        }
        .map_err(|e| TrainingError::Spec(crate::validate::SpecError::Syntax(e)))?;
        let (version, created) = self.engine.apply(&spec).await?;
        tracing::info!(workflow = %spec.name, version, created, "workflow applied");
        Ok(ApplyWorkflowResponse {
            name: spec.name,
            version,
            created,
        })
    }

    async fn list_workflows(
        &self,
        _ctx: CallContext,
        _request: ListWorkflowsRequest,
    ) -> ServiceResult<ListWorkflowsResponse> {
        let rows = self.engine.store().workflows().await?;
        Ok(ListWorkflowsResponse {
            workflows: rows.into_iter().map(workflow_message).collect(),
        })
    }

    async fn get_workflow(
        &self,
        _ctx: CallContext,
        request: GetWorkflowRequest,
    ) -> ServiceResult<Workflow> {
        let version = (request.version > 0).then_some(request.version);
        let row = self
            .engine
            .store()
            .workflow(&request.name, version)
            .await?
            .ok_or_else(|| TrainingError::NotFound(format!("no workflow '{}'", request.name)))?;
        Ok(workflow_message(row))
    }

    async fn submit_run(&self, _ctx: CallContext, request: SubmitRunRequest) -> ServiceResult<Run> {
        let parameters: BTreeMap<String, Scalar> = request
            .parameters
            .into_iter()
            .map(|(k, v)| (k, Scalar::Text(v)))
            .collect();
        let run = self
            .engine
            .submit(&request.workflow, &parameters, "api")
            .await?;
        self.run_message(run).await
    }

    async fn list_runs(
        &self,
        _ctx: CallContext,
        request: ListRunsRequest,
    ) -> ServiceResult<ListRunsResponse> {
        let limit = if request.limit == 0 {
            50
        } else {
            request.limit.min(1000)
        };
        let workflow = (!request.workflow.is_empty()).then_some(request.workflow.as_str());
        let runs = self.engine.store().runs(workflow, i64::from(limit)).await?;
        Ok(ListRunsResponse {
            runs: runs.into_iter().map(run_summary).collect(),
        })
    }

    async fn get_run(&self, _ctx: CallContext, request: GetRunRequest) -> ServiceResult<Run> {
        let run = self.engine.store().run(&request.id).await?;
        self.run_message(run).await
    }

    async fn cancel_run(&self, _ctx: CallContext, request: RunRequest) -> ServiceResult<Run> {
        let run = self.engine.cancel(&request.id).await?;
        self.run_message(run).await
    }

    async fn retry_run(&self, _ctx: CallContext, request: RunRequest) -> ServiceResult<Run> {
        let run = self.engine.retry(&request.id).await?;
        self.run_message(run).await
    }

    async fn read_logs(
        &self,
        _ctx: CallContext,
        request: LogsRequest,
    ) -> ServiceResult<LogsResponse> {
        let stream = match request.stream.as_str() {
            "" | "stdout" => "stdout",
            "stderr" => "stderr",
            other => {
                return Err(TrainingError::Invalid(format!(
                    "stream must be stdout or stderr, not '{other}'"
                ))
                .into())
            }
        };
        let max = match u64::from(request.max_bytes) {
            0 => MAX_LOG_CHUNK,
            n => n.min(MAX_LOG_CHUNK),
        };
        let logs = crate::logs::read(
            &self.engine,
            &request.run,
            &request.step,
            stream,
            request.offset,
            max,
        )
        .await?;
        Ok(logs)
    }
}

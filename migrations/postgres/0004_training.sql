-- Training: workflow definitions (every version kept), runs, their step
-- instances, artifacts and metrics, and the cron slots already fired.
CREATE TABLE training_workflows (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    spec TEXT NOT NULL,            -- JSON
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE training_runs (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    workflow_version BIGINT NOT NULL,
    state TEXT NOT NULL,           -- pending | running | succeeded | failed | cancelled
    parameters TEXT NOT NULL,      -- JSON object: name -> value
    trigger_kind TEXT NOT NULL,    -- api | schedule | event | retry
    owner TEXT NOT NULL,           -- the training node that drives it
    message TEXT NOT NULL,
    cancel_requested INTEGER NOT NULL,
    created_ts BIGINT NOT NULL,
    started_ts BIGINT,
    finished_ts BIGINT
);
CREATE INDEX training_runs_state ON training_runs (state);
CREATE INDEX training_runs_workflow ON training_runs (workflow, created_ts);

CREATE TABLE training_steps (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,            -- instance: the step, or step(i) for fan-out
    template TEXT NOT NULL,        -- the step of the workflow
    idx BIGINT NOT NULL,           -- fan-out index (0 otherwise)
    item TEXT,                     -- fan-out value
    state TEXT NOT NULL,           -- pending | running | succeeded | failed | retrying | skipped | cancelled
    attempt BIGINT NOT NULL,
    next_attempt_ts BIGINT,
    started_ts BIGINT,
    finished_ts BIGINT,
    exit_code BIGINT,
    message TEXT NOT NULL,
    outputs TEXT NOT NULL,         -- JSON object: output parameter -> value
    pgid BIGINT,                   -- process group of the running attempt
    proc_start BIGINT,             -- its leader's start time (/proc), against pid reuse
    PRIMARY KEY (run_id, name)
);

CREATE TABLE training_artifacts (
    run_id TEXT NOT NULL,
    step TEXT NOT NULL,
    name TEXT NOT NULL,
    object_key TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (run_id, step, name)
);

CREATE TABLE training_metrics (
    run_id TEXT NOT NULL,
    step TEXT NOT NULL,
    name TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, step, name)
);

CREATE TABLE training_schedule_slots (
    workflow TEXT NOT NULL,
    schedule BIGINT NOT NULL,
    slot_ts BIGINT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (workflow, schedule, slot_ts)
);

-- Monitoring: rollouts (one unfinished per model) and every step, check and
-- decision recorded for each.
CREATE TABLE monitoring_rollouts (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    stable BIGINT NOT NULL,          -- 0: none
    canary BIGINT NOT NULL,
    previous_canary BIGINT NOT NULL, -- where the canary alias was; 0: nowhere
    state TEXT NOT NULL,             -- waiting | progressing | paused | promoting | promoted | aborted
    step BIGINT NOT NULL,
    steps TEXT NOT NULL,             -- JSON: [{"weight": 10, "duration_ms": 900000}]
    analysis TEXT NOT NULL,          -- JSON: the thresholds
    weight BIGINT NOT NULL,
    failed_checks BIGINT NOT NULL,
    reason TEXT NOT NULL,
    started_by TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    updated_ts BIGINT NOT NULL,
    step_started_ts BIGINT NOT NULL,
    last_check_ts BIGINT NOT NULL,
    finished_ts BIGINT
);
CREATE UNIQUE INDEX monitoring_rollouts_one_active ON monitoring_rollouts (model) WHERE finished_ts IS NULL;
CREATE INDEX monitoring_rollouts_model ON monitoring_rollouts (model, created_ts);

CREATE TABLE monitoring_rollout_records (
    rollout_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at_ts BIGINT NOT NULL,
    kind TEXT NOT NULL,              -- step | check | decision | note
    result TEXT NOT NULL,            -- a check's pass | fail | inconclusive
    message TEXT NOT NULL,
    PRIMARY KEY (rollout_id, seq)
);

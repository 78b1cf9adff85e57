-- Training: one pending follow-up run per workflow, for the events that
-- arrived while an event-triggered run of it was already reading its data.
CREATE TABLE training_followups (
    workflow TEXT PRIMARY KEY,
    parameters TEXT NOT NULL,      -- JSON object: the trigger's parameters
    requested_ts BIGINT NOT NULL
);

-- Feature store: definitions (every version kept), the append-only offline
-- store, materialization watermarks, and the staging rows of point-in-time joins.
CREATE TABLE feature_definitions (
    kind TEXT NOT NULL,            -- entity | feature_view | pipeline
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    spec TEXT NOT NULL,            -- JSON
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (kind, name, version)
);

CREATE TABLE feature_rows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    view TEXT NOT NULL,
    entity_key TEXT NOT NULL,      -- JSON array of the join key values
    event_ts BIGINT NOT NULL,
    created_ts BIGINT NOT NULL,
    vals TEXT NOT NULL             -- JSON object: feature -> value
);
CREATE INDEX feature_rows_lookup ON feature_rows (view, entity_key, event_ts);
CREATE INDEX feature_rows_time ON feature_rows (view, event_ts);

CREATE TABLE feature_materializations (
    view TEXT PRIMARY KEY,
    last_end_ts BIGINT NOT NULL,
    updated_ts BIGINT NOT NULL
);

CREATE TABLE feature_history_requests (
    request_id TEXT NOT NULL,
    row_idx BIGINT NOT NULL,
    view TEXT NOT NULL,
    entity_key TEXT NOT NULL,
    ts BIGINT NOT NULL,
    min_ts BIGINT NOT NULL,
    PRIMARY KEY (request_id, row_idx, view)
);

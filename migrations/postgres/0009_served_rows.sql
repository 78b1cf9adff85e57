-- Features: the request log. Rows of served requests the gateways sampled
-- (a model version's input feature vector and its prediction), read by the
-- monitoring role's drift analysis.
CREATE TABLE served_rows (
    id BIGSERIAL PRIMARY KEY,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    served_ts BIGINT NOT NULL,
    features TEXT NOT NULL,        -- JSON object: feature -> number
    prediction TEXT NOT NULL       -- JSON object: output -> number
);
CREATE INDEX served_rows_version_time ON served_rows (model, version, served_ts);
CREATE INDEX served_rows_time ON served_rows (served_ts);

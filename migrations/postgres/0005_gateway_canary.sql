-- Canary splits, shared by every gateway replica (each refreshes its copy).
CREATE TABLE gateway_canary (
    model TEXT PRIMARY KEY,
    stable TEXT NOT NULL,
    canary TEXT NOT NULL,
    weight DOUBLE PRECISION NOT NULL,
    updated_at BIGINT NOT NULL
);

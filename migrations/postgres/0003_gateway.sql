-- Gateway API keys. The secret is never stored: `hash` is hex(sha256(salt || secret)).
CREATE TABLE gateway_api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    salt TEXT NOT NULL,
    hash TEXT NOT NULL,
    rate DOUBLE PRECISION NOT NULL,
    burst DOUBLE PRECISION NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX gateway_api_keys_name ON gateway_api_keys (name);

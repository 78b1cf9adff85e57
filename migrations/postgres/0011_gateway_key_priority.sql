-- The scheduling priority an API key gives its requests (Triton's request
-- priority: 1 is the highest level, larger numbers are lower; 0 leaves the
-- request's own priority, or the model's default level).
ALTER TABLE gateway_api_keys ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;

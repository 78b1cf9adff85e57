-- What each API key may do: scopes separated by spaces. Keys made before
-- scopes existed keep the data-plane scopes they effectively had.
ALTER TABLE gateway_api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT 'infer predict';

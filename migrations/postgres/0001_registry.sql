-- The registry: registered models, their tags, versions, files, aliases and
-- the history of alias moves. Times are microseconds since the Unix epoch.
CREATE TABLE registry_models (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE registry_model_tags (
    model TEXT NOT NULL REFERENCES registry_models(name) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (model, key)
);

-- status: pending_upload | ready | failed. Only ready rows are visible.
-- storage_prefix: the immutable object-store prefix of this upload's files.
CREATE TABLE registry_versions (
    model TEXT NOT NULL REFERENCES registry_models(name) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    status TEXT NOT NULL,
    status_message TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    lineage TEXT NOT NULL DEFAULT '{}',
    metrics TEXT NOT NULL DEFAULT '{}',
    tags TEXT NOT NULL DEFAULT '{}',
    storage_prefix TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (model, version)
);
CREATE INDEX registry_versions_status ON registry_versions (status, created_at);

CREATE TABLE registry_files (
    model TEXT NOT NULL,
    version BIGINT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    object_key TEXT NOT NULL,
    PRIMARY KEY (model, version, path),
    FOREIGN KEY (model, version) REFERENCES registry_versions(model, version) ON DELETE CASCADE
);

CREATE TABLE registry_aliases (
    model TEXT NOT NULL REFERENCES registry_models(name) ON DELETE CASCADE,
    alias TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (model, alias),
    FOREIGN KEY (model, version) REFERENCES registry_versions(model, version) ON DELETE CASCADE
);

-- from_version NULL: the alias was created; to_version NULL: it was deleted.
CREATE TABLE registry_alias_history (
    id BIGSERIAL PRIMARY KEY,
    model TEXT NOT NULL REFERENCES registry_models(name) ON DELETE CASCADE,
    alias TEXT NOT NULL,
    from_version BIGINT,
    to_version BIGINT,
    actor TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX registry_alias_history_model ON registry_alias_history (model, alias, id);

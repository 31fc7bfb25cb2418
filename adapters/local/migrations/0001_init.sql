-- Wharf's local store. Each entity is one row: the columns needed for keys, filters and
-- ordering, plus `doc`, the entity's JSON. Ids are UUIDv7-based text, so `ORDER BY id` is
-- creation order. Tenant ids carry no foreign key: a vendor's admin user is created before
-- the vendor row, and the document store (DynamoDB) cannot enforce one either.

CREATE TABLE vendors (
    id     TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    doc    TEXT NOT NULL
) STRICT;
CREATE INDEX vendors_by_status ON vendors (status, id);

CREATE TABLE subscribers (
    id  TEXT PRIMARY KEY,
    doc TEXT NOT NULL
) STRICT;

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    secret_digest TEXT NOT NULL,
    doc           TEXT NOT NULL
) STRICT;
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, id);

CREATE TABLE sources (
    id        TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    doc       TEXT NOT NULL
) STRICT;
CREATE INDEX sources_by_tenant ON sources (tenant_id, id);

-- `name_folded` / `description_folded` are lowercased in Rust (full Unicode), because
-- SQLite's LIKE and lower() only fold ASCII.
CREATE TABLE feeds (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL,
    source_id          TEXT NOT NULL REFERENCES sources (id),
    status             TEXT NOT NULL,
    visibility         TEXT NOT NULL,
    name_folded        TEXT NOT NULL,
    description_folded TEXT NOT NULL,
    revision           INTEGER NOT NULL,
    doc                TEXT NOT NULL
) STRICT;
CREATE INDEX feeds_by_tenant ON feeds (tenant_id, id);
CREATE INDEX feeds_by_source ON feeds (tenant_id, source_id);
CREATE INDEX feeds_in_catalog ON feeds (status, visibility, id);

CREATE TABLE subscriptions (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    feed_id       TEXT NOT NULL REFERENCES feeds (id),
    subscriber_id TEXT NOT NULL,
    revision      INTEGER NOT NULL,
    doc           TEXT NOT NULL
) STRICT;
CREATE INDEX subscriptions_by_feed ON subscriptions (tenant_id, feed_id, id);
CREATE INDEX subscriptions_by_subscriber ON subscriptions (subscriber_id, id);

-- `position` keeps the caller's order (newest first).
CREATE TABLE signing_secrets (
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    position        INTEGER NOT NULL,
    doc             TEXT NOT NULL,
    PRIMARY KEY (subscription_id, position)
) STRICT, WITHOUT ROWID;

CREATE TABLE reference_rows (
    tenant_id  TEXT NOT NULL,
    table_name TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, table_name, key)
) STRICT, WITHOUT ROWID;

-- A row without `status` is a reservation of a request still running.
CREATE TABLE idempotency (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status      INTEGER,
    body        BLOB,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (scope, key)
) STRICT, WITHOUT ROWID;

-- Used by the local identity adapter.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    roles         TEXT NOT NULL, -- JSON array of role strings
    tenant_id     TEXT,
    created_at    TEXT NOT NULL  -- RFC 3339
) STRICT;

CREATE TABLE refresh_tokens (
    digest     TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL -- unix seconds
) STRICT;
CREATE INDEX refresh_tokens_by_user ON refresh_tokens (user_id);

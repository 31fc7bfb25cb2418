-- Records, the change feed, delivery state and usage. Times in this migration are INTEGER
-- unix microseconds (UTC), so ranges compare and index as numbers.
--
-- Record tables are ROWID tables whose rowid is the record's `position`: the change feed and
-- delivery cursors are positions. The single writer connection commits one transaction at a
-- time, so positions become visible in increasing order and a reader never sees position
-- N + 1 before N. AUTOINCREMENT keeps a deleted newest row's position from being handed out
-- again, which would otherwise hide the next record from a cursor already past it.

CREATE TABLE raw_records (
    position    INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    tenant_id   TEXT NOT NULL,
    source_id   TEXT NOT NULL,
    external_id TEXT,
    ts          INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    data        TEXT NOT NULL
) STRICT;
CREATE INDEX raw_records_by_source_ts ON raw_records (source_id, ts);
CREATE INDEX raw_records_by_expiry ON raw_records (expires_at);

-- How far each change-feed consumer has durably processed `raw_records`.
CREATE TABLE consumer_positions (
    consumer TEXT PRIMARY KEY,
    position INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE output_records (
    position         INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    tenant_id        TEXT NOT NULL,
    feed_id          TEXT NOT NULL,
    pipeline_version INTEGER NOT NULL,
    ts               INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    data             TEXT NOT NULL
) STRICT;
CREATE INDEX output_records_by_feed ON output_records (feed_id, position);
CREATE INDEX output_records_by_feed_ts ON output_records (feed_id, ts);
CREATE INDEX output_records_by_expiry ON output_records (expires_at);

-- Append-only; `seq` orders the list (newest first) and is its cursor.
CREATE TABLE feed_errors (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    feed_id   TEXT NOT NULL,
    doc       TEXT NOT NULL
) STRICT;
CREATE INDEX feed_errors_by_feed ON feed_errors (tenant_id, feed_id, seq);

-- The delivery worker lists active subscriptions across tenants; the status lives in `doc`.
CREATE INDEX subscriptions_active ON subscriptions (id)
    WHERE json_extract(doc, '$.status') = 'active';

-- The output position each subscription has delivered up to. Subscriptions created before
-- this migration start at 0, which is their feed's head: no output records existed yet.
CREATE TABLE delivery_positions (
    subscription_id TEXT PRIMARY KEY REFERENCES subscriptions (id),
    tenant_id       TEXT NOT NULL,
    feed_id         TEXT NOT NULL,
    position        INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO delivery_positions (subscription_id, tenant_id, feed_id, position)
    SELECT id, tenant_id, feed_id, 0 FROM subscriptions;

-- Deliveries waiting for their next attempt; the row is also the "counted once" mark: an
-- acknowledgement counts only if it is the one that deletes the row.
CREATE TABLE pending_deliveries (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    doc             TEXT NOT NULL
) STRICT;
CREATE INDEX pending_deliveries_by_due ON pending_deliveries (next_attempt_at, id);

-- Append-only delivery log; `seq` orders the list (newest first) and is its cursor.
CREATE TABLE delivery_attempts (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id       TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    status          TEXT NOT NULL,
    doc             TEXT NOT NULL
) STRICT;
CREATE INDEX delivery_attempts_by_subscription
    ON delivery_attempts (tenant_id, subscription_id, seq);
CREATE INDEX delivery_attempts_by_status
    ON delivery_attempts (tenant_id, subscription_id, status, seq);

-- Acknowledged deliveries per subscription and UTC hour (`hour` is the hour's start).
CREATE TABLE usage (
    subscription_id TEXT NOT NULL,
    hour            INTEGER NOT NULL,
    tenant_id       TEXT NOT NULL,
    subscriber_id   TEXT NOT NULL,
    count           INTEGER NOT NULL,
    PRIMARY KEY (subscription_id, hour)
) STRICT, WITHOUT ROWID;
CREATE INDEX usage_by_tenant ON usage (tenant_id, subscription_id, hour);
CREATE INDEX usage_by_subscriber ON usage (subscriber_id, subscription_id, hour);

-- Raw records are deduplicated by the key the vendor sends, `(source_id, external_id)`,
-- instead of by the id derived from it. The derived id is a hash, so a unique index on it
-- takes inserts at random places: every record of a batch dirtied its own index page and the
-- commit wrote them all to the WAL, which cost about two thirds of the ingest rate. Vendors'
-- ids usually grow (sequence numbers, timestamps), so this index is appended to. Records sent
-- without an id have a NULL `external_id`; NULLs never conflict, and their ids are fresh v7
-- ids. Raw records are never looked up by id.
CREATE TABLE raw_records_new (
    position    INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL,
    tenant_id   TEXT NOT NULL,
    source_id   TEXT NOT NULL,
    external_id TEXT,
    ts          INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    data        TEXT NOT NULL
) STRICT;
INSERT INTO raw_records_new SELECT * FROM raw_records ORDER BY position;
-- The sequence must stay past the highest position ever handed out, even one since deleted.
CREATE TEMP TABLE raw_sequence AS
    SELECT seq FROM sqlite_sequence WHERE name = 'raw_records';
DROP TABLE raw_records;
ALTER TABLE raw_records_new RENAME TO raw_records;
DELETE FROM sqlite_sequence WHERE name IN ('raw_records', 'raw_records_new');
INSERT INTO sqlite_sequence (name, seq) SELECT 'raw_records', seq FROM temp.raw_sequence;
DROP TABLE temp.raw_sequence;
CREATE UNIQUE INDEX raw_records_dedup ON raw_records (source_id, external_id);
CREATE INDEX raw_records_by_source_ts ON raw_records (source_id, ts);
CREATE INDEX raw_records_by_expiry ON raw_records (expires_at);

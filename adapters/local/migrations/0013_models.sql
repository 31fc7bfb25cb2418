-- The model registry: one row per version of a vendor's model (the file itself lives in the
-- object store under a key derived from its SHA-256).
CREATE TABLE model_versions (
    vendor_id TEXT NOT NULL,
    name      TEXT NOT NULL,
    version   INTEGER NOT NULL,
    doc       TEXT NOT NULL,
    PRIMARY KEY (vendor_id, name, version)
) STRICT, WITHOUT ROWID;

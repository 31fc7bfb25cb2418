-- Refresh tokens rotate within a family; a used token is kept (marked) until it expires, so
-- presenting it again is seen as reuse and revokes the whole family.
ALTER TABLE refresh_tokens ADD COLUMN family TEXT NOT NULL DEFAULT '';
ALTER TABLE refresh_tokens ADD COLUMN used INTEGER NOT NULL DEFAULT 0;
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family);

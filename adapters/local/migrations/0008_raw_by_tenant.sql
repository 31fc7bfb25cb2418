-- Each tenant reads its own raw records in order (the processor's per-tenant lanes).
CREATE INDEX raw_records_by_tenant ON raw_records (tenant_id, position);

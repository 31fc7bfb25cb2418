-- Billing: one row per closed (or closing) month, invoices with a row per billed usage
-- quantity (so late usage can be compared with what was billed), and payouts.
CREATE TABLE billing_runs (
    period TEXT PRIMARY KEY,
    doc    TEXT NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE invoices (
    id            TEXT PRIMARY KEY,
    period        TEXT NOT NULL,
    vendor_id     TEXT NOT NULL,
    subscriber_id TEXT NOT NULL,
    status        TEXT NOT NULL,
    doc           TEXT NOT NULL
) STRICT;
CREATE INDEX invoices_by_vendor ON invoices (vendor_id, id);
CREATE INDEX invoices_by_subscriber ON invoices (subscriber_id, id);
CREATE INDEX invoices_by_period ON invoices (period, id);

-- Deliveries billed per subscription and service month, from usage and adjustment lines.
CREATE TABLE billed_usage (
    invoice_id      TEXT NOT NULL REFERENCES invoices (id),
    subscription_id TEXT NOT NULL,
    service_period  TEXT NOT NULL,
    deliveries      INTEGER NOT NULL
) STRICT;
CREATE INDEX billed_usage_by_subscription ON billed_usage (subscription_id, service_period);

CREATE TABLE payouts (
    id        TEXT PRIMARY KEY,
    vendor_id TEXT NOT NULL,
    period    TEXT NOT NULL,
    doc       TEXT NOT NULL
) STRICT;
CREATE INDEX payouts_by_period ON payouts (period, vendor_id);

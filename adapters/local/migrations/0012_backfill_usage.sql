-- Backfill deliveries (history bought with a subscription) are counted beside the month's
-- deliveries: they are rated on an invoice line of their own.
ALTER TABLE usage ADD COLUMN backfill INTEGER NOT NULL DEFAULT 0;

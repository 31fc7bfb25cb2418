-- A billing run reads what was billed for a service month across all subscriptions at once.
CREATE INDEX billed_usage_by_period ON billed_usage (service_period, subscription_id);
-- Nothing reads billed usage by subscription any more.
DROP INDEX billed_usage_by_subscription;

-- The payment processor's customer of each subscriber, created once.
CREATE TABLE payment_customers (
    subscriber_id TEXT PRIMARY KEY,
    customer_id   TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- Each vendor's connected account at the payment processor (Stripe Connect), where the net
-- of its payouts is transferred once onboarding enabled payouts.
CREATE TABLE payout_accounts (
    vendor_id       TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL,
    payouts_enabled INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;

//! The store's ports for what flows: raw and output records, the local change feed,
//! delivery positions and usage, and billing.

use super::Result;
use crate::domain::*;
use crate::{
    FeedId, InvoiceId, Page, PageRequest, SourceId, SubscriptionId, TenantId, Timestamp, UserId,
    VendorId,
};
use async_trait::async_trait;

/// Raw records, output records and pipeline errors.
#[async_trait]
pub trait RecordStore: Send + Sync {
    /// Stores raw records; a record whose id is already stored is skipped (a duplicate).
    /// The id of a record sent with the vendor's id is derived from its source and that id,
    /// so an adapter may key the check on `(source_id, external_id)` instead. A record with
    /// no vendor's id has a fresh id and comes again only when the same call is repeated
    /// (an ingest message delivered twice), so an adapter may deduplicate those per call:
    /// the same records appended again store nothing. Returns how many were new. The
    /// records are durable when this returns.
    async fn append_raw(&self, records: &[RawRecord]) -> Result<usize>;
    /// Raw records of a source with `from <= ts < to`, in event-time order (for windows).
    async fn raw_between(
        &self,
        tenant: &TenantId,
        source: &SourceId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<RawRecord>>;
    /// Stores output records; an id already stored is skipped, so reprocessing never
    /// duplicates. Returns how many were new.
    async fn append_output(&self, records: &[OutputRecord]) -> Result<usize>;
    /// Stores the output records one unit of work produced (the stateless rules run over
    /// one stored batch of raw records), once per feed and pipeline version: appending the
    /// same unit again stores nothing, even if its records came out differently the second
    /// time (a reference table changed meanwhile): the first stored stay. So an adapter may
    /// check the unit instead of each id (one conditional write per batch instead of one per
    /// record). Returns how many were new.
    async fn append_output_once(&self, unit: &str, records: &[OutputRecord]) -> Result<usize> {
        let _ = unit;
        self.append_output(records).await
    }
    /// A feed's output records after position `after`, in position order, with their positions.
    async fn output_after(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, OutputRecord)>>;
    /// A feed's output records with `from <= ts < to` after position `after`, in position order.
    async fn output_between(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        from: Timestamp,
        to: Timestamp,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, OutputRecord)>>;
    /// A feed's output records at `positions`, in the order asked; positions holding no
    /// record (never stored, expired, another tenant's) are left out.
    async fn output_at(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        positions: &[u64],
    ) -> Result<Vec<(u64, OutputRecord)>>;
    /// The position of a feed's newest output record (0 when it has none).
    async fn output_head(&self, tenant: &TenantId, feed: &FeedId) -> Result<u64>;
    /// Records pipeline failures.
    async fn record_feed_errors(&self, tenant: &TenantId, errors: &[FeedError]) -> Result<()>;
    /// A feed's pipeline failures, newest first.
    async fn list_feed_errors(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        page: &PageRequest,
    ) -> Result<Page<FeedError>>;
    /// The end of the last window a feed's window rule has closed, if any.
    async fn window_watermark(&self, tenant: &TenantId, feed: &FeedId)
    -> Result<Option<Timestamp>>;
    /// Records that a feed's windows up to `end` are closed (after their outputs are stored).
    async fn set_window_watermark(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        end: Timestamp,
    ) -> Result<()>;
    /// Deletes raw and output records whose `expires_at` is before `now`; returns how many.
    async fn expire_records(&self, now: Timestamp) -> Result<usize>;
    /// Deletes the pipeline errors, of every tenant, recorded before the first one whose `at`
    /// is not before `before`; returns how many. Errors are recorded in time order.
    async fn expire_feed_errors(&self, before: Timestamp) -> Result<usize>;
}

/// The local shape's change feed: raw records in the order they were stored, and durable
/// consumer positions. (The aws shape reads DynamoDB Streams instead.)
#[async_trait]
pub trait ChangeLog: Send + Sync {
    /// Raw records stored after position `after`, oldest first, with their positions.
    async fn raw_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, RawRecord)>>;
    /// One tenant's raw records stored after position `after`, oldest first.
    async fn raw_of_tenant_after(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, RawRecord)>>;
    /// The tenants with raw records stored after position `after`, each with the position of
    /// its last one.
    async fn tenants_after(&self, after: u64) -> Result<Vec<(TenantId, u64)>>;
    /// A consumer's committed position (0 when it has none).
    async fn consumer_position(&self, consumer: &str) -> Result<u64>;
    /// Commits a consumer's position after its effects are stored.
    async fn set_consumer_position(&self, consumer: &str, position: u64) -> Result<()>;
}

/// Delivery positions, pending retries, the delivery log and usage counters. Every change of
/// a usage counter happens in the same atomic write as the mark that makes it happen once.
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// How far a subscription has delivered (a feed output position). A new subscription
    /// starts at its feed's newest output at creation, or where its backfill starts.
    async fn delivery_position(&self, tenant: &TenantId, sub: &SubscriptionId) -> Result<u64>;
    /// Moves a subscription's position from `from` to `to`, adds `acknowledged` to its
    /// usage (and backfill) counters for the hour of `at`, and stores `parked` deliveries, in
    /// one atomic write.
    /// `Conflict` when the position is no longer `from` (nothing is changed then).
    #[allow(clippy::too_many_arguments)]
    async fn advance(
        &self,
        tenant: &TenantId,
        sub: &SubscriptionId,
        from: u64,
        to: u64,
        acknowledged: Counted,
        at: Timestamp,
        parked: &[PendingDelivery],
    ) -> Result<()>;
    /// Moves a subscription's position to its feed's newest output (on resume).
    async fn skip_to_head(&self, tenant: &TenantId, sub: &SubscriptionId) -> Result<()>;
    /// Stores deliveries to attempt (replays); an id already pending is left as it is.
    async fn park(&self, deliveries: &[PendingDelivery]) -> Result<()>;
    /// Pending deliveries due at `now`, oldest due first.
    async fn due_deliveries(&self, now: Timestamp, limit: usize) -> Result<Vec<PendingDelivery>>;
    /// Removes a pending delivery and, unless it is a replay, adds `acknowledged` to its
    /// subscription's usage (its backfill counter for a backfill delivery) for the hour of
    /// `at`, atomically. `false` when it was already
    /// gone (so nothing is counted twice).
    async fn ack_pending(
        &self,
        delivery: &PendingDelivery,
        acknowledged: u64,
        at: Timestamp,
    ) -> Result<bool>;
    /// Replaces a pending delivery after a failed attempt (new attempt count and due time).
    async fn reschedule(&self, delivery: &PendingDelivery) -> Result<()>;
    /// Removes a pending delivery without counting it (given up).
    async fn drop_pending(&self, delivery: &crate::DeliveryId) -> Result<()>;
    /// Appends to the delivery log.
    async fn log_attempts(&self, tenant: &TenantId, attempts: &[DeliveryAttempt]) -> Result<()>;
    /// Deletes the delivery log's attempts, of every tenant, logged before the first one whose
    /// `at` is not before `before`; returns how many. Attempts are logged in time order.
    async fn expire_attempts(&self, before: Timestamp) -> Result<usize>;
    /// A subscription's delivery log, newest first, optionally by status.
    async fn list_attempts(
        &self,
        tenant: &TenantId,
        sub: &SubscriptionId,
        status: Option<AttemptStatus>,
        page: &PageRequest,
    ) -> Result<Page<DeliveryAttempt>>;
    /// Acknowledged deliveries with `from <= hour < to`, summed per subscription; those with
    /// none are left out. Costs what that range's counters cost, however long the history.
    async fn usage_totals(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(SubscriptionId, Counted)>>;
    /// Usage rows matching `filter` with `from <= hour < to`, by subscription then hour.
    async fn usage(
        &self,
        filter: &UsageFilter,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageRow>>;
}

/// Billing runs, invoices and payouts. Invoices and payouts have derived ids and are written
/// once: storing one whose id exists changes nothing, which is what makes a run repeatable.
#[async_trait]
pub trait BillingStore: Send + Sync {
    /// Every billing run, oldest period first.
    async fn list_billing_runs(&self) -> Result<Vec<BillingRun>>;
    /// Creates or replaces the run of `run.period`.
    async fn put_billing_run(&self, run: &BillingRun) -> Result<()>;
    /// Stores each invoice with its billed quantities unless its id is stored, many in one
    /// write (a run stores thousands); returns how many were new.
    async fn put_invoices(&self, invoices: &[Invoice]) -> Result<u64>;
    /// Reads an invoice; `NotFound` if absent.
    async fn get_invoice(&self, id: &InvoiceId) -> Result<Invoice>;
    /// Invoices matching `filter`, by id.
    async fn list_invoices(
        &self,
        filter: &InvoiceFilter,
        page: &PageRequest,
    ) -> Result<Page<Invoice>>;
    /// Applies a change of collection state to an invoice (`change.apply` on the stored one);
    /// answers the invoice as changed; `NotFound` if absent.
    async fn update_invoice(&self, id: &InvoiceId, change: &InvoiceChange) -> Result<Invoice>;
    /// Deliveries already billed for the service month `YYYY-MM` (usage and adjustment lines
    /// of every invoice), per subscription; subscriptions with none are left out.
    async fn billed_totals(&self, service_period: &str) -> Result<Vec<(SubscriptionId, u64)>>;
    /// Stores a payout unless its id is stored; returns whether it was new.
    async fn put_payout(&self, payout: &Payout) -> Result<bool>;
    /// Replaces a stored payout whose stored revision is `payout.revision - 1` (its transfer
    /// state changed); `Conflict` when another change came first, `NotFound` if absent.
    async fn update_payout(&self, payout: &Payout) -> Result<()>;
    /// A vendor's connected account, once it has one.
    async fn payout_account(&self, vendor: &VendorId) -> Result<Option<PayoutAccount>>;
    /// Records a vendor's connected account unless one is recorded; returns the recorded one.
    async fn put_payout_account(&self, vendor: &VendorId, account: &str) -> Result<PayoutAccount>;
    /// Records whether a vendor's account can receive payouts; `NotFound` without one.
    async fn set_payouts_enabled(&self, vendor: &VendorId, enabled: bool) -> Result<()>;
    /// Payouts of a month (all months when `None`), optionally of one vendor, by id.
    async fn list_payouts(
        &self,
        period: Option<&str>,
        vendor: Option<&VendorId>,
    ) -> Result<Vec<Payout>>;
    /// The payment processor's customer of a subscriber, once it has one.
    async fn payment_customer(&self, subscriber: &UserId) -> Result<Option<PaymentCustomer>>;
    /// Records a subscriber's customer unless one is recorded; returns the recorded one.
    async fn put_payment_customer(
        &self,
        subscriber: &UserId,
        customer: &str,
    ) -> Result<PaymentCustomer>;
    /// Records the payment method a subscriber's invoices are charged to; `NotFound` when the
    /// subscriber has no customer.
    async fn set_payment_method(&self, subscriber: &UserId, payment_method: &str) -> Result<()>;
}

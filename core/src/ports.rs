//! Ports: the capabilities services need from the outside world. Every tenant-owned read or
//! write takes the tenant first, and an object of another tenant reads as `NotFound`.
//! Each port has one contract test suite that every adapter runs.

use crate::domain::*;
use crate::{
    ApiKeyId, CoreError, FeedId, InvoiceId, Page, PageRequest, SourceId, SubscriptionId, TenantId,
    Timestamp, UserId, VendorId,
};
use async_trait::async_trait;
use std::net::IpAddr;

/// Shorthand for port results.
pub type Result<T> = std::result::Result<T, CoreError>;

/// Vendors (tenants) and subscriber profiles.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Stores a new vendor; `Conflict` if the id exists.
    async fn create_vendor(&self, vendor: &Vendor) -> Result<()>;
    /// Reads a vendor.
    async fn get_vendor(&self, id: &VendorId) -> Result<Vendor>;
    /// Sets the status if it currently is `from`; `Conflict` otherwise.
    async fn set_vendor_status(
        &self,
        id: &VendorId,
        from: VendorStatus,
        to: VendorStatus,
    ) -> Result<Vendor>;
    /// Vendors with `status` (all when `None`), oldest first.
    async fn list_vendors(
        &self,
        status: Option<VendorStatus>,
        page: &PageRequest,
    ) -> Result<Page<Vendor>>;
    /// Removes a vendor that has nothing yet (undoes a failed sign-up).
    async fn delete_vendor(&self, id: &VendorId) -> Result<()>;
    /// Stores a subscriber profile; `Conflict` if the id exists.
    async fn create_subscriber(&self, subscriber: &Subscriber) -> Result<()>;
    /// Reads a subscriber profile.
    async fn get_subscriber(&self, id: &UserId) -> Result<Subscriber>;
}

/// Ingest API keys; secrets are stored only as digests.
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// Stores a key with the SHA-256 digest of its secret.
    async fn create_api_key(&self, key: &ApiKey, secret_digest: &str) -> Result<()>;
    /// Reads a key of the tenant.
    async fn get_api_key(&self, tenant: &TenantId, id: &ApiKeyId) -> Result<ApiKey>;
    /// The tenant's keys, oldest first.
    async fn list_api_keys(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<ApiKey>>;
    /// Revokes a key of the tenant.
    async fn delete_api_key(&self, tenant: &TenantId, id: &ApiKeyId) -> Result<()>;
    /// Finds a key and its digest by id alone, to authenticate a presented key.
    async fn find_api_key(&self, id: &ApiKeyId) -> Result<(ApiKey, String)>;
}

/// Upstream sources.
#[async_trait]
pub trait SourceStore: Send + Sync {
    /// Stores a new source.
    async fn create_source(&self, source: &Source) -> Result<()>;
    /// Reads a source of the tenant.
    async fn get_source(&self, tenant: &TenantId, id: &SourceId) -> Result<Source>;
    /// The tenant's sources, oldest first.
    async fn list_sources(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<Source>>;
    /// Replaces a source of the tenant.
    async fn update_source(&self, source: &Source) -> Result<()>;
    /// `http_poll` sources across tenants, oldest first (for the poller).
    async fn list_poll_sources(&self, page: &PageRequest) -> Result<Page<Source>>;
    /// Deletes a source of the tenant; `Conflict` while a feed uses it.
    async fn delete_source(&self, tenant: &TenantId, id: &SourceId) -> Result<()>;
}

/// Feeds, and the public catalog across tenants.
#[async_trait]
pub trait FeedStore: Send + Sync {
    /// Stores a new feed; `NotFound` if its source is not the tenant's.
    async fn create_feed(&self, feed: &Feed) -> Result<()>;
    /// Reads a feed of the tenant.
    async fn get_feed(&self, tenant: &TenantId, id: &FeedId) -> Result<Feed>;
    /// The tenant's feeds, oldest first.
    async fn list_feeds(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<Feed>>;
    /// Replaces a feed whose stored revision is `feed.revision - 1`; `Conflict` otherwise.
    async fn update_feed(&self, feed: &Feed) -> Result<()>;
    /// Deletes a feed of the tenant; `Conflict` while it has subscriptions.
    async fn delete_feed(&self, tenant: &TenantId, id: &FeedId) -> Result<()>;
    /// Finds a feed by id alone, for subscribers who do not know its tenant.
    /// Callers must check status and visibility before showing it.
    async fn locate_feed(&self, id: &FeedId) -> Result<Feed>;
    /// Published feeds, across tenants, whose current pipeline has a window rule.
    async fn list_windowed_feeds(&self, page: &PageRequest) -> Result<Page<Feed>>;
    /// Published public feeds of active vendors whose name or description contains `query`.
    async fn list_catalog(
        &self,
        query: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<CatalogEntry>>;
}

/// Reference tables for `enrich` rules.
#[async_trait]
pub trait ReferenceStore: Send + Sync {
    /// Stores a row; returns whether it was new.
    async fn put_reference(
        &self,
        tenant: &TenantId,
        table: &str,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<bool>;
    /// Reads a row.
    async fn get_reference(
        &self,
        tenant: &TenantId,
        table: &str,
        key: &str,
    ) -> Result<serde_json::Value>;
}

/// Subscriptions (in the feed's tenant partition) and their signing secrets.
#[async_trait]
pub trait SubscriptionStore: Send + Sync {
    /// Stores a new subscription with its sealed secrets.
    async fn create_subscription(
        &self,
        sub: &Subscription,
        secrets: &[SigningSecret],
    ) -> Result<()>;
    /// Reads a subscription of the tenant.
    async fn get_subscription(
        &self,
        tenant: &TenantId,
        id: &SubscriptionId,
    ) -> Result<Subscription>;
    /// Finds a subscription by id alone (callers check the subscriber).
    async fn locate_subscription(&self, id: &SubscriptionId) -> Result<Subscription>;
    /// A subscriber's subscriptions across vendors, oldest first.
    async fn list_subscriptions_of_subscriber(
        &self,
        subscriber: &UserId,
        page: &PageRequest,
    ) -> Result<Page<Subscription>>;
    /// A feed's subscriptions, oldest first.
    async fn list_subscriptions_of_feed(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        page: &PageRequest,
    ) -> Result<Page<Subscription>>;
    /// Replaces a subscription whose stored revision is `sub.revision - 1`; `Conflict` otherwise.
    /// When `secrets` is given, they replace the stored ones in the same write.
    async fn update_subscription(
        &self,
        sub: &Subscription,
        secrets: Option<&[SigningSecret]>,
    ) -> Result<()>;
    /// Active subscriptions across tenants, oldest first (for the local shape's deliverer).
    async fn list_active_subscriptions(&self, page: &PageRequest) -> Result<Page<Subscription>>;
    /// Every subscription across tenants whatever its status, oldest first (billing runs).
    async fn list_all_subscriptions(&self, page: &PageRequest) -> Result<Page<Subscription>>;
    /// The sealed signing secrets of a subscription, newest first.
    async fn get_signing_secrets(
        &self,
        tenant: &TenantId,
        id: &SubscriptionId,
    ) -> Result<Vec<SigningSecret>>;
}

/// A response stored for an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// Response body.
    pub body: Vec<u8>,
}

/// What `begin` found for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyState {
    /// The key is new and now reserved for this request.
    Started,
    /// The same request already completed; replay this response.
    Completed(StoredResponse),
    /// The key was used with another request body, or that request is still running.
    Conflict,
}

/// After this long a reservation whose request never completed (the process died) is taken
/// over by a retry of the same request.
pub const IDEMPOTENCY_RESERVATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Idempotency keys of creating POSTs, scoped to a caller.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Reserves `key` for a request with `fingerprint`, or reports what is stored. A
    /// reservation older than [`IDEMPOTENCY_RESERVATION_TIMEOUT`] is taken over by the same
    /// fingerprint.
    async fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        now: Timestamp,
    ) -> Result<IdempotencyState>;
    /// Stores the final response of a reserved key.
    async fn complete(&self, scope: &str, key: &str, response: &StoredResponse) -> Result<()>;
    /// Releases a reserved key whose request failed without a final answer.
    async fn abandon(&self, scope: &str, key: &str) -> Result<()>;
}

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
    /// A consumer's committed position (0 when it has none).
    async fn consumer_position(&self, consumer: &str) -> Result<u64>;
    /// Commits a consumer's position after its effects are stored.
    async fn set_consumer_position(&self, consumer: &str, position: u64) -> Result<()>;
}

/// A delivery that failed and waits for its next attempt.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PendingDelivery {
    /// Derived from the records and the subscription; stable across retries.
    pub id: crate::DeliveryId,
    /// The selling tenant.
    pub tenant_id: TenantId,
    /// The subscription.
    pub subscription_id: SubscriptionId,
    /// The records, in order.
    pub record_ids: Vec<crate::RecordId>,
    /// Their positions in the feed, in the same order: what a retry reads them by.
    #[serde(default)]
    pub positions: Vec<u64>,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due.
    #[serde(with = "time::serde::rfc3339")]
    pub next_attempt_at: Timestamp,
    /// When the first attempt failed.
    #[serde(with = "time::serde::rfc3339")]
    pub first_failed_at: Timestamp,
    /// A replay: delivered again without being counted again.
    pub replay: bool,
}

/// One attempt to deliver, for the delivery log.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryAttempt {
    /// The delivery (the `webhook-id` header).
    pub delivery_id: crate::DeliveryId,
    /// The subscription.
    pub subscription_id: SubscriptionId,
    /// Records in the delivery.
    pub records: u32,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// `delivered`, `failed` (will retry), `gave_up` or `disabled`.
    pub status: String,
    /// The HTTP status the endpoint answered, if it answered.
    pub status_code: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
    /// When the next attempt is due, after a failure.
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub next_attempt_at: Option<Timestamp>,
    /// When the attempt was made.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Timestamp,
}

/// Acknowledged deliveries of one subscription in one hour.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsageRow {
    /// The selling tenant.
    pub tenant_id: TenantId,
    /// The subscription.
    pub subscription_id: SubscriptionId,
    /// The subscriber.
    pub subscriber_id: UserId,
    /// Start of the hour (UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub hour: Timestamp,
    /// Acknowledged deliveries (records) in that hour.
    pub count: u64,
}

/// Which usage rows to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilter {
    /// Only this tenant's subscriptions.
    pub tenant: Option<TenantId>,
    /// Only this subscriber's subscriptions.
    pub subscriber: Option<UserId>,
    /// Only this subscription.
    pub subscription: Option<SubscriptionId>,
}

/// Delivery positions, pending retries, the delivery log and usage counters. Every change of
/// a usage counter happens in the same atomic write as the mark that makes it happen once.
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// How far a subscription has delivered (a feed output position). A new subscription
    /// starts at its feed's newest output at creation.
    async fn delivery_position(&self, tenant: &TenantId, sub: &SubscriptionId) -> Result<u64>;
    /// Moves a subscription's position from `from` to `to`, adds `acknowledged` to its
    /// usage for the hour of `at`, and stores `parked` deliveries, in one atomic write.
    /// `Conflict` when the position is no longer `from` (nothing is changed then).
    #[allow(clippy::too_many_arguments)]
    async fn advance(
        &self,
        tenant: &TenantId,
        sub: &SubscriptionId,
        from: u64,
        to: u64,
        acknowledged: u64,
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
    /// subscription's usage for the hour of `at`, atomically. `false` when it was already
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
        status: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<DeliveryAttempt>>;
    /// Acknowledged deliveries with `from <= hour < to`, summed per subscription; those with
    /// none are left out. Costs what that range's counters cost, however long the history.
    async fn usage_totals(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(SubscriptionId, u64)>>;
    /// Usage rows matching `filter` with `from <= hour < to`, by subscription then hour.
    async fn usage(
        &self,
        filter: &UsageFilter,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageRow>>;
}

/// Which invoices to list; `None` matches any.
#[derive(Debug, Clone, Default)]
pub struct InvoiceFilter {
    /// Only this month (`YYYY-MM`).
    pub period: Option<String>,
    /// Only this vendor's.
    pub vendor: Option<VendorId>,
    /// Only this subscriber's.
    pub subscriber: Option<UserId>,
    /// Only in this state.
    pub status: Option<InvoiceStatus>,
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
    /// Sets an invoice's payment state and, when given, its Stripe id.
    async fn set_invoice_status(
        &self,
        id: &InvoiceId,
        status: InvoiceStatus,
        stripe_invoice_id: Option<&str>,
    ) -> Result<()>;
    /// Deliveries already billed for the service month `YYYY-MM` (usage and adjustment lines
    /// of every invoice), per subscription; subscriptions with none are left out.
    async fn billed_totals(&self, service_period: &str) -> Result<Vec<(SubscriptionId, u64)>>;
    /// Stores a payout unless its id is stored; returns whether it was new.
    async fn put_payout(&self, payout: &Payout) -> Result<bool>;
    /// Payouts of a month (all months when `None`), optionally of one vendor, by id.
    async fn list_payouts(
        &self,
        period: Option<&str>,
        vendor: Option<&VendorId>,
    ) -> Result<Vec<Payout>>;
    /// The payment processor's customer of a subscriber, once it has one.
    async fn payment_customer(&self, subscriber: &UserId) -> Result<Option<String>>;
    /// Records a subscriber's customer unless one is recorded; returns the recorded one.
    async fn put_payment_customer(&self, subscriber: &UserId, customer: &str) -> Result<String>;
}

/// The payment processor invoices are collected through (Stripe). Every call carries an
/// idempotency key chosen by the caller: the processor answers a repeated key with the first
/// call's result, so a push retried after a crash or a timeout never charges twice.
#[async_trait]
pub trait Payments: Send + Sync {
    /// Creates a customer for `subscriber`; returns its id.
    async fn create_customer(&self, key: &str, subscriber: &UserId, email: &Email)
    -> Result<String>;
    /// Creates a draft invoice for `customer` tagged with Wharf's invoice id; returns its id.
    async fn create_invoice(&self, key: &str, customer: &str, invoice: &Invoice) -> Result<String>;
    /// Adds one line to a draft invoice: `amount_minor` in the currency's minor unit.
    async fn add_invoice_item(
        &self,
        key: &str,
        customer: &str,
        processor_invoice: &str,
        amount_minor: i64,
        currency: &str,
        description: &str,
    ) -> Result<()>;
    /// Finalizes a draft invoice so it can be paid.
    async fn finalize_invoice(&self, key: &str, processor_invoice: &str) -> Result<()>;
}

/// Everything the services store, as one handle.
pub trait Store:
    AccountStore
    + ApiKeyStore
    + SourceStore
    + FeedStore
    + ReferenceStore
    + SubscriptionStore
    + IdempotencyStore
    + RecordStore
    + DeliveryStore
    + BillingStore
{
    /// Whether the store answers (for `/readyz`).
    fn ping(&self) -> Result<()>;
}

/// Where the aws shape's ingest endpoint puts accepted records: a queue (SQS) the ingest
/// handler drains into the store with dedup. Absent in the local shape, which stores them at
/// once.
#[async_trait]
pub trait IngestQueue: Send + Sync {
    /// Queues `records` durably; when this returns, they will be stored.
    async fn enqueue(&self, records: &[RawRecord]) -> Result<()>;
}

/// The queues of `sqs` sources (aws shape): each such source gets its own queue, which the
/// vendor sends records to and the ingest handler drains.
#[async_trait]
pub trait SourceQueues: Send + Sync {
    /// Creates the queue of `source`; answers its URL.
    async fn create_queue(&self, source: &Source) -> Result<String>;
    /// Deletes the queue of `source`; a queue already gone is not an error.
    async fn delete_queue(&self, source: &Source) -> Result<()>;
}

/// Fan-out through a topic per published feed (aws shape: SNS). The native channels (`sqs`,
/// `email`, `mobile_push`) are subscriptions of that topic, which deliver without Wharf.
#[async_trait]
pub trait Fanout: Send + Sync {
    /// Creates the topic of a feed being published; one that exists is kept.
    async fn open_topic(&self, feed: &Feed) -> Result<()>;
    /// Deletes the topic of a feed archived or deleted, and with it every subscription of it;
    /// a topic already gone is not an error.
    async fn close_topic(&self, feed: &Feed) -> Result<()>;
    /// Subscribes the native channel of `sub` to its feed's topic, with its filter where the
    /// topic can apply it; answers the link to keep on the subscription.
    async fn subscribe(&self, sub: &Subscription) -> Result<NativeLink>;
    /// Removes a link `subscribe` made; one already gone is not an error.
    async fn unsubscribe(&self, link: &NativeLink) -> Result<()>;
    /// The link as the topic sees it now (an email recipient may have confirmed since).
    async fn refresh(&self, link: &NativeLink) -> Result<NativeLink>;
}

/// Figures a running process adds to `/metrics`, in Prometheus' text format.
pub trait Metrics: Send + Sync {
    /// Lines of `# HELP`, `# TYPE` and samples, each ending in a newline.
    fn render(&self) -> String;
}

/// Blobs by key: ONNX models, exports. Keys are `/`-separated paths checked by
/// [`check_object_key`]; a tenant's objects live under its id. Files in the data dir, or S3.
/// Wharf never stores `a/b` beside `a` (a key that is also the path of others): files cannot
/// hold both, so the local shape refuses it as a `Conflict`, while S3 would accept it.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Stores `body` under `key`, replacing what was there; readers see the old or the new
    /// object, never a part.
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<()>;
    /// The object under `key`; `NotFound` if there is none.
    async fn get(&self, key: &str) -> Result<Vec<u8>>;
    /// Removes the object under `key`; removing a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    /// The keys under `prefix` (a key prefix ending in `/`, or empty for all), sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
}

/// Longest object key, in bytes (S3 allows 1024).
pub const MAX_OBJECT_KEY: usize = 512;

/// Checks an object key: 1 to 512 bytes of segments joined by `/`, each made of ASCII
/// letters, digits, `.`, `_` and `-` and neither `.` nor `..`. This is what keeps a key from
/// naming a file outside the object directory of the local shape.
pub fn check_object_key(key: &str) -> Result<()> {
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    if key.is_empty() || key.len() > MAX_OBJECT_KEY || !key.split('/').all(segment_ok) {
        return Err(CoreError::invalid(
            "key",
            "must be 1 to 512 bytes of `/`-separated segments of letters, digits, `.`, `_` and `-`",
        ));
    }
    Ok(())
}

/// Checks a listing prefix: empty, or a valid key followed by `/`.
pub fn check_object_prefix(prefix: &str) -> Result<()> {
    match prefix.strip_suffix('/') {
        _ if prefix.is_empty() => Ok(()),
        Some(key) => check_object_key(key),
        None => Err(CoreError::invalid(
            "prefix",
            "must be empty or end with `/`",
        )),
    }
}

/// User accounts, credentials and tokens: the local issuer, or Cognito.
#[async_trait]
pub trait Identity: Send + Sync {
    /// Creates a user; `Conflict` if the email is taken.
    async fn create_user(&self, user: NewUser) -> Result<User>;
    /// Removes a user (undoes a failed sign-up).
    async fn delete_user(&self, id: &UserId) -> Result<()>;
    /// Exchanges email and password for tokens; `Unauthenticated` on any mismatch.
    async fn login(&self, email: &Email, password: &str) -> Result<TokenPair>;
    /// Exchanges a refresh token for new tokens; `Unauthenticated` if unknown, used or expired.
    async fn refresh(&self, refresh_token: &str) -> Result<TokenPair>;
    /// Verifies an access token fully (signature by `kid`, algorithm, issuer, audience, expiry, use).
    async fn verify(&self, access_token: &str) -> Result<Principal>;
    /// The public keys tokens are signed with, when this process is the issuer.
    fn jwks(&self) -> Option<serde_json::Value>;
}

/// The current time.
pub trait Clock: Send + Sync {
    /// Now, in UTC.
    fn now(&self) -> Timestamp;
}

/// Resolves host names, for the outbound URL guard.
#[async_trait]
pub trait Resolver: Send + Sync {
    /// All addresses of `host`; a name that does not resolve is `Unavailable`, saying why.
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<IpAddr>>;
}

/// Seals secrets that must be recoverable (webhook signing secrets) for storage.
pub trait SecretBox: Send + Sync {
    /// Encrypts and authenticates `plaintext`.
    fn seal(&self, plaintext: &str) -> Result<String>;
    /// Decrypts what `seal` produced.
    fn open(&self, sealed: &str) -> Result<String>;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        time::OffsetDateTime::now_utc()
    }
}

/// Wakes the local shape's workers when there is new work (a no-op where event sources
/// deliver the work, as in the aws shape).
pub trait Notifier: Send + Sync {
    /// New raw records were stored.
    fn raw_appended(&self);
    /// New output records were stored, or a subscription changed.
    fn outputs_appended(&self);
}

/// A notifier that does nothing.
pub struct NoNotifier;

impl Notifier for NoNotifier {
    fn raw_appended(&self) {}
    fn outputs_appended(&self) {}
}

/// What an endpoint answered to a webhook POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The endpoint answered with this status (and `Retry-After`, in seconds, if given).
    Answered {
        /// HTTP status.
        status: u16,
        /// `Retry-After` in seconds.
        retry_after: Option<u64>,
    },
    /// No answer: connection refused, timeout, refused address, …
    Failed(String),
}

/// Outbound HTTP (webhook POSTs, polled sources), refusing addresses the guard does not allow.
#[async_trait]
pub trait OutboundHttp: Send + Sync {
    /// POSTs `body` with `headers` to `url` within `timeout`.
    async fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        timeout: std::time::Duration,
    ) -> SendOutcome;
    /// GETs `url` within `timeout`, reading at most `max_bytes` of the body: (status, body).
    async fn get(
        &self,
        url: &str,
        timeout: std::time::Duration,
        max_bytes: usize,
    ) -> Result<(u16, Vec<u8>)>;
}

/// Sends email: the email channel and notices to subscribers.
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Sends a plain-text message; `Ok` once the mail server (or the outbox) accepted it.
    async fn send(&self, to: &Email, subject: &str, body: &str) -> Result<()>;
}

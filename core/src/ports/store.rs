//! The store's ports for accounts, catalog objects and request bookkeeping: vendors,
//! subscribers, API keys, sources, feeds, reference rows, subscriptions and idempotency
//! keys. Every tenant-owned read or write takes the tenant first, and an object of another
//! tenant reads as `NotFound`.

use super::{BillingStore, DeliveryStore, RecordStore, Result};
use crate::domain::*;
use crate::{
    ApiKeyId, FeedId, Page, PageRequest, SourceId, SubscriptionId, TenantId, Timestamp, UserId,
    VendorId,
};
use async_trait::async_trait;

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
    /// Replaces a subscriber profile; `NotFound` if absent.
    async fn update_subscriber(&self, subscriber: &Subscriber) -> Result<()>;
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
    /// Published feeds, across tenants, that their vendor deprecated (an `ends_at`).
    async fn list_deprecated_feeds(&self, page: &PageRequest) -> Result<Page<Feed>>;
    /// Published public feeds of active vendors whose name or description contains `query`.
    async fn list_catalog(
        &self,
        query: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<CatalogEntry>>;
}

/// The model registry: each vendor's model versions (their files live in the object store).
#[async_trait]
pub trait ModelStore: Send + Sync {
    /// Stores a new version; `Conflict` when the vendor has that name's version already.
    async fn put_model_version(&self, model: &ModelVersion) -> Result<()>;
    /// A vendor's versions of `name`, oldest first (none when it has no such model).
    async fn model_versions(&self, vendor: &VendorId, name: &str) -> Result<Vec<ModelVersion>>;
    /// Every version of every model of a vendor, by name then version.
    async fn all_model_versions(&self, vendor: &VendorId) -> Result<Vec<ModelVersion>>;
    /// Removes one version; `NotFound("model version")` if the vendor has no such version.
    async fn delete_model_version(&self, vendor: &VendorId, name: &str, version: u32)
    -> Result<()>;
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

/// After this long a reservation whose request never completed (the process died) is taken
/// over by a retry of the same request.
pub const IDEMPOTENCY_RESERVATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long an idempotency key is kept: a key older than this starts anew, whatever it
/// stored.
pub const IDEMPOTENCY_KEPT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Idempotency keys of creating POSTs, scoped to a caller.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Reserves `key` for a request with `fingerprint`, or reports what is stored. A
    /// reservation older than [`IDEMPOTENCY_RESERVATION_TIMEOUT`] is taken over by the same
    /// fingerprint; a key older than [`IDEMPOTENCY_KEPT`] starts anew for any request.
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
    /// Removes keys reserved before `before`; answers how many (a store whose items expire
    /// by themselves may remove none).
    async fn expire_idempotency(&self, before: Timestamp) -> Result<usize>;
}

/// Everything the services store, as one handle.
pub trait Store:
    AccountStore
    + ApiKeyStore
    + SourceStore
    + FeedStore
    + ModelStore
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

//! The contract every `Store` adapter must honour, as executable checks.
//!
//! An adapter's test calls [`run_all`] with a fresh store, and [`run_change_log`] when the
//! adapter also serves the local change feed. Each check is also public so a failing one can
//! be run alone. Checks create their own objects under fresh random ids (and
//! a random word in searchable names), so they pass on a database shared with other tests
//! and never depend on what else is stored; they assert exact values, not just success.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::domain::*;
use crate::money::{Amount, Currency};
use crate::ports::{
    ChangeLog, DeliveryAttempt, IdempotencyState, PendingDelivery, Result, Store, StoredResponse,
    UsageFilter, UsageRow,
};
use crate::{
    ApiKeyId, CoreError, DeliveryId, FeedId, Page, PageRequest, RecordId, SourceId, SubscriptionId,
    Timestamp, UserId, VendorId,
};
use serde_json::json;
use std::fmt::Debug;
use std::sync::Arc;

/// Runs every check against `store`.
pub async fn run_all(store: Arc<dyn Store>) {
    let s = &*store;
    the_store_answers_ping(s).await;

    a_created_vendor_reads_back_equal(s).await;
    a_duplicate_vendor_id_is_a_conflict(s).await;
    an_unknown_vendor_is_not_found(s).await;
    vendor_status_changes_only_from_the_expected_state(s).await;
    setting_the_status_of_an_unknown_vendor_is_not_found(s).await;
    vendors_list_by_status_in_id_order_across_pages(s).await;
    a_deleted_vendor_is_gone(s).await;
    a_created_subscriber_reads_back_equal(s).await;
    a_duplicate_subscriber_id_is_a_conflict(s).await;
    an_unknown_subscriber_is_not_found(s).await;

    an_api_key_reads_back_by_tenant_and_by_id_alone(s).await;
    a_duplicate_api_key_id_is_a_conflict(s).await;
    api_keys_list_per_tenant_in_id_order_across_pages(s).await;
    cross_tenant_api_key_access_is_not_found_and_changes_nothing(s).await;
    a_deleted_api_key_is_gone(s).await;

    a_created_source_reads_back_equal(s).await;
    a_duplicate_source_id_is_a_conflict(s).await;
    sources_list_per_tenant_in_id_order_across_pages(s).await;
    a_list_that_fills_its_last_page_exactly_ends_without_a_cursor(s).await;
    an_updated_source_reads_back_updated(s).await;
    cross_tenant_source_access_is_not_found_and_changes_nothing(s).await;
    a_source_used_by_a_feed_cannot_be_deleted(s).await;
    unknown_sources_are_not_found(s).await;

    a_created_feed_reads_back_equal_and_is_located_by_id_alone(s).await;
    a_duplicate_feed_id_is_a_conflict(s).await;
    a_feed_on_another_tenants_source_is_not_found(s).await;
    feeds_list_per_tenant_in_id_order_across_pages(s).await;
    a_feed_update_needs_the_next_revision(s).await;
    cross_tenant_feed_read_is_not_found(s).await;
    cross_tenant_feed_update_and_delete_are_not_found_and_change_nothing(s).await;
    a_feed_with_subscriptions_cannot_be_deleted(s).await;
    a_deleted_feed_is_gone(s).await;
    unknown_feeds_are_not_found(s).await;

    the_catalog_lists_only_published_public_feeds_of_active_vendors(s).await;
    the_catalog_without_a_query_includes_published_feeds(s).await;
    catalog_queries_match_name_or_description_ignoring_case(s).await;
    catalog_queries_take_wildcards_literally(s).await;
    catalog_pages_cover_every_entry_once(s).await;

    a_reference_row_is_new_once_then_replaced(s).await;
    reference_rows_are_separate_per_tenant_and_table(s).await;

    a_created_subscription_reads_back_with_its_secrets(s).await;
    a_duplicate_subscription_id_is_a_conflict(s).await;
    subscriptions_list_per_subscriber_across_tenants_and_pages(s).await;
    subscriptions_list_per_feed_across_pages(s).await;
    a_subscription_update_needs_the_next_revision(s).await;
    signing_secrets_are_replaced_atomically_with_the_subscription(s).await;
    cross_tenant_subscription_access_is_not_found_and_changes_nothing(s).await;
    unknown_subscriptions_are_not_found(s).await;
    active_subscriptions_list_across_tenants_oldest_first(s).await;

    a_new_idempotency_key_starts(s).await;
    a_completed_idempotency_key_replays_its_response(s).await;
    an_idempotency_key_reused_with_another_request_conflicts(s).await;
    an_idempotency_key_in_progress_conflicts(s).await;
    abandoning_an_idempotency_key_frees_it(s).await;
    a_stale_idempotency_reservation_is_taken_over(s).await;
    idempotency_keys_are_separate_per_scope(s).await;

    appending_raw_records_skips_ids_already_stored(s).await;
    raw_records_between_two_times_come_in_event_time_order(s).await;
    appending_output_records_is_idempotent(s).await;
    appending_a_units_output_records_again_stores_nothing(s).await;
    output_records_after_a_position_are_per_tenant_and_feed(s).await;
    output_records_between_two_times_come_in_position_order_after_a_position(s).await;
    the_output_head_is_the_newest_position_of_the_feed(s).await;
    output_records_read_by_position_come_in_the_order_asked(s).await;
    feed_errors_list_newest_first_across_pages_per_tenant_and_feed(s).await;
    feed_errors_recorded_before_the_cut_expire(s).await;
    expiring_removes_only_expired_records_and_never_reuses_positions(s).await;

    a_new_subscription_starts_at_its_feeds_output_head(s).await;
    advancing_moves_the_position_and_counts_usage_in_the_hour_of_the_acknowledgement(s).await;
    advancing_from_a_stale_position_is_a_conflict_and_changes_nothing(s).await;
    advancing_another_tenants_subscription_is_not_found_and_changes_nothing(s).await;
    parked_deliveries_come_due_in_due_order(s).await;
    acknowledging_a_pending_delivery_counts_it_once(s).await;
    acknowledged_replays_are_not_counted(s).await;
    rescheduling_changes_when_a_delivery_is_due(s).await;
    dropping_a_pending_delivery_removes_it_without_counting(s).await;
    skipping_to_head_moves_the_position_to_the_feeds_newest_output(s).await;
    the_delivery_log_lists_newest_first_and_filters_by_status(s).await;
    delivery_attempts_logged_before_the_cut_expire(s).await;
    usage_filters_by_tenant_subscriber_subscription_and_hour(s).await;

    malformed_cursors_are_rejected(s).await;

    run_billing(s).await;
}

/// Runs every change-feed check against `log`, with `store` (the same database) to write.
pub async fn run_change_log(store: &dyn Store, log: &dyn ChangeLog) {
    the_change_log_lists_raw_records_in_storage_order_once(store, log).await;
    consumer_positions_round_trip_per_consumer(log).await;
    raw_positions_are_not_reused_after_expiry(store, log).await;
}

// ---------------------------------------------------------------------------------------
// Builders and assertions.

/// A fixed instant plus `seconds`: fixed so values survive the round trip exactly.
fn at(seconds: i64) -> Timestamp {
    time::OffsetDateTime::from_unix_timestamp(1_767_225_600 + seconds).unwrap()
}

/// A random word, to find this run's objects among others in a shared store.
fn nonce() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

fn vendor(status: VendorStatus) -> Vendor {
    Vendor {
        id: VendorId::new(),
        name: format!("Vendor {}", nonce()),
        status,
        created_at: at(0),
    }
}

async fn stored_vendor(store: &dyn Store, status: VendorStatus) -> Vendor {
    let v = vendor(status);
    store.create_vendor(&v).await.unwrap();
    v
}

fn subscriber() -> Subscriber {
    let n = nonce();
    Subscriber {
        id: UserId::new(),
        name: format!("Subscriber {n}"),
        email: format!("{n}@example.com"),
        created_at: at(1),
    }
}

fn api_key(tenant: &VendorId) -> ApiKey {
    ApiKey {
        id: ApiKeyId::new(),
        tenant_id: tenant.clone(),
        name: "ingest".into(),
        scopes: vec![ApiKeyScope::Ingest],
        prefix: "wk_0193a5".into(),
        created_at: at(2),
    }
}

fn source(tenant: &VendorId) -> Source {
    Source {
        id: SourceId::new(),
        tenant_id: tenant.clone(),
        name: "ticks".into(),
        kind: SourceKind::Push,
        url: None,
        queue_url: None,
        every: None,
        schema: Some(json!({"type": "object", "properties": {"px": {"type": "number"}}})),
        retention_days: 30,
        last_polled_at: None,
        last_success_at: None,
        last_error: None,
        created_at: at(3),
        updated_at: at(3),
    }
}

async fn stored_source(store: &dyn Store, tenant: &VendorId) -> Source {
    let s = source(tenant);
    store.create_source(&s).await.unwrap();
    s
}

fn plan() -> Plan {
    Plan {
        id: "pro".into(),
        name: "Pro".into(),
        currency: Currency::parse("usd").unwrap(),
        monthly_fee: Amount::parse("49.00").unwrap(),
        included_deliveries: 10_000,
        tiers: vec![
            Tier {
                up_to: Some(100_000),
                unit_price: Amount::parse("0.0010").unwrap(),
            },
            Tier {
                up_to: None,
                unit_price: Amount::parse("0.0005").unwrap(),
            },
        ],
    }
}

fn feed(source: &Source, name: &str, status: FeedStatus, visibility: Visibility) -> Feed {
    Feed {
        id: FeedId::new(),
        tenant_id: source.tenant_id.clone(),
        source_id: source.id.clone(),
        name: name.into(),
        description: "Trades above 100 USD".into(),
        pipeline: Pipeline {
            version: 1,
            rules: vec![Rule::Filter {
                expr: "record.px > 100.0".into(),
            }],
        },
        plans: vec![plan()],
        visibility,
        status,
        sample: Some(json!({"px": 101.5})),
        revision: 1,
        created_at: at(4),
        updated_at: at(4),
    }
}

async fn stored_feed(store: &dyn Store, source: &Source, name: &str, status: FeedStatus) -> Feed {
    let f = feed(source, name, status, Visibility::Public);
    store.create_feed(&f).await.unwrap();
    f
}

/// A tenant with a source and a published public feed.
async fn vendor_with_feed(store: &dyn Store) -> (Vendor, Source, Feed) {
    let v = stored_vendor(store, VendorStatus::Active).await;
    let s = stored_source(store, &v.id).await;
    let f = stored_feed(store, &s, "Large trades", FeedStatus::Published).await;
    (v, s, f)
}

fn subscription(feed: &Feed, subscriber: &UserId) -> Subscription {
    Subscription {
        id: SubscriptionId::new(),
        tenant_id: feed.tenant_id.clone(),
        subscriber_id: subscriber.clone(),
        feed_id: feed.id.clone(),
        plan_id: "pro".into(),
        channel: Channel::Webhook {
            url: "https://hooks.example.com/wharf".into(),
        },
        filter: Some("record.px > 200.0".into()),
        batch: Some(Batch {
            max_records: 100,
            max_wait_ms: 500,
        }),
        status: SubscriptionStatus::Active,
        disabled_reason: None,
        failing_since: None,
        native: None,
        history: vec![StatusChange {
            status: SubscriptionStatus::Active,
            at: at(5),
        }],
        revision: 1,
        created_at: at(5),
        updated_at: at(5),
    }
}

fn secret(label: &str, seconds: i64, expires: Option<i64>) -> SigningSecret {
    SigningSecret {
        sealed: format!("sealed:{label}"),
        created_at: at(seconds),
        expires_at: expires.map(at),
    }
}

async fn stored_subscription(store: &dyn Store, feed: &Feed, subscriber: &UserId) -> Subscription {
    let sub = subscription(feed, subscriber);
    store
        .create_subscription(&sub, &[secret("first", 5, None)])
        .await
        .unwrap();
    sub
}

#[track_caller]
fn assert_not_found<T: Debug>(result: Result<T>, what: &str) {
    match result {
        Err(CoreError::NotFound(found)) if found == what => {}
        other => panic!("expected NotFound({what:?}), got {other:?}"),
    }
}

#[track_caller]
fn assert_conflict<T: Debug>(result: Result<T>) {
    match result {
        Err(CoreError::Conflict(message)) => assert!(!message.is_empty(), "a conflict says why"),
        other => panic!("expected Conflict, got {other:?}"),
    }
}

#[track_caller]
fn assert_bad_cursor<T: Debug>(result: Result<T>) {
    match result {
        Err(CoreError::Validation(errors)) => {
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].path, "cursor");
        }
        other => panic!("expected a cursor validation error, got {other:?}"),
    }
}

/// Reads every page with `limit`, checking the page shape, and returns the items and the page
/// sizes.
async fn all_pages<T>(
    limit: u32,
    fetch: impl AsyncFn(PageRequest) -> Result<Page<T>>,
) -> (Vec<T>, Vec<usize>) {
    let mut request = PageRequest::first(limit);
    let (mut items, mut sizes) = (Vec::new(), Vec::new());
    loop {
        let page = fetch(request.clone()).await.unwrap();
        assert!(
            page.items.len() <= limit as usize,
            "a page holds at most `limit` items"
        );
        sizes.push(page.items.len());
        items.extend(page.items);
        match page.next_cursor {
            Some(cursor) => {
                assert!(sizes.len() < 10_000, "the cursor must advance");
                request.cursor = Some(cursor);
            }
            None => return (items, sizes),
        }
    }
}

fn sorted<T: Ord + Clone>(ids: &[T]) -> Vec<T> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids
}

/// Checks that `listed` is strictly ascending and contains each of `ours` exactly once.
#[track_caller]
fn assert_ascending_with<T: Ord + Debug>(listed: &[T], ours: &[T]) {
    assert!(
        listed.windows(2).all(|w| w[0] < w[1]),
        "ids ascend with no repeats: {listed:?}"
    );
    for id in ours {
        assert_eq!(
            listed.iter().filter(|l| *l == id).count(),
            1,
            "{id:?} listed once"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Store.

/// `ping` succeeds on a working store.
pub async fn the_store_answers_ping(store: &dyn Store) {
    store.ping().unwrap();
}

// ---------------------------------------------------------------------------------------
// Vendors and subscribers.

/// A vendor reads back exactly as created.
pub async fn a_created_vendor_reads_back_equal(store: &dyn Store) {
    let v = stored_vendor(store, VendorStatus::Pending).await;
    assert_eq!(store.get_vendor(&v.id).await.unwrap(), v);
}

/// Creating a vendor under an existing id is a conflict and keeps the first one.
pub async fn a_duplicate_vendor_id_is_a_conflict(store: &dyn Store) {
    let v = stored_vendor(store, VendorStatus::Pending).await;
    let copy = Vendor {
        name: "Impostor".into(),
        ..v.clone()
    };
    assert_conflict(store.create_vendor(&copy).await);
    assert_eq!(store.get_vendor(&v.id).await.unwrap(), v);
}

/// Reading a vendor that was never created is `NotFound("vendor")`.
pub async fn an_unknown_vendor_is_not_found(store: &dyn Store) {
    assert_not_found(store.get_vendor(&VendorId::new()).await, "vendor");
}

/// `set_vendor_status` moves from the expected state and refuses from any other.
pub async fn vendor_status_changes_only_from_the_expected_state(store: &dyn Store) {
    let v = stored_vendor(store, VendorStatus::Pending).await;
    let active = Vendor {
        status: VendorStatus::Active,
        ..v.clone()
    };
    let changed = store
        .set_vendor_status(&v.id, VendorStatus::Pending, VendorStatus::Active)
        .await
        .unwrap();
    assert_eq!(changed, active);
    assert_eq!(store.get_vendor(&v.id).await.unwrap(), active);

    assert_conflict(
        store
            .set_vendor_status(&v.id, VendorStatus::Pending, VendorStatus::Active)
            .await,
    );
    assert_conflict(
        store
            .set_vendor_status(&v.id, VendorStatus::Pending, VendorStatus::Pending)
            .await,
    );
    assert_eq!(store.get_vendor(&v.id).await.unwrap(), active);
}

/// Changing the status of a vendor that does not exist is `NotFound("vendor")`.
pub async fn setting_the_status_of_an_unknown_vendor_is_not_found(store: &dyn Store) {
    assert_not_found(
        store
            .set_vendor_status(
                &VendorId::new(),
                VendorStatus::Pending,
                VendorStatus::Active,
            )
            .await,
        "vendor",
    );
}

/// `list_vendors` filters by status, goes oldest first, and pages cover each vendor once.
pub async fn vendors_list_by_status_in_id_order_across_pages(store: &dyn Store) {
    let mut pending = Vec::new();
    for _ in 0..5 {
        pending.push(stored_vendor(store, VendorStatus::Pending).await.id);
    }
    let active = stored_vendor(store, VendorStatus::Active).await.id;

    let (listed, sizes) = all_pages(2, async |p| {
        store.list_vendors(Some(VendorStatus::Pending), &p).await
    })
    .await;
    assert!(
        sizes.len() >= 3,
        "five vendors at two a page take three pages or more"
    );
    assert!(
        listed.iter().all(|v| v.status == VendorStatus::Pending),
        "only pending vendors"
    );
    let ids: Vec<VendorId> = listed.iter().map(|v| v.id.clone()).collect();
    assert_ascending_with(&ids, &pending);
    assert!(!ids.contains(&active));

    let (all, _) = all_pages(50, async |p| store.list_vendors(None, &p).await).await;
    let ids: Vec<VendorId> = all.into_iter().map(|v| v.id).collect();
    assert_ascending_with(&ids, &[pending.clone(), vec![active]].concat());
}

/// A deleted vendor reads as `NotFound`, and so does deleting it again.
pub async fn a_deleted_vendor_is_gone(store: &dyn Store) {
    let v = stored_vendor(store, VendorStatus::Pending).await;
    let other = stored_vendor(store, VendorStatus::Pending).await;
    store.delete_vendor(&v.id).await.unwrap();
    assert_not_found(store.get_vendor(&v.id).await, "vendor");
    assert_not_found(store.delete_vendor(&v.id).await, "vendor");
    assert_eq!(store.get_vendor(&other.id).await.unwrap(), other);
}

/// A subscriber profile reads back exactly as created.
pub async fn a_created_subscriber_reads_back_equal(store: &dyn Store) {
    let s = subscriber();
    store.create_subscriber(&s).await.unwrap();
    assert_eq!(store.get_subscriber(&s.id).await.unwrap(), s);
}

/// Creating a subscriber under an existing id is a conflict and keeps the first one.
pub async fn a_duplicate_subscriber_id_is_a_conflict(store: &dyn Store) {
    let s = subscriber();
    store.create_subscriber(&s).await.unwrap();
    let copy = Subscriber {
        name: "Impostor".into(),
        ..s.clone()
    };
    assert_conflict(store.create_subscriber(&copy).await);
    assert_eq!(store.get_subscriber(&s.id).await.unwrap(), s);
}

/// Reading a subscriber that was never created is `NotFound("subscriber")`.
pub async fn an_unknown_subscriber_is_not_found(store: &dyn Store) {
    assert_not_found(store.get_subscriber(&UserId::new()).await, "subscriber");
}

// ---------------------------------------------------------------------------------------
// API keys.

/// A key reads back in its tenant, and `find_api_key` returns it with its digest.
pub async fn an_api_key_reads_back_by_tenant_and_by_id_alone(store: &dyn Store) {
    let tenant = VendorId::new();
    let key = api_key(&tenant);
    store
        .create_api_key(&key, "digest-of-the-secret")
        .await
        .unwrap();
    assert_eq!(store.get_api_key(&tenant, &key.id).await.unwrap(), key);
    assert_eq!(
        store.find_api_key(&key.id).await.unwrap(),
        (key.clone(), "digest-of-the-secret".to_owned())
    );
    assert_not_found(store.find_api_key(&ApiKeyId::new()).await, "api key");
    assert_not_found(
        store.get_api_key(&tenant, &ApiKeyId::new()).await,
        "api key",
    );
}

/// Creating a key under an existing id is a conflict and keeps the first digest.
pub async fn a_duplicate_api_key_id_is_a_conflict(store: &dyn Store) {
    let tenant = VendorId::new();
    let key = api_key(&tenant);
    store.create_api_key(&key, "first").await.unwrap();
    assert_conflict(store.create_api_key(&key, "second").await);
    assert_eq!(store.find_api_key(&key.id).await.unwrap().1, "first");
}

/// A tenant's keys list oldest first over several pages, without other tenants' keys.
pub async fn api_keys_list_per_tenant_in_id_order_across_pages(store: &dyn Store) {
    let (tenant, other) = (VendorId::new(), VendorId::new());
    let mut ids = Vec::new();
    for _ in 0..7 {
        let key = api_key(&tenant);
        store.create_api_key(&key, "d").await.unwrap();
        ids.push(key.id);
    }
    store.create_api_key(&api_key(&other), "d").await.unwrap();

    let (listed, sizes) = all_pages(3, async |p| store.list_api_keys(&tenant, &p).await).await;
    assert_eq!(sizes, vec![3, 3, 1]);
    assert!(listed.iter().all(|k| k.tenant_id == tenant));
    let listed: Vec<ApiKeyId> = listed.into_iter().map(|k| k.id).collect();
    assert_eq!(listed, sorted(&ids));

    let (everything, sizes) = all_pages(50, async |p| store.list_api_keys(&tenant, &p).await).await;
    assert_eq!((everything.len(), sizes), (7, vec![7]));
}

/// Another tenant's key reads and deletes as `NotFound` and stays in place.
pub async fn cross_tenant_api_key_access_is_not_found_and_changes_nothing(store: &dyn Store) {
    let (owner, intruder) = (VendorId::new(), VendorId::new());
    let key = api_key(&owner);
    store.create_api_key(&key, "d").await.unwrap();
    assert_not_found(store.get_api_key(&intruder, &key.id).await, "api key");
    assert_not_found(store.delete_api_key(&intruder, &key.id).await, "api key");
    assert_eq!(store.get_api_key(&owner, &key.id).await.unwrap(), key);
    let (listed, _) = all_pages(10, async |p| store.list_api_keys(&intruder, &p).await).await;
    assert!(listed.is_empty());
}

/// A deleted key can no longer be read, found or deleted.
pub async fn a_deleted_api_key_is_gone(store: &dyn Store) {
    let tenant = VendorId::new();
    let (key, kept) = (api_key(&tenant), api_key(&tenant));
    store.create_api_key(&key, "d").await.unwrap();
    store.create_api_key(&kept, "d").await.unwrap();
    store.delete_api_key(&tenant, &key.id).await.unwrap();
    assert_not_found(store.get_api_key(&tenant, &key.id).await, "api key");
    assert_not_found(store.find_api_key(&key.id).await, "api key");
    assert_not_found(store.delete_api_key(&tenant, &key.id).await, "api key");
    assert_eq!(store.get_api_key(&tenant, &kept.id).await.unwrap(), kept);
}

// ---------------------------------------------------------------------------------------
// Sources.

/// A source reads back exactly as created.
pub async fn a_created_source_reads_back_equal(store: &dyn Store) {
    let s = stored_source(store, &VendorId::new()).await;
    assert_eq!(store.get_source(&s.tenant_id, &s.id).await.unwrap(), s);
}

/// Creating a source under an existing id is a conflict and keeps the first one.
pub async fn a_duplicate_source_id_is_a_conflict(store: &dyn Store) {
    let s = stored_source(store, &VendorId::new()).await;
    let copy = Source {
        name: "impostor".into(),
        ..s.clone()
    };
    assert_conflict(store.create_source(&copy).await);
    assert_eq!(store.get_source(&s.tenant_id, &s.id).await.unwrap(), s);
}

/// A tenant's sources list oldest first over several pages, without other tenants' sources.
pub async fn sources_list_per_tenant_in_id_order_across_pages(store: &dyn Store) {
    let (tenant, other) = (VendorId::new(), VendorId::new());
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(stored_source(store, &tenant).await.id);
    }
    stored_source(store, &other).await;
    let (listed, sizes) = all_pages(3, async |p| store.list_sources(&tenant, &p).await).await;
    assert_eq!(sizes, vec![3, 3, 1]);
    assert!(listed.iter().all(|s| s.tenant_id == tenant));
    let listed: Vec<SourceId> = listed.into_iter().map(|s| s.id).collect();
    assert_eq!(listed, sorted(&ids));
}

/// When the items fill the last page exactly, that page has no cursor (no empty page follows),
/// and a zero limit means the default page size.
pub async fn a_list_that_fills_its_last_page_exactly_ends_without_a_cursor(store: &dyn Store) {
    let tenant = VendorId::new();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(stored_source(store, &tenant).await.id);
    }
    let (listed, sizes) = all_pages(2, async |p| store.list_sources(&tenant, &p).await).await;
    assert_eq!(sizes, vec![2, 2]);
    assert_eq!(
        listed.into_iter().map(|s| s.id).collect::<Vec<_>>(),
        sorted(&ids)
    );
    let (listed, sizes) = all_pages(4, async |p| store.list_sources(&tenant, &p).await).await;
    assert_eq!((listed.len(), sizes), (4, vec![4]));
    let default = store
        .list_sources(&tenant, &PageRequest::first(0))
        .await
        .unwrap();
    assert_eq!((default.items.len(), default.next_cursor), (4, None));
}

/// `update_source` replaces the stored source.
pub async fn an_updated_source_reads_back_updated(store: &dyn Store) {
    let s = stored_source(store, &VendorId::new()).await;
    let updated = Source {
        name: "renamed".into(),
        schema: None,
        retention_days: 7,
        updated_at: at(100),
        ..s.clone()
    };
    store.update_source(&updated).await.unwrap();
    assert_eq!(
        store.get_source(&s.tenant_id, &s.id).await.unwrap(),
        updated
    );
}

/// Another tenant's source reads, updates and deletes as `NotFound` and stays unchanged.
pub async fn cross_tenant_source_access_is_not_found_and_changes_nothing(store: &dyn Store) {
    let s = stored_source(store, &VendorId::new()).await;
    let intruder = VendorId::new();
    assert_not_found(store.get_source(&intruder, &s.id).await, "source");
    let hijack = Source {
        tenant_id: intruder.clone(),
        name: "hijacked".into(),
        ..s.clone()
    };
    assert_not_found(store.update_source(&hijack).await, "source");
    assert_not_found(store.delete_source(&intruder, &s.id).await, "source");
    assert_eq!(store.get_source(&s.tenant_id, &s.id).await.unwrap(), s);
}

/// A source cannot be deleted while a feed uses it, and can once the feed is gone.
pub async fn a_source_used_by_a_feed_cannot_be_deleted(store: &dyn Store) {
    let s = stored_source(store, &VendorId::new()).await;
    let f = stored_feed(store, &s, "Trades", FeedStatus::Draft).await;
    assert_conflict(store.delete_source(&s.tenant_id, &s.id).await);
    assert_eq!(store.get_source(&s.tenant_id, &s.id).await.unwrap(), s);

    store.delete_feed(&s.tenant_id, &f.id).await.unwrap();
    store.delete_source(&s.tenant_id, &s.id).await.unwrap();
    assert_not_found(store.get_source(&s.tenant_id, &s.id).await, "source");
}

/// Reading, updating or deleting a source that does not exist is `NotFound("source")`.
pub async fn unknown_sources_are_not_found(store: &dyn Store) {
    let tenant = VendorId::new();
    assert_not_found(store.get_source(&tenant, &SourceId::new()).await, "source");
    assert_not_found(store.update_source(&source(&tenant)).await, "source");
    assert_not_found(
        store.delete_source(&tenant, &SourceId::new()).await,
        "source",
    );
}

// ---------------------------------------------------------------------------------------
// Feeds.

/// A feed reads back exactly as created, in its tenant and by id alone.
pub async fn a_created_feed_reads_back_equal_and_is_located_by_id_alone(store: &dyn Store) {
    let s = stored_source(store, &VendorId::new()).await;
    let f = feed(&s, "Private trades", FeedStatus::Draft, Visibility::Private);
    store.create_feed(&f).await.unwrap();
    assert_eq!(store.get_feed(&s.tenant_id, &f.id).await.unwrap(), f);
    assert_eq!(store.locate_feed(&f.id).await.unwrap(), f);
}

/// Creating a feed under an existing id is a conflict and keeps the first one.
pub async fn a_duplicate_feed_id_is_a_conflict(store: &dyn Store) {
    let s = stored_source(store, &VendorId::new()).await;
    let f = stored_feed(store, &s, "Trades", FeedStatus::Draft).await;
    let copy = Feed {
        name: "Impostor".into(),
        ..f.clone()
    };
    assert_conflict(store.create_feed(&copy).await);
    assert_eq!(store.get_feed(&s.tenant_id, &f.id).await.unwrap(), f);
}

/// A feed whose source is another tenant's (or nobody's) is refused with `NotFound("source")`.
pub async fn a_feed_on_another_tenants_source_is_not_found(store: &dyn Store) {
    let foreign = stored_source(store, &VendorId::new()).await;
    let mut f = feed(&foreign, "Stolen", FeedStatus::Draft, Visibility::Public);
    f.tenant_id = VendorId::new();
    assert_not_found(store.create_feed(&f).await, "source");
    assert_not_found(store.locate_feed(&f.id).await, "feed");

    let mut orphan = feed(&foreign, "Orphan", FeedStatus::Draft, Visibility::Public);
    orphan.source_id = SourceId::new();
    assert_not_found(store.create_feed(&orphan).await, "source");
    assert_not_found(store.locate_feed(&orphan.id).await, "feed");
}

/// A tenant's feeds list oldest first over several pages, without other tenants' feeds.
pub async fn feeds_list_per_tenant_in_id_order_across_pages(store: &dyn Store) {
    let s = stored_source(store, &VendorId::new()).await;
    let other = stored_source(store, &VendorId::new()).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            stored_feed(store, &s, &format!("Feed {i}"), FeedStatus::Draft)
                .await
                .id,
        );
    }
    stored_feed(store, &other, "Other", FeedStatus::Draft).await;
    let (listed, sizes) = all_pages(3, async |p| store.list_feeds(&s.tenant_id, &p).await).await;
    assert_eq!(sizes, vec![3, 3, 1]);
    assert!(listed.iter().all(|f| f.tenant_id == s.tenant_id));
    let listed: Vec<FeedId> = listed.into_iter().map(|f| f.id).collect();
    assert_eq!(listed, sorted(&ids));
}

/// `update_feed` succeeds only with the stored revision plus one.
pub async fn a_feed_update_needs_the_next_revision(store: &dyn Store) {
    let s = stored_source(store, &VendorId::new()).await;
    let f = stored_feed(store, &s, "Trades", FeedStatus::Draft).await;
    let v2 = Feed {
        name: "Renamed".into(),
        status: FeedStatus::Published,
        revision: 2,
        updated_at: at(200),
        ..f.clone()
    };
    store.update_feed(&v2).await.unwrap();
    assert_eq!(store.get_feed(&s.tenant_id, &f.id).await.unwrap(), v2);

    let stale = Feed {
        name: "Lost update".into(),
        ..v2.clone()
    };
    assert_conflict(store.update_feed(&stale).await);
    let skipping = Feed {
        name: "Skipped".into(),
        revision: 4,
        ..v2.clone()
    };
    assert_conflict(store.update_feed(&skipping).await);
    let zero = Feed {
        revision: 0,
        ..v2.clone()
    };
    assert_conflict(store.update_feed(&zero).await);
    assert_eq!(store.get_feed(&s.tenant_id, &f.id).await.unwrap(), v2);

    let v3 = Feed {
        description: "Now with more trades".into(),
        revision: 3,
        ..v2.clone()
    };
    store.update_feed(&v3).await.unwrap();
    assert_eq!(store.locate_feed(&f.id).await.unwrap(), v3);
}

/// Reading another tenant's feed is `NotFound("feed")`, though the id exists.
pub async fn cross_tenant_feed_read_is_not_found(store: &dyn Store) {
    let s = stored_source(store, &VendorId::new()).await;
    let f = stored_feed(store, &s, "Trades", FeedStatus::Published).await;
    assert_not_found(store.get_feed(&VendorId::new(), &f.id).await, "feed");
    let (listed, _) = all_pages(10, async |p| store.list_feeds(&VendorId::new(), &p).await).await;
    assert!(listed.is_empty());
}

/// Updating or deleting another tenant's feed is `NotFound("feed")` and changes nothing.
pub async fn cross_tenant_feed_update_and_delete_are_not_found_and_change_nothing(
    store: &dyn Store,
) {
    let s = stored_source(store, &VendorId::new()).await;
    let f = stored_feed(store, &s, "Trades", FeedStatus::Published).await;
    let intruder = stored_source(store, &VendorId::new()).await;
    let hijack = Feed {
        tenant_id: intruder.tenant_id.clone(),
        source_id: intruder.id.clone(),
        name: "Hijacked".into(),
        revision: 2,
        ..f.clone()
    };
    assert_not_found(store.update_feed(&hijack).await, "feed");
    assert_not_found(store.delete_feed(&intruder.tenant_id, &f.id).await, "feed");
    assert_eq!(store.get_feed(&s.tenant_id, &f.id).await.unwrap(), f);
}

/// A feed with a subscription in any status cannot be deleted.
pub async fn a_feed_with_subscriptions_cannot_be_deleted(store: &dyn Store) {
    let (_, _, f) = vendor_with_feed(store).await;
    let sub = stored_subscription(store, &f, &UserId::new()).await;
    assert_conflict(store.delete_feed(&f.tenant_id, &f.id).await);

    let cancelled = Subscription {
        status: SubscriptionStatus::Cancelled,
        history: [
            sub.history.clone(),
            vec![StatusChange {
                status: SubscriptionStatus::Cancelled,
                at: at(300),
            }],
        ]
        .concat(),
        revision: 2,
        ..sub.clone()
    };
    store.update_subscription(&cancelled, None).await.unwrap();
    assert_conflict(store.delete_feed(&f.tenant_id, &f.id).await);
    assert_eq!(store.get_feed(&f.tenant_id, &f.id).await.unwrap(), f);
}

/// A deleted feed reads as `NotFound` in its tenant and by id, and cannot be deleted again.
pub async fn a_deleted_feed_is_gone(store: &dyn Store) {
    let s = stored_source(store, &VendorId::new()).await;
    let f = stored_feed(store, &s, "Doomed", FeedStatus::Draft).await;
    let kept = stored_feed(store, &s, "Kept", FeedStatus::Draft).await;
    store.delete_feed(&s.tenant_id, &f.id).await.unwrap();
    assert_not_found(store.get_feed(&s.tenant_id, &f.id).await, "feed");
    assert_not_found(store.locate_feed(&f.id).await, "feed");
    assert_not_found(store.delete_feed(&s.tenant_id, &f.id).await, "feed");
    assert_eq!(store.get_feed(&s.tenant_id, &kept.id).await.unwrap(), kept);
}

/// Reading, locating, updating or deleting a feed that does not exist is `NotFound("feed")`.
pub async fn unknown_feeds_are_not_found(store: &dyn Store) {
    let s = stored_source(store, &VendorId::new()).await;
    assert_not_found(store.get_feed(&s.tenant_id, &FeedId::new()).await, "feed");
    assert_not_found(store.locate_feed(&FeedId::new()).await, "feed");
    let never_stored = Feed {
        revision: 2,
        ..feed(&s, "Ghost", FeedStatus::Draft, Visibility::Public)
    };
    assert_not_found(store.update_feed(&never_stored).await, "feed");
    assert_not_found(
        store.delete_feed(&s.tenant_id, &FeedId::new()).await,
        "feed",
    );
}

// ---------------------------------------------------------------------------------------
// Catalog.

async fn catalog(store: &dyn Store, query: &str) -> Vec<CatalogEntry> {
    all_pages(50, async |p| store.list_catalog(Some(query), &p).await)
        .await
        .0
}

fn catalog_ids(entries: &[CatalogEntry]) -> Vec<FeedId> {
    entries.iter().map(|e| e.feed_id.clone()).collect()
}

/// Only published, public feeds of active vendors are listed, with vendor name and schema.
pub async fn the_catalog_lists_only_published_public_feeds_of_active_vendors(store: &dyn Store) {
    let word = nonce();
    let name = format!("Listed {word}");
    let active = stored_vendor(store, VendorStatus::Active).await;
    let s = stored_source(store, &active.id).await;
    let listed = stored_feed(store, &s, &name, FeedStatus::Published).await;
    stored_feed(store, &s, &format!("Draft {word}"), FeedStatus::Draft).await;
    stored_feed(store, &s, &format!("Archived {word}"), FeedStatus::Archived).await;
    let private = feed(
        &s,
        &format!("Private {word}"),
        FeedStatus::Published,
        Visibility::Private,
    );
    store.create_feed(&private).await.unwrap();
    let pending = stored_vendor(store, VendorStatus::Pending).await;
    let pending_source = stored_source(store, &pending.id).await;
    let waiting = stored_feed(
        store,
        &pending_source,
        &format!("Waiting {word}"),
        FeedStatus::Published,
    )
    .await;

    let entries = catalog(store, &word).await;
    assert_eq!(
        entries,
        vec![CatalogEntry {
            feed_id: listed.id.clone(),
            vendor_id: active.id.clone(),
            vendor_name: active.name.clone(),
            name,
            description: listed.description.clone(),
            plans: listed.plans.clone(),
            schema: s.schema.clone(),
            sample: listed.sample.clone(),
        }]
    );

    store
        .set_vendor_status(&pending.id, VendorStatus::Pending, VendorStatus::Active)
        .await
        .unwrap();
    assert_eq!(
        catalog_ids(&catalog(store, &word).await),
        sorted(&[listed.id.clone(), waiting.id])
    );

    let unpublished = Feed {
        status: FeedStatus::Archived,
        revision: 2,
        ..listed.clone()
    };
    store.update_feed(&unpublished).await.unwrap();
    assert!(!catalog_ids(&catalog(store, &word).await).contains(&listed.id));
}

/// Without a query the catalog lists every published public feed (and still no drafts).
pub async fn the_catalog_without_a_query_includes_published_feeds(store: &dyn Store) {
    let (_, s, published) = vendor_with_feed(store).await;
    let draft = stored_feed(store, &s, "Draft", FeedStatus::Draft).await;
    let (entries, _) = all_pages(200, async |p| store.list_catalog(None, &p).await).await;
    let ids = catalog_ids(&entries);
    assert_ascending_with(&ids, std::slice::from_ref(&published.id));
    assert!(!ids.contains(&draft.id));
}

/// The query matches a substring of the name or the description, ignoring case.
pub async fn catalog_queries_match_name_or_description_ignoring_case(store: &dyn Store) {
    let word = nonce();
    let v = stored_vendor(store, VendorStatus::Active).await;
    let s = stored_source(store, &v.id).await;
    let by_name = stored_feed(
        store,
        &s,
        &format!("Über Trades {}", word.to_uppercase()),
        FeedStatus::Published,
    )
    .await;
    let mut by_description = feed(&s, "Quotes", FeedStatus::Published, Visibility::Public);
    by_description.description = format!("Best quotes, see {word} for more");
    store.create_feed(&by_description).await.unwrap();

    let both = sorted(&[by_name.id.clone(), by_description.id.clone()]);
    assert_eq!(catalog_ids(&catalog(store, &word).await), both);
    assert_eq!(
        catalog_ids(&catalog(store, &word.to_uppercase()).await),
        both
    );
    assert_eq!(
        catalog_ids(&catalog(store, &format!("über trades {word}")).await),
        vec![by_name.id.clone()]
    );
    assert_eq!(
        catalog_ids(&catalog(store, &format!("see {}", word.to_uppercase())).await),
        vec![by_description.id.clone()]
    );
    assert!(catalog(store, &format!("{word}-absent")).await.is_empty());
}

/// `%`, `_` and `\` in a query match themselves, not any text.
pub async fn catalog_queries_take_wildcards_literally(store: &dyn Store) {
    let word = nonce();
    let v = stored_vendor(store, VendorStatus::Active).await;
    let s = stored_source(store, &v.id).await;
    let percent = stored_feed(store, &s, &format!("100% {word}"), FeedStatus::Published).await;
    stored_feed(store, &s, &format!("1000 {word}"), FeedStatus::Published).await;
    let underscore = stored_feed(store, &s, &format!("a_b {word}"), FeedStatus::Published).await;
    stored_feed(store, &s, &format!("aXb {word}"), FeedStatus::Published).await;
    let backslash = stored_feed(store, &s, &format!("c\\d {word}"), FeedStatus::Published).await;

    assert_eq!(
        catalog_ids(&catalog(store, &format!("100% {word}")).await),
        vec![percent.id]
    );
    assert_eq!(
        catalog_ids(&catalog(store, &format!("a_b {word}")).await),
        vec![underscore.id]
    );
    assert_eq!(
        catalog_ids(&catalog(store, &format!("c\\d {word}")).await),
        vec![backslash.id]
    );
    assert!(catalog(store, &format!("%{word}")).await.is_empty());
}

/// The catalog pages through its entries in feed-id order, each exactly once.
pub async fn catalog_pages_cover_every_entry_once(store: &dyn Store) {
    let word = nonce();
    let v = stored_vendor(store, VendorStatus::Active).await;
    let s = stored_source(store, &v.id).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            stored_feed(
                store,
                &s,
                &format!("Feed {i} {word}"),
                FeedStatus::Published,
            )
            .await
            .id,
        );
    }
    let (entries, sizes) = all_pages(2, async |p| store.list_catalog(Some(&word), &p).await).await;
    assert_eq!(sizes, vec![2, 2, 1]);
    assert_eq!(catalog_ids(&entries), sorted(&ids));
    assert!(
        entries
            .iter()
            .all(|e| e.vendor_name == v.name && e.schema == s.schema)
    );
}

// ---------------------------------------------------------------------------------------
// Reference rows.

/// `put_reference` reports a new row once, then replaces its value.
pub async fn a_reference_row_is_new_once_then_replaced(store: &dyn Store) {
    let tenant = VendorId::new();
    let first = json!({"name": "Apple", "sector": "tech"});
    let second = json!({"name": "Apple Inc.", "sector": "tech", "listed": true});
    assert!(
        store
            .put_reference(&tenant, "tickers", "AAPL", &first)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .get_reference(&tenant, "tickers", "AAPL")
            .await
            .unwrap(),
        first
    );
    assert!(
        !store
            .put_reference(&tenant, "tickers", "AAPL", &second)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .get_reference(&tenant, "tickers", "AAPL")
            .await
            .unwrap(),
        second
    );
}

/// The same key in another tenant or another table is a different row.
pub async fn reference_rows_are_separate_per_tenant_and_table(store: &dyn Store) {
    let (tenant, other) = (VendorId::new(), VendorId::new());
    store
        .put_reference(&tenant, "tickers", "MSFT", &json!(1))
        .await
        .unwrap();
    assert_not_found(
        store.get_reference(&other, "tickers", "MSFT").await,
        "reference row",
    );
    assert_not_found(
        store.get_reference(&tenant, "sectors", "MSFT").await,
        "reference row",
    );
    assert_not_found(
        store.get_reference(&tenant, "tickers", "msft").await,
        "reference row",
    );
    assert!(
        store
            .put_reference(&other, "tickers", "MSFT", &json!(2))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .get_reference(&tenant, "tickers", "MSFT")
            .await
            .unwrap(),
        json!(1)
    );
    assert_eq!(
        store
            .get_reference(&other, "tickers", "MSFT")
            .await
            .unwrap(),
        json!(2)
    );
}

// ---------------------------------------------------------------------------------------
// Subscriptions.

/// A subscription reads back exactly, by tenant and by id alone, with its secrets in order.
pub async fn a_created_subscription_reads_back_with_its_secrets(store: &dyn Store) {
    let (_, _, f) = vendor_with_feed(store).await;
    let sub = subscription(&f, &UserId::new());
    let secrets = vec![secret("newest", 20, None), secret("older", 10, Some(30))];
    store.create_subscription(&sub, &secrets).await.unwrap();
    assert_eq!(
        store.get_subscription(&f.tenant_id, &sub.id).await.unwrap(),
        sub
    );
    assert_eq!(store.locate_subscription(&sub.id).await.unwrap(), sub);
    assert_eq!(
        store
            .get_signing_secrets(&f.tenant_id, &sub.id)
            .await
            .unwrap(),
        secrets
    );

    let pull = Subscription {
        channel: Channel::Pull {},
        filter: None,
        batch: None,
        ..subscription(&f, &UserId::new())
    };
    store.create_subscription(&pull, &[]).await.unwrap();
    assert_eq!(
        store
            .get_subscription(&f.tenant_id, &pull.id)
            .await
            .unwrap(),
        pull
    );
    assert!(
        store
            .get_signing_secrets(&f.tenant_id, &pull.id)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Creating a subscription under an existing id is a conflict and keeps the first one.
pub async fn a_duplicate_subscription_id_is_a_conflict(store: &dyn Store) {
    let (_, _, f) = vendor_with_feed(store).await;
    let sub = stored_subscription(store, &f, &UserId::new()).await;
    let copy = Subscription {
        plan_id: "basic".into(),
        ..sub.clone()
    };
    assert_conflict(
        store
            .create_subscription(&copy, &[secret("other", 9, None)])
            .await,
    );
    assert_eq!(
        store.get_subscription(&f.tenant_id, &sub.id).await.unwrap(),
        sub
    );
    assert_eq!(
        store
            .get_signing_secrets(&f.tenant_id, &sub.id)
            .await
            .unwrap(),
        vec![secret("first", 5, None)]
    );
}

/// A subscriber's subscriptions list across vendors, oldest first, over several pages.
pub async fn subscriptions_list_per_subscriber_across_tenants_and_pages(store: &dyn Store) {
    let (_, _, f1) = vendor_with_feed(store).await;
    let (_, _, f2) = vendor_with_feed(store).await;
    let me = UserId::new();
    let mut ids = Vec::new();
    for i in 0..7 {
        let f = if i % 2 == 0 { &f1 } else { &f2 };
        ids.push(stored_subscription(store, f, &me).await.id);
    }
    stored_subscription(store, &f1, &UserId::new()).await;

    let (listed, sizes) = all_pages(3, async |p| {
        store.list_subscriptions_of_subscriber(&me, &p).await
    })
    .await;
    assert_eq!(sizes, vec![3, 3, 1]);
    assert!(listed.iter().all(|s| s.subscriber_id == me));
    let listed: Vec<SubscriptionId> = listed.into_iter().map(|s| s.id).collect();
    assert_eq!(listed, sorted(&ids));
    let (nobody, _) = all_pages(3, async |p| {
        store
            .list_subscriptions_of_subscriber(&UserId::new(), &p)
            .await
    })
    .await;
    assert!(nobody.is_empty());
}

/// A feed's subscriptions list oldest first over several pages, only in the feed's tenant.
pub async fn subscriptions_list_per_feed_across_pages(store: &dyn Store) {
    let (_, s, f) = vendor_with_feed(store).await;
    let sibling = stored_feed(store, &s, "Sibling", FeedStatus::Published).await;
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(stored_subscription(store, &f, &UserId::new()).await.id);
    }
    stored_subscription(store, &sibling, &UserId::new()).await;

    let (listed, sizes) = all_pages(3, async |p| {
        store
            .list_subscriptions_of_feed(&f.tenant_id, &f.id, &p)
            .await
    })
    .await;
    assert_eq!(sizes, vec![3, 3, 1]);
    assert!(listed.iter().all(|sub| sub.feed_id == f.id));
    let listed: Vec<SubscriptionId> = listed.into_iter().map(|s| s.id).collect();
    assert_eq!(listed, sorted(&ids));

    let (foreign, _) = all_pages(3, async |p| {
        store
            .list_subscriptions_of_feed(&VendorId::new(), &f.id, &p)
            .await
    })
    .await;
    assert!(
        foreign.is_empty(),
        "another tenant sees no subscriptions of the feed"
    );
}

/// `update_subscription` succeeds only with the stored revision plus one.
pub async fn a_subscription_update_needs_the_next_revision(store: &dyn Store) {
    let (_, _, f) = vendor_with_feed(store).await;
    let sub = stored_subscription(store, &f, &UserId::new()).await;
    let paused = Subscription {
        status: SubscriptionStatus::Paused,
        history: [
            sub.history.clone(),
            vec![StatusChange {
                status: SubscriptionStatus::Paused,
                at: at(400),
            }],
        ]
        .concat(),
        revision: 2,
        updated_at: at(400),
        ..sub.clone()
    };
    store.update_subscription(&paused, None).await.unwrap();
    assert_eq!(
        store.get_subscription(&f.tenant_id, &sub.id).await.unwrap(),
        paused
    );

    let stale = Subscription {
        filter: None,
        ..paused.clone()
    };
    assert_conflict(store.update_subscription(&stale, None).await);
    let skipping = Subscription {
        filter: None,
        revision: 5,
        ..paused.clone()
    };
    assert_conflict(store.update_subscription(&skipping, None).await);
    assert_eq!(store.locate_subscription(&sub.id).await.unwrap(), paused);
}

/// Secrets given to `update_subscription` replace the stored ones in the same write; a write
/// that fails on its revision changes neither, and no secrets keeps the stored ones.
pub async fn signing_secrets_are_replaced_atomically_with_the_subscription(store: &dyn Store) {
    let (_, _, f) = vendor_with_feed(store).await;
    let sub = stored_subscription(store, &f, &UserId::new()).await;

    let rotated = vec![secret("second", 50, None), secret("first", 5, Some(90))];
    let v2 = Subscription {
        revision: 2,
        updated_at: at(50),
        ..sub.clone()
    };
    store
        .update_subscription(&v2, Some(&rotated))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_signing_secrets(&f.tenant_id, &sub.id)
            .await
            .unwrap(),
        rotated
    );
    assert_eq!(
        store.get_subscription(&f.tenant_id, &sub.id).await.unwrap(),
        v2
    );

    let stale = Subscription {
        updated_at: at(60),
        ..v2.clone()
    };
    assert_conflict(
        store
            .update_subscription(&stale, Some(&[secret("lost", 60, None)]))
            .await,
    );
    assert_eq!(
        store
            .get_signing_secrets(&f.tenant_id, &sub.id)
            .await
            .unwrap(),
        rotated
    );
    assert_eq!(
        store.get_subscription(&f.tenant_id, &sub.id).await.unwrap(),
        v2
    );

    let v3 = Subscription {
        filter: None,
        revision: 3,
        ..v2.clone()
    };
    store.update_subscription(&v3, None).await.unwrap();
    assert_eq!(
        store
            .get_signing_secrets(&f.tenant_id, &sub.id)
            .await
            .unwrap(),
        rotated
    );

    let v4 = Subscription {
        channel: Channel::Pull {},
        revision: 4,
        ..v3.clone()
    };
    store.update_subscription(&v4, Some(&[])).await.unwrap();
    assert!(
        store
            .get_signing_secrets(&f.tenant_id, &sub.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.get_subscription(&f.tenant_id, &sub.id).await.unwrap(),
        v4
    );
}

/// Another tenant's subscription reads, updates and yields secrets as `NotFound`, unchanged.
pub async fn cross_tenant_subscription_access_is_not_found_and_changes_nothing(store: &dyn Store) {
    let (_, _, f) = vendor_with_feed(store).await;
    let sub = stored_subscription(store, &f, &UserId::new()).await;
    let intruder = VendorId::new();
    assert_not_found(
        store.get_subscription(&intruder, &sub.id).await,
        "subscription",
    );
    assert_not_found(
        store.get_signing_secrets(&intruder, &sub.id).await,
        "subscription",
    );
    let hijack = Subscription {
        tenant_id: intruder.clone(),
        status: SubscriptionStatus::Cancelled,
        revision: 2,
        ..sub.clone()
    };
    assert_not_found(
        store
            .update_subscription(&hijack, Some(&[secret("evil", 7, None)]))
            .await,
        "subscription",
    );
    assert_eq!(
        store.get_subscription(&f.tenant_id, &sub.id).await.unwrap(),
        sub
    );
    assert_eq!(
        store
            .get_signing_secrets(&f.tenant_id, &sub.id)
            .await
            .unwrap(),
        vec![secret("first", 5, None)]
    );
}

/// Every read or update of a subscription that does not exist is `NotFound("subscription")`.
pub async fn unknown_subscriptions_are_not_found(store: &dyn Store) {
    let (_, _, f) = vendor_with_feed(store).await;
    let ghost = Subscription {
        revision: 2,
        ..subscription(&f, &UserId::new())
    };
    assert_not_found(
        store.get_subscription(&f.tenant_id, &ghost.id).await,
        "subscription",
    );
    assert_not_found(store.locate_subscription(&ghost.id).await, "subscription");
    assert_not_found(
        store.get_signing_secrets(&f.tenant_id, &ghost.id).await,
        "subscription",
    );
    assert_not_found(
        store.update_subscription(&ghost, None).await,
        "subscription",
    );
}

/// `list_active_subscriptions` lists active subscriptions of every tenant, oldest first, and
/// leaves out paused and cancelled ones.
pub async fn active_subscriptions_list_across_tenants_oldest_first(store: &dyn Store) {
    let (_, _, mine) = vendor_with_feed(store).await;
    let (_, _, theirs) = vendor_with_feed(store).await;
    let first = stored_subscription(store, &mine, &UserId::new()).await;
    let paused = stored_subscription(store, &mine, &UserId::new()).await;
    let second = stored_subscription(store, &theirs, &UserId::new()).await;
    let cancelled = stored_subscription(store, &theirs, &UserId::new()).await;
    for (sub, status) in [
        (&paused, SubscriptionStatus::Paused),
        (&cancelled, SubscriptionStatus::Cancelled),
    ] {
        let changed = Subscription {
            status,
            revision: 2,
            ..sub.clone()
        };
        store.update_subscription(&changed, None).await.unwrap();
    }

    let (listed, _) = all_pages(2, async |p| store.list_active_subscriptions(&p).await).await;
    assert!(
        listed
            .iter()
            .all(|s| s.status == SubscriptionStatus::Active),
        "only active subscriptions"
    );
    let ids: Vec<SubscriptionId> = listed.iter().map(|s| s.id.clone()).collect();
    assert_ascending_with(&ids, &[first.id.clone(), second.id.clone()]);
    assert!(!ids.contains(&paused.id) && !ids.contains(&cancelled.id));
    assert_eq!(
        listed.iter().find(|s| s.id == second.id),
        Some(&second),
        "listed subscriptions read back equal"
    );
}

// ---------------------------------------------------------------------------------------
// Idempotency keys.

/// A key never seen is reserved: `Started`.
pub async fn a_new_idempotency_key_starts(store: &dyn Store) {
    let scope = nonce();
    assert_eq!(
        store.begin(&scope, "k1", "fp", at(0)).await.unwrap(),
        IdempotencyState::Started
    );
}

/// After `complete`, the same request gets the stored response back, every time.
pub async fn a_completed_idempotency_key_replays_its_response(store: &dyn Store) {
    let scope = nonce();
    let response = StoredResponse {
        status: 201,
        body: br#"{"id":"feed_1"}"#.to_vec(),
    };
    assert_eq!(
        store.begin(&scope, "k", "fp", at(0)).await.unwrap(),
        IdempotencyState::Started
    );
    store.complete(&scope, "k", &response).await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            store.begin(&scope, "k", "fp", at(10)).await.unwrap(),
            IdempotencyState::Completed(response.clone())
        );
    }
    let empty = StoredResponse {
        status: 204,
        body: vec![],
    };
    assert_eq!(
        store.begin(&scope, "empty", "fp", at(0)).await.unwrap(),
        IdempotencyState::Started
    );
    store.complete(&scope, "empty", &empty).await.unwrap();
    assert_eq!(
        store.begin(&scope, "empty", "fp", at(1)).await.unwrap(),
        IdempotencyState::Completed(empty)
    );
}

/// A key used with another request body conflicts, whether that request finished or not.
pub async fn an_idempotency_key_reused_with_another_request_conflicts(store: &dyn Store) {
    let scope = nonce();
    assert_eq!(
        store.begin(&scope, "k", "fp-a", at(0)).await.unwrap(),
        IdempotencyState::Started
    );
    assert_eq!(
        store.begin(&scope, "k", "fp-b", at(1)).await.unwrap(),
        IdempotencyState::Conflict
    );
    let response = StoredResponse {
        status: 201,
        body: b"a".to_vec(),
    };
    store.complete(&scope, "k", &response).await.unwrap();
    assert_eq!(
        store.begin(&scope, "k", "fp-b", at(2)).await.unwrap(),
        IdempotencyState::Conflict
    );
    assert_eq!(
        store.begin(&scope, "k", "fp-a", at(3)).await.unwrap(),
        IdempotencyState::Completed(response)
    );
}

/// The same request again while the first is still running conflicts.
pub async fn an_idempotency_key_in_progress_conflicts(store: &dyn Store) {
    let scope = nonce();
    assert_eq!(
        store.begin(&scope, "k", "fp", at(0)).await.unwrap(),
        IdempotencyState::Started
    );
    assert_eq!(
        store.begin(&scope, "k", "fp", at(1)).await.unwrap(),
        IdempotencyState::Conflict
    );
}

/// A reservation older than the timeout belongs to a request that died; the same request
/// may take it over, another body still conflicts.
pub async fn a_stale_idempotency_reservation_is_taken_over(store: &dyn Store) {
    let scope = nonce();
    let timeout = crate::ports::IDEMPOTENCY_RESERVATION_TIMEOUT.as_secs() as i64;
    assert_eq!(
        store.begin(&scope, "k", "fp", at(0)).await.unwrap(),
        IdempotencyState::Started
    );
    assert_eq!(
        store
            .begin(&scope, "k", "fp", at(timeout - 1))
            .await
            .unwrap(),
        IdempotencyState::Conflict
    );
    assert_eq!(
        store
            .begin(&scope, "k", "other", at(timeout + 1))
            .await
            .unwrap(),
        IdempotencyState::Conflict
    );
    assert_eq!(
        store
            .begin(&scope, "k", "fp", at(timeout + 1))
            .await
            .unwrap(),
        IdempotencyState::Started
    );
    assert_eq!(
        store
            .begin(&scope, "k", "fp", at(timeout + 2))
            .await
            .unwrap(),
        IdempotencyState::Conflict
    );
}

/// `abandon` releases a reservation so the key can start again, with any body.
pub async fn abandoning_an_idempotency_key_frees_it(store: &dyn Store) {
    let scope = nonce();
    assert_eq!(
        store.begin(&scope, "k", "fp-a", at(0)).await.unwrap(),
        IdempotencyState::Started
    );
    store.abandon(&scope, "k").await.unwrap();
    assert_eq!(
        store.begin(&scope, "k", "fp-b", at(1)).await.unwrap(),
        IdempotencyState::Started
    );
    let response = StoredResponse {
        status: 200,
        body: b"b".to_vec(),
    };
    store.complete(&scope, "k", &response).await.unwrap();
    assert_eq!(
        store.begin(&scope, "k", "fp-b", at(2)).await.unwrap(),
        IdempotencyState::Completed(response)
    );
}

/// The same key in two scopes (two callers) is two keys.
pub async fn idempotency_keys_are_separate_per_scope(store: &dyn Store) {
    let (mine, theirs) = (nonce(), nonce());
    assert_eq!(
        store.begin(&mine, "k", "fp", at(0)).await.unwrap(),
        IdempotencyState::Started
    );
    assert_eq!(
        store.begin(&theirs, "k", "other", at(0)).await.unwrap(),
        IdempotencyState::Started
    );
    let response = StoredResponse {
        status: 201,
        body: b"mine".to_vec(),
    };
    store.complete(&mine, "k", &response).await.unwrap();
    assert_eq!(
        store.begin(&theirs, "k", "other", at(1)).await.unwrap(),
        IdempotencyState::Conflict
    );
    assert_eq!(
        store.begin(&mine, "k", "fp", at(1)).await.unwrap(),
        IdempotencyState::Completed(response)
    );
}

// ---------------------------------------------------------------------------------------
// Records.

/// Seconds in an hour, for usage hours.
const HOUR: i64 = 3_600;

/// Far after every `at(…)` the checks use: only the retention checks' records expire.
fn far_future() -> Timestamp {
    at(100 * 365 * 86_400)
}

/// Long before any record the checks (or a real deployment) store expires: the retention
/// checks expire records at this instant.
fn retention_cutoff() -> Timestamp {
    at(-30 * 365 * 86_400)
}

fn raw_record(source: &Source, external: &str, ts: i64) -> RawRecord {
    RawRecord {
        id: RawRecord::id_for(&source.id, external),
        tenant_id: source.tenant_id.clone(),
        source_id: source.id.clone(),
        external_id: Some(external.into()),
        ts: at(ts),
        received_at: at(ts + 1),
        expires_at: far_future(),
        data: json!({"px": 101.5, "ref": external, "tags": ["a", "b"], "nested": {"ok": true}}),
    }
}

fn output_record(feed: &Feed, n: u32, ts: i64) -> OutputRecord {
    OutputRecord {
        id: RecordId::new(),
        feed_id: feed.id.clone(),
        tenant_id: feed.tenant_id.clone(),
        pipeline_version: 3,
        ts: at(ts),
        created_at: at(ts + 2),
        expires_at: far_future(),
        data: json!({"n": n, "px": 100.25}),
    }
}

/// A second feed of the tenant on the same source.
async fn sibling_feed(store: &dyn Store, feed: &Feed) -> Feed {
    let source = store
        .get_source(&feed.tenant_id, &feed.source_id)
        .await
        .unwrap();
    stored_feed(store, &source, "Sibling", FeedStatus::Published).await
}

/// Every output record of a feed, with positions.
async fn outputs_of(store: &dyn Store, feed: &Feed) -> Vec<(u64, OutputRecord)> {
    store
        .output_after(&feed.tenant_id, &feed.id, 0, 10_000)
        .await
        .unwrap()
}

fn records_of<T: Clone>(rows: &[(u64, T)]) -> Vec<T> {
    rows.iter().map(|(_, r)| r.clone()).collect()
}

fn position_of(rows: &[(u64, OutputRecord)], id: &RecordId) -> u64 {
    rows.iter()
        .find(|(_, r)| &r.id == id)
        .map(|(p, _)| *p)
        .unwrap()
}

#[track_caller]
fn assert_positions_ascend<T>(rows: &[(u64, T)]) {
    assert!(
        rows.windows(2).all(|w| w[0].0 < w[1].0),
        "positions strictly increase: {:?}",
        rows.iter().map(|(p, _)| *p).collect::<Vec<_>>()
    );
}

/// A record id already stored, in the same call or an earlier one, is skipped and not
/// counted; the first version stays.
pub async fn appending_raw_records_skips_ids_already_stored(store: &dyn Store) {
    let v = stored_vendor(store, VendorStatus::Active).await;
    let s = stored_source(store, &v.id).await;
    let (r1, r2, r3) = (
        raw_record(&s, "t-1", 10),
        raw_record(&s, "t-2", 20),
        raw_record(&s, "t-3", 30),
    );
    assert_eq!(
        store
            .append_raw(&[r1.clone(), r2.clone(), r1.clone()])
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store.append_raw(&[r1.clone(), r3.clone()]).await.unwrap(),
        1
    );
    let changed = RawRecord {
        data: json!({"px": 1.0}),
        ..r2.clone()
    };
    assert_eq!(store.append_raw(&[changed]).await.unwrap(), 0);
    assert_eq!(store.append_raw(&[]).await.unwrap(), 0);
    assert_eq!(
        store
            .raw_between(&v.id, &s.id, at(0), far_future())
            .await
            .unwrap(),
        vec![r1, r2, r3]
    );
}

/// `raw_between` returns a source's records with `from <= ts < to`, in event-time order
/// whatever the order they were stored in, and nothing to another tenant.
pub async fn raw_records_between_two_times_come_in_event_time_order(store: &dyn Store) {
    let v = stored_vendor(store, VendorStatus::Active).await;
    let s = stored_source(store, &v.id).await;
    let other_source = stored_source(store, &v.id).await;
    let by_ts: Vec<RawRecord> = [10, 20, 30, 40, 50]
        .iter()
        .map(|ts| raw_record(&s, &format!("at-{ts}"), *ts))
        .collect();
    store
        .append_raw(&[by_ts[3].clone(), by_ts[0].clone(), by_ts[2].clone()])
        .await
        .unwrap();
    store
        .append_raw(&[
            by_ts[4].clone(),
            raw_record(&other_source, "at-20", 20),
            by_ts[1].clone(),
        ])
        .await
        .unwrap();

    assert_eq!(
        store
            .raw_between(&v.id, &s.id, at(20), at(50))
            .await
            .unwrap(),
        by_ts[1..4].to_vec()
    );
    assert_eq!(
        store
            .raw_between(&v.id, &s.id, at(0), at(100))
            .await
            .unwrap(),
        by_ts
    );
    assert!(
        store
            .raw_between(&v.id, &s.id, at(20), at(20))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .raw_between(&VendorId::new(), &s.id, at(0), at(100))
            .await
            .unwrap()
            .is_empty(),
        "another tenant reads nothing"
    );
}

/// Output ids already stored are skipped, so reprocessing never duplicates; the first
/// version stays and positions follow the order of first storage.
pub async fn appending_output_records_is_idempotent(store: &dyn Store) {
    let (_, _, f) = vendor_with_feed(store).await;
    let (o1, o2, o3) = (
        output_record(&f, 1, 10),
        output_record(&f, 2, 20),
        output_record(&f, 3, 30),
    );
    assert_eq!(
        store
            .append_output(&[o1.clone(), o2.clone(), o1.clone()])
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .append_output(&[o1.clone(), o2.clone()])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .append_output(&[o2.clone(), o3.clone()])
            .await
            .unwrap(),
        1
    );
    let changed = OutputRecord {
        data: json!({"n": 99}),
        ..o1.clone()
    };
    assert_eq!(store.append_output(&[changed]).await.unwrap(), 0);
    assert_eq!(store.append_output(&[]).await.unwrap(), 0);
    let stored = outputs_of(store, &f).await;
    assert_positions_ascend(&stored);
    assert_eq!(records_of(&stored), vec![o1, o2, o3]);
}

/// A unit's outputs are stored once per feed and pipeline version: the same unit again
/// stores nothing, the same unit under a new pipeline version stores its records, and
/// positions follow the order of the records.
pub async fn appending_a_units_output_records_again_stores_nothing(store: &dyn Store) {
    let (_, _, f) = vendor_with_feed(store).await;
    let sibling = sibling_feed(store, &f).await;
    let (o1, o2) = (output_record(&f, 1, 10), output_record(&f, 2, 20));
    let theirs = output_record(&sibling, 3, 30);
    let unit = [o1.clone(), theirs.clone(), o2.clone()];
    assert_eq!(store.append_output_once("batch-1", &unit).await.unwrap(), 3);
    assert_eq!(store.append_output_once("batch-1", &unit).await.unwrap(), 0);
    assert_eq!(store.append_output_once("batch-1", &[]).await.unwrap(), 0);
    let newer = OutputRecord {
        id: RecordId::new(),
        pipeline_version: o1.pipeline_version + 1,
        ..o1.clone()
    };
    assert_eq!(
        store
            .append_output_once("batch-1", std::slice::from_ref(&newer))
            .await
            .unwrap(),
        1
    );
    let stored = outputs_of(store, &f).await;
    assert_positions_ascend(&stored);
    assert_eq!(records_of(&stored), vec![o1, o2, newer]);
    assert_eq!(records_of(&outputs_of(store, &sibling).await), vec![theirs]);
}

/// `output_after` lists one feed of one tenant after a position, in position order, up to
/// `limit`; another tenant's feed id gives nothing.
pub async fn output_records_after_a_position_are_per_tenant_and_feed(store: &dyn Store) {
    let (_, _, f1) = vendor_with_feed(store).await;
    let f2 = sibling_feed(store, &f1).await;
    let (_, _, foreign) = vendor_with_feed(store).await;
    let a: Vec<OutputRecord> = (1..=3).map(|n| output_record(&f1, n, 10)).collect();
    let b: Vec<OutputRecord> = (1..=2).map(|n| output_record(&f2, n, 10)).collect();
    store
        .append_output(&[
            a[0].clone(),
            b[0].clone(),
            a[1].clone(),
            b[1].clone(),
            a[2].clone(),
        ])
        .await
        .unwrap();
    store
        .append_output(&[output_record(&foreign, 1, 10)])
        .await
        .unwrap();

    let listed = outputs_of(store, &f1).await;
    assert_positions_ascend(&listed);
    assert_eq!(records_of(&listed), a);
    assert_eq!(records_of(&outputs_of(store, &f2).await), b);
    let first = listed[0].0;
    assert_eq!(
        store
            .output_after(&f1.tenant_id, &f1.id, first, 100)
            .await
            .unwrap(),
        listed[1..].to_vec()
    );
    assert_eq!(
        store
            .output_after(&f1.tenant_id, &f1.id, 0, 1)
            .await
            .unwrap(),
        listed[..1].to_vec()
    );
    assert!(
        store
            .output_after(&f1.tenant_id, &f1.id, listed[2].0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .output_after(&f1.tenant_id, &foreign.id, 0, 100)
            .await
            .unwrap()
            .is_empty(),
        "another tenant's feed id gives nothing"
    );
    assert!(
        store
            .output_after(&foreign.tenant_id, &f1.id, 0, 100)
            .await
            .unwrap()
            .is_empty(),
        "another tenant reads nothing"
    );
}

/// `output_between` keeps `from <= ts < to` and positions after `after`, in position
/// order, up to `limit`, for one feed of one tenant.
pub async fn output_records_between_two_times_come_in_position_order_after_a_position(
    store: &dyn Store,
) {
    let (_, _, f) = vendor_with_feed(store).await;
    let sibling = sibling_feed(store, &f).await;
    let (_, _, foreign) = vendor_with_feed(store).await;
    let stored_order = [
        output_record(&f, 30, 30),
        output_record(&f, 10, 10),
        output_record(&f, 40, 40),
        output_record(&f, 20, 20),
        output_record(&f, 5, 5),
    ];
    store.append_output(&stored_order).await.unwrap();
    store
        .append_output(&[output_record(&sibling, 1, 20)])
        .await
        .unwrap();
    let between = |after: u64, limit: usize| {
        let (tenant, feed) = (f.tenant_id.clone(), f.id.clone());
        async move {
            store
                .output_between(&tenant, &feed, at(10), at(40), after, limit)
                .await
                .unwrap()
        }
    };

    let all = between(0, 100).await;
    assert_positions_ascend(&all);
    assert_eq!(
        records_of(&all),
        vec![
            stored_order[0].clone(),
            stored_order[1].clone(),
            stored_order[3].clone()
        ]
    );
    assert_eq!(between(all[0].0, 100).await, all[1..].to_vec());
    assert_eq!(between(0, 2).await, all[..2].to_vec());
    assert!(
        store
            .output_between(&f.tenant_id, &foreign.id, at(0), at(100), 0, 100)
            .await
            .unwrap()
            .is_empty(),
        "another tenant's feed id gives nothing"
    );
    assert!(
        store
            .output_between(&foreign.tenant_id, &f.id, at(0), at(100), 0, 100)
            .await
            .unwrap()
            .is_empty(),
        "another tenant reads nothing"
    );
}

/// `output_head` is the position of the feed's newest output record, 0 before the first
/// and for another tenant.
pub async fn the_output_head_is_the_newest_position_of_the_feed(store: &dyn Store) {
    let (_, _, f) = vendor_with_feed(store).await;
    let sibling = sibling_feed(store, &f).await;
    assert_eq!(store.output_head(&f.tenant_id, &f.id).await.unwrap(), 0);
    store
        .append_output(&[output_record(&f, 1, 10), output_record(&f, 2, 5)])
        .await
        .unwrap();
    let stored = outputs_of(store, &f).await;
    assert_eq!(
        store.output_head(&f.tenant_id, &f.id).await.unwrap(),
        stored[1].0
    );
    store
        .append_output(&[output_record(&sibling, 1, 10)])
        .await
        .unwrap();
    assert_eq!(
        store.output_head(&f.tenant_id, &f.id).await.unwrap(),
        stored[1].0,
        "another feed's records do not move the head"
    );
    assert_eq!(
        store.output_head(&VendorId::new(), &f.id).await.unwrap(),
        0,
        "another tenant sees no head"
    );
}

/// `output_at` returns a feed's records at the positions asked, in that order, leaving
/// out positions that hold nothing and other feeds' and tenants' records.
pub async fn output_records_read_by_position_come_in_the_order_asked(store: &dyn Store) {
    let (_, _, f) = vendor_with_feed(store).await;
    let (_, _, foreign) = vendor_with_feed(store).await;
    let (o1, o2, o3) = (
        output_record(&f, 1, 10),
        output_record(&f, 2, 20),
        output_record(&f, 3, 30),
    );
    store
        .append_output(&[o1.clone(), o2.clone(), o3.clone()])
        .await
        .unwrap();
    let stored = outputs_of(store, &f).await;
    let (p1, p3) = (position_of(&stored, &o1.id), position_of(&stored, &o3.id));
    assert_eq!(
        store
            .output_at(&f.tenant_id, &f.id, &[p3, p3 + 1000, p1])
            .await
            .unwrap(),
        vec![(p3, o3), (p1, o1)]
    );
    assert!(
        store
            .output_at(&foreign.tenant_id, &f.id, &[p1])
            .await
            .unwrap()
            .is_empty(),
        "another tenant reads nothing"
    );
    assert!(
        store
            .output_at(&f.tenant_id, &foreign.id, &[p1])
            .await
            .unwrap()
            .is_empty(),
        "another tenant's feed id reads nothing"
    );
    assert!(
        store
            .output_at(&f.tenant_id, &f.id, &[])
            .await
            .unwrap()
            .is_empty()
    );
}

fn feed_error(feed: &Feed, n: i64) -> FeedError {
    FeedError {
        feed_id: feed.id.clone(),
        record_id: (n % 2 == 0).then(RecordId::new),
        pipeline_version: 2,
        rule: usize::try_from(n).unwrap(),
        message: format!("no such field `px` ({n})"),
        at: at(n),
    }
}

/// Pipeline errors list newest first across pages, per feed, and another tenant reads none.
pub async fn feed_errors_list_newest_first_across_pages_per_tenant_and_feed(store: &dyn Store) {
    let (_, _, f) = vendor_with_feed(store).await;
    let sibling = sibling_feed(store, &f).await;
    let errors: Vec<FeedError> = (1..=5).map(|n| feed_error(&f, n)).collect();
    store
        .record_feed_errors(&f.tenant_id, &errors[..2])
        .await
        .unwrap();
    let other = feed_error(&sibling, 9);
    store
        .record_feed_errors(
            &f.tenant_id,
            &[errors[2].clone(), other.clone(), errors[3].clone()],
        )
        .await
        .unwrap();
    store
        .record_feed_errors(&f.tenant_id, &errors[4..])
        .await
        .unwrap();
    store.record_feed_errors(&f.tenant_id, &[]).await.unwrap();

    let newest_first: Vec<FeedError> = errors.iter().rev().cloned().collect();
    let (listed, sizes) = all_pages(2, async |p| {
        store.list_feed_errors(&f.tenant_id, &f.id, &p).await
    })
    .await;
    assert_eq!(sizes, vec![2, 2, 1]);
    assert_eq!(listed, newest_first);
    let (listed, sizes) = all_pages(5, async |p| {
        store.list_feed_errors(&f.tenant_id, &f.id, &p).await
    })
    .await;
    assert_eq!((listed, sizes), (newest_first, vec![5]));
    let (listed, _) = all_pages(5, async |p| {
        store.list_feed_errors(&f.tenant_id, &sibling.id, &p).await
    })
    .await;
    assert_eq!(listed, vec![other]);
    let (listed, sizes) = all_pages(5, async |p| {
        store.list_feed_errors(&VendorId::new(), &f.id, &p).await
    })
    .await;
    assert_eq!((listed, sizes), (vec![], vec![0]));
}

/// `expire_feed_errors(before)` deletes the errors recorded before the cut, keeps the rest,
/// and a second call finds nothing more to delete.
pub async fn feed_errors_recorded_before_the_cut_expire(store: &dyn Store) {
    let (_, _, f) = vendor_with_feed(store).await;
    let errors: Vec<FeedError> = [1000, 2000, 3000]
        .into_iter()
        .map(|n| feed_error(&f, n))
        .collect();
    for e in &errors {
        store
            .record_feed_errors(&f.tenant_id, std::slice::from_ref(e))
            .await
            .unwrap();
    }
    let listed = async || {
        all_pages(10, async |p| {
            store.list_feed_errors(&f.tenant_id, &f.id, &p).await
        })
        .await
        .0
    };
    assert!(store.expire_feed_errors(at(2500)).await.unwrap() >= 2);
    assert_eq!(listed().await, vec![errors[2].clone()]);
    assert_eq!(store.expire_feed_errors(at(2500)).await.unwrap(), 0);
    assert_eq!(
        store.expire_feed_errors(at(3000)).await.unwrap(),
        0,
        "not before the cut"
    );
    assert_eq!(listed().await, vec![errors[2].clone()]);
}

/// `expire_records(now)` deletes exactly the raw and output records with `expires_at < now`,
/// and a deleted newest record's position is never handed out again.
pub async fn expiring_removes_only_expired_records_and_never_reuses_positions(store: &dyn Store) {
    let (v, s, f) = vendor_with_feed(store).await;
    let cutoff = retention_cutoff();
    let raw_old = RawRecord {
        expires_at: cutoff - time::Duration::SECOND,
        ..raw_record(&s, "old", 10)
    };
    let raw_edge = RawRecord {
        expires_at: cutoff,
        ..raw_record(&s, "edge", 20)
    };
    let raw_kept = raw_record(&s, "kept", 30);
    store
        .append_raw(&[raw_old, raw_edge.clone(), raw_kept.clone()])
        .await
        .unwrap();
    let out_old = OutputRecord {
        expires_at: cutoff - time::Duration::SECOND,
        ..output_record(&f, 1, 10)
    };
    let out_edge = OutputRecord {
        expires_at: cutoff,
        ..output_record(&f, 2, 20)
    };
    let out_newest = OutputRecord {
        expires_at: cutoff - time::Duration::MICROSECOND,
        ..output_record(&f, 3, 30)
    };
    store
        .append_output(&[out_old, out_edge.clone(), out_newest.clone()])
        .await
        .unwrap();
    let newest_position = position_of(&outputs_of(store, &f).await, &out_newest.id);

    assert_eq!(store.expire_records(cutoff).await.unwrap(), 3);
    assert_eq!(
        store
            .raw_between(&v.id, &s.id, at(0), far_future())
            .await
            .unwrap(),
        vec![raw_edge, raw_kept]
    );
    assert_eq!(records_of(&outputs_of(store, &f).await), vec![out_edge]);
    assert_eq!(store.expire_records(cutoff).await.unwrap(), 0);

    let after = output_record(&f, 4, 40);
    store
        .append_output(std::slice::from_ref(&after))
        .await
        .unwrap();
    let after_position = position_of(&outputs_of(store, &f).await, &after.id);
    assert!(
        after_position > newest_position,
        "position {after_position} must follow the deleted {newest_position}"
    );
    assert_eq!(
        store.output_head(&f.tenant_id, &f.id).await.unwrap(),
        after_position
    );
}

// ---------------------------------------------------------------------------------------
// Delivery positions, pending deliveries, the delivery log and usage.

fn pending(sub: &Subscription, due: i64, replay: bool) -> PendingDelivery {
    PendingDelivery {
        id: DeliveryId::new(),
        tenant_id: sub.tenant_id.clone(),
        subscription_id: sub.id.clone(),
        record_ids: vec![RecordId::new(), RecordId::new()],
        positions: vec![1, 2],
        attempts: 1,
        next_attempt_at: at(due),
        first_failed_at: at(due - 5),
        replay,
    }
}

/// The pending deliveries among `ours` that are due at `now`, in the store's order.
async fn due_among(
    store: &dyn Store,
    now: Timestamp,
    ours: &[&PendingDelivery],
) -> Vec<PendingDelivery> {
    store
        .due_deliveries(now, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| ours.iter().any(|o| o.id == d.id))
        .collect()
}

/// A subscription's usage as (hour, count), over all time.
async fn usage_of(store: &dyn Store, sub: &Subscription) -> Vec<(Timestamp, u64)> {
    let filter = UsageFilter {
        subscription: Some(sub.id.clone()),
        ..UsageFilter::default()
    };
    store
        .usage(&filter, retention_cutoff(), far_future())
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.hour, row.count))
        .collect()
}

/// A subscription with its feed, in a fresh tenant.
async fn subscribed(store: &dyn Store) -> (Feed, Subscription) {
    let (_, _, f) = vendor_with_feed(store).await;
    let sub = stored_subscription(store, &f, &UserId::new()).await;
    (f, sub)
}

/// A new subscription's position is its feed's output head when it was created.
pub async fn a_new_subscription_starts_at_its_feeds_output_head(store: &dyn Store) {
    let (f, early) = subscribed(store).await;
    assert_eq!(
        store
            .delivery_position(&f.tenant_id, &early.id)
            .await
            .unwrap(),
        0
    );
    store
        .append_output(&[output_record(&f, 1, 10), output_record(&f, 2, 20)])
        .await
        .unwrap();
    let head = store.output_head(&f.tenant_id, &f.id).await.unwrap();
    assert!(head > 0);
    let late = stored_subscription(store, &f, &UserId::new()).await;
    assert_eq!(
        store
            .delivery_position(&f.tenant_id, &late.id)
            .await
            .unwrap(),
        head
    );
    assert_eq!(
        store
            .delivery_position(&f.tenant_id, &early.id)
            .await
            .unwrap(),
        0,
        "later output does not move an existing position"
    );
    assert_not_found(
        store.delivery_position(&VendorId::new(), &late.id).await,
        "subscription",
    );
    assert_not_found(
        store
            .delivery_position(&f.tenant_id, &SubscriptionId::new())
            .await,
        "subscription",
    );
}

/// `advance` moves the position, adds the acknowledged count to the UTC hour of `at`
/// (summing within an hour), stores parked deliveries, and adds no row for 0.
pub async fn advancing_moves_the_position_and_counts_usage_in_the_hour_of_the_acknowledgement(
    store: &dyn Store,
) {
    let (f, sub) = subscribed(store).await;
    let parked = pending(&sub, 50, false);
    store
        .advance(
            &f.tenant_id,
            &sub.id,
            0,
            7,
            3,
            at(2 * HOUR + 3599),
            std::slice::from_ref(&parked),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .delivery_position(&f.tenant_id, &sub.id)
            .await
            .unwrap(),
        7
    );
    assert_eq!(
        due_among(store, at(50), &[&parked]).await,
        vec![parked.clone()]
    );
    store
        .advance(&f.tenant_id, &sub.id, 7, 7, 2, at(2 * HOUR), &[])
        .await
        .unwrap();
    store
        .advance(&f.tenant_id, &sub.id, 7, 9, 4, at(3 * HOUR), &[])
        .await
        .unwrap();
    store
        .advance(&f.tenant_id, &sub.id, 9, 12, 0, at(5 * HOUR), &[])
        .await
        .unwrap();
    assert_eq!(
        store
            .delivery_position(&f.tenant_id, &sub.id)
            .await
            .unwrap(),
        12
    );
    let filter = UsageFilter {
        subscription: Some(sub.id.clone()),
        ..UsageFilter::default()
    };
    let row = |hour: i64, count: u64| UsageRow {
        tenant_id: sub.tenant_id.clone(),
        subscription_id: sub.id.clone(),
        subscriber_id: sub.subscriber_id.clone(),
        hour: at(hour * HOUR),
        count,
    };
    assert_eq!(
        store.usage(&filter, at(0), at(24 * HOUR)).await.unwrap(),
        vec![row(2, 5), row(3, 4)]
    );
    store.drop_pending(&parked.id).await.unwrap();
}

/// `advance` from a position that is no longer current is a conflict that changes nothing:
/// not the position, not usage, and the parked deliveries are not stored.
pub async fn advancing_from_a_stale_position_is_a_conflict_and_changes_nothing(store: &dyn Store) {
    let (f, sub) = subscribed(store).await;
    store
        .advance(&f.tenant_id, &sub.id, 0, 5, 2, at(HOUR), &[])
        .await
        .unwrap();
    let lost = pending(&sub, 10, false);
    assert_conflict(
        store
            .advance(
                &f.tenant_id,
                &sub.id,
                0,
                9,
                7,
                at(HOUR),
                std::slice::from_ref(&lost),
            )
            .await,
    );
    assert_conflict(
        store
            .advance(
                &f.tenant_id,
                &sub.id,
                6,
                9,
                7,
                at(HOUR),
                std::slice::from_ref(&lost),
            )
            .await,
    );
    assert_eq!(
        store
            .delivery_position(&f.tenant_id, &sub.id)
            .await
            .unwrap(),
        5
    );
    assert_eq!(usage_of(store, &sub).await, vec![(at(HOUR), 2)]);
    assert!(due_among(store, far_future(), &[&lost]).await.is_empty());
}

/// Advancing another tenant's or an unknown subscription is `NotFound("subscription")` and
/// changes nothing.
pub async fn advancing_another_tenants_subscription_is_not_found_and_changes_nothing(
    store: &dyn Store,
) {
    let (f, sub) = subscribed(store).await;
    let lost = pending(&sub, 10, false);
    assert_not_found(
        store
            .advance(
                &VendorId::new(),
                &sub.id,
                0,
                9,
                7,
                at(HOUR),
                std::slice::from_ref(&lost),
            )
            .await,
        "subscription",
    );
    assert_not_found(
        store
            .advance(&f.tenant_id, &SubscriptionId::new(), 0, 9, 7, at(HOUR), &[])
            .await,
        "subscription",
    );
    assert_eq!(
        store
            .delivery_position(&f.tenant_id, &sub.id)
            .await
            .unwrap(),
        0
    );
    assert!(usage_of(store, &sub).await.is_empty());
    assert!(due_among(store, far_future(), &[&lost]).await.is_empty());
}

/// Parked deliveries come back once due (`next_attempt_at <= now`), earliest due first; an
/// id already pending keeps its first version.
pub async fn parked_deliveries_come_due_in_due_order(store: &dyn Store) {
    let (_, sub) = subscribed(store).await;
    let (d20, d10, d30) = (
        pending(&sub, 20, false),
        pending(&sub, 10, true),
        pending(&sub, 30, false),
    );
    let ours = [&d20, &d10, &d30];
    store
        .park(&[d20.clone(), d10.clone(), d30.clone()])
        .await
        .unwrap();
    let again = PendingDelivery {
        attempts: 9,
        next_attempt_at: at(1),
        ..d30.clone()
    };
    store.park(&[again]).await.unwrap();
    store.park(&[]).await.unwrap();

    assert!(due_among(store, at(9), &ours).await.is_empty());
    assert_eq!(
        due_among(store, at(25), &ours).await,
        vec![d10.clone(), d20.clone()]
    );
    assert_eq!(
        due_among(store, at(30), &ours).await,
        vec![d10.clone(), d20.clone(), d30.clone()]
    );
    assert!(store.due_deliveries(at(30), 1).await.unwrap().len() <= 1);
    for d in ours {
        store.drop_pending(&d.id).await.unwrap();
    }
}

/// Acknowledging a pending delivery removes it and counts it in the hour of `at`; a second
/// acknowledgement finds nothing and counts nothing.
pub async fn acknowledging_a_pending_delivery_counts_it_once(store: &dyn Store) {
    let (_, sub) = subscribed(store).await;
    let d = pending(&sub, 10, false);
    store.park(std::slice::from_ref(&d)).await.unwrap();
    assert!(store.ack_pending(&d, 4, at(7 * HOUR + 10)).await.unwrap());
    assert_eq!(usage_of(store, &sub).await, vec![(at(7 * HOUR), 4)]);
    assert!(!store.ack_pending(&d, 4, at(7 * HOUR + 20)).await.unwrap());
    assert_eq!(usage_of(store, &sub).await, vec![(at(7 * HOUR), 4)]);
    assert!(due_among(store, far_future(), &[&d]).await.is_empty());
}

/// A replay is removed when acknowledged but never counted again.
pub async fn acknowledged_replays_are_not_counted(store: &dyn Store) {
    let (_, sub) = subscribed(store).await;
    let replay = pending(&sub, 10, true);
    store.park(std::slice::from_ref(&replay)).await.unwrap();
    assert!(store.ack_pending(&replay, 4, at(HOUR)).await.unwrap());
    assert!(!store.ack_pending(&replay, 4, at(HOUR)).await.unwrap());
    assert!(usage_of(store, &sub).await.is_empty());
    assert!(due_among(store, far_future(), &[&replay]).await.is_empty());
}

/// `reschedule` replaces the delivery: it is due at its new time with its new attempt
/// count. A delivery no longer pending is not brought back by it.
pub async fn rescheduling_changes_when_a_delivery_is_due(store: &dyn Store) {
    let (_, sub) = subscribed(store).await;
    let d = pending(&sub, 10, false);
    store.park(std::slice::from_ref(&d)).await.unwrap();
    let later = PendingDelivery {
        attempts: 2,
        next_attempt_at: at(100),
        ..d.clone()
    };
    store.reschedule(&later).await.unwrap();
    assert!(due_among(store, at(99), &[&d]).await.is_empty());
    assert_eq!(due_among(store, at(100), &[&d]).await, vec![later.clone()]);

    assert!(store.ack_pending(&later, 2, at(HOUR)).await.unwrap());
    let result = store.reschedule(&later).await;
    assert!(
        matches!(result, Ok(()) | Err(CoreError::NotFound(_))),
        "{result:?}"
    );
    assert!(due_among(store, far_future(), &[&d]).await.is_empty());
    assert!(!store.ack_pending(&later, 2, at(HOUR)).await.unwrap());
    assert_eq!(usage_of(store, &sub).await, vec![(at(HOUR), 2)]);
}

/// `drop_pending` removes a delivery without counting it; acknowledging it afterwards
/// finds nothing, and dropping it again is fine.
pub async fn dropping_a_pending_delivery_removes_it_without_counting(store: &dyn Store) {
    let (_, sub) = subscribed(store).await;
    let d = pending(&sub, 10, false);
    store.park(std::slice::from_ref(&d)).await.unwrap();
    store.drop_pending(&d.id).await.unwrap();
    assert!(due_among(store, far_future(), &[&d]).await.is_empty());
    assert!(!store.ack_pending(&d, 3, at(HOUR)).await.unwrap());
    assert!(usage_of(store, &sub).await.is_empty());
    store.drop_pending(&d.id).await.unwrap();
}

/// `skip_to_head` moves a position to the feed's newest output; another tenant's or an
/// unknown subscription is `NotFound("subscription")`.
pub async fn skipping_to_head_moves_the_position_to_the_feeds_newest_output(store: &dyn Store) {
    let (f, sub) = subscribed(store).await;
    let (_, other) = subscribed(store).await;
    store
        .append_output(
            &(1..=4)
                .map(|n| output_record(&f, n, 10))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    let head = store.output_head(&f.tenant_id, &f.id).await.unwrap();
    assert_not_found(
        store.skip_to_head(&VendorId::new(), &sub.id).await,
        "subscription",
    );
    assert_not_found(
        store
            .skip_to_head(&f.tenant_id, &SubscriptionId::new())
            .await,
        "subscription",
    );
    assert_eq!(
        store
            .delivery_position(&f.tenant_id, &sub.id)
            .await
            .unwrap(),
        0
    );
    store.skip_to_head(&f.tenant_id, &sub.id).await.unwrap();
    assert_eq!(
        store
            .delivery_position(&f.tenant_id, &sub.id)
            .await
            .unwrap(),
        head
    );
    store
        .skip_to_head(&other.tenant_id, &other.id)
        .await
        .unwrap();
    assert_eq!(
        store
            .delivery_position(&other.tenant_id, &other.id)
            .await
            .unwrap(),
        0,
        "a feed without output has head 0"
    );
}

fn attempt(sub: &Subscription, n: u32, status: &str) -> DeliveryAttempt {
    let failed = status != "delivered";
    DeliveryAttempt {
        delivery_id: DeliveryId::new(),
        subscription_id: sub.id.clone(),
        records: n,
        attempt: n,
        status: status.into(),
        status_code: Some(if failed { 503 } else { 200 }),
        error: failed.then(|| "Service Unavailable".to_owned()),
        next_attempt_at: failed.then(|| at(i64::from(n) + 60)),
        at: at(i64::from(n)),
    }
}

/// The delivery log lists a subscription's attempts newest first across pages, optionally
/// only those with one status, and shows another tenant nothing.
pub async fn the_delivery_log_lists_newest_first_and_filters_by_status(store: &dyn Store) {
    let (f, sub) = subscribed(store).await;
    let sibling = stored_subscription(store, &f, &UserId::new()).await;
    let (a1, a2, a3, a4) = (
        attempt(&sub, 1, "delivered"),
        attempt(&sub, 2, "failed"),
        attempt(&sub, 3, "delivered"),
        attempt(&sub, 4, "gave_up"),
    );
    store
        .log_attempts(&f.tenant_id, &[a1.clone(), a2.clone()])
        .await
        .unwrap();
    store
        .log_attempts(
            &f.tenant_id,
            &[a3.clone(), attempt(&sibling, 1, "delivered")],
        )
        .await
        .unwrap();
    store
        .log_attempts(&f.tenant_id, std::slice::from_ref(&a4))
        .await
        .unwrap();
    store.log_attempts(&f.tenant_id, &[]).await.unwrap();

    let list = |status: Option<&'static str>, tenant: VendorId| {
        let sub = sub.id.clone();
        async move {
            all_pages(2, async |p| {
                store.list_attempts(&tenant, &sub, status, &p).await
            })
            .await
        }
    };
    assert_eq!(
        list(None, f.tenant_id.clone()).await,
        (vec![a4, a3.clone(), a2, a1.clone()], vec![2, 2])
    );
    assert_eq!(
        list(Some("delivered"), f.tenant_id.clone()).await,
        (vec![a3, a1], vec![2])
    );
    assert_eq!(
        list(Some("disabled"), f.tenant_id.clone()).await,
        (vec![], vec![0])
    );
    assert_eq!(list(None, VendorId::new()).await, (vec![], vec![0]));
}

/// `expire_attempts(before)` deletes the attempts logged before the cut, keeps the rest, and
/// a second call finds nothing more to delete.
pub async fn delivery_attempts_logged_before_the_cut_expire(store: &dyn Store) {
    let (f, sub) = subscribed(store).await;
    let attempts: Vec<DeliveryAttempt> = [1000, 2000, 3000]
        .into_iter()
        .map(|n| attempt(&sub, n, "delivered"))
        .collect();
    store
        .log_attempts(&f.tenant_id, &attempts[..2])
        .await
        .unwrap();
    store
        .log_attempts(&f.tenant_id, &attempts[2..])
        .await
        .unwrap();
    let listed = async || {
        all_pages(10, async |p| {
            store.list_attempts(&f.tenant_id, &sub.id, None, &p).await
        })
        .await
        .0
    };
    assert!(store.expire_attempts(at(2500)).await.unwrap() >= 2);
    assert_eq!(listed().await, vec![attempts[2].clone()]);
    assert_eq!(store.expire_attempts(at(2500)).await.unwrap(), 0);
    assert_eq!(
        store.expire_attempts(at(3000)).await.unwrap(),
        0,
        "not before the cut"
    );
    assert_eq!(listed().await, vec![attempts[2].clone()]);
}

/// `usage` keeps rows with `from <= hour < to` that match every filter given, ordered by
/// subscription then hour.
pub async fn usage_filters_by_tenant_subscriber_subscription_and_hour(store: &dyn Store) {
    let (alice, bob) = (UserId::new(), UserId::new());
    let (_, _, f1) = vendor_with_feed(store).await;
    let (_, _, f2) = vendor_with_feed(store).await;
    let a = stored_subscription(store, &f1, &alice).await;
    let b = stored_subscription(store, &f1, &bob).await;
    let c = stored_subscription(store, &f2, &alice).await;
    for (sub, counts) in [(&a, [1, 2]), (&b, [3, 4]), (&c, [5, 6])] {
        store
            .advance(
                &sub.tenant_id,
                &sub.id,
                0,
                1,
                counts[0],
                at(10 * HOUR + 5),
                &[],
            )
            .await
            .unwrap();
        store
            .advance(&sub.tenant_id, &sub.id, 1, 2, counts[1], at(11 * HOUR), &[])
            .await
            .unwrap();
    }
    let row = |sub: &Subscription, hour: i64, count: u64| UsageRow {
        tenant_id: sub.tenant_id.clone(),
        subscription_id: sub.id.clone(),
        subscriber_id: sub.subscriber_id.clone(),
        hour: at(hour * HOUR),
        count,
    };
    let usage = |filter: UsageFilter, from: i64, to: i64| async move {
        store
            .usage(&filter, at(from * HOUR), at(to * HOUR))
            .await
            .unwrap()
    };
    let all = UsageFilter::default();

    assert_eq!(
        usage(
            UsageFilter {
                tenant: Some(f1.tenant_id.clone()),
                ..all.clone()
            },
            0,
            24
        )
        .await,
        vec![
            row(&a, 10, 1),
            row(&a, 11, 2),
            row(&b, 10, 3),
            row(&b, 11, 4)
        ]
    );
    assert_eq!(
        usage(
            UsageFilter {
                subscriber: Some(alice.clone()),
                ..all.clone()
            },
            0,
            24
        )
        .await,
        vec![
            row(&a, 10, 1),
            row(&a, 11, 2),
            row(&c, 10, 5),
            row(&c, 11, 6)
        ]
    );
    assert_eq!(
        usage(
            UsageFilter {
                tenant: Some(f2.tenant_id.clone()),
                subscriber: Some(alice.clone()),
                ..all.clone()
            },
            11,
            12
        )
        .await,
        vec![row(&c, 11, 6)]
    );
    assert_eq!(
        usage(
            UsageFilter {
                subscription: Some(b.id.clone()),
                ..all.clone()
            },
            10,
            11
        )
        .await,
        vec![row(&b, 10, 3)]
    );
    assert!(
        usage(
            UsageFilter {
                tenant: Some(f2.tenant_id.clone()),
                subscription: Some(a.id.clone()),
                ..all.clone()
            },
            0,
            24
        )
        .await
        .is_empty(),
        "every filter given must match"
    );
    assert!(
        usage(
            UsageFilter {
                subscriber: Some(bob.clone()),
                ..all.clone()
            },
            12,
            24
        )
        .await
        .is_empty()
    );
    let everyone: Vec<UsageRow> = usage(all, 10, 12)
        .await
        .into_iter()
        .filter(|r| [&a.id, &b.id, &c.id].contains(&&r.subscription_id))
        .collect();
    assert_eq!(everyone.len(), 6, "no filter keeps every subscription");

    let ids = [a.id.clone(), b.id.clone(), c.id.clone()];
    let ids = &ids;
    let totals = |from: i64, to: i64| async move {
        let all = store
            .usage_totals(at(from * HOUR), at(to * HOUR))
            .await
            .unwrap();
        ids.iter()
            .filter_map(|s| all.iter().find(|(id, _)| id == s).cloned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        totals(0, 24).await,
        vec![(a.id.clone(), 3), (b.id.clone(), 7), (c.id.clone(), 11)],
        "totals sum every hour of the range per subscription"
    );
    assert_eq!(
        totals(11, 12).await,
        vec![(a.id.clone(), 2), (b.id.clone(), 4), (c.id.clone(), 6)],
        "the range is `from <= hour < to`"
    );
    assert!(
        totals(12, 24).await.is_empty(),
        "subscriptions with nothing in the range are left out"
    );
}

// ---------------------------------------------------------------------------------------
// Cursors.

/// Every list refuses a cursor it did not hand out with a validation error on `cursor`.
pub async fn malformed_cursors_are_rejected(store: &dyn Store) {
    let (v, s, f) = vendor_with_feed(store).await;
    let bad = PageRequest {
        limit: 2,
        cursor: Some("%%not a cursor%%".into()),
    };
    assert_bad_cursor(store.list_vendors(None, &bad).await);
    assert_bad_cursor(store.list_vendors(Some(VendorStatus::Active), &bad).await);
    assert_bad_cursor(store.list_api_keys(&v.id, &bad).await);
    assert_bad_cursor(store.list_sources(&s.tenant_id, &bad).await);
    assert_bad_cursor(store.list_feeds(&f.tenant_id, &bad).await);
    assert_bad_cursor(store.list_catalog(None, &bad).await);
    assert_bad_cursor(store.list_catalog(Some("x"), &bad).await);
    assert_bad_cursor(
        store
            .list_subscriptions_of_subscriber(&UserId::new(), &bad)
            .await,
    );
    assert_bad_cursor(
        store
            .list_subscriptions_of_feed(&f.tenant_id, &f.id, &bad)
            .await,
    );
    assert_bad_cursor(store.list_active_subscriptions(&bad).await);
    assert_bad_cursor(store.list_feed_errors(&f.tenant_id, &f.id, &bad).await);
    assert_bad_cursor(
        store
            .list_attempts(&f.tenant_id, &SubscriptionId::new(), None, &bad)
            .await,
    );
    assert_bad_cursor(
        store
            .list_attempts(&f.tenant_id, &SubscriptionId::new(), Some("failed"), &bad)
            .await,
    );
}

// ---------------------------------------------------------------------------------------
// The change feed.

/// The position of the newest raw record in the log (0 when empty).
async fn log_end(log: &dyn ChangeLog) -> u64 {
    let mut end = 0;
    loop {
        let page = log.raw_after(end, 1_000).await.unwrap();
        match page.last() {
            Some((position, _)) => end = *position,
            None => return end,
        }
    }
}

/// `raw_after` lists raw records in the order they were stored, each once (a duplicate
/// gets no second position), with strictly increasing positions, up to `limit`.
pub async fn the_change_log_lists_raw_records_in_storage_order_once(
    store: &dyn Store,
    log: &dyn ChangeLog,
) {
    let v = stored_vendor(store, VendorStatus::Active).await;
    let s = stored_source(store, &v.id).await;
    let start = log_end(log).await;
    let (r1, r2, r3) = (
        raw_record(&s, "c-1", 30),
        raw_record(&s, "c-2", 10),
        raw_record(&s, "c-3", 20),
    );
    store
        .append_raw(&[r1.clone(), r2.clone(), r1.clone()])
        .await
        .unwrap();
    store.append_raw(&[r3.clone(), r2.clone()]).await.unwrap();

    let listed = log.raw_after(start, 100_000).await.unwrap();
    assert_positions_ascend(&listed);
    assert!(listed.iter().all(|(p, _)| *p > start));
    let ours: Vec<(u64, RawRecord)> = listed
        .into_iter()
        .filter(|(_, r)| r.source_id == s.id)
        .collect();
    assert_eq!(records_of(&ours), vec![r1, r2, r3]);
    assert_eq!(
        log.raw_after(ours[0].0, 100_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|(_, r)| r.source_id == s.id)
            .collect::<Vec<_>>(),
        ours[1..].to_vec()
    );
    assert_eq!(log.raw_after(start, 1).await.unwrap().len(), 1);
    assert!(
        log.raw_after(u64::MAX, 10).await.unwrap().is_empty(),
        "nothing after the largest position"
    );
}

/// A consumer's position is 0 until set, then the last value set, separately per consumer.
pub async fn consumer_positions_round_trip_per_consumer(log: &dyn ChangeLog) {
    let (mine, theirs) = (format!("process-{}", nonce()), format!("index-{}", nonce()));
    assert_eq!(log.consumer_position(&mine).await.unwrap(), 0);
    log.set_consumer_position(&mine, 42).await.unwrap();
    assert_eq!(log.consumer_position(&mine).await.unwrap(), 42);
    log.set_consumer_position(&mine, 7).await.unwrap();
    assert_eq!(log.consumer_position(&mine).await.unwrap(), 7);
    assert_eq!(log.consumer_position(&theirs).await.unwrap(), 0);
    log.set_consumer_position(&theirs, 1).await.unwrap();
    assert_eq!(log.consumer_position(&mine).await.unwrap(), 7);
}

/// After retention deletes the newest raw record, the next record still gets a larger
/// position, so a consumer already past the deleted one misses nothing.
pub async fn raw_positions_are_not_reused_after_expiry(store: &dyn Store, log: &dyn ChangeLog) {
    let v = stored_vendor(store, VendorStatus::Active).await;
    let s = stored_source(store, &v.id).await;
    let start = log_end(log).await;
    let doomed = RawRecord {
        expires_at: retention_cutoff() - time::Duration::SECOND,
        ..raw_record(&s, "doomed", 10)
    };
    store
        .append_raw(std::slice::from_ref(&doomed))
        .await
        .unwrap();
    let doomed_position = log_end(log).await;
    assert!(doomed_position > start);

    assert_eq!(store.expire_records(retention_cutoff()).await.unwrap(), 1);
    let next = raw_record(&s, "next", 20);
    store.append_raw(std::slice::from_ref(&next)).await.unwrap();
    let after: Vec<(u64, RawRecord)> = log.raw_after(start, 100_000).await.unwrap();
    assert!(after.iter().all(|(_, r)| r.id != doomed.id));
    let (position, _) = after.iter().find(|(_, r)| r.id == next.id).unwrap();
    assert!(
        *position > doomed_position,
        "position {position} must follow the deleted {doomed_position}"
    );
}

// ---- Billing ----

fn usd() -> Currency {
    Currency::parse("usd").unwrap()
}

fn money(s: &str) -> Amount {
    Amount::parse(s).unwrap()
}

fn line(sub: &SubscriptionId, kind: LineKind, service_period: &str, quantity: &str) -> InvoiceLine {
    InvoiceLine {
        subscription_id: sub.clone(),
        feed_id: FeedId::new(),
        plan_id: "pro".into(),
        kind,
        service_period: service_period.into(),
        description: format!("{kind:?}, with a comma, and \"quotes\""),
        quantity: money(quantity),
        unit_price: money("0.01"),
        amount: money("1.50"),
    }
}

fn invoice(
    vendor: &VendorId,
    subscriber: &UserId,
    period: &str,
    lines: Vec<InvoiceLine>,
) -> Invoice {
    Invoice {
        id: crate::InvoiceId::new(),
        period: period.into(),
        vendor_id: vendor.clone(),
        subscriber_id: subscriber.clone(),
        currency: usd(),
        lines,
        total: money("3.00"),
        status: InvoiceStatus::Open,
        created_at: at(10),
        stripe_invoice_id: None,
    }
}

/// Runs every billing check against `store`.
pub async fn run_billing(store: &dyn Store) {
    an_invoice_is_stored_once_and_reads_back_equal(store).await;
    invoices_list_by_period_vendor_subscriber_and_status_across_pages(store).await;
    an_invoice_status_change_keeps_its_lines_and_records_the_stripe_id(store).await;
    billed_totals_sum_usage_and_adjustment_lines_per_subscription(store).await;
    a_billing_run_is_replaced_by_its_period(store).await;
    payouts_are_stored_once_and_filter_by_period_and_vendor(store).await;
    every_subscription_is_listed_whatever_its_status(store).await;
    a_subscribers_payment_customer_is_recorded_once(store).await;
}

pub async fn a_subscribers_payment_customer_is_recorded_once(store: &dyn Store) {
    let subscriber = UserId::new();
    assert_eq!(store.payment_customer(&subscriber).await.unwrap(), None);
    assert_eq!(
        store
            .put_payment_customer(&subscriber, "cus_first")
            .await
            .unwrap(),
        "cus_first"
    );
    assert_eq!(
        store
            .put_payment_customer(&subscriber, "cus_second")
            .await
            .unwrap(),
        "cus_first",
        "a second customer made by a racing push is not recorded"
    );
    assert_eq!(
        store
            .payment_customer(&subscriber)
            .await
            .unwrap()
            .as_deref(),
        Some("cus_first")
    );
    assert_eq!(store.payment_customer(&UserId::new()).await.unwrap(), None);
}

pub async fn an_invoice_is_stored_once_and_reads_back_equal(store: &dyn Store) {
    let (vendor, subscriber, sub) = (VendorId::new(), UserId::new(), SubscriptionId::new());
    let first = invoice(
        &vendor,
        &subscriber,
        "2026-11",
        vec![
            line(&sub, LineKind::Fee, "2026-11", "0.5"),
            line(&sub, LineKind::Usage, "2026-11", "120"),
        ],
    );
    assert_eq!(
        store
            .put_invoices(std::slice::from_ref(&first))
            .await
            .unwrap(),
        1
    );
    let changed = Invoice {
        total: money("99.00"),
        lines: vec![line(&sub, LineKind::Usage, "2026-11", "999")],
        ..first.clone()
    };
    assert_eq!(
        store.put_invoices(&[changed]).await.unwrap(),
        0,
        "the id is taken"
    );
    assert_eq!(store.get_invoice(&first.id).await.unwrap(), first);
    assert_eq!(
        billed(store, "2026-11", &[&sub]).await,
        vec![(sub.clone(), 120)],
        "the refused copy billed nothing"
    );
    assert_not_found(store.get_invoice(&crate::InvoiceId::new()).await, "invoice");
}

pub async fn invoices_list_by_period_vendor_subscriber_and_status_across_pages(store: &dyn Store) {
    let (v1, v2) = (VendorId::new(), VendorId::new());
    let (s1, s2) = (UserId::new(), UserId::new());
    let sub = SubscriptionId::new();
    let lines = || vec![line(&sub, LineKind::Fee, "2026-11", "1")];
    let a = invoice(&v1, &s1, "2026-10", lines());
    let b = invoice(&v1, &s2, "2026-11", lines());
    let c = invoice(&v2, &s1, "2026-11", lines());
    assert_eq!(
        store
            .put_invoices(&[a.clone(), b.clone(), c.clone()])
            .await
            .unwrap(),
        3
    );
    store
        .set_invoice_status(&c.id, InvoiceStatus::Paid, None)
        .await
        .unwrap();
    let ids = |page: Page<Invoice>| page.items.into_iter().map(|i| i.id).collect::<Vec<_>>();
    let by =
        |vendor: Option<&VendorId>, subscriber: Option<&UserId>, period: Option<&str>, status| {
            crate::ports::InvoiceFilter {
                period: period.map(str::to_owned),
                vendor: vendor.cloned(),
                subscriber: subscriber.cloned(),
                status,
            }
        };
    let all = PageRequest::first(100);
    let mut of_v1 = vec![a.id.clone(), b.id.clone()];
    of_v1.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    assert_eq!(
        ids(store
            .list_invoices(&by(Some(&v1), None, None, None), &all)
            .await
            .unwrap()),
        of_v1
    );
    assert_eq!(
        ids(store
            .list_invoices(&by(None, Some(&s1), Some("2026-11"), None), &all)
            .await
            .unwrap()),
        vec![c.id.clone()]
    );
    assert_eq!(
        ids(store
            .list_invoices(&by(Some(&v2), None, None, Some(InvoiceStatus::Paid)), &all)
            .await
            .unwrap()),
        vec![c.id.clone()]
    );
    assert!(
        store
            .list_invoices(&by(Some(&v2), None, None, Some(InvoiceStatus::Open)), &all)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let first = store
        .list_invoices(&by(Some(&v1), None, None, None), &PageRequest::first(1))
        .await
        .unwrap();
    assert_eq!(ids(first.clone()), of_v1[..1]);
    let second = store
        .list_invoices(
            &by(Some(&v1), None, None, None),
            &PageRequest {
                limit: 1,
                cursor: first.next_cursor.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(second.clone()), of_v1[1..]);
    assert_eq!(second.next_cursor, None);
}

pub async fn an_invoice_status_change_keeps_its_lines_and_records_the_stripe_id(store: &dyn Store) {
    let sub = SubscriptionId::new();
    let inv = invoice(
        &VendorId::new(),
        &UserId::new(),
        "2026-11",
        vec![line(&sub, LineKind::Usage, "2026-11", "7")],
    );
    store
        .put_invoices(std::slice::from_ref(&inv))
        .await
        .unwrap();
    store
        .set_invoice_status(&inv.id, InvoiceStatus::Open, Some("in_123"))
        .await
        .unwrap();
    store
        .set_invoice_status(&inv.id, InvoiceStatus::Paid, None)
        .await
        .unwrap();
    let read = store.get_invoice(&inv.id).await.unwrap();
    assert_eq!(
        read,
        Invoice {
            status: InvoiceStatus::Paid,
            stripe_invoice_id: Some("in_123".into()),
            ..inv
        }
    );
    assert_not_found(
        store
            .set_invoice_status(&crate::InvoiceId::new(), InvoiceStatus::Paid, None)
            .await,
        "invoice",
    );
}

pub async fn billed_totals_sum_usage_and_adjustment_lines_per_subscription(store: &dyn Store) {
    let sub = SubscriptionId::new();
    let other = SubscriptionId::new();
    let (v, s) = (VendorId::new(), UserId::new());
    let october = invoice(
        &v,
        &s,
        "2026-10",
        vec![
            line(&sub, LineKind::Fee, "2026-10", "1"),
            line(&sub, LineKind::Usage, "2026-10", "100"),
            line(&other, LineKind::Usage, "2026-10", "5"),
        ],
    );
    let november = invoice(
        &v,
        &s,
        "2026-11",
        vec![
            line(&sub, LineKind::Usage, "2026-11", "40"),
            line(&sub, LineKind::Adjustment, "2026-10", "3"),
        ],
    );
    assert_eq!(store.put_invoices(&[october]).await.unwrap(), 1);
    assert_eq!(store.put_invoices(&[november]).await.unwrap(), 1);
    let stranger = SubscriptionId::new();
    assert_eq!(
        billed(store, "2026-10", &[&sub, &other, &stranger]).await,
        vec![(sub.clone(), 103), (other.clone(), 5)]
    );
    assert_eq!(
        billed(store, "2026-11", &[&sub, &other, &stranger]).await,
        vec![(sub.clone(), 40)]
    );
    assert!(billed(store, "2026-09", &[&sub]).await.is_empty());
}

/// `billed_totals` of `period` for `subs` only (a shared store holds others' too), in the
/// order of `subs`.
async fn billed(
    store: &dyn Store,
    period: &str,
    subs: &[&SubscriptionId],
) -> Vec<(SubscriptionId, u64)> {
    let all = store.billed_totals(period).await.unwrap();
    subs.iter()
        .filter_map(|s| all.iter().find(|(id, _)| id == *s).cloned())
        .collect()
}

pub async fn a_billing_run_is_replaced_by_its_period(store: &dyn Store) {
    // Periods far in the future, unique to this check, so a shared store's runs do not mix.
    let year = 5000 + (uuid::Uuid::now_v7().as_u128() % 4000) as u32;
    let (p1, p2) = (format!("{year}-01"), format!("{year}-02"));
    let running = BillingRun {
        period: p2.clone(),
        status: RunStatus::Running,
        invoices: 0,
        started_at: at(1),
        completed_at: None,
    };
    store.put_billing_run(&running).await.unwrap();
    let earlier = BillingRun {
        period: p1.clone(),
        status: RunStatus::Completed,
        invoices: 4,
        started_at: at(0),
        completed_at: Some(at(1)),
    };
    store.put_billing_run(&earlier).await.unwrap();
    let done = BillingRun {
        status: RunStatus::Completed,
        invoices: 2,
        completed_at: Some(at(3)),
        ..running
    };
    store.put_billing_run(&done).await.unwrap();
    let ours: Vec<BillingRun> = store
        .list_billing_runs()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.period == p1 || r.period == p2)
        .collect();
    assert_eq!(
        ours,
        vec![earlier, done],
        "one run per period, oldest first"
    );
}

pub async fn payouts_are_stored_once_and_filter_by_period_and_vendor(store: &dyn Store) {
    let (v1, v2) = (VendorId::new(), VendorId::new());
    let payout = |vendor: &VendorId, period: &str| Payout {
        id: crate::PayoutId::new(),
        vendor_id: vendor.clone(),
        period: period.into(),
        currency: usd(),
        gross: money("100.00"),
        platform_fee_percent: money("12.5"),
        platform_fee: money("12.50"),
        net: money("87.50"),
        invoices: 3,
    };
    let a = payout(&v1, "2026-10");
    let b = payout(&v1, "2026-11");
    let c = payout(&v2, "2026-11");
    for p in [&a, &b, &c] {
        assert!(store.put_payout(p).await.unwrap());
    }
    let changed = Payout {
        net: money("1.00"),
        ..a.clone()
    };
    assert!(!store.put_payout(&changed).await.unwrap());
    assert_eq!(
        store.list_payouts(None, Some(&v1)).await.unwrap(),
        vec![a, b.clone()]
    );
    assert_eq!(
        store
            .list_payouts(Some("2026-11"), Some(&v1))
            .await
            .unwrap(),
        vec![b.clone()]
    );
    let november: Vec<Payout> = store
        .list_payouts(Some("2026-11"), None)
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.vendor_id == v1 || p.vendor_id == v2)
        .collect();
    assert_eq!(november.len(), 2);
    assert!(november.contains(&b) && november.contains(&c));
}

pub async fn every_subscription_is_listed_whatever_its_status(store: &dyn Store) {
    let (_, _, f) = vendor_with_feed(store).await;
    let subscriber = UserId::new();
    let active = stored_subscription(store, &f, &subscriber).await;
    let cancelled = stored_subscription(store, &f, &subscriber).await;
    let mut gone = cancelled.clone();
    gone.status = SubscriptionStatus::Cancelled;
    gone.revision += 1;
    store.update_subscription(&gone, None).await.unwrap();
    let mut seen = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let got = store.list_all_subscriptions(&page).await.unwrap();
        seen.extend(
            got.items
                .into_iter()
                .filter(|s| s.subscriber_id == subscriber),
        );
        match got.next_cursor {
            Some(c) => page.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 2);
    assert!(seen.contains(&active));
    assert!(
        seen.iter()
            .any(|s| s.id == cancelled.id && s.status == SubscriptionStatus::Cancelled)
    );
}

/// The object store contract, run by every adapter of `ObjectStore`. Keys are under a fresh
/// prefix, so it can share a bucket or directory with other runs.
pub async fn run_objects(objects: &dyn crate::ports::ObjectStore) {
    use crate::ports::ObjectStore;
    let root = format!("contract-{}", nonce());
    let key = |k: &str| format!("{root}/{k}");
    let objects: &dyn ObjectStore = objects;

    // Round trip, including bytes that are not UTF-8, and an empty object.
    let model: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    objects
        .put(&key("t1/models/m.onnx"), model.clone())
        .await
        .unwrap();
    assert_eq!(objects.get(&key("t1/models/m.onnx")).await.unwrap(), model);
    objects.put(&key("t1/empty"), Vec::new()).await.unwrap();
    assert_eq!(
        objects.get(&key("t1/empty")).await.unwrap(),
        Vec::<u8>::new()
    );

    // A put replaces.
    objects
        .put(&key("t1/models/m.onnx"), b"v2".to_vec())
        .await
        .unwrap();
    assert_eq!(objects.get(&key("t1/models/m.onnx")).await.unwrap(), b"v2");

    // Missing objects are NotFound, also where a "directory" exists.
    assert!(matches!(
        objects.get(&key("t1/models/other.onnx")).await,
        Err(CoreError::NotFound(_))
    ));
    assert!(matches!(
        objects.get(&key("t1/models")).await,
        Err(CoreError::NotFound(_))
    ));

    // Listing: sorted, only under the prefix, a sibling prefix with the same start left out.
    objects
        .put(&key("t1/exports/2031-01.csv"), b"a".to_vec())
        .await
        .unwrap();
    objects
        .put(&key("t10/exports/2031-01.csv"), b"b".to_vec())
        .await
        .unwrap();
    assert_eq!(
        objects.list(&format!("{root}/t1/")).await.unwrap(),
        vec![
            key("t1/empty"),
            key("t1/exports/2031-01.csv"),
            key("t1/models/m.onnx")
        ]
    );
    assert_eq!(
        objects.list(&format!("{root}/t1/exports/")).await.unwrap(),
        vec![key("t1/exports/2031-01.csv")]
    );
    assert_eq!(
        objects.list(&format!("{root}/nobody/")).await.unwrap(),
        Vec::<String>::new()
    );
    let all = objects.list("").await.unwrap();
    assert!(all.contains(&key("t10/exports/2031-01.csv")));
    assert!(all.windows(2).all(|w| w[0] < w[1]), "sorted: {all:?}");

    // Delete, twice.
    objects.delete(&key("t1/models/m.onnx")).await.unwrap();
    objects.delete(&key("t1/models/m.onnx")).await.unwrap();
    assert!(matches!(
        objects.get(&key("t1/models/m.onnx")).await,
        Err(CoreError::NotFound(_))
    ));
    assert_eq!(
        objects.list(&format!("{root}/t1/")).await.unwrap(),
        vec![key("t1/empty"), key("t1/exports/2031-01.csv")]
    );

    // Keys that could escape or are ambiguous are refused, and nothing is written.
    let too_long = format!("{root}/{}", "a".repeat(crate::ports::MAX_OBJECT_KEY));
    for bad in [
        "",
        "/abs",
        "a//b",
        "a/../b",
        "../b",
        "a/./b",
        "a/",
        "a b",
        "a\\b",
        too_long.as_str(),
    ] {
        assert!(
            matches!(
                objects.put(bad, b"x".to_vec()).await,
                Err(CoreError::Validation(_))
            ),
            "put {bad:?}"
        );
        assert!(
            matches!(objects.get(bad).await, Err(CoreError::Validation(_))),
            "get {bad:?}"
        );
    }
    assert!(matches!(
        objects.list("../").await,
        Err(CoreError::Validation(_))
    ));
    assert!(matches!(
        objects.list(&root).await,
        Err(CoreError::Validation(_))
    ));
    assert_eq!(
        objects.list(&format!("{root}/")).await.unwrap().len(),
        3,
        "no bad key was stored"
    );
}

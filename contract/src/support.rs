//! Builders and assertions the checks share. Every builder makes fresh random ids, so a
//! check's objects never meet another's on a shared database.

pub(crate) use serde_json::json;
pub(crate) use std::fmt::Debug;
pub(crate) use wharf_core::domain::*;
pub(crate) use wharf_core::money::{Amount, Currency};
pub(crate) use wharf_core::ports::{ChangeLog, Result, Store};
pub(crate) use wharf_core::{
    ApiKeyId, CoreError, DeliveryId, FeedId, Page, PageRequest, RecordId, SourceId, SubscriptionId,
    Timestamp, UserId, VendorId,
};

/// A fixed instant plus `seconds`: fixed so values survive the round trip exactly.
pub(crate) fn at(seconds: i64) -> Timestamp {
    time::OffsetDateTime::from_unix_timestamp(1_767_225_600 + seconds).unwrap()
}

/// A random word, to find this run's objects among others in a shared store.
pub(crate) fn nonce() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

pub(crate) fn vendor(status: VendorStatus) -> Vendor {
    Vendor {
        id: VendorId::new(),
        name: format!("Vendor {}", nonce()),
        status,
        created_at: at(0),
    }
}

pub(crate) async fn stored_vendor(store: &dyn Store, status: VendorStatus) -> Vendor {
    let v = vendor(status);
    store.create_vendor(&v).await.unwrap();
    v
}

pub(crate) fn subscriber() -> Subscriber {
    let n = nonce();
    Subscriber {
        id: UserId::new(),
        name: format!("Subscriber {n}"),
        email: Email::parse(&format!("{n}@example.com")).unwrap(),
        email_verified_at: None,
        created_at: at(1),
    }
}

pub(crate) fn api_key(tenant: &VendorId) -> ApiKey {
    ApiKey {
        id: ApiKeyId::new(),
        tenant_id: tenant.clone(),
        name: "ingest".into(),
        scopes: vec![ApiKeyScope::Ingest],
        prefix: "wk_0193a5".into(),
        created_at: at(2),
    }
}

pub(crate) fn source(tenant: &VendorId) -> Source {
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

pub(crate) async fn stored_source(store: &dyn Store, tenant: &VendorId) -> Source {
    let s = source(tenant);
    store.create_source(&s).await.unwrap();
    s
}

pub(crate) fn plan() -> Plan {
    Plan {
        version: 1,
        backfill_unit_price: None,
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

pub(crate) fn feed(
    source: &Source,
    name: &str,
    status: FeedStatus,
    visibility: Visibility,
) -> Feed {
    Feed {
        id: FeedId::new(),
        tenant_id: source.tenant_id.clone(),
        source_id: source.id.clone(),
        name: name.into(),
        description: "Trades above 100 USD".into(),
        pipeline: Pipeline {
            version: 1,
            rules: vec![Rule::Filter {
                expr: wharf_core::expr::Expr::parse("record.px > 100.0").unwrap(),
            }],
        },
        plans: vec![plan()],
        retired_plans: vec![],
        ends_at: None,
        visibility,
        allowed_subscribers: vec![],
        status,
        sample: Some(json!({"px": 101.5})),
        revision: 1,
        created_at: at(4),
        updated_at: at(4),
    }
}

pub(crate) async fn stored_feed(
    store: &dyn Store,
    source: &Source,
    name: &str,
    status: FeedStatus,
) -> Feed {
    let f = feed(source, name, status, Visibility::Public);
    store.create_feed(&f).await.unwrap();
    f
}

/// A tenant with a source and a published public feed.
pub(crate) async fn vendor_with_feed(store: &dyn Store) -> (Vendor, Source, Feed) {
    let v = stored_vendor(store, VendorStatus::Active).await;
    let s = stored_source(store, &v.id).await;
    let f = stored_feed(store, &s, "Large trades", FeedStatus::Published).await;
    (v, s, f)
}

pub(crate) fn subscription(feed: &Feed, subscriber: &UserId) -> Subscription {
    Subscription {
        id: SubscriptionId::new(),
        tenant_id: feed.tenant_id.clone(),
        subscriber_id: subscriber.clone(),
        feed_id: feed.id.clone(),
        plan_id: "pro".into(),
        plan_version: 1,
        plan_moves: vec![],
        channel: Channel::Webhook {
            url: WebhookUrl::parse("https://hooks.example.com/wharf").unwrap(),
        },
        filter: Some(wharf_core::expr::Expr::parse("record.px > 200.0").unwrap()),
        batch: Some(Batch {
            max_records: 100,
            max_wait_ms: 500,
        }),
        status: SubscriptionStatus::Active,
        disabled_reason: None,
        paused_for_invoice: None,
        failing_since: None,
        recent_replays: vec![],
        backfill: None,
        email_confirmed_at: None,
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

pub(crate) fn secret(label: &str, seconds: i64, expires: Option<i64>) -> SigningSecret {
    SigningSecret {
        sealed: format!("sealed:{label}"),
        created_at: at(seconds),
        expires_at: expires.map(at),
    }
}

pub(crate) async fn stored_subscription(
    store: &dyn Store,
    feed: &Feed,
    subscriber: &UserId,
) -> Subscription {
    let sub = subscription(feed, subscriber);
    store
        .create_subscription(&sub, &[secret("first", 5, None)])
        .await
        .unwrap();
    sub
}

#[track_caller]
pub(crate) fn assert_not_found<T: Debug>(result: Result<T>, what: &str) {
    match result {
        Err(CoreError::NotFound(found)) if found == what => {}
        other => panic!("expected NotFound({what:?}), got {other:?}"),
    }
}

#[track_caller]
pub(crate) fn assert_conflict<T: Debug>(result: Result<T>) {
    match result {
        Err(CoreError::Conflict(message)) => assert!(!message.is_empty(), "a conflict says why"),
        other => panic!("expected Conflict, got {other:?}"),
    }
}

#[track_caller]
pub(crate) fn assert_bad_cursor<T: Debug>(result: Result<T>) {
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
pub(crate) async fn all_pages<T>(
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

pub(crate) fn sorted<T: Ord + Clone>(ids: &[T]) -> Vec<T> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids
}

/// Checks that `listed` is strictly ascending and contains each of `ours` exactly once.
#[track_caller]
pub(crate) fn assert_ascending_with<T: Ord + Debug>(listed: &[T], ours: &[T]) {
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

pub(crate) async fn catalog(store: &dyn Store, query: &str) -> Vec<CatalogEntry> {
    all_pages(50, async |p| store.list_catalog(Some(query), &p).await)
        .await
        .0
}

pub(crate) fn catalog_ids(entries: &[CatalogEntry]) -> Vec<FeedId> {
    entries.iter().map(|e| e.feed_id.clone()).collect()
}

/// Seconds in an hour, for usage hours.
pub(crate) const HOUR: i64 = 3_600;

/// Far after every `at(…)` the checks use: only the retention checks' records expire.
pub(crate) fn far_future() -> Timestamp {
    at(100 * 365 * 86_400)
}

/// Long before any record the checks (or a real deployment) store expires: the retention
/// checks expire records at this instant.
pub(crate) fn retention_cutoff() -> Timestamp {
    at(-30 * 365 * 86_400)
}

pub(crate) fn raw_record(source: &Source, external: &str, ts: i64) -> RawRecord {
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

pub(crate) fn output_record(feed: &Feed, n: u32, ts: i64) -> OutputRecord {
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
pub(crate) async fn sibling_feed(store: &dyn Store, feed: &Feed) -> Feed {
    let source = store
        .get_source(&feed.tenant_id, &feed.source_id)
        .await
        .unwrap();
    stored_feed(store, &source, "Sibling", FeedStatus::Published).await
}

/// Every output record of a feed, with positions.
pub(crate) async fn outputs_of(store: &dyn Store, feed: &Feed) -> Vec<(u64, OutputRecord)> {
    store
        .output_after(&feed.tenant_id, &feed.id, 0, 10_000)
        .await
        .unwrap()
}

pub(crate) fn records_of<T: Clone>(rows: &[(u64, T)]) -> Vec<T> {
    rows.iter().map(|(_, r)| r.clone()).collect()
}

pub(crate) fn position_of(rows: &[(u64, OutputRecord)], id: &RecordId) -> u64 {
    rows.iter()
        .find(|(_, r)| &r.id == id)
        .map(|(p, _)| *p)
        .unwrap()
}

#[track_caller]
pub(crate) fn assert_positions_ascend<T>(rows: &[(u64, T)]) {
    assert!(
        rows.windows(2).all(|w| w[0].0 < w[1].0),
        "positions strictly increase: {:?}",
        rows.iter().map(|(p, _)| *p).collect::<Vec<_>>()
    );
}

pub(crate) fn feed_error(feed: &Feed, n: i64) -> FeedError {
    FeedError {
        feed_id: feed.id.clone(),
        record_id: (n % 2 == 0).then(RecordId::new),
        pipeline_version: 2,
        rule: usize::try_from(n).unwrap(),
        message: format!("no such field `px` ({n})"),
        at: at(n),
    }
}

pub(crate) fn pending(sub: &Subscription, due: i64, replay: bool) -> PendingDelivery {
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
        backfill: false,
    }
}

/// The pending deliveries among `ours` that are due at `now`, in the store's order.
pub(crate) async fn due_among(
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
pub(crate) async fn usage_of(store: &dyn Store, sub: &Subscription) -> Vec<(Timestamp, u64)> {
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
pub(crate) async fn subscribed(store: &dyn Store) -> (Feed, Subscription) {
    let (_, _, f) = vendor_with_feed(store).await;
    let sub = stored_subscription(store, &f, &UserId::new()).await;
    (f, sub)
}

pub(crate) fn attempt(sub: &Subscription, n: u32, status: AttemptStatus) -> DeliveryAttempt {
    let failed = status != AttemptStatus::Delivered;
    DeliveryAttempt {
        delivery_id: DeliveryId::new(),
        subscription_id: sub.id.clone(),
        records: n,
        attempt: n,
        status,
        status_code: Some(if failed { 503 } else { 200 }),
        error: failed.then(|| "Service Unavailable".to_owned()),
        next_attempt_at: failed.then(|| at(i64::from(n) + 60)),
        at: at(i64::from(n)),
    }
}

/// The position of the newest raw record in the log (0 when empty).
pub(crate) async fn log_end(log: &dyn ChangeLog) -> u64 {
    let mut end = 0;
    loop {
        let page = log.raw_after(end, 1_000).await.unwrap();
        match page.last() {
            Some((position, _)) => end = *position,
            None => return end,
        }
    }
}

pub(crate) fn usd() -> Currency {
    Currency::parse("usd").unwrap()
}

pub(crate) fn money(s: &str) -> Amount {
    Amount::parse(s).unwrap()
}

pub(crate) fn line(
    sub: &SubscriptionId,
    kind: LineKind,
    service_period: &str,
    quantity: &str,
) -> InvoiceLine {
    InvoiceLine {
        subscription_id: sub.clone(),
        feed_id: FeedId::new(),
        plan_id: "pro".into(),
        plan_version: 1,
        kind,
        service_period: service_period.into(),
        description: format!("{kind:?}, with a comma, and \"quotes\""),
        quantity: money(quantity),
        unit_price: money("0.01"),
        amount: money("1.50"),
    }
}

pub(crate) fn invoice(
    vendor: &VendorId,
    subscriber: &UserId,
    period: &str,
    lines: Vec<InvoiceLine>,
) -> Invoice {
    Invoice {
        id: wharf_core::InvoiceId::new(),
        period: period.into(),
        vendor_id: vendor.clone(),
        subscriber_id: subscriber.clone(),
        currency: usd(),
        lines,
        total: money("3.00"),
        status: InvoiceStatus::Open,
        created_at: at(10),
        stripe_invoice_id: None,
        collection_method: None,
        hosted_invoice_url: None,
        due_at: None,
        payment_failed_at: None,
        subscriptions_paused_at: None,
    }
}

/// `billed_totals` of `period` for `subs` only (a shared store holds others' too), in the
/// order of `subs`.
pub(crate) async fn billed(
    store: &dyn Store,
    period: &str,
    subs: &[&SubscriptionId],
) -> Vec<(SubscriptionId, u64)> {
    let all = store.billed_totals(period).await.unwrap();
    subs.iter()
        .filter_map(|s| all.iter().find(|(id, _)| id == *s).cloned())
        .collect()
}

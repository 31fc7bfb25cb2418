//! Cursors of every list.

use crate::support::*;

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
            .list_attempts(
                &f.tenant_id,
                &SubscriptionId::new(),
                Some(AttemptStatus::Failed),
                &bad,
            )
            .await,
    );
}

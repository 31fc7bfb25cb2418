//! Feeds (`FeedStore`), the catalog aside.

use crate::support::*;

/// A feed reads back exactly as created, in its tenant and by id alone.
pub async fn a_created_feed_reads_back_equal_and_is_located_by_id_alone(store: &dyn Store) {
    let s = stored_source(store, &VendorId::new()).await;
    let f = feed(&s, "Private trades", FeedStatus::Draft, Visibility::Private);
    store.create_feed(&f).await.unwrap();
    assert_eq!(store.get_feed(&s.tenant_id, &f.id).await.unwrap(), f);
    assert_eq!(store.locate_feed(&f.id).await.unwrap(), f);
}

/// Published feeds with an end date are listed across tenants; others are not.
pub async fn deprecated_feeds_are_listed_across_tenants(store: &dyn Store) {
    let s = stored_source(store, &VendorId::new()).await;
    let mut ending = feed(&s, "Ending", FeedStatus::Published, Visibility::Public);
    ending.ends_at = Some(at(500));
    store.create_feed(&ending).await.unwrap();
    let mut draft = feed(&s, "Draft", FeedStatus::Draft, Visibility::Public);
    draft.ends_at = Some(at(500));
    store.create_feed(&draft).await.unwrap();
    let lasting = stored_feed(store, &s, "Lasting", FeedStatus::Published).await;
    let mut ids = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let listed = store.list_deprecated_feeds(&page).await.unwrap();
        ids.extend(listed.items.into_iter().map(|f| f.id));
        match listed.next_cursor {
            Some(c) => page.cursor = Some(c),
            None => break,
        }
    }
    assert!(ids.contains(&ending.id), "{ids:?}");
    assert!(
        !ids.contains(&draft.id) && !ids.contains(&lasting.id),
        "{ids:?}"
    );
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

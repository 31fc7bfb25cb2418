//! Subscriptions and their signing secrets (`SubscriptionStore`).

use crate::support::*;

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
        plan_version: 1,
        plan_moves: vec![],
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

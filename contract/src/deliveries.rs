//! Delivery positions, pending deliveries, the delivery log and usage (`DeliveryStore`).

use crate::support::*;

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
            Counted::usage(3),
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
        .advance(
            &f.tenant_id,
            &sub.id,
            7,
            7,
            Counted::usage(2),
            at(2 * HOUR),
            &[],
        )
        .await
        .unwrap();
    store
        .advance(
            &f.tenant_id,
            &sub.id,
            7,
            9,
            Counted::usage(4),
            at(3 * HOUR),
            &[],
        )
        .await
        .unwrap();
    store
        .advance(
            &f.tenant_id,
            &sub.id,
            9,
            12,
            Counted::usage(0),
            at(5 * HOUR),
            &[],
        )
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
        backfill: 0,
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
        .advance(
            &f.tenant_id,
            &sub.id,
            0,
            5,
            Counted::usage(2),
            at(HOUR),
            &[],
        )
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
                Counted::usage(7),
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
                Counted::usage(7),
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
                Counted::usage(7),
                at(HOUR),
                std::slice::from_ref(&lost),
            )
            .await,
        "subscription",
    );
    assert_not_found(
        store
            .advance(
                &f.tenant_id,
                &SubscriptionId::new(),
                0,
                9,
                Counted::usage(7),
                at(HOUR),
                &[],
            )
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

/// A subscription granted backfill starts where its backfill starts; backfill is counted
/// beside the month's deliveries, by `advance` and by acknowledging a backfill delivery, and
/// both counters are summed per subscription.
pub async fn backfill_starts_below_the_head_and_is_counted_apart(store: &dyn Store) {
    let (f, _) = subscribed(store).await;
    store
        .append_output(&[output_record(&f, 1, 10), output_record(&f, 2, 20)])
        .await
        .unwrap();
    let head = store.output_head(&f.tenant_id, &f.id).await.unwrap();
    let mut sub = subscription(&f, &UserId::new());
    sub.backfill = Some(BackfillGrant {
        after: head - 1,
        through: head,
        records: 1,
        since: Some(at(20)),
    });
    store
        .create_subscription(&sub, &[secret("first", 5, None)])
        .await
        .unwrap();
    assert_eq!(
        store
            .delivery_position(&f.tenant_id, &sub.id)
            .await
            .unwrap(),
        head - 1
    );
    let counted = Counted {
        usage: 2,
        backfill: 1,
    };
    store
        .advance(
            &f.tenant_id,
            &sub.id,
            head - 1,
            head,
            counted,
            at(HOUR),
            &[],
        )
        .await
        .unwrap();
    let mut d = pending(&sub, 10, false);
    d.backfill = true;
    store.park(std::slice::from_ref(&d)).await.unwrap();
    assert!(store.ack_pending(&d, 2, at(HOUR + 5)).await.unwrap());
    let filter = UsageFilter {
        subscription: Some(sub.id.clone()),
        ..UsageFilter::default()
    };
    let rows = store.usage(&filter, at(0), far_future()).await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.count, r.backfill))
            .collect::<Vec<_>>(),
        vec![(2, 3)]
    );
    let totals = store.usage_totals(at(0), far_future()).await.unwrap();
    let mine = totals.iter().find(|(id, _)| *id == sub.id).map(|(_, c)| *c);
    assert_eq!(
        mine,
        Some(Counted {
            usage: 2,
            backfill: 3
        })
    );
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

/// The delivery log lists a subscription's attempts newest first across pages, optionally
/// only those with one status, and shows another tenant nothing.
pub async fn the_delivery_log_lists_newest_first_and_filters_by_status(store: &dyn Store) {
    let (f, sub) = subscribed(store).await;
    let sibling = stored_subscription(store, &f, &UserId::new()).await;
    let (a1, a2, a3, a4) = (
        attempt(&sub, 1, AttemptStatus::Delivered),
        attempt(&sub, 2, AttemptStatus::Failed),
        attempt(&sub, 3, AttemptStatus::Delivered),
        attempt(&sub, 4, AttemptStatus::GaveUp),
    );
    store
        .log_attempts(&f.tenant_id, &[a1.clone(), a2.clone()])
        .await
        .unwrap();
    store
        .log_attempts(
            &f.tenant_id,
            &[a3.clone(), attempt(&sibling, 1, AttemptStatus::Delivered)],
        )
        .await
        .unwrap();
    store
        .log_attempts(&f.tenant_id, std::slice::from_ref(&a4))
        .await
        .unwrap();
    store.log_attempts(&f.tenant_id, &[]).await.unwrap();

    let list = |status: Option<AttemptStatus>, tenant: VendorId| {
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
        list(Some(AttemptStatus::Delivered), f.tenant_id.clone()).await,
        (vec![a3, a1], vec![2])
    );
    assert_eq!(
        list(Some(AttemptStatus::Disabled), f.tenant_id.clone()).await,
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
        .map(|n| attempt(&sub, n, AttemptStatus::Delivered))
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
                Counted::usage(counts[0]),
                at(10 * HOUR + 5),
                &[],
            )
            .await
            .unwrap();
        store
            .advance(
                &sub.tenant_id,
                &sub.id,
                1,
                2,
                Counted::usage(counts[1]),
                at(11 * HOUR),
                &[],
            )
            .await
            .unwrap();
    }
    let row = |sub: &Subscription, hour: i64, count: u64| UsageRow {
        tenant_id: sub.tenant_id.clone(),
        subscription_id: sub.id.clone(),
        subscriber_id: sub.subscriber_id.clone(),
        hour: at(hour * HOUR),
        count,
        backfill: 0,
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
        vec![
            (a.id.clone(), Counted::usage(3)),
            (b.id.clone(), Counted::usage(7)),
            (c.id.clone(), Counted::usage(11))
        ],
        "totals sum every hour of the range per subscription"
    );
    assert_eq!(
        totals(11, 12).await,
        vec![
            (a.id.clone(), Counted::usage(2)),
            (b.id.clone(), Counted::usage(4)),
            (c.id.clone(), Counted::usage(6))
        ],
        "the range is `from <= hour < to`"
    );
    assert!(
        totals(12, 24).await.is_empty(),
        "subscriptions with nothing in the range are left out"
    );
}

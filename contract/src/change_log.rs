//! The local change feed (`ChangeLog`).

use crate::support::*;

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

/// Each tenant reads its own raw records in storage order, and the tenants with records
/// after a position are listed with the position of their last one.
pub async fn each_tenant_reads_its_own_records_and_tenants_with_new_ones_are_listed(
    store: &dyn Store,
    log: &dyn ChangeLog,
) {
    let (a, b) = (
        stored_vendor(store, VendorStatus::Active).await,
        stored_vendor(store, VendorStatus::Active).await,
    );
    let (sa, sb) = (
        stored_source(store, &a.id).await,
        stored_source(store, &b.id).await,
    );
    let start = log_end(log).await;
    let (a1, b1, a2) = (
        raw_record(&sa, "t-1", 10),
        raw_record(&sb, "t-2", 20),
        raw_record(&sa, "t-3", 30),
    );
    store.append_raw(&[a1.clone(), b1.clone()]).await.unwrap();
    store.append_raw(std::slice::from_ref(&a2)).await.unwrap();

    let of_a = log.raw_of_tenant_after(&a.id, start, 100).await.unwrap();
    assert_positions_ascend(&of_a);
    assert_eq!(records_of(&of_a), vec![a1, a2]);
    let of_b = log.raw_of_tenant_after(&b.id, start, 100).await.unwrap();
    assert_eq!(records_of(&of_b), vec![b1]);
    assert_eq!(
        records_of(
            &log.raw_of_tenant_after(&a.id, of_a[0].0, 100)
                .await
                .unwrap()
        ),
        records_of(&of_a[1..])
    );
    assert_eq!(
        log.raw_of_tenant_after(&a.id, start, 1)
            .await
            .unwrap()
            .len(),
        1
    );

    let tenants = log.tenants_after(start).await.unwrap();
    assert!(tenants.contains(&(a.id.clone(), of_a[1].0)), "{tenants:?}");
    assert!(tenants.contains(&(b.id.clone(), of_b[0].0)), "{tenants:?}");
    let later = log.tenants_after(of_b[0].0).await.unwrap();
    assert!(later.contains(&(a.id.clone(), of_a[1].0)));
    assert!(
        !later.iter().any(|(t, _)| *t == b.id),
        "b has nothing after its record"
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

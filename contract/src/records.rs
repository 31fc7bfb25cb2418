//! Raw records, output records and pipeline errors (`RecordStore`).

use crate::support::*;

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

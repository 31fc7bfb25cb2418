//! Vendors and subscriber profiles (`AccountStore`), and `ping`.

use crate::support::*;

/// `ping` succeeds on a working store.
pub async fn the_store_answers_ping(store: &dyn Store) {
    store.ping().unwrap();
}

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

/// A subscriber profile reads back exactly as created, and as changed.
pub async fn a_created_subscriber_reads_back_equal(store: &dyn Store) {
    let s = subscriber();
    store.create_subscriber(&s).await.unwrap();
    assert_eq!(store.get_subscriber(&s.id).await.unwrap(), s);
    let verified = Subscriber {
        email_verified_at: Some(at(2)),
        ..s.clone()
    };
    store.update_subscriber(&verified).await.unwrap();
    assert_eq!(store.get_subscriber(&s.id).await.unwrap(), verified);
    assert_not_found(store.update_subscriber(&subscriber()).await, "subscriber");
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

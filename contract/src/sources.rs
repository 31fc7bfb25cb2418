//! Upstream sources (`SourceStore`).

use crate::support::*;

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

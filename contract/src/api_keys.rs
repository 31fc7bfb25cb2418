//! Ingest API keys (`ApiKeyStore`).

use crate::support::*;

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

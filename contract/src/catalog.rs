//! The public catalog (`FeedStore::list_catalog`).

use crate::support::*;

/// Only published, public feeds of active vendors are listed, with vendor name and schema.
pub async fn the_catalog_lists_only_published_public_feeds_of_active_vendors(store: &dyn Store) {
    let word = nonce();
    let name = format!("Listed {word}");
    let active = stored_vendor(store, VendorStatus::Active).await;
    let s = stored_source(store, &active.id).await;
    let listed = stored_feed(store, &s, &name, FeedStatus::Published).await;
    stored_feed(store, &s, &format!("Draft {word}"), FeedStatus::Draft).await;
    stored_feed(store, &s, &format!("Archived {word}"), FeedStatus::Archived).await;
    let private = feed(
        &s,
        &format!("Private {word}"),
        FeedStatus::Published,
        Visibility::Private,
    );
    store.create_feed(&private).await.unwrap();
    let pending = stored_vendor(store, VendorStatus::Pending).await;
    let pending_source = stored_source(store, &pending.id).await;
    let waiting = stored_feed(
        store,
        &pending_source,
        &format!("Waiting {word}"),
        FeedStatus::Published,
    )
    .await;

    let entries = catalog(store, &word).await;
    assert_eq!(
        entries,
        vec![CatalogEntry {
            feed_id: listed.id.clone(),
            vendor_id: active.id.clone(),
            vendor_name: active.name.clone(),
            name,
            description: listed.description.clone(),
            plans: listed.plans.clone(),
            schema: s.schema.clone(),
            sample: listed.sample.clone(),
            ends_at: None,
        }]
    );

    store
        .set_vendor_status(&pending.id, VendorStatus::Pending, VendorStatus::Active)
        .await
        .unwrap();
    assert_eq!(
        catalog_ids(&catalog(store, &word).await),
        sorted(&[listed.id.clone(), waiting.id])
    );

    let unpublished = Feed {
        status: FeedStatus::Archived,
        revision: 2,
        ..listed.clone()
    };
    store.update_feed(&unpublished).await.unwrap();
    assert!(!catalog_ids(&catalog(store, &word).await).contains(&listed.id));
}

/// Without a query the catalog lists every published public feed (and still no drafts).
pub async fn the_catalog_without_a_query_includes_published_feeds(store: &dyn Store) {
    let (_, s, published) = vendor_with_feed(store).await;
    let draft = stored_feed(store, &s, "Draft", FeedStatus::Draft).await;
    let (entries, _) = all_pages(200, async |p| store.list_catalog(None, &p).await).await;
    let ids = catalog_ids(&entries);
    assert_ascending_with(&ids, std::slice::from_ref(&published.id));
    assert!(!ids.contains(&draft.id));
}

/// The query matches a substring of the name or the description, ignoring case.
pub async fn catalog_queries_match_name_or_description_ignoring_case(store: &dyn Store) {
    let word = nonce();
    let v = stored_vendor(store, VendorStatus::Active).await;
    let s = stored_source(store, &v.id).await;
    let by_name = stored_feed(
        store,
        &s,
        &format!("Über Trades {}", word.to_uppercase()),
        FeedStatus::Published,
    )
    .await;
    let mut by_description = feed(&s, "Quotes", FeedStatus::Published, Visibility::Public);
    by_description.description = format!("Best quotes, see {word} for more");
    store.create_feed(&by_description).await.unwrap();

    let both = sorted(&[by_name.id.clone(), by_description.id.clone()]);
    assert_eq!(catalog_ids(&catalog(store, &word).await), both);
    assert_eq!(
        catalog_ids(&catalog(store, &word.to_uppercase()).await),
        both
    );
    assert_eq!(
        catalog_ids(&catalog(store, &format!("über trades {word}")).await),
        vec![by_name.id.clone()]
    );
    assert_eq!(
        catalog_ids(&catalog(store, &format!("see {}", word.to_uppercase())).await),
        vec![by_description.id.clone()]
    );
    assert!(catalog(store, &format!("{word}-absent")).await.is_empty());
}

/// `%`, `_` and `\` in a query match themselves, not any text.
pub async fn catalog_queries_take_wildcards_literally(store: &dyn Store) {
    let word = nonce();
    let v = stored_vendor(store, VendorStatus::Active).await;
    let s = stored_source(store, &v.id).await;
    let percent = stored_feed(store, &s, &format!("100% {word}"), FeedStatus::Published).await;
    stored_feed(store, &s, &format!("1000 {word}"), FeedStatus::Published).await;
    let underscore = stored_feed(store, &s, &format!("a_b {word}"), FeedStatus::Published).await;
    stored_feed(store, &s, &format!("aXb {word}"), FeedStatus::Published).await;
    let backslash = stored_feed(store, &s, &format!("c\\d {word}"), FeedStatus::Published).await;

    assert_eq!(
        catalog_ids(&catalog(store, &format!("100% {word}")).await),
        vec![percent.id]
    );
    assert_eq!(
        catalog_ids(&catalog(store, &format!("a_b {word}")).await),
        vec![underscore.id]
    );
    assert_eq!(
        catalog_ids(&catalog(store, &format!("c\\d {word}")).await),
        vec![backslash.id]
    );
    assert!(catalog(store, &format!("%{word}")).await.is_empty());
}

/// The catalog pages through its entries in feed-id order, each exactly once.
pub async fn catalog_pages_cover_every_entry_once(store: &dyn Store) {
    let word = nonce();
    let v = stored_vendor(store, VendorStatus::Active).await;
    let s = stored_source(store, &v.id).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            stored_feed(
                store,
                &s,
                &format!("Feed {i} {word}"),
                FeedStatus::Published,
            )
            .await
            .id,
        );
    }
    let (entries, sizes) = all_pages(2, async |p| store.list_catalog(Some(&word), &p).await).await;
    assert_eq!(sizes, vec![2, 2, 1]);
    assert_eq!(catalog_ids(&entries), sorted(&ids));
    assert!(
        entries
            .iter()
            .all(|e| e.vendor_name == v.name && e.schema == s.schema)
    );
}

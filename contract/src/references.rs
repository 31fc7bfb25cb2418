//! Reference rows (`ReferenceStore`).

use crate::support::*;

/// `put_reference` reports a new row once, then replaces its value.
pub async fn a_reference_row_is_new_once_then_replaced(store: &dyn Store) {
    let tenant = VendorId::new();
    let first = json!({"name": "Apple", "sector": "tech"});
    let second = json!({"name": "Apple Inc.", "sector": "tech", "listed": true});
    assert!(
        store
            .put_reference(&tenant, "tickers", "AAPL", &first)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .get_reference(&tenant, "tickers", "AAPL")
            .await
            .unwrap(),
        first
    );
    assert!(
        !store
            .put_reference(&tenant, "tickers", "AAPL", &second)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .get_reference(&tenant, "tickers", "AAPL")
            .await
            .unwrap(),
        second
    );
}

/// The same key in another tenant or another table is a different row.
pub async fn reference_rows_are_separate_per_tenant_and_table(store: &dyn Store) {
    let (tenant, other) = (VendorId::new(), VendorId::new());
    store
        .put_reference(&tenant, "tickers", "MSFT", &json!(1))
        .await
        .unwrap();
    assert_not_found(
        store.get_reference(&other, "tickers", "MSFT").await,
        "reference row",
    );
    assert_not_found(
        store.get_reference(&tenant, "sectors", "MSFT").await,
        "reference row",
    );
    assert_not_found(
        store.get_reference(&tenant, "tickers", "msft").await,
        "reference row",
    );
    assert!(
        store
            .put_reference(&other, "tickers", "MSFT", &json!(2))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .get_reference(&tenant, "tickers", "MSFT")
            .await
            .unwrap(),
        json!(1)
    );
    assert_eq!(
        store
            .get_reference(&other, "tickers", "MSFT")
            .await
            .unwrap(),
        json!(2)
    );
}

//! The store contract, check by check, against the DynamoDB adapter on a real moto server:
//! each check on a table of its own.

mod common;

use std::sync::Arc;
use wharf_aws::DynamoStore;
use wharf_aws::bootstrap::bootstrap;
use wharf_core::ports::Store;

async fn fresh_store() -> Arc<dyn Store> {
    let clients = common::clients().await;
    bootstrap(&clients).await.expect("bootstrap");
    Arc::new(DynamoStore::new(clients))
}

wharf_contract::store_contract!(fresh_store());

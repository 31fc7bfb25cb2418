//! The store contract suite, unchanged, against the DynamoDB adapter on a real moto server.

mod moto;

use std::sync::Arc;
use wharf_aws::DynamoStore;
use wharf_aws::bootstrap::bootstrap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_store_honours_the_store_contract() {
    let moto = moto::Moto::start();
    let clients = moto.clients().await;
    bootstrap(&clients).await.expect("bootstrap");
    let store = Arc::new(DynamoStore::new(clients));
    wharf_core::contract::run_all(store).await;
}

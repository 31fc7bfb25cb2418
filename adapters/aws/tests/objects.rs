//! The object store contract on a real moto S3 bucket.

mod moto;

use wharf_aws::s3::{S3Objects, bootstrap_bucket};

#[tokio::test]
async fn s3_objects_honour_the_object_store_contract() {
    let moto = moto::Moto::start();
    let clients = moto.clients().await;
    bootstrap_bucket(&clients).await.expect("bucket");
    bootstrap_bucket(&clients).await.expect("bucket again");
    let objects = S3Objects::new(&clients);
    wharf_core::contract::run_objects(&objects).await;
    // Five objects stored; the refused keys never reached S3.
    let puts = clients.calls.operation("PutObject");
    assert_eq!(puts, 5);
}

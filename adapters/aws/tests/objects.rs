//! The object store contract, check by check, on a real moto S3 bucket.

mod common;

use wharf_aws::s3::{S3Objects, bootstrap_bucket};

async fn fresh_objects() -> std::sync::Arc<S3Objects> {
    let clients = common::clients().await;
    bootstrap_bucket(&clients).await.expect("bucket");
    std::sync::Arc::new(S3Objects::new(&clients))
}

wharf_contract::object_contract!(fresh_objects());

#[tokio::test]
async fn bootstrapping_the_bucket_twice_changes_nothing_and_refused_keys_never_reach_s3() {
    use wharf_core::ports::ObjectStore;
    let clients = common::clients().await;
    bootstrap_bucket(&clients).await.expect("bucket");
    bootstrap_bucket(&clients).await.expect("bucket again");
    let objects = S3Objects::new(&clients);
    objects.put("t/ok", b"x".to_vec()).await.expect("put");
    assert!(objects.put("../escape", b"x".to_vec()).await.is_err());
    assert!(objects.put("a//b", b"x".to_vec()).await.is_err());
    assert_eq!(clients.calls.operation("PutObject"), 1);
}

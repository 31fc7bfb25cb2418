//! What the aws adapter's tests share: clients on the test binary's moto server, each call on
//! resources (table, queues, bucket) no other test uses.

use wharf_aws::{AwsSettings, Clients};

/// Clients of every service on the shared moto server, named afresh.
pub async fn clients() -> Clients {
    let name = wharf_testkit::moto::fresh_name();
    Clients::connect(AwsSettings {
        endpoint_url: Some(wharf_testkit::moto::shared().url()),
        region: Some("us-east-1".into()),
        credentials: Some(("testing".into(), "testing".into())),
        table: name.clone(),
        queue_prefix: name.clone(),
        bucket: name,
    })
    .await
}

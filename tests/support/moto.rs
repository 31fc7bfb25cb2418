//! The aws shape's test configurations on the test binary's one moto server
//! (`wharf_testkit::moto`), each on resources no other test uses.

pub use wharf_testkit::moto::shared;

/// The aws shape's settings for a fresh set of resources (table, queues, pool, bucket) on the
/// shared server, so tests never see each other's data.
pub fn fresh_aws_config() -> wharf::config::AwsConfig {
    let name = wharf_testkit::moto::fresh_name();
    wharf::config::AwsConfig {
        endpoint_url: Some(shared().url()),
        region: Some("us-east-1".into()),
        table: name.clone(),
        queue_prefix: name.clone(),
        bucket: name.clone(),
        user_pool_name: name,
        access_key_id: Some("testing".into()),
        secret_access_key: Some(wharf::config::Secret("testing".into())),
        ..wharf::config::AwsConfig::default()
    }
}

/// A `wharf serve --backend aws` configuration on fresh resources of the shared server, with a
/// data dir of its own, a random port, and webhooks to loopback allowed (test receivers).
#[allow(dead_code)] // not every test binary that includes this module starts a server
pub fn aws_server_config() -> wharf::config::Config {
    wharf::config::Config {
        data_dir: tempfile::tempdir().expect("a temp dir").keep(),
        listen: "127.0.0.1:0".parse().expect("an address"),
        backend: wharf::config::Backend::Aws,
        aws: fresh_aws_config(),
        allow_private_webhooks: true,
        // No test reaches beyond this machine, whatever a URL in it names.
        egress_allow: Some(vec!["127.0.0.0/8".into(), "::1".into()]),
        ..wharf::config::Config::default()
    }
}

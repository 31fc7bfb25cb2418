//! One moto server per test binary, shared by its tests (each on its own resources). It is
//! started under a watchdog that stops it when the test process is gone.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct Moto {
    addr: SocketAddr,
    /// The watchdog shell: it ends (and stops moto) when the test process is gone.
    _watchdog: std::process::Child,
}

impl Moto {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

pub fn shared() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let binary =
            std::env::var("WHARF_MOTO_SERVER").unwrap_or_else(|_| "moto_server".to_owned());
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let script = format!(
            "\"$0\" -H 127.0.0.1 -p {} >/dev/null 2>&1 & m=$!; \
             while kill -0 {} 2>/dev/null; do sleep 1; done; kill $m",
            addr.port(),
            std::process::id()
        );
        let watchdog = Command::new("sh")
            .args(["-c", &script, &binary])
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "{binary} did not start in 30 s (run scripts/test, or set WHARF_MOTO_SERVER)"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            addr,
            _watchdog: watchdog,
        }
    })
}

/// The aws shape's settings for a fresh set of resources (table, queues, pool, bucket) on the
/// shared server, so tests never see each other's data.
pub fn fresh_aws_config() -> wharf::config::AwsConfig {
    // The whole id: v7 ids made in one millisecond share their leading characters.
    let name = format!("wharf-{}", &wharf_core::UserId::new().as_str()[4..]);
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
        ..wharf::config::Config::default()
    }
}

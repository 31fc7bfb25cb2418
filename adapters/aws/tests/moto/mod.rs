//! A real `moto_server` on a free port for the length of a test. The binary is
//! `$WHARF_MOTO_SERVER`, else `moto_server` on the PATH; `scripts/test` installs it. A test
//! that needs it fails, rather than skips, when it is missing.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    addr: SocketAddr,
}

impl Moto {
    pub fn start() -> Moto {
        let binary =
            std::env::var("WHARF_MOTO_SERVER").unwrap_or_else(|_| "moto_server".to_owned());
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &addr.port().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary} (run scripts/test, or set WHARF_MOTO_SERVER): {e}")
            });
        let moto = Moto { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Clients of every service pointed at this server, with test credentials.
    pub async fn clients(&self) -> wharf_aws::Clients {
        wharf_aws::Clients::connect(wharf_aws::AwsSettings {
            endpoint_url: Some(self.url()),
            region: Some("us-east-1".into()),
            credentials: Some(("testing".into(), "testing".into())),
            ..wharf_aws::AwsSettings::default()
        })
        .await
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

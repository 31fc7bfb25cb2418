//! One moto server per test binary, shared by its tests. The binary is `$WHARF_MOTO_SERVER`,
//! else `moto_server` on the PATH (`scripts/test` installs it); a test that needs it fails,
//! rather than skips, when it is missing. The server runs under a watchdog shell that stops
//! it when the test process is gone, however that process ends.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A running moto server.
pub struct Moto {
    addr: SocketAddr,
    /// The watchdog shell: it ends (and stops moto) when the test process is gone.
    _watchdog: std::process::Child,
}

impl Moto {
    /// The endpoint every AWS client of a test points at.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The server of this test binary, started on first use.
pub fn shared() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(start)
}

fn start() -> Moto {
    let binary = std::env::var("WHARF_MOTO_SERVER").unwrap_or_else(|_| "moto_server".to_owned());
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
        // Waiting for a process to listen: nothing to drain, only time to let pass.
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto {
        addr,
        _watchdog: watchdog,
    }
}

/// A name no other test uses, for a table, queue prefix, bucket or pool of one test.
pub fn fresh_name() -> String {
    // The whole id: v7 ids made in one millisecond share their leading characters.
    format!("wharf-{}", uuid::Uuid::now_v7().simple())
}

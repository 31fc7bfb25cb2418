//! The Stripe stand-in (`stripe_standin.py` beside this crate) as a child process of a test:
//! one per test, so each sees only its own objects and events. The interpreter is
//! `$WHARF_PYTHON`, else `python3`; it needs the official `stripe` package, whose parameter
//! definitions the stand-in checks every request against (`scripts/test` installs it). A test
//! that needs the stand-in fails, rather than skips, when it cannot start.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running stand-in; stopped when dropped (and on its own when the test process ends).
pub struct StripeStandIn {
    url: String,
    child: Child,
}

impl StripeStandIn {
    /// Starts a stand-in that accepts `secret_key` and signs events with `webhook_secret`.
    pub fn start(secret_key: &str, webhook_secret: &str) -> StripeStandIn {
        StripeStandIn::start_with_connect(secret_key, webhook_secret, None)
    }

    /// As [`StripeStandIn::start`], signing connected accounts' events (`account.*`) with
    /// `connect_webhook_secret`, as a Connect endpoint of their own does.
    pub fn start_with_connect(
        secret_key: &str,
        webhook_secret: &str,
        connect_webhook_secret: Option<&str>,
    ) -> StripeStandIn {
        let python = std::env::var("WHARF_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        let script = script();
        let mut args = vec![
            script.to_str().expect("a UTF-8 path"),
            "--secret-key",
            secret_key,
            "--webhook-secret",
            webhook_secret,
        ];
        if let Some(connect) = connect_webhook_secret {
            args.extend(["--connect-webhook-secret", connect]);
        }
        let mut child = Command::new(&python)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {python} {}: {e}", script.display()));
        let stdout = child.stdout.take().expect("the stand-in's output");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the stand-in's first line");
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            panic!(
                "the Stripe stand-in did not start with {python} (run scripts/test, or set \
                 WHARF_PYTHON to a Python with the `stripe` package): {line:?}"
            );
        };
        StripeStandIn {
            url: url.to_owned(),
            child,
        }
    }

    /// The API base Wharf is configured with (`stripe.api_base`).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for StripeStandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stand-in's script in the checkout cargo runs the test in: `testkit/` of the package
/// being tested or of a directory above it. Looked up when the test runs, not where this
/// crate was compiled: a shared target directory serves every checkout of the workspace.
fn script() -> std::path::PathBuf {
    let start = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    std::path::Path::new(&start)
        .ancestors()
        .map(|dir| dir.join("testkit/stripe_standin.py"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("no testkit/stripe_standin.py at or above {start}"))
}

//! The `wharf` binary as a user runs it: serve on an empty data dir, admin create, bad
//! configuration, openapi.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_wharf");

fn wharf(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("WHARF_LOG", "warn")
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Starts `wharf serve` on `data_arg` with `env` on a free port, waits for its ready line and
/// answers the process and the API's base URL.
fn serve(data_arg: &str, env: &[(&str, &str)]) -> (std::process::Child, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--data-dir", data_arg, "--listen", "127.0.0.1:0"])
        .env("WHARF_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    assert!(ready.starts_with("Wharf is ready in"), "{ready}");
    let api = lines.next().unwrap().unwrap();
    let base = api
        .trim()
        .trim_start_matches("API")
        .trim()
        .trim_end_matches("/v1")
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{api}");
    // Keep reading what the server prints, so it never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, base)
}

#[tokio::test]
async fn serve_creates_the_data_dir_prints_its_urls_and_admin_create_adds_a_platform_admin() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested/data");
    let data_arg = data.to_str().unwrap();
    let created = wharf(
        &[
            "admin",
            "create",
            "--email",
            "ops@example.com",
            "--password",
            "correct horse battery",
            "--data-dir",
            data_arg,
        ],
        dir.path(),
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert!(String::from_utf8_lossy(&created.stdout).contains("with role platform_admin"));
    let again = wharf(
        &[
            "admin",
            "create",
            "--email",
            "ops@example.com",
            "--password",
            "correct horse battery",
            "--data-dir",
            data_arg,
        ],
        dir.path(),
    );
    assert!(
        !again.status.success(),
        "a second account with the same email is refused"
    );
    let weak = wharf(
        &[
            "admin",
            "create",
            "--email",
            "fin@example.com",
            "--password",
            "short",
            "--role",
            "platform_finance",
            "--data-dir",
            data_arg,
        ],
        dir.path(),
    );
    assert!(
        String::from_utf8_lossy(&weak.stderr).contains("password"),
        "{}",
        String::from_utf8_lossy(&weak.stderr)
    );

    // WHARF_VENV is not a setting: ignored, never fatal.
    let (mut child, base) = serve(data_arg, &[("WHARF_VENV", "/tools/venv")]);
    let client = reqwest::Client::new();
    let login = client
        .post(format!("{base}/v1/auth/token"))
        .json(&serde_json::json!({"email": "ops@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let token = login.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = client
        .get(format!("{base}/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        me.json::<serde_json::Value>().await.unwrap()["roles"],
        serde_json::json!(["platform_admin"])
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        data.join("wharf.db").exists()
            && data.join("jwt-signing.key").exists()
            && data.join("secret.key").exists()
    );
}

#[test]
fn a_bad_setting_stops_the_start_with_a_message_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve"])
        .env("WHARF_ACCESS_TOKEN_TTL_SECS", "ten")
        .env(
            "WHARF_SOMETHING_ELSE",
            "not a setting, so it does not affect the error",
        )
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ACCESS_TOKEN_TTL_SECS") || err.contains("access_token_ttl_secs"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("wharf.toml"),
        "listen = \"127.0.0.1:0\"\nrefresh_token_ttl_secs = 5\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refresh_token_ttl_secs"));
    std::fs::write(dir.path().join("wharf.toml"), "colour = \"blue\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("colour"));
    assert!(
        !dir.path().join("wharf-data").exists(),
        "nothing is created when the configuration is bad"
    );
}

#[test]
fn openapi_prints_the_committed_document() {
    let dir = tempfile::tempdir().unwrap();
    let out = wharf(&["openapi"], dir.path());
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap())
                .join("openapi/openapi.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(printed, committed);
}

/// Makes `fin@example.com` (password `correct horse battery`) a platform finance user in
/// the data dir `data_arg` with `admin create`.
fn create_finance_user(dir: &std::path::Path, data_arg: &str) {
    let created = wharf(
        &[
            "admin",
            "create",
            "--email",
            "fin@example.com",
            "--password",
            "correct horse battery",
            "--role",
            "platform_finance",
            "--data-dir",
            data_arg,
        ],
        dir,
    );
    assert!(
        String::from_utf8_lossy(&created.stdout).contains("with role platform_finance"),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
}
/// A finance user made with `admin create --role platform_finance` closes a month on a server
/// whose clock `WHARF_CLOCK_START` put after that month; a month still running is refused.
#[tokio::test]
async fn a_platform_finance_user_closes_a_month_on_a_clock_started_by_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    create_finance_user(dir.path(), data_arg);
    let (mut child, base) = serve(data_arg, &[("WHARF_CLOCK_START", "2031-02-01T00:00:05Z")]);
    let client = reqwest::Client::new();
    let login = client
        .post(format!("{base}/v1/auth/token"))
        .json(&serde_json::json!({"email": "fin@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        login.status(),
        200,
        "tokens are issued on the started clock too"
    );
    let token = login.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = |period: &'static str| {
        client
            .post(format!("{base}/v1/billing/runs"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"period": period}))
            .send()
    };
    let running = run("2031-02").await.unwrap();
    assert_eq!(
        running.status(),
        422,
        "February 2031 has just begun on this clock"
    );
    let closed = run("2031-01").await.unwrap();
    assert_eq!(closed.status(), 201);
    let body: serde_json::Value = closed.json().await.unwrap();
    assert_eq!(body["status"], "completed");
    assert!(
        body["completed_at"]
            .as_str()
            .unwrap()
            .starts_with("2031-02-01T00:00")
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Months close by themselves: a subscription made on a server whose clock
/// `WHARF_CLOCK_START` put in mid-January is invoiced for January by the server's own
/// schedule once it runs on a clock a day past the month's end, without anyone asking for
/// the run; February, still running, is not closed.
#[tokio::test]
async fn the_schedule_closes_a_month_by_itself_on_a_clock_started_by_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let password = "correct horse battery";
    create_finance_user(dir.path(), data_arg);
    let client = reqwest::Client::new();
    let (mut child, base) = serve(data_arg, &[("WHARF_CLOCK_START", "2031-01-15T12:00:00Z")]);
    let call =
        |method: reqwest::Method, path: &str, token: Option<&str>, body: serde_json::Value| {
            let mut request = client.request(method, format!("{base}{path}")).json(&body);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            async move {
                let res = request.send().await.unwrap();
                let status = res.status().as_u16();
                (
                    status,
                    res.json::<serde_json::Value>().await.unwrap_or_default(),
                )
            }
        };
    let post = reqwest::Method::POST;
    let login = |email: &'static str| {
        let body = serde_json::json!({"email": email, "password": password});
        let call = &call;
        async move {
            let (status, body) = call(reqwest::Method::POST, "/v1/auth/token", None, body).await;
            assert_eq!(status, 200, "{body}");
            body["access_token"].as_str().unwrap().to_owned()
        }
    };
    let body = serde_json::json!({"name": "Acme", "admin_email": "acme@vendor.example", "admin_password": password});
    assert_eq!(call(post.clone(), "/v1/vendors", None, body).await.0, 201);
    let vendor = login("acme@vendor.example").await;
    let body = serde_json::json!({"name": "ticks", "kind": "push"});
    let (status, source) = call(post.clone(), "/v1/sources", Some(&vendor), body).await;
    assert_eq!(status, 201, "{source}");
    let body = serde_json::json!({
        "name": "Trades", "source_id": source["id"], "description": "Trades",
        "pipeline": {"rules": []}, "visibility": "public", "status": "published",
        "plans": [{"id": "pro", "name": "Pro", "currency": "usd", "monthly_fee": "31.00",
                   "included_deliveries": 0, "tiers": [{"up_to": null, "unit_price": "0.01"}]}]
    });
    let (status, feed) = call(post.clone(), "/v1/feeds", Some(&vendor), body).await;
    assert_eq!(status, 201, "{feed}");
    let body = serde_json::json!({"name": "Bob", "email": "bob@sub.example", "password": password});
    assert_eq!(
        call(post.clone(), "/v1/subscribers", None, body).await.0,
        201
    );
    let bob = login("bob@sub.example").await;
    let body =
        serde_json::json!({"feed_id": feed["id"], "plan_id": "pro", "channel": {"type": "pull"}});
    let (status, sub) = call(post.clone(), "/v1/subscriptions", Some(&bob), body).await;
    assert_eq!(status, 201, "{sub}");
    child.kill().unwrap();
    child.wait().unwrap();

    // The same data on a clock a day and five seconds past January's end.
    let (mut child, base) = serve(data_arg, &[("WHARF_CLOCK_START", "2031-02-02T00:00:05Z")]);
    let finance = {
        let body = serde_json::json!({"email": "fin@example.com", "password": password});
        let res = client
            .post(format!("{base}/v1/auth/token"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json::<serde_json::Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let invoices = |period: &'static str| {
        let request = client
            .get(format!("{base}/v1/invoices?period={period}"))
            .bearer_auth(&finance);
        async move {
            request
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let mut january = serde_json::Value::Null;
    for _ in 0..100 {
        january = invoices("2031-01").await;
        if january["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty())
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let items = january["items"].as_array().expect("invoices");
    assert_eq!(items.len(), 1, "{january}");
    let fee = &items[0]["lines"][0];
    assert_eq!(fee["subscription_id"], sub["id"], "{fee}");
    assert_eq!(fee["kind"], "fee", "{fee}");
    // Active from the 15th at noon: 16.5 of January's 31 days.
    assert_eq!(fee["amount"], "16.50", "{fee}");
    assert_eq!(invoices("2031-02").await["items"], serde_json::json!([]));
    child.kill().unwrap();
    child.wait().unwrap();
}

//! Starting the app and the few calls most tests need.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::net::SocketAddr;
use wharf::Config;
pub use wharf::config::Backend;

/// The shape the tests of this binary run on.
pub const BACKEND_UNDER_TEST: Backend = crate::BACKEND;
use wharf_core::Services;
use wharf_core::domain::Role;

/// The test users' password. The aws shape's tests run on moto's Cognito, which asks for
/// every character class (the SDK does not send the pool's `false` class flags, and moto
/// takes their absence as `true`).
pub const PASSWORD: &str = match crate::BACKEND {
    Backend::Local => "correct horse battery",
    Backend::Aws => "Correct horse battery 9!",
};

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub services: Services,
    pub dir: tempfile::TempDir,
    idle: wharf::app::Idle,
}

pub struct Res {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Res {
    /// The `errors[].path` of a problem body.
    pub fn paths(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|e| {
                e.iter()
                    .map(|x| x["path"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    spawn_on(adjust, std::sync::Arc::new(wharf_core::ports::SystemClock)).await
}

pub async fn spawn_on(
    adjust: impl FnOnce(&mut Config),
    clock: std::sync::Arc<dyn wharf_core::ports::Clock>,
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        backend: crate::BACKEND,
        // No test reaches beyond this machine, whatever a URL in it names.
        egress_allow: Some(vec!["127.0.0.0/8".into(), "::1".into()]),
        ..Config::default()
    };
    if crate::BACKEND == Backend::Aws {
        // Every app gets its own table, queues, pool and bucket on the shared emulator.
        config.aws = moto::fresh_aws_config();
    }
    adjust(&mut config);
    let server = wharf::Server::bind_with_clock(&config, clock)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let services = server.services.clone();
    let idle = server.idle();
    tokio::spawn(server.run(std::future::pending()));
    TestApp {
        addr,
        // Pooled connections are dropped well before any server's idle timeout, so a request
        // never goes out on a connection the server is closing.
        client: reqwest::Client::builder()
            .pool_idle_timeout(std::time::Duration::from_millis(500))
            .build()
            .unwrap(),
        services,
        dir,
        idle,
    }
}

impl TestApp {
    /// Drives the pipeline until it has no work left: every record processed, every due
    /// window closed and retry made, every delivery passed over. What a test waits on before
    /// asserting that something did not happen.
    pub async fn idle(&self) {
        self.idle.wait().await.unwrap();
    }

    /// The token in the last mail of the outbox to `to` (outbox files are named by the
    /// nanosecond they were written; the mails are quoted-printable: soft breaks joined).
    pub fn mailed_token(&self, to: &str) -> String {
        let mail = self
            .mails()
            .into_iter()
            .rev()
            .find(|m| m.contains(&format!("To: {to}")))
            .unwrap_or_else(|| panic!("no mail to {to}"));
        let start = mail.find("\"token\": \"").expect("a token") + "\"token\": \"".len();
        let rest = &mail[start..];
        rest[..rest.find('"').expect("the token's end")].to_owned()
    }

    /// Every mail in the outbox, oldest first, quoted-printable soft breaks joined.
    pub fn mails(&self) -> Vec<String> {
        let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(self.dir.path().join("outbox"))
            .map(|d| d.map(|e| e.expect("an entry").path()).collect())
            .unwrap_or_default();
        paths.sort();
        paths
            .iter()
            .map(|p| std::fs::read_to_string(p).expect("a mail"))
            .map(|m| m.replace("=\r\n", "").replace("=\n", ""))
            .collect()
    }

    /// Verifies a subscriber's address with the link mailed at sign-up (outbox mail).
    pub async fn verify_email(&self, email: &str) {
        let token = self.mailed_token(email);
        let res = self
            .post("/v1/email-verification", None, json!({"token": token}))
            .await;
        assert_eq!(res.status, 200, "{:?}", res.body);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Res {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Res {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Res {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Res {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> Res {
        self.call(Method::PATCH, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> Res {
        self.call(Method::PUT, path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Res {
        self.call(Method::DELETE, path, token, None).await
    }

    pub async fn login(&self, email: &str) -> String {
        let res = self
            .post(
                "/v1/auth/token",
                None,
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(res.status, 200, "{:?}", res.body);
        res.body["access_token"].as_str().unwrap().to_owned()
    }

    /// Signs up a vendor; returns (vendor id, admin token).
    pub async fn vendor(&self, name: &str) -> (String, String) {
        let email = format!(
            "{}-{}@vendor.example",
            name.to_lowercase().replace(' ', "-"),
            wharf_core::UserId::new().as_str()
        );
        let res = self
            .post(
                "/v1/vendors",
                None,
                json!({"name": name, "admin_email": email, "admin_password": PASSWORD}),
            )
            .await;
        assert_eq!(res.status, 201, "{:?}", res.body);
        (
            res.body["vendor"]["id"].as_str().unwrap().to_owned(),
            self.login(&email).await,
        )
    }

    /// Signs up a subscriber; returns (user id, token).
    pub async fn subscriber(&self, name: &str) -> (String, String) {
        let email = format!(
            "{}-{}@sub.example",
            name.to_lowercase(),
            wharf_core::UserId::new().as_str()
        );
        let res = self
            .post(
                "/v1/subscribers",
                None,
                json!({"name": name, "email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(res.status, 201, "{:?}", res.body);
        (
            res.body["id"].as_str().unwrap().to_owned(),
            self.login(&email).await,
        )
    }

    /// Signs up a subscriber and verifies its address (notices go only to verified ones);
    /// returns (user id, token).
    pub async fn verified_subscriber(&self, name: &str) -> (String, String) {
        let email = format!(
            "{}-{}@sub.example",
            name.to_lowercase(),
            wharf_core::UserId::new().as_str()
        );
        let body = json!({"name": name, "email": email, "password": PASSWORD});
        let res = self.post("/v1/subscribers", None, body).await;
        assert_eq!(res.status, 201, "{:?}", res.body);
        self.verify_email(&email).await;
        (
            res.body["id"].as_str().expect("an id").to_owned(),
            self.login(&email).await,
        )
    }

    /// Creates a platform user with `role`; returns its token.
    pub async fn platform(&self, role: Role) -> String {
        let email = format!(
            "ops-{}@platform.example",
            wharf_core::UserId::new().as_str()
        );
        self.services
            .create_platform_user(&email, PASSWORD, role)
            .await
            .unwrap();
        self.login(&email).await
    }

    pub async fn source(&self, token: &str) -> String {
        let res = self
            .post(
                "/v1/sources",
                Some(token),
                json!({"name": "ticks", "kind": "push"}),
            )
            .await;
        assert_eq!(res.status, 201, "{:?}", res.body);
        res.body["id"].as_str().unwrap().to_owned()
    }

    /// Creates a published public feed with plan `pro`; returns its id.
    pub async fn feed(&self, token: &str, name: &str) -> String {
        let source = self.source(token).await;
        let res = self
            .post("/v1/feeds", Some(token), feed_body(&source, name))
            .await;
        assert_eq!(res.status, 201, "{:?}", res.body);
        res.body["id"].as_str().unwrap().to_owned()
    }

    /// Subscribes with the pull channel; returns the subscription id.
    pub async fn subscribe(&self, token: &str, feed: &str) -> String {
        let res = self
            .post(
                "/v1/subscriptions",
                Some(token),
                json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "pull"}}),
            )
            .await;
        assert_eq!(res.status, 201, "{:?}", res.body);
        res.body["id"].as_str().unwrap().to_owned()
    }
}

pub fn plan() -> Value {
    json!({"id": "pro", "name": "Pro", "currency": "usd", "monthly_fee": "49.00", "included_deliveries": 10000,
           "tiers": [{"up_to": 100000, "unit_price": "0.0010"}, {"up_to": null, "unit_price": "0.0005"}]})
}

pub fn feed_body(source: &str, name: &str) -> Value {
    json!({
        "name": name, "source_id": source, "description": format!("{name} for testing"),
        "pipeline": {"rules": [
            {"type": "filter", "expr": "record.price > 100.0"},
            {"type": "map", "fields": {"symbol": "record.sym", "usd": "record.px * 1.08"}}
        ]},
        "plans": [plan()], "visibility": "public", "status": "published",
        "sample": {"symbol": "AAPL", "usd": 201.5}
    })
}

#[path = "../support/moto.rs"]
pub mod moto;

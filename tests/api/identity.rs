use crate::helpers::*;
use serde_json::json;
use wharf_core::domain::Role;

#[tokio::test]
async fn a_vendor_signs_up_with_an_admin_and_logs_in() {
    let app = spawn_app().await;
    let res = app
        .post(
            "/v1/vendors",
            None,
            json!({"name": "Acme", "admin_email": "Ops@Acme.example", "admin_password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status, 201);
    assert_eq!(res.body["vendor"]["status"], "active");
    assert_eq!(res.body["admin"]["email"], "ops@acme.example");
    assert_eq!(res.body["admin"]["tenant_id"], res.body["vendor"]["id"]);
    assert!(res.body["admin"].get("password_hash").is_none());
    let token = app.login("ops@acme.example").await;
    let me = app.get("/v1/me", Some(&token)).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["tenant_id"], res.body["vendor"]["id"]);
    assert_eq!(me.body["roles"], json!(["vendor_admin", "vendor_finance"]));
    assert_eq!(me.body["kind"], "user");
}

#[tokio::test]
async fn a_duplicate_email_is_a_409_and_leaves_no_second_vendor() {
    let app = spawn_app().await;
    let body =
        json!({"name": "Acme", "admin_email": "dup@acme.example", "admin_password": PASSWORD});
    assert_eq!(
        app.post("/v1/vendors", None, body.clone()).await.status,
        201
    );
    let again = app
        .post(
            "/v1/vendors",
            None,
            json!({"name": "Other", "admin_email": "DUP@acme.example", "admin_password": PASSWORD}),
        )
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(again.headers["content-type"], "application/problem+json");
    let sub = app
        .post(
            "/v1/subscribers",
            None,
            json!({"name": "x", "email": "dup@acme.example", "password": PASSWORD}),
        )
        .await;
    assert_eq!(sub.status, 409);
    let admin = app.platform(Role::PlatformAdmin).await;
    let vendors = app.get("/v1/vendors", Some(&admin)).await;
    assert_eq!(vendors.body["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_signups_are_422s_naming_every_field() {
    let app = spawn_app().await;
    let res = app
        .post(
            "/v1/vendors",
            None,
            json!({"name": " ", "admin_email": "nope", "admin_password": "short"}),
        )
        .await;
    assert_eq!(res.status, 422);
    assert_eq!(res.paths(), vec!["name", "admin_email", "admin_password"]);
    let weak = app
        .post(
            "/v1/subscribers",
            None,
            json!({"name": "Bob", "email": "bob@x.example", "password": "aaaaaaaaaaaaaaaa"}),
        )
        .await;
    assert_eq!(weak.status, 422);
    assert_eq!(weak.paths(), vec!["password"]);
    let admin = app.platform(Role::PlatformAdmin).await;
    assert_eq!(
        app.get("/v1/vendors", Some(&admin)).await.body["items"],
        json!([])
    );
}

#[tokio::test]
async fn malformed_missing_wrong_typed_and_oversized_bodies_are_clear_problems() {
    let app = spawn_app().await;
    let raw = |body: &'static str, ct: &'static str| {
        app.client
            .post(app.url("/v1/vendors"))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let res = raw("{\"name\": ", "application/json").await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let res = raw("{}", "text/plain").await.unwrap();
    assert_eq!(res.status(), 415);
    let missing = app
        .post(
            "/v1/vendors",
            None,
            json!({"name": "Acme", "admin_password": PASSWORD}),
        )
        .await;
    assert_eq!(missing.status, 422);
    assert_eq!(missing.paths(), vec!["admin_email"]);
    let typed = app
        .post(
            "/v1/vendors",
            None,
            json!({"name": 42, "admin_email": "a@b.example", "admin_password": PASSWORD}),
        )
        .await;
    assert_eq!(typed.status, 422);
    assert_eq!(typed.paths(), vec!["name"]);
    let unknown = app.post("/v1/vendors", None, json!({"name": "A", "admin_email": "a@b.example", "admin_password": PASSWORD, "tenant_id": "x"})).await;
    assert_eq!(unknown.status, 422);
    assert_eq!(unknown.paths(), vec!["tenant_id"]);
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let res = app
        .client
        .post(app.url("/v1/vendors"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    let admin = app.platform(Role::PlatformAdmin).await;
    assert_eq!(
        app.get("/v1/vendors", Some(&admin)).await.body["items"],
        json!([])
    );
}

#[tokio::test]
async fn wrong_passwords_and_unknown_emails_are_the_same_401() {
    let app = spawn_app().await;
    app.vendor("Acme").await;
    let res = app
        .post(
            "/v1/auth/token",
            None,
            json!({"email": "nobody@x.example", "password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status, 401);
    let (_, sub) = app.subscriber("bob").await;
    assert_eq!(
        app.get("/v1/me", Some(&sub)).await.body["roles"],
        json!(["subscriber"])
    );
    let me = app.get("/v1/me", Some(&sub)).await.body;
    assert_eq!(me["tenant_id"], serde_json::Value::Null);
    let wrong = app
        .post(
            "/v1/auth/token",
            None,
            json!({"email": "nobody@x.example", "password": "wrong password!"}),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.body["detail"], res.body["detail"]);
}

#[tokio::test]
async fn a_refresh_token_refreshes_and_is_single_use_where_the_issuer_makes_it_so() {
    let app = spawn_app().await;
    let email = "r@sub.example";
    app.post(
        "/v1/subscribers",
        None,
        json!({"name": "R", "email": email, "password": PASSWORD}),
    )
    .await;
    let tokens = app
        .post(
            "/v1/auth/token",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await
        .body;
    assert_eq!(tokens["token_type"], "Bearer");
    // The local issuer's tokens live `access_token_ttl_secs`; moto's Cognito always issues
    // tokens for an hour.
    let lifetime = match BACKEND_UNDER_TEST {
        Backend::Local => 900,
        Backend::Aws => 3600,
    };
    assert_eq!(tokens["expires_in"], lifetime);
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let fresh = app
        .post("/v1/auth/refresh", None, json!({"refresh_token": refresh}))
        .await;
    assert_eq!(fresh.status, 200);
    let token = fresh.body["access_token"].as_str().unwrap();
    assert_eq!(app.get("/v1/me", Some(token)).await.status, 200);
    // Local refresh tokens are single-use; Cognito's are reusable until they expire (the
    // documented difference of the aws shape).
    let reused = match BACKEND_UNDER_TEST {
        Backend::Local => 401,
        Backend::Aws => 200,
    };
    assert_eq!(
        app.post("/v1/auth/refresh", None, json!({"refresh_token": refresh}))
            .await
            .status,
        reused
    );
    assert_eq!(
        app.post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": "wr_nonsense"})
        )
        .await
        .status,
        401
    );
}

#[tokio::test]
async fn pending_vendors_wait_for_a_platform_admin() {
    let app = spawn_with(|c| c.require_vendor_approval = true).await;
    let (vendor, token) = app.vendor("Slow").await;
    assert_eq!(
        app.get(&format!("/v1/vendors/{vendor}"), Some(&token))
            .await
            .body["status"],
        "pending"
    );
    let source = app.source(&token).await;
    let publish = app
        .post("/v1/feeds", Some(&token), feed_body(&source, "early"))
        .await;
    assert_eq!(
        publish.status, 409,
        "a pending vendor cannot publish: {:?}",
        publish.body
    );
    assert_eq!(
        app.post(
            &format!("/v1/vendors/{vendor}/approve"),
            Some(&token),
            json!({})
        )
        .await
        .status,
        403
    );
    let admin = app.platform(Role::PlatformAdmin).await;
    let pending = app.get("/v1/vendors?status=pending", Some(&admin)).await;
    assert_eq!(pending.body["items"][0]["id"], vendor.as_str());
    let approved = app
        .post(
            &format!("/v1/vendors/{vendor}/approve"),
            Some(&admin),
            json!({}),
        )
        .await;
    assert_eq!(approved.status, 200);
    assert_eq!(approved.body["status"], "active");
    assert_eq!(
        app.post(
            &format!("/v1/vendors/{vendor}/approve"),
            Some(&admin),
            json!({})
        )
        .await
        .status,
        409
    );
    assert_eq!(
        app.post("/v1/feeds", Some(&token), feed_body(&source, "now"))
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer_and_refuses_another_body() {
    let app = spawn_app().await;
    let (_, token) = app.vendor("Acme").await;
    let send = |key: &'static str, name: &'static str| {
        app.client
            .post(app.url("/v1/sources"))
            .bearer_auth(&token)
            .header("idempotency-key", key)
            .json(&json!({"name": name, "kind": "push"}))
            .send()
    };
    let first = send("k-1", "ticks").await.unwrap();
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.unwrap();
    let again = send("k-1", "ticks").await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<serde_json::Value>().await.unwrap(), first);
    assert_eq!(send("k-1", "other").await.unwrap().status(), 409);
    assert_eq!(
        app.get("/v1/sources", Some(&token)).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let bad = send("k-2", "").await.unwrap();
    assert_eq!(bad.status(), 422);
    assert_eq!(
        send("k-2", "fixed").await.unwrap().status(),
        201,
        "a failed request releases its key"
    );
}

#[tokio::test]
async fn api_keys_show_their_secret_once_authenticate_and_stop_when_revoked() {
    let app = spawn_app().await;
    let (vendor, token) = app.vendor("Acme").await;
    let created = app
        .post("/v1/api-keys", Some(&token), json!({"name": "uploader"}))
        .await;
    assert_eq!(created.status, 201);
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("wk_"));
    assert_eq!(created.body["scopes"], json!(["ingest"]));
    let id = created.body["id"].as_str().unwrap();
    let listed = app.get("/v1/api-keys", Some(&token)).await;
    assert_eq!(listed.body["items"][0]["id"], id);
    assert!(listed.body["items"][0].get("secret").is_none());
    assert!(!listed.body.to_string().contains(&secret[12..]));
    let me = app.get("/v1/me", Some(&secret)).await;
    assert_eq!(me.body["kind"], "api_key");
    assert_eq!(me.body["tenant_id"], vendor.as_str());
    assert_eq!(
        app.post(
            "/v1/sources",
            Some(&secret),
            json!({"name": "x", "kind": "push"})
        )
        .await
        .status,
        403
    );
    let mut forged = secret.clone();
    forged.pop();
    forged.push(if secret.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(app.get("/v1/me", Some(&forged)).await.status, 401);
    assert_eq!(
        app.delete(&format!("/v1/api-keys/{id}"), Some(&token))
            .await
            .status,
        204
    );
    assert_eq!(app.get("/v1/me", Some(&secret)).await.status, 401);
    assert_eq!(
        app.get(&format!("/v1/api-keys/{id}"), Some(&token))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn a_repeated_idempotency_key_never_shows_a_secret_again_and_none_is_kept() {
    let app = spawn_with(|c| c.allow_private_webhooks = true).await;
    let (_, token) = app.vendor("Acme").await;
    let feed = app.feed(&token, "f").await;
    let (_, sub) = app.subscriber("bob").await;
    let send = |path: &'static str, bearer: &str, body: serde_json::Value| {
        app.client
            .post(app.url(path))
            .bearer_auth(bearer)
            .header("idempotency-key", "same-key")
            .json(&body)
            .send()
    };
    let mut secrets = Vec::new();
    for (path, bearer, body, secret) in [
        (
            "/v1/api-keys",
            &token,
            json!({"name": "uploader"}),
            "secret",
        ),
        (
            "/v1/subscriptions",
            &sub,
            json!({"feed_id": feed, "plan_id": "pro",
                "channel": {"type": "webhook", "url": "http://127.0.0.1:9/hooks"}}),
            "signing_secret",
        ),
    ] {
        let first = send(path, bearer, body.clone()).await.unwrap();
        assert_eq!(first.status(), 201, "{path}");
        assert!(first.headers().get("idempotent-replayed").is_none());
        let first: serde_json::Value = first.json().await.unwrap();
        let shown = first[secret].as_str().unwrap().to_owned();
        assert!(first.get("withheld").is_none(), "{first}");
        let again = send(path, bearer, body).await.unwrap();
        assert_eq!(again.status(), 201, "{path}");
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        let again: serde_json::Value = again.json().await.unwrap();
        assert_eq!(
            again["id"], first["id"],
            "the same object, not a second one"
        );
        assert!(again.get(secret).is_none(), "{path}: {again}");
        assert_eq!(again["withheld"], json!([secret]));
        assert!(!again.to_string().contains(&shown));
        secrets.push(shown);
    }
    assert_eq!(
        app.get("/v1/api-keys", Some(&token)).await.body["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    if BACKEND_UNDER_TEST == Backend::Local {
        // Nothing the server wrote holds a secret in the clear: keys are hashed, signing
        // secrets sealed, idempotent answers stored without them.
        app.idle().await;
        for entry in std::fs::read_dir(app.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                for secret in &secrets {
                    assert!(
                        !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                        "{} holds a secret",
                        path.display()
                    );
                }
            }
        }
    }
}

//! Forged, expired, `alg: none`, confused-algorithm, wrong-issuer, wrong-audience and
//! unknown-`kid` tokens are all 401.

use crate::helpers::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[tokio::test]
async fn every_kind_of_bad_token_is_a_401() {
    let app = spawn_app().await;
    let (_, good) = app.vendor("A").await;
    assert_eq!(app.get("/v1/me", Some(&good)).await.status, 200);
    let parts: Vec<&str> = good.split('.').collect();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let kid = header["kid"].as_str().unwrap().to_owned();
    let jwks = app.get("/.well-known/jwks.json", None).await.body;
    assert_eq!(jwks["keys"][0]["kid"], kid.as_str());
    assert_eq!(header["alg"], "EdDSA");

    let seed = std::fs::read(app.dir.path().join("jwt-signing.key")).unwrap();
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed.clone().try_into().unwrap());
    let der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&signing).unwrap();
    let real_key = EncodingKey::from_ed_der(der.as_bytes());
    let sign = |claims: &Value, kid: Option<&str>| {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&h, claims, &real_key).unwrap()
    };
    let with = |k: &str, v: Value| {
        let mut c = claims.clone();
        c[k] = v;
        c
    };
    assert_eq!(
        app.get("/v1/me", Some(&sign(&claims, Some(&kid))))
            .await
            .status,
        200,
        "a re-signed copy is valid"
    );

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let other = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let other_der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&other).unwrap();
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some(kid.clone());
    let wrong_key =
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ed_der(other_der.as_bytes())).unwrap();
    let x = jwks["keys"][0]["x"].as_str().unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(kid.clone());
    let hs_with_public = jsonwebtoken::encode(
        &hs,
        &claims,
        &EncodingKey::from_secret(&URL_SAFE_NO_PAD.decode(x).unwrap()),
    )
    .unwrap();
    let hs_with_jwks = jsonwebtoken::encode(
        &hs,
        &claims,
        &EncodingKey::from_secret(jwks.to_string().as_bytes()),
    )
    .unwrap();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&with("roles", json!(["platform_admin"]))),
        parts[2]
    );
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
        parts[1]
    );
    let mut elevated = claims.clone();
    elevated["tenant_id"] = json!("ven_0193a5e4c2a87c3b9d41e2f6a8b0c1d2");
    let elevated_forged = format!("{}.{}.{}", parts[0], b64(&elevated), parts[2]);

    let bad = [
        ("expired", sign(&with("exp", json!(now - 3600)), Some(&kid))),
        ("alg none", alg_none),
        ("HS256 with the public key", hs_with_public),
        ("HS256 with the JWKS", hs_with_jwks),
        ("signed by another key", wrong_key),
        ("tampered payload", tampered),
        ("tenant swapped", elevated_forged),
        (
            "wrong issuer",
            sign(&with("iss", json!("https://evil.example")), Some(&kid)),
        ),
        (
            "wrong audience",
            sign(&with("aud", json!("someone-else")), Some(&kid)),
        ),
        (
            "wrong token use",
            sign(&with("token_use", json!("id")), Some(&kid)),
        ),
        ("unknown kid", sign(&claims, Some("0000000000000000"))),
        ("no kid", sign(&claims, None)),
        ("garbage", "garbage".to_owned()),
        ("three dots", "a.b.c".to_owned()),
        ("empty parts", "..".to_owned()),
    ];
    for (what, token) in bad {
        let res = app.get("/v1/me", Some(&token)).await;
        assert_eq!(res.status, 401, "{what} must be refused: {:?}", res.body);
        assert!(
            !res.body.to_string().contains(&token),
            "{what}: the token is not echoed"
        );
    }
}

/// `token` re-signed with the server's own key, its `exp` set `secs` from now.
fn expiring_in(app: &TestApp, token: &str, secs: i64) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["exp"] = json!(time::OffsetDateTime::now_utc().unix_timestamp() + secs);
    let seed = std::fs::read(app.dir.path().join("jwt-signing.key")).unwrap();
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed.try_into().unwrap());
    let der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&signing).unwrap();
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = header["kid"].as_str().map(str::to_owned);
    jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ed_der(der.as_bytes())).unwrap()
}

#[tokio::test]
async fn a_live_socket_closes_when_its_token_expires_unless_it_sent_a_fresh_one() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let app = spawn_app().await;
    let (_, vendor) = app.vendor("Acme").await;
    let feed = app.feed(&vendor, "trades").await;
    let (_, subscriber) = app.subscriber("bob").await;
    let created = app
        .post(
            "/v1/subscriptions",
            Some(&subscriber),
            json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "websocket"}}),
        )
        .await;
    let sub = created.body["id"].as_str().unwrap().to_owned();
    let url = |token: &str| {
        format!(
            "ws://{}/v1/subscriptions/{sub}/live?access_token={token}",
            app.addr
        )
    };
    let closes = |mut ws: tokio_tungstenite::WebSocketStream<_>| async move {
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(30), ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => {}
                Ok(None | Some(Err(_))) => return None,
                Err(_) => panic!("the socket outlived its token"),
            }
        }
    };

    let (short, _) = tokio_tungstenite::connect_async(url(&expiring_in(&app, &subscriber, 2)))
        .await
        .unwrap();
    assert_eq!(
        closes(short).await,
        Some(4001),
        "closed with the token close code"
    );

    let (mut renewed, _) =
        tokio_tungstenite::connect_async(url(&expiring_in(&app, &subscriber, 2)))
            .await
            .unwrap();
    let fresh = expiring_in(&app, &subscriber, 4);
    renewed
        .send(Message::Text(
            json!({"type": "token", "token": fresh}).to_string().into(),
        ))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(closes(renewed).await, Some(4001));
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(3),
        "the fresh token kept it open past the first one's expiry"
    );

    let (_, other) = app.subscriber("eve").await;
    let (mut hijacked, _) =
        tokio_tungstenite::connect_async(url(&expiring_in(&app, &subscriber, 60)))
            .await
            .unwrap();
    hijacked
        .send(Message::Text(
            json!({"type": "token", "token": other}).to_string().into(),
        ))
        .await
        .unwrap();
    assert_eq!(
        closes(hijacked).await,
        Some(4001),
        "another user's token is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_logins_is_shed_with_503_while_the_server_stays_up() {
    let app = spawn_with(|c| c.limits.throttle.logins_per_address_per_minute = 10_000).await;
    let attempts = (0..400).map(|i| {
        let (client, url) = (reqwest::Client::new(), app.url("/v1/auth/token"));
        async move {
            let body =
                json!({"email": format!("nobody{i}@example.com"), "password": "guess guess guess"});
            client
                .post(url)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    let statuses: Vec<u16> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.unwrap_or(0))
        .collect();
    let shed = statuses.iter().filter(|s| **s == 503).count();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert_eq!(shed + checked, statuses.len(), "{statuses:?}");
    assert!(shed > 0, "none was shed: every check was queued");
    assert_eq!(app.get("/healthz", None).await.status, 200);
}

#[tokio::test]
async fn reusing_a_refresh_token_revokes_every_token_rotated_from_it() {
    let app = spawn_app().await;
    let email = "ops@acme.example";
    let signup = json!({"name": "Acme", "admin_email": email, "admin_password": PASSWORD});
    assert_eq!(app.post("/v1/vendors", None, signup).await.status, 201);
    let login = app
        .post(
            "/v1/auth/token",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    let first = login.body["refresh_token"].clone();
    let rotated = app
        .post("/v1/auth/refresh", None, json!({"refresh_token": first}))
        .await;
    assert_eq!(rotated.status, 200);
    let second = rotated.body["refresh_token"].clone();
    let reused = app
        .post("/v1/auth/refresh", None, json!({"refresh_token": first}))
        .await;
    assert_eq!(reused.status, 401, "a used token is refused");
    let after = app
        .post("/v1/auth/refresh", None, json!({"refresh_token": second}))
        .await;
    assert_eq!(
        after.status, 401,
        "and the token it was rotated into is revoked with it"
    );

    let other = app
        .post(
            "/v1/auth/token",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    let fresh = app
        .post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": other.body["refresh_token"]}),
        )
        .await;
    assert_eq!(fresh.status, 200, "another login's family is untouched");
}

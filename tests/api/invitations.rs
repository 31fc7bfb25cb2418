//! Finance people get accounts by invitation, with the role they were invited to and no
//! other; passwords are reset by a mailed link that works once. Both links go only to the
//! address, so using them proves the mailbox.

use crate::helpers::*;
use crate::receiver::TestClock;
use serde_json::json;
use time::macros::datetime;

const ACME: &str = "acme@vendor.example";
const ANA: &str = "ana@acme.example";
const BOB: &str = "bob@sub.example";
const NEW_PASSWORD: &str = "Another long secret 7!";

async fn accept(app: &TestApp, token: &str, password: &str) -> Res {
    app.post(
        "/v1/invitations/accept",
        None,
        json!({"token": token, "password": password}),
    )
    .await
}

#[tokio::test]
async fn a_vendor_admin_invites_a_finance_user_who_gets_that_role_and_no_other() {
    let clock = TestClock::new();
    clock.set(datetime!(2026-11-01 00:00 UTC));
    let app = spawn_on(|_| {}, clock.clone()).await;
    let body = json!({"name": "Acme", "admin_email": ACME, "admin_password": PASSWORD});
    let vendor_id = app.post("/v1/vendors", None, body).await.body["vendor"]["id"].clone();
    let acme = app.login(ACME).await;

    let sent = app
        .post(
            "/v1/invitations",
            Some(&acme),
            json!({"email": ANA, "role": "vendor_finance"}),
        )
        .await;
    assert_eq!(sent.status, 202, "{:?}", sent.body);
    assert_eq!(sent.body["vendor_id"], vendor_id);
    assert!(
        !sent.body.to_string().contains("token"),
        "the link is only in the mail"
    );
    for (role, status) in [("platform_finance", 403), ("subscriber", 422)] {
        let refused = app
            .post(
                "/v1/invitations",
                Some(&acme),
                json!({"email": "x@acme.example", "role": role}),
            )
            .await;
        assert_eq!(refused.status, status, "{role}: {:?}", refused.body);
    }

    let token = app.mailed_token(ANA);
    let weak = accept(&app, &token, "short").await;
    assert_eq!(weak.status, 422);
    assert_eq!(weak.paths(), vec!["password"]);
    let forged = accept(&app, "bm90IGEgdG9rZW4", PASSWORD).await;
    assert_eq!(forged.status, 404, "{:?}", forged.body);
    let made = accept(&app, &token, PASSWORD).await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    assert_eq!(made.body["roles"], json!(["vendor_finance"]));
    assert_eq!(made.body["tenant_id"], vendor_id);
    assert_eq!(accept(&app, &token, PASSWORD).await.status, 409, "once");

    let ana = app.login(ANA).await;
    assert_eq!(app.get("/v1/payouts", Some(&ana)).await.status, 200);
    let source = app
        .post(
            "/v1/sources",
            Some(&ana),
            json!({"name": "ticks", "kind": "push"}),
        )
        .await;
    assert_eq!(source.status, 403, "finance does not manage sources");
    let invite = app
        .post(
            "/v1/invitations",
            Some(&ana),
            json!({"email": "eve@acme.example", "role": "vendor_admin"}),
        )
        .await;
    assert_eq!(invite.status, 403, "finance does not invite");

    let late = app
        .post(
            "/v1/invitations",
            Some(&acme),
            json!({"email": "late@acme.example", "role": "vendor_admin"}),
        )
        .await;
    assert_eq!(late.status, 202);
    clock.set(datetime!(2026-11-08 00:01 UTC));
    let expired = accept(&app, &app.mailed_token("late@acme.example"), PASSWORD).await;
    assert_eq!(expired.status, 410, "{:?}", expired.body);
}

#[tokio::test]
async fn a_platform_admin_invites_platform_finance() {
    let app = spawn_app().await;
    let admin = app.platform(wharf_core::domain::Role::PlatformAdmin).await;
    let sent = app
        .post(
            "/v1/invitations",
            Some(&admin),
            json!({"email": "fin@platform.example", "role": "platform_finance"}),
        )
        .await;
    assert_eq!(sent.status, 202, "{:?}", sent.body);
    assert_eq!(sent.body.get("vendor_id"), None);
    let made = accept(&app, &app.mailed_token("fin@platform.example"), PASSWORD).await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let fin = app.login("fin@platform.example").await;
    let runs = app
        .post("/v1/billing/runs", Some(&fin), json!({"period": "2020-01"}))
        .await;
    assert_ne!(
        runs.status, 403,
        "platform finance runs billing: {:?}",
        runs.body
    );
}

#[tokio::test]
async fn a_password_is_reset_once_by_a_mailed_link_and_every_session_ends() {
    let clock = TestClock::new();
    clock.set(datetime!(2026-11-01 00:00 UTC));
    let app = spawn_on(|_| {}, clock.clone()).await;
    let body = json!({"name": "Bob", "email": BOB, "password": PASSWORD});
    assert_eq!(app.post("/v1/subscribers", None, body).await.status, 201);
    let session = app
        .post(
            "/v1/auth/token",
            None,
            json!({"email": BOB, "password": PASSWORD}),
        )
        .await;
    let refresh = session.body["refresh_token"].clone();

    let ask = |email: &'static str| {
        let app = &app;
        async move {
            app.post("/v1/auth/password-reset", None, json!({"email": email}))
                .await
        }
    };
    let nobody = ask("nobody@sub.example").await;
    let bob = ask(BOB).await;
    assert_eq!(nobody.status, 202);
    assert_eq!(bob.status, 202);
    assert_eq!(nobody.body, bob.body, "no one learns which addresses exist");
    assert!(
        !app.mails()
            .iter()
            .any(|m| m.contains("To: nobody@sub.example")),
        "nothing goes to an address without an account"
    );

    let token = app.mailed_token(BOB);
    let confirm = |token: String, password: &'static str| {
        let app = &app;
        async move {
            app.post(
                "/v1/auth/password-reset/confirm",
                None,
                json!({"token": token, "password": password}),
            )
            .await
        }
    };
    assert_eq!(confirm(token.clone(), "short").await.status, 422);
    let done = confirm(token.clone(), NEW_PASSWORD).await;
    assert_eq!(done.status, 204, "{:?}", done.body);
    assert_eq!(confirm(token, NEW_PASSWORD).await.status, 410, "once");
    let old = app
        .post(
            "/v1/auth/token",
            None,
            json!({"email": BOB, "password": PASSWORD}),
        )
        .await;
    assert_eq!(old.status, 401);
    let new = app
        .post(
            "/v1/auth/token",
            None,
            json!({"email": BOB, "password": NEW_PASSWORD}),
        )
        .await;
    assert_eq!(new.status, 200, "{:?}", new.body);
    let refreshed = app
        .post("/v1/auth/refresh", None, json!({"refresh_token": refresh}))
        .await;
    assert_eq!(refreshed.status, 401, "sessions from before the reset end");

    assert_eq!(ask(BOB).await.status, 202);
    clock.set(datetime!(2026-11-01 01:01 UTC));
    let late = confirm(app.mailed_token(BOB), NEW_PASSWORD).await;
    assert_eq!(late.status, 410, "{:?}", late.body);
}

#[tokio::test]
async fn a_subscribers_address_is_verified_by_the_link_mailed_at_sign_up() {
    let app = spawn_app().await;
    let body = json!({"name": "Bob", "email": BOB, "password": PASSWORD});
    let made = app.post("/v1/subscribers", None, body).await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    assert_eq!(
        made.body["email_verified_at"],
        json!(null),
        "{:?}",
        made.body
    );
    let bob = app.login(BOB).await;
    let token = app.mailed_token(BOB);
    let forged = app
        .post(
            "/v1/email-verification",
            None,
            json!({"token": "bm90IGEgdG9rZW4"}),
        )
        .await;
    assert_eq!(forged.status, 404);
    let invitation_token = {
        let admin = app.platform(wharf_core::domain::Role::PlatformAdmin).await;
        app.post(
            "/v1/invitations",
            Some(&admin),
            json!({"email": "x@platform.example", "role": "platform_finance"}),
        )
        .await;
        app.mailed_token("x@platform.example")
    };
    let other_kind = app
        .post(
            "/v1/email-verification",
            None,
            json!({"token": invitation_token}),
        )
        .await;
    assert_eq!(other_kind.status, 404, "an invitation verifies nothing");

    let again = app
        .post("/v1/me/email-verification", Some(&bob), json!({}))
        .await;
    assert_eq!(again.status, 202, "{:?}", again.body);
    let verified = app
        .post("/v1/email-verification", None, json!({"token": token}))
        .await;
    assert_eq!(verified.status, 200, "{:?}", verified.body);
    assert_eq!(verified.body["email"], BOB);
    let twice = app
        .post("/v1/email-verification", None, json!({"token": token}))
        .await;
    assert_eq!(
        twice.body, verified.body,
        "verifying again answers the first"
    );
    let done = app
        .post("/v1/me/email-verification", Some(&bob), json!({}))
        .await;
    assert_eq!(done.status, 409);
}

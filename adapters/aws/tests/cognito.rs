//! The identity port on a real moto Cognito user pool: sign-up, login, refresh and the
//! pool's tokens verified by the shared verifier; tampered and expired tokens refused.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::sync::{Arc, Mutex};
use wharf_aws::Clients;
use wharf_aws::cognito::{CognitoIdentity, TENANT_ATTRIBUTE, UserPool, bootstrap_user_pool};
use wharf_core::domain::identity::{NewUser, Principal, Role};
use wharf_core::ports::{Clock, Identity};
use wharf_core::{CoreError, VendorId};

/// A clock the test moves.
struct TestClock(Mutex<time::OffsetDateTime>);

impl Clock for TestClock {
    fn now(&self) -> time::OffsetDateTime {
        *self.0.lock().expect("clock")
    }
}

/// A principal with its roles sorted by name: Cognito lists a user's groups in no set order.
fn sorted(p: Principal) -> Principal {
    match p {
        Principal::User {
            id,
            mut roles,
            tenant,
        } => {
            roles.sort_by_key(|r| r.as_str());
            Principal::User { id, roles, tenant }
        }
        other => other,
    }
}

async fn setup() -> (Clients, UserPool, Arc<TestClock>, CognitoIdentity) {
    let clients = common::clients().await;
    let pool = bootstrap_user_pool(&clients, &clients.settings.table)
        .await
        .expect("pool");
    let clock = Arc::new(TestClock(Mutex::new(time::OffsetDateTime::now_utc())));
    let identity = CognitoIdentity::new(&clients, pool.clone(), clock.clone())
        .await
        .expect("identity");
    (clients, pool, clock, identity)
}

// The passwords here mix cases, digits and symbols although Wharf's policy asks only for
// length: the SDK leaves `false` requirements out of CreateUserPool (false is their default
// in Cognito's API), and moto reads a missing requirement as `true`.
fn vendor_admin(email: &str, tenant: &VendorId) -> NewUser {
    NewUser {
        email: email_of(email),
        password: "Correct-horse-battery-9".into(),
        roles: vec![Role::VendorAdmin, Role::VendorFinance],
        tenant_id: Some(tenant.clone()),
    }
}

#[tokio::test]
async fn bootstrap_makes_one_pool_one_client_and_a_group_per_role_and_keeps_the_tenant_unwritable()
{
    let (clients, pool, _, _) = setup().await;
    let again = bootstrap_user_pool(&clients, &clients.settings.table)
        .await
        .expect("again");
    assert_eq!(again, pool);
    let client = clients
        .cognito
        .describe_user_pool_client()
        .user_pool_id(&pool.pool_id)
        .client_id(&pool.client_id)
        .send()
        .await
        .expect("client")
        .user_pool_client
        .expect("client");
    assert_eq!(client.write_attributes(), ["email"]);
    let mut groups: Vec<String> = clients
        .cognito
        .list_groups()
        .user_pool_id(&pool.pool_id)
        .send()
        .await
        .expect("groups")
        .groups()
        .iter()
        .filter_map(|g| g.group_name().map(str::to_owned))
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        [
            "platform_admin",
            "platform_finance",
            "subscriber",
            "vendor_admin",
            "vendor_finance"
        ]
    );
}

#[tokio::test]
async fn a_signed_up_user_logs_in_and_its_token_names_its_roles_and_tenant() {
    let (clients, pool, _, identity) = setup().await;
    let tenant = VendorId::new();
    let user = identity
        .create_user(vendor_admin("ada@example.com", &tenant))
        .await
        .expect("create");
    let attributes = clients
        .cognito
        .admin_get_user()
        .user_pool_id(&pool.pool_id)
        .username("ada@example.com")
        .send()
        .await
        .expect("user");
    let tenant_attr = attributes
        .user_attributes()
        .iter()
        .find(|a| a.name() == TENANT_ATTRIBUTE)
        .and_then(|a| a.value());
    assert_eq!(tenant_attr, Some(tenant.as_str()));

    let pair = identity
        .login(&email_of("ada@example.com"), "Correct-horse-battery-9")
        .await
        .expect("login");
    assert_eq!(pair.token_type, "Bearer");
    assert!(pair.expires_in > 0);
    let principal = sorted(identity.verify(&pair.access_token).await.expect("verify"));
    assert_eq!(
        principal,
        Principal::User {
            id: user.id.clone(),
            roles: vec![Role::VendorAdmin, Role::VendorFinance],
            tenant: Some(tenant.clone()),
        }
    );

    let refreshed = identity
        .refresh(&pair.refresh_token)
        .await
        .expect("refresh");
    assert_eq!(
        sorted(
            identity
                .verify(&refreshed.access_token)
                .await
                .expect("verify refreshed")
        ),
        principal
    );

    let subscriber = identity
        .create_user(NewUser {
            email: email_of("sam@example.com"),
            password: "Another-long-passw0rd".into(),
            roles: vec![Role::Subscriber],
            tenant_id: None,
        })
        .await
        .expect("subscriber");
    let pair = identity
        .login(&email_of("sam@example.com"), "Another-long-passw0rd")
        .await
        .expect("login");
    assert_eq!(
        identity.verify(&pair.access_token).await.expect("verify"),
        Principal::User {
            id: subscriber.id,
            roles: vec![Role::Subscriber],
            tenant: None,
        }
    );
}

#[tokio::test]
async fn wrong_passwords_duplicate_emails_and_deleted_users_are_refused() {
    let (_, _, _, identity) = setup().await;
    let tenant = VendorId::new();
    let user = identity
        .create_user(vendor_admin("bo@example.com", &tenant))
        .await
        .expect("create");
    assert!(matches!(
        identity
            .create_user(vendor_admin("bo@example.com", &tenant))
            .await,
        Err(CoreError::Conflict(_))
    ));
    assert!(matches!(
        identity
            .login(&email_of("bo@example.com"), "Not-the-passw0rd")
            .await,
        Err(CoreError::Unauthenticated(_))
    ));
    assert!(matches!(
        identity
            .login(&email_of("nobody@example.com"), "Correct-horse-battery-9")
            .await,
        Err(CoreError::Unauthenticated(_))
    ));
    assert!(matches!(
        identity.refresh("not-a-refresh-token").await,
        Err(CoreError::Unauthenticated(_))
    ));
    identity.delete_user(&user.id).await.expect("delete");
    identity
        .delete_user(&user.id)
        .await
        .expect("deleting again is fine");
    assert!(matches!(
        identity
            .login(&email_of("bo@example.com"), "Correct-horse-battery-9")
            .await,
        Err(CoreError::Unauthenticated(_))
    ));
}

#[tokio::test]
async fn tampered_foreign_access_and_expired_tokens_are_refused() {
    let (clients, pool, clock, identity) = setup().await;
    let tenant = VendorId::new();
    identity
        .create_user(vendor_admin("cy@example.com", &tenant))
        .await
        .expect("create");
    let pair = identity
        .login(&email_of("cy@example.com"), "Correct-horse-battery-9")
        .await
        .expect("login");
    identity.verify(&pair.access_token).await.expect("genuine");

    // Another tenant written into the payload, signature kept.
    let parts: Vec<&str> = pair.access_token.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64")).expect("claims");
    claims[TENANT_ATTRIBUTE] = VendorId::new().to_string().into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("json")),
        parts[2]
    );
    assert!(matches!(
        identity.verify(&forged).await,
        Err(CoreError::Unauthenticated(_))
    ));
    // `alg: none` with the same claims.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"dummy"}"#),
        parts[1]
    );
    assert!(matches!(
        identity.verify(&none).await,
        Err(CoreError::Unauthenticated(_))
    ));

    // Cognito's access token is signed by the same key but is not the ID token Wharf uses.
    let auth = clients
        .cognito
        .initiate_auth()
        .client_id(&pool.client_id)
        .auth_flow(aws_sdk_cognitoidentityprovider::types::AuthFlowType::UserPasswordAuth)
        .auth_parameters("USERNAME", "cy@example.com")
        .auth_parameters("PASSWORD", "Correct-horse-battery-9")
        .send()
        .await
        .expect("auth");
    let access = auth
        .authentication_result()
        .and_then(|r| r.access_token())
        .expect("access token");
    assert!(matches!(
        identity.verify(access).await,
        Err(CoreError::Unauthenticated(_))
    ));

    // Two hours on, the hour-long token has expired (a fresh copy of the string, so the
    // verifier's cache of verified tokens is exercised too).
    *clock.0.lock().expect("clock") += time::Duration::hours(2);
    assert!(matches!(
        identity.verify(&pair.access_token.clone()).await,
        Err(CoreError::Unauthenticated(_))
    ));
}

#[tokio::test]
async fn cognito_calls_are_counted() {
    let (clients, _, _, identity) = setup().await;
    identity
        .create_user(vendor_admin("di@example.com", &VendorId::new()))
        .await
        .expect("create");
    identity
        .login(&email_of("di@example.com"), "Correct-horse-battery-9")
        .await
        .expect("login");
    let calls = clients.calls.snapshot();
    let count = |op: &str| clients.calls.operation(op);
    assert_eq!(count("AdminCreateUser"), 1, "{calls:?}");
    assert_eq!(count("AdminAddUserToGroup"), 2, "{calls:?}");
    assert_eq!(count("InitiateAuth"), 1, "{calls:?}");
}

fn email_of(address: &str) -> wharf_core::domain::Email {
    wharf_core::domain::Email::parse(address).expect("an email address")
}

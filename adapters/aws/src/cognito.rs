//! The identity port on a Cognito user pool: sign-up (`AdminCreateUser`, a permanent
//! password, a group per role), `USER_PASSWORD_AUTH` login and refresh, and verification of
//! the pool's tokens by the same [`JwtVerifier`] as the local shape, fed by the pool's JWKS.
//!
//! Choices and why:
//! - Email is the pool's username attribute; Cognito then names each user by a UUID (`sub`),
//!   and the user's Wharf id is that UUID with the user prefix, so a token maps to its Wharf
//!   user without a lookup.
//! - Roles are groups and the tenant is the `custom:tenant_id` attribute. Cognito puts custom
//!   attributes only in ID tokens (access tokens would need a pre-token-generation Lambda), so
//!   the bearer token Wharf hands out is the pool's ID token, verified with `aud` = the app
//!   client and `token_use` = `id`. The app client may write only `email`: a user can never
//!   set its own tenant.
//! - Cognito's refresh tokens are reusable until they expire (it does not rotate them), so
//!   `refresh` answers the same refresh token: weaker than the local shape's single-use ones.

use crate::{Clients, aws_error};
use async_trait::async_trait;
use aws_sdk_cognitoidentityprovider::Client;
use aws_sdk_cognitoidentityprovider::types::{
    AttributeDataType, AttributeType, AuthFlowType, ExplicitAuthFlowsType, MessageActionType,
    PasswordPolicyType, SchemaAttributeType, UserPoolPolicyType, UsernameAttributeType,
};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use wharf_core::domain::Email;
use wharf_core::domain::identity::{NewUser, Principal, Role, TokenPair, User};
use wharf_core::ports::{Clock, Identity, Result};
use wharf_core::{CoreError, UserId};
use wharf_jwt::{Algorithm, Audience, JwtVerifier, VerifierConfig};

/// The custom attribute holding a vendor user's tenant.
pub const TENANT_ATTRIBUTE: &str = "custom:tenant_id";
/// The app client's name.
const CLIENT_NAME: &str = "wharf-api";
/// The roles, each a group of the pool.
const ROLES: [Role; 5] = [
    Role::PlatformAdmin,
    Role::PlatformFinance,
    Role::VendorAdmin,
    Role::VendorFinance,
    Role::Subscriber,
];
/// Least time between two fetches of the pool's keys for tokens naming an unknown key.
const JWKS_REFETCH_EVERY: Duration = Duration::from_secs(60);
/// Clock skew tolerated on token times.
const LEEWAY_SECS: u64 = 30;

/// The user pool and app client the identity port uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPool {
    pub pool_id: String,
    pub client_id: String,
}

/// Creates (or finds, by name) the user pool, its app client and a group per role.
pub async fn bootstrap_user_pool(clients: &Clients, name: &str) -> Result<UserPool> {
    let cognito = &clients.cognito;
    let pool_id = match find_pool(cognito, name).await? {
        Some(id) => id,
        None => create_pool(cognito, name).await?,
    };
    let client_id = match find_client(cognito, &pool_id).await? {
        Some(id) => id,
        None => create_client(cognito, &pool_id).await?,
    };
    for role in ROLES {
        match cognito
            .create_group()
            .user_pool_id(&pool_id)
            .group_name(role.as_str())
            .send()
            .await
        {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_group_exists_exception()) => {}
            Err(e) => return Err(aws_error("creating a group", e)),
        }
    }
    Ok(UserPool { pool_id, client_id })
}

async fn find_pool(cognito: &Client, name: &str) -> Result<Option<String>> {
    let mut next: Option<String> = None;
    loop {
        let page = cognito
            .list_user_pools()
            .max_results(60)
            .set_next_token(next)
            .send()
            .await
            .map_err(|e| aws_error("listing user pools", e))?;
        if let Some(pool) = page.user_pools().iter().find(|p| p.name() == Some(name)) {
            return Ok(pool.id().map(str::to_owned));
        }
        match page.next_token() {
            Some(token) if !token.is_empty() => next = Some(token.to_owned()),
            _ => return Ok(None),
        }
    }
}

async fn create_pool(cognito: &Client, name: &str) -> Result<String> {
    let created = cognito
        .create_user_pool()
        .pool_name(name)
        .username_attributes(UsernameAttributeType::Email)
        .schema(
            SchemaAttributeType::builder()
                .name("tenant_id")
                .attribute_data_type(AttributeDataType::String)
                .mutable(true)
                .build(),
        )
        // Wharf checks its own password policy (12+ characters) before Cognito sees one.
        .policies(
            UserPoolPolicyType::builder()
                .password_policy(
                    PasswordPolicyType::builder()
                        .minimum_length(12)
                        .require_uppercase(false)
                        .require_lowercase(false)
                        .require_numbers(false)
                        .require_symbols(false)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .map_err(|e| aws_error("creating the user pool", e))?;
    created
        .user_pool
        .and_then(|p| p.id)
        .ok_or_else(|| CoreError::internal("CreateUserPool answered no id"))
}

async fn find_client(cognito: &Client, pool_id: &str) -> Result<Option<String>> {
    let listed = cognito
        .list_user_pool_clients()
        .user_pool_id(pool_id)
        .max_results(60)
        .send()
        .await
        .map_err(|e| aws_error("listing app clients", e))?;
    Ok(listed
        .user_pool_clients()
        .iter()
        .find(|c| c.client_name() == Some(CLIENT_NAME))
        .and_then(|c| c.client_id().map(str::to_owned)))
}

async fn create_client(cognito: &Client, pool_id: &str) -> Result<String> {
    let created = cognito
        .create_user_pool_client()
        .user_pool_id(pool_id)
        .client_name(CLIENT_NAME)
        .generate_secret(false)
        .explicit_auth_flows(ExplicitAuthFlowsType::AllowUserPasswordAuth)
        .explicit_auth_flows(ExplicitAuthFlowsType::AllowRefreshTokenAuth)
        .read_attributes("email")
        .read_attributes(TENANT_ATTRIBUTE)
        // Only email: with the default (every writable attribute) a user could set its own
        // tenant through UpdateUserAttributes.
        .write_attributes("email")
        .send()
        .await
        .map_err(|e| aws_error("creating the app client", e))?;
    created
        .user_pool_client
        .and_then(|c| c.client_id)
        .ok_or_else(|| CoreError::internal("CreateUserPoolClient answered no id"))
}

/// The identity port on a Cognito user pool.
pub struct CognitoIdentity {
    cognito: Client,
    pool: UserPool,
    jwks_url: String,
    http: reqwest::Client,
    verifier: JwtVerifier,
    clock: Arc<dyn Clock>,
    last_fetch: Mutex<Instant>,
}

impl std::fmt::Debug for CognitoIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CognitoIdentity")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl CognitoIdentity {
    /// Connects to `pool`, fetching its keys once.
    pub async fn new(
        clients: &Clients,
        pool: UserPool,
        clock: Arc<dyn Clock>,
    ) -> Result<CognitoIdentity> {
        let region = clients
            .cognito
            .config()
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| CoreError::internal("no AWS region configured"))?;
        let base = clients
            .settings
            .endpoint_url
            .clone()
            .unwrap_or_else(|| format!("https://cognito-idp.{region}.amazonaws.com"));
        let jwks_url = format!(
            "{}/{}/.well-known/jwks.json",
            base.trim_end_matches('/'),
            pool.pool_id
        );
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(CoreError::internal)?;
        let jwks = fetch_jwks(&http, &jwks_url).await?;
        let verifier = JwtVerifier::new(
            VerifierConfig {
                issuer: format!(
                    "https://cognito-idp.{region}.amazonaws.com/{}",
                    pool.pool_id
                ),
                audience: Audience::Aud(pool.client_id.clone()),
                token_use: Some("id".into()),
                algorithm: Algorithm::RS256,
                leeway_secs: LEEWAY_SECS,
            },
            &jwks,
        )?;
        Ok(CognitoIdentity {
            cognito: clients.cognito.clone(),
            pool,
            jwks_url,
            http,
            verifier,
            clock,
            last_fetch: Mutex::new(Instant::now()),
        })
    }

    /// Refetches the pool's keys when a refused token names one not seen yet (Cognito
    /// rotated), at most once a minute so unknown `kid`s cannot make us hammer the endpoint.
    /// `true` when new keys are in place and the token is worth verifying again.
    async fn refresh_keys_for(&self, token: &str) -> bool {
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return false;
        };
        let Some(kid) = header.kid else { return false };
        if self.verifier.has_kid(&kid) {
            return false;
        }
        {
            let mut last = self
                .last_fetch
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.elapsed() < JWKS_REFETCH_EVERY {
                return false;
            }
            *last = Instant::now();
        }
        match fetch_jwks(&self.http, &self.jwks_url).await {
            Ok(jwks) => match self.verifier.replace_keys(&jwks) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "the user pool's keys are unusable; keeping the old ones");
                    false
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot refetch the user pool's keys");
                false
            }
        }
    }

    async fn authenticate(
        &self,
        flow: AuthFlowType,
        params: [(&str, &str); 2],
    ) -> Result<TokenPair> {
        let mut request = self
            .cognito
            .initiate_auth()
            .client_id(&self.pool.client_id)
            .auth_flow(flow);
        for (k, v) in params {
            if !k.is_empty() {
                request = request.auth_parameters(k, v);
            }
        }
        let answer = request.send().await.map_err(|e| {
            let refused = e.as_service_error().is_some_and(|s| {
                s.is_not_authorized_exception()
                    || s.is_user_not_found_exception()
                    || s.is_user_not_confirmed_exception()
                    || s.is_password_reset_required_exception()
            });
            if refused {
                CoreError::Unauthenticated("invalid email or password".into())
            } else {
                aws_error("signing in", e)
            }
        })?;
        let result = answer
            .authentication_result
            .ok_or_else(|| CoreError::Unauthenticated("sign-in needs a challenge".into()))?;
        let id_token = result
            .id_token
            .ok_or_else(|| CoreError::internal("Cognito answered no ID token"))?;
        Ok(TokenPair {
            access_token: id_token,
            token_type: "Bearer".into(),
            expires_in: u64::try_from(result.expires_in).unwrap_or(0),
            refresh_token: result.refresh_token.unwrap_or_default(),
        })
    }
}

async fn fetch_jwks(http: &reqwest::Client, url: &str) -> Result<serde_json::Value> {
    let answer = http
        .get(url)
        .send()
        .await
        .map_err(|e| aws_error("fetching the user pool's keys", e))?;
    if !answer.status().is_success() {
        return Err(CoreError::unavailable(format!(
            "fetching the user pool's keys: HTTP {}",
            answer.status()
        )));
    }
    answer
        .json()
        .await
        .map_err(|e| aws_error("reading the user pool's keys", e))
}

#[async_trait]
impl Identity for CognitoIdentity {
    async fn create_user(&self, user: NewUser) -> Result<User> {
        let mut create = self
            .cognito
            .admin_create_user()
            .user_pool_id(&self.pool.pool_id)
            .username(user.email.as_str())
            .message_action(MessageActionType::Suppress)
            .user_attributes(attribute("email", user.email.as_str())?)
            .user_attributes(attribute("email_verified", "true")?);
        if let Some(tenant) = &user.tenant_id {
            create = create.user_attributes(attribute(TENANT_ATTRIBUTE, tenant.as_str())?);
        }
        let created = create.send().await.map_err(|e| {
            if e.as_service_error()
                .is_some_and(|s| s.is_username_exists_exception())
            {
                CoreError::Conflict("email is already registered".into())
            } else {
                aws_error("creating the user", e)
            }
        })?;
        let sub = created
            .user
            .as_ref()
            .and_then(|u| {
                u.attributes()
                    .iter()
                    .find(|a| a.name() == "sub")
                    .and_then(|a| a.value())
                    .or(u.username())
            })
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            .ok_or_else(|| CoreError::internal("AdminCreateUser answered no user id"))?;
        let username = sub.to_string();
        // Every step after the user exists is undone if a later one fails: a failed sign-up
        // leaves no account behind.
        if let Err(e) = self.finish_user(&username, &user).await {
            if let Err(undo) = self.remove(&username).await {
                tracing::warn!(error = %undo, "cannot remove a half-created user");
            }
            return Err(e);
        }
        Ok(User {
            id: UserId::from_uuid(sub),
            email: user.email,
            roles: user.roles,
            tenant_id: user.tenant_id,
            created_at: self.clock.now(),
        })
    }

    async fn delete_user(&self, id: &UserId) -> Result<()> {
        self.remove(&id.uuid().to_string()).await
    }

    async fn find_user(&self, email: &Email) -> Result<Option<UserId>> {
        // The pool takes the email where a username goes (its username attribute).
        let found = self
            .cognito
            .admin_get_user()
            .user_pool_id(&self.pool.pool_id)
            .username(email.as_str())
            .send()
            .await;
        let user = match found {
            Ok(user) => user,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_user_not_found_exception()) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(aws_error("looking a user up", e)),
        };
        let sub = user
            .user_attributes()
            .iter()
            .find(|a| a.name() == "sub")
            .and_then(|a| a.value())
            .unwrap_or(user.username());
        uuid::Uuid::parse_str(sub)
            .map(|u| Some(UserId::from_uuid(u)))
            .map_err(|_| CoreError::internal("AdminGetUser answered a user without an id"))
    }

    async fn set_password(&self, id: &UserId, password: &str) -> Result<()> {
        let username = id.uuid().to_string();
        self.cognito
            .admin_set_user_password()
            .user_pool_id(&self.pool.pool_id)
            .username(&username)
            .password(password)
            .permanent(true)
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(s) if s.is_invalid_password_exception() => {
                    CoreError::invalid("password", "is not accepted by the identity provider")
                }
                Some(s) if s.is_user_not_found_exception() => CoreError::NotFound("user"),
                _ => aws_error("setting the password", e),
            })?;
        // Signed out by the address it logs in with: Cognito takes it for the user (the
        // pool's username attribute), and moto only matches sessions by the name they logged
        // in with.
        let user = self
            .cognito
            .admin_get_user()
            .user_pool_id(&self.pool.pool_id)
            .username(&username)
            .send()
            .await
            .map_err(|e| aws_error("reading the user", e))?;
        let email = user
            .user_attributes()
            .iter()
            .find(|a| a.name() == "email")
            .and_then(|a| a.value())
            .unwrap_or(&username)
            .to_owned();
        self.cognito
            .admin_user_global_sign_out()
            .user_pool_id(&self.pool.pool_id)
            .username(email)
            .send()
            .await
            .map_err(|e| aws_error("signing the user out", e))?;
        Ok(())
    }

    async fn login(&self, email: &Email, password: &str) -> Result<TokenPair> {
        self.authenticate(
            AuthFlowType::UserPasswordAuth,
            [("USERNAME", email.as_str()), ("PASSWORD", password)],
        )
        .await
    }

    async fn refresh(&self, refresh_token: &str) -> Result<TokenPair> {
        let mut pair = self
            .authenticate(
                AuthFlowType::RefreshTokenAuth,
                [("REFRESH_TOKEN", refresh_token), ("", "")],
            )
            .await?;
        if pair.refresh_token.is_empty() {
            pair.refresh_token = refresh_token.to_owned();
        }
        Ok(pair)
    }

    async fn verify(&self, access_token: &str) -> Result<Principal> {
        // The common case, a known key (often a token already verified), costs no header
        // parsing: only a refused token is looked at for an unknown key.
        match self.verifier.verify(access_token, self.clock.now()) {
            Err(_) if self.refresh_keys_for(access_token).await => {
                self.verifier.verify(access_token, self.clock.now())
            }
            verified => verified,
        }
    }

    fn jwks(&self) -> Option<serde_json::Value> {
        None
    }
}

impl CognitoIdentity {
    async fn finish_user(&self, username: &str, user: &NewUser) -> Result<()> {
        self.cognito
            .admin_set_user_password()
            .user_pool_id(&self.pool.pool_id)
            .username(username)
            .password(&user.password)
            .permanent(true)
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error()
                    .is_some_and(|s| s.is_invalid_password_exception())
                {
                    CoreError::invalid("password", "is not accepted by the identity provider")
                } else {
                    aws_error("setting the password", e)
                }
            })?;
        for role in &user.roles {
            self.cognito
                .admin_add_user_to_group()
                .user_pool_id(&self.pool.pool_id)
                .username(username)
                .group_name(role.as_str())
                .send()
                .await
                .map_err(|e| aws_error("granting a role", e))?;
        }
        Ok(())
    }

    async fn remove(&self, username: &str) -> Result<()> {
        match self
            .cognito
            .admin_delete_user()
            .user_pool_id(&self.pool.pool_id)
            .username(username)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_user_not_found_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(aws_error("deleting the user", e)),
        }
    }
}

fn attribute(name: &str, value: &str) -> Result<AttributeType> {
    AttributeType::builder()
        .name(name)
        .value(value)
        .build()
        .map_err(CoreError::internal)
}

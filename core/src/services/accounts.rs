//! Sign-up, login, vendor approval and API keys.

use super::Services;
use crate::credentials::{self, check_password};
use crate::domain::*;
use crate::error::Problems;
use crate::throttle::Counted;
use crate::{ApiKeyId, CoreError, Page, PageRequest, UserId, VendorId};
use serde::{Deserialize, Serialize};

/// The body of `POST /v1/vendors`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"name": "Acme Data", "admin_email": "ops@acme.example", "admin_password": "correct horse battery"})))]
pub struct NewVendor {
    /// Display name.
    pub name: String,
    /// Login of the vendor's first admin.
    pub admin_email: String,
    /// At least 12 characters.
    pub admin_password: String,
}

/// The answer of `POST /v1/vendors`.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VendorSignup {
    /// The new vendor (tenant).
    pub vendor: Vendor,
    /// Its admin user.
    pub admin: User,
}

/// The body of `POST /v1/subscribers`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"name": "Bob Quant", "email": "bob@fund.example", "password": "another long secret"})))]
pub struct NewSubscriberAccount {
    /// Display name.
    pub name: String,
    /// Login and contact email.
    pub email: String,
    /// At least 12 characters.
    pub password: String,
}

/// The body of `POST /v1/api-keys`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"name": "uploader", "scopes": ["ingest"]})))]
pub struct NewApiKey {
    /// What the vendor calls it.
    pub name: String,
    /// Defaults to `["ingest"]`.
    pub scopes: Option<Vec<ApiKeyScope>>,
}

/// A new API key with its secret, shown only in this answer.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedApiKey {
    /// The key.
    #[serde(flatten)]
    pub key: ApiKey,
    /// `wk_…`; store it now, it is not shown again. Absent when the answer is a replay of
    /// the same `Idempotency-Key` (see `withheld`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Fields this answer does not repeat: a replay of the same `Idempotency-Key` answers
    /// `["secret"]` here instead of the secret, which is shown once and never kept.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub withheld: Vec<String>,
}

impl CreatedApiKey {
    /// This answer as a replay shows it: without the secret.
    pub fn withheld(&self) -> CreatedApiKey {
        CreatedApiKey {
            key: self.key.clone(),
            secret: None,
            withheld: vec!["secret".into()],
        }
    }
}

/// What kind of credential the caller presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CallerKind {
    /// A user's access token.
    User,
    /// An ingest API key.
    ApiKey,
}

/// Who the caller is (`GET /v1/me`).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Me {
    /// The user id, or the API key id for a machine.
    pub id: String,
    /// A user, or an API key.
    pub kind: CallerKind,
    /// Roles of a user.
    pub roles: Vec<Role>,
    /// The tenant, for vendor staff and API keys.
    pub tenant_id: Option<VendorId>,
}

impl Services {
    /// Signs up a vendor and its admin user, atomically from the caller's point of view.
    pub async fn signup_vendor(&self, input: NewVendor) -> Result<VendorSignup, CoreError> {
        let mut p = Problems::default();
        check_name(&mut p, "name", &input.name, 100);
        let email = Email::parse(&input.admin_email)
            .map_err(|e| p.add("admin_email", e))
            .ok();
        if let Err(e) = check_password(&input.admin_password) {
            p.add("admin_password", e);
        }
        p.finish()?;
        let email = email.ok_or_else(unreported)?;
        let vendor = Vendor {
            id: VendorId::new(),
            name: input.name.trim().to_owned(),
            status: if self.settings.require_vendor_approval {
                VendorStatus::Pending
            } else {
                VendorStatus::Active
            },
            created_at: self.clock.now(),
        };
        let admin = self
            .identity
            .create_user(NewUser {
                email,
                password: input.admin_password,
                roles: vec![Role::VendorAdmin, Role::VendorFinance],
                tenant_id: Some(vendor.id.clone()),
            })
            .await?;
        if let Err(e) = self.store.create_vendor(&vendor).await {
            if let Err(undo) = self.identity.delete_user(&admin.id).await {
                tracing::error!(user.id = %admin.id, error = %undo, "could not undo a failed vendor sign-up");
            }
            return Err(e);
        }
        tracing::info!(tenant.id = %vendor.id, "vendor signed up");
        Ok(VendorSignup { vendor, admin })
    }

    /// Signs up a subscriber account.
    pub async fn signup_subscriber(
        &self,
        input: NewSubscriberAccount,
    ) -> Result<Subscriber, CoreError> {
        let mut p = Problems::default();
        check_name(&mut p, "name", &input.name, 100);
        let email = Email::parse(&input.email)
            .map_err(|e| p.add("email", e))
            .ok();
        if let Err(e) = check_password(&input.password) {
            p.add("password", e);
        }
        p.finish()?;
        let email = email.ok_or_else(unreported)?;
        let user = self
            .identity
            .create_user(NewUser {
                email: email.clone(),
                password: input.password,
                roles: vec![Role::Subscriber],
                tenant_id: None,
            })
            .await?;
        let subscriber = Subscriber {
            id: user.id.clone(),
            name: input.name.trim().to_owned(),
            email,
            email_verified_at: None,
            created_at: user.created_at,
        };
        if let Err(e) = self.store.create_subscriber(&subscriber).await {
            if let Err(undo) = self.identity.delete_user(&user.id).await {
                tracing::error!(user.id = %user.id, error = %undo, "could not undo a failed subscriber sign-up");
            }
            return Err(e);
        }
        // A mail that cannot be sent is logged: the subscriber asks for another.
        if let Err(e) = self.mail_verification(&subscriber).await {
            tracing::warn!(user.id = %subscriber.id, error = %e, "cannot mail the address verification link");
        }
        Ok(subscriber)
    }

    /// Creates a platform user (from the command line; there is no caller to authorize).
    pub async fn create_platform_user(
        &self,
        email: &str,
        password: &str,
        role: Role,
    ) -> Result<User, CoreError> {
        if role.is_tenant_scoped() || role == Role::Subscriber {
            return Err(CoreError::invalid(
                "role",
                "must be platform_admin or platform_finance",
            ));
        }
        let mut p = Problems::default();
        let email = Email::parse(email).map_err(|e| p.add("email", e)).ok();
        if let Err(e) = check_password(password) {
            p.add("password", e);
        }
        p.finish()?;
        self.identity
            .create_user(NewUser {
                email: email.ok_or_else(unreported)?,
                password: password.to_owned(),
                roles: vec![role],
                tenant_id: None,
            })
            .await
    }

    /// Logs in with email and password. An account with `failed_logins_per_account`
    /// failures in 15 minutes waits (429) whatever password comes next.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
    ) -> Result<crate::domain::TokenPair, CoreError> {
        let email = Email::parse(email)
            .map_err(|_| CoreError::Unauthenticated("invalid email or password".into()))?;
        let (throttles, now) = (&self.settings.limits.throttle, self.clock.now());
        let account = email.as_str().to_ascii_lowercase();
        self.throttle
            .check(throttles, Counted::FailedLogin, &account, now)?;
        let outcome = self.identity.login(&email, password).await;
        if let Err(CoreError::Unauthenticated(_)) = &outcome {
            self.throttle.count(Counted::FailedLogin, &account, now);
        }
        outcome
    }

    /// Counts a throttled call (a login, sign-up or refresh) from the client at `address`;
    /// 429 when the address is past its limit. Callers whose address is unknown are not
    /// counted.
    pub fn admit_from(
        &self,
        what: Counted,
        address: Option<std::net::IpAddr>,
    ) -> Result<(), CoreError> {
        let Some(address) = address else {
            return Ok(());
        };
        let throttles = &self.settings.limits.throttle;
        self.throttle
            .admit(throttles, what, &address.to_string(), self.clock.now())
    }

    /// Verifies a bearer credential: an API key (`wk_…`) or an access token.
    pub async fn authenticate(&self, credential: &str) -> Result<Principal, CoreError> {
        if credential.starts_with("wk_") {
            let bad = || CoreError::Unauthenticated("invalid API key".into());
            let id = credentials::api_key_id(credential).ok_or_else(bad)?;
            let (key, digest) = match self.store.find_api_key(&id).await {
                Ok(found) => found,
                Err(CoreError::NotFound(_)) => return Err(bad()),
                Err(e) => return Err(e),
            };
            let presented = credentials::sha256_hex(credential.as_bytes());
            if !credentials::constant_time_eq(presented.as_bytes(), digest.as_bytes()) {
                return Err(bad());
            }
            return Ok(Principal::ApiKey {
                id: key.id,
                tenant: key.tenant_id,
                scopes: key.scopes,
            });
        }
        self.identity.verify(credential).await
    }

    /// Describes the caller.
    pub fn me(&self, who: &Principal) -> Me {
        match who {
            Principal::User { id, roles, tenant } => Me {
                id: id.to_string(),
                kind: CallerKind::User,
                roles: roles.clone(),
                tenant_id: tenant.clone(),
            },
            Principal::ApiKey { id, tenant, .. } => Me {
                id: id.to_string(),
                kind: CallerKind::ApiKey,
                roles: vec![],
                tenant_id: Some(tenant.clone()),
            },
        }
    }

    /// Activates a pending vendor (platform admin).
    pub async fn approve_vendor(
        &self,
        who: &Principal,
        id: &VendorId,
    ) -> Result<Vendor, CoreError> {
        who.require(Role::PlatformAdmin)?;
        let vendor = self.store.get_vendor(id).await?;
        if vendor.status == VendorStatus::Active {
            return Err(CoreError::Conflict("vendor is already active".into()));
        }
        self.store
            .set_vendor_status(id, VendorStatus::Pending, VendorStatus::Active)
            .await
    }

    /// Lists vendors (platform admin).
    pub async fn list_vendors(
        &self,
        who: &Principal,
        status: Option<VendorStatus>,
        page: &PageRequest,
    ) -> Result<Page<Vendor>, CoreError> {
        who.require(Role::PlatformAdmin)?;
        self.store.list_vendors(status, page).await
    }

    /// Reads a vendor: its own staff, or a platform admin.
    pub async fn get_vendor(&self, who: &Principal, id: &VendorId) -> Result<Vendor, CoreError> {
        let own = matches!(who, Principal::User { tenant: Some(t), .. } if t == id);
        if !own && !who.has_role(Role::PlatformAdmin) {
            return Err(CoreError::NotFound("vendor"));
        }
        self.store.get_vendor(id).await
    }

    /// Creates an ingest key for the caller's tenant.
    pub async fn create_api_key(
        &self,
        who: &Principal,
        input: NewApiKey,
    ) -> Result<CreatedApiKey, CoreError> {
        let tenant = who.tenant_with(Role::VendorAdmin)?;
        let mut p = Problems::default();
        check_name(&mut p, "name", &input.name, 100);
        let scopes = input.scopes.unwrap_or_else(|| vec![ApiKeyScope::Ingest]);
        if scopes.is_empty() {
            p.add("scopes", "needs at least one scope");
        }
        p.finish()?;
        let (id, secret, digest) = credentials::new_api_key()?;
        let key = ApiKey {
            id,
            tenant_id: tenant.clone(),
            name: input.name.trim().to_owned(),
            scopes,
            prefix: secret.chars().take(12).collect(),
            created_at: self.clock.now(),
        };
        self.store.create_api_key(&key, &digest).await?;
        Ok(CreatedApiKey {
            key,
            secret: Some(secret),
            withheld: Vec::new(),
        })
    }

    /// Lists the caller's tenant's keys.
    pub async fn list_api_keys(
        &self,
        who: &Principal,
        page: &PageRequest,
    ) -> Result<Page<ApiKey>, CoreError> {
        let tenant = who.tenant_with(Role::VendorAdmin)?;
        self.store.list_api_keys(tenant, page).await
    }

    /// Reads one of the caller's tenant's keys.
    pub async fn get_api_key(&self, who: &Principal, id: &ApiKeyId) -> Result<ApiKey, CoreError> {
        let tenant = who.tenant_with(Role::VendorAdmin)?;
        self.store.get_api_key(tenant, id).await
    }

    /// Revokes one of the caller's tenant's keys.
    pub async fn delete_api_key(&self, who: &Principal, id: &ApiKeyId) -> Result<(), CoreError> {
        let tenant = who.tenant_with(Role::VendorAdmin)?;
        self.store.delete_api_key(tenant, id).await
    }

    /// Reads a subscriber profile: the subscriber itself.
    pub async fn get_subscriber(
        &self,
        who: &Principal,
        id: &UserId,
    ) -> Result<Subscriber, CoreError> {
        match who {
            Principal::User { id: me, .. } if me == id => self.store.get_subscriber(id).await,
            _ => Err(CoreError::NotFound("subscriber")),
        }
    }
}

/// A value missing after its check passed: the check failed to report why.
fn unreported() -> CoreError {
    CoreError::internal("a value that failed its check was not reported")
}

//! Who is calling: vendors (tenants), users and their roles, subscribers, API keys.

use super::Email;
use crate::{ApiKeyId, CoreError, Timestamp, UserId, VendorId};
use serde::{Deserialize, Serialize};

/// What a user may do. Vendor roles are scoped to the user's tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    /// Approves vendors and sees everything.
    PlatformAdmin,
    /// Closes billing periods, sees all invoices and payouts.
    PlatformFinance,
    /// Manages its tenant's sources, feeds, plans and keys.
    VendorAdmin,
    /// Sees its tenant's invoices and payouts.
    VendorFinance,
    /// Subscribes to feeds and receives data.
    Subscriber,
}

impl Role {
    /// The claim value of this role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "platform_admin",
            Role::PlatformFinance => "platform_finance",
            Role::VendorAdmin => "vendor_admin",
            Role::VendorFinance => "vendor_finance",
            Role::Subscriber => "subscriber",
        }
    }

    /// Parses a claim value.
    pub fn parse(s: &str) -> Option<Role> {
        [
            Role::PlatformAdmin,
            Role::PlatformFinance,
            Role::VendorAdmin,
            Role::VendorFinance,
            Role::Subscriber,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    /// Whether this role belongs to a vendor's tenant.
    pub fn is_tenant_scoped(self) -> bool {
        matches!(self, Role::VendorAdmin | Role::VendorFinance)
    }
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ApiKeyScope {
    /// Push records into the tenant's sources.
    Ingest,
}

/// The verified caller of a request. The tenant always comes from here, never from a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A user authenticated with a bearer token.
    User {
        /// The user.
        id: UserId,
        /// Granted roles.
        roles: Vec<Role>,
        /// The user's tenant, for vendor staff.
        tenant: Option<VendorId>,
    },
    /// A machine authenticated with an API key.
    ApiKey {
        /// The key.
        id: ApiKeyId,
        /// The tenant that owns the key.
        tenant: VendorId,
        /// What the key may do.
        scopes: Vec<ApiKeyScope>,
    },
}

impl Principal {
    /// Whether the caller holds `role`.
    pub fn has_role(&self, role: Role) -> bool {
        matches!(self, Principal::User { roles, .. } if roles.contains(&role))
    }

    /// The caller's tenant when it holds the tenant-scoped `role` there; 403 otherwise.
    pub fn tenant_with(&self, role: Role) -> Result<&VendorId, CoreError> {
        match self {
            Principal::User {
                roles,
                tenant: Some(t),
                ..
            } if roles.contains(&role) => Ok(t),
            _ => Err(CoreError::Forbidden(format!(
                "requires the {} role",
                role.as_str()
            ))),
        }
    }

    /// The calling user when it holds `role`; 403 otherwise.
    pub fn user_with(&self, role: Role) -> Result<&UserId, CoreError> {
        match self {
            Principal::User { id, roles, .. } if roles.contains(&role) => Ok(id),
            _ => Err(CoreError::Forbidden(format!(
                "requires the {} role",
                role.as_str()
            ))),
        }
    }

    /// The calling user, if the caller is one.
    pub fn user_id(&self) -> Option<&UserId> {
        match self {
            Principal::User { id, .. } => Some(id),
            Principal::ApiKey { .. } => None,
        }
    }

    /// 403 unless the caller holds `role`.
    pub fn require(&self, role: Role) -> Result<(), CoreError> {
        self.user_with(role).map(|_| ())
    }
}

/// Whether a vendor may sell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum VendorStatus {
    /// Waiting for a platform admin's approval; its feeds are not in the catalog.
    Pending,
    /// Selling.
    Active,
}

impl VendorStatus {
    /// The status's name, as the API and the stores write it.
    pub fn as_str(self) -> &'static str {
        match self {
            VendorStatus::Pending => "pending",
            VendorStatus::Active => "active",
        }
    }
}

impl Vendor {
    /// `self` moved from status `from` to `to`: the one rule of a status change, which every
    /// store applies inside the write that stores it. `Conflict` when the vendor is not `from`.
    pub fn moved(mut self, from: VendorStatus, to: VendorStatus) -> Result<Vendor, CoreError> {
        if self.status != from {
            return Err(CoreError::Conflict(format!(
                "the vendor is {}, not {}",
                self.status.as_str(),
                from.as_str()
            )));
        }
        self.status = to;
        Ok(self)
    }
}

/// A vendor, the tenant that owns sources, feeds and keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Vendor {
    /// The vendor's id, which is also its tenant id.
    pub id: VendorId,
    /// Display name.
    pub name: String,
    /// Approval state.
    pub status: VendorStatus,
    /// When the vendor signed up.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
}

/// A user account as the identity provider knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    /// The user's id.
    pub id: UserId,
    /// Login email, lowercase.
    pub email: Email,
    /// Granted roles.
    pub roles: Vec<Role>,
    /// The tenant, for vendor staff.
    pub tenant_id: Option<VendorId>,
    /// When the account was created.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Login email.
    pub email: Email,
    /// Plain password, already checked against the policy; hashed by the identity adapter.
    pub password: String,
    /// Roles to grant.
    pub roles: Vec<Role>,
    /// Tenant for vendor staff.
    pub tenant_id: Option<VendorId>,
}

/// A subscriber's account profile (the account itself is a user with the subscriber role).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredSubscriber")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Subscriber {
    /// The subscriber's user id.
    pub id: UserId,
    /// Display name.
    pub name: String,
    /// Contact and login email.
    pub email: Email,
    /// When the subscriber proved the address through the link mailed at sign-up (`null`
    /// until then); no notice is mailed and no invoice sent to it before.
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub email_verified_at: Option<Timestamp>,
    /// When the account was created.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
}

/// A subscriber as stored: one written before addresses were verified has no
/// `email_verified_at` at all, and counts as verified when it was created (its address was
/// already in use); one written since has the field, `null` until verified.
#[derive(Deserialize)]
struct StoredSubscriber {
    id: UserId,
    name: String,
    email: Email,
    #[serde(default, deserialize_with = "present")]
    email_verified_at: Option<Option<Timestamp>>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: Timestamp,
}

/// A field that is present, `null` or an RFC 3339 instant.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<Timestamp>>, D::Error> {
    time::serde::rfc3339::option::deserialize(d).map(Some)
}

impl From<StoredSubscriber> for Subscriber {
    fn from(s: StoredSubscriber) -> Subscriber {
        Subscriber {
            email_verified_at: s.email_verified_at.unwrap_or(Some(s.created_at)),
            id: s.id,
            name: s.name,
            email: s.email,
            created_at: s.created_at,
        }
    }
}

/// Access and refresh tokens handed out at login.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenPair {
    /// Bearer token for API calls.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Single-use token for `POST /v1/auth/refresh`.
    pub refresh_token: String,
}

/// An ingest API key (the secret itself is shown once and stored only as a hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKey {
    /// The key's id.
    pub id: ApiKeyId,
    /// The owning tenant.
    pub tenant_id: VendorId,
    /// What the vendor calls it.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<ApiKeyScope>,
    /// The first characters of the secret, to recognise it.
    pub prefix: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_stored_before_verification_existed_counts_as_verified_when_created() {
        let legacy = r#"{"id":"usr_01a23cd24340718c9ded885ea543d317","name":"Bob","email":"bob@example.com","created_at":"2026-01-02T03:04:05Z"}"#;
        let read: Subscriber = serde_json::from_str(legacy).expect("a subscriber");
        assert_eq!(read.email_verified_at, Some(read.created_at));
        let unverified = r#"{"id":"usr_01a23cd24340718c9ded885ea543d317","name":"Bob","email":"bob@example.com","email_verified_at":null,"created_at":"2026-01-02T03:04:05Z"}"#;
        let read: Subscriber = serde_json::from_str(unverified).expect("a subscriber");
        assert_eq!(read.email_verified_at, None);
        let again: Subscriber =
            serde_json::from_str(&serde_json::to_string(&read).expect("json")).expect("read back");
        assert_eq!(
            again, read,
            "an unverified subscriber stays unverified when stored"
        );
    }
}

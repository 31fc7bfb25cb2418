//! Accounts made by invitation, and passwords reset by email. Both send a link with a sealed
//! token (encrypted and authenticated by the `SecretBox`: its content cannot be read or
//! forged) to the address, so whoever uses it holds the mailbox: the address is verified.
//! - A vendor admin invites `vendor_admin` or `vendor_finance` users into its tenant; a
//!   platform admin invites `platform_admin` or `platform_finance` users. Accepting makes the
//!   account with the password the invitee chooses; an invitation makes one account only
//!   (its address then has one), and expires after 7 days.
//! - A password reset is asked for by address and always answered the same (no one learns
//!   which addresses have accounts); its link works once, for an hour, and signs the user
//!   out everywhere.
//! - A subscriber's address, given at sign-up, is verified through a link mailed then (or
//!   again on request); no notice or invoice goes to it before.

use super::Services;
use crate::credentials::check_password;
use crate::domain::{
    Email, IdempotencyState, NewUser, Principal, Role, StoredResponse, Subscriber, User,
};
use crate::error::Problems;
use crate::{CoreError, Timestamp, UserId, VendorId};
use serde::{Deserialize, Serialize};

const INVITATION: &str = "invitation";
const INVITATION_VALID: time::Duration = time::Duration::days(7);
const PASSWORD_RESET: &str = "password-reset";
const PASSWORD_RESET_VALID: time::Duration = time::Duration::hours(1);
const EMAIL_VERIFICATION: &str = "email-verification";
const EMAIL_VERIFICATION_VALID: time::Duration = time::Duration::days(7);

/// A subscriber's verified address.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerifiedEmail {
    /// The address.
    pub email: Email,
    /// When it was verified.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub verified_at: Timestamp,
}

/// The body of `POST /v1/invitations`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"email": "ana@acme.example", "role": "vendor_finance"})))]
pub struct NewInvitation {
    /// Where the invitation is mailed; the account logs in with it.
    pub email: String,
    /// The role granted: `vendor_admin` or `vendor_finance` (by a vendor admin, in its
    /// tenant), `platform_admin` or `platform_finance` (by a platform admin).
    pub role: Role,
}

/// An invitation sent (its link is only in the mail).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Invitation {
    /// The invited address.
    pub email: Email,
    /// The role the account gets.
    pub role: Role,
    /// The tenant, for vendor staff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor_id: Option<VendorId>,
    /// Until when the link can be used.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: Timestamp,
}

impl Services {
    /// Seals `parts` (none holding a newline) into a token for a link.
    pub(super) fn seal_token(&self, parts: &[&str]) -> Result<String, CoreError> {
        use base64::Engine;
        let sealed = self.secrets.seal(&parts.join("\n"))?;
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed))
    }

    /// The parts of a token sealed for `kind`, if it is one (`NotFound` otherwise: a token
    /// that does not open says nothing about why).
    pub(super) fn open_token(
        &self,
        token: &str,
        kind: &str,
        what: &'static str,
    ) -> Result<Vec<String>, CoreError> {
        use base64::Engine;
        let parts = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|sealed| self.secrets.open(&sealed).ok())
            .map(|text| text.split('\n').map(str::to_owned).collect::<Vec<_>>())
            .filter(|parts| parts.first().map(String::as_str) == Some(kind))
            .ok_or(CoreError::NotFound(what))?;
        Ok(parts[1..].to_vec())
    }

    /// Whether an unexpired token's `expires` (unix seconds) has passed.
    pub(super) fn expired(&self, expires: &str) -> Result<bool, CoreError> {
        let expires: i64 = expires
            .parse()
            .map_err(|_| CoreError::internal("a sealed token holds no expiry"))?;
        Ok(self.clock.now().unix_timestamp() > expires)
    }

    /// Mails an invitation to make an account with `role`.
    pub async fn invite(
        &self,
        who: &Principal,
        input: NewInvitation,
    ) -> Result<Invitation, CoreError> {
        let vendor = match input.role {
            Role::VendorAdmin | Role::VendorFinance => {
                Some(who.tenant_with(Role::VendorAdmin)?.clone())
            }
            Role::PlatformAdmin | Role::PlatformFinance => {
                who.require(Role::PlatformAdmin)?;
                None
            }
            Role::Subscriber => {
                return Err(CoreError::invalid("role", "subscribers sign up themselves"));
            }
        };
        let email = Email::parse(&input.email).map_err(|e| CoreError::invalid("email", e))?;
        let expires_at = self.clock.now() + INVITATION_VALID;
        let tenant = vendor
            .as_ref()
            .map_or_else(String::new, ToString::to_string);
        let token = self.seal_token(&[
            INVITATION,
            email.as_str(),
            input.role.as_str(),
            &tenant,
            &expires_at.unix_timestamp().to_string(),
            &uuid::Uuid::now_v7().to_string(),
        ])?;
        let base = self.settings.public_url.trim_end_matches('/');
        let body = format!(
            "You are invited to Wharf as {role}. To make your account, choose a password and \
             send it with this invitation's token (valid until {until}):\n\n\
             POST {base}/v1/invitations/accept\n\
             {{\"token\": \"{token}\", \"password\": \"<your password>\"}}\n\n\
             If you did not expect this, ignore it: nothing is made until it is accepted.\n",
            role = input.role.as_str(),
            until = crate::rfc3339(expires_at),
        );
        self.mailer
            .send(&email, "Your Wharf invitation", &body)
            .await?;
        tracing::info!(role = input.role.as_str(), "invitation sent");
        Ok(Invitation {
            email,
            role: input.role,
            vendor_id: vendor,
            expires_at,
        })
    }

    /// Makes the account an invitation is for, with `password`. An invitation that was used
    /// (its address has an account) is a 409; an expired one a 410.
    pub async fn accept_invitation(&self, token: &str, password: &str) -> Result<User, CoreError> {
        let parts = self.open_token(token, INVITATION, "invitation")?;
        let [email, role, tenant, expires, _nonce] = parts.as_slice() else {
            return Err(CoreError::NotFound("invitation"));
        };
        if self.expired(expires)? {
            return Err(CoreError::Gone(
                "this invitation has expired; ask for a new one".into(),
            ));
        }
        checked_password(password)?;
        let tenant = match tenant.as_str() {
            "" => None,
            id => Some(id.parse::<VendorId>().map_err(CoreError::internal)?),
        };
        let role = Role::parse(role)
            .ok_or_else(|| CoreError::internal("a sealed invitation holds no role"))?;
        let user = self
            .identity
            .create_user(NewUser {
                email: Email::parse(email).map_err(CoreError::internal)?,
                password: password.to_owned(),
                roles: vec![role],
                tenant_id: tenant,
            })
            .await
            .map_err(|e| match e {
                CoreError::Conflict(_) => CoreError::Conflict(
                    "this invitation was used: its address has an account".into(),
                ),
                e => e,
            })?;
        tracing::info!(user.id = %user.id, role = role.as_str(), "invitation accepted");
        Ok(user)
    }

    /// Mails a password reset link to `email` if it has an account; answers the same either
    /// way.
    pub async fn request_password_reset(&self, email: &str) -> Result<(), CoreError> {
        let Ok(email) = Email::parse(email) else {
            return Err(CoreError::invalid("email", "is not an email address"));
        };
        let Some(user) = self.identity.find_user(&email).await? else {
            return Ok(());
        };
        let expires_at = self.clock.now() + PASSWORD_RESET_VALID;
        let token = self.seal_token(&[
            PASSWORD_RESET,
            user.as_str(),
            &expires_at.unix_timestamp().to_string(),
            &uuid::Uuid::now_v7().to_string(),
        ])?;
        let base = self.settings.public_url.trim_end_matches('/');
        let body = format!(
            "Someone asked to reset the password of your Wharf account. To choose a new one \
             (until {until}, once):\n\n\
             POST {base}/v1/auth/password-reset/confirm\n\
             {{\"token\": \"{token}\", \"password\": \"<your new password>\"}}\n\n\
             If it was not you, ignore this: your password stays as it is.\n",
            until = crate::rfc3339(expires_at),
        );
        if let Err(e) = self
            .mailer
            .send(&email, "Reset your Wharf password", &body)
            .await
        {
            tracing::warn!(user.id = %user, error = %e, "cannot mail a password reset link");
        }
        Ok(())
    }

    /// Sets a new password with a reset link's token: once, before it expires.
    pub async fn reset_password(&self, token: &str, password: &str) -> Result<(), CoreError> {
        let parts = self.open_token(token, PASSWORD_RESET, "password reset")?;
        let [user, expires, nonce] = parts.as_slice() else {
            return Err(CoreError::NotFound("password reset"));
        };
        if self.expired(expires)? {
            return Err(CoreError::Gone(
                "this link has expired; ask for a new one".into(),
            ));
        }
        checked_password(password)?;
        let user = UserId::parse(user).map_err(CoreError::internal)?;
        match self
            .store
            .begin(PASSWORD_RESET, nonce, nonce, self.clock.now())
            .await?
        {
            IdempotencyState::Started => {}
            IdempotencyState::Completed(_) | IdempotencyState::Conflict => {
                return Err(CoreError::Gone(
                    "this link was used; ask for a new one".into(),
                ));
            }
        }
        match self.identity.set_password(&user, password).await {
            Ok(()) => {
                let done = StoredResponse {
                    status: 204,
                    body: Vec::new(),
                };
                self.store.complete(PASSWORD_RESET, nonce, &done).await?;
                tracing::info!(user.id = %user, "password reset");
                Ok(())
            }
            Err(e) => {
                // The link stays usable: nothing changed.
                self.store.abandon(PASSWORD_RESET, nonce).await?;
                Err(e)
            }
        }
    }
}

impl Services {
    /// Mails `subscriber` the link that verifies its address.
    pub(super) async fn mail_verification(&self, subscriber: &Subscriber) -> Result<(), CoreError> {
        let expires_at = self.clock.now() + EMAIL_VERIFICATION_VALID;
        let token = self.seal_token(&[
            EMAIL_VERIFICATION,
            subscriber.id.as_str(),
            subscriber.email.as_str(),
            &expires_at.unix_timestamp().to_string(),
        ])?;
        let base = self.settings.public_url.trim_end_matches('/');
        let body = format!(
            "Welcome to Wharf. Please verify this address (until {until}); no notice or \
             invoice is sent to it before:\n\n\
             POST {base}/v1/email-verification\n\
             {{\"token\": \"{token}\"}}\n",
            until = crate::rfc3339(expires_at),
        );
        self.mailer
            .send(&subscriber.email, "Verify your email address", &body)
            .await
    }

    /// Mails the calling subscriber a new verification link (none once verified).
    pub async fn resend_verification(&self, who: &Principal) -> Result<(), CoreError> {
        let me = who.user_with(Role::Subscriber)?;
        let subscriber = self.store.get_subscriber(me).await?;
        if subscriber.email_verified_at.is_some() {
            return Err(CoreError::Conflict("the address is verified".into()));
        }
        self.mail_verification(&subscriber).await
    }

    /// Verifies a subscriber's address with the mailed token; verifying again answers the
    /// first verification.
    pub async fn verify_email(&self, token: &str) -> Result<VerifiedEmail, CoreError> {
        let parts = self.open_token(token, EMAIL_VERIFICATION, "verification")?;
        let [user, email, expires] = parts.as_slice() else {
            return Err(CoreError::NotFound("verification"));
        };
        let user = UserId::parse(user).map_err(CoreError::internal)?;
        let mut subscriber = self.store.get_subscriber(&user).await?;
        if subscriber.email.as_str() != email {
            return Err(CoreError::NotFound("verification"));
        }
        if let Some(verified_at) = subscriber.email_verified_at {
            return Ok(VerifiedEmail {
                email: subscriber.email,
                verified_at,
            });
        }
        if self.expired(expires)? {
            return Err(CoreError::Gone(
                "this link has expired; ask for a new one (POST /v1/me/email-verification)".into(),
            ));
        }
        let now = self.clock.now();
        subscriber.email_verified_at = Some(now);
        self.store.update_subscriber(&subscriber).await?;
        tracing::info!(user.id = %user, "address verified");
        Ok(VerifiedEmail {
            email: subscriber.email,
            verified_at: now,
        })
    }
}

/// 422 on `password` unless it meets the policy.
fn checked_password(password: &str) -> Result<(), CoreError> {
    let mut p = Problems::default();
    if let Err(e) = check_password(password) {
        p.add("password", e);
    }
    p.finish()
}

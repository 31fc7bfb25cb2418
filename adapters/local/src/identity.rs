//! The local shape's identity provider: users with argon2id password hashes in SQLite,
//! access tokens signed by the local Ed25519 issuer and verified by the shared verifier, and
//! single-use refresh tokens stored as SHA-256 digests.

use crate::Db;
use async_trait::async_trait;
use rusqlite::OptionalExtension;
use std::sync::Arc;
use std::time::Duration;
use wharf_core::credentials::{self, dummy_password_hash, hash_password, verify_password};
use wharf_core::domain::{Email, NewUser, Principal, Role, TokenPair, User};
use wharf_core::ports::{Clock, Identity};
use wharf_core::{CoreError, UserId, VendorId};
use wharf_jwt::{JwtVerifier, LocalIssuer};

/// Accounts and tokens of the local shape.
pub struct LocalIdentity {
    db: Db,
    issuer: LocalIssuer,
    verifier: JwtVerifier,
    clock: Arc<dyn Clock>,
    refresh_ttl: Duration,
    /// Places in this server's hashing queue (see `HASHING_QUEUE`).
    queue: Arc<tokio::sync::Semaphore>,
}

impl LocalIdentity {
    /// Builds the provider over `db`, signing with `issuer`.
    pub fn new(db: Db, issuer: LocalIssuer, clock: Arc<dyn Clock>, refresh_ttl: Duration) -> Self {
        let verifier = issuer.verifier();
        LocalIdentity {
            db,
            issuer,
            verifier,
            clock,
            refresh_ttl,
            queue: Arc::new(tokio::sync::Semaphore::new(HASHING_QUEUE)),
        }
    }

    /// Runs CPU-heavy password hashing off the async workers, at most one per core at a time
    /// and at most `HASHING_QUEUE` waiting or running for this server.
    async fn hashing<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CoreError> {
        let _queued = self
            .queue
            .try_acquire()
            .map_err(|_| CoreError::unavailable("password checks are at capacity"))?;
        let _turn = HASHING.acquire().await.map_err(CoreError::internal)?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(CoreError::internal)
    }

    /// New tokens for `user`; the refresh token continues `family` (a login starts one).
    async fn tokens_for(
        &self,
        user: &User,
        family: Option<String>,
    ) -> Result<TokenPair, CoreError> {
        let now = self.clock.now();
        let (access_token, expires_in) = self.issuer.issue(user, now)?;
        let refresh_token = format!("wr_{}", credentials::random_token(32)?);
        let digest = credentials::sha256_hex(refresh_token.as_bytes());
        let expires_at = (now + self.refresh_ttl).unix_timestamp();
        let user_id = user.id.to_string();
        let family = match family {
            Some(family) => family,
            None => credentials::random_token(16)?,
        };
        self.db
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO refresh_tokens (digest, user_id, expires_at, family) VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![digest, user_id, expires_at, family],
                )
                .map_err(CoreError::internal)?;
                Ok(())
            })
            .await?;
        Ok(TokenPair {
            access_token,
            token_type: "Bearer".into(),
            expires_in,
            refresh_token,
        })
    }
}

type UserRow = (String, String, String, String, Option<String>, String);

fn user_from_row(row: UserRow) -> Result<(User, String), CoreError> {
    let (id, email, hash, roles, tenant, created_at) = row;
    let roles: Vec<String> = serde_json::from_str(&roles).map_err(CoreError::internal)?;
    let user = User {
        id: UserId::parse(&id).map_err(CoreError::internal)?,
        email: Email::parse(&email).map_err(CoreError::internal)?,
        roles: roles.iter().filter_map(|r| Role::parse(r)).collect(),
        tenant_id: tenant
            .map(|t| VendorId::parse(&t))
            .transpose()
            .map_err(CoreError::internal)?,
        created_at: time::OffsetDateTime::parse(
            &created_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(CoreError::internal)?,
    };
    Ok((user, hash))
}

const SELECT_USER: &str =
    "SELECT id, email, password_hash, roles, tenant_id, created_at FROM users";

fn read_user(
    conn: &rusqlite::Connection,
    clause: &str,
    arg: &str,
) -> Result<Option<(User, String)>, CoreError> {
    let row: Option<UserRow> = conn
        .prepare_cached(&format!("{SELECT_USER} WHERE {clause} = ?1"))
        .and_then(|mut st| {
            st.query_row([arg], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .optional()
        })
        .map_err(CoreError::internal)?;
    row.map(user_from_row).transpose()
}

/// Password hashes computed at once: one per core. Each takes argon2's 19 MiB work area and
/// tens of milliseconds of CPU, so a burst of sign-ups or logins waits its turn instead of
/// taking the machine's memory and every core.
static HASHING: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
});

/// Password hashes waiting or being computed at most; past it, a request is answered 503 at
/// once rather than queued (a flood of logins sheds load instead of piling up).
const HASHING_QUEUE: usize = 64;

#[async_trait]
impl Identity for LocalIdentity {
    async fn create_user(&self, new: NewUser) -> Result<User, CoreError> {
        let password = new.password;
        let hash = self.hashing(move || hash_password(&password)).await??;
        let user = User {
            id: UserId::new(),
            email: new.email,
            roles: new.roles,
            tenant_id: new.tenant_id,
            created_at: self.clock.now(),
        };
        let row = user.clone();
        let roles =
            serde_json::to_string(&row.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>())
                .map_err(CoreError::internal)?;
        let created_at = row
            .created_at
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(CoreError::internal)?;
        self.db
            .write(move |tx| {
                let taken = tx
                    .query_row("SELECT 1 FROM users WHERE email = ?1", [row.email.as_str()], |_| Ok(()))
                    .optional()
                    .map_err(CoreError::internal)?;
                if taken.is_some() {
                    return Err(CoreError::Conflict("an account with this email already exists".into()));
                }
                tx.execute(
                    "INSERT INTO users (id, email, password_hash, roles, tenant_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    rusqlite::params![row.id.as_str(), row.email.as_str(), hash, roles, row.tenant_id.as_ref().map(|t| t.to_string()), created_at],
                )
                .map_err(CoreError::internal)?;
                Ok(())
            })
            .await?;
        Ok(user)
    }

    async fn delete_user(&self, id: &UserId) -> Result<(), CoreError> {
        let id = id.to_string();
        self.db
            .write(move |tx| {
                tx.execute("DELETE FROM users WHERE id = ?1", [id])
                    .map_err(CoreError::internal)?;
                Ok(())
            })
            .await
    }

    async fn find_user(&self, email: &Email) -> Result<Option<UserId>, CoreError> {
        let email = email.to_string();
        let found = self
            .db
            .read(move |conn| read_user(conn, "email", &email))
            .await?;
        Ok(found.map(|(user, _)| user.id))
    }

    async fn set_password(&self, id: &UserId, password: &str) -> Result<(), CoreError> {
        let password = password.to_owned();
        let hash = self.hashing(move || hash_password(&password)).await??;
        let id = id.to_string();
        self.db
            .write(move |tx| {
                let changed = tx
                    .execute(
                        "UPDATE users SET password_hash = ?1 WHERE id = ?2",
                        rusqlite::params![hash, id],
                    )
                    .map_err(CoreError::internal)?;
                if changed == 0 {
                    return Err(CoreError::NotFound("user"));
                }
                tx.execute("DELETE FROM refresh_tokens WHERE user_id = ?1", [id])
                    .map_err(CoreError::internal)?;
                Ok(())
            })
            .await
    }

    async fn login(&self, email: &Email, password: &str) -> Result<TokenPair, CoreError> {
        let email = email.to_string();
        let found = self
            .db
            .read(move |conn| read_user(conn, "email", &email))
            .await?;
        let hash = found
            .as_ref()
            .map(|(_, h)| h.clone())
            .unwrap_or_else(|| dummy_password_hash().to_owned());
        let password = password.to_owned();
        let ok = self
            .hashing(move || verify_password(&password, &hash))
            .await?;
        match found {
            Some((user, _)) if ok => self.tokens_for(&user, None).await,
            _ => Err(CoreError::Unauthenticated(
                "invalid email or password".into(),
            )),
        }
    }

    /// Rotates a refresh token. A token used before is a token someone else also holds: its
    /// whole family (every token rotated from the same login) is revoked.
    async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, CoreError> {
        let digest = credentials::sha256_hex(refresh_token.as_bytes());
        let now = self.clock.now().unix_timestamp();
        let found = self
            .db
            .write(move |tx| {
                let row: Option<(String, i64, String, bool)> = tx
                    .query_row(
                        "SELECT user_id, expires_at, family, used FROM refresh_tokens WHERE digest = ?1",
                        [&digest],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .optional()
                    .map_err(CoreError::internal)?;
                let Some((user_id, expires_at, family, used)) = row else {
                    return Ok(None);
                };
                tx.execute(
                    "DELETE FROM refresh_tokens WHERE user_id = ?1 AND expires_at <= ?2",
                    rusqlite::params![user_id, now],
                )
                .map_err(CoreError::internal)?;
                if used {
                    tx.execute("DELETE FROM refresh_tokens WHERE family = ?1", [&family])
                        .map_err(CoreError::internal)?;
                    tracing::warn!(user.id = %user_id, "a used refresh token came back; its family is revoked");
                    return Ok(None);
                }
                if expires_at <= now {
                    return Ok(None);
                }
                tx.execute("UPDATE refresh_tokens SET used = 1 WHERE digest = ?1", [&digest])
                    .map_err(CoreError::internal)?;
                Ok(read_user(tx, "id", &user_id)?.map(|user| (user, family)))
            })
            .await?;
        match found {
            Some(((user, _), family)) => self.tokens_for(&user, Some(family)).await,
            None => Err(CoreError::Unauthenticated(
                "refresh token is unknown, used or expired".into(),
            )),
        }
    }

    async fn verify(&self, access_token: &str) -> Result<Principal, CoreError> {
        self.verifier.verify(access_token, self.clock.now())
    }

    fn jwks(&self) -> Option<serde_json::Value> {
        Some(self.issuer.jwks())
    }
}

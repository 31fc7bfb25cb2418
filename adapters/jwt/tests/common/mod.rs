//! Helpers shared by the integration tests: throwaway data directories, users, and
//! hand-built or foreign-signed tokens for the attacks the verifier must refuse.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;
use wharf_core::domain::identity::{Role, User};
use wharf_core::{CoreError, UserId, VendorId};
use wharf_jwt::LocalIssuer;

pub const ISSUER: &str = "https://wharf.test";
pub const AUDIENCE: &str = "wharf-api";
pub const TTL: Duration = Duration::from_secs(900);

/// A fixed "now" far from the real clock, so a verifier that peeked at the system clock
/// would get these tests wrong.
pub const NOW: OffsetDateTime = datetime!(2031-03-04 05:06:07 UTC);

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).unwrap();
        let name: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        let path = std::env::temp_dir().join(format!("wharf-jwt-test-{name}"));
        std::fs::create_dir(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover temp dir must not fail the test that made it.
        std::fs::remove_dir_all(&self.0).ok();
    }
}

pub fn issuer_in(dir: &Path) -> LocalIssuer {
    LocalIssuer::load_or_create(dir, ISSUER.into(), AUDIENCE.into(), TTL).unwrap()
}

pub fn user(roles: Vec<Role>, tenant_id: Option<VendorId>) -> User {
    User {
        id: UserId::new(),
        email: wharf_core::domain::Email::parse("someone@example.com").expect("an email"),
        roles,
        tenant_id,
        created_at: NOW,
    }
}

/// The issuer's signing key, read back from its key file (the file holds the raw seed).
pub fn issuer_key(dir: &Path) -> SigningKey {
    let seed: [u8; 32] = std::fs::read(dir.join("jwt-signing.key"))
        .unwrap()
        .try_into()
        .unwrap();
    SigningKey::from_bytes(&seed)
}

pub fn random_key() -> SigningKey {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    SigningKey::from_bytes(&seed)
}

/// Claims the local verifier accepts at [`NOW`], for `user_id`.
pub fn good_claims(user_id: &UserId) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": user_id.as_str(),
        "iat": NOW.unix_timestamp(),
        "exp": NOW.unix_timestamp() + 900,
        "jti": "test",
        "token_use": "access",
        "roles": ["subscriber"],
    })
}

/// An EdDSA token over `claims`, signed by `key`, with `kid` in the header when given.
pub fn sign_ed(key: &SigningKey, kid: Option<&str>, claims: &Value) -> String {
    let der = key.to_pkcs8_der().unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(der.as_bytes())).unwrap()
}

pub fn b64_json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// A compact token assembled by hand, for headers the library refuses to produce.
pub fn hand_built(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64_json(header),
        b64_json(claims),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// Asserts an `Unauthenticated` refusal whose reason does not echo the token.
#[track_caller]
pub fn assert_refused<T: std::fmt::Debug>(result: Result<T, CoreError>, token: &str) -> String {
    match result {
        Err(CoreError::Unauthenticated(reason)) => {
            assert!(!reason.is_empty());
            assert!(reason.len() < 64, "reason should be short: {reason}");
            if token.len() >= 8 {
                assert!(!reason.contains(token), "reason leaks the token: {reason}");
                for part in token.split('.').filter(|p| p.len() >= 8) {
                    assert!(
                        !reason.contains(part),
                        "reason leaks part of the token: {reason}"
                    );
                }
            }
            reason
        }
        other => panic!("expected Unauthenticated, got {other:?}"),
    }
}

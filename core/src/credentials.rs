//! Credentials: email and password rules, password hashing (argon2id), random secrets, and the
//! API key format `wk_<key id hex>_<secret>` whose secret is stored only as a SHA-256 digest.

use crate::{ApiKeyId, CoreError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 12;
const MAX_PASSWORD_LEN: usize = 128;
const COMMON: &[&str] = &[
    "password1234",
    "passwordpassword",
    "123456789012",
    "qwertyuiop12",
    "letmein12345",
    "administrator",
    "iloveyou1234",
    "welcome12345",
    "changeme1234",
];

/// Checks a new password: 12 to 128 characters, not one repeated character, not a common one.
pub fn check_password(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        return Err(format!("must be at least {MIN_PASSWORD_LEN} characters"));
    }
    if n > MAX_PASSWORD_LEN {
        return Err(format!("must be at most {MAX_PASSWORD_LEN} characters"));
    }
    let mut chars = password.chars();
    let first = chars.next();
    if chars.all(|c| Some(c) == first) {
        return Err("must not be one repeated character".into());
    }
    if COMMON.contains(&password.to_lowercase().as_str()) {
        return Err("is too common".into());
    }
    Ok(())
}

/// When a token that already verified expires (its `exp` claim); `None` for credentials
/// without one (API keys). Read only after the token verified: it checks nothing itself.
pub fn verified_token_expiry(token: &str) -> Option<crate::Timestamp> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    crate::Timestamp::from_unix_timestamp(exp as i64).ok()
}

/// The token of an `Authorization` header's value `Bearer <token>` (the scheme in any case);
/// `None` for another scheme or no token. The one reading of bearer credentials.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> Result<String, CoreError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| CoreError::internal(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| CoreError::internal(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| CoreError::internal(e.to_string()))
}

/// Whether `password` matches a PHC hash from [`hash_password`].
pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(phc)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to verify against when the user does not exist, so timing does not reveal it.
pub fn dummy_password_hash() -> &'static str {
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0Yw2I8hUAOz2l0m1mAu9jq3oZcm3Ebu3m0kTzJlx7mU"
}

/// `n` random bytes, base64url without padding.
pub fn random_token(n: usize) -> Result<String, CoreError> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| CoreError::internal(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// SHA-256 of `data` in lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new API key: its id, the full secret to show once, and the digest to store.
pub fn new_api_key() -> Result<(ApiKeyId, String, String), CoreError> {
    let id = ApiKeyId::new();
    let secret = random_token(32)?;
    let full = format!("wk_{}_{}", id.uuid().simple(), secret);
    let digest = sha256_hex(full.as_bytes());
    Ok((id, full, digest))
}

/// The key id inside a presented `wk_…` key (the caller then compares the digest).
pub fn api_key_id(presented: &str) -> Option<ApiKeyId> {
    let rest = presented.strip_prefix("wk_")?;
    let (hex, secret) = rest.split_once('_')?;
    if secret.len() < 32 {
        return None;
    }
    ApiKeyId::parse(&format!("key_{hex}")).ok()
}

/// A new webhook signing secret, `whsec_` + base64 of 32 random bytes (Standard Webhooks).
pub fn new_signing_secret() -> Result<String, CoreError> {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).map_err(|e| CoreError::internal(e.to_string()))?;
    Ok(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(buf)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_passwords_are_refused() {
        assert!(check_password("short").is_err());
        assert!(check_password("aaaaaaaaaaaaaaaa").is_err());
        assert!(check_password("Password1234").is_err());
        assert!(check_password("correct horse battery").is_ok());
    }

    #[test]
    fn bearer_tokens_are_read_whatever_the_scheme_case() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn password_hashes_verify_only_the_right_password() {
        let h = hash_password("correct horse battery").unwrap_or_default();
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("wrong horse battery", &h));
        assert!(!verify_password("anything", "not a hash"));
    }

    #[test]
    fn api_keys_carry_their_id() {
        let (id, full, digest) = new_api_key().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(api_key_id(&full), Some(id));
        assert_eq!(sha256_hex(full.as_bytes()), digest);
        assert_eq!(api_key_id("wk_nothex_secret"), None);
    }
}

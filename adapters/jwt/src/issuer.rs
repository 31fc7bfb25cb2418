//! The local shape's token issuer: one Ed25519 key kept in the data directory, access tokens
//! signed with it, and the matching JWKS and verifier.
//!
//! Invariants:
//! - The key file holds exactly the 32-byte seed, is created at most once (never silently
//!   replaced, so restarts keep issued tokens valid) and is readable by its owner only.
//! - The `kid` is derived from the public key, so the same key always has the same `kid`.
//! - Tokens carry exactly the claims [`JwtVerifier`] maps back to a principal.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use wharf_core::CoreError;
use wharf_core::domain::identity::User;

use crate::verifier::{Audience, JwtVerifier, VerifierConfig};

/// Name of the signing key file inside the data directory.
const KEY_FILE_NAME: &str = "jwt-signing.key";

/// The `token_use` of every token this issuer signs, as Cognito names its access tokens.
const TOKEN_USE: &str = "access";

/// Signs access tokens for the local shape.
pub struct LocalIssuer {
    encoding_key: EncodingKey,
    public_key: [u8; 32],
    kid: String,
    issuer: String,
    audience: String,
    ttl_secs: u64,
}

impl std::fmt::Debug for LocalIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIssuer")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl LocalIssuer {
    /// Loads the Ed25519 signing key from `dir/jwt-signing.key`, creating it (32 random bytes,
    /// mode 0600 on unix, written to a temporary file and then moved into place) when absent.
    ///
    /// `ttl` is the lifetime of issued tokens and must be at least one second. A key file of
    /// the wrong size is an `Internal` error rather than being replaced, since replacing it
    /// would invalidate every outstanding token without anyone noticing why.
    pub fn load_or_create(
        dir: &Path,
        issuer: String,
        audience: String,
        ttl: std::time::Duration,
    ) -> Result<Self, CoreError> {
        let ttl_secs = ttl.as_secs();
        if ttl_secs == 0 || i64::try_from(ttl_secs).is_err() {
            return Err(CoreError::invalid("jwt.ttl", "must be at least one second"));
        }
        let seed = crate::keyfile::load_or_create(dir, KEY_FILE_NAME)?;
        Self::from_seed(&seed, issuer, audience, ttl_secs)
    }

    fn from_seed(
        seed: &[u8; 32],
        issuer: String,
        audience: String,
        ttl_secs: u64,
    ) -> Result<Self, CoreError> {
        let signing = SigningKey::from_bytes(seed);
        // jsonwebtoken's Ed25519 signer only accepts a PKCS#8 document.
        let der = signing
            .to_pkcs8_der()
            .map_err(|_| CoreError::internal("encoding the JWT signing key as PKCS#8 failed"))?;
        let public_key = signing.verifying_key().to_bytes();
        Ok(LocalIssuer {
            encoding_key: EncodingKey::from_ed_der(der.as_bytes()),
            public_key,
            kid: kid_for(&public_key),
            issuer,
            audience,
            ttl_secs,
        })
    }

    /// The key id tokens carry: the first 16 hex digits of SHA-256 of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs an access token for `user`, valid from `now` for the configured lifetime, and
    /// returns it with its lifetime in seconds.
    pub fn issue(&self, user: &User, now: OffsetDateTime) -> Result<(String, u64), CoreError> {
        let iat = now.unix_timestamp();
        let exp = i64::try_from(self.ttl_secs)
            .ok()
            .and_then(|ttl| iat.checked_add(ttl))
            .ok_or_else(|| CoreError::internal("token expiry out of range"))?;
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.issuer));
        claims.insert("sub".into(), json!(user.id.as_str()));
        claims.insert("aud".into(), json!(self.audience));
        claims.insert("iat".into(), json!(iat));
        claims.insert("exp".into(), json!(exp));
        claims.insert("jti".into(), json!(hex(&random_bytes::<16>()?)));
        claims.insert("token_use".into(), json!(TOKEN_USE));
        let roles: Vec<&str> = user.roles.iter().map(|r| r.as_str()).collect();
        claims.insert("roles".into(), json!(roles));
        if let Some(tenant) = &user.tenant_id {
            claims.insert("tenant_id".into(), json!(tenant.as_str()));
        }

        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &Value::Object(claims), &self.encoding_key)
            .map_err(|_| CoreError::internal("signing the access token failed"))?;
        Ok((token, self.ttl_secs))
    }

    /// The public key set, as served at the JWKS endpoint.
    pub fn jwks(&self) -> Value {
        json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(self.public_key),
                "kid": self.kid,
                "alg": "EdDSA",
                "use": "sig",
            }]
        })
    }

    /// A verifier for this issuer's tokens: EdDSA pinned, this issuer and audience,
    /// `token_use` `access`, and no leeway because issuer and verifier share one clock.
    pub fn verifier(&self) -> JwtVerifier {
        let config = VerifierConfig {
            issuer: self.issuer.clone(),
            audience: Audience::Aud(self.audience.clone()),
            token_use: Some(TOKEN_USE.to_owned()),
            algorithm: Algorithm::EdDSA,
            leeway_secs: 0,
        };
        // jsonwebtoken keeps an Ed25519 public key as its 32 raw bytes whatever the
        // constructor's name says; this is what `from_ed_components` builds after base64.
        let key = DecodingKey::from_ed_der(&self.public_key);
        JwtVerifier::with_keys(config, HashMap::from([(self.kid.clone(), key)]))
    }
}

/// First 16 hex digits of SHA-256 of the raw public key.
fn kid_for(public_key: &[u8; 32]) -> String {
    let digest = Sha256::digest(public_key);
    let mut kid = hex(&digest);
    kid.truncate(16);
    kid
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]])
        .map(char::from)
        .collect()
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], CoreError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf)
        .map_err(|e| CoreError::internal(format!("operating system randomness failed: {e}")))?;
    Ok(buf)
}

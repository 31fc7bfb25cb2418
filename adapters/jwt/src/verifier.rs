//! The one JWT verifier both deployment shapes use: the local issuer's Ed25519 keys and an
//! AWS Cognito user pool's RS256 JWKS.
//!
//! Invariants:
//! - The algorithm is pinned by configuration and never taken from the token, so `alg: none`
//!   and HMAC-signed-with-the-public-key tokens are refused before any key is touched.
//! - A token is checked only against the key its `kid` names; a token without a known `kid`
//!   is refused rather than tried against every key.
//! - Time comes from the caller (Wharf's injectable clock), never from the system clock.
//! - Every refusal is `CoreError::Unauthenticated` with a short fixed reason that never
//!   echoes the token or any of its contents.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse, RSAKeyParameters,
};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use wharf_core::domain::identity::{Principal, Role};
use wharf_core::{CoreError, UserId, VendorId};

/// Tokens longer than this are refused unparsed; real access tokens are a few KiB at most,
/// and the cap bounds the work an anonymous caller can make us do.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// How far beyond the leeway `iat` may lie in the future. A token "issued" later than this
/// comes from a broken or hostile issuer clock, whatever its `exp` says.
const MAX_IAT_SKEW_SECS: i64 = 300;

/// RSA moduli below this are refused when loading a key set: they are forgeable, and no
/// identity provider Wharf talks to uses them.
const MIN_RSA_MODULUS_BITS: usize = 2048;

/// Where the verifier finds the audience a token was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// The `aud` claim (a string or an array) must contain this value.
    Aud(String),
    /// The `client_id` claim must equal this value; Cognito access tokens carry the app
    /// client there instead of in `aud`.
    ClientId(String),
}

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierConfig {
    /// Exact value of the `iss` claim.
    pub issuer: String,
    /// Where the audience is checked.
    pub audience: Audience,
    /// When set, the exact value of the `token_use` claim (`access` refuses Cognito ID tokens).
    pub token_use: Option<String>,
    /// The only algorithm accepted; an asymmetric one (EdDSA, RS*, PS*, ES*).
    pub algorithm: Algorithm,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
}

/// Verifies bearer tokens against a key set addressed by `kid`, and maps them to a
/// [`Principal`]. The key set can be swapped while requests are being verified.
pub struct JwtVerifier {
    config: VerifierConfig,
    // An `Arc` inside the lock so a verification holds the lock only to clone the pointer,
    // and a key rotation never waits for in-flight signature checks.
    keys: RwLock<Arc<HashMap<String, DecodingKey>>>,
    // Tokens that verified, with their expiry: checking an Ed25519 or RSA signature costs far
    // more than the rest of a request, and a token is presented many times in its life. An
    // entry is only ever a token that passed every check; expiry is re-checked on each hit.
    verified: Mutex<HashMap<String, (Principal, i64)>>,
}

/// Most verified tokens remembered; the cache starts over when it is full.
const VERIFIED_CACHE_ENTRIES: usize = 10_000;

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.current_keys();
        let mut kids: Vec<&String> = keys.keys().collect();
        kids.sort();
        f.debug_struct("JwtVerifier")
            .field("config", &self.config)
            .field("kids", &kids)
            .finish()
    }
}

impl JwtVerifier {
    /// A verifier for `config` trusting the keys of `jwks` (a JSON Web Key Set).
    ///
    /// Keys that cannot serve the pinned algorithm (another key type or curve, `use` other
    /// than `sig`, a different `alg`, no `kid`) are skipped; a set with no usable key, with
    /// two usable keys under one `kid`, or a symmetric pinned algorithm is an `Internal`
    /// error, since it is a configuration or identity-provider fault.
    pub fn new(config: VerifierConfig, jwks: &Value) -> Result<Self, CoreError> {
        check_algorithm(config.algorithm)?;
        let keys = load_keys(config.algorithm, jwks)?;
        Ok(Self::with_keys(config, keys))
    }

    /// A verifier over keys already prepared (the local issuer's own key).
    pub(crate) fn with_keys(config: VerifierConfig, keys: HashMap<String, DecodingKey>) -> Self {
        JwtVerifier {
            config,
            keys: RwLock::new(Arc::new(keys)),
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the trusted keys, for key rotation or a JWKS refetch. On error the previous
    /// keys stay in place, so a bad fetch never locks everyone out.
    pub fn replace_keys(&self, jwks: &Value) -> Result<(), CoreError> {
        let keys = Arc::new(load_keys(self.config.algorithm, jwks)?);
        // A poisoned lock only means a writer panicked mid-assignment of an `Arc`, which
        // cannot leave a half-written map behind.
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
        // A key that was withdrawn must stop authenticating at once.
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        Ok(())
    }

    /// Whether a key with this `kid` is trusted (lets a caller refetch the JWKS when a token
    /// names a key it has not seen yet).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.current_keys().contains_key(kid)
    }

    /// Verifies `token` as of `now` and returns the caller it identifies.
    ///
    /// Checks, in order: shape, pinned `alg`, `kid` known, signature by that key, `iss`,
    /// audience, `token_use`, `exp` (required), `nbf` and `iat` (when present), then the
    /// user id, roles and tenant. Every failure is `Unauthenticated`.
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Result<Principal, CoreError> {
        let leeway = i64::try_from(self.config.leeway_secs).unwrap_or(i64::MAX);
        let now_secs = now.unix_timestamp();
        {
            let mut cache = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            match cache.get(token) {
                Some((principal, exp)) if exp.saturating_add(leeway) > now_secs => {
                    return Ok(principal.clone());
                }
                Some(_) => {
                    cache.remove(token);
                }
                None => {}
            }
        }
        let (principal, exp) = self.verify_inner(token, now).map_err(|reason| {
            tracing::debug!(reason, "bearer token refused");
            CoreError::Unauthenticated(reason.to_owned())
        })?;
        let mut cache = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= VERIFIED_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(token.to_owned(), (principal.clone(), exp));
        Ok(principal)
    }

    fn verify_inner(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<(Principal, i64), &'static str> {
        if token.len() > MAX_TOKEN_LEN {
            return Err("token too long");
        }
        let header = parse_header(token)?;

        // Compare against the pinned algorithm before choosing a key: this is what refuses
        // `none` and HS256 tokens keyed with our public key.
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or("malformed token")?;
        if Algorithm::from_str(alg).ok() != Some(self.config.algorithm) {
            return Err("algorithm not allowed");
        }
        // RFC 7515 §4.1.11: extensions we do not understand must not be ignored.
        if header.contains_key("crit") {
            return Err("unsupported critical header");
        }
        let kid = match header.get("kid") {
            None => return Err("token has no key id"),
            Some(kid) => kid.as_str().ok_or("malformed token")?,
        };
        let keys = self.current_keys();
        let key = keys.get(kid).ok_or("unknown key id")?;

        // The library checks only the signature and algorithm; every claim is checked below
        // against the caller's `now`, because its own time checks read the system clock.
        let mut validation = Validation::new(self.config.algorithm);
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        let data =
            jsonwebtoken::decode::<Value>(token, key, &validation).map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => "invalid signature",
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => {
                    "algorithm not allowed"
                }
                _ => "malformed token",
            })?;
        let claims = data.claims.as_object().ok_or("malformed token")?;

        self.check_claims(claims, now)?;
        let exp = claims
            .get("exp")
            .and_then(numeric_date)
            .ok_or("token has no expiry")?;
        Ok((principal_from(claims)?, exp))
    }

    fn check_claims(
        &self,
        c: &Map<String, Value>,
        now: OffsetDateTime,
    ) -> Result<(), &'static str> {
        let cfg = &self.config;
        if c.get("iss").and_then(Value::as_str) != Some(cfg.issuer.as_str()) {
            return Err("wrong issuer");
        }
        let audience_ok = match &cfg.audience {
            Audience::Aud(want) => match c.get("aud") {
                Some(Value::String(aud)) => aud == want,
                Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(want)),
                _ => false,
            },
            Audience::ClientId(want) => {
                c.get("client_id").and_then(Value::as_str) == Some(want.as_str())
            }
        };
        if !audience_ok {
            return Err("wrong audience");
        }
        if let Some(want) = &cfg.token_use
            && c.get("token_use").and_then(Value::as_str) != Some(want.as_str())
        {
            return Err("wrong token use");
        }

        let now = now.unix_timestamp();
        let leeway = i64::try_from(cfg.leeway_secs).unwrap_or(i64::MAX);
        let exp = c.get("exp").ok_or("token has no expiry")?;
        let exp = numeric_date(exp).ok_or("malformed exp")?;
        if exp.saturating_add(leeway) <= now {
            return Err("token expired");
        }
        if let Some(nbf) = c.get("nbf") {
            let nbf = numeric_date(nbf).ok_or("malformed nbf")?;
            if nbf > now.saturating_add(leeway) {
                return Err("token not yet valid");
            }
        }
        if let Some(iat) = c.get("iat") {
            let iat = numeric_date(iat).ok_or("malformed iat")?;
            if iat > now.saturating_add(leeway).saturating_add(MAX_IAT_SKEW_SECS) {
                return Err("token issued in the future");
            }
        }
        Ok(())
    }

    fn current_keys(&self) -> Arc<HashMap<String, DecodingKey>> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Decodes the JOSE header of a compact JWS without trusting anything in it yet.
fn parse_header(token: &str) -> Result<Map<String, Value>, &'static str> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed token");
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| "malformed token")?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err("malformed token"),
    }
}

/// A JWT NumericDate (RFC 7519 §2): seconds since the epoch, possibly fractional.
fn numeric_date(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        // `as` saturates, so an absurd float becomes an absurd but harmless i64.
        v.as_f64()
            .filter(|f| f.is_finite())
            .map(|f| f.floor() as i64)
    })
}

/// Maps verified claims to the caller: the local issuer's claims and Cognito's alike.
fn principal_from(c: &Map<String, Value>) -> Result<Principal, &'static str> {
    // Cognito's `sub` is its own UUID; a Cognito user's Wharf id is that UUID with the user
    // prefix (or travels in a custom attribute).
    let id = ["sub", "custom:user_id", "user_id"]
        .iter()
        .find_map(|k| c.get(*k)?.as_str().and_then(|s| UserId::parse(s).ok()))
        .or_else(|| {
            let sub = c.get("sub")?.as_str()?;
            uuid::Uuid::parse_str(sub).ok().map(UserId::from_uuid)
        })
        .ok_or("token names no Wharf user")?;

    let mut roles: Vec<Role> = Vec::new();
    for claim in ["roles", "cognito:groups"] {
        match c.get(claim) {
            None => {}
            Some(Value::Array(items)) => {
                // Names Wharf does not know (other Cognito groups) grant nothing.
                for role in items
                    .iter()
                    .filter_map(Value::as_str)
                    .filter_map(Role::parse)
                {
                    if !roles.contains(&role) {
                        roles.push(role);
                    }
                }
            }
            Some(_) => return Err("malformed roles"),
        }
    }
    // One order whatever the issuer listed them in (Cognito lists groups as it likes).
    roles.sort_by_key(|r| *r as u8);

    let mut tenant: Option<VendorId> = None;
    for claim in ["tenant_id", "custom:tenant_id"] {
        if let Some(v) = c.get(claim) {
            let t = v
                .as_str()
                .and_then(|s| VendorId::parse(s).ok())
                .ok_or("malformed tenant")?;
            if tenant.as_ref().is_some_and(|prev| *prev != t) {
                return Err("conflicting tenant claims");
            }
            tenant = Some(t);
        }
    }
    if tenant.is_none() && roles.iter().any(|r| r.is_tenant_scoped()) {
        return Err("vendor role without a tenant");
    }

    Ok(Principal::User { id, roles, tenant })
}

fn check_algorithm(alg: Algorithm) -> Result<(), CoreError> {
    if alg.family() == AlgorithmFamily::Hmac {
        // A shared secret cannot come from a public key set, and accepting HMAC at all is
        // what makes key-confusion attacks possible.
        return Err(CoreError::internal(
            "JWT verifier: symmetric algorithms are not supported",
        ));
    }
    Ok(())
}

fn bad_jwks(why: &str) -> CoreError {
    CoreError::internal(format!("JWT verifier: unusable key set: {why}"))
}

/// The usable keys of `jwks` for `alg`, by `kid`.
fn load_keys(alg: Algorithm, jwks: &Value) -> Result<HashMap<String, DecodingKey>, CoreError> {
    let entries = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_jwks("no `keys` array"))?;
    let mut keys = HashMap::new();
    for (index, entry) in entries.iter().enumerate() {
        match usable_key(alg, entry) {
            Ok((kid, key)) => {
                if keys.insert(kid, key).is_some() {
                    return Err(bad_jwks("two keys share one kid"));
                }
            }
            // Skipped rather than fatal: a pool may publish keys for other purposes.
            Err(reason) => tracing::debug!(index, reason, "JWKS entry skipped"),
        }
    }
    if keys.is_empty() {
        return Err(bad_jwks("no key fits the pinned algorithm"));
    }
    Ok(keys)
}

fn usable_key(alg: Algorithm, entry: &Value) -> Result<(String, DecodingKey), &'static str> {
    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|_| "not a supported JWK")?;
    let common = &jwk.common;
    let kid = common
        .key_id
        .clone()
        .filter(|k| !k.is_empty())
        .ok_or("no kid")?;
    if common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return Err("not a signature key");
    }
    if common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return Err("not a verification key");
    }
    if let Some(key_alg) = common.key_algorithm
        && Algorithm::from_str(&key_alg.to_string()).ok() != Some(alg)
    {
        return Err("key is for another algorithm");
    }

    // The size checks matter beyond hygiene: jsonwebtoken's Ed25519 verifier slices the first
    // 32 bytes of the key and would panic on a shorter one.
    match (&jwk.algorithm, alg.family()) {
        (AlgorithmParameters::RSA(p), AlgorithmFamily::Rsa) => check_rsa(p)?,
        (AlgorithmParameters::EllipticCurve(p), AlgorithmFamily::Ec) => {
            let (curve, len) = match alg {
                Algorithm::ES256 => (EllipticCurve::P256, 32),
                Algorithm::ES384 => (EllipticCurve::P384, 48),
                _ => return Err("unsupported curve"),
            };
            if p.curve != curve || decoded_len(&p.x)? != len || decoded_len(&p.y)? != len {
                return Err("wrong curve or malformed point");
            }
        }
        (AlgorithmParameters::OctetKeyPair(p), AlgorithmFamily::Ed) => {
            if p.curve != EllipticCurve::Ed25519 {
                return Err("unsupported curve");
            }
            let x = URL_SAFE_NO_PAD.decode(&p.x).map_err(|_| "malformed key")?;
            let x: [u8; 32] = x.as_slice().try_into().map_err(|_| "malformed key")?;
            let point = ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(|_| "malformed key")?;
            if point.is_weak() {
                return Err("weak key");
            }
        }
        _ => return Err("key type does not fit the pinned algorithm"),
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "malformed key")?;
    Ok((kid, key))
}

fn check_rsa(p: &RSAKeyParameters) -> Result<(), &'static str> {
    let n = URL_SAFE_NO_PAD.decode(&p.n).map_err(|_| "malformed key")?;
    let e = URL_SAFE_NO_PAD.decode(&p.e).map_err(|_| "malformed key")?;
    let n = n.iter().position(|b| *b != 0).map_or(&[][..], |i| &n[i..]);
    let bits = n
        .first()
        .map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
    if bits < MIN_RSA_MODULUS_BITS || e.iter().all(|b| *b == 0) {
        return Err("RSA key too small or malformed");
    }
    Ok(())
}

fn decoded_len(b64: &str) -> Result<usize, &'static str> {
    URL_SAFE_NO_PAD
        .decode(b64)
        .map(|v| v.len())
        .map_err(|_| "malformed key")
}

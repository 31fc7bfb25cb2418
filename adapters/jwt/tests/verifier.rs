//! The verifier against tokens from the local issuer, hand-built attacks, Cognito-shaped
//! claims and an RS256 key set.

#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};
use time::Duration;
use wharf_core::domain::identity::{Principal, Role};
use wharf_core::{CoreError, UserId, VendorId};
use wharf_jwt::{Algorithm, Audience, JwtVerifier, VerifierConfig};

fn local_config(audience: Audience) -> VerifierConfig {
    VerifierConfig {
        issuer: ISSUER.into(),
        audience,
        token_use: Some("access".into()),
        algorithm: Algorithm::EdDSA,
        leeway_secs: 0,
    }
}

fn issuer_public_key(dir: &TempDir) -> Vec<u8> {
    let jwks = issuer_in(dir.path()).jwks();
    URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["x"].as_str().unwrap())
        .unwrap()
}

#[test]
fn an_issued_token_verifies_to_the_users_principal() {
    let dir = TempDir::new();
    let issuer = issuer_in(dir.path());
    let tenant = VendorId::new();
    let user = user(
        vec![Role::VendorAdmin, Role::Subscriber],
        Some(tenant.clone()),
    );

    let (token, expires_in) = issuer.issue(&user, NOW).unwrap();

    assert_eq!(expires_in, 900);
    let principal = issuer.verifier().verify(&token, NOW).unwrap();
    assert_eq!(
        principal,
        Principal::User {
            id: user.id.clone(),
            roles: vec![Role::VendorAdmin, Role::Subscriber],
            tenant: Some(tenant),
        }
    );
}

#[test]
fn an_issued_token_carries_the_documented_claims() {
    let dir = TempDir::new();
    let issuer = issuer_in(dir.path());
    let user = user(vec![Role::Subscriber], None);

    let (token, _) = issuer.issue(&user, NOW).unwrap();

    let parts: Vec<&str> = token.split('.').collect();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], issuer.kid());
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(claims["sub"], user.id.as_str());
    assert_eq!(claims["iat"], NOW.unix_timestamp());
    assert_eq!(claims["exp"], NOW.unix_timestamp() + 900);
    assert_eq!(claims["token_use"], "access");
    assert_eq!(claims["roles"], json!(["subscriber"]));
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
    assert!(
        claims.get("tenant_id").is_none(),
        "no tenant claim for a user without one"
    );

    let (second, _) = issuer.issue(&user, NOW).unwrap();
    assert_ne!(token, second, "jti makes every token unique");
}

#[test]
fn expiry_is_judged_by_the_passed_now_not_the_system_clock() {
    let dir = TempDir::new();
    let issuer = issuer_in(dir.path());
    let verifier = issuer.verifier();
    let user = user(vec![Role::Subscriber], None);
    let (token, _) = issuer.issue(&user, NOW).unwrap();

    assert!(
        verifier
            .verify(&token, NOW + Duration::seconds(899))
            .is_ok()
    );
    let reason = assert_refused(
        verifier.verify(&token, NOW + Duration::seconds(900)),
        &token,
    );
    assert_eq!(reason, "token expired");
    assert_refused(verifier.verify(&token, NOW + Duration::days(365)), &token);

    // Issued and checked long ago: fine by that clock, although long expired by the real one.
    let long_ago = time::macros::datetime!(2001-01-01 0:00 UTC);
    let (old, _) = issuer.issue(&user, long_ago).unwrap();
    assert!(
        verifier
            .verify(&old, long_ago + Duration::seconds(60))
            .is_ok()
    );
}

#[test]
fn leeway_extends_expiry_by_that_many_seconds() {
    let dir = TempDir::new();
    let issuer = issuer_in(dir.path());
    let mut config = local_config(Audience::Aud(AUDIENCE.into()));
    config.leeway_secs = 30;
    let verifier = JwtVerifier::new(config, &issuer.jwks()).unwrap();
    let (token, _) = issuer
        .issue(&user(vec![Role::Subscriber], None), NOW)
        .unwrap();

    assert!(
        verifier
            .verify(&token, NOW + Duration::seconds(929))
            .is_ok()
    );
    assert_refused(
        verifier.verify(&token, NOW + Duration::seconds(930)),
        &token,
    );
}

#[test]
fn an_alg_none_token_is_refused() {
    let dir = TempDir::new();
    let issuer = issuer_in(dir.path());
    let verifier = issuer.verifier();
    let claims = good_claims(&UserId::new());

    for alg in ["none", "None", "NONE", "", "EdDSA "] {
        let header = json!({"alg": alg, "typ": "JWT", "kid": issuer.kid()});
        let token = hand_built(&header, &claims, b"");
        assert_refused(verifier.verify(&token, NOW), &token);
        // Also with the trailing dot stripped, as some attackers send it.
        let bare = token.trim_end_matches('.');
        assert_refused(verifier.verify(bare, NOW), bare);
    }
    let no_alg = hand_built(&json!({"kid": issuer.kid()}), &claims, b"");
    assert_refused(verifier.verify(&no_alg, NOW), &no_alg);
}

#[test]
fn an_hs256_token_keyed_with_the_public_key_is_refused() {
    let dir = TempDir::new();
    let issuer = issuer_in(dir.path());
    let verifier = issuer.verifier();
    let claims = good_claims(&UserId::new());
    let public = issuer_public_key(&dir);
    let jwks_text = serde_json::to_string(&issuer.jwks()).unwrap();
    let jwk_text = serde_json::to_string(&issuer.jwks()["keys"][0]).unwrap();
    let x = issuer.jwks()["keys"][0]["x"].as_str().unwrap().to_owned();

    let secrets: [&[u8]; 4] = [
        &public,
        jwks_text.as_bytes(),
        jwk_text.as_bytes(),
        x.as_bytes(),
    ];
    for secret in secrets {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let mut header = Header::new(alg);
            header.kid = Some(issuer.kid().to_owned());
            let token =
                jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap();
            let reason = assert_refused(verifier.verify(&token, NOW), &token);
            assert_eq!(reason, "algorithm not allowed");
        }
    }
}

#[test]
fn a_tampered_payload_is_refused() {
    let dir = TempDir::new();
    let issuer = issuer_in(dir.path());
    let verifier = issuer.verifier();
    let user = user(vec![Role::Subscriber], None);
    let (token, _) = issuer.issue(&user, NOW).unwrap();
    let parts: Vec<&str> = token.split('.').collect();

    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["roles"] = json!(["platform_admin"]);
    let forged = format!("{}.{}.{}", parts[0], b64_json(&claims), parts[2]);
    assert_eq!(
        assert_refused(verifier.verify(&forged, NOW), &forged),
        "invalid signature"
    );

    let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    signature[0] ^= 1;
    let flipped = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        URL_SAFE_NO_PAD.encode(&signature)
    );
    assert_refused(verifier.verify(&flipped, NOW), &flipped);

    let truncated = format!("{}.{}.{}", parts[0], parts[1], &parts[2][..20]);
    assert_refused(verifier.verify(&truncated, NOW), &truncated);
}

#[test]
fn a_token_signed_by_another_key_under_the_same_kid_is_refused() {
    let dir = TempDir::new();
    let issuer = issuer_in(dir.path());
    let token = sign_ed(
        &random_key(),
        Some(issuer.kid()),
        &good_claims(&UserId::new()),
    );

    let reason = assert_refused(issuer.verifier().verify(&token, NOW), &token);
    assert_eq!(reason, "invalid signature");
}

#[test]
fn a_token_from_another_local_issuer_is_refused() {
    let (a, b) = (TempDir::new(), TempDir::new());
    let (issuer_a, issuer_b) = (issuer_in(a.path()), issuer_in(b.path()));
    let (token, _) = issuer_b
        .issue(&user(vec![Role::Subscriber], None), NOW)
        .unwrap();

    assert_eq!(
        assert_refused(issuer_a.verifier().verify(&token, NOW), &token),
        "unknown key id"
    );
}

#[test]
fn wrong_issuer_audience_or_token_use_is_refused() {
    let dir = TempDir::new();
    let issuer = issuer_in(dir.path());
    let verifier = issuer.verifier();
    let key = issuer_key(dir.path());
    let id = UserId::new();

    let sanity = sign_ed(&key, Some(issuer.kid()), &good_claims(&id));
    assert!(
        verifier.verify(&sanity, NOW).is_ok(),
        "the helper signs acceptable tokens"
    );

    let cases: [(&str, Value, &str); 9] = [
        ("iss", json!("https://evil.test"), "wrong issuer"),
        ("iss", json!([ISSUER]), "wrong issuer"),
        ("iss", Value::Null, "wrong issuer"),
        ("aud", json!("another-api"), "wrong audience"),
        ("aud", json!(["another-api", "third"]), "wrong audience"),
        ("aud", Value::Null, "wrong audience"),
        ("token_use", json!("id"), "wrong token use"),
        ("token_use", Value::Null, "wrong token use"),
        ("exp", Value::Null, "malformed exp"),
    ];
    for (claim, value, expected) in cases {
        let mut claims = good_claims(&id);
        claims[claim] = value;
        let token = sign_ed(&key, Some(issuer.kid()), &claims);
        assert_eq!(
            assert_refused(verifier.verify(&token, NOW), &token),
            expected,
            "{claim}"
        );
    }

    for claim in ["iss", "aud", "token_use", "exp"] {
        let mut claims = good_claims(&id);
        claims.as_object_mut().unwrap().remove(claim);
        let token = sign_ed(&key, Some(issuer.kid()), &claims);
        assert_refused(verifier.verify(&token, NOW), &token);
    }

    let mut in_list = good_claims(&id);
    in_list["aud"] = json!(["another-api", AUDIENCE]);
    let token = sign_ed(&key, Some(issuer.kid()), &in_list);
    assert!(
        verifier.verify(&token, NOW).is_ok(),
        "aud may be a list containing ours"
    );
}

#[test]
fn a_future_nbf_or_iat_is_refused() {
    let dir = TempDir::new();
    let issuer = issuer_in(dir.path());
    let verifier = issuer.verifier();
    let key = issuer_key(dir.path());
    let id = UserId::new();
    let now = NOW.unix_timestamp();

    let mut claims = good_claims(&id);
    claims["nbf"] = json!(now + 10);
    let token = sign_ed(&key, Some(issuer.kid()), &claims);
    assert_eq!(
        assert_refused(verifier.verify(&token, NOW), &token),
        "token not yet valid"
    );
    assert!(verifier.verify(&token, NOW + Duration::seconds(10)).is_ok());

    let mut claims = good_claims(&id);
    claims["iat"] = json!(now + 86_400);
    claims["exp"] = json!(now + 90_000);
    let token = sign_ed(&key, Some(issuer.kid()), &claims);
    assert_eq!(
        assert_refused(verifier.verify(&token, NOW), &token),
        "token issued in the future"
    );

    let mut claims = good_claims(&id);
    claims["exp"] = json!("tomorrow");
    let token = sign_ed(&key, Some(issuer.kid()), &claims);
    assert_refused(verifier.verify(&token, NOW), &token);
}

#[test]
fn an_unknown_or_missing_kid_is_refused() {
    let dir = TempDir::new();
    let issuer = issuer_in(dir.path());
    let verifier = issuer.verifier();
    let key = issuer_key(dir.path());
    let claims = good_claims(&UserId::new());

    let unknown = sign_ed(&key, Some("0123456789abcdef"), &claims);
    assert_eq!(
        assert_refused(verifier.verify(&unknown, NOW), &unknown),
        "unknown key id"
    );

    let missing = sign_ed(&key, None, &claims);
    assert_eq!(
        assert_refused(verifier.verify(&missing, NOW), &missing),
        "token has no key id"
    );

    let numeric = hand_built(&json!({"alg": "EdDSA", "kid": 7}), &claims, &[0; 64]);
    assert_refused(verifier.verify(&numeric, NOW), &numeric);
}

#[test]
fn garbage_strings_are_refused() {
    let dir = TempDir::new();
    let verifier = issuer_in(dir.path()).verifier();
    let mut noise = [0u8; 96];
    getrandom::fill(&mut noise).unwrap();
    let random = URL_SAFE_NO_PAD.encode(noise);
    let random_parts = format!("{}.{}.{}", &random[..40], &random[40..80], &random[80..]);
    let long = "a".repeat(100_000);

    let garbage = [
        "",
        "abc",
        "a.b.c",
        "a.b.c.d",
        "..",
        "...",
        "Bearer abc",
        "eyJ.eyJ.",
        random.as_str(),
        random_parts.as_str(),
        long.as_str(),
    ];
    for token in garbage {
        assert_refused(verifier.verify(token, NOW), token);
    }

    // Well-formed header, nonsense body.
    let header = b64_json(&json!({"alg": "EdDSA", "kid": "x"}));
    for body in ["", "bm90IGpzb24", "W10", "IjEyMyI"] {
        let token = format!("{header}.{body}.AAAA");
        assert_refused(verifier.verify(&token, NOW), &token);
    }
    // A header that is JSON but not an object.
    let token = format!("{}.e30.AAAA", URL_SAFE_NO_PAD.encode("[1]"));
    assert_refused(verifier.verify(&token, NOW), &token);
}

#[test]
fn a_critical_header_extension_is_refused() {
    let dir = TempDir::new();
    let issuer = issuer_in(dir.path());
    let key = issuer_key(dir.path());
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(issuer.kid().to_owned());
    header.crit = Some(vec!["exp".into()]);
    let der = {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        key.to_pkcs8_der().unwrap()
    };
    let token = jsonwebtoken::encode(
        &header,
        &good_claims(&UserId::new()),
        &EncodingKey::from_ed_der(der.as_bytes()),
    )
    .unwrap();

    assert_refused(issuer.verifier().verify(&token, NOW), &token);
}

#[test]
fn cognito_style_claims_map_to_the_principal() {
    let key = random_key();
    let jwks = json!({"keys": [{
        "kty": "OKP", "crv": "Ed25519", "kid": "pool-key", "alg": "EdDSA", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()),
    }]});
    let verifier =
        JwtVerifier::new(local_config(Audience::ClientId("app-client".into())), &jwks).unwrap();
    let id = UserId::new();
    let tenant = VendorId::new();
    let claims = json!({
        "iss": ISSUER,
        "client_id": "app-client",
        "sub": "5f2b1c1e-7a8d-4a57-9c1e-0d4f2b6a9e11",
        "custom:user_id": id.as_str(),
        "custom:tenant_id": tenant.as_str(),
        "cognito:groups": ["vendor_finance", "Admins", "subscriber"],
        "token_use": "access",
        "exp": NOW.unix_timestamp() + 60,
        "iat": NOW.unix_timestamp(),
    });

    let token = sign_ed(&key, Some("pool-key"), &claims);
    assert_eq!(
        verifier.verify(&token, NOW).unwrap(),
        Principal::User {
            id: id.clone(),
            roles: vec![Role::VendorFinance, Role::Subscriber],
            tenant: Some(tenant),
        }
    );

    // `client_id` audience is checked, and `aud` does not stand in for it.
    let mut wrong = claims.clone();
    wrong["client_id"] = json!("other-client");
    let token = sign_ed(&key, Some("pool-key"), &wrong);
    assert_eq!(
        assert_refused(verifier.verify(&token, NOW), &token),
        "wrong audience"
    );
    let mut aud_only = claims.clone();
    aud_only.as_object_mut().unwrap().remove("client_id");
    aud_only["aud"] = json!("app-client");
    let token = sign_ed(&key, Some("pool-key"), &aud_only);
    assert_refused(verifier.verify(&token, NOW), &token);

    // The plain `user_id` claim is the last fallback.
    let mut plain = claims.clone();
    plain.as_object_mut().unwrap().remove("custom:user_id");
    plain["user_id"] = json!(id.as_str());
    let token = sign_ed(&key, Some("pool-key"), &plain);
    assert!(verifier.verify(&token, NOW).is_ok());

    // With no Wharf id anywhere, a UUID `sub` names the user with that UUID.
    let mut by_sub = claims.clone();
    by_sub.as_object_mut().unwrap().remove("custom:user_id");
    let token = sign_ed(&key, Some("pool-key"), &by_sub);
    let sub = uuid::Uuid::parse_str(claims["sub"].as_str().unwrap()).unwrap();
    assert!(matches!(
        verifier.verify(&token, NOW).unwrap(),
        Principal::User { id, .. } if id == UserId::from_uuid(sub)
    ));
    // A `sub` that is neither a Wharf id nor a UUID names nobody.
    let mut anonymous = by_sub.clone();
    anonymous["sub"] = json!("not-a-uuid");
    let token = sign_ed(&key, Some("pool-key"), &anonymous);
    assert_eq!(
        assert_refused(verifier.verify(&token, NOW), &token),
        "token names no Wharf user"
    );
}

#[test]
fn unknown_role_names_are_ignored() {
    let dir = TempDir::new();
    let issuer = issuer_in(dir.path());
    let key = issuer_key(dir.path());
    let id = UserId::new();
    let mut claims = good_claims(&id);
    claims["roles"] = json!(["root", "subscriber", 42, "PLATFORM_ADMIN", "subscriber"]);

    let token = sign_ed(&key, Some(issuer.kid()), &claims);
    assert_eq!(
        issuer.verifier().verify(&token, NOW).unwrap(),
        Principal::User {
            id,
            roles: vec![Role::Subscriber],
            tenant: None
        }
    );

    let mut not_a_list = good_claims(&UserId::new());
    not_a_list["roles"] = json!("platform_admin");
    let token = sign_ed(&key, Some(issuer.kid()), &not_a_list);
    assert_refused(issuer.verifier().verify(&token, NOW), &token);
}

#[test]
fn a_vendor_role_without_a_tenant_or_with_a_malformed_one_is_refused() {
    let dir = TempDir::new();
    let issuer = issuer_in(dir.path());
    let verifier = issuer.verifier();
    let key = issuer_key(dir.path());

    let (token, _) = issuer
        .issue(&user(vec![Role::VendorAdmin], None), NOW)
        .unwrap();
    assert_eq!(
        assert_refused(verifier.verify(&token, NOW), &token),
        "vendor role without a tenant"
    );

    for tenant in [
        json!("not-a-tenant"),
        json!(UserId::new().as_str()),
        json!(""),
        json!(12),
    ] {
        let mut claims = good_claims(&UserId::new());
        claims["tenant_id"] = tenant;
        let token = sign_ed(&key, Some(issuer.kid()), &claims);
        assert_eq!(
            assert_refused(verifier.verify(&token, NOW), &token),
            "malformed tenant"
        );
    }

    let mut conflicting = good_claims(&UserId::new());
    conflicting["tenant_id"] = json!(VendorId::new().as_str());
    conflicting["custom:tenant_id"] = json!(VendorId::new().as_str());
    let token = sign_ed(&key, Some(issuer.kid()), &conflicting);
    assert_refused(verifier.verify(&token, NOW), &token);

    let mut bad_sub = good_claims(&UserId::new());
    bad_sub["sub"] = json!("ven_0193a5e4c2a87c3b9d41e2f6a8b0c1d2");
    let token = sign_ed(&key, Some(issuer.kid()), &bad_sub);
    assert_refused(verifier.verify(&token, NOW), &token);
}

#[test]
fn replacing_keys_rotates_which_tokens_verify() {
    let (a, b) = (TempDir::new(), TempDir::new());
    let (old, new) = (issuer_in(a.path()), issuer_in(b.path()));
    let verifier = old.verifier();
    let user = user(vec![Role::Subscriber], None);
    let (old_token, _) = old.issue(&user, NOW).unwrap();
    let (new_token, _) = new.issue(&user, NOW).unwrap();
    assert!(verifier.has_kid(old.kid()) && !verifier.has_kid(new.kid()));

    verifier.replace_keys(&new.jwks()).unwrap();

    assert!(!verifier.has_kid(old.kid()) && verifier.has_kid(new.kid()));
    assert!(verifier.verify(&new_token, NOW).is_ok());
    assert_refused(verifier.verify(&old_token, NOW), &old_token);

    // A bad refetch leaves the keys in place.
    assert!(matches!(
        verifier.replace_keys(&json!({"keys": []})),
        Err(CoreError::Internal(_))
    ));
    assert!(matches!(
        verifier.replace_keys(&json!("nope")),
        Err(CoreError::Internal(_))
    ));
    assert!(verifier.verify(&new_token, NOW).is_ok());

    // Both keys at once, as during a rotation overlap.
    let mut both = new.jwks();
    let old_key = old.jwks()["keys"][0].clone();
    both["keys"].as_array_mut().unwrap().push(old_key);
    verifier.replace_keys(&both).unwrap();
    assert!(verifier.verify(&old_token, NOW).is_ok() && verifier.verify(&new_token, NOW).is_ok());
}

#[test]
fn unusable_key_sets_and_symmetric_algorithms_are_configuration_errors() {
    let dir = TempDir::new();
    let issuer = issuer_in(dir.path());
    let config = local_config(Audience::Aud(AUDIENCE.into()));
    let jwk = issuer.jwks()["keys"][0].clone();
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut key = jwk.clone();
        edit(&mut key);
        json!({ "keys": [key] })
    };

    let mut hmac = config.clone();
    hmac.algorithm = Algorithm::HS256;
    assert!(matches!(
        JwtVerifier::new(hmac, &issuer.jwks()),
        Err(CoreError::Internal(_))
    ));

    let bad_sets = [
        json!({}),
        json!({"keys": []}),
        json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "k"}]}),
        with(&|k| k["x"] = json!("AAAA")), // 3 bytes: would panic inside jsonwebtoken
        with(&|k| k["x"] = json!("!!not base64!!")),
        with(&|k| k["crv"] = json!("Ed448")),
        with(&|k| k["use"] = json!("enc")),
        with(&|k| k["alg"] = json!("RS256")),
        with(&|k| {
            k.as_object_mut().unwrap().remove("kid");
        }),
        json!({"keys": [jwk.clone(), jwk.clone()]}),
    ];
    for jwks in bad_sets {
        let result = JwtVerifier::new(config.clone(), &jwks);
        assert!(matches!(result, Err(CoreError::Internal(_))), "{jwks}");
    }

    // A key without `alg` or `use` is still usable; unusable neighbours are skipped.
    let bare = with(&|k| {
        let k = k.as_object_mut().unwrap();
        k.remove("alg");
        k.remove("use");
    });
    let mut mixed = bare.clone();
    mixed["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "oct", "k": "c2VjcmV0", "kid": "s"}));
    let verifier = JwtVerifier::new(config, &mixed).unwrap();
    assert!(verifier.has_kid(issuer.kid()) && !verifier.has_kid("s"));
}

/// A 2048-bit RSA key generated for these tests only (`openssl genrsa -traditional 2048`).
const RSA_TEST_KEY: &[u8] = include_bytes!("fixtures/rsa-test-key.pem");

fn rsa_jwks(kid: &str) -> Value {
    let key = EncodingKey::from_rsa_pem(RSA_TEST_KEY).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(kid.into());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    serde_json::to_value(JwkSet { keys: vec![jwk] }).unwrap()
}

fn cognito_config() -> VerifierConfig {
    VerifierConfig {
        issuer: "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Test".into(),
        audience: Audience::ClientId("app-client".into()),
        token_use: Some("access".into()),
        algorithm: Algorithm::RS256,
        leeway_secs: 60,
    }
}

#[test]
fn an_rs256_key_set_verifies_cognito_access_tokens() {
    let jwks = rsa_jwks("cognito-kid");
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    let verifier = JwtVerifier::new(cognito_config(), &jwks).unwrap();
    let id = UserId::new();
    let claims = json!({
        "iss": "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Test",
        "client_id": "app-client",
        "sub": "5f2b1c1e-7a8d-4a57-9c1e-0d4f2b6a9e11",
        "custom:user_id": id.as_str(),
        "cognito:groups": ["platform_admin"],
        "token_use": "access",
        "exp": NOW.unix_timestamp() + 3600,
        "iat": NOW.unix_timestamp(),
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("cognito-kid".into());
    let key = EncodingKey::from_rsa_pem(RSA_TEST_KEY).unwrap();

    let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();

    assert_eq!(
        verifier.verify(&token, NOW).unwrap(),
        Principal::User {
            id,
            roles: vec![Role::PlatformAdmin],
            tenant: None
        }
    );
    // The leeway applies: 30 s past `exp` still passes with 60 s of leeway, 60 s does not.
    assert!(
        verifier
            .verify(&token, NOW + Duration::seconds(3630))
            .is_ok()
    );
    assert_refused(
        verifier.verify(&token, NOW + Duration::seconds(3660)),
        &token,
    );

    // HS256 keyed with the modulus, and PS256 by the right key, are both off the pinned alg.
    let n = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["n"].as_str().unwrap())
        .unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("cognito-kid".into());
    let forged = jsonwebtoken::encode(&hs, &claims, &EncodingKey::from_secret(&n)).unwrap();
    assert_refused(verifier.verify(&forged, NOW), &forged);
    let mut ps = Header::new(Algorithm::PS256);
    ps.kid = Some("cognito-kid".into());
    let pss = jsonwebtoken::encode(&ps, &claims, &key).unwrap();
    assert_refused(verifier.verify(&pss, NOW), &pss);
}

#[test]
fn a_verifier_refuses_keys_of_another_family_than_its_algorithm() {
    let dir = TempDir::new();
    let issuer = issuer_in(dir.path());

    let eddsa_config = local_config(Audience::Aud(AUDIENCE.into()));
    assert!(matches!(
        JwtVerifier::new(eddsa_config, &rsa_jwks("k")),
        Err(CoreError::Internal(_))
    ));
    assert!(matches!(
        JwtVerifier::new(cognito_config(), &issuer.jwks()),
        Err(CoreError::Internal(_))
    ));
}

#[test]
fn the_verifier_and_issuer_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<JwtVerifier>();
    shareable::<wharf_jwt::LocalIssuer>();
}

#[test]
fn a_remembered_token_stops_working_when_its_key_is_withdrawn() {
    let dir = TempDir::new();
    let issuer = issuer_in(dir.path());
    let verifier = issuer.verifier();
    let (token, _) = issuer
        .issue(&user(vec![Role::Subscriber], None), NOW)
        .unwrap();
    assert!(verifier.verify(&token, NOW).is_ok());
    assert!(
        verifier.verify(&token, NOW + Duration::seconds(1)).is_ok(),
        "served from the cache"
    );
    let other = TempDir::new();
    verifier
        .replace_keys(&issuer_in(other.path()).jwks())
        .unwrap();
    let reason = assert_refused(verifier.verify(&token, NOW + Duration::seconds(2)), &token);
    assert_eq!(reason, "unknown key id");
}

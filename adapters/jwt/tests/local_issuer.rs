//! The local issuer's key file and key set: created once, kept across restarts, private.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use sha2::{Digest, Sha256};
use wharf_core::CoreError;
use wharf_core::domain::identity::Role;
use wharf_jwt::LocalIssuer;

#[test]
fn keys_persist_across_loads_of_the_same_directory() {
    let dir = TempDir::new();
    let first = issuer_in(dir.path());
    let (token, _) = first
        .issue(&user(vec![Role::Subscriber], None), NOW)
        .unwrap();

    let second = issuer_in(dir.path());

    assert_eq!(first.kid(), second.kid());
    assert_eq!(first.jwks(), second.jwks());
    assert!(second.verifier().verify(&token, NOW).is_ok());
}

#[test]
fn different_directories_get_different_keys() {
    let (a, b) = (TempDir::new(), TempDir::new());
    assert_ne!(issuer_in(a.path()).kid(), issuer_in(b.path()).kid());
}

#[test]
fn the_key_file_is_32_bytes_and_only_the_owner_may_read_it() {
    let dir = TempDir::new();
    issuer_in(dir.path());
    let path = dir.path().join("jwt-signing.key");

    assert_eq!(std::fs::read(&path).unwrap().len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name != "jwt-signing.key")
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
}

#[test]
fn a_missing_data_directory_is_created() {
    let dir = TempDir::new();
    let nested = dir.path().join("data").join("keys");
    issuer_in(&nested);
    assert!(nested.join("jwt-signing.key").is_file());
}

#[test]
fn a_key_file_of_the_wrong_size_is_an_error_and_is_left_alone() {
    let dir = TempDir::new();
    let path = dir.path().join("jwt-signing.key");
    for content in [&b""[..], &[7u8; 31][..], &[7u8; 33][..]] {
        std::fs::write(&path, content).unwrap();

        let result = LocalIssuer::load_or_create(dir.path(), ISSUER.into(), AUDIENCE.into(), TTL);

        assert!(matches!(result, Err(CoreError::Internal(_))));
        assert_eq!(std::fs::read(&path).unwrap(), content);
    }
}

#[test]
fn an_existing_seed_is_used_as_is() {
    let dir = TempDir::new();
    std::fs::write(dir.path().join("jwt-signing.key"), [42u8; 32]).unwrap();

    let issuer = issuer_in(dir.path());

    let public = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32])
        .verifying_key()
        .to_bytes();
    assert_eq!(
        issuer.jwks()["keys"][0]["x"],
        URL_SAFE_NO_PAD.encode(public)
    );
}

#[test]
fn the_kid_is_the_start_of_the_public_keys_sha256() {
    let dir = TempDir::new();
    let issuer = issuer_in(dir.path());
    let jwks = issuer.jwks();
    let key = &jwks["keys"][0];
    let public = URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap();
    let digest: String = Sha256::digest(&public)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    assert_eq!(issuer.kid(), &digest[..16]);
    assert_eq!(key["kid"], issuer.kid());
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(public.len(), 32);
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
}

#[test]
fn a_zero_ttl_is_refused() {
    let dir = TempDir::new();
    let result = LocalIssuer::load_or_create(
        dir.path(),
        ISSUER.into(),
        AUDIENCE.into(),
        Duration::from_millis(500),
    );
    assert!(matches!(result, Err(CoreError::Validation(_))));
}

#[test]
fn the_debug_output_shows_no_key_material() {
    let dir = TempDir::new();
    let issuer = issuer_in(dir.path());
    let seed = std::fs::read(dir.path().join("jwt-signing.key")).unwrap();
    let shown = format!("{issuer:?}");

    assert!(shown.contains(issuer.kid()));
    assert!(!shown.contains(&URL_SAFE_NO_PAD.encode(&seed)));
    assert!(!shown.contains(&format!("{seed:?}")));
}

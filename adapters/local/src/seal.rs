//! Sealing of recoverable secrets (webhook signing secrets) with ChaCha20-Poly1305 under a
//! 256-bit key kept in the data dir (`secret.key`, mode 0600), so a copied database alone
//! does not reveal them; and keyed digests (HMAC-SHA256 under a key derived from the same
//! one) of what must be recognised but not recovered.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::path::Path;
use wharf_core::CoreError;
use wharf_core::ports::SecretBox;

const KEY_FILE: &str = "secret.key";
const VERSION: &str = "v1";

/// A `SecretBox` keyed from the data dir.
pub struct FileSecretBox {
    cipher: ChaCha20Poly1305,
    /// The digests' MAC, keyed from the sealing key (one key file serves both; the derived
    /// key never encrypts).
    digests: Hmac<Sha256>,
}

impl FileSecretBox {
    /// Loads the key from `dir`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, CoreError> {
        let key = wharf_jwt::keyfile::load_or_create(dir, KEY_FILE)?;
        FileSecretBox::with_key(&key)
    }

    /// A box under a key given as URL-safe base64 of 32 bytes (where there is no data dir to
    /// keep one, as on Lambda).
    pub fn from_encoded_key(encoded: &str) -> Result<Self, CoreError> {
        let key = URL_SAFE_NO_PAD
            .decode(encoded.trim().trim_end_matches('='))
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| {
                CoreError::invalid("secret_key", "must be 32 bytes in URL-safe base64")
            })?;
        FileSecretBox::with_key(&key)
    }

    fn with_key(key: &[u8]) -> Result<FileSecretBox, CoreError> {
        let derived = Sha256::new()
            .chain_update(b"wharf digest key v1\0")
            .chain_update(key)
            .finalize();
        let digests =
            <Hmac<Sha256> as Mac>::new_from_slice(&derived).map_err(CoreError::internal)?;
        Ok(FileSecretBox {
            cipher: ChaCha20Poly1305::new(Key::from_slice(key)),
            digests,
        })
    }
}

impl SecretBox for FileSecretBox {
    fn seal(&self, plaintext: &str) -> Result<String, CoreError> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| CoreError::internal(e.to_string()))?;
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
            .map_err(|_| CoreError::internal("sealing failed"))?;
        Ok(format!(
            "{VERSION}.{}.{}",
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(ct)
        ))
    }

    fn open(&self, sealed: &str) -> Result<String, CoreError> {
        let bad =
            || CoreError::internal("a sealed secret could not be opened (wrong key or corrupt)");
        let mut parts = sealed.splitn(3, '.');
        let (Some(VERSION), Some(nonce), Some(ct)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let nonce = URL_SAFE_NO_PAD.decode(nonce).map_err(|_| bad())?;
        let ct = URL_SAFE_NO_PAD.decode(ct).map_err(|_| bad())?;
        if nonce.len() != 12 {
            return Err(bad());
        }
        let pt = self
            .cipher
            .decrypt(Nonce::from_slice(&nonce), ct.as_slice())
            .map_err(|_| bad())?;
        String::from_utf8(pt).map_err(|_| bad())
    }

    fn digest(&self, data: &[u8]) -> String {
        let mut mac = self.digests.clone();
        mac.update(data);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_the_same_key() -> Result<(), CoreError> {
        let dir = tempfile::tempdir().map_err(CoreError::internal)?;
        let a = FileSecretBox::load_or_create(dir.path())?;
        let sealed = a.seal("whsec_abc")?;
        assert!(!sealed.contains("whsec_abc"));
        assert_eq!(
            FileSecretBox::load_or_create(dir.path())?.open(&sealed)?,
            "whsec_abc"
        );
        let other = tempfile::tempdir().map_err(CoreError::internal)?;
        assert!(
            FileSecretBox::load_or_create(other.path())?
                .open(&sealed)
                .is_err()
        );
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(a.open(&tampered).is_err());
        Ok(())
    }

    #[test]
    fn digests_are_keyed_and_not_the_plain_hash() -> Result<(), CoreError> {
        let dir = tempfile::tempdir().map_err(CoreError::internal)?;
        let a = FileSecretBox::load_or_create(dir.path())?;
        let body = br#"{"email":"a@example.com","password":"hunter22"}"#;
        let digest = a.digest(body);
        assert_eq!(digest.len(), 64);
        assert_eq!(
            FileSecretBox::load_or_create(dir.path())?.digest(body),
            digest,
            "the same key recognises the same data"
        );
        assert_ne!(a.digest(b"other"), digest);
        let other = tempfile::tempdir().map_err(CoreError::internal)?;
        assert_ne!(
            FileSecretBox::load_or_create(other.path())?.digest(body),
            digest
        );
        let plain: String = Sha256::digest(body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_ne!(plain, digest);
        Ok(())
    }
}

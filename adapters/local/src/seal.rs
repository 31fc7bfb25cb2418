//! Sealing of recoverable secrets (webhook signing secrets) with ChaCha20-Poly1305 under a
//! 256-bit key kept in the data dir (`secret.key`, mode 0600), so a copied database alone
//! does not reveal them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use std::path::Path;
use wharf_core::CoreError;
use wharf_core::ports::SecretBox;

const KEY_FILE: &str = "secret.key";
const VERSION: &str = "v1";

/// A `SecretBox` keyed from the data dir.
pub struct FileSecretBox {
    cipher: ChaCha20Poly1305,
}

impl FileSecretBox {
    /// Loads the key from `dir`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, CoreError> {
        let key = wharf_jwt::keyfile::load_or_create(dir, KEY_FILE)?;
        Ok(FileSecretBox {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        })
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
        Ok(FileSecretBox {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
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
}

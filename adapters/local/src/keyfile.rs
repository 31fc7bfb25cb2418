//! Random key material kept in a file of the data dir: created once with mode 0600, written
//! to a temporary file and renamed so a crash never leaves a half-written key.

use std::io::Write;
use std::path::Path;
use wharf_core::CoreError;

/// Reads `len` bytes of key from `path`, creating the file with fresh random bytes if absent.
pub fn load_or_create(path: &Path, len: usize) -> Result<Vec<u8>, CoreError> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() == len => return Ok(bytes),
        Ok(_) => {
            return Err(CoreError::internal(format!(
                "{} has the wrong length",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(CoreError::internal(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    }
    let mut key = vec![0u8; len];
    getrandom::fill(&mut key).map_err(|e| CoreError::internal(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let write = || -> std::io::Result<()> {
        let mut f = options.open(&tmp)?;
        f.write_all(&key)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| CoreError::internal(format!("cannot write {}: {e}", path.display())))?;
    Ok(key)
}

//! Secret key material kept in the data directory: 32 random bytes per file, created at most
//! once with mode 0600 (never silently replaced), published atomically so two processes
//! starting at once agree on one key. Used for the token signing key and the secret-sealing key.

use crate::issuer::{hex, random_bytes};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use wharf_core::CoreError;

/// Reads the 32-byte key in `dir/file_name`, creating the directory and the file when absent.
pub fn load_or_create(dir: &Path, file_name: &str) -> Result<[u8; 32], CoreError> {
    std::fs::create_dir_all(dir).map_err(|e| io_error("creating the data directory", e))?;
    let path = dir.join(file_name);
    match read_seed(&path)? {
        Some(seed) => Ok(seed),
        None => create_seed(dir, &path, file_name),
    }
}

/// An I/O failure on the key file, named by what was being done (never by key content).
#[derive(Debug)]
struct KeyFileError {
    doing: &'static str,
    source: std::io::Error,
}

impl std::fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key file: {}", self.doing)
    }
}

impl std::error::Error for KeyFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn io_error(doing: &'static str, source: std::io::Error) -> CoreError {
    CoreError::internal(KeyFileError { doing, source })
}

/// The seed in `path`, `None` when the file does not exist.
fn read_seed(path: &Path) -> Result<Option<[u8; 32]>, CoreError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("opening the key file", e)),
    };
    warn_if_shared(&file);
    // Read into a fixed buffer rather than a Vec so no stray heap copy of the seed remains.
    let mut seed = [0u8; 32];
    let mut extra = [0u8; 1];
    let wrong_size = || CoreError::internal("a key file is not exactly 32 bytes");
    file.read_exact(&mut seed).map_err(|e| match e.kind() {
        ErrorKind::UnexpectedEof => wrong_size(),
        _ => io_error("reading the key file", e),
    })?;
    match file.read(&mut extra) {
        Ok(0) => Ok(Some(seed)),
        Ok(_) => Err(wrong_size()),
        Err(e) => Err(io_error("reading the key file", e)),
    }
}

#[cfg(unix)]
fn warn_if_shared(file: &File) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = file.metadata()
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!("a key file in the data directory is readable by other users; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_file: &File) {}

/// Creates the key file with a fresh seed and returns the seed that ends up in it.
fn create_seed(dir: &Path, path: &Path, file_name: &str) -> Result<[u8; 32], CoreError> {
    let seed = random_bytes::<32>()?;
    let tmp = dir.join(format!(".{file_name}.{}.tmp", hex(&random_bytes::<8>()?)));
    if let Err(e) = write_private(&tmp, &seed) {
        remove_quietly(&tmp);
        return Err(e);
    }
    // A hard link publishes the complete file atomically and, unlike a rename, fails when the
    // name is taken: two processes starting at once then agree on one key instead of the
    // loser signing with a key nobody else will ever load.
    match std::fs::hard_link(&tmp, path) {
        Ok(()) => {
            remove_quietly(&tmp);
            sync_dir(dir);
            Ok(seed)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            remove_quietly(&tmp);
            read_seed(path)?.ok_or_else(|| CoreError::internal("a key file vanished"))
        }
        // File systems without hard links: fall back to the plain atomic rename.
        Err(_) => {
            if let Err(e) = std::fs::rename(&tmp, path) {
                remove_quietly(&tmp);
                return Err(io_error("moving the new key file into place", e));
            }
            sync_dir(dir);
            Ok(seed)
        }
    }
}

fn write_private(path: &PathBuf, seed: &[u8; 32]) -> Result<(), CoreError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Set at creation so the seed is never on disk with wider permissions.
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| io_error("creating the key file", e))?;
    file.write_all(seed)
        .map_err(|e| io_error("writing the key file", e))?;
    file.sync_all()
        .map_err(|e| io_error("flushing the key file", e))
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != ErrorKind::NotFound
    {
        tracing::warn!(error = %e, "could not remove a temporary key file");
    }
}

/// Makes the new directory entry durable; best effort, as not every platform allows it.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(error = %e, "could not sync the data directory after creating a key file");
    }
    #[cfg(not(unix))]
    let _ = dir;
}

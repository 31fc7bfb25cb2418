//! The object port on files: each key is a file under the object directory (`objects/` in
//! the data dir). Keys are checked by `check_object_key`, so none names a path outside it.
//! A put writes a temporary file, syncs it and renames it over the key, so a reader sees the
//! old or the new object, never a part, and a crash leaves no half-written object.

use async_trait::async_trait;
use std::io::Write;
use std::path::{Path, PathBuf};
use wharf_core::CoreError;
use wharf_core::ports::{ObjectStore, Result, check_object_key, check_object_prefix};

/// Temporary files are named after their key, this mark and a random part. No key may
/// contain the mark, so `list` can tell them from objects.
const TEMP_MARK: char = '#';

/// Objects as files under one directory.
#[derive(Debug, Clone)]
pub struct FsObjects {
    root: PathBuf,
}

impl FsObjects {
    /// Objects under `root`, created if missing.
    pub fn open(root: &Path) -> Result<FsObjects> {
        crate::create_private_dir(root).map_err(CoreError::internal)?;
        Ok(FsObjects {
            root: root.to_owned(),
        })
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_object_key(key)?;
        Ok(self.root.join(key))
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(CoreError::internal)?
}

#[async_trait]
impl ObjectStore for FsObjects {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<()> {
        let path = self.path(key)?;
        let root = self.root.clone();
        blocking(move || {
            let dir = path
                .parent()
                .ok_or_else(|| CoreError::internal("key without a parent"))?;
            let conflict = || {
                CoreError::Conflict("an object key cannot also be the path of other objects".into())
            };
            if path.is_dir() {
                return Err(conflict());
            }
            if let Err(e) = crate::create_private_dir(dir) {
                let inside_an_object = dir
                    .ancestors()
                    .take_while(|a| a.starts_with(&root))
                    .any(Path::is_file);
                return Err(if inside_an_object {
                    conflict()
                } else {
                    CoreError::internal(e)
                });
            }
            let mut temp = path.clone().into_os_string();
            temp.push(format!("{TEMP_MARK}{}", uuid::Uuid::now_v7().simple()));
            let temp = PathBuf::from(temp);
            let written = (|| {
                let mut file = std::fs::File::create(&temp)?;
                file.write_all(&body)?;
                file.sync_all()?;
                std::fs::rename(&temp, &path)
            })();
            if let Err(e) = written {
                let _ = std::fs::remove_file(&temp);
                return Err(CoreError::internal(e));
            }
            Ok(())
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let path = self.path(key)?;
        blocking(move || match std::fs::read(&path) {
            Ok(body) => Ok(body),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory
                ) =>
            {
                Err(CoreError::NotFound("object"))
            }
            Err(e) => Err(CoreError::internal(e)),
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CoreError::internal(e)),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        check_object_prefix(prefix)?;
        let root = self.root.clone();
        let start = root.join(prefix);
        blocking(move || {
            let mut keys = Vec::new();
            let mut dirs = vec![start];
            while let Some(dir) = dirs.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(CoreError::internal(e)),
                };
                for entry in entries {
                    let entry = entry.map_err(CoreError::internal)?;
                    let kind = entry.file_type().map_err(CoreError::internal)?;
                    let path = entry.path();
                    if kind.is_dir() {
                        dirs.push(path);
                    } else if kind.is_file() {
                        let Ok(relative) = path.strip_prefix(&root) else {
                            continue;
                        };
                        let Some(key) = relative.to_str() else {
                            continue;
                        };
                        if !key.contains(TEMP_MARK) {
                            keys.push(key.to_owned());
                        }
                    }
                }
            }
            keys.sort();
            Ok(keys)
        })
        .await
    }
}

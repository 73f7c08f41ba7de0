//! Key files: 32 random bytes in a file only its owner can read.
//!
//! # Invariants
//! - A new key file is created with mode `0600` in one step (`O_CREAT|O_EXCL` with the
//!   mode), written and synced before it is used, so a crash never leaves a half key in use.
//! - An existing key file whose mode lets its group or others read or write it is
//!   refused, as ssh refuses such private keys.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::Error;

/// Length of every key this crate keeps.
pub(crate) const KEY_LEN: usize = 32;

fn key_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::KeyFile {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Reads the key in `path`, or creates the file with a fresh random key if it is absent.
pub(crate) fn read_or_create(path: &Path) -> Result<[u8; KEY_LEN], Error> {
    match read(path) {
        Err(Error::KeyFile { reason, .. }) if reason == NOT_FOUND => create(path),
        other => other,
    }
}

const NOT_FOUND: &str = "not found";

/// Reads the key in `path`.
pub(crate) fn read(path: &Path) -> Result<[u8; KEY_LEN], Error> {
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(key_error(path, NOT_FOUND));
        }
        Err(e) => return Err(key_error(path, e.to_string())),
    };
    let meta = file
        .metadata()
        .map_err(|e| key_error(path, e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(key_error(
            path,
            format!("permissions {mode:o} let others read it; run `chmod 600` on it"),
        ));
    }
    let mut bytes = Vec::with_capacity(KEY_LEN + 1);
    Read::by_ref(&mut file)
        .take(KEY_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| key_error(path, e.to_string()))?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
        key_error(
            path,
            format!("holds {} bytes, a key is {KEY_LEN}", bytes.len()),
        )
    })
}

/// Creates `path` (mode `0600`, parents as needed) with a fresh random key.
fn create(path: &Path) -> Result<[u8; KEY_LEN], Error> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| key_error(path, e.to_string()))?;
    }
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key).map_err(|e| key_error(path, format!("random source: {e}")))?;
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => file,
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return read(path),
        Err(e) => return Err(key_error(path, e.to_string())),
    };
    // The umask may have narrowed the mode further; it can never widen it.
    file.write_all(&key)
        .and_then(|()| file.sync_all())
        .map_err(|e| key_error(path, e.to_string()))?;
    tracing::info!(path = %path.display(), "created a new key file");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_once_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/root.key");
        let first = read_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_or_create(&path).unwrap(), first);
        assert_ne!(first, [0u8; KEY_LEN]);
    }

    #[test]
    fn loose_permissions_and_wrong_lengths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(&path, [1u8; KEY_LEN]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read(&path).unwrap(), [1u8; KEY_LEN]);
        fs::write(&path, [1u8; 5]).unwrap();
        assert!(
            read(&path)
                .unwrap_err()
                .to_string()
                .contains("holds 5 bytes")
        );
    }
}

//! An encrypted secrets vault: named secrets sealed with XChaCha20-Poly1305 under a key
//! kept in its own file, apart from the vault and the journal.
//!
//! # Invariants
//! - Secrets are sealed one by one; each seal is bound to the secret's name (associated
//!   data), so swapping two sealed values fails authentication instead of decrypting.
//! - A fresh random nonce per seal (192-bit, so random nonces do not collide).
//! - The vault file is replaced atomically (write a temporary file, fsync, rename, fsync
//!   the directory): a crash leaves the old vault or the new one.
//! - A wrong key is a clear error when the vault opens (a sealed check value), not
//!   garbage later.
//! - [`Secret`] never prints its value (`Debug` is redacted) and wipes it on drop.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chacha20poly1305::aead::KeyInit;
use chacha20poly1305::{Key, XChaCha20Poly1305};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{Error, aead, keyfile};

const CHECK_NAME: &str = "\u{0}toka-vault-key-check";
const FORMAT_VERSION: u8 = 1;

/// A secret's value. `Debug` shows `Secret(<redacted>)`; the bytes are wiped on drop.
#[derive(Clone)]
pub struct Secret(Arc<Zeroizing<Vec<u8>>>);

impl Secret {
    /// Wraps `bytes` as a secret.
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Arc::new(Zeroizing::new(bytes)))
    }

    /// The secret's bytes. Do not log them, return them from a tool, or put them in a
    /// child's environment.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as UTF-8 text, if it is.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Serialize, Deserialize, Default)]
struct VaultFile {
    version: u8,
    /// name → nonce ‖ ciphertext ‖ tag.
    sealed: BTreeMap<String, Vec<u8>>,
}

/// Named secrets, encrypted at rest.
///
/// ```
/// # fn main() -> Result<(), toka_tools::Error> {
/// let dir = tempfile::tempdir().unwrap();
/// let vault = toka_tools::Vault::open(dir.path().join("secrets.vault"), dir.path().join("vault.key"))?;
/// vault.put("github.token", b"ghp_example")?;
/// assert_eq!(vault.get("github.token")?.expose(), b"ghp_example");
/// assert_eq!(format!("{:?}", vault.get("github.token")?), "Secret(<redacted>)");
/// # Ok(()) }
/// ```
pub struct Vault {
    path: PathBuf,
    cipher: XChaCha20Poly1305,
    file: Mutex<VaultFile>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens (or creates) the vault at `path`, sealed with the key in `key_file`
    /// (created with `0600` permissions on first use).
    ///
    /// # Errors
    /// [`Error::KeyFile`], [`Error::Vault`] if the file is unreadable or the key is wrong.
    pub fn open(path: impl Into<PathBuf>, key_file: impl AsRef<Path>) -> Result<Self, Error> {
        let key = Zeroizing::new(keyfile::read_or_create(key_file.as_ref())?);
        let path = path.into();
        let vault_error = |reason: String| Error::Vault {
            path: path.clone(),
            reason,
        };
        let cipher = XChaCha20Poly1305::new(&Key::from(*key));
        let file = match fs::read(&path) {
            Ok(bytes) => {
                let file: VaultFile = postcard::from_bytes(&bytes)
                    .map_err(|e| vault_error(format!("unreadable: {e}")))?;
                if file.version != FORMAT_VERSION {
                    return Err(vault_error(format!(
                        "unknown format version {}",
                        file.version
                    )));
                }
                file
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => VaultFile {
                version: FORMAT_VERSION,
                sealed: BTreeMap::new(),
            },
            Err(e) => return Err(vault_error(e.to_string())),
        };
        let vault = Vault {
            cipher,
            file: Mutex::new(file),
            path: path.clone(),
        };
        let has_check = vault.lock().sealed.contains_key(CHECK_NAME);
        if has_check {
            vault.open_sealed(CHECK_NAME).map_err(|_| {
                vault_error("wrong key: the vault was sealed with another key".into())
            })?;
        } else {
            vault.put(CHECK_NAME, b"ok")?;
        }
        Ok(vault)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VaultFile> {
        self.file.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn vault_error(&self, reason: impl Into<String>) -> Error {
        Error::Vault {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Stores `value` under `name` (replacing any earlier value) and persists the vault.
    ///
    /// # Errors
    /// [`Error::Vault`] if it cannot be written.
    pub fn put(&self, name: &str, value: &[u8]) -> Result<(), Error> {
        let sealed = aead::seal(&self.cipher, value, name.as_bytes())
            .map_err(|e| self.vault_error(format!("sealing failed: {e}")))?;
        let mut file = self.lock();
        file.sealed.insert(name.to_owned(), sealed);
        self.persist(&file)
    }

    /// Removes the secret `name`; `false` if there was none.
    ///
    /// # Errors
    /// [`Error::Vault`] if the vault cannot be written.
    pub fn remove(&self, name: &str) -> Result<bool, Error> {
        let mut file = self.lock();
        let removed = file.sealed.remove(name).is_some();
        if removed {
            self.persist(&file)?;
        }
        Ok(removed)
    }

    /// The secret `name`.
    ///
    /// # Errors
    /// [`Error::NoSuchSecret`], or [`Error::Vault`] if its seal does not open.
    pub fn get(&self, name: &str) -> Result<Secret, Error> {
        if name == CHECK_NAME {
            return Err(Error::NoSuchSecret(name.to_owned()));
        }
        self.open_sealed(name)
    }

    fn open_sealed(&self, name: &str) -> Result<Secret, Error> {
        let sealed = self
            .lock()
            .sealed
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NoSuchSecret(name.to_owned()))?;
        let plain = aead::open(&self.cipher, &sealed, name.as_bytes()).map_err(|e| match e {
            aead::OpenError::Truncated => self.vault_error(format!("secret {name:?} is truncated")),
            aead::OpenError::NotAuthentic => {
                self.vault_error(format!("secret {name:?} does not authenticate"))
            }
        })?;
        Ok(Secret::new(plain))
    }

    /// The names of the stored secrets.
    pub fn names(&self) -> Vec<String> {
        self.lock()
            .sealed
            .keys()
            .filter(|n| n.as_str() != CHECK_NAME)
            .cloned()
            .collect()
    }

    fn persist(&self, file: &VaultFile) -> Result<(), Error> {
        let bytes = postcard::to_stdvec(file).map_err(|e| self.vault_error(e.to_string()))?;
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| self.vault_error(e.to_string()))?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(dir).map_err(|e| self.vault_error(e.to_string()))?;
        tmp.write_all(&bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| self.vault_error(e.to_string()))?;
        tmp.persist(&self.path)
            .map_err(|e| self.vault_error(e.to_string()))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.vault_error(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_survive_reopen_and_are_sealed_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (path, key) = (dir.path().join("v"), dir.path().join("k"));
        let vault = Vault::open(&path, &key).unwrap();
        vault.put("db.password", b"hunter2-very-secret").unwrap();
        drop(vault);
        let raw = fs::read(&path).unwrap();
        assert!(
            !raw.windows(6).any(|w| w == b"hunter"),
            "clear text on disk"
        );
        let vault = Vault::open(&path, &key).unwrap();
        assert_eq!(
            vault.get("db.password").unwrap().expose(),
            b"hunter2-very-secret"
        );
        assert_eq!(vault.names(), vec!["db.password".to_owned()]);
        assert!(matches!(vault.get("nope"), Err(Error::NoSuchSecret(_))));
        assert!(vault.remove("db.password").unwrap());
        assert!(vault.get("db.password").is_err());
    }

    #[test]
    fn a_wrong_key_and_swapped_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v");
        let vault = Vault::open(&path, dir.path().join("k1")).unwrap();
        vault.put("a", b"alpha").unwrap();
        vault.put("b", b"beta").unwrap();
        drop(vault);
        let err = Vault::open(&path, dir.path().join("k2"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("wrong key"), "{err}");
        // Move b's sealed value under a's name: it must not decrypt.
        let mut file: VaultFile = postcard::from_bytes(&fs::read(&path).unwrap()).unwrap();
        let b = file.sealed["b"].clone();
        file.sealed.insert("a".into(), b);
        fs::write(&path, postcard::to_stdvec(&file).unwrap()).unwrap();
        let vault = Vault::open(&path, dir.path().join("k1")).unwrap();
        assert!(
            vault
                .get("a")
                .unwrap_err()
                .to_string()
                .contains("does not authenticate")
        );
    }
}

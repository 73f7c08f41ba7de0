//! Encryption at rest: payloads and snapshots sealed with XChaCha20-Poly1305.
//!
//! # Invariants
//! - **Nonces are never reused under one key.** A nonce is a 16-byte prefix drawn from the
//!   OS random generator when the journal is opened, followed by a 64-bit counter that only
//!   grows while it is open. Positions are *not* used as nonces: a crash can lose an
//!   unflushed record and its position is then written again with other bytes, which would
//!   reuse a position-derived nonce.
//! - **A sealed payload is bound to its place.** The associated data names the record
//!   (position, stream, sequence) or snapshot (stream, sequence), so bytes moved from one
//!   record to another fail authentication instead of decrypting.
//! - **A wrong key is a clear error.** The journal stores a sealed key-check value; opening
//!   with another key fails with [`Error::WrongKey`](crate::Error::WrongKey) before any
//!   record is read.
//! - The key itself is never written to the journal: the caller supplies it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};

use crate::Error;

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Bytes a sealed value adds to its plaintext (nonce + tag).
pub(crate) const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// A 256-bit key for encryption at rest.
///
/// Keep it outside the journal's database (a key file with tight permissions, a KMS, …).
/// `Debug` never prints the key.
///
/// ```
/// use toka_store::EncryptionKey;
/// let key = EncryptionKey::generate().unwrap();
/// let same = EncryptionKey::from_bytes(key.to_bytes());
/// assert_eq!(format!("{key:?}"), "EncryptionKey(<redacted>)");
/// # let _ = same;
/// ```
#[derive(Clone)]
pub struct EncryptionKey([u8; 32]);

impl EncryptionKey {
    /// Uses these 32 bytes as the key.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        EncryptionKey(bytes)
    }

    /// Draws a fresh key from the operating system's random generator.
    ///
    /// # Errors
    /// [`Error::Backend`] if the OS random generator is unavailable.
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| Error::backend("drawing a random key", e))?;
        Ok(EncryptionKey(bytes))
    }

    /// The raw key bytes (to store them in a key file).
    pub const fn to_bytes(&self) -> [u8; 32] {
        self.0
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(<redacted>)")
    }
}

/// Seals and opens values with one key; owns the nonce sequence of one open journal.
pub(crate) struct Sealer {
    cipher: XChaCha20Poly1305,
    nonce_prefix: [u8; 16],
    counter: AtomicU64,
}

impl Sealer {
    pub(crate) fn new(key: &EncryptionKey) -> Result<Self, Error> {
        let mut nonce_prefix = [0u8; 16];
        getrandom::fill(&mut nonce_prefix)
            .map_err(|e| Error::backend("drawing a random nonce prefix", e))?;
        Ok(Sealer {
            cipher: XChaCha20Poly1305::new(&Key::from(key.0)),
            nonce_prefix,
            counter: AtomicU64::new(0),
        })
    }

    fn next_nonce(&self) -> [u8; NONCE_LEN] {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..16].copy_from_slice(&self.nonce_prefix);
        nonce[16..].copy_from_slice(&n.to_le_bytes());
        nonce
    }

    /// Appends `nonce ‖ ciphertext ‖ tag` of `plaintext` to `out`.
    pub(crate) fn seal_into(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let nonce = self.next_nonce();
        out.reserve(plaintext.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self.cipher.encrypt_inout_detached(
            &XNonce::from(nonce),
            aad,
            (&mut out[start..]).into(),
        );
        match tag {
            Ok(tag) => out.extend_from_slice(&tag),
            // Only fails for messages beyond ChaCha20's 256 GiB limit, far past the record
            // size limit; keep the record unreadable rather than panic.
            Err(_) => out.truncate(start - NONCE_LEN),
        }
    }

    /// Opens a value produced by [`Sealer::seal_into`]; `None` if it is not authentic.
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < SEAL_OVERHEAD {
            return None;
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce = XNonce::try_from(nonce).ok()?;
        let tag = Tag::try_from(tag).ok()?;
        let mut plaintext = ciphertext.to_vec();
        self.cipher
            .decrypt_inout_detached(&nonce, aad, (&mut plaintext[..]).into(), &tag)
            .ok()?;
        Some(plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_round_trips_and_binds_aad() {
        let sealer = Sealer::new(&EncryptionKey::from_bytes([7; 32])).unwrap();
        let mut sealed = Vec::new();
        sealer.seal_into(b"place-1", b"secret", &mut sealed);
        assert_eq!(sealed.len(), 6 + SEAL_OVERHEAD);
        assert_eq!(
            sealer.open(b"place-1", &sealed).as_deref(),
            Some(&b"secret"[..])
        );
        assert_eq!(
            sealer.open(b"place-2", &sealed),
            None,
            "moved value must not open"
        );
        let mut flipped = sealed.clone();
        flipped[30] ^= 1;
        assert_eq!(sealer.open(b"place-1", &flipped), None);
        assert_eq!(sealer.open(b"place-1", &sealed[..10]), None);
    }

    #[test]
    fn nonces_differ_between_seals_and_between_openings() {
        let key = EncryptionKey::from_bytes([1; 32]);
        let a = Sealer::new(&key).unwrap();
        let b = Sealer::new(&key).unwrap();
        let (mut x, mut y, mut z) = (Vec::new(), Vec::new(), Vec::new());
        a.seal_into(b"", b"same", &mut x);
        a.seal_into(b"", b"same", &mut y);
        b.seal_into(b"", b"same", &mut z);
        assert_ne!(x[..NONCE_LEN], y[..NONCE_LEN]);
        assert_ne!(x[..16], z[..16], "each opening draws its own nonce prefix");
        // Any sealer with the same key opens any other's output.
        assert_eq!(b.open(b"", &x).as_deref(), Some(&b"same"[..]));
    }

    #[test]
    fn wrong_key_does_not_open() {
        let a = Sealer::new(&EncryptionKey::from_bytes([1; 32])).unwrap();
        let b = Sealer::new(&EncryptionKey::from_bytes([2; 32])).unwrap();
        let mut sealed = Vec::new();
        a.seal_into(b"", b"data", &mut sealed);
        assert_eq!(b.open(b"", &sealed), None);
    }
}

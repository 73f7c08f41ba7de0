//! The one sealing format of the vault and the [`Sealer`](crate::Sealer):
//! XChaCha20-Poly1305, a fresh random 192-bit nonce in front of the ciphertext and tag
//! (random nonces of that size do not collide).

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Bytes of nonce in front of every sealed value.
pub(crate) const NONCE_LEN: usize = 24;

/// Why a sealed value did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Shorter than a nonce.
    Truncated,
    /// The tag does not match: another key, other associated data, or altered bytes.
    NotAuthentic,
}

/// `nonce ‖ ciphertext ‖ tag` of `plain`, bound to `aad`.
///
/// # Errors
/// The system's random source failed (its message).
pub(crate) fn seal(
    cipher: &XChaCha20Poly1305,
    plain: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, String> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| format!("random source: {e}"))?;
    let ciphertext = cipher
        .encrypt(&XNonce::from(nonce), Payload { msg: plain, aad })
        .map_err(|_| "encryption failed".to_owned())?;
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&ciphertext);
    Ok(sealed)
}

/// The plaintext of a value made by [`seal`] with the same key and `aad`.
pub(crate) fn open(
    cipher: &XChaCha20Poly1305,
    sealed: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, OpenError> {
    if sealed.len() < NONCE_LEN {
        return Err(OpenError::Truncated);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce = XNonce::try_from(nonce).map_err(|_| OpenError::Truncated)?;
    cipher
        .decrypt(
            &nonce,
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| OpenError::NotAuthentic)
}

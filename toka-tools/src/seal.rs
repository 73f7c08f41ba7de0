//! Keeping capability tokens out of the journal in clear.
//!
//! Some agents must hold a token across restarts (a reactor calls its tool with its own
//! token), so the token travels in their spawn arguments or messages, which the journal
//! records and the node's events API shows. A [`Sealer`] replaces such a token by a
//! *sealed* string before it is journaled, `toka-sealed:v1:` followed by the base64url of
//! a random nonce and the XChaCha20-Poly1305 ciphertext, under a key of its own (a
//! `0600` file, apart from the journal's and the vault's keys). Whoever reads the journal
//! (`GET /events`, `events export`, a backup) sees ciphertext; the agent that holds the
//! sealed string gets the token back with [`Sealer::unseal`] through the runtime's
//! extension.
//!
//! [`token_spans`] finds capability tokens inside arbitrary bytes (a record's payload),
//! so that whatever displays records can redact any token that reached the journal some
//! other way: sealing is the rule, redaction the backstop.
//!
//! # Invariants
//! - A fresh random 192-bit nonce per seal; the seal's associated data names the format,
//!   so a sealed string cannot be replayed as another kind of sealed value.
//! - [`Sealer`]'s `Debug` shows nothing of the key; unsealed values are [`Secret`]s.

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::KeyInit;
use chacha20poly1305::{Key, XChaCha20Poly1305};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::capability::MAX_TOKEN_BYTES;
use crate::{Capability, Error, Secret, aead, keyfile};

/// What every sealed string starts with.
pub const SEALED_PREFIX: &str = "toka-sealed:v1:";

const AAD: &[u8] = b"toka-sealed:v1";

/// Seals and unseals secrets (capability tokens) that must be journaled.
///
/// ```
/// # fn main() -> Result<(), toka_tools::Error> {
/// use toka_tools::{Authority, Caveat, Sealer};
/// let dir = tempfile::tempdir().unwrap();
/// let sealer = Sealer::open(&dir.path().join("seal.key"))?;
/// let token = Authority::from_secret(b"a 32-byte or longer root secret!")
///     .mint([Caveat::Tool("fs.read".parse().unwrap())])
///     .unwrap()
///     .to_string();
/// let mut args = serde_json::json!({ "tool": "fs.read", "token": token });
/// assert_eq!(sealer.seal_tokens(&mut args), 1);
/// let sealed = args["token"].as_str().unwrap();
/// assert!(Sealer::is_sealed(sealed) && !sealed.contains(&token));
/// assert_eq!(sealer.unseal(sealed)?.expose_str(), Some(token.as_str()));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Sealer {
    cipher: Arc<XChaCha20Poly1305>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(<key redacted>)")
    }
}

impl Sealer {
    /// The sealer whose key is in `key_file` (32 bytes, created with `0600` permissions
    /// on first use; a file others can read is refused).
    ///
    /// # Errors
    /// [`Error::KeyFile`].
    pub fn open(key_file: &Path) -> Result<Self, Error> {
        let key = Zeroizing::new(keyfile::read_or_create(key_file)?);
        Ok(Self::from_key(&key))
    }

    /// A sealer over this key (tests, embedders that keep keys elsewhere).
    pub fn from_key(key: &[u8; 32]) -> Self {
        Sealer {
            cipher: Arc::new(XChaCha20Poly1305::new(&Key::from(*key))),
        }
    }

    /// The capability that an agent's token argument stands for: with a sealer, the
    /// argument must be sealed (the node seals every token in spawn arguments and messages
    /// before they are journaled, so a token in clear would have been journaled in clear)
    /// and is opened with it; without one, it is the token's text. `holder` names the agent
    /// kind in the error (e.g. `"reactor"`).
    ///
    /// # Errors
    /// What is wrong with the token, in one line that never contains it.
    pub fn open_capability(
        sealer: Option<&Sealer>,
        text: &str,
        holder: &str,
    ) -> Result<crate::Capability, String> {
        let parsed = match sealer {
            None => crate::Capability::parse(text),
            Some(sealer) => {
                if !Sealer::is_sealed(text) {
                    return Err(format!(
                        "the {holder}'s token must be sealed (the node seals tokens in spawn \
                         arguments and messages it receives)"
                    ));
                }
                let secret = sealer
                    .unseal(text)
                    .map_err(|e| format!("the {holder}'s token: {e}"))?;
                crate::Capability::parse(secret.expose_str().unwrap_or_default())
            }
        };
        parsed.map_err(|d| format!("the {holder}'s token: {}", d.reason))
    }

    /// Whether `text` is a sealed string (by its prefix; it may still fail to unseal).
    pub fn is_sealed(text: &str) -> bool {
        text.starts_with(SEALED_PREFIX)
    }

    /// Seals `secret`.
    ///
    /// # Errors
    /// [`Error::Seal`] if the system's random source fails.
    pub fn seal(&self, secret: &str) -> Result<String, Error> {
        let sealed = aead::seal(&self.cipher, secret.as_bytes(), AAD).map_err(Error::Seal)?;
        Ok(format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(sealed)))
    }

    /// Opens a string made by [`Sealer::seal`] with the same key.
    ///
    /// # Errors
    /// [`Error::Seal`] if `sealed` is not a sealed string, or does not authenticate under
    /// this key (another node's, or tampered with).
    pub fn unseal(&self, sealed: &str) -> Result<Secret, Error> {
        let body = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or_else(|| Error::Seal("not a sealed string".into()))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| Error::Seal("sealed string is not base64url".into()))?;
        let plain = aead::open(&self.cipher, &bytes, AAD).map_err(|e| match e {
            aead::OpenError::Truncated => Error::Seal("sealed string is truncated".into()),
            aead::OpenError::NotAuthentic => Error::Seal(
                "sealed string does not authenticate (another node's seal key, or altered)".into(),
            ),
        })?;
        Ok(Secret::new(plain))
    }

    /// Seals, in place, every string in `value` (at any depth, object keys aside) that is
    /// a capability token; returns how many it sealed. Run it on anything that is about to
    /// be journaled and may carry a token.
    ///
    /// A token that cannot be sealed (the random source failed) is replaced by an empty
    /// string rather than left in clear.
    pub fn seal_tokens(&self, value: &mut Value) -> usize {
        match value {
            Value::String(text) => {
                if !looks_like_token(text) || Capability::parse(text).is_err() {
                    return 0;
                }
                *text = self.seal(text.trim()).unwrap_or_else(|error| {
                    tracing::error!(%error, "could not seal a capability token; dropping it");
                    String::new()
                });
                1
            }
            Value::Array(items) => items.iter_mut().map(|v| self.seal_tokens(v)).sum(),
            Value::Object(map) => map.values_mut().map(|v| self.seal_tokens(v)).sum(),
            _ => 0,
        }
    }

    /// The token `text` stands for: unsealed if it is sealed, else `text` itself.
    ///
    /// # Errors
    /// As [`Sealer::unseal`].
    pub fn reveal(&self, text: &str) -> Result<Secret, Error> {
        if Sealer::is_sealed(text) {
            self.unseal(text)
        } else {
            Ok(Secret::new(text.as_bytes().to_vec()))
        }
    }
}

/// A cheap filter before the full parse: base64url text (padding and surrounding
/// whitespace allowed) of a plausible token length, starting as a V2 macaroon does.
fn looks_like_token(text: &str) -> bool {
    let text = text.trim().as_bytes();
    (32..=MAX_TOKEN_BYTES).contains(&text.len())
        && text[0] == b'A'
        && (b'g'..=b'v').contains(&text[1])
        && text
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='))
}

/// Where capability tokens (canonical base64url of a V2 macaroon) appear in `haystack`, in
/// order and without overlap. Anything around them may be any bytes: a JSON document, a
/// postcard record with length prefixes, a log line.
pub fn token_spans(haystack: &[u8]) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut start = 0;
    // A V2 token starts with byte 0x02: base64url `A` then one of `g`..=`v`.
    while start + 1 < haystack.len() {
        if haystack[start] == b'A' && (b'g'..=b'v').contains(&haystack[start + 1]) {
            if let Some(len) = token_len_at(&haystack[start..]) {
                spans.push(start..start + len);
                start += len;
                continue;
            }
        }
        start += 1;
    }
    spans
}

/// `haystack` with every capability token replaced by `[redacted capability token]`;
/// `None` if it holds none.
pub fn redact_tokens(haystack: &[u8]) -> Option<Vec<u8>> {
    let spans = token_spans(haystack);
    if spans.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut from = 0;
    for span in spans {
        out.extend_from_slice(&haystack[from..span.start]);
        out.extend_from_slice(b"[redacted capability token]");
        from = span.end;
    }
    out.extend_from_slice(&haystack[from..]);
    Some(out)
}

/// The length in characters of the token that starts `text`, if one does.
fn token_len_at(text: &[u8]) -> Option<usize> {
    let run = text
        .iter()
        .take(MAX_TOKEN_BYTES)
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-' || **b == b'_')
        .count();
    // Decode whole quanta only: a partial last one belongs to whatever follows.
    let whole = run - run % 4;
    let mut binary = URL_SAFE_NO_PAD.decode(&text[..whole]).ok()?;
    if run % 4 >= 2 {
        if let Ok(tail) = URL_SAFE_NO_PAD.decode(&text[whole..run]) {
            binary.extend_from_slice(&tail);
        }
    }
    let bytes = v2_len(&binary)?;
    let chars = (bytes * 4).div_ceil(3);
    let candidate = std::str::from_utf8(text.get(..chars)?).ok()?;
    Capability::parse(candidate).is_ok().then_some(chars)
}

/// The length of the V2 binary macaroon at the start of `bytes`, if it is one: a version
/// byte, then sections of (tag, varint length, data) fields each closed by a zero byte —
/// the header, the caveats, an empty section — then the signature field.
fn v2_len(bytes: &[u8]) -> Option<usize> {
    const SIGNATURE: u8 = 6;
    if bytes.first() != Some(&2) {
        return None;
    }
    let mut at = 1;
    let mut sections = 0usize;
    loop {
        // One section: fields until a zero byte.
        let mut fields = 0usize;
        loop {
            let tag = *bytes.get(at)?;
            at += 1;
            if tag == 0 {
                break;
            }
            let (len, used) = varint(bytes.get(at..)?)?;
            at = at.checked_add(used)?.checked_add(len)?;
            if at > bytes.len() {
                return None;
            }
            fields += 1;
        }
        sections += 1;
        if fields == 0 {
            // The empty section that ends the caveats (the header is never empty).
            if sections == 1 {
                return None;
            }
            break;
        }
    }
    if *bytes.get(at)? != SIGNATURE {
        return None;
    }
    let (len, used) = varint(bytes.get(at + 1..)?)?;
    let end = at.checked_add(1 + used)?.checked_add(len)?;
    (end <= bytes.len()).then_some(end)
}

/// A LEB128 varint at the start of `bytes` (at most 4 bytes: tokens are small), and how
/// many bytes it took.
fn varint(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, byte) in bytes.iter().take(4).enumerate() {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Authority, Caveat};

    fn token() -> String {
        Authority::from_secret(b"seal tests root secret, 32+ bytes long")
            .mint([Caveat::Tool("fs.write".parse().unwrap())])
            .unwrap()
            .to_string()
    }

    #[test]
    fn seals_round_trip_and_fail_under_another_key_or_when_altered() {
        let sealer = Sealer::from_key(&[7; 32]);
        let token = token();
        let sealed = sealer.seal(&token).unwrap();
        assert!(Sealer::is_sealed(&sealed) && !sealed.contains(&token));
        assert_ne!(sealed, sealer.seal(&token).unwrap(), "nonces repeat");
        assert_eq!(sealer.unseal(&sealed).unwrap().expose_str(), Some(&*token));
        assert!(Sealer::from_key(&[8; 32]).unseal(&sealed).is_err());
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 3;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert!(
            sealer
                .unseal(std::str::from_utf8(&altered).unwrap())
                .is_err()
        );
        for bad in ["", "toka-sealed:v1:", "toka-sealed:v1:!!", "plain"] {
            assert!(sealer.unseal(bad).is_err(), "{bad:?}");
        }
        assert_eq!(sealer.reveal("plain").unwrap().expose_str(), Some("plain"));
        assert_eq!(format!("{sealer:?}"), "Sealer(<key redacted>)");
    }

    #[test]
    fn seal_tokens_seals_tokens_at_any_depth_and_nothing_else() {
        let sealer = Sealer::from_key(&[1; 32]);
        let token = token();
        let mut value = serde_json::json!({
            "token": token,
            "nested": [{ "t": format!(" {token}\n") }, "AgEEdGV4dA", 5, null],
            "text": "hello",
        });
        assert_eq!(sealer.seal_tokens(&mut value), 2);
        assert!(!value.to_string().contains(&token));
        assert_eq!(value["text"], "hello");
        assert_eq!(value["nested"][1], "AgEEdGV4dA");
        let sealed = value["token"].as_str().unwrap().to_owned();
        assert_eq!(sealer.seal_tokens(&mut value), 0, "sealed twice");
        assert_eq!(value["token"], sealed.as_str());
    }

    #[test]
    fn token_spans_find_tokens_in_json_and_length_prefixed_bytes() {
        let token = token();
        let json = format!(r#"{{"token":"{token}","x":1}}"#);
        assert_eq!(token_spans(json.as_bytes()), vec![10..10 + token.len()]);
        // postcard-like: a length byte that is itself a base64url character, and more
        // base64url characters right after the token.
        let mut bytes = vec![b'z'];
        bytes.extend_from_slice(token.as_bytes());
        bytes.extend_from_slice(b"Agtail0123");
        let spans = token_spans(&bytes);
        assert_eq!(spans, vec![1..1 + token.len()]);
        let redacted = redact_tokens(&bytes).unwrap();
        assert!(!String::from_utf8_lossy(&redacted).contains(&token));
        assert!(String::from_utf8_lossy(&redacted).contains("[redacted capability token]"));
        assert!(redact_tokens(b"no tokens here, Agv Ag AAAA").is_none());
        assert!(token_spans(&[]).is_empty());
        // Every prefix of a token is no token.
        for cut in 1..token.len() {
            assert!(token_spans(&token.as_bytes()[..cut]).is_empty(), "{cut}");
        }
    }
}

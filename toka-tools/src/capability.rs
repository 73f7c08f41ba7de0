//! Capability tokens (macaroons) and the authority that mints and checks them.
//!
//! A [`Capability`] is a macaroon: an identifier, a chain of first-party caveats and an
//! HMAC signature over both, keyed by the node's root key. Anyone holding a token can
//! [`attenuate`](Capability::attenuate) it (add a caveat) without the key; nobody can
//! remove one without breaking the signature. The [`Authority`] holds the root key,
//! checks the signature chain with the `macaroon` crate, then evaluates every caveat
//! against the concrete request with Toka's checker ([`crate::caveat`]).
//!
//! Tokens travel as standard macaroon **V2 binary, base64url-encoded** (no padding), so
//! other macaroon libraries (pymacaroons, libmacaroons, go-macaroon) read and verify them
//! with the same root key: the key is derived from the raw root secret with
//! `MacaroonKey::generate` (HMAC-SHA256 with the `macaroons-key-generator` key), as they do.
//!
//! # Invariants
//! - **Fail closed**: an unreadable token, a third-party caveat (discharges are not
//!   supported), an unknown or malformed caveat, a bad signature or a revoked identifier
//!   all deny.
//! - Oversize tokens are rejected before any decoding or HMAC work
//!   ([`MAX_TOKEN_BYTES`]).
//! - Revocations and denials are journaled (streams [`REVOCATION_STREAM`] and
//!   [`AUDIT_STREAM`]); revocations are read back when the authority opens, so they
//!   survive crashes.
//! - Neither the root key nor a token's signature is ever logged: `Debug` shows the
//!   identifier only.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use jiff::Timestamp;
use macaroon::{Macaroon, MacaroonKey, Verifier};
use serde::{Deserialize, Serialize};
use toka_store::{ExpectedVersion, Journal, NewEvent};

use crate::caveat::{self, Caveat, Grant, Request};
use crate::{Denial, Error, keyfile};

/// Longest accepted token text, in bytes; longer ones are refused before decoding.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Journal stream of revoked token identifiers.
pub const REVOCATION_STREAM: &str = "toka/revocations";

/// Journal stream of capability denials (the audit trail).
pub const AUDIT_STREAM: &str = "toka/audit";

/// Record kind of a revocation.
pub const REVOKED: &str = "toka.revoked";

/// The stream where [`Authority::issue`] journals every token it issues
/// ([`IssueRecord`]).
pub const ISSUE_STREAM: &str = "toka/tokens";

/// The kind of an [`IssueRecord`].
pub const ISSUED: &str = "toka.issued";

/// Record kind of a denial.
pub const DENIED: &str = "toka.denied";

/// base64url that accepts tokens with or without padding (other libraries differ).
const LENIENT_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A capability token: what its holder may do, signed by the node's root key.
///
/// ```
/// use toka_tools::{Authority, Caveat};
/// let authority = Authority::from_secret(b"a 32-byte or longer root secret!");
/// let token = authority.mint([Caveat::Tool("fs.*".parse().unwrap())]).unwrap();
/// // Anyone may narrow it further, without the root key:
/// let narrower = token.attenuate(&Caveat::PathPrefix("/notes".into()));
/// let text = narrower.to_string(); // base64url V2, for headers, files, other libraries
/// let back: toka_tools::Capability = text.parse().unwrap();
/// assert_eq!(back.identifier(), token.identifier());
/// assert_eq!(back.caveats().unwrap().len(), 2);
/// ```
#[derive(Clone)]
pub struct Capability {
    identifier: String,
    location: Option<String>,
    caveats: Vec<RawCaveat>,
    signature: [u8; 32],
    /// The token as the `macaroon` crate sees it, built once, for verification.
    parsed: OnceLock<Option<Macaroon>>,
}

/// A caveat as it travels in the token.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RawCaveat {
    FirstParty(Vec<u8>),
    ThirdParty {
        location: String,
        id: Vec<u8>,
        verifier_id: Vec<u8>,
    },
}

/// HMAC-SHA256, the macaroon signature step.
fn hmac(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    // HMAC accepts keys of any length; 32 bytes never fails.
    let mut mac = match <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0u8; 32],
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Appends a V2 field: tag, varint length, bytes.
fn put_field(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    let mut len = value.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(value);
}

impl Capability {
    /// Builds the token from its parts. Toka builds tokens itself rather than through the
    /// `macaroon` crate's `create`/`add_first_party_caveat`, which log the signature at
    /// debug level: anyone reading such logs could forge an unrestricted token.
    fn from_parts(
        identifier: String,
        location: Option<String>,
        caveats: Vec<RawCaveat>,
        signature: [u8; 32],
    ) -> Self {
        Capability {
            identifier,
            location,
            caveats,
            signature,
            parsed: OnceLock::new(),
        }
    }

    /// The standard V2 binary form (as libmacaroons and pymacaroons write it).
    fn to_binary(&self) -> Vec<u8> {
        const EOS: u8 = 0;
        const LOCATION: u8 = 1;
        const IDENTIFIER: u8 = 2;
        const VID: u8 = 4;
        const SIGNATURE: u8 = 6;
        let mut out = vec![2u8];
        if let Some(location) = &self.location {
            put_field(&mut out, LOCATION, location.as_bytes());
        }
        put_field(&mut out, IDENTIFIER, self.identifier.as_bytes());
        out.push(EOS);
        for caveat in &self.caveats {
            match caveat {
                RawCaveat::FirstParty(predicate) => put_field(&mut out, IDENTIFIER, predicate),
                RawCaveat::ThirdParty {
                    location,
                    id,
                    verifier_id,
                } => {
                    put_field(&mut out, LOCATION, location.as_bytes());
                    put_field(&mut out, IDENTIFIER, id);
                    put_field(&mut out, VID, verifier_id);
                }
            }
            out.push(EOS);
        }
        out.push(EOS);
        put_field(&mut out, SIGNATURE, &self.signature);
        out
    }

    /// The token as the `macaroon` crate sees it (for verification).
    fn macaroon(&self) -> Option<&Macaroon> {
        self.parsed
            .get_or_init(|| Macaroon::deserialize_binary(&self.to_binary()).ok())
            .as_ref()
    }

    /// Parses a token: base64url (padded or not) of a V2 binary macaroon, in its
    /// canonical encoding.
    ///
    /// Tokens must be canonical: the decoded bytes must be exactly the V2 encoding of the
    /// macaroon they hold. Bytes appended after the signature (which the binary decoder
    /// would ignore), non-canonical base64 trailing bits, and V1 or other encodings of
    /// the same macaroon are refused, so one token has one spelling.
    ///
    /// # Errors
    /// A [`Denial`] if the text is oversize, not base64url, not a macaroon, or not
    /// canonical.
    pub fn parse(text: &str) -> Result<Self, Denial> {
        let text = text.trim();
        if text.len() > MAX_TOKEN_BYTES {
            return Err(Denial::new(format!(
                "token of {} bytes exceeds {MAX_TOKEN_BYTES}",
                text.len()
            )));
        }
        let binary = LENIENT_URL_SAFE
            .decode(text)
            .map_err(|_| Denial::new("token is not base64url text"))?;
        let macaroon = Macaroon::deserialize_binary(&binary)
            .map_err(|e| Denial::new(format!("token is not a macaroon: {e}")))?;
        let identifier = String::from_utf8(macaroon.identifier().0)
            .map_err(|_| Denial::new("token identifier is not UTF-8"))?;
        let caveats = macaroon
            .caveats()
            .into_iter()
            .map(|c| match c {
                macaroon::Caveat::FirstParty(fp) => RawCaveat::FirstParty(fp.predicate().0),
                macaroon::Caveat::ThirdParty(tp) => RawCaveat::ThirdParty {
                    location: tp.location(),
                    id: tp.id().0,
                    verifier_id: tp.verifier_id().0,
                },
            })
            .collect();
        let signature: [u8; 32] = *AsRef::<[u8; 32]>::as_ref(&macaroon.signature());
        let token = Capability {
            identifier,
            location: macaroon.location(),
            caveats,
            signature,
            parsed: OnceLock::from(Some(macaroon)),
        };
        if token.to_binary() != binary {
            return Err(Denial::new(
                "token is not canonical (trailing bytes, or not the V2 binary encoding)",
            ));
        }
        Ok(token)
    }

    /// The token's identifier (what [`Authority::revoke`] names).
    pub fn identifier(&self) -> &str {
        &self.identifier
    }

    /// The token's caveats, parsed.
    ///
    /// # Errors
    /// A [`Denial`] for a third-party caveat or a caveat Toka does not understand.
    pub fn caveats(&self) -> Result<Vec<Caveat>, Denial> {
        self.caveats
            .iter()
            .map(|c| match c {
                RawCaveat::FirstParty(predicate) => Caveat::parse(predicate),
                RawCaveat::ThirdParty { .. } => Err(Denial::new(
                    "token has third-party caveats, which Toka does not accept",
                )),
            })
            .collect()
    }

    /// A copy of this token with one more caveat: it allows at most what this one does.
    #[must_use]
    pub fn attenuate(&self, caveat: &Caveat) -> Capability {
        self.attenuate_raw(caveat.to_string().as_bytes())
    }

    /// Adds a raw first-party caveat, bypassing Toka's caveat grammar (for tests and for
    /// interoperating with other issuers; the checker refuses what it cannot parse).
    #[must_use]
    pub fn attenuate_raw(&self, predicate: &[u8]) -> Capability {
        let mut caveats = self.caveats.clone();
        caveats.push(RawCaveat::FirstParty(predicate.to_vec()));
        Capability::from_parts(
            self.identifier.clone(),
            self.location.clone(),
            caveats,
            hmac(&self.signature, predicate),
        )
    }
}

impl fmt::Display for Capability {
    /// The base64url (no padding) V2 binary form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.to_binary()))
    }
}

impl std::str::FromStr for Capability {
    type Err = Denial;

    fn from_str(s: &str) -> Result<Self, Denial> {
        Capability::parse(s)
    }
}

impl fmt::Debug for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Capability")
            .field("identifier", &self.identifier)
            .finish_non_exhaustive()
    }
}

impl Serialize for Capability {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Capability {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Capability::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `text` with every capability token in it replaced (see
/// [`redact_tokens`](crate::seal::redact_tokens)).
fn without_tokens(text: &str) -> String {
    match crate::seal::redact_tokens(text.as_bytes()) {
        Some(redacted) => String::from_utf8_lossy(&redacted).into_owned(),
        None => text.to_owned(),
    }
}

/// Every revocation journaled in `journal` ([`REVOCATION_STREAM`]), oldest first: what an
/// [`Authority`] opened on it refuses, readable without the root key.
///
/// # Errors
/// [`Error::Journal`], [`Error::Decode`].
pub fn revocations_in(journal: &dyn Journal) -> Result<Vec<RevocationRecord>, Error> {
    records_in(journal, REVOCATION_STREAM)
}

/// Every token issued into `journal` ([`ISSUE_STREAM`], see [`Authority::issue`]), oldest
/// first, readable without the root key.
///
/// # Errors
/// [`Error::Journal`], [`Error::Decode`].
pub fn issued_in(journal: &dyn Journal) -> Result<Vec<IssueRecord>, Error> {
    records_in(journal, ISSUE_STREAM)
}

/// Every record of `stream`, decoded, oldest first.
fn records_in<T: serde::de::DeserializeOwned>(
    journal: &dyn Journal,
    stream: &str,
) -> Result<Vec<T>, Error> {
    let mut out = Vec::new();
    for event in journal.iter_stream(stream, 1)? {
        let event = event?;
        out.push(crate::decode(stream, event.seq, &event.payload)?);
    }
    Ok(out)
}

/// A revoked token, as journaled in [`REVOCATION_STREAM`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RevocationRecord {
    /// The token identifier.
    pub identifier: String,
    /// Why it was revoked.
    pub reason: String,
    /// When (microseconds since the Unix epoch).
    pub at_micros: i64,
}

/// A token issued by [`Authority::issue`], as journaled in [`ISSUE_STREAM`]: who issued
/// which identifier with which caveats. Holds no signature: the record cannot be turned
/// back into the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueRecord {
    /// The new token's identifier.
    pub identifier: String,
    /// Its caveats, as text (`tool = fs.read`); none for an unrestricted token.
    pub caveats: Vec<String>,
    /// Who issued it: `init`, `cli` (offline, with the data directory), or
    /// `api:<identifier>` (the calling token's identifier).
    pub issued_by: String,
    /// When (microseconds since the Unix epoch).
    pub at_micros: i64,
}

/// A denied request, as journaled in [`AUDIT_STREAM`]. Holds no token and no secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenialRecord {
    /// When (microseconds since the Unix epoch).
    pub at_micros: i64,
    /// The tool asked for.
    pub tool: String,
    /// The calling agent, if any.
    pub agent: Option<String>,
    /// The token's identifier, if the token was readable.
    pub token: Option<String>,
    /// Why it was denied.
    pub reason: String,
}

/// The node's root of trust: mints tokens, checks them, revokes them, and journals
/// every denial.
///
/// Cheap to clone (shared state).
#[derive(Clone)]
pub struct Authority {
    inner: Arc<AuthorityInner>,
}

struct AuthorityInner {
    key: MacaroonKey,
    revoked: RwLock<HashSet<String>>,
    journal: Option<Arc<dyn Journal>>,
    /// Tokens whose signature chain verified, by the BLAKE3 hash of their text.
    verified: RwLock<HashMap<[u8; 32], Verified>>,
}

/// How many verified tokens [`Authority::verify_text`] remembers; past it, it starts over.
const VERIFIED_CACHE: usize = 4_096;

/// A token whose signature chain verified and whose caveats Toka understands, ready to
/// admit requests ([`Authority::admit`]). From [`Authority::verify_text`]. Cheap to clone
/// (two reference counts): the node hands one to every request it authenticates.
#[derive(Clone, Debug)]
pub struct Verified {
    token: Arc<Capability>,
    caveats: Arc<[Caveat]>,
}

impl Verified {
    /// The token.
    pub fn token(&self) -> &Capability {
        &self.token
    }

    /// Its caveats.
    pub fn caveats(&self) -> &[Caveat] {
        &self.caveats
    }
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("key", &"<redacted>")
            .field("revoked", &self.read_revoked().len())
            .field("journaled", &self.inner.journal.is_some())
            .finish()
    }
}

impl Authority {
    /// Opens the authority of a node: the root key in `key_file` (created with `0600`
    /// permissions on first use; refused if others can read it), and the revocations
    /// recorded in `journal`, which also receives revocations and denials from now on.
    ///
    /// # Errors
    /// [`Error::KeyFile`], [`Error::Journal`], [`Error::Decode`].
    pub fn open(key_file: &Path, journal: Arc<dyn Journal>) -> Result<Self, Error> {
        let secret = zeroize::Zeroizing::new(keyfile::read_or_create(key_file)?);
        let revoked = revocations_in(journal.as_ref())?
            .into_iter()
            .map(|record| record.identifier)
            .collect();
        Ok(Authority {
            inner: Arc::new(AuthorityInner {
                key: MacaroonKey::generate(secret.as_slice()),
                revoked: RwLock::new(revoked),
                journal: Some(journal),
                verified: RwLock::default(),
            }),
        })
    }

    /// An authority over a root secret held elsewhere, journaling nothing (revocations
    /// live in memory only). For tests and for embedding where the app keeps the key.
    pub fn from_secret(secret: &[u8]) -> Self {
        Authority {
            inner: Arc::new(AuthorityInner {
                key: MacaroonKey::generate(secret),
                revoked: RwLock::new(HashSet::new()),
                journal: None,
                verified: RwLock::default(),
            }),
        }
    }

    /// Mints a token with a fresh identifier and these caveats.
    ///
    /// # Errors
    /// A [`Denial`] if the macaroon cannot be built (it always can with a UUID id).
    pub fn mint(&self, caveats: impl IntoIterator<Item = Caveat>) -> Result<Capability, Denial> {
        let identifier = uuid::Uuid::now_v7().to_string();
        let mut signature = hmac(self.inner.key.as_ref(), identifier.as_bytes());
        let mut raw = Vec::new();
        for caveat in caveats {
            let predicate = caveat.to_string().into_bytes();
            signature = hmac(&signature, &predicate);
            raw.push(RawCaveat::FirstParty(predicate));
        }
        Ok(Capability::from_parts(identifier, None, raw, signature))
    }

    /// Mints a token like [`Authority::mint`] and journals who issued it, with which
    /// caveats, in [`ISSUE_STREAM`] (no signature: the record is not the token; any token
    /// text in a caveat is redacted), before returning it. An authority without a journal ([`Authority::from_secret`]) only
    /// mints.
    ///
    /// # Errors
    /// [`Error::Journal`] (then no token is returned), [`Error::Denied`] as
    /// [`Authority::mint`].
    pub async fn issue(&self, caveats: Vec<Caveat>, issued_by: &str) -> Result<Capability, Error> {
        // A caveat can hold any text (`agent = <a token>`): the record holds none.
        let record_caveats = caveats
            .iter()
            .map(|caveat| without_tokens(&caveat.to_string()))
            .collect();
        let token = self.mint(caveats)?;
        if let Some(journal) = &self.inner.journal {
            let record = IssueRecord {
                identifier: token.identifier().to_owned(),
                caveats: record_caveats,
                issued_by: issued_by.to_owned(),
                at_micros: Timestamp::now().as_microsecond(),
            };
            let payload = crate::encode(ISSUE_STREAM, &record)?;
            journal
                .append(
                    ISSUE_STREAM,
                    ExpectedVersion::Any,
                    &[NewEvent::new(ISSUED, payload)],
                )
                .await?
                .map_err(toka_store::Error::from)?;
        }
        tracing::info!(token = token.identifier(), issued_by, "token issued");
        Ok(token)
    }

    /// The tokens issued so far ([`Authority::issue`]), oldest first.
    ///
    /// # Errors
    /// [`Error::Journal`], [`Error::Decode`].
    pub fn issued(&self) -> Result<Vec<IssueRecord>, Error> {
        match &self.inner.journal {
            Some(journal) => issued_in(journal.as_ref()),
            None => Ok(Vec::new()),
        }
    }

    /// Checks `token` for `request`: not revoked, signature chain intact, every caveat
    /// satisfied. Returns what the tool must still enforce while it runs.
    ///
    /// # Errors
    /// A [`Denial`] naming the failed check.
    pub fn check(&self, token: &Capability, request: &Request<'_>) -> Result<Grant, Denial> {
        let caveats = self.verify(token)?;
        caveat::admit_all(&caveats, request)
    }

    /// Checks what does not depend on a request: the token is not revoked, its signature
    /// chain is intact and every caveat is one Toka understands. Returns the caveats, to
    /// evaluate against requests.
    ///
    /// # Errors
    /// A [`Denial`] naming the failed check.
    pub fn verify(&self, token: &Capability) -> Result<Vec<Caveat>, Denial> {
        if self.is_revoked(token.identifier()) {
            return Err(Denial::new(format!(
                "token {} is revoked",
                token.identifier()
            )));
        }
        self.verify_signature(token)
    }

    /// Parses and verifies a token given as text, as [`Authority::verify`] does, and
    /// remembers it (by the BLAKE3 hash of the text, up to 4,096 tokens): a client that
    /// sends the same token with every request pays for parsing and the HMAC chain once.
    /// Only tokens that verified are remembered, and revocation is checked on every call.
    ///
    /// # Errors
    /// A [`Denial`] naming the failed check.
    pub fn verify_text(&self, text: &str) -> Result<Verified, Denial> {
        let key = *blake3::hash(text.as_bytes()).as_bytes();
        let known = self
            .inner
            .verified
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let verified = match known {
            Some(verified) => verified,
            None => {
                let token = Capability::parse(text)?;
                let caveats = self.verify_signature(&token)?;
                let verified = Verified {
                    token: Arc::new(token),
                    caveats: caveats.into(),
                };
                let mut cache = self
                    .inner
                    .verified
                    .write()
                    .unwrap_or_else(|e| e.into_inner());
                if cache.len() >= VERIFIED_CACHE {
                    cache.clear();
                }
                cache.insert(key, verified.clone());
                verified
            }
        };
        if self.is_revoked(verified.token.identifier()) {
            return Err(Denial::new(format!(
                "token {} is revoked",
                verified.token.identifier()
            )));
        }
        Ok(verified)
    }

    /// Checks a verified token for `request`: not revoked (checked again), every caveat
    /// satisfied. As [`Authority::check`], without verifying the signature chain again.
    ///
    /// # Errors
    /// A [`Denial`] naming the failed check.
    pub fn admit(&self, verified: &Verified, request: &Request<'_>) -> Result<Grant, Denial> {
        if self.is_revoked(verified.token.identifier()) {
            return Err(Denial::new(format!(
                "token {} is revoked",
                verified.token.identifier()
            )));
        }
        caveat::admit_all(&verified.caveats, request)
    }

    /// Whether `verified` could be admitted for *some* call of `tool` by `agent` (`None`:
    /// a caller that is not an agent), whatever the call's input: not revoked, and every
    /// caveat but those about the input (`path-prefix`, `max-bytes`) satisfied now. For
    /// showing a holder what it may call (the MCP server's tool list) without running
    /// anything: nothing is audited, and each real call is still checked in full (a
    /// `tool = fs.read, path-prefix = /notes` token sees `fs.read`, and reading outside
    /// `/notes` is still denied).
    ///
    /// # Errors
    /// A [`Denial`] naming the failed check.
    pub fn may_call(
        &self,
        verified: &Verified,
        tool: &str,
        agent: Option<&str>,
    ) -> Result<(), Denial> {
        if self.is_revoked(verified.token.identifier()) {
            return Err(Denial::new(format!(
                "token {} is revoked",
                verified.token.identifier()
            )));
        }
        let request = Request {
            tool,
            agent,
            path: None,
            bytes: None,
            now: Timestamp::now(),
            model: None,
        };
        caveat::admit_some_input(&verified.caveats, &request)
    }

    /// [`Authority::verify`] without the revocation check: the signature chain is intact
    /// and every caveat is one Toka understands. For inspecting a token (which may be
    /// revoked as well as forged); never use it to admit a request.
    ///
    /// # Errors
    /// A [`Denial`] naming the failed check.
    pub fn verify_signature(&self, token: &Capability) -> Result<Vec<Caveat>, Denial> {
        // The crate checks the chain; every first-party predicate is accepted here and
        // evaluated by `caveat::admit_all` against the request (its verifier takes only
        // `fn` pointers, which cannot see the request).
        let mut verifier = Verifier::default();
        verifier.satisfy_general(|_| true);
        let macaroon = token
            .macaroon()
            .ok_or_else(|| Denial::new("token is not a well-formed macaroon"))?;
        verifier
            .verify(macaroon, &self.inner.key, Vec::new())
            .map_err(|_| Denial::new("token signature does not verify"))?;
        token.caveats()
    }

    /// Whether the token identifier `identifier` is revoked.
    pub fn is_revoked(&self, identifier: &str) -> bool {
        self.read_revoked().contains(identifier)
    }

    fn read_revoked(&self) -> std::sync::RwLockReadGuard<'_, HashSet<String>> {
        // Inserts cannot panic half-way; a poisoned lock still holds a valid set.
        self.inner.revoked.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Revokes every token with this identifier (and every attenuation of it). Journaled
    /// before it takes effect, so it survives a crash once this returns.
    ///
    /// # Errors
    /// [`Error::Journal`].
    pub async fn revoke(&self, identifier: &str, reason: &str) -> Result<(), Error> {
        if let Some(journal) = &self.inner.journal {
            let record = RevocationRecord {
                identifier: identifier.to_owned(),
                reason: without_tokens(reason),
                at_micros: Timestamp::now().as_microsecond(),
            };
            let payload = crate::encode(REVOCATION_STREAM, &record)?;
            journal
                .append(
                    REVOCATION_STREAM,
                    ExpectedVersion::Any,
                    &[NewEvent::new(REVOKED, payload)],
                )
                .await?
                .map_err(toka_store::Error::from)?;
        }
        self.inner
            .revoked
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(identifier.to_owned());
        tracing::info!(token = identifier, reason, "capability revoked");
        Ok(())
    }

    /// Journals a denial in the audit stream and logs it (without the token).
    pub(crate) async fn audit(&self, record: DenialRecord) {
        tracing::warn!(
            tool = %record.tool,
            agent = ?record.agent,
            token = ?record.token,
            reason = %record.reason,
            "capability denied"
        );
        let Some(journal) = &self.inner.journal else {
            return;
        };
        let payload = match crate::encode(AUDIT_STREAM, &record) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::error!(%error, "could not encode a capability denial");
                return;
            }
        };
        let event = NewEvent::new(DENIED, payload);
        if let Err(error) = journal
            .append(AUDIT_STREAM, ExpectedVersion::Any, &[event])
            .await
        {
            tracing::error!(%error, "could not journal a capability denial");
        }
    }

    /// The denials journaled so far, oldest first.
    ///
    /// # Errors
    /// [`Error::Journal`], [`Error::Decode`].
    pub fn denials(&self) -> Result<Vec<DenialRecord>, Error> {
        match &self.inner.journal {
            Some(journal) => records_in(journal.as_ref(), AUDIT_STREAM),
            None => Ok(Vec::new()),
        }
    }
}

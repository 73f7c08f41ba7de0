//! The on-disk format: key layout, record and snapshot encoding, checksums, hash chain.
//!
//! # Key space (one ordered key-value space per journal)
//! | key | value |
//! |---|---|
//! | `L` ‖ position (u64 BE) | the records from that position on that one group write stored together: a pack of records, or in journals written before packs one record (see `pack`) |
//! | `S` ‖ len (u16 BE) ‖ stream ‖ last seq (u64 BE) | stream index: the runs of contiguous positions a checkpoint stored for the stream, each `first position ‖ first seq ‖ last seq` (u64 BE); the key holds the last run's last seq (see `index`) |
//! | `N` ‖ len (u16 BE) ‖ stream | the stream's latest snapshot |
//! | `M` ‖ name | journal metadata (the encryption key check, the index checkpoint) |
//!
//! Stream ids are length-prefixed so that a scan of stream `a` never sees stream `a1`.
//!
//! # Record value, format version 1
//! ```text
//! [version u8 = 1][kind u8][crc32 u32 LE of everything after it][chain hash 32]
//!   kind 0 (event):  [postcard RecordBody]
//!   kind 1 (pruned): [blake3 digest of the erased body, 32]
//! ```
//! `chain(p) = blake3(chain(p-1) ‖ blake3(body(p)))` with `chain(0) = [0; 32]`. The CRC catches
//! accidental damage on every read; the chain makes any edit, removal or reordering visible
//! to [`Journal::verify`](crate::Journal::verify). A pruned record keeps its digest, so the
//! chain still verifies after retention erased its body.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Error;
use crate::event::{EventId, Timestamp};

/// The format version this build reads and writes.
pub(crate) const FORMAT_VERSION: u8 = 1;

const KIND_EVENT: u8 = 0;
const KIND_PRUNED: u8 = 1;
const CRC_AT: usize = 2;
const CHAIN_AT: usize = 6;
const BODY_AT: usize = 38;

/// A blake3 hash.
pub(crate) type Hash = [u8; 32];

/// The chain value before the first record.
pub(crate) const GENESIS: Hash = [0; 32];

/// Key construction and parsing.
pub(crate) mod keys {
    const LOG: u8 = b'L';
    const STREAM: u8 = b'S';
    const SNAPSHOT: u8 = b'N';

    /// Key of the metadata entry holding the sealed key check.
    pub(crate) const KEY_CHECK: &[u8] = b"M/key-check";

    /// Key of the stream-index checkpoint: every batch ending at or before this position
    /// (u64 BE) has its index entry stored.
    pub(crate) const INDEX_THROUGH: &[u8] = b"M/index-through";

    pub(crate) fn log(position: u64) -> [u8; 9] {
        let mut key = [LOG; 9];
        key[1..].copy_from_slice(&position.to_be_bytes());
        key
    }

    /// Exclusive upper bound of all log keys.
    pub(crate) const LOG_END: [u8; 1] = [LOG + 1];

    pub(crate) fn log_position(key: &[u8]) -> Option<u64> {
        match key {
            [LOG, rest @ ..] => Some(u64::from_be_bytes(rest.try_into().ok()?)),
            _ => None,
        }
    }

    fn prefixed(tag: u8, stream: &str, extra: usize) -> Vec<u8> {
        let mut key = Vec::with_capacity(3 + stream.len() + extra);
        key.push(tag);
        // Stream ids are validated to at most 1024 bytes, so the length fits a u16.
        key.extend_from_slice(&(stream.len() as u16).to_be_bytes());
        key.extend_from_slice(stream.as_bytes());
        key
    }

    /// Prefix of all index entries of `stream`.
    pub(crate) fn stream_prefix(stream: &str) -> Vec<u8> {
        prefixed(STREAM, stream, 8)
    }

    /// Index key of the batch of `stream` whose last sequence number is `last_seq`.
    pub(crate) fn stream_index(stream: &str, last_seq: u64) -> Vec<u8> {
        let mut key = stream_prefix(stream);
        key.extend_from_slice(&last_seq.to_be_bytes());
        key
    }

    /// The last sequence number encoded in an index key.
    pub(crate) fn index_last_seq(key: &[u8]) -> Option<u64> {
        let tail = key.len().checked_sub(8)?;
        Some(u64::from_be_bytes(key[tail..].try_into().ok()?))
    }

    pub(crate) fn snapshot(stream: &str) -> Vec<u8> {
        prefixed(SNAPSHOT, stream, 0)
    }

    /// The smallest key greater than every key that starts with `prefix`.
    pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
        let mut end = prefix.to_vec();
        while let Some(last) = end.pop() {
            if last < u8::MAX {
                end.push(last + 1);
                return end;
            }
        }
        // All 0xFF: no upper bound exists below "infinity"; use a key above any valid one.
        vec![u8::MAX; prefix.len() + 1]
    }
}

/// The encoded part of an event record that the chain covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecordBody<'a> {
    pub(crate) position: u64,
    pub(crate) stream: &'a str,
    pub(crate) seq: u64,
    pub(crate) id: EventId,
    pub(crate) kind: &'a str,
    pub(crate) timestamp: Timestamp,
    pub(crate) causation_id: Option<EventId>,
    pub(crate) correlation_id: Option<Uuid>,
    /// Position of the last record of the batch this record was appended with; recovery
    /// uses it to recognise a batch that was cut short by a crash.
    pub(crate) batch_end: u64,
    /// Whether `payload` is sealed (`nonce ‖ ciphertext ‖ tag`).
    pub(crate) sealed: bool,
    #[serde(with = "serde_bytes")]
    pub(crate) payload: &'a [u8],
}

/// A record decoded from its stored bytes.
#[derive(Debug)]
pub(crate) enum StoredRecord<'a> {
    /// A live event.
    Event {
        chain: Hash,
        body: RecordBody<'a>,
        body_bytes: &'a [u8],
    },
    /// An event whose body retention erased.
    Pruned { chain: Hash, digest: Hash },
}

impl StoredRecord<'_> {
    pub(crate) fn chain(&self) -> &Hash {
        match self {
            StoredRecord::Event { chain, .. } | StoredRecord::Pruned { chain, .. } => chain,
        }
    }

    /// The blake3 digest of the body, the link input of the chain.
    pub(crate) fn digest(&self) -> Hash {
        match self {
            StoredRecord::Event { body_bytes, .. } => *blake3::hash(body_bytes).as_bytes(),
            StoredRecord::Pruned { digest, .. } => *digest,
        }
    }
}

/// `chain(p) = blake3(chain(p-1) ‖ digest(p))`.
pub(crate) fn link(previous: &Hash, digest: &Hash) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(previous);
    hasher.update(digest);
    *hasher.finalize().as_bytes()
}

/// Appends a record header to `out`; returns where the record starts.
fn header(kind: u8, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[FORMAT_VERSION, kind, 0, 0, 0, 0]);
    out.extend_from_slice(&GENESIS);
    start
}

fn seal_header(chain: &Hash, record: &mut [u8]) {
    record[CHAIN_AT..BODY_AT].copy_from_slice(chain);
    let crc = crc32fast::hash(&record[CHAIN_AT..]);
    record[CRC_AT..CHAIN_AT].copy_from_slice(&crc.to_le_bytes());
}

/// Appends an event record to `out`, chained to `previous`. Returns the new chain value;
/// the record is `out[previous len..]`.
pub(crate) fn encode_event(
    body: &RecordBody<'_>,
    previous: &Hash,
    out: &mut Vec<u8>,
) -> Result<Hash, postcard::Error> {
    let start = header(KIND_EVENT, out);
    let taken = std::mem::take(out);
    *out = postcard::to_extend(body, taken)?;
    let record = &mut out[start..];
    let chain = link(previous, blake3::hash(&record[BODY_AT..]).as_bytes());
    seal_header(&chain, record);
    Ok(chain)
}

/// Encodes the stub that replaces a pruned record.
pub(crate) fn encode_pruned(chain: &Hash, digest: &Hash) -> Vec<u8> {
    let mut out = Vec::with_capacity(BODY_AT + 32);
    header(KIND_PRUNED, &mut out);
    out.extend_from_slice(digest);
    seal_header(chain, &mut out);
    out
}

/// Decodes and checks the record stored under `position`.
///
/// # Errors
/// [`Error::Corrupt`] naming `position` when the bytes are truncated, fail the CRC, do not
/// decode, or name another position; [`Error::UnsupportedFormat`] for an unknown version.
pub(crate) fn decode_record(position: u64, value: &[u8]) -> Result<StoredRecord<'_>, Error> {
    if value.len() < BODY_AT {
        return Err(Error::corrupt(
            position,
            format!(
                "truncated: {} bytes, shorter than the record header",
                value.len()
            ),
        ));
    }
    if value[0] != FORMAT_VERSION {
        return Err(Error::UnsupportedFormat {
            what: format!("record at position {position}"),
            found: value[0],
            supported: FORMAT_VERSION,
        });
    }
    let stored_crc = u32::from_le_bytes([value[2], value[3], value[4], value[5]]);
    if crc32fast::hash(&value[CHAIN_AT..]) != stored_crc {
        return Err(Error::corrupt(position, "checksum mismatch"));
    }
    let mut chain = GENESIS;
    chain.copy_from_slice(&value[CHAIN_AT..BODY_AT]);
    let rest = &value[BODY_AT..];
    match value[1] {
        KIND_EVENT => {
            let (body, trailing) = postcard::take_from_bytes::<RecordBody<'_>>(rest)
                .map_err(|e| Error::corrupt(position, format!("body does not decode: {e}")))?;
            if !trailing.is_empty() {
                return Err(Error::corrupt(position, "trailing bytes after the body"));
            }
            if body.position != position {
                return Err(Error::corrupt(
                    position,
                    format!("body names position {}", body.position),
                ));
            }
            Ok(StoredRecord::Event {
                chain,
                body,
                body_bytes: rest,
            })
        }
        KIND_PRUNED => {
            let digest: Hash = rest
                .try_into()
                .map_err(|_| Error::corrupt(position, "pruned stub has a bad length"))?;
            Ok(StoredRecord::Pruned { chain, digest })
        }
        other => Err(Error::corrupt(
            position,
            format!("unknown record kind {other}"),
        )),
    }
}

/// The encoded part of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotBody<'a> {
    pub(crate) stream: &'a str,
    pub(crate) seq: u64,
    pub(crate) timestamp: Timestamp,
    pub(crate) sealed: bool,
    #[serde(with = "serde_bytes")]
    pub(crate) state: &'a [u8],
}

/// `[version][crc32 LE of the rest][postcard SnapshotBody]`.
pub(crate) fn encode_snapshot(body: &SnapshotBody<'_>) -> Result<Vec<u8>, postcard::Error> {
    let mut out = postcard::to_extend(body, vec![FORMAT_VERSION, 0, 0, 0, 0])?;
    let crc = crc32fast::hash(&out[5..]);
    out[1..5].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

pub(crate) fn decode_snapshot<'a>(
    stream: &str,
    value: &'a [u8],
) -> Result<SnapshotBody<'a>, Error> {
    let bad = |reason: String| Error::CorruptMetadata {
        what: format!("snapshot of stream {stream:?}"),
        reason,
    };
    if value.len() < 5 {
        return Err(bad("truncated".into()));
    }
    if value[0] != FORMAT_VERSION {
        return Err(Error::UnsupportedFormat {
            what: format!("snapshot of stream {stream:?}"),
            found: value[0],
            supported: FORMAT_VERSION,
        });
    }
    if crc32fast::hash(&value[5..]) != u32::from_le_bytes([value[1], value[2], value[3], value[4]])
    {
        return Err(bad("checksum mismatch".into()));
    }
    let body: SnapshotBody<'a> =
        postcard::from_bytes(&value[5..]).map_err(|e| bad(format!("does not decode: {e}")))?;
    if body.stream != stream {
        return Err(bad(format!("names stream {:?}", body.stream)));
    }
    Ok(body)
}

/// Bytes of an encoded anchor.
pub(crate) const ANCHOR_LEN: usize = 45;

/// The anchor: `[version][crc32 LE of the rest][head position u64 BE][chain hash at it]`.
pub(crate) fn encode_anchor(position: u64, chain: &Hash) -> [u8; ANCHOR_LEN] {
    let mut out = [0u8; ANCHOR_LEN];
    out[0] = FORMAT_VERSION;
    out[5..13].copy_from_slice(&position.to_be_bytes());
    out[13..].copy_from_slice(chain);
    let crc = crc32fast::hash(&out[5..]);
    out[1..5].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes an anchor; `None` if it is damaged or of another version.
pub(crate) fn decode_anchor(bytes: &[u8]) -> Option<(u64, Hash)> {
    let bytes: &[u8; ANCHOR_LEN] = bytes.try_into().ok()?;
    if bytes[0] != FORMAT_VERSION
        || crc32fast::hash(&bytes[5..]) != u32::from_le_bytes(bytes[1..5].try_into().ok()?)
    {
        return None;
    }
    let position = u64::from_be_bytes(bytes[5..13].try_into().ok()?);
    Some((position, bytes[13..].try_into().ok()?))
}

#[cfg(test)]
mod tests;

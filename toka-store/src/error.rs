//! The one error type of `toka-store`, and the version-conflict outcome of an append.

use crate::event::ExpectedVersion;

/// Everything that can go wrong in the journal.
///
/// Each variant names *where* it went wrong (a position, a stream, an operation) so that a
/// log line or a CLI message is actionable on its own. A version conflict is deliberately
/// **not** a variant: [`Journal::append`](crate::Journal::append) returns it in an inner
/// `Result` (see [`AppendResult`](crate::AppendResult)), keeping "storage failed" apart
/// from "someone else wrote first". It converts into [`Error::Conflict`] for callers who
/// prefer a single `?`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage engine failed (I/O error, engine bug, full disk, …).
    #[error("storage back-end failed while {op}: {source}")]
    Backend {
        /// What the journal was doing, e.g. `"applying a batch"`.
        op: &'static str,
        /// The engine's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The bytes stored for a record fail their checksum, do not decode, or disagree with
    /// the key they are stored under. The record at `position` cannot be trusted.
    #[error("record at position {position} is corrupt: {reason}")]
    Corrupt {
        /// Global position of the bad record.
        position: u64,
        /// What check failed.
        reason: String,
    },
    /// Journal metadata (stream index, snapshot, key check) is corrupt.
    #[error("journal metadata is corrupt ({what}): {reason}")]
    CorruptMetadata {
        /// Which piece of metadata, e.g. `"snapshot of stream \"a\""`.
        what: String,
        /// What check failed.
        reason: String,
    },
    /// A record was written by a newer (or unknown) on-disk format.
    #[error("{what} uses on-disk format version {found}; this build reads version {supported}")]
    UnsupportedFormat {
        /// What carried the unknown version.
        what: String,
        /// The version byte found.
        found: u8,
        /// The version this build reads and writes.
        supported: u8,
    },
    /// A PostgreSQL journal's schema was migrated by a newer build than this one.
    #[error(
        "the PostgreSQL journal schema {schema:?} is at version {found}; this build knows versions up to {supported}"
    )]
    UnsupportedSchema {
        /// The PostgreSQL schema holding the journal.
        schema: String,
        /// The version found in its `toka_schema` table.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A fenced journal's lease is no longer held at its epoch (it expired, was released,
    /// or another writer took it): the journal commits nothing more. Close it; the lease's
    /// new holder has the journal.
    #[error(
        "the lease {lease:?} at epoch {epoch} is no longer held: another writer may own this journal now, so it writes nothing more"
    )]
    Fenced {
        /// The lease's name.
        lease: String,
        /// The epoch this journal was opened with.
        epoch: i64,
    },
    /// An event (after encoding and sealing) is larger than the configured limit.
    #[error(
        "event #{index} of the batch for stream {stream:?} encodes to {size} bytes, over the {max}-byte record limit"
    )]
    RecordTooLarge {
        /// Target stream.
        stream: String,
        /// Index of the offending event inside the batch (0-based).
        index: usize,
        /// Encoded size in bytes.
        size: usize,
        /// The configured limit ([`JournalConfig::max_record_bytes`](crate::JournalConfig::max_record_bytes)).
        max: usize,
    },
    /// A snapshot is larger than the configured limit.
    #[error("snapshot for stream {stream:?} is {size} bytes, over the {max}-byte limit")]
    SnapshotTooLarge {
        /// Stream of the snapshot.
        stream: String,
        /// Size in bytes.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// A stream id is empty or too long.
    #[error("invalid stream id {stream:?}: {reason}")]
    InvalidStreamId {
        /// The rejected id (truncated to 64 bytes for display).
        stream: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// `append` was called with no events.
    #[error("append to stream {stream:?} carries no events")]
    EmptyBatch {
        /// Target stream.
        stream: String,
    },
    /// A snapshot was offered for a sequence number the stream has not reached.
    #[error(
        "snapshot for stream {stream:?} at seq {seq} is ahead of the stream's version {version}"
    )]
    SnapshotAhead {
        /// Stream of the snapshot.
        stream: String,
        /// Offered sequence number.
        seq: u64,
        /// Current stream version.
        version: u64,
    },
    /// The journal is encrypted but no key was configured.
    #[error("the journal is encrypted at rest; configure its encryption key to open it")]
    KeyRequired,
    /// A key was configured for a journal that was created without encryption.
    #[error(
        "an encryption key was configured but the journal holds unencrypted records; refusing to mix"
    )]
    NotEncrypted,
    /// The configured key is not the key the journal was created with.
    #[error("wrong encryption key: it does not open this journal's key check")]
    WrongKey,
    /// A sealed payload failed authentication although the key check passed: the bytes
    /// were modified or moved to another record.
    #[error("sealed payload of {what} failed authentication (tampered or moved)")]
    Decrypt {
        /// Which record or snapshot, e.g. `"record at position 7"`.
        what: String,
    },
    /// An earlier flush failed, so durability can no longer be promised. Reopen the
    /// journal (recovery re-reads what reached the disk).
    #[error("journal is unusable after a failed flush: {0}")]
    Poisoned(String),
    /// The journal found damage when it opened (a bad last record, fewer records than it
    /// had flushed, or history that differs from its anchor). It can still be read and
    /// verified, but refuses writes: appending on top of damage would bury it.
    #[error(
        "journal is damaged at position {position} ({reason}); it can be read and verified but refuses writes"
    )]
    Damaged {
        /// The first damaged position.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// The journal is a follower (`PgJournal::follow`): it
    /// reads a journal that another process writes, and never writes itself.
    #[error(
        "this journal is a read-only follower of a journal another process writes: write through its writer"
    )]
    Follower,
    /// A version conflict, converted from [`VersionConflict`] by `?`.
    #[error(transparent)]
    Conflict(#[from] VersionConflict),
}

impl Error {
    pub(crate) fn backend(
        op: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Backend {
            op,
            source: Box::new(source),
        }
    }

    pub(crate) fn corrupt(position: u64, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            position,
            reason: reason.into(),
        }
    }
}

/// The expected version of a stream did not match its actual version; nothing was written.
///
/// Returned in the inner `Result` of [`Journal::append`](crate::Journal::append).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "version conflict on stream {stream:?}: expected {expected}, but the stream is at version {actual}"
)]
pub struct VersionConflict {
    /// The stream appended to.
    pub stream: String,
    /// What the caller expected.
    pub expected: ExpectedVersion,
    /// The stream's version (its last sequence number; 0 if it has no events).
    pub actual: u64,
}

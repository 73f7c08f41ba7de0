//! Toka's event journal: the append-only source of truth that actor recovery, journaled
//! tool effects and audit are built on.
//!
//! # What it gives you
//! - **Streams** of events (one per actor, say) inside one **global log** with gap-free
//!   positions; see [`Journal`] for the exact semantics.
//! - **Atomic appends** with an [`ExpectedVersion`] check, **bounded reads, lazy
//!   iterators and a zero-copy [`Journal::replay`]**, **catch-up-then-live
//!   [`Subscription`]s** that never lose events,
//!   **snapshots** with optional [`Retention`].
//! - **Durability** chosen per journal ([`Durability::Fsync`] with group commit, or
//!   [`Durability::Buffered`]).
//! - **Tamper evidence**: every record is chained to the previous one with blake3;
//!   [`Journal::verify`] names the first bad position.
//! - **Encryption at rest** (opt-in): payloads and snapshots sealed with
//!   XChaCha20-Poly1305 under a caller-supplied [`EncryptionKey`].
//! - Back-ends: [`MemoryJournal`], [`SledJournal`] (feature `sled`, on by default) and
//!   `PgJournal` (feature `postgres`: a PostgreSQL schema, one transaction per group
//!   commit), the same logic over three [`Backend`]s, checked by one conformance suite.
//!   A PostgreSQL journal can also be read by **followers** in other processes
//!   (`PgJournal::follow`), whose subscriptions wake on each commit's `NOTIFY`.
//!
//! # Durability contract
//! An append goes through these steps, in this order:
//! 1. Under the journal's writer lock, the stream's version is checked against the
//!    expected version; on mismatch nothing is written.
//! 2. Positions and sequence numbers are assigned; each event is encoded (postcard, behind
//!    a format-version byte), its payload sealed if encryption is on, and chained to the
//!    previous record's hash.
//! 3. The records are written to the back-end in position order, one key each. Every
//!    record names the last position of its batch. The back-end recovers a *prefix* of its
//!    writes after a crash, so only the last batch can be cut short, and opening the
//!    journal removes such a torn batch: **after any crash, either all events of a batch
//!    exist or none does.** (The batch's stream-index entry is kept in memory and stored
//!    in bulk later; opening rebuilds missing entries from the records.)
//! 4. `Buffered`: `append` returns here. The commit thread flushes within
//!    [`JournalConfig::flush_interval`]; a crash before that loses the latest acknowledged
//!    batches (whole batches, newest first), never older ones, never part of a batch.
//! 5. `Fsync`: the appender waits for the commit thread, which flushes the back-end
//!    (sled: writes its log and fsyncs) once for every write applied before the flush
//!    started. `append` returns only after that flush succeeded: **an acknowledged append
//!    survives a crash of the process or the machine.**
//!
//! If a flush fails, the journal refuses further appends ([`Error::Poisoned`]); reopening
//! it recovers what reached the disk.
//!
//! Recovery on open, in order: check the encryption key; find the last record; remove a
//! torn last batch (unless the anchor says it had been flushed, which is damage); compare
//! the log with the anchor; rebuild the stream-index entries the last checkpoint did not
//! store, and store them.
//!
//! After every flush the commit thread also records the journal's **anchor** (flushed head
//! position and its chain hash) outside the engine's data (for sled, the file `toka-anchor`
//! in its directory). On open, a log that ends before the anchor, or whose chain differs at
//! the anchored position, or whose last record does not decode, is **damaged**: the journal
//! opens read-only (reads and [`Journal::verify`] work and name the position, writes fail
//! with [`Error::Damaged`]) instead of silently continuing without acknowledged events.
//!
//! # Bad input
//! Oversized records ([`JournalConfig::max_record_bytes`], 1 MiB by default), empty or
//! over-long stream ids, and damaged bytes on disk are reported as errors that name the
//! stream or position. Nothing in this crate panics on stored or caller data.
//!
//! # Example
#![cfg_attr(feature = "sled", doc = "```")]
#![cfg_attr(not(feature = "sled"), doc = "```ignore")]
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use toka_store::{Durability, ExpectedVersion, Journal, JournalConfig, NewEvent, SledJournal};
//!
//! let dir = tempfile::tempdir()?;
//! let journal = SledJournal::open(dir.path(), JournalConfig::default().durability(Durability::Fsync))?;
//!
//! let done = journal
//!     .append("agent-1", ExpectedVersion::NoStream, &[
//!         NewEvent::new("spawned", b"{}".to_vec()),
//!         NewEvent::new("message", b"{\"add\":2}".to_vec()),
//!     ])
//!     .await??; // storage error, then version conflict
//! assert_eq!((done.first_position, done.last_seq), (1, 2));
//!
//! for event in journal.iter_stream("agent-1", 1)? {
//!     let event = event?;
//!     println!("{} #{}: {}", event.stream, event.seq, event.kind);
//! }
//! assert!(journal.verify()?.is_intact());
//! # Ok(()) }
//! ```
//!
//! # Feature flags
//! | Name | Description | Default |
//! |---|---|---|
//! | `sled` | The [`SledJournal`] back-end | yes |
//! | `postgres` | The `PgJournal` back-end on PostgreSQL (see `backend::PgBackend`) | no |
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backend;
mod codec;
mod commit;
mod config;
mod crypto;
mod error;
mod event;
mod index;
mod journal;
mod log;
mod pack;
mod redact;
mod subscription;
mod verify;

#[cfg(feature = "sled")]
pub use backend::SledBackend;
pub use backend::{Backend, MemoryBackend, WriteBatch};
#[cfg(feature = "postgres")]
pub use backend::{FollowConfig, Lease, LeaseState, Leases, PgBackend, PgSession};
pub use commit::DurableCallback;
pub use config::{
    DEFAULT_COMMIT_LINGER, DEFAULT_MAX_RECORD_BYTES, Durability, JournalConfig, Retention,
};
pub use crypto::EncryptionKey;
pub use error::{Error, VersionConflict};
pub use event::{
    Appended, EventId, EventRef, ExpectedVersion, MAX_STREAM_ID_BYTES, NewEvent, RecordedEvent,
    Snapshot, Timestamp,
};
#[cfg(feature = "postgres")]
pub use journal::PgJournal;
#[cfg(feature = "sled")]
pub use journal::SledJournal;
pub use journal::{AppendResult, EventIter, EventJournal, Journal, MemoryJournal, StreamBatch};
pub use redact::redact_url;
pub use subscription::Subscription;
pub use verify::{BadRecord, VerifyReport};

/// The on-disk format version this build reads and writes.
pub const FORMAT_VERSION: u8 = codec::FORMAT_VERSION;

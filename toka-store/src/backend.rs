//! Storage engines under the journal: an ordered key-value space with atomic batches.
//!
//! The journal keeps all of its logic (positions, chain, encryption, limits, group commit,
//! batch atomicity) above this trait, so every engine gets the same semantics and the same
//! conformance tests. An engine only has to provide:
//! - **ordered prefix recovery**: the writes of [`Backend::apply`] are applied in order, and
//!   after a crash the engine holds a *prefix* of all writes ever applied: no write
//!   survives without every write applied before it. (Batches need not be atomic: the
//!   journal recognises a batch that a crash cut short by its records and removes it.)
//! - **read-your-writes**: once [`Backend::apply`] returns, reads see the writes;
//! - **durable flush**: once [`Backend::flush`] returns `Ok`, every applied write survives
//!   a crash of the process or the machine.
//!
//! An engine may also keep the journal's *anchor* ([`Backend::write_anchor`]) outside its own
//! files: the last flushed head position and its chain hash. When the engine later recovers
//! less than that (sled, for one, silently drops the tail of its log after a damaged
//! message), the journal notices instead of carrying on with acknowledged events missing.

use crate::Error;

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
mod postgres_lease;
#[cfg(feature = "sled")]
mod sled;

#[cfg(feature = "postgres")]
pub use self::postgres::{
    DEFAULT_PG_SCHEMA, FollowConfig, PG_LOCK_RETRY_FOR, PG_SCHEMA_VERSION, PgBackend, PgRange,
    split_schema,
};
#[cfg(feature = "postgres")]
pub use self::postgres_lease::{Lease, LeaseState, Leases, PgSession};
#[cfg(feature = "sled")]
pub use self::sled::{ANCHOR_FILE, LOCK_RETRY_FOR, SledBackend};
pub use memory::MemoryBackend;

/// A key-value pair read from a [`Backend`].
pub type Entry<V> = (V, V);

/// An ordered list of writes for [`Backend::apply`].
#[derive(Debug, Default)]
pub struct WriteBatch {
    pub(crate) ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// The log head the batch's records reach (0: it writes no record). Engines that tell
    /// other processes about commits (PostgreSQL's `NOTIFY`) announce it once committed.
    pub(crate) head: u64,
}

impl WriteBatch {
    /// An empty batch with room for `n` writes.
    pub fn with_capacity(n: usize) -> Self {
        WriteBatch {
            ops: Vec::with_capacity(n),
            head: 0,
        }
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: Vec<u8>) {
        self.ops.push((key.into(), Some(value)));
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }

    /// The log head position this batch's records reach, if it writes records (set by the
    /// journal; engines may announce it once the batch is durable).
    pub fn head(&self) -> Option<u64> {
        (self.head > 0).then_some(self.head)
    }

    /// Number of writes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no writes.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// An ordered key-value store the journal runs on. See the module docs for the contract.
pub trait Backend: Send + Sync + 'static {
    /// The engine's byte buffer for values it returns.
    type Value: AsRef<[u8]> + Send + 'static;
    /// A forward range iterator that owns what it needs (no borrow of the backend).
    type Range: Iterator<Item = Result<Entry<Self::Value>, Error>> + Send + 'static;

    /// Applies the writes of `batch` in order. If it fails, a prefix of them may have been
    /// applied.
    fn apply(&self, batch: WriteBatch) -> Result<(), Error>;

    /// Reads one key.
    fn get(&self, key: &[u8]) -> Result<Option<Self::Value>, Error>;

    /// Iterates `start..end` in key order, lazily (never the whole range in memory).
    fn range(&self, start: &[u8], end: &[u8]) -> Self::Range;

    /// The last entry of `start..end`, if any.
    fn last_in(&self, start: &[u8], end: &[u8]) -> Result<Option<Entry<Self::Value>>, Error>;

    /// Makes every applied batch durable. Blocking; the journal calls it from its commit
    /// thread only.
    fn flush(&self) -> Result<(), Error>;

    /// Stores the anchor (a few dozen opaque bytes), replacing the previous one. Called by
    /// the commit thread after a successful flush. The default keeps nothing.
    fn write_anchor(&self, anchor: &[u8]) -> Result<(), Error> {
        let _ = anchor;
        Ok(())
    }

    /// The last anchor stored, if any.
    fn read_anchor(&self) -> Result<Option<Vec<u8>>, Error> {
        Ok(None)
    }
}

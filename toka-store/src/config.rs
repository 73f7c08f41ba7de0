//! Journal configuration.

use std::time::Duration;

use crate::EncryptionKey;

/// When an append counts as done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// `append` returns only once the batch is on disk (the back-end's flush returned).
    /// Concurrent appenders share flushes (group commit). Subscribers see only flushed
    /// events. The default.
    #[default]
    Fsync,
    /// `append` returns once the batch is written to the engine; a background flush makes
    /// it durable within [`JournalConfig::flush_interval`]. A crash can lose the most
    /// recent acknowledged appends, never part of a batch and never an older event.
    Buffered,
}

/// What happens to events that a snapshot makes redundant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Retention {
    /// Keep every event (the default): the journal stays a complete audit log.
    #[default]
    KeepAll,
    /// When a snapshot at sequence `n` is saved, erase the bodies of the stream's events
    /// up to `n` that no earlier snapshot covered. Each erased record leaves a 70-byte
    /// stub holding its chain hash and digest, so positions stay gap-free and
    /// [`Journal::verify`](crate::Journal::verify) still checks the whole chain.
    PruneCoveredBySnapshot,
}

/// Settings of one journal, fixed when it is opened.
///
/// ```
/// use std::time::Duration;
/// use toka_store::{Durability, JournalConfig};
/// let config = JournalConfig::default()
///     .durability(Durability::Buffered)
///     .flush_interval(Duration::from_millis(50))
///     .max_record_bytes(64 * 1024);
/// assert_eq!(config.get_max_record_bytes(), 64 * 1024);
/// ```
#[derive(Clone, Debug)]
pub struct JournalConfig {
    pub(crate) durability: Durability,
    pub(crate) flush_interval: Duration,
    pub(crate) max_record_bytes: usize,
    pub(crate) encryption: Option<EncryptionKey>,
    pub(crate) retention: Retention,
    pub(crate) commit_linger: Duration,
}

/// Default [`JournalConfig::max_record_bytes`]: 1 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Default [`JournalConfig::commit_linger`]: 2 ms.
pub const DEFAULT_COMMIT_LINGER: Duration = Duration::from_millis(2);

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            durability: Durability::Fsync,
            flush_interval: Duration::from_millis(100),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            encryption: None,
            retention: Retention::KeepAll,
            commit_linger: DEFAULT_COMMIT_LINGER,
        }
    }
}

impl JournalConfig {
    /// Sets the [`Durability`] level (default [`Durability::Fsync`]).
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets how often writes nobody waits for are flushed in the background (default
    /// 100 ms): every append of a `Buffered` journal, and the unsynced appends
    /// ([`Journal::append_unsynced`](crate::Journal::append_unsynced)) of an `Fsync` one,
    /// which become acknowledged (visible to subscriptions) within this interval.
    #[must_use]
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// Sets the largest accepted encoded record (metadata + payload, after sealing), in
    /// bytes; snapshots get the same limit (default 1 MiB).
    #[must_use]
    pub fn max_record_bytes(mut self, max: usize) -> Self {
        self.max_record_bytes = max;
        self
    }

    /// Encrypts payloads and snapshots at rest with this key. A journal created with a key
    /// can only be opened with the same key; one created without cannot take a key later.
    #[must_use]
    pub fn encryption(mut self, key: EncryptionKey) -> Self {
        self.encryption = Some(key);
        self
    }

    /// Sets the [`Retention`] policy (default [`Retention::KeepAll`]).
    #[must_use]
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Sets how long, at most, the commit thread of an [`Durability::Fsync`] journal may
    /// hold a requested flush to let concurrent appends join it (default
    /// [`DEFAULT_COMMIT_LINGER`], 2 ms; `Duration::ZERO` flushes at once).
    ///
    /// Every flush costs about the same whatever it covers (the engine's write and its
    /// thread hand-offs, the `fsync`), so fewer, larger groups cost less CPU per append.
    /// The wait is adaptive: it happens only when recent flushes found several appends
    /// waiting, ends as soon as the group is as large as recent ones were (128 records at
    /// most: a larger crowd is flushed in overlapping groups of that size), and ends at the
    /// latest `linger` after the previous flush ended, so it adds at most `linger` to an
    /// append's latency. A lone appender never waits. Durability is unchanged: an append
    /// still returns only once flushed.
    #[must_use]
    pub fn commit_linger(mut self, linger: Duration) -> Self {
        self.commit_linger = linger;
        self
    }

    /// The configured durability.
    pub fn get_durability(&self) -> Durability {
        self.durability
    }

    /// The configured record size limit.
    pub fn get_max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }
}

//! The [`Journal`] trait and [`EventJournal`], its implementation over any [`Backend`].

use std::borrow::Cow;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::backend::{Backend, MemoryBackend, WriteBatch};
use crate::codec::{self, GENESIS, Hash, RecordBody, SnapshotBody, StoredRecord, keys};
use crate::commit::Committer;
use crate::commit::DurableCallback;
use crate::crypto::Sealer;
use crate::event::validate_stream_id;
use crate::index::{self, IndexEntry, Streams};
use crate::log::{self, PointReader, Scan};
use crate::pack::{self, LogValue, PackWriter, Replacement};
use crate::subscription::{LogSource, Subscription};
use crate::verify::{BadRecord, VerifyReport};
use crate::{
    Appended, Durability, Error, EventRef, ExpectedVersion, JournalConfig, NewEvent, RecordedEvent,
    Retention, Snapshot, Timestamp, VersionConflict,
};

/// The outcome of an append that reached the storage: either where it landed, or the
/// version conflict that stopped it (nothing was written).
///
/// ```
/// # async fn demo(journal: &dyn toka_store::Journal) -> Result<(), toka_store::Error> {
/// use toka_store::{ExpectedVersion, NewEvent};
/// // `??`: the outer `?` is storage failure, the inner one a conflict (both are `Error`).
/// let appended = journal
///     .append("order-7", ExpectedVersion::NoStream, &[NewEvent::new("placed", vec![])])
///     .await??;
/// assert_eq!(appended.last_seq, 1);
/// # Ok(()) }
/// ```
pub type AppendResult = Result<Appended, VersionConflict>;

/// A lazy iterator of recorded events. It owns what it needs (no borrow of the journal) and
/// stops after the first error.
pub type EventIter = Box<dyn Iterator<Item = Result<RecordedEvent, Error>> + Send>;

/// The event journal: Toka's source of truth.
///
/// # Semantics
/// - **Positions.** Every event gets a global position: 1, 2, 3, … with no gaps, in
///   append order across all streams. Events of one append get contiguous positions.
/// - **Streams.** Every event belongs to one stream and gets the next sequence number of
///   that stream: 1, 2, 3, … with no gaps. A stream's *version* is its last sequence
///   number (0 before its first event).
/// - **Appends are atomic** (all events of the batch or none, also across a crash) and
///   checked against an [`ExpectedVersion`] under the same lock that assigns positions.
/// - **Durability** follows the journal's [`Durability`]: with `Fsync`, `append` returns
///   after the batch is on disk, and concurrent appends share one flush (group commit);
///   with `Buffered`, after the write, with a flush in the background.
/// - **Reads** are bounded (`limit`) or lazy iterators; both see every event whose append
///   returned, and report a corrupt or missing record as an error naming its position.
/// - **Subscriptions** deliver events from a position: first those already stored, then
///   new ones as they are acknowledged. They read from the store, so a slow subscriber falls
///   behind but never loses an event.
/// - **Tamper evidence.** Records are hash-chained; [`Journal::verify`] walks the chain.
///
/// Reads, `verify` and snapshot loads are synchronous: they touch the local store only
/// (with sled, mostly its page cache). Run long replays on a blocking thread.
#[async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Appends `events` to `stream` atomically if its version matches `expected`.
    ///
    /// # Errors
    /// Outer: [`Error::EmptyBatch`], [`Error::InvalidStreamId`],
    /// [`Error::RecordTooLarge`] (nothing written), [`Error::Backend`],
    /// [`Error::Poisoned`]. Inner: [`VersionConflict`] (nothing written).
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult, Error>;

    /// Appends like [`Journal::append`] but returns as soon as the batch is written, without
    /// waiting for it to be durable, even in `Fsync` mode. Pair it with
    /// [`Journal::wait_durable`]: a single writer can then order many appends (and hand
    /// them on in that order) while one flush makes them all durable.
    ///
    /// # Errors
    /// As [`Journal::append`].
    async fn append_unsynced(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult, Error>;

    /// Appends several streams' batches as **one atomic write**, without waiting for
    /// durability (pair it with [`Journal::wait_durable`]). Each batch gets its own
    /// result: a batch whose expected version does not match is not written and comes
    /// back as a [`VersionConflict`], the others are written (in the order given; later
    /// batches to a stream see earlier ones). One lock and one back-end write for all:
    /// the way for a single writer to group many small appends.
    ///
    /// # Errors
    /// As [`Journal::append`]; then nothing is written.
    async fn append_many_unsynced(
        &self,
        batches: &[StreamBatch<'_>],
    ) -> Result<Vec<AppendResult>, Error>;

    /// Returns once every event up to log `position` has the durability the journal
    /// promises for an acknowledged append: flushed in `Fsync` mode (sharing one flush with
    /// every other waiter), at once in `Buffered` mode.
    ///
    /// # Errors
    /// [`Error::Poisoned`] if a flush failed.
    async fn wait_durable(&self, position: u64) -> Result<(), Error>;

    /// Like [`Journal::wait_durable`] without a task waiting: calls `done` once every
    /// event up to log `position` (already appended) has the durability of an acknowledged
    /// append, with `Ok(())`, or with the error that means it never will. A single writer
    /// completes its callers' acknowledgements this way, so that a sender is woken once,
    /// when its append is durable, instead of once by the writer and once more by the
    /// flush.
    ///
    /// `done` runs on the journal's commit thread right after the flush that covers
    /// `position` (callbacks in the order registered), or on the calling thread when
    /// there is nothing to wait for (`Buffered` mode, already flushed, already failed).
    /// It must be quick and must not block: later flushes wait for it. Waking a task
    /// (sending on a `tokio` channel) is what it is for.
    ///
    /// Returns `Some(done)` unused if this journal cannot call it (the default, for
    /// journals that wrap another): the caller then waits with [`Journal::wait_durable`].
    fn when_durable(&self, position: u64, done: DurableCallback) -> Option<DurableCallback> {
        let _ = position;
        Some(done)
    }

    /// Makes every acknowledged append durable (a no-op for `Fsync` journals, where that
    /// already holds); call before a graceful shutdown of a `Buffered` journal.
    async fn flush(&self) -> Result<(), Error>;

    /// How many times the journal flushed its storage to disk since it opened. Appends
    /// share flushes (group commit), so appends ÷ flushes is the mean group a flush made
    /// durable; a `Buffered` journal flushes on its timer. A journal that does not flush
    /// itself (a follower's) reports 0.
    fn flushes(&self) -> u64;

    /// The position of the last appended event; 0 for an empty journal. It may be ahead
    /// of [`Journal::acknowledged_head`]: an unsynced append counts here as soon as it is
    /// written.
    fn head_position(&self) -> u64;

    /// The position up to which events are *acknowledged*: flushed in `Fsync` mode,
    /// written in `Buffered` mode. This is what a [`Subscription`] delivers, and what a
    /// reader that must never show an event a crash could take back should stop at.
    /// Written-but-unflushed events of an `Fsync` journal become acknowledged within
    /// [`JournalConfig::flush_interval`](crate::JournalConfig::flush_interval) even when
    /// nobody waits for them.
    fn acknowledged_head(&self) -> u64;

    /// Why the journal refuses writes, if it does: [`Error::Poisoned`] after a failed
    /// write or flush (a full disk, an I/O error; reopen the journal once the cause is
    /// fixed), or [`Error::Damaged`] for a journal found damaged when it opened. `None`
    /// while appends are accepted. Reads keep working either way.
    fn write_failure(&self) -> Option<Error>;

    /// The version of `stream`: its last sequence number, 0 if it has no events.
    fn stream_version(&self, stream: &str) -> Result<u64, Error>;

    /// Where the stream's events from `from_seq` on begin in the log: the position of its
    /// first event with a sequence number of at least `from_seq` (an event erased by
    /// retention counts), or `None` if there is none. Cheaper than reading the event: the
    /// journals of this crate answer from the stream index alone.
    ///
    /// # Errors
    /// As [`Journal::iter_stream`].
    fn stream_position(&self, stream: &str, from_seq: u64) -> Result<Option<u64>, Error> {
        Ok(match self.iter_stream(stream, from_seq)?.next() {
            Some(event) => Some(event?.position),
            None => None,
        })
    }

    /// The events of `stream` with sequence number `from_seq` or higher, in order.
    fn iter_stream(&self, stream: &str, from_seq: u64) -> Result<EventIter, Error>;

    /// At most `limit` events of `stream` from sequence number `from_seq`.
    fn read_stream(
        &self,
        stream: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.iter_stream(stream, from_seq)?.take(limit).collect()
    }

    /// Every event at position `from_position` or later, in position order.
    fn iter_all(&self, from_position: u64) -> EventIter;

    /// At most `limit` events from position `from_position`.
    fn read_all(&self, from_position: u64, limit: usize) -> Result<Vec<RecordedEvent>, Error> {
        self.iter_all(from_position).take(limit).collect()
    }

    /// Visits every event from `from_position` on, in position order, lending each one
    /// to `visit` without copying it (the fastest way to replay the log). `visit` stops
    /// the walk by returning [`ControlFlow::Break`]. Returns the position after the last
    /// record visited, to resume from.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), toka_store::Error> {
    /// use std::ops::ControlFlow;
    /// use toka_store::{ExpectedVersion, Journal, JournalConfig, MemoryJournal, NewEvent};
    /// let journal = MemoryJournal::new(JournalConfig::default())?;
    /// let events: Vec<_> = (0..3).map(|i| NewEvent::new("n", vec![i])).collect();
    /// journal.append("s", ExpectedVersion::Any, &events).await??;
    /// let mut sum = 0u32;
    /// let next = journal.replay(1, &mut |event| {
    ///     sum += u32::from(event.payload[0]);
    ///     ControlFlow::Continue(())
    /// })?;
    /// assert_eq!((sum, next), (3, 4));
    /// # Ok(()) }
    /// ```
    fn replay(
        &self,
        from_position: u64,
        visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
    ) -> Result<u64, Error>;

    /// Subscribes to every event from `from_position` on: catch-up, then live.
    fn subscribe(&self, from_position: u64) -> Subscription;

    /// Stores `state` as the snapshot of `stream` at sequence number `seq` if it is at
    /// least as recent as the stored one; returns whether it was stored. Durable like an
    /// append. With [`Retention::PruneCoveredBySnapshot`] the covered events are erased.
    ///
    /// # Errors
    /// [`Error::SnapshotAhead`] if `seq` exceeds the stream's version,
    /// [`Error::SnapshotTooLarge`], [`Error::Backend`].
    async fn save_snapshot(&self, stream: &str, seq: u64, state: &[u8]) -> Result<bool, Error>;

    /// The latest snapshot of `stream`, if any.
    fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, Error>;

    /// Walks the whole log, checking checksums, decoding, gap-free positions and the hash
    /// chain. A damaged log is reported in [`VerifyReport::first_bad`], not as an `Err`,
    /// which is kept for failures to read at all.
    fn verify(&self) -> Result<VerifyReport, Error>;
}

/// One stream's part of a [`Journal::append_many_unsynced`] write.
#[derive(Clone, Copy, Debug)]
pub struct StreamBatch<'a> {
    /// The stream.
    pub stream: &'a str,
    /// The version it must have (counting earlier batches of the same write).
    pub expected: ExpectedVersion,
    /// Its events (at least one).
    pub events: &'a [NewEvent],
}

/// The journal over a [`Backend`]; cheap to clone (clones share one journal).
///
/// The journal closes when its last clone, iterator and subscription are dropped: the
/// commit thread flushes once more and the back-end is released.
pub struct EventJournal<B: Backend> {
    inner: Arc<Inner<B>>,
}

impl<B: Backend> Clone for EventJournal<B> {
    fn clone(&self) -> Self {
        EventJournal {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<B: Backend> std::fmt::Debug for EventJournal<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventJournal")
            .field("head_position", &self.head_position())
            .field("durability", &self.inner.durability)
            .field("encrypted", &self.inner.sealer.is_some())
            .finish()
    }
}

/// A journal kept in memory, for tests and ephemeral use.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), toka_store::Error> {
/// use toka_store::{ExpectedVersion, Journal, JournalConfig, MemoryJournal, NewEvent};
/// let journal = MemoryJournal::new(JournalConfig::default())?;
/// journal.append("greetings", ExpectedVersion::Any, &[NewEvent::new("hello", b"hi".to_vec())]).await??;
/// let events = journal.read_stream("greetings", 1, 10)?;
/// assert_eq!(events[0].payload, b"hi");
/// # Ok(()) }
/// ```
pub type MemoryJournal = EventJournal<MemoryBackend>;

impl EventJournal<MemoryBackend> {
    /// An empty in-memory journal.
    ///
    /// # Errors
    /// Only if the commit thread cannot start or the OS random generator fails.
    pub fn new(config: JournalConfig) -> Result<Self, Error> {
        Self::with_backend(MemoryBackend::new(), config)
    }
}

/// A journal stored with [`sled`](https://docs.rs/sled) in a directory: the embedded
/// default.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use toka_store::{ExpectedVersion, Journal, JournalConfig, NewEvent, SledJournal};
/// let dir = tempfile::tempdir()?;
/// let journal = SledJournal::open(dir.path(), JournalConfig::default())?;
/// journal.append("a", ExpectedVersion::NoStream, &[NewEvent::new("created", vec![])]).await??;
/// drop(journal);
/// let reopened = SledJournal::open(dir.path(), JournalConfig::default())?;
/// assert_eq!(reopened.stream_version("a")?, 1);
/// # Ok(()) }
/// ```
#[cfg(feature = "sled")]
pub type SledJournal = EventJournal<crate::backend::SledBackend>;

#[cfg(feature = "sled")]
impl EventJournal<crate::backend::SledBackend> {
    /// Opens (or creates) a sled journal in directory `path`.
    ///
    /// # Errors
    /// [`Error::Backend`] if sled cannot open the directory (e.g. another process has it
    /// open); the key errors of [`EventJournal::with_backend`]; [`Error::Corrupt`] if the
    /// last record is damaged.
    pub fn open(path: impl AsRef<std::path::Path>, config: JournalConfig) -> Result<Self, Error> {
        Self::with_backend(crate::backend::SledBackend::open(path)?, config)
    }
}

/// A journal stored in a PostgreSQL schema (feature `postgres`); see
/// [`PgBackend`](crate::PgBackend) for the layout and how durability is kept.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use toka_store::{ExpectedVersion, Journal, JournalConfig, NewEvent, PgJournal};
/// let journal = PgJournal::connect("postgres://toka@127.0.0.1/toka?schema=agents", JournalConfig::default())?;
/// journal.append("a", ExpectedVersion::NoStream, &[NewEvent::new("created", vec![])]).await??;
/// # Ok(()) }
/// ```
#[cfg(feature = "postgres")]
pub type PgJournal = EventJournal<crate::backend::PgBackend>;

#[cfg(feature = "postgres")]
impl EventJournal<crate::backend::PgBackend> {
    /// Connects to PostgreSQL at `url` and opens (or creates) the journal in the schema the
    /// URL names (`?schema=NAME`, default `toka`); see
    /// [`PgBackend::connect`](crate::PgBackend::connect).
    ///
    /// # Errors
    /// As [`PgBackend::connect`](crate::PgBackend::connect) and
    /// [`EventJournal::with_backend`]. No error contains the URL's password.
    pub fn connect(url: &str, config: JournalConfig) -> Result<Self, Error> {
        Self::with_backend(crate::backend::PgBackend::connect(url)?, config)
    }

    /// Opens the journal in `schema` of the database at `url` (no `schema` parameter),
    /// fenced by `lease`: once the lease is lost, every write fails with
    /// [`Error::Fenced`] and nothing more is committed; see
    /// [`PgBackend::connect_fenced`](crate::PgBackend::connect_fenced).
    ///
    /// # Errors
    /// As [`PgJournal::connect`].
    pub fn connect_fenced(
        url: &str,
        schema: &str,
        lease: &crate::Lease,
        config: JournalConfig,
    ) -> Result<Self, Error> {
        Self::with_backend(
            crate::backend::PgBackend::connect_fenced(url, schema, lease)?,
            config,
        )
    }
}

#[cfg(feature = "postgres")]
impl EventJournal<crate::backend::PgBackend> {
    /// Opens the journal at `url` (its schema as in [`PgJournal::connect`]) as a
    /// **follower**: a read-only view of a journal that another process (a cluster node,
    /// another handle) writes. It takes no lock and no lease, creates nothing, never
    /// writes (appends and snapshots fail with [`Error::Follower`]), and shows what the
    /// writer **committed**: its [`Journal::acknowledged_head`] and its subscriptions move
    /// when a commit's notification arrives on a listening connection of its own, or at the
    /// latest at the next poll ([`FollowConfig`](crate::FollowConfig): every second by
    /// default). A lost listening or reading connection is reconnected; the subscriptions
    /// read by position, so they lose nothing meanwhile.
    ///
    /// Give it the writer's [`JournalConfig::encryption`] key: records are verified and
    /// opened as the writer's own reads do. Stream reads rebuild the part of the stream
    /// index the writer has not stored yet (its last second or so of appends) on each
    /// call.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use toka_store::{Journal, JournalConfig, PgJournal};
    /// let url = "postgres://toka@127.0.0.1/toka?schema=agents";
    /// let follower = PgJournal::follow(url, JournalConfig::default())?;
    /// let mut feed = follower.subscribe(1); // catch-up, then each commit of the writer
    /// while let Some(event) = feed.next().await {
    ///     println!("{}", event?.position);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`PgJournal::connect`] (no lock is waited for); also when the schema holds no
    /// journal yet, and [`Error::WrongKey`] / [`Error::KeyRequired`] /
    /// [`Error::NotEncrypted`] when the key does not fit.
    pub fn follow(url: &str, config: JournalConfig) -> Result<Self, Error> {
        Self::follow_with(url, config, crate::FollowConfig::default())
    }

    /// [`PgJournal::follow`] with how it learns of commits set by `follow`.
    ///
    /// # Errors
    /// As [`PgJournal::follow`].
    pub fn follow_with(
        url: &str,
        config: JournalConfig,
        follow: crate::FollowConfig,
    ) -> Result<Self, Error> {
        let (base, schema) = crate::backend::split_schema(url)?;
        let schema = schema
            .as_deref()
            .unwrap_or(crate::backend::DEFAULT_PG_SCHEMA);
        let backend = crate::backend::PgBackend::connect_follower(&base, schema)?;
        let journal = Self::open_follower(backend, config)?;
        let weak = Arc::downgrade(&journal.inner);
        journal
            .inner
            .backend
            .listen(&follow, move |head| match weak.upgrade() {
                Some(inner) => {
                    inner.follow_to(head);
                    true
                }
                None => false,
            })?;
        // Commits between opening and listening.
        journal.inner.follow_to(None);
        Ok(journal)
    }
}

/// What appends serialize on. Shared with the commit thread, which checkpoints the
/// stream index from it.
pub(crate) struct WriterState {
    next_position: u64,
    chain: Hash,
    /// Versions and not-yet-stored index entries of the streams touched since opening.
    pub(crate) streams: Streams,
    /// Set when a write failed half-way: later writes could land on top of its remains.
    broken: Option<String>,
}

struct Inner<B: Backend> {
    backend: Arc<B>,
    sealer: Option<Sealer>,
    durability: Durability,
    max_record_bytes: usize,
    retention: Retention,
    writer: Arc<Mutex<WriterState>>,
    head: AtomicU64,
    /// Damage found at open: the journal is then read-only.
    damage: Option<BadRecord>,
    /// A follower of a journal another process writes: never writes; its head moves as
    /// the writer's commits are seen.
    follower: bool,
    committer: Committer,
}

const KEY_CHECK_PLAINTEXT: &[u8] = b"toka-journal key check v1";

impl<B: Backend> EventJournal<B> {
    /// Opens a journal over `backend`, recovering its head from the stored records.
    ///
    /// # Errors
    /// [`Error::KeyRequired`] / [`Error::WrongKey`] / [`Error::NotEncrypted`] when the
    /// configured key does not fit the journal; [`Error::Corrupt`] if the last record is
    /// damaged; [`Error::Backend`].
    pub fn with_backend(backend: B, config: JournalConfig) -> Result<Self, Error> {
        let backend = Arc::new(backend);
        let sealer = key_check(&*backend, config.encryption.as_ref(), true)?;
        let Recovered {
            head,
            chain,
            damage,
            streams,
        } = recover(&*backend)?;
        if let Some(bad) = &damage {
            tracing::error!(position = bad.position, reason = %bad.reason, "journal is damaged; opened read-only");
        }
        let writer = Arc::new(Mutex::new(WriterState {
            next_position: head + 1,
            chain,
            streams,
            broken: None,
        }));
        if damage.is_none() {
            index::checkpoint(&*backend, &writer, true)?;
        }
        let buffered = config.durability == Durability::Buffered;
        let before_flush = {
            let (backend, writer) = (Arc::clone(&backend), Arc::clone(&writer));
            let writable = damage.is_none();
            move |closing: bool| {
                if writable {
                    if let Err(error) = index::checkpoint(&*backend, &writer, closing) {
                        tracing::warn!(%error, "stream index checkpoint failed; it will be rebuilt on open");
                    }
                }
            }
        };
        let committer = Committer::start(
            Arc::clone(&backend),
            (head, chain),
            // Fsync journals flush on request, and also in the background so that
            // unsynced appends nobody waits for become durable (and visible) in time.
            Some(config.flush_interval),
            // Nobody waits for a buffered journal's flushes: no group worth gathering.
            if buffered {
                std::time::Duration::ZERO
            } else {
                config.commit_linger
            },
            buffered,
            damage.is_none(),
            Box::new(before_flush),
        )?;
        tracing::debug!(head, encrypted = sealer.is_some(), durability = ?config.durability, "journal opened");
        Ok(EventJournal {
            inner: Arc::new(Inner {
                backend,
                sealer,
                durability: config.durability,
                max_record_bytes: config.max_record_bytes,
                retention: config.retention,
                writer,
                head: AtomicU64::new(head),
                damage,
                follower: false,
                committer,
            }),
        })
    }

    /// Opens a **follower** over `backend`: a read-only view of a journal that another
    /// process writes (no recovery, no writes; the key check is verified, not created).
    /// Its head stays where it was found until [`Inner::follow_to`] moves it.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    fn open_follower(backend: B, config: JournalConfig) -> Result<Self, Error> {
        let backend = Arc::new(backend);
        let sealer = key_check(&*backend, config.encryption.as_ref(), false)?;
        let head = last_record(&*backend)?.map_or(0, |(position, _)| position);
        let writer = Arc::new(Mutex::new(WriterState {
            next_position: head + 1,
            chain: GENESIS,
            streams: Streams::default(),
            broken: None,
        }));
        // Never asked to flush (nothing is written); it only carries the visible head.
        let committer = Committer::start(
            Arc::clone(&backend),
            (head, GENESIS),
            None,
            std::time::Duration::ZERO,
            false,
            false,
            Box::new(|_| {}),
        )?;
        tracing::debug!(
            head,
            encrypted = sealer.is_some(),
            "journal follower opened"
        );
        Ok(EventJournal {
            inner: Arc::new(Inner {
                backend,
                sealer,
                durability: config.durability,
                max_record_bytes: config.max_record_bytes,
                retention: config.retention,
                writer,
                head: AtomicU64::new(head),
                damage: None,
                follower: true,
                committer,
            }),
        })
    }

    /// Whether this is a follower (opened read-only on a journal another process writes).
    pub fn is_follower(&self) -> bool {
        self.inner.follower
    }

    /// The storage engine (e.g. to inspect raw bytes in tests).
    pub fn backend(&self) -> &B {
        &self.inner.backend
    }
}

/// The anchor stored by the back-end, if it is readable.
fn read_anchor<B: Backend>(backend: &B) -> Result<Option<(u64, Hash)>, Error> {
    let Some(bytes) = backend.read_anchor()? else {
        return Ok(None);
    };
    let anchor = codec::decode_anchor(&bytes);
    if anchor.is_none() {
        tracing::warn!("the journal anchor is unreadable; ignoring it");
    }
    Ok(anchor)
}

/// The chain hash stored with the record at `position`, if it decodes.
fn chain_at<B: Backend>(backend: &B, position: u64) -> Result<Option<Hash>, Error> {
    let mut reader = PointReader::default();
    match reader.read(backend, position) {
        Ok(record) => Ok(codec::decode_record(position, record)
            .ok()
            .map(|r| *r.chain())),
        Err(e @ Error::Backend { .. }) => Err(e),
        Err(_) => Ok(None),
    }
}

/// What opening found in the store.
struct Recovered {
    head: u64,
    chain: Hash,
    /// Damage that makes writing unsafe: the journal then opens read-only.
    damage: Option<BadRecord>,
    streams: Streams,
}

/// The chain hash and batch end of a record, or why it cannot be read.
type TailRecord = Result<(Hash, u64), BadRecord>;

/// The last record: its position and, if it decodes, the record's chain and batch end.
fn last_record<B: Backend>(backend: &B) -> Result<Option<(u64, TailRecord)>, Error> {
    let Some((first, value)) = log::last_value(backend)? else {
        return Ok(None);
    };
    let bad = |e: Error| match e {
        Error::Corrupt { position, reason } => Ok(BadRecord { position, reason }),
        e @ Error::UnsupportedFormat { .. } => Ok(BadRecord {
            position: first,
            reason: e.to_string(),
        }),
        e => Err(e),
    };
    let parsed = match LogValue::parse(first, value.as_ref()) {
        Ok(parsed) => parsed,
        Err(e) => return Ok(Some((first, Err(bad(e)?)))),
    };
    let mut last = None;
    for record in parsed.records() {
        match record {
            Ok(record) => last = Some(record),
            Err(e) => return Ok(Some((parsed.last(), Err(bad(e)?)))),
        }
    }
    let Some((position, record)) = last else {
        return Ok(None);
    };
    let decoded = match codec::decode_record(position, record) {
        Ok(StoredRecord::Event { chain, body, .. }) => Ok((chain, body.batch_end)),
        Ok(StoredRecord::Pruned { chain, .. }) => Ok((chain, position)),
        Err(e) => Err(bad(e)?),
    };
    Ok(Some((position, decoded)))
}

/// Removes the records of a batch that a crash cut short (its records name a last position
/// past the log's end). Such a batch was never acknowledged as durable: `Fsync` appends
/// return after a flush of the whole batch, and the back-end recovers a prefix of writes.
/// Returns how many records were removed.
fn drop_torn_batch<B: Backend>(
    backend: &B,
    head: u64,
    batch_end: u64,
    anchored: u64,
) -> Result<Result<u64, BadRecord>, Error> {
    // Walk back over the stored values of the batch (a value never holds records of two
    // batches) to its first surviving record, remembering its stream and seq.
    let mut first = head + 1;
    let mut first_event = None;
    let mut values = Vec::new();
    while first > 1 {
        let Some((value_first, value)) = log::value_at(backend, first - 1)? else {
            break;
        };
        let Ok(parsed) = LogValue::parse(value_first, value.as_ref()) else {
            break;
        };
        let Some(Ok((_, record))) = parsed.records().next() else {
            break;
        };
        match codec::decode_record(value_first, record) {
            Ok(StoredRecord::Event { body, .. }) if body.batch_end == batch_end => {
                first_event = Some((body.stream.to_owned(), body.seq));
            }
            _ => break,
        }
        values.push(value_first);
        first = value_first;
    }
    if anchored >= first {
        return Ok(Err(BadRecord {
            position: head + 1,
            reason: format!(
                "batch {first}..={batch_end} is incomplete although position {anchored} was flushed"
            ),
        }));
    }
    let mut batch = WriteBatch::with_capacity(values.len() + 2);
    for value_first in values {
        batch.remove(keys::log(value_first));
    }
    // A crash cannot store the batch's index entry without all of its records, but a log
    // that lost its tail by other means (with the anchor gone too) can: drop the entry and
    // pull the index checkpoint back so the entry is not trusted or rebuilt.
    if index::stored_through(backend)? >= first {
        if let Some((stream, first_seq)) = first_event {
            let key = keys::stream_index(&stream, first_seq + (batch_end - first));
            if let Some(value) = backend.get(&key)? {
                batch.remove(key);
                let kept: Vec<IndexEntry> = index::decode_runs(&stream, value.as_ref())?
                    .into_iter()
                    .filter(|run| run.first_seq < first_seq)
                    .map(|run| IndexEntry {
                        last_seq: run.last_seq.min(first_seq - 1),
                        ..run
                    })
                    .collect();
                if let Some(last) = kept.last() {
                    let key = keys::stream_index(&stream, last.last_seq);
                    batch.put(key, index::encode_runs(kept.iter().copied()));
                }
            }
        }
        batch.put(keys::INDEX_THROUGH, (first - 1).to_be_bytes().to_vec());
    }
    backend.apply(batch)?;
    backend.flush()?;
    tracing::warn!(
        first,
        last = head,
        batch_end,
        "removed a batch cut short by a crash"
    );
    Ok(Ok(head - first + 1))
}

/// Finds the head position and chain hash to continue from, drops a torn last batch,
/// rebuilds the unstored part of the stream index, and detects damage that makes
/// continuing unsafe: an undecodable last record, or a log shorter than (or different
/// from) what the anchor says was flushed.
fn recover<B: Backend>(backend: &B) -> Result<Recovered, Error> {
    let anchor = read_anchor(backend)?;
    let anchored = anchor.map_or(0, |(position, _)| position);
    let read_only = |head, bad| Recovered {
        head,
        chain: GENESIS,
        damage: Some(bad),
        streams: Streams::default(),
    };
    let (head, chain) = match last_record(backend)? {
        None => (0, GENESIS),
        Some((position, Err(bad))) => return Ok(read_only(position, bad)),
        Some((position, Ok((_, batch_end)))) if batch_end > position => {
            match drop_torn_batch(backend, position, batch_end, anchored)? {
                Err(bad) => return Ok(read_only(position, bad)),
                Ok(_) => match last_record(backend)? {
                    None => (0, GENESIS),
                    Some((position, Err(bad))) => return Ok(read_only(position, bad)),
                    Some((position, Ok((chain, _)))) => (position, chain),
                },
            }
        }
        Some((position, Ok((chain, _)))) => (position, chain),
    };
    let damage = match anchor {
        Some((anchored, _)) if anchored > head => Some(BadRecord {
            position: head + 1,
            reason: format!(
                "record missing: the journal had flushed up to position {anchored} but its log ends at {head}"
            ),
        }),
        Some((anchored, anchored_chain)) if anchored > 0 => {
            (chain_at(backend, anchored)? != Some(anchored_chain)).then(|| BadRecord {
                position: anchored,
                reason: "chain hash differs from the anchored one: history was rewritten".into(),
            })
        }
        _ => None,
    };
    if let Some(bad) = damage {
        return Ok(Recovered {
            head,
            chain,
            damage: Some(bad),
            streams: Streams::default(),
        });
    }
    match index::rebuild(backend, head) {
        Ok(streams) => Ok(Recovered {
            head,
            chain,
            damage: None,
            streams,
        }),
        Err(Error::Corrupt { position, reason }) => {
            Ok(read_only(head, BadRecord { position, reason }))
        }
        Err(e) => Err(e),
    }
}

/// Checks (or, on a new journal and with `create`, creates) the sealed key check. A
/// follower (`create` false) of a journal that has none yet accepts the key it was given;
/// a wrong key then shows when the first sealed record does not open.
fn key_check<B: Backend>(
    backend: &B,
    key: Option<&crate::EncryptionKey>,
    create: bool,
) -> Result<Option<Sealer>, Error> {
    let stored = backend.get(keys::KEY_CHECK)?;
    match (stored, key) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(Error::KeyRequired),
        (Some(stored), Some(key)) => {
            let sealer = Sealer::new(key)?;
            let stored = stored.as_ref();
            match stored.split_first() {
                Some((&codec::FORMAT_VERSION, sealed)) => {
                    match sealer.open(keys::KEY_CHECK, sealed) {
                        Some(plain) if plain == KEY_CHECK_PLAINTEXT => Ok(Some(sealer)),
                        _ => Err(Error::WrongKey),
                    }
                }
                Some((&found, _)) => Err(Error::UnsupportedFormat {
                    what: "key check".into(),
                    found,
                    supported: codec::FORMAT_VERSION,
                }),
                None => Err(Error::CorruptMetadata {
                    what: "key check".into(),
                    reason: "empty".into(),
                }),
            }
        }
        (None, Some(key)) => {
            if backend.last_in(&[], &[u8::MAX; 2])?.is_some() {
                return Err(Error::NotEncrypted);
            }
            let sealer = Sealer::new(key)?;
            if !create {
                return Ok(Some(sealer));
            }
            let mut value = vec![codec::FORMAT_VERSION];
            sealer.seal_into(keys::KEY_CHECK, KEY_CHECK_PLAINTEXT, &mut value);
            let mut batch = WriteBatch::with_capacity(1);
            batch.put(keys::KEY_CHECK, value);
            backend.apply(batch)?;
            backend.flush()?;
            Ok(Some(sealer))
        }
    }
}

/// Associated data binding a sealed payload to its record.
fn record_aad(position: u64, seq: u64, stream: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(17 + stream.len());
    aad.push(b'L');
    aad.extend_from_slice(&position.to_be_bytes());
    aad.extend_from_slice(&seq.to_be_bytes());
    aad.extend_from_slice(stream.as_bytes());
    aad
}

/// Associated data binding a sealed snapshot to its stream and sequence number.
fn snapshot_aad(seq: u64, stream: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(9 + stream.len());
    aad.push(b'N');
    aad.extend_from_slice(&seq.to_be_bytes());
    aad.extend_from_slice(stream.as_bytes());
    aad
}

impl<B: Backend> Inner<B> {
    /// Refuses writes to a follower, and to a journal found damaged at open.
    fn writable(&self) -> Result<(), Error> {
        if self.follower {
            return Err(Error::Follower);
        }
        match &self.damage {
            None => Ok(()),
            Some(bad) => Err(Error::Damaged {
                position: bad.position,
                reason: bad.reason.clone(),
            }),
        }
    }

    /// A follower's head moves to `head` (`None`: to the last record the store holds).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    fn follow_to(&self, head: Option<u64>) {
        let head = match head {
            Some(head) => head,
            None => match last_record(&*self.backend) {
                Ok(last) => last.map_or(0, |(position, _)| position),
                Err(error) => {
                    tracing::warn!(%error, "a follower could not read the journal's head");
                    return;
                }
            },
        };
        self.head.fetch_max(head, Ordering::AcqRel);
        self.committer.publish_visible(head);
    }

    /// The index entries of `stream` from `from_seq` on that the stored index may lack:
    /// the writer's in-memory ones, or for a follower, those rebuilt from the records
    /// after the writer's last index checkpoint.
    fn unstored_entries(&self, stream: &str, from_seq: u64) -> Result<Vec<IndexEntry>, Error> {
        if self.follower {
            let head = self.committer.acknowledged();
            return Ok(index::rebuild(&*self.backend, head)?.pending_from(stream, from_seq));
        }
        Ok(self.lock_writer()?.streams.pending_from(stream, from_seq))
    }

    /// The writer state, for reading it.
    fn lock_state(&self) -> MutexGuard<'_, WriterState> {
        // Writer state is only committed after a successful write, so a panic while the
        // lock was held cannot leave it describing writes that did not happen.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The writer state, for writing: refused once a write failed half-way.
    fn lock_writer(&self) -> Result<MutexGuard<'_, WriterState>, Error> {
        let writer = self.lock_state();
        match &writer.broken {
            None => Ok(writer),
            Some(reason) => Err(Error::Poisoned(reason.clone())),
        }
    }

    /// Validates an append (stream id, non-empty, journal not poisoned), then writes it.
    fn checked_write(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<Result<(Appended, u64), VersionConflict>, Error> {
        validate_stream_id(stream)?;
        if events.is_empty() {
            return Err(Error::EmptyBatch {
                stream: stream.to_owned(),
            });
        }
        if let Some(error) = self.committer.failure() {
            return Err(error);
        }
        self.write_batch(stream, expected, events)
    }

    /// Assigns positions, encodes, chains and writes one batch. Returns the ticket of the
    /// write for durability waits.
    fn write_batch(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<Result<(Appended, u64), VersionConflict>, Error> {
        let (mut results, ticket) = self.write_batches(&[StreamBatch {
            stream,
            expected,
            events,
        }])?;
        Ok(results
            .pop()
            .unwrap_or_else(|| {
                Err(VersionConflict {
                    stream: stream.to_owned(),
                    expected,
                    actual: 0,
                })
            })
            .map(|appended| (appended, ticket)))
    }

    /// Writes several streams' batches as one atomic write (one lock, one back-end write,
    /// one ticket). A batch whose expected version does not match is skipped and reported;
    /// the others are written. Later batches to the same stream see the earlier ones.
    fn write_batches(
        &self,
        items: &[StreamBatch<'_>],
    ) -> Result<(Vec<Result<Appended, VersionConflict>>, u64), Error> {
        self.writable()?;
        let timestamp = Timestamp::now();
        let mut guard = self.lock_writer()?;
        let writer = &mut *guard;
        // Pass 1: check versions and assign positions.
        let mut planned = Vec::with_capacity(items.len());
        // Versions as this write leaves them are noted in the streams' states under this
        // write's number (needed only when it has several batches).
        let write = writer.streams.begin_write();
        let several = items.len() > 1;
        let mut next_position = writer.next_position;
        for item in items {
            if item.events.is_empty() {
                return Err(Error::EmptyBatch {
                    stream: item.stream.to_owned(),
                });
            }
            let (stream_key, state) = writer.streams.get_or_load(&*self.backend, item.stream)?;
            let version = state.version_in(write);
            if !item.expected.matches(version) {
                planned.push(Err(VersionConflict {
                    stream: item.stream.to_owned(),
                    expected: item.expected,
                    actual: version,
                }));
                continue;
            }
            let count = item.events.len() as u64;
            let appended = Appended {
                first_position: next_position,
                last_position: next_position + count - 1,
                first_seq: version + 1,
                last_seq: version + count,
            };
            next_position += count;
            if several {
                state.plan(write, appended.last_seq);
            }
            planned.push(Ok((stream_key, appended)));
        }
        let batch_end = next_position - 1;
        // Pass 2: encode and chain.
        let mut chain = writer.chain;
        let records = batch_end + 1 - writer.next_position;
        let mut batch = WriteBatch::with_capacity(
            usize::try_from(records).unwrap_or(0) / pack::PACK_MAX_RECORDS + 1,
        );
        let mut sealed = Vec::new();
        // The pack being filled, with its first position.
        let mut open_pack: Option<(u64, PackWriter)> = None;
        for (item, plan) in items.iter().zip(&planned) {
            let Ok((_, appended)) = plan else { continue };
            let stream = item.stream;
            for (index, (event, offset)) in item.events.iter().zip(0u64..).enumerate() {
                let too_large = |size| Error::RecordTooLarge {
                    stream: stream.to_owned(),
                    index,
                    size,
                    max: self.max_record_bytes,
                };
                if event.payload.len() > self.max_record_bytes {
                    return Err(too_large(event.payload.len()));
                }
                let (position, seq) = (
                    appended.first_position + offset,
                    appended.first_seq + offset,
                );
                let payload = match &self.sealer {
                    Some(sealer) => {
                        sealed.clear();
                        sealer.seal_into(
                            &record_aad(position, seq, stream),
                            &event.payload,
                            &mut sealed,
                        );
                        sealed.as_slice()
                    }
                    None => event.payload.as_slice(),
                };
                let body = RecordBody {
                    position,
                    stream,
                    seq,
                    id: event.id,
                    kind: &event.kind,
                    timestamp,
                    causation_id: event.causation_id,
                    correlation_id: event.correlation_id,
                    batch_end,
                    sealed: self.sealer.is_some(),
                    payload,
                };
                let record_guess = 96 + stream.len() + event.kind.len() + payload.len();
                let (_, pack) = open_pack.get_or_insert_with(|| {
                    let left = usize::try_from(batch_end + 1 - position).unwrap_or(usize::MAX);
                    let guess = left.saturating_mul(record_guess + 4).saturating_add(8);
                    (
                        position,
                        PackWriter::with_capacity(guess.min(pack::PACK_MAX_BYTES + record_guess)),
                    )
                });
                chain = codec::encode_event(&body, &chain, pack.begin_record())
                    .map_err(|e| Error::backend("encoding a record", e))?;
                let len = pack.end_record();
                if len > self.max_record_bytes {
                    return Err(too_large(len));
                }
                if pack.is_full() {
                    if let Some((first, full)) = open_pack.take() {
                        batch.put(keys::log(first), full.finish());
                    }
                }
            }
        }
        if let Some((first, last)) = open_pack.take() {
            batch.put(keys::log(first), last.finish());
        }
        batch.head = batch_end;
        if batch_end < writer.next_position {
            // Every batch conflicted: nothing to write.
            let ticket = self
                .committer
                .written(writer.next_position - 1, &writer.chain);
            return Ok((
                planned.into_iter().map(|p| p.map(|(_, a)| a)).collect(),
                ticket,
            ));
        }
        if let Err(error) = self.backend.apply(batch) {
            writer.broken = Some(format!("a write failed half-way: {error}"));
            return Err(error);
        }
        let mut results = Vec::with_capacity(planned.len());
        for plan in planned {
            results.push(plan.map(|(stream_key, appended)| {
                writer.streams.push(
                    stream_key,
                    IndexEntry {
                        first_position: appended.first_position,
                        first_seq: appended.first_seq,
                        last_seq: appended.last_seq,
                    },
                );
                appended
            }));
        }
        writer.next_position = batch_end + 1;
        writer.chain = chain;
        self.head.store(batch_end, Ordering::Release);
        let ticket = self.committer.written(batch_end, &chain);
        Ok((results, ticket))
    }

    /// Opens a stored payload or snapshot state (`sealed` as its record says), borrowing it
    /// when the journal is not encrypted. `Ok(None)`: stored in clear although the journal
    /// is encrypted; the caller reports that as damage to the item it names.
    fn unseal<'a>(
        &self,
        sealed: bool,
        aad: impl FnOnce() -> Vec<u8>,
        bytes: &'a [u8],
        what: impl FnOnce() -> String,
    ) -> Result<Option<Cow<'a, [u8]>>, Error> {
        match (&self.sealer, sealed) {
            (None, false) => Ok(Some(Cow::Borrowed(bytes))),
            (Some(sealer), true) => match sealer.open(&aad(), bytes) {
                Some(plain) => Ok(Some(Cow::Owned(plain))),
                None => Err(Error::Decrypt { what: what() }),
            },
            (None, true) => Err(Error::KeyRequired),
            (Some(_), false) => Ok(None),
        }
    }

    /// Borrows an event from its stored bytes; `None` for a pruned record.
    fn event_ref<'a>(&self, position: u64, value: &'a [u8]) -> Result<Option<EventRef<'a>>, Error> {
        let body = match codec::decode_record(position, value)? {
            StoredRecord::Pruned { .. } => return Ok(None),
            StoredRecord::Event { body, .. } => body,
        };
        let what = || format!("record at position {position}");
        let aad = || record_aad(position, body.seq, body.stream);
        let Some(payload) = self.unseal(body.sealed, aad, body.payload, what)? else {
            return Err(Error::corrupt(
                position,
                "payload is not sealed although the journal is encrypted",
            ));
        };
        Ok(Some(EventRef {
            position,
            stream: body.stream,
            seq: body.seq,
            id: body.id,
            kind: body.kind,
            timestamp: body.timestamp,
            causation_id: body.causation_id,
            correlation_id: body.correlation_id,
            payload,
        }))
    }

    /// Turns stored bytes into an owned event; `None` for a pruned record.
    fn decode_event(&self, position: u64, value: &[u8]) -> Result<Option<RecordedEvent>, Error> {
        Ok(self.event_ref(position, value)?.map(EventRef::into_owned))
    }

    fn replay(
        &self,
        from_position: u64,
        visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
    ) -> Result<u64, Error> {
        let mut next = from_position.max(1);
        let mut scan = Scan::new(&*self.backend, next, None);
        while let Some(step) = scan.next_record() {
            let (position, record) = step?;
            next = position.saturating_add(1);
            if let Some(event) = self.event_ref(position, record)? {
                if visit(event).is_break() {
                    break;
                }
            }
        }
        Ok(next)
    }

    fn snapshot_seq(&self, stream: &str) -> Result<Option<u64>, Error> {
        match self.backend.get(&keys::snapshot(stream))? {
            None => Ok(None),
            Some(value) => Ok(Some(codec::decode_snapshot(stream, value.as_ref())?.seq)),
        }
    }

    fn write_snapshot(&self, stream: &str, seq: u64, state: &[u8]) -> Result<Option<u64>, Error> {
        self.writable()?;
        let mut writer = self.lock_writer()?;
        let version = writer
            .streams
            .get_or_load(&*self.backend, stream)?
            .1
            .version;
        if seq > version {
            return Err(Error::SnapshotAhead {
                stream: stream.to_owned(),
                seq,
                version,
            });
        }
        let previous = self.snapshot_seq(stream)?;
        if previous.is_some_and(|p| p > seq) {
            return Ok(None);
        }
        let mut sealed = Vec::new();
        let state = match &self.sealer {
            Some(sealer) => {
                sealer.seal_into(&snapshot_aad(seq, stream), state, &mut sealed);
                sealed.as_slice()
            }
            None => state,
        };
        if state.len() > self.max_record_bytes {
            return Err(Error::SnapshotTooLarge {
                stream: stream.to_owned(),
                size: state.len(),
                max: self.max_record_bytes,
            });
        }
        let body = SnapshotBody {
            stream,
            seq,
            timestamp: Timestamp::now(),
            sealed: self.sealer.is_some(),
            state,
        };
        let mut batch = WriteBatch::with_capacity(1);
        batch.put(
            keys::snapshot(stream),
            codec::encode_snapshot(&body).map_err(|e| Error::backend("encoding a snapshot", e))?,
        );
        if self.retention == Retention::PruneCoveredBySnapshot {
            let from_seq = previous.map_or(1, |p| p + 1);
            let pending = writer.streams.pending_from(stream, from_seq);
            // Stubs for the covered records, gathered per stored value and written as
            // that value with its records replaced.
            let mut reader = PointReader::default();
            let mut value_stubs: Option<(u64, Vec<Replacement>)> = None;
            for entry in StreamPositions::new(&*self.backend, stream, from_seq, pending) {
                let (position, entry_seq) = entry?;
                if entry_seq > seq {
                    break;
                }
                let record =
                    codec::decode_record(position, reader.read(&*self.backend, position)?)?;
                let StoredRecord::Event { chain, .. } = &record else {
                    continue;
                };
                let stub = codec::encode_pruned(chain, &record.digest());
                let value_first = reader
                    .value_first()
                    .ok_or_else(|| Error::corrupt(position, "record missing"))?;
                match &mut value_stubs {
                    Some((first, stubs)) if *first == value_first => stubs.push((position, stub)),
                    _ => {
                        if let Some((first, stubs)) = value_stubs.take() {
                            self.put_replaced(&mut batch, first, &stubs)?;
                        }
                        value_stubs = Some((value_first, vec![(position, stub)]));
                    }
                }
            }
            if let Some((first, stubs)) = value_stubs.take() {
                self.put_replaced(&mut batch, first, &stubs)?;
            }
        }
        self.backend.apply(batch)?;
        let head = self.head.load(Ordering::Acquire);
        Ok(Some(self.committer.written(head, &writer.chain)))
    }

    /// Adds to `batch` the stored value starting at `first` with the given records
    /// replaced.
    fn put_replaced(
        &self,
        batch: &mut WriteBatch,
        first: u64,
        replacements: &[Replacement],
    ) -> Result<(), Error> {
        let key = keys::log(first);
        let value = self
            .backend
            .get(&key)?
            .ok_or_else(|| Error::corrupt(first, "record missing"))?;
        batch.put(
            key,
            pack::replace_records(first, value.as_ref(), replacements)?,
        );
        Ok(())
    }

    fn verify(&self) -> Result<VerifyReport, Error> {
        let mut report = VerifyReport {
            records: 0,
            pruned: 0,
            head_position: 0,
            head_hash: GENESIS,
            first_bad: None,
        };
        // Read before the walk: the anchor never runs ahead of what the walk will see.
        let anchor = read_anchor(&*self.backend)?;
        let mut scan = Scan::new(&*self.backend, 1, None);
        loop {
            // Where an error is reported: the record's position, or for damage to the
            // stored value around it, the position the log was expected to hold next.
            let mut at = scan.expected();
            let Some(step) = scan.next_record() else {
                break;
            };
            let bad = |position: u64, reason: String| Some(BadRecord { position, reason });
            let decoded = step.and_then(|(position, bytes)| {
                at = position;
                codec::decode_record(position, bytes).map(|record| (position, record))
            });
            let (position, record) = match decoded {
                Ok(decoded) => decoded,
                Err(Error::Corrupt { position, reason }) => {
                    report.first_bad = bad(position, reason);
                    break;
                }
                Err(e @ Error::UnsupportedFormat { .. }) => {
                    report.first_bad = bad(at, e.to_string());
                    break;
                }
                Err(e) => return Err(e),
            };
            let linked = codec::link(&report.head_hash, &record.digest());
            if &linked != record.chain() {
                report.first_bad = bad(
                    position,
                    "hash chain broken: the record or its predecessor was altered".into(),
                );
                break;
            }
            if matches!(record, StoredRecord::Pruned { .. }) {
                report.pruned += 1;
            }
            report.records += 1;
            report.head_position = position;
            report.head_hash = linked;
            if let Some((anchored, anchored_chain)) = anchor {
                if anchored == position && anchored_chain != linked {
                    report.first_bad = bad(
                        position,
                        "chain hash differs from the anchored one: history was rewritten".into(),
                    );
                    break;
                }
            }
        }
        if let Some((anchored, _)) = anchor {
            if report.first_bad.is_none() && anchored > report.head_position {
                report.first_bad = Some(BadRecord {
                    position: report.head_position + 1,
                    reason: format!(
                        "record missing: the journal had flushed up to position {anchored} but its log ends at {}",
                        report.head_position
                    ),
                });
            }
        }
        Ok(report)
    }
}

/// Positions and sequence numbers of a stream's events from `from_seq`: the stored index
/// entries first, then the in-memory ones taken when the walk started (an entry found in
/// both, because a checkpoint ran meanwhile, is walked once).
struct StreamPositions<B: Backend> {
    stream: String,
    stored: B::Range,
    /// Runs of the stored value being walked.
    stored_runs: std::vec::IntoIter<IndexEntry>,
    pending: std::vec::IntoIter<IndexEntry>,
    /// The next sequence number owed.
    next_seq: u64,
    /// (next position, last seq) of the run being walked.
    current: Option<(u64, u64)>,
    failed: bool,
}

impl<B: Backend> StreamPositions<B> {
    fn new(backend: &B, stream: &str, from_seq: u64, pending: Vec<IndexEntry>) -> Self {
        let prefix = keys::stream_prefix(stream);
        let next_seq = from_seq.max(1);
        StreamPositions {
            stream: stream.to_owned(),
            stored: backend.range(
                &keys::stream_index(stream, next_seq),
                &keys::prefix_end(&prefix),
            ),
            stored_runs: Vec::new().into_iter(),
            pending: pending.into_iter(),
            next_seq,
            current: None,
            failed: false,
        }
    }

    /// The next run to walk: stored runs first, then the in-memory ones.
    fn next_run(&mut self) -> Option<Result<IndexEntry, Error>> {
        loop {
            if let Some(run) = self.stored_runs.next() {
                return Some(Ok(run));
            }
            match self.stored.next() {
                Some(Ok((_, value))) => match index::decode_runs(&self.stream, value.as_ref()) {
                    Ok(runs) => self.stored_runs = runs.into_iter(),
                    Err(e) => return Some(Err(e)),
                },
                Some(Err(e)) => return Some(Err(e)),
                None => return self.pending.next().map(Ok),
            }
        }
    }
}

impl<B: Backend> Iterator for StreamPositions<B> {
    type Item = Result<(u64, u64), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            if let Some((position, last_seq)) = self.current {
                if self.next_seq <= last_seq {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    self.current = Some((position + 1, last_seq));
                    return Some(Ok((position, seq)));
                }
            }
            match self.next_run()? {
                Ok(run) if run.last_seq < self.next_seq => continue,
                Ok(run) => {
                    let start = run.first_seq.max(self.next_seq);
                    self.next_seq = start;
                    self.current =
                        Some((run.first_position + (start - run.first_seq), run.last_seq));
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Events of one stream: index walk + one point read per event (consecutive events of a
/// stream that were appended together are read from one stored value).
struct StreamIter<B: Backend> {
    inner: Arc<Inner<B>>,
    positions: StreamPositions<B>,
    reader: PointReader<B>,
    failed: bool,
}

impl<B: Backend> Iterator for StreamIter<B> {
    type Item = Result<RecordedEvent, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed {
            let step = self.positions.next()?.and_then(|(position, seq)| {
                let record = self.reader.read(&*self.inner.backend, position)?;
                let event = self.inner.decode_event(position, record)?;
                match event {
                    Some(e) if e.stream != self.positions.stream || e.seq != seq => {
                        Err(Error::corrupt(
                            position,
                            format!(
                                "stream index expects {:?} seq {seq}, record holds {:?} seq {}",
                                self.positions.stream, e.stream, e.seq
                            ),
                        ))
                    }
                    other => Ok(other),
                }
            });
            match step {
                Ok(Some(event)) => return Some(Ok(event)),
                Ok(None) => continue, // pruned
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

/// The whole log in position order, checking that positions have no gaps. Yields
/// `(position, None)` for pruned records so callers can track their position.
struct LogIter<B: Backend> {
    inner: Arc<Inner<B>>,
    scan: Scan<B>,
    failed: bool,
}

impl<B: Backend> LogIter<B> {
    fn new(inner: Arc<Inner<B>>, from_position: u64, to_position: Option<u64>) -> Self {
        let scan = Scan::new(&*inner.backend, from_position, to_position);
        LogIter {
            inner,
            scan,
            failed: false,
        }
    }
}

impl<B: Backend> Iterator for LogIter<B> {
    type Item = Result<(u64, Option<RecordedEvent>), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let inner = &self.inner;
        let step = self
            .scan
            .next_record()?
            .and_then(|(position, record)| Ok((position, inner.decode_event(position, record)?)));
        self.failed = step.is_err();
        Some(step)
    }
}

impl<B: Backend> LogSource for Inner<B> {
    fn read_page(
        self: Arc<Self>,
        from_position: u64,
        to_position: u64,
        limit: usize,
        out: &mut std::collections::VecDeque<RecordedEvent>,
    ) -> Result<u64, Error> {
        let mut next = from_position.max(1);
        for step in LogIter::new(self, next, Some(to_position)).take(limit) {
            let (position, event) = step?;
            out.extend(event);
            next = position + 1;
        }
        Ok(next)
    }
}

#[async_trait]
impl<B: Backend> Journal for EventJournal<B> {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult, Error> {
        let (appended, ticket) = match self.inner.checked_write(stream, expected, events)? {
            Ok(done) => done,
            Err(conflict) => return Ok(Err(conflict)),
        };
        if self.inner.durability == Durability::Fsync {
            self.inner.committer.wait_durable(ticket).await?;
        }
        Ok(Ok(appended))
    }

    async fn append_unsynced(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult, Error> {
        Ok(self
            .inner
            .checked_write(stream, expected, events)?
            .map(|(appended, _ticket)| appended))
    }

    async fn append_many_unsynced(
        &self,
        batches: &[StreamBatch<'_>],
    ) -> Result<Vec<AppendResult>, Error> {
        for batch in batches {
            validate_stream_id(batch.stream)?;
        }
        if let Some(error) = self.inner.committer.failure() {
            return Err(error);
        }
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.inner.write_batches(batches)?.0)
    }

    async fn wait_durable(&self, position: u64) -> Result<(), Error> {
        if self.inner.follower {
            // What a follower sees is durable: wait until it sees `position`.
            let mut visible = self.inner.committer.visible();
            return visible
                .wait_for(|head| *head >= position)
                .await
                .map(drop)
                .map_err(|_| Error::Poisoned("the journal closed".into()));
        }
        if self.inner.durability == Durability::Fsync {
            self.inner.committer.wait_durable_position(position).await
        } else {
            match self.inner.committer.failure() {
                Some(error) => Err(error),
                None => Ok(()),
            }
        }
    }

    fn when_durable(&self, position: u64, done: DurableCallback) -> Option<DurableCallback> {
        if self.inner.durability == Durability::Fsync {
            self.inner.committer.when_durable(position, done);
        } else {
            done(match self.inner.committer.failure() {
                Some(error) => Err(error),
                None => Ok(()),
            });
        }
        None
    }

    async fn flush(&self) -> Result<(), Error> {
        self.inner.committer.flush_all().await
    }

    fn flushes(&self) -> u64 {
        self.inner.committer.flushes()
    }

    fn head_position(&self) -> u64 {
        self.inner.head.load(Ordering::Acquire)
    }

    fn acknowledged_head(&self) -> u64 {
        self.inner.committer.acknowledged()
    }

    fn write_failure(&self) -> Option<Error> {
        if let Err(error) = self.inner.writable() {
            return Some(error);
        }
        if let Some(reason) = &self.inner.lock_state().broken {
            return Some(Error::Poisoned(reason.clone()));
        }
        self.inner.committer.failure()
    }

    fn stream_version(&self, stream: &str) -> Result<u64, Error> {
        validate_stream_id(stream)?;
        if self.inner.follower {
            let head = self.inner.committer.acknowledged();
            if let Some(version) = index::rebuild(&*self.inner.backend, head)?.version(stream) {
                return Ok(version);
            }
        } else if let Some(version) = self.inner.lock_state().streams.version(stream) {
            return Ok(version);
        }
        index::stored_version(&*self.inner.backend, stream)
    }

    fn stream_position(&self, stream: &str, from_seq: u64) -> Result<Option<u64>, Error> {
        validate_stream_id(stream)?;
        let pending = self.inner.unstored_entries(stream, from_seq)?;
        StreamPositions::new(&*self.inner.backend, stream, from_seq, pending)
            .next()
            .map(|step| step.map(|(position, _)| position))
            .transpose()
    }

    fn iter_stream(&self, stream: &str, from_seq: u64) -> Result<EventIter, Error> {
        validate_stream_id(stream)?;
        Ok(Box::new(StreamIter {
            positions: StreamPositions::new(
                &*self.inner.backend,
                stream,
                from_seq,
                self.inner.unstored_entries(stream, from_seq)?,
            ),
            inner: Arc::clone(&self.inner),
            reader: PointReader::default(),
            failed: false,
        }))
    }

    fn iter_all(&self, from_position: u64) -> EventIter {
        Box::new(
            LogIter::new(Arc::clone(&self.inner), from_position, None)
                .filter_map(|step| step.map(|(_, event)| event).transpose()),
        )
    }

    fn replay(
        &self,
        from_position: u64,
        visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
    ) -> Result<u64, Error> {
        self.inner.replay(from_position, visit)
    }

    fn subscribe(&self, from_position: u64) -> Subscription {
        let inner: Arc<dyn LogSource> = self.inner.clone();
        Subscription::new(
            Arc::downgrade(&inner),
            self.inner.committer.visible(),
            from_position,
        )
    }

    async fn save_snapshot(&self, stream: &str, seq: u64, state: &[u8]) -> Result<bool, Error> {
        validate_stream_id(stream)?;
        let Some(ticket) = self.inner.write_snapshot(stream, seq, state)? else {
            return Ok(false);
        };
        if self.inner.durability == Durability::Fsync {
            self.inner.committer.wait_durable(ticket).await?;
        }
        Ok(true)
    }

    fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, Error> {
        validate_stream_id(stream)?;
        let Some(value) = self.inner.backend.get(&keys::snapshot(stream))? else {
            return Ok(None);
        };
        let body = codec::decode_snapshot(stream, value.as_ref())?;
        let what = || format!("snapshot of stream {stream:?}");
        let aad = || snapshot_aad(body.seq, stream);
        let Some(state) = self.inner.unseal(body.sealed, aad, body.state, what)? else {
            return Err(Error::CorruptMetadata {
                what: what(),
                reason: "not sealed although the journal is encrypted".into(),
            });
        };
        let state = state.into_owned();
        Ok(Some(Snapshot {
            stream: stream.to_owned(),
            seq: body.seq,
            timestamp: body.timestamp,
            state,
        }))
    }

    fn verify(&self) -> Result<VerifyReport, Error> {
        self.inner.verify()
    }
}

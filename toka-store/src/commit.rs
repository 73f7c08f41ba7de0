//! Group commit: one thread flushes the back-end for every appender waiting on it.
//!
//! Appenders publish the highest position they wrote ([`Committer::written`]) and, in
//! [`Durability::Fsync`](crate::Durability::Fsync) mode, ask for it to be made durable
//! ([`Committer::wait_durable`]). The commit thread wakes, takes the highest written
//! position at that moment, calls [`Backend::flush`] once, and publishes the flushed
//! position through a `watch` channel that wakes every waiter covered by it. While a flush
//! runs, new appends pile up and share the next flush: the number of flushes grows with
//! time spent flushing, not with the number of appenders. Under concurrency the thread
//! may also linger briefly before a flush so that more appends join it ([`Linger`],
//! [`JournalConfig::commit_linger`](crate::JournalConfig::commit_linger)).
//!
//! Instead of a task waiting, a caller can leave a callback ([`Committer::when_durable`]):
//! the thread runs it right after the flush that covers it, in registration order, so a
//! single writer can complete its callers' acknowledgements without waking anyone twice.
//! The thread is woken (a `futex` call) only when it is parked and someone asks for more
//! than it was asked already: while it flushes, requests just raise the target.
//!
//! Writes nobody waits for (unsynced appends) are flushed in the background, at most once
//! per configured interval, in both modes: in `Buffered` mode that is the durability
//! promise, in `Fsync` mode it bounds how long such a write stays invisible to
//! subscriptions. [`Committer::flush_all`] flushes at once.
//!
//! After each successful flush the thread stores the *anchor* (flushed head position and
//! its chain hash) through [`Backend::write_anchor`], so that opening the journal can tell
//! when the engine recovered less than it had flushed.
//!
//! # Failure
//! If a flush fails, the data it covered may or may not be on disk, and retrying `fsync`
//! cannot tell (its error state is consumed). The committer therefore turns *poisoned*:
//! every waiter and every later append gets [`Error::Poisoned`]; reopening the journal
//! recovers what reached the disk.

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::Error;
use crate::backend::Backend;
use crate::codec::{self, Hash};

/// Writes are counted by *tickets*: every batch applied to the back-end takes the next
/// ticket, and a flush covers every ticket issued before it started.
#[derive(Default)]
struct Pending {
    /// Last ticket issued (writes applied to the back-end).
    written: u64,
    /// Highest log position among the written batches, and the chain hash there.
    written_position: u64,
    written_chain: Hash,
    /// Highest ticket someone waits to see flushed.
    requested: u64,
    /// Highest ticket known flushed.
    flushed: u64,
    closing: bool,
    /// Whether the commit thread is parked on the condition variable: only then does a
    /// change need a wake-up (each `notify_one` is a `futex` system call).
    idle: bool,
    /// While the commit thread lingers to gather a larger group ([`Linger`]): the log
    /// position at which it stops waiting; a write reaching it wakes the thread.
    linger_until: Option<u64>,
    /// Callbacks waiting for their ticket to be flushed, in ticket order
    /// ([`Committer::when_durable`]).
    callbacks: Vec<(u64, DurableCallback)>,
    /// Set when the thread stopped for good (a failed flush, or closed): callbacks then
    /// get the failure at once instead of being queued.
    stopped: Option<Failure>,
}

/// Called once a write is durable (`Ok`) or can no longer become so (`Err`), on the
/// commit thread or at once: see [`crate::Journal::when_durable`].
pub type DurableCallback = Box<dyn FnOnce(Result<(), Error>) + Send>;

/// Runs `callbacks` with `result`; a panicking callback is logged and does not stop the
/// commit thread or the callbacks after it.
fn run_callbacks(callbacks: Vec<(u64, DurableCallback)>, result: &Result<(), Failure>) {
    for (_, callback) in callbacks {
        let outcome = result.clone().map_err(|failure| failure.error());
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(outcome))).is_err() {
            tracing::error!("a durability callback panicked");
        }
    }
}

/// What the commit thread publishes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Durable {
    flushed: u64,
    /// Highest log position covered by a successful flush.
    flushed_position: u64,
    /// A flush failed (why: [`Shared::poisoned`], set before this).
    failed: bool,
}

/// Why the commit thread stopped: kept typed for a lost lease, so that callers can tell
/// "another writer owns this journal now" from a broken disk or connection.
#[derive(Debug, Clone)]
enum Failure {
    Fenced { lease: Arc<str>, epoch: i64 },
    Other(Arc<str>),
}

impl Failure {
    fn of(error: &Error) -> Self {
        match error {
            Error::Fenced { lease, epoch } => Failure::Fenced {
                lease: Arc::from(lease.as_str()),
                epoch: *epoch,
            },
            other => Failure::Other(Arc::from(other.to_string())),
        }
    }

    fn error(&self) -> Error {
        match self {
            Failure::Fenced { lease, epoch } => Error::Fenced {
                lease: lease.to_string(),
                epoch: *epoch,
            },
            Failure::Other(reason) => Error::Poisoned(reason.to_string()),
        }
    }
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    durable: watch::Sender<Durable>,
    /// The acknowledged log head that subscribers may read up to.
    visible: watch::Sender<u64>,
    /// Buffered mode: the head becomes visible when written, not when flushed.
    visible_when_written: bool,
    /// Why a flush failed, set *before* `durable.failed` wakes anyone, so that whoever
    /// learns of the failure from the watch finds it here; the hot path checks for
    /// poisoning without touching the watch channel's lock.
    poisoned: OnceLock<Failure>,
    /// Successful flushes of the back-end so far ([`Committer::flushes`]).
    flushes: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // The lock guards plain integers; a panic elsewhere cannot leave them torn.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Work the commit thread does before each flush (the journal checkpoints its stream
/// index); the flag says whether this is the last flush before closing.
pub(crate) type BeforeFlush = Box<dyn Fn(bool) + Send>;

/// Owner of the commit thread. Dropping it flushes once more and joins the thread.
pub(crate) struct Committer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts the commit thread. `interval` is the background flush period for buffered
    /// writes (`None`: flush only on request).
    ///
    /// `head` is the log position already on disk. With `visible_when_written`, appended
    /// positions become visible to subscribers as soon as they are written (buffered
    /// mode); otherwise once they are flushed.
    ///
    /// `head` / `chain` are the recovered head position and its chain hash. Without
    /// `keep_anchor` (a journal opened read-only because it is damaged) the anchor is
    /// never rewritten.
    ///
    /// `linger` bounds how long a requested flush may wait to gather a larger group (see
    /// [`Linger`]); zero never waits.
    pub(crate) fn start<B: Backend>(
        backend: Arc<B>,
        (head, chain): (u64, Hash),
        interval: Option<Duration>,
        linger: Duration,
        visible_when_written: bool,
        keep_anchor: bool,
        before_flush: BeforeFlush,
    ) -> Result<Self, Error> {
        let (durable, _) = watch::channel(Durable {
            flushed_position: head,
            ..Durable::default()
        });
        let (visible, _) = watch::channel(head);
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                written_position: head,
                written_chain: chain,
                ..Pending::default()
            }),
            wake: Condvar::new(),
            durable,
            visible,
            visible_when_written,
            poisoned: OnceLock::new(),
            flushes: AtomicU64::new(0),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("toka-journal-commit".into())
            .spawn(move || {
                commit_loop(
                    &*backend,
                    &thread_shared,
                    interval,
                    Linger::new(linger, head),
                    keep_anchor,
                    &*before_flush,
                );
            })
            .map_err(|e| Error::backend("starting the commit thread", e))?;
        Ok(Committer {
            shared,
            thread: Some(thread),
        })
    }

    /// Records that a batch was applied to the back-end, reaching log `position` (pass the
    /// current head for writes that add no record, like snapshots). Returns the batch's
    /// ticket for [`Committer::wait_durable`].
    ///
    /// Callers hold the journal's writer lock, so positions arrive in order.
    pub(crate) fn written(&self, position: u64, chain: &Hash) -> u64 {
        let (ticket, wake) = {
            let mut pending = self.shared.lock();
            let was_clean = pending.written <= pending.flushed;
            pending.written += 1;
            pending.written_position = position;
            pending.written_chain = *chain;
            // The group the lingering commit thread waits for is complete.
            let gathered = pending.linger_until.is_some_and(|until| position >= until);
            if gathered {
                pending.linger_until = None;
            }
            (pending.written, (was_clean && pending.idle) || gathered)
        };
        if self.shared.visible_when_written {
            publish_max(&self.shared.visible, position);
        }
        if wake {
            // Starts the background flush timer of a buffered journal.
            self.shared.wake.notify_one();
        }
        ticket
    }

    /// Returns once the write with this ticket is durable (or the committer is poisoned).
    pub(crate) async fn wait_durable(&self, ticket: u64) -> Result<(), Error> {
        let mut durable = self.shared.durable.subscribe();
        if self.request(ticket) {
            return Ok(());
        }
        let flushed = durable
            .wait_for(|d| d.flushed >= ticket || d.failed)
            .await
            .map_err(|_| Error::Poisoned("the commit thread stopped".into()))?
            .flushed;
        match self.failure() {
            Some(error) if flushed < ticket => Err(error),
            _ => Ok(()),
        }
    }

    /// Asks the commit thread to flush up to `ticket`; true if that is done already.
    /// Wakes the thread only if it is parked and this raises what it must flush.
    fn request(&self, ticket: u64) -> bool {
        let wake = {
            let mut pending = self.shared.lock();
            if pending.flushed >= ticket {
                return true;
            }
            let raised = ticket > pending.requested;
            pending.requested = pending.requested.max(ticket);
            raised && pending.idle
        };
        if wake {
            self.shared.wake.notify_one();
        }
        false
    }

    /// Calls `done` once log `position` (already written) is durable, from the commit
    /// thread right after the flush that covers it, or at once if it is durable already;
    /// with the failure if the committer is poisoned or closed first. Callbacks run in the
    /// order they were registered.
    pub(crate) fn when_durable(&self, position: u64, done: DurableCallback) {
        if self.shared.durable.borrow().flushed_position >= position {
            done(Ok(()));
            return;
        }
        let wake = {
            let mut pending = self.shared.lock();
            if let Some(failure) = &pending.stopped {
                let error = failure.error();
                drop(pending);
                done(Err(error));
                return;
            }
            // Every ticket issued so far covers `position`, written before this call.
            let ticket = pending.written;
            if pending.flushed >= ticket {
                drop(pending);
                done(Ok(()));
                return;
            }
            pending.callbacks.push((ticket, done));
            let raised = ticket > pending.requested;
            pending.requested = pending.requested.max(ticket);
            raised && pending.idle
        };
        if wake {
            self.shared.wake.notify_one();
        }
    }

    /// Returns once log `position` is durable: like [`Committer::wait_durable`] for the
    /// ticket of the batch that wrote it (any ticket issued so far covers it).
    pub(crate) async fn wait_durable_position(&self, position: u64) -> Result<(), Error> {
        if self.shared.durable.borrow().flushed_position >= position {
            return Ok(());
        }
        let written = self.shared.lock().written;
        self.wait_durable(written).await
    }

    /// Flushes every write applied so far.
    pub(crate) async fn flush_all(&self) -> Result<(), Error> {
        let written = self.shared.lock().written;
        self.wait_durable(written).await
    }

    /// The failure that poisoned the committer, if any.
    pub(crate) fn failure(&self) -> Option<Error> {
        self.shared.poisoned.get().map(Failure::error)
    }

    /// How many times the back-end was flushed successfully since the committer started:
    /// each flush made every write applied before it durable (group commit).
    pub(crate) fn flushes(&self) -> u64 {
        self.shared.flushes.load(AtomicOrdering::Relaxed)
    }

    /// The acknowledged head position (what subscriptions may read up to).
    pub(crate) fn acknowledged(&self) -> u64 {
        *self.shared.visible.borrow()
    }

    /// Raises the acknowledged head to `position` without a flush: a follower's, when it
    /// learns that the journal's writer committed up to there.
    pub(crate) fn publish_visible(&self, position: u64) {
        publish_max(&self.shared.visible, position);
    }

    /// A receiver of the acknowledged head position, for subscriptions.
    pub(crate) fn visible(&self) -> watch::Receiver<u64> {
        self.shared.visible.subscribe()
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("journal commit thread panicked");
            }
        }
    }
}

/// How many recent flushes [`Linger`] remembers the backlog of.
const LINGER_MEMORY: usize = 8;

/// The largest group [`Linger`] waits for (MySQL's
/// `binlog_group_commit_sync_no_delay_count` plays the same part). At this size a
/// flush's fixed CPU is spread over enough records (its commit thread and the engine's
/// I/O threads took ~450 µs per flush on the 2-core machine: ~3.5 µs per record), while
/// waiting for the rest of a larger crowd leaves the disk idle as the workers process
/// it, then the workers idle during the flush. Flushing at this size splits such
/// a crowd into groups that overlap: one flushes while the next gathers. Measured with
/// 256 durable senders (`cargo bench -p toka-actors --bench runtime -- durable-fsync`,
/// the two settings alternating every 300 ms in one process, 20 windows each, 6 runs):
/// 1.05–1.13× the acknowledged sends per second of waiting for the whole crowd. Crowds of
/// up to this size (the node's 64 requests in flight) gather exactly as before.
const LINGER_GROUP_CAP: u64 = 128;

/// The commit thread's choice to wait, before a requested flush, for more appends to
/// join the group: each flush costs the same whatever it covers (the engine's write, its
/// thread hand-offs, the `fsync`), so under concurrency fewer, larger groups cost less CPU
/// per append, at the price of latency.
///
/// The thread lingers only when recent flushes showed concurrency, and never longer than
/// the configured `max` counted from the end of the previous flush (a group spans at
/// most that much time; a flush that took longer leaves nothing to wait for). It stops
/// as soon as the group holds as many records as the *backlog* of a recent flush (the
/// records written but not flushed when it ended: the group it flushed plus those that
/// arrived meanwhile), which estimates how many appenders are at work. So a lone
/// appender never waits, and concurrent ones wait only until the others of their crowd
/// come back (or `max` runs out): the crowd gathers into groups as large as it is. A
/// linger that runs out before that forgets the older backlogs, so after a burst ends at
/// most one flush waits in vain. A crowd larger than [`LINGER_GROUP_CAP`] is flushed in
/// groups of that size.
struct Linger {
    max: Duration,
    /// Log position covered by the last successful flush.
    flushed_position: u64,
    /// The backlogs of the last flushes, a ring ([`LINGER_MEMORY`]).
    backlogs: [u64; LINGER_MEMORY],
    next: usize,
}

impl Linger {
    fn new(max: Duration, head: u64) -> Self {
        Linger {
            max,
            flushed_position: head,
            backlogs: [0; LINGER_MEMORY],
            next: 0,
        }
    }

    /// The group size worth waiting for (0 or 1: do not wait).
    fn target(&self) -> u64 {
        self.backlogs
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .min(LINGER_GROUP_CAP)
    }

    /// Remembers a requested flush up to `position` that ended with the head at `head`.
    fn flushed(&mut self, position: u64, head: u64) {
        self.backlogs[self.next] = head.saturating_sub(self.flushed_position);
        self.next = (self.next + 1) % LINGER_MEMORY;
        self.caught_up(position);
    }

    /// Notes a flush up to `position` nobody asked for (a background one): it tells
    /// nothing of concurrency.
    fn caught_up(&mut self, position: u64) {
        self.flushed_position = self.flushed_position.max(position);
    }

    /// Waits, with the lock held by `pending`, until the group reaches the target, the
    /// linger runs out (`since` + `max`) or the committer closes.
    fn wait<'a>(
        &mut self,
        shared: &'a Shared,
        mut pending: MutexGuard<'a, Pending>,
        since: Instant,
    ) -> MutexGuard<'a, Pending> {
        if self.max.is_zero() {
            return pending;
        }
        let target = self.target();
        let until = self.flushed_position.saturating_add(target);
        let deadline = since + self.max;
        if target < 2 || pending.written_position >= until || Instant::now() >= deadline {
            return pending;
        }
        pending.linger_until = Some(until);
        loop {
            let now = Instant::now();
            if pending.closing || pending.linger_until.is_none() || now >= deadline {
                break;
            }
            pending = shared
                .wake
                .wait_timeout(pending, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if pending.linger_until.take().is_some() && !pending.closing {
            // Ran out: fewer appenders than remembered. Start over from this group.
            let gathered = pending
                .written_position
                .saturating_sub(self.flushed_position);
            self.backlogs = [0; LINGER_MEMORY];
            self.backlogs[0] = gathered;
            self.next = 1;
        }
        pending
    }
}

fn commit_loop<B: Backend>(
    backend: &B,
    shared: &Shared,
    interval: Option<Duration>,
    mut linger: Linger,
    keep_anchor: bool,
    before_flush: &(dyn Fn(bool) + Send),
) {
    let mut last_flush = Instant::now();
    loop {
        let (target, closing, requested) = {
            let mut pending = shared.lock();
            loop {
                if pending.closing {
                    break;
                }
                if pending.requested > pending.flushed {
                    pending = linger.wait(shared, pending, last_flush);
                    break;
                }
                let due = interval.map(|i| last_flush + i);
                if pending.written > pending.flushed && due.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                pending.idle = true;
                pending = match due {
                    Some(due) if pending.written > pending.flushed => {
                        let wait = due.saturating_duration_since(Instant::now());
                        shared
                            .wake
                            .wait_timeout(pending, wait)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                    _ => shared.wake.wait(pending).unwrap_or_else(|e| e.into_inner()),
                };
                pending.idle = false;
            }
            (
                (
                    pending.written,
                    pending.written_position,
                    pending.written_chain,
                ),
                pending.closing,
                pending.requested > pending.flushed,
            )
        };
        let (ticket, position, chain) = target;
        before_flush(closing);
        let started = Instant::now();
        let result = backend.flush();
        last_flush = Instant::now();
        match result {
            Ok(()) => {
                shared.flushes.fetch_add(1, AtomicOrdering::Relaxed);
                tracing::trace!(
                    ticket,
                    position,
                    micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                    "journal flushed"
                );
                let callbacks = {
                    let mut pending = shared.lock();
                    if requested {
                        linger.flushed(position, pending.written_position);
                    } else {
                        linger.caught_up(position);
                    }
                    pending.flushed = ticket;
                    // In ticket order: the covered ones are a prefix.
                    let covered = pending.callbacks.partition_point(|(t, _)| *t <= ticket);
                    let rest = pending.callbacks.split_off(covered);
                    std::mem::replace(&mut pending.callbacks, rest)
                };
                // Visible before the appenders wake: once an append is acknowledged, the
                // acknowledged head (and every subscription) already covers it.
                if !shared.visible_when_written {
                    publish_max(&shared.visible, position);
                }
                shared.durable.send_modify(|d| {
                    d.flushed = d.flushed.max(ticket);
                    d.flushed_position = d.flushed_position.max(position);
                });
                run_callbacks(callbacks, &Ok(()));
                // After waking the appenders: the anchor is not part of their durability.
                if keep_anchor && position > 0 {
                    // Best effort: a missing anchor only weakens a later check.
                    if let Err(error) =
                        backend.write_anchor(&codec::encode_anchor(position, &chain))
                    {
                        tracing::warn!(%error, "could not update the journal anchor");
                    }
                }
            }
            Err(error) => {
                tracing::error!(%error, "journal flush failed; the journal is poisoned");
                let failure = Failure::of(&error);
                // First: a waiter woken by the watch below may ask for the failure at once.
                let _ = shared.poisoned.set(failure.clone());
                shared.durable.send_modify(|d| d.failed = true);
                let callbacks = {
                    let mut pending = shared.lock();
                    pending.stopped = Some(failure.clone());
                    std::mem::take(&mut pending.callbacks)
                };
                run_callbacks(callbacks, &Err(failure));
                // Park until closed: nothing more can be promised.
                let mut pending = shared.lock();
                while !pending.closing {
                    pending = shared.wake.wait(pending).unwrap_or_else(|e| e.into_inner());
                }
                return;
            }
        }
        if closing {
            let callbacks = {
                let mut pending = shared.lock();
                let failure = Failure::Other(Arc::from("the journal was closed"));
                pending.stopped = Some(failure);
                std::mem::take(&mut pending.callbacks)
            };
            let closed = Err(Failure::Other(Arc::from("the journal was closed")));
            run_callbacks(callbacks, &closed);
            return;
        }
    }
}

/// Raises a watched head to `position` (never lowers it).
fn publish_max(head: &watch::Sender<u64>, position: u64) {
    head.send_if_modified(|h| {
        let raise = position > *h;
        if raise {
            *h = position;
        }
        raise
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linger_waits_for_the_largest_recent_crowd_up_to_the_cap() {
        let mut linger = Linger::new(Duration::from_millis(2), 0);
        assert_eq!(linger.target(), 0, "nothing seen: no wait");
        // A flush up to 10 that found 16 written: a crowd of 16.
        linger.flushed(10, 16);
        assert_eq!(linger.target(), 16);
        // A smaller backlog later does not shrink the target while the larger is remembered.
        linger.flushed(16, 20);
        assert_eq!(linger.target(), 16);
        // A crowd of 300: waited for up to the cap only.
        linger.flushed(20, 320);
        assert_eq!(linger.target(), LINGER_GROUP_CAP);
        // Forgotten after LINGER_MEMORY flushes of lone appends (the first of them still
        // finds the crowd's tail).
        linger.flushed(320, 320);
        for position in (321..).take(LINGER_MEMORY) {
            linger.flushed(position, position);
        }
        assert_eq!(linger.target(), 1);
    }
}

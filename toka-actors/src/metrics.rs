//! Cheap runtime counters, read with [`Runtime::metrics`](crate::Runtime::metrics).
//!
//! Every counter is an [`AtomicU64`] bumped with relaxed ordering where its event
//! happens; nothing on the hot path allocates or locks. The one every agent bumps for
//! every message it handles is [`Striped`], so that agents on different cores do not
//! pass one cache line back and forth.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;

/// A snapshot of a runtime's counters, from [`Runtime::metrics`](crate::Runtime::metrics).
///
/// Counters (`*_total`-like fields) only grow over the life of the runtime; each is read
/// on its own, so a snapshot is not one atomic cut across all of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeMetrics {
    /// Messages an agent (durable or transient) handled successfully, live: replays
    /// during recovery are not counted.
    pub messages_handled: u64,
    /// Children restarted by their supervisor after a failure (or the exit of a
    /// permanent child); one-for-all and rest-for-one restarts count every child.
    pub agent_restarts: u64,
    /// Records the journal writer appended to agents' streams in group writes.
    pub journal_appends: u64,
    /// Group writes of the journal writer (each holds one or more appends).
    pub journal_group_writes: u64,
    /// Flushes of the journal to disk ([`Journal::flushes`](toka_store::Journal::flushes)):
    /// each made every append written before it durable, so `journal_appends` ÷
    /// `journal_flushes` is the mean group a flush covered.
    pub journal_flushes: u64,
    /// Total time, in microseconds, spent waiting for appends to become durable: by
    /// senders of durable messages, by agents appending their own records, and by an
    /// agent about to handle a delivered message (usually no wait: its sender waited).
    pub flush_wait_micros: u64,
    /// Number of waits for durability summed in
    /// [`flush_wait_micros`](Self::flush_wait_micros).
    pub flush_waits: u64,
    /// How long the runtime's start (recovery of the tree and every agent) took, in
    /// microseconds.
    pub recovery_micros: u64,
}

/// The live counters behind [`RuntimeMetrics`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) messages_handled: Striped,
    pub(crate) agent_restarts: AtomicU64,
    pub(crate) journal_appends: AtomicU64,
    pub(crate) journal_group_writes: AtomicU64,
    pub(crate) flush_wait_micros: AtomicU64,
    pub(crate) flush_waits: AtomicU64,
    pub(crate) recovery_micros: AtomicU64,
}

/// A duration in whole microseconds, saturating.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Counters {
    /// Adds `n` to `counter`.
    #[inline]
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Records one wait for durability that took `waited`.
    pub(crate) fn flush_waited(&self, waited: Duration) {
        Self::add(&self.flush_wait_micros, micros(waited));
        Self::add(&self.flush_waits, 1);
    }

    /// The current values, with the journal's count of its flushes (counted by the
    /// journal, not here).
    pub(crate) fn snapshot(&self, journal_flushes: u64) -> RuntimeMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RuntimeMetrics {
            messages_handled: self.messages_handled.sum(),
            agent_restarts: get(&self.agent_restarts),
            journal_appends: get(&self.journal_appends),
            journal_group_writes: get(&self.journal_group_writes),
            journal_flushes,
            flush_wait_micros: get(&self.flush_wait_micros),
            flush_waits: get(&self.flush_waits),
            recovery_micros: get(&self.recovery_micros),
        }
    }
}

/// How many cells a [`Striped`] counter has: more than the cores of most hosts that run
/// one runtime, few enough to sum on every read.
const STRIPES: usize = 8;

/// The stripe handed to the next thread that bumps a [`Striped`] counter.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's stripe, the same for every [`Striped`] counter.
    static STRIPE: usize = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
}

/// A counter bumped from many threads at once: one cache-line-padded cell per stripe,
/// threads given stripes in turn, the cells summed when read. A single shared atomic
/// would move its cache line between the cores on every bump.
#[derive(Default)]
pub(crate) struct Striped {
    cells: [CachePadded<AtomicU64>; STRIPES],
}

impl Striped {
    /// Adds `n` to this thread's cell.
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        // A thread whose locals are already gone (one exiting) counts on the first cell.
        let stripe = STRIPE.try_with(|s| *s).unwrap_or(0);
        self.cells[stripe].fetch_add(n, Ordering::Relaxed);
    }

    /// The total of every cell.
    pub(crate) fn sum(&self) -> u64 {
        self.cells.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bumps from many threads, each on its own stripe or sharing one, all add up.
    #[test]
    fn a_striped_counter_sums_every_thread() {
        let counter = Striped::default();
        std::thread::scope(|scope| {
            for _ in 0..2 * STRIPES + 3 {
                scope.spawn(|| {
                    for _ in 0..1_000 {
                        counter.add(1);
                    }
                });
            }
        });
        counter.add(5);
        assert_eq!(counter.sum(), (2 * STRIPES as u64 + 3) * 1_000 + 5);
    }
}

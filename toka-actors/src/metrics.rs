//! Cheap runtime counters, read with [`Runtime::metrics`](crate::Runtime::metrics).
//!
//! Every counter is an [`AtomicU64`] bumped with relaxed ordering where its event
//! happens; nothing on the hot path allocates or locks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    pub(crate) messages_handled: AtomicU64,
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

    /// The current values.
    pub(crate) fn snapshot(&self) -> RuntimeMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RuntimeMetrics {
            messages_handled: get(&self.messages_handled),
            agent_restarts: get(&self.agent_restarts),
            journal_appends: get(&self.journal_appends),
            journal_group_writes: get(&self.journal_group_writes),
            flush_wait_micros: get(&self.flush_wait_micros),
            flush_waits: get(&self.flush_waits),
            recovery_micros: get(&self.recovery_micros),
        }
    }
}

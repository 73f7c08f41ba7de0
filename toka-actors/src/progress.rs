//! Handled-message progress: the highest message sequence each durable agent has
//! handled, noted by the agent in a shared cell after every message and recorded by the
//! writer in [`PROGRESS_STREAM`](crate::record::PROGRESS_STREAM) now and then, many agents
//! per record (group commit). Recovery replays the messages at or below an agent's
//! recorded progress with effects suppressed, and handles the rest live.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dashmap::DashMap;

use crate::AgentId;

/// Every durable agent's handled counter, and whether any moved since the last record.
#[derive(Default)]
pub(crate) struct Progress {
    handled: DashMap<AgentId, Arc<AtomicU64>>,
    dirty: AtomicBool,
}

/// One agent's handled counter. One pointer: it is kept by every durable agent (the
/// flag saying that a counter moved is the [`Progress`]'s, passed to [`HandledCell::mark`]).
pub(crate) struct HandledCell {
    seq: Arc<AtomicU64>,
}

impl HandledCell {
    /// The highest message sequence handled.
    pub(crate) fn get(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Notes message `seq` handled, in the counters of `progress` (which made this cell).
    pub(crate) fn mark(&self, seq: u64, progress: &Progress) {
        self.seq.store(seq, Ordering::Release);
        // Read first: a store on every message would bounce the line between cores.
        if !progress.dirty.load(Ordering::Relaxed) {
            progress.dirty.store(true, Ordering::Release);
        }
    }
}

impl Progress {
    /// Progress as recovered from the journal.
    pub(crate) fn recovered(handled: HashMap<AgentId, u64>) -> Self {
        Progress {
            handled: handled
                .into_iter()
                .map(|(id, seq)| (id, Arc::new(AtomicU64::new(seq))))
                .collect(),
            dirty: AtomicBool::default(),
        }
    }

    /// `id`'s counter (created at 0).
    pub(crate) fn cell(&self, id: &AgentId) -> HandledCell {
        let seq = Arc::clone(
            self.handled
                .entry(id.clone())
                .or_insert_with(|| Arc::new(AtomicU64::new(0)))
                .value(),
        );
        HandledCell { seq }
    }

    /// Every counter's value now.
    pub(crate) fn current(&self) -> HashMap<AgentId, u64> {
        self.handled
            .iter()
            .map(|e| (e.key().clone(), e.value().load(Ordering::Acquire)))
            .collect()
    }

    /// The counters that differ from `recorded`, if any moved since the last call.
    pub(crate) fn changes(&self, recorded: &HashMap<AgentId, u64>) -> Vec<(AgentId, u64)> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        self.handled
            .iter()
            .filter_map(|entry| {
                let seq = entry.value().load(Ordering::Acquire);
                (recorded.get(entry.key()) != Some(&seq)).then(|| (entry.key().clone(), seq))
            })
            .collect()
    }
}

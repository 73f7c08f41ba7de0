//! Reading back what the journal holds: the runtime's start (the tree, progress, and one
//! read-ahead pass for every agent), and each durable agent's history (its snapshot and
//! the records after it), classified for the agent actor to replay.
//!
//! It reads the journal synchronously, so the long reads (the start-up pass, a whole
//! stream) run on tokio's blocking pool, never on an async worker. Start-up cost follows
//! what recovery needs: the read-ahead pass begins at the oldest record some agent will
//! replay (after its snapshot and its incarnation's base), not at the start of the log.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use rustc_hash::FxHashMap;
use toka_store::{Journal, Snapshot};
use tokio::sync::watch;

use crate::record::{
    self, AttemptRecord, DeadRecord, IntentRecord, Outcome, ProgressRecord, RecordKind,
    SnapshotRecord, StepsRecord, TimerRecord,
};
use crate::tree::Tree;
use crate::{AgentId, EffectId, Error, TimerId};

/// One runtime record of an agent's stream.
pub(crate) struct Rec {
    pub(crate) seq: u64,
    pub(crate) kind: RecordKind,
    /// The record format that wrote it.
    pub(crate) format: u32,
    /// Its payload: its own bytes, or a share of the block the read-ahead pass copied
    /// many records' payloads into.
    pub(crate) payload: Bytes,
}

impl Rec {
    /// The record at `seq` of `stream`, stored as `kind`; `None` if it is not one of the
    /// runtime's.
    fn read(
        stream: &str,
        seq: u64,
        kind: &str,
        payload: impl FnOnce() -> Bytes,
    ) -> Result<Option<Rec>, Error> {
        Ok(
            RecordKind::parse(kind, stream, seq)?.map(|(kind, format)| Rec {
                seq,
                kind,
                format,
                payload: payload(),
            }),
        )
    }
}

/// What the start-up pass read for one agent's first recovery.
pub(crate) struct ReadAhead {
    /// The agent's latest snapshot, as the pass found it (nothing writes one before the
    /// agent recovers).
    snapshot: Option<Snapshot>,
    /// A gap-free run of its records from the first one it will replay on (all of them,
    /// unless the pass ran out of budget).
    records: Vec<Rec>,
}

/// What the start-up pass read for each durable agent's first recovery, handed out as
/// agents recover. The pass runs on the blocking pool while the tree starts (spawning
/// thousands of agents and reading the log then share the two kinds of threads instead of
/// taking turns); an agent that reaches its history before the pass is done waits for it.
pub(crate) struct Preloaded {
    read: DashMap<AgentId, ReadAhead>,
    done: watch::Sender<bool>,
}

impl Preloaded {
    /// Waiting for a pass that [`Preloaded::finish`] will end.
    pub(crate) fn pending() -> Self {
        Preloaded {
            read: DashMap::new(),
            done: watch::channel(false).0,
        }
    }

    /// Ends the pass with what it read; after a failure agents read their own histories.
    pub(crate) fn finish(&self, result: Result<HashMap<AgentId, ReadAhead>, Error>) {
        match result {
            Ok(read) => {
                for (id, ahead) in read {
                    self.read.insert(id, ahead);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "reading ahead for recovery failed; each agent reads its own history");
            }
        }
        self.done.send_replace(true);
    }

    /// What the pass read for `id` (once: it is handed over), waiting for the pass to end.
    pub(crate) async fn take(&self, id: &AgentId) -> Option<ReadAhead> {
        let mut done = self.done.subscribe();
        // The sender lives as long as `self`, so this only ends early if it is dropped.
        let _ = done.wait_for(|done| *done).await;
        self.read.remove(id).map(|(_, read)| read)
    }
}

/// What the runtime's start reads before anything runs.
pub(crate) struct Recovered {
    pub(crate) tree: Tree,
    pub(crate) progress: HashMap<AgentId, u64>,
}

/// Reads the tree and the progress. Runs on the blocking pool.
pub(crate) async fn read_start(journal: Arc<dyn Journal>) -> Result<Recovered, Error> {
    let read = move || {
        let tree = read_tree(&*journal)?;
        let progress = read_progress(&*journal)?;
        Ok(Recovered { tree, progress })
    };
    off_worker(read).await
}

/// Starts the read-ahead pass for every durable agent of `tree` (within `budget` bytes)
/// on the blocking pool; it ends in `into`.
pub(crate) fn start_read_ahead(
    journal: Arc<dyn Journal>,
    tree: &Tree,
    budget: usize,
    into: Arc<Preloaded>,
) {
    let bases: HashMap<AgentId, u64> = tree
        .walk()
        .into_iter()
        .filter(|(id, node)| node.durable() && !tree.is_elsewhere(id))
        .map(|(id, node)| (id, node.base))
        .collect();
    let pass = tokio::task::spawn_blocking(move || preload(&*journal, &bases, budget));
    tokio::spawn(async move {
        let result = pass.await.unwrap_or_else(|e| {
            Err(Error::Internal(format!(
                "the read-ahead pass did not finish: {e}"
            )))
        });
        into.finish(result);
    });
}

/// Runs synchronous journal reads on the blocking pool.
pub(crate) async fn off_worker<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| Error::Internal(format!("a journal read did not finish: {e}")))?
}

/// The supervision tree, as the journal records it.
fn read_tree(journal: &dyn Journal) -> Result<Tree, Error> {
    let mut tree = Tree::default();
    for event in journal.iter_stream(record::TREE_STREAM, 1)? {
        let event = event?;
        tree.apply(record::decode_tree(&event.kind, event.seq, &event.payload)?);
    }
    Ok(tree)
}

/// The handled progress of every durable agent: the stream's snapshot, then its tail.
fn read_progress(journal: &dyn Journal) -> Result<HashMap<AgentId, u64>, Error> {
    let mut handled = HashMap::new();
    let mut from = 1;
    let stream = record::PROGRESS_STREAM;
    if let Some(snapshot) = journal.load_snapshot(stream)? {
        let progress: ProgressRecord = record::decode(stream, snapshot.seq, &snapshot.state)?;
        handled.extend(progress.handled);
        from = snapshot.seq + 1;
    }
    for event in journal.iter_stream(stream, from)? {
        let event = event?;
        RecordKind::parse(&event.kind, stream, event.seq)?;
        let progress: ProgressRecord = record::decode(stream, event.seq, &event.payload)?;
        handled.extend(progress.handled);
    }
    Ok(handled)
}

/// Reads the snapshot and the records of every agent in `agents` that recovery will
/// replay (those after the agent's snapshot and after its incarnation's base, the map's
/// values), in one sequential pass over the log from the oldest of them, up to about
/// `budget` bytes of payload. Each agent's list is a gap-free run of its stream from there
/// on; recovery reads whatever follows from the stream itself.
fn preload(
    journal: &dyn Journal,
    agents: &HashMap<AgentId, u64>,
    budget: usize,
) -> Result<HashMap<AgentId, ReadAhead>, Error> {
    let mut preloaded = HashMap::with_capacity(agents.len());
    if agents.is_empty() || budget == 0 {
        return Ok(preloaded);
    }
    let started = Instant::now();
    // Each agent's snapshot and where its tail begins, looked up in parts at once (each
    // is a read of the journal, cold at start-up).
    let agents: Vec<(&AgentId, u64)> = agents.iter().map(|(id, base)| (id, *base)).collect();
    let per_part = agents.len().div_ceil(READ_AHEAD_PARTS as usize).max(1);
    let looked_up = in_parallel(agents.chunks(per_part), "look-up", |part| {
        tails(journal, part)
    });
    // Stream → (index in `ids`, first seq it replays).
    let mut wanted: FxHashMap<String, (usize, u64)> = FxHashMap::default();
    wanted.reserve(agents.len());
    let mut ids = Vec::with_capacity(agents.len());
    let mut first_position = u64::MAX;
    for tail in looked_up
        .into_iter()
        .collect::<Result<Vec<_>, Error>>()?
        .into_iter()
        .flatten()
    {
        // Where this agent's tail begins in the log; nothing to read if it has none.
        if let Some(first) = tail.first_position {
            first_position = first_position.min(first);
            wanted.insert(tail.id.stream().to_owned(), (ids.len(), tail.from));
            ids.push(tail.id.clone());
        }
        preloaded.insert(
            tail.id.clone(),
            ReadAhead {
                snapshot: tail.snapshot,
                records: Vec::new(),
            },
        );
    }
    if wanted.is_empty() {
        return Ok(preloaded);
    }
    // The log from `first_position` on, in parts read at once: while agents wait for
    // this pass, the other core has nothing else to do.
    let head = journal.head_position();
    let parts = if head.saturating_sub(first_position) >= SPLIT_SCAN_AT {
        READ_AHEAD_PARTS
    } else {
        1
    };
    let step = (head.saturating_sub(first_position) + 1).div_ceil(parts);
    let bounds: Vec<(u64, u64)> = (0..parts)
        .map(|i| {
            let from = first_position + i * step;
            let to = if i + 1 == parts {
                u64::MAX
            } else {
                from + step
            };
            (from, to)
        })
        .collect();
    let (wanted, streams) = (&wanted, ids.len());
    let part_budget = budget / usize::try_from(parts).unwrap_or(1).max(1);
    let scans = in_parallel(bounds.iter().copied(), "scan", |(from, to)| {
        scan(journal, wanted, streams, from, to, part_budget)
    });
    let (mut bytes, mut records) = (0, 0);
    for scanned in scans {
        let scanned = scanned?;
        bytes += scanned.bytes;
        records += scanned.records;
        for (index, recs) in scanned.lists.into_iter().enumerate() {
            if recs.is_empty() {
                continue;
            }
            if let Some(read) = ids.get(index).and_then(|id| preloaded.get_mut(id)) {
                read.records.extend(recs);
            }
        }
        // A part cut short by the budget leaves a gap before the next part's records:
        // those are not used (each agent's list must be a gap-free run).
        if !scanned.complete {
            break;
        }
    }
    tracing::debug!(
        records,
        bytes,
        first_position,
        parts,
        millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "read ahead for recovery"
    );
    Ok(preloaded)
}

/// Parts the read-ahead pass reads at once (the machines Toka is measured on have two
/// cores; more parts would compete with the agents that start meanwhile).
const READ_AHEAD_PARTS: u64 = 2;
/// A log shorter than this is read in one part.
const SPLIT_SCAN_AT: u64 = 64 * 1024;

/// Runs `work` on each of `parts` at once, a thread each; the results in `parts`' order
/// (a part whose thread panicked is an error naming `what` it did).
fn in_parallel<P: Send, R: Send>(
    parts: impl Iterator<Item = P>,
    what: &str,
    work: impl Fn(P) -> Result<R, Error> + Sync,
) -> Vec<Result<R, Error>> {
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts.map(|part| scope.spawn(move || work(part))).collect();
        handles
            .into_iter()
            .map(|handle| {
                handle.join().unwrap_or_else(|_| {
                    Err(Error::Internal(format!("a read-ahead {what} panicked")))
                })
            })
            .collect()
    })
}

/// One agent's snapshot and where its replay begins, looked up by the read-ahead pass.
struct Tail<'a> {
    id: &'a AgentId,
    snapshot: Option<Snapshot>,
    /// The first sequence number it replays.
    from: u64,
    /// The log position of that record, if there is one.
    first_position: Option<u64>,
}

/// Looks up each agent's snapshot and tail: `agents` are (id, incarnation base).
fn tails<'a>(journal: &dyn Journal, agents: &[(&'a AgentId, u64)]) -> Result<Vec<Tail<'a>>, Error> {
    agents
        .iter()
        .map(|&(id, base)| {
            let snapshot = journal.load_snapshot(id.stream())?;
            let from = snapshot
                .as_ref()
                .map_or(1, |snapshot| snapshot.seq + 1)
                .max(base + 1);
            let first_position = journal.stream_position(id.stream(), from)?;
            Ok(Tail {
                id,
                snapshot,
                from,
                first_position,
            })
        })
        .collect()
}

/// What one part of the read-ahead pass read.
struct Scanned {
    /// Each wanted stream's records in the part, in order (by the stream's index).
    lists: Vec<Vec<Rec>>,
    bytes: usize,
    records: usize,
    /// Whether the part was read to its end (not cut short by the budget).
    complete: bool,
}

/// Reads the wanted streams' records at positions `from..to`, up to about `budget`
/// bytes of payload; `wanted` maps each of the `streams` streams to its index and the
/// first sequence number wanted.
fn scan(
    journal: &dyn Journal,
    wanted: &FxHashMap<String, (usize, u64)>,
    streams: usize,
    from: u64,
    to: u64,
    budget: usize,
) -> Result<Scanned, Error> {
    let mut scanned = Scanned {
        lists: Vec::new(),
        bytes: 0,
        records: 0,
        complete: true,
    };
    scanned.lists.resize_with(streams, Vec::new);
    let mut block = BytesMut::new();
    let mut failed = None;
    journal.replay(from, &mut |event| {
        if event.position >= to {
            return ControlFlow::Break(());
        }
        let Some(&(index, first_seq)) = wanted.get(event.stream) else {
            return ControlFlow::Continue(());
        };
        if event.seq < first_seq {
            return ControlFlow::Continue(());
        }
        scanned.bytes += event.payload.len() + 64;
        scanned.records += 1;
        let payload = || copy_into(&mut block, &event.payload);
        match Rec::read(event.stream, event.seq, event.kind, payload) {
            Ok(Some(rec)) => {
                if let Some(list) = scanned.lists.get_mut(index) {
                    list.push(rec);
                }
            }
            Ok(None) => {}
            Err(error) => {
                failed = Some(error);
                return ControlFlow::Break(());
            }
        }
        if scanned.bytes > budget {
            scanned.complete = false;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    match failed {
        Some(error) => Err(error),
        None => Ok(scanned),
    }
}

/// Payloads are copied into shared blocks of this size (one allocation per block, not
/// one per record).
const PAYLOAD_BLOCK: usize = 64 * 1024;

/// Copies `payload` to the end of `block` (a new block when it is full) and takes it
/// out as its own share of the block.
fn copy_into(block: &mut BytesMut, payload: &[u8]) -> Bytes {
    if block.capacity() - block.len() < payload.len() {
        *block = BytesMut::with_capacity(PAYLOAD_BLOCK.max(payload.len()));
    }
    block.extend_from_slice(payload);
    block.split().freeze()
}

/// The runtime records of `id`'s stream with sequence numbers `from..=to`.
pub(crate) fn read_records(
    journal: &dyn Journal,
    id: &AgentId,
    from: u64,
    to: u64,
) -> Result<Vec<Rec>, Error> {
    let mut records = Vec::new();
    if from > to {
        return Ok(records);
    }
    for event in journal.iter_stream(id.stream(), from)? {
        let event = event?;
        if event.seq > to {
            break;
        }
        let payload = event.payload;
        if let Some(rec) = Rec::read(id.stream(), event.seq, &event.kind, || payload.into())? {
            records.push(rec);
        }
    }
    Ok(records)
}

/// A durable agent's history since its snapshot, classified for replay.
#[derive(Default)]
pub(crate) struct History {
    /// The snapshot to start from, and the sequence number it was taken at.
    pub(crate) snapshot: Option<(u64, SnapshotRecord)>,
    /// Messages after it, in order.
    pub(crate) messages: Vec<Rec>,
    /// What the journal recorded for the steps of those messages' handlings.
    pub(crate) recorded: Recorded,
    /// Failed attempts per message: how many, and the last error.
    pub(crate) attempts: HashMap<u64, (u32, String)>,
    /// Dead-lettered messages.
    pub(crate) dead: HashSet<u64>,
}

/// What the journal recorded of handlings being replayed, looked up by step.
#[derive(Default)]
pub(crate) struct Recorded {
    pub(crate) timers: HashMap<TimerId, TimerRecord>,
    pub(crate) replies: HashMap<EffectId, Outcome>,
    pub(crate) intents: HashMap<EffectId, IntentRecord>,
    /// The outward steps of each handling that made any, by message.
    pub(crate) steps: HashMap<u64, StepsRecord>,
}

/// Reads agent `id`'s history: its snapshot (if taken after `base`), then its records up
/// to `version` after it, starting with what the start-up pass read ahead.
pub(crate) async fn read_history(
    journal: Arc<dyn Journal>,
    preloaded: Option<ReadAhead>,
    id: AgentId,
    base: u64,
    version: u64,
) -> Result<History, Error> {
    if version <= base {
        // Nothing of this incarnation is journaled (a new agent's empty stream, or one
        // that ends at the incarnation's marker): no record follows the base, and no
        // snapshot is newer than it (a snapshot is taken at a handled message). Most
        // recoveries of a running node are of such agents, just spawned: no read, and no
        // trip to the blocking pool (whose threads would outlive the spawn).
        return Ok(History::default());
    }
    let preloaded_is_some = preloaded.is_some();
    let read = move || history(&*journal, preloaded, &id, base, version);
    // Read ahead by the start-up pass, what is left to read is a snapshot lookup and a
    // short tail: cheaper here than a hand-off to the blocking pool (measured with
    // 10,000 agents). Otherwise the whole stream is read, off the async workers.
    if preloaded_is_some {
        read()
    } else {
        off_worker(read).await
    }
}

/// [`read_history`]'s work.
fn history(
    journal: &dyn Journal,
    preloaded: Option<ReadAhead>,
    id: &AgentId,
    base: u64,
    version: u64,
) -> Result<History, Error> {
    let stream = id.stream();
    let mut history = History::default();
    let (snapshot, mut records) = match preloaded {
        Some(read) => (read.snapshot, read.records),
        None => (journal.load_snapshot(stream)?, Vec::new()),
    };
    // A snapshot at or below the base is an earlier incarnation's (the base is a marker,
    // never a handled message): the state starts from `init` instead.
    if let Some(snapshot) = snapshot
        && snapshot.seq > base
    {
        let saved = record::decode_snapshot(stream, snapshot.seq, &snapshot.state)?;
        history.snapshot = Some((snapshot.seq, saved));
    }
    let after = history.snapshot.as_ref().map_or(base, |(seq, _)| *seq);
    records.retain(|r| r.seq > after && r.seq <= version);
    let next = records.last().map_or(after, |r| r.seq) + 1;
    records.extend(read_records(journal, id, next, version)?);
    for rec in records {
        history.classify(stream, rec)?;
    }
    Ok(history)
}

impl History {
    fn classify(&mut self, stream: &str, rec: Rec) -> Result<(), Error> {
        let seq = rec.seq;
        let recorded = &mut self.recorded;
        match rec.kind {
            RecordKind::Msg => self.messages.push(rec),
            RecordKind::Timer => {
                let timer: TimerRecord = record::decode(stream, seq, &rec.payload)?;
                recorded.timers.insert(timer.id, timer);
            }
            RecordKind::Intent => {
                let intent: IntentRecord = record::decode(stream, seq, &rec.payload)?;
                recorded.intents.insert(intent.effect, intent);
            }
            RecordKind::Reply | RecordKind::Result => {
                let reply = record::decode_reply_in(rec.format, stream, seq, &rec.payload)?;
                recorded.replies.insert(reply.effect, reply.outcome);
            }
            RecordKind::Steps => {
                let steps: StepsRecord = record::decode(stream, seq, &rec.payload)?;
                recorded.steps.insert(steps.seq, steps);
            }
            RecordKind::Attempt => {
                let attempt: AttemptRecord = record::decode(stream, seq, &rec.payload)?;
                let entry = self.attempts.entry(attempt.seq).or_default();
                entry.0 += 1;
                entry.1 = attempt.error;
            }
            RecordKind::Dead => {
                let letter: DeadRecord = record::decode(stream, seq, &rec.payload)?;
                self.dead.insert(letter.seq);
            }
            RecordKind::Halt
            | RecordKind::Spawn
            | RecordKind::Stop
            | RecordKind::Progress
            | RecordKind::Incarnation => {}
        }
        Ok(())
    }
}

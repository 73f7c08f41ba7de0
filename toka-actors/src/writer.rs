//! The journal actor: the single writer of the runtime's records.
//!
//! Every append of the runtime goes through this actor, one at a time, so that the order
//! in which messages enter an agent's stream is the order in which they reach its
//! mailbox. It never waits for a flush: after each group write it leaves the rest to the
//! journal ([`Journal::when_durable`]), which, right after the flush that makes the group
//! durable, hands each message to its agent's live actor (if one is registered) and then
//! acknowledges each sender, group after group, on its commit thread. Concurrent senders
//! share one flush (group commit) while the writer keeps ordering, and each sender and
//! each agent is woken once: a sender by its acknowledgement, an agent by a message it
//! can handle at once. (Before, the writer forwarded and acknowledged at once, and the
//! sender and the agent each waited for the flush on the journal's watch: two wake-ups
//! each, which the node's profile showed as a fifth of its CPU in context switches.)
//!
//! It also group-commits progress: agents note the last message they handled in a shared
//! counter, and the writer periodically records every counter that moved in one
//! [`ProgressRecord`].
//!
//! # Where the writes run
//! The journal's writes are synchronous (sled inserts, encoding, hashing); the writer runs
//! each group write on its own worker, while appends queue up in its mailbox and form the
//! next group. Moving the write to tokio's blocking pool was measured
//! (`cargo bench -p toka-actors --bench runtime -- ask-under-flood`, 2 cores): it halved
//! the durable flood's throughput and raised a concurrent transient ask's p99 from ~10 µs
//! to 50–100 µs, because each group then pays a hand-off to another thread and back
//! through tokio's injection queue, and a third busy thread competes with the two
//! workers; `block_in_place` cost 25 % of the throughput for no better tail. Recovery's
//! reads, which are long and off the hot path, do run on the blocking pool.
//!
//! # Failure
//! A journal error is returned to the caller of that append. If the actor itself fails,
//! the root supervisor (which owns the writer) restarts it; its routing table lives in
//! the [`Directory`], so nothing is lost but the appends queued in its mailbox, whose
//! callers get an error.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use toka_store::{Appended, DurableCallback, ExpectedVersion, Journal, NewEvent, StreamBatch};
use tokio::sync::oneshot;

use crate::directory::Directory;
use crate::envelope::{Envelope, ReplyPort};
use crate::metrics::Counters;
use crate::progress::Progress;
use crate::record::{self, ProgressRecord, RecordKind};
use crate::{AgentId, Error};

/// What the writer works with (handed over by the kernel; the writer does not see it).
pub(crate) struct WriterParts {
    pub(crate) journal: Arc<dyn Journal>,
    pub(crate) directory: Arc<Directory>,
    pub(crate) progress: Arc<Progress>,
    pub(crate) metrics: Arc<Counters>,
}

/// How often progress is recorded.
pub(crate) const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Every this many progress records, the whole progress map is saved as the progress
/// stream's snapshot, so start-up reads a bounded tail of the stream.
pub(crate) const PROGRESS_SNAPSHOT_EVERY: u64 = 64;

/// Requests to the writer.
pub(crate) enum WriterMsg {
    /// Append one event to an agent's stream, routed as `routing` says; answer `ack`, if
    /// any, once written, or with `durable`, once durable.
    Append {
        id: AgentId,
        event: NewEvent,
        routing: Routing,
        ack: Option<oneshot::Sender<Result<Appended, Error>>>,
        durable: bool,
    },
    /// Append a record to a runtime stream (tree).
    AppendTo {
        stream: &'static str,
        event: NewEvent,
        ack: oneshot::Sender<Result<Appended, Error>>,
    },
    /// Route later appends for `id` to `actor`; answers the stream version at that point,
    /// which is what the agent must recover up to.
    Register {
        id: AgentId,
        actor: ActorRef<Envelope>,
        ack: oneshot::Sender<Result<u64, Error>>,
    },
    /// Begin a new incarnation of `id` (it is being spawned): if its stream holds records
    /// (an earlier incarnation's, or messages sent to it after its stop), append an
    /// incarnation marker after them and answer its sequence number, the new
    /// incarnation's base; answer 0 for an empty stream. Done by the writer, after the
    /// appends gathered before it, so that no earlier append can land after the marker.
    Incarnation {
        id: AgentId,
        kind: String,
        ack: oneshot::Sender<Result<u64, Error>>,
    },
    /// Record progress now (periodic, and before shutdown): reads the handled counters
    /// and queues [`WriterMsg::WriteProgress`] with what moved.
    FlushProgress {
        ack: Option<oneshot::Sender<Result<(), Error>>>,
    },
    /// Write a progress record. Queued by `FlushProgress` *after* it read the counters,
    /// so it comes behind every append an agent queued before marking a message handled
    /// (an agent's steps record, which it does not wait for): progress never gets ahead
    /// of what it counts.
    WriteProgress {
        changes: Vec<(AgentId, u64)>,
        ack: Option<oneshot::Sender<Result<(), Error>>>,
    },
    /// Write the appends gathered so far (queued behind them by the first of them). With
    /// `last_call`, the writer first queues one more `Commit` behind whatever arrived
    /// meanwhile, if the group is still small: one more pass over the mailbox gathers
    /// the appends that queued while the previous group was written.
    Commit { last_call: bool },
}

/// What the writer does with an appended record besides acknowledging it.
pub(crate) enum Routing {
    /// A message: hand it to the agent's live actor (parking `reply` for an ask).
    Deliver(Option<ReplyPort>),
    /// One of the agent's own records, acknowledged to it.
    Own,
    /// One of the agent's own records that it does not wait for: tell its actor the
    /// record's sequence number, in stream order with its messages.
    OwnNotify,
}

/// An append gathered for the next group write.
struct PendingAppend {
    id: AgentId,
    event: NewEvent,
    routing: Routing,
    ack: Option<oneshot::Sender<Result<Appended, Error>>>,
    /// Acknowledge only once durable.
    durable: bool,
}

/// What a group write leaves to do once it is durable, in stream order.
#[derive(Default)]
struct AfterDurable {
    /// The group's highest log position.
    position: u64,
    /// Messages and own-record notices for agents' live actors.
    routes: Vec<(AgentId, Envelope)>,
    /// Senders waiting for durability.
    acks: Vec<(oneshot::Sender<Result<Appended, Error>>, Appended)>,
}

impl AfterDurable {
    /// Routes, then acknowledges, once `durable` says the group is; otherwise fails the
    /// acknowledgements (nothing is routed: the journal will not take the group, and the
    /// asks' ports are dropped, answering "no reply").
    ///
    /// An agent not running (or not yet registered for recovery) misses nothing: its
    /// recovery reads the message from the journal. One that registered after the
    /// write recovers it from the journal too and then skips this copy, which is at or
    /// below what it recovered.
    fn complete(
        self,
        durable: Result<(), toka_store::Error>,
        directory: &Directory,
        metrics: &Counters,
        started: Instant,
    ) {
        let count = self.acks.len() as u64;
        Counters::add(&metrics.flush_waits, count);
        Counters::add(
            &metrics.flush_wait_micros,
            crate::metrics::micros(started.elapsed()).saturating_mul(count),
        );
        match durable {
            Ok(()) => {
                for (id, envelope) in self.routes {
                    if !directory.deliver_journaled(&id, envelope) {
                        tracing::trace!(agent = %id, "agent not running; its message waits in the journal");
                    }
                }
                for (ack, appended) in self.acks {
                    let _ = ack.send(Ok(appended));
                }
            }
            Err(error) => {
                for (id, envelope) in self.routes {
                    if let Envelope::Deliver {
                        seq, asked: true, ..
                    } = envelope
                    {
                        drop(directory.take_ask(&id, seq));
                    }
                }
                for (ack, _) in self.acks {
                    let _ = ack.send(Err(Error::from(durability_failure(&error))));
                }
            }
        }
    }
}

/// Appends gathered into one write at most (bounds the latency of the first).
const MAX_GROUP: usize = 512;

/// A group smaller than this gets one more pass over the mailbox before it is written.
const SMALL_GROUP: usize = 16;

/// The writer actor.
pub(crate) struct Writer;

/// Its state: the progress last recorded, and the appends gathered for the next write.
pub(crate) struct WriterState {
    parts: WriterParts,
    recorded: HashMap<AgentId, u64>,
    pending: Vec<PendingAppend>,
    /// Whether the last write failed: a journal that refuses writes (a full disk) fails
    /// every append, and the log says so once per outage, not once per append.
    failing: bool,
    /// With a journal that cannot call back when durable: the last group's waiting task
    /// ends by sending here (see [`WriterState::when_durable`]).
    fallback: Option<oneshot::Receiver<()>>,
}

impl WriterState {
    /// Logs a failed write: a warning for the first of a run of failures, debug after.
    fn note_failure(&mut self, what: &'static str, reason: &str) {
        if std::mem::replace(&mut self.failing, true) {
            tracing::debug!(%reason, "{what} (still failing)");
        } else {
            tracing::warn!(%reason, "{what}; further failures are logged at debug level until a write succeeds");
        }
    }
}

impl Actor for Writer {
    type Msg = WriterMsg;
    type State = WriterState;
    type Arguments = WriterParts;

    async fn pre_start(
        &self,
        myself: ActorRef<WriterMsg>,
        parts: WriterParts,
    ) -> Result<WriterState, ActorProcessingErr> {
        let recorded = parts.progress.current();
        myself.send_interval(PROGRESS_INTERVAL, || WriterMsg::FlushProgress { ack: None });
        Ok(WriterState {
            parts,
            recorded,
            pending: Vec::new(),
            failing: false,
            fallback: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<WriterMsg>,
        msg: WriterMsg,
        state: &mut WriterState,
    ) -> Result<(), ActorProcessingErr> {
        if !matches!(msg, WriterMsg::Append { .. } | WriterMsg::Commit { .. }) {
            // Keep order: what was asked before this is written before it.
            state.commit().await;
        }
        let journal = &state.parts.journal;
        match msg {
            WriterMsg::Append {
                id,
                event,
                routing,
                ack,
                durable,
            } => {
                // Gather appends that queue up while the writer is busy, and write them
                // together when the `Commit` queued behind the first one comes up.
                if state.pending.is_empty() {
                    myself
                        .send_message(WriterMsg::Commit { last_call: true })
                        .map_err(|e| format!("the writer cannot reach itself: {e}"))?;
                }
                state.pending.push(PendingAppend {
                    id,
                    event,
                    routing,
                    ack,
                    durable,
                });
                if state.pending.len() >= MAX_GROUP {
                    state.commit().await;
                }
            }
            WriterMsg::Commit { last_call } => {
                if last_call && state.pending.len() < SMALL_GROUP {
                    // Let the tasks ready on this worker run first: the appends they make
                    // queue ahead of the `Commit` sent next.
                    tokio::task::yield_now().await;
                    myself
                        .send_message(WriterMsg::Commit { last_call: false })
                        .map_err(|e| format!("the writer cannot reach itself: {e}"))?;
                } else {
                    state.commit().await;
                }
            }
            WriterMsg::AppendTo { stream, event, ack } => {
                let result = journal
                    .append_unsynced(stream, ExpectedVersion::Any, std::slice::from_ref(&event))
                    .await;
                let _ = ack.send(match result {
                    Ok(Ok(appended)) => Ok(appended),
                    Ok(Err(conflict)) => Err(Error::Internal(conflict.to_string())),
                    Err(error) => Err(error.into()),
                });
            }
            WriterMsg::Register { id, actor, ack } => {
                let version = journal.stream_version(id.stream());
                if version.is_ok() {
                    state.parts.directory.route_journaled(id, actor);
                }
                let _ = ack.send(version.map_err(Error::from));
            }
            WriterMsg::Incarnation { id, kind, ack } => {
                let _ = ack.send(begin_incarnation(&**journal, &id, kind).await);
            }
            WriterMsg::FlushProgress { ack } => {
                let changes = state.parts.progress.changes(&state.recorded);
                if changes.is_empty() {
                    if let Some(ack) = ack {
                        let _ = ack.send(Ok(()));
                    }
                } else {
                    myself
                        .send_message(WriterMsg::WriteProgress { changes, ack })
                        .map_err(|e| format!("the writer cannot reach itself: {e}"))?;
                }
            }
            WriterMsg::WriteProgress { changes, ack } => {
                let result = state.record_progress(changes).await;
                if let Err(error) = &result {
                    state.note_failure("could not record agent progress", &error.to_string());
                }
                if let Some(ack) = ack {
                    let _ = ack.send(result);
                }
            }
        }
        Ok(())
    }
}

/// Whether the journal refused a write because of what was asked (a record too large, a
/// bad stream id), before writing anything, rather than because it cannot write.
fn refused_before_writing(error: &toka_store::Error) -> bool {
    matches!(
        error,
        toka_store::Error::RecordTooLarge { .. }
            | toka_store::Error::InvalidStreamId { .. }
            | toka_store::Error::EmptyBatch { .. }
    )
}

/// The error each sender of a group gets when the journal cannot make it durable: the
/// same as its own [`Journal::wait_durable`] would have returned (typed for a lost
/// lease, so that callers can tell it from a broken disk).
fn durability_failure(error: &toka_store::Error) -> toka_store::Error {
    match error {
        toka_store::Error::Fenced { lease, epoch } => toka_store::Error::Fenced {
            lease: lease.clone(),
            epoch: *epoch,
        },
        toka_store::Error::Poisoned(reason) => toka_store::Error::Poisoned(reason.clone()),
        other => toka_store::Error::Poisoned(other.to_string()),
    }
}

/// Appends `id`'s incarnation marker if its stream is not empty; returns the base.
async fn begin_incarnation(
    journal: &dyn toka_store::Journal,
    id: &AgentId,
    kind: String,
) -> Result<u64, Error> {
    if journal.stream_version(id.stream())? == 0 {
        return Ok(0);
    }
    let payload = record::encode("an incarnation marker", &record::IncarnationRecord { kind })?;
    let appended = journal
        .append_unsynced(
            id.stream(),
            ExpectedVersion::Any,
            &[RecordKind::Incarnation.event(payload)],
        )
        .await?
        .map_err(|c| Error::Internal(c.to_string()))?;
    Ok(appended.first_seq)
}

impl WriterState {
    /// Writes the gathered appends as one journal write, then hands each message to its
    /// agent and acknowledges each caller, in order.
    ///
    /// An append the journal refuses on its own merits (a record over `max_record_bytes`)
    /// makes the group write refuse everything, writing nothing; the group is then written
    /// again one append at a time, so only that append's caller gets the error, its own.
    async fn commit(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let Err((pending, error)) = self.write_group(pending).await else {
            return;
        };
        if pending.len() > 1 && refused_before_writing(&error) {
            for append in pending {
                if let Err((refused, error)) = self.write_group(vec![append]).await {
                    self.fail(refused, error);
                }
            }
        } else {
            self.fail(pending, error);
        }
    }

    /// Writes `pending` as one journal write, then routes and acknowledges each append;
    /// on a failed write, hands the appends back unacknowledged with the error.
    async fn write_group(
        &mut self,
        pending: Vec<PendingAppend>,
    ) -> Result<(), (Vec<PendingAppend>, toka_store::Error)> {
        let batches: Vec<StreamBatch<'_>> = pending
            .iter()
            .map(|p| StreamBatch {
                stream: p.id.stream(),
                expected: ExpectedVersion::Any,
                events: std::slice::from_ref(&p.event),
            })
            .collect();
        let written = self.parts.journal.append_many_unsynced(&batches).await;
        drop(batches);
        let results = match written {
            Ok(results) => results,
            Err(error) => return Err((pending, error)),
        };
        self.failing = false;
        let metrics = &self.parts.metrics;
        Counters::add(&metrics.journal_group_writes, 1);
        Counters::add(&metrics.journal_appends, pending.len() as u64);
        // What waits for the group to be durable, in stream order: the hand-over of each
        // message (and own-record notice) to its agent, then each sender's acknowledgement.
        let mut after = AfterDurable::default();
        for (append, result) in pending.into_iter().zip(results) {
            let appended = match result {
                Ok(appended) => appended,
                // `Any` never conflicts; report it rather than trust that.
                Err(conflict) => {
                    if let Some(ack) = append.ack {
                        let _ = ack.send(Err(Error::Internal(conflict.to_string())));
                    }
                    continue;
                }
            };
            match append.routing {
                Routing::Deliver(reply) => {
                    let seq = appended.first_seq;
                    let asked = reply.is_some();
                    // Parked now, not once durable: an agent that registers meanwhile
                    // recovers the message from the journal and must find its port.
                    if let Some(port) = reply {
                        self.parts.directory.park_ask(&append.id, seq, port);
                    }
                    let envelope = Envelope::Deliver {
                        seq,
                        position: appended.first_position,
                        payload: append.event.payload,
                        asked,
                    };
                    after.routes.push((append.id, envelope));
                }
                Routing::Own => {}
                Routing::OwnNotify => {
                    after
                        .routes
                        .push((append.id, Envelope::Own(appended.first_seq)));
                }
            }
            match append.ack {
                Some(ack) if append.durable => after.acks.push((ack, appended)),
                Some(ack) => {
                    let _ = ack.send(Ok(appended));
                }
                None => {}
            }
            after.position = after.position.max(appended.last_position);
        }
        if !(after.routes.is_empty() && after.acks.is_empty()) {
            self.when_durable(after);
        }
        Ok(())
    }

    /// Hands a group's messages to their agents and acknowledges its senders once the
    /// journal is durable up to `after.position`: the journal's commit thread does it
    /// right after its flush ([`Journal::when_durable`]), so a sender is woken once, by
    /// its acknowledgement, and an agent once, by a message it can handle at once. In
    /// `Buffered` mode that is now, on this worker. A journal that cannot call back (one
    /// wrapping another) is waited for by a task per group, each after the previous one,
    /// so that agents still get their messages in stream order.
    fn when_durable(&mut self, after: AfterDurable) {
        let position = after.position;
        let directory = Arc::clone(&self.parts.directory);
        let metrics = Arc::clone(&self.parts.metrics);
        let started = Instant::now();
        let done: DurableCallback = Box::new(move |durable| {
            after.complete(durable, &directory, &metrics, started);
        });
        let Some(done) = self.parts.journal.when_durable(position, done) else {
            return;
        };
        let journal = Arc::clone(&self.parts.journal);
        let previous = self.fallback.take();
        let (finished, next) = oneshot::channel();
        self.fallback = Some(next);
        tokio::spawn(async move {
            let durable = journal.wait_durable(position).await;
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            done(durable);
            let _ = finished.send(());
        });
    }

    /// Fails every append of a write the journal refused: the first caller gets the
    /// journal's error, the others a [`Error::GroupWrite`] with its text.
    fn fail(&mut self, pending: Vec<PendingAppend>, error: toka_store::Error) {
        let reason = error.to_string();
        if !refused_before_writing(&error) {
            self.note_failure("a group write failed", &reason);
        }
        let mut error = Some(error);
        for append in pending {
            let e = error
                .take()
                .map_or_else(|| Error::GroupWrite(reason.clone()), Error::from);
            match append.ack {
                Some(ack) => {
                    let _ = ack.send(Err(e));
                }
                None => {
                    tracing::debug!(agent = %append.id, error = %e, "an unacknowledged append failed")
                }
            }
        }
    }

    /// Records the handled counters that moved (`changes`).
    async fn record_progress(&mut self, changes: Vec<(AgentId, u64)>) -> Result<(), Error> {
        let record = ProgressRecord { handled: changes };
        if record.handled.is_empty() {
            return Ok(());
        }
        let payload = record::encode("progress", &record)?;
        let appended = self
            .parts
            .journal
            .append_unsynced(
                record::PROGRESS_STREAM,
                ExpectedVersion::Any,
                &[RecordKind::Progress.event(payload)],
            )
            .await?
            .map_err(|c| Error::Internal(c.to_string()))?;
        for (id, seq) in record.handled {
            self.recorded.insert(id, seq);
        }
        if appended.last_seq % PROGRESS_SNAPSHOT_EVERY == 0 {
            let all = ProgressRecord {
                handled: self.recorded.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            };
            let state = record::encode("the progress snapshot", &all)?;
            self.parts
                .journal
                .save_snapshot(record::PROGRESS_STREAM, appended.last_seq, &state)
                .await?;
        }
        Ok(())
    }
}

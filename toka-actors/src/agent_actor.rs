//! The actor that runs one agent: recovery, ordered delivery, poison messages, durable
//! timers, queries, and (through [`Children`]) OTP supervision of its children.
//!
//! # Recovery (durable agents)
//! 1. Take a recovery permit (at most [`RuntimeConfig::recovery_concurrency`] agents
//!    replay at once).
//! 2. Register with the writer, which answers the stream's version `v` and from then on
//!    forwards every new message to this actor: messages up to `v` come from the journal,
//!    later ones from the mailbox, with nothing lost or doubled between the two.
//! 3. Read the history ([`recovery::read_history`]; on the blocking pool unless the
//!    start-up pass read it ahead): the latest snapshot, then the stream up to `v`.
//!    Only the agent's own incarnation counts:
//!    records at or below its base, and a snapshot taken there, are an earlier
//!    incarnation's of the same id and are ignored (see [`record`]).
//! 4. Replay the messages already marked handled, effects suppressed and every outward
//!    step checked against the journal; release the permit; start the recorded
//!    children; handle the rest live (at-least-once handling, but each message changes
//!    the state once, because the state is rebuilt from the journal).
//! 5. Arm the pending durable timers.
//!
//! A message that failed [`SpawnSpec::max_attempts`](crate::SpawnSpec::max_attempts)
//! times is recorded as dead and skipped from then on. A replay that does something else
//! than the journal recorded halts the agent (see [`Error::NonDeterministic`]).
//!
//! [`RuntimeConfig::recovery_concurrency`]: crate::RuntimeConfig::recovery_concurrency

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::Either;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use toka_store::Timestamp;
use tracing::Instrument as _;

use crate::agent_core::Core;
use crate::children::Children;
use crate::delivery;
use crate::envelope::{AnyBox, Envelope, ReplyPort, StartArgs};
use crate::inbox::Inbox;
use crate::kernel::Kernel;
use crate::record::{
    self, AttemptRecord, HaltRecord, MsgRecord, Origin, RecordKind, SnapshotRecord,
};
use crate::recovery;
use crate::writer::WriterMsg;
use crate::{Agent, Context, Error, StartContext, TimerId};

/// The ractor actor running agents of kind `A`.
///
/// ractor keeps it in the agent's task for the agent's life, so it holds only the agent
/// value; the kernel comes with the start arguments and is kept in the [`Core`].
pub(crate) struct AgentActor<A: Agent> {
    agent: Arc<A>,
}

impl<A: Agent> AgentActor<A> {
    pub(crate) fn new(agent: Arc<A>) -> Self {
        AgentActor { agent }
    }
}

/// The actor's state: the user's state and the runtime's bookkeeping.
pub(crate) struct AgentState<A: Agent> {
    user: A::State,
    core: Core<A>,
}

/// How a message is handled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Already handled before: effects suppressed, steps checked against the journal.
    Replay,
    /// First time (or re-run after a crash): effects performed.
    Live,
}

/// A journaled message record to handle: its sequence number, the format that wrote it,
/// its bytes.
struct Incoming<'p> {
    seq: u64,
    format: u32,
    payload: &'p [u8],
}

/// The `toka.handle` span of a live handling of message `seq`, continuing the trace the
/// record kept (see [`crate::TracePropagator`]); disabled when no subscriber wants it.
fn handle_span<A: Agent>(
    core: &Core<A>,
    seq: u64,
    recovered: bool,
    trace: Option<record::StoredTrace>,
) -> tracing::Span {
    let span = tracing::info_span!(
        "toka.handle",
        agent.id = %core.id,
        agent.kind = A::KIND,
        // Signed: OpenTelemetry's integers are (a u64 would be exported as text).
        message.seq = i64::try_from(seq).unwrap_or(i64::MAX),
        toka.recovered = recovered,
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
    );
    if let (Some(hook), Some(sent)) = (&core.kernel.trace, trace) {
        if !span.is_disabled() {
            hook.continue_trace(&span, &sent.into(), recovered);
        }
    }
    span
}

/// A handling of message `seq` failed with `reason`: marks the span, logs it, and
/// answers the asker; the actor fails with what this returns.
fn failed<A: Agent>(
    core: &Core<A>,
    seq: u64,
    reason: String,
    reply: Option<ReplyPort>,
) -> ActorProcessingErr {
    tracing::Span::current().record("otel.status_code", "error");
    tracing::warn!(agent = %core.id, seq, %reason, "handler failed");
    if let Some(port) = reply {
        let _ = port.send(Err(Error::Handler {
            id: core.id.clone(),
            reason: reason.clone(),
        }));
    }
    reason.into()
}

/// Messages a transient agent takes from its inbox per wake-up (see [`crate::inbox`]).
const INBOX_BATCH: usize = 256;

fn failure(error: impl std::fmt::Display) -> ActorProcessingErr {
    error.to_string().into()
}

impl<A: Agent> AgentActor<A> {
    /// Runs the user's handler on one message, catching panics. On failure, the attempt
    /// is journaled (durable agents), the asker gets the error, and the actor fails. A
    /// replay that did not match the journal halts the agent instead.
    async fn run_handler(
        &self,
        state: &mut AgentState<A>,
        seq: u64,
        mode: Mode,
        sent: Option<Timestamp>,
        msg: A::Msg,
        reply: Option<ReplyPort>,
    ) -> Result<(), ActorProcessingErr> {
        let AgentState { user, core } = state;
        core.steps.clear();
        let mut ctx = Context {
            core,
            seq,
            effects: 0,
            replaying: mode == Mode::Replay,
            now: sent,
        };
        let outcome = AssertUnwindSafe(self.agent.handle(&mut ctx, user, msg))
            .catch_unwind()
            .await;
        let made = ctx.effects;
        if mode == Mode::Replay {
            core.check_replay_complete(seq, made);
        }
        if let Some(halt) = core.halt.take() {
            return Box::pin(self.halt(core, seq, *halt, reply)).await;
        }
        let reason = match outcome {
            Ok(Ok(answer)) => {
                if mode == Mode::Live {
                    core.record_steps(seq).map_err(failure)?;
                }
                // The reply may tell of steps the journal does not hold durably yet.
                core.sync_own().await.map_err(failure)?;
                if let Some(port) = reply {
                    let _ = port.send(Ok(crate::envelope::any_box(answer)));
                }
                core.mark_handled(seq);
                if mode == Mode::Live {
                    core.kernel.metrics.messages_handled.add(1);
                }
                return Ok(());
            }
            Ok(Err(error)) => error.to_string(),
            Err(panic) => panic_message(&panic),
        };
        let failure = failed(core, seq, reason.clone(), reply);
        if core.durable {
            let payload = record::encode(
                "an attempt record",
                &AttemptRecord {
                    seq,
                    error: reason.clone(),
                },
            )?;
            Box::pin(core.append_own(RecordKind::Attempt, payload)).await?;
        }
        Err(failure)
    }

    /// [`Self::run_handler`] for a transient agent's message, without what only a durable
    /// agent has (steps to record or check, own records to wait for, a replay to halt):
    /// the hot path of local messaging, kept lean.
    async fn run_transient(
        &self,
        state: &mut AgentState<A>,
        msg: A::Msg,
        reply: Option<ReplyPort>,
    ) -> Result<(), ActorProcessingErr> {
        let AgentState { user, core } = state;
        let seq = core.base;
        let mut ctx = Context {
            core,
            seq,
            effects: 0,
            replaying: false,
            now: None,
        };
        let outcome = AssertUnwindSafe(self.agent.handle(&mut ctx, user, msg))
            .catch_unwind()
            .await;
        let reason = match outcome {
            Ok(Ok(answer)) => {
                if let Some(port) = reply {
                    let _ = port.send(Ok(crate::envelope::any_box(answer)));
                }
                core.kernel.metrics.messages_handled.add(1);
                return Ok(());
            }
            Ok(Err(error)) => error.to_string(),
            Err(panic) => panic_message(&panic),
        };
        Err(failed(core, seq, reason, reply))
    }

    /// Stops the agent for non-determinism: journals why, answers the asker, and fails
    /// with the error (its supervisor does not restart it).
    async fn halt(
        &self,
        core: &mut Core<A>,
        seq: u64,
        halt: Error,
        reply: Option<ReplyPort>,
    ) -> Result<(), ActorProcessingErr> {
        let text = halt.to_string();
        if let Some(port) = reply {
            let _ = port.send(Err(Error::Handler {
                id: core.id.clone(),
                reason: text.clone(),
            }));
        }
        core.kernel.directory.halted(&core.id, text.clone());
        let payload = record::encode("a halt record", &HaltRecord { seq, error: text })?;
        if let Err(error) = core.append_own(RecordKind::Halt, payload).await {
            tracing::warn!(agent = %core.id, %error, "could not journal the halt");
        }
        // A halted agent is not running, and does not hold up the runtime's start.
        core.kernel
            .directory
            .stopped(&core.id, core.myself.get_id());
        core.kernel.note_recovered(&core.id);
        Err(Box::new(halt) as ActorProcessingErr)
    }

    /// Handles one journaled message record of a durable agent; `recovered`: by a
    /// recovery (the handling's span links to the send's trace instead of continuing
    /// it).
    async fn handle_record(
        &self,
        state: &mut AgentState<A>,
        incoming: Incoming<'_>,
        mode: Mode,
        asked: bool,
        recovered: bool,
    ) -> Result<(), ActorProcessingErr> {
        let Incoming {
            seq,
            format,
            payload,
        } = incoming;
        let core = &mut state.core;
        let reply = if asked {
            core.kernel.directory.take_ask(&core.id, seq)
        } else {
            None
        };
        let stream = core.id.stream();
        let record: MsgRecord<'_> = match record::decode_msg(format, stream, seq, payload) {
            Ok(record) => record,
            Err(error) => return Box::pin(self.undecodable(state, seq, error, reply)).await,
        };
        match &record.origin {
            Origin::External => {}
            Origin::Agent { from, effect } => {
                let watermarks = core.watermarks.get_or_insert_with(Box::default);
                if watermarks.get(from).is_some_and(|seen| seen >= effect) {
                    tracing::debug!(agent = %core.id, seq, %from, "duplicate message dropped");
                    core.mark_handled(seq);
                    return Ok(());
                }
                watermarks.insert(from.clone(), *effect);
            }
            Origin::Timer(id) => {
                if !core.remove_timer(id) {
                    core.mark_handled(seq);
                    return Ok(());
                }
            }
        }
        let decoded = match record.topic {
            Some(topic) => match core.subscription(topic) {
                Some(decode) => decode(record.body).map_err(|e| e.to_string()),
                None => Err(format!("not subscribed to topic {topic:?}")),
            },
            None => postcard::from_bytes::<A::Msg>(record.body).map_err(|e| e.to_string()),
        };
        let sent = Timestamp::from_micros(record.sent_micros);
        match decoded {
            Ok(msg) => {
                // A replay (the state rebuilt from what was handled before) is not traced.
                let span = match mode {
                    Mode::Live => handle_span::<A>(&state.core, seq, recovered, record.trace),
                    Mode::Replay => tracing::Span::none(),
                };
                self.run_handler(state, seq, mode, Some(sent), msg, reply)
                    .instrument(span)
                    .await?;
                if mode == Mode::Live {
                    Box::pin(self.maybe_snapshot(state, seq)).await;
                }
                Ok(())
            }
            Err(error) => Box::pin(self.undecodable(state, seq, error, reply)).await,
        }
    }

    /// A message that does not decode can never succeed: dead-letter it at once.
    async fn undecodable(
        &self,
        state: &mut AgentState<A>,
        seq: u64,
        error: impl std::fmt::Display,
        reply: Option<ReplyPort>,
    ) -> Result<(), ActorProcessingErr> {
        let error = format!("message does not decode: {error}");
        if let Some(port) = reply {
            let _ = port.send(Err(Error::Handler {
                id: state.core.id.clone(),
                reason: error.clone(),
            }));
        }
        state.core.dead_letter(seq, 0, error).await.map_err(failure)
    }

    async fn maybe_snapshot(&self, state: &mut AgentState<A>, seq: u64) {
        let core = &mut state.core;
        core.since_snapshot += 1;
        if core.since_snapshot < core.snapshot_every {
            return;
        }
        let Some(user) = self.agent.snapshot(&state.user) else {
            return;
        };
        core.since_snapshot = 0;
        let snapshot = SnapshotRecord {
            user,
            watermarks: core
                .watermarks
                .iter()
                .flat_map(|w| w.iter())
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            timers: core
                .extras
                .iter()
                .flat_map(|e| e.timers.values().cloned())
                .collect(),
        };
        let saved = match record::encode_snapshot(&snapshot) {
            Ok(bytes) => core
                .kernel
                .journal
                .save_snapshot(core.id.stream(), seq, &bytes)
                .await
                .map_err(Error::from),
            Err(error) => Err(error),
        };
        if let Err(error) = saved {
            tracing::warn!(agent = %core.id, seq, %error, "snapshot failed; recovery will replay more");
        }
    }

    /// Recovers a durable agent's state (see the module docs).
    async fn recover(&self, state: &mut AgentState<A>) -> Result<(), ActorProcessingErr> {
        let kernel = Arc::clone(&state.core.kernel);
        let permit = kernel.recovery.acquire().await.map_err(failure)?;
        let id = state.core.id.clone();
        let version = kernel
            .ask_writer(|ack| WriterMsg::Register {
                id: id.clone(),
                actor: state.core.myself.clone(),
                ack,
            })
            .await
            .map_err(failure)?;
        let preloaded = kernel.preloaded.take(&id).await;
        let history = recovery::read_history(
            Arc::clone(&kernel.journal),
            preloaded,
            id.clone(),
            state.core.base,
            version,
        )
        .await
        .map_err(failure)?;
        if let Some((seq, saved)) = history.snapshot {
            state.user = self
                .agent
                .restore(&state.core.args, &saved.user)
                .map_err(failure)?;
            state.core.watermarks = (!saved.watermarks.is_empty())
                .then(|| Box::new(saved.watermarks.into_iter().collect()));
            for timer in saved.timers {
                state.core.pending_timer(timer, false);
            }
            state.core.applied = seq;
        }
        state.core.recorded = Some(Box::new(history.recorded));
        let mut attempts = history.attempts;
        let done = state.core.handled.as_ref().map_or(0, |h| h.get());
        let mut permit = Some(permit);
        let mut children_started = false;
        let replayed = history.messages.len();
        for event in history.messages {
            let mode = if event.seq <= done {
                Mode::Replay
            } else {
                Mode::Live
            };
            if mode == Mode::Live && !children_started {
                permit.take();
                state.core.children.start_recorded().await?;
                children_started = true;
            }
            if history.dead.contains(&event.seq) {
                continue;
            }
            if let Some((count, error)) = attempts.remove(&event.seq) {
                if count >= state.core.max_attempts {
                    state
                        .core
                        .dead_letter(event.seq, count, error)
                        .await
                        .map_err(failure)?;
                    continue;
                }
            }
            state.core.steps_recorded = event.format >= 2;
            let incoming = Incoming {
                seq: event.seq,
                format: event.format,
                payload: &event.payload,
            };
            self.handle_record(state, incoming, mode, mode == Mode::Live, true)
                .await?;
        }
        state.core.steps_recorded = false;
        drop(permit);
        if !children_started {
            state.core.children.start_recorded().await?;
        }
        let core = &mut state.core;
        core.applied = core.applied.max(version);
        if let Some(extras) = core.extras.as_mut() {
            extras.own.retain(|s| *s > version);
        }
        core.recorded = None;
        let pending: Vec<(TimerId, u64)> = core
            .extras
            .iter()
            .flat_map(|e| e.timers.values().map(|t| (t.id, t.due_micros)))
            .collect();
        for (timer, due) in pending {
            core.arm(timer, due);
        }
        kernel.note_recovered(&id);
        tracing::debug!(agent = %id, version, replayed, "agent recovered");
        Ok(())
    }

    /// Handles the envelopes that need no waiting; gives back the others.
    fn handle_now(&self, state: &mut AgentState<A>, msg: Envelope) -> Result<(), Envelope> {
        match msg {
            Envelope::Own(seq) => state.core.own_appended(seq),
            Envelope::Drain(ack) => {
                let _ = ack.send(());
            }
            Envelope::Query { run, reply } => self.answer_query(state, run, reply),
            other => return Err(other),
        }
        Ok(())
    }

    /// Handles the envelopes whose handling awaits (see [`Actor::handle`]).
    async fn dispatch(
        &self,
        state: &mut AgentState<A>,
        msg: Envelope,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Envelope::Deliver {
                seq,
                position,
                payload,
                asked,
            } => self.deliver(state, seq, position, payload, asked).await,
            Envelope::Local { msg, reply } => self.local(state, msg, reply).await,
            Envelope::LocalTopic { topic, body } => {
                let msg = match state.core.subscription(&topic) {
                    Some(decode) => decode(&body).map_err(|e| e.to_string()),
                    None => Err(format!("not subscribed to topic {topic:?}")),
                };
                self.handle_local(state, msg, None).await
            }
            // Rare arms are boxed again, so that the common path's box stays small.
            Envelope::TimerDue(id) => Box::pin(self.timer_due(state, id)).await,
            Envelope::RestartChildren(ids) => Box::pin(state.core.children.restart(ids)).await,
            Envelope::StartChild(request) => {
                Box::pin(state.core.children.start_requested(request)).await;
                Ok(())
            }
            Envelope::StopChild { id, ack } => {
                Box::pin(state.core.children.stop(&id)).await;
                let _ = ack.send(());
                Ok(())
            }
            Envelope::ChildExited(exit) => {
                Box::pin(state.core.children.on_remote_exit(*exit)).await
            }
            other => self
                .handle_now(state, other)
                .map_err(|_| failure("an envelope was not handled")),
        }
    }

    /// Handles a journaled message delivered to a durable agent's mailbox: skips what it
    /// already dealt with, catches up on a gap, waits until the message is durable.
    async fn deliver(
        &self,
        state: &mut AgentState<A>,
        seq: u64,
        position: u64,
        payload: Vec<u8>,
        asked: bool,
    ) -> Result<(), ActorProcessingErr> {
        state.core.skip_own();
        if seq <= state.core.applied {
            return Ok(());
        }
        if seq > state.core.applied + 1 {
            Box::pin(self.catch_up(state, seq - 1)).await?;
        }
        state
            .core
            .kernel
            .wait_durable(position)
            .await
            .map_err(failure)?;
        state.core.applied = seq;
        let incoming = Incoming {
            seq,
            format: record::FORMAT,
            payload: &payload,
        };
        self.handle_record(state, incoming, Mode::Live, asked, false)
            .await
    }

    /// Handles messages `applied + 1 ..= to` from the journal (a gap in deliveries).
    async fn catch_up(&self, state: &mut AgentState<A>, to: u64) -> Result<(), ActorProcessingErr> {
        let from = state.core.applied + 1;
        let journal = Arc::clone(&state.core.kernel.journal);
        let id = state.core.id.clone();
        let events = recovery::off_worker(move || recovery::read_records(&*journal, &id, from, to))
            .await
            .map_err(failure)?;
        for event in events {
            if event.kind == RecordKind::Msg && !state.core.is_own(event.seq) {
                let incoming = Incoming {
                    seq: event.seq,
                    format: event.format,
                    payload: &event.payload,
                };
                self.handle_record(state, incoming, Mode::Live, true, false)
                    .await?;
            }
            if let Some(extras) = state.core.extras.as_mut() {
                extras.own.remove(&event.seq);
            }
            state.core.applied = event.seq;
        }
        Ok(())
    }

    /// Answers a query from the state. A query that fails or panics answers with the
    /// error; the agent goes on.
    fn answer_query(&self, state: &AgentState<A>, run: crate::envelope::QueryFn, reply: ReplyPort) {
        let agent: &dyn std::any::Any = &*self.agent;
        let user: &dyn std::any::Any = &state.user;
        let answer = std::panic::catch_unwind(AssertUnwindSafe(|| run(agent, user)))
            .unwrap_or_else(|panic| {
                Err(Error::Handler {
                    id: state.core.id.clone(),
                    reason: panic_message(&panic),
                })
            });
        let _ = reply.send(answer);
    }

    /// Handles a transient agent's message, as it came (type-erased). Not an `async fn`:
    /// its future is the handling's alone, without room for the boxed message.
    fn local(
        &self,
        state: &mut AgentState<A>,
        msg: AnyBox,
        reply: Option<ReplyPort>,
    ) -> impl Future<Output = Result<(), ActorProcessingErr>> + Send {
        let msg = crate::envelope::unbox::<A::Msg>(msg)
            .map_err(|_| format!("not a message of kind {}", A::KIND));
        self.handle_local(state, msg, reply)
    }

    /// Handles a message for a transient agent (one that did not fit is dropped, and its
    /// asker told why). Not an `async fn`: the future is the handling's, with no layer of
    /// its own.
    fn handle_local(
        &self,
        state: &mut AgentState<A>,
        msg: Result<A::Msg, String>,
        reply: Option<ReplyPort>,
    ) -> impl Future<Output = Result<(), ActorProcessingErr>> + Send {
        match msg {
            Ok(msg) => {
                let span = handle_span::<A>(&state.core, state.core.base, false, None);
                Either::Left(self.run_transient(state, msg, reply).instrument(span))
            }
            Err(error) => {
                tracing::warn!(agent = %state.core.id, %error, "dropping a message that does not fit");
                if let Some(port) = reply {
                    let _ = port.send(Err(Error::Handler {
                        id: state.core.id.clone(),
                        reason: error,
                    }));
                }
                Either::Right(std::future::ready(Ok(())))
            }
        }
    }

    /// Handles what waits in a transient agent's inbox until it is empty (then idle);
    /// past [`INBOX_BATCH`] messages it wakes itself again instead, so that its other
    /// envelopes (and a stop) are not held up by senders that never pause.
    async fn drain(
        &self,
        state: &mut AgentState<A>,
        inbox: Arc<Inbox<Envelope>>,
    ) -> Result<(), ActorProcessingErr> {
        for _ in 0..INBOX_BATCH {
            let Some(envelope) = inbox.pop_or_idle() else {
                return Ok(());
            };
            self.handle_queued(state, envelope).await?;
        }
        // Still scheduled: this wake-up queues behind the other envelopes.
        let _ = state.core.myself.send_message(Envelope::Wake(inbox));
        Ok(())
    }

    /// Whether messages wait in this transient agent's inbox.
    fn inbox_waits(&self, state: &AgentState<A>) -> bool {
        !state.core.durable
            && state
                .core
                .kernel
                .directory
                .inbox(&state.core.id)
                .is_some_and(|inbox| !inbox.is_empty())
    }

    /// Handles what waits in the inbox, then `msg`, which was sent after it.
    async fn after_inbox(
        &self,
        state: &mut AgentState<A>,
        msg: Envelope,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(inbox) = state.core.kernel.directory.inbox(&state.core.id) {
            for envelope in inbox.take() {
                self.handle_queued(state, envelope).await?;
            }
        }
        match self.handle_now(state, msg) {
            Ok(()) => Ok(()),
            Err(msg) => Box::pin(self.dispatch(state, msg)).await,
        }
    }

    /// Handles one envelope taken from the inbox.
    async fn handle_queued(
        &self,
        state: &mut AgentState<A>,
        envelope: Envelope,
    ) -> Result<(), ActorProcessingErr> {
        match envelope {
            Envelope::Local { msg, reply } => self.local(state, msg, reply).await,
            other => Box::pin(self.dispatch(state, other)).await,
        }
    }

    /// A durable timer came due: journal its firing (durable agents) or handle it.
    async fn timer_due(
        &self,
        state: &mut AgentState<A>,
        id: TimerId,
    ) -> Result<(), ActorProcessingErr> {
        let Some(timer) = state.core.timer(&id).cloned() else {
            return Ok(());
        };
        if state.core.durable {
            // Journal the firing; it comes back as a message, handled once.
            let core = &state.core;
            let fired = delivery::journal(
                &core.kernel,
                &core.id,
                Origin::Timer(id),
                None,
                &timer.body,
                None,
            )
            .await;
            if let Err(error) = fired {
                tracing::warn!(agent = %core.id, %error, "could not fire a timer; retrying in 1 s");
                let due = Timestamp::now().as_micros() + 1_000_000;
                state.core.arm(id, due);
            }
            Ok(())
        } else {
            state.core.remove_timer(&id);
            let msg = postcard::from_bytes::<A::Msg>(&timer.body).map_err(|e| e.to_string());
            self.handle_local(state, msg, None).await
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_owned()
    }
}

impl<A: Agent> Actor for AgentActor<A> {
    type Msg = Envelope;
    type State = AgentState<A>;
    type Arguments = (Arc<Kernel>, StartArgs);

    async fn pre_start(
        &self,
        myself: ActorRef<Envelope>,
        (kernel, start): (Arc<Kernel>, StartArgs),
    ) -> Result<AgentState<A>, ActorProcessingErr> {
        let stream = start.id.stream();
        let args: A::Args = record::decode(stream, 0, &start.args).map_err(failure)?;
        let user = self.agent.init(&args).map_err(failure)?;
        let durable = start.spec.durable;
        let handled = durable.then(|| kernel.progress.cell(&start.id));
        let children = Children::new(
            Arc::clone(&kernel),
            Some(start.id.clone()),
            myself.clone(),
            start.spec.supervision,
        );
        let mut core = Core {
            snapshot_every: start
                .spec
                .snapshot_every
                .unwrap_or(kernel.config.snapshot_every)
                .max(1),
            max_attempts: start
                .spec
                .max_attempts
                .unwrap_or(kernel.config.max_attempts)
                .max(1),
            kernel,
            id: start.id,
            durable,
            myself: myself.clone(),
            args,
            base: start.base,
            applied: start.base,
            handled,
            watermarks: None,
            extras: None,
            recorded: None,
            last_target: None,
            steps: Vec::new(),
            steps_recorded: false,
            halt: None,
            since_snapshot: 0,
            unsynced: 0,
            children,
            start_children: start.has_children,
        };
        let mut user = user;
        self.agent
            .on_start(&mut StartContext { core: &mut core }, &mut user)
            .await
            .map_err(failure)?;
        core.kernel
            .directory
            .started(core.id.clone(), myself, durable);
        Ok(AgentState { user, core })
    }

    async fn post_start(
        &self,
        _myself: ActorRef<Envelope>,
        state: &mut AgentState<A>,
    ) -> Result<(), ActorProcessingErr> {
        if state.core.durable {
            // Boxed: recovery's future is large, and would otherwise size every agent's
            // task for the whole of its life.
            Box::pin(self.recover(state)).await
        } else if state.core.start_children {
            // Boxed: most agents have no children to start, and should not carry the
            // future for their whole life.
            Box::pin(state.core.children.start_recorded()).await
        } else {
            Ok(())
        }
    }

    // Both hooks below are plain functions returning a small future, not `async fn`s: an
    // `async fn`'s future keeps its arguments (the envelope, the event) for its whole life,
    // and ractor keeps these futures inline in every actor's message loop, twice
    // (`run_with_signal` holds each both as argument and as select branch), so their size
    // is paid by every idle agent. What awaits is boxed (one allocation per envelope while
    // it is handled); what needs no waiting is done before the future is even polled. A
    // transient agent's messages (the hot path of local messaging) come from its inbox, a
    // batch per wake-up, in a box of their own sized for a transient handling: the box of
    // every other envelope is sized for the largest arm of `dispatch` (a durable
    // delivery), twice as large.
    fn handle(
        &self,
        _myself: ActorRef<Envelope>,
        msg: Envelope,
        state: &mut AgentState<A>,
    ) -> impl Future<Output = Result<(), ActorProcessingErr>> + Send {
        match msg {
            Envelope::Wake(inbox) => {
                Either::Right(Either::Left(Box::pin(self.drain(state, inbox))))
            }
            Envelope::Local { msg, reply } => Either::Right(Either::Right(Either::Left(Box::pin(
                self.local(state, msg, reply),
            )))),
            // Behind every message already in the inbox (see `inbox`).
            msg if self.inbox_waits(state) => Either::Right(Either::Right(Either::Right(
                Either::Left(Box::pin(self.after_inbox(state, msg))),
            ))),
            msg => match self.handle_now(state, msg) {
                Ok(()) => Either::Left(std::future::ready(Ok(()))),
                Err(msg) => Either::Right(Either::Right(Either::Right(Either::Right(Box::pin(
                    self.dispatch(state, msg),
                ))))),
            },
        }
    }

    fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Envelope>,
        event: SupervisionEvent,
        state: &mut AgentState<A>,
    ) -> impl Future<Output = Result<(), ActorProcessingErr>> + Send {
        // Supervision events are rare: boxed like the messages that await.
        Box::pin(state.core.children.on_event(event))
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Envelope>,
        state: &mut AgentState<A>,
    ) -> Result<(), ActorProcessingErr> {
        let core = &mut state.core;
        core.children.stop_all().await;
        if let Some(extras) = core.extras.as_mut() {
            for (_, task) in std::mem::take(&mut extras.timer_tasks) {
                task.abort();
            }
        }
        core.kernel
            .directory
            .stopped(&core.id, core.myself.get_id());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AgentError;

    /// An agent with an 8-byte state and no arguments, like most.
    struct Small;

    impl Agent for Small {
        const KIND: &'static str = "small";
        type Args = ();
        type Msg = u64;
        type Reply = u64;
        type State = u64;

        fn init(&self, _: &()) -> Result<u64, AgentError> {
            Ok(0)
        }

        async fn handle(
            &self,
            _: &mut Context<'_, Self>,
            sum: &mut u64,
            n: u64,
        ) -> Result<u64, AgentError> {
            *sum += n;
            Ok(*sum)
        }
    }

    /// ractor keeps the actor value and its state inline in the agent's tokio task, which
    /// is allocated in multiples of 128 bytes: measured with ractor 0.16.5 / tokio 1.54, a
    /// state of up to 248 bytes (with a zero-sized actor) gives an 896-byte task, 256 a
    /// 1,024-byte one. Every idle agent pays that size; see ARCHITECTURE.md ("An idle
    /// agent's size is paid once per agent") before raising this budget.
    #[test]
    fn an_idle_agent_fits_the_896_byte_task() {
        let inline =
            std::mem::size_of::<AgentState<Small>>() + std::mem::size_of::<AgentActor<Small>>();
        assert!(
            inline <= 240,
            "AgentState + AgentActor take {inline} bytes inline, over the 240-byte budget"
        );
    }
}

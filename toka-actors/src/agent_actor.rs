//! The actor that runs one agent: recovery, ordered delivery, poison messages, durable
//! timers, and OTP supervision of its children.
//!
//! # Recovery (durable agents)
//! 1. Take a recovery permit (at most [`RuntimeConfig::recovery_concurrency`] agents
//!    replay at once).
//! 2. Register with the writer, which answers the stream's version `v` and from then on
//!    forwards every new message to this actor: messages up to `v` come from the journal,
//!    later ones from the mailbox, with nothing lost or doubled between the two.
//! 3. Load the latest snapshot, then read the stream up to `v`. Only the agent's own
//!    incarnation counts: records at or below its base, and a snapshot taken there, are
//!    an earlier incarnation's of the same id and are ignored (see [`record`]).
//! 4. Replay the messages already marked handled, effects suppressed; release the permit;
//!    start the recorded children; handle the rest live (at-least-once handling, but each
//!    message changes the state once, because the state is rebuilt from the journal).
//! 5. Arm the pending durable timers.
//!
//! A message that failed [`SpawnSpec::max_attempts`] times is recorded as dead and
//! skipped from then on.
//!
//! [`RuntimeConfig::recovery_concurrency`]: crate::RuntimeConfig::recovery_concurrency

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde::{Deserialize, Serialize};
use toka_store::Timestamp;

use crate::runtime::Rec;
use tokio::task::AbortHandle;

use crate::envelope::{AnyBox, ChildStart, Envelope, ReplyPort};
use crate::metrics::Counters;
use crate::record::{self, AttemptRecord, DeadLetter, MsgRecord, Origin, ReplyRecord, TimerRecord};
use crate::runtime::{RuntimeConfig, Shared};
use crate::supervision::{self, Plan, RestartWindow};
use crate::writer::{Writer, WriterMsg};
use crate::{
    Agent, AgentError, AgentId, Context, EffectId, Error, SpawnSpec, StartContext, SupervisorSpec,
    TimerId,
};

/// How long a stopping child may take before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What an agent actor starts from.
pub(crate) struct StartArgs {
    pub(crate) id: AgentId,
    /// The agent's key in the tree (`None`: the root).
    pub(crate) tree_key: Option<AgentId>,
    pub(crate) args: Vec<u8>,
    pub(crate) spec: SpawnSpec,
    /// Where the agent's incarnation begins in its stream (see [`record`]).
    pub(crate) base: u64,
}

impl StartArgs {
    pub(crate) fn root(config: &RuntimeConfig) -> Self {
        let spec = SpawnSpec::with_id(AgentId::root())
            .transient()
            .supervise(config.root_supervision);
        StartArgs {
            id: AgentId::root(),
            tree_key: None,
            args: postcard::to_allocvec(&()).unwrap_or_default(),
            spec,
            base: 0,
        }
    }
}

/// The root supervisor: an agent with no behaviour of its own.
pub(crate) struct Root;

impl Agent for Root {
    const KIND: &'static str = "$root";
    type Args = ();
    type Msg = ();
    type Reply = ();
    type State = ();

    fn init(&self, _: &()) -> Result<(), AgentError> {
        Ok(())
    }

    async fn handle(&self, _: &mut Context<'_, Self>, _: &mut (), _: ()) -> Result<(), AgentError> {
        Ok(())
    }
}

/// The ractor actor running agents of kind `A`.
pub(crate) struct AgentActor<A: Agent> {
    agent: Arc<A>,
    shared: Arc<Shared>,
}

impl<A: Agent> AgentActor<A> {
    pub(crate) fn new(agent: Arc<A>, shared: Arc<Shared>) -> Self {
        AgentActor { agent, shared }
    }
}

/// The actor's state: the user's state and the runtime's bookkeeping.
pub(crate) struct AgentState<A: Agent> {
    user: A::State,
    core: Core<A>,
}

/// A snapshot as stored: the user's bytes plus what the runtime needs to resume.
#[derive(Serialize, Deserialize)]
struct SnapshotState {
    #[serde(with = "serde_bytes")]
    user: Vec<u8>,
    watermarks: Vec<(AgentId, EffectId)>,
    timers: Vec<TimerRecord>,
}

/// Converts a topic message into the agent's message type.
type TopicDecoder<M> = fn(&[u8]) -> Result<M, postcard::Error>;

/// The running children of an agent.
#[derive(Default)]
struct Children {
    by_actor: HashMap<ActorId, AgentId>,
    cells: HashMap<AgentId, ActorCell>,
    /// Children being stopped on purpose: their exit is not a failure.
    stopping: HashSet<ActorId>,
    window: RestartWindow,
}

/// The runtime's side of an agent.
pub(crate) struct Core<A: Agent> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) id: AgentId,
    pub(crate) tree_key: Option<AgentId>,
    pub(crate) durable: bool,
    myself: ActorRef<Envelope>,
    args: A::Args,
    supervision: SupervisorSpec,
    snapshot_every: u64,
    max_attempts: u32,
    /// Where this incarnation begins in the agent's stream: the records at or below it
    /// are earlier incarnations' (see [`record`]); the seq of effects made at start.
    pub(crate) base: u64,
    /// Last stream sequence number dealt with (at least `base`).
    applied: u64,
    /// Sequence numbers of this agent's own records not yet passed by `applied`.
    own: BTreeSet<u64>,
    handled: Option<Arc<AtomicU64>>,
    /// Per sender, the newest effect handled from it.
    watermarks: HashMap<AgentId, EffectId>,
    timers: BTreeMap<TimerId, TimerRecord>,
    timer_tasks: HashMap<TimerId, AbortHandle>,
    subscriptions: HashMap<String, TopicDecoder<A::Msg>>,
    pub(crate) recorded_timers: HashMap<TimerId, TimerRecord>,
    pub(crate) recorded_replies: HashMap<EffectId, Result<Vec<u8>, String>>,
    /// Intents recorded for effects of messages being re-handled: what each effect id
    /// was (name, input digest), to catch a handler that now does something else there.
    pub(crate) recorded_intents: HashMap<EffectId, record::IntentRecord>,
    since_snapshot: u64,
    children: Children,
}

/// How a message is handled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Already handled before: effects suppressed.
    Replay,
    /// First time (or re-run after a crash): effects performed.
    Live,
}

fn failure(error: impl std::fmt::Display) -> ActorProcessingErr {
    error.to_string().into()
}

impl<A: Agent> Core<A> {
    /// Appends one of the agent's own records (not delivered) and waits until durable.
    pub(crate) async fn append_own(
        &mut self,
        kind: &'static str,
        payload: Vec<u8>,
    ) -> Result<(), Error> {
        let appended = self
            .shared
            .append(&self.id, kind, payload, false, None)
            .await?;
        self.own.insert(appended.first_seq);
        self.shared.wait_durable(appended.last_position).await?;
        Ok(())
    }

    pub(crate) fn subscribe(&mut self, topic: &str, decode: TopicDecoder<A::Msg>) {
        self.subscriptions.insert(topic.to_owned(), decode);
        let mut subscribers = self.shared.topics.entry(topic.to_owned()).or_default();
        if !subscribers.contains(&self.id) {
            subscribers.push(self.id.clone());
        }
    }

    /// Adds a pending timer, arming it when `arm`.
    pub(crate) fn pending_timer(&mut self, timer: TimerRecord, arm: bool) {
        let id = timer.id;
        let due = timer.due_micros;
        self.timers.insert(id, timer);
        if arm {
            self.arm(id, due);
        }
    }

    fn arm(&mut self, id: TimerId, due_micros: u64) {
        let delay = Duration::from_micros(due_micros.saturating_sub(Timestamp::now().as_micros()));
        let myself = self.myself.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = myself.send_message(Envelope::TimerDue(id));
        });
        if let Some(old) = self.timer_tasks.insert(id, task.abort_handle()) {
            old.abort();
        }
    }

    /// Starts child `id` as recorded in the tree.
    pub(crate) async fn start_child(&mut self, id: &AgentId) -> Result<(), Error> {
        if self.children.cells.contains_key(id) {
            return Ok(());
        }
        let (kind, start) = {
            let tree = self.shared.tree();
            let node = tree
                .get(id)
                .ok_or_else(|| Error::UnknownAgent(id.clone()))?;
            (
                node.kind.clone(),
                StartArgs {
                    id: id.clone(),
                    tree_key: Some(id.clone()),
                    args: node.args.clone(),
                    spec: node.spec.clone(),
                    base: node.base,
                },
            )
        };
        let kind = self.shared.kind(&kind)?;
        let actor = kind
            .start(Arc::clone(&self.shared), start, self.myself.get_cell())
            .await?;
        self.children.by_actor.insert(actor.get_id(), id.clone());
        self.children.cells.insert(id.clone(), actor.get_cell());
        Ok(())
    }

    /// Stops a running child on purpose and waits for it (killing it after a timeout).
    pub(crate) async fn stop_child_actor(&mut self, id: &AgentId) {
        let Some(cell) = self.children.cells.remove(id) else {
            return;
        };
        self.children.stopping.insert(cell.get_id());
        if cell.stop_and_wait(None, Some(STOP_TIMEOUT)).await.is_err() {
            tracing::warn!(agent = %id, "child did not stop in time; killing it");
            let _ = cell.kill_and_wait(Some(STOP_TIMEOUT)).await;
        }
    }

    /// The children, in start order, as the tree records them.
    fn child_order(&self) -> Vec<AgentId> {
        self.shared.tree().children_of(self.tree_key.as_ref())
    }

    /// Starts every recorded child that is not running.
    async fn start_recorded_children(&mut self) -> Result<(), ActorProcessingErr> {
        for child in self.child_order() {
            if let Err(error) = self.start_child(&child).await {
                tracing::warn!(agent = %self.id, %child, %error, "could not start a child");
                self.child_failed(child, error.to_string()).await?;
            }
        }
        Ok(())
    }

    /// Applies the supervision strategy to a failed (or exited permanent) child.
    async fn child_failed(
        &mut self,
        child: AgentId,
        reason: String,
    ) -> Result<(), ActorProcessingErr> {
        let mut pending = vec![(child, reason)];
        while let Some((child, reason)) = pending.pop() {
            if !self.shared.is_accepting() {
                return Ok(());
            }
            let order = self.child_order();
            let plan = supervision::plan(
                &self.supervision,
                &mut self.children.window,
                Instant::now(),
                &order,
                &child,
            );
            match plan {
                Plan::Escalate { restarts, within } => {
                    let why = format!(
                        "{} exceeded its restart intensity ({restarts} restarts in {within:?}); last failure: {child}: {reason}",
                        self.id
                    );
                    tracing::error!(agent = %self.id, %child, %reason, "restart intensity exceeded; escalating");
                    for c in order.iter().rev() {
                        self.stop_child_actor(c).await;
                    }
                    if self.tree_key.is_none() {
                        self.shared.fail(why);
                        return Ok(());
                    }
                    return Err(why.into());
                }
                Plan::Restart {
                    stop,
                    restart,
                    delay,
                } => {
                    tracing::info!(agent = %self.id, %child, %reason, ?restart, ?delay, "restarting");
                    Counters::add(&self.shared.metrics.agent_restarts, restart.len() as u64);
                    for s in &stop {
                        self.stop_child_actor(s).await;
                    }
                    if !delay.is_zero() {
                        let myself = self.myself.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = myself.send_message(Envelope::RestartChildren(restart));
                        });
                        continue;
                    }
                    for r in restart {
                        if let Err(error) = self.start_child(&r).await {
                            pending.push((r, error.to_string()));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Marks message `seq` handled.
    fn mark_handled(&mut self, seq: u64) {
        if let Some(cell) = &self.handled {
            cell.store(seq, Ordering::Release);
            // Read first: a store on every message would bounce the line between cores.
            if !self.shared.progress_dirty.load(Ordering::Relaxed) {
                self.shared.progress_dirty.store(true, Ordering::Release);
            }
        }
    }

    /// Records message `seq` as dead (after `attempts` failures) and skips it.
    async fn dead_letter(&mut self, seq: u64, attempts: u32, error: String) -> Result<(), Error> {
        tracing::warn!(agent = %self.id, seq, attempts, %error, "message dead-lettered");
        let payload = record::encode(
            "a dead letter",
            &DeadLetter {
                seq,
                attempts,
                error,
            },
        )?;
        self.append_own(record::DEAD, payload).await?;
        self.mark_handled(seq);
        if let Some((_, port)) = self.shared.asks.remove(&(self.id.clone(), seq)) {
            let _ = port.send(Err(Error::Handler {
                id: self.id.clone(),
                reason: format!("dead-lettered after {attempts} failed attempts"),
            }));
        }
        Ok(())
    }

    /// Moves `applied` past this agent's own records.
    fn skip_own(&mut self) {
        while self.own.remove(&(self.applied + 1)) {
            self.applied += 1;
        }
    }
}

impl<A: Agent> AgentActor<A> {
    /// Runs the user's handler on one message, catching panics. On failure, the attempt
    /// is journaled (durable agents), the asker gets the error, and the actor fails.
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
        let reason = match outcome {
            Ok(Ok(answer)) => {
                if let Some(port) = reply {
                    let _ = port.send(Ok(Box::new(answer) as AnyBox));
                }
                core.mark_handled(seq);
                if mode == Mode::Live {
                    Counters::add(&core.shared.metrics.messages_handled, 1);
                }
                return Ok(());
            }
            Ok(Err(error)) => error.to_string(),
            Err(panic) => panic_message(&panic),
        };
        tracing::warn!(agent = %core.id, seq, %reason, "handler failed");
        if let Some(port) = reply {
            let _ = port.send(Err(Error::Handler {
                id: core.id.clone(),
                reason: reason.clone(),
            }));
        }
        if core.durable {
            let payload = record::encode(
                "an attempt record",
                &AttemptRecord {
                    seq,
                    error: reason.clone(),
                },
            )?;
            Box::pin(core.append_own(record::ATTEMPT, payload)).await?;
        }
        Err(reason.into())
    }

    /// Handles one journaled message record of a durable agent.
    async fn handle_record(
        &self,
        state: &mut AgentState<A>,
        seq: u64,
        payload: &[u8],
        mode: Mode,
        asked: bool,
    ) -> Result<(), ActorProcessingErr> {
        let core = &mut state.core;
        let reply = if asked {
            core.shared
                .asks
                .remove(&(core.id.clone(), seq))
                .map(|(_, port)| port)
        } else {
            None
        };
        let stream = core.id.stream();
        let record: MsgRecord<'_> = match record::decode(stream, seq, payload) {
            Ok(record) => record,
            Err(error) => return Box::pin(self.undecodable(state, seq, error, reply)).await,
        };
        match &record.origin {
            Origin::External => {}
            Origin::Agent { from, effect } => {
                if core.watermarks.get(from).is_some_and(|seen| seen >= effect) {
                    tracing::debug!(agent = %core.id, seq, %from, "duplicate message dropped");
                    core.mark_handled(seq);
                    return Ok(());
                }
                core.watermarks.insert(from.clone(), *effect);
            }
            Origin::Timer(id) => {
                if core.timers.remove(id).is_none() {
                    core.mark_handled(seq);
                    return Ok(());
                }
                if let Some(task) = core.timer_tasks.remove(id) {
                    task.abort();
                }
            }
        }
        let decoded = match record.topic {
            Some(topic) => match core.subscriptions.get(topic) {
                Some(decode) => decode(record.body).map_err(|e| e.to_string()),
                None => Err(format!("not subscribed to topic {topic:?}")),
            },
            None => postcard::from_bytes::<A::Msg>(record.body).map_err(|e| e.to_string()),
        };
        let sent = Timestamp::from_micros(record.sent_micros);
        match decoded {
            Ok(msg) => {
                self.run_handler(state, seq, mode, Some(sent), msg, reply)
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
        let snapshot = SnapshotState {
            user,
            watermarks: core
                .watermarks
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            timers: core.timers.values().cloned().collect(),
        };
        let saved = match record::encode("a snapshot", &snapshot) {
            Ok(bytes) => core
                .shared
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
        let shared = Arc::clone(&state.core.shared);
        let permit = shared.recovery.acquire().await.map_err(failure)?;
        let id = state.core.id.clone();
        let stream = id.stream();
        let version = shared
            .ask_writer(|ack| WriterMsg::Register {
                id: id.clone(),
                actor: state.core.myself.clone(),
                ack,
            })
            .await
            .map_err(failure)?;
        // A snapshot at or below the base is an earlier incarnation's (the base is a
        // marker, never a handled message): the state starts from `init` instead.
        let base = state.core.base;
        let snapshot = shared
            .journal
            .load_snapshot(stream)
            .map_err(failure)?
            .filter(|snapshot| snapshot.seq > base);
        if let Some(snapshot) = snapshot {
            let saved: SnapshotState =
                record::decode(stream, snapshot.seq, &snapshot.state).map_err(failure)?;
            state.user = self
                .agent
                .restore(&state.core.args, &saved.user)
                .map_err(failure)?;
            state.core.watermarks = saved.watermarks.into_iter().collect();
            for timer in saved.timers {
                state.core.pending_timer(timer, false);
            }
            state.core.applied = snapshot.seq;
        }
        // Records read ahead by the runtime's start-up pass (one sequential scan instead
        // of a random read per record), then whatever followed them.
        let applied = state.core.applied;
        let mut events: Vec<Rec> = shared
            .preloaded
            .remove(&id)
            .map(|(_, recs)| recs)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.seq > applied && r.seq <= version)
            .collect();
        let next = events.last().map_or(applied, |r| r.seq) + 1;
        events.extend(shared.read_records(&id, next, version).map_err(failure)?);
        let mut attempts: HashMap<u64, (u32, String)> = HashMap::new();
        let mut dead: HashSet<u64> = HashSet::new();
        for event in &events {
            match event.kind {
                record::TIMER => {
                    let timer: TimerRecord =
                        record::decode(stream, event.seq, &event.payload).map_err(failure)?;
                    state.core.recorded_timers.insert(timer.id, timer);
                }
                record::INTENT => {
                    let intent: record::IntentRecord =
                        record::decode(stream, event.seq, &event.payload).map_err(failure)?;
                    state.core.recorded_intents.insert(intent.effect, intent);
                }
                record::REPLY | record::RESULT => {
                    let reply: ReplyRecord =
                        record::decode(stream, event.seq, &event.payload).map_err(failure)?;
                    state.core.recorded_replies.insert(reply.effect, reply.body);
                }
                record::ATTEMPT => {
                    let attempt: AttemptRecord =
                        record::decode(stream, event.seq, &event.payload).map_err(failure)?;
                    let entry = attempts.entry(attempt.seq).or_default();
                    entry.0 += 1;
                    entry.1 = attempt.error;
                }
                record::DEAD => {
                    let letter: DeadLetter =
                        record::decode(stream, event.seq, &event.payload).map_err(failure)?;
                    dead.insert(letter.seq);
                }
                _ => {}
            }
        }
        let done = state
            .core
            .handled
            .as_ref()
            .map_or(0, |h| h.load(Ordering::Acquire));
        let mut permit = Some(permit);
        let mut children_started = false;
        for event in events.iter().filter(|e| e.kind == record::MSG) {
            let mode = if event.seq <= done {
                Mode::Replay
            } else {
                Mode::Live
            };
            if mode == Mode::Live && !children_started {
                permit.take();
                state.core.start_recorded_children().await?;
                children_started = true;
            }
            if dead.contains(&event.seq) {
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
            self.handle_record(state, event.seq, &event.payload, mode, mode == Mode::Live)
                .await?;
        }
        drop(permit);
        if !children_started {
            state.core.start_recorded_children().await?;
        }
        let core = &mut state.core;
        core.applied = core.applied.max(version);
        core.own.retain(|s| *s > version);
        core.recorded_timers.clear();
        core.recorded_replies.clear();
        core.recorded_intents.clear();
        let pending: Vec<(TimerId, u64)> =
            core.timers.values().map(|t| (t.id, t.due_micros)).collect();
        for (timer, due) in pending {
            core.arm(timer, due);
        }
        shared.note_recovered(&id);
        tracing::debug!(agent = %id, version, replayed = events.len(), "agent recovered");
        Ok(())
    }

    /// Handles messages `applied + 1 ..= to` from the journal (a gap in deliveries).
    async fn catch_up(&self, state: &mut AgentState<A>, to: u64) -> Result<(), ActorProcessingErr> {
        let from = state.core.applied + 1;
        let events = state
            .core
            .shared
            .read_records(&state.core.id, from, to)
            .map_err(failure)?;
        for event in events {
            if event.kind == record::MSG && !state.core.own.contains(&event.seq) {
                self.handle_record(state, event.seq, &event.payload, Mode::Live, true)
                    .await?;
            }
            state.core.own.remove(&event.seq);
            state.core.applied = event.seq;
        }
        Ok(())
    }

    /// Answers a query from the state. A query that fails or panics answers with the
    /// error; the agent goes on.
    fn answer_query(&self, state: &AgentState<A>, run: crate::query::QueryFn, reply: ReplyPort) {
        let agent: &dyn std::any::Any = &*self.agent;
        let user: &dyn std::any::Any = &state.user;
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(agent, user)))
            .unwrap_or_else(|panic| {
                Err(Error::Handler {
                    id: state.core.id.clone(),
                    reason: panic_message(&panic),
                })
            });
        let _ = reply.send(answer);
    }

    /// Handles a message for a transient agent.
    async fn handle_local(
        &self,
        state: &mut AgentState<A>,
        msg: Result<A::Msg, String>,
        reply: Option<ReplyPort>,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Ok(msg) => {
                let seq = state.core.base;
                self.run_handler(state, seq, Mode::Live, None, msg, reply)
                    .await
            }
            Err(error) => {
                tracing::warn!(agent = %state.core.id, %error, "dropping a message that does not fit");
                if let Some(port) = reply {
                    let _ = port.send(Err(Error::Handler {
                        id: state.core.id.clone(),
                        reason: error,
                    }));
                }
                Ok(())
            }
        }
    }

    /// A durable timer came due: journal its firing (durable agents) or handle it.
    async fn timer_due(
        &self,
        state: &mut AgentState<A>,
        id: TimerId,
    ) -> Result<(), ActorProcessingErr> {
        let Some(timer) = state.core.timers.get(&id).cloned() else {
            return Ok(());
        };
        if state.core.durable {
            // Journal the firing; it comes back as a message, handled once.
            let core = &state.core;
            if let Err(error) = core
                .shared
                .send_record(&core.id, Origin::Timer(id), None, &timer.body, None)
                .await
            {
                tracing::warn!(agent = %core.id, %error, "could not fire a timer; retrying in 1 s");
                let due = Timestamp::now().as_micros() + 1_000_000;
                state.core.arm(id, due);
            }
            Ok(())
        } else {
            state.core.timers.remove(&id);
            state.core.timer_tasks.remove(&id);
            let msg = postcard::from_bytes::<A::Msg>(&timer.body).map_err(|e| e.to_string());
            self.handle_local(state, msg, None).await
        }
    }

    /// Starts children after a restart backoff.
    async fn restart_children(
        &self,
        state: &mut AgentState<A>,
        ids: Vec<AgentId>,
    ) -> Result<(), ActorProcessingErr> {
        for id in ids {
            if self.shared.tree().get(&id).is_none() {
                continue;
            }
            if let Err(error) = state.core.start_child(&id).await {
                state.core.child_failed(id, error.to_string()).await?;
            }
        }
        Ok(())
    }

    /// Restarts the journal writer (root only).
    async fn restart_writer(&self, myself: &ActorRef<Envelope>) -> Result<(), ActorProcessingErr> {
        tracing::warn!("the journal writer failed; restarting it");
        let (writer, _) =
            Actor::spawn_linked(None, Writer, Arc::clone(&self.shared), myself.get_cell())
                .await
                .map_err(failure)?;
        self.shared.set_writer(Some(writer));
        Ok(())
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
    type Arguments = StartArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Envelope>,
        start: StartArgs,
    ) -> Result<AgentState<A>, ActorProcessingErr> {
        let shared = Arc::clone(&self.shared);
        let stream = start.id.stream();
        let args: A::Args = record::decode(stream, 0, &start.args).map_err(failure)?;
        let user = self.agent.init(&args).map_err(failure)?;
        let durable = start.spec.durable;
        let handled = durable.then(|| shared.handled_cell(&start.id));
        let mut core = Core {
            snapshot_every: start
                .spec
                .snapshot_every
                .unwrap_or(shared.config.snapshot_every)
                .max(1),
            max_attempts: start
                .spec
                .max_attempts
                .unwrap_or(shared.config.max_attempts)
                .max(1),
            supervision: start.spec.supervision,
            shared,
            id: start.id,
            tree_key: start.tree_key,
            durable,
            myself: myself.clone(),
            args,
            base: start.base,
            applied: start.base,
            own: BTreeSet::new(),
            handled,
            watermarks: HashMap::new(),
            timers: BTreeMap::new(),
            timer_tasks: HashMap::new(),
            subscriptions: HashMap::new(),
            recorded_timers: HashMap::new(),
            recorded_replies: HashMap::new(),
            recorded_intents: HashMap::new(),
            since_snapshot: 0,
            children: Children::default(),
        };
        let mut user = user;
        self.agent
            .on_start(&mut StartContext { core: &mut core }, &mut user)
            .await
            .map_err(failure)?;
        if core.tree_key.is_some() {
            core.shared.live.insert(
                core.id.clone(),
                crate::runtime::Live {
                    actor: myself,
                    durable,
                    routed: false,
                },
            );
        }
        Ok(AgentState { user, core })
    }

    async fn post_start(
        &self,
        _myself: ActorRef<Envelope>,
        state: &mut AgentState<A>,
    ) -> Result<(), ActorProcessingErr> {
        if state.core.durable {
            self.recover(state).await
        } else if state.core.tree_key.is_some() {
            state.core.start_recorded_children().await
        } else {
            Ok(())
        }
    }

    async fn handle(
        &self,
        _myself: ActorRef<Envelope>,
        msg: Envelope,
        state: &mut AgentState<A>,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Envelope::Deliver {
                seq,
                position,
                payload,
                asked,
            } => {
                state.core.skip_own();
                if seq <= state.core.applied {
                    return Ok(());
                }
                if seq > state.core.applied + 1 {
                    Box::pin(self.catch_up(state, seq - 1)).await?;
                }
                state
                    .core
                    .shared
                    .wait_durable(position)
                    .await
                    .map_err(failure)?;
                state.core.applied = seq;
                self.handle_record(state, seq, &payload, Mode::Live, asked)
                    .await
            }
            Envelope::Local { msg, reply } => {
                let msg = msg
                    .downcast::<A::Msg>()
                    .map(|m| *m)
                    .map_err(|_| format!("not a message of kind {}", A::KIND));
                self.handle_local(state, msg, reply).await
            }
            Envelope::LocalTopic { topic, body } => {
                let msg = match state.core.subscriptions.get(&topic) {
                    Some(decode) => decode(&body).map_err(|e| e.to_string()),
                    None => Err(format!("not subscribed to topic {topic:?}")),
                };
                self.handle_local(state, msg, None).await
            }
            // Rare arms are boxed so that the common message path keeps a small future.
            Envelope::TimerDue(id) => Box::pin(self.timer_due(state, id)).await,
            Envelope::RestartChildren(ids) => Box::pin(self.restart_children(state, ids)).await,
            Envelope::StartChild(ChildStart { id, ack }) => {
                Box::pin(async {
                    let started = state.core.start_child(&id).await;
                    if started.is_err() {
                        let _ = self.shared.record_stop(&id).await;
                    }
                    let _ = ack.send(started);
                })
                .await;
                Ok(())
            }
            Envelope::StopChild { id, ack } => {
                Box::pin(state.core.stop_child_actor(&id)).await;
                let _ = ack.send(());
                Ok(())
            }
            Envelope::Drain(ack) => {
                let _ = ack.send(());
                Ok(())
            }
            Envelope::Query { run, reply } => {
                self.answer_query(state, run, reply);
                Ok(())
            }
        }
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Envelope>,
        event: SupervisionEvent,
        state: &mut AgentState<A>,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failed, reason) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, true, error.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, false, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        let core = &mut state.core;
        if core.tree_key.is_none()
            && self
                .shared
                .writer()
                .is_ok_and(|w| w.get_id() == cell.get_id())
        {
            if self.shared.is_accepting() {
                return self.restart_writer(&myself).await;
            }
            return Ok(());
        }
        let Some(child) = core.children.by_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        if core
            .children
            .cells
            .get(&child)
            .is_some_and(|c| c.get_id() == cell.get_id())
        {
            core.children.cells.remove(&child);
        }
        if core.children.stopping.remove(&cell.get_id()) {
            return Ok(());
        }
        let restart = match self.shared.tree().get(&child) {
            None => return Ok(()),
            Some(node) => match node.spec.restart {
                crate::Restart::Permanent => true,
                crate::Restart::Transient => failed,
                crate::Restart::Temporary => false,
            },
        };
        if !restart {
            tracing::info!(agent = %core.id, %child, %reason, "child exited; not restarted");
            if let Err(error) = self.shared.record_stop(&child).await {
                tracing::warn!(%child, %error, "could not record the exit");
            }
            return Ok(());
        }
        core.child_failed(child, reason).await
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Envelope>,
        state: &mut AgentState<A>,
    ) -> Result<(), ActorProcessingErr> {
        let core = &mut state.core;
        for child in core.child_order().iter().rev() {
            core.stop_child_actor(child).await;
        }
        let leftover: Vec<AgentId> = core.children.cells.keys().cloned().collect();
        for child in leftover {
            core.stop_child_actor(&child).await;
        }
        for (_, task) in core.timer_tasks.drain() {
            task.abort();
        }
        let me = core.myself.get_id();
        core.shared
            .live
            .remove_if(&core.id, |_, live| live.actor.get_id() == me);
        if core.tree_key.is_none() {
            if let Ok(writer) = self.shared.writer() {
                self.shared.set_writer(None);
                let _ = writer.stop_and_wait(None, Some(STOP_TIMEOUT)).await;
            }
        }
        Ok(())
    }
}

//! The [`Runtime`]: built with [`RuntimeBuilder`], it recovers the tree from the journal,
//! runs it, and shuts it down gracefully.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use ractor::{Actor, ActorRef};
use toka_store::{Appended, Journal, NewEvent};
use tokio::sync::{Notify, Semaphore, oneshot, watch};

use crate::agent_actor::{AgentActor, Root, StartArgs};
use crate::envelope::{AnyBox, ChildStart, Envelope, ReplyPort};
use crate::extensions::Extensions;
use crate::kind::{Kind, KindOf};
use crate::metrics::{self, Counters, RuntimeMetrics};
use crate::record::{self, MsgRecord, Origin, ProgressRecord, TreeRecord};
use crate::tree::{AgentInfo, Tree};
use crate::writer::{Writer, WriterMsg};
use crate::{Agent, AgentId, Error, Queries, SpawnSpec, SupervisorSpec, Topic};

/// Limits and defaults of a runtime.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Default snapshot interval, in handled messages, for agents that make snapshots and
    /// whose spec sets none. Default: 1,000.
    pub snapshot_every: u64,
    /// Default failed attempts at one message before it is dead-lettered. Default: 3.
    pub max_attempts: u32,
    /// Agents recovering (replaying their journal) at once. Default: 16.
    pub recovery_concurrency: usize,
    /// How the root supervises top-level agents. Default: one-for-one, 3 restarts in 5 s.
    pub root_supervision: SupervisorSpec,
    /// How long [`Runtime::shutdown`] waits for agents to drain their mailboxes. Default:
    /// 10 s.
    pub drain_timeout: Duration,
    /// Memory for reading agents' records ahead at start-up, in one sequential pass over
    /// the log (much faster than one read per record); past it, agents read their own
    /// streams. Default: 256 MiB; 0 turns the pass off.
    pub preload_bytes: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            snapshot_every: 1_000,
            max_attempts: 3,
            recovery_concurrency: 16,
            root_supervision: SupervisorSpec::default(),
            drain_timeout: Duration::from_secs(10),
            preload_bytes: 256 << 20,
        }
    }
}

/// Where messages for an agent go.
pub(crate) enum Target {
    /// Journal them (a durable agent).
    Journal,
    /// Put them in this transient agent's mailbox.
    Mailbox(ActorRef<Envelope>),
}

impl Target {
    /// Sends a transient agent's message.
    pub(crate) fn send_local(
        actor: &ActorRef<Envelope>,
        id: &AgentId,
        msg: AnyBox,
        reply: Option<ReplyPort>,
    ) -> Result<(), Error> {
        actor
            .send_message(Envelope::Local { msg, reply })
            .map_err(|_| Error::UnknownAgent(id.clone()))
    }
}

/// One record of an agent's stream, as recovery needs it.
pub(crate) struct Rec {
    pub(crate) seq: u64,
    /// One of the record kinds of [`record`]; empty for kinds recovery ignores.
    pub(crate) kind: &'static str,
    pub(crate) payload: Vec<u8>,
}

impl Rec {
    pub(crate) fn from_event(seq: u64, kind: &str, payload: Vec<u8>) -> Self {
        let kind = [
            record::MSG,
            record::TIMER,
            record::REPLY,
            record::RESULT,
            record::INTENT,
            record::ATTEMPT,
            record::DEAD,
        ]
        .into_iter()
        .find(|k| *k == kind)
        .unwrap_or("");
        Rec { seq, kind, payload }
    }
}

/// A running agent's actor.
pub(crate) struct Live {
    pub(crate) actor: ActorRef<Envelope>,
    pub(crate) durable: bool,
    /// Whether the writer forwards journaled messages to it (durable agents, once they
    /// registered for recovery).
    pub(crate) routed: bool,
}

/// State shared by the runtime handle, the writer and every agent actor.
pub(crate) struct Shared {
    pub(crate) journal: Arc<dyn Journal>,
    pub(crate) config: RuntimeConfig,
    kinds: HashMap<&'static str, Arc<dyn Kind>>,
    tree: Mutex<Tree>,
    /// Running agents by id.
    pub(crate) live: DashMap<AgentId, Live>,
    /// Highest message sequence each durable agent has handled.
    pub(crate) handled: DashMap<AgentId, Arc<AtomicU64>>,
    pub(crate) progress_dirty: AtomicBool,
    writer: RwLock<Option<ActorRef<WriterMsg>>>,
    root: OnceLock<ActorRef<Envelope>>,
    pub(crate) recovery: Semaphore,
    /// Agents whose first recovery has not finished.
    recovering: Mutex<HashSet<AgentId>>,
    recovered: Notify,
    accepting: AtomicBool,
    failure: watch::Sender<Option<String>>,
    /// Subscribers by topic.
    pub(crate) topics: DashMap<String, Vec<AgentId>>,
    /// Reply ports of asks to durable agents, by agent and message sequence number.
    pub(crate) asks: DashMap<(AgentId, u64), ReplyPort>,
    /// Records read ahead for each agent's first recovery.
    pub(crate) preloaded: DashMap<AgentId, Vec<Rec>>,
    /// Services handed to handlers ([`RuntimeBuilder::extension`]).
    pub(crate) extensions: Extensions,
    /// Counters read by [`Runtime::metrics`].
    pub(crate) metrics: Counters,
}

impl Shared {
    pub(crate) fn tree(&self) -> MutexGuard<'_, Tree> {
        // Tree updates are single inserts/removes; a panic cannot leave one half-done.
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn kind(&self, name: &str) -> Result<Arc<dyn Kind>, Error> {
        self.kinds
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownKind(name.to_owned()))
    }

    pub(crate) fn writer(&self) -> Result<ActorRef<WriterMsg>, Error> {
        self.writer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(Error::ShuttingDown)
    }

    pub(crate) fn set_writer(&self, writer: Option<ActorRef<WriterMsg>>) {
        *self.writer.write().unwrap_or_else(|e| e.into_inner()) = writer;
    }

    pub(crate) fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }

    pub(crate) fn check_accepting(&self) -> Result<(), Error> {
        if self.accepting.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(Error::ShuttingDown)
        }
    }

    /// The handled-progress cell of a durable agent.
    pub(crate) fn handled_cell(&self, id: &AgentId) -> Arc<AtomicU64> {
        Arc::clone(
            self.handled
                .entry(id.clone())
                .or_insert_with(|| Arc::new(AtomicU64::new(0)))
                .value(),
        )
    }

    pub(crate) fn note_recovered(&self, id: &AgentId) {
        let mut recovering = self.recovering.lock().unwrap_or_else(|e| e.into_inner());
        if recovering.remove(id) && recovering.is_empty() {
            self.recovered.notify_waiters();
        }
    }

    pub(crate) fn fail(&self, reason: String) {
        tracing::error!(%reason, "the runtime's root supervisor gave up");
        self.accepting.store(false, Ordering::Release);
        self.failure.send_replace(Some(reason));
        self.recovered.notify_waiters();
    }

    /// Appends one record to `id`'s stream through the writer; with `deliver`, the writer
    /// hands it to the agent. Returns once written (not yet durable).
    pub(crate) async fn append(
        &self,
        id: &AgentId,
        kind: &'static str,
        payload: Vec<u8>,
        deliver: bool,
        reply: Option<ReplyPort>,
    ) -> Result<Appended, Error> {
        self.ask_writer(|ack| WriterMsg::Append {
            id: id.clone(),
            event: NewEvent::new(kind, payload),
            deliver,
            reply,
            ack,
        })
        .await
    }

    /// Waits until the journal is durable up to `position`, timing the wait.
    pub(crate) async fn wait_durable(&self, position: u64) -> Result<(), Error> {
        let started = Instant::now();
        let result = self.journal.wait_durable(position).await;
        self.metrics.flush_waited(started.elapsed());
        result.map_err(Error::from)
    }

    /// Sends the writer a request built around a reply port and waits for the answer.
    pub(crate) async fn ask_writer<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> WriterMsg,
    ) -> Result<T, Error> {
        let (ack, done) = oneshot::channel();
        self.writer()?
            .send_message(request(ack))
            .map_err(|_| Error::ShuttingDown)?;
        done.await.map_err(|_| Error::ShuttingDown)?
    }

    /// The records of `id`'s stream with sequence numbers `from..=to`.
    pub(crate) fn read_records(&self, id: &AgentId, from: u64, to: u64) -> Result<Vec<Rec>, Error> {
        let mut records = Vec::new();
        for event in self.journal.iter_stream(id.stream(), from)? {
            let event = event?;
            if event.seq > to {
                break;
            }
            records.push(Rec::from_event(event.seq, &event.kind, event.payload));
        }
        Ok(records)
    }

    /// Appends a record to a runtime stream and waits until it is durable.
    pub(crate) async fn append_runtime(
        &self,
        stream: &'static str,
        kind: &'static str,
        payload: Vec<u8>,
    ) -> Result<(), Error> {
        let appended = self
            .ask_writer(|ack| WriterMsg::AppendTo {
                stream,
                event: NewEvent::new(kind, payload),
                ack,
            })
            .await?;
        self.wait_durable(appended.last_position).await?;
        Ok(())
    }

    /// Journals a message for durable agent `to` and waits until it is durable.
    pub(crate) async fn send_record(
        &self,
        to: &AgentId,
        origin: Origin,
        topic: Option<&str>,
        body: &[u8],
        reply: Option<ReplyPort>,
    ) -> Result<(), Error> {
        let payload = record::encode(
            "a message",
            &MsgRecord {
                origin,
                sent_micros: toka_store::Timestamp::now().as_micros(),
                topic,
                body,
            },
        )?;
        let appended = self.append(to, record::MSG, payload, true, reply).await?;
        self.wait_durable(appended.last_position).await?;
        Ok(())
    }

    /// The kind of `id`, checked against `expected`.
    pub(crate) fn check_kind(&self, id: &AgentId, expected: &'static str) -> Result<(), Error> {
        let tree = self.tree();
        let node = tree
            .get(id)
            .ok_or_else(|| Error::UnknownAgent(id.clone()))?;
        if node.kind == expected {
            Ok(())
        } else {
            Err(Error::WrongKind {
                id: id.clone(),
                expected,
                actual: node.kind.clone(),
            })
        }
    }

    /// Sends `msg` to `id` if it is a running transient agent (under the registry's read
    /// lock: no reference counting on the hot path); gives it back if `id` is durable, for
    /// the caller to journal.
    pub(crate) fn send_or_return<M: Send + 'static>(
        &self,
        id: &AgentId,
        msg: M,
        reply: Option<ReplyPort>,
    ) -> Result<Option<(M, Option<ReplyPort>)>, Error> {
        if let Some(live) = self.live.get(id) {
            if live.durable {
                return Ok(Some((msg, reply)));
            }
            return live
                .actor
                .send_message(Envelope::Local {
                    msg: Box::new(msg),
                    reply,
                })
                .map(|()| None)
                .map_err(|_| Error::UnknownAgent(id.clone()));
        }
        match self.tree().get(id) {
            Some(node) if node.spec.durable => Ok(Some((msg, reply))),
            _ => Err(Error::UnknownAgent(id.clone())),
        }
    }

    /// Where messages for `id` go, in one lookup: the journal (durable agents, running or
    /// not), or the mailbox of a running transient agent.
    pub(crate) fn target(&self, id: &AgentId) -> Result<Target, Error> {
        if let Some(live) = self.live.get(id) {
            return Ok(if live.durable {
                Target::Journal
            } else {
                Target::Mailbox(live.actor.clone())
            });
        }
        match self.tree().get(id) {
            Some(node) if node.spec.durable => Ok(Target::Journal),
            _ => Err(Error::UnknownAgent(id.clone())),
        }
    }

    /// Records a new agent in the tree (journaled if durable). The caller starts it.
    pub(crate) async fn record_spawn(
        &self,
        parent: Option<&AgentId>,
        kind: &str,
        args: Vec<u8>,
        spec: SpawnSpec,
    ) -> Result<(), Error> {
        self.check_accepting()?;
        self.kind(kind)?;
        let id = spec.id.clone();
        if let Some(p) = parent {
            if self.tree().get(p).is_none() {
                return Err(Error::UnknownAgent(p.clone()));
            }
        }
        // Reserve the id first, so that two racing spawns cannot both journal it.
        if !self.tree().insert(
            parent.cloned(),
            kind.to_owned(),
            args.clone(),
            spec.clone(),
            0,
        ) {
            return Err(Error::AlreadyExists(id));
        }
        if spec.durable {
            let journaled = async {
                // A new incarnation of an id used before begins after the records of the
                // earlier ones (see `record`): the marker is appended before the tree
                // record, so once the spawn is durable, so is its base.
                let base = self
                    .ask_writer(|ack| WriterMsg::Incarnation {
                        id: id.clone(),
                        kind: kind.to_owned(),
                        ack,
                    })
                    .await?;
                self.tree().set_base(&id, base);
                let (parent, kind) = (parent.cloned(), kind.to_owned());
                let record = if base == 0 {
                    TreeRecord::Spawned {
                        parent,
                        kind,
                        args,
                        spec,
                    }
                } else {
                    TreeRecord::Respawned {
                        parent,
                        kind,
                        args,
                        spec,
                        base,
                    }
                };
                let payload = record::encode("a spawn record", &record)?;
                self.append_runtime(record::TREE_STREAM, record::SPAWN, payload)
                    .await
            }
            .await;
            if let Err(error) = journaled {
                self.tree().remove(&id);
                return Err(error);
            }
        }
        Ok(())
    }

    /// Removes `id` and its subtree from the tree, journaling the stop; returns the
    /// removed ids, children first.
    pub(crate) async fn record_stop(&self, id: &AgentId) -> Result<Vec<AgentId>, Error> {
        let (ids, durable) = {
            let tree = self.tree();
            let ids = tree.subtree_bottom_up(id);
            if ids.is_empty() {
                return Err(Error::UnknownAgent(id.clone()));
            }
            let durable = ids
                .iter()
                .any(|i| tree.get(i).is_some_and(|n| n.spec.durable));
            (ids, durable)
        };
        if durable {
            let payload =
                record::encode("a stop record", &TreeRecord::Stopped { ids: ids.clone() })?;
            self.append_runtime(record::TREE_STREAM, record::STOP, payload)
                .await?;
        }
        let mut tree = self.tree();
        for i in &ids {
            tree.remove(i);
        }
        drop(tree);
        for mut subscribers in self.topics.iter_mut() {
            subscribers.retain(|s| !ids.contains(s));
        }
        self.asks.retain(|(agent, _), _| !ids.contains(agent));
        Ok(ids)
    }

    /// The actor supervising `id`'s children: its own, or the root's for `None`.
    pub(crate) fn supervisor_of(
        &self,
        parent: Option<&AgentId>,
    ) -> Result<ActorRef<Envelope>, Error> {
        match parent {
            None => self.root.get().cloned().ok_or(Error::ShuttingDown),
            Some(p) => self
                .live
                .get(p)
                .map(|l| l.actor.clone())
                .ok_or_else(|| Error::UnknownAgent(p.clone())),
        }
    }

    /// Publishes encoded `body` to every subscriber of `topic`.
    pub(crate) async fn publish(
        &self,
        topic: &str,
        origin: Origin,
        body: &[u8],
    ) -> Result<usize, Error> {
        let subscribers = self
            .topics
            .get(topic)
            .map(|s| s.value().clone())
            .unwrap_or_default();
        for id in &subscribers {
            match self.target(id)? {
                Target::Journal => {
                    self.send_record(id, origin.clone(), Some(topic), body, None)
                        .await?;
                }
                Target::Mailbox(actor) => {
                    let _ = actor.send_message(Envelope::LocalTopic {
                        topic: topic.to_owned(),
                        body: body.to_vec(),
                    });
                }
            }
        }
        Ok(subscribers.len())
    }
}

/// Reads the records of every agent in `agents` that recovery will replay (those after
/// the agent's snapshot and after its incarnation's base, the map's values), in one
/// sequential pass over the log, up to about `budget` bytes of payload. Each agent's list
/// is a gap-free run of its stream from there on; recovery reads whatever follows from the
/// stream itself.
fn preload(
    journal: &dyn Journal,
    agents: &HashMap<AgentId, u64>,
    budget: usize,
) -> Result<DashMap<AgentId, Vec<Rec>>, Error> {
    let preloaded = DashMap::new();
    if agents.is_empty() || budget == 0 {
        return Ok(preloaded);
    }
    let started = Instant::now();
    let mut wanted: HashMap<String, (AgentId, u64, Vec<Rec>)> =
        HashMap::with_capacity(agents.len());
    for (id, base) in agents {
        let from = journal
            .load_snapshot(id.stream())?
            .map_or(1, |snapshot| snapshot.seq + 1)
            .max(base + 1);
        wanted.insert(id.stream().to_owned(), (id.clone(), from, Vec::new()));
    }
    let mut bytes = 0usize;
    let mut records = 0usize;
    journal.replay(1, &mut |event| {
        if let Some((_, from, recs)) = wanted.get_mut(event.stream) {
            if event.seq >= *from {
                bytes += event.payload.len() + 64;
                records += 1;
                recs.push(Rec::from_event(
                    event.seq,
                    event.kind,
                    event.payload.into_owned(),
                ));
                if bytes > budget {
                    return std::ops::ControlFlow::Break(());
                }
            }
        }
        std::ops::ControlFlow::Continue(())
    })?;
    for (_, (id, _, recs)) in wanted {
        if !recs.is_empty() {
            preloaded.insert(id, recs);
        }
    }
    tracing::debug!(
        records,
        bytes,
        millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "read ahead for recovery"
    );
    Ok(preloaded)
}

/// Builds a [`Runtime`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), toka_actors::Error> {
/// use std::sync::Arc;
/// use toka_actors::Runtime;
/// use toka_store::{JournalConfig, MemoryJournal};
///
/// let journal = Arc::new(MemoryJournal::new(JournalConfig::default())?);
/// let runtime = Runtime::builder(journal).start().await?;
/// runtime.shutdown().await?;
/// # Ok(()) }
/// ```
pub struct RuntimeBuilder {
    journal: Arc<dyn Journal>,
    kinds: HashMap<&'static str, Arc<dyn Kind>>,
    config: RuntimeConfig,
    extensions: Extensions,
}

impl RuntimeBuilder {
    /// Hands `value` to every handler: [`Context::extension`](crate::Context::extension)
    /// returns it by type. Use it for services agents need but cannot receive in their
    /// serialized arguments (a tool host, a model client). One value per type; a later
    /// call with the same type replaces the earlier value.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use toka_actors::Runtime;
    /// # use toka_store::{JournalConfig, MemoryJournal};
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// struct Greeting(&'static str);
    /// let journal = Arc::new(MemoryJournal::new(JournalConfig::default())?);
    /// let runtime = Runtime::builder(journal).extension(Greeting("hello")).start().await?;
    /// assert_eq!(runtime.extension::<Greeting>().map(|g| g.0), Some("hello"));
    /// # runtime.shutdown().await?; Ok(()) }
    /// ```
    #[must_use]
    pub fn extension<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.extensions.insert(value);
        self
    }

    /// Registers agent kind `A` (the value is shared by every agent of the kind). A
    /// journal that names a kind not registered fails [`RuntimeBuilder::start`].
    #[must_use]
    pub fn register<A: Agent>(mut self, agent: A) -> Self {
        self.kinds.insert(A::KIND, Arc::new(KindOf::new(agent)));
        self
    }

    /// Registers an agent kind that answers queries ([`Queries`]): like
    /// [`RuntimeBuilder::register`], and it also answers JSON queries
    /// ([`Runtime::query_json`]).
    #[must_use]
    pub fn register_with_queries<A: Queries>(mut self, agent: A) -> Self {
        self.kinds
            .insert(A::KIND, Arc::new(KindOf::new(agent).with_queries()));
        self
    }

    /// Replaces the configuration.
    #[must_use]
    pub fn config(mut self, config: RuntimeConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets how many agents recover at once.
    #[must_use]
    pub fn recovery_concurrency(mut self, agents: usize) -> Self {
        self.config.recovery_concurrency = agents.max(1);
        self
    }

    /// Sets how the root supervises top-level agents.
    #[must_use]
    pub fn root_supervision(mut self, spec: SupervisorSpec) -> Self {
        self.config.root_supervision = spec;
        self
    }

    /// Recovers the tree recorded in the journal and starts it. Returns once every
    /// recorded agent has recovered its state; messages sent meanwhile wait.
    ///
    /// # Errors
    /// [`Error::Decode`] for an unreadable tree record, [`Error::UnknownKind`] for a
    /// recorded kind that is not registered, [`Error::Journal`], and [`Error::Failed`]
    /// if recovery kept failing until the root gave up.
    pub async fn start(self) -> Result<Runtime, Error> {
        let started = Instant::now();
        let journal = self.journal;
        let mut tree = Tree::default();
        for event in journal.iter_stream(record::TREE_STREAM, 1)? {
            let event = event?;
            tree.apply(record::decode(
                record::TREE_STREAM,
                event.seq,
                &event.payload,
            )?);
        }
        let walked: Vec<(AgentId, String, bool)> = tree
            .walk()
            .into_iter()
            .map(|(id, node)| (id, node.kind.clone(), node.spec.durable))
            .collect();
        for (_, kind, _) in &walked {
            if !self.kinds.contains_key(kind.as_str()) {
                return Err(Error::UnknownKind(kind.clone()));
            }
        }
        let handled = DashMap::new();
        let mut progress_from = 1;
        if let Some(snapshot) = journal.load_snapshot(record::PROGRESS_STREAM)? {
            let progress: ProgressRecord =
                record::decode(record::PROGRESS_STREAM, snapshot.seq, &snapshot.state)?;
            for (id, seq) in progress.handled {
                handled.insert(id, Arc::new(AtomicU64::new(seq)));
            }
            progress_from = snapshot.seq + 1;
        }
        for event in journal.iter_stream(record::PROGRESS_STREAM, progress_from)? {
            let event = event?;
            let progress: ProgressRecord =
                record::decode(record::PROGRESS_STREAM, event.seq, &event.payload)?;
            for (id, seq) in progress.handled {
                handled.insert(id, Arc::new(AtomicU64::new(seq)));
            }
        }
        let recovering: HashSet<AgentId> = walked
            .iter()
            .filter(|(_, _, durable)| *durable)
            .map(|(id, _, _)| id.clone())
            .collect();
        let agents = walked.len();
        let bases: HashMap<AgentId, u64> = recovering
            .iter()
            .map(|id| (id.clone(), tree.get(id).map_or(0, |n| n.base)))
            .collect();
        let preloaded = preload(&*journal, &bases, self.config.preload_bytes)?;
        let shared = Arc::new(Shared {
            journal,
            recovery: Semaphore::new(self.config.recovery_concurrency.max(1)),
            config: self.config,
            kinds: self.kinds,
            tree: Mutex::new(tree),
            live: DashMap::new(),
            handled,
            progress_dirty: AtomicBool::new(false),
            writer: RwLock::new(None),
            root: OnceLock::new(),
            recovering: Mutex::new(recovering),
            recovered: Notify::new(),
            accepting: AtomicBool::new(true),
            failure: watch::channel(None).0,
            topics: DashMap::new(),
            asks: DashMap::new(),
            preloaded,
            extensions: self.extensions,
            metrics: Counters::default(),
        });
        let root_actor = AgentActor::<Root>::new(Arc::new(Root), Arc::clone(&shared));
        let (root, _) = Actor::spawn(None, root_actor, StartArgs::root(&shared.config))
            .await
            .map_err(|e| Error::Internal(format!("starting the root supervisor: {e}")))?;
        let (writer, _) = Actor::spawn_linked(None, Writer, Arc::clone(&shared), root.get_cell())
            .await
            .map_err(|e| Error::Internal(format!("starting the journal writer: {e}")))?;
        shared.set_writer(Some(writer));
        let _ = shared.root.set(root.clone());
        let top = shared.tree().children_of(None);
        root.send_message(Envelope::RestartChildren(top))
            .map_err(|_| Error::Internal("the root supervisor stopped".into()))?;
        let runtime = Runtime { shared };
        runtime.wait_recovered().await?;
        runtime
            .shared
            .metrics
            .recovery_micros
            .store(metrics::micros(started.elapsed()), Ordering::Relaxed);
        tracing::info!(
            agents,
            millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "runtime recovered"
        );
        Ok(runtime)
    }
}

/// A running Toka runtime: the supervision tree of agents over a journal.
///
/// Cheap to clone; every clone controls the same runtime. See the crate docs for the
/// semantics it keeps.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("agents", &self.shared.tree().len())
            .field("running", &self.shared.live.len())
            .finish()
    }
}

impl Runtime {
    /// Starts building a runtime over `journal`.
    pub fn builder(journal: Arc<dyn Journal>) -> RuntimeBuilder {
        RuntimeBuilder {
            journal,
            kinds: HashMap::new(),
            config: RuntimeConfig::default(),
            extensions: Extensions::default(),
        }
    }

    /// The service of type `T` given to
    /// [`RuntimeBuilder::extension`], if any.
    pub fn extension<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.shared.extensions.get::<T>()
    }

    async fn wait_recovered(&self) -> Result<(), Error> {
        loop {
            let notified = self.shared.recovered.notified();
            if let Some(reason) = self.shared.failure.borrow().clone() {
                return Err(Error::Failed(reason));
            }
            if self
                .shared
                .recovering
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
            {
                return Ok(());
            }
            // Re-check now and then: an agent removed from the tree while recovering
            // never reports.
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
            let tree = self.shared.tree();
            self.shared
                .recovering
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|id| tree.get(id).is_some());
        }
    }

    /// A snapshot of the runtime's counters: messages handled, restarts, journal
    /// appends and group writes, time spent waiting for durability, and how long the
    /// last start's recovery took. Cheap (a few relaxed atomic loads).
    pub fn metrics(&self) -> RuntimeMetrics {
        self.shared.metrics.snapshot()
    }

    /// The journal under the runtime.
    pub fn journal(&self) -> &Arc<dyn Journal> {
        &self.shared.journal
    }

    /// Spawns a top-level agent of kind `A`; returns once it is journaled (durable agents)
    /// and started.
    ///
    /// The id may have been used by an agent stopped before ([`Runtime::stop`]): the new
    /// agent is then a new *incarnation*, of any kind, arguments and parent. It starts
    /// fresh from [`Agent::init`]: no snapshot, message, timer, recorded reply or effect
    /// outcome, attempt or dead letter of an earlier incarnation is applied, replayed,
    /// fired or counted, before or after a restart of the runtime, and its effects are
    /// never deduplicated against theirs. The earlier records stay in the stream, for
    /// audit; the new incarnation begins after them at a marker record (its
    /// [`AgentInfo::incarnation`]). The layout is described in [`record`].
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::UnknownKind`] if `A` is not registered,
    /// [`Error::Encode`], [`Error::Journal`], [`Error::Spawn`], [`Error::ShuttingDown`].
    pub async fn spawn<A: Agent>(
        &self,
        spec: SpawnSpec,
        args: A::Args,
    ) -> Result<AgentRef<A>, Error> {
        self.spawn_under::<A>(None, spec, args).await
    }

    /// Spawns an agent of kind `A` as a child of `parent` (`None`: top level).
    ///
    /// # Errors
    /// As [`Runtime::spawn`], and [`Error::UnknownAgent`] if `parent` is not running.
    pub async fn spawn_under<A: Agent>(
        &self,
        parent: Option<&AgentId>,
        spec: SpawnSpec,
        args: A::Args,
    ) -> Result<AgentRef<A>, Error> {
        let id = spec.id.clone();
        let args = record::encode("arguments", &args)?;
        self.spawn_encoded(parent, A::KIND, spec, args).await?;
        Ok(AgentRef::new(id, Arc::clone(&self.shared)))
    }

    /// Spawns an agent of a kind named at run time, with JSON arguments (for APIs).
    ///
    /// # Errors
    /// As [`Runtime::spawn_under`], and [`Error::BadJson`].
    pub async fn spawn_json(
        &self,
        parent: Option<&AgentId>,
        kind: &str,
        spec: SpawnSpec,
        args: serde_json::Value,
    ) -> Result<(), Error> {
        let args = self.shared.kind(kind)?.args_from_json(args)?;
        self.spawn_encoded(parent, kind, spec, args).await
    }

    async fn spawn_encoded(
        &self,
        parent: Option<&AgentId>,
        kind: &str,
        spec: SpawnSpec,
        args: Vec<u8>,
    ) -> Result<(), Error> {
        let supervisor = self.shared.supervisor_of(parent)?;
        let id = spec.id.clone();
        self.shared.record_spawn(parent, kind, args, spec).await?;
        let (ack, started) = oneshot::channel();
        supervisor
            .send_message(Envelope::StartChild(ChildStart {
                id: id.clone(),
                ack,
            }))
            .map_err(|_| Error::ShuttingDown)?;
        started.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Stops agent `id` and its subtree (children first) and removes them from the tree;
    /// the stop is journaled, and holds across restarts of the runtime.
    ///
    /// Their journal streams are kept, with every record, readable for audit (e.g. with
    /// [`Journal::iter_stream`]). Nothing in them comes back: spawning one of the ids again
    /// ([`Runtime::spawn`]) starts a new incarnation with a fresh state, which ignores
    /// what the stopped incarnation journaled (see [`record`]). Messages sent to a stopped
    /// id are refused with [`Error::UnknownAgent`]; one already in flight when it stopped
    /// may still be journaled in its stream, and is never handled.
    ///
    /// # Errors
    /// [`Error::UnknownAgent`], [`Error::Journal`].
    pub async fn stop(&self, id: &AgentId) -> Result<(), Error> {
        let parent = self
            .shared
            .tree()
            .get(id)
            .ok_or_else(|| Error::UnknownAgent(id.clone()))?
            .parent
            .clone();
        self.shared.record_stop(id).await?;
        let supervisor = self.shared.supervisor_of(parent.as_ref())?;
        let (ack, stopped) = oneshot::channel();
        if supervisor
            .send_message(Envelope::StopChild {
                id: id.clone(),
                ack,
            })
            .is_ok()
        {
            let _ = stopped.await;
        }
        Ok(())
    }

    /// A typed reference to agent `id`, if it is in the tree and of kind `A`.
    ///
    /// # Errors
    /// [`Error::UnknownAgent`], [`Error::WrongKind`].
    pub fn agent<A: Agent>(&self, id: &AgentId) -> Result<AgentRef<A>, Error> {
        self.shared.check_kind(id, A::KIND)?;
        Ok(AgentRef::new(id.clone(), Arc::clone(&self.shared)))
    }

    /// Every agent in the tree, parents before children, in start order.
    pub fn tree(&self) -> Vec<AgentInfo> {
        let tree = self.shared.tree();
        tree.walk()
            .into_iter()
            .map(|(id, node)| AgentInfo {
                running: self.shared.live.contains_key(&id),
                kind: node.kind.clone(),
                parent: node.parent.clone(),
                durable: node.spec.durable,
                incarnation: node.base,
                id,
            })
            .collect()
    }

    /// Sends a JSON message to agent `id` (durable: returns once journaled).
    ///
    /// # Errors
    /// [`Error::UnknownAgent`], [`Error::BadJson`], [`Error::Journal`].
    pub async fn send_json(&self, id: &AgentId, msg: serde_json::Value) -> Result<(), Error> {
        self.shared.check_accepting()?;
        let kind = self.kind_of(id)?;
        match self.shared.target(id)? {
            Target::Journal => {
                let body = kind.msg_from_json(msg)?;
                self.shared
                    .send_record(id, Origin::External, None, &body, None)
                    .await
            }
            Target::Mailbox(actor) => {
                Target::send_local(&actor, id, kind.boxed_msg_from_json(msg)?, None)
            }
        }
    }

    /// Asks agent `id` with a JSON message; the reply as JSON.
    ///
    /// # Errors
    /// As [`Runtime::send_json`], and [`Error::Timeout`], [`Error::Handler`].
    pub async fn ask_json(
        &self,
        id: &AgentId,
        msg: serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, Error> {
        self.shared.check_accepting()?;
        let kind = self.kind_of(id)?;
        let (reply, answer) = oneshot::channel();
        match self.shared.target(id)? {
            Target::Journal => {
                let body = kind.msg_from_json(msg)?;
                self.shared
                    .send_record(id, Origin::External, None, &body, Some(reply))
                    .await?;
            }
            Target::Mailbox(actor) => {
                Target::send_local(&actor, id, kind.boxed_msg_from_json(msg)?, Some(reply))?;
            }
        }
        let reply = await_reply(id, answer, timeout).await?;
        kind.reply_to_json(reply)
    }

    /// Queries agent `id` with a JSON query and returns its JSON answer: nothing is
    /// journaled (see [`Queries`] for what a query sees). Its kind must have been
    /// registered with [`RuntimeBuilder::register_with_queries`].
    ///
    /// # Errors
    /// [`Error::UnknownAgent`], [`Error::NoQueries`], [`Error::BadJson`] for a query that
    /// does not fit the kind, [`Error::Handler`] if the agent's `query` failed,
    /// [`Error::Timeout`], [`Error::ShuttingDown`].
    pub async fn query_json(
        &self,
        id: &AgentId,
        query: serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, Error> {
        let kind = self.kind_of(id)?;
        let Some(json) = kind.json_queries() else {
            let name = self.shared.tree().get(id).map(|n| n.kind.clone());
            return Err(Error::NoQueries {
                id: id.clone(),
                kind: name.unwrap_or_default(),
            });
        };
        let run = (json.from_json)(id.clone(), query)?;
        let answer = crate::query::ask(&self.shared, id, run, timeout).await?;
        (json.to_json)(answer)
    }

    fn kind_of(&self, id: &AgentId) -> Result<Arc<dyn Kind>, Error> {
        let kind = self
            .shared
            .tree()
            .get(id)
            .map(|n| n.kind.clone())
            .ok_or_else(|| Error::UnknownAgent(id.clone()))?;
        self.shared.kind(&kind)
    }

    /// Publishes `msg` to every agent subscribed to `topic`; returns how many there were.
    ///
    /// # Errors
    /// [`Error::Encode`], [`Error::Journal`].
    pub async fn publish<M: serde::Serialize>(
        &self,
        topic: &Topic<M>,
        msg: &M,
    ) -> Result<usize, Error> {
        self.shared.check_accepting()?;
        let body = record::encode("a topic message", msg)?;
        self.shared
            .publish(topic.name(), Origin::External, &body)
            .await
    }

    /// The messages agent `id` set aside after they kept failing: those of its current
    /// incarnation (of its last one, if `id` is not in the tree). Dead letters of earlier
    /// incarnations of the id stay in its stream (see [`record`]) but are not listed.
    /// A transient agent journals none.
    ///
    /// # Errors
    /// [`Error::Journal`], [`Error::Decode`].
    pub fn dead_letters(&self, id: &AgentId) -> Result<Vec<record::DeadLetter>, Error> {
        let node = self.shared.tree().get(id).map(|n| (n.spec.durable, n.base));
        let base = match node {
            Some((false, _)) => return Ok(Vec::new()),
            Some((true, base)) => base,
            None => 0,
        };
        let mut out = Vec::new();
        for event in self.shared.journal.iter_stream(id.stream(), base + 1)? {
            let event = event?;
            if event.kind == record::DEAD {
                out.push(record::decode(id.stream(), event.seq, &event.payload)?);
            } else if event.kind == record::INCARNATION {
                // A later incarnation began (the id is stopped, or being spawned).
                out.clear();
            }
        }
        Ok(out)
    }

    /// Whether the root supervisor gave up (the runtime then takes no new work).
    pub fn failure(&self) -> Option<String> {
        self.shared.failure.borrow().clone()
    }

    /// Shuts down gracefully: stops taking new work, lets every agent handle what its
    /// mailbox holds (up to [`RuntimeConfig::drain_timeout`]), stops the tree children
    /// first, records progress and flushes the journal.
    ///
    /// # Errors
    /// [`Error::Journal`] if the final flush fails.
    pub async fn shutdown(self) -> Result<(), Error> {
        let shared = &self.shared;
        if !shared.accepting.swap(false, Ordering::AcqRel) && shared.root.get().is_none() {
            return Ok(());
        }
        let drains: Vec<_> = shared
            .live
            .iter()
            .filter_map(|live| {
                let (ack, drained) = oneshot::channel();
                live.actor
                    .send_message(Envelope::Drain(ack))
                    .ok()
                    .map(|_| drained)
            })
            .collect();
        let drained = tokio::time::timeout(shared.config.drain_timeout, async {
            for drained in drains {
                let _ = drained.await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("agents did not drain in time; stopping them anyway");
        }
        if let Ok(writer) = shared.writer() {
            let (ack, recorded) = oneshot::channel();
            if writer
                .send_message(WriterMsg::FlushProgress { ack: Some(ack) })
                .is_ok()
            {
                let _ = recorded.await;
            }
        }
        if let Some(root) = shared.root.get() {
            // The root stops its agents children-first, then the writer (see Root).
            let _ = root
                .stop_and_wait(None, Some(shared.config.drain_timeout))
                .await;
        }
        shared.set_writer(None);
        shared.journal.flush().await?;
        tracing::info!("runtime shut down");
        Ok(())
    }
}

/// Waits for an ask's reply.
pub(crate) async fn await_reply(
    id: &AgentId,
    answer: oneshot::Receiver<Result<AnyBox, Error>>,
    timeout: Duration,
) -> Result<AnyBox, Error> {
    match tokio::time::timeout(timeout, answer).await {
        Err(_) => Err(Error::Timeout {
            id: id.clone(),
            after: timeout,
        }),
        Ok(Err(_)) => Err(Error::NoReply(id.clone())),
        Ok(Ok(reply)) => reply,
    }
}

/// A typed reference to an agent of kind `A`: send it messages or ask it.
///
/// References name the agent by id, so they stay valid across the agent's restarts and
/// the runtime's (look them up again with [`Runtime::agent`]).
pub struct AgentRef<A: Agent> {
    id: AgentId,
    shared: Arc<Shared>,
    _kind: PhantomData<fn(A)>,
}

impl<A: Agent> Clone for AgentRef<A> {
    fn clone(&self) -> Self {
        AgentRef::new(self.id.clone(), Arc::clone(&self.shared))
    }
}

impl<A: Agent> std::fmt::Debug for AgentRef<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AgentRef<{}>({})", A::KIND, self.id)
    }
}

impl<A: Agent> AgentRef<A> {
    pub(crate) fn new(id: AgentId, shared: Arc<Shared>) -> Self {
        AgentRef {
            id,
            shared,
            _kind: PhantomData,
        }
    }

    /// The agent's id.
    pub fn id(&self) -> &AgentId {
        &self.id
    }

    /// Sends `msg`. To a durable agent: returns once the message is journaled with the
    /// journal's durability (flushed, for an `Fsync` journal); it is then handled exactly
    /// once into the agent's state, even across crashes. To a transient agent: returns
    /// once it is in the mailbox.
    ///
    /// # Errors
    /// [`Error::UnknownAgent`], [`Error::Encode`], [`Error::Journal`],
    /// [`Error::ShuttingDown`].
    pub async fn send(&self, msg: A::Msg) -> Result<(), Error> {
        self.shared.check_accepting()?;
        if let Some((msg, _)) = self.shared.send_or_return(&self.id, msg, None)? {
            let body = record::encode("a message", &msg)?;
            self.shared
                .send_record(&self.id, Origin::External, None, &body, None)
                .await?;
        }
        Ok(())
    }

    /// Sends `msg` and waits up to `timeout` for the handler's reply.
    ///
    /// # Errors
    /// As [`AgentRef::send`], and [`Error::Timeout`], [`Error::Handler`] (the handler
    /// failed), [`Error::NoReply`] (the agent stopped first). A durable message stays
    /// journaled after a timeout and is still handled.
    pub async fn ask(&self, msg: A::Msg, timeout: Duration) -> Result<A::Reply, Error> {
        self.shared.check_accepting()?;
        let (reply, answer) = oneshot::channel();
        if let Some((msg, reply)) = self.shared.send_or_return(&self.id, msg, Some(reply))? {
            let body = record::encode("a message", &msg)?;
            self.shared
                .send_record(&self.id, Origin::External, None, &body, reply)
                .await?;
        }
        let reply = await_reply(&self.id, answer, timeout).await?;
        reply
            .downcast::<A::Reply>()
            .map(|r| *r)
            .map_err(|_| Error::Internal(format!("a reply of kind {} has another type", A::KIND)))
    }

    /// Asks the agent a read-only question, answered from its current state within
    /// `timeout`. Nothing is journaled, flushed or replayed; the answer reflects every
    /// message acknowledged before the call (see [`Queries`]).
    ///
    /// # Errors
    /// [`Error::UnknownAgent`], [`Error::Handler`] if its `query` failed or panicked,
    /// [`Error::Timeout`], [`Error::ShuttingDown`].
    pub async fn query(&self, query: A::Query, timeout: Duration) -> Result<A::Answer, Error>
    where
        A: Queries,
    {
        let run = crate::query::query_fn::<A>(self.id.clone(), query);
        let answer = crate::query::ask(&self.shared, &self.id, run, timeout).await?;
        answer
            .downcast::<A::Answer>()
            .map(|a| *a)
            .map_err(|_| Error::Internal(format!("an answer of kind {} has another type", A::KIND)))
    }
}

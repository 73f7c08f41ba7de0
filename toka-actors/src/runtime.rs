//! The public handle: [`RuntimeBuilder`] recovers the tree from the journal and starts
//! it; [`Runtime`] spawns, stops, sends, asks and queries, and shuts down gracefully;
//! [`AgentRef`] is a typed reference to one agent. Everything here is a thin layer over
//! the kernel ([`delivery`] for messages, the root for the tree).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ractor::Actor;
use toka_store::Journal;
use tokio::sync::oneshot;

use crate::agent_ref::AgentRef;
use crate::delivery::{self, Json, await_reply};
use crate::envelope::{ChildStart, Envelope};
use crate::extensions::Extensions;
use crate::kernel::{Kernel, Kind};
use crate::kind::KindOf;
use crate::metrics::{self, RuntimeMetrics};
use crate::progress::Progress;
use crate::record::{self, DeadRecord, Origin, RecordKind};
use crate::recovery::{self, Preloaded};
use crate::root::{Root, TopLevel};
use crate::tree::AgentInfo;
use crate::writer::WriterMsg;
use crate::{Agent, AgentId, Error, Queries, SpawnSpec, SupervisorSpec, Topic};

/// How long [`Runtime::remote_ask`] waits for a reply: the longest ask the node's API
/// allows (the asker in the other runtime keeps its own, usually shorter, timeout).
pub const REMOTE_ASK_LIMIT: Duration = Duration::from_secs(300);

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

    /// Carries trace context through the journal with `propagator`: each durable send
    /// keeps the context of its `toka.journal.append` span in the message record, and the
    /// message's `toka.handle` span continues it (see [`TracePropagator`]). Without one,
    /// no trace context is kept.
    ///
    /// [`TracePropagator`]: crate::TracePropagator
    #[must_use]
    pub fn trace_propagator(mut self, propagator: impl crate::TracePropagator) -> Self {
        self.extensions
            .insert(crate::trace::TraceHook(Arc::new(propagator)));
        self
    }

    /// Connects the runtime to other runtimes through `remote`: children spawned with
    /// [`SpawnSpec::anywhere`] may run there, supervised from here, and messages reach
    /// the agents it places there (see [`remote`](crate::remote)).
    #[must_use]
    pub fn remote(mut self, remote: impl crate::remote::Remote) -> Self {
        self.extensions
            .insert(crate::kernel::RemoteHook(Arc::new(remote)));
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
        let recovered = recovery::read_start(Arc::clone(&self.journal)).await?;
        for (_, node) in recovered.tree.walk() {
            if !self.kinds.contains_key(&*node.kind) {
                return Err(Error::UnknownKind(node.kind.to_string()));
            }
        }
        let agents = recovered.tree.len();
        let preloaded = Arc::new(Preloaded::pending());
        recovery::start_read_ahead(
            Arc::clone(&self.journal),
            &recovered.tree,
            self.config.preload_bytes,
            Arc::clone(&preloaded),
        );
        let kernel = Arc::new(Kernel::new(
            self.journal,
            self.config,
            self.kinds,
            recovered.tree,
            Progress::recovered(recovered.progress),
            preloaded,
            self.extensions,
        ));
        let slot = Arc::default();
        let root = Root {
            top: Arc::clone(&slot),
        };
        let (root, _) = Actor::spawn(None, root, Arc::clone(&kernel))
            .await
            .map_err(|e| Error::Internal(format!("starting the root supervisor: {e}")))?;
        let children = slot
            .get()
            .cloned()
            .ok_or_else(|| Error::Internal("the root supervisor has no children".into()))?;
        kernel.set_root(root.clone());
        let top = kernel.tree().children_of(None);
        root.send_message(Envelope::RestartChildren(top))
            .map_err(|_| Error::Internal("the root supervisor stopped".into()))?;
        kernel.wait_recovered().await?;
        kernel
            .metrics
            .recovery_micros
            .store(metrics::micros(started.elapsed()), Ordering::Relaxed);
        tracing::info!(
            agents,
            millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "runtime recovered"
        );
        Ok(Runtime {
            kernel,
            top: children,
        })
    }
}

/// A running Toka runtime: the supervision tree of agents over a journal.
///
/// Cheap to clone; every clone controls the same runtime. See the crate docs for the
/// semantics it keeps.
#[derive(Clone)]
pub struct Runtime {
    kernel: Arc<Kernel>,
    /// The root's children: top-level spawns start their agent themselves, under its lock.
    top: TopLevel,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("agents", &self.kernel.tree().len())
            .field("running", &self.kernel.directory.running())
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
        self.kernel.extensions.get::<T>()
    }

    /// A snapshot of the runtime's counters: messages handled, restarts, journal
    /// appends and group writes, time spent waiting for durability, and how long the
    /// last start's recovery took. Cheap (a few relaxed atomic loads).
    pub fn metrics(&self) -> RuntimeMetrics {
        self.kernel.metrics.snapshot(self.kernel.journal.flushes())
    }

    /// The journal under the runtime.
    pub fn journal(&self) -> &Arc<dyn Journal> {
        &self.kernel.journal
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
        Ok(AgentRef::new(id, Arc::clone(&self.kernel)))
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
        let args = self.kernel.kind(kind)?.args_from_json(args)?;
        self.spawn_encoded(parent, kind, spec, args).await
    }

    async fn spawn_encoded(
        &self,
        parent: Option<&AgentId>,
        kind: &str,
        spec: SpawnSpec,
        args: Vec<u8>,
    ) -> Result<(), Error> {
        let Some(parent) = parent else {
            // Started from this task, under the root's lock (see `root`): no round trip.
            let id = spec.id.clone();
            self.kernel.record_spawn(None, kind, args, spec).await?;
            return self.top.spawn(&id).await;
        };
        let supervisor = self.kernel.supervisor_of(Some(parent))?;
        let id = spec.id.clone();
        self.kernel
            .record_spawn(Some(parent), kind, args, spec)
            .await?;
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
            .kernel
            .tree()
            .get(id)
            .ok_or_else(|| Error::UnknownAgent(id.clone()))?
            .parent
            .clone();
        self.kernel.record_stop(id).await?;
        let supervisor = self.kernel.supervisor_of(parent.as_ref())?;
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

    // ---- requests from other runtimes (see `remote`) ----

    /// Delivers a message from another runtime to agent `id` of this one (what a
    /// [`Remote::deliver`](crate::remote::Remote::deliver) ends in): journaled for a
    /// durable agent, which drops it if it already has it from the same sender's effect.
    ///
    /// # Errors
    /// [`Error::UnknownAgent`], [`Error::Encode`], [`Error::Journal`].
    pub async fn remote_deliver(
        &self,
        id: &AgentId,
        message: crate::remote::RemoteMessage,
    ) -> Result<(), Error> {
        let kind = self.kind_here(id)?;
        let msg = delivery::Encoded {
            kind,
            topic: message.topic,
            body: message.body,
        };
        delivery::deliver(&self.kernel, id, msg, message.origin, None).await
    }

    /// Asks agent `id` of this runtime for another runtime (what a
    /// [`Remote::ask`](crate::remote::Remote::ask) ends in); its reply, postcard-encoded.
    /// Waits for the reply at most [`REMOTE_ASK_LIMIT`] (the asker has its own timeout).
    ///
    /// # Errors
    /// As [`Runtime::ask_json`].
    pub async fn remote_ask(
        &self,
        id: &AgentId,
        message: crate::remote::RemoteMessage,
    ) -> Result<Vec<u8>, Error> {
        let kind = self.kind_here(id)?;
        let msg = delivery::Encoded {
            kind,
            topic: message.topic,
            body: message.body,
        };
        let (reply, answer) = oneshot::channel();
        delivery::deliver(&self.kernel, id, msg, message.origin, Some(reply)).await?;
        let reply = await_reply(id, answer, REMOTE_ASK_LIMIT).await?;
        kind.reply_to_bytes(reply)
    }

    /// Queries agent `id` of this runtime for another runtime (what a
    /// [`Remote::query`](crate::remote::Remote::query) ends in) with `query`,
    /// postcard-encoded as its kind's `Query`; the answer, encoded.
    ///
    /// # Errors
    /// As [`Runtime::query_json`], and [`Error::Decode`] for a query that does not decode.
    pub async fn remote_query(
        &self,
        id: &AgentId,
        query: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        let queries = self.queries_of(self.kind_here(id)?, id)?;
        let run = (queries.from_bytes)(id.clone(), query)?;
        let answer = delivery::query(&self.kernel, id, run, timeout).await?;
        (queries.to_bytes)(answer)
    }

    /// The kind of agent `id`, which must run in this runtime: a request from another
    /// runtime is never sent on to a third (no message bounces between runtimes).
    fn kind_here(&self, id: &AgentId) -> Result<&dyn Kind, Error> {
        if self.kernel.tree().is_elsewhere(id) {
            return Err(Error::UnknownAgent(id.clone()));
        }
        self.kernel.kind_of(id)
    }

    /// How agent `id`'s kind answers queries.
    fn queries_of(
        &self,
        kind: &dyn Kind,
        id: &AgentId,
    ) -> Result<crate::query::JsonQueries, Error> {
        kind.json_queries().ok_or_else(|| Error::NoQueries {
            id: id.clone(),
            kind: self
                .kernel
                .tree()
                .get(id)
                .map(|n| n.kind.to_string())
                .unwrap_or_default(),
        })
    }

    /// Makes sure `child` runs here, adopted for its supervisor in another runtime (what
    /// [`Remote::start_child`](crate::remote::Remote::start_child) ends in): spawned
    /// (journaled) the first time, started again if it is stopped, left alone if it
    /// runs.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if the id belongs to another agent here (not adopted by
    /// that supervisor, or of another kind); as [`Runtime::spawn`].
    pub async fn remote_start_child(&self, child: crate::remote::RemoteChild) -> Result<(), Error> {
        let id = child.spec.id.clone();
        let known = {
            let tree = self.kernel.tree();
            tree.get(&id).map(|node| {
                *node.kind == *child.kind && tree.adopted_by(&id) == Some(&child.supervisor)
            })
        };
        match known {
            Some(false) => Err(Error::AlreadyExists(id)),
            Some(true) => self.top.start(&id).await,
            None => {
                let mut spec = child.spec;
                spec.placement = crate::remote::Placement::WithParent;
                match self
                    .kernel
                    .record_adopt(child.supervisor, &child.kind, child.args, spec)
                    .await
                {
                    // A concurrent start recorded it meanwhile.
                    Err(Error::AlreadyExists(_)) => self.top.start(&id).await,
                    Err(other) => Err(other),
                    Ok(()) => self.top.spawn(&id).await,
                }
            }
        }
    }

    /// Stops agent `id`, adopted here for a supervisor in another runtime, and keeps it
    /// (what [`Remote::halt_child`](crate::remote::Remote::halt_child) ends in): its
    /// supervisor starts it again when it restarts it. Nothing if it is not running.
    ///
    /// # Errors
    /// [`Error::UnknownAgent`] if no such adopted agent is here.
    pub async fn remote_halt_child(&self, id: &AgentId) -> Result<(), Error> {
        if self.kernel.tree().adopted_by(id).is_none() {
            return Err(Error::UnknownAgent(id.clone()));
        }
        self.top.halt(id).await;
        Ok(())
    }

    /// Stops agent `id`, adopted here for a supervisor in another runtime, and removes it
    /// (what [`Remote::remove_child`](crate::remote::Remote::remove_child) ends in), as
    /// [`Runtime::stop`]. Nothing if it is gone already.
    ///
    /// # Errors
    /// [`Error::Journal`].
    pub async fn remote_remove_child(&self, id: &AgentId) -> Result<(), Error> {
        if self.kernel.tree().adopted_by(id).is_none() {
            return Ok(());
        }
        match self.stop(id).await {
            Err(Error::UnknownAgent(_)) => Ok(()),
            other => other,
        }
    }

    /// Hands the exit of a remote child to its supervisor here (what
    /// [`Remote::child_exited`](crate::remote::Remote::child_exited) ends in), which
    /// applies its restart strategy as for a local child. Dropped if the supervisor is
    /// not running: when it starts, it starts its children again.
    ///
    /// # Errors
    /// [`Error::ShuttingDown`].
    pub fn remote_child_exited(&self, exit: crate::remote::ChildExit) -> Result<(), Error> {
        self.kernel.check_accepting()?;
        let Some(supervisor) = self.kernel.directory.actor(&exit.supervisor) else {
            tracing::debug!(supervisor = %exit.supervisor, child = %exit.child, "remote exit for a supervisor not running; dropped");
            return Ok(());
        };
        let _ = supervisor.send_message(Envelope::ChildExited(Box::new(exit)));
        Ok(())
    }

    /// A typed reference to agent `id`, if it is in the tree and of kind `A`.
    ///
    /// # Errors
    /// [`Error::UnknownAgent`], [`Error::WrongKind`].
    pub fn agent<A: Agent>(&self, id: &AgentId) -> Result<AgentRef<A>, Error> {
        self.kernel.check_kind(id, A::KIND)?;
        Ok(AgentRef::new(id.clone(), Arc::clone(&self.kernel)))
    }

    /// Every agent in the tree, parents before children, in start order.
    pub fn tree(&self) -> Vec<AgentInfo> {
        let tree = self.kernel.tree();
        tree.walk()
            .into_iter()
            .map(|(id, node)| AgentInfo {
                running: self.kernel.directory.is_running(&id),
                kind: node.kind.to_string(),
                parent: node.parent.clone(),
                durable: node.durable(),
                incarnation: node.base,
                halted: self.kernel.directory.halt_reason(&id),
                restarts: self.kernel.directory.restarts(&id),
                elsewhere: tree.is_elsewhere(&id),
                supervisor: tree.adopted_by(&id).cloned(),
                id,
            })
            .collect()
    }

    /// Sends a JSON message to agent `id` (durable: returns once journaled).
    ///
    /// # Errors
    /// [`Error::UnknownAgent`], [`Error::BadJson`], [`Error::Journal`].
    pub async fn send_json(&self, id: &AgentId, msg: serde_json::Value) -> Result<(), Error> {
        let kind = self.kernel.kind_of(id)?;
        let msg = Json { kind, value: msg };
        delivery::deliver(&self.kernel, id, msg, Origin::External, None).await
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
        let kind = self.kernel.kind_of(id)?;
        let (reply, answer) = oneshot::channel();
        let msg = Json { kind, value: msg };
        delivery::deliver(&self.kernel, id, msg, Origin::External, Some(reply)).await?;
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
        let json = self.queries_of(self.kernel.kind_of(id)?, id)?;
        let run = (json.from_json)(id.clone(), query)?;
        let answer = delivery::query(&self.kernel, id, run, timeout).await?;
        (json.to_json)(answer)
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
        self.kernel.check_accepting()?;
        let body = record::encode("a topic message", msg)?;
        delivery::publish(&self.kernel, topic.name(), Origin::External, &body).await
    }

    /// The messages agent `id` set aside after they kept failing: those of its current
    /// incarnation (of its last one, if `id` is not in the tree). Dead letters of earlier
    /// incarnations of the id stay in its stream (see [`record`]) but are not listed.
    /// A transient agent journals none.
    ///
    /// # Errors
    /// [`Error::Journal`], [`Error::Decode`].
    pub fn dead_letters(&self, id: &AgentId) -> Result<Vec<record::DeadLetter>, Error> {
        let node = self.kernel.tree().get(id).map(|n| (n.durable(), n.base));
        let base = match node {
            Some((false, _)) => return Ok(Vec::new()),
            Some((true, base)) => base,
            None => 0,
        };
        let mut out = Vec::new();
        for event in self.kernel.journal.iter_stream(id.stream(), base + 1)? {
            let event = event?;
            match RecordKind::parse(&event.kind, id.stream(), event.seq)? {
                Some((RecordKind::Dead, _)) => {
                    let dead: DeadRecord = record::decode(id.stream(), event.seq, &event.payload)?;
                    out.push(record::DeadLetter {
                        seq: dead.seq,
                        attempts: dead.attempts,
                        error: dead.error,
                    });
                }
                // A later incarnation began (the id is stopped, or being spawned).
                Some((RecordKind::Incarnation, _)) => out.clear(),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Whether the root supervisor gave up (the runtime then takes no new work).
    pub fn failure(&self) -> Option<String> {
        self.kernel.failure()
    }

    /// Shuts down gracefully: stops taking new work, lets every agent handle what its
    /// mailbox holds (up to [`RuntimeConfig::drain_timeout`]), stops the tree children
    /// first (an agent still in a handler a second later, e.g. awaiting a model or tool
    /// call that does not answer, is killed, as by a crash: its journal tells recovery
    /// what to do with that step), records progress and flushes the journal. When it
    /// returns no agent runs any more, so nothing of the runtime holds the journal.
    ///
    /// # Errors
    /// [`Error::Journal`] if the final flush fails.
    pub async fn shutdown(self) -> Result<(), Error> {
        let kernel = &self.kernel;
        if !kernel.stop_accepting() && kernel.root().is_none() {
            return Ok(());
        }
        let drains: Vec<_> = kernel
            .directory
            .actors()
            .into_iter()
            .filter_map(|actor| {
                let (ack, drained) = oneshot::channel();
                actor
                    .send_message(Envelope::Drain(ack))
                    .ok()
                    .map(|_| drained)
            })
            .collect();
        let drained = tokio::time::timeout(kernel.config.drain_timeout, async {
            for drained in drains {
                let _ = drained.await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("agents did not drain in time; stopping them anyway");
        }
        if let Ok(writer) = kernel.writer() {
            let (ack, recorded) = oneshot::channel();
            if writer
                .send_message(WriterMsg::FlushProgress { ack: Some(ack) })
                .is_ok()
            {
                let _ = recorded.await;
            }
        }
        if let Some(root) = kernel.root() {
            // The root stops its agents children-first, then the writer it owns. Waited
            // for to the end (each of its steps is bounded: an agent that does not stop
            // within `SHUTDOWN_STOP_TIMEOUT` is killed): an agent still in a handler after
            // `shutdown` returned would hold the kernel, and with it the journal and the
            // extensions, so the journal could not be reopened.
            let _ = root.stop_and_wait(None, None).await;
        }
        kernel.set_writer(None);
        kernel.journal.flush().await?;
        tracing::info!("runtime shut down");
        Ok(())
    }
}

//! The kernel: what the runtime handle, the root, the writer's callers and every agent
//! actor share. It holds the journal, the registered kinds, the supervision tree, the
//! [`Directory`] of running agents, handled [`Progress`], and the runtime's life cycle
//! (taking work, recovering, failed); it journals changes to the tree and talks to the
//! writer. It sends no messages to agents: that is [`delivery`](crate::delivery)'s job.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Instant;

use crossbeam_utils::CachePadded;
use ractor::{ActorCell, ActorRef};
use toka_store::{Appended, Journal};
use tokio::sync::{Notify, Semaphore, oneshot, watch};

use crate::directory::Directory;
use crate::envelope::Envelope;
use crate::envelope::{AnyBox, StartArgs};
use crate::extensions::Extensions;
use crate::metrics::Counters;
use crate::progress::Progress;
use crate::query::JsonQueries;
use crate::record::{self, RecordKind, TreeRecord};
use crate::recovery::Preloaded;
use crate::remote::{Placement, Remote};
use crate::tree::Tree;
use crate::writer::{Routing, WriterMsg, WriterParts};
use crate::{AgentId, Error, RuntimeConfig, SpawnSpec};

/// A boxed, sendable future.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One registered kind, type-erased.
pub(crate) trait Kind: Send + Sync {
    /// Starts an actor of this kind linked to `supervisor`.
    fn start(
        &self,
        kernel: Arc<Kernel>,
        start: StartArgs,
        supervisor: ActorCell,
    ) -> BoxFuture<Result<ActorRef<Envelope>, Error>>;

    /// Encodes JSON arguments as the kind's `Args`.
    fn args_from_json(&self, json: serde_json::Value) -> Result<Vec<u8>, Error>;
    /// Encodes a JSON message as the kind's `Msg` (for durable agents).
    fn msg_from_json(&self, json: &serde_json::Value) -> Result<Vec<u8>, Error>;
    /// A JSON message as the kind's boxed `Msg` (for transient agents).
    fn boxed_msg_from_json(&self, json: serde_json::Value) -> Result<AnyBox, Error>;
    /// An encoded message as the kind's boxed `Msg` (a transient agent's message from
    /// another runtime).
    fn boxed_msg_from_bytes(&self, bytes: &[u8]) -> Result<AnyBox, Error>;
    /// A boxed `Reply`, postcard-encoded (an ask from another runtime).
    fn reply_to_bytes(&self, reply: AnyBox) -> Result<Vec<u8>, Error>;
    /// A boxed `Reply` as JSON.
    fn reply_to_json(&self, reply: AnyBox) -> Result<serde_json::Value, Error>;
    /// How the kind answers JSON queries, if it does.
    fn json_queries(&self) -> Option<JsonQueries>;
}

/// State shared by the runtime handle, the writer's callers and every agent actor.
///
/// Read from every worker thread at once, so it keeps apart what different threads
/// write: aligned to a cache line (128 bytes: two lines, for the adjacent-line
/// prefetcher), the reference counts of its `Arc`, bumped by every spawn and agent
/// reference, sit on a line of their own instead of evicting the first fields from the
/// other cores' caches; and the locks written on hot paths (the tree's, taken by every
/// spawn, and the writer's, read-locked by every durable append) are padded to lines of
/// their own ([`CachePadded`]). Measured on the spawn benchmark (10,000 transient agents
/// from one task, 2 workers, builds alternated, 11 runs each): 0.45× ractor without,
/// 0.48–0.52× with.
#[repr(align(128))]
pub(crate) struct Kernel {
    pub(crate) journal: Arc<dyn Journal>,
    pub(crate) config: RuntimeConfig,
    /// Looked up on every spawn and start: a cheap hash over the short names (the table
    /// is fixed once built, so no input can crowd it).
    kinds: rustc_hash::FxHashMap<&'static str, Arc<dyn Kind>>,
    tree: CachePadded<Mutex<Tree>>,
    /// Running agents, pending asks, topic subscribers.
    pub(crate) directory: Arc<Directory>,
    /// Highest message sequence each durable agent has handled.
    pub(crate) progress: Arc<Progress>,
    /// Counters read by [`Runtime::metrics`](crate::Runtime::metrics).
    pub(crate) metrics: Arc<Counters>,
    /// Services handed to handlers ([`RuntimeBuilder::extension`](crate::RuntimeBuilder::extension)).
    pub(crate) extensions: Extensions,
    /// Agents replaying at once.
    pub(crate) recovery: Semaphore,
    /// Reaches the agents of other runtimes, if set (see [`remote`](crate::remote)).
    pub(crate) remote: Option<Arc<dyn Remote>>,
    /// Carries trace context through message records, if set.
    pub(crate) trace: Option<Arc<dyn crate::TracePropagator>>,
    /// What the start-up pass read ahead for each agent's first recovery.
    pub(crate) preloaded: Arc<Preloaded>,
    /// The writer, set by the root that owns it; `None` once stopped.
    writer: CachePadded<RwLock<Option<ActorRef<WriterMsg>>>>,
    root: OnceLock<ActorRef<Envelope>>,
    life: Life,
}

/// The runtime's life cycle.
struct Life {
    accepting: AtomicBool,
    failure: watch::Sender<Option<String>>,
    /// Agents whose first recovery has not finished.
    recovering: Mutex<HashSet<AgentId>>,
    recovered: Notify,
}

impl Kernel {
    /// A kernel over what start-up recovered.
    pub(crate) fn new(
        journal: Arc<dyn Journal>,
        config: RuntimeConfig,
        kinds: HashMap<&'static str, Arc<dyn Kind>>,
        tree: Tree,
        progress: Progress,
        preloaded: Arc<Preloaded>,
        extensions: Extensions,
    ) -> Self {
        let recovering = tree
            .walk()
            .into_iter()
            .filter(|(id, node)| node.durable() && !tree.is_elsewhere(id))
            .map(|(id, _)| id)
            .collect();
        Kernel {
            journal,
            recovery: Semaphore::new(config.recovery_concurrency.max(1)),
            trace: extensions
                .get::<crate::trace::TraceHook>()
                .map(|hook| Arc::clone(&hook.0)),
            remote: extensions
                .get::<RemoteHook>()
                .map(|hook| Arc::clone(&hook.0)),
            config,
            kinds: kinds.into_iter().collect(),
            tree: CachePadded::new(Mutex::new(tree)),
            directory: Arc::default(),
            progress: Arc::new(progress),
            metrics: Arc::default(),
            extensions,
            preloaded,
            writer: CachePadded::new(RwLock::new(None)),
            root: OnceLock::new(),
            life: Life {
                accepting: AtomicBool::new(true),
                failure: watch::channel(None).0,
                recovering: Mutex::new(recovering),
                recovered: Notify::new(),
            },
        }
    }

    /// What the writer works with.
    pub(crate) fn writer_parts(&self) -> WriterParts {
        WriterParts {
            journal: Arc::clone(&self.journal),
            directory: Arc::clone(&self.directory),
            progress: Arc::clone(&self.progress),
            metrics: Arc::clone(&self.metrics),
        }
    }

    /// The tree, locked. Tree updates are single inserts and removes; a panic cannot leave
    /// one half-done, so a poisoned lock is taken over.
    pub(crate) fn tree(&self) -> MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The registered kind `name`.
    pub(crate) fn kind(&self, name: &str) -> Result<&dyn Kind, Error> {
        self.kinds
            .get(name)
            .map(|kind| &**kind)
            .ok_or_else(|| Error::UnknownKind(name.to_owned()))
    }

    /// The kind of agent `id`.
    pub(crate) fn kind_of(&self, id: &AgentId) -> Result<&dyn Kind, Error> {
        let kind = self
            .tree()
            .get(id)
            .map(|n| Arc::clone(&n.kind))
            .ok_or_else(|| Error::UnknownAgent(id.clone()))?;
        self.kind(&kind)
    }

    /// Checks that `id` is in the tree and of kind `expected`.
    pub(crate) fn check_kind(&self, id: &AgentId, expected: &'static str) -> Result<(), Error> {
        let tree = self.tree();
        let Some(node) = tree.get(id) else {
            // An agent of another runtime: its kind is checked where it lives, when a
            // message for it arrives there.
            drop(tree);
            return if self.remote.is_some() {
                Ok(())
            } else {
                Err(Error::UnknownAgent(id.clone()))
            };
        };
        if *node.kind == *expected {
            Ok(())
        } else {
            Err(Error::WrongKind {
                id: id.clone(),
                expected,
                actual: node.kind.to_string(),
            })
        }
    }

    // ---- life cycle ----

    /// Sets the root supervisor (once, at start).
    pub(crate) fn set_root(&self, root: ActorRef<Envelope>) {
        let _ = self.root.set(root);
    }

    /// The root supervisor, once started.
    pub(crate) fn root(&self) -> Option<&ActorRef<Envelope>> {
        self.root.get()
    }

    /// Sets (or clears) the writer the root runs.
    pub(crate) fn set_writer(&self, writer: Option<ActorRef<WriterMsg>>) {
        *self.writer.write().unwrap_or_else(|e| e.into_inner()) = writer;
    }

    /// The writer, unless the runtime stopped.
    pub(crate) fn writer(&self) -> Result<ActorRef<WriterMsg>, Error> {
        self.writer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(Error::ShuttingDown)
    }

    /// Sends the writer `msg` (under the read lock: no reference counting of the writer's
    /// handle, which every durable append would otherwise bump and drop).
    ///
    /// # Errors
    /// [`Error::ShuttingDown`] once the writer stopped.
    fn send_to_writer(&self, msg: WriterMsg) -> Result<(), Error> {
        self.writer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .ok_or(Error::ShuttingDown)?
            .send_message(msg)
            .map_err(|_| Error::ShuttingDown)
    }

    /// Whether the runtime takes new work.
    pub(crate) fn is_accepting(&self) -> bool {
        self.life.accepting.load(Ordering::Acquire)
    }

    /// [`Error::ShuttingDown`] unless the runtime takes new work.
    pub(crate) fn check_accepting(&self) -> Result<(), Error> {
        if self.is_accepting() {
            Ok(())
        } else {
            Err(Error::ShuttingDown)
        }
    }

    /// Stops taking new work; `false` if it had already stopped.
    pub(crate) fn stop_accepting(&self) -> bool {
        self.life.accepting.swap(false, Ordering::AcqRel)
    }

    /// Notes that `id` finished its first recovery.
    pub(crate) fn note_recovered(&self, id: &AgentId) {
        let mut recovering = self
            .life
            .recovering
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if recovering.remove(id) && recovering.is_empty() {
            self.life.recovered.notify_waiters();
        }
    }

    /// The root supervisor gave up: the runtime takes no more work.
    pub(crate) fn fail(&self, reason: String) {
        tracing::error!(%reason, "the runtime's root supervisor gave up");
        self.life.accepting.store(false, Ordering::Release);
        self.life.failure.send_replace(Some(reason));
        self.life.recovered.notify_waiters();
    }

    /// Why the root gave up, if it did.
    pub(crate) fn failure(&self) -> Option<String> {
        self.life.failure.borrow().clone()
    }

    /// Waits until every agent of the tree has recovered, or the root gave up.
    pub(crate) async fn wait_recovered(&self) -> Result<(), Error> {
        loop {
            let notified = self.life.recovered.notified();
            if let Some(reason) = self.failure() {
                return Err(Error::Failed(reason));
            }
            if self
                .life
                .recovering
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
            {
                return Ok(());
            }
            // Re-check now and then: an agent removed from the tree while recovering
            // never reports.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(200), notified).await;
            let tree = self.tree();
            self.life
                .recovering
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|id| tree.get(id).is_some());
        }
    }

    // ---- the journal, through the writer ----

    /// Sends the writer a request built around a reply port and waits for the answer.
    pub(crate) async fn ask_writer<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> WriterMsg,
    ) -> Result<T, Error> {
        let (ack, done) = oneshot::channel();
        self.send_to_writer(request(ack))?;
        done.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Appends one record to `id`'s stream through the writer, which routes it as
    /// `routing` says. Returns once written (not yet durable).
    pub(crate) async fn append(
        &self,
        id: &AgentId,
        kind: RecordKind,
        payload: Vec<u8>,
        routing: Routing,
    ) -> Result<Appended, Error> {
        self.append_as(id, kind, payload, routing, false).await
    }

    /// Appends one record to `id`'s stream through the writer, which routes it as
    /// `routing` says. Returns once the record is durable: the writer has the journal
    /// acknowledge it right after the flush that covers it (see
    /// [`Journal::when_durable`](toka_store::Journal::when_durable)), so the caller is
    /// woken once.
    pub(crate) async fn append_durable(
        &self,
        id: &AgentId,
        kind: RecordKind,
        payload: Vec<u8>,
        routing: Routing,
    ) -> Result<Appended, Error> {
        self.append_as(id, kind, payload, routing, true).await
    }

    async fn append_as(
        &self,
        id: &AgentId,
        kind: RecordKind,
        payload: Vec<u8>,
        routing: Routing,
        durable: bool,
    ) -> Result<Appended, Error> {
        self.ask_writer(|ack| WriterMsg::Append {
            id: id.clone(),
            event: kind.event(payload),
            routing,
            ack: Some(ack),
            durable,
        })
        .await
    }

    /// Queues one of `id`'s own records with the writer without waiting for it: the
    /// writer tells the agent's actor its sequence number ([`Routing::OwnNotify`]).
    pub(crate) fn append_detached(
        &self,
        id: &AgentId,
        kind: RecordKind,
        payload: Vec<u8>,
    ) -> Result<(), Error> {
        self.send_to_writer(WriterMsg::Append {
            id: id.clone(),
            event: kind.event(payload),
            routing: Routing::OwnNotify,
            ack: None,
            durable: false,
        })
    }

    /// Waits until the journal is durable up to `position`, timing the wait.
    pub(crate) async fn wait_durable(&self, position: u64) -> Result<(), Error> {
        let started = Instant::now();
        let result = self.journal.wait_durable(position).await;
        self.metrics.flush_waited(started.elapsed());
        result.map_err(Error::from)
    }

    /// Appends a record to a runtime stream and waits until it is durable.
    async fn append_runtime(
        &self,
        stream: &'static str,
        kind: RecordKind,
        payload: Vec<u8>,
    ) -> Result<(), Error> {
        let appended = self
            .ask_writer(|ack| WriterMsg::AppendTo {
                stream,
                event: kind.event(payload),
                ack,
            })
            .await?;
        self.wait_durable(appended.last_position).await
    }

    // ---- the tree ----

    /// Records a new agent in the tree (journaled if durable). The caller starts it. A
    /// child placed [`Placement::Anywhere`] whose id the runtime's [`Remote`] places in
    /// another runtime is recorded as a remote child (see [`remote`](crate::remote)).
    pub(crate) async fn record_spawn(
        &self,
        parent: Option<&AgentId>,
        kind: &str,
        args: Vec<u8>,
        spec: SpawnSpec,
    ) -> Result<(), Error> {
        let placed = match parent {
            None => Placed::Here(None),
            Some(p) if spec.placement == Placement::Anywhere && self.places_elsewhere(&spec.id) => {
                Placed::Elsewhere(p.clone())
            }
            Some(p) => Placed::Here(Some(p.clone())),
        };
        self.record_placed(placed, kind, args, spec).await
    }

    /// Whether the runtime's [`Remote`] places agent `id` in another runtime.
    pub(crate) fn places_elsewhere(&self, id: &AgentId) -> bool {
        self.remote.as_ref().is_some_and(|r| r.is_elsewhere(id))
    }

    /// Records top-level agent `spec.id` run here for `supervisor` of another runtime
    /// (see [`remote`](crate::remote)). The caller starts it.
    pub(crate) async fn record_adopt(
        &self,
        supervisor: AgentId,
        kind: &str,
        args: Vec<u8>,
        spec: SpawnSpec,
    ) -> Result<(), Error> {
        self.record_placed(Placed::Adopted(supervisor), kind, args, spec)
            .await
    }

    async fn record_placed(
        &self,
        placed: Placed,
        kind: &str,
        args: Vec<u8>,
        spec: SpawnSpec,
    ) -> Result<(), Error> {
        self.check_accepting()?;
        self.kind(kind)?;
        let id = spec.id.clone();
        let parent = match &placed {
            Placed::Here(parent) => parent.clone(),
            Placed::Elsewhere(parent) => Some(parent.clone()),
            Placed::Adopted(_) => None,
        };
        if let Some(p) = &parent {
            if self.tree().get(p).is_none() {
                return Err(Error::UnknownAgent(p.clone()));
            }
        }
        // The spawn record needs the arguments and spec too; a transient agent's spawn is
        // not journaled, and gives them to the tree.
        let (tree_args, tree_spec, record) = if spec.durable {
            (args.clone(), spec.clone(), Some((args, spec)))
        } else {
            (args, spec, None)
        };
        // Reserve the id first, so that two racing spawns cannot both journal it.
        {
            let mut tree = self.tree();
            if !tree.insert(parent.clone(), kind, tree_args, tree_spec, 0) {
                return Err(Error::AlreadyExists(id));
            }
            match &placed {
                Placed::Here(_) => {}
                Placed::Elsewhere(_) => tree.mark_elsewhere(&id),
                Placed::Adopted(supervisor) => tree.mark_adopted(&id, supervisor.clone()),
            }
        }
        if let Some((args, spec)) = record {
            // Boxed: a transient spawn, which journals nothing, should not move this
            // future around.
            let journaled = Box::pin(async {
                let record = if let Placed::Elsewhere(parent) = placed {
                    // Its stream lives in the runtime that runs it: no incarnation here.
                    TreeRecord::SpawnedElsewhere {
                        parent,
                        kind: kind.to_owned(),
                        args,
                        spec: (&spec).into(),
                    }
                } else {
                    // A new incarnation of an id used before begins after the records of
                    // the earlier ones (see `record`): the marker is appended before the
                    // tree record, so once the spawn is durable, so is its base.
                    let base = self
                        .ask_writer(|ack| WriterMsg::Incarnation {
                            id: id.clone(),
                            kind: kind.to_owned(),
                            ack,
                        })
                        .await?;
                    self.tree().set_base(&id, base);
                    match placed {
                        Placed::Adopted(supervisor) => TreeRecord::Adopted {
                            supervisor,
                            kind: kind.to_owned(),
                            args,
                            spec: (&spec).into(),
                            base,
                        },
                        _ => TreeRecord::Spawned {
                            parent,
                            kind: kind.to_owned(),
                            args,
                            spec: (&spec).into(),
                            base,
                        },
                    }
                };
                let payload = record::encode("a spawn record", &record)?;
                self.append_runtime(record::TREE_STREAM, RecordKind::Spawn, payload)
                    .await
            })
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
        let (ids, durable, elsewhere) = {
            let tree = self.tree();
            let ids = tree.subtree_bottom_up(id);
            if ids.is_empty() {
                return Err(Error::UnknownAgent(id.clone()));
            }
            let durable = ids.iter().any(|i| tree.get(i).is_some_and(|n| n.durable()));
            let elsewhere: Vec<AgentId> = ids
                .iter()
                .filter(|i| tree.is_elsewhere(i))
                .cloned()
                .collect();
            (ids, durable, elsewhere)
        };
        // Remote children go first: a failure leaves the stop undone (and retryable)
        // rather than a child running on, unknown to anyone, in another runtime. Marked
        // leaving first, so that a restart racing with the stop does not start them
        // again (or removes what it started; see `Children::start_remote`).
        if let Some(remote) = &self.remote {
            for child in &elsewhere {
                self.tree().set_leaving(child, true);
            }
            for child in &elsewhere {
                if let Err(error) = remote.remove_child(child.clone()).await {
                    let mut tree = self.tree();
                    for child in &elsewhere {
                        tree.set_leaving(child, false);
                    }
                    return Err(error);
                }
            }
        }
        if durable {
            let payload =
                record::encode("a stop record", &TreeRecord::Stopped { ids: ids.clone() })?;
            self.append_runtime(record::TREE_STREAM, RecordKind::Stop, payload)
                .await?;
        }
        let mut tree = self.tree();
        for i in &ids {
            tree.remove(i);
        }
        drop(tree);
        self.directory.forget(&ids);
        Ok(ids)
    }

    /// The actor supervising `parent`'s children: its own, or the root's for `None`.
    pub(crate) fn supervisor_of(
        &self,
        parent: Option<&AgentId>,
    ) -> Result<ActorRef<Envelope>, Error> {
        match parent {
            None => self.root.get().cloned().ok_or(Error::ShuttingDown),
            Some(p) => self
                .directory
                .actor(p)
                .ok_or_else(|| Error::UnknownAgent(p.clone())),
        }
    }
}

/// Where a new agent goes (see [`Kernel::record_spawn`]).
enum Placed {
    /// Here, under this parent (`None`: top level).
    Here(Option<AgentId>),
    /// In another runtime, supervised by this parent here.
    Elsewhere(AgentId),
    /// Here at the top level, for this supervisor in another runtime.
    Adopted(AgentId),
}

/// The runtime's [`Remote`], as an extension.
pub(crate) struct RemoteHook(pub(crate) Arc<dyn Remote>);

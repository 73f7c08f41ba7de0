//! OTP supervision of an actor's children, shared by the root and every agent actor.
//!
//! The tree ([`Kernel::tree`]) says which children an actor has and in which order;
//! [`Children`] runs them: starts them (linked, so their exits come back as supervision
//! events), stops them on purpose, and applies the [`SupervisorSpec`] when one fails
//! (restart per strategy and backoff, or escalate past the intensity: stop every child
//! and fail, or, at the root, fail the runtime).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::envelope::{ChildStart, Envelope, StartArgs};
use crate::id::{IdMap, IdSet};
use crate::kernel::Kernel;
use crate::metrics::Counters;
use crate::supervision::{self, Plan, RestartWindow};
use crate::{AgentId, Error, Restart, SupervisorSpec};

/// How long a stopping child may take before it is killed.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a child stopped by the runtime's shutdown may take before it is killed (it
/// already had [`RuntimeConfig::drain_timeout`](crate::RuntimeConfig::drain_timeout)).
pub(crate) const SHUTDOWN_STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// The running children of one supervisor.
pub(crate) struct Children {
    kernel: Arc<Kernel>,
    /// The supervisor's id, for logs and escalation reasons; an agent's is also its key
    /// in the tree.
    id: AgentId,
    /// Whether the supervisor is the root (key `None` in the tree).
    root: bool,
    myself: ActorRef<Envelope>,
    /// How it supervises; `None`: the default (most agents), which takes no room.
    spec: Option<Box<SupervisorSpec>>,
    /// The children's bookkeeping, allocated when the first child starts (most agents
    /// never have one).
    running: Option<Box<Running>>,
}

/// What a supervisor keeps about its children once it has had any.
#[derive(Default)]
struct Running {
    /// Keyed by ractor's actor ids: numbers it hands out in sequence, so the ids' hasher
    /// suits them too.
    by_actor: IdMap<ActorId, AgentId>,
    cells: IdMap<AgentId, ActorCell>,
    /// Children being stopped on purpose: their exit is not a failure.
    stopping: IdSet<ActorId>,
    /// Remote children (running in another runtime) started and not halted since.
    remote: IdSet<AgentId>,
    window: RestartWindow,
}

impl Children {
    /// No children yet, of the supervisor `parent` (its key in the tree: `None` for the
    /// root).
    pub(crate) fn new(
        kernel: Arc<Kernel>,
        parent: Option<AgentId>,
        myself: ActorRef<Envelope>,
        spec: SupervisorSpec,
    ) -> Self {
        Children {
            kernel,
            root: parent.is_none(),
            id: parent.unwrap_or_else(AgentId::root),
            myself,
            spec: (spec != SupervisorSpec::default()).then(|| Box::new(spec)),
            running: None,
        }
    }

    /// The children's bookkeeping, allocated on first use.
    fn running(&mut self) -> &mut Running {
        self.running.get_or_insert_with(Box::default)
    }

    /// Whether child `id` runs.
    fn is_running(&self, id: &AgentId) -> bool {
        self.running
            .as_ref()
            .is_some_and(|r| r.cells.contains_key(id) || r.remote.contains(id))
    }

    /// The runtime's [`Remote`](crate::remote::Remote), for a child that runs elsewhere.
    fn remote(&self, child: &AgentId) -> Result<Arc<dyn crate::remote::Remote>, Error> {
        self.kernel.remote.clone().ok_or_else(|| Error::Remote {
            id: child.clone(),
            reason: "this runtime has no connection to other runtimes".into(),
        })
    }

    /// Makes sure remote child `id` runs in its runtime (see [`remote`](crate::remote)).
    async fn start_remote(&mut self, id: &AgentId) -> Result<(), Error> {
        let child = {
            let tree = self.kernel.tree();
            let node = tree
                .get(id)
                .ok_or_else(|| Error::UnknownAgent(id.clone()))?;
            let mut spec = node.spawn_spec(id.clone());
            spec.placement = crate::remote::Placement::Anywhere;
            crate::remote::RemoteChild {
                supervisor: self.id.clone(),
                kind: node.kind.to_string(),
                args: node.args.to_vec(),
                spec,
            }
        };
        if self.kernel.tree().must_not_start(id) {
            return Ok(());
        }
        let remote = self.remote(id)?;
        remote.start_child(child).await?;
        if self.kernel.tree().must_not_start(id) {
            // A stop for good began while it started: it may have removed the child
            // before this start reached it. Remove it again (idempotent).
            return remote.remove_child(id.clone()).await;
        }
        self.running().remote.insert(id.clone());
        Ok(())
    }

    /// Starts child `id` as recorded in the tree (nothing if it runs).
    pub(crate) async fn start(&mut self, id: &AgentId) -> Result<(), Error> {
        if self.is_running(id) {
            return Ok(());
        }
        // One look at the tree (its lock is not held across an await).
        let local = {
            let tree = self.kernel.tree();
            if tree.is_elsewhere(id) {
                None
            } else {
                let node = tree
                    .get(id)
                    .ok_or_else(|| Error::UnknownAgent(id.clone()))?;
                Some((
                    self.kernel.kind(&node.kind)?,
                    StartArgs {
                        id: id.clone(),
                        args: node.args.to_vec(),
                        spec: node.spawn_spec(id.clone()),
                        base: node.base,
                        has_children: !node.children.is_empty(),
                    },
                ))
            }
        };
        let Some((kind, start)) = local else {
            return self.start_remote(id).await;
        };
        let actor = kind
            .start(Arc::clone(&self.kernel), start, self.myself.get_cell())
            .await?;
        let running = self.running();
        running.by_actor.insert(actor.get_id(), id.clone());
        running.cells.insert(id.clone(), actor.get_cell());
        Ok(())
    }

    /// Stops a running child on purpose and waits for it (killing it after a timeout).
    pub(crate) async fn stop(&mut self, id: &AgentId) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        if running.remote.remove(id) {
            if self.kernel.tree().get(id).is_none() {
                return; // removed (stopped for good) where it lives already
            }
            // Halted, not removed: a restart starts it again where it lives.
            let halted = match self.remote(id) {
                Ok(remote) => remote.halt_child(id.clone()).await,
                Err(error) => Err(error),
            };
            if let Err(error) = halted {
                tracing::warn!(agent = %self.id, child = %id, %error, "could not halt a remote child");
            }
            return;
        }
        let Some(cell) = running.cells.remove(id) else {
            return;
        };
        running.stopping.insert(cell.get_id());
        // While the runtime shuts down, agents already had the drain timeout to finish
        // their work: one still busy is stuck in a handler and is killed soon.
        let patience = if self.kernel.is_accepting() {
            STOP_TIMEOUT
        } else {
            SHUTDOWN_STOP_TIMEOUT
        };
        if cell.stop_and_wait(None, Some(patience)).await.is_err() {
            tracing::warn!(agent = %id, "child did not stop in time; killing it");
            let _ = cell.kill_and_wait(Some(STOP_TIMEOUT)).await;
        }
        // A child that failed just before (its exit not handled yet, e.g. at shutdown,
        // when it never will be) ran no `post_stop` to leave the directory.
        self.kernel.directory.stopped(id, cell.get_id());
    }

    /// Stops every child, last started first.
    pub(crate) async fn stop_all(&mut self) {
        for child in self.order().iter().rev() {
            self.stop(child).await;
        }
        let leftover: Vec<AgentId> = self
            .running
            .as_ref()
            .map(|r| r.cells.keys().cloned().collect())
            .unwrap_or_default();
        for child in leftover {
            self.stop(&child).await;
        }
    }

    /// The children, in start order, as the tree records them.
    fn order(&self) -> Vec<AgentId> {
        let parent = (!self.root).then_some(&self.id);
        self.kernel.tree().children_of(parent)
    }

    /// Starts every recorded child that is not running.
    pub(crate) async fn start_recorded(&mut self) -> Result<(), ActorProcessingErr> {
        for child in self.order() {
            if let Err(error) = self.start(&child).await {
                tracing::warn!(agent = %self.id, %child, %error, "could not start a child");
                self.failed(child, error.to_string()).await?;
            }
        }
        Ok(())
    }

    /// Starts `ids` after a restart backoff (those still in the tree).
    pub(crate) async fn restart(&mut self, ids: Vec<AgentId>) -> Result<(), ActorProcessingErr> {
        for id in ids {
            if self.kernel.tree().get(&id).is_none() {
                continue;
            }
            if let Err(error) = self.start(&id).await {
                self.failed(id, error.to_string()).await?;
            }
        }
        Ok(())
    }

    /// Starts a child already recorded in the tree, for a spawn from outside; a child
    /// that cannot start is removed from the tree again.
    pub(crate) async fn start_requested(&mut self, request: ChildStart) {
        let started = self.start_spawned(&request.id).await;
        let _ = request.ack.send(started);
    }

    /// Starts a child just recorded in the tree by a spawn; a child that cannot start is
    /// removed from the tree again.
    pub(crate) async fn start_spawned(&mut self, id: &AgentId) -> Result<(), Error> {
        let started = self.start(id).await;
        if started.is_err() {
            let _ = self.kernel.record_stop(id).await;
        }
        started
    }

    /// Handles a supervision event about a child: its exit is a failure to apply the
    /// strategy to, a deliberate stop, or the end of a child that is not restarted.
    pub(crate) async fn on_event(
        &mut self,
        event: SupervisionEvent,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failed, reason, halted) = match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                let halted = matches!(
                    error.downcast_ref::<Error>(),
                    Some(Error::NonDeterministic { .. })
                );
                (cell, true, error.to_string(), halted)
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                false,
                reason.unwrap_or_else(|| "stopped".into()),
                false,
            ),
            _ => return Ok(()),
        };
        let Some(running) = self.running.as_mut() else {
            return Ok(());
        };
        let Some(child) = running.by_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        // An actor that failed while starting never ran its `post_stop`.
        self.kernel.directory.stopped(&child, cell.get_id());
        if running
            .cells
            .get(&child)
            .is_some_and(|c| c.get_id() == cell.get_id())
        {
            running.cells.remove(&child);
        }
        if running.stopping.remove(&cell.get_id()) {
            return Ok(());
        }
        if self.root {
            let supervisor = self.kernel.tree().adopted_by(&child).cloned();
            if let Some(supervisor) = supervisor {
                self.report_exit(crate::remote::ChildExit {
                    supervisor,
                    child,
                    failed,
                    reason,
                    halted,
                });
                return Ok(());
            }
        }
        self.exited(child, failed, reason, halted).await
    }

    /// Tells the supervisor in another runtime that its child `exit.child`, adopted here,
    /// exited: it decides what happens next (the child stays stopped meanwhile). Sent
    /// from a task of its own, retried for a while: the root does not wait on another
    /// runtime. A report that is lost is made good when the supervisor next starts its
    /// children.
    fn report_exit(&self, exit: crate::remote::ChildExit) {
        let Ok(remote) = self.remote(&exit.child) else {
            return;
        };
        tracing::info!(child = %exit.child, supervisor = %exit.supervisor, reason = %exit.reason, "adopted child exited; telling its supervisor");
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            for attempt in 1..=8 {
                match remote.child_exited(exit.clone()).await {
                    Ok(()) => return,
                    Err(error) => {
                        tracing::warn!(child = %exit.child, attempt, %error, "could not report an exit to a remote supervisor");
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        });
    }

    /// Handles the exit of a remote child, reported by the runtime that runs it: as the
    /// exit of a local child. A report about a child not running (halted on purpose,
    /// stopped, or reported twice) is dropped.
    pub(crate) async fn on_remote_exit(
        &mut self,
        exit: crate::remote::ChildExit,
    ) -> Result<(), ActorProcessingErr> {
        let Some(running) = self.running.as_mut() else {
            return Ok(());
        };
        if exit.supervisor != self.id || !running.remote.remove(&exit.child) {
            return Ok(());
        }
        self.exited(exit.child, exit.failed, exit.reason, exit.halted)
            .await
    }

    /// Applies the child's restart type and the strategy to a child that exited.
    async fn exited(
        &mut self,
        child: AgentId,
        failed: bool,
        reason: String,
        halted: bool,
    ) -> Result<(), ActorProcessingErr> {
        if halted {
            // Restarting would replay into the same mismatch: the child stays in the tree,
            // stopped, until a build whose handler matches its journal starts it.
            tracing::error!(agent = %self.id, %child, %reason, "child halted: its handler does not replay its journal; not restarted");
            return Ok(());
        }
        let restart = match self.kernel.tree().get(&child) {
            None => return Ok(()),
            Some(node) => match node.restart() {
                Restart::Permanent => true,
                Restart::Transient => failed,
                Restart::Temporary => false,
            },
        };
        if !restart {
            tracing::info!(agent = %self.id, %child, %reason, "child exited; not restarted");
            if let Err(error) = self.kernel.record_stop(&child).await {
                tracing::warn!(%child, %error, "could not record the exit");
            }
            return Ok(());
        }
        self.failed(child, reason).await
    }

    /// Applies the supervision strategy to a failed (or exited permanent) child.
    async fn failed(&mut self, child: AgentId, reason: String) -> Result<(), ActorProcessingErr> {
        let mut pending = vec![(child, reason)];
        while let Some((child, reason)) = pending.pop() {
            if !self.kernel.is_accepting() {
                return Ok(());
            }
            let order = self.order();
            let running = self.running.get_or_insert_with(Box::default);
            let plan = supervision::plan(
                &self.spec.as_deref().copied().unwrap_or_default(),
                &mut running.window,
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
                        self.stop(c).await;
                    }
                    if self.root {
                        self.kernel.fail(why);
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
                    Counters::add(&self.kernel.metrics.agent_restarts, restart.len() as u64);
                    for r in &restart {
                        self.kernel.directory.restarted(r);
                    }
                    for s in &stop {
                        self.stop(s).await;
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
                        // Stopped (removed from the tree) meanwhile: not a failure.
                        if self.kernel.tree().get(&r).is_none() {
                            continue;
                        }
                        if let Err(error) = self.start(&r).await {
                            pending.push((r, error.to_string()));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

//! The root supervisor: the top of the actor tree. It owns the journal writer (starts
//! it, restarts it if it fails, stops it last) and supervises the top-level agents with
//! [`RuntimeConfig::root_supervision`](crate::RuntimeConfig::root_supervision); past its
//! restart intensity the runtime fails ([`Runtime::failure`](crate::Runtime::failure)).
//!
//! # Top-level spawns without a round trip
//! The root's [`Children`] sit behind an async mutex ([`TopLevel`]) shared with the
//! runtime handle. [`Runtime::spawn`](crate::Runtime::spawn) of a top-level agent takes the
//! lock and starts the agent from the spawner's own task (its `pre_start` runs there,
//! linked to the root, as it would in the root), instead of sending the root a request
//! and waiting for its answer. Everything the root does with its children (handle an
//! exit, restart, stop, stop them all at shutdown) also runs under the lock, so a spawn
//! is one more step in the same sequence: the root hears of a child's exit only once
//! the spawner has recorded the child (no exit can come before its adoption), a restart
//! and a spawn never interleave, and a spawn after the root stopped its children is
//! refused.

use std::sync::{Arc, OnceLock};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::Mutex;

use crate::children::{Children, STOP_TIMEOUT};
use crate::envelope::Envelope;
use crate::kernel::Kernel;
use crate::writer::{Writer, WriterMsg};
use crate::{AgentId, Error};

/// The root's children, shared by the root and the runtime handle (see the module docs).
#[derive(Clone)]
pub(crate) struct TopLevel(Arc<Mutex<RootChildren>>);

/// The root's children and whether it stopped them for good.
struct RootChildren {
    children: Children,
    /// Set once the root stopped every child (its `post_stop`): nothing starts any more.
    closed: bool,
}

impl TopLevel {
    /// Starts top-level agent `id`, already recorded in the tree, from the caller's task
    /// (nothing if it runs already, e.g. started by a restart meanwhile); an agent that
    /// cannot start is removed from the tree again.
    ///
    /// # Errors
    /// [`Error::ShuttingDown`] once the root stopped its children; as
    /// [`Children::start`].
    pub(crate) async fn spawn(&self, id: &AgentId) -> Result<(), Error> {
        let mut root = self.0.lock().await;
        if root.closed {
            drop(root);
            return Err(Error::ShuttingDown);
        }
        root.children.start_spawned(id).await
    }
}

impl TopLevel {
    /// Starts top-level agent `id`, recorded in the tree before (nothing if it runs); an
    /// agent that cannot start stays in the tree.
    ///
    /// # Errors
    /// [`Error::ShuttingDown`] once the root stopped its children; as
    /// [`Children::start`].
    pub(crate) async fn start(&self, id: &AgentId) -> Result<(), Error> {
        let mut root = self.0.lock().await;
        if root.closed {
            drop(root);
            return Err(Error::ShuttingDown);
        }
        root.children.start(id).await
    }

    /// Stops top-level agent `id` on purpose (not a failure) and keeps it in the tree.
    pub(crate) async fn halt(&self, id: &AgentId) {
        self.0.lock().await.children.stop(id).await;
    }
}

/// The root actor. `top` receives the root's children once it started.
pub(crate) struct Root {
    pub(crate) top: Arc<OnceLock<TopLevel>>,
}

/// Its state: the writer it owns and the top-level agents.
pub(crate) struct RootState {
    kernel: Arc<Kernel>,
    writer: ActorRef<WriterMsg>,
    top: TopLevel,
}

async fn start_writer(
    kernel: &Arc<Kernel>,
    myself: &ActorRef<Envelope>,
) -> Result<ActorRef<WriterMsg>, ActorProcessingErr> {
    let (writer, _) = Actor::spawn_linked(None, Writer, kernel.writer_parts(), myself.get_cell())
        .await
        .map_err(|e| format!("starting the journal writer: {e}"))?;
    kernel.set_writer(Some(writer.clone()));
    Ok(writer)
}

impl Actor for Root {
    type Msg = Envelope;
    type State = RootState;
    type Arguments = Arc<Kernel>;

    async fn pre_start(
        &self,
        myself: ActorRef<Envelope>,
        kernel: Arc<Kernel>,
    ) -> Result<RootState, ActorProcessingErr> {
        let writer = start_writer(&kernel, &myself).await?;
        let spec = kernel.config.root_supervision;
        let children = Children::new(Arc::clone(&kernel), None, myself, spec);
        let top = TopLevel(Arc::new(Mutex::new(RootChildren {
            children,
            closed: false,
        })));
        let _ = self.top.set(top.clone());
        Ok(RootState {
            kernel,
            writer,
            top,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Envelope>,
        msg: Envelope,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Envelope::RestartChildren(ids) => {
                let mut root = state.top.0.lock().await;
                if !root.closed {
                    root.children.restart(ids).await?;
                }
            }
            Envelope::StartChild(request) => {
                let mut root = state.top.0.lock().await;
                if root.closed {
                    let _ = request.ack.send(Err(Error::ShuttingDown));
                } else {
                    root.children.start_requested(request).await;
                }
            }
            Envelope::StopChild { id, ack } => {
                state.top.0.lock().await.children.stop(&id).await;
                let _ = ack.send(());
            }
            Envelope::Drain(ack) => {
                let _ = ack.send(());
            }
            Envelope::ChildExited(exit) => {
                // The root supervises no remote child (only agents' children run
                // elsewhere); a report for it is stale.
                tracing::debug!(child = %exit.child, "ignoring a remote exit sent to the root");
            }
            // Messages are for agents; the root has no behaviour of its own.
            Envelope::Deliver { .. }
            | Envelope::Own(_)
            | Envelope::Local { .. }
            | Envelope::Wake(_)
            | Envelope::LocalTopic { .. }
            | Envelope::TimerDue(_)
            | Envelope::Query { .. } => {}
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Envelope>,
        event: SupervisionEvent,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        let exited = match &event {
            SupervisionEvent::ActorFailed(cell, _)
            | SupervisionEvent::ActorTerminated(cell, ..) => cell.get_id(),
            // Every spawn sends one (`ActorStarted`): not worth the lock.
            _ => return Ok(()),
        };
        if exited != state.writer.get_id() {
            return state.top.0.lock().await.children.on_event(event).await;
        }
        if state.kernel.is_accepting() {
            tracing::warn!("the journal writer failed; restarting it");
            state.writer = start_writer(&state.kernel, &myself).await?;
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Envelope>,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        // Children first, then the writer they journal through.
        {
            let mut root = state.top.0.lock().await;
            root.closed = true;
            root.children.stop_all().await;
        }
        state.kernel.set_writer(None);
        let _ = state.writer.stop_and_wait(None, Some(STOP_TIMEOUT)).await;
        Ok(())
    }
}

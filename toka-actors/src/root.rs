//! The root supervisor: the top of the actor tree. It owns the journal writer (starts
//! it, restarts it if it fails, stops it last) and supervises the top-level agents with
//! [`RuntimeConfig::root_supervision`](crate::RuntimeConfig::root_supervision); past its
//! restart intensity the runtime fails ([`Runtime::failure`](crate::Runtime::failure)).

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::children::{Children, STOP_TIMEOUT};
use crate::envelope::Envelope;
use crate::kernel::Kernel;
use crate::writer::{Writer, WriterMsg};

/// The root actor.
pub(crate) struct Root;

/// Its state: the writer it owns and the top-level agents.
pub(crate) struct RootState {
    kernel: Arc<Kernel>,
    writer: ActorRef<WriterMsg>,
    children: Children,
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
        Ok(RootState {
            kernel,
            writer,
            children,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Envelope>,
        msg: Envelope,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Envelope::RestartChildren(ids) => state.children.restart(ids).await?,
            Envelope::StartChild(request) => state.children.start_requested(request).await,
            Envelope::StopChild { id, ack } => {
                state.children.stop(&id).await;
                let _ = ack.send(());
            }
            Envelope::Drain(ack) => {
                let _ = ack.send(());
            }
            // Messages are for agents; the root has no behaviour of its own.
            Envelope::Deliver { .. }
            | Envelope::Own(_)
            | Envelope::Local { .. }
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
        let writer_exited = match &event {
            SupervisionEvent::ActorFailed(cell, _)
            | SupervisionEvent::ActorTerminated(cell, ..) => cell.get_id() == state.writer.get_id(),
            _ => false,
        };
        if !writer_exited {
            return state.children.on_event(event).await;
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
        state.children.stop_all().await;
        state.kernel.set_writer(None);
        let _ = state.writer.stop_and_wait(None, Some(STOP_TIMEOUT)).await;
        Ok(())
    }
}

//! [`AgentRef`]: a typed reference to one agent, by id. Its sends, asks and queries go
//! through [`delivery`], like every other message.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::delivery::{self, Typed, await_reply};
use crate::kernel::Kernel;
use crate::record::Origin;
use crate::{Agent, AgentId, Error, Queries};

/// A typed reference to an agent of kind `A`: send it messages or ask it.
///
/// References name the agent by id, so they stay valid across the agent's restarts and
/// the runtime's (look them up again with [`Runtime::agent`](crate::Runtime::agent)).
pub struct AgentRef<A: Agent> {
    id: AgentId,
    kernel: Arc<Kernel>,
    _kind: PhantomData<fn(A)>,
}

impl<A: Agent> Clone for AgentRef<A> {
    fn clone(&self) -> Self {
        AgentRef::new(self.id.clone(), Arc::clone(&self.kernel))
    }
}

impl<A: Agent> std::fmt::Debug for AgentRef<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AgentRef<{}>({})", A::KIND, self.id)
    }
}

impl<A: Agent> AgentRef<A> {
    pub(crate) fn new(id: AgentId, kernel: Arc<Kernel>) -> Self {
        AgentRef {
            id,
            kernel,
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
        delivery::deliver(
            &self.kernel,
            &self.id,
            Typed::new(msg),
            Origin::External,
            None,
        )
        .await
    }

    /// Sends `msg` and waits up to `timeout` for the handler's reply.
    ///
    /// # Errors
    /// As [`AgentRef::send`], and [`Error::Timeout`], [`Error::Handler`] (the handler
    /// failed), [`Error::NoReply`] (the agent stopped first). A durable message stays
    /// journaled after a timeout and is still handled.
    pub async fn ask(&self, msg: A::Msg, timeout: Duration) -> Result<A::Reply, Error> {
        let (reply, answer) = oneshot::channel();
        let (kernel, to) = (&self.kernel, &self.id);
        delivery::deliver(kernel, to, Typed::new(msg), Origin::External, Some(reply)).await?;
        let reply = await_reply(&self.id, answer, timeout).await?;
        crate::envelope::unbox::<A::Reply>(reply)
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
        let answer = delivery::query(&self.kernel, &self.id, run, timeout).await?;
        crate::envelope::unbox::<A::Answer>(answer)
            .map_err(|_| Error::Internal(format!("an answer of kind {} has another type", A::KIND)))
    }
}

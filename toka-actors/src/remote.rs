//! Agents in other runtimes: children supervised across runtimes, and messages to agents
//! this runtime does not hold.
//!
//! One runtime is one journal's agents. Several runtimes can form one system (the shards
//! of a `toka-node` cluster, each on whichever node holds it): an embedder connects them
//! with a [`Remote`] ([`RuntimeBuilder::remote`](crate::RuntimeBuilder::remote)), which
//! knows where every agent lives and carries requests to the runtime holding it, where
//! they arrive through [`Runtime`](crate::Runtime)'s `remote_*` methods.
//!
//! # A supervision tree that spans runtimes
//! A child spawned with [`Placement::Anywhere`] whose id [`Remote::is_elsewhere`] places
//! in another runtime is a **remote child** (Akka's remote deployment, OTP's child on
//! another node):
//! - The parent's journal records it as its child (a `SpawnedElsewhere` tree record): the
//!   parent's [`SupervisorSpec`](crate::SupervisorSpec) governs it like any child, its
//!   restarts count toward the parent's intensity, and a stop of the parent's subtree
//!   stops it.
//! - The runtime that runs it records it as a top-level agent **adopted** for that
//!   supervisor (an `Adopted` tree record): its journal, state, recovery and exactly-once
//!   steps are its own, but its exits are not handled there: each is reported to the
//!   supervisor ([`Remote::child_exited`]), which decides, as for a local child, to
//!   restart it ([`Remote::start_child`]), leave it stopped and remove it
//!   ([`Remote::remove_child`]), or escalate. Children stopped by a restart strategy or
//!   by the supervisor's own stop are halted ([`Remote::halt_child`]): stopped, kept.
//! - Every request is idempotent (starting a running child, halting a halted one,
//!   removing a removed one), so a [`Remote`] may retry; a lost exit report is made good
//!   when the supervisor next starts its children (every start of a supervisor starts
//!   its remote children again).
//! - A crash of either runtime recovers its own part from its own journal: the adopted
//!   child is started again where it lives, and the supervisor, once recovered, starts
//!   (that is, finds running) its remote children.
//!
//! # Messages to agents elsewhere
//! A send, ask or query to an agent this runtime does not hold goes through
//! [`Remote::deliver`], [`Remote::ask`] or [`Remote::query`] (an agent held nowhere is
//! [`Error::UnknownAgent`] there, as here): the message (or query) travels postcard-encoded,
//! and the reply (or answer) comes back encoded, decoded by the asker's own type. A
//! durable agent's send or ask carries its [`Origin`] (agent and effect id), so the
//! receiver drops a second copy of it (a handler re-run after a crash); a send counts
//! only once the receiver has journaled it, and a handler's ask or query journals its
//! outcome as for a local agent, so a replay never asks again. Topics stay within a
//! runtime.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::record::Origin;
pub use crate::spec::Placement;
use crate::{AgentId, Error, SpawnSpec};

/// A future a [`Remote`] returns.
pub type RemoteFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

/// A future a [`Remote`] returns with an encoded reply or answer.
pub type RemoteAnswer = Pin<Box<dyn Future<Output = Result<Vec<u8>, Error>> + Send>>;

/// A message for an agent in another runtime.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteMessage {
    /// Who sent it (a durable agent's sends are deduplicated by it).
    pub origin: Origin,
    /// The topic it was published to, if any.
    pub topic: Option<String>,
    /// The message, postcard-encoded as the agent's `Msg` (or the topic's type).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// A child to run in another runtime, for a supervisor of this one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteChild {
    /// The supervising agent (in the runtime asking).
    pub supervisor: AgentId,
    /// The child's kind.
    pub kind: String,
    /// Its postcard-encoded arguments.
    #[serde(with = "serde_bytes")]
    pub args: Vec<u8>,
    /// How it is started (holds its id).
    pub spec: SpawnSpec,
}

/// A remote child's exit, for its supervisor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildExit {
    /// The supervising agent.
    pub supervisor: AgentId,
    /// The child that exited.
    pub child: AgentId,
    /// Whether it failed (rather than stopped normally).
    pub failed: bool,
    /// Why it exited.
    pub reason: String,
    /// Whether it is halted: its handler does not replay its journal, and restarting
    /// it would not help ([`Error::NonDeterministic`]).
    pub halted: bool,
}

/// Connects a runtime to the runtimes holding the agents it does not (see the [module
/// docs](self)). Every method may retry; each request is idempotent where it arrives.
pub trait Remote: Send + Sync + 'static {
    /// Whether a child with id `id`, being placed [`Placement::Anywhere`], goes to
    /// another runtime. (Requests for any agent this runtime does not hold go through the
    /// other methods, whatever this says: the runtime holding the agent, if any, answers.)
    fn is_elsewhere(&self, id: &AgentId) -> bool;

    /// Delivers `message` to agent `to` in its runtime ([`Runtime::remote_deliver`]
    /// there); done once that runtime has journaled it (for a durable agent).
    ///
    /// [`Runtime::remote_deliver`]: crate::Runtime::remote_deliver
    fn deliver(&self, to: AgentId, message: RemoteMessage) -> RemoteFuture;

    /// Asks agent `to` in its runtime ([`Runtime::remote_ask`] there); its reply,
    /// postcard-encoded as its kind's `Reply`.
    ///
    /// [`Runtime::remote_ask`]: crate::Runtime::remote_ask
    fn ask(&self, to: AgentId, message: RemoteMessage) -> RemoteAnswer;

    /// Queries agent `to` in its runtime ([`Runtime::remote_query`] there) with `query`,
    /// postcard-encoded as its kind's `Query`, waiting at most `timeout`; the answer,
    /// encoded as its `Answer`.
    ///
    /// [`Runtime::remote_query`]: crate::Runtime::remote_query
    fn query(&self, to: AgentId, query: Vec<u8>, timeout: Duration) -> RemoteAnswer;

    /// Makes sure `child` runs in its runtime, adopted for its supervisor
    /// ([`Runtime::remote_start_child`] there).
    ///
    /// [`Runtime::remote_start_child`]: crate::Runtime::remote_start_child
    fn start_child(&self, child: RemoteChild) -> RemoteFuture;

    /// Stops remote child `id` and keeps it ([`Runtime::remote_halt_child`] there).
    ///
    /// [`Runtime::remote_halt_child`]: crate::Runtime::remote_halt_child
    fn halt_child(&self, id: AgentId) -> RemoteFuture;

    /// Stops remote child `id` and removes it, journaled
    /// ([`Runtime::remote_remove_child`] there).
    ///
    /// [`Runtime::remote_remove_child`]: crate::Runtime::remote_remove_child
    fn remove_child(&self, id: AgentId) -> RemoteFuture;

    /// Reports an adopted child's exit to its supervisor's runtime
    /// ([`Runtime::remote_child_exited`] there).
    ///
    /// [`Runtime::remote_child_exited`]: crate::Runtime::remote_child_exited
    fn child_exited(&self, exit: ChildExit) -> RemoteFuture;
}

impl<R: Remote + ?Sized> Remote for std::sync::Arc<R> {
    fn is_elsewhere(&self, id: &AgentId) -> bool {
        (**self).is_elsewhere(id)
    }

    fn deliver(&self, to: AgentId, message: RemoteMessage) -> RemoteFuture {
        (**self).deliver(to, message)
    }

    fn ask(&self, to: AgentId, message: RemoteMessage) -> RemoteAnswer {
        (**self).ask(to, message)
    }

    fn query(&self, to: AgentId, query: Vec<u8>, timeout: Duration) -> RemoteAnswer {
        (**self).query(to, query, timeout)
    }

    fn start_child(&self, child: RemoteChild) -> RemoteFuture {
        (**self).start_child(child)
    }

    fn halt_child(&self, id: AgentId) -> RemoteFuture {
        (**self).halt_child(id)
    }

    fn remove_child(&self, id: AgentId) -> RemoteFuture {
        (**self).remove_child(id)
    }

    fn child_exited(&self, exit: ChildExit) -> RemoteFuture {
        (**self).child_exited(exit)
    }
}

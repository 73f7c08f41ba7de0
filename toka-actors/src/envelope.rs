//! What agent actors receive (the ractor message type shared by every agent kind).

use std::any::Any;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::inbox::Inbox;
use crate::{AgentId, Error, SpawnSpec, TimerId};

/// What an agent actor starts from.
pub(crate) struct StartArgs {
    pub(crate) id: AgentId,
    pub(crate) args: Vec<u8>,
    pub(crate) spec: SpawnSpec,
    /// Where the agent's incarnation begins in its stream (see [`record`](crate::record)).
    pub(crate) base: u64,
    /// Whether the tree records children of the agent (to start once it has started): a
    /// restarted or recovered agent may have some, a newly spawned one has none.
    pub(crate) has_children: bool,
}

/// A value of an agent's message, reply or query answer type, type-erased for transport.
/// Values of up to four words (most messages and replies) are kept inline, so a local
/// message or a reply allocates nothing of its own; larger ones go to the heap.
pub(crate) type AnyBox = smallbox::SmallBox<dyn Any + Send, smallbox::space::S4>;

/// Type-erases `value` for transport.
///
/// The `smallbox!` macro expands to the crate's one `unsafe` block (the unsizing of a
/// `SmallBox<T>` into a `SmallBox<dyn Any + Send>`, sound for every `T: Any + Send`, which
/// the bound here guarantees); it is the only code of this crate that is not safe Rust.
/// Measured worth it: the fan-in bench runs 8 % fewer instructions than with `Box`
/// (callgrind, whole program: 27.6 G against 29.9 G).
pub(crate) fn any_box<T: Any + Send>(value: T) -> AnyBox {
    smallbox::smallbox!(value)
}

/// The value in `boxed`, if it is a `T`; the box back if not.
pub(crate) fn unbox<T: Any>(boxed: AnyBox) -> Result<T, AnyBox> {
    boxed.downcast::<T>().map(smallbox::SmallBox::into_inner)
}

/// A query in transit: runs on the agent value and its state, both type-erased.
pub(crate) type QueryFn = Box<dyn FnOnce(&dyn Any, &dyn Any) -> Result<AnyBox, Error> + Send>;

/// Where the reply to an ask goes.
pub(crate) type ReplyPort = oneshot::Sender<Result<AnyBox, Error>>;

/// A request to start a child under an agent (from outside its handler).
pub(crate) struct ChildStart {
    pub(crate) id: AgentId,
    pub(crate) ack: oneshot::Sender<Result<(), Error>>,
}

/// The messages of every agent actor.
pub(crate) enum Envelope {
    /// A journaled message, in stream order (durable agents).
    Deliver {
        seq: u64,
        position: u64,
        payload: Vec<u8>,
        /// An ask: its reply port is in the runtime's ask table.
        asked: bool,
    },
    /// One of the agent's own records was appended at this sequence number (a record it
    /// did not wait for; see the writer's `Routing::OwnNotify`).
    Own(u64),
    /// A message for a transient agent: its `Msg`, boxed.
    Local {
        msg: AnyBox,
        reply: Option<ReplyPort>,
    },
    /// A topic message for a transient agent: the topic's type, encoded.
    LocalTopic { topic: String, body: Vec<u8> },
    /// Messages wait in the transient agent's inbox (see [`crate::inbox`]).
    Wake(Arc<Inbox<Envelope>>),
    /// A durable timer is due.
    TimerDue(TimerId),
    /// A backoff elapsed: restart these children, in order.
    RestartChildren(Vec<AgentId>),
    /// Start a child already recorded in the tree.
    StartChild(ChildStart),
    /// Stop a child (already removed from the tree) and its subtree.
    StopChild {
        id: AgentId,
        ack: oneshot::Sender<()>,
    },
    /// A remote child's exit, reported by the runtime that runs it (see
    /// [`remote`](crate::remote)).
    ChildExited(Box<crate::remote::ChildExit>),
    /// Answer once every message queued before this one has been handled.
    Drain(oneshot::Sender<()>),
    /// A query: answered from the state, behind every message queued before it; nothing
    /// is journaled.
    Query { run: QueryFn, reply: ReplyPort },
}

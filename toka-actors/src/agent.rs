//! The [`Agent`] trait: how users write agents.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{AgentError, Context, StartContext};

/// An agent: a kind of actor with typed arguments, messages and replies, whose state the
/// runtime recovers after a crash.
///
/// The runtime calls [`Agent::init`] to build the state from the arguments, then
/// [`Agent::handle`] for each message, one at a time, in order. A durable agent's
/// messages are journaled before they are handled; after a restart its state is rebuilt
/// by loading the latest snapshot (if the agent makes them) and handling the later
/// messages again. While it replays, the [`Context`] suppresses outward effects that
/// already happened, so **handlers must be deterministic** given the state and message:
/// take time from [`Context::now`] and do I/O through the context.
///
/// Returning `Err` (or panicking) from `handle` fails the agent: its supervisor restarts
/// it (recovering the state from the journal) and the message is tried again; after
/// [`SpawnSpec::max_attempts`](crate::SpawnSpec::max_attempts) failures it is
/// dead-lettered.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use toka_actors::{Agent, AgentError, Context};
///
/// struct Counter;
///
/// #[derive(Serialize, Deserialize)]
/// enum CounterMsg { Add(i64), Get }
///
/// impl Agent for Counter {
///     const KIND: &'static str = "counter";
///     type Args = i64; // the initial value
///     type Msg = CounterMsg;
///     type Reply = i64;
///     type State = i64;
///
///     fn init(&self, start: &i64) -> Result<i64, AgentError> {
///         Ok(*start)
///     }
///
///     async fn handle(
///         &self,
///         _ctx: &mut Context<'_, Self>,
///         value: &mut i64,
///         msg: CounterMsg,
///     ) -> Result<i64, AgentError> {
///         if let CounterMsg::Add(n) = msg {
///             *value += n;
///         }
///         Ok(*value)
///     }
/// }
/// ```
pub trait Agent: Send + Sync + Sized + 'static {
    /// The stable name of this kind, recorded in the journal with each spawn; the
    /// runtime's kind registry maps it back to this type on recovery.
    const KIND: &'static str;
    /// What the agent is created from (recorded with the spawn).
    type Args: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// The messages it handles.
    type Msg: Serialize + DeserializeOwned + Send + 'static;
    /// What `handle` returns: the reply to an ask (dropped for a plain send).
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// Its state, rebuilt from the journal after a restart.
    type State: Send + 'static;

    /// The initial state.
    ///
    /// # Errors
    /// An error here fails the start (the supervisor counts it as a failure).
    fn init(&self, args: &Self::Args) -> Result<Self::State, AgentError>;

    /// Runs on every start, before recovery: subscribe to topics here.
    fn on_start(
        &self,
        ctx: &mut StartContext<'_, Self>,
        state: &mut Self::State,
    ) -> impl Future<Output = Result<(), AgentError>> + Send {
        let _ = (ctx, state);
        async { Ok(()) }
    }

    /// Handles one message.
    fn handle(
        &self,
        ctx: &mut Context<'_, Self>,
        state: &mut Self::State,
        msg: Self::Msg,
    ) -> impl Future<Output = Result<Self::Reply, AgentError>> + Send;

    /// The state as bytes, for a snapshot; `None` (the default) takes none and recovery
    /// replays every message.
    fn snapshot(&self, state: &Self::State) -> Option<Vec<u8>> {
        let _ = state;
        None
    }

    /// The state from a snapshot [`Agent::snapshot`] made.
    ///
    /// # Errors
    /// The default refuses (an agent that makes snapshots must restore them).
    fn restore(&self, args: &Self::Args, snapshot: &[u8]) -> Result<Self::State, AgentError> {
        let _ = (args, snapshot);
        Err(AgentError::msg(
            "this agent kind makes snapshots but does not restore them",
        ))
    }
}

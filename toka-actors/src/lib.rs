//! Toka's actor runtime: agents are supervised [`ractor`] actors whose messages are
//! journaled, so that after a crash the whole supervision tree is rebuilt (same ids,
//! parents and kinds) and every agent's state is recovered.
//!
//! # Writing agents
//! Implement [`Agent`]: a kind name, typed arguments, messages and replies, a state, and
//! an async `handle` that gets a [`Context`]. Through the context an agent sends to and
//! asks other agents, spawns supervised children, publishes to [`Topic`]s, and schedules
//! durable timers.
//!
//! # Embedding
//! Build a [`Runtime`] over a journal with [`Runtime::builder`], register the agent kinds,
//! and [`start`](RuntimeBuilder::start) it: it recovers everything the journal holds
//! before it returns. [`AgentRef::send`] returns once the message is journaled;
//! [`AgentRef::ask`] waits for the reply. [`Runtime::shutdown`] drains and flushes.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use toka_actors::{Agent, AgentError, AgentId, Context, Runtime, SpawnSpec};
//! use toka_store::{JournalConfig, MemoryJournal};
//!
//! struct Counter;
//! #[derive(Serialize, Deserialize)]
//! enum Msg { Add(i64), Get }
//!
//! impl Agent for Counter {
//!     const KIND: &'static str = "counter";
//!     type Args = ();
//!     type Msg = Msg;
//!     type Reply = i64;
//!     type State = i64;
//!     fn init(&self, _: &()) -> Result<i64, AgentError> { Ok(0) }
//!     async fn handle(&self, _: &mut Context<'_, Self>, n: &mut i64, msg: Msg) -> Result<i64, AgentError> {
//!         if let Msg::Add(k) = msg { *n += k; }
//!         Ok(*n)
//!     }
//! }
//!
//! let journal = Arc::new(MemoryJournal::new(JournalConfig::default())?);
//! let runtime = Runtime::builder(journal.clone()).register(Counter).start().await?;
//! let counter = runtime.spawn::<Counter>(SpawnSpec::new("c1")?, ()).await?;
//! counter.send(Msg::Add(2)).await?;
//! assert_eq!(counter.ask(Msg::Get, Duration::from_secs(1)).await?, 2);
//! runtime.shutdown().await?;
//!
//! // A new runtime over the same journal recovers the agent and its state.
//! let runtime = Runtime::builder(journal).register(Counter).start().await?;
//! let counter = runtime.agent::<Counter>(&AgentId::new("c1")?)?;
//! assert_eq!(counter.ask(Msg::Get, Duration::from_secs(1)).await?, 2);
//! # runtime.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # Semantics
//! - **Order.** A durable agent handles its messages one at a time in journal order;
//!   messages from one sender keep their order.
//! - **Durability.** [`AgentRef::send`] to a durable agent returns once the message has
//!   the journal's durability (`Fsync`: flushed, shared with concurrent senders). An
//!   agent handles a message only once it is durable.
//! - **Exactly-once state, at-least-once handling.** Each journaled message changes the
//!   recovered state once. A message being handled at a crash is handled again after
//!   recovery; its effects are then deduplicated by their [`EffectId`]s (see
//!   [`Context`]).
//! - **Supervision** follows OTP: every agent supervises its children with a
//!   [`Strategy`], an [`Intensity`] and an optional [`Backoff`]; past the intensity it
//!   stops its children and fails to its parent. A restarted agent recovers its state
//!   from the journal, not from memory.
//! - **Poison messages.** A message that fails the agent
//!   [`RuntimeConfig::max_attempts`] times (default 3) is recorded as a
//!   [`DeadLetter`] and skipped.
//! - **Incarnations.** An id stopped with [`Runtime::stop`] and spawned again is a new
//!   agent that starts from `init`: nothing the earlier incarnation journaled is
//!   replayed, fired or counted, even after a restart, and its records stay in the
//!   journal for audit (see [`record`]).
//! - **Transient agents** ([`SpawnSpec::transient`]) are not journaled: fresh state on
//!   every restart, gone after a runtime restart.
//! - **Shutdown.** [`Runtime::shutdown`] stops intake, lets agents drain their mailboxes,
//!   stops the tree children first, records progress and flushes the journal.
//!
//! The journal layout is described in [`record`]. Tracing spans, and how a trace is
//! carried through the journal from a send to its handling, in [`TracePropagator`].

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

// Each module uses only modules of lower layers; ARCHITECTURE.md lists them in layer
// order (rustfmt keeps this list alphabetical).
mod agent;
mod agent_actor;
mod agent_core;
mod agent_ref;
mod children;
mod context;
mod delivery;
mod directory;
mod effect;
mod envelope;
mod error;
mod extensions;
mod id;
mod inbox;
mod kernel;
mod kind;
mod metrics;
mod progress;
mod query;
pub mod record;
mod recovery;
pub mod remote;
mod root;
pub mod rules;
mod runtime;
mod spec;
mod supervision;
mod topic;
mod trace;
mod tree;
mod writer;

pub use agent::Agent;
pub use agent_ref::AgentRef;
pub use context::{Context, StartContext};
pub use effect::{Effect, OnDoubt};
pub use error::{AgentError, Error};
pub use id::{AgentId, EffectId, MAX_AGENT_ID_BYTES, TimerId};
pub use metrics::RuntimeMetrics;
pub use query::Queries;
pub use record::DeadLetter;
pub use remote::{ChildExit, Placement, Remote, RemoteChild, RemoteMessage};
pub use runtime::{REMOTE_ASK_LIMIT, Runtime, RuntimeBuilder, RuntimeConfig};
pub use spec::{Backoff, Intensity, Restart, SpawnSpec, Strategy, SupervisorSpec};
pub use topic::Topic;
pub use trace::{TraceContext, TracePropagator};
pub use tree::AgentInfo;

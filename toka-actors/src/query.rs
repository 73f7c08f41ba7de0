//! Queries: read-only questions an agent answers from its current state.
//!
//! An ask is a message: journaled, made durable, replayed on every recovery, counted
//! toward snapshots. Reading a value that way grows the journal with every read. A
//! *query* is none of that: it goes straight to the agent's actor, which answers it from
//! its state between two messages ([`Queries::query`] gets `&State`, so it cannot change
//! anything), and nothing is written.
//!
//! # Read your writes
//! A query sees every message that was acknowledged (its `send` or `ask` returned) before
//! the query was sent, to any caller, and never one that is not durable yet: the journal
//! writer puts each message in the agent's mailbox *before* it acknowledges it, and the
//! agent handles a message only once it is durable, one mailbox entry at a time; the query
//! queues behind. Messages journaled while the agent was down are handled by its recovery,
//! which ends before its mailbox is served. A query to an agent that is recovering or
//! restarting waits until it runs again (within the query's timeout).
//!
//! # Not recorded
//! Queries are not part of the queried agent's history: they are not replayed. A query
//! made *from* a durable agent's handler ([`Context::query`](crate::Context::query)) is
//! an outward step of *that* agent: its answer is recorded in the asker's stream, like an
//! ask's reply, so a replay of the handler gets the same answer.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::envelope::{AnyBox, QueryFn};
use crate::{Agent, AgentError, AgentId, Error};

/// An agent kind that answers queries. Register it with
/// [`RuntimeBuilder::register_with_queries`](crate::RuntimeBuilder::register_with_queries)
/// to also answer JSON queries ([`Runtime::query_json`](crate::Runtime::query_json), the
/// node's `POST /agents/{id}/query`); typed queries
/// ([`AgentRef::query`](crate::AgentRef::query)) work with a plain `register` too.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use toka_actors::{Agent, AgentError, Context, Queries};
///
/// struct Counter;
///
/// #[derive(Serialize, Deserialize)]
/// struct Add(i64);
///
/// #[derive(Serialize, Deserialize)]
/// struct Value;
///
/// impl Agent for Counter {
///     const KIND: &'static str = "counter";
///     type Args = ();
///     type Msg = Add;
///     type Reply = ();
///     type State = i64;
///     fn init(&self, (): &()) -> Result<i64, AgentError> {
///         Ok(0)
///     }
///     async fn handle(&self, _: &mut Context<'_, Self>, n: &mut i64, Add(k): Add) -> Result<(), AgentError> {
///         *n += k;
///         Ok(())
///     }
/// }
///
/// impl Queries for Counter {
///     type Query = Value;
///     type Answer = i64;
///     fn query(&self, n: &i64, Value: Value) -> Result<i64, AgentError> {
///         Ok(*n)
///     }
/// }
/// ```
pub trait Queries: Agent {
    /// The questions it answers.
    type Query: Serialize + DeserializeOwned + Send + 'static;
    /// Its answers.
    type Answer: Serialize + DeserializeOwned + Send + 'static;

    /// Answers `query` from `state`. Runs on the agent's actor between two messages; keep
    /// it quick (it holds up the agent's messages).
    ///
    /// # Errors
    /// An error is the query's answer; it does not fail the agent (nor does a panic).
    fn query(&self, state: &Self::State, query: Self::Query) -> Result<Self::Answer, AgentError>;
}

/// `query` for an agent of kind `A`.
pub(crate) fn query_fn<A: Queries>(id: AgentId, query: A::Query) -> QueryFn {
    Box::new(move |agent, state| {
        let (Some(agent), Some(state)) =
            (agent.downcast_ref::<A>(), state.downcast_ref::<A::State>())
        else {
            return Err(Error::Internal(format!(
                "a query of kind {} reached an agent of another kind",
                A::KIND
            )));
        };
        agent
            .query(state, query)
            .map(crate::envelope::any_box)
            .map_err(|e| Error::Handler {
                id,
                reason: e.to_string(),
            })
    })
}

/// How the kind of `A` turns JSON into queries and answers into JSON.
#[derive(Clone, Copy)]
pub(crate) struct JsonQueries {
    /// A JSON query for agent `id`.
    pub(crate) from_json: fn(AgentId, serde_json::Value) -> Result<QueryFn, Error>,
    /// An answer as JSON.
    pub(crate) to_json: fn(AnyBox) -> Result<serde_json::Value, Error>,
    /// A postcard-encoded query for agent `id` (from another runtime).
    pub(crate) from_bytes: fn(AgentId, &[u8]) -> Result<QueryFn, Error>,
    /// An answer, postcard-encoded (for another runtime).
    pub(crate) to_bytes: fn(AnyBox) -> Result<Vec<u8>, Error>,
}

impl JsonQueries {
    /// The converters of kind `A`.
    pub(crate) fn of<A: Queries>() -> Self {
        JsonQueries {
            from_json: |id, json| {
                let query: A::Query = serde_json::from_value(json).map_err(|e| Error::BadJson {
                    kind: A::KIND.to_owned(),
                    what: "query",
                    reason: e.to_string(),
                })?;
                Ok(query_fn::<A>(id, query))
            },
            to_json: |answer| {
                let answer = crate::envelope::unbox::<A::Answer>(answer).map_err(|_| {
                    Error::Internal(format!("an answer of kind {} has another type", A::KIND))
                })?;
                serde_json::to_value(answer).map_err(|e| Error::BadJson {
                    kind: A::KIND.to_owned(),
                    what: "answer",
                    reason: e.to_string(),
                })
            },
            from_bytes: |id, bytes| {
                let query: A::Query = crate::record::decode(A::KIND, 0, bytes)?;
                Ok(query_fn::<A>(id, query))
            },
            to_bytes: |answer| {
                let answer = answer.downcast::<A::Answer>().map_err(|_| {
                    Error::Internal(format!("an answer of kind {} has another type", A::KIND))
                })?;
                crate::record::encode("an answer", &*answer)
            },
        }
    }
}

//! The kind registry: maps the kind name recorded in the journal back to Rust types, so
//! that recovery starts each agent with the right [`Agent`] impl.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorRef};

use crate::agent_actor::{AgentActor, StartArgs};
use crate::envelope::{AnyBox, Envelope};
use crate::query::JsonQueries;
use crate::runtime::Shared;
use crate::{Agent, Error, Queries};

/// A boxed, sendable future.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One registered kind, type-erased.
pub(crate) trait Kind: Send + Sync {
    /// Starts an actor of this kind linked to `supervisor`.
    fn start(
        &self,
        shared: Arc<Shared>,
        start: StartArgs,
        supervisor: ActorCell,
    ) -> BoxFuture<Result<ActorRef<Envelope>, Error>>;

    /// Encodes JSON arguments as the kind's `Args`.
    fn args_from_json(&self, json: serde_json::Value) -> Result<Vec<u8>, Error>;
    /// Encodes a JSON message as the kind's `Msg` (for durable agents).
    fn msg_from_json(&self, json: serde_json::Value) -> Result<Vec<u8>, Error>;
    /// A JSON message as the kind's boxed `Msg` (for transient agents).
    fn boxed_msg_from_json(&self, json: serde_json::Value) -> Result<AnyBox, Error>;
    /// A boxed `Reply` as JSON.
    fn reply_to_json(&self, reply: AnyBox) -> Result<serde_json::Value, Error>;
    /// How the kind answers JSON queries, if it does.
    fn json_queries(&self) -> Option<JsonQueries>;
}

/// The [`Kind`] of agent type `A`, holding the user's agent value.
pub(crate) struct KindOf<A: Agent> {
    agent: Arc<A>,
    queries: Option<JsonQueries>,
    _kind: PhantomData<fn(A)>,
}

impl<A: Agent> KindOf<A> {
    pub(crate) fn new(agent: A) -> Self {
        KindOf {
            agent: Arc::new(agent),
            queries: None,
            _kind: PhantomData,
        }
    }

    /// The same kind, answering JSON queries.
    pub(crate) fn with_queries(mut self) -> Self
    where
        A: Queries,
    {
        self.queries = Some(JsonQueries::of::<A>());
        self
    }
}

fn bad_json(what: &'static str, kind: &str, e: impl std::fmt::Display) -> Error {
    Error::BadJson {
        kind: kind.to_owned(),
        what,
        reason: e.to_string(),
    }
}

impl<A: Agent> Kind for KindOf<A> {
    fn start(
        &self,
        shared: Arc<Shared>,
        start: StartArgs,
        supervisor: ActorCell,
    ) -> BoxFuture<Result<ActorRef<Envelope>, Error>> {
        let actor = AgentActor::<A>::new(Arc::clone(&self.agent), shared);
        Box::pin(async move {
            let id = start.id.clone();
            match Actor::spawn_linked(None, actor, start, supervisor).await {
                Ok((actor, _)) => Ok(actor),
                Err(error) => Err(Error::Spawn {
                    id,
                    reason: error.to_string(),
                }),
            }
        })
    }

    fn args_from_json(&self, json: serde_json::Value) -> Result<Vec<u8>, Error> {
        let args: A::Args =
            serde_json::from_value(json).map_err(|e| bad_json("arguments", A::KIND, e))?;
        crate::record::encode("arguments", &args)
    }

    fn msg_from_json(&self, json: serde_json::Value) -> Result<Vec<u8>, Error> {
        let msg: A::Msg =
            serde_json::from_value(json).map_err(|e| bad_json("message", A::KIND, e))?;
        crate::record::encode("a message", &msg)
    }

    fn boxed_msg_from_json(&self, json: serde_json::Value) -> Result<AnyBox, Error> {
        let msg: A::Msg =
            serde_json::from_value(json).map_err(|e| bad_json("message", A::KIND, e))?;
        Ok(Box::new(msg))
    }

    fn reply_to_json(&self, reply: AnyBox) -> Result<serde_json::Value, Error> {
        let reply = reply.downcast::<A::Reply>().map_err(|_| {
            Error::Internal(format!("a reply of kind {} has another type", A::KIND))
        })?;
        serde_json::to_value(*reply).map_err(|e| bad_json("reply", A::KIND, e))
    }

    fn json_queries(&self) -> Option<JsonQueries> {
        self.queries
    }
}

//! [`KindOf`]: the [`Kind`] of a Rust agent type, registered by name so that recovery
//! starts each agent recorded in the journal with the right [`Agent`] impl.

use std::marker::PhantomData;
use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorRef};

use serde::Deserialize;

use crate::agent_actor::AgentActor;
use crate::envelope::{AnyBox, Envelope, StartArgs};
use crate::kernel::{BoxFuture, Kernel, Kind};
use crate::query::JsonQueries;
use crate::{Agent, Error, Queries};

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
        kernel: Arc<Kernel>,
        start: StartArgs,
        supervisor: ActorCell,
    ) -> BoxFuture<Result<ActorRef<Envelope>, Error>> {
        let actor = AgentActor::<A>::new(Arc::clone(&self.agent));
        Box::pin(async move {
            let id = start.id.clone();
            let directory = Arc::clone(&kernel);
            match Actor::spawn_linked(None, actor, (kernel, start), supervisor).await {
                Ok((actor, _)) => Ok(actor),
                Err(error) => {
                    // Linking fails after `pre_start` entered the agent in the directory
                    // when the supervisor is stopping; no `post_stop` will remove it.
                    directory.directory.stopped_dead(&id);
                    Err(Error::Spawn {
                        id,
                        reason: error.to_string(),
                    })
                }
            }
        })
    }

    fn args_from_json(&self, json: serde_json::Value) -> Result<Vec<u8>, Error> {
        let args: A::Args =
            serde_json::from_value(json).map_err(|e| bad_json("arguments", A::KIND, e))?;
        crate::record::encode("arguments", &args)
    }

    fn msg_from_json(&self, json: &serde_json::Value) -> Result<Vec<u8>, Error> {
        let msg = A::Msg::deserialize(json).map_err(|e| bad_json("message", A::KIND, e))?;
        crate::record::encode("a message", &msg)
    }

    fn boxed_msg_from_json(&self, json: serde_json::Value) -> Result<AnyBox, Error> {
        let msg: A::Msg =
            serde_json::from_value(json).map_err(|e| bad_json("message", A::KIND, e))?;
        Ok(crate::envelope::any_box(msg))
    }

    fn boxed_msg_from_bytes(&self, bytes: &[u8]) -> Result<AnyBox, Error> {
        let msg: A::Msg = crate::record::decode(A::KIND, 0, bytes)?;
        Ok(crate::envelope::any_box(msg))
    }

    fn reply_to_bytes(&self, reply: AnyBox) -> Result<Vec<u8>, Error> {
        let reply = reply.downcast::<A::Reply>().map_err(|_| {
            Error::Internal(format!("a reply of kind {} has another type", A::KIND))
        })?;
        crate::record::encode("a reply", &*reply)
    }

    fn reply_to_json(&self, reply: AnyBox) -> Result<serde_json::Value, Error> {
        let reply = crate::envelope::unbox::<A::Reply>(reply).map_err(|_| {
            Error::Internal(format!("a reply of kind {} has another type", A::KIND))
        })?;
        serde_json::to_value(reply).map_err(|e| bad_json("reply", A::KIND, e))
    }

    fn json_queries(&self) -> Option<JsonQueries> {
        self.queries
    }
}

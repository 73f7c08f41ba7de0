//! What a handler can do: [`Context`] (and [`StartContext`] for `on_start`).
//!
//! Every outward act of a handler is an *effect* with a deterministic id: the sequence
//! number of the message being handled and the act's index within the handling
//! ([`EffectId`]). While an agent replays messages it had already handled, effects are
//! not performed again: sends and publishes are dropped, spawns return the recorded
//! child, timers take their recorded due time, asks return the recorded reply. A message
//! that was journaled but not marked handled before a crash is handled again *live*; its
//! effects then run again, and are made idempotent by their ids: receivers drop messages
//! whose effect id they have already seen from that sender, spawns of an existing child
//! return it, and recorded timers and replies are reused.
//!
//! Replaying, every step is also *checked*: the journal recorded what each handling did
//! (a [`StepsRecord`](crate::record::StepsRecord): kind, target and a digest of the
//! content of every send, ask, query, spawn, stop, publish, timer and effect), and a
//! replay that does something else at some step halts the agent with
//! [`Error::NonDeterministic`] rather than let its state drift from its history. See the
//! [rules for handlers](crate::rules).

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use toka_store::Timestamp;
use tokio::sync::oneshot;

use crate::agent_core::{Core, step};
use crate::agent_ref::AgentRef;
use crate::delivery::{self, Json, Typed, await_reply};
use crate::record::{self, Origin, Outcome, RecordKind, ReplyRecord, StepKind, TimerRecord};
use crate::{Agent, AgentId, EffectId, Error, Queries, SpawnSpec, TimerId, Topic};

/// The handler's view of the runtime while it handles one message.
pub struct Context<'a, A: Agent> {
    pub(crate) core: &'a mut Core<A>,
    pub(crate) seq: u64,
    pub(crate) effects: u32,
    pub(crate) replaying: bool,
    /// When the message was sent; `None` (transient agents): read the clock on demand.
    pub(crate) now: Option<Timestamp>,
}

impl<A: Agent> Context<'_, A> {
    /// The service of type `T` given to
    /// [`RuntimeBuilder::extension`](crate::RuntimeBuilder::extension), if any.
    pub fn extension<T: Send + Sync + 'static>(&self) -> Option<std::sync::Arc<T>> {
        self.core.kernel.extensions.get::<T>()
    }

    /// The agent's id.
    pub fn id(&self) -> &AgentId {
        &self.core.id
    }

    /// A reference to this agent (to hand to others).
    pub fn myself(&self) -> AgentRef<A> {
        AgentRef::new(self.core.id.clone(), self.core.kernel.clone())
    }

    /// A typed reference to agent `id` (to send to or ask).
    ///
    /// # Errors
    /// [`Error::UnknownAgent`], [`Error::WrongKind`].
    pub fn agent<B: Agent>(&self, id: &AgentId) -> Result<AgentRef<B>, Error> {
        self.core.kernel.check_kind(id, B::KIND)?;
        Ok(AgentRef::new(id.clone(), self.core.kernel.clone()))
    }

    /// The message's sequence number in the agent's stream (0 for transient agents).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether the agent is replaying an already-handled message (effects suppressed).
    pub fn is_replaying(&self) -> bool {
        self.replaying
    }

    /// When the message was sent: the same on replay, so use it instead of the clock
    /// (transient agents, which never replay, get the clock).
    pub fn now(&self) -> Timestamp {
        self.now.unwrap_or_else(Timestamp::now)
    }

    fn next_effect(&mut self) -> EffectId {
        self.effects += 1;
        EffectId {
            seq: self.seq,
            n: self.effects,
        }
    }

    /// The next outward step: its id, once checked against the journal (replaying) or
    /// noted for it (live). `content` (what the step carries, digested) is only computed
    /// for durable agents: transient ones journal nothing and never replay.
    pub(crate) fn outward<C: AsRef<[u8]>>(
        &mut self,
        kind: StepKind,
        target: &str,
        content: impl FnOnce() -> Result<C, Error>,
    ) -> Result<EffectId, Error> {
        let effect = self.next_effect();
        if self.core.durable {
            let content = content()?;
            let step = step(kind, target, content.as_ref());
            self.core
                .check_step(self.seq, effect.n, self.replaying, step)?;
        }
        Ok(effect)
    }

    fn origin(&self, effect: EffectId) -> Origin {
        if self.core.durable {
            Origin::Agent {
                from: self.core.id.clone(),
                effect,
            }
        } else {
            Origin::External
        }
    }

    /// Sends `msg` to `to`; returns once it is journaled (durable targets).
    ///
    /// # Errors
    /// As [`AgentRef::send`].
    pub async fn send<B: Agent>(&mut self, to: &AgentRef<B>, msg: B::Msg) -> Result<(), Error> {
        let mut msg = Typed::new(msg);
        let effect = self.outward(StepKind::Send, to.id().as_str(), || msg.encoded())?;
        if self.replaying {
            return Ok(());
        }
        let origin = self.origin(effect);
        let core = &mut *self.core;
        let last = Some(&mut core.last_target);
        delivery::deliver_from(&core.kernel, last, to.id(), msg, origin, None).await
    }

    /// Asks `to` and waits up to `timeout` for the reply. The outcome (reply or error) is
    /// journaled, so a replay gets the same answer without asking again.
    ///
    /// # Errors
    /// As [`AgentRef::ask`].
    pub async fn ask<B: Agent>(
        &mut self,
        to: &AgentRef<B>,
        msg: B::Msg,
        timeout: Duration,
    ) -> Result<B::Reply, Error> {
        let mut msg = Typed::new(msg);
        let effect = self.outward(StepKind::Ask, to.id().as_str(), || msg.encoded())?;
        if let Some(recorded) = self.recorded_reply(effect, to.id()) {
            return recorded;
        }
        let kernel = self.core.kernel.clone();
        let (reply, answer) = oneshot::channel();
        let origin = self.origin(effect);
        let outcome = async {
            delivery::deliver(&kernel, to.id(), msg, origin, Some(reply)).await?;
            let reply = await_reply(to.id(), answer, timeout).await?;
            delivery::reply_as::<B::Reply>(reply, B::KIND)
        }
        .await;
        self.record_reply(effect, outcome.as_ref()).await?;
        outcome
    }

    /// Asks agent `to`, whatever its kind, with a JSON message and waits up to `timeout`
    /// for its reply as JSON (as [`Runtime::ask_json`](crate::Runtime::ask_json) does from
    /// outside). Journaled as [`Context::ask`] is: the outcome (reply or error) is
    /// recorded, so a replay gets the same answer without asking again, and a re-run after
    /// a crash re-delivers with the same effect id (the receiver drops a duplicate).
    ///
    /// # Errors
    /// [`Error::UnknownAgent`], [`Error::BadJson`] (a message that does not fit the
    /// agent's kind), [`Error::Timeout`], [`Error::Handler`], as recorded.
    pub async fn ask_json(
        &mut self,
        to: &AgentId,
        msg: serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, Error> {
        let text = msg.to_string();
        let effect = self.outward(StepKind::Ask, to.as_str(), || Ok(&text))?;
        if let Some(recorded) = self.recorded_reply::<String>(effect, to) {
            return recorded.and_then(|text| {
                serde_json::from_str(&text).map_err(|e| {
                    Error::Internal(format!("a recorded JSON reply does not parse: {e}"))
                })
            });
        }
        let kernel = self.core.kernel.clone();
        let origin = self.origin(effect);
        let outcome = async {
            let kind = kernel.kind_of(to)?;
            let (reply, answer) = oneshot::channel();
            let msg = Json { kind, value: msg };
            delivery::deliver(&kernel, to, msg, origin, Some(reply)).await?;
            let reply = await_reply(to, answer, timeout).await?;
            kind.reply_to_json(reply)
        }
        .await;
        self.record_reply(effect, outcome.as_ref().map(ToString::to_string))
            .await?;
        outcome
    }

    /// The reply recorded for `effect` (an ask or a query to `to`), if this handling is a
    /// re-run of one that got it.
    fn recorded_reply<T: serde::de::DeserializeOwned>(
        &mut self,
        effect: EffectId,
        to: &AgentId,
    ) -> Option<Result<T, Error>> {
        let recorded = self.core.recorded.as_deref_mut()?.replies.remove(&effect)?;
        Some(match recorded {
            Outcome::Value(body) => record::decode(self.core.id.stream(), effect.seq, &body),
            Outcome::Failed(reason) => Err(Error::Handler {
                id: to.clone(),
                reason,
            }),
            Outcome::InDoubt => Err(Error::Internal(format!(
                "the journal records step {effect:?} as a side effect in doubt, not a reply"
            ))),
        })
    }

    /// Records the outcome of an ask or a query (durable agents), so a re-run gets it.
    async fn record_reply<T: serde::Serialize>(
        &mut self,
        effect: EffectId,
        outcome: Result<T, &Error>,
    ) -> Result<(), Error> {
        if !self.core.durable {
            return Ok(());
        }
        let outcome = match outcome {
            Ok(reply) => Outcome::Value(record::encode("a reply", &reply)?),
            Err(error) => Outcome::Failed(error.to_string()),
        };
        let payload = record::encode("a reply record", &ReplyRecord { effect, outcome })?;
        self.core.append_own(RecordKind::Reply, payload).await
    }

    /// Queries agent `to` ([`Queries`]): its answer from its current state, within
    /// `timeout`. The queried agent writes nothing; this agent, if durable, records the
    /// answer (as it records an ask's reply), so that a replay of this handler gets the
    /// same answer without asking again.
    ///
    /// Querying this agent itself waits for the handler that is running: it times out.
    ///
    /// # Errors
    /// As [`AgentRef::query`]; a failure is recorded and replayed too.
    pub async fn query<B: Queries>(
        &mut self,
        to: &AgentRef<B>,
        query: B::Query,
        timeout: Duration,
    ) -> Result<B::Answer, Error> {
        let effect = self.outward(StepKind::Query, to.id().as_str(), || {
            record::encode("a query", &query)
        })?;
        if let Some(recorded) = self.recorded_reply(effect, to.id()) {
            return recorded;
        }
        let outcome = to.query(query, timeout).await;
        self.record_reply(effect, outcome.as_ref()).await?;
        outcome
    }

    /// Spawns a child of kind `B` supervised by this agent (per this agent's
    /// [`SupervisorSpec`](crate::SupervisorSpec)). Spawning an id that is already this
    /// agent's child of kind `B` returns it (so a re-run handler does not fail). An id
    /// stopped before is spawned as a new incarnation (see
    /// [`Runtime::spawn`](crate::Runtime::spawn)).
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if the id belongs to another agent; as
    /// [`Runtime::spawn`](crate::Runtime::spawn).
    pub async fn spawn<B: Agent>(
        &mut self,
        spec: SpawnSpec,
        args: B::Args,
    ) -> Result<AgentRef<B>, Error> {
        let id = spec.id.clone();
        let args = record::encode("arguments", &args)?;
        self.outward(StepKind::Spawn, id.as_str(), || {
            let mut content = B::KIND.as_bytes().to_vec();
            content.extend_from_slice(&args);
            Ok(content)
        })?;
        let kernel = self.core.kernel.clone();
        let existing = kernel
            .tree()
            .get(&id)
            .map(|n| n.parent.as_ref() == Some(&self.core.id) && *n.kind == *B::KIND);
        match existing {
            Some(true) => return Ok(AgentRef::new(id, kernel)),
            // Replaying, the spawn was done when the message was first handled: since
            // then the child may have stopped, and its id may even name a later
            // incarnation elsewhere in the tree (another parent or kind).
            _ if self.replaying => return Ok(AgentRef::new(id, kernel)),
            Some(false) => return Err(Error::AlreadyExists(id)),
            None => {}
        }
        kernel
            .record_spawn(Some(&self.core.id), B::KIND, args, spec)
            .await?;
        self.core.children.start(&id).await?;
        Ok(AgentRef::new(id, kernel))
    }

    /// Stops child `id` and its subtree, children first; journaled.
    ///
    /// # Errors
    /// [`Error::UnknownAgent`] if `id` is not this agent's child; [`Error::Journal`].
    pub async fn stop_child(&mut self, id: &AgentId) -> Result<(), Error> {
        self.outward(StepKind::StopChild, id.as_str(), || Ok([]))?;
        if self.replaying {
            return Ok(());
        }
        let is_child = self
            .core
            .kernel
            .tree()
            .get(id)
            .is_some_and(|n| n.parent.as_ref() == Some(&self.core.id));
        if !is_child {
            return Err(Error::UnknownAgent(id.clone()));
        }
        self.core.kernel.record_stop(id).await?;
        self.core.children.stop(id).await;
        Ok(())
    }

    /// Publishes `msg` to `topic`'s subscribers.
    ///
    /// # Errors
    /// [`Error::Encode`], [`Error::Journal`].
    pub async fn publish<M: Serialize>(&mut self, topic: &Topic<M>, msg: &M) -> Result<(), Error> {
        let body = record::encode("a topic message", msg)?;
        let effect = self.outward(StepKind::Publish, topic.name(), || Ok(&body))?;
        if self.replaying {
            return Ok(());
        }
        let origin = self.origin(effect);
        delivery::publish(&self.core.kernel, topic.name(), origin, &body).await?;
        Ok(())
    }

    /// Delivers `msg` to this agent after `delay`. Durable agents journal the timer: it
    /// fires after a restart too (at once if it came due meanwhile), exactly once.
    ///
    /// # Errors
    /// [`Error::Encode`], [`Error::Journal`].
    pub async fn schedule(&mut self, delay: Duration, msg: A::Msg) -> Result<TimerId, Error> {
        let body = record::encode("a timer message", &msg)?;
        let me = self.core.id.clone();
        let id = self.outward(StepKind::Schedule, me.as_str(), || Ok(&body))?;
        if let Some(recorded) =
            (self.core.recorded.as_deref()).and_then(|r| r.timers.get(&id).cloned())
        {
            self.core.pending_timer(recorded, !self.replaying);
            return Ok(id);
        }
        let due = if self.replaying {
            self.now().as_micros()
        } else {
            Timestamp::now().as_micros()
        }
        .saturating_add(u64::try_from(delay.as_micros()).unwrap_or(u64::MAX));
        let timer = TimerRecord {
            id,
            due_micros: due,
            body,
        };
        if self.core.durable && !self.replaying {
            let payload = record::encode("a timer record", &timer)?;
            self.core.append_own(RecordKind::Timer, payload).await?;
        }
        self.core.pending_timer(timer, !self.replaying);
        Ok(id)
    }
}

/// What `on_start` can do: learn its id and subscribe to topics.
pub struct StartContext<'a, A: Agent> {
    pub(crate) core: &'a mut Core<A>,
}

impl<A: Agent> StartContext<'_, A> {
    /// The agent's id.
    pub fn id(&self) -> &AgentId {
        &self.core.id
    }

    /// Subscribes to `topic`: its messages arrive converted into this agent's `Msg`.
    pub fn subscribe<M>(&mut self, topic: &Topic<M>)
    where
        M: DeserializeOwned + 'static,
        A::Msg: From<M>,
    {
        self.core.subscribe(topic.name(), decode_into::<M, A::Msg>);
    }
}

/// Decodes a topic message and converts it into the subscriber's message type.
fn decode_into<M: DeserializeOwned, T: From<M>>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes::<M>(bytes).map(T::from)
}

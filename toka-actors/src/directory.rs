//! Who runs where: the one owner of the table of running agents, of the reply ports of
//! asks waiting for durable agents, and of topic subscriptions.
//!
//! Everything else reaches these tables through the methods here, so the rules that keep
//! them consistent are in one place:
//! - an agent's actor enters the table when it starts ([`Directory::started`]) and leaves
//!   it when it stops, only if the entry is still its own ([`Directory::stopped`]): a
//!   restarted agent's new actor may already have replaced it;
//! - the writer forwards journaled messages only to durable agents that have registered
//!   for recovery ([`Directory::route_journaled`]), so a message is in the stream part an
//!   agent recovers from, or in its mailbox, never neither; both only for a message
//!   written before the agent registered and handed over after (the hand-over waits for
//!   the flush), which the actor skips as at or below what it recovered;
//! - an ask's reply port waits here, keyed by agent and message sequence number, so it
//!   survives the agent's restarts; removing agents from the tree removes their ports
//!   ([`Directory::forget`]), which answers those asks with "no reply".

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use ractor::{ActorId, ActorRef, ActorStatus, MessagingErr};

use crate::AgentId;
use crate::envelope::{Envelope, ReplyPort};
use crate::id::IdHasher;
use crate::inbox::Inbox;

/// A running agent's actor.
struct Live {
    actor: ActorRef<Envelope>,
    durable: bool,
    /// Whether the writer forwards journaled messages to it (durable agents, once they
    /// registered for recovery).
    routed: bool,
    /// A transient agent's inbox, made when it is first sent a message.
    inbox: OnceLock<Arc<Inbox<Envelope>>>,
}

/// What runs for an agent here, as [`Directory::send_local_with`] found it.
pub(crate) enum Running<R> {
    /// A transient agent's actor, which the send was run on (its result).
    Transient(R),
    /// A durable agent's actor: its messages go through the journal.
    Durable,
    /// No actor.
    No,
}

impl Live {
    fn new(actor: ActorRef<Envelope>, durable: bool, routed: bool) -> Self {
        Live {
            actor,
            durable,
            routed,
            inbox: OnceLock::new(),
        }
    }
}

/// The tables of running agents, pending asks and topic subscribers.
#[derive(Default)]
pub(crate) struct Directory {
    live: DashMap<AgentId, Live, IdHasher>,
    asks: DashMap<(AgentId, u64), ReplyPort, IdHasher>,
    topics: DashMap<String, Vec<AgentId>>,
    /// Agents halted for non-determinism, and why.
    halted: DashMap<AgentId, String, IdHasher>,
    /// Whether any agent ever halted: until one does, a start has no entry to clear (and
    /// skips the table's write lock).
    any_halted: AtomicBool,
    /// How often each agent was restarted by its supervisor since the runtime started.
    restarts: DashMap<AgentId, u64, IdHasher>,
}

impl Directory {
    /// Records `actor` as `id`'s running actor (not yet routed journaled messages).
    pub(crate) fn started(&self, id: AgentId, actor: ActorRef<Envelope>, durable: bool) {
        if self.any_halted.load(Ordering::Acquire) {
            self.halted.remove(&id);
        }
        self.live.insert(id, Live::new(actor, durable, false));
    }

    /// Routes journaled messages for durable agent `id` to `actor` from now on. Called by
    /// the writer, between two appends, when the agent registers for recovery.
    pub(crate) fn route_journaled(&self, id: AgentId, actor: ActorRef<Envelope>) {
        self.live.insert(id, Live::new(actor, true, true));
    }

    /// Notes that `id` halted (it is not running), and why.
    pub(crate) fn halted(&self, id: &AgentId, reason: String) {
        self.any_halted.store(true, Ordering::Release);
        self.halted.insert(id.clone(), reason);
    }

    /// Why `id` halted, if it did (and has not started again since).
    pub(crate) fn halt_reason(&self, id: &AgentId) -> Option<String> {
        self.halted.get(id).map(|r| r.value().clone())
    }

    /// Counts a restart of `id` by its supervisor.
    pub(crate) fn restarted(&self, id: &AgentId) {
        *self.restarts.entry(id.clone()).or_default() += 1;
    }

    /// How often `id` was restarted since the runtime started (a stop forgets it).
    pub(crate) fn restarts(&self, id: &AgentId) -> u64 {
        self.restarts.get(id).map_or(0, |n| *n.value())
    }

    /// Removes `id`'s entry if it is still actor `actor`'s.
    pub(crate) fn stopped(&self, id: &AgentId, actor: ActorId) {
        self.live
            .remove_if(id, |_, live| live.actor.get_id() == actor);
    }

    /// Removes `id`'s entry if its actor has stopped (one that failed to start after
    /// entering the table).
    pub(crate) fn stopped_dead(&self, id: &AgentId) {
        self.live.remove_if(id, |_, live| {
            live.actor.get_status() >= ActorStatus::Stopping
        });
    }

    /// Whether an actor runs for `id`.
    pub(crate) fn is_running(&self, id: &AgentId) -> bool {
        self.live.contains_key(id)
    }

    /// How many agents run.
    pub(crate) fn running(&self) -> usize {
        self.live.len()
    }

    /// `id`'s running actor, if any.
    pub(crate) fn actor(&self, id: &AgentId) -> Option<ActorRef<Envelope>> {
        self.live.get(id).map(|live| live.actor.clone())
    }

    /// Every running actor.
    pub(crate) fn actors(&self) -> Vec<ActorRef<Envelope>> {
        self.live.iter().map(|live| live.actor.clone()).collect()
    }

    /// Runs `send` on running transient agent `id`'s actor and inbox under the table's
    /// read lock (the hot path of local sends: no reference counting); otherwise says
    /// whether `id` runs here as a durable agent.
    pub(crate) fn send_local_with<R>(
        &self,
        id: &AgentId,
        send: impl FnOnce(&ActorRef<Envelope>, &Arc<Inbox<Envelope>>) -> R,
    ) -> Running<R> {
        match self.live.get(id) {
            Some(live) if !live.durable => {
                Running::Transient(send(&live.actor, live.inbox.get_or_init(Default::default)))
            }
            Some(_) => Running::Durable,
            None => Running::No,
        }
    }

    /// Running transient agent `id`'s inbox, if it was ever sent a message.
    pub(crate) fn inbox(&self, id: &AgentId) -> Option<Arc<Inbox<Envelope>>> {
        self.live.get(id).and_then(|live| live.inbox.get().cloned())
    }

    /// Sends `envelope` to `id`'s actor. Gives it back (`Err(Some(..))`) if `id` runs no
    /// actor or its mailbox is closed (it is restarting); `Err(None)` if the actor refused
    /// it for good.
    pub(crate) fn send(&self, id: &AgentId, envelope: Envelope) -> Result<(), Option<Envelope>> {
        match self.live.get(id) {
            Some(live) => live.actor.send_message(envelope).map_err(|e| match e {
                MessagingErr::SendErr(returned) => Some(returned),
                _ => None,
            }),
            None => Err(Some(envelope)),
        }
    }

    /// Hands a journaled message to `id`'s actor if it registered for them (see the
    /// module docs); `false` if not (the agent recovers it from the journal).
    pub(crate) fn deliver_journaled(&self, id: &AgentId, envelope: Envelope) -> bool {
        self.live
            .get(id)
            .filter(|live| live.routed)
            .is_some_and(|live| live.actor.send_message(envelope).is_ok())
    }

    /// Keeps the reply port of an ask of message `seq` to durable agent `id`.
    pub(crate) fn park_ask(&self, id: &AgentId, seq: u64, port: ReplyPort) {
        self.asks.insert((id.clone(), seq), port);
    }

    /// Takes the reply port of the ask of message `seq` to `id`, if one waits.
    pub(crate) fn take_ask(&self, id: &AgentId, seq: u64) -> Option<ReplyPort> {
        self.asks.remove(&(id.clone(), seq)).map(|(_, port)| port)
    }

    /// Subscribes `id` to `topic`.
    pub(crate) fn subscribe(&self, topic: &str, id: &AgentId) {
        let mut subscribers = self.topics.entry(topic.to_owned()).or_default();
        if !subscribers.contains(id) {
            subscribers.push(id.clone());
        }
    }

    /// `topic`'s subscribers.
    pub(crate) fn subscribers(&self, topic: &str) -> Vec<AgentId> {
        self.topics
            .get(topic)
            .map(|s| s.value().clone())
            .unwrap_or_default()
    }

    /// Forgets agents removed from the tree: their subscriptions and pending asks.
    pub(crate) fn forget(&self, ids: &[AgentId]) {
        for mut subscribers in self.topics.iter_mut() {
            subscribers.retain(|s| !ids.contains(s));
        }
        self.asks.retain(|(agent, _), _| !ids.contains(agent));
        self.halted.retain(|agent, _| !ids.contains(agent));
        self.restarts.retain(|agent, _| !ids.contains(agent));
    }
}

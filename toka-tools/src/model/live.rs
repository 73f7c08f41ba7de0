//! Live turns: what a model generates for an agent, as it generates it, for whoever is
//! watching that agent.
//!
//! [`ModelHost::subscribe`](super::ModelHost::subscribe) returns a [`TurnSubscription`]
//! to one agent's [`TurnEvent`]s. While an agent has at least one subscriber, the host
//! asks the agent's models with [`ModelClient::stream`](super::ModelClient::stream)
//! instead of [`complete`](super::ModelClient::complete) and forwards what the model
//! generates (text deltas, tool calls and their argument fragments, the end of each
//! model call) to the subscribers. The call still returns the complete
//! [`ModelResponse`], and that is all the journal records: deltas
//! are never journaled, so a replay (or a client that reconnects after a crash) gets the
//! recorded answer, never a second generation.
//!
//! # Only live calls
//! A subscriber sees the events of model calls made while it is subscribed: a model call
//! whose recorded answer is replayed generates nothing, and a call that began while the
//! agent had no subscriber was asked without streaming (a subscriber that arrives during
//! it sees nothing of it). Events are those of the agent, not of one message: a
//! subscriber that joins while the agent is busy with an earlier turn sees the rest of
//! that turn first.
//!
//! # Lagging
//! Each agent's events go through a [`tokio::sync::broadcast`] channel of
//! [`LIVE_CAPACITY`] events. Publishing never waits: a subscriber that falls further
//! behind loses the oldest events and learns how many on its next
//! [`recv`](TurnSubscription::recv) ([`Lagged`]). A slow or stuck subscriber can never
//! hold up, nor fail, a model call.
//!
//! # Cost
//! While nobody is subscribed to any agent, a model call pays one atomic load to learn it
//! (5–13 ns a check, measured in a release build on a loaded 2-core machine); while
//! someone watches some agent, a lookup in a concurrent map (45–87 ns there), against
//! the milliseconds to seconds of the call itself.
//! The channel of an agent exists only while someone is subscribed to it (the last
//! subscription dropped removes it).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::{FinishReason, ModelResponse, StreamEvent, Usage};

/// Events one agent's channel holds for a subscriber that has not read them yet; beyond
/// that the subscriber lags ([`Lagged`]).
pub const LIVE_CAPACITY: usize = 1024;

/// Something a model generated for an agent, live.
///
/// Serializes as an object tagged by `type` (`{"type": "delta", "text": "Hel"}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TurnEvent {
    /// More of the answer's text.
    Delta {
        /// The next piece of text.
        text: String,
    },
    /// The model began tool call `index` of its answer.
    ToolCall {
        /// Its place among the answer's calls.
        index: usize,
        /// The provider's id of the call.
        id: String,
        /// The tool's Toka name (e.g. `fs.read`).
        name: String,
    },
    /// More of tool call `index`'s arguments (JSON text, in fragments).
    ToolCallArguments {
        /// Its place among the answer's calls.
        index: usize,
        /// The next fragment.
        fragment: String,
    },
    /// One model call ended (a turn may make several: one per step).
    StepDone {
        /// Why the model stopped: `"stop"`, `"tool_calls"`, `"length"` or the provider's
        /// own word.
        finish: String,
        /// Tokens the call used.
        usage: Usage,
    },
    /// The turn stopped to wait for human decisions on some of its tool calls (see
    /// [`crate::approval`]); it goes on by itself when they come.
    AwaitingApproval {
        /// The approvals it waits for.
        approvals: Vec<String>,
    },
}

impl TurnEvent {
    /// The event's name: its `type` tag (`delta`, `tool_call`, `tool_call_arguments`,
    /// `step_done`, `awaiting_approval`).
    pub fn name(&self) -> &'static str {
        match self {
            TurnEvent::Delta { .. } => "delta",
            TurnEvent::ToolCall { .. } => "tool_call",
            TurnEvent::ToolCallArguments { .. } => "tool_call_arguments",
            TurnEvent::StepDone { .. } => "step_done",
            TurnEvent::AwaitingApproval { .. } => "awaiting_approval",
        }
    }

    /// The live event of a model client's stream event.
    pub(crate) fn of(event: StreamEvent) -> TurnEvent {
        match event {
            StreamEvent::Text(text) => TurnEvent::Delta { text },
            StreamEvent::ToolCallStarted { index, id, name } => {
                TurnEvent::ToolCall { index, id, name }
            }
            StreamEvent::ToolCallArguments { index, fragment } => {
                TurnEvent::ToolCallArguments { index, fragment }
            }
            StreamEvent::Done(done) => TurnEvent::step_done(&done),
        }
    }

    /// The end of a model call that answered `done`.
    pub(crate) fn step_done(done: &ModelResponse) -> TurnEvent {
        TurnEvent::StepDone {
            finish: match &done.finish {
                FinishReason::Stop => "stop".to_owned(),
                FinishReason::ToolCalls => "tool_calls".to_owned(),
                FinishReason::Length => "length".to_owned(),
                FinishReason::Other(other) => other.clone(),
            },
            usage: done.usage,
        }
    }
}

/// A subscriber fell behind and lost this many events (the oldest ones); the next
/// [`TurnSubscription::recv`] goes on with the oldest event still held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lagged(pub u64);

impl std::fmt::Display for Lagged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the subscriber fell behind and lost {} events", self.0)
    }
}

impl std::error::Error for Lagged {}

/// The per-agent channels of live events (see the [module docs](self)).
#[derive(Debug, Default)]
pub(crate) struct LiveTurns {
    channels: DashMap<String, broadcast::Sender<TurnEvent>>,
    /// Live subscriptions, to any agent: while there are none, [`LiveTurns::watched`] is
    /// one load instead of a lookup in the map.
    subscriptions: AtomicUsize,
}

impl LiveTurns {
    /// Subscribes to `agent`'s events.
    pub(crate) fn subscribe(self: &Arc<Self>, agent: &str) -> TurnSubscription {
        // The entry is locked while the receiver is made, so a subscription dropped at
        // the same time cannot remove the channel under it.
        self.subscriptions.fetch_add(1, Ordering::Relaxed);
        let receiver = self
            .channels
            .entry(agent.to_owned())
            .or_insert_with(|| broadcast::channel(LIVE_CAPACITY).0)
            .subscribe();
        TurnSubscription {
            agent: agent.to_owned(),
            hub: Arc::clone(self),
            receiver: Some(receiver),
        }
    }

    /// Whether `agent` has a subscriber now.
    pub(crate) fn watched(&self, agent: &str) -> bool {
        // A subscription made before the call (an ask sent after subscribing) is seen:
        // the message's hand-over to the agent orders the two.
        self.subscriptions.load(Ordering::Relaxed) > 0
            && self
                .channels
                .get(agent)
                .is_some_and(|sender| sender.receiver_count() > 0)
    }

    /// Sends `event` to `agent`'s subscribers of the moment (none is fine); never waits.
    pub(crate) fn publish(&self, agent: &str, event: TurnEvent) {
        if let Some(sender) = self.channels.get(agent) {
            // An error only means that nobody is subscribed any more.
            let _ = sender.send(event);
        }
    }

    /// How many agents have a channel (for tests of the clean-up).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.channels.len()
    }
}

/// A subscription to one agent's [`TurnEvent`]s, from
/// [`ModelHost::subscribe`](super::ModelHost::subscribe). Dropping it unsubscribes; the
/// agent's channel goes away with its last subscription.
#[derive(Debug)]
pub struct TurnSubscription {
    agent: String,
    hub: Arc<LiveTurns>,
    /// `Some` until dropped.
    receiver: Option<broadcast::Receiver<TurnEvent>>,
}

impl TurnSubscription {
    /// The agent it watches.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// The next event, waiting for it.
    ///
    /// # Errors
    /// [`Lagged`] if the subscriber fell behind: that many events were lost; the next
    /// call returns the oldest one still held.
    pub async fn recv(&mut self) -> Result<TurnEvent, Lagged> {
        let Some(receiver) = self.receiver.as_mut() else {
            return std::future::pending().await;
        };
        match receiver.recv().await {
            Ok(event) => Ok(event),
            Err(broadcast::error::RecvError::Lagged(n)) => Err(Lagged(n)),
            // The channel's sender lives in the hub as long as this receiver does, so it
            // cannot close; were it to, there would be nothing more to wait for.
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }

    /// The next event if one is waiting; `None` if none is.
    ///
    /// # Errors
    /// As [`TurnSubscription::recv`].
    pub fn try_recv(&mut self) -> Option<Result<TurnEvent, Lagged>> {
        match self.receiver.as_mut()?.try_recv() {
            Ok(event) => Some(Ok(event)),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Err(Lagged(n))),
            Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => {
                None
            }
        }
    }
}

impl Drop for TurnSubscription {
    fn drop(&mut self) {
        drop(self.receiver.take());
        // Under the entry's lock: a subscription made meanwhile keeps the channel.
        self.hub
            .channels
            .remove_if(&self.agent, |_, sender| sender.receiver_count() == 0);
        self.hub.subscriptions.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_get_events_and_the_last_one_gone_removes_the_channel() {
        let hub = Arc::new(LiveTurns::default());
        assert!(!hub.watched("a"));
        hub.publish(
            "a",
            TurnEvent::Delta {
                text: "lost".into(),
            },
        );
        let mut first = hub.subscribe("a");
        let mut second = hub.subscribe("a");
        assert!(hub.watched("a"));
        assert!(!hub.watched("b"));
        hub.publish("a", TurnEvent::Delta { text: "hi".into() });
        hub.publish(
            "b",
            TurnEvent::Delta {
                text: "other".into(),
            },
        );
        for sub in [&mut first, &mut second] {
            assert_eq!(sub.recv().await, Ok(TurnEvent::Delta { text: "hi".into() }));
            assert_eq!(sub.try_recv(), None);
        }
        drop(first);
        assert!(hub.watched("a"));
        assert_eq!(hub.len(), 1);
        drop(second);
        assert!(!hub.watched("a"));
        assert_eq!(hub.len(), 0, "the channel outlived its subscribers");
    }

    #[tokio::test]
    async fn a_lagging_subscriber_learns_how_much_it_lost_and_never_blocks_the_sender() {
        let hub = Arc::new(LiveTurns::default());
        let mut slow = hub.subscribe("a");
        let extra = 10;
        for i in 0..LIVE_CAPACITY + extra {
            hub.publish(
                "a",
                TurnEvent::Delta {
                    text: i.to_string(),
                },
            );
        }
        assert_eq!(slow.recv().await, Err(Lagged(extra as u64)));
        assert_eq!(
            slow.recv().await,
            Ok(TurnEvent::Delta {
                text: extra.to_string()
            })
        );
    }

    #[test]
    fn events_serialize_tagged_by_their_name() {
        let events = [
            TurnEvent::Delta { text: "x".into() },
            TurnEvent::ToolCall {
                index: 0,
                id: "c".into(),
                name: "fs.read".into(),
            },
            TurnEvent::ToolCallArguments {
                index: 0,
                fragment: "{".into(),
            },
            TurnEvent::StepDone {
                finish: "stop".into(),
                usage: Usage::default(),
            },
        ];
        for event in events {
            let json = serde_json::to_value(&event).unwrap();
            assert_eq!(json["type"], event.name());
            assert_eq!(serde_json::from_value::<TurnEvent>(json).unwrap(), event);
        }
    }
}

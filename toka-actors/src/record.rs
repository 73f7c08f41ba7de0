//! What the runtime writes to the journal, and where.
//!
//! - Stream [`TREE_STREAM`]: one [`TreeRecord`] per spawn and per stop. Replaying it gives
//!   the supervision tree (ids, parents, kinds, arguments, specs).
//! - Stream [`PROGRESS_STREAM`]: [`ProgressRecord`]s, each naming agents and the highest
//!   message sequence each has handled since the previous record (group-committed).
//! - Stream `agent/<id>` ([`AgentId::stream`]): the agent's inbox ([`MSG`] records) and
//!   its own bookkeeping: timers scheduled, replies it got to asks, effect intents and
//!   outcomes, failed attempts, dead letters. Only `MSG` records are handled; their
//!   stream sequence number is the message's `seq`.
//!
//! # Incarnations: one stream for every agent that ever had the id
//! An id can be stopped and spawned again (same or another kind, arguments, parent). Like
//! a new Erlang process registered under an old name, the new agent is a new
//! *incarnation*: it starts from `init`, and nothing its predecessors journaled is
//! applied, replayed, fired, counted or returned as a recorded outcome. Their records are
//! not deleted: the stream keeps them, readable for audit, and the new incarnation
//! begins after them.
//!
//! - When an id whose stream already holds records is spawned, the single writer first
//!   appends an [`INCARNATION`] marker ([`IncarnationRecord`]) to the stream (after
//!   everything written for earlier incarnations). Its sequence number is the new
//!   incarnation's *base*, journaled in the tree as [`TreeRecord::Respawned`]. An id's
//!   first incarnation (empty stream) writes no marker and a plain
//!   [`TreeRecord::Spawned`]: its base is 0.
//! - An incarnation reads only the records of its stream *after* its base: messages,
//!   timers, replies, intents, results, attempts and dead letters at or below the base
//!   belong to earlier incarnations. A snapshot at or below the base is ignored too.
//! - Sequence numbers keep growing across incarnations, so every [`EffectId`] of a new
//!   incarnation (its `seq` is a message's, or the base for effects made at start) is
//!   newer than any of its predecessors': receivers' per-sender watermarks
//!   ([`Origin::Agent`]) do not drop its messages, recorded outcomes are never looked up
//!   under an earlier incarnation's ids, and the handled counters of [`PROGRESS_STREAM`]
//!   stay monotonic.
//! - A message journaled for the id after the stop but before the marker (a send that was
//!   in flight) belongs to no incarnation and is never handled.
//!
//! Every payload is postcard-encoded. A record that does not decode is reported as
//! [`Error::Decode`] naming its stream and sequence number; it never panics.

use serde::{Deserialize, Serialize};

use crate::{AgentId, EffectId, Error, SpawnSpec, TimerId};

/// The supervision tree's stream.
pub const TREE_STREAM: &str = "toka/tree";
/// The stream of handled-message progress.
pub const PROGRESS_STREAM: &str = "toka/progress";

/// Kind of a message delivered to an agent.
pub const MSG: &str = "toka.msg";
/// Kind of a durable timer scheduled by an agent.
pub const TIMER: &str = "toka.timer";
/// Kind of a recorded reply to an ask made by an agent.
pub const REPLY: &str = "toka.reply";
/// Kind of the intent to run a side effect ([`Context::effect`](crate::Context::effect)).
pub const INTENT: &str = "toka.intent";
/// Kind of a side effect's outcome (a [`ReplyRecord`]).
pub const RESULT: &str = "toka.result";
/// Kind of a failed attempt at handling a message.
pub const ATTEMPT: &str = "toka.attempt";
/// Kind of a dead-lettered message.
pub const DEAD: &str = "toka.dead";
/// Kind of a spawn in the tree stream.
pub const SPAWN: &str = "toka.spawn";
/// Kind of a stop in the tree stream.
pub const STOP: &str = "toka.stop";
/// Kind of a progress record.
pub const PROGRESS: &str = "toka.progress";
/// Kind of the marker that begins a new incarnation of an id in the agent's stream (an
/// [`IncarnationRecord`]); see the module docs.
pub const INCARNATION: &str = "toka.incarnation";

/// Who sent a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// The embedding application, the node's API or a transient agent: no deduplication.
    External,
    /// Effect `effect` of durable agent `from`. Receivers drop a message whose effect is
    /// not newer than the last one they handled from `from` (a re-run after a crash).
    Agent {
        /// The sending agent.
        from: AgentId,
        /// The effect that sent it.
        effect: EffectId,
    },
    /// The agent's own durable timer firing.
    Timer(TimerId),
}

/// A message record: the encoded message and where it came from.
#[derive(Debug, Serialize, Deserialize)]
pub struct MsgRecord<'a> {
    /// The sender.
    pub origin: Origin,
    /// When it was sent (microseconds since the Unix epoch): what
    /// [`Context::now`](crate::Context::now) returns while handling it, live or replayed.
    pub sent_micros: u64,
    /// The topic it was published to, if any (the body is then the topic's type).
    #[serde(borrow)]
    pub topic: Option<&'a str>,
    /// The postcard-encoded message.
    #[serde(borrow, with = "serde_bytes")]
    pub body: &'a [u8],
}

/// A durable timer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TimerRecord {
    /// Its id.
    pub id: TimerId,
    /// When it is due, microseconds since the Unix epoch.
    pub due_micros: u64,
    /// The message to deliver (postcard).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// The reply an agent got to an ask, or the outcome of a side effect, so that replay
/// returns it again.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplyRecord {
    /// The ask.
    pub effect: EffectId,
    /// The postcard-encoded reply, or the error the ask ended with.
    pub body: Result<Vec<u8>, String>,
}

/// The intent to run side effect `effect`, journaled before it runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IntentRecord {
    /// The effect.
    pub effect: EffectId,
    /// What it is (e.g. a tool name), for audit.
    pub name: String,
    /// A digest of the effect's input (e.g. BLAKE3 of a tool call's input), for audit.
    pub input_digest: Option<[u8; 32]>,
}

/// A failed attempt at handling message `seq`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The message.
    pub seq: u64,
    /// What went wrong.
    pub error: String,
}

/// A message set aside after `attempts` failures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The message's sequence number in the agent's stream.
    pub seq: u64,
    /// How many attempts failed.
    pub attempts: u32,
    /// The last failure.
    pub error: String,
}

/// The marker beginning a new incarnation of an agent id in its stream ([`INCARNATION`]):
/// every record of the stream at or below its sequence number belongs to an earlier
/// incarnation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncarnationRecord {
    /// The kind of the new incarnation, for audit.
    pub kind: String,
}

/// A change to the supervision tree.
///
/// Encoded with postcard, which names variants by index: new variants only ever go at
/// the end.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum TreeRecord {
    /// An agent was spawned.
    Spawned {
        /// Its parent; `None` for a top-level agent.
        parent: Option<AgentId>,
        /// Its kind (see [`Agent::KIND`](crate::Agent::KIND)).
        kind: String,
        /// Its postcard-encoded arguments.
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
        /// How it is started and supervised (holds its id).
        spec: SpawnSpec,
    },
    /// Agents were stopped and removed from the tree (a subtree, children first).
    Stopped {
        /// The stopped agents.
        ids: Vec<AgentId>,
    },
    /// An agent was spawned with an id whose stream already held records (an earlier
    /// incarnation's): as [`TreeRecord::Spawned`], plus where the new incarnation begins.
    Respawned {
        /// Its parent; `None` for a top-level agent.
        parent: Option<AgentId>,
        /// Its kind (see [`Agent::KIND`](crate::Agent::KIND)).
        kind: String,
        /// Its postcard-encoded arguments.
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
        /// How it is started and supervised (holds its id).
        spec: SpawnSpec,
        /// The sequence number of the incarnation's [`INCARNATION`] marker in the agent's
        /// stream: the incarnation ignores every record at or below it.
        base: u64,
    },
}

/// Agents and the highest message sequence each has handled.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProgressRecord {
    /// `(agent, seq)` pairs.
    pub handled: Vec<(AgentId, u64)>,
}

/// Encodes a record.
pub(crate) fn encode<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
) -> Result<Vec<u8>, Error> {
    postcard::to_allocvec(value).map_err(|source| Error::Encode { what, source })
}

/// Decodes the record at `seq` of `stream`.
pub(crate) fn decode<'a, T: Deserialize<'a>>(
    stream: &str,
    seq: u64,
    bytes: &'a [u8],
) -> Result<T, Error> {
    postcard::from_bytes(bytes).map_err(|source| Error::Decode {
        stream: stream.to_owned(),
        seq,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_records_keep_their_encoding_and_respawns_come_last() {
        let spec = SpawnSpec::new("a").unwrap();
        let spawned = encode(
            "",
            &TreeRecord::Spawned {
                parent: None,
                kind: "k".into(),
                args: vec![7],
                spec: spec.clone(),
            },
        )
        .unwrap();
        let stopped = encode("", &TreeRecord::Stopped { ids: vec![] }).unwrap();
        let respawned = encode(
            "",
            &TreeRecord::Respawned {
                parent: None,
                kind: "k".into(),
                args: vec![7],
                spec,
                base: 9,
            },
        )
        .unwrap();
        // Variant tags 0 and 1 as journaled before respawns existed; the new one is 2,
        // with `Spawned`'s fields and the base after them.
        assert_eq!((spawned[0], &stopped[..]), (0, &[1, 0][..]));
        assert_eq!(respawned[0], 2);
        assert_eq!(respawned[1..respawned.len() - 1], spawned[1..]);
        assert_eq!(respawned.last(), Some(&9));
        assert!(matches!(
            decode::<TreeRecord>("toka/tree", 1, &respawned).unwrap(),
            TreeRecord::Respawned { base: 9, .. }
        ));
        let marker = encode("", &IncarnationRecord { kind: "k".into() }).unwrap();
        assert_eq!(
            decode::<IncarnationRecord>("agent/a", 3, &marker)
                .unwrap()
                .kind,
            "k"
        );
    }

    #[test]
    fn garbage_records_are_errors_not_panics() {
        for bytes in [&b""[..], b"\xff\xff\xff\xff\xff\xff", b"\x01\x05ab"] {
            assert!(decode::<MsgRecord<'_>>("agent/x", 3, bytes).is_err());
            assert!(decode::<TreeRecord>("toka/tree", 3, bytes).is_err());
        }
        let record = MsgRecord {
            origin: Origin::Timer(EffectId { seq: 2, n: 1 }),
            sent_micros: 7,
            topic: Some("t"),
            body: b"hi",
        };
        let bytes = encode("a message", &record).unwrap();
        let back: MsgRecord<'_> = decode("agent/x", 1, &bytes).unwrap();
        assert_eq!(
            (back.origin, back.topic, back.body),
            (record.origin, Some("t"), &b"hi"[..])
        );
    }
}

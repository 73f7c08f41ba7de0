//! What the runtime writes to the journal, and where.
//!
//! - Stream [`TREE_STREAM`]: one [`TreeRecord`] per spawn and per stop. Replaying it gives
//!   the supervision tree (ids, parents, kinds, arguments, specs).
//! - Stream [`PROGRESS_STREAM`]: [`ProgressRecord`]s, each naming agents and the highest
//!   message sequence each has handled since the previous record (group-committed).
//! - Stream `agent/<id>` ([`AgentId::stream`]): the agent's inbox ([`RecordKind::Msg`]
//!   records) and its own bookkeeping: timers scheduled, replies it got to asks, effect
//!   intents and outcomes, the outward steps of each handling, failed attempts, dead
//!   letters, a halt for non-determinism. Only messages are handled; their stream
//!   sequence number is the message's `seq`.
//!
//! # Formats
//! Every record says which *record format* wrote it, in its kind: `toka.msg@3` is a
//! message in format 3 ([`FORMAT`]). Format 1 is the first one journaled (until
//! December 2026): its kinds carry no `@` (`toka.msg`). Format 2 followed it (December
//! 2026, steps and halt records among others). Format 3 adds
//! the trace context to the message record ([`MsgRecord::trace`], see below); every
//! other record is laid out as in format 2. This build reads all three; a record in a
//! newer format is refused with [`Error::RecordFormat`], which names both formats,
//! never misread. Snapshots carry their format in a header ([`SnapshotRecord`]).
//!
//! Stored records are this module's own types, never the public API's: a field added
//! to [`SpawnSpec`] changes nothing in the journal, because spawn
//! records hold a [`StoredSpec`], converted explicitly. The encodings of format 3 (and
//! those of format 2 it still reads) are pinned by byte-for-byte tests; a change to them
//! is a new format, with a reader for the old one kept (as [`v1`] is).
//!
//! # Trace context (format 3)
//! A message record keeps the W3C trace context of its send ([`StoredTrace`]: trace id,
//! span id, flags; `None` when the runtime has no [`TracePropagator`](crate::TracePropagator)
//! or no trace was active), so the handling, live or after a crash, continues the trace
//! of the request that sent it. It is the record's last field: a format 3 message
//! without a trace costs one byte more than in format 2. Why a new format rather than the
//! journal event's `correlation_id`: that is a 16-byte id, room for the trace id but not
//! for the parent span id and flags, and using `causation_id` (an event id) for a span id
//! would make both mean something else than they say. A format 2 reader refuses format 3
//! records ([`Error::RecordFormat`]) rather than dropping their trace silently.
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
//!   appends an incarnation marker ([`RecordKind::Incarnation`], an
//!   [`IncarnationRecord`]) to the stream (after everything written for earlier
//!   incarnations). Its sequence number is the new incarnation's *base*, journaled in
//!   the tree's [`TreeRecord::Spawned`]. An id's first incarnation (empty stream) writes
//!   no marker: its base is 0.
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

use crate::{AgentId, EffectId, Error, Intensity, Restart, SpawnSpec, Strategy, TimerId};

pub mod v1;

/// The record format this build writes: the newest it reads.
pub const FORMAT: u32 = 3;

/// The supervision tree's stream.
pub const TREE_STREAM: &str = "toka/tree";
/// The stream of handled-message progress.
pub const PROGRESS_STREAM: &str = "toka/progress";

/// What a record of the runtime is. Stored in the event's kind with the record's format
/// ([`RecordKind::stored`]): `toka.msg@2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordKind {
    /// A message delivered to an agent ([`MsgRecord`]).
    Msg,
    /// A durable timer scheduled by an agent ([`TimerRecord`]).
    Timer,
    /// The reply an agent got to an ask or a query ([`ReplyRecord`]).
    Reply,
    /// The intent to run a side effect ([`IntentRecord`]).
    Intent,
    /// A side effect's outcome ([`ReplyRecord`]).
    Result,
    /// A failed attempt at handling a message ([`AttemptRecord`]).
    Attempt,
    /// A dead-lettered message ([`DeadRecord`]).
    Dead,
    /// The outward steps of one handling ([`StepsRecord`]), for replay to check.
    Steps,
    /// An agent stopped for non-determinism ([`HaltRecord`]).
    Halt,
    /// A spawn in the tree stream ([`TreeRecord::Spawned`]).
    Spawn,
    /// A stop in the tree stream ([`TreeRecord::Stopped`]).
    Stop,
    /// A progress record ([`ProgressRecord`]).
    Progress,
    /// The marker that begins a new incarnation of an id ([`IncarnationRecord`]).
    Incarnation,
}

impl RecordKind {
    /// Every kind.
    pub const ALL: [RecordKind; 13] = [
        RecordKind::Msg,
        RecordKind::Timer,
        RecordKind::Reply,
        RecordKind::Intent,
        RecordKind::Result,
        RecordKind::Attempt,
        RecordKind::Dead,
        RecordKind::Steps,
        RecordKind::Halt,
        RecordKind::Spawn,
        RecordKind::Stop,
        RecordKind::Progress,
        RecordKind::Incarnation,
    ];

    /// Its name, without format (`toka.msg`): format 1 stored kinds as this.
    pub fn name(self) -> &'static str {
        self.names().0
    }

    /// Its kind as this build stores it, with [`FORMAT`]: `toka.msg@2`.
    pub fn stored(self) -> &'static str {
        self.names().1
    }

    /// A new journal event of this kind (stored as [`RecordKind::stored`], borrowed, not
    /// copied) holding `payload`.
    pub(crate) fn event(self, payload: Vec<u8>) -> toka_store::NewEvent {
        toka_store::NewEvent::new_static(self.stored(), payload)
    }

    fn names(self) -> (&'static str, &'static str) {
        match self {
            RecordKind::Msg => ("toka.msg", "toka.msg@3"),
            RecordKind::Timer => ("toka.timer", "toka.timer@3"),
            RecordKind::Reply => ("toka.reply", "toka.reply@3"),
            RecordKind::Intent => ("toka.intent", "toka.intent@3"),
            RecordKind::Result => ("toka.result", "toka.result@3"),
            RecordKind::Attempt => ("toka.attempt", "toka.attempt@3"),
            RecordKind::Dead => ("toka.dead", "toka.dead@3"),
            RecordKind::Steps => ("toka.steps", "toka.steps@3"),
            RecordKind::Halt => ("toka.halt", "toka.halt@3"),
            RecordKind::Spawn => ("toka.spawn", "toka.spawn@3"),
            RecordKind::Stop => ("toka.stop", "toka.stop@3"),
            RecordKind::Progress => ("toka.progress", "toka.progress@3"),
            RecordKind::Incarnation => ("toka.incarnation", "toka.incarnation@3"),
        }
    }

    /// Reads a stored kind: the record kind and its format. `Ok(None)` for a kind that is
    /// not the runtime's (another writer's records).
    ///
    /// # Errors
    /// [`Error::RecordFormat`] for a runtime record in a format newer than [`FORMAT`]
    /// (`stream` and `seq` name the record in the error).
    pub fn parse(stored: &str, stream: &str, seq: u64) -> Result<Option<(RecordKind, u32)>, Error> {
        // What this build writes, looked up whole (recovery parses every record).
        if let Some(kind) = RecordKind::ALL.into_iter().find(|k| k.stored() == stored) {
            return Ok(Some((kind, FORMAT)));
        }
        let (name, format) = match stored.split_once('@') {
            None => (stored, 1),
            Some((name, format)) => match format.parse::<u32>() {
                Ok(format) if format >= 2 => (name, format),
                // `@` followed by anything else is not a kind the runtime writes.
                _ => return Ok(None),
            },
        };
        let kind = RecordKind::ALL.into_iter().find(|k| k.name() == name);
        let newer = format > FORMAT;
        match kind {
            // Format 1 had no steps or halt records: such a kind without a format is
            // someone else's.
            Some(RecordKind::Steps | RecordKind::Halt) if format == 1 => Ok(None),
            Some(_) | None if newer && name.starts_with("toka.") => Err(Error::RecordFormat {
                stream: stream.to_owned(),
                seq,
                kind: stored.to_owned(),
                found: format,
                supported: FORMAT,
            }),
            Some(kind) => Ok(Some((kind, format))),
            None => Ok(None),
        }
    }
}

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

/// A message record: the encoded message, where it came from, and (format 3 on) the
/// trace it continues. Formats 1 and 2 had no `trace` ([`decode_msg`] reads them).
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
    /// The trace context of the send (format 3 on; `None` in older records).
    pub trace: Option<StoredTrace>,
}

/// A message record as formats 1 and 2 stored it: no trace context.
#[derive(Debug, Serialize, Deserialize)]
struct MsgRecordV2<'a> {
    origin: Origin,
    sent_micros: u64,
    #[serde(borrow)]
    topic: Option<&'a str>,
    #[serde(borrow, with = "serde_bytes")]
    body: &'a [u8],
}

/// A W3C trace context as a message record stores it: 16 + 8 + 1 bytes, as in a
/// `traceparent` header (see [`TraceContext`](crate::TraceContext)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTrace {
    /// The trace id.
    pub trace_id: [u8; 16],
    /// The id of the span that sent the message (the parent of its handling).
    pub span_id: [u8; 8],
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

impl From<crate::TraceContext> for StoredTrace {
    fn from(t: crate::TraceContext) -> Self {
        StoredTrace {
            trace_id: t.trace_id,
            span_id: t.span_id,
            flags: t.flags,
        }
    }
}

impl From<StoredTrace> for crate::TraceContext {
    fn from(t: StoredTrace) -> Self {
        crate::TraceContext {
            trace_id: t.trace_id,
            span_id: t.span_id,
            flags: t.flags,
        }
    }
}

/// Decodes message record `seq` of `stream`, written in `format` (formats 1 and 2 have
/// no trace context).
///
/// # Errors
/// [`Error::Decode`].
pub fn decode_msg<'a>(
    format: u32,
    stream: &str,
    seq: u64,
    bytes: &'a [u8],
) -> Result<MsgRecord<'a>, Error> {
    if format <= 2 {
        let old: MsgRecordV2<'a> = decode(stream, seq, bytes)?;
        Ok(MsgRecord {
            origin: old.origin,
            sent_micros: old.sent_micros,
            topic: old.topic,
            body: old.body,
            trace: None,
        })
    } else {
        decode(stream, seq, bytes)
    }
}

/// A durable timer. The same in formats 1 to 3.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerRecord {
    /// Its id.
    pub id: TimerId,
    /// When it is due, microseconds since the Unix epoch.
    pub due_micros: u64,
    /// The message to deliver (postcard).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// How an ask, a query or a side effect ended, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// It succeeded: the postcard-encoded reply or value.
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// It failed with this error.
    Failed(String),
    /// A side effect found in doubt after a crash and not run again
    /// ([`OnDoubt::Fail`](crate::OnDoubt::Fail)).
    InDoubt,
}

/// The reply an agent got to an ask or a query, or the outcome of a side effect, so that
/// replay returns it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyRecord {
    /// The step.
    pub effect: EffectId,
    /// How it ended.
    pub outcome: Outcome,
}

/// The intent to run side effect `effect`, journaled before it runs. The same in formats 1
/// and 2.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentRecord {
    /// The effect.
    pub effect: EffectId,
    /// What it is (e.g. a tool name), for audit.
    pub name: String,
    /// A digest of the effect's input (e.g. BLAKE3 of a tool call's input), for audit.
    pub input_digest: Option<[u8; 32]>,
}

/// A failed attempt at handling message `seq`. The same in formats 1 to 3.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The message.
    pub seq: u64,
    /// What went wrong.
    pub error: String,
}

/// A message set aside after `attempts` failures (read as a
/// [`DeadLetter`]). The same in formats 1 to 3.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadRecord {
    /// The message's sequence number in the agent's stream.
    pub seq: u64,
    /// How many attempts failed.
    pub attempts: u32,
    /// The last failure.
    pub error: String,
}

/// A message set aside after it kept failing, as
/// [`Runtime::dead_letters`](crate::Runtime::dead_letters) lists it (the public view of a
/// [`DeadRecord`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The message's sequence number in the agent's stream.
    pub seq: u64,
    /// How many attempts failed.
    pub attempts: u32,
    /// The last failure.
    pub error: String,
}

/// What one outward step of a handling was, to compare a replay against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepKind {
    /// A message sent to an agent.
    Send,
    /// An ask to an agent.
    Ask,
    /// A query to an agent.
    Query,
    /// A child spawned.
    Spawn,
    /// A child stopped.
    StopChild,
    /// A message published to a topic.
    Publish,
    /// A durable timer scheduled.
    Schedule,
    /// A side effect.
    Effect,
}

/// One outward step: what, to whom, and a digest of what was sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// What it was.
    pub kind: StepKind,
    /// The agent, topic, child or effect name it concerned.
    pub target: String,
    /// The first 8 bytes of the BLAKE3 hash of what it carried (the encoded message,
    /// arguments, or effect input digest).
    pub digest: u64,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            StepKind::Send => "a send to",
            StepKind::Ask => "an ask to",
            StepKind::Query => "a query to",
            StepKind::Spawn => "a spawn of",
            StepKind::StopChild => "a stop of child",
            StepKind::Publish => "a publish to topic",
            StepKind::Schedule => "a timer for",
            StepKind::Effect => "the side effect",
        };
        write!(f, "{what} {:?} (content {:016x})", self.target, self.digest)
    }
}

/// The outward steps of the handling of message `seq`, in order (format 2 on). Written
/// after a live handling that made any, before the message is marked handled, so that a
/// replay can check it does the same. A handling with more than [`MAX_KEPT_STEPS`] steps
/// keeps the first ones in full and the rest as one digest, so the record stays small.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepsRecord {
    /// The message.
    pub seq: u64,
    /// Its first steps (all of them, up to [`MAX_KEPT_STEPS`]); step `n` is at index
    /// `n - 1`.
    pub steps: Vec<Step>,
    /// How many steps the handling made.
    pub total: u32,
    /// A digest of every step of the handling ([`steps_digest`]).
    pub all: u64,
}

/// Steps a [`StepsRecord`] keeps in full.
pub const MAX_KEPT_STEPS: usize = 256;

/// The digest of a handling's steps, in order: the first 8 bytes of the BLAKE3 hash of
/// their kinds, targets and content digests.
pub fn steps_digest(steps: &[Step]) -> u64 {
    let mut hasher = blake3::Hasher::new();
    for step in steps {
        hasher.update(&[step.kind as u8]);
        hasher.update(&(step.target.len() as u64).to_le_bytes());
        hasher.update(step.target.as_bytes());
        hasher.update(&step.digest.to_le_bytes());
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// An agent stopped because a replay of message `seq` did not do what the journal
/// recorded (format 2 on).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaltRecord {
    /// The message being replayed.
    pub seq: u64,
    /// The non-determinism error.
    pub error: String,
}

/// The marker beginning a new incarnation of an agent id in its stream
/// ([`RecordKind::Incarnation`]): every record of the stream at or below its sequence
/// number belongs to an earlier incarnation. The same in formats 1 to 3.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncarnationRecord {
    /// The kind of the new incarnation, for audit.
    pub kind: String,
}

/// How an agent restarts, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredRestart {
    /// [`Restart::Permanent`].
    Permanent,
    /// [`Restart::Transient`].
    Transient,
    /// [`Restart::Temporary`].
    Temporary,
}

/// How an agent supervises its children, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredStrategy {
    /// [`Strategy::OneForOne`].
    OneForOne,
    /// [`Strategy::OneForAll`].
    OneForAll,
    /// [`Strategy::RestForOne`].
    RestForOne,
}

/// A duration as stored: whole seconds and nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDuration {
    /// Seconds.
    pub secs: u64,
    /// Nanoseconds (below 1e9).
    pub nanos: u32,
}

/// A [`SpawnSpec`] as a spawn record stores it: Toka's own type, converted explicitly,
/// so the public spec can grow without changing the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSpec {
    /// The agent's id.
    pub id: AgentId,
    /// When its supervisor restarts it.
    pub restart: StoredRestart,
    /// Whether it is journaled.
    pub durable: bool,
    /// How it supervises its children.
    pub strategy: StoredStrategy,
    /// Restarts allowed within `within`.
    pub max_restarts: u32,
    /// The restart intensity's window.
    pub within: StoredDuration,
    /// Restart backoff (`initial`, `max`), if any.
    pub backoff: Option<(StoredDuration, StoredDuration)>,
    /// Snapshot interval, if set.
    pub snapshot_every: Option<u64>,
    /// Attempts before dead-lettering, if set.
    pub max_attempts: Option<u32>,
}

impl From<std::time::Duration> for StoredDuration {
    fn from(d: std::time::Duration) -> Self {
        StoredDuration {
            secs: d.as_secs(),
            nanos: d.subsec_nanos(),
        }
    }
}

impl From<StoredDuration> for std::time::Duration {
    fn from(d: StoredDuration) -> Self {
        std::time::Duration::new(d.secs, d.nanos.min(999_999_999))
    }
}

impl From<&SpawnSpec> for StoredSpec {
    fn from(spec: &SpawnSpec) -> Self {
        let supervision = &spec.supervision;
        StoredSpec {
            id: spec.id.clone(),
            restart: match spec.restart {
                Restart::Permanent => StoredRestart::Permanent,
                Restart::Transient => StoredRestart::Transient,
                Restart::Temporary => StoredRestart::Temporary,
            },
            durable: spec.durable,
            strategy: match supervision.strategy {
                Strategy::OneForOne => StoredStrategy::OneForOne,
                Strategy::OneForAll => StoredStrategy::OneForAll,
                Strategy::RestForOne => StoredStrategy::RestForOne,
            },
            max_restarts: supervision.intensity.max_restarts,
            within: supervision.intensity.within.into(),
            backoff: supervision
                .backoff
                .map(|b| (b.initial.into(), b.max.into())),
            snapshot_every: spec.snapshot_every,
            max_attempts: spec.max_attempts,
        }
    }
}

impl From<StoredSpec> for SpawnSpec {
    fn from(stored: StoredSpec) -> Self {
        let mut spec = SpawnSpec::with_id(stored.id);
        spec.restart = match stored.restart {
            StoredRestart::Permanent => Restart::Permanent,
            StoredRestart::Transient => Restart::Transient,
            StoredRestart::Temporary => Restart::Temporary,
        };
        spec.durable = stored.durable;
        spec.supervision.strategy = match stored.strategy {
            StoredStrategy::OneForOne => Strategy::OneForOne,
            StoredStrategy::OneForAll => Strategy::OneForAll,
            StoredStrategy::RestForOne => Strategy::RestForOne,
        };
        spec.supervision.intensity = Intensity {
            max_restarts: stored.max_restarts,
            within: stored.within.into(),
        };
        spec.supervision.backoff = stored.backoff.map(|(initial, max)| crate::Backoff {
            initial: initial.into(),
            max: max.into(),
        });
        spec.snapshot_every = stored.snapshot_every;
        spec.max_attempts = stored.max_attempts;
        spec
    }
}

/// A change to the supervision tree. Later formats may add kinds of change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
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
        spec: StoredSpec,
        /// Where its incarnation begins in its stream: the sequence number of its
        /// incarnation marker, or 0 for an id's first incarnation (see the module docs).
        base: u64,
    },
    /// Agents were stopped and removed from the tree (a subtree, children first).
    Stopped {
        /// The stopped agents.
        ids: Vec<AgentId>,
    },
    /// A child placed in another runtime, recorded in its parent's journal (see
    /// [`remote`](crate::remote)): supervised here, run there.
    SpawnedElsewhere {
        /// Its parent (supervisor).
        parent: AgentId,
        /// Its kind.
        kind: String,
        /// Its postcard-encoded arguments.
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
        /// How it is started and supervised (holds its id).
        spec: StoredSpec,
    },
    /// A top-level agent run here for a supervisor in another runtime (see
    /// [`remote`](crate::remote)): its exits go to that supervisor.
    Adopted {
        /// The supervising agent, in another runtime.
        supervisor: AgentId,
        /// Its kind.
        kind: String,
        /// Its postcard-encoded arguments.
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
        /// How it is started (holds its id).
        spec: StoredSpec,
        /// Where its incarnation begins in its stream (as for `Spawned`).
        base: u64,
    },
}

/// Agents and the highest message sequence each has handled. The same in formats 1 to
/// 3.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressRecord {
    /// `(agent, seq)` pairs.
    pub handled: Vec<(AgentId, u64)>,
}

/// An agent's snapshot as stored: the user's bytes plus what the runtime needs to resume.
///
/// Format 2 snapshots begin with [`SNAPSHOT_HEADER`] and a format number; format 1 ones
/// have no header. The header is a varint no format 1 snapshot can begin with (it
/// overflows a 64-bit length), so the two are never confused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The agent's own snapshot bytes ([`Agent::snapshot`](crate::Agent::snapshot)).
    #[serde(with = "serde_bytes")]
    pub user: Vec<u8>,
    /// Per sender, the newest effect handled from it.
    pub watermarks: Vec<(AgentId, EffectId)>,
    /// Pending timers.
    pub timers: Vec<TimerRecord>,
}

/// The first bytes of a format 2 (or later) snapshot.
pub const SNAPSHOT_HEADER: [u8; 10] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];

/// Encodes a record.
pub(crate) fn encode<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
) -> Result<Vec<u8>, Error> {
    postcard::to_allocvec(value).map_err(|source| Error::Encode { what, source })
}

/// [`encode`], into a buffer allocated once with room for `size_hint` bytes (a record
/// around a payload of known size: no reallocation as it grows).
pub(crate) fn encode_sized<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
    size_hint: usize,
) -> Result<Vec<u8>, Error> {
    postcard::to_extend(value, Vec::with_capacity(size_hint))
        .map_err(|source| Error::Encode { what, source })
}

/// Decodes the record at `seq` of `stream`, for kinds whose layout is the same in every
/// format this build reads.
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

/// Decodes a tree record stored as `kind` (its stored kind, e.g. `toka.spawn@2`).
///
/// # Errors
/// [`Error::RecordFormat`] for a newer format, [`Error::Decode`].
pub fn decode_tree(kind: &str, seq: u64, bytes: &[u8]) -> Result<TreeRecord, Error> {
    match RecordKind::parse(kind, TREE_STREAM, seq)? {
        Some((RecordKind::Spawn | RecordKind::Stop, 1)) => {
            decode::<v1::TreeRecord>(TREE_STREAM, seq, bytes).map(TreeRecord::from)
        }
        Some((RecordKind::Spawn | RecordKind::Stop, _)) => decode(TREE_STREAM, seq, bytes),
        _ => Err(Error::Internal(format!(
            "record {seq} of the tree stream is a {kind:?}, not a tree record"
        ))),
    }
}

/// Decodes a reply or effect outcome record of `stream` stored as `kind`.
///
/// # Errors
/// [`Error::RecordFormat`] for a newer format, [`Error::Decode`].
pub fn decode_reply(
    kind: &str,
    stream: &str,
    seq: u64,
    bytes: &[u8],
) -> Result<ReplyRecord, Error> {
    match RecordKind::parse(kind, stream, seq)? {
        Some((RecordKind::Reply | RecordKind::Result, format)) => {
            decode_reply_in(format, stream, seq, bytes)
        }
        _ => Err(Error::Internal(format!(
            "record {seq} of {stream:?} is a {kind:?}, not a reply"
        ))),
    }
}

/// Decodes a reply or effect outcome record written in `format`.
pub(crate) fn decode_reply_in(
    format: u32,
    stream: &str,
    seq: u64,
    bytes: &[u8],
) -> Result<ReplyRecord, Error> {
    if format == 1 {
        decode::<v1::ReplyRecord>(stream, seq, bytes).map(ReplyRecord::from)
    } else {
        decode(stream, seq, bytes)
    }
}

/// Encodes an agent's snapshot in this build's format.
pub(crate) fn encode_snapshot(snapshot: &SnapshotRecord) -> Result<Vec<u8>, Error> {
    let mut out = SNAPSHOT_HEADER.to_vec();
    out.push(FORMAT as u8);
    postcard::to_extend(snapshot, out).map_err(|source| Error::Encode {
        what: "a snapshot",
        source,
    })
}

/// Decodes an agent's snapshot of `stream`, taken at `seq`, in any format this build
/// reads.
///
/// # Errors
/// [`Error::RecordFormat`] for a newer format, [`Error::Decode`].
pub fn decode_snapshot(stream: &str, seq: u64, bytes: &[u8]) -> Result<SnapshotRecord, Error> {
    let Some(rest) = bytes.strip_prefix(&SNAPSHOT_HEADER[..]) else {
        return decode(stream, seq, bytes);
    };
    match rest.split_first() {
        Some((&format, body)) if u32::from(format) <= FORMAT && format >= 2 => {
            decode(stream, seq, body)
        }
        Some((&format, _)) => Err(Error::RecordFormat {
            stream: stream.to_owned(),
            seq,
            kind: "snapshot".to_owned(),
            found: u32::from(format),
            supported: FORMAT,
        }),
        None => decode(stream, seq, rest),
    }
}

/// The first 8 bytes of the BLAKE3 hash of `bytes`, for [`Step::digest`].
pub(crate) fn digest(bytes: &[u8]) -> u64 {
    let hash = blake3::hash(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests;

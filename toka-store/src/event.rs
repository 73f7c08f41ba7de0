//! The journal's data model: events going in ([`NewEvent`]) and coming out
//! ([`RecordedEvent`]), their ids, and the expected-version check of an append.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest accepted stream id, in bytes.
pub const MAX_STREAM_ID_BYTES: usize = 1024;

/// The unique id of an event: a UUIDv7, so ids sort by creation time.
///
/// ```
/// use toka_store::EventId;
/// let a = EventId::new();
/// let b = EventId::new();
/// assert_ne!(a, b);
/// assert_eq!(a.as_uuid().get_version_num(), 7);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventId(Uuid);

impl EventId {
    /// A fresh UUIDv7 id.
    pub fn new() -> Self {
        EventId(Uuid::now_v7())
    }

    /// Wraps an existing UUID (e.g. an id derived deterministically by the caller).
    pub const fn from_uuid(uuid: Uuid) -> Self {
        EventId(uuid)
    }

    /// The underlying UUID.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({})", self.0)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Wall-clock time of an append, in microseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The current time (saturating at the epoch for clocks set before 1970).
    pub fn now() -> Self {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Timestamp(micros)
    }

    /// From microseconds since the Unix epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Timestamp(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// As a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.0)
    }
}

/// An event to append.
///
/// ```
/// use toka_store::NewEvent;
/// let e = NewEvent::new("counter.added", b"{\"add\":2}".to_vec());
/// assert_eq!(e.kind, "counter.added");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    /// Unique id; [`NewEvent::new`] draws a fresh UUIDv7.
    pub id: EventId,
    /// What happened, e.g. `"agent.message"`. Free-form; not interpreted by the journal.
    /// Borrowed when it is a constant (most kinds are): no allocation per event.
    pub kind: Cow<'static, str>,
    /// The event that caused this one, if any.
    pub causation_id: Option<EventId>,
    /// Groups events of one logical operation (e.g. a request), if any.
    pub correlation_id: Option<Uuid>,
    /// Opaque payload bytes (sealed at rest when encryption is on).
    pub payload: Vec<u8>,
}

impl NewEvent {
    /// An event with a fresh id and no causation/correlation.
    pub fn new(kind: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self::with_kind(Cow::Owned(kind.into()), payload.into())
    }

    /// [`NewEvent::new`] for a kind that is a constant: the event borrows it instead of
    /// copying it (one allocation less per event on a hot path).
    pub fn new_static(kind: &'static str, payload: impl Into<Vec<u8>>) -> Self {
        Self::with_kind(Cow::Borrowed(kind), payload.into())
    }

    fn with_kind(kind: Cow<'static, str>, payload: Vec<u8>) -> Self {
        NewEvent {
            id: EventId::new(),
            kind,
            causation_id: None,
            correlation_id: None,
            payload,
        }
    }

    /// Replaces the id (for callers that derive ids deterministically).
    #[must_use]
    pub fn with_id(mut self, id: EventId) -> Self {
        self.id = id;
        self
    }

    /// Sets the causation id.
    #[must_use]
    pub fn caused_by(mut self, cause: EventId) -> Self {
        self.causation_id = Some(cause);
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn correlated_with(mut self, correlation: Uuid) -> Self {
        self.correlation_id = Some(correlation);
        self
    }
}

/// An event as stored in the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Global position: starts at 1, gap-free and strictly increasing across all streams.
    pub position: u64,
    /// The stream the event belongs to.
    pub stream: String,
    /// Sequence number inside the stream: starts at 1, gap-free.
    pub seq: u64,
    /// Unique id.
    pub id: EventId,
    /// What happened.
    pub kind: String,
    /// When it was appended.
    pub timestamp: Timestamp,
    /// The event that caused this one, if any.
    pub causation_id: Option<EventId>,
    /// Correlation id, if any.
    pub correlation_id: Option<Uuid>,
    /// The payload, decrypted if the journal is encrypted.
    pub payload: Vec<u8>,
}

/// An event lent by [`Journal::replay`](crate::Journal::replay): the same fields as
/// [`RecordedEvent`], borrowed from the store instead of copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// Global position.
    pub position: u64,
    /// The stream.
    pub stream: &'a str,
    /// Sequence number inside the stream.
    pub seq: u64,
    /// Unique id.
    pub id: EventId,
    /// What happened.
    pub kind: &'a str,
    /// When it was appended.
    pub timestamp: Timestamp,
    /// The event that caused this one, if any.
    pub causation_id: Option<EventId>,
    /// Correlation id, if any.
    pub correlation_id: Option<Uuid>,
    /// The payload: borrowed, or owned when it had to be decrypted.
    pub payload: std::borrow::Cow<'a, [u8]>,
}

impl EventRef<'_> {
    /// Copies the event out of the store.
    pub fn into_owned(self) -> RecordedEvent {
        RecordedEvent {
            position: self.position,
            stream: self.stream.to_owned(),
            seq: self.seq,
            id: self.id,
            kind: self.kind.to_owned(),
            timestamp: self.timestamp,
            causation_id: self.causation_id,
            correlation_id: self.correlation_id,
            payload: self.payload.into_owned(),
        }
    }
}

/// The stream version an append expects, checked atomically with the write.
///
/// A stream's *version* is its last sequence number, `0` when it has no events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must have no events yet.
    NoStream,
    /// The stream's version must be exactly this (`Exact(0)` is the same as `NoStream`).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` satisfies this expectation.
    pub const fn matches(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(v) => v == actual,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// Where a successful append landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Global position of the first event of the batch.
    pub first_position: u64,
    /// Global position of the last event (positions of a batch are contiguous).
    pub last_position: u64,
    /// Sequence number of the first event in its stream.
    pub first_seq: u64,
    /// Sequence number of the last event: the stream's new version.
    pub last_seq: u64,
}

/// A stored snapshot of a stream's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The stream.
    pub stream: String,
    /// The state reflects every event of the stream up to and including this sequence number.
    pub seq: u64,
    /// When it was saved.
    pub timestamp: Timestamp,
    /// The state bytes, decrypted if the journal is encrypted.
    pub state: Vec<u8>,
}

pub(crate) fn validate_stream_id(stream: &str) -> Result<(), crate::Error> {
    let reason = if stream.is_empty() {
        "stream ids must not be empty"
    } else if stream.len() > MAX_STREAM_ID_BYTES {
        "stream ids are at most 1024 bytes"
    } else {
        return Ok(());
    };
    let mut shown = stream.to_owned();
    if shown.len() > 64 {
        let mut cut = 64;
        while !shown.is_char_boundary(cut) {
            cut -= 1;
        }
        shown.truncate(cut);
    }
    Err(crate::Error::InvalidStreamId {
        stream: shown,
        reason,
    })
}

//! Agent ids: stable names chosen by whoever spawns the agent, valid across restarts.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// The prefix of every agent's journal stream.
const STREAM_PREFIX: &str = "agent/";

/// The hasher of the maps keyed by [`AgentId`] (the runtime's tables of agents, the tree,
/// a supervisor's children): a multiply-rotate over the id's precomputed hash. That hash is
/// SipHash under a key drawn once per process ([`AgentId`]'s `hash` field), so ids an
/// outsider picks still spread unpredictably, and a map pays no second SipHash per lookup
/// (nor per entry when it grows).
pub(crate) type IdHasher = rustc_hash::FxBuildHasher;

/// A `HashMap` keyed by agent ids (see [`IdHasher`]).
pub(crate) type IdMap<K, V> = std::collections::HashMap<K, V, IdHasher>;

/// A `HashSet` of agent ids (see [`IdHasher`]).
pub(crate) type IdSet<K> = std::collections::HashSet<K, IdHasher>;

/// The key of the hash every [`AgentId`] carries: random, drawn once per process.
static ID_HASH_KEY: std::sync::LazyLock<std::hash::RandomState> =
    std::sync::LazyLock::new(std::hash::RandomState::new);

/// Longest accepted agent id, in bytes.
pub const MAX_AGENT_ID_BYTES: usize = 128;

/// The stable id of an agent: unique in a runtime, kept across restarts, and the name of
/// the agent's journal stream (`agent/<id>`).
///
/// Ids are 1 to [`MAX_AGENT_ID_BYTES`] bytes of ASCII letters, digits and `-_.:@`,
/// starting with a letter or a digit: so never `.` or `..`, never a `/`, nothing that reads
/// as a path step or a command-line option. Cloning is cheap (a shared string).
///
/// ```
/// use toka_actors::AgentId;
/// let id = AgentId::new("billing.worker-7")?;
/// assert_eq!(id.as_str(), "billing.worker-7");
/// assert!(AgentId::new("../etc").is_err());
/// # Ok::<(), toka_actors::Error>(())
/// ```
#[derive(Clone)]
pub struct AgentId {
    /// `agent/<id>`: the journal stream, so that appends borrow it without formatting.
    stream: Arc<str>,
    /// A hash of `stream` under a per-process random key, computed once: ids are hashed on
    /// every message routed, and maps keyed by ids use it as it is ([`IdHasher`]).
    hash: u64,
}

impl AgentId {
    /// The id `agent/<id>` names (`id` already validated), in one allocation: the
    /// stream's text is put together on the stack.
    fn with_stream_of(id: &str) -> Self {
        use std::hash::BuildHasher;
        let mut text = [0u8; STREAM_PREFIX.len() + MAX_AGENT_ID_BYTES];
        let len = STREAM_PREFIX.len() + id.len();
        let stream: Arc<str> = match text.get_mut(..len) {
            Some(buf) => {
                buf[..STREAM_PREFIX.len()].copy_from_slice(STREAM_PREFIX.as_bytes());
                buf[STREAM_PREFIX.len()..].copy_from_slice(id.as_bytes());
                // Two `str`s back to back are one.
                match std::str::from_utf8(buf) {
                    Ok(text) => Arc::from(text),
                    Err(_) => Arc::from(format!("{STREAM_PREFIX}{id}")),
                }
            }
            None => Arc::from(format!("{STREAM_PREFIX}{id}")),
        };
        let hash = ID_HASH_KEY.hash_one(&*stream);
        AgentId { stream, hash }
    }
}

impl PartialEq for AgentId {
    fn eq(&self, other: &Self) -> bool {
        // Clones of one id share its text: most comparisons end at the pointer.
        Arc::ptr_eq(&self.stream, &other.stream)
            || (self.hash == other.hash && self.stream == other.stream)
    }
}

impl Eq for AgentId {}

impl std::hash::Hash for AgentId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialOrd for AgentId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for AgentId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.stream.cmp(&other.stream)
    }
}

impl AgentId {
    /// Validates and wraps `id`.
    ///
    /// # Errors
    /// [`Error::InvalidId`] if `id` is empty, too long, has other characters or does not
    /// start with a letter or a digit.
    pub fn new(id: impl AsRef<str>) -> Result<Self, Error> {
        let id = id.as_ref();
        let reason = if id.is_empty() {
            Some("agent ids must not be empty")
        } else if id.len() > MAX_AGENT_ID_BYTES {
            Some("agent ids are at most 128 bytes")
        } else if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b))
        {
            Some("agent ids use only ASCII letters, digits and -_.:@")
        } else if !id.as_bytes()[0].is_ascii_alphanumeric() {
            Some("agent ids start with an ASCII letter or digit")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidId {
                id: id.chars().take(64).collect(),
                reason,
            }),
            None => Ok(AgentId::with_stream_of(id)),
        }
    }

    /// The runtime's root supervisor (not a valid user id, never journaled).
    pub(crate) fn root() -> Self {
        AgentId::with_stream_of("$root")
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.stream[STREAM_PREFIX.len()..]
    }

    /// The journal stream holding this agent's messages and records.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The id of the agent whose stream is `stream`, if it is an agent stream.
    pub fn from_stream(stream: &str) -> Option<Self> {
        stream
            .strip_prefix(STREAM_PREFIX)
            .and_then(|id| AgentId::new(id).ok())
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentId({:?})", self.as_str())
    }
}

impl std::str::FromStr for AgentId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        AgentId::new(s)
    }
}

impl Serialize for AgentId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AgentId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        AgentId::new(&*text).map_err(serde::de::Error::custom)
    }
}

/// Names the `n`-th outward effect (send, spawn, timer, ask, publish) of the handling of
/// message `seq`: the deterministic id that lets recovery recognise effects already done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EffectId {
    /// Sequence number of the message being handled in the agent's stream; for effects
    /// made at the agent's start, its incarnation's base (0 for an id's first
    /// incarnation; see [`record`](crate::record)). Sequence numbers keep growing across
    /// incarnations of an id, so a new incarnation's effects are newer than any earlier
    /// one's.
    pub seq: u64,
    /// 1-based index of the effect within that handling.
    pub n: u32,
}

/// The id of a durable timer: the effect that scheduled it.
pub type TimerId = EffectId;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated_and_round_trip() {
        for bad in [
            "",
            "a/b",
            "a b",
            "é",
            ".",
            "..",
            ".hidden",
            "-rf",
            "@x",
            &"x".repeat(129),
        ] {
            assert!(AgentId::new(bad).is_err(), "{bad:?} accepted");
        }
        let id = AgentId::new("a-1.b_c:d@e").unwrap();
        assert_eq!(id.stream(), "agent/a-1.b_c:d@e");
        assert_eq!(AgentId::from_stream(id.stream()), Some(id.clone()));
        let bytes = postcard::to_allocvec(&id).unwrap();
        assert_eq!(postcard::from_bytes::<AgentId>(&bytes).unwrap(), id);
        let forged = postcard::to_allocvec("a/../b").unwrap();
        assert!(postcard::from_bytes::<AgentId>(&forged).is_err());
    }
}

//! The crate's error type.

use std::time::Duration;

use crate::AgentId;

/// Everything that can go wrong in the runtime, with the agent or record it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The journal failed (I/O, corruption, poisoned after a failed flush...).
    #[error("journal: {0}")]
    Journal(#[from] toka_store::Error),
    /// The journal write that carried this append together with others failed (the
    /// first append of the group gets the journal's own error as [`Error::Journal`]).
    #[error("journal: a group write failed: {0}")]
    GroupWrite(String),
    /// A malformed agent id.
    #[error("invalid agent id {id:?}: {reason}")]
    InvalidId {
        /// The id (cut to 64 characters).
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No agent with this id is in the tree.
    #[error("no agent {0}")]
    UnknownAgent(AgentId),
    /// The agent's kind answers no (JSON) queries: it does not implement
    /// [`Queries`](crate::Queries), or was registered without
    /// [`register_with_queries`](crate::RuntimeBuilder::register_with_queries).
    #[error("agent {id} (kind {kind:?}) answers no queries")]
    NoQueries {
        /// The agent.
        id: AgentId,
        /// Its kind.
        kind: String,
    },
    /// No agent kind with this name is registered.
    #[error("no agent kind {0:?} is registered")]
    UnknownKind(String),
    /// The id is taken.
    #[error("agent {0} already exists")]
    AlreadyExists(AgentId),
    /// The agent exists but is of another kind than the reference asked for.
    #[error("agent {id} is a {actual:?}, not a {expected:?}")]
    WrongKind {
        /// The agent.
        id: AgentId,
        /// The kind asked for.
        expected: &'static str,
        /// Its kind.
        actual: String,
    },
    /// A value could not be encoded.
    #[error("encoding {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why it failed.
        source: postcard::Error,
    },
    /// A stored or received record does not decode.
    #[error("record {seq} of stream {stream:?} does not decode: {source}")]
    Decode {
        /// The stream.
        stream: String,
        /// The record's sequence number.
        seq: u64,
        /// Why it failed.
        source: postcard::Error,
    },
    /// A record of the journal was written in a record format this build does not read
    /// (a newer Toka wrote it).
    #[error(
        "record {seq} of stream {stream:?} ({kind}) is in Toka record format {found}; this build reads formats 1 to {supported}: open this journal with a Toka that reads format {found}"
    )]
    RecordFormat {
        /// The stream.
        stream: String,
        /// The record's sequence number (0: the stream's snapshot).
        seq: u64,
        /// The record's kind as stored.
        kind: String,
        /// Its format.
        found: u32,
        /// The newest format this build reads.
        supported: u32,
    },
    /// While replaying, a handler did something other than what the journal recorded for
    /// the same message and step: its code (or something it reads) changed in a way that
    /// is not deterministic. The agent stops rather than diverge from its history.
    #[error(
        "agent {id} is not deterministic: replaying message {seq}, step {step} now does {now}, but the journal recorded {recorded}"
    )]
    NonDeterministic {
        /// The agent.
        id: AgentId,
        /// The message being replayed.
        seq: u64,
        /// The outward step within its handling (1 for the first).
        step: u32,
        /// What the journal recorded there.
        recorded: String,
        /// What the handler does now.
        now: String,
    },
    /// Arguments or a message given as JSON do not fit the kind's types.
    #[error("{what} does not fit kind {kind:?}: {reason}")]
    BadJson {
        /// The kind.
        kind: String,
        /// "arguments", "message"...
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// An ask got no reply in time.
    #[error("agent {id} did not reply within {after:?}")]
    Timeout {
        /// The agent asked.
        id: AgentId,
        /// The timeout.
        after: Duration,
    },
    /// The agent failed while handling the message (the ask's reply).
    #[error("agent {id} failed handling the message: {reason}")]
    Handler {
        /// The agent.
        id: AgentId,
        /// Its error.
        reason: String,
    },
    /// A side effect run through [`Context::effect`](crate::Context::effect) failed.
    #[error("effect {name:?} failed: {reason}")]
    Effect {
        /// The effect's name.
        name: String,
        /// Its error.
        reason: String,
    },
    /// A side effect's intent was journaled but not its outcome before a crash, and it is
    /// not safe to run again: it may or may not have happened.
    #[error(
        "effect {name:?} ({effect:?}) is in doubt: it may or may not have happened before a crash"
    )]
    InDoubt {
        /// The effect's name.
        name: String,
        /// Its id.
        effect: crate::EffectId,
    },
    /// The agent stopped before it replied.
    #[error("agent {0} stopped before replying")]
    NoReply(AgentId),
    /// The agent could not be started.
    #[error("agent {id} could not start: {reason}")]
    Spawn {
        /// The agent.
        id: AgentId,
        /// Why.
        reason: String,
    },
    /// The runtime is shutting down (or has failed) and takes no new work.
    #[error("the runtime is shutting down")]
    ShuttingDown,
    /// A broken internal invariant (a bug): reported rather than panicking.
    #[error("internal error: {0}")]
    Internal(String),
    /// The runtime's root supervisor gave up (restart intensity exceeded at the top).
    #[error("the runtime failed: {0}")]
    Failed(String),
    /// A request to an agent in another runtime failed, or is not possible there (see
    /// [`remote`](crate::remote)).
    #[error("agent {id} in another runtime: {reason}")]
    Remote {
        /// The agent.
        id: AgentId,
        /// Why.
        reason: String,
    },
}

/// The error an agent's handler returns: any error, boxed, or a message.
///
/// `?` converts any `std::error::Error` into it, as with `anyhow`.
///
/// ```
/// use toka_actors::AgentError;
/// fn parse(s: &str) -> Result<u32, AgentError> {
///     if s.is_empty() {
///         return Err(AgentError::msg("empty input"));
///     }
///     Ok(s.parse::<u32>()?)
/// }
/// assert!(parse("x").is_err());
/// ```
pub struct AgentError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl AgentError {
    /// An error with a message.
    pub fn msg(message: impl std::fmt::Display) -> Self {
        AgentError(message.to_string().into())
    }

    /// The underlying error.
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for AgentError {
    fn from(error: E) -> Self {
        AgentError(Box::new(error))
    }
}

impl std::fmt::Debug for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

//! The crate's error type, and the error a tool call ends with.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What went wrong setting up or running the tool layer (keys, tokens, journal, actors).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key file could not be read or created.
    #[error("key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A file or directory operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A capability token is unreadable, forged, or not valid for the request.
    #[error(transparent)]
    Denied(#[from] Denial),
    /// Two tools were registered under one name, or a name is not a valid tool name.
    #[error("tool {name}: {reason}")]
    Registration {
        /// The tool's name.
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// The secrets vault is unreadable or was sealed with another key.
    #[error("secrets vault {path}: {reason}")]
    Vault {
        /// The vault file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A sealed string could not be made or opened ([`Sealer`](crate::Sealer)).
    #[error("sealed secret: {0}")]
    Seal(String),
    /// No secret by this name.
    #[error("no secret named {0:?}")]
    NoSuchSecret(String),
    /// The journal failed.
    #[error("journal: {0}")]
    Journal(#[from] toka_store::Error),
    /// A record in the journal could not be decoded.
    #[error("{stream} record {seq}: {reason}")]
    Decode {
        /// The stream.
        stream: String,
        /// The record's sequence number.
        seq: u64,
        /// What was wrong.
        reason: String,
    },
    /// An actor of the tool layer could not be started.
    #[error("tool actors: {0}")]
    Actor(String),
    /// An approval cannot be decided or run (unknown, or not pending).
    #[error("approval: {0}")]
    Approval(String),
    /// A model call failed. The message never contains the API key.
    #[error("model {model}: {kind:?}: {message}")]
    Model {
        /// The model asked.
        model: String,
        /// What kind of failure.
        kind: crate::model::ModelErrorKind,
        /// What happened (the provider's own message where it gave one).
        message: String,
    },
}

/// Why a capability check failed. The text says which caveat or check refused the
/// request; it never contains the token or any secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("capability denied: {reason}")]
pub struct Denial {
    /// Which check refused the request.
    pub reason: String,
}

impl Denial {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Denial {
            reason: reason.into(),
        }
    }
}

/// The kinds of failure a tool call can end with. Recorded in the journal as part of the
/// call's outcome, so a replay sees the same failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ToolErrorKind {
    /// The capability token did not allow the call.
    Denied,
    /// No tool by that name is registered.
    UnknownTool,
    /// The input did not match the tool's schema, or named something outside its scope
    /// (a path escaping its root, a program not on its allow-list).
    InvalidInput,
    /// The tool ran and reported a failure.
    Failed,
    /// The call did not finish within its time limit.
    Timeout,
    /// The tool panicked; its actor was restarted.
    Crashed,
    /// The tool's actor is not running (the host is shutting down or gave up on it).
    Unavailable,
    /// A sandboxed process exceeded a limit (CPU, memory, processes, output, file size).
    Limit,
    /// A crash fell between the call's intent and its result, and the tool's side effects
    /// are `External`: it was not run again.
    InDoubt,
    /// The call waits for a human decision ([`crate::approval`]); it has not run. The
    /// approval's id is [`ToolError::pending_approval`].
    PendingApproval,
}

/// How a tool call failed: a kind to branch on and a message for people.
///
/// ```
/// use toka_tools::{ToolError, ToolErrorKind};
/// let e = ToolError::new(ToolErrorKind::Timeout, "fs.read: no result within 5s");
/// assert_eq!(e.kind, ToolErrorKind::Timeout);
/// assert_eq!(e.to_string(), "Timeout: fs.read: no result within 5s");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ToolError {
    /// What kind of failure.
    pub kind: ToolErrorKind,
    /// What happened, for people (never contains secrets or tokens).
    pub message: String,
}

impl ToolError {
    /// A failure of `kind`.
    pub fn new(kind: ToolErrorKind, message: impl Into<String>) -> Self {
        ToolError {
            kind,
            message: message.into(),
        }
    }

    /// The tool ran and failed.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(ToolErrorKind::Failed, message)
    }

    /// The input was not acceptable.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ToolErrorKind::InvalidInput, message)
    }

    /// A capability check refused the call.
    pub fn denied(denial: &Denial) -> Self {
        Self::new(ToolErrorKind::Denied, denial.reason.clone())
    }

    /// The call of `tool` waits for the human decision of approval `id`.
    pub fn awaiting_approval(tool: &str, id: &str) -> Self {
        Self::new(
            ToolErrorKind::PendingApproval,
            format!("approval {id} pending: {tool} runs once a human approves it"),
        )
    }

    /// For a [`ToolErrorKind::PendingApproval`] error: the approval's id.
    pub fn pending_approval(&self) -> Option<&str> {
        if self.kind != ToolErrorKind::PendingApproval {
            return None;
        }
        self.message.strip_prefix("approval ")?.split(' ').next()
    }
}

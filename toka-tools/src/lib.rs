//! Toka's tools: how agents act on the world, safely and exactly once.
//!
//! - [`Tool`]: a named, described (JSON Schema) operation with a [`SideEffect`] class
//!   and typed input and output.
//! - [`ToolHost`]: runs every registered tool as a supervised actor with a concurrency
//!   limit and a timeout per call, and checks each call's [`Capability`].
//! - [`Capability`] / [`Authority`]: macaroon tokens scoping which tool, agent, paths,
//!   bytes and secrets a holder may use and until when ([`Caveat`]); attenuable by any
//!   holder, revocable, denials audited in the journal.
//! - [`ToolCalls::call_tool`]: agents call tools through their context; the call is
//!   journaled intent → result, so recovery returns the recorded result and never runs
//!   a side effect twice.
//! - [`Sandbox`]: rlimits, process-group timeouts, empty environment, jail, capped
//!   output and Landlock for child processes; reference tools [`FsRead`], [`FsWrite`],
//!   [`FsList`] and [`ShellExec`].
//! - [`Vault`]: secrets encrypted at rest, handed to tools only as their capability
//!   allows.
//! - `mcp` (feature `mcp`): the tools of MCP servers (stdio in the sandbox, or streamable
//!   HTTP) as tools `mcp.NAME.TOOL`, each server supervised and restarted.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use toka_actors::Runtime;
//! use toka_store::{JournalConfig, SledJournal};
//! use toka_tools::{Authority, Caveat, FsRead, ToolHost};
//!
//! let journal = Arc::new(SledJournal::open("data/journal", JournalConfig::default())?);
//! let authority = Authority::open("data/root.key".as_ref(), journal.clone())?;
//! let host = ToolHost::builder(authority.clone()).tool(FsRead::new("data/files")?).start().await?;
//! let token = authority.mint([Caveat::Tool("fs.read".parse()?), Caveat::Agent("alice".into())])?;
//! let runtime = Runtime::builder(journal).extension(host).start().await?;
//! // In alice's handler: cx.call_tool::<_, toka_tools::ReadOutput>("fs.read", &token, &input).await
//! # let _ = (runtime, token); Ok(()) }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod aead;
pub mod approval;
mod call;
pub mod capability;
pub mod caveat;
mod cgroup;
mod error;
pub mod fs;
mod host;
mod keyfile;
#[cfg(feature = "mcp")]
pub mod mcp;
pub mod model;
pub mod sandbox;
pub mod seal;
pub mod shell;
mod spawn;
mod tool;
mod vault;

pub use approval::{Approval, ApprovalStatus, Approvals, Decision};
pub use call::ToolCalls;
pub use capability::{Authority, Capability, DenialRecord, IssueRecord, Verified};
pub use caveat::{ApprovalScope, Caveat, Grant, ModelUse, NamePattern, Request};
pub use error::{Denial, Error, ToolError, ToolErrorKind};
pub use fs::{FsList, FsRead, FsRoot, FsWrite, ListOutput, ReadOutput, WriteOutput};
pub use host::{ToolHost, ToolHostBuilder, ToolLimits, ToolMetrics};
pub use sandbox::{Containment, Landlock, RunOutput, Sandbox, SandboxPolicy, ServiceProcess};
pub use seal::Sealer;
pub use shell::{ExecOutput, ShellExec};
pub use tool::{Scope, SideEffect, Tool, ToolContext, ToolSpec};
pub use vault::{Secret, Vault};

/// Encodes a journal record (postcard).
pub(crate) fn encode<T: serde::Serialize>(stream: &str, value: &T) -> Result<Vec<u8>, Error> {
    postcard::to_stdvec(value).map_err(|e| Error::Decode {
        stream: stream.to_owned(),
        seq: 0,
        reason: format!("encoding: {e}"),
    })
}

/// Decodes a journal record (postcard).
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    stream: &str,
    seq: u64,
    bytes: &[u8],
) -> Result<T, Error> {
    postcard::from_bytes(bytes).map_err(|e| Error::Decode {
        stream: stream.to_owned(),
        seq,
        reason: e.to_string(),
    })
}

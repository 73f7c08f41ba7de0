//! Toka: a runtime for long-lived, secure AI agents.
//!
//! This meta crate re-exports the workspace crates and a [`prelude`]: the event journal
//! ([`store`]), the actor runtime ([`actors`]) and tools with capabilities, sandbox and
//! secrets ([`tools`]); the node lands in a later release.
//!
//! ```
//! use toka::prelude::*;
//! let journal = MemoryJournal::new(JournalConfig::default()).unwrap();
//! assert_eq!(journal.head_position(), 0);
//! ```

pub use toka_actors as actors;
pub use toka_store as store;
pub use toka_tools as tools;

// Compile-check the README's code blocks.
#[cfg(all(doctest, feature = "sled"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The types most programs need, in one import: `use toka::prelude::*;`.
pub mod prelude {
    pub use toka_actors::{
        Agent, AgentError, AgentId, AgentRef, Backoff, Context, Error as RuntimeError, Intensity,
        OnDoubt, Queries, Restart, Runtime, RuntimeConfig, SpawnSpec, StartContext, Strategy,
        SupervisorSpec, Topic,
    };
    #[cfg(feature = "postgres")]
    pub use toka_store::PgJournal;
    #[cfg(feature = "sled")]
    pub use toka_store::SledJournal;
    pub use toka_store::{
        Durability, EncryptionKey, Error as StoreError, EventId, ExpectedVersion, Journal,
        JournalConfig, MemoryJournal, NewEvent, RecordedEvent, Retention, Subscription,
    };
    pub use toka_tools::model::{ModelCalls, ModelHost};
    pub use toka_tools::{
        Authority, Capability, Caveat, Error as ToolsError, FsList, FsRead, FsWrite, Sandbox,
        SandboxPolicy, ShellExec, SideEffect, Tool, ToolCalls, ToolContext, ToolError,
        ToolErrorKind, ToolHost, ToolLimits, Vault,
    };
}

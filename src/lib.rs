//! Toka: a runtime for long-lived, secure AI agents.
//!
//! This meta crate re-exports the workspace crates and a [`prelude`]. Today it carries the
//! event journal ([`store`]); the actor runtime, tools and node land in later releases.
//!
//! ```
//! use toka::prelude::*;
//! let journal = MemoryJournal::new(JournalConfig::default()).unwrap();
//! assert_eq!(journal.head_position(), 0);
//! ```

pub use toka_store as store;

// Compile-check the README's code blocks.
#[cfg(all(doctest, feature = "sled"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The types most programs need, in one import: `use toka::prelude::*;`.
pub mod prelude {
    #[cfg(feature = "sled")]
    pub use toka_store::SledJournal;
    pub use toka_store::{
        Durability, EncryptionKey, Error as StoreError, EventId, ExpectedVersion, Journal,
        JournalConfig, MemoryJournal, NewEvent, RecordedEvent, Retention, Subscription,
    };
}

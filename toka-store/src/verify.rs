//! The outcome of [`Journal::verify`](crate::Journal::verify).

use std::fmt;

/// What a walk over the whole hash chain found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records checked (live and pruned) before the walk ended.
    pub records: u64,
    /// How many of them were pruned stubs.
    pub pruned: u64,
    /// The last position that checked out.
    pub head_position: u64,
    /// The chain value at `head_position`. Keep it somewhere else (a log line, a
    /// notary) to detect later truncation or wholesale rewriting of the log.
    pub head_hash: [u8; 32],
    /// The first record that failed a check, if any; the walk stops there.
    pub first_bad: Option<BadRecord>,
}

impl VerifyReport {
    /// Whether the whole log checked out.
    pub fn is_intact(&self) -> bool {
        self.first_bad.is_none()
    }

    /// `head_hash` as lowercase hex.
    pub fn head_hash_hex(&self) -> String {
        self.head_hash.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A record that failed verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRecord {
    /// Its global position.
    pub position: u64,
    /// Which check failed.
    pub reason: String,
}

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "position {}: {}", self.position, self.reason)
    }
}

//! Record format 1: the records journaled until December 2026 (kinds without `@`), kept
//! as frozen copies of their shapes so that every journal written then still opens.
//!
//! Only the records whose layout changed in format 2 are here; the others
//! ([`MsgRecord`](super::MsgRecord), [`TimerRecord`](super::TimerRecord), intents,
//! attempts, dead letters, progress, incarnation markers, snapshots) decode the same in
//! both formats. Nothing here may change: these types describe bytes already on disk.

use serde::{Deserialize, Serialize};

use super::{Outcome, StoredDuration, StoredRestart, StoredSpec, StoredStrategy};
use crate::{AgentId, EffectId};

/// What format 1 recorded as the outcome of an effect found in doubt.
pub const IN_DOUBT: &str = "in doubt: the effect may or may not have happened before a crash";

/// A format 1 reply or effect outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplyRecord {
    /// The step.
    pub effect: EffectId,
    /// The encoded reply, or the error (an in-doubt effect as [`IN_DOUBT`]).
    pub body: Result<Vec<u8>, String>,
}

impl From<ReplyRecord> for super::ReplyRecord {
    fn from(old: ReplyRecord) -> Self {
        super::ReplyRecord {
            effect: old.effect,
            outcome: match old.body {
                Ok(value) => Outcome::Value(value),
                Err(reason) if reason == IN_DOUBT => Outcome::InDoubt,
                Err(reason) => Outcome::Failed(reason),
            },
        }
    }
}

/// Format 1's restart type (the public `Restart` as it was).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub enum Restart {
    /// Always restarted.
    Permanent,
    /// Restarted after a failure.
    Transient,
    /// Never restarted.
    Temporary,
}

/// Format 1's supervision strategy.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub enum Strategy {
    /// One for one.
    OneForOne,
    /// One for all.
    OneForAll,
    /// Rest for one.
    RestForOne,
}

/// Format 1's restart intensity.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Intensity {
    /// Restarts allowed.
    pub max_restarts: u32,
    /// Within this window.
    pub within: std::time::Duration,
}

/// Format 1's backoff.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Backoff {
    /// First delay.
    pub initial: std::time::Duration,
    /// Longest delay.
    pub max: std::time::Duration,
}

/// Format 1's supervisor spec.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct SupervisorSpec {
    /// Strategy.
    pub strategy: Strategy,
    /// Intensity.
    pub intensity: Intensity,
    /// Backoff.
    pub backoff: Option<Backoff>,
}

/// Format 1's spawn spec: the public `SpawnSpec` as it was, embedded in spawn records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SpawnSpec {
    /// The id.
    pub id: AgentId,
    /// Restart type.
    pub restart: Restart,
    /// Journaled or not.
    pub durable: bool,
    /// Supervision of its children.
    pub supervision: SupervisorSpec,
    /// Snapshot interval.
    pub snapshot_every: Option<u64>,
    /// Attempts before dead-lettering.
    pub max_attempts: Option<u32>,
}

/// A format 1 tree record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum TreeRecord {
    /// A spawn (base 0).
    Spawned {
        /// Parent.
        parent: Option<AgentId>,
        /// Kind.
        kind: String,
        /// Arguments.
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
        /// Spec.
        spec: SpawnSpec,
    },
    /// A stop.
    Stopped {
        /// The stopped agents.
        ids: Vec<AgentId>,
    },
    /// A spawn of an id used before.
    Respawned {
        /// Parent.
        parent: Option<AgentId>,
        /// Kind.
        kind: String,
        /// Arguments.
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
        /// Spec.
        spec: SpawnSpec,
        /// Where the incarnation begins.
        base: u64,
    },
}

impl From<SpawnSpec> for StoredSpec {
    fn from(old: SpawnSpec) -> Self {
        StoredSpec {
            id: old.id,
            restart: match old.restart {
                Restart::Permanent => StoredRestart::Permanent,
                Restart::Transient => StoredRestart::Transient,
                Restart::Temporary => StoredRestart::Temporary,
            },
            durable: old.durable,
            strategy: match old.supervision.strategy {
                Strategy::OneForOne => StoredStrategy::OneForOne,
                Strategy::OneForAll => StoredStrategy::OneForAll,
                Strategy::RestForOne => StoredStrategy::RestForOne,
            },
            max_restarts: old.supervision.intensity.max_restarts,
            within: old.supervision.intensity.within.into(),
            backoff: old
                .supervision
                .backoff
                .map(|b| (StoredDuration::from(b.initial), StoredDuration::from(b.max))),
            snapshot_every: old.snapshot_every,
            max_attempts: old.max_attempts,
        }
    }
}

impl From<TreeRecord> for super::TreeRecord {
    fn from(old: TreeRecord) -> Self {
        match old {
            TreeRecord::Spawned {
                parent,
                kind,
                args,
                spec,
            } => super::TreeRecord::Spawned {
                parent,
                kind,
                args,
                spec: spec.into(),
                base: 0,
            },
            TreeRecord::Respawned {
                parent,
                kind,
                args,
                spec,
                base,
            } => super::TreeRecord::Spawned {
                parent,
                kind,
                args,
                spec: spec.into(),
                base,
            },
            TreeRecord::Stopped { ids } => super::TreeRecord::Stopped { ids },
        }
    }
}

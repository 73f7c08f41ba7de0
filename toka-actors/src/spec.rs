//! How an agent is started and supervised: [`SpawnSpec`] and [`SupervisorSpec`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::AgentId;

/// Which children a supervisor restarts when one of them fails (OTP's strategies).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Restart only the failed child.
    #[default]
    OneForOne,
    /// Stop every other child, then restart all of them in start order.
    OneForAll,
    /// Stop the children started after the failed one, then restart it and them in order.
    RestForOne,
}

/// When a child is restarted (OTP's restart types).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Always restarted when it exits, failed or not.
    #[default]
    Permanent,
    /// Restarted only when it fails; a normal exit removes it.
    Transient,
    /// Never restarted; removed from the tree when it exits.
    Temporary,
}

/// Restart intensity: more than `max_restarts` restarts within `within` make the
/// supervisor give up, stop its children and fail to its own parent (escalation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intensity {
    /// Restarts allowed in the window (OTP's `intensity`).
    pub max_restarts: u32,
    /// The sliding window (OTP's `period`).
    pub within: Duration,
}

impl Default for Intensity {
    /// 3 restarts within 5 seconds, as OTP.
    fn default() -> Self {
        Intensity {
            max_restarts: 3,
            within: Duration::from_secs(5),
        }
    }
}

/// Delay before a restart: `initial`, doubled for each earlier restart in the intensity
/// window, at most `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// Delay of the first restart in a window.
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay of a restart preceded by `earlier` restarts in the window.
    pub fn delay(&self, earlier: u32) -> Duration {
        let factor = 1u32.checked_shl(earlier.min(20)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// How an agent supervises its own children.
///
/// ```
/// use std::time::Duration;
/// use toka_actors::{Intensity, Strategy, SupervisorSpec};
/// let spec = SupervisorSpec::new(Strategy::RestForOne)
///     .intensity(Intensity { max_restarts: 5, within: Duration::from_secs(10) });
/// assert_eq!(spec.strategy, Strategy::RestForOne);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorSpec {
    /// Which children restart together.
    pub strategy: Strategy,
    /// When to give up and escalate.
    pub intensity: Intensity,
    /// Optional delay before restarts.
    pub backoff: Option<Backoff>,
}

impl SupervisorSpec {
    /// A spec with `strategy` and the default intensity (3 in 5 s), no backoff.
    pub fn new(strategy: Strategy) -> Self {
        SupervisorSpec {
            strategy,
            ..SupervisorSpec::default()
        }
    }

    /// Sets the restart intensity.
    #[must_use]
    pub fn intensity(mut self, intensity: Intensity) -> Self {
        self.intensity = intensity;
        self
    }

    /// Sets a restart backoff.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }
}

/// Where a child runs (see [`remote`](crate::remote)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// In its parent's runtime (the default).
    #[default]
    WithParent,
    /// Wherever the runtime's [`Remote`](crate::remote::Remote) places its id: another runtime (a remote
    /// child), or its parent's when there is no [`Remote`](crate::remote::Remote) or the id belongs here.
    Anywhere,
}

/// Everything about starting one agent except its arguments: recorded in the journal with
/// the spawn, so that recovery starts it the same way.
///
/// ```
/// use toka_actors::{Restart, SpawnSpec, Strategy, SupervisorSpec};
/// let spec = SpawnSpec::new("orders")?
///     .restart(Restart::Transient)
///     .supervise(SupervisorSpec::new(Strategy::OneForAll))
///     .snapshot_every(500);
/// assert!(spec.durable);
/// # Ok::<(), toka_actors::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnSpec {
    /// The agent's id.
    pub id: AgentId,
    /// When its supervisor restarts it.
    pub restart: Restart,
    /// Durable agents journal their messages and are recovered after a restart; transient
    /// ones are not journaled and restart with fresh state.
    pub durable: bool,
    /// How it supervises its own children.
    pub supervision: SupervisorSpec,
    /// Take a snapshot every this many handled messages (if the agent implements
    /// [`Agent::snapshot`](crate::Agent::snapshot)); `None`: the runtime's default.
    pub snapshot_every: Option<u64>,
    /// Attempts at one message before it is dead-lettered; `None`: the runtime's default.
    pub max_attempts: Option<u32>,
    /// Where a child runs: in its parent's runtime, or wherever the runtime's
    /// [`Remote`](crate::remote::Remote) places it (see [`remote`](crate::remote)).
    /// Ignored for top-level agents.
    #[serde(default)]
    pub placement: Placement,
}

impl SpawnSpec {
    /// A durable, permanent agent with id `id`, one-for-one supervision of its children.
    ///
    /// # Errors
    /// [`Error::InvalidId`](crate::Error::InvalidId) for a malformed id.
    pub fn new(id: impl AsRef<str>) -> Result<Self, crate::Error> {
        Ok(Self::with_id(AgentId::new(id)?))
    }

    /// As [`SpawnSpec::new`], from a validated id.
    pub fn with_id(id: AgentId) -> Self {
        SpawnSpec {
            id,
            restart: Restart::Permanent,
            durable: true,
            supervision: SupervisorSpec::default(),
            snapshot_every: None,
            max_attempts: None,
            placement: Placement::WithParent,
        }
    }

    /// Sets the restart type.
    #[must_use]
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Makes the agent transient: not journaled, fresh state after every restart.
    #[must_use]
    pub fn transient(mut self) -> Self {
        self.durable = false;
        self
    }

    /// Sets how the agent supervises its children.
    #[must_use]
    pub fn supervise(mut self, supervision: SupervisorSpec) -> Self {
        self.supervision = supervision;
        self
    }

    /// Snapshots every `messages` handled messages.
    #[must_use]
    pub fn snapshot_every(mut self, messages: u64) -> Self {
        self.snapshot_every = Some(messages.max(1));
        self
    }

    /// Lets a child run in another runtime: wherever the runtime's
    /// [`Remote`](crate::remote::Remote) places its id (a remote child, supervised across
    /// runtimes; see [`remote`](crate::remote)).
    #[must_use]
    pub fn anywhere(mut self) -> Self {
        self.placement = Placement::Anywhere;
        self
    }

    /// Dead-letters a message after it made the agent fail `attempts` times.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
        };
        let delays: Vec<_> = (0..5).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [10, 20, 40, 50, 50]);
        assert_eq!(b.delay(u32::MAX), Duration::from_millis(50));
    }
}

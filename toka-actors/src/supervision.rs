//! OTP supervision decisions, kept free of actors so they can be tested alone: the restart
//! intensity window and which children a strategy restarts.
//!
//! The actor side (stopping and respawning) lives in `agent_actor`; these functions only
//! decide.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::{AgentId, Intensity, Strategy, SupervisorSpec};

/// The restarts a supervisor made recently.
#[derive(Debug, Default)]
pub(crate) struct RestartWindow {
    restarts: VecDeque<Instant>,
}

/// What a supervisor does about a failed child.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Stop `stop` (newest first), then restart `restart` (in start order) after `delay`.
    Restart {
        stop: Vec<AgentId>,
        restart: Vec<AgentId>,
        delay: Duration,
    },
    /// Too many restarts: stop every child and fail.
    Escalate { restarts: u32, within: Duration },
}

impl RestartWindow {
    /// Records a restart at `now`; returns how many restarts the window holds before this
    /// one, or `None` if this one exceeds the intensity.
    pub(crate) fn admit(&mut self, now: Instant, intensity: Intensity) -> Option<u32> {
        while let Some(&oldest) = self.restarts.front() {
            if now.saturating_duration_since(oldest) >= intensity.within {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        let earlier = u32::try_from(self.restarts.len()).unwrap_or(u32::MAX);
        if earlier >= intensity.max_restarts {
            return None;
        }
        self.restarts.push_back(now);
        Some(earlier)
    }
}

/// Decides what to do when `failed`, one of `children` (in start order), failed.
pub(crate) fn plan(
    spec: &SupervisorSpec,
    window: &mut RestartWindow,
    now: Instant,
    children: &[AgentId],
    failed: &AgentId,
) -> Plan {
    let Some(earlier) = window.admit(now, spec.intensity) else {
        return Plan::Escalate {
            restarts: spec.intensity.max_restarts,
            within: spec.intensity.within,
        };
    };
    let delay = spec.backoff.map(|b| b.delay(earlier)).unwrap_or_default();
    let at = children.iter().position(|c| c == failed);
    let restart: Vec<AgentId> = match (spec.strategy, at) {
        (_, None) | (Strategy::OneForOne, _) => vec![failed.clone()],
        (Strategy::OneForAll, Some(_)) => children.to_vec(),
        (Strategy::RestForOne, Some(at)) => children[at..].to_vec(),
    };
    let stop = restart
        .iter()
        .rev()
        .filter(|c| *c != failed)
        .cloned()
        .collect();
    Plan::Restart {
        stop,
        restart,
        delay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backoff;

    fn ids(names: &[&str]) -> Vec<AgentId> {
        names.iter().map(|n| AgentId::new(n).unwrap()).collect()
    }

    #[test]
    fn strategies_pick_the_right_children() {
        let children = ids(&["a", "b", "c"]);
        let now = Instant::now();
        let cases = [
            (Strategy::OneForOne, vec![], vec!["b"]),
            (Strategy::OneForAll, vec!["c", "a"], vec!["a", "b", "c"]),
            (Strategy::RestForOne, vec!["c"], vec!["b", "c"]),
        ];
        for (strategy, stop, restart) in cases {
            let spec = SupervisorSpec::new(strategy);
            let got = plan(
                &spec,
                &mut RestartWindow::default(),
                now,
                &children,
                &children[1],
            );
            assert_eq!(
                got,
                Plan::Restart {
                    stop: ids(&stop),
                    restart: ids(&restart),
                    delay: Duration::ZERO
                },
                "{strategy:?}"
            );
        }
    }

    #[test]
    fn intensity_allows_max_restarts_in_the_window_then_escalates() {
        let spec = SupervisorSpec::default(); // 3 in 5 s
        let children = ids(&["a"]);
        let mut window = RestartWindow::default();
        let t0 = Instant::now();
        for i in 0..3 {
            let at = t0 + Duration::from_secs(i);
            assert!(matches!(
                plan(&spec, &mut window, at, &children, &children[0]),
                Plan::Restart { .. }
            ));
        }
        assert!(matches!(
            plan(
                &spec,
                &mut window,
                t0 + Duration::from_secs(3),
                &children,
                &children[0]
            ),
            Plan::Escalate { restarts: 3, .. }
        ));
        // Once the oldest restart leaves the window, one more is allowed.
        let mut window = RestartWindow::default();
        for i in 0..3 {
            window.admit(t0 + Duration::from_secs(i), spec.intensity);
        }
        assert_eq!(
            window.admit(t0 + Duration::from_secs(5), spec.intensity),
            Some(2)
        );
    }

    #[test]
    fn backoff_grows_with_restarts_in_the_window() {
        let spec = SupervisorSpec::default().backoff(Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        });
        let children = ids(&["a"]);
        let mut window = RestartWindow::default();
        let now = Instant::now();
        let delays: Vec<_> = (0..3)
            .map(
                |_| match plan(&spec, &mut window, now, &children, &children[0]) {
                    Plan::Restart { delay, .. } => delay.as_millis(),
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        assert_eq!(delays, [100, 200, 400]);
    }
}

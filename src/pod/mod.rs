//! Pod state and the pure rules that drive it: which container to start
//! next, when a crashed one may restart, and what phase the pod is in.
//! Nothing here performs I/O; the worker executes what these functions say.

pub mod error;
pub mod status;

use std::time::{Duration, Instant};

pub use error::PodError;
pub use status::{ContainerState, ContainerStatus, Event, Phase, PodStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn parse(s: Option<&str>) -> RestartPolicy {
        match s {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether a container that exited with `code` is started again.
    pub fn restarts(self, code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// The kubelet's crash-loop backoff for one container: the first restart is
/// immediate, then 10 s, 20 s, 40 s ... up to 5 min; a container left alone
/// for twice the maximum (it ran for 10 min) starts over.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Option<Duration>,
    last_start: Option<Instant>,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            current: None,
            last_start: None,
        }
    }

    fn expired(&self, at: Instant) -> bool {
        self.last_start
            .is_none_or(|last| at.saturating_duration_since(last) > self.max * 2)
    }

    /// When a container that stopped (or failed to start) at `finished` may
    /// start again.
    pub fn restart_at(&self, finished: Instant) -> Instant {
        match self.current {
            Some(d) if !self.expired(finished) => finished + d,
            _ => finished,
        }
    }

    /// Records a start at `now`, lengthening the next wait.
    pub fn record_start(&mut self, now: Instant) {
        self.current = Some(match self.current {
            Some(d) if !self.expired(now) => (d * 2).min(self.max),
            _ => self.initial,
        });
        self.last_start = Some(now);
    }

    /// The wait that applies now (for messages).
    pub fn current(&self) -> Duration {
        self.current.unwrap_or_default()
    }
}

/// What the planner needs to know of one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotView {
    pub init: bool,
    pub running: bool,
    /// Exit code of the last attempt, if one ended.
    pub exit_code: Option<i32>,
    /// Earliest time of the next start (backoff); `None` for "now".
    pub not_before: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Containers to start now, by index.
    pub start: Vec<usize>,
    /// When to look again if nothing else happens.
    pub wake_at: Option<Instant>,
    pub phase: Phase,
}

/// Decides, from the containers' states, what to start and what phase the
/// pod is in. Init containers run one at a time, in order, each to success,
/// before any app container; app containers then start together and restart
/// per `policy` (the kubelet's computePodActions, without sandbox changes).
pub fn plan(slots: &[SlotView], policy: RestartPolicy, now: Instant) -> Plan {
    let mut out = Plan {
        start: vec![],
        wake_at: None,
        phase: Phase::Pending,
    };
    let wait = |at: Instant, out: &mut Plan, i: usize| {
        if at <= now {
            out.start.push(i);
        } else {
            out.wake_at = Some(out.wake_at.map_or(at, |w| w.min(at)));
        }
    };
    // Init containers, in order.
    for (i, s) in slots.iter().enumerate().filter(|(_, s)| s.init) {
        match (s.running, s.exit_code) {
            (_, Some(0)) if !s.running => continue,
            (true, _) => return out,
            (false, None) => {
                wait(s.not_before.unwrap_or(now), &mut out, i);
                return out;
            }
            (false, Some(_)) => {
                // A failed init container is retried unless the pod never
                // restarts anything, which fails the pod.
                if policy == RestartPolicy::Never {
                    out.phase = Phase::Failed;
                } else {
                    wait(s.not_before.unwrap_or(now), &mut out, i);
                }
                return out;
            }
        }
    }
    let apps: Vec<(usize, &SlotView)> = slots.iter().enumerate().filter(|(_, s)| !s.init).collect();
    let mut never_started = false;
    let mut running = false;
    let mut will_restart = false;
    for (i, s) in &apps {
        if s.running {
            running = true;
            continue;
        }
        match s.exit_code {
            None => {
                never_started = true;
                wait(s.not_before.unwrap_or(now), &mut out, *i);
            }
            Some(code) if policy.restarts(code) => {
                will_restart = true;
                wait(s.not_before.unwrap_or(now), &mut out, *i);
            }
            Some(_) => {}
        }
    }
    out.phase = if never_started {
        Phase::Pending
    } else if running || will_restart {
        Phase::Running
    } else if apps.iter().all(|(_, s)| s.exit_code == Some(0)) {
        Phase::Succeeded
    } else {
        Phase::Failed
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn backoff_sequence_matches_the_kubelet() {
        let mut b = Backoff::new(10 * S, 300 * S);
        let t0 = Instant::now();
        // The first start is not a restart and is not recorded. Each attempt
        // runs 1 s; the waits before restarts 1..=8:
        let mut now = t0;
        let mut waits = vec![];
        for _ in 0..8 {
            let finished = now + S;
            let at = b.restart_at(finished);
            waits.push((at - finished).as_secs());
            b.record_start(at);
            now = at;
        }
        assert_eq!(waits, [0, 10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn backoff_resets_after_ten_quiet_minutes() {
        let mut b = Backoff::new(10 * S, 300 * S);
        let t0 = Instant::now();
        b.record_start(t0);
        b.record_start(t0 + 20 * S);
        assert_eq!(b.current(), 20 * S);
        let finished = t0 + 20 * S + 601 * S;
        assert_eq!(b.restart_at(finished), finished);
        b.record_start(finished);
        assert_eq!(b.current(), 10 * S);
    }

    fn slot(init: bool, running: bool, exit: Option<i32>) -> SlotView {
        SlotView {
            init,
            running,
            exit_code: exit,
            not_before: None,
        }
    }

    #[test]
    fn init_containers_run_in_order_first() {
        let now = Instant::now();
        let p = plan(
            &[
                slot(true, false, None),
                slot(true, false, None),
                slot(false, false, None),
            ],
            RestartPolicy::Always,
            now,
        );
        assert_eq!(p.start, [0]);
        assert_eq!(p.phase, Phase::Pending);
        let p = plan(
            &[
                slot(true, false, Some(0)),
                slot(true, true, None),
                slot(false, false, None),
            ],
            RestartPolicy::Always,
            now,
        );
        assert!(p.start.is_empty());
        let p = plan(
            &[
                slot(true, false, Some(0)),
                slot(true, false, Some(0)),
                slot(false, false, None),
                slot(false, false, None),
            ],
            RestartPolicy::Always,
            now,
        );
        assert_eq!(p.start, [2, 3]);
        let p = plan(
            &[slot(true, false, Some(1)), slot(false, false, None)],
            RestartPolicy::Never,
            now,
        );
        assert_eq!((p.start.len(), p.phase), (0, Phase::Failed));
        let p = plan(
            &[slot(true, false, Some(1)), slot(false, false, None)],
            RestartPolicy::OnFailure,
            now,
        );
        assert_eq!(p.start, [0]);
    }

    #[test]
    fn restart_policies_and_phases() {
        let now = Instant::now();
        let done = |code| slot(false, false, Some(code));
        let p = plan(&[done(0), done(0)], RestartPolicy::Never, now);
        assert_eq!((p.start.len(), p.phase), (0, Phase::Succeeded));
        let p = plan(&[done(0), done(2)], RestartPolicy::Never, now);
        assert_eq!(p.phase, Phase::Failed);
        let p = plan(&[done(0), done(2)], RestartPolicy::OnFailure, now);
        assert_eq!((p.start.clone(), p.phase), (vec![1], Phase::Running));
        let p = plan(
            &[done(0), slot(false, true, None)],
            RestartPolicy::Always,
            now,
        );
        assert_eq!((p.start.clone(), p.phase), (vec![0], Phase::Running));
        let later = SlotView {
            not_before: Some(now + S),
            ..done(1)
        };
        let p = plan(&[later], RestartPolicy::Always, now);
        assert_eq!(
            (p.start.len(), p.wake_at, p.phase),
            (0, Some(now + S), Phase::Running)
        );
    }
}

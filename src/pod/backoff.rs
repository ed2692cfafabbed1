//! The two waiting rules of the agent. [`Backoff`] is the kubelet's
//! crash-loop (and image pull) back-off of one container; [`Retry`] is the
//! one policy for everything else that failed for a reason that may pass
//! (containerd down, a mount that timed out, a busy cgroup): each caller
//! asks it how long to wait, no caller invents its own doubling.

use std::time::{Duration, Instant};

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

/// Requeue after a transient failure: `initial`, doubling up to `max`, and
/// back to `initial` once the operation succeeds (kube-rs's
/// `Action::requeue_after` chosen by an error policy).
#[derive(Debug, Clone)]
pub struct Retry {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Retry {
    pub fn new(initial: Duration, max: Duration) -> Retry {
        Retry {
            initial,
            max,
            next: initial,
        }
    }

    /// containerd calls that failed because containerd is away.
    pub fn runtime() -> Retry {
        Retry::new(Duration::from_millis(500), Duration::from_secs(30))
    }

    /// Host state left behind by a teardown (a busy mount, a cgroup that
    /// still holds a process): retried until it goes.
    pub fn teardown() -> Retry {
        Retry::new(Duration::from_secs(2), Duration::from_secs(300))
    }

    /// How long to wait after one more failure.
    pub fn failed(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn succeeded(&mut self) {
        self.next = self.initial;
    }
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

    #[test]
    fn retry_doubles_to_its_cap_and_resets_on_success() {
        let mut r = Retry::new(S, 5 * S);
        let waits: Vec<u64> = (0..5).map(|_| r.failed().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        r.succeeded();
        assert_eq!(r.failed(), S);
    }
}

//! One probe of one container, run on its period until the container
//! stops (the worker aborts the task) or the probe gives up on it
//! (liveness and startup then hold, as the kubelet's worker does, until a
//! new container starts with new lanes). A task, not a thread: a probe
//! waiting on its timeout blocks nobody else.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::handler::{self, Context, Target};
use super::metrics::{ProbeLabels, ProbeMetrics};
use super::netns::NetnsSockets;
use super::{Kind, Outcome, ProbeSpec, Tracker};
use crate::runtime::Runtime;

/// What a lane tells the worker: every result but a plain success, and
/// every change of verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub kind: Kind,
    pub outcome: Outcome,
    /// The probe's verdict changed to this (ready, alive, started).
    pub verdict: Option<bool>,
}

pub struct Lane {
    pub spec: ProbeSpec,
    pub rt: Arc<dyn Runtime>,
    pub sockets: Arc<NetnsSockets>,
    pub container_id: String,
    pub target: Target,
    pub metrics: Arc<ProbeMetrics>,
    pub labels: ProbeLabels,
    /// Fraction of a period the first probe waits (the kubelet's random
    /// start, so that pods started together do not probe together);
    /// readiness is probed at once, as the kubelet triggers it when a
    /// container starts.
    pub jitter: f64,
}

/// When the first probe is due, for a container started at `started`.
pub fn first_probe(spec: &ProbeSpec, started: Instant, jitter: f64) -> Instant {
    let wait = if spec.kind == Kind::Readiness {
        Duration::ZERO
    } else {
        spec.timing.period.mul_f64(jitter.clamp(0.0, 1.0))
    };
    started + spec.timing.initial_delay + wait
}

/// A random fraction in [0, 1).
pub fn random_jitter() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 0.0;
    }
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

/// Runs of a probe that errored before its result is given up (the
/// kubelet's `maxProbeRetries`).
const MAX_PROBE_RETRIES: usize = 3;

impl Lane {
    /// Runs until aborted or until a liveness or startup verdict is in.
    /// `started` holds liveness and readiness back while a startup probe
    /// has not succeeded; the startup lane is given its sender.
    pub async fn run(
        self,
        mut started: watch::Receiver<bool>,
        started_tx: Option<watch::Sender<bool>>,
        report: impl Fn(Report) + Send,
    ) {
        let kind = self.spec.kind;
        let period = self.spec.timing.period;
        let mut tracker = Tracker::new(kind, self.spec.timing);
        let mut next = first_probe(&self.spec, Instant::now(), self.jitter);
        loop {
            tokio::time::sleep_until(next).await;
            if kind != Kind::Startup && !*started.borrow_and_update() {
                if started.wait_for(|s| *s).await.is_err() {
                    return;
                }
                let now = Instant::now();
                if kind == Kind::Readiness {
                    next = now;
                } else {
                    while next <= now {
                        next += period;
                    }
                }
                continue;
            }
            let t = Instant::now();
            let ctx = Context {
                rt: self.rt.as_ref(),
                container_id: &self.container_id,
                target: &self.target,
                sockets: &self.sockets,
            };
            // As the kubelet's runProbeWithRetries: a probe that could not
            // be run is tried again at once, up to three times in all.
            let mut outcome = handler::run(&self.spec, &ctx).await;
            for _ in 1..MAX_PROBE_RETRIES {
                if !matches!(outcome, Outcome::Error(_)) {
                    break;
                }
                outcome = handler::run(&self.spec, &ctx).await;
            }
            // The kubelet throws an errored run away before its metrics.
            if !matches!(outcome, Outcome::Error(_)) {
                self.metrics
                    .observe(&self.labels, kind, &outcome, t.elapsed().as_secs_f64());
            }
            let verdict = tracker.record(&outcome);
            if outcome != Outcome::Success || verdict.is_some() {
                report(Report {
                    kind,
                    outcome,
                    verdict,
                });
            }
            match (kind, verdict) {
                (Kind::Startup, Some(true)) => {
                    if let Some(tx) = &started_tx {
                        tx.send_replace(true);
                    }
                    return;
                }
                (Kind::Liveness | Kind::Startup, Some(false)) => return,
                _ => {}
            }
            next = (next + period).max(Instant::now());
        }
    }
}

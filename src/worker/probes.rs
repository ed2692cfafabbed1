//! The worker's side of probes: lanes started with each container and
//! aborted with it, and what their reports change: the container's
//! `ready` and `started`, `Unhealthy` events, and, for a liveness or
//! startup probe that gave up, the container marked unhealthy so that the
//! planner stops it (and restarts it per restartPolicy, with back-off).

use std::sync::Arc;

use tracing::info;

use super::{Msg, Worker};
use crate::pod::RestartPolicy;
use crate::pod::error::{event, reason};
use crate::probe::handler::Target;
use crate::probe::lane::{Lane, Report, random_jitter};
use crate::probe::metrics::ProbeLabels;
use crate::probe::{Kind, Outcome, ProbeSpec};

/// A slot's probes and where they stand for its current container.
pub(super) struct SlotProbes {
    pub specs: Vec<ProbeSpec>,
    lanes: Vec<tokio::task::AbortHandle>,
    /// Readiness verdict; `None` without a readiness probe.
    pub ready: Option<bool>,
    /// Past the startup probe (true without one).
    pub started: bool,
    /// Why the container is being killed (the `Killing` event's message).
    pub kill_message: Option<String>,
}

impl SlotProbes {
    pub fn new(specs: Vec<ProbeSpec>) -> SlotProbes {
        let mut p = SlotProbes {
            specs,
            lanes: vec![],
            ready: None,
            started: true,
            kill_message: None,
        };
        p.reset();
        p
    }

    fn has(&self, kind: Kind) -> bool {
        self.specs.iter().any(|s| s.kind == kind)
    }

    /// Stops the lanes; the verdicts go back to "not yet".
    pub fn stop(&mut self) {
        for l in self.lanes.drain(..) {
            l.abort();
        }
        self.reset();
    }

    fn reset(&mut self) {
        self.ready = self.has(Kind::Readiness).then_some(false);
        self.started = !self.has(Kind::Startup);
    }

    /// `ready` of a running container.
    pub fn ready(&self) -> bool {
        self.started && self.ready.unwrap_or(true)
    }
}

impl Drop for SlotProbes {
    fn drop(&mut self) {
        for l in self.lanes.drain(..) {
            l.abort();
        }
    }
}

impl Worker {
    fn probe_labels(&self, container: &str) -> ProbeLabels {
        ProbeLabels {
            container: container.to_string(),
            pod: self.pod.name.clone(),
            namespace: self.pod.namespace.clone(),
            pod_uid: self.pod.uid.clone(),
        }
    }

    /// Starts the probes of slot `i`, whose container `id` just started
    /// (or was found running).
    pub(super) fn start_probes(&mut self, i: usize, id: &str) {
        self.slots[i].probes.stop();
        if self.slots[i].probes.specs.is_empty() {
            return;
        }
        let target = Target {
            pod_ip: self.status.pod_ip(),
            netns: self.setup.sandbox.as_ref().and_then(|c| c.net.clone()),
        };
        let labels = self.probe_labels(&self.slots[i].spec.name);
        let has_startup = self.slots[i].probes.has(Kind::Startup);
        let (started_tx, started_rx) = tokio::sync::watch::channel(!has_startup);
        let mut started_tx = Some(started_tx);
        let mut lanes = vec![];
        for spec in self.slots[i].probes.specs.clone() {
            let lane = Lane {
                rt: Arc::clone(&self.env.rt),
                sockets: Arc::clone(&self.env.probe_sockets),
                container_id: id.to_string(),
                target: target.clone(),
                metrics: Arc::clone(&self.env.metrics.probes),
                labels: labels.clone(),
                jitter: random_jitter(),
                spec,
            };
            let tx = self.tx.clone();
            let owner = id.to_string();
            let report = move |report: Report| {
                let _ = tx.send(Msg::Probe {
                    slot: i,
                    id: owner.clone(),
                    report,
                });
            };
            let sender = if lane.spec.kind == Kind::Startup {
                started_tx.take()
            } else {
                None
            };
            let rx = started_rx.clone();
            lanes.push(tokio::spawn(lane.run(rx, sender, report)).abort_handle());
        }
        self.slots[i].probes.lanes = lanes;
    }

    /// What a probe of slot `i`'s container `id` found.
    pub(super) fn probed(&mut self, i: usize, id: &str, report: Report) {
        let slot = &self.slots[i];
        if slot.current.as_deref() != Some(id) || !slot.running || slot.stopping.is_some() {
            return;
        }
        let name = slot.spec.name.clone();
        let kind = report.kind.as_str();
        match &report.outcome {
            Outcome::Success => {}
            Outcome::Warning(m) => self.event(
                event::WARNING,
                reason::PROBE_WARNING,
                format!("{kind} probe warning: {m}"),
            ),
            Outcome::Failure(m) => self.event(
                event::WARNING,
                reason::UNHEALTHY,
                format!("{kind} probe failed: {m}"),
            ),
            Outcome::Error(m) => self.event(
                event::WARNING,
                reason::UNHEALTHY,
                format!("{kind} probe errored and resulted in unknown state: {m}"),
            ),
        }
        let Some(verdict) = report.verdict else {
            return;
        };
        match (report.kind, verdict) {
            (Kind::Readiness, _) => {
                self.slots[i].probes.ready = Some(verdict);
                info!(pod = %self.pod.key(), container = %name, ready = verdict, "container readiness");
            }
            (Kind::Startup, true) => {
                self.slots[i].probes.started = true;
                info!(pod = %self.pod.key(), container = %name, "container started (startup probe)");
            }
            // A liveness verdict only ever changes to "failed".
            (Kind::Liveness, true) => {}
            (Kind::Liveness | Kind::Startup, false) => {
                // The kubelet kills with the probe's grace period when it
                // has one, else the pod's (kuberuntime killContainer).
                let probe_grace = self.slots[i]
                    .probes
                    .specs
                    .iter()
                    .find(|s| s.kind == report.kind)
                    .and_then(|s| s.termination_grace);
                let grace = probe_grace.unwrap_or_else(|| self.grace_period());
                let restart = if self.policy == RestartPolicy::Never {
                    ""
                } else {
                    ", will be restarted"
                };
                let slot = &mut self.slots[i];
                slot.unhealthy = Some(grace);
                slot.probes.kill_message = Some(format!(
                    "Container {name} failed {} probe{restart}",
                    kind.to_lowercase()
                ));
            }
        }
    }

    /// A container stopped: its probes stop with it.
    pub(super) fn stop_probes(&mut self, i: usize) {
        self.slots[i].probes.stop();
    }

    /// The pod is going: its probe series go too.
    pub(super) fn forget_probes(&mut self) {
        for i in 0..self.slots.len() {
            self.slots[i].probes.stop();
            if !self.slots[i].probes.specs.is_empty() {
                let labels = self.probe_labels(&self.slots[i].spec.name);
                self.env.metrics.probes.forget(&labels);
            }
        }
    }
}

/// The probes of a container, resolved; what cannot be resolved (only
/// what validation refuses) is returned as messages.
pub(super) fn resolve(c: &k8s_openapi::api::core::v1::Container) -> (Vec<ProbeSpec>, Vec<String>) {
    let mut specs = vec![];
    let mut problems = vec![];
    for r in ProbeSpec::all_of(c) {
        match r {
            Ok(s) => specs.push(s),
            Err(e) => problems.push(format!("container {}: probe not run: {e}", c.name)),
        }
    }
    (specs, problems)
}

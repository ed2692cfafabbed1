//! What a pod needs next, decided from what is observed of it: the
//! kubelet's `computePodActions` and the order of its `SyncPod` (pod cgroup,
//! sandbox, volumes, init containers one by one, app containers together),
//! plus termination. Pure: the worker's executor performs the actions,
//! observes what happened and asks again.
//!
//! One step is taken in parallel where the kubelet takes it in sequence:
//! the pod network's ADD (`RunPodSandbox` returns only once it is done)
//! runs while the containers that do not need the pod's address are
//! created (snapshot, container, `runc create`: the task joins the pinned
//! network namespace by path and waits). No container starts before the
//! ADD has succeeded, so what a started container sees (its address,
//! /etc/hosts, the downward API) is what the kubelet would give it; a
//! failed ADD removes what was created.

use std::time::{Duration, Instant};

use super::{Phase, RestartPolicy};

/// After SIGKILL, how long to wait for the exit before tearing down anyway.
pub const KILL_WAIT: Duration = Duration::from_secs(10);

/// One step for the executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the pod's cgroup and write its limits.
    EnsureCgroup,
    /// Create (or find again) the pod's namespaces and managed files.
    EnsureSandbox,
    /// Attach the pod's network namespace (CNI ADD, or the result kept
    /// from before a restart) and give the pod its addresses.
    AttachNetwork,
    /// Set up these volumes (indices into the pod's resolved volumes).
    Mount(Vec<usize>),
    /// Take over what an earlier run of the agent left in containerd.
    Adopt,
    /// Create these containers without starting them (image as the pull
    /// policy says, container, snapshot, task), while the network is being
    /// attached.
    Create(Vec<usize>),
    /// Start these containers (indices of slots): image as the pull policy
    /// says, then create (unless a `Create` did) and start. Only app
    /// containers are ever started together.
    Start(Vec<usize>),
    /// SIGTERM to a running container, SIGKILL once `grace` has passed.
    Stop { slot: usize, grace: Duration },
    /// The grace period of a stop is over.
    Kill(usize),
    /// Remove containers, sandbox, volumes, cgroups and logs; the last step.
    Teardown,
}

/// Progress of the pod-level setup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupView {
    /// The pod's definition cannot be run as it is (a missing object): it
    /// waits for its manifest or objects to change.
    pub blocked: bool,
    pub cgroup: bool,
    pub sandbox: bool,
    /// Volumes not set up yet.
    pub unmounted: Vec<usize>,
    pub adopted: bool,
    pub network: NetworkView,
    /// After a failed step, not before this time.
    pub retry_at: Option<Instant>,
}

/// The pod network as the planner sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NetworkView {
    /// Attached, or nothing to attach (`hostNetwork`, loopback only).
    #[default]
    Ready,
    /// To be attached: the ADD runs while the containers that may start
    /// are created.
    Pending,
    /// The last attach failed: the next one runs alone, before anything is
    /// created, so that a pod whose network keeps failing does not create
    /// and remove containers at every try.
    Failed,
}

impl SetupView {
    fn done(&self) -> bool {
        self.cgroup && self.sandbox && self.unmounted.is_empty() && self.adopted
    }
}

/// A stop in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopView {
    /// When SIGKILL is due (SIGTERM was sent grace earlier).
    pub kill_at: Instant,
    pub killed: bool,
}

/// What the planner needs to know of one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotView {
    pub init: bool,
    pub running: bool,
    /// Created (its task made by `runc create`), not started yet.
    pub created: bool,
    /// Its environment holds the pod's address (`status.podIP` through the
    /// downward API): it is created only once the network is attached.
    pub needs_pod_ip: bool,
    /// Exit code of the last attempt, if one ended.
    pub exit_code: Option<i32>,
    /// Earliest time of the next start (backoff); `None` for "now".
    pub not_before: Option<Instant>,
    /// A liveness or startup probe gave up on the running container: stop
    /// it with this grace period (it is then restarted per policy).
    pub unhealthy: Option<Duration>,
    pub stopping: Option<StopView>,
}

impl SlotView {
    /// A container that has not run yet.
    pub fn new(init: bool) -> SlotView {
        SlotView {
            init,
            running: false,
            created: false,
            needs_pod_ip: false,
            exit_code: None,
            not_before: None,
            unhealthy: None,
            stopping: None,
        }
    }
}

/// The pod as the planner sees it.
#[derive(Debug, Clone)]
pub struct PodView<'a> {
    pub setup: SetupView,
    pub slots: &'a [SlotView],
    pub policy: RestartPolicy,
    /// The pod is being removed, with this grace period.
    pub deleting: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// When to look again if nothing else happens.
    pub wake_at: Option<Instant>,
    pub phase: Phase,
}

impl Plan {
    fn wake(&mut self, at: Instant) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// Decides the next actions. Setup steps come one at a time, each after the
/// previous succeeded; a failed step is retried at `setup.retry_at`.
pub fn plan(pod: &PodView, now: Instant) -> Plan {
    let mut out = Plan {
        actions: vec![],
        wake_at: None,
        phase: Phase::Pending,
    };
    let starts = containers(pod.slots, pod.policy, now, &mut out);
    if let Some(grace) = pod.deleting {
        // Every running container is stopped, then the pod is torn down.
        let mut waiting = false;
        for (i, s) in pod.slots.iter().enumerate().filter(|(_, s)| s.running) {
            waiting |= stop(i, s, grace, now, &mut out);
        }
        if !waiting {
            out.actions = vec![Action::Teardown];
            out.wake_at = None;
        }
        return out;
    }
    let setup = &pod.setup;
    if setup.blocked {
        return out;
    }
    if !setup.done() {
        if let Some(at) = setup.retry_at.filter(|at| *at > now) {
            out.wake(at);
            return out;
        }
        let step = if !setup.cgroup {
            Action::EnsureCgroup
        } else if !setup.sandbox {
            Action::EnsureSandbox
        } else if !setup.unmounted.is_empty() {
            Action::Mount(setup.unmounted.clone())
        } else {
            Action::Adopt
        };
        out.actions.push(step);
        return out;
    }
    // A probe that gave up on a container stops it; its exit then restarts
    // it like any other (the kubelet kills, then computePodActions restarts).
    for (i, s) in pod.slots.iter().enumerate() {
        if let (true, Some(grace)) = (s.running, s.unhealthy) {
            stop(i, s, grace, now, &mut out);
        }
    }
    if setup.network == NetworkView::Ready {
        if !starts.is_empty() {
            out.actions.push(Action::Start(starts));
        }
        return out;
    }
    if let Some(at) = setup.retry_at.filter(|at| *at > now) {
        out.wake(at);
        return out;
    }
    out.actions.push(Action::AttachNetwork);
    if setup.network == NetworkView::Pending {
        let early: Vec<usize> = starts
            .into_iter()
            .filter(|&i| !pod.slots[i].created && !pod.slots[i].needs_pod_ip)
            .collect();
        if !early.is_empty() {
            out.actions.push(Action::Create(early));
        }
    }
    out
}

/// Adds the action a running container being stopped needs now; says
/// whether the container is still to be waited for.
fn stop(i: usize, s: &SlotView, grace: Duration, now: Instant, out: &mut Plan) -> bool {
    match s.stopping {
        None => {
            out.actions.push(Action::Stop { slot: i, grace });
            true
        }
        Some(st) if !st.killed => {
            if now >= st.kill_at {
                out.actions.push(Action::Kill(i));
            } else {
                out.wake(st.kill_at);
            }
            true
        }
        Some(st) => {
            let give_up = st.kill_at + KILL_WAIT;
            if now < give_up {
                out.wake(give_up);
            }
            now < give_up
        }
    }
}

/// Which containers may start now, and the pod's phase. Init containers run
/// one at a time, in order, each to success, before any app container; app
/// containers then start together and restart per `policy`.
fn containers(
    slots: &[SlotView],
    policy: RestartPolicy,
    now: Instant,
    out: &mut Plan,
) -> Vec<usize> {
    let mut start = vec![];
    let mut wait = |at: Instant, out: &mut Plan, i: usize| {
        if at <= now {
            start.push(i);
        } else {
            out.wake(at);
        }
    };
    for (i, s) in slots.iter().enumerate().filter(|(_, s)| s.init) {
        match (s.running, s.exit_code) {
            (_, Some(0)) if !s.running => continue,
            (true, _) => return start,
            (false, None) => {
                wait(s.not_before.unwrap_or(now), out, i);
                return start;
            }
            (false, Some(_)) => {
                // A failed init container is retried unless the pod never
                // restarts anything, which fails the pod.
                if policy == RestartPolicy::Never {
                    out.phase = Phase::Failed;
                } else {
                    wait(s.not_before.unwrap_or(now), out, i);
                }
                return start;
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
                wait(s.not_before.unwrap_or(now), out, *i);
            }
            Some(code) if policy.restarts(code) => {
                will_restart = true;
                wait(s.not_before.unwrap_or(now), out, *i);
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
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn slot(init: bool, running: bool, exit: Option<i32>) -> SlotView {
        SlotView {
            running,
            exit_code: exit,
            ..SlotView::new(init)
        }
    }

    fn ready() -> SetupView {
        SetupView {
            cgroup: true,
            sandbox: true,
            adopted: true,
            ..Default::default()
        }
    }

    fn run(slots: &[SlotView], policy: RestartPolicy, now: Instant) -> Plan {
        plan(
            &PodView {
                setup: ready(),
                slots,
                policy,
                deleting: None,
            },
            now,
        )
    }

    #[test]
    fn setup_goes_step_by_step_and_waits_after_a_failure() {
        let now = Instant::now();
        let slots = [slot(false, false, None)];
        let mut setup = SetupView {
            unmounted: vec![0, 2],
            network: NetworkView::Pending,
            ..Default::default()
        };
        let mut steps = vec![];
        loop {
            let p = plan(
                &PodView {
                    setup: setup.clone(),
                    slots: &slots,
                    policy: RestartPolicy::Always,
                    deleting: None,
                },
                now,
            );
            steps.push(p.actions.clone());
            match p.actions[0] {
                Action::EnsureCgroup => setup.cgroup = true,
                Action::EnsureSandbox => setup.sandbox = true,
                Action::Mount(_) => setup.unmounted.clear(),
                Action::Adopt => setup.adopted = true,
                Action::AttachNetwork => setup.network = NetworkView::Ready,
                _ => break,
            }
        }
        assert_eq!(
            steps,
            [
                vec![Action::EnsureCgroup],
                vec![Action::EnsureSandbox],
                vec![Action::Mount(vec![0, 2])],
                vec![Action::Adopt],
                vec![Action::AttachNetwork, Action::Create(vec![0])],
                vec![Action::Start(vec![0])],
            ]
        );
        let failed = SetupView {
            retry_at: Some(now + 2 * S),
            ..Default::default()
        };
        let p = plan(
            &PodView {
                setup: failed.clone(),
                slots: &slots,
                policy: RestartPolicy::Always,
                deleting: None,
            },
            now,
        );
        assert_eq!((p.actions.len(), p.wake_at), (0, Some(now + 2 * S)));
        let blocked = SetupView {
            blocked: true,
            ..Default::default()
        };
        let p = plan(
            &PodView {
                setup: blocked,
                slots: &slots,
                policy: RestartPolicy::Always,
                deleting: None,
            },
            now,
        );
        assert_eq!((p.actions.len(), p.wake_at), (0, None));
    }

    fn with_network(slots: &[SlotView], network: NetworkView, retry_at: Option<Instant>) -> Plan {
        let now = Instant::now();
        plan(
            &PodView {
                setup: SetupView {
                    network,
                    retry_at,
                    ..ready()
                },
                slots,
                policy: RestartPolicy::Always,
                deleting: None,
            },
            now,
        )
    }

    #[test]
    fn containers_are_created_while_the_network_attaches_and_start_after() {
        let fresh = slot(false, false, None);
        let needs_ip = SlotView {
            needs_pod_ip: true,
            ..fresh
        };
        let created = SlotView {
            created: true,
            ..fresh
        };
        // Those that need the pod's address wait for it; none starts.
        let p = with_network(&[fresh, needs_ip, fresh], NetworkView::Pending, None);
        assert_eq!(
            p.actions,
            [Action::AttachNetwork, Action::Create(vec![0, 2])]
        );
        assert_eq!(p.phase, Phase::Pending);
        // Already created: only the attach is left.
        let p = with_network(&[created, needs_ip], NetworkView::Pending, None);
        assert_eq!(p.actions, [Action::AttachNetwork]);
        // Attached: created or not, they start together.
        let p = with_network(&[created, needs_ip], NetworkView::Ready, None);
        assert_eq!(p.actions, [Action::Start(vec![0, 1])]);
        // Only the first init container is created early.
        let init = slot(true, false, None);
        let p = with_network(&[init, init, fresh], NetworkView::Pending, None);
        assert_eq!(p.actions, [Action::AttachNetwork, Action::Create(vec![0])]);
        // After a failed attach: the next one alone, once its wait is over.
        let now = Instant::now();
        let p = with_network(&[fresh], NetworkView::Failed, Some(now + 2 * S));
        assert_eq!((p.actions.len(), p.wake_at), (0, Some(now + 2 * S)));
        let p = with_network(&[fresh], NetworkView::Failed, None);
        assert_eq!(p.actions, [Action::AttachNetwork]);
        // A pod taken over after a restart finds its addresses again; its
        // running containers are left alone meanwhile.
        let p = with_network(&[slot(false, true, None)], NetworkView::Pending, None);
        assert_eq!(
            (p.actions.clone(), p.phase),
            (vec![Action::AttachNetwork], Phase::Running)
        );
    }

    #[test]
    fn init_containers_run_in_order_first() {
        let now = Instant::now();
        let p = run(
            &[
                slot(true, false, None),
                slot(true, false, None),
                slot(false, false, None),
            ],
            RestartPolicy::Always,
            now,
        );
        assert_eq!(p.actions, [Action::Start(vec![0])]);
        assert_eq!(p.phase, Phase::Pending);
        let p = run(
            &[
                slot(true, false, Some(0)),
                slot(true, true, None),
                slot(false, false, None),
            ],
            RestartPolicy::Always,
            now,
        );
        assert!(p.actions.is_empty());
        let p = run(
            &[
                slot(true, false, Some(0)),
                slot(true, false, Some(0)),
                slot(false, false, None),
                slot(false, false, None),
            ],
            RestartPolicy::Always,
            now,
        );
        assert_eq!(p.actions, [Action::Start(vec![2, 3])]);
        let p = run(
            &[slot(true, false, Some(1)), slot(false, false, None)],
            RestartPolicy::Never,
            now,
        );
        assert_eq!((p.actions.len(), p.phase), (0, Phase::Failed));
        let p = run(
            &[slot(true, false, Some(1)), slot(false, false, None)],
            RestartPolicy::OnFailure,
            now,
        );
        assert_eq!(p.actions, [Action::Start(vec![0])]);
    }

    #[test]
    fn restart_policies_and_phases() {
        let now = Instant::now();
        let done = |code| slot(false, false, Some(code));
        let p = run(&[done(0), done(0)], RestartPolicy::Never, now);
        assert_eq!((p.actions.len(), p.phase), (0, Phase::Succeeded));
        let p = run(&[done(0), done(2)], RestartPolicy::Never, now);
        assert_eq!(p.phase, Phase::Failed);
        let p = run(&[done(0), done(2)], RestartPolicy::OnFailure, now);
        assert_eq!(
            (p.actions.clone(), p.phase),
            (vec![Action::Start(vec![1])], Phase::Running)
        );
        let p = run(
            &[done(0), slot(false, true, None)],
            RestartPolicy::Always,
            now,
        );
        assert_eq!(
            (p.actions.clone(), p.phase),
            (vec![Action::Start(vec![0])], Phase::Running)
        );
        let later = SlotView {
            not_before: Some(now + S),
            ..done(1)
        };
        let p = run(&[later], RestartPolicy::Always, now);
        assert_eq!(
            (p.actions.len(), p.wake_at, p.phase),
            (0, Some(now + S), Phase::Running)
        );
    }

    #[test]
    fn deletion_stops_kills_after_grace_then_tears_down() {
        let now = Instant::now();
        let view = |slots: &[SlotView]| {
            plan(
                &PodView {
                    setup: ready(),
                    slots,
                    policy: RestartPolicy::Always,
                    deleting: Some(30 * S),
                },
                now,
            )
        };
        let running = slot(false, true, None);
        let p = view(&[running, slot(false, false, Some(1))]);
        assert_eq!(
            p.actions,
            [Action::Stop {
                slot: 0,
                grace: 30 * S
            }],
            "the exited one is not restarted"
        );
        let asked = SlotView {
            stopping: Some(StopView {
                kill_at: now + 30 * S,
                killed: false,
            }),
            ..running
        };
        let p = view(&[asked]);
        assert_eq!((p.actions.len(), p.wake_at), (0, Some(now + 30 * S)));
        let due = SlotView {
            stopping: Some(StopView {
                kill_at: now,
                killed: false,
            }),
            ..running
        };
        assert_eq!(view(&[due]).actions, [Action::Kill(0)]);
        let killed = SlotView {
            stopping: Some(StopView {
                kill_at: now,
                killed: true,
            }),
            ..running
        };
        assert_eq!(view(&[killed]).wake_at, Some(now + KILL_WAIT));
        let stuck = SlotView {
            stopping: Some(StopView {
                kill_at: now - KILL_WAIT,
                killed: true,
            }),
            ..running
        };
        assert_eq!(view(&[stuck]).actions, [Action::Teardown]);
        assert_eq!(
            view(&[slot(false, false, Some(0))]).actions,
            [Action::Teardown]
        );
        // Also when the setup never finished.
        let p = plan(
            &PodView {
                setup: SetupView::default(),
                slots: &[slot(false, false, None)],
                policy: RestartPolicy::Always,
                deleting: Some(S),
            },
            now,
        );
        assert_eq!(p.actions, [Action::Teardown]);
    }

    #[test]
    fn an_unhealthy_container_is_stopped_then_restarted_by_policy() {
        let now = Instant::now();
        let sick = SlotView {
            unhealthy: Some(5 * S),
            ..slot(false, true, None)
        };
        let p = run(&[sick], RestartPolicy::Always, now);
        assert_eq!(
            p.actions,
            [Action::Stop {
                slot: 0,
                grace: 5 * S
            }]
        );
        // Once it exited, the policy decides (the probe's verdict is gone
        // with the attempt).
        let p = run(&[slot(false, false, Some(137))], RestartPolicy::Always, now);
        assert_eq!(p.actions, [Action::Start(vec![0])]);
        let p = run(&[slot(false, false, Some(137))], RestartPolicy::Never, now);
        assert_eq!((p.actions.len(), p.phase), (0, Phase::Failed));
    }
}

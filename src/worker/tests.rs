//! The pod lifecycle without root: a real worker over the fakes of
//! `worker::fake`, on tokio's paused clock (sleeps advance it at once).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::fake::{FakeHost, FakeRuntime, env};
use super::{PodHandle, WorkerEnv, container_id, spawn};
use crate::manifest::{StaticPod, parse_file};
use crate::pod::{ContainerState, ContainerStatus, Phase, PodEntry, PodError};
use crate::runtime::{Exit, TaskState, labels};

struct Pod {
    rt: Arc<FakeRuntime>,
    host: Arc<FakeHost>,
    env: Arc<WorkerEnv>,
    uid: String,
    handle: Option<PodHandle>,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The spec of a pod with one container, `c`.
const ONE_CONTAINER: &str = "  containers:\n  - {name: c, image: busybox}\n";

fn manifest(spec: &str) -> StaticPod {
    let text = format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n{spec}");
    let p = parse_file(Path::new("/m/web.yaml"), &text, "node1");
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let pod = p.pods.into_iter().next().unwrap();
    let resolved = crate::volume::resolve::resolve(&pod, &Default::default());
    pod.with_resolved(resolved)
}

impl Pod {
    fn prepare(rt: FakeRuntime, host: FakeHost) -> (Arc<FakeRuntime>, Arc<FakeHost>, TempDir) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kl-worker-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let host = FakeHost {
            dir: dir.clone(),
            ..host
        };
        (Arc::new(rt), Arc::new(host), TempDir(dir))
    }

    fn run(pod: StaticPod, rt: FakeRuntime, host: FakeHost) -> Pod {
        let (rt, host, dir) = Pod::prepare(rt, host);
        let env = env(rt.clone(), host.clone());
        let uid = pod.uid.clone();
        let (crashed, _) = tokio::sync::mpsc::unbounded_channel();
        let handle = spawn(Arc::new(pod), env.clone(), None, crashed);
        Pod {
            rt,
            host,
            env,
            uid,
            handle: Some(handle),
            _dir: dir,
        }
    }

    /// Runs the pod of `spec` over a fresh fake runtime and host.
    fn start(spec: &str) -> Pod {
        Pod::run(manifest(spec), FakeRuntime::default(), FakeHost::default())
    }

    fn entry(&self) -> Option<PodEntry> {
        self.env.store.get(&self.uid)
    }

    fn container(&self, name: &str) -> ContainerStatus {
        let e = self.entry().expect("pod in the store");
        e.status
            .init_containers
            .iter()
            .chain(&e.status.containers)
            .find(|c| c.name == name)
            .cloned()
            .unwrap()
    }

    /// Waits (on the paused clock) until `cond` holds; panics after a
    /// virtual minute.
    async fn until(&self, what: &str, cond: impl Fn(&Pod) -> bool) {
        for _ in 0..600 {
            if cond(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "timed out waiting for {what}; calls {:?}; status {:?}",
            self.rt.calls(),
            self.entry().map(|e| e.status)
        );
    }

    /// Waits until the pod's status gives `reason`.
    async fn until_reason(&self, what: &str, reason: &str) {
        self.until(what, |p| {
            p.entry()
                .is_some_and(|e| e.status.reason.as_deref() == Some(reason))
        })
        .await;
    }

    fn running(&self, name: &str) -> bool {
        self.rt.running(name).is_some()
            && matches!(self.container(name).state, ContainerState::Running { .. })
    }
}

fn waiting_reason(c: &ContainerStatus) -> Option<(String, String)> {
    match &c.state {
        ContainerState::Waiting { reason, message } => Some((reason.clone(), message.clone())),
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn setup_runs_in_order_and_init_containers_one_at_a_time() {
    let pod = manifest(
        "  initContainers:\n  - {name: a, image: busybox}\n  - {name: b, image: busybox}\n  containers:\n  - {name: c, image: busybox}\n  - {name: d, image: busybox}\n  volumes:\n  - {name: scratch, emptyDir: {}}\n",
    );
    let p = Pod::run(pod, FakeRuntime::default(), FakeHost::default());
    p.until("a runs", |p| p.running("a")).await;
    assert_eq!(
        p.host.calls(),
        ["cgroup BestEffort", "sandbox", "mount scratch", "attach"]
    );
    assert_eq!(p.entry().unwrap().status.phase, Phase::Pending);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!((p.rt.created("b"), p.rt.created("c")), (0, 0));
    p.rt.exit("a", 0);
    p.until("b runs", |p| p.running("b")).await;
    assert_eq!(p.rt.created("c"), 0);
    p.rt.exit("b", 0);
    p.until("c and d run", |p| p.running("c") && p.running("d"))
        .await;
    p.until("phase Running", |p| {
        p.entry().unwrap().status.phase == Phase::Running
    })
    .await;
    assert!(matches!(
        p.container("a").state,
        ContainerState::Terminated { exit_code: 0, .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_failed_init_container_is_retried_and_fails_the_pod_under_never() {
    let spec = |policy: &str| {
        manifest(&format!(
            "  restartPolicy: {policy}\n  initContainers:\n  - {{name: a, image: busybox}}\n  containers:\n  - {{name: c, image: busybox}}\n"
        ))
    };
    let p = Pod::run(
        spec("OnFailure"),
        FakeRuntime::default(),
        FakeHost::default(),
    );
    p.until("a runs", |p| p.running("a")).await;
    p.rt.exit("a", 1);
    p.until("a runs again", |p| p.rt.created("a") == 2 && p.running("a"))
        .await;
    assert_eq!(p.rt.created("c"), 0);

    let p = Pod::run(spec("Never"), FakeRuntime::default(), FakeHost::default());
    p.until("a runs", |p| p.running("a")).await;
    p.rt.exit("a", 1);
    p.until("phase Failed", |p| {
        p.entry().unwrap().status.phase == Phase::Failed
    })
    .await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!((p.rt.created("a"), p.rt.created("c")), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_crash_looping_container_backs_off_as_the_kubelet_does() {
    let p = Pod::start(ONE_CONTAINER);
    p.until("c runs", |p| p.running("c")).await;
    // The first restart is immediate.
    p.rt.exit("c", 1);
    p.until("restart 1", |p| p.rt.created("c") == 2 && p.running("c"))
        .await;
    // Then 10 s, then 20 s.
    for (restart, wait) in [(2, 10), (3, 20)] {
        p.rt.exit("c", 1);
        p.until("back-off", |p| {
            waiting_reason(&p.container("c")).is_some_and(|(r, _)| r == "CrashLoopBackOff")
        })
        .await;
        let (_, message) = waiting_reason(&p.container("c")).unwrap();
        assert!(
            message.starts_with(&format!("back-off {wait}s restarting failed container=c")),
            "{message}"
        );
        let last = p.container("c").last_state.unwrap();
        assert!(matches!(
            last,
            ContainerState::Terminated { exit_code: 1, .. }
        ));
        tokio::time::sleep(Duration::from_secs(wait - 1)).await;
        assert_eq!(p.rt.created("c"), restart, "restarted before its back-off");
        p.until("restarted after the back-off", |p| {
            p.rt.created("c") == restart + 1 && p.running("c")
        })
        .await;
        assert_eq!(
            p.container("c").restart_count,
            u32::try_from(restart).unwrap()
        );
    }
    // The previous attempt's container goes once the next one runs.
    assert_eq!(p.rt.ids().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_oom_kill_is_reported_as_oomkilled_even_with_exit_code_zero() {
    let host = FakeHost::default();
    *host.oom_kills.lock().unwrap() = Some(1);
    let p = Pod::run(
        manifest("  restartPolicy: Never\n  containers:\n  - {name: c, image: busybox}\n"),
        FakeRuntime::default(),
        host,
    );
    p.until("c runs", |p| p.running("c")).await;
    // A shell whose child was killed may itself exit 0.
    p.rt.exit("c", 0);
    p.until("terminated", |p| {
        matches!(p.container("c").state, ContainerState::Terminated { .. })
    })
    .await;
    let ContainerState::Terminated { reason, .. } = p.container("c").state else {
        unreachable!()
    };
    assert_eq!(reason, "OOMKilled");
}

#[tokio::test(start_paused = true)]
async fn adoption_takes_over_what_an_earlier_run_left() {
    let pod = manifest(
        "  initContainers:\n  - {name: i, image: busybox}\n  containers:\n  - {name: c, image: busybox}\n  - {name: d, image: busybox}\n",
    );
    let uid = pod.uid.clone();
    let rt = FakeRuntime::default();
    let labels_of = |name: &str, attempt: u32| {
        HashMap::from([
            (labels::POD_UID.to_string(), uid.clone()),
            (labels::CONTAINER_NAME.to_string(), name.to_string()),
            (labels::RESTART_COUNT.to_string(), attempt.to_string()),
        ])
    };
    let at = SystemTime::now();
    // c: an old attempt (exited) and the current one (running);
    // d: exited while the agent was away.
    rt.leave(
        &container_id(&uid, "c", 1),
        labels_of("c", 1),
        TaskState::Exited(Exit { code: 1, at }),
    );
    rt.leave(
        &container_id(&uid, "c", 2),
        labels_of("c", 2),
        TaskState::Running { pid: 42 },
    );
    rt.leave(
        &container_id(&uid, "d", 0),
        labels_of("d", 0),
        TaskState::Exited(Exit { code: 3, at }),
    );
    let p = Pod::run(pod, rt, FakeHost::default());
    p.until("d restarted", |p| p.rt.created("d") == 1 && p.running("d"))
        .await;
    assert_eq!(p.rt.created("c"), 0, "the running container is kept");
    assert_eq!(p.rt.created("i"), 0, "init containers had succeeded");
    let c = p.container("c");
    assert_eq!((c.restart_count, c.pid), (2, Some(42)));
    assert!(matches!(c.state, ContainerState::Running { .. }));
    let d = p.container("d");
    assert_eq!(d.restart_count, 1);
    assert!(matches!(
        d.last_state,
        Some(ContainerState::Terminated { exit_code: 3, .. })
    ));
    assert!(!p.rt.ids().contains(&container_id(&uid, "c", 1)));
    // Its exit is followed like any other.
    p.rt.exit("c", 0);
    p.until("c restarted", |p| p.rt.created("c") == 1 && p.running("c"))
        .await;
    assert_eq!(p.container("c").restart_count, 3);
}

#[tokio::test(start_paused = true)]
async fn termination_sends_sigterm_then_sigkill_after_the_grace_period() {
    let rt = FakeRuntime::default();
    rt.ignore_term.store(true, Ordering::SeqCst);
    let mut p = Pod::run(
        manifest(
            "  terminationGracePeriodSeconds: 5\n  containers:\n  - {name: c, image: busybox}\n",
        ),
        rt,
        FakeHost::default(),
    );
    p.until("c runs", |p| p.running("c")).await;
    let done = p.handle.take().unwrap().stop();
    let done = tokio::spawn(done);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let kills: Vec<String> =
        p.rt.calls()
            .into_iter()
            .filter(|c| c.starts_with("kill"))
            .collect();
    assert_eq!(kills, ["kill c 15"]);
    assert!(p.entry().unwrap().status.terminating_since.is_some());
    tokio::time::sleep(Duration::from_secs(2)).await;
    done.await.unwrap();
    let kills: Vec<String> =
        p.rt.calls()
            .into_iter()
            .filter(|c| c.starts_with("kill"))
            .collect();
    assert_eq!(kills, ["kill c 15", "kill c 9"]);
    assert!(p.rt.ids().is_empty(), "containers removed");
    let calls = p.host.calls();
    assert!(
        calls.ends_with(&["teardown sandbox".into(), "remove cgroup".into()]),
        "{calls:?}"
    );
    assert!(p.entry().is_none(), "gone from the store");
}

#[tokio::test(start_paused = true)]
async fn a_pod_whose_processes_honour_sigterm_stops_at_once() {
    let mut p = Pod::start(ONE_CONTAINER);
    p.until("c runs", |p| p.running("c")).await;
    let start = tokio::time::Instant::now();
    p.handle.take().unwrap().stop().await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert!(!p.rt.calls().iter().any(|c| c == "kill c 9"));
}

#[tokio::test(start_paused = true)]
async fn a_failed_setup_step_is_retried_with_backoff_and_reported() {
    let host = FakeHost::default();
    *host.sandbox_failures.lock().unwrap() = 2;
    let p = Pod::run(manifest(ONE_CONTAINER), FakeRuntime::default(), host);
    p.until_reason("the failure is reported", "FailedCreatePodSandBox")
        .await;
    let events = p.entry().unwrap().status.events;
    assert!(
        events
            .iter()
            .any(|e| e.reason == "FailedCreatePodSandBox" && e.message == "no namespaces today")
    );
    p.until("c runs", |p| p.running("c")).await;
    assert_eq!(
        p.host.calls(),
        [
            "cgroup BestEffort",
            "sandbox failed",
            "sandbox failed",
            "sandbox",
            "attach"
        ]
    );
    assert_eq!(
        p.entry().unwrap().status.reason,
        None,
        "cleared once it works"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pod_with_an_unresolved_reference_waits_without_retrying() {
    let pod = manifest(ONE_CONTAINER).with_resolved(crate::volume::Resolved {
        problem: Some(PodError::Mount("configmap \"cfg\" not found".into())),
        ..Default::default()
    });
    let p = Pod::run(pod, FakeRuntime::default(), FakeHost::default());
    p.until_reason("the problem is reported", "FailedMount")
        .await;
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(p.host.calls().is_empty() && p.rt.calls().is_empty());
    assert_eq!(p.entry().unwrap().status.events.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_missing_image_keeps_the_container_waiting_with_the_kubelets_reason() {
    let rt = FakeRuntime::default();
    rt.missing_images.lock().unwrap().push("nope:1".into());
    let p = Pod::run(
        manifest(
            "  containers:\n  - {name: c, image: 'nope:1'}\n  - {name: n, image: 'nope:1', imagePullPolicy: Never}\n  - {name: ok, image: busybox}\n",
        ),
        rt,
        FakeHost::default(),
    );
    p.until("ok runs", |p| p.running("ok")).await;
    p.until("reasons", |p| {
        waiting_reason(&p.container("c")).is_some_and(|(r, _)| r == "ImagePullBackOff")
            && waiting_reason(&p.container("n")).is_some_and(|(r, _)| r == "ErrImageNeverPull")
    })
    .await;
    let (_, message) = waiting_reason(&p.container("c")).unwrap();
    assert_eq!(message, "Back-off pulling image \"nope:1\"");
    let (_, never) = waiting_reason(&p.container("n")).unwrap();
    assert_eq!(
        never,
        "Container image \"nope:1\" is not present with pull policy of Never"
    );
    let events = p.entry().unwrap().status.events;
    let has = |reason: &str, text: &str| {
        events
            .iter()
            .any(|e| e.reason == reason && e.message.contains(text))
    };
    assert!(has("Failed", "ErrImagePull"));
    assert!(has("Pulling", "Pulling image \"nope:1\""));
    assert!(has(
        "Failed",
        "Failed to pull image \"nope:1\": failed to pull image \"docker.io/library/nope:1\": manifest unknown"
    ));
    assert!(has("ErrImageNeverPull", "pull policy of Never"));
    assert!(has(
        "Pulled",
        "Successfully pulled image \"busybox\" in 1.2s ("
    ));
    assert!(has("Pulled", "Image size: 1234 bytes."));
    // Pulled again after 10 s, then 20 s.
    let tries = || {
        p.rt.calls()
            .iter()
            .filter(|c| *c == "pull docker.io/library/nope:1")
            .count()
    };
    assert_eq!(tries(), 1, "n never pulls");
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(tries(), 2);
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(tries(), 2, "the second wait is 20 s");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(tries(), 3);
}

#[tokio::test(start_paused = true)]
async fn pull_policies_decide_between_the_node_and_the_registry() {
    let p = Pod::start(
        "  containers:\n  - {name: a, image: 'busybox'}\n  - {name: b, image: 'busybox:1.36'}\n  - {name: c, image: 'busybox:1.36', imagePullPolicy: Always}\n",
    );
    p.until("a, b, c run", |p| {
        p.running("a") && p.running("b") && p.running("c")
    })
    .await;
    let calls = p.rt.calls();
    // busybox (:latest, Always) and the explicit Always pull without asking;
    // busybox:1.36 (IfNotPresent) is on the node and is not pulled.
    assert!(calls.contains(&"pull docker.io/library/busybox:latest".to_string()));
    assert!(calls.contains(&"image_status docker.io/library/busybox:1.36".to_string()));
    assert_eq!(
        calls
            .iter()
            .filter(|c| *c == "pull docker.io/library/busybox:1.36")
            .count(),
        1,
        "{calls:?}"
    );
    let events = p.entry().unwrap().status.events;
    assert!(events.iter().any(|e| e.reason == "Pulled"
        && e.message == "Container image \"busybox:1.36\" already present on machine"));
}

#[tokio::test(start_paused = true)]
async fn the_pod_network_gives_the_status_its_addresses() {
    let host = FakeHost::default();
    *host.network_not_ready.lock().unwrap() = 1;
    let p = Pod::run(manifest(ONE_CONTAINER), FakeRuntime::default(), host);
    p.until_reason("the network is reported not ready", "NetworkNotReady")
        .await;
    assert!(p.entry().unwrap().status.pod_ips.is_empty());
    // Retried with the setup's back-off, then the sandbox's addresses.
    p.until("c runs", |p| p.running("c")).await;
    let status = p.entry().unwrap().status;
    assert_eq!(status.reason, None);
    assert_eq!(status.pod_ip(), Some([10, 88, 0, 1].into()));
    let api = status.to_api();
    assert_eq!(api.pod_ip.as_deref(), Some("10.88.0.1"));
    assert_eq!(api.host_ip.as_deref(), Some("192.0.2.1"));
    assert!(
        status
            .events
            .iter()
            .any(|e| e.reason == "NetworkNotReady" && e.message == "no CNI configuration")
    );
}

#[tokio::test(start_paused = true)]
async fn containers_are_created_while_the_network_attaches_and_start_after_it() {
    let host = FakeHost::default();
    let (open, gate) = std::sync::mpsc::channel();
    *host.attach_gate.lock().unwrap() = Some(gate);
    let p = Pod::run(
        manifest(
            "  containers:\n  - {name: a, image: busybox}\n  - name: b\n    image: busybox\n    env:\n    - name: MY_IP\n      valueFrom: {fieldRef: {fieldPath: status.podIP}}\n",
        ),
        FakeRuntime::default(),
        host,
    );
    // While the attach waits (the paused clock stands still meanwhile),
    // a thread of its own looks at what the runtime was asked, then lets
    // the attach go on.
    let (rt, host) = (p.rt.clone(), p.host.clone());
    let during = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while rt.created("a") == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let seen = (rt.calls(), host.calls());
        let _ = open.send(());
        seen
    });
    p.until("a and b run", |p| p.running("a") && p.running("b"))
        .await;
    let (rt_calls, host_calls) = during.join().unwrap();
    assert!(
        host_calls.ends_with(&["attach waits".to_string()]),
        "{host_calls:?}"
    );
    // a was created during the attach, not started; b, whose environment
    // holds the pod's address, was not even created.
    assert!(rt_calls.contains(&"create a".to_string()), "{rt_calls:?}");
    assert!(
        !rt_calls
            .iter()
            .any(|c| c.starts_with("start") || c == "create b"),
        "{rt_calls:?}"
    );
    assert_eq!((p.rt.created("a"), p.rt.created("b")), (1, 1));
    assert_eq!(
        p.entry().unwrap().status.pod_ip(),
        Some([10, 88, 0, 1].into())
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_attach_removes_what_was_created_and_is_retried_alone() {
    let host = FakeHost::default();
    *host.attach_failures.lock().unwrap() = 1;
    let p = Pod::run(manifest(ONE_CONTAINER), FakeRuntime::default(), host);
    p.until_reason("the failure is reported", "FailedCreatePodSandBox")
        .await;
    // The container created meanwhile is gone, never started.
    assert_eq!(p.rt.created("c"), 1);
    assert!(p.rt.ids().is_empty(), "{:?}", p.rt.calls());
    assert!(!p.rt.calls().iter().any(|c| c.starts_with("start")));
    assert!(p.entry().unwrap().status.pod_ips.is_empty());
    p.until("c runs", |p| p.running("c")).await;
    let calls = p.rt.calls();
    let removed = calls.iter().position(|c| c.starts_with("remove")).unwrap();
    let created: Vec<usize> = (0..calls.len())
        .filter(|&i| calls[i] == "create c")
        .collect();
    assert_eq!(created.len(), 2, "{calls:?}");
    assert!(created[0] < removed && removed < created[1], "{calls:?}");
    assert_eq!(
        p.host.calls(),
        ["cgroup BestEffort", "sandbox", "attach failed", "attach"]
    );
    let status = p.entry().unwrap().status;
    assert_eq!(status.reason, None, "cleared once it works");
    assert_eq!(status.pod_ip(), Some([10, 88, 0, 1].into()));
    // Not a restart of the container: the sandbox failed.
    assert_eq!(p.container("c").restart_count, 0);
    assert!(
        status
            .events
            .iter()
            .any(|e| e.reason == "FailedCreatePodSandBox")
    );
}

#[tokio::test(start_paused = true)]
async fn the_manager_releases_networks_of_unknown_pods_once_at_start() {
    let pod = manifest(ONE_CONTAINER);
    let (rt, host, _dir) = Pod::prepare(FakeRuntime::default(), FakeHost::default());
    let env = env(rt, host.clone());
    // A pod directory whose manifest is gone: torn down (and so detached)
    // by the manager, hence known to the release.
    std::fs::create_dir_all(env.pod_dir("gone")).unwrap();
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(crate::source::Desired::default()));
    let (_reclaim_tx, reclaims) = tokio::sync::mpsc::unbounded_channel();
    let (_ping_tx, pings) = tokio::sync::mpsc::unbounded_channel();
    let uid = pod.uid.clone();
    let manager = tokio::spawn(super::manager::run(
        rx,
        env.clone(),
        crate::node::Resources {
            cpu_milli: 4000,
            memory: 1 << 32,
            pods: 110,
        },
        reclaims,
        pings,
    ));
    tx.send(Arc::new(crate::source::Desired {
        pods: vec![Arc::new(pod)],
        ..Default::default()
    }))
    .unwrap();
    for _ in 0..100 {
        if host.calls().iter().any(|c| c == "teardown sandbox") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tx.send(Arc::new(crate::source::Desired::default()))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let released = host.released.lock().unwrap().clone();
    assert_eq!(released.len(), 1, "once, at start: {:?}", host.calls());
    let known: std::collections::HashSet<String> = [uid, "gone".to_string()].into();
    assert_eq!(released[0], known);
    manager.abort();
}

#[tokio::test(start_paused = true)]
async fn events_reach_the_node_ring_with_the_containers_field_path() {
    let p = Pod::start(
        "  initContainers:\n  - {name: setup, image: busybox}\n  containers:\n  - {name: c, image: busybox}\n",
    );
    p.until("setup runs", |p| p.running("setup")).await;
    p.rt.exit("setup", 0);
    p.until("c runs", |p| p.running("c")).await;
    for _ in 0..2 {
        let restarts = p.rt.created("c");
        p.rt.exit("c", 1);
        p.until("c restarted", |p| {
            p.rt.created("c") == restarts + 1 && p.running("c")
        })
        .await;
    }
    let events = p.env.events.of_pod(&p.uid);
    let field_path = |reason: &str, path: &str| {
        events.iter().find(|e| {
            e.reason.as_deref() == Some(reason)
                && e.involved_object.field_path.as_deref() == Some(path)
        })
    };
    let setup = field_path("Started", "spec.initContainers{setup}").expect("setup's Started");
    assert_eq!(setup.count, Some(1));
    assert_eq!(setup.involved_object.name.as_deref(), Some("web-node1"));
    // Three starts of c: one event, counted three times.
    let started = field_path("Started", "spec.containers{c}").expect("c's Started");
    assert_eq!(started.count, Some(3), "{events:#?}");
    assert_eq!(started.message.as_deref(), Some("Started container c"));
    // The pod's own status still lists them, one per occurrence.
    let in_status = p.entry().unwrap().status.events;
    assert_eq!(
        in_status.iter().filter(|e| e.reason == "Started").count(),
        4
    );
}

// Probes: lanes on the paused clock, exec through the fake runtime.

fn events_of(p: &Pod, reason: &str) -> Vec<String> {
    p.entry()
        .unwrap()
        .status
        .events
        .iter()
        .filter(|e| e.reason == reason)
        .map(|e| e.message.clone())
        .collect()
}

fn condition(p: &Pod, kind: &str) -> (bool, SystemTime) {
    let c = p
        .entry()
        .unwrap()
        .status
        .conditions
        .into_iter()
        .find(|c| c.kind == kind)
        .unwrap();
    (c.status, c.last_transition)
}

use super::fake::FakeExec;

/// Runs the pod of `spec` over `rt` and waits until its container `web` runs.
async fn web_running(spec: &str, rt: FakeRuntime) -> Pod {
    let p = Pod::run(manifest(spec), rt, FakeHost::default());
    p.until("web runs", |p| p.running("web")).await;
    p
}

fn failing(output: &str) -> FakeExec {
    FakeExec {
        code: 1,
        output: output.into(),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_cannot_run_is_tried_three_times_and_never_counts() {
    let p = web_running(
        "  containers:\n  - name: web\n    image: busybox\n    livenessProbe: {exec: {command: [check]}, periodSeconds: 1, failureThreshold: 1}\n",
        FakeRuntime::default(),
    )
    .await;
    p.rt.set_exec(
        "web",
        FakeExec {
            error: Some("shim gone".into()),
            ..Default::default()
        },
    );
    let before = p.rt.execs_of("web check");
    p.until("errored", |p| !events_of(p, "Unhealthy").is_empty())
        .await;
    // One run: three tries at once, then one event.
    assert_eq!(p.rt.execs_of("web check") - before, 3);
    let errored = events_of(&p, "Unhealthy");
    assert!(
        errored[0].starts_with("Liveness probe errored and resulted in unknown state: ")
            && errored[0].contains("shim gone"),
        "{errored:?}"
    );
    // Errored runs are thrown away: with a failure threshold of 1, many
    // periods later the container still runs, never killed.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(p.rt.execs_of("web check") - before >= 15);
    assert!(events_of(&p, "Killing").is_empty());
    assert_eq!(p.rt.created("web"), 1);
    assert!(p.running("web"));
}

#[tokio::test(start_paused = true)]
async fn a_failing_liveness_probe_restarts_the_container_after_three_failures() {
    let p = web_running(
        "  terminationGracePeriodSeconds: 30\n  containers:\n  - name: web\n    image: busybox\n    livenessProbe: {exec: {command: [cat, /tmp/healthy]}, periodSeconds: 1, terminationGracePeriodSeconds: 2}\n",
        FakeRuntime::default(),
    )
    .await;
    p.until("probed", |p| p.rt.execs_of("web cat /tmp/healthy") >= 2)
        .await;
    assert_eq!(p.rt.created("web"), 1, "healthy: no restart");
    p.rt.ignore_term.store(true, Ordering::SeqCst);
    let before = p.rt.execs_of("web");
    p.rt.set_exec("web", failing("cat: can't open '/tmp/healthy'"));
    p.until("killed", |p| !events_of(p, "Killing").is_empty())
        .await;
    // Exactly failureThreshold failures, one event each.
    assert_eq!(p.rt.execs_of("web") - before, 3);
    assert_eq!(
        events_of(&p, "Unhealthy"),
        vec!["Liveness probe failed: cat: can't open '/tmp/healthy'".to_string(); 3]
    );
    assert_eq!(
        events_of(&p, "Killing"),
        ["Container web failed liveness probe, will be restarted"]
    );
    // SIGTERM, then SIGKILL after the probe's grace period (2 s, not the
    // pod's 30 s).
    let killing = tokio::time::Instant::now();
    p.until("SIGKILL", |p| {
        p.rt.calls().contains(&"kill web 9".to_string())
    })
    .await;
    let waited = killing.elapsed();
    assert!(
        waited >= Duration::from_millis(1800) && waited <= Duration::from_secs(3),
        "SIGKILL after {waited:?}"
    );
    let calls = p.rt.calls();
    assert!(calls.contains(&"kill web 15".to_string()), "{calls:?}");
    p.rt.ignore_term.store(false, Ordering::SeqCst);
    p.until("restarted", |p| {
        p.rt.created("web") == 2 && p.running("web")
    })
    .await;
    assert_eq!(p.container("web").restart_count, 1);
    // The new container's probe starts afresh (and fails again).
    let n = events_of(&p, "Unhealthy").len();
    p.until("probed again", |p| events_of(p, "Unhealthy").len() > n)
        .await;
}

#[tokio::test(start_paused = true)]
async fn readiness_flips_ready_and_conditions_both_ways_without_restarts() {
    let rt = FakeRuntime::default();
    rt.set_exec("web", failing("not yet"));
    let p = web_running(
        "  containers:\n  - name: web\n    image: busybox\n    readinessProbe: {exec: {command: [cat, /tmp/ready]}, periodSeconds: 1, failureThreshold: 2}\n",
        rt,
    )
    .await;
    p.until("probed", |p| p.rt.execs_of("web") >= 3).await;
    assert!(!p.container("web").ready);
    assert!(p.container("web").started);
    assert!(!condition(&p, "Ready").0);
    p.rt.set_exec("web", FakeExec::default());
    p.until("ready", |p| p.container("web").ready).await;
    let (ready, since) = condition(&p, "Ready");
    assert!(ready && condition(&p, "ContainersReady").0);
    let api = p.entry().unwrap().status.to_api();
    assert!(api.container_statuses.unwrap()[0].ready);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        condition(&p, "Ready"),
        (true, since),
        "no change, same time"
    );
    p.rt.set_exec("web", failing("gone"));
    p.until("not ready", |p| !p.container("web").ready).await;
    assert!(!condition(&p, "Ready").0);
    p.rt.set_exec("web", FakeExec::default());
    p.until("ready again", |p| p.container("web").ready).await;
    assert_eq!(p.rt.created("web"), 1, "readiness never restarts");
    assert!(events_of(&p, "Killing").is_empty());
    assert!(
        events_of(&p, "Unhealthy")
            .iter()
            .any(|m| m == "Readiness probe failed: gone")
    );
}

#[tokio::test(start_paused = true)]
async fn a_startup_probe_holds_liveness_and_readiness_back_until_it_succeeds() {
    let rt = FakeRuntime::default();
    rt.set_exec("web test -f /started", failing(""));
    let p = web_running(
        "  containers:\n  - name: web\n    image: busybox\n    startupProbe: {exec: {command: [test, -f, /started]}, periodSeconds: 1, failureThreshold: 30}\n    livenessProbe: {exec: {command: [live]}, periodSeconds: 1}\n    readinessProbe: {exec: {command: [ready]}, periodSeconds: 1}\n",
        rt,
    )
    .await;
    p.until("startup probed", |p| {
        p.rt.execs_of("web test -f /started") >= 5
    })
    .await;
    assert_eq!(
        (p.rt.execs_of("web live"), p.rt.execs_of("web ready")),
        (0, 0),
        "held back"
    );
    let c = p.container("web");
    assert!(!c.started && !c.ready);
    p.rt.set_exec("web test -f /started", FakeExec::default());
    p.until("started and ready", |p| {
        let c = p.container("web");
        c.started && c.ready
    })
    .await;
    let startups = p.rt.execs_of("web test -f /started");
    p.until("liveness runs", |p| p.rt.execs_of("web live") >= 2)
        .await;
    assert_eq!(
        p.rt.execs_of("web test -f /started"),
        startups,
        "the startup probe ends with its success"
    );
}

#[tokio::test(start_paused = true)]
async fn a_startup_probe_that_never_succeeds_kills_the_container() {
    let rt = FakeRuntime::default();
    // Hangs past its timeout: a failure each time.
    rt.set_exec(
        "web",
        FakeExec {
            hang: true,
            ..Default::default()
        },
    );
    let p = web_running(
        "  restartPolicy: Never\n  containers:\n  - name: web\n    image: busybox\n    startupProbe: {exec: {command: [sleep, '10']}, periodSeconds: 2, timeoutSeconds: 1, failureThreshold: 3}\n    livenessProbe: {exec: {command: [live]}, periodSeconds: 1}\n",
        rt,
    )
    .await;
    p.until("killed", |p| !events_of(p, "Killing").is_empty())
        .await;
    assert_eq!(
        events_of(&p, "Unhealthy"),
        vec!["Startup probe failed: command \"sleep 10\" timed out".to_string(); 3]
    );
    assert_eq!(
        events_of(&p, "Killing"),
        ["Container web failed startup probe"],
        "restartPolicy Never: not restarted"
    );
    assert_eq!(p.rt.execs_of("web live"), 0);
    p.until("phase Failed", |p| {
        p.entry().unwrap().status.phase == Phase::Failed
    })
    .await;
    assert_eq!(p.rt.created("web"), 1);
}

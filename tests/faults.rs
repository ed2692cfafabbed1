//! Faults, each bounded in time: the agent SIGKILLed again and again during
//! create/edit/delete churn, containerd killed and restarted, containerd
//! absent when the agent starts, a full emptyDir, many OOM kills at once.
//! Throughout, /healthz answers quickly and nothing is left behind.

mod common;

use std::time::Duration;

use common::{Env, Healthz, pod_yaml};

fn sleeper(name: &str, arg: u32) -> String {
    pod_yaml(
        name,
        &format!(
            "  terminationGracePeriodSeconds: 1\n  volumes:\n  - {{name: scratch, emptyDir: {{}}}}\n  containers:\n  - name: main\n    image: busybox\n    command: [sleep, '{arg}']\n    volumeMounts:\n    - {{name: scratch, mountPath: /scratch}}\n    resources:\n      limits: {{cpu: 100m, memory: 32Mi}}\n"
        ),
    )
}

#[test]
fn the_agent_killed_during_churn_leaves_nothing_behind() {
    let mut env = Env::new("churnkill");
    env.start_agent();
    let mut healthz = Healthz::default();
    let rounds: u32 = 20;
    for round in 0..rounds {
        // Create one pod, edit the one before, delete the one before that,
        // then kill the agent at a different moment of the work each time.
        env.write_manifest(
            &format!("r{round}.yaml"),
            &sleeper(&format!("r{round}"), 3600),
        );
        if round >= 1 {
            let prev = round - 1;
            env.write_manifest(
                &format!("r{prev}.yaml"),
                &sleeper(&format!("r{prev}"), 3601),
            );
        }
        if round >= 2 {
            env.remove_manifest(&format!("r{}.yaml", round - 2));
        }
        std::thread::sleep(Duration::from_millis(50 + 70 * u64::from(round % 5)));
        healthz.sample(&env);
        env.stop_agent(libc::SIGKILL);
        env.start_agent();
    }
    // What the directory says now runs, once, and nothing else.
    let last = [rounds - 2, rounds - 1];
    for r in last {
        env.wait_running(&format!("r{r}-node1"));
    }
    env.wait_for(
        "only the last two pods' containers",
        Duration::from_secs(60),
        || {
            (env.pods().len() == 2 && env.containers().len() == 2 && env.tasks().len() == 2)
                .then_some(())
        },
    );
    healthz.sample(&env);
    for r in last {
        env.remove_manifest(&format!("r{r}.yaml"));
    }
    env.wait_for("no pods", Duration::from_secs(60), || {
        env.pods().is_empty().then_some(())
    });
    env.assert_nothing_left();
    healthz.assert_quick();
    assert!(!env.agent_output().contains("panicked"));
}

/// The status and message of the node's `Ready` condition (`/node`).
fn node_ready(env: &Env) -> (String, String) {
    let node: serde_json::Value = serde_json::from_str(&env.get("/node").unwrap()).unwrap();
    let c = &node["status"]["conditions"][0];
    assert_eq!(c["type"], "Ready", "{node}");
    (
        c["status"].as_str().unwrap_or_default().to_string(),
        c["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn containerd_killed_and_restarted_is_reconnected_to_without_duplicates() {
    let mut env = Env::new("ctrdrestart");
    env.start_agent();
    env.write_manifest("a.yaml", &sleeper("a", 3600));
    env.write_manifest("b.yaml", &sleeper("b", 3600));
    env.wait_running("a-node1");
    env.wait_running("b-node1");
    let before = env.tasks();

    assert_eq!(node_ready(&env).0, "True");
    env.kill_containerd();
    // Meanwhile the agent answers, says the runtime is down, and a new pod
    // waits.
    let message = env.wait_for("the node not ready", Duration::from_secs(15), || {
        let (status, message) = node_ready(&env);
        (status == "False").then_some(message)
    });
    assert!(
        message.starts_with("container runtime is down: "),
        "{message}"
    );
    let mut healthz = Healthz::default();
    healthz.sample(&env);
    healthz.assert_quick();
    env.write_manifest("c.yaml", &sleeper("c", 3600));
    std::thread::sleep(Duration::from_secs(1));
    env.start_containerd();

    env.wait_running("c-node1");
    env.wait_for("the node ready again", Duration::from_secs(15), || {
        (node_ready(&env).0 == "True").then_some(())
    });
    let a = env.wait_running("a-node1");
    assert_eq!(a["status"]["containerStatuses"][0]["restartCount"], 0);
    // The same tasks still run (the shims outlived containerd), once each.
    let after = env.tasks();
    for t in &before {
        assert!(after.contains(t), "task {t:?} is gone: {after:?}");
    }
    assert_eq!(env.containers().len(), 3);
    assert!(env.agent_is_alive());
    assert!(!env.agent_output().contains("panicked"));
}

#[test]
fn the_agent_starts_before_containerd_and_catches_up() {
    let mut env = Env::new("noctrd");
    env.kill_containerd();
    env.write_manifest("a.yaml", &sleeper("a", 3600));
    env.start_agent();
    // It serves while containerd is away.
    let mut healthz = Healthz::default();
    for _ in 0..5 {
        healthz.sample(&env);
        std::thread::sleep(Duration::from_millis(300));
    }
    healthz.assert_quick();
    let (status, message) = node_ready(&env);
    assert_eq!(status, "False");
    assert!(
        message.starts_with("container runtime is down: "),
        "{message}"
    );
    env.start_containerd();
    env.wait_running("a-node1");
    assert_eq!(node_ready(&env).0, "True");
    env.remove_manifest("a.yaml");
    env.wait_for("no pods", Duration::from_secs(60), || {
        env.pods().is_empty().then_some(())
    });
    env.assert_nothing_left();
}

#[test]
fn a_full_emptydir_harms_only_its_writer() {
    let mut env = Env::new("fulldisk");
    env.start_agent();
    // A memory emptyDir of 1 MiB filled past its size: the writer gets
    // ENOSPC, the pod and the agent go on.
    env.write_manifest(
        "fill.yaml",
        &pod_yaml(
            "fill",
            "  restartPolicy: Never\n  volumes:\n  - {name: v, emptyDir: {medium: Memory, sizeLimit: 1Mi}}\n  containers:\n  - name: w\n    image: busybox\n    command: [sh, -c, 'dd if=/dev/zero of=/v/big bs=64k count=64 2>&1; echo rc=$?; exit 3']\n    volumeMounts:\n    - {name: v, mountPath: /v}\n",
        ),
    );
    env.write_manifest("ok.yaml", &sleeper("ok", 3600));
    let p = env.wait_for("writer done", Duration::from_secs(30), || {
        let p = env.pod("fill-node1")?;
        p["status"]["containerStatuses"][0]["state"]["terminated"]
            .is_object()
            .then_some(p)
    });
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        3
    );
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let log = std::fs::read_to_string(
        env.dir
            .join(format!("logs/default_fill-node1_{uid}/w/0.log")),
    )
    .unwrap();
    assert!(log.contains("No space left on device"), "{log}");
    env.wait_running("ok-node1");
    let mut healthz = Healthz::default();
    healthz.sample(&env);
    healthz.assert_quick();
}

#[test]
fn twenty_pods_oom_killed_at_once_are_all_reported_and_restarted() {
    let mut env = Env::new("oomstorm");
    env.start_agent();
    let n = 20;
    for i in 0..n {
        env.write_manifest(
            &format!("hog{i}.yaml"),
            &pod_yaml(
                &format!("hog{i}"),
                "  restartPolicy: OnFailure\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: hog\n    image: busybox\n    command: [dd, if=/dev/zero, of=/dev/null, bs=64M, count=1]\n    resources:\n      limits: {memory: 16Mi}\n",
            ),
        );
    }
    let mut healthz = Healthz::default();
    env.wait_for(
        "every hog OOM-killed and restarted",
        Duration::from_secs(120),
        || {
            healthz.sample(&env);
            let pods = env.pods();
            let done = pods.iter().filter(|p| {
                let c = &p["status"]["containerStatuses"][0];
                c["restartCount"].as_i64().unwrap_or(0) >= 1
                    && c["lastState"]["terminated"]["reason"] == "OOMKilled"
            });
            (done.count() == n).then_some(())
        },
    );
    healthz.assert_quick();
    assert!(env.agent_is_alive());
    for i in 0..n {
        env.remove_manifest(&format!("hog{i}.yaml"));
    }
    env.wait_for("no pods", Duration::from_secs(60), || {
        env.pods().is_empty().then_some(())
    });
    env.assert_nothing_left();
}

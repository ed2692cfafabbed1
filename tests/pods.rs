//! End to end: the agent binary, a real containerd and runc, real
//! namespaces, mounts and cgroups.

mod common;

use std::time::{Duration, Instant};

use common::{Env, pod_yaml};

const SLEEPER: &str = "  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: busybox\n    command: [sleep, '3600']\n";

fn restart_count(pod: &serde_json::Value, container: &str) -> i64 {
    pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == container)
        .and_then(|c| c["restartCount"].as_i64())
        .unwrap_or(-1)
}

#[test]
fn two_containers_share_localhost_and_log_in_cri_format() {
    let mut env = Env::new("localhost");
    env.start_agent();
    // A port free on the host: the pod's own loopback must be what answers.
    let port = common::free_port();
    env.write_manifest(
        "web.yaml",
        &pod_yaml(
            "web",
            &format!("  terminationGracePeriodSeconds: 1\n  containers:\n  - name: server\n    image: busybox\n    command: [sh, -c, 'mkdir -p /www && echo hello-over-localhost > /www/index.html && exec httpd -f -p {port} -h /www']\n  - name: client\n    image: busybox\n    command: [sh, -c, 'while true; do wget -qO- http://127.0.0.1:{port}/ || echo fetch failed >&2; sleep 0.3; done']\n"),
        ),
    );
    let pod = env.wait_running("web-node1");
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    assert_eq!(pod["metadata"]["namespace"], "default");
    assert_eq!(pod["spec"]["nodeName"], "node1");

    let client_log = env
        .dir
        .join(format!("logs/default_web-node1_{uid}/client/0.log"));
    let text = env.wait_for(
        "client to read from server",
        Duration::from_secs(20),
        || {
            let t = std::fs::read_to_string(&client_log).ok()?;
            t.contains("stdout F hello-over-localhost").then_some(t)
        },
    );
    // Every record is `<RFC 3339 time> <stream> <F|P> <text>`.
    for line in text.lines() {
        let mut parts = line.splitn(4, ' ');
        let ts = parts.next().unwrap();
        assert!(
            ts.ends_with('Z') && ts.contains('T'),
            "bad timestamp in {line:?}"
        );
        assert!(
            matches!(parts.next(), Some("stdout" | "stderr")),
            "{line:?}"
        );
        assert!(matches!(parts.next(), Some("F" | "P")), "{line:?}");
    }

    // A second server on the same port in the same pod cannot bind: one
    // network namespace per pod.
    let (server_id, _, _) = env
        .tasks()
        .into_iter()
        .find(|(id, _, _)| {
            pod["status"]["containerStatuses"][0]["containerID"]
                .as_str()
                .unwrap()
                .ends_with(id.as_str())
        })
        .expect("server task");
    let out = std::process::Command::new("ctr")
        .arg("--address")
        .arg(env.dir.join("containerd.sock"))
        .args([
            "-n",
            common::NAMESPACE,
            "tasks",
            "exec",
            "--exec-id",
            "probe",
            &server_id,
            "sh",
            "-c",
            &format!("httpd -f -p {port} -h / 2>&1; echo rc=$?"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Address in use")
            || text.contains("address already in use")
            || text.contains("rc=1"),
        "{text}"
    );
    // The host's port is not the pod's.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn edit_delete_and_readd_replace_the_pod() {
    let mut env = Env::new("edit");
    env.start_agent();
    env.write_manifest("app.yaml", &pod_yaml("app", SLEEPER));
    let first = env.wait_running("app-node1");
    let uid1 = first["metadata"]["uid"].as_str().unwrap().to_string();
    assert_eq!(env.tasks().len(), 1);
    // Its namespaces are pinned in the agent's pin namespace, not in the
    // host's mount table, which holds two mounts for all pods.
    let root = env.dir.join("root");
    let pinned: Vec<String> = ["ipc", "net", "uts"]
        .iter()
        .map(|k| format!("{}/pods/{uid1}/ns/{k}", root.display()))
        .collect();
    assert_eq!(env.pins(), pinned);
    let host_mounts: Vec<String> = env
        .mounts_under_dir()
        .into_iter()
        .filter(|m| m.starts_with(&*root.to_string_lossy()))
        .filter(|m| !pinned.contains(m) && !m.ends_with("/shm"))
        .collect();
    assert_eq!(
        host_mounts,
        [
            format!("{}/pins", root.display()),
            format!("{}/pins/namespace", root.display())
        ],
        "the agent's mounts besides the pod's pins and /dev/shm"
    );

    // Reformatting the file keeps the pod.
    env.write_manifest(
        "app.yaml",
        &format!("# a comment\n{}", pod_yaml("app", SLEEPER)),
    );
    env.wait_rescan();
    assert_eq!(
        env.pod("app-node1").unwrap()["metadata"]["uid"],
        uid1.as_str()
    );

    // An edit replaces it: new UID, old containers gone.
    env.write_manifest(
        "app.yaml",
        &pod_yaml("app", &SLEEPER.replace("3600", "3601")),
    );
    let second = env.wait_for("new uid", Duration::from_secs(30), || {
        let p = env.pod("app-node1")?;
        (p["metadata"]["uid"] != uid1.as_str() && p["status"]["phase"] == "Running").then_some(p)
    });
    let uid2 = second["metadata"]["uid"].as_str().unwrap().to_string();
    env.wait_for("only the new container", Duration::from_secs(30), || {
        (env.tasks().len() == 1 && env.containers().len() == 1).then_some(())
    });
    assert!(!env.dir.join("root/pods").join(&uid1).exists());

    // Delete: everything goes, mounts and cgroups included.
    env.remove_manifest("app.yaml");
    env.wait_for("pod gone", Duration::from_secs(30), || {
        (env.pods().is_empty() && env.containers().is_empty()).then_some(())
    });
    env.wait_for("sandbox gone", Duration::from_secs(10), || {
        (env.mounts_under_dir()
            .iter()
            .all(|m| !m.contains("/root/pods/"))
            && !env.dir.join("root/pods").join(&uid2).exists())
        .then_some(())
    });
    env.wait_for("cgroups and logs removed", Duration::from_secs(10), || {
        let cgroups_left = env
            .cgroup_dirs()
            .into_iter()
            .any(|d| d.to_string_lossy().contains("/pod"));
        let logs_left = env
            .dir
            .join(format!("logs/default_app-node1_{uid2}"))
            .exists();
        (!cgroups_left && !logs_left).then_some(())
    });

    // Re-adding brings it back, with the second UID (same content).
    env.write_manifest(
        "app.yaml",
        &pod_yaml("app", &SLEEPER.replace("3600", "3601")),
    );
    let back = env.wait_running("app-node1");
    assert_eq!(back["metadata"]["uid"], uid2.as_str());
}

#[test]
fn crash_loop_backoff_grows() {
    let mut env = Env::new("crash");
    env.start_agent();
    env.write_manifest(
        "crash.yaml",
        &pod_yaml("crash", "  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'echo attempt; exit 3']\n"),
    );
    // Record when each restart shows up (config: 1 s doubling to 8 s).
    let mut seen: Vec<(i64, Instant)> = vec![];
    let deadline = Instant::now() + Duration::from_secs(40);
    while Instant::now() < deadline && seen.last().is_none_or(|s| s.0 < 4) {
        // Counted from the first start (image import and container
        // creation are no part of the backoff).
        if let Some(p) = env.pod("crash-node1")
            && p["status"]["containerStatuses"][0]["containerID"].is_string()
        {
            let n = restart_count(&p, "c");
            if n >= 0 && seen.last().is_none_or(|s| s.0 != n) {
                seen.push((n, Instant::now()));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        seen.len() >= 4 && seen.last().unwrap().0 >= 4,
        "restarts seen: {seen:?}\n{}",
        env.agent_output()
    );
    let gaps: Vec<f64> = seen
        .windows(2)
        .map(|w| (w[1].1 - w[0].1).as_secs_f64())
        .collect();
    // Each gap is the backoff plus the attempt's own run time (short, but
    // longer on a loaded machine): ~0 (the first restart is immediate), then
    // ~1 s, ~2 s, ~4 s.
    assert_eq!(
        seen.iter().map(|s| s.0).take(5).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4],
        "{seen:?}"
    );
    for (gap, backoff) in gaps.iter().zip([0.0, 1.0, 2.0, 4.0]) {
        assert!(
            *gap > backoff - 0.1 && *gap < backoff + 1.5,
            "gaps {gaps:?} do not follow 0, 1, 2, 4 s"
        );
    }

    let p = env.pod("crash-node1").unwrap();
    let c = &p["status"]["containerStatuses"][0];
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 3);
    assert_eq!(c["lastState"]["terminated"]["reason"], "Error");
    assert_eq!(p["status"]["phase"], "Running");
    let backoff = env.wait_for("CrashLoopBackOff", Duration::from_secs(10), || {
        let p = env.pod("crash-node1")?;
        let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "CrashLoopBackOff").then_some(w)
    });
    assert!(
        backoff["message"].as_str().unwrap().contains("back-off"),
        "{backoff}"
    );
    // The log files of the last two attempts: older ones go as their
    // containers went.
    env.wait_for("two attempts' logs", Duration::from_secs(10), || {
        (env.log_files().len() == 2).then_some(())
    });
}

/// A container controls its termination log: the agent reads at most its
/// last 4 KiB, whatever its size (here a 2 GiB sparse file).
#[test]
fn termination_messages_are_read_bounded() {
    let mut env = Env::new("termmsg");
    env.start_agent();
    env.write_manifest(
        "msg.yaml",
        &pod_yaml("msg", "  restartPolicy: Never\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'truncate -s 2G /dev/termination-log && echo last-words >> /dev/termination-log; exit 2']\n"),
    );
    let t = env.wait_for("terminated", Duration::from_secs(30), || {
        let p = env.pod("msg-node1")?;
        let t = p["status"]["containerStatuses"][0]["state"]["terminated"].clone();
        t.is_object().then_some(t)
    });
    assert_eq!(t["exitCode"], 2);
    let message = t["message"].as_str().unwrap();
    assert!(
        message.ends_with("last-words\n"),
        "{:?}",
        &message[message.len().saturating_sub(40)..]
    );
    assert_eq!(message.len(), 4096);
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", env.agent_pid().unwrap())).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(hwm_kib < 256 * 1024, "agent peak RSS {hwm_kib} KiB");
}

/// A containerd that stops answering fails the agent's calls at
/// `runtimeRequestTimeout` instead of freezing it: the pod waits with the
/// error, the agent keeps answering, and the pod starts once containerd is
/// back.
#[test]
fn a_frozen_containerd_fails_calls_at_the_deadline() {
    let mut env = Env::new("frozen");
    env.write_config("runtimeRequestTimeout: 2s\ncrashLoopBackOff:\n  initial: 1s\n  max: 4s\n");
    env.start_agent();
    env.write_manifest("first.yaml", &pod_yaml("first", SLEEPER));
    env.wait_running("first-node1");
    env.signal_containerd(libc::SIGSTOP);
    env.write_manifest("late.yaml", &pod_yaml("late", SLEEPER));
    let p = env.wait_for("the call to fail", Duration::from_secs(30), || {
        let p = env.pod("late-node1")?;
        p["status"]["reason"].is_string().then_some(p)
    });
    assert_eq!(p["status"]["reason"], "FailedSync", "{p}");
    let started = Instant::now();
    assert!(env.get("/healthz").is_ok());
    assert!(started.elapsed() < Duration::from_secs(1));
    env.signal_containerd(libc::SIGCONT);
    env.wait_running("late-node1");
    env.wait_running("first-node1");
}

/// As systemd runs it (Type=notify, WatchdogSec): READY once serving, then
/// WATCHDOG=1 at half the period, each sent only after the manifest
/// watcher and the pod manager answered.
#[test]
fn the_watchdog_is_petted_while_the_loops_answer() {
    let mut env = Env::new("watchdog");
    let path = env.dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    env.set_agent_env("NOTIFY_SOCKET", path.to_str().unwrap());
    env.set_agent_env("WATCHDOG_USEC", "1000000");
    env.start_agent();
    let mut messages = vec![];
    let mut buf = [0u8; 512];
    let listening = Instant::now();
    while listening.elapsed() < Duration::from_secs(3) {
        let n = sock.recv(&mut buf).expect("a notification within 5 s");
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        messages.iter().any(|m| m.contains("READY=1")),
        "{messages:?}"
    );
    let pets = messages.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    // Every 0.5 s over 3 s: about 6.
    assert!((4..=8).contains(&pets), "{pets} pets: {messages:?}");
}

#[test]
fn init_containers_run_in_order_before_apps() {
    let mut env = Env::new("init");
    env.start_agent();
    env.write_manifest(
        "init.yaml",
        &pod_yaml(
            "init",
            "  terminationGracePeriodSeconds: 1\n  initContainers:\n  - name: first\n    image: busybox\n    command: [sh, -c, 'sleep 1; echo first']\n  - name: second\n    image: busybox\n    command: [sh, -c, 'echo second']\n  containers:\n  - name: app\n    image: busybox\n    command: [sleep, '3600']\n",
        ),
    );
    let pod = env.wait_running("init-node1");
    let inits = pod["status"]["initContainerStatuses"].as_array().unwrap();
    let t = |c: &serde_json::Value, k: &str| {
        c["state"]["terminated"][k]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
    };
    assert_eq!(inits[0]["state"]["terminated"]["reason"], "Completed");
    assert_eq!(inits[1]["state"]["terminated"]["exitCode"], 0);
    assert!(t(&inits[0], "finishedAt") <= t(&inits[1], "startedAt"));
    let app_started: jiff::Timestamp =
        pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    assert!(t(&inits[1], "finishedAt") <= app_started);

    // A failing init container with restartPolicy Never fails the pod and
    // its app container never starts.
    env.write_manifest(
        "bad-init.yaml",
        &pod_yaml(
            "badinit",
            "  restartPolicy: Never\n  initContainers:\n  - name: setup\n    image: busybox\n    command: [sh, -c, 'exit 7']\n  containers:\n  - name: app\n    image: busybox\n    command: [sleep, '3600']\n",
        ),
    );
    let failed = env.wait_for("badinit failed", Duration::from_secs(30), || {
        let p = env.pod("badinit-node1")?;
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    assert_eq!(
        failed["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"],
        7
    );
    assert!(failed["status"]["containerStatuses"][0]["state"]["waiting"].is_object());
}

#[test]
fn termination_sends_sigterm_then_sigkill_after_grace() {
    let mut env = Env::new("term");
    env.start_agent();
    // Exits on SIGTERM: removal is quick even with a long grace period.
    env.write_manifest(
        "polite.yaml",
        &pod_yaml("polite", "  terminationGracePeriodSeconds: 30\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'trap \"exit 0\" TERM; while true; do sleep 0.1; done']\n"),
    );
    // Ignores SIGTERM (PID 1 without a handler): killed after its 3 s.
    env.write_manifest(
        "stubborn.yaml",
        &pod_yaml("stubborn", "  terminationGracePeriodSeconds: 3\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, '3600']\n"),
    );
    env.wait_running("polite-node1");
    env.wait_running("stubborn-node1");

    let t0 = Instant::now();
    env.remove_manifest("polite.yaml");
    env.wait_for("polite gone", Duration::from_secs(20), || {
        env.pod("polite-node1").is_none().then_some(())
    });
    let polite = t0.elapsed();
    assert!(
        polite < Duration::from_secs(5),
        "SIGTERM was not delivered: {polite:?}"
    );

    let t0 = Instant::now();
    env.remove_manifest("stubborn.yaml");
    // During its grace period the pod shows as terminating.
    env.wait_for("deletionTimestamp", Duration::from_secs(3), || {
        env.pod("stubborn-node1")?["metadata"]["deletionTimestamp"]
            .as_str()
            .map(|_| ())
    });
    env.wait_for("stubborn gone", Duration::from_secs(30), || {
        env.pod("stubborn-node1").is_none().then_some(())
    });
    let stubborn = t0.elapsed();
    assert!(
        stubborn >= Duration::from_millis(2900) && stubborn < Duration::from_secs(10),
        "grace period not honoured: {stubborn:?}"
    );
    env.wait_for("containers removed", Duration::from_secs(30), || {
        env.containers().is_empty().then_some(())
    });
}

#[test]
fn agent_sigkill_and_restart_adopts_containers() {
    let mut env = Env::new("adopt");
    env.start_agent();
    env.write_manifest("a.yaml", &pod_yaml("a", SLEEPER));
    env.write_manifest(
        "b.yaml",
        &pod_yaml("b", "  terminationGracePeriodSeconds: 1\n  containers:\n  - name: x\n    image: busybox\n    command: [sleep, '3600']\n  - name: y\n    image: busybox\n    command: [sleep, '3600']\n"),
    );
    env.write_manifest("gone.yaml", &pod_yaml("gone", SLEEPER));
    env.wait_running("a-node1");
    env.wait_running("b-node1");
    env.wait_running("gone-node1");
    let before = env.tasks();
    assert_eq!(before.len(), 4);

    env.stop_agent(libc::SIGKILL);
    // While the agent is down: one manifest disappears.
    env.remove_manifest("gone.yaml");
    env.start_agent();
    env.wait_for("gone pod stopped", Duration::from_secs(20), || {
        (env.tasks().len() == 3).then_some(())
    });
    let a = env.wait_running("a-node1");
    let b = env.wait_running("b-node1");
    assert_eq!(restart_count(&a, "main"), 0);
    assert_eq!(restart_count(&b, "x") + restart_count(&b, "y"), 0);
    assert!(env.pod("gone-node1").is_none());
    // The same processes still run: nothing was restarted or duplicated.
    let after = env.tasks();
    for t in &after {
        assert!(before.contains(t), "task {t:?} is new; before: {before:?}");
    }
    assert_eq!(env.containers().len(), 3);
    // SIGTERM to the agent also leaves pods alone.
    // (stop_agent returns once the agent has exited.)
    env.stop_agent(libc::SIGTERM);
    let mut now = env.tasks();
    let mut after = after;
    now.sort();
    after.sort();
    assert_eq!(now, after);
}

#[test]
fn bad_manifests_are_reported_and_do_not_stop_good_ones() {
    let mut env = Env::new("bad");
    env.start_agent();
    env.write_manifest("good.yaml", &pod_yaml("good", SLEEPER));
    env.write_manifest(
        "web.yaml",
        &pod_yaml("web", "  containers:\n  - name: a\n    image: busybox\n  - name: b\n    image: busybox\n    resources:\n      limits:\n        memory: \"-1Mi\"\n"),
    );
    env.write_manifest(
        "typo.yaml",
        &pod_yaml(
            "typo",
            "  containers:\n  - name: a\n    image: busybox\n    comand: [sleep, '1']\n",
        ),
    );
    env.write_manifest(
        "dup.yaml",
        &pod_yaml(
            "dup",
            "  containers:\n  - name: a\n    image: busybox\n  - name: a\n    image: busybox\n",
        ),
    );
    env.write_manifest(
        "policy.yaml",
        &pod_yaml(
            "policy",
            "  restartPolicy: Sometimes\n  containers:\n  - name: a\n    image: busybox\n",
        ),
    );
    env.write_manifest(
        "broken.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x\n",
    );
    env.write_manifest("noimage.yaml", &pod_yaml("noimage", "  containers:\n  - name: a\n    image: 127.0.0.1:1/nothing:1\n    imagePullPolicy: IfNotPresent\n"));
    env.write_manifest("web.yaml~", "editor backup: ignored");
    env.write_manifest(".hidden.yaml", "hidden: ignored");
    // Not regular files: refused at once, never read or waited on.
    nix::unistd::mkfifo(
        &env.manifests.join("fifo.yaml"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    std::os::unix::fs::symlink("/dev/zero", env.manifests.join("zero.yaml")).unwrap();
    env.write_manifest(
        "dupkey.yaml",
        &pod_yaml(
            "dupkey",
            "  containers:\n  - name: a\n    image: busybox\n    image: nginx\n",
        ),
    );
    // The same pod in three files. a-shadow.yaml is invalid (its second
    // document), so it defines nothing, not even its valid `ghost`;
    // b-shadow.yaml is the first valid definition and runs; c-shadow.yaml
    // is refused naming b-shadow.yaml.
    env.write_manifest(
        "a-shadow.yaml",
        &format!(
            "{}---\n{}",
            pod_yaml("ghost", SLEEPER),
            pod_yaml("shadow", "  containers:\n  - name: main\n    image: ''\n")
        ),
    );
    env.write_manifest("b-shadow.yaml", &pod_yaml("shadow", SLEEPER));
    env.write_manifest(
        "c-shadow.yaml",
        &pod_yaml("shadow", &SLEEPER.replace("3600", "3601")),
    );

    env.wait_running("good-node1");
    env.wait_running("shadow-node1");
    let wants = [
        "web.yaml: spec.containers[1].resources.limits.memory: \"-1Mi\" is negative",
        "typo.yaml: spec.containers[0].comand: unknown field",
        "dup.yaml: spec.containers[1].name: Duplicate value: \"a\"",
        "policy.yaml: spec.restartPolicy: Unsupported value: \"Sometimes\"",
        "broken.yaml: invalid YAML",
        "fifo.yaml: is a FIFO, not a regular file: refused",
        "zero.yaml: is a character device, not a regular file: refused",
        "dupkey.yaml: spec.containers[0].image: duplicate key",
        "a-shadow.yaml (document 2): spec.containers[0].image: Required value",
        "c-shadow.yaml: metadata.name: pod default/shadow-node1 is already defined in",
    ];
    // (On a timeout, the agent's log is printed.)
    let log = env.wait_for("every error logged", Duration::from_secs(20), || {
        let log = env.agent_output();
        wants.iter().all(|w| log.contains(w)).then_some(log)
    });
    assert!(!log.contains("web.yaml~") && !log.contains(".hidden.yaml"));
    // Nothing was created for the refused pods.
    assert!(env.pod("web-node1").is_none() && env.pod("typo-node1").is_none());
    assert!(env.pod("ghost-node1").is_none() && env.pod("dupkey-node1").is_none());
    assert!(
        log.lines()
            .any(|l| l.contains("c-shadow.yaml: metadata.name") && l.contains("b-shadow.yaml")),
        "{log}"
    );
    // An image nobody can provide (its registry refuses connections) is
    // said plainly (the failed pull's event), and the pod waits in ImagePullBackOff, as the kubelet shows it.
    let pod = env.wait_for("ImagePullBackOff", Duration::from_secs(20), || {
        let p = env.pod("noimage-node1")?;
        let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        (w["reason"] == "ImagePullBackOff").then_some(p)
    });
    let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
    assert_eq!(
        waiting["message"], "Back-off pulling image \"127.0.0.1:1/nothing:1\"",
        "{waiting}"
    );
    let events = pod["status"]["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["reason"] == "Failed"
            && e["message"].as_str().unwrap().contains("ErrImagePull")
            && e["message"]
                .as_str()
                .unwrap()
                .contains("failed to pull image \"127.0.0.1:1/nothing:1\" from 127.0.0.1:1")),
        "{events:?}"
    );
    assert!(env.agent_is_alive());
    // good and shadow (once): nothing from a refused file.
    assert_eq!(env.tasks().len(), 2, "{:?}", env.tasks());
}

#[test]
fn docker_archives_import_and_pull_policies_apply() {
    let mut env = Env::new("images");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/images/busybox-oci.sh");
    let ok = std::process::Command::new(script)
        .arg("--docker")
        .arg(env.dir.join("images/tools.tar"))
        .arg("example.org/tools/bb:2")
        .status()
        .unwrap();
    assert!(ok.success());
    env.start_agent();
    env.write_manifest(
        "tools.yaml",
        &pod_yaml("tools", "  terminationGracePeriodSeconds: 0\n  containers:\n  - name: t\n    image: example.org/tools/bb:2\n    command: [sleep, '3600']\n"),
    );
    env.write_manifest(
        "never.yaml",
        &pod_yaml("never", "  containers:\n  - name: t\n    image: example.org/absent:1\n    imagePullPolicy: Never\n"),
    );
    env.wait_running("tools-node1");
    assert!(
        env.ctr(&["images", "ls", "-q"])
            .contains("example.org/tools/bb:2")
    );
    let waiting = env.wait_for("ErrImageNeverPull", Duration::from_secs(20), || {
        let p = env.pod("never-node1")?;
        let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "ErrImageNeverPull").then_some(w)
    });
    assert!(
        waiting["message"]
            .as_str()
            .unwrap()
            .contains("pull policy of Never"),
        "{waiting}"
    );
}

#[test]
fn host_network_pods_use_the_node_network() {
    let mut env = Env::new("hostnet");
    env.start_agent();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.write_manifest(
        "hn.yaml",
        &pod_yaml(
            "hn",
            &format!("  hostNetwork: true\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: web\n    image: busybox\n    command: [sh, -c, 'mkdir -p /w && hostname > /w/index.html && exec httpd -f -p 127.0.0.1:{port} -h /w']\n"),
        ),
    );
    env.wait_running("hn-node1");
    let body = env.wait_for("host port answers", Duration::from_secs(20), || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.contains("200").then_some(out)
    });
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert!(body.trim_end().ends_with(&host), "{body}");
}

#[test]
fn the_examples_run() {
    let mut env = Env::new("examples");
    env.start_agent();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pods");
    let mut names = vec![];
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // Host paths of the examples move into the test's directory.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/var/lib/kubelet-lite/", &format!("{}/", env.dir.display()));
        env.write_manifest(&name, &text);
        names.push(name);
    }
    assert!(names.len() >= 3, "{names:?}");
    let web = env.wait_running("web-node1");
    let uid = web["metadata"]["uid"].as_str().unwrap().to_string();
    let log = env
        .dir
        .join(format!("logs/default_web-node1_{uid}/client/0.log"));
    env.wait_for("web client output", Duration::from_secs(30), || {
        std::fs::read_to_string(&log)
            .ok()?
            .contains("hello from web-node1")
            .then_some(())
    });
    let job = env.wait_for("job succeeded", Duration::from_secs(30), || {
        let p = env.pod("job-node1")?;
        (p["status"]["phase"] == "Succeeded").then_some(p)
    });
    assert_eq!(
        job["status"]["containerStatuses"][0]["state"]["terminated"]["message"],
        "done\n"
    );
    env.wait_running("limited-node1");
    let log_of = |pod: &str, container: &str| {
        let p = env.pod(pod)?;
        let uid = p["metadata"]["uid"].as_str()?.to_string();
        std::fs::read_to_string(
            env.dir
                .join(format!("logs/default_{pod}_{uid}/{container}/0.log")),
        )
        .ok()
    };
    env.wait_for(
        "shared-volume reader follows the writer",
        Duration::from_secs(30),
        || {
            log_of("shared-volume-node1", "reader")?
                .contains(" UTC ")
                .then_some(())
        },
    );
    env.wait_for("crawler configured", Duration::from_secs(30), || {
        let t = log_of("crawler-node1", "crawler")?;
        (t.contains("crawling https://example.org to depth 3 with token of 16 characters")
            && t.contains("delay-ms = 500"))
        .then_some(())
    });
    env.wait_for("counter started", Duration::from_secs(30), || {
        log_of("counter-node1", "counter")?
            .contains("start number")
            .then_some(())
    });
    let log = env.agent_output();
    assert!(!log.contains("manifest rejected"), "{log}");
    assert!(!log.contains("not supported by kubelet-lite"), "{log}");
}

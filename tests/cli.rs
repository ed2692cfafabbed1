//! The command line against a running agent and a real containerd: the
//! built binary's `get`, `describe`, `logs`, `exec`, `top` and `events`, as an
//! operator runs them, over the agent's Unix socket.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::Env;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// The built binary, talking to `env`'s agent over its socket.
fn cli(env: &Env) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kubelet-lite"));
    c.arg("--socket").arg(env.dir.join("agent.sock"));
    c
}

fn kl(env: &Env, args: &[&str]) -> Out {
    let out = cli(env).args(args).output().expect("running kubelet-lite");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a verb that must succeed; returns its stdout.
fn ok(env: &Env, args: &[&str]) -> String {
    let o = kl(env, args);
    assert_eq!(o.code, 0, "{args:?} failed: {}{}", o.stdout, o.stderr);
    o.stdout
}

/// Runs a verb that must fail with exit code 1 and `message` in its
/// stderr; returns its stderr.
fn fails(env: &Env, args: &[&str], message: &str) -> String {
    let o = kl(env, args);
    assert_eq!(o.code, 1, "{args:?}: {}", o.stdout);
    assert!(o.stderr.contains(message), "{args:?}: {}", o.stderr);
    o.stderr
}

/// A streaming verb, its stdout read line by line.
fn spawn(env: &Env, args: &[&str]) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = cli(env)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Lines from `rx` until one satisfies `f`, within `timeout`.
fn wait_line(
    rx: &std::sync::mpsc::Receiver<String>,
    timeout: Duration,
    f: impl Fn(&str) -> bool,
) -> Result<String, Vec<String>> {
    let deadline = std::time::Instant::now() + timeout;
    let mut seen = vec![];
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) if f(&l) => return Ok(l),
            Ok(l) => seen.push(l),
            Err(_) => break,
        }
    }
    Err(seen)
}

/// The row of `pod` in `get pods` output, split into columns.
fn row(table: &str, pod: &str) -> Option<Vec<String>> {
    let line = table
        .lines()
        .find(|l| l.split("   ").next() == Some(pod) || l.starts_with(&format!("{pod} ")))?;
    // Columns are separated by at least three spaces; RESTARTS may hold
    // "3 (5s ago)".
    Some(
        line.split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

/// Whether the agent has `path` open (its /proc/PID/fd links).
fn agent_has_open(env: &Env, path: &Path) -> bool {
    let pid = env.agent_pid().expect("agent running");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == path))
}

/// Sockets in /proc/net/unix bound to the agent's socket path: the
/// listener and each connection it accepted.
fn socket_entries(env: &Env) -> usize {
    let path = env.dir.join("agent.sock");
    std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().nth(7) == path.to_str())
        .count()
}

#[test]
fn help_completion_and_plain_logs() {
    let bin = env!("CARGO_BIN_EXE_kubelet-lite");
    let help = Command::new(bin).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success());
    assert!(
        text.contains("Examples:") && text.contains("kubelet-lite get pods -A"),
        "{text}"
    );
    let help = Command::new(bin).args(["logs", "--help"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("kubelet-lite logs web-node1 --previous")
    );
    for (shell, want) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef kubelet-lite"),
        ("fish", "complete -c kubelet-lite"),
    ] {
        let o = Command::new(bin)
            .args(["completion", shell])
            .output()
            .unwrap();
        let script = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && script.contains(want),
            "{shell}: {script}"
        );
        assert!(
            script.contains("describe") && script.contains("events"),
            "{shell}"
        );
    }
    // The agent's own log has no colour codes when stderr is not a
    // terminal (here a pipe), whatever NO_COLOR says.
    let o = Command::new(bin)
        .args(["--config", "/nonexistent/kubelet-lite.yaml"])
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(log.contains("/nonexistent/kubelet-lite.yaml"), "{log}");
    assert!(!log.contains('\x1b'), "ANSI codes in {log:?}");
}

const WEB: &str = "  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: busybox\n    command: [sleep, '3600']\n    resources:\n      limits: {memory: 64Mi}\n      requests: {cpu: 100m}\n    volumeMounts:\n    - {name: data, mountPath: /data}\n  volumes:\n  - name: data\n    emptyDir: {}\n";

#[test]
fn get_describe_events_and_unknown_names() {
    let mut env = Env::new("cli-get");
    // Without an agent: what to do, and exit 1.
    fails(
        &env,
        &["get", "pods"],
        &format!(
            "is the agent running? socket {} not found",
            env.dir.join("agent.sock").display()
        ),
    );
    env.start_agent();
    let mode = std::fs::metadata(env.dir.join("agent.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Nothing yet.
    let o = kl(&env, &["get", "pods"]);
    assert_eq!((o.code, o.stdout.as_str()), (0, ""));
    assert_eq!(o.stderr, "No resources found in default namespace.\n");

    // `get -w` from the start: one row per change.
    let (mut watch, rows) = spawn(&env, &["get", "pods", "-w"]);

    env.write_pod("web", WEB);
    env.write_pod("crash", "  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'echo attempt; exit 3']\n");
    env.write_pod("init", "  terminationGracePeriodSeconds: 1\n  initContainers:\n  - name: setup\n    image: busybox\n    command: [sleep, '4']\n  containers:\n  - name: app\n    image: busybox\n    command: [sleep, '3600']\n");
    env.write_pod("oom", "  restartPolicy: Never\n  containers:\n  - name: fill\n    image: busybox\n    command: [dd, if=/dev/zero, of=/dev/shm/fill, bs=1M, count=100]\n    resources:\n      limits: {memory: 32Mi}\n");
    // The init pod shows Init:0/1 while its init container runs.
    let init_row = env.wait_for("init-node1 Init:0/1", Duration::from_secs(30), || {
        row(&ok(&env, &["get", "pods"]), "init-node1").filter(|r| r[2] == "Init:0/1")
    });
    assert_eq!(init_row[1], "0/1");
    env.wait_running("web-node1");
    let table = env.wait_for("statuses settle", Duration::from_secs(60), || {
        let t = ok(&env, &["get", "pods"]);
        let status = |p: &str| row(&t, p).map(|r| r[2].clone());
        (status("crash-node1")? == "CrashLoopBackOff"
            && status("oom-node1")? == "OOMKilled"
            && status("init-node1")? == "Running")
            .then_some(t)
    });
    // Listed by name, as the API server lists them.
    let names: Vec<&str> = table
        .lines()
        .skip(1)
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        names,
        ["crash-node1", "init-node1", "oom-node1", "web-node1"],
        "{table}"
    );
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    // Columns start where the header's do.
    let starts = |l: &str| {
        let mut s = vec![0];
        let b = l.as_bytes();
        for i in 1..b.len() {
            if b[i] != b' ' && b[i - 1] == b' ' && l[..i].ends_with("   ") {
                s.push(i);
            }
        }
        s
    };
    let web_line = table.lines().find(|l| l.starts_with("web-node1 ")).unwrap();
    assert_eq!(
        starts(table.lines().next().unwrap()),
        starts(web_line),
        "{table}"
    );
    let web = row(&table, "web-node1").unwrap();
    assert_eq!(&web[1..4], ["1/1", "Running", "0"], "{table}");
    let crash = row(&table, "crash-node1").unwrap();
    assert_eq!(crash[1], "0/1");
    // "N (Ds ago)" for a container that restarted.
    let (n, ago) = crash[3].split_once(' ').expect("restarts with age");
    assert!(n.parse::<u32>().unwrap() >= 1, "{table}");
    assert!(ago.starts_with('(') && ago.ends_with(" ago)"), "{table}");
    assert_eq!(row(&table, "oom-node1").unwrap()[1], "0/1");
    assert_eq!(row(&table, "init-node1").unwrap()[1], "1/1");

    // The watch printed rows as the pods changed.
    let seen = wait_line(&rows, Duration::from_secs(10), |l| {
        l.starts_with("crash-node1 ") && l.contains("CrashLoopBackOff")
    });
    assert!(seen.is_ok(), "get -w printed {seen:?}");
    // The agent serves the watch on an accepted connection of its socket;
    // once the client is gone, only the listener is left.
    assert!(socket_entries(&env) >= 2, "the watch is connected");
    let _ = watch.kill();
    let _ = watch.wait();
    env.wait_for("get -w connection closed", Duration::from_secs(10), || {
        (socket_entries(&env) == 1).then_some(())
    });
    let (mut events_watch, _) = spawn(&env, &["events", "-w"]);
    env.wait_for("events -w connected", Duration::from_secs(10), || {
        (socket_entries(&env) == 2).then_some(())
    });
    let _ = events_watch.kill();
    let _ = events_watch.wait();
    env.wait_for(
        "events -w connection closed",
        Duration::from_secs(10),
        || (socket_entries(&env) == 1).then_some(()),
    );

    // wide, other namespaces, json, yaml.
    let wide = ok(&env, &["get", "pods", "-o", "wide"]);
    let h: Vec<&str> = wide
        .lines()
        .next()
        .unwrap()
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        h,
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES"
        ]
    );
    let w = row(&wide, "web-node1").unwrap();
    let ip = env.pod("web-node1").unwrap()["status"]["podIP"]
        .as_str()
        .unwrap_or("<none>")
        .to_string();
    assert_eq!(
        &w[5..],
        [ip.as_str(), "node1", "<none>", "<none>"],
        "{wide}"
    );
    // AGE: since the agent started the pod.
    assert!(w[4].ends_with('s') || w[4].ends_with('m'), "{wide}");
    let all = ok(&env, &["get", "pods", "-A"]);
    assert!(all.starts_with("NAMESPACE   NAME"), "{all}");
    assert!(
        all.lines().any(|l| l.starts_with("default     web-node1 ")),
        "{all}"
    );
    let o = kl(&env, &["get", "pods", "-n", "other"]);
    assert_eq!((o.code, o.stdout.as_str()), (0, ""));
    assert!(o.stderr.contains("No resources found in other namespace."));
    let json: serde_json::Value =
        serde_json::from_str(&ok(&env, &["get", "pods", "-o", "json"])).unwrap();
    assert_eq!(json["kind"], "List");
    assert_eq!(json["items"].as_array().unwrap().len(), 4);
    let yaml = ok(&env, &["get", "pod", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: List") && yaml.contains("name: web-node1"),
        "{yaml}"
    );

    // describe: the manifest, QoS, cgroup, volumes, containers and events.
    let d = ok(&env, &["describe", "pod", "crash-node1"]);
    for want in [
        "Name:             crash-node1",
        &format!(
            "Manifest:         {}",
            env.manifests.join("crash.yaml").display()
        ),
        "QoS Class:",
        "BestEffort",
        "Cgroup:",
        "besteffort",
        "    Last State:     Terminated\n      Reason:       Error\n      Exit Code:    3\n",
        "Events:\n  Type     Reason ",
        "kubelet  Back-off restarting failed container c",
    ] {
        assert!(d.contains(want), "no {want:?} in\n{d}");
    }
    // Restarts are counted, not repeated: "Started ... (xN over ...)".
    assert!(
        d.lines().any(|l| l.contains("Started") && l.contains("(x")),
        "{d}"
    );
    let d = ok(&env, &["describe", "pod", "web-node1"]);
    for want in [
        "Burstable",
        "    Limits:\n      memory:  64Mi\n",
        "cpu:",
        "      /data from data (rw)\n",
        "EmptyDir (a temporary directory that shares a pod's lifetime)",
    ] {
        assert!(d.contains(want), "no {want:?} in\n{d}");
    }

    // events, and the same on the HTTP port.
    let ev = ok(&env, &["events"]);
    assert!(ev.starts_with("LAST SEEN   TYPE"), "{ev}");
    assert!(
        ev.lines().any(|l| l.contains("Warning")
            && l.contains("BackOff")
            && l.contains("pod/crash-node1")),
        "{ev}"
    );
    let list: serde_json::Value = serde_json::from_str(&env.get("/events").unwrap()).unwrap();
    assert_eq!(list["kind"], "EventList");
    let backoff = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["reason"] == "BackOff" && e["involvedObject"]["name"] == "crash-node1")
        .expect("a BackOff event");
    assert_eq!(backoff["involvedObject"]["fieldPath"], "spec.containers{c}");
    assert_eq!(backoff["source"]["component"], "kubelet");
    assert_eq!(backoff["source"]["host"], "node1");
    assert!(backoff["count"].as_i64().unwrap() >= 1);

    // Unknown names: what exists is listed, exit 1.
    let stderr = fails(
        &env,
        &["describe", "pod", "nope"],
        "pod \"nope\" not found in namespace \"default\"",
    );
    assert!(stderr.contains("default/web-node1"), "{stderr}");
    fails(
        &env,
        &["logs", "crash-node1", "-c", "nope"],
        "container \"nope\" is not valid for pod \"crash-node1\": choose one of: [c]",
    );
    let o = kl(&env, &["logs", "init-node1", "-c", "nope"]);
    assert!(
        o.stderr.contains("or one of the init containers: [setup]"),
        "{}",
        o.stderr
    );
    let one = ok(&env, &["get", "pod", "web-node1"]);
    assert_eq!(one.lines().count(), 2, "{one}");
    fails(
        &env,
        &["get", "pod", "nope"],
        "pods \"nope\" not found; pods in namespace \"default\": crash-node1, init-node1, oom-node1, web-node1",
    );
    let o = kl(&env, &["get", "nodes"]);
    assert_eq!(o.code, 2, "clap's usage error");

    // --config finds the socket in the agent's configuration.
    let o = Command::new(env!("CARGO_BIN_EXE_kubelet-lite"))
        .arg("--config")
        .arg(env.config_path())
        .args(["get", "pods"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("web-node1"));
}

#[test]
fn logs_previous_tail_follow_and_disconnect() {
    let mut env = Env::new("cli-logs");
    env.start_agent();
    // Fails once, then runs: two attempts with known output.
    env.write_pod("twice", "  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'n=$(cat /data/n 2>/dev/null || echo 0); echo $((n+1)) > /data/n; echo run $n; for i in 1 2 3 4 5; do echo line $i; done; echo end; if [ $n = 0 ]; then exit 1; fi; exec sleep 3600']\n    volumeMounts:\n    - {name: data, mountPath: /data}\n  volumes:\n  - name: data\n    emptyDir: {}\n");
    env.write_pod("ticker", "  terminationGracePeriodSeconds: 1\n  containers:\n  - name: t\n    image: busybox\n    command: [sh, -c, 'i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done']\n");
    env.wait_for(
        "twice restarted and running",
        Duration::from_secs(60),
        || {
            let p = env.pod("twice-node1")?;
            let c = &p["status"]["containerStatuses"][0];
            (c["restartCount"] == 1 && c["state"]["running"].is_object()).then_some(())
        },
    );
    let current = env.wait_for("the second run's log", Duration::from_secs(10), || {
        let l = ok(&env, &["logs", "twice-node1"]);
        l.contains("line 5").then_some(l)
    });
    assert_eq!(
        current,
        "run 1\nline 1\nline 2\nline 3\nline 4\nline 5\nend\n"
    );
    let previous = ok(&env, &["logs", "twice-node1", "--previous"]);
    assert_eq!(
        previous,
        "run 0\nline 1\nline 2\nline 3\nline 4\nline 5\nend\n"
    );
    assert_eq!(
        ok(&env, &["logs", "twice-node1", "--tail", "2"]),
        "line 5\nend\n"
    );
    assert_eq!(
        ok(&env, &["logs", "twice-node1", "-p", "--tail=1"]),
        "end\n"
    );
    assert_eq!(
        ok(
            &env,
            &["logs", "twice-node1", "--since", "1h", "--tail", "1"]
        ),
        "end\n"
    );
    let ts = ok(
        &env,
        &["logs", "twice-node1", "--timestamps", "--tail", "1"],
    );
    let (t, rest) = ts.split_once(' ').unwrap();
    assert!(t.parse::<jiff::Timestamp>().is_ok(), "{ts}");
    assert_eq!(rest, "end\n");
    // No previous run.
    fails(
        &env,
        &["logs", "ticker-node1", "--previous"],
        "previous terminated container \"t\" in pod \"ticker-node1\" not found",
    );

    // Follow, across a copytruncate rotation.
    env.wait_running("ticker-node1");
    let uid = env.pod("ticker-node1").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let log = env
        .dir
        .join(format!("logs/default_ticker-node1_{uid}/t/0.log"));
    let (mut follow, lines) = spawn(&env, &["logs", "ticker-node1", "-f"]);
    let tick = |l: &str| l.strip_prefix("tick ").and_then(|n| n.parse::<u64>().ok());
    let first = wait_line(&lines, Duration::from_secs(10), |l| {
        tick(l).is_some_and(|n| n >= 5)
    })
    .unwrap_or_else(|seen| panic!("no ticks followed: {seen:?}"));
    let before = tick(&first).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    let after = wait_line(&lines, Duration::from_secs(10), |l| {
        tick(l).is_some_and(|n| n > before + 10)
    });
    assert!(
        after.is_ok(),
        "nothing followed after the truncation: {after:?}"
    );
    // The agent holds the file for the client; a client that goes away
    // takes it with it.
    assert!(agent_has_open(&env, &log), "the follow holds the log open");
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(follow.id().cast_signed(), libc::SIGKILL) };
    let _ = follow.wait();
    env.wait_for(
        "the log closed after the client left",
        Duration::from_secs(5),
        || (!agent_has_open(&env, &log)).then_some(()),
    );

    // `logs -f` ends when the container stops.
    let (mut follow, lines) = spawn(&env, &["logs", "twice-node1", "-f"]);
    wait_line(&lines, Duration::from_secs(10), |l| l == "end").unwrap();
    env.remove_manifest("twice.yaml");
    let status = env.wait_for("logs -f ended", Duration::from_secs(30), || {
        follow.try_wait().unwrap()
    });
    assert!(status.success());
}

/// containerLogMaxSize / containerLogMaxFiles: the writer rotates the log
/// by size, the older rotated files are compressed and the oldest removed,
/// and `logs -f` reads every line across the rotations.
#[test]
fn logs_rotate_by_size_and_follow_reads_across() {
    let mut env = Env::new("cli-rotate");
    env.write_config("containerLogMaxSize: 2Ki\ncontainerLogMaxFiles: 3\n");
    env.start_agent();
    // About 3 KB of records a second: a rotation every second.
    env.write_pod("chatty", "  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'i=0; while true; do echo tick $i ................................................; i=$((i+1)); usleep 40000; done']\n");
    env.wait_running("chatty-node1");
    let uid = env.pod("chatty-node1").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = env.dir.join(format!("logs/default_chatty-node1_{uid}/c"));
    let (mut follow, lines) = spawn(&env, &["logs", "chatty-node1", "-f"]);
    let tick = |l: &str| {
        l.strip_prefix("tick ")
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    let first = wait_line(&lines, Duration::from_secs(20), |l| tick(l).is_some())
        .unwrap_or_else(|seen| panic!("nothing followed: {seen:?}"));
    // Every tick, in order, for about 6 s: across five or more rotations.
    let mut last = tick(&first).unwrap();
    let mut rotated = std::collections::BTreeSet::new();
    while last < tick(&first).unwrap() + 150 {
        let l = lines
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("follow stopped after tick {last}: {e}"));
        let n = tick(&l).unwrap_or_else(|| panic!("not a tick: {l:?}"));
        assert_eq!(n, last + 1, "a line lost or repeated across a rotation");
        last = n;
        for e in std::fs::read_dir(&dir).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if let Some(stamp) = name.strip_prefix("0.log.") {
                rotated.insert(
                    stamp
                        .trim_end_matches(".tmp")
                        .trim_end_matches(".gz")
                        .to_string(),
                );
            }
        }
    }
    assert!(rotated.len() >= 4, "rotations seen: {rotated:?}");
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(follow.id().cast_signed(), libc::SIGKILL) };
    let _ = follow.wait();
    // At most three files: the current one, the newest rotated one as
    // written, the older compressed; nothing temporary left.
    env.wait_for("rotated files tidied", Duration::from_secs(10), || {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let ok = names.len() == 3
            && names[0] == "0.log"
            && names[1].ends_with(".gz")
            && !names[2].ends_with(".gz")
            && names.iter().all(|n| !n.ends_with(".tmp"));
        ok.then_some(())
    });
    // The log as `logs` shows it is the current file, whole records only.
    let text = ok(&env, &["logs", "chatty-node1"]);
    assert!(text.lines().all(|l| tick(l).is_some()), "{text}");
}

/// A container that keeps restarting keeps the files of its current and
/// previous attempts only (as the kubelet keeps one dead container), and
/// `--previous` still reads the one before.
#[test]
fn a_restarting_container_keeps_two_attempts_of_files() {
    let mut env = Env::new("cli-attempts");
    env.write_config("crashLoopBackOff:\n  initial: 100ms\n  max: 200ms\n");
    env.start_agent();
    env.write_pod("flaky", "  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'echo attempt; sleep 0.3; exit 1']\n");
    let restarts = |env: &Env| {
        env.pod("flaky-node1")
            .and_then(|p| p["status"]["containerStatuses"][0]["restartCount"].as_u64())
    };
    env.wait_for("five restarts", Duration::from_secs(60), || {
        restarts(&env).filter(|n| *n >= 5)
    });
    let uid = env.pod("flaky-node1").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let logs = env.dir.join(format!("logs/default_flaky-node1_{uid}/c"));
    let attempts = |dir: &Path| -> Vec<u64> {
        let mut v: Vec<u64> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                name.split_once('.')?.0.parse().ok()
            })
            .collect();
        v.sort_unstable();
        v
    };
    env.wait_for(
        "old attempts' logs removed",
        Duration::from_secs(20),
        || {
            let n = restarts(&env)?;
            let a = attempts(&logs);
            (a.len() <= 3 && a.iter().all(|k| *k + 1 >= n)).then_some(())
        },
    );
    // And their termination messages, under the pod's state directory.
    let state = env.dir.join(format!("root/pods/{uid}/containers/c"));
    env.wait_for(
        "old termination messages removed",
        Duration::from_secs(20),
        || {
            let n = restarts(&env)?;
            let a = attempts(&state);
            (!a.is_empty() && a.len() <= 3 && a.iter().all(|k| *k + 1 >= n)).then_some(())
        },
    );
    let o = kl(&env, &["logs", "flaky-node1", "--previous"]);
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "attempt\n"),
        "{}",
        o.stderr
    );
}

#[test]
fn top_reads_cpu_and_memory() {
    let mut env = Env::new("cli-top");
    env.start_agent();
    // A quarter of a CPU (CFS quota) and ~40 MiB of tmpfs charged to it.
    env.write_pod("burn", "  terminationGracePeriodSeconds: 1\n  containers:\n  - name: burn\n    image: busybox\n    command: [sh, -c, 'dd if=/dev/zero of=/dev/shm/hold bs=1M count=40 && while :; do :; done']\n    resources:\n      limits: {cpu: 250m, memory: 128Mi}\n  - name: idle\n    image: busybox\n    command: [sleep, '3600']\n");
    env.wait_running("burn-node1");
    std::thread::sleep(Duration::from_secs(2));
    let parse = |cell: &str, unit: &str| cell.strip_suffix(unit).unwrap().parse::<u64>().unwrap();
    // The reference: the burner's CPU time from /metrics/resource around
    // the call (on a busy machine it may get less than its quota).
    let cpu_seconds = || {
        let text = env.get("/metrics/resource").unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("container_cpu_usage_seconds_total{container=\"burn\""))
            .expect("the burner's CPU series")
            .to_string();
        let value: f64 = line.split(' ').nth(1).unwrap().parse().unwrap();
        (std::time::Instant::now(), value)
    };
    let (t0, u0) = cpu_seconds();
    let t = ok(&env, &["top", "pods", "--containers"]);
    let (t1, u1) = cpu_seconds();
    let reference = (u1 - u0) / (t1 - t0).as_secs_f64() * 1000.0;
    assert!(t.starts_with("POD "), "{t}");
    let lines: Vec<Vec<&str>> = t
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let burn = lines.iter().find(|l| l[1] == "burn").expect("burn row");
    let idle = lines.iter().find(|l| l[1] == "idle").expect("idle row");
    // Within 10% of the reference, and never past the quota.
    let cpu = parse(burn[2], "m") as f64;
    assert!(
        (cpu - reference).abs() <= reference * 0.1 && cpu <= 275.0,
        "top says {cpu}m, /metrics/resource {reference:.0}m (limit 250m):\n{t}"
    );
    assert!(parse(idle[2], "m") <= 5, "{t}");
    let mem = parse(burn[3], "Mi");
    assert!((40..=60).contains(&mem), "burn holds {mem}Mi:\n{t}");
    // Per pod: the containers' sums.
    let t = ok(&env, &["top", "pods"]);
    let pod: Vec<&str> = t.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(pod[0], "burn-node1", "{t}");
    assert!((100..=280).contains(&parse(pod[1], "m")), "{t}");
    fails(
        &env,
        &["top", "pods", "-n", "other"],
        "no running containers",
    );
}

/// The command line of a client run on a pseudo-terminal (util-linux
/// `script`), with `stty` set first; it must exit with `code`. Returns
/// what the terminal showed.
fn on_pty(env: &Env, stty: &str, args: &str, code: i32) -> String {
    let cmd = format!(
        "stty {stty}; {} --socket {} {args}",
        env!("CARGO_BIN_EXE_kubelet-lite"),
        env.dir.join("agent.sock").display()
    );
    // stdin stays open (and empty) for as long as `script` runs.
    let child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running script");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn exec_streams_exit_codes_terminals_and_disconnects() {
    let mut env = Env::new("cli-exec");
    env.start_agent();
    env.write_pod("two", "  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: busybox\n    command: [sleep, '3600']\n  - name: side\n    image: busybox\n    command: [sleep, '3601']\n");
    let pod = env.wait_running("two-node1");

    // Output and exit code 0; the default container, with kubectl's notice.
    let o = kl(&env, &["exec", "two-node1", "--", "echo", "hi"]);
    assert_eq!((o.code, o.stdout.as_str()), (0, "hi\n"), "{}", o.stderr);
    assert!(
        o.stderr.contains("Defaulted container \"app\""),
        "{}",
        o.stderr
    );
    assert_eq!(
        ok(
            &env,
            &[
                "exec",
                "two-node1",
                "-c",
                "side",
                "--",
                "cat",
                "/proc/1/cmdline"
            ]
        ),
        "sleep\x003601\x00"
    );
    // The exit code passes through; stderr stays stderr.
    let o = kl(
        &env,
        &[
            "exec",
            "two-node1",
            "-c",
            "app",
            "--",
            "sh",
            "-c",
            "echo oops >&2; exit 7",
        ],
    );
    assert_eq!(o.code, 7, "{}", o.stderr);
    assert_eq!(o.stdout, "");
    assert!(o.stderr.starts_with("oops\n"), "{}", o.stderr);
    assert!(
        o.stderr.contains("command terminated with exit code 7"),
        "{}",
        o.stderr
    );

    // stdin piped with -i, more than one pipe buffer of it.
    let mut child = cli(&env)
        .args([
            "exec",
            "-i",
            "two-node1",
            "-c",
            "app",
            "--",
            "sh",
            "-c",
            "wc -c; echo done",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&vec![b'x'; 200_000]).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200000\ndone\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    let o = {
        let mut c = cli(&env)
            .args(["exec", "-i", "two-node1", "--", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(b"abc\n").unwrap();
        c.wait_with_output().unwrap()
    };
    assert_eq!(String::from_utf8_lossy(&o.stdout), "abc\n");

    // -t: a real terminal in the container; with -i, its size follows
    // ours, and the exit code still passes through.
    let shown = on_pty(
        &env,
        "cols 100 rows 30",
        "exec -t two-node1 -c app -- tty",
        0,
    );
    assert!(shown.contains("/dev/pts/"), "{shown:?}");
    let shown = on_pty(
        &env,
        "cols 100 rows 30",
        "exec -it two-node1 -c app -- sh -c 'stty size; echo $TERM; exit 3'",
        3,
    );
    assert!(shown.contains("30 100\r\nxterm\r\n"), "{shown:?}");
    // SIGWINCH: the new size reaches the container's terminal.
    let shown = on_pty(
        &env,
        "cols 100 rows 30; (sleep 1; stty cols 120 rows 40 </dev/tty) & true",
        "exec -it two-node1 -c app -- sh -c 'stty size; sleep 3; stty size'",
        0,
    );
    // (The terminal may echo a stray byte the size change sent in between.)
    let first = shown.find("30 100\r\n");
    let second = shown.find("40 120\r\n");
    assert!(first.is_some() && second > first, "{shown:?}");
    // Without a terminal on stdin, -t is dropped as kubectl drops it.
    let o = kl(&env, &["exec", "-t", "two-node1", "-c", "app", "--", "tty"]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert_eq!(o.stdout, "not a tty\n");
    assert!(o.stderr.contains("Unable to use a TTY"), "{}", o.stderr);

    // Unknown names list what exists.
    fails(
        &env,
        &["exec", "two-node1", "-c", "nope", "--", "true"],
        "choose one of: [app side]",
    );
    fails(
        &env,
        &["exec", "three", "--", "true"],
        "pods on this node: default/two-node1",
    );
    fails(
        &env,
        &["exec", "two-node1", "--", "/no/such/binary"],
        "/no/such/binary",
    );

    // A client killed mid-exec: the process goes, and the agent lets go.
    let id = pod["status"]["containerStatuses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "app")
        .unwrap()["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("containerd://")
        .to_string();
    let task_pids = || env.ctr(&["tasks", "ps", &id]).lines().skip(1).count();
    let before = task_pids();
    let exec_sleep = |secs: &str| {
        cli(&env)
            .args(["exec", "two-node1", "-c", "app", "--", "sleep", secs])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut client = exec_sleep("101");
    let ps = || ok(&env, &["exec", "two-node1", "-c", "app", "--", "ps"]);
    env.wait_for("the exec's sleep", Duration::from_secs(10), || {
        ps().contains("sleep 101").then_some(())
    });
    assert_eq!(task_pids(), before + 1);
    client.kill().unwrap();
    client.wait().unwrap();
    env.wait_for("the exec killed", Duration::from_secs(5), || {
        (!ps().contains("sleep 101") && task_pids() == before).then_some(())
    });
    let exec_dir = env.dir.join("root/exec");
    let fifos_open = || {
        let pid = env.agent_pid().unwrap();
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter(|l| l.starts_with(&exec_dir))
            .count()
    };
    env.wait_for("no connection or FIFO left", Duration::from_secs(5), || {
        (socket_entries(&env) == 1 && fifos_open() == 0).then_some(())
    });

    // The agent killed during an exec: the FIFOs it left are removed when
    // it starts again.
    let fifos = || std::fs::read_dir(&exec_dir).unwrap().count();
    let mut client = exec_sleep("102");
    env.wait_for("the exec's sleep", Duration::from_secs(10), || {
        ps().contains("sleep 102").then_some(())
    });
    assert!(fifos() > 0);
    env.stop_agent(libc::SIGKILL);
    client.kill().unwrap();
    client.wait().unwrap();
    assert!(fifos() > 0, "the killed agent's FIFOs are there");
    env.start_agent();
    env.wait_for("the FIFOs removed", Duration::from_secs(10), || {
        (fifos() == 0).then_some(())
    });
}

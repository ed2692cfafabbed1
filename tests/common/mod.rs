//! Test harness: a private containerd (own root, state and socket), the
//! agent binary against a temporary manifest directory, and a cleanup that
//! removes every process, mount, cgroup and file the test made, even when
//! the test fails.
#![allow(dead_code)]

pub mod net;
pub mod registry;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const NAMESPACE: &str = "kubelet-lite";
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The busybox OCI archive, built once per test binary.
pub fn busybox_archive() -> &'static Path {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        // Built once for every test binary and bench, under cargo's
        // temporary directory, named after the script that makes it.
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/images/busybox-oci.sh");
        let text = std::fs::read(&script).expect("reading busybox-oci.sh");
        let hash = text.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("busybox-{hash:016x}.tar"));
        if path.exists() {
            return path;
        }
        let partial = path.with_extension(format!("tar.{}", std::process::id()));
        let ok = Command::new(script)
            .arg(&partial)
            .status()
            .expect("running busybox-oci.sh");
        assert!(ok.success(), "building the busybox image failed");
        std::fs::rename(&partial, &path).expect("keeping the busybox image");
        path
    })
}

pub struct Env {
    pub dir: PathBuf,
    pub manifests: PathBuf,
    pub port: u16,
    pub cgroup_root: String,
    containerd: Option<Child>,
    agent: Option<Child>,
    pub agent_log: PathBuf,
    agent_runs: usize,
    /// Environment variables the agent is started with, besides the log's.
    agent_env: Vec<(String, String)>,
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Env {
    /// A fresh containerd with the busybox archive in the images directory.
    pub fn new(tag: &str) -> Env {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/kl-test-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["manifests", "images", "root", "logs", "containerd"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::copy(busybox_archive(), dir.join("images/busybox.tar")).unwrap();
        let cfg = format!(
            "version = 2\nroot = \"{d}/containerd/root\"\nstate = \"{d}/containerd/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/containerd.sock\"\n[ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n",
            d = dir.display()
        );
        std::fs::write(dir.join("containerd.toml"), cfg).unwrap();
        let containerd = spawn_containerd(&dir);
        let env = Env {
            manifests: dir.join("manifests"),
            port: free_port(),
            cgroup_root: format!("/kl-test-{}-{n}", std::process::id()),
            agent_log: dir.join("agent.log"),
            dir,
            containerd: Some(containerd),
            agent: None,
            agent_runs: 0,
            agent_env: vec![],
        };
        env.wait_containerd();
        env
    }

    fn wait_containerd(&self) {
        let sock = self.dir.join("containerd.sock");
        self.wait_for("containerd socket", Duration::from_secs(20), || {
            (sock.exists() && std::os::unix::net::UnixStream::connect(&sock).is_ok()).then_some(())
        });
    }

    /// Kills the test's containerd (its shims and tasks live on).
    pub fn kill_containerd(&mut self) {
        if let Some(mut c) = self.containerd.take() {
            // SAFETY: kill(2) on our own child's PID.
            unsafe { libc::kill(c.id().cast_signed(), libc::SIGKILL) };
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.dir.join("containerd.sock"));
    }

    /// Starts the test's containerd again, on the same root and socket.
    pub fn start_containerd(&mut self) {
        self.containerd = Some(spawn_containerd(&self.dir));
        self.wait_containerd();
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("agent.yaml")
    }

    /// Writes the agent config; `extra` is YAML added to (and, for the keys
    /// it sets, replacing) the test defaults.
    pub fn write_config(&self, extra: &str) {
        let d = self.dir.display();
        let base = format!(
            "staticPodPath: {d}/manifests\nrootDir: {d}/root\npodLogsDir: {d}/logs\nimagesDir: {d}/images\n\
             nodeName: node1\ncgroupRoot: {}\nlistenAddress: 127.0.0.1:{}\nfileCheckFrequency: 2s\n\
             podNetwork: loopback\ncliSocket: {d}/agent.sock\n\
             containerd:\n  address: {d}/containerd.sock\n",
            self.cgroup_root, self.port
        );
        let overridden = |line: &str| {
            let key = line.split(':').next().unwrap_or("");
            !line.starts_with(' ') && extra.lines().any(|e| e.split(':').next() == Some(key))
        };
        let mut cfg: String = base
            .lines()
            .filter(|l| !overridden(l))
            .map(|l| format!("{l}\n"))
            .collect();
        cfg.push_str(extra);
        std::fs::write(self.config_path(), cfg).unwrap();
    }

    pub fn start_agent(&mut self) {
        self.start_agent_unchecked();
        self.wait_for("agent /healthz", Duration::from_secs(20), || {
            self.get("/healthz").ok()
        });
    }

    /// Starts the agent without waiting for its plain-HTTP /healthz.
    pub fn start_agent_unchecked(&mut self) {
        if !self.config_path().exists() {
            self.write_config("crashLoopBackOff:\n  initial: 1s\n  max: 8s\n");
        }
        self.agent_runs += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.agent_log)
            .unwrap();
        self.agent = Some(self.spawn_agent(log));
    }

    /// The agent binary with the test config, logging to `log`.
    /// `KL_AGENT_WRAPPER` (e.g. `heaptrack -o /tmp/agent`) runs the agent
    /// under a profiler.
    fn spawn_agent(&self, log: std::fs::File) -> Child {
        let bin = env!("CARGO_BIN_EXE_kubelet-lite");
        let wrapper = std::env::var("KL_AGENT_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut cmd = match words.next() {
            Some(w) => {
                let mut c = Command::new(w);
                c.args(words).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        // Its own process group: a wrapper and the agent go together.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.arg("--config")
            .arg(self.config_path())
            .env("KUBELET_LITE_LOG", "info,kubelet_lite=debug")
            .env("NO_COLOR", "1")
            .envs(self.agent_env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting the agent")
    }

    /// Starts the agent with `key=value` in its environment from now on.
    pub fn set_agent_env(&mut self, key: &str, value: &str) {
        self.agent_env.push((key.to_string(), value.to_string()));
    }

    /// Runs the agent with the current config, expecting it to refuse to
    /// start; returns what it logged.
    pub fn agent_refuses_to_start(&self) -> String {
        let log_path = self.dir.join("refused.log");
        let mut child = self.spawn_agent(std::fs::File::create(&log_path).unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(
            status.is_some_and(|s| !s.success()),
            "the agent did not refuse to start ({status:?}):\n{log}"
        );
        log
    }

    /// SIGKILL (or SIGTERM) the agent and reap it.
    pub fn stop_agent(&mut self, signal: i32) {
        if let Some(mut a) = self.agent.take() {
            // SAFETY: kill(2) on the process group of a child we spawned
            // (and not yet reaped) as its leader.
            unsafe { libc::kill(-a.id().cast_signed(), signal) };
            let _ = a.wait();
        }
    }

    /// Waits until the agent has read the manifest directory twice more
    /// (one read may have begun before the caller's last change), so that a
    /// check that nothing changed is made after the change was seen.
    pub fn wait_rescan(&self) {
        let reads = || {
            self.agent_output()
                .matches("static pod directory read")
                .count()
        };
        let before = reads();
        self.wait_for(
            "two more reads of the manifest directory",
            Duration::from_secs(30),
            || (reads() >= before + 2).then_some(()),
        );
    }

    /// Sends `signal` to the test's containerd (SIGSTOP freezes it: its
    /// socket accepts, nothing answers).
    pub fn signal_containerd(&self, signal: i32) {
        if let Some(c) = &self.containerd {
            // SAFETY: kill(2) on the PID of our own child, not yet reaped.
            unsafe { libc::kill(c.id().cast_signed(), signal) };
        }
    }

    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(|a| a.id())
    }

    pub fn agent_is_alive(&mut self) -> bool {
        self.agent
            .as_mut()
            .is_some_and(|a| a.try_wait().ok().flatten().is_none())
    }

    pub fn agent_output(&self) -> String {
        std::fs::read_to_string(&self.agent_log).unwrap_or_default()
    }

    pub fn write_manifest(&self, name: &str, text: &str) {
        // Write then rename, as a careful operator (or config management) would.
        let tmp = self.manifests.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.manifests.join(name)).unwrap();
    }

    /// Writes `{name}.yaml`: the pod `name` with the given spec (see
    /// `pod_yaml`).
    pub fn write_pod(&self, name: &str, spec: &str) {
        self.write_manifest(&format!("{name}.yaml"), &pod_yaml(name, spec));
    }

    pub fn remove_manifest(&self, name: &str) {
        std::fs::remove_file(self.manifests.join(name)).unwrap();
    }

    /// The agent's bearer token: from the configured `httpTokenFile`, or
    /// the one it made in its root directory.
    pub fn token_file(&self) -> PathBuf {
        std::fs::read_to_string(self.config_path())
            .ok()
            .and_then(|c| {
                c.lines()
                    .find_map(|l| l.strip_prefix("httpTokenFile:"))
                    .map(|f| PathBuf::from(f.trim()))
            })
            .unwrap_or_else(|| self.dir.join("root/http-token"))
    }

    pub fn token(&self) -> Option<String> {
        std::fs::read_to_string(self.token_file())
            .ok()
            .map(|t| t.trim().to_string())
    }

    /// GET over plain HTTP/1.0 on loopback, with the agent's token.
    pub fn get(&self, path: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let auth = self
            .token()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n{auth}\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        match out.split_once("\r\n\r\n") {
            Some((head, body))
                if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") =>
            {
                Ok(body.to_string())
            }
            _ => Err(std::io::Error::other(format!("bad response: {out}"))),
        }
    }

    /// The agent's `/pods` items. An agent that does not answer fails the
    /// test: an empty list would pass every "pod gone" wait.
    pub fn pods(&self) -> Vec<serde_json::Value> {
        let body = self.get("/pods").unwrap_or_else(|e| {
            panic!("GET /pods: {e}\n--- agent log ---\n{}", self.agent_output())
        });
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET /pods: {e}: {body}"));
        v["items"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("GET /pods: no items: {body}"))
    }

    pub fn pod(&self, name: &str) -> Option<serde_json::Value> {
        self.pods()
            .into_iter()
            .find(|p| p["metadata"]["name"] == name)
    }

    /// Polls `f` every 100 ms until it returns Some, or panics with what the
    /// agent logged.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n--- agent log ---\n{}\n--- pods ---\n{}",
                    self.agent_output(),
                    self.get("/pods").unwrap_or_else(|e| e.to_string())
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the pod's containers all run; returns the pod.
    pub fn wait_running(&self, name: &str) -> serde_json::Value {
        self.wait_for(
            &format!("pod {name} running"),
            Duration::from_secs(60),
            || {
                let p = self.pod(name)?;
                let statuses = p["status"]["containerStatuses"].as_array()?;
                (p["status"]["phase"] == "Running"
                    && statuses.iter().all(|c| c["state"]["running"].is_object()))
                .then_some(p)
            },
        )
    }

    pub fn ctr(&self, args: &[&str]) -> String {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .args(["--namespace", NAMESPACE])
            .args(args)
            .output()
            .expect("running ctr");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// containerd task IDs with their PIDs and status.
    pub fn tasks(&self) -> Vec<(String, u32, String)> {
        self.ctr(&["tasks", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((
                    f.first()?.to_string(),
                    f.get(1)?.parse().ok()?,
                    f.get(2)?.to_string(),
                ))
            })
            .collect()
    }

    pub fn containers(&self) -> Vec<String> {
        self.ctr(&["containers", "ls", "-q"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The mounts below the test directory, with the pods' namespace pins
    /// in the agent's pin namespace (named as
    /// `<dir>/root/pods/<uid>/ns/<kind>`, where an earlier layout put them
    /// in the host's mount table).
    pub fn mounts_under_dir(&self) -> Vec<String> {
        let prefix = format!("{}/", self.dir.display());
        let mut out: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .map(str::to_string)
            .collect();
        out.extend(self.pins());
        out
    }

    /// The pods' namespace pins in the running agent's pin namespace, seen
    /// through its threads (the one parked there, and any pinning thread).
    pub fn pins(&self) -> Vec<String> {
        let Some(pid) = self.agent_pid() else {
            return vec![];
        };
        let mut pins = std::collections::BTreeSet::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let info = std::fs::read_to_string(task.path().join("mountinfo")).unwrap_or_default();
            for m in info.lines().filter_map(|l| l.split(' ').nth(4)) {
                if let Some(rest) = m.strip_prefix("/pods/")
                    && let Some((uid, kind)) = rest.split_once('/')
                {
                    pins.insert(format!("{}/root/pods/{uid}/ns/{kind}", self.dir.display()));
                }
            }
        }
        pins.into_iter().collect()
    }

    /// Nothing of any pod is left: containers, tasks, pod directories and
    /// their mounts, pod cgroups, logs, leases, container snapshots.
    pub fn assert_nothing_left(&self) {
        let left = || {
            let mut left = vec![];
            if !self.containers().is_empty() || !self.tasks().is_empty() {
                left.push(format!("containers {:?}", self.containers()));
            }
            let pods = std::fs::read_dir(self.dir.join("root/pods"))
                .map(|d| d.count())
                .unwrap_or(0);
            if pods > 0 {
                left.push(format!("{pods} pod directories"));
            }
            let mounts: Vec<String> = self
                .mounts_under_dir()
                .into_iter()
                .filter(|m| m.contains("/root/pods/"))
                .collect();
            if !mounts.is_empty() {
                left.push(format!("mounts {mounts:?}"));
            }
            let cgroups: Vec<_> = self
                .cgroup_dirs()
                .into_iter()
                .filter(|d| d.to_string_lossy().contains("/pod"))
                .collect();
            if !cgroups.is_empty() {
                left.push(format!("pod cgroups {cgroups:?}"));
            }
            if !self.log_files().is_empty() {
                left.push(format!("logs {:?}", self.log_files()));
            }
            let leases = self.ctr(&["leases", "ls", "-q"]);
            if !leases.trim().is_empty() {
                left.push(format!("leases {leases}"));
            }
            // Committed snapshots are the image's layers; active ones belonged
            // to containers.
            let snapshots = self.ctr(&["snapshots", "ls"]);
            let active: Vec<&str> = snapshots
                .lines()
                .skip(1)
                .filter(|l| l.split_whitespace().nth(2) == Some("Active"))
                .collect();
            if !active.is_empty() {
                left.push(format!("container snapshots {active:?}"));
            }
            left
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = left();
            if found.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "left behind: {found:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Directories of our cgroup root, across hierarchies.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut out = vec![];
        for h in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let root = h.path().join(self.cgroup_root.trim_start_matches('/'));
            walk_dirs(&root, &mut out);
        }
        out
    }

    pub fn log_files(&self) -> Vec<PathBuf> {
        let mut out = vec![];
        walk_files(&self.dir.join("logs"), &mut out);
        out.sort();
        out
    }
}

fn walk_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk_dirs(&e.path(), out);
        }
    }
    out.push(dir.to_path_buf());
}

fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk_files(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop_agent(libc::SIGKILL);
        // A test may have frozen or killed containerd; the cleanup below
        // needs it.
        self.signal_containerd(libc::SIGCONT);
        if self.containerd.is_none() {
            self.containerd = Some(spawn_containerd(&self.dir));
            let sock = self.dir.join("containerd.sock");
            for _ in 0..100 {
                if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Kill and delete every task and container of our containerd.
        for (id, _, _) in self.tasks() {
            self.ctr(&["tasks", "kill", "--all", "--signal", "SIGKILL", &id]);
        }
        std::thread::sleep(Duration::from_millis(200));
        for (id, _, _) in self.tasks() {
            self.ctr(&["tasks", "delete", "--force", &id]);
        }
        for id in self.containers() {
            self.ctr(&["containers", "delete", &id]);
        }
        if let Some(mut c) = self.containerd.take() {
            // SAFETY: kill(2) on our own child's PID.
            unsafe { libc::kill(c.id().cast_signed(), libc::SIGTERM) };
            let _ = c.wait();
        }
        // A shim whose task was being deleted when containerd went outlives
        // it: end the shims of this containerd, found by their socket.
        let address = format!("-address {}", self.dir.join("containerd.sock").display());
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.starts_with("/usr/bin/containerd-shim") && cmdline.contains(&address) {
                // SAFETY: kill(2) on a shim of the containerd this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        // Deepest first, so that nested mounts go before their parents.
        let mut mounts = self.mounts_under_dir();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        for d in self.cgroup_dirs() {
            let _ = std::fs::remove_dir(d);
        }
        if std::env::var_os("KL_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn spawn_containerd(dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("containerd.log"))
        .unwrap();
    Command::new("containerd")
        .arg("--config")
        .arg(dir.join("containerd.toml"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting containerd (apt-get install containerd)")
}

/// `/healthz` answer times, sampled through a test.
#[derive(Default)]
pub struct Healthz(Vec<Duration>);

impl Healthz {
    pub fn sample(&mut self, env: &Env) {
        let t = Instant::now();
        env.get("/healthz").expect("/healthz answers");
        self.0.push(t.elapsed());
    }

    /// 95 % of the answers within 100 ms, none beyond a second. The cores
    /// are shared with containerd, runc and the other tests: one answer
    /// can wait for a core whatever the agent does, while an agent that
    /// blocks its executor shows as many slow answers.
    pub fn assert_quick(&self) {
        let mut v = self.0.clone();
        assert!(!v.is_empty(), "no /healthz sample");
        v.sort();
        let p95 = v[(v.len() * 95).div_ceil(100) - 1];
        let max = v[v.len() - 1];
        eprintln!("/healthz: {} samples, p95 {p95:?}, max {max:?}", v.len());
        assert!(p95 < Duration::from_millis(100), "/healthz p95 {p95:?}");
        assert!(max < Duration::from_secs(1), "/healthz max {max:?}");
    }
}

/// A busybox pod manifest with the given containers block (YAML, indented
/// by two spaces under `spec:`).
pub fn pod_yaml(name: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

//! The statistics endpoints against real cgroups, checked by promtool and
//! scraped by a real Prometheus.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, free_port, pod_yaml};

/// The pods: a 200m-limited busy loop, and a container holding 50 MiB.
fn start_workloads(env: &mut Env) {
    // Volume usage is measured in the background, every period: a short
    // one, so that the emptyDir has figures soon.
    env.write_config("volumeStatsAggPeriod: 1s\n");
    env.start_agent();
    env.write_manifest(
        "spin.yaml",
        &pod_yaml(
            "spin",
            "  terminationGracePeriodSeconds: 0\n  containers:\n  - name: spin\n    image: busybox\n    command: [sh, -c, 'while :; do :; done']\n    resources:\n      limits: {cpu: 200m, memory: 64Mi}\n",
        ),
    );
    env.write_manifest(
        "hold.yaml",
        &pod_yaml(
            "hold",
            "  terminationGracePeriodSeconds: 0\n  volumes: [{name: scratch, emptyDir: {}}]\n  containers:\n  - name: hold\n    image: busybox\n    command: [sh, -c, 'dd if=/dev/zero of=/dev/shm/hold bs=1M count=50 2>/dev/null; echo x > /scratch/f; sleep 3600']\n    volumeMounts: [{name: scratch, mountPath: /scratch}]\n",
        ),
    );
    env.wait_running("spin-node1");
    env.wait_running("hold-node1");
}

fn promtool_check(what: &str, text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Exit 3 is lint only. cAdvisor's own counters without the _total
    // suffix are kept for compatibility; nothing else may be reported.
    let allowed = ["container_memory_failcnt counter metrics should have \"_total\" suffix"];
    let problems: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty() && !allowed.contains(&l.trim()))
        .collect();
    assert!(
        out.status.code() == Some(0) || (out.status.code() == Some(3) && problems.is_empty()),
        "promtool on {what}: {:?}\n{report}",
        out.status
    );
}

fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|l| {
        let (head, rest) = l.split_once(' ')?;
        let (n, lbl) = head.split_once('{').unwrap_or((head, ""));
        (n == name
            && labels
                .iter()
                .all(|(k, v)| lbl.contains(&format!("{k}=\"{v}\""))))
        .then(|| rest.split(' ').next()?.parse().ok())?
    })
}

#[test]
fn endpoints_pass_promtool_and_match_the_cgroup_files() {
    let mut env = Env::new("metrics");
    start_workloads(&mut env);
    std::thread::sleep(Duration::from_secs(2));
    let cadvisor = env.get("/metrics/cadvisor").unwrap();
    let resource = env.get("/metrics/resource").unwrap();
    let own = env.get("/metrics").unwrap();
    promtool_check("/metrics/cadvisor", &cadvisor);
    promtool_check("/metrics/resource", &resource);
    // /metrics is OpenMetrics (promtool reads only the Prometheus format);
    // the real Prometheus of the next test scrapes it.
    assert!(own.trim_end().ends_with("# EOF"));

    // cAdvisor's machine series, against what the kernel says.
    // SAFETY: sysconf only reads a system value.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } as f64;
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb = |key: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap()
    };
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let ids = [("boot_id", boot_id.trim())];
    let machine = |name: &str| {
        sample(&cadvisor, name, &ids).unwrap_or_else(|| panic!("{name} missing:\n{cadvisor}"))
    };
    assert_eq!(machine("machine_cpu_cores"), online);
    let physical = machine("machine_cpu_physical_cores");
    let sockets = machine("machine_cpu_sockets");
    assert!(
        (1.0..=online).contains(&physical) && (1.0..=physical).contains(&sockets),
        "physical cores {physical}, sockets {sockets}, online {online}"
    );
    let mem = machine("machine_memory_bytes");
    assert!(
        (mem - kb("MemTotal:") * 1024.0).abs() <= 1024.0 * 1024.0,
        "machine_memory_bytes {mem}"
    );
    assert_eq!(machine("machine_swap_bytes"), kb("SwapTotal:") * 1024.0);
    if let Ok(id) = std::fs::read_to_string("/etc/machine-id") {
        assert!(cadvisor.contains(&format!("machine_id=\"{}\"", id.trim())));
    }

    for name in [
        "container_cpu_usage_seconds_total",
        "container_cpu_user_seconds_total",
        "container_cpu_system_seconds_total",
        "container_cpu_cfs_periods_total",
        "container_cpu_cfs_throttled_periods_total",
        "container_cpu_cfs_throttled_seconds_total",
        "container_memory_usage_bytes",
        "container_memory_working_set_bytes",
        "container_memory_rss",
        "container_memory_cache",
        "container_memory_swap",
        "container_memory_failcnt",
        "container_oom_events_total",
        "container_spec_cpu_period",
        "container_spec_cpu_quota",
        "container_spec_cpu_shares",
        "container_spec_memory_limit_bytes",
        "container_processes",
        "container_threads",
        "container_start_time_seconds",
        // (The network series, without loopback, are in tests/network.rs:
        // these pods have loopback only.)
        "container_fs_usage_bytes",
    ] {
        assert!(cadvisor.contains(&format!("\n{name}{{")), "{name} missing");
    }
    let spin = [
        ("container", "spin"),
        ("pod", "spin-node1"),
        ("namespace", "default"),
    ];
    assert_eq!(
        sample(&cadvisor, "container_spec_cpu_quota", &spin),
        Some(20000.0)
    );
    assert_eq!(
        sample(&cadvisor, "container_spec_memory_limit_bytes", &spin),
        Some(67108864.0)
    );
    // As cAdvisor: the CFS series and the quota only with a CPU quota.
    let hold = [("container", "hold"), ("namespace", "default")];
    assert!(sample(&cadvisor, "container_cpu_usage_seconds_total", &hold).is_some());
    for name in [
        "container_cpu_cfs_periods_total",
        "container_cpu_cfs_throttled_seconds_total",
        "container_spec_cpu_quota",
    ] {
        assert_eq!(sample(&cadvisor, name, &hold), None, "{name}");
    }
    // The pod-level series (container="") exist too.
    assert!(
        sample(
            &cadvisor,
            "container_cpu_usage_seconds_total",
            &[("container", ""), ("pod", "spin-node1")]
        )
        .is_some()
    );
    assert!(cadvisor.contains("image=\"busybox\""));

    // Cross-check with the container's cgroup files.
    let pod = env.pod("spin-node1").unwrap();
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let id = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("containerd://");
    let cg = format!("{}/kubepods/pod{uid}/{id}", env.cgroup_root);
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (file, key) = if v2 {
        (format!("/sys/fs/cgroup{cg}/cpu.stat"), "nr_periods")
    } else {
        (format!("/sys/fs/cgroup/cpu{cg}/cpu.stat"), "nr_periods")
    };
    let periods_file =
        kubelet_lite::cgroup::fs::parse_keyed(&std::fs::read_to_string(&file).unwrap(), key)
            .unwrap() as f64;
    let periods_metric = sample(
        &env.get("/metrics/cadvisor").unwrap(),
        "container_cpu_cfs_periods_total",
        &spin,
    )
    .unwrap();
    assert!(
        (periods_metric - periods_file).abs() <= 20.0,
        "{periods_metric} vs {periods_file}"
    );
    // The spinning container's CPU time is the kernel's: between two reads
    // of its cgroup's accounting made around the scrape (on a hybrid host
    // the scrape reads the v2 tree's, this the v1 cpuacct).
    let kernel_seconds = || -> f64 {
        if v2 {
            let stat = std::fs::read_to_string(format!("/sys/fs/cgroup{cg}/cpu.stat")).unwrap();
            kubelet_lite::cgroup::fs::parse_keyed(&stat, "usage_usec").unwrap() as f64 / 1e6
        } else {
            let ns = std::fs::read_to_string(format!("/sys/fs/cgroup/cpuacct{cg}/cpuacct.usage"));
            ns.unwrap().trim().parse::<f64>().unwrap() / 1e9
        }
    };
    let before = kernel_seconds();
    let scraped = sample(
        &env.get("/metrics/cadvisor").unwrap(),
        "container_cpu_usage_seconds_total",
        &spin,
    )
    .unwrap();
    let after = kernel_seconds();
    assert!(
        before - 0.001 <= scraped && scraped <= after + 0.001,
        "{before} <= {scraped} <= {after}"
    );

    // /metrics/resource: what metrics-server reads, with timestamps.
    for name in [
        "node_cpu_usage_seconds_total",
        "node_memory_working_set_bytes",
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_start_time_seconds",
        "pod_cpu_usage_seconds_total",
        "pod_memory_working_set_bytes",
        "resource_scrape_error",
    ] {
        assert!(
            resource.contains(&format!("# TYPE {name} ")),
            "{name} missing from /metrics/resource"
        );
    }
    let line = resource
        .lines()
        .find(|l| l.starts_with("container_memory_working_set_bytes{container=\"hold\""))
        .unwrap();
    assert_eq!(line.split(' ').count(), 3, "no timestamp: {line}");
    // dd may still be filling its 50 MiB on a loaded machine: wait for it.
    let ws = env.wait_for(
        "hold's working set at 45 MiB",
        Duration::from_secs(30),
        || {
            let text = env.get("/metrics/resource").ok()?;
            sample(
                &text,
                "container_memory_working_set_bytes",
                &[("container", "hold")],
            )
            .filter(|ws| *ws >= 45.0 * 1048576.0)
        },
    );
    assert!(ws < 80.0 * 1048576.0, "working set {ws}");
    // The agent's own metrics.
    for name in [
        "kubelet_pod_start_duration_seconds_bucket",
        "kubelet_lite_containerd_request_duration_seconds_count",
        "process_resident_memory_bytes",
        "kubelet_lite_manifest_errors",
    ] {
        assert!(own.contains(name), "{name} missing from /metrics:\n{own}");
    }

    // container_processes counts the cgroup's own processes (none for the
    // pod's cgroup), container_threads its tasks and its children's, as
    // the kernel lists them.
    env.write_manifest(
        "procs.yaml",
        &pod_yaml(
            "procs",
            "  terminationGracePeriodSeconds: 0\n  containers:\n  - name: one\n    image: busybox\n    command: [sleep, '3600']\n  - name: three\n    image: busybox\n    command: [sh, -c, 'sleep 8 & sleep 3600 & sleep 3600 & wait']\n",
        ),
    );
    let pod = env.wait_running("procs-node1");
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let series = |container: &str| {
        let text = env.get("/metrics/cadvisor").unwrap();
        let labels = [("container", container), ("pod", "procs-node1")];
        (
            sample(&text, "container_processes", &labels).unwrap(),
            sample(&text, "container_threads", &labels).unwrap(),
        )
    };
    // Four processes, then three once `sleep 8` is gone: the list is read
    // afresh at every scrape (the scrapes of the wait come quicker than
    // cgroup v1 would let a kept list go stale).
    env.wait_for("four processes in `three`", Duration::from_secs(8), || {
        (series("three") == (4.0, 4.0)).then_some(())
    });
    env.wait_for(
        "three processes in `three`",
        Duration::from_secs(20),
        || (series("three") == (3.0, 3.0)).then_some(()),
    );
    let pod = env.pod("procs-node1").unwrap();
    let listed = |leaf: &str| {
        let dir = format!("{}/kubepods/besteffort/pod{uid}{leaf}", env.cgroup_root);
        let file = if v2 {
            format!("/sys/fs/cgroup{dir}/cgroup.procs")
        } else {
            format!("/sys/fs/cgroup/pids{dir}/cgroup.procs")
        };
        std::fs::read_to_string(&file).unwrap().lines().count() as f64
    };
    for (i, name) in ["one", "three"].into_iter().enumerate() {
        let status = &pod["status"]["containerStatuses"][i];
        assert_eq!(status["name"], name);
        let id = status["containerID"]
            .as_str()
            .unwrap()
            .trim_start_matches("containerd://");
        assert_eq!(series(name).0, listed(&format!("/{id}")), "{name}");
    }
    assert_eq!(series("one"), (1.0, 1.0));
    assert_eq!(series(""), (0.0, 4.0));
    assert_eq!(listed(""), 0.0);

    // container_oom_events_total is the cgroup's oom_kill counter. On this
    // cgroup v1 host an OOM kill takes the child alone (no memory.oom.group
    // before v2): the shell sleeps on, its container keeps its series. The
    // kill comes seconds after the container starts: its count was read
    // (0) and is kept while the host's OOM kill count stands still; the
    // kill moves that count, and the container's is read again.
    if v2 {
        return;
    }
    env.write_manifest(
        "oomer.yaml",
        &pod_yaml(
            "oomer",
            "  terminationGracePeriodSeconds: 0\n  containers:\n  - name: oomer\n    image: busybox\n    command: [sh, -c, 'sleep 8; dd if=/dev/zero of=/dev/null bs=100M count=1; sleep 3600']\n    resources:\n      limits: {memory: 32Mi}\n",
        ),
    );
    let pod = env.wait_running("oomer-node1");
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let oomer = [("container", "oomer"), ("pod", "oomer-node1")];
    let before = env.wait_for("oomer's series", Duration::from_secs(5), || {
        sample(
            &env.get("/metrics/cadvisor").ok()?,
            "container_oom_events_total",
            &oomer,
        )
    });
    assert_eq!(before, 0.0);
    let events = env.wait_for("an OOM event for oomer", Duration::from_secs(30), || {
        let text = env.get("/metrics/cadvisor").ok()?;
        sample(&text, "container_oom_events_total", &oomer).filter(|v| *v >= 1.0)
    });
    let pod = env.pod("oomer-node1").unwrap();
    let id = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("containerd://");
    let control = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/memory{}/kubepods/burstable/pod{uid}/{id}/memory.oom_control",
        env.cgroup_root
    ))
    .unwrap();
    let kills = kubelet_lite::cgroup::fs::parse_keyed(&control, "oom_kill").unwrap() as f64;
    assert_eq!(events, kills, "{control}");
    assert_eq!(pod["status"]["phase"], "Running");
}

#[test]
fn summary_decodes_as_the_kubelet_stats_api() {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Summary {
        node: NodeStats,
        pods: Vec<PodStats>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct NodeStats {
        node_name: String,
        cpu: Cpu,
        memory: Memory,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Cpu {
        time: String,
        usage_nano_cores: Option<u64>,
        usage_core_nano_seconds: u64,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Memory {
        working_set_bytes: u64,
        usage_bytes: u64,
        rss_bytes: Option<u64>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct PodRef {
        name: String,
        namespace: String,
        uid: String,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Volume {
        name: String,
        capacity_bytes: u64,
        used_bytes: u64,
        available_bytes: u64,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Container {
        name: String,
        start_time: String,
        cpu: Cpu,
        memory: Memory,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct PodStats {
        pod_ref: PodRef,
        containers: Vec<Container>,
        cpu: Cpu,
        memory: Memory,
        #[serde(default)]
        volume: Vec<Volume>,
    }

    let mut env = Env::new("summary");
    start_workloads(&mut env);
    let first: Summary = serde_json::from_str(&env.get("/stats/summary").unwrap()).unwrap();
    assert_eq!(first.node.node_name, "node1");
    assert!(first.node.cpu.usage_core_nano_seconds > 0 && first.node.memory.working_set_bytes > 0);
    std::thread::sleep(Duration::from_secs(3));
    let s: Summary = serde_json::from_str(&env.get("/stats/summary").unwrap()).unwrap();
    let spin = s
        .pods
        .iter()
        .find(|p| p.pod_ref.name == "spin-node1")
        .unwrap();
    assert_eq!(spin.pod_ref.namespace, "default");
    assert_eq!(spin.pod_ref.uid.len(), 32);
    let c = &spin.containers[0];
    assert_eq!(c.name, "spin");
    assert!(!c.start_time.is_empty() && !c.cpu.time.is_empty());
    // Rates come from the previous scrape: about 0.2 cores.
    let nano = c
        .cpu
        .usage_nano_cores
        .expect("usageNanoCores on the second scrape") as f64
        / 1e9;
    assert!((0.12..0.28).contains(&nano), "usageNanoCores {nano}");
    assert!(spin.cpu.usage_nano_cores.is_some());
    let hold = s
        .pods
        .iter()
        .find(|p| p.pod_ref.name == "hold-node1")
        .unwrap();
    let ws = hold.containers[0].memory.working_set_bytes as f64 / 1048576.0;
    assert!((45.0..80.0).contains(&ws), "working set {ws} MiB");
    assert!(
        hold.memory.usage_bytes >= hold.memory.working_set_bytes
            && hold.containers[0].memory.rss_bytes.is_some()
    );
    let v = hold.volume.iter().find(|v| v.name == "scratch").unwrap();
    assert!(v.capacity_bytes > 0 && v.available_bytes > 0 && v.used_bytes > 0);
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn query(port: u16, q: &str) -> Option<f64> {
    let enc: String = q
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET /api/v1/query?query={enc} HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let body = out.split_once("\r\n\r\n")?.1;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// A Prometheus on a free loopback port with the given scrape configs
/// (YAML list items), scraping every second; returns it and its port.
fn start_prometheus(env: &Env, scrape_configs: &str) -> (Prometheus, u16) {
    let port = free_port();
    let config = env.dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n{scrape_configs}"),
    )
    .unwrap();
    let prom = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                env.dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(env.dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus (apt-get install prometheus)"),
    );
    (prom, port)
}

#[test]
fn a_real_prometheus_sees_the_expected_figures() {
    let mut env = Env::new("prom");
    start_workloads(&mut env);
    // Prometheus authenticates with the token the agent made.
    let job = |name: &str, path: &str| {
        format!(
            "- job_name: {name}\n  metrics_path: {path}\n  authorization: {{credentials_file: {t}}}\n  static_configs: [{{targets: ['127.0.0.1:{p}']}}]\n",
            t = env.token_file().display(),
            p = env.port
        )
    };
    let (prom, port) = start_prometheus(
        &env,
        &[
            job("kubelet-cadvisor", "/metrics/cadvisor"),
            job("kubelet-lite", "/metrics"),
            job("kubelet-resource", "/metrics/resource"),
        ]
        .concat(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let cpu = loop {
        let v = query(
            port,
            "rate(container_cpu_usage_seconds_total{container=\"spin\"}[6s])",
        );
        if let Some(v) = v.filter(|_| Instant::now() > deadline - Duration::from_secs(45)) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never answered:\n{}",
            std::fs::read_to_string(env.dir.join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        (0.12..0.28).contains(&cpu),
        "Prometheus rate of a 200m-limited busy loop: {cpu}"
    );
    let ws = query(
        port,
        "container_memory_working_set_bytes{container=\"hold\"}",
    )
    .unwrap()
        / 1048576.0;
    assert!(
        (45.0..80.0).contains(&ws),
        "Prometheus working set of a 50 MiB holder: {ws} MiB"
    );
    // Every endpoint scraped without error, the agent's own included.
    assert_eq!(query(port, "min(up)").unwrap(), 1.0);
    assert_eq!(query(port, "count(up)").unwrap(), 3.0);
    assert!(query(port, "kubelet_pod_start_duration_seconds_count").unwrap() >= 2.0);
    assert!(
        query(port, "pod_memory_working_set_bytes{pod=\"hold-node1\"}").unwrap() > 40.0 * 1048576.0
    );
    drop(prom);
}

/// Sends `req` on a new connection and reads the whole answer.
fn raw(port: u16, req: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.write_all(req.as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn get_status(port: u16, path: &str, token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let out = raw(port, &format!("GET {path} HTTP/1.0\r\n{auth}\r\n"));
    out.lines().next().unwrap_or("").to_string()
}

/// A TCP connection to `port` on 127.0.0.1 from the loopback address
/// `source` (127/8 is all loopback: each source is a distinct client).
fn connect_from(source: [u8; 4], port: u16) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let [a, b, c, d] = source;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(a, b, c, d, 0),
    )?;
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(127, 0, 0, 1, port),
    )?;
    Ok(TcpStream::from(fd))
}

#[test]
fn hostile_clients_do_not_stall_the_agent() {
    let mut env = Env::new("hostile");
    let token = env.dir.join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    env.write_config(&format!("httpTokenFile: {}\n", token.display()));
    // A token file others may read is refused, with its name.
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let log = env.agent_refuses_to_start();
    assert!(
        log.contains(&token.display().to_string()) && log.contains("chmod 600"),
        "{log}"
    );
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    env.start_agent();
    let raw = |req: &str| raw(env.port, req);
    // The token is required everywhere but /healthz.
    assert!(raw("GET /pods HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 401"));
    assert!(
        raw("GET /pods HTTP/1.0\r\nAuthorization: Bearer wrong\r\n\r\n")
            .starts_with("HTTP/1.0 401")
    );
    assert!(
        raw("GET /pods HTTP/1.0\r\nAuthorization: Bearer s3cret\r\n\r\n")
            .starts_with("HTTP/1.0 200")
    );
    assert!(raw("GET /healthz HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 200"));
    // Unknown paths, garbage, huge headers.
    assert!(
        raw("GET /nope HTTP/1.0\r\nAuthorization: Bearer s3cret\r\n\r\n")
            .starts_with("HTTP/1.0 404")
    );
    let garbage = raw("\x16\x03\x01 not http at all\r\n\r\n");
    assert!(
        garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"),
        "{garbage:?}"
    );
    let huge = raw(&format!(
        "GET /healthz HTTP/1.0\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    ));
    assert!(
        huge.is_empty() || huge.starts_with("HTTP/1.1 431") || huge.starts_with("HTTP/1.1 400"),
        "{}",
        &huge[..huge.len().min(80)]
    );
    // Many slow clients, each a half-sent request from its own address:
    // past the connection limit new clients are turned away; once the slow
    // ones are cut off (header read timeout), service resumes.
    let idle: Vec<TcpStream> = (0..300u16)
        .filter_map(|i| {
            let [hi, lo] = i.to_be_bytes();
            let mut s = connect_from([127, 1, hi, lo.wrapping_add(2)], env.port).ok()?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").ok()?;
            Some(s)
        })
        .collect();
    assert!(idle.len() >= 256);
    let t0 = Instant::now();
    env.wait_for("agent answering again", Duration::from_secs(30), || {
        env.get("/healthz").ok()
    });
    assert!(t0.elapsed() < Duration::from_secs(15));
    drop(idle);
    assert!(env.agent_is_alive());
}

#[test]
fn one_client_cannot_take_every_connection() {
    let mut env = Env::new("perclient");
    env.start_agent();
    // 256 half-sent requests from 127.0.0.2, as many as the global limit.
    let idle: Vec<TcpStream> = (0..256)
        .filter_map(|_| {
            let mut s = connect_from([127, 0, 0, 2], env.port).ok()?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").ok()?;
            Some(s)
        })
        .collect();
    assert_eq!(idle.len(), 256);
    std::thread::sleep(Duration::from_millis(300));
    // Another client is served at once.
    let t0 = Instant::now();
    let body = env.get("/healthz").unwrap();
    assert_eq!(body, "ok");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    // The first client holds its 32; a 33rd connection of its own is closed
    // without an answer, even with a whole request.
    let mut extra = connect_from([127, 0, 0, 2], env.port).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.0\r\n\r\n");
    let mut out = String::new();
    let _ = extra.read_to_string(&mut out);
    assert!(out.is_empty(), "{out:?}");
    // Its slots come back when its connections end.
    drop(idle);
    env.wait_for("127.0.0.2 served again", Duration::from_secs(5), || {
        let mut s = connect_from([127, 0, 0, 2], env.port).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.starts_with("HTTP/1.0 200").then_some(())
    });
}

#[test]
fn the_token_is_made_at_first_start_and_required() {
    use std::os::unix::fs::PermissionsExt;
    let mut env = Env::new("token");
    env.start_agent();
    let file = env.dir.join("root/http-token");
    let meta = std::fs::symlink_metadata(&file).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let token = env.token().unwrap();
    assert_eq!(token.len(), 64);
    let port = env.port;
    // Without it: /pods, /stats/summary and the metrics are refused.
    for path in [
        "/pods",
        "/stats/summary",
        "/metrics",
        "/metrics/cadvisor",
        "/metrics/resource",
    ] {
        assert!(
            get_status(port, path, None).starts_with("HTTP/1.0 401"),
            "{path}"
        );
        assert!(
            get_status(port, path, Some("0000")).starts_with("HTTP/1.0 401"),
            "{path}"
        );
        assert!(
            get_status(port, path, Some(&token)).starts_with("HTTP/1.0 200"),
            "{path}"
        );
    }
    assert!(get_status(port, "/healthz", None).starts_with("HTTP/1.0 200"));
    // Reused on the next start.
    env.stop_agent(libc::SIGKILL);
    env.start_agent();
    assert_eq!(env.token().unwrap(), token);
    assert!(get_status(port, "/pods", Some(&token)).starts_with("HTTP/1.0 200"));
    // metricsAnonymous opens the metrics paths, not /pods nor the summary.
    env.stop_agent(libc::SIGKILL);
    env.write_config("metricsAnonymous: true\n");
    env.start_agent();
    for path in ["/metrics", "/metrics/cadvisor", "/metrics/resource"] {
        assert!(
            get_status(port, path, None).starts_with("HTTP/1.0 200"),
            "{path}"
        );
    }
    for path in ["/pods", "/stats/summary"] {
        assert!(
            get_status(port, path, None).starts_with("HTTP/1.0 401"),
            "{path}"
        );
    }
    // A token file swapped for a symlink is refused.
    env.stop_agent(libc::SIGKILL);
    let elsewhere = env.dir.join("elsewhere");
    std::fs::rename(&file, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
    let log = env.agent_refuses_to_start();
    assert!(
        log.contains("symbolic link") && log.contains(&file.display().to_string()),
        "{log}"
    );
}

/// A FUSE filesystem whose server never answers: mounted through
/// /dev/fuse directly (as root, no fusermount), it never gets its INIT
/// reply, so every statfs or lookup on it waits, as on a dead hard NFS
/// mount. Dropping it unmounts lazily and closes the device, which aborts
/// the connection and releases whoever waits.
struct HangingMount {
    dir: std::path::PathBuf,
    _dev: std::fs::File,
}

impl HangingMount {
    fn over(dir: &Path) -> HangingMount {
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .expect("/dev/fuse");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&dev);
        nix::mount::mount(
            Some("kl-hang"),
            dir,
            Some("fuse"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(format!("fd={fd},rootmode=40000,user_id=0,group_id=0").as_str()),
        )
        .expect("mounting a FUSE filesystem");
        HangingMount {
            dir: dir.to_path_buf(),
            _dev: dev,
        }
    }
}

impl Drop for HangingMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_volume_that_never_answers_does_not_stall_the_summary() {
    let mut env = Env::new("hangvol");
    env.write_config("volumeStatsAggPeriod: 1s\n");
    env.start_agent();
    env.write_manifest(
        "vol.yaml",
        &pod_yaml(
            "vol",
            "  terminationGracePeriodSeconds: 0\n  volumes: [{name: scratch, emptyDir: {}}, {name: dead, emptyDir: {}}]\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, '3600']\n    volumeMounts: [{name: scratch, mountPath: /scratch}, {name: dead, mountPath: /dead}]\n",
        ),
    );
    let pod = env.wait_running("vol-node1");
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let summary_volume = |name: &str| -> Option<serde_json::Value> {
        let s: serde_json::Value = serde_json::from_str(&env.get("/stats/summary").ok()?).ok()?;
        s["pods"].as_array()?.iter().find_map(|p| {
            p["volume"]
                .as_array()?
                .iter()
                .find(|v| v["name"] == name)
                .cloned()
        })
    };
    env.wait_for("volume figures", Duration::from_secs(20), || {
        summary_volume("dead").filter(|v| v["capacityBytes"].is_u64())
    });
    let dead_dir = env.dir.join(format!(
        "root/pods/{uid}/volumes/kubernetes.io~empty-dir/dead"
    ));
    let hang = HangingMount::over(&dead_dir);
    // For the next 8 s (past the 5 s deadline and more rounds), every
    // summary answers at once, with the live volume's figures.
    let end = Instant::now() + Duration::from_secs(8);
    while Instant::now() < end {
        let t0 = Instant::now();
        let scratch = summary_volume("scratch").expect("summary answers");
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        assert!(scratch["capacityBytes"].as_u64().unwrap() > 0);
        assert!(env.get("/healthz").is_ok());
        std::thread::sleep(Duration::from_millis(250));
    }
    // The dead one is listed without figures, and its stuck probe is not
    // entered again.
    let dead = env.wait_for("dead volume unavailable", Duration::from_secs(10), || {
        summary_volume("dead").filter(|v| v.get("capacityBytes").is_none())
    });
    assert_eq!(dead["name"], "dead");
    let log = env.agent_output();
    assert_eq!(
        log.matches("volume did not answer statvfs in time").count(),
        1,
        "{log}"
    );
    assert!(log.contains("volume probe still stuck"), "{log}");
    drop(hang);
}

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate,
/// both signed by the CA, and a second CA that signed nothing we trust:
/// `ca.crt`, `server.{crt,key}`, `client.{crt,key}`, `other.{crt,key}`.
fn make_certificates(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    for ca in ["ca", "other"] {
        let subj = format!("/CN=kubelet-lite test {ca}");
        let key = format!("{ca}.key");
        let crt = format!("{ca}.crt");
        let mut args = vec!["req", "-x509", "-nodes", "-days", "1"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &crt, "-subj", &subj]);
        openssl(dir, &args);
    }
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    for (name, ca) in [("server", "ca"), ("client", "ca"), ("stranger", "other")] {
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        let subj = format!("/CN={name}");
        let mut args = vec!["req", "-nodes"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &args);
        let ext = if name == "server" {
            "server.ext"
        } else {
            "client.ext"
        };
        let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-days",
                "1",
                "-in",
                &csr,
                "-CA",
                &ca_crt,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-extfile",
                ext,
                "-out",
                &crt,
            ],
        );
    }
}

/// curl over https to the agent; returns (HTTP status, body). `extra` are
/// more curl arguments (a token header, a client certificate).
fn curl_https(env: &Env, pki: &Path, path: &str, extra: &[&str]) -> (u32, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}", "--cacert"])
        .arg(pki.join("ca.crt"))
        .args(extra)
        .arg(format!("https://127.0.0.1:{}{path}", env.port))
        .current_dir(pki)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn tls_with_a_token_or_a_client_certificate() {
    let mut env = Env::new("tls");
    let pki = env.dir.join("pki");
    make_certificates(&pki);
    env.write_config(&format!(
        "tlsCertFile: {p}/server.crt\ntlsPrivateKeyFile: {p}/server.key\ntlsClientCAFile: {p}/ca.crt\n",
        p = pki.display()
    ));
    // The harness's plain-HTTP readiness check cannot work: wait on curl.
    let start = std::thread::spawn({
        let pki = pki.clone();
        let port = env.port;
        move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                let ok = Command::new("curl")
                    .args(["-sf", "--max-time", "2", "--cacert"])
                    .arg(pki.join("ca.crt"))
                    .arg(format!("https://127.0.0.1:{port}/healthz"))
                    .output()
                    .is_ok_and(|o| o.status.success());
                if ok {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        }
    });
    env.start_agent_unchecked();
    assert!(start.join().unwrap(), "no https:\n{}", env.agent_output());
    env.write_manifest(
        "sleep.yaml",
        &pod_yaml(
            "sleep",
            "  terminationGracePeriodSeconds: 0\n  containers:\n  - name: sleep\n    image: busybox\n    command: [sleep, '3600']\n",
        ),
    );
    let token = env.token().unwrap();
    let bearer = format!("Authorization: Bearer {token}");

    // (1) A real Prometheus scrapes over https with the token file.
    let (_prom, prom_port) = start_prometheus(
        &env,
        &format!(
            "- job_name: kubelet-cadvisor\n  scheme: https\n  metrics_path: /metrics/cadvisor\n  tls_config: {{ca_file: {ca}}}\n  authorization: {{credentials_file: {t}}}\n  static_configs: [{{targets: ['127.0.0.1:{p}']}}]\n",
            ca = pki.join("ca.crt").display(),
            t = env.token_file().display(),
            p = env.port
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = query(prom_port, "up{job=\"kubelet-cadvisor\"}");
        let seen = query(
            prom_port,
            "count(container_start_time_seconds{container=\"sleep\"})",
        );
        if up == Some(1.0) && seen == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape over https (up {up:?}, series {seen:?}):\n{}",
            std::fs::read_to_string(env.dir.join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // (2) Over https: the token works, nothing else but a client
    // certificate of the CA does.
    assert_eq!(curl_https(&env, &pki, "/pods", &[]).0, 401);
    let (code, body) = curl_https(&env, &pki, "/pods", &["-H", &bearer]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"PodList\""));
    let cert = ["--cert", "client.crt", "--key", "client.key"];
    let (code, body) = curl_https(&env, &pki, "/pods", &cert);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"PodList\""));
    assert_eq!(curl_https(&env, &pki, "/stats/summary", &cert).0, 200);
    // A certificate of another CA fails the handshake.
    let stranger = ["--cert", "stranger.crt", "--key", "stranger.key"];
    assert_eq!(curl_https(&env, &pki, "/pods", &stranger).0, 0);

    // (3) Plain HTTP to the TLS port gets no HTTP answer.
    let plain = raw(
        env.port,
        &format!("GET /healthz HTTP/1.0\r\n{bearer}\r\n\r\n"),
    );
    assert!(!plain.starts_with("HTTP/"), "{plain:?}");
    // A client that connects and never starts the handshake is cut off by
    // the handshake timeout (10 s), as a plain client without headers is.
    let mut silent = TcpStream::connect(("127.0.0.1", env.port)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let n = silent.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(15)).contains(&t0.elapsed()),
        "{:?}",
        t0.elapsed()
    );
    assert!(env.agent_is_alive());
}

#[test]
fn a_remote_listen_address_needs_tls() {
    let env = Env::new("remote");
    let port = free_port();
    env.write_config(&format!("listenAddress: 0.0.0.0:{port}\n"));
    let log = env.agent_refuses_to_start();
    assert!(
        log.contains("listenAddress") && log.contains("not a loopback address"),
        "{log}"
    );
    // Nothing listens.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    // An explicit yes, or TLS, lets it start.
    let mut env = env;
    env.port = port;
    env.write_config(&format!(
        "listenAddress: 0.0.0.0:{port}\nallowInsecureRemote: true\n"
    ));
    env.start_agent();
    assert_eq!(env.get("/healthz").unwrap(), "ok");
}

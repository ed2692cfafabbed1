//! Probe cost: pods with an exec liveness probe and an httpGet readiness
//! probe, each every second, against a raw containerd exec of the same
//! command measured in the same run.
//!
//! Reported: the agent's CPU per probe, and its CPU against what
//! containerd, the shims and runc spend on the same execs made with bare
//! gRPC calls (Exec, Start, Wait, DeleteProcess, without output capture);
//! the exec probe's mean latency against the raw exec's; the share of
//! httpGet probes answered within 5 ms (the histogram's first bucket).
//!
//! Run with `cargo bench --bench probes` (as root). `BENCH_PODS` sets the
//! number of pods (default 20; the figure is 100, which needs more
//! than 2 cores for runc alone), `BENCH_SECONDS` the measuring window
//! (default 20).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Env, pod_yaml};
use containerd_client::services::v1::{
    DeleteProcessRequest, ExecProcessRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::Request;
use support::{Raw, env_number, percentile};

const COMMAND: [&str; 2] = ["sleep", "0"];

fn pod(name: &str) -> String {
    pod_yaml(
        name,
        "  terminationGracePeriodSeconds: 0\n  containers:\n  - name: web\n    image: busybox\n    command: [sh, -c, 'mkdir -p /www && echo ok > /www/healthz && exec httpd -f -p 8080 -h /www']\n    livenessProbe: {exec: {command: [sleep, '0']}, periodSeconds: 1}\n    readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}\n",
    )
}

/// utime + stime + cutime + cstime of a process, in seconds (the children
/// a shim reaps, runc and the exec'd processes, count for it).
fn cpu_with_children(pid: u32) -> f64 {
    let field = support::stat_fields(pid);
    (field(11) + field(12) + field(13) + field(14)) as f64 / support::clock_ticks()
}

/// CPU of the test's containerd and all its shims (not the agent's).
fn containerd_cpu(dir: &Path, agent: u32) -> f64 {
    let sock = dir.join("containerd.sock");
    let needles = [
        dir.join("containerd.toml").display().to_string(),
        sock.display().to_string(),
    ];
    let mut total = 0.0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == agent {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("containerd") && needles.iter().any(|n| cmdline.contains(n.as_str())) {
            total += cpu_with_children(pid);
        }
    }
    total
}

/// Sum of the samples of `metric` whose labels contain `filter`.
fn sum(metrics: &str, metric: &str, filter: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with(metric) && l[metric.len()..].starts_with('{') && l.contains(filter)
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn req<T>(m: T) -> Request<T> {
    let mut r = Request::new(m);
    r.metadata_mut()
        .insert("containerd-namespace", common::NAMESPACE.parse().unwrap());
    r
}

/// Bare execs of COMMAND into container `id` at `rate` per second for
/// `window`; returns each exec's latency in seconds.
async fn raw_execs(sock: &Path, id: &str, rate: usize, window: Duration) -> Vec<f64> {
    let channel = containerd_client::connect(sock).await.expect("connect");
    let client = containerd_client::Client::from(channel);
    let mut spec = oci_spec::runtime::Spec::default();
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(COMMAND.iter().map(ToString::to_string).collect()));
    spec.set_process(Some(process.clone()));
    let value = serde_json::to_vec(&process).unwrap();
    let mut out = vec![];
    let start = Instant::now();
    let gap = Duration::from_secs(1) / u32::try_from(rate.max(1)).unwrap();
    let mut n = 0u64;
    while start.elapsed() < window {
        n += 1;
        let exec_id = format!("raw-{n}");
        let t = Instant::now();
        client
            .tasks()
            .exec(req(ExecProcessRequest {
                container_id: id.into(),
                stdin: String::new(),
                stdout: String::new(),
                stderr: String::new(),
                terminal: false,
                spec: Some(prost_types::Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                    value: value.clone(),
                }),
                exec_id: exec_id.clone(),
            }))
            .await
            .unwrap();
        client
            .tasks()
            .start(req(StartRequest {
                container_id: id.into(),
                exec_id: exec_id.clone(),
            }))
            .await
            .unwrap();
        client
            .tasks()
            .wait(req(WaitRequest {
                container_id: id.into(),
                exec_id: exec_id.clone(),
            }))
            .await
            .unwrap();
        client
            .tasks()
            .delete_process(req(DeleteProcessRequest {
                container_id: id.into(),
                exec_id,
            }))
            .await
            .unwrap();
        out.push(t.elapsed().as_secs_f64());
        let next = start + gap * u32::try_from(n).unwrap();
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
    out
}

fn main() {
    let pods = env_number("BENCH_PODS", 20);
    let window = Duration::from_secs(u64::try_from(env_number("BENCH_SECONDS", 20)).unwrap());
    let mut env = Env::new("bench-probes");
    env.write_config("");
    env.start_agent();
    for i in 0..pods {
        env.write_manifest(&format!("p{i}.yaml"), &pod(&format!("p{i}")));
    }
    env.wait_for("all pods ready", Duration::from_secs(300), || {
        let all = env.pods();
        (all.len() == pods
            && all
                .iter()
                .all(|p| p["status"]["containerStatuses"][0]["ready"] == true))
        .then_some(())
    });
    // Let the start-up settle.
    std::thread::sleep(Duration::from_secs(5));
    let agent = env.agent_pid().unwrap();
    let m0 = env.get("/metrics/probes").unwrap();
    let (a0, c0) = (cpu_with_children(agent), containerd_cpu(&env.dir, agent));
    std::thread::sleep(window);
    let m1 = env.get("/metrics/probes").unwrap();
    let (a1, c1) = (cpu_with_children(agent), containerd_cpu(&env.dir, agent));
    let delta = |metric: &str, filter: &str| sum(&m1, metric, filter) - sum(&m0, metric, filter);
    let exec_probes = delta("prober_probe_total", "probe_type=\"Liveness\"");
    let http_probes = delta("prober_probe_total", "probe_type=\"Readiness\"");
    let failed = delta("prober_probe_total", "result=\"failed\"");
    let exec_mean = delta(
        "prober_probe_duration_seconds_sum",
        "probe_type=\"Liveness\"",
    ) / delta(
        "prober_probe_duration_seconds_count",
        "probe_type=\"Liveness\"",
    );
    let http_count = delta(
        "prober_probe_duration_seconds_count",
        "probe_type=\"Readiness\"",
    );
    let http_5ms = delta(
        "prober_probe_duration_seconds_bucket",
        "le=\"0.005\",probe_type=\"Readiness\"",
    );
    let http_mean = delta(
        "prober_probe_duration_seconds_sum",
        "probe_type=\"Readiness\"",
    ) / http_count;
    let agent_cpu = a1 - a0;
    let containerd_probe_cpu = c1 - c0;

    // The raw baseline, same run: the pods go, one bare container takes
    // the same number of execs per second.
    for i in 0..pods {
        env.remove_manifest(&format!("p{i}.yaml"));
    }
    env.wait_for("pods gone", Duration::from_secs(120), || {
        env.pods().is_empty().then_some(())
    });
    let sock = env.dir.join("containerd.sock");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let raw = rt.block_on(Raw::connect(
        &sock,
        common::NAMESPACE,
        &["sleep", "3600"],
        "kl-bench-probes-raw",
    ));
    rt.block_on(raw.create_start("raw-exec"));
    let c2 = containerd_cpu(&env.dir, agent);
    let mut raw_latency = rt.block_on(raw_execs(&sock, "raw-exec", pods, window));
    let c3 = containerd_cpu(&env.dir, agent);
    rt.block_on(raw.remove("raw-exec"));
    raw.clean();
    let raw_cpu_per_exec = (c3 - c2) / raw_latency.len() as f64;
    let raw_mean = raw_latency.iter().sum::<f64>() / raw_latency.len() as f64;
    let raw_p99 = percentile(&mut raw_latency, 0.99);

    let probes = exec_probes + http_probes;
    println!(
        "probes: {pods} pods, {window:?} window, {probes} probes ({exec_probes} exec, {http_probes} httpGet, {failed} failed)"
    );
    println!(
        "agent CPU: {:.3} s = {:.3} ms per probe; {:.1}% of the containerd+shim+runc CPU of the same execs made raw ({:.2} ms each; {:.2} ms per exec probe during the probe window)",
        agent_cpu,
        agent_cpu * 1000.0 / probes,
        100.0 * agent_cpu / (raw_cpu_per_exec * exec_probes),
        raw_cpu_per_exec * 1000.0,
        containerd_probe_cpu * 1000.0 / exec_probes,
    );
    println!(
        "exec probe mean {:.1} ms; raw exec mean {:.1} ms, p99 {:.1} ms ({} execs)",
        exec_mean * 1000.0,
        raw_mean * 1000.0,
        raw_p99 * 1000.0,
        raw_latency.len()
    );
    println!(
        "httpGet probe mean {:.2} ms; {:.2}% within 5 ms",
        http_mean * 1000.0,
        100.0 * http_5ms / http_count
    );
}

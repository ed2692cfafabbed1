//! Cost of the statistics endpoints with many pods, and of an idle agent.
//! Figures: `/metrics/cadvisor` scrape latency (p50, p99) and the agent's
//! CPU time per scrape with N running pods; idle CPU (share of one core)
//! and RSS with 0 and N pods. Targets: p99 under 20 ms, idle CPU under
//! 0.5%, RSS under 30 MiB at 100 pods.
//!
//! `cargo bench --bench scrape` (as root); `BENCH_PODS` (default 100),
//! `BENCH_CONTAINERS` per pod (default 1), `BENCH_IDLE_SECONDS` (default 20);
//! `BENCH_SHELL=1`: the scale bench's pods (two containers each running a
//! shell that starts `sleep 1` every second; `BENCH_CONTAINERS` does not
//! apply) instead of pods of `sleep`; `BENCH_GAP_MS`: a pause before each
//! scrape (default 0: back to back), as a scraper with an interval leaves
//! the machine to the workload between scrapes. The CPU per scrape is the
//! agent's over the whole loop, pauses included (where it is idle).
//! `BENCH_PID_FILE`: where to write the agent's pid before the scrapes,
//! then wait `BENCH_HOLD_SECONDS` (default 3) for a profiler to attach.
//!
//! Baseline in the same run: after each scrape (and the same pause), the
//! bench itself reads the files that scrape read, and nothing else
//! ([`support::floor`]); the agent's CPU per scrape is reported against
//! the CPU of those reads alone.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use common::{Env, pod_yaml};
use support::floor::Floor;
use support::usage;

fn idle(env: &Env, secs: u64) -> (f64, u64) {
    let pid = env.agent_pid().unwrap();
    let (c0, _, _) = usage(pid);
    std::thread::sleep(Duration::from_secs(secs));
    let (c1, rss, _) = usage(pid);
    ((c1 - c0) / secs.max(1) as f64, rss)
}

fn main() {
    let pods: usize = std::env::var("BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let containers: usize = if std::env::var_os("BENCH_SHELL").is_some() {
        2
    } else {
        std::env::var("BENCH_CONTAINERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
    };
    let idle_secs: u64 = std::env::var("BENCH_IDLE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let shell = std::env::var_os("BENCH_SHELL").is_some();
    let gap = Duration::from_millis(
        std::env::var("BENCH_GAP_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let spec: String = (0..containers)
        .map(|c| {
            format!(
                "  - name: c{c}\n    image: busybox\n    command: [sleep, '3600']\n    resources: {{limits: {{cpu: 5m, memory: 16Mi}}}}\n"
            )
        })
        .collect();
    let manifest = |name: &str| {
        if shell {
            support::pod(name)
        } else {
            pod_yaml(
                name,
                &format!("  terminationGracePeriodSeconds: 0\n  containers:\n{spec}"),
            )
        }
    };
    let mut env = Env::new("scrape");
    // A long resync: idle means idle.
    env.write_config("fileCheckFrequency: 60s\n");
    env.start_agent();
    std::thread::sleep(Duration::from_secs(2));
    let (idle0, rss0) = idle(&env, idle_secs);

    for i in 0..pods {
        env.write_manifest(&format!("p{i}.yaml"), &manifest(&format!("p{i}")));
    }
    env.wait_for("all pods running", Duration::from_secs(600), || {
        let p = env.pods();
        (p.len() == pods && p.iter().all(|p| p["status"]["phase"] == "Running")).then_some(())
    });
    std::thread::sleep(Duration::from_secs(5));
    let (idle_n, rss_n) = idle(&env, idle_secs);

    let pid = env.agent_pid().unwrap();
    if let Ok(file) = std::env::var("BENCH_PID_FILE") {
        // For profiling: tell where the agent is, and give time to attach.
        std::fs::write(file, pid.to_string()).unwrap();
        let hold = std::env::var("BENCH_HOLD_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        std::thread::sleep(Duration::from_secs(hold));
    }
    let rounds = 200;
    // Warm-up, as for any steady scraper: the first scrape reads each
    // cgroup's configured values once.
    for _ in 0..5 {
        env.get("/metrics/cadvisor").unwrap();
    }
    let mut floor = Floor::open(&env.cgroup_root);
    floor.pass();
    let (c0, _, _) = usage(pid);
    let mut lat = vec![];
    let mut bytes = 0;
    let mut reads = Duration::ZERO;
    for _ in 0..rounds {
        std::thread::sleep(gap);
        let t = Instant::now();
        bytes = env.get("/metrics/cadvisor").unwrap().len();
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(gap);
        reads += floor.pass();
    }
    let (c1, _, _) = usage(pid);
    let agent_ms = (c1 - c0) * 1000.0 / rounds as f64;
    let reads_ms = reads.as_secs_f64() * 1000.0 / rounds as f64;
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "q is in 0..=1: the index is within the sample"
    )]
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    println!(
        "/metrics/cadvisor with {pods} pods of {containers} containers ({bytes} bytes, {} ms apart): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms, agent CPU {:.2} ms per scrape",
        gap.as_millis(),
        p(0.5),
        p(0.9),
        p(0.99),
        lat[lat.len() - 1],
        agent_ms
    );
    println!(
        "the files of a scrape read alone ({} cgroups, same pauses): {reads_ms:.2} ms CPU per pass; agent {:.2}x",
        floor.cgroups(),
        agent_ms / reads_ms
    );
    println!(
        "idle agent, 0 pods: CPU {:.3}% of a core, RSS {:.1} MiB",
        idle0 * 100.0,
        rss0 as f64 / 1048576.0
    );
    println!(
        "idle agent, {pods} pods: CPU {:.3}% of a core, RSS {:.1} MiB",
        idle_n * 100.0,
        rss_n as f64 / 1048576.0
    );
}

//! Pod start-up latency: from a manifest landing in the static pod directory
//! to all of its containers running, against two baselines measured in the
//! same run on the same machine:
//! - raw containerd: the same containers created and started with the bare
//!   gRPC calls (snapshot prepare, container create, task create, task
//!   start), summed per pod;
//! - `podman kube play` of the same manifest (when podman is installed).
//!
//! A third case runs the two-container pod with a CNI bridge network (its
//! own bridge, subnet and iptables rules, removed at the end), against raw
//! containerd plus one CNI ADD of the same configuration.
//!
//! Each round waits for the previous pod's whole teardown (CNI DEL
//! included), so that no pod starts beside another's removal; the
//! baselines' removals are outside their timing too.
//!
//! Run with `cargo bench --bench startup` (as root). `BENCH_ROUNDS` sets the
//! number of pods per kind (default 15); `BENCH_NET_ONLY=1` runs only the
//! networked case and its raw baseline (for profiles of it).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::net::Net;
use common::{Env, pod_yaml};
use support::{Podman, Raw, percentile};

fn one(name: &str) -> String {
    pod_yaml(
        name,
        "  terminationGracePeriodSeconds: 0\n  containers:\n  - name: a\n    image: busybox\n    command: [sleep, '3600']\n",
    )
}

fn two(name: &str) -> String {
    pod_yaml(
        name,
        "  terminationGracePeriodSeconds: 0\n  containers:\n  - name: a\n    image: busybox\n    command: [sleep, '3600']\n  - name: b\n    image: busybox\n    command: [sleep, '3600']\n",
    )
}

/// The time of the agent's first log line holding all of `needles`.
fn logged_at(log: &str, needles: &[&str]) -> Option<SystemTime> {
    let line = log
        .lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))?;
    let ts: jiff::Timestamp = line.split_whitespace().next()?.parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(ts.as_nanosecond()).ok()?))
}

/// The time the agent logged the pod as Running.
fn running_at(log: &str, pod: &str) -> Option<SystemTime> {
    let needle = format!("pod={pod} phase=\"Running\"");
    logged_at(log, &[&needle, "pod phase"])
}

/// Milliseconds from `a` to `b`.
fn ms(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a).unwrap_or_default().as_secs_f64() * 1000.0
}

/// Start-up times of `rounds` pods; also prints how long the agent took
/// to see each manifest (written -> its worker started).
fn agent_rounds(env: &mut Env, prefix: &str, rounds: usize, containers: usize) -> Vec<f64> {
    let mut out = vec![];
    let mut seen = vec![];
    for i in 0..rounds {
        let name = format!("{prefix}{containers}x{i}");
        let text = if containers == 1 {
            one(&name)
        } else {
            two(&name)
        };
        let t0 = SystemTime::now();
        env.write_manifest(&format!("{name}.yaml"), &text);
        let full = format!("default/{name}-node1");
        let t1 = env.wait_for("pod running", Duration::from_secs(30), || {
            running_at(&env.agent_output(), &full)
        });
        out.push(ms(t0, t1));
        let started = format!("starting pod pod={full} ");
        if let Some(t) = logged_at(&env.agent_output(), &[&started]) {
            seen.push(ms(t0, t));
        }
        env.remove_manifest(&format!("{name}.yaml"));
        // The whole teardown (containers, CNI DEL, and last the pod's
        // directory), not only the pod's leaving the status: the next
        // round starts on a quiet node, as the baselines' rounds do (their
        // removals are outside the timing too).
        let pods_dir = env.dir.join("root/pods");
        env.wait_for("pod torn down", Duration::from_secs(60), || {
            let left = std::fs::read_dir(&pods_dir).map_or(0, Iterator::count);
            (left == 0 && env.pod(&format!("{name}-node1")).is_none()).then_some(())
        });
    }
    if !seen.is_empty() {
        println!(
            "  ({prefix}, {containers} container(s): manifest written -> pod worker started p50 {:.1} ms)",
            percentile(&mut seen, 0.5)
        );
    }
    out
}

/// Bare containerd create+start of `containers` busybox containers, summed.
async fn raw_rounds(sock: &Path, rounds: usize, containers: usize) -> Vec<f64> {
    let raw = Raw::connect(sock, common::NAMESPACE, &["sleep", "3600"], "kl-bench-raw").await;
    let mut out = vec![];
    for i in 0..rounds {
        let mut total = Duration::ZERO;
        let mut ids = vec![];
        for c in 0..containers {
            let id = format!("raw-{containers}-{i}-{c}");
            let t0 = Instant::now();
            raw.create_start(&id).await;
            total += t0.elapsed();
            ids.push(id);
        }
        out.push(total.as_secs_f64() * 1000.0);
        for id in ids {
            raw.remove(&id).await;
        }
    }
    raw.clean();
    out
}

/// Raw containerd create+start of two containers plus one CNI ADD of the
/// same configuration the agent uses, into a fresh network namespace (made
/// outside the timing), by the agent's own plugin invoker.
async fn raw_networked_rounds(env: &Env, net: &Net, rounds: usize) -> Vec<f64> {
    let sock = env.dir.join("containerd.sock");
    let raw = Raw::connect(
        &sock,
        common::NAMESPACE,
        &["sleep", "3600"],
        "kl-bench-rawnet",
    )
    .await;
    let pods_dir = env.dir.join("rawnet");
    let network = support::raw_network(net, &pods_dir);
    let mut out = vec![];
    for i in 0..rounds {
        let ns = format!("klbench{}-{i}", std::process::id());
        let uid = format!("rawnet{i}");
        let made = Command::new("ip").args(["netns", "add", &ns]).status();
        assert!(made.is_ok_and(|s| s.success()), "ip netns add {ns}");
        let netns = Path::new("/run/netns").join(&ns);
        let ids = [format!("rawnet-{i}-a"), format!("rawnet-{i}-b")];
        let t0 = Instant::now();
        for id in &ids {
            raw.create_start(id).await;
        }
        support::raw_attach(&network, &pods_dir, &uid, &netns);
        out.push(t0.elapsed().as_secs_f64() * 1000.0);
        network
            .detach(&pods_dir.join(&uid), &netns)
            .expect("CNI DEL");
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        for id in &ids {
            raw.remove(id).await;
        }
    }
    raw.clean();
    out
}

/// `podman kube play` of the same manifests, when podman is installed.
fn podman_rounds(dir: &Path, rounds: usize, containers: usize) -> Option<Vec<f64>> {
    let podman = Podman::new(dir, common::busybox_archive())?;
    let mut out = vec![];
    for i in 0..rounds {
        let name = format!("pm{containers}x{i}");
        let file = dir.join(format!("{name}.yaml"));
        let text = if containers == 1 {
            one(&name)
        } else {
            two(&name)
        };
        std::fs::write(&file, Podman::manifest(&text)).ok()?;
        out.push(podman.play(&file)?.as_secs_f64() * 1000.0);
        podman.down(&file);
    }
    Some(out)
}

fn report(label: &str, agent: &mut [f64], raw: &mut [f64], podman: Option<&mut Vec<f64>>) {
    let (a50, a90) = (percentile(agent, 0.5), percentile(agent, 0.9));
    let (r50, r90) = (percentile(raw, 0.5), percentile(raw, 0.9));
    println!(
        "{label}: kubelet-lite p50 {a50:.1} ms p90 {a90:.1} ms | raw containerd p50 {r50:.1} ms p90 {r90:.1} ms | ratio p50 {:.2}x",
        a50 / r50
    );
    if let Some(p) = podman {
        let (p50, p90) = (percentile(p, 0.5), percentile(p, 0.9));
        println!(
            "{label}: podman kube play p50 {p50:.1} ms p90 {p90:.1} ms | podman / kubelet-lite p50 {:.2}x",
            p50 / a50
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else is accepted.
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let mut env = Env::new("bench");
    env.write_config("");
    env.start_agent();
    // Warm up: the first pod imports and unpacks the image.
    env.write_manifest("warm.yaml", &one("warm"));
    env.wait_running("warm-node1");
    env.remove_manifest("warm.yaml");
    env.wait_for("warm gone", Duration::from_secs(30), || {
        env.pod("warm-node1").is_none().then_some(())
    });

    let net_only = std::env::var_os("BENCH_NET_ONLY").is_some();
    let plain = if net_only { 0 } else { rounds };
    let mut agent1 = agent_rounds(&mut env, "b", plain, 1);
    let mut agent2 = agent_rounds(&mut env, "b", plain, 2);
    let sock = env.dir.join("containerd.sock");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut raw1 = rt.block_on(raw_rounds(&sock, plain, 1));
    let mut raw2 = rt.block_on(raw_rounds(&sock, plain, 2));

    // Networked: the agent with a CNI bridge network of its own.
    let mut net = Net::new(&env, 24);
    env.stop_agent(libc::SIGTERM);
    env.write_config(&net.config(""));
    env.start_agent();
    let mut agent_net = agent_rounds(&mut env, "n", rounds, 2);
    let mut raw_net = rt.block_on(raw_networked_rounds(&env, &net, rounds));
    env.stop_agent(libc::SIGTERM);
    let log = env.agent_output();
    for l in log.lines().filter(|l| l.contains("tearing the pod down")) {
        println!("teardown retried: {l}");
    }
    let left = net.clean();

    let (mut pm1, mut pm2) = if net_only {
        (None, None)
    } else {
        (
            podman_rounds(&env.dir, rounds, 1),
            podman_rounds(&env.dir, rounds, 2),
        )
    };
    println!("pod start-up, {rounds} pods per kind, manifest written -> all containers running");
    if !net_only {
        report("1 container ", &mut agent1, &mut raw1, pm1.as_mut());
        report("2 containers", &mut agent2, &mut raw2, None);
    }
    // podman kube play always sets up a network: its figure goes here.
    report(
        "2 containers, CNI network (raw: + one CNI ADD)",
        &mut agent_net,
        &mut raw_net,
        pm2.as_mut(),
    );
    assert!(left.is_empty(), "iptables rules left: {left:?}");
    if pm1.is_none() && !net_only {
        println!(
            "no podman figures: podman is not installed (apt-get install podman catatonit) or failed (see above)"
        );
    }
}

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use common::Env;
use common::net::Net;
use support::floor::Floor;
use support::{
    Podman, Raw, SHELL, env_number, mib, percentile, pod, remove_all, running_count, usage,
    write_all,
};

/// A network namespace made for a raw pod and held by a parked thread (no
/// mount: the agent's pins add none to the host's mount table either).
struct HeldNetns {
    path: std::path::PathBuf,
    release: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl HeldNetns {
    fn new() -> HeldNetns {
        let (tx, rx) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET)");
            tx.send(nix::unistd::gettid()).unwrap();
            let _ = released.recv();
        });
        let tid = rx.recv().unwrap();
        HeldNetns {
            path: format!("/proc/{}/task/{tid}/ns/net", std::process::id()).into(),
            release,
            thread,
        }
    }

    fn drop_now(self) {
        drop(self.release);
        self.thread.join().unwrap();
    }
}

/// Raw containerd: `pods` tasks at once, each creating and starting two
/// containers together, and, with `net`, attaching one network namespace
/// (made outside the timing) through CNI beside them, with the agent's own
/// plugin invoker and the same configuration. Returns the wall time until
/// all run (and are attached).
async fn raw(env: &Env, pods: usize, net: Option<&Net>) -> Duration {
    let raw = Raw::connect(
        &env.dir.join("containerd.sock"),
        common::NAMESPACE,
        &["sh", "-c", SHELL],
        "kl-bench-scale-raw",
    )
    .await;
    let pods_dir = env.dir.join("rawnet");
    let network = net.map(|n| std::sync::Arc::new(support::raw_network(n, &pods_dir)));
    let held: Vec<HeldNetns> = match network {
        Some(_) => (0..pods).map(|_| HeldNetns::new()).collect(),
        None => vec![],
    };
    let ids: Vec<(String, String)> = (0..pods)
        .map(|p| (format!("raw-{p}-a"), format!("raw-{p}-b")))
        .collect();
    let attach = |i: usize| {
        let network = network.clone();
        let netns = held.get(i).map(|h| h.path.clone());
        let pods_dir = pods_dir.clone();
        async move {
            let (Some(network), Some(netns)) = (network, netns) else {
                return;
            };
            tokio::task::spawn_blocking(move || {
                support::raw_attach(&network, &pods_dir, &format!("raw{i}"), &netns);
            })
            .await
            .unwrap();
        }
    };
    let t0 = Instant::now();
    futures::future::join_all(ids.iter().enumerate().map(|(i, (a, b))| {
        let add = attach(i);
        let raw = &raw;
        async move {
            futures::join!(raw.create_start(a), raw.create_start(b), add);
        }
    }))
    .await;
    let took = t0.elapsed();
    for (a, b) in &ids {
        raw.remove(a).await;
        raw.remove(b).await;
    }
    if let Some(network) = &network {
        for (i, h) in held.into_iter().enumerate() {
            network
                .detach(&pods_dir.join(format!("raw{i}")), &h.path)
                .expect("CNI DEL");
            h.drop_now();
        }
    }
    raw.clean();
    took
}

/// `n` pods (named after `tag`) written at once: the wall time until the
/// agent reports all of them running.
fn start_all(env: &Env, n: usize, tag: &str) -> Duration {
    let t0 = Instant::now();
    write_all(env, n, tag);
    env.wait_for("all running", Duration::from_secs(300), || {
        (running_count(env) == n).then_some(())
    });
    t0.elapsed()
}

/// `podman kube play` of the same `n` pods in one file: until podman
/// reports them started. `None` without podman.
fn podman(env: &Env, n: usize) -> Option<Duration> {
    let podman = Podman::new(&env.dir, common::busybox_archive())?;
    let file = env.dir.join("podman-pods.yaml");
    let text: Vec<String> = (0..n)
        .map(|i| Podman::manifest(&pod(&format!("pm{i}"))))
        .collect();
    std::fs::write(&file, text.join("---\n")).ok()?;
    let took = podman.play(&file);
    podman.down(&file);
    took
}

fn main() {
    let n = env_number("SCALE_PODS", 100);
    let cycles = env_number("SCALE_CYCLES", 2);
    let mut env = Env::new("scale");
    // SCALE_CNI=1: the pods on a CNI bridge (the default `podNetwork`),
    // raw containerd with one CNI ADD per pod.
    let net = std::env::var_os("SCALE_CNI").map(|_| Net::new(&env, 24));
    match &net {
        Some(n) => env.write_config(&n.config("fileCheckFrequency: 20s\n")),
        None => env.write_config("fileCheckFrequency: 20s\n"),
    }
    env.start_agent();
    let long = Duration::from_secs(300);
    // Warm up: the image is imported once.
    env.write_manifest("warm.yaml", &pod("warm"));
    env.wait_running("warm-node1");
    env.remove_manifest("warm.yaml");
    env.wait_for("warm gone", long, || env.pods().is_empty().then_some(()));
    let pid = env.agent_pid().unwrap();
    let empty_rss = mib(usage(pid).1);

    // Start-up of N pods at once, against raw containerd just before it
    // (again in each cycle below, in turns after it: the figures are the
    // medians).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut raw_starts = vec![rt.block_on(raw(&env, n, net.as_ref()))];
    let mut starts = vec![start_all(&env, n, "s")];
    std::thread::sleep(Duration::from_secs(2));
    let rss_full = mib(usage(pid).1);

    // Scrapes: the first one opens every cgroup's files and reads their
    // configured values (reported on its own), then a steady scraper.
    let t = Instant::now();
    env.get("/metrics/cadvisor").expect("scrape");
    let first_scrape = t.elapsed().as_secs_f64() * 1000.0;
    // After each scrape, and the same pause, the files it read are read
    // alone by this process: the floor under its CPU, in the same run.
    let mut floor = Floor::open(&env.cgroup_root);
    floor.pass();
    let mut lat = vec![];
    let mut reads = Duration::ZERO;
    let c0 = usage(pid).0;
    let scrapes = 100;
    for _ in 0..scrapes {
        let t = Instant::now();
        env.get("/metrics/cadvisor").expect("scrape");
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(50));
        reads += floor.pass();
        std::thread::sleep(Duration::from_millis(50));
    }
    let cpu_per_scrape = (usage(pid).0 - c0) / f64::from(scrapes) * 1000.0;
    let reads_per_scrape = reads.as_secs_f64() * 1000.0 / f64::from(scrapes);
    let (s50, s99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));

    // `get pods` end to end (process start included), against listing
    // containers straight from containerd with `ctr`.
    let timed = |cmd: &mut std::process::Command| {
        let t = Instant::now();
        let out = cmd.output().expect("running a listing");
        assert!(out.status.success(), "{cmd:?}: {out:?}");
        t.elapsed().as_secs_f64() * 1000.0
    };
    let (mut get, mut ctr) = (vec![], vec![]);
    for _ in 0..30 {
        get.push(timed(
            std::process::Command::new(env!("CARGO_BIN_EXE_kubelet-lite"))
                .arg("--socket")
                .arg(env.dir.join("agent.sock"))
                .args(["get", "pods", "-A"]),
        ));
        ctr.push(timed(
            std::process::Command::new("ctr")
                .arg("--address")
                .arg(env.dir.join("containerd.sock"))
                .args(["--namespace", common::NAMESPACE, "containers", "ls"]),
        ));
    }
    let (get50, ctr50) = (percentile(&mut get, 0.5), percentile(&mut ctr, 0.5));

    // SIGKILL and restart at N pods.
    env.stop_agent(libc::SIGKILL);
    let t0 = Instant::now();
    env.start_agent_unchecked();
    env.wait_for("all running again", long, || {
        (env.get("/healthz").is_ok() && running_count(&env) == n).then_some(())
    });
    let recover = t0.elapsed();
    let pid = env.agent_pid().unwrap();

    // Delete all at once.
    let t0 = Instant::now();
    remove_all(&env, n, "s");
    env.wait_for("all gone", long, || env.pods().is_empty().then_some(()));
    let delete = t0.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let (_, rss_deleted, peak) = usage(pid);
    let (rss_deleted, peak) = (mib(rss_deleted), mib(peak));

    // More cycles.
    let mut after_cycles = vec![];
    for c in 0..cycles {
        // Raw containerd before or after the agent's pods (gone by then),
        // in turns: neither side always starts while the other's teardown
        // settles.
        let tag = format!("c{c}x");
        let raw_first = c % 2 == 1;
        if raw_first {
            raw_starts.push(rt.block_on(raw(&env, n, net.as_ref())));
        }
        starts.push(start_all(&env, n, &tag));
        remove_all(&env, n, &tag);
        env.wait_for("cycle gone", long, || env.pods().is_empty().then_some(()));
        std::thread::sleep(Duration::from_secs(2));
        let (_, r, p) = usage(pid);
        after_cycles.push((mib(r), mib(p)));
        if !raw_first {
            raw_starts.push(rt.block_on(raw(&env, n, net.as_ref())));
        }
    }

    // Stop latency of one pod that honours SIGTERM.
    let mut stops = vec![];
    for i in 0..10 {
        let name = format!("stop{i}");
        env.write_manifest(&format!("{name}.yaml"), &pod(&name));
        env.wait_running(&format!("{name}-node1"));
        let t0 = Instant::now();
        env.remove_manifest(&format!("{name}.yaml"));
        // Polled closely: the figure is ~100 ms.
        while env.pod(&format!("{name}-node1")).is_some() {
            assert!(t0.elapsed() < long, "{name} not stopped");
            std::thread::sleep(Duration::from_millis(2));
        }
        stops.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let stop50 = percentile(&mut stops, 0.5);

    let podman_start = podman(&env, n);

    let cpus = std::thread::available_parallelism().map_or(0, |c| c.get());
    let verdict = |met: bool| if met { "met" } else { "**not met**" };
    // Medians of the start-ups, with each one listed (seconds).
    let median = |v: &[Duration]| {
        let mut secs: Vec<f64> = v.iter().map(Duration::as_secs_f64).collect();
        let list = secs
            .iter()
            .map(|s| format!("{s:.1}"))
            .collect::<Vec<_>>()
            .join(", ");
        (percentile(&mut secs, 0.5), list)
    };
    let pairs = starts
        .iter()
        .zip(&raw_starts)
        .map(|(s, r)| format!("{:.2}", s.as_secs_f64() / r.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ");
    let ((start, starts), (raw_start, raw_starts)) = (median(&starts), median(&raw_starts));
    let ratio = start / raw_start;
    let network = if net.is_some() {
        " on a CNI bridge"
    } else {
        ", podNetwork: loopback"
    };
    println!("kubelet-lite at scale: {n} two-container pods{network}, {cpus} CPUs");
    println!("| figure | kubelet-lite | baseline, same run | target |");
    println!("|---|---|---|---|");
    println!(
        "| {n} pods written -> all running | {start:.1} s (median of {starts}) | raw containerd{}, same concurrency, in turns: {raw_start:.1} s ({raw_starts}); **{ratio:.2}x** (each pair: {pairs}) | <= 1.5x raw: {} |",
        if net.is_some() {
            " + one CNI ADD per pod"
        } else {
            ""
        },
        verdict(ratio <= 1.5)
    );
    if let Some(p) = podman_start {
        println!(
            "| `podman kube play` of the same {n} pods (one file) | | {:.1} s: {:.1}x slower | |",
            p.as_secs_f64(),
            p.as_secs_f64() / start
        );
    }
    println!("| agent RSS, no pods | {empty_rss:.1} MiB | | |");
    println!(
        "| agent RSS at {n} pods | {rss_full:.1} MiB | | <= 30 MiB: {} |",
        verdict(rss_full <= 30.0)
    );
    println!(
        "| agent RSS after deleting {n} pods at once (peak) | {rss_deleted:.1} MiB ({peak:.1} MiB) | deleted in {:.1} s | <= 30 MiB: {} |",
        delete.as_secs_f64(),
        verdict(peak <= 30.0)
    );
    for (i, (r, p)) in after_cycles.iter().enumerate() {
        println!(
            "| agent RSS after cycle {} (peak) | {r:.1} MiB ({p:.1} MiB) | | <= 30 MiB and <= 2x no pods: {} |",
            i + 1,
            verdict(*p <= 30.0 && *r <= 2.0 * empty_rss)
        );
    }
    println!(
        "| `/metrics/cadvisor` at {n} pods, 50 ms apart | p50 {s50:.1} ms, p99 {s99:.1} ms, {cpu_per_scrape:.1} ms CPU per scrape; the first scrape {first_scrape:.0} ms | the files of a scrape read alone: {reads_per_scrape:.1} ms CPU; agent {:.2}x | p99 <= 20 ms, <= 10 ms CPU: {} |",
        cpu_per_scrape / reads_per_scrape,
        verdict(s99 <= 20.0 && cpu_per_scrape <= 10.0)
    );
    println!(
        "| `kubelet-lite get pods -A` at {n} pods, process start included | p50 {get50:.1} ms | `ctr containers ls`: p50 {ctr50:.1} ms | |"
    );
    println!(
        "| stop of a pod honouring SIGTERM | median {stop50:.0} ms | | <= 100 ms: {} |",
        verdict(stop50 <= 100.0)
    );
    println!(
        "| SIGKILL of the agent at {n} pods -> all reported running | {:.2} s | | <= 1 s: {} |",
        recover.as_secs_f64(),
        verdict(recover <= Duration::from_secs(1))
    );
}

//! Churn soak: `SOAK_OPS` create/edit/delete operations (default 100;
//! `scripts/soak.sh` runs 1000) over mixed pods (volumes, limits, init
//! containers, crash loops, subPaths), chosen by a seeded generator. At the
//! end nothing is left (containers, tasks, mounts, cgroups, snapshots,
//! leases, logs) and the agent's RSS is within twice its start.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Env, Healthz, pod_yaml};

/// A small deterministic generator (xorshift64*), so a failing run can be
/// replayed with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn manifest(env: &Env, name: &str, kind: u64, version: u64) -> String {
    let spec = match kind {
        // A sleeper with an emptyDir and limits.
        0 => format!(
            "  terminationGracePeriodSeconds: 1\n  volumes:\n  - {{name: scratch, emptyDir: {{}}}}\n  containers:\n  - name: main\n    image: busybox\n    command: [sh, -c, 'echo v{version} > /scratch/v; exec sleep 3600']\n    volumeMounts:\n    - {{name: scratch, mountPath: /scratch}}\n    resources:\n      requests: {{cpu: 10m, memory: 8Mi}}\n      limits: {{cpu: 100m, memory: 32Mi}}\n"
        ),
        // A crash loop.
        1 => format!(
            "  terminationGracePeriodSeconds: 0\n  containers:\n  - name: crash\n    image: busybox\n    command: [sh, -c, 'echo v{version}; exit 1']\n"
        ),
        // An init container, two app containers sharing a memory emptyDir.
        2 => format!(
            "  terminationGracePeriodSeconds: 1\n  volumes:\n  - {{name: shm, emptyDir: {{medium: Memory, sizeLimit: 4Mi}}}}\n  initContainers:\n  - name: init\n    image: busybox\n    command: [sh, -c, 'echo v{version} > /shm/ready']\n    volumeMounts:\n    - {{name: shm, mountPath: /shm}}\n  containers:\n  - name: a\n    image: busybox\n    command: [sleep, '3600']\n    volumeMounts:\n    - {{name: shm, mountPath: /shm}}\n  - name: b\n    image: busybox\n    command: [sleep, '3600']\n"
        ),
        // A hostPath with a subPath, read-only.
        _ => format!(
            "  terminationGracePeriodSeconds: 1\n  volumes:\n  - {{name: host, hostPath: {{path: {}/host, type: DirectoryOrCreate}}}}\n  containers:\n  - name: main\n    image: busybox\n    command: [sleep, '36{version:02}']\n    volumeMounts:\n    - {{name: host, mountPath: /data, subPath: {name}, readOnly: true}}\n",
            env.dir.display()
        ),
    };
    pod_yaml(name, &spec)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn churn_leaves_nothing_behind() {
    let ops: u64 = std::env::var("SOAK_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_cafe);
    let mut env = Env::new("soak");
    env.start_agent();
    // Warm up: the image is imported once; RSS is measured after it.
    env.write_manifest("warm.yaml", &manifest(&env, "warm", 0, 0));
    env.wait_running("warm-node1");
    env.remove_manifest("warm.yaml");
    env.wait_for("warm gone", Duration::from_secs(30), || {
        env.pods().is_empty().then_some(())
    });
    let pid = env.agent_pid().unwrap();
    let start_rss = rss_kib(pid);

    let mut rng = Rng(seed);
    // Live pods: name -> (kind, version).
    let mut live: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut healthz = Healthz::default();
    let mut peak_rss = start_rss;
    for op in 0..ops {
        let choice = rng.below(10);
        if live.is_empty() || (choice < 5 && live.len() < 12) {
            let name = format!("s{op}");
            let kind = rng.below(4);
            env.write_manifest(&format!("{name}.yaml"), &manifest(&env, &name, kind, 0));
            live.insert(name, (kind, 0));
        } else {
            let keys: Vec<String> = live.keys().cloned().collect();
            let name = keys[usize::try_from(rng.below(keys.len() as u64)).unwrap()].clone();
            if choice < 8 {
                let (kind, version) = live.get_mut(&name).unwrap();
                *version += 1;
                env.write_manifest(
                    &format!("{name}.yaml"),
                    &manifest(&env, &name, *kind, *version),
                );
            } else {
                env.remove_manifest(&format!("{name}.yaml"));
                live.remove(&name);
            }
        }
        std::thread::sleep(Duration::from_millis(20 + rng.below(80)));
        healthz.sample(&env);
        peak_rss = peak_rss.max(rss_kib(pid));
    }
    // What the directory holds now runs (crash loops aside).
    env.wait_for(
        "the live pods, and only them",
        Duration::from_secs(120),
        || {
            let pods = env.pods();
            let names: Vec<&str> = pods
                .iter()
                .filter_map(|p| p["metadata"]["name"].as_str())
                .collect();
            (names.len() == live.len()
                && live
                    .keys()
                    .all(|n| names.contains(&format!("{n}-node1").as_str())))
            .then_some(())
        },
    );
    for name in live.keys() {
        env.remove_manifest(&format!("{name}.yaml"));
    }
    env.wait_for("no pods", Duration::from_secs(120), || {
        env.pods().is_empty().then_some(())
    });
    env.assert_nothing_left();
    let end_rss = rss_kib(pid);
    eprintln!(
        "soak: {ops} operations (seed {seed:#x}); RSS start {start_rss} KiB, peak {peak_rss} KiB, end {end_rss} KiB"
    );
    assert!(end_rss <= 2 * start_rss, "RSS {start_rss} -> {end_rss} KiB");
    healthz.assert_quick();
    assert!(!env.agent_output().contains("panicked"));
}

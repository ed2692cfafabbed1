//! Requests and limits on the real kernel: cgroup files, OOM kills, CPU
//! throttling, OOM scores and admission. These run on the host's cgroups
//! (v1 on the development machines; v2 in the VM lab).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Env, pod_yaml};

fn v2() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Directory of a cgroup (relative path) for a controller.
fn cg(controller: &str, rel: &str) -> PathBuf {
    if v2() {
        PathBuf::from("/sys/fs/cgroup").join(rel.trim_start_matches('/'))
    } else {
        PathBuf::from("/sys/fs/cgroup")
            .join(controller)
            .join(rel.trim_start_matches('/'))
    }
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

fn container_id(pod: &serde_json::Value, i: usize) -> String {
    pod["status"]["containerStatuses"][i]["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("containerd://")
        .to_string()
}

fn terminated(env: &Env, name: &str) -> serde_json::Value {
    env.wait_for(
        &format!("{name} terminated"),
        Duration::from_secs(60),
        || {
            let p = env.pod(name)?;
            let t = p["status"]["containerStatuses"][0]["state"]["terminated"].clone();
            t.is_object().then_some(t)
        },
    )
}

#[test]
fn memory_limit_oom_kills_are_reported() {
    let mut env = Env::new("oom");
    env.start_agent();
    // dd as PID 1 fills a tmpfs past the limit: the kernel kills it.
    env.write_manifest(
        "fill.yaml",
        &pod_yaml(
            "fill",
            "  restartPolicy: Never\n  containers:\n  - name: fill\n    image: busybox\n    command: [dd, if=/dev/zero, of=/dev/shm/fill, bs=1M, count=100]\n    resources:\n      limits: {memory: 32Mi}\n",
        ),
    );
    // On v1 the shell (PID 1) survives the kill of its child and exits 0
    // later; on v2 memory.oom.group=1 makes the kill take the shell too.
    env.write_manifest(
        "survive.yaml",
        &pod_yaml(
            "survive",
            "  restartPolicy: Never\n  containers:\n  - name: hog\n    image: busybox\n    command: [sh, -c, 'dd if=/dev/zero of=/dev/null bs=100M count=1; echo survived; exit 0']\n    resources:\n      limits: {memory: 32Mi}\n",
        ),
    );
    let t = terminated(&env, "fill-node1");
    assert_eq!(t["reason"], "OOMKilled", "{t}");
    assert_eq!(t["exitCode"], 137, "{t}");
    let t = terminated(&env, "survive-node1");
    assert_eq!(t["reason"], "OOMKilled", "{t}");
    assert_eq!(t["exitCode"], if v2() { 137 } else { 0 }, "{t}");

    // With restartPolicy OnFailure the container is restarted with backoff.
    env.write_manifest(
        "again.yaml",
        &pod_yaml(
            "again",
            "  restartPolicy: OnFailure\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: hog\n    image: busybox\n    command: [dd, if=/dev/zero, of=/dev/null, bs=100M, count=1]\n    resources:\n      limits: {memory: 32Mi}\n",
        ),
    );
    let p = env.wait_for("again restarted twice", Duration::from_secs(60), || {
        let p = env.pod("again-node1")?;
        (p["status"]["containerStatuses"][0]["restartCount"].as_i64()? >= 2).then_some(p)
    });
    assert_eq!(
        p["status"]["containerStatuses"][0]["lastState"]["terminated"]["reason"],
        "OOMKilled"
    );
}

/// A Memory emptyDir's pages stay charged to the pod after the container
/// that filled it is OOM-killed, so the restart itself may fail: the kill
/// must still show as the last state, and the restart count must count it.
#[test]
fn an_oom_kill_stays_visible_when_the_restart_fails() {
    let mut env = Env::new("oomtmpfs");
    env.start_agent();
    env.write_manifest(
        "tmpfs.yaml",
        &pod_yaml(
            "tmpfs",
            "  terminationGracePeriodSeconds: 0\n  volumes: [{name: mem, emptyDir: {medium: Memory}}]\n  containers:\n  - name: fill\n    image: busybox\n    command: [dd, if=/dev/zero, of=/mem/fill, bs=1M, count=100]\n    volumeMounts: [{name: mem, mountPath: /mem}]\n    resources:\n      limits: {memory: 32Mi}\n",
        ),
    );
    let c = env.wait_for("OOMKilled in lastState", Duration::from_secs(60), || {
        let p = env.pod("tmpfs-node1")?;
        let c = p["status"]["containerStatuses"][0].clone();
        (c["lastState"]["terminated"]["reason"] == "OOMKilled").then_some(c)
    });
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 137, "{c}");
    assert!(c["restartCount"].as_i64().unwrap() >= 1, "{c}");
}

#[test]
fn cpu_limit_throttles_and_cgroup_files_hold_the_values() {
    let mut env = Env::new("cpu");
    env.start_agent();
    env.write_manifest(
        "spin.yaml",
        &pod_yaml(
            "spin",
            "  terminationGracePeriodSeconds: 0\n  containers:\n  - name: spin\n    image: busybox\n    command: [sh, -c, 'while :; do :; done']\n    resources:\n      limits: {cpu: 200m, memory: 64Mi}\n",
        ),
    );
    env.write_manifest(
        "burst.yaml",
        &pod_yaml(
            "burst",
            "  terminationGracePeriodSeconds: 0\n  containers:\n  - name: a\n    image: busybox\n    command: [sleep, '3600']\n    resources:\n      requests: {cpu: 250m, memory: 100Mi}\n      limits: {memory: 200Mi}\n  - name: b\n    image: busybox\n    command: [sleep, '3600']\n    resources:\n      requests: {cpu: 100m}\n",
        ),
    );
    env.write_manifest(
        "best.yaml",
        &pod_yaml("best", "  terminationGracePeriodSeconds: 0\n  containers:\n  - name: a\n    image: busybox\n    command: [sleep, '3600']\n"),
    );
    let spin = env.wait_running("spin-node1");
    let burst = env.wait_running("burst-node1");
    let best = env.wait_running("best-node1");
    assert_eq!(spin["status"]["qosClass"], "Guaranteed");
    assert_eq!(burst["status"]["qosClass"], "Burstable");
    assert_eq!(best["status"]["qosClass"], "BestEffort");

    let root = format!("{}/kubepods", env.cgroup_root);
    let uid = |p: &serde_json::Value| p["metadata"]["uid"].as_str().unwrap().to_string();
    let spin_pod = format!("{root}/pod{}", uid(&spin));
    let spin_ctr = format!("{spin_pod}/{}", container_id(&spin, 0));
    let burst_pod = format!("{root}/burstable/pod{}", uid(&burst));
    let best_pod = format!("{root}/besteffort/pod{}", uid(&best));

    if v2() {
        assert_eq!(read(cg("cpu", &spin_pod).join("cpu.max")), "20000 100000");
        assert_eq!(
            read(cg("memory", &spin_pod).join("memory.max")),
            (64u64 << 20).to_string()
        );
        assert_eq!(read(cg("cpu", &spin_ctr).join("cpu.max")), "20000 100000");
        assert_eq!(read(cg("memory", &burst_pod).join("memory.max")), "max");
        // 350m -> 358 shares -> linear weight 14.
        assert_eq!(read(cg("cpu", &burst_pod).join("cpu.weight")), "14");
        assert_eq!(read(cg("cpu", &best_pod).join("cpu.weight")), "1");
    } else {
        assert_eq!(read(cg("cpu", &spin_pod).join("cpu.cfs_quota_us")), "20000");
        assert_eq!(read(cg("cpu", &spin_pod).join("cpu.shares")), "204");
        assert_eq!(
            read(cg("memory", &spin_pod).join("memory.limit_in_bytes")),
            (64u64 << 20).to_string()
        );
        assert_eq!(read(cg("cpu", &spin_ctr).join("cpu.cfs_quota_us")), "20000");
        assert_eq!(
            read(cg("memory", &spin_ctr).join("memory.limit_in_bytes")),
            (64u64 << 20).to_string()
        );
        assert_eq!(read(cg("cpu", &burst_pod).join("cpu.shares")), "358");
        assert_eq!(read(cg("cpu", &burst_pod).join("cpu.cfs_quota_us")), "-1");
        // Only one container has a memory limit: no pod-level limit.
        assert!(
            read(cg("memory", &burst_pod).join("memory.limit_in_bytes"))
                .parse::<u64>()
                .unwrap()
                > 1 << 40
        );
        assert_eq!(read(cg("cpu", &best_pod).join("cpu.shares")), "2");
        assert_eq!(
            read(cg("cpu", &format!("{root}/besteffort")).join("cpu.shares")),
            "2"
        );
    }

    // OOM score adjustments by class, read from the containers' PID 1.
    let pid_of = |id: &str| {
        env.tasks()
            .into_iter()
            .find(|t| t.0 == id)
            .map(|t| t.1)
            .unwrap()
    };
    let adj = |id: &str| read(PathBuf::from(format!("/proc/{}/oom_score_adj", pid_of(id))));
    // Where the host forbids negative scores, the agent keeps them at 0.
    let negative_allowed = std::process::Command::new("sh")
        .args(["-c", "echo -997 > /proc/self/oom_score_adj"])
        .status()
        .unwrap()
        .success();
    let guaranteed = if negative_allowed { "-997" } else { "0" };
    assert_eq!(adj(&container_id(&spin, 0)), guaranteed);
    assert_eq!(adj(&container_id(&best, 0)), "1000");
    let capacity = kubelet_lite::node::machine().memory;
    let want = 1000 - (1000 * (100i64 << 20)) / capacity;
    assert_eq!(adj(&container_id(&burst, 0)), want.to_string());
    assert_eq!(adj(&container_id(&burst, 1)), "999");

    // Throttling: over 3 s the busy loop gets about 0.2 of a core.
    let (usage_file, throttled_file) = if v2() {
        (
            cg("cpu", &spin_ctr).join("cpu.stat"),
            cg("cpu", &spin_ctr).join("cpu.stat"),
        )
    } else {
        (
            cg("cpuacct", &spin_ctr).join("cpuacct.usage"),
            cg("cpu", &spin_ctr).join("cpu.stat"),
        )
    };
    let usage_ns = || -> u64 {
        let text = read(usage_file.clone());
        if v2() {
            kubelet_lite::cgroup::fs::parse_keyed(&text, "usage_usec").unwrap() * 1000
        } else {
            text.parse().unwrap()
        }
    };
    let throttled = || {
        kubelet_lite::cgroup::fs::parse_keyed(&read(throttled_file.clone()), "nr_throttled")
            .unwrap()
    };
    let (u0, n0, t0) = (usage_ns(), throttled(), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let (u1, n1) = (usage_ns(), throttled());
    let cores = (u1 - u0) as f64 / t0.elapsed().as_nanos() as f64;
    assert!(n1 > n0 + 10, "nr_throttled {n0} -> {n1}");
    assert!(
        (0.12..=0.26).contains(&cores),
        "busy loop used {cores:.3} cores under a 200m limit"
    );

    // Deleting removes the pod cgroups; the QoS cgroups stay.
    for f in ["spin.yaml", "burst.yaml", "best.yaml"] {
        env.remove_manifest(f);
    }
    env.wait_for("pods gone", Duration::from_secs(30), || {
        env.pods().is_empty().then_some(())
    });
    env.wait_for("pod cgroups removed", Duration::from_secs(30), || {
        [&spin_pod, &burst_pod, &best_pod]
            .iter()
            .all(|p| !cg("cpu", p).exists())
            .then_some(())
    });
    assert!(cg("cpu", &format!("{root}/burstable")).exists());
}

#[test]
fn admission_refuses_what_does_not_fit_until_room_is_made() {
    let mut env = Env::new("admit");
    env.start_agent();
    let cap = kubelet_lite::node::machine().cpu_milli;
    let big = cap * 6 / 10;
    let pod = |name: &str, cpu: i64| {
        pod_yaml(
            name,
            &format!(
                "  terminationGracePeriodSeconds: 0\n  containers:\n  - name: a\n    image: busybox\n    command: [sleep, '3600']\n    resources:\n      requests: {{cpu: {cpu}m}}\n"
            ),
        )
    };
    env.write_manifest("huge.yaml", &pod("huge", 1_000_000));
    env.write_manifest("a.yaml", &pod("first", big));
    env.wait_running("first-node1");
    env.write_manifest("b.yaml", &pod("second", big));
    let waiting = env.wait_for("second refused", Duration::from_secs(20), || {
        let p = env.pod("second-node1")?;
        (p["status"]["reason"] == "OutOfcpu").then_some(p)
    });
    assert_eq!(waiting["status"]["phase"], "Pending");
    let msg = waiting["status"]["message"].as_str().unwrap();
    assert_eq!(
        msg,
        format!(
            "Node didn't have enough resource: cpu, requested: {big}, used: {big}, capacity: {cap}"
        )
    );
    let huge = env.pod("huge-node1").unwrap();
    assert_eq!(huge["status"]["reason"], "OutOfcpu");
    assert_eq!(env.tasks().len(), 1);
    // Room is made: the waiting pod starts.
    env.remove_manifest("a.yaml");
    env.wait_running("second-node1");
    assert_eq!(
        env.pod("huge-node1").unwrap()["status"]["reason"],
        "OutOfcpu"
    );
}

#[test]
fn pods_beyond_max_pods_wait_with_out_of_pods() {
    let mut env = Env::new("maxpods");
    env.write_config("maxPods: 2\n");
    env.start_agent();
    let pod = |name: &str| {
        pod_yaml(
            name,
            "  terminationGracePeriodSeconds: 0\n  containers:\n  - name: a\n    image: busybox\n    command: [sleep, '3600']\n",
        )
    };
    env.write_manifest("a.yaml", &pod("a"));
    env.write_manifest("b.yaml", &pod("b"));
    env.wait_running("a-node1");
    env.wait_running("b-node1");
    env.write_manifest("c.yaml", &pod("c"));
    let waiting = env.wait_for("c refused", Duration::from_secs(20), || {
        let p = env.pod("c-node1")?;
        (p["status"]["reason"] == "OutOfpods").then_some(p)
    });
    assert_eq!(
        waiting["status"]["message"],
        "Node didn't have enough resource: pods, requested: 1, used: 2, capacity: 2"
    );
    assert_eq!(env.tasks().len(), 2);
    env.remove_manifest("a.yaml");
    env.wait_running("c-node1");
}

/// Quantities beyond 64 bits: 8Ei of memory and 8E CPUs used to wrap to
/// negative requests that admission let through. They are refused, and no
/// container is ever created for them; a CPU limit beyond what the kernel
/// can enforce means no quota, not a wrapped one.
#[test]
fn quantities_beyond_64_bits_never_wrap() {
    let mut env = Env::new("huge");
    env.start_agent();
    let sleeper = |resources: &str| {
        format!(
            "  terminationGracePeriodSeconds: 0\n  containers:\n  - name: a\n    image: busybox\n    command: [sleep, '3600']\n    resources: {resources}\n"
        )
    };
    env.write_manifest(
        "exa-mem.yaml",
        &pod_yaml("exa-mem", &sleeper("{requests: {memory: 8Ei}}")),
    );
    env.write_manifest(
        "exa-cpu.yaml",
        &pod_yaml("exa-cpu", &sleeper("{requests: {cpu: 8E}}")),
    );
    env.write_manifest(
        "no-quota.yaml",
        &pod_yaml(
            "no-quota",
            &sleeper("{requests: {cpu: 100m}, limits: {cpu: '100000000000'}}"),
        ),
    );
    let running = env.wait_running("no-quota-node1");
    for (name, reason, resource) in [
        ("exa-mem-node1", "OutOfmemory", "memory"),
        ("exa-cpu-node1", "OutOfcpu", "cpu"),
    ] {
        let p = env.wait_for(&format!("{name} refused"), Duration::from_secs(20), || {
            let p = env.pod(name)?;
            (p["status"]["reason"] == reason).then_some(p)
        });
        assert_eq!(p["status"]["phase"], "Pending", "{p}");
        let msg = p["status"]["message"].as_str().unwrap();
        assert!(
            msg.starts_with(&format!(
                "Node didn't have enough resource: {resource}, requested: {}",
                i64::MAX
            )),
            "{msg}"
        );
        assert!(
            p["status"]["containerStatuses"]
                .as_array()
                .is_none_or(|c| c.iter().all(|c| c["containerID"].is_null())),
            "{p}"
        );
    }
    // Only the admitted pod has a container in containerd, now and after
    // a few more sync rounds.
    let id = container_id(&running, 0);
    for _ in 0..2 {
        assert_eq!(env.containers(), std::slice::from_ref(&id));
        assert_eq!(
            env.tasks().into_iter().map(|t| t.0).collect::<Vec<_>>(),
            std::slice::from_ref(&id)
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    // The limit beyond the kernel's maximum quota is no quota at all.
    let uid = running["metadata"]["uid"].as_str().unwrap();
    let pod_cg = format!("{}/kubepods/burstable/pod{uid}", env.cgroup_root);
    let ctr_cg = format!("{pod_cg}/{id}");
    for dir in [&pod_cg, &ctr_cg] {
        if v2() {
            assert_eq!(read(cg("cpu", dir).join("cpu.max")), "max 100000", "{dir}");
        } else {
            assert_eq!(read(cg("cpu", dir).join("cpu.cfs_quota_us")), "-1", "{dir}");
        }
    }
}

/// A scrape keeps each cgroup's counter files open between scrapes. A
/// cgroup removed and made again at the same path (a pod deleted and
/// written again: same UID, same path) must then be read afresh: the
/// kernel fails reads of the removed cgroup's files, and the new values
/// show.
#[test]
fn a_cgroup_made_again_at_the_same_path_is_read_afresh() {
    use kubelet_lite::cgroup::Below;
    use kubelet_lite::cgroup::manager::Hierarchy;
    use kubelet_lite::cgroup::qos::{CgroupLimits, WeightFormula};
    use kubelet_lite::cgroup::stats::{SpecCache, read};

    let env = Env::new("cgagain");
    let mounts = kubelet_lite::hostfs::mounts().unwrap();
    let h = Hierarchy::detect(&mounts, WeightFormula::Linear).unwrap();
    let rel = format!("{}/again", env.cgroup_root);
    let make = |quota: i64| {
        let limits = CgroupLimits {
            cpu_quota_us: Some(quota),
            memory_max: Some(64 << 20),
            ..Default::default()
        };
        h.mode.apply(&rel, &limits, h.formula).unwrap();
    };
    make(20_000);
    let cache = SpecCache::default();
    let first = read(&h.mode, &rel, Some(&cache), Below::Unknown).unwrap();
    assert_eq!((first.cpu_quota_us, first.memory_limit), (20_000, 64 << 20));
    assert_eq!(
        read(&h.mode, &rel, Some(&cache), Below::Unknown).unwrap(),
        first
    );
    assert!(h.remove(&rel).is_empty());
    // Gone: the kept files fail, and nothing is reported.
    assert!(read(&h.mode, &rel, Some(&cache), Below::Unknown).is_none());
    make(50_000);
    let again = read(&h.mode, &rel, Some(&cache), Below::Unknown).unwrap();
    assert_eq!(again.cpu_quota_us, 50_000);
    // Removed and made again between two scrapes: the same.
    assert!(h.remove(&rel).is_empty());
    make(30_000);
    let third = read(&h.mode, &rel, Some(&cache), Below::Unknown).unwrap();
    assert_eq!(third.cpu_quota_us, 30_000);
    assert!(h.remove(&rel).is_empty());
}

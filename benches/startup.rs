//! Pod start-up latency: from a manifest landing in the static pod directory
//! to all of its containers running, against two baselines measured in the
//! same run on the same machine:
//! - raw containerd: the same containers created and started with the bare
//!   gRPC calls (snapshot prepare, container create, task create, task
//!   start), summed per pod;
//! - `podman kube play` of the same manifest (when podman is installed).
//!
//! Run with `cargo bench --bench startup` (as root). `BENCH_ROUNDS` sets the
//! number of pods per kind (default 15).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::{Env, pod_yaml};
use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::PrepareSnapshotRequest;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetImageRequest, KillRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::Request;

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

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "p is in 0..=1: the index is within the sample"
    )]
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// The time the agent logged the pod as Running.
fn running_at(log: &str, pod: &str) -> Option<SystemTime> {
    let needle = format!("pod={pod} phase=\"Running\"");
    let line = log
        .lines()
        .find(|l| l.contains(&needle) && l.contains("pod phase"))?;
    let ts: jiff::Timestamp = line.split_whitespace().next()?.parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(ts.as_nanosecond()).ok()?))
}

fn agent_rounds(env: &mut Env, rounds: usize, containers: usize) -> Vec<f64> {
    let mut out = vec![];
    for i in 0..rounds {
        let name = format!("b{containers}x{i}");
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
        out.push(t1.duration_since(t0).unwrap_or_default().as_secs_f64() * 1000.0);
        env.remove_manifest(&format!("{name}.yaml"));
        env.wait_for("pod gone", Duration::from_secs(30), || {
            env.pod(&format!("{name}-node1")).is_none().then_some(())
        });
    }
    out
}

fn req<T>(m: T) -> Request<T> {
    let mut r = Request::new(m);
    r.metadata_mut()
        .insert("containerd-namespace", common::NAMESPACE.parse().unwrap());
    r
}

/// Bare containerd create+start of `containers` busybox containers, summed.
async fn raw_rounds(sock: &Path, rounds: usize, containers: usize) -> Vec<f64> {
    let channel = containerd_client::connect(sock).await.expect("connect");
    let client = containerd_client::Client::from(channel);
    let image = client
        .images()
        .get(req(GetImageRequest {
            name: "docker.io/library/busybox:latest".into(),
        }))
        .await
        .expect("busybox imported by the agent rounds")
        .into_inner();
    let _ = image;
    // The top layer's snapshot: the only committed one in this containerd.
    let parent = {
        use containerd_client::services::v1::snapshots::ListSnapshotsRequest;
        let mut s = client
            .snapshots()
            .list(req(ListSnapshotsRequest {
                snapshotter: "overlayfs".into(),
                filters: vec![],
            }))
            .await
            .unwrap()
            .into_inner();
        let mut parent = String::new();
        while let Some(m) = s.message().await.unwrap() {
            for info in m.info {
                if info.kind == 3 {
                    parent = info.name;
                }
            }
        }
        parent
    };
    let mut spec = oci_spec::runtime::Spec::default();
    spec.set_hostname(Some("raw".into()));
    let mut root = spec.root().clone().unwrap();
    root.set_readonly(Some(false));
    spec.set_root(Some(root));
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(vec!["sleep".into(), "3600".into()]));
    spec.set_process(Some(process));
    let spec_json = serde_json::to_vec(&spec).unwrap();

    let mut out = vec![];
    for i in 0..rounds {
        let mut total = Duration::ZERO;
        let mut ids = vec![];
        for c in 0..containers {
            let id = format!("raw-{containers}-{i}-{c}");
            let mut linux = spec.linux().clone().unwrap();
            linux.set_cgroups_path(Some(format!("/kl-bench-raw/{id}").into()));
            let t0 = Instant::now();
            // Container first, as the agent does: it references the snapshot
            // before the garbage collector could see it unreferenced.
            client
                .containers()
                .create(req(CreateContainerRequest {
                    container: Some(Container {
                        id: id.clone(),
                        image: "docker.io/library/busybox:latest".into(),
                        runtime: Some(Runtime {
                            name: "io.containerd.runc.v2".into(),
                            options: None,
                        }),
                        spec: Some(prost_types::Any {
                            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec"
                                .into(),
                            value: spec_json.clone(),
                        }),
                        snapshotter: "overlayfs".into(),
                        snapshot_key: id.clone(),
                        ..Default::default()
                    }),
                }))
                .await
                .unwrap();
            let mounts = client
                .snapshots()
                .prepare(req(PrepareSnapshotRequest {
                    snapshotter: "overlayfs".into(),
                    key: id.clone(),
                    parent: parent.clone(),
                    labels: HashMap::new(),
                }))
                .await
                .unwrap()
                .into_inner()
                .mounts;
            client
                .tasks()
                .create(req(CreateTaskRequest {
                    container_id: id.clone(),
                    rootfs: mounts,
                    ..Default::default()
                }))
                .await
                .unwrap();
            client
                .tasks()
                .start(req(StartRequest {
                    container_id: id.clone(),
                    exec_id: String::new(),
                }))
                .await
                .unwrap();
            total += t0.elapsed();
            ids.push(id);
        }
        out.push(total.as_secs_f64() * 1000.0);
        for id in ids {
            let _ = client
                .tasks()
                .kill(req(KillRequest {
                    container_id: id.clone(),
                    exec_id: String::new(),
                    signal: 9,
                    all: true,
                }))
                .await;
            let _ = client
                .tasks()
                .wait(req(WaitRequest {
                    container_id: id.clone(),
                    exec_id: String::new(),
                }))
                .await;
            let _ = client
                .tasks()
                .delete(req(DeleteTaskRequest {
                    container_id: id.clone(),
                }))
                .await;
            let _ = client
                .containers()
                .delete(req(DeleteContainerRequest { id: id.clone() }))
                .await;
            use containerd_client::services::v1::snapshots::RemoveSnapshotRequest;
            let _ = client
                .snapshots()
                .remove(req(RemoveSnapshotRequest {
                    snapshotter: "overlayfs".into(),
                    key: id,
                }))
                .await;
        }
    }
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let d = h.path().join("kl-bench-raw");
        if d.is_dir() {
            for c in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let _ = std::fs::remove_dir(c.path());
            }
            let _ = std::fs::remove_dir(d);
        }
    }
    out
}

/// `podman kube play` of the same manifests, when podman is installed.
fn podman_rounds(dir: &Path, rounds: usize, containers: usize) -> Option<Vec<f64>> {
    Command::new("podman").arg("--version").output().ok()?;
    let conf = dir.join("containers.conf");
    // Needed on these machines for podman's default ulimits to apply.
    std::fs::write(
        &conf,
        "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n",
    )
    .ok()?;
    let podman = |args: &[&str]| {
        Command::new("podman")
            .env("CONTAINERS_CONF", &conf)
            .args(args)
            .output()
            .expect("podman")
    };
    let load = podman(&["load", "-i", common::busybox_archive().to_str().unwrap()]);
    if !load.status.success() {
        eprintln!(
            "podman load failed: {}",
            String::from_utf8_lossy(&load.stderr)
        );
        return None;
    }
    let mut out = vec![];
    for i in 0..rounds {
        let name = format!("pm{containers}x{i}");
        let file = dir.join(format!("{name}.yaml"));
        let text = if containers == 1 {
            one(&name)
        } else {
            two(&name)
        };
        std::fs::write(
            &file,
            text.replace(
                "image: busybox",
                "image: docker.io/library/busybox:latest\n    imagePullPolicy: Never",
            ),
        )
        .ok()?;
        let t0 = Instant::now();
        let r = podman(&["kube", "play", file.to_str().unwrap()]);
        let took = t0.elapsed();
        if !r.status.success() {
            eprintln!(
                "podman kube play failed: {}",
                String::from_utf8_lossy(&r.stderr)
            );
            return None;
        }
        out.push(took.as_secs_f64() * 1000.0);
        podman(&["kube", "play", "--down", file.to_str().unwrap()]);
    }
    podman(&["rmi", "-f", "docker.io/library/busybox:latest"]);
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

    let mut agent1 = agent_rounds(&mut env, rounds, 1);
    let mut agent2 = agent_rounds(&mut env, rounds, 2);
    let sock = env.dir.join("containerd.sock");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut raw1 = rt.block_on(raw_rounds(&sock, rounds, 1));
    let mut raw2 = rt.block_on(raw_rounds(&sock, rounds, 2));
    let mut pm1 = podman_rounds(&env.dir, rounds, 1);
    let mut pm2 = podman_rounds(&env.dir, rounds, 2);
    println!("pod start-up, {rounds} pods per kind, manifest written -> all containers running");
    report("1 container ", &mut agent1, &mut raw1, pm1.as_mut());
    report("2 containers", &mut agent2, &mut raw2, pm2.as_mut());
    if pm1.is_none() {
        println!("podman not installed (apt-get install podman): no podman figures");
    }
}

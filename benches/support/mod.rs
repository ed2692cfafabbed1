//! What the benches share: sample statistics, a process's CPU and memory
//! from /proc, and bare containerd calls for the raw baselines.

#![allow(dead_code, reason = "each bench uses part of it")]

pub mod floor;

use std::collections::HashMap;
use std::path::Path;

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::{
    ListSnapshotsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, KillRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::Request;
use containerd_client::tonic::transport::Channel;

/// A number from the environment, or `default`.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "p is in 0..=1: the index is within the sample"
    )]
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// The numeric fields of `/proc/<pid>/stat` after the command name, by
/// index from 0 (`state` is index 0, `utime` 11); 0 where unreadable.
pub fn stat_fields(pid: u32) -> impl Fn(usize) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    move |i| f.get(i).copied().unwrap_or(0)
}

/// Clock ticks per second, the unit of `/proc/<pid>/stat`'s times.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads system values.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// utime + stime of a process in seconds, its RSS and peak RSS in bytes.
pub fn usage(pid: u32) -> (f64, u64, u64) {
    let field = stat_fields(pid);
    let hz = clock_ticks();
    // SAFETY: sysconf only reads system values.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kib = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    (
        (field(11) + field(12)) as f64 / hz,
        field(21) * page,
        hwm_kib * 1024,
    )
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn req<T>(namespace: &str, m: T) -> Request<T> {
    let mut r = Request::new(m);
    r.metadata_mut()
        .insert("containerd-namespace", namespace.parse().unwrap());
    r
}

/// Bare containerd: busybox containers made with the same calls the agent
/// makes (container, snapshot, task, start), for baselines.
pub struct Raw {
    channel: Channel,
    namespace: String,
    /// The busybox image's top layer: the only committed snapshot.
    parent: String,
    spec: oci_spec::runtime::Spec,
    /// cgroup parent of the raw containers, removed by [`Raw::clean`].
    cgroup: String,
}

impl Raw {
    /// Connects to the containerd at `sock`, whose namespace already holds
    /// the unpacked busybox image; containers run `args`.
    pub async fn connect(sock: &Path, namespace: &str, args: &[&str], cgroup: &str) -> Raw {
        let channel = containerd_client::connect(sock).await.expect("connect");
        let client = containerd_client::Client::from(channel.clone());
        let mut s = client
            .snapshots()
            .list(req(
                namespace,
                ListSnapshotsRequest {
                    snapshotter: "overlayfs".into(),
                    filters: vec![],
                },
            ))
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
        let mut spec = oci_spec::runtime::Spec::default();
        spec.set_hostname(Some("raw".into()));
        let mut root = spec.root().clone().unwrap();
        root.set_readonly(Some(false));
        spec.set_root(Some(root));
        let mut process = spec.process().clone().unwrap();
        process.set_args(Some(args.iter().map(ToString::to_string).collect()));
        spec.set_process(Some(process));
        Raw {
            channel,
            namespace: namespace.to_string(),
            parent,
            spec,
            cgroup: cgroup.to_string(),
        }
    }

    fn client(&self) -> containerd_client::Client {
        containerd_client::Client::from(self.channel.clone())
    }

    /// Creates and starts container `id`. The container comes first, as the
    /// agent does it: it references the snapshot before the garbage
    /// collector could see it unreferenced.
    pub async fn create_start(&self, id: &str) {
        let client = self.client();
        let ns = self.namespace.as_str();
        let mut spec = self.spec.clone();
        let mut linux = spec.linux().clone().unwrap();
        linux.set_cgroups_path(Some(format!("/{}/{id}", self.cgroup).into()));
        spec.set_linux(Some(linux));
        client
            .containers()
            .create(req(
                ns,
                CreateContainerRequest {
                    container: Some(Container {
                        id: id.to_string(),
                        image: "docker.io/library/busybox:latest".into(),
                        runtime: Some(Runtime {
                            name: "io.containerd.runc.v2".into(),
                            options: None,
                        }),
                        spec: Some(prost_types::Any {
                            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec"
                                .into(),
                            value: serde_json::to_vec(&spec).unwrap(),
                        }),
                        snapshotter: "overlayfs".into(),
                        snapshot_key: id.to_string(),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .unwrap();
        let mounts = client
            .snapshots()
            .prepare(req(
                ns,
                PrepareSnapshotRequest {
                    snapshotter: "overlayfs".into(),
                    key: id.to_string(),
                    parent: self.parent.clone(),
                    labels: HashMap::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .mounts;
        client
            .tasks()
            .create(req(
                ns,
                CreateTaskRequest {
                    container_id: id.to_string(),
                    rootfs: mounts,
                    ..Default::default()
                },
            ))
            .await
            .unwrap();
        client
            .tasks()
            .start(req(
                ns,
                StartRequest {
                    container_id: id.to_string(),
                    exec_id: String::new(),
                },
            ))
            .await
            .unwrap();
    }

    /// Kills and removes container `id` with its task and snapshot.
    pub async fn remove(&self, id: &str) {
        let client = self.client();
        let ns = self.namespace.as_str();
        let container_id = id.to_string();
        let _ = client
            .tasks()
            .kill(req(
                ns,
                KillRequest {
                    container_id: container_id.clone(),
                    exec_id: String::new(),
                    signal: 9,
                    all: true,
                },
            ))
            .await;
        let _ = client
            .tasks()
            .wait(req(
                ns,
                WaitRequest {
                    container_id: container_id.clone(),
                    exec_id: String::new(),
                },
            ))
            .await;
        let _ = client
            .tasks()
            .delete(req(
                ns,
                DeleteTaskRequest {
                    container_id: container_id.clone(),
                },
            ))
            .await;
        let _ = client
            .containers()
            .delete(req(ns, DeleteContainerRequest { id: container_id }))
            .await;
        let _ = client
            .snapshots()
            .remove(req(
                ns,
                RemoveSnapshotRequest {
                    snapshotter: "overlayfs".into(),
                    key: id.to_string(),
                },
            ))
            .await;
    }

    /// Removes the cgroups runc left for the raw containers.
    pub fn clean(&self) {
        for h in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let d = h.path().join(&self.cgroup);
            if d.is_dir() {
                for c in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    let _ = std::fs::remove_dir(c.path());
                }
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

/// podman, when installed, as the peer baseline: its own configuration
/// (the ulimits these machines need) and the test busybox image loaded;
/// the image is removed again on drop.
pub struct Podman {
    conf: std::path::PathBuf,
}

/// The test image under the name podman gives a loaded archive.
pub const PODMAN_IMAGE: &str = "docker.io/library/busybox:latest";

impl Podman {
    /// `None` when podman is not installed or cannot load the image.
    pub fn new(dir: &Path, archive: impl AsRef<Path>) -> Option<Podman> {
        std::process::Command::new("podman")
            .arg("--version")
            .output()
            .ok()?;
        let conf = dir.join("containers.conf");
        std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n",
        )
        .ok()?;
        let p = Podman { conf };
        let load = p.run(&["load", "-i", archive.as_ref().to_str()?]);
        if !load.status.success() {
            eprintln!(
                "podman load failed: {}",
                String::from_utf8_lossy(&load.stderr)
            );
            return None;
        }
        Some(p)
    }

    pub fn run(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("podman")
            .env("CONTAINERS_CONF", &self.conf)
            .args(args)
            .output()
            .expect("running podman")
    }

    /// A manifest of ours rewritten for podman: the image by the name it
    /// loaded, never pulled.
    pub fn manifest(text: &str) -> String {
        text.replace(
            "image: busybox",
            &format!("image: {PODMAN_IMAGE}\n    imagePullPolicy: Never"),
        )
    }

    /// `podman kube play FILE`, timed; `None` (and podman's message) on
    /// failure.
    pub fn play(&self, file: &Path) -> Option<std::time::Duration> {
        let t0 = std::time::Instant::now();
        let r = self.run(&["kube", "play", file.to_str()?]);
        let took = t0.elapsed();
        if !r.status.success() {
            eprintln!(
                "podman kube play failed: {}",
                String::from_utf8_lossy(&r.stderr)
            );
            let _ = self.run(&["kube", "play", "--down", file.to_str()?]);
            return None;
        }
        Some(took)
    }

    pub fn down(&self, file: &Path) {
        if let Some(f) = file.to_str() {
            let _ = self.run(&["kube", "play", "--down", f]);
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rmi", "-f", PODMAN_IMAGE]);
    }
}

/// The command of the scale and memory benches' containers: it sleeps and
/// exits at once on SIGTERM.
pub const SHELL: &str = "trap 'exit 0' TERM; while :; do sleep 1 & wait; done";

/// A pod of the scale and memory benches. Two containers requesting 5m CPU
/// each: 110 pods (the kubelet's maxPods) fit the allocatable CPU of a
/// 2-core machine (with 10m, the pods past 100 would be refused with
/// `OutOfcpu`, as the kubelet refuses them).
pub fn pod(name: &str) -> String {
    let c = |n: &str| {
        format!(
            "  - name: {n}\n    image: busybox\n    command: [sh, -c, \"{SHELL}\"]\n    resources:\n      requests: {{cpu: 5m, memory: 8Mi}}\n      limits: {{cpu: 100m, memory: 32Mi}}\n"
        )
    };
    crate::common::pod_yaml(
        name,
        &format!(
            "  terminationGracePeriodSeconds: 10\n  containers:\n{}{}",
            c("a"),
            c("b")
        ),
    )
}

/// The pods reported Running with all their containers running.
pub fn running_count(env: &crate::common::Env) -> usize {
    env.pods()
        .iter()
        .filter(|p| {
            p["status"]["phase"] == "Running"
                && p["status"]["containerStatuses"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().all(|c| c["state"]["running"].is_object()))
        })
        .count()
}

/// Writes the manifests of `n` pods named `{tag}0`, `{tag}1`, ...
pub fn write_all(env: &crate::common::Env, n: usize, tag: &str) {
    for i in 0..n {
        env.write_manifest(&format!("{tag}{i}.yaml"), &pod(&format!("{tag}{i}")));
    }
}

/// Removes the manifests `write_all` wrote.
pub fn remove_all(env: &crate::common::Env, n: usize, tag: &str) {
    for i in 0..n {
        env.remove_manifest(&format!("{tag}{i}.yaml"));
    }
}

/// The agent's own CNI plugin invoker on `net`'s configuration, for a raw
/// baseline; it keeps its results under `pods_dir`.
pub fn raw_network(
    net: &crate::common::net::Net,
    pods_dir: &Path,
) -> kubelet_lite::network::Network {
    kubelet_lite::network::Network::new(kubelet_lite::network::NetworkConfig {
        conf_dir: net.conf_dir.clone(),
        bin_dirs: vec![crate::common::net::PLUGINS.into()],
        pod_cidr: net.subnet.clone(),
        timeout: std::time::Duration::from_secs(120),
        pods_dir: pods_dir.to_path_buf(),
    })
}

/// One CNI ADD of raw pod `uid` (its directory under the network's
/// `pods_dir` made first) into the network namespace at `netns`.
pub fn raw_attach(
    network: &kubelet_lite::network::Network,
    pods_dir: &Path,
    uid: &str,
    netns: &Path,
) {
    std::fs::create_dir_all(pods_dir.join(uid)).unwrap();
    network
        .attach(&kubelet_lite::network::PodRef {
            uid,
            namespace: "default",
            name: uid,
            netns,
            port_mappings: &[],
        })
        .expect("CNI ADD");
}

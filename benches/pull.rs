//! Registry pull time of a multi-layer image from a local registry
//! (Debian's docker-registry on loopback, plain HTTP), cold each time:
//! the agent's pull (kubelet_lite's containerd runtime: fetch, verify,
//! unpack, image record) against `ctr images pull` (which also unpacks)
//! and `podman pull` (when installed), in turns, in the same run.
//! Between pulls every image is removed and containerd's garbage
//! collector run (`images rm --sync`), so no blob or snapshot is reused.
//!
//! Run with `cargo bench --bench pull` (as root). `BENCH_ROUNDS` (default
//! 7), `BENCH_LAYERS` (default 5) and `BENCH_LAYER_MIB` (default 8).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Env;
use common::registry::Registry;
use kubelet_lite::runtime::Runtime;
use kubelet_lite::runtime::containerd::{Containerd, ContainerdOptions};
use kubelet_lite::runtime::registry::{HostConfig, RegistryOptions};
use sha2::Digest;
use support::{env_number, percentile};

/// An OCI layout in `dir` with `layers` uncompressed layers of `mib` MiB
/// each (pseudo-random bytes, so compression does not shrink them).
fn build_layout(dir: &Path, layers: usize, mib: usize) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> (String, usize) {
        let d = hex::encode(sha2::Sha256::digest(data));
        std::fs::write(blobs.join(&d), data).unwrap();
        (format!("sha256:{d}"), data.len())
    };
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for i in 0..layers {
        let mut content = vec![0u8; mib << 20];
        for chunk in content.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
        }
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, format!("data/layer{i}.bin"), content.as_slice())
            .unwrap();
        let bytes = tar.into_inner().unwrap();
        let (d, size) = put(&bytes);
        diff_ids.push(d.clone());
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": size}));
    }
    let config = serde_json::json!({
        "architecture": match std::env::consts::ARCH { "aarch64" => "arm64", _ => "amd64" },
        "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
    .to_string();
    let (cd, cs) = put(config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": descs,
    })
    .to_string();
    let (md, ms) = put(manifest.as_bytes());
    std::fs::write(
        dir.join("index.json"),
        serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms}]})
        .to_string(),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

fn run(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn main() {
    let rounds = env_number("BENCH_ROUNDS", 7);
    let layers = env_number("BENCH_LAYERS", 5);
    let mib = env_number("BENCH_LAYER_MIB", 8);
    let env = Env::new("pullbench");
    let reg = Registry::start(&env.dir, None);
    let layout = env.dir.join("layout");
    build_layout(&layout, layers, mib);
    let image = format!("{}/bench/multi:1", reg.host());
    reg.push_from(&format!("oci:{}", layout.display()), "bench/multi:1", None);
    let sock = env.dir.join("containerd.sock");
    let empty = env.dir.join("no-archives");
    std::fs::create_dir_all(&empty).unwrap();
    let ctr = |ns: &str, args: &[&str]| {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&sock)
            .args(["--namespace", ns])
            .args(args);
        run(&mut c)
    };
    let podman = Command::new("podman").arg("--version").output().is_ok();
    let clean = || {
        ctr("kubelet-lite", &["images", "rm", "--sync", &image]);
        ctr("bench-ctr", &["images", "rm", "--sync", &image]);
        if podman {
            run(Command::new("podman").args(["rmi", "-f", &image]));
        }
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let rt = tokio.block_on(async {
        Containerd::connect(ContainerdOptions {
            address: sock.clone(),
            namespace: "kubelet-lite".into(),
            snapshotter: "overlayfs".into(),
            runtime: "io.containerd.runc.v2".into(),
            images_dir: empty.clone(),
            logger: "/bin/true".into(),
            log_rotation: None,
            systemd_cgroup: false,
            exec_dir: empty.join("exec"),
            call_timeout: Duration::from_secs(120),
            registries: RegistryOptions {
                hosts: [(
                    reg.host(),
                    HostConfig {
                        plain_http: true,
                        ..Default::default()
                    },
                )]
                .into_iter()
                .collect(),
                credentials_file: env.dir.join("none.json"),
                ..Default::default()
            },
        })
        .await
        .expect("connecting to containerd")
    });
    let (mut ours, mut theirs, mut pod) = (vec![], vec![], vec![]);
    clean();
    for _ in 0..rounds {
        let t = Instant::now();
        let name = kubelet_lite::runtime::image_ref::normalize(&image).unwrap();
        tokio
            .block_on(rt.pull_image(&name))
            .expect("kubelet-lite pull");
        ours.push(t.elapsed().as_secs_f64());
        clean();
        let t = Instant::now();
        assert!(
            ctr("bench-ctr", &["images", "pull", "--plain-http", &image]),
            "ctr images pull failed"
        );
        theirs.push(t.elapsed().as_secs_f64());
        clean();
        if podman {
            let t = Instant::now();
            if run(Command::new("podman").args(["pull", "-q", "--tls-verify=false", &image])) {
                pod.push(t.elapsed().as_secs_f64());
            }
            clean();
        }
    }
    let mut out = std::io::stdout();
    let total = layers * mib;
    writeln!(
        out,
        "pull of {layers} layers x {mib} MiB ({total} MiB), {rounds} rounds, cold each time"
    )
    .unwrap();
    for (what, v) in [
        ("kubelet-lite", &mut ours),
        ("ctr images pull", &mut theirs),
        ("podman pull", &mut pod),
    ] {
        if v.is_empty() {
            continue;
        }
        writeln!(
            out,
            "{what:>16}: p50 {:.3} s, min {:.3} s, max {:.3} s",
            percentile(v, 0.5),
            percentile(v, 0.0),
            percentile(v, 1.0)
        )
        .unwrap();
    }
    drop(reg);
}

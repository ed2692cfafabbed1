//! Pulls from real registries: Debian's `docker-registry` (distribution
//! 2.8) on loopback ports, seeded with `skopeo` from the busybox OCI
//! archive, against the agent and a private containerd.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::registry::Registry;
use common::{Env, free_port};

fn sleeper(image: &str, policy: &str) -> String {
    let policy = if policy.is_empty() {
        String::new()
    } else {
        format!("    imagePullPolicy: {policy}\n")
    };
    format!(
        "  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: {image}\n{policy}    command: [sleep, '3600']\n"
    )
}

fn events(pod: &serde_json::Value) -> Vec<(String, String)> {
    pod["status"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or_default().to_string(),
                e["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn waiting(pod: &serde_json::Value) -> (String, String) {
    let w = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
    (
        w["reason"].as_str().unwrap_or_default().to_string(),
        w["message"].as_str().unwrap_or_default().to_string(),
    )
}

/// The config of the tests that pull from `host` over plain HTTP.
fn plain_http(host: &str) -> String {
    format!(
        "crashLoopBackOff:\n  initial: 1s\n  max: 4s\nregistries:\n  '{host}':\n    plainHTTP: true\n"
    )
}

/// Waits until `pod`'s container waits in `ImagePullBackOff`.
fn wait_back_off(env: &Env, pod: &str) -> serde_json::Value {
    env.wait_for("ImagePullBackOff", Duration::from_secs(30), || {
        let p = env.pod(pod)?;
        (waiting(&p).0 == "ImagePullBackOff").then_some(p)
    })
}

/// Waits until `pod`'s pull has failed with an event whose message holds
/// `text`.
fn pull_failed(env: &Env, pod: &str, text: &str, timeout: Duration) -> serde_json::Value {
    env.wait_for(&format!("{pod}: {text}"), timeout, || {
        let p = env.pod(pod)?;
        let (r, _) = waiting(&p);
        ((r == "ErrImagePull" || r == "ImagePullBackOff")
            && events(&p)
                .iter()
                .any(|(r, m)| r == "Failed" && m.contains(text)))
        .then_some(p)
    })
}

/// Removes `big.yaml` and waits until its pod is gone (the one other pod
/// stays) and no lease of the agent's is left.
fn remove_big_pod(env: &Env) {
    env.remove_manifest("big.yaml");
    env.wait_for("big pod gone", Duration::from_secs(30), || {
        (env.pods().len() == 1).then_some(())
    });
    env.wait_for("no lease left", Duration::from_secs(10), || {
        let leases = env.ctr(&["leases", "ls", "-q"]);
        (!leases.contains("kubelet-lite-")).then_some(())
    });
}

/// An environment whose images directory is empty (so that only the
/// registry provides images), with `extra` config.
fn env_without_archives(tag: &str, extra: &str) -> Env {
    let env = Env::new(tag);
    std::fs::remove_file(env.dir.join("images/busybox.tar")).unwrap();
    env.write_config(&format!(
        "crashLoopBackOff:\n  initial: 1s\n  max: 4s\n{extra}"
    ));
    env
}

#[test]
fn pulls_by_tag_and_digest_with_the_kubelets_policies_and_events() {
    let mut env = Env::new("pull");
    let mut reg = Registry::start(&env.dir, None);
    let host = reg.host();
    let digest = reg.push("test/busybox:1", None);
    reg.push("test/shared:1", None);
    reg.push("test/again:1", None);
    std::fs::remove_file(env.dir.join("images/busybox.tar")).unwrap();
    env.write_config(&plain_http(&host));
    env.start_agent();
    env.write_pod("tag", &sleeper(&format!("{host}/test/busybox:1"), ""));
    env.write_pod(
        "digest",
        &sleeper(&format!("{host}/test/busybox@{digest}"), ""),
    );
    // Two pods of one image at once: one transfer.
    for name in ["share-a", "share-b"] {
        env.write_pod(name, &sleeper(&format!("{host}/test/shared:1"), ""));
    }
    env.write_pod("missing", &sleeper(&format!("{host}/test/missing:1"), ""));
    env.write_pod("never", &sleeper(&format!("{host}/test/again:1"), "Never"));
    let tag = env.wait_running("tag-node1");
    env.wait_running("digest-node1");
    env.wait_running("share-a-node1");
    env.wait_running("share-b-node1");
    let ev = events(&tag);
    let image = format!("{host}/test/busybox:1");
    assert!(
        ev.contains(&("Pulling".into(), format!("Pulling image {image:?}"))),
        "{ev:?}"
    );
    let pulled = ev
        .iter()
        .find(|(r, m)| r == "Pulled" && m.starts_with("Successfully pulled image"))
        .unwrap_or_else(|| panic!("{ev:?}"));
    // The busybox archive's manifest, config and (compressed) layer.
    let size: u64 = pulled
        .1
        .split("Image size: ")
        .nth(1)
        .and_then(|s| s.strip_suffix(" bytes."))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{pulled:?}"));
    assert!(size > 100_000, "{pulled:?}");
    assert!(pulled.1.contains(" including waiting). "), "{pulled:?}");
    // Image records were made for both references; the shared one pulled once.
    let images = env.ctr(&["images", "ls", "-q"]);
    assert!(images.contains(&image), "{images}");
    assert!(
        images.contains(&format!("{host}/test/busybox@{digest}")),
        "{images}"
    );
    let log = env.agent_output();
    let transfers = log
        .lines()
        .filter(|l| l.contains("containerd: pulled image") && l.contains("test/shared:1"))
        .count();
    assert_eq!(transfers, 1, "{log}");
    // The registry's own words, then the kubelet's backoff.
    let pod = wait_back_off(&env, "missing-node1");
    assert_eq!(
        waiting(&pod).1,
        format!("Back-off pulling image \"{host}/test/missing:1\"")
    );
    let ev = events(&pod);
    assert!(
        ev.iter()
            .any(|(r, m)| r == "Failed" && m.contains("manifest unknown")),
        "{ev:?}"
    );
    // Never: not on the node, so not pulled.
    let never = env.wait_for("ErrImageNeverPull", Duration::from_secs(20), || {
        let p = env.pod("never-node1")?;
        (waiting(&p).0 == "ErrImageNeverPull").then_some(p)
    });
    assert!(waiting(&never).1.contains("pull policy of Never"));
    assert!(!env.ctr(&["images", "ls", "-q"]).contains("test/again:1"));

    // With the registry gone: IfNotPresent uses the image on the node;
    // Always must pull, and fails, as the kubelet's does offline.
    reg.stop();
    env.write_pod("present", &sleeper(&image, "IfNotPresent"));
    env.write_pod("always", &sleeper(&image, "Always"));
    let present = env.wait_running("present-node1");
    assert!(
        events(&present)
            .iter()
            .any(|(r, m)| r == "Pulled" && m.contains("already present on machine")),
        "{present}"
    );
    let always = env.wait_for("Always fails offline", Duration::from_secs(30), || {
        let p = env.pod("always-node1")?;
        let (r, _) = waiting(&p);
        (r == "ErrImagePull" || r == "ImagePullBackOff").then_some(p)
    });
    assert!(
        events(&always)
            .iter()
            .any(|(r, m)| r == "Failed" && m.contains("cannot connect")),
        "{always}"
    );
    assert!(env.agent_is_alive());
}

#[test]
fn mirrors_come_first_then_the_registry() {
    let upstream = {
        let dir = PathBuf::from(format!("/tmp/kl-reg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    };
    let up = Registry::start(&upstream, None);
    let mirror = Registry::start(&upstream, None);
    up.push("test/upstream-only:1", None);
    mirror.push("test/mirror-only:1", None);
    mirror.push("library/busybox:mirrored", None);
    let dead = free_port();
    let mut env = env_without_archives(
        "mirror",
        &format!(
            "registries:\n  '{up}':\n    plainHTTP: true\n    mirrors: ['http://127.0.0.1:{dead}', 'http://{m}']\n  docker.io:\n    mirrors: ['http://{m}']\n",
            up = up.host(),
            m = mirror.host()
        ),
    );
    env.start_agent();
    let from_mirror = format!("{}/test/mirror-only:1", up.host());
    let from_upstream = format!("{}/test/upstream-only:1", up.host());
    env.write_pod("m", &sleeper(&from_mirror, ""));
    env.write_pod("u", &sleeper(&from_upstream, ""));
    // A Docker Hub name, as manifests copied from elsewhere have it.
    env.write_pod("hub", &sleeper("busybox:mirrored", ""));
    env.wait_running("m-node1");
    env.wait_running("u-node1");
    env.wait_running("hub-node1");
    let log = env.agent_output();
    let pulled_from = |image: &str| {
        log.lines()
            .find(|l| l.contains("containerd: pulled image") && l.contains(image))
            .unwrap_or_else(|| panic!("no pull of {image} in\n{log}"))
            .to_string()
    };
    assert!(pulled_from(&from_mirror).contains(&mirror.host()));
    assert!(pulled_from(&from_upstream).contains(&format!("from={}", up.host())));
    assert!(pulled_from("docker.io/library/busybox:mirrored").contains(&mirror.host()));
    assert!(
        env.ctr(&["images", "ls", "-q"])
            .contains("docker.io/library/busybox:mirrored")
    );
    drop(up);
    drop(mirror);
    let _ = std::fs::remove_dir_all(&upstream);
}

#[test]
fn credentials_come_from_a_docker_config_json() {
    let mut env = Env::new("auth");
    let reg = Registry::start(&env.dir, Some(("puller", "Pa55-w0rd")));
    reg.push("private/busybox:1", Some("puller:Pa55-w0rd"));
    std::fs::remove_file(env.dir.join("images/busybox.tar")).unwrap();
    let creds = env.dir.join("config.json");
    env.write_config(&format!(
        "crashLoopBackOff:\n  initial: 1s\n  max: 2s\nimageCredentialsFile: {}\nregistries:\n  '{}':\n    plainHTTP: true\n",
        creds.display(),
        reg.host()
    ));
    env.start_agent();
    let image = format!("{}/private/busybox:1", reg.host());
    env.write_pod("p", &sleeper(&image, ""));
    // No credentials yet: the registry's refusal is the pod's reason.
    let pod = env.wait_for("unauthorized", Duration::from_secs(30), || {
        let p = env.pod("p-node1")?;
        events(&p)
            .iter()
            .any(|(r, m)| r == "Failed" && m.contains("unauthorized"))
            .then_some(p)
    });
    assert!(
        ["ErrImagePull", "ImagePullBackOff"].contains(&waiting(&pod).0.as_str()),
        "{pod}"
    );
    // The kubelet's config.json format; read at each pull.
    use std::io::Write;
    let auth = base64_encode(b"puller:Pa55-w0rd");
    let mut f = std::fs::File::create(&creds).unwrap();
    write!(f, r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.host()).unwrap();
    drop(f);
    env.wait_running("p-node1");
    let log = env.agent_output();
    assert!(
        !log.contains("Pa55-w0rd") && !log.contains(&auth),
        "a secret in the log"
    );
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The largest blob a registry stores (the busybox layer).
fn largest_blob(reg_dir: &Path) -> PathBuf {
    let mut best: Option<(u64, PathBuf)> = None;
    let mut stack = vec![reg_dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "data")
                && best.as_ref().is_none_or(|(s, _)| m.len() > *s)
            {
                best = Some((m.len(), p));
            }
        }
    }
    best.expect("a blob").1
}

#[test]
fn bad_registries_fail_cleanly_and_block_nothing_else() {
    let mut env = Env::new("badreg");
    let reg = Registry::start(&env.dir, None);
    let host = reg.host();
    reg.push("test/corrupt:1", None);
    reg.push("test/artifact:1", None);
    // A manifest whose config is not an image config (an artifact), over
    // the busybox blobs the repository already has.
    let real = Command::new("curl")
        .args([
            "-sf",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
        ])
        .arg(format!("http://{host}/v2/test/artifact/manifests/1"))
        .output()
        .unwrap();
    assert!(real.status.success());
    let mut m: serde_json::Value = serde_json::from_slice(&real.stdout).unwrap();
    m["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json".into();
    let put = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &m.to_string(),
        ])
        .arg(format!("http://{host}/v2/test/artifact/manifests/helm"))
        .output()
        .unwrap();
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    // Corrupt the layer in the registry's storage, keeping its size.
    let layer = largest_blob(&env.dir.join(format!("registry-{}", reg.port)));
    let mut data = std::fs::read(&layer).unwrap();
    let mid = data.len() / 2;
    for b in &mut data[mid..mid + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&layer, data).unwrap();
    // A registry that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_host = silent.local_addr().unwrap().to_string();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = std::sync::Arc::clone(&held);
    std::thread::spawn(move || {
        for s in silent.incoming().flatten() {
            keep.lock().unwrap().push(s);
        }
    });
    env.write_config(&format!(
        "crashLoopBackOff:\n  initial: 1s\n  max: 4s\nimagePullStallTimeout: 3s\nregistries:\n  '{host}':\n    plainHTTP: true\n  '{silent_host}':\n    plainHTTP: true\n"
    ));
    env.start_agent();
    env.write_pod("stall", &sleeper(&format!("{silent_host}/test/x:1"), ""));
    env.write_pod("corrupt", &sleeper(&format!("{host}/test/corrupt:1"), ""));
    env.write_pod("helm", &sleeper(&format!("{host}/test/artifact:helm"), ""));
    // While the silent registry holds its pull, other pods start and the
    // endpoint answers.
    let mut health = common::Healthz::default();
    env.write_pod("local", &sleeper("busybox", ""));
    env.wait_running("local-node1");
    for _ in 0..10 {
        health.sample(&env);
        std::thread::sleep(Duration::from_millis(50));
    }
    health.assert_quick();
    let failed = |pod: &str, text: &str| pull_failed(&env, pod, text, Duration::from_secs(40));
    failed("corrupt-node1", "Invalid digest");
    failed("helm-node1", "unsupported config media type");
    failed("stall-node1", "timed out");
    // No image record of a failed pull, and no lease left behind.
    let images = env.ctr(&["images", "ls", "-q"]);
    assert!(
        !images.contains("test/corrupt") && !images.contains("test/artifact"),
        "{images}"
    );
    // Once the failing pods are gone, no pull holds a lease.
    for name in ["stall", "corrupt", "helm"] {
        env.remove_manifest(&format!("{name}.yaml"));
    }
    env.wait_for("failing pods gone", Duration::from_secs(30), || {
        let pods = env.pods();
        (pods.len() == 1).then_some(())
    });
    env.wait_for("no lease left", Duration::from_secs(10), || {
        let leases = env.ctr(&["leases", "ls", "-q"]);
        (!leases.contains("kubelet-lite-")).then_some(())
    });
    assert!(env.agent_is_alive());
    drop(held);
}

/// Uploads `data` as a blob of `repo` with plain HTTP (monolithic upload);
/// returns its digest.
fn put_blob(host: &str, repo: &str, data: &[u8]) -> String {
    use sha2::Digest;
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)));
    let out = Command::new("curl")
        .args(["-sfi", "-X", "POST"])
        .arg(format!("http://{host}/v2/{repo}/blobs/uploads/"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let head = String::from_utf8_lossy(&out.stdout).to_string();
    let location = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("Location: ")
                .or_else(|| l.strip_prefix("location: "))
        })
        .unwrap_or_else(|| panic!("no Location in {head}"))
        .trim()
        .to_string();
    let url = if location.starts_with("http") {
        location
    } else {
        format!("http://{host}{location}")
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let file = std::env::temp_dir().join(format!("kl-blob-{}", &digest[7..19]));
    std::fs::write(&file, data).unwrap();
    let out = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("{url}{sep}digest={digest}"))
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    digest
}

/// PUTs a manifest or index under `reference`; returns its digest.
fn put_manifest(host: &str, repo: &str, reference: &str, media_type: &str, body: &str) -> String {
    use sha2::Digest;
    let out = Command::new("curl")
        .args(["-sf", "-X", "PUT", "-H"])
        .arg(format!("Content-Type: {media_type}"))
        .args(["--data-binary", body])
        .arg(format!("http://{host}/v2/{repo}/manifests/{reference}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(body.as_bytes()))
    )
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[test]
fn a_multi_platform_index_gives_this_machines_image() {
    let mut env = env_without_archives("index", "");
    let reg = Registry::start(&env.dir, None);
    let host = reg.host();
    let ours = reg.push("test/multi:native", None);
    // Another platform's image: the same layer under a config of its own.
    let oci_manifest = "application/vnd.oci.image.manifest.v1+json";
    let raw = Command::new("curl")
        .args(["-sf", "-H", &format!("Accept: {oci_manifest}")])
        .arg(format!("http://{host}/v2/test/multi/manifests/native"))
        .output()
        .unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let foreign_arch = if go_arch() == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    let config = format!(
        r#"{{"architecture":"{foreign_arch}","os":"linux","config":{{"Cmd":["sh"]}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
    );
    let foreign_config = put_blob(&host, "test/multi", config.as_bytes());
    m["config"]["digest"] = foreign_config.clone().into();
    m["config"]["size"] = config.len().into();
    let foreign = put_manifest(&host, "test/multi", "foreign", oci_manifest, &m.to_string());
    let size = |d: &str| {
        let out = Command::new("curl")
            .args(["-sfI", "-H", &format!("Accept: {oci_manifest}")])
            .arg(format!("http://{host}/v2/test/multi/manifests/{d}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|v| v.trim().parse::<u64>().unwrap())
            })
            .unwrap()
    };
    // The foreign platform first: the choice must be made, not taken.
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": oci_manifest, "digest": foreign, "size": size(&foreign),
             "platform": {"os": "linux", "architecture": foreign_arch}},
            {"mediaType": oci_manifest, "digest": ours, "size": size(&ours),
             "platform": {"os": "linux", "architecture": go_arch()}},
        ]
    });
    put_manifest(
        &host,
        "test/multi",
        "1",
        "application/vnd.oci.image.index.v1+json",
        &index.to_string(),
    );
    env.write_config(&plain_http(&host));
    env.start_agent();
    env.write_pod("multi", &sleeper(&format!("{host}/test/multi:1"), ""));
    env.wait_running("multi-node1");
    let content = env.ctr(&["content", "ls", "-q"]);
    assert!(content.contains(&ours), "{content}");
    assert!(!content.contains(&foreign), "{content}");
    assert!(!content.contains(&foreign_config), "{content}");
}

/// A front for a registry that asks for bearer tokens, as Docker Hub does:
/// a request without `Authorization: Bearer <token>` gets a 401 challenge
/// naming this front's `/token` as the realm, which hands out the token for
/// the right basic credentials. Authorised requests go to `backend` (one
/// request per connection).
struct TokenFront {
    port: u16,
    token_requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

const TOKEN: &str = "t0ken-for-tests";

impl TokenFront {
    fn start(backend: u16, basic: String) -> TokenFront {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let token_requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = std::sync::Arc::clone(&token_requests);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let basic = basic.clone();
                let count = std::sync::Arc::clone(&count);
                std::thread::spawn(move || {
                    let _ = Self::serve(conn, backend, port, &basic, &count);
                });
            }
        });
        TokenFront {
            port,
            token_requests,
        }
    }

    fn serve(
        mut conn: std::net::TcpStream,
        backend: u16,
        port: u16,
        basic: &str,
        count: &std::sync::atomic::AtomicUsize,
    ) -> std::io::Result<()> {
        use std::io::{Read, Write};
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if conn.read(&mut byte)? == 0 {
                return Ok(());
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let auth = headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        let path = request_line.split(' ').nth(1).unwrap_or_default();
        let reply = |conn: &mut std::net::TcpStream, status: &str, extra: &str, body: &str| {
            write!(
                conn,
                "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        };
        if path.starts_with("/token") {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if auth == format!("Basic {basic}") {
                return reply(
                    &mut conn,
                    "200 OK",
                    "",
                    &format!(r#"{{"token":"{TOKEN}"}}"#),
                );
            }
            return reply(
                &mut conn,
                "401 Unauthorized",
                "",
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#,
            );
        }
        if auth != format!("Bearer {TOKEN}") {
            let challenge = format!(
                "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"test\"\r\n"
            );
            return reply(
                &mut conn,
                "401 Unauthorized",
                &challenge,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            );
        }
        let mut up = std::net::TcpStream::connect(("127.0.0.1", backend))?;
        write!(
            up,
            "{request_line}\r\nHost: 127.0.0.1:{backend}\r\nConnection: close\r\n"
        )?;
        for (k, v) in &headers {
            if !["host", "connection", "authorization"].contains(&k.as_str()) {
                write!(up, "{k}: {v}\r\n")?;
            }
        }
        write!(up, "\r\n")?;
        std::io::copy(&mut up, &mut conn)?;
        Ok(())
    }
}

#[test]
fn a_bearer_token_challenge_is_answered_with_config_json_credentials() {
    let mut env = env_without_archives("bearer", "");
    let reg = Registry::start(&env.dir, None);
    reg.push("private/busybox:1", None);
    let basic = base64_encode(b"robot:t0k3n-pass");
    let front = TokenFront::start(reg.port, basic.clone());
    let host = format!("127.0.0.1:{}", front.port);
    let creds = env.dir.join("config.json");
    std::fs::write(
        &creds,
        format!(r#"{{"auths":{{"{host}":{{"username":"robot","password":"t0k3n-pass"}}}}}}"#),
    )
    .unwrap();
    env.write_config(&format!(
        "crashLoopBackOff:\n  initial: 1s\n  max: 4s\nimageCredentialsFile: {}\nregistries:\n  '{host}':\n    plainHTTP: true\n",
        creds.display()
    ));
    env.start_agent();
    env.write_pod("b", &sleeper(&format!("{host}/private/busybox:1"), ""));
    env.wait_running("b-node1");
    assert!(
        front
            .token_requests
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    );
    let log = env.agent_output();
    assert!(
        !log.contains("t0k3n-pass") && !log.contains(&basic) && !log.contains(TOKEN),
        "a secret in the log"
    );
}

#[test]
fn unused_images_are_collected_when_the_disk_is_over_the_threshold() {
    let mut env = env_without_archives("gc", "");
    let reg = Registry::start(&env.dir, None);
    let host = reg.host();
    reg.push("test/keep:1", None);
    reg.push("test/drop:1", None);
    // Any disk is over 1 %: the collector removes whatever it may.
    env.write_config(&format!(
        "crashLoopBackOff:\n  initial: 1s\n  max: 4s\nimageGCHighThresholdPercent: 1\nimageGCLowThresholdPercent: 0\nimageMinimumGCAge: 3s\nimageGCPeriod: 1s\nregistries:\n  '{host}':\n    plainHTTP: true\n"
    ));
    env.start_agent();
    let keep = format!("{host}/test/keep:1");
    let dropped = format!("{host}/test/drop:1");
    env.write_pod("keep", &sleeper(&keep, ""));
    env.write_pod("drop", &sleeper(&dropped, ""));
    env.wait_running("keep-node1");
    env.wait_running("drop-node1");
    env.remove_manifest("drop.yaml");
    env.wait_for("drop's image collected", Duration::from_secs(30), || {
        (!env.ctr(&["images", "ls", "-q"]).contains(&dropped)).then_some(())
    });
    // The image in use stays, several collections later.
    std::thread::sleep(Duration::from_secs(5));
    assert!(env.ctr(&["images", "ls", "-q"]).contains(&keep));
    env.wait_running("keep-node1");
    assert!(
        env.agent_output()
            .lines()
            .any(|l| l.contains("removing unused image") && l.contains("test/drop:1"))
    );
}

/// Whether `image`'s pull succeeded for the pod, by its events.
fn pulled(pod: &serde_json::Value, image: &str) -> bool {
    events(pod).iter().any(|(r, m)| {
        r == "Pulled"
            && m.starts_with("Successfully pulled image")
            && m.contains(&format!("{image:?}"))
    })
}

/// Every container of the pod is past the image stage: running, exited, or
/// waiting for something other than its image.
fn past_the_image_stage(pod: &serde_json::Value) -> bool {
    let statuses = pod["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    !statuses.is_empty()
        && statuses.iter().all(|s| {
            let w = s["state"]["waiting"]["reason"].as_str();
            s["state"]["running"].is_object()
                || s["state"]["terminated"].is_object()
                || s["lastState"]["terminated"].is_object()
                || w.is_some_and(|r| {
                    !["ErrImagePull", "ImagePullBackOff", "ContainerCreating", ""].contains(&r)
                })
        })
}

#[test]
fn the_notes_manifests_pull_their_images_through_a_docker_io_mirror() {
    let mut env = env_without_archives("seeds", "");
    let mirror = Registry::start(&env.dir, None);
    // The notes' images, as Docker Hub would name them, served by the mirror
    // (all are the busybox image).
    for name in [
        "library/mongo:4.4",
        "bootdotdev/synergychat-crawler:latest",
        "library/busybox:latest",
    ] {
        mirror.push(name, None);
    }
    env.write_config(&format!(
        "crashLoopBackOff:\n  initial: 1s\n  max: 4s\nregistries:\n  docker.io:\n    mirrors: ['http://{}']\n",
        mirror.host()
    ));
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/seeds");
    for file in ["mongo-pod.yaml", "crawler.yaml", "shared-volume.yaml"] {
        std::fs::copy(data.join(file), env.manifests.join(file)).unwrap();
    }
    // The notes' volume for the claim is an NFS export on another host; a
    // user of this node gives it a local volume of the same class.
    let pv_dir = env.dir.join("pv");
    std::fs::create_dir_all(&pv_dir).unwrap();
    env.write_manifest(
        "pv.yaml",
        &format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: nfs-pv\nspec:\n  capacity:\n    storage: 10Gi\n  accessModes:\n    - ReadWriteMany\n  storageClassName: nfs\n  hostPath:\n    path: {}\n",
            pv_dir.display()
        ),
    );
    env.start_agent();
    // busybox has no mongod and no crawler: those containers fail to start
    // or exit, after their images were pulled.
    let expect = [
        ("mongo-pod-node1", "mongo:4.4"),
        (
            "synergychat-crawler-node1",
            "bootdotdev/synergychat-crawler:latest",
        ),
        ("shared-volume-app-node1", "busybox"),
    ];
    for (pod, image) in expect {
        let p = env.wait_for(
            &format!("{pod}: {image} pulled"),
            Duration::from_secs(60),
            || {
                let p = env.pod(pod)?;
                (pulled(&p, image) && past_the_image_stage(&p)).then_some(p)
            },
        );
        assert!(
            !events(&p)
                .iter()
                .any(|(_, m)| m.starts_with("Failed to pull image")),
            "{p}"
        );
    }
    // The one whose command busybox has runs, with its shared volume.
    env.wait_running("shared-volume-app-node1");
    let images = env.ctr(&["images", "ls", "-q"]);
    for name in [
        "docker.io/library/mongo:4.4",
        "docker.io/bootdotdev/synergychat-crawler:latest",
        "docker.io/library/busybox:latest",
    ] {
        assert!(images.contains(name), "{name} not in {images}");
    }
    let log = env.agent_output();
    assert!(
        log.lines().any(|l| l.contains("containerd: pulled image")
            && l.contains("docker.io/library/mongo:4.4")
            && l.contains(&mirror.host())),
        "{log}"
    );
}

/// A registry whose every manifest is `size` bytes of valid JSON.
fn oversized_manifest_registry(size: usize) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let head = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[],"annotations":{"pad":""#;
    let tail = "\"}}";
    let mut body = head.as_bytes().to_vec();
    body.resize(size - tail.len(), b'x');
    body.extend_from_slice(tail.as_bytes());
    let body = std::sync::Arc::new(body);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let body = std::sync::Arc::clone(&body);
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut conn = conn;
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let path = head.split(' ').nth(1).unwrap_or_default().to_string();
                let get = head.starts_with("GET ");
                let (status, ctype, data): (&str, &str, &[u8]) = if path.contains("/manifests/") {
                    (
                        "200 OK",
                        "application/vnd.oci.image.manifest.v1+json",
                        &body[..],
                    )
                } else if path == "/v2/" {
                    ("200 OK", "application/json", b"{}")
                } else {
                    ("404 Not Found", "application/json", b"{}")
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    data.len()
                );
                if get {
                    let _ = conn.write_all(data);
                }
            });
        }
    });
    host
}

#[test]
fn an_oversized_manifest_is_refused() {
    let host = oversized_manifest_registry((4 << 20) + 4096);
    let mut env = Env::new("bigmanifest");
    env.write_config(&plain_http(&host));
    env.start_agent();
    let image = format!("{host}/test/big:1");
    env.write_pod("big", &sleeper(&image, ""));
    env.write_pod("local", &sleeper("busybox", ""));
    let pod = pull_failed(
        &env,
        "big-node1",
        "larger than the 4194304 bytes allowed",
        Duration::from_secs(40),
    );
    let ev = events(&pod);
    assert!(
        ev.iter()
            .any(|(_, m)| m.contains(&format!("manifest of {} bytes", (4 << 20) + 4096))),
        "{ev:?}"
    );
    wait_back_off(&env, "big-node1");
    env.wait_running("local-node1");
    assert!(!env.ctr(&["images", "ls", "-q"]).contains("test/big"));
    remove_big_pod(&env);
}

/// A tmpfs of `size` on `path`, unmounted on drop (the Env's own cleanup
/// unmounts it too, after its containerd is gone).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        )
        .unwrap();
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Pushes a one-layer image whose layer is `bytes` of random data (an
/// uncompressed tar); returns nothing, the image is `repo:tag`.
fn push_random_image(host: &str, dir: &Path, repo: &str, tag: &str, bytes: usize) {
    use sha2::Digest;
    let src = dir.join("random-layer");
    std::fs::create_dir_all(&src).unwrap();
    let mut data = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut data))
        .unwrap();
    std::fs::write(src.join("random.bin"), &data).unwrap();
    drop(data);
    let tar = dir.join("random-layer.tar");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(&src)
        .arg("-cf")
        .arg(&tar)
        .arg("random.bin")
        .status()
        .unwrap();
    assert!(ok.success());
    let layer = std::fs::read(&tar).unwrap();
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_file(&tar);
    let layer_digest = put_blob(host, repo, &layer);
    let diff_id = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&layer)));
    assert_eq!(layer_digest, diff_id);
    let config = format!(
        r#"{{"architecture":"{}","os":"linux","config":{{"Cmd":["sh"]}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#,
        go_arch()
    );
    let config_digest = put_blob(host, repo, config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer.len()}],
    });
    put_manifest(
        host,
        repo,
        tag,
        "application/vnd.oci.image.manifest.v1+json",
        &manifest.to_string(),
    );
}

#[test]
fn a_content_store_that_fills_during_the_pull_fails_the_pull_cleanly() {
    let mut env = Env::new("diskfull");
    let reg = Registry::start(&env.dir, None);
    let host = reg.host();
    push_random_image(&host, &env.dir, "test/big", "1", 24 << 20);
    // containerd's content store on a 12 MiB tmpfs: the busybox archive
    // fits, the 24 MiB layer does not.
    env.kill_containerd();
    let content = env
        .dir
        .join("containerd/root/io.containerd.content.v1.content");
    let _ = std::fs::remove_dir_all(&content);
    let _tmpfs = Tmpfs::mount(&content, "12m");
    env.start_containerd();
    env.write_config(&plain_http(&host));
    env.start_agent();
    env.write_pod("local", &sleeper("busybox", ""));
    env.wait_running("local-node1");
    let image = format!("{host}/test/big:1");
    env.write_pod("big", &sleeper(&image, ""));
    let pod = pull_failed(
        &env,
        "big-node1",
        "no space left on device",
        Duration::from_secs(60),
    );
    let ev = events(&pod);
    let failed = ev
        .iter()
        .find(|(r, m)| r == "Failed" && m.contains("no space left on device"))
        .unwrap();
    assert!(
        failed.1.starts_with(&format!(
            "Failed to pull image {image:?}: writing to containerd's content store: write "
        )),
        "{failed:?}"
    );
    wait_back_off(&env, "big-node1");
    // No image record; the pod that has its image keeps running.
    assert!(!env.ctr(&["images", "ls", "-q"]).contains("test/big"));
    let local = env.wait_running("local-node1");
    assert_eq!(
        local["status"]["containerStatuses"][0]["restartCount"], 0,
        "{local}"
    );
    remove_big_pod(&env);
    assert!(env.agent_is_alive());
}

//! Volumes on the real host: emptyDir, hostPath, configMap/secret, PV/PVC
//! binding, subPath, and that every mount goes away.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use common::{Env, pod_yaml};

fn uid(p: &serde_json::Value) -> String {
    p["metadata"]["uid"].as_str().unwrap().to_string()
}

fn log_of(env: &Env, pod: &serde_json::Value, container: &str, attempt: u32) -> String {
    let path = env.dir.join(format!(
        "logs/default_{}_{}/{container}/{attempt}.log",
        pod["metadata"]["name"].as_str().unwrap(),
        uid(pod)
    ));
    std::fs::read_to_string(path).unwrap_or_default()
}

fn wait_log(env: &Env, pod: &str, container: &str, needle: &str) -> String {
    env.wait_for(
        &format!("{pod}/{container} to log {needle:?}"),
        Duration::from_secs(30),
        || {
            let p = env.pod(pod)?;
            let text = log_of(env, &p, container, 0);
            text.contains(needle).then_some(text)
        },
    )
}

fn waiting_reason(env: &Env, pod: &str, reason: &str) -> serde_json::Value {
    env.wait_for(
        &format!("{pod} reason {reason}"),
        Duration::from_secs(30),
        || {
            let p = env.pod(pod)?;
            (p["status"]["reason"] == reason).then_some(p)
        },
    )
}

fn mounts_of(env: &Env, uid: &str) -> Vec<String> {
    env.mounts_under_dir()
        .into_iter()
        .filter(|m| m.contains(uid))
        .collect()
}

#[test]
fn empty_dirs_are_shared_survive_restarts_and_go_with_the_pod() {
    let mut env = Env::new("emptydir");
    env.start_agent();
    env.write_manifest(
        "share.yaml",
        &pod_yaml(
            "share",
            "  terminationGracePeriodSeconds: 0\n  volumes:\n  - name: shared-data\n    emptyDir: {}\n  - name: mem\n    emptyDir: {medium: Memory, sizeLimit: 8Mi}\n  containers:\n  - name: writer\n    image: busybox\n    command: [sh, -c, 'if [ -e /data/once ]; then echo restarted; sleep 3600; fi; echo hello > /data/msg.tmp; mv /data/msg.tmp /data/msg; touch /data/once; exit 1']\n    volumeMounts: [{name: shared-data, mountPath: /data}]\n  - name: reader\n    image: busybox\n    command: [sh, -c, 'while ! cat /data/msg; do sleep 0.2; done; dd if=/dev/zero of=/mem/big bs=1M count=16 2>&1; sleep 3600']\n    volumeMounts: [{name: shared-data, mountPath: /data}, {name: mem, mountPath: /mem}]\n",
        ),
    );
    wait_log(&env, "share-node1", "reader", "hello");
    // The writer crashed once and found its data on restart.
    let p = env.wait_for("writer restarted", Duration::from_secs(30), || {
        let p = env.pod("share-node1")?;
        log_of(&env, &p, "writer", 1)
            .contains("restarted")
            .then_some(p)
    });
    let u = uid(&p);
    let dir = env.dir.join(format!(
        "root/pods/{u}/volumes/kubernetes.io~empty-dir/shared-data"
    ));
    assert_eq!(std::fs::read_to_string(dir.join("msg")).unwrap(), "hello\n");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o777
    );
    // Memory medium: a tmpfs of the size limit; writing past it fails.
    let text = wait_log(&env, "share-node1", "reader", "No space left on device");
    assert!(text.contains("No space left on device"), "{text}");
    let mem = format!(
        "{}/root/pods/{u}/volumes/kubernetes.io~empty-dir/mem",
        env.dir.display()
    );
    assert!(mounts_of(&env, &u).contains(&mem));

    env.remove_manifest("share.yaml");
    env.wait_for("pod gone", Duration::from_secs(30), || {
        env.pods().is_empty().then_some(())
    });
    // The pod leaves /pods once its containers stopped; the rest follows.
    env.wait_for("sandbox torn down", Duration::from_secs(30), || {
        (mounts_of(&env, &u).is_empty() && !dir.exists()).then_some(())
    });
}

#[test]
fn disk_empty_dir_over_its_size_limit_is_reported() {
    let mut env = Env::new("sizelimit");
    env.start_agent();
    env.write_manifest(
        "fill.yaml",
        &pod_yaml(
            "fill",
            "  terminationGracePeriodSeconds: 0\n  volumes: [{name: scratch, emptyDir: {sizeLimit: 1Mi}}]\n  containers:\n  - name: a\n    image: busybox\n    command: [sh, -c, 'dd if=/dev/urandom of=/scratch/f bs=1M count=3; sleep 3600']\n    volumeMounts: [{name: scratch, mountPath: /scratch}]\n",
        ),
    );
    let p = waiting_reason(&env, "fill-node1", "Evicted");
    let msg = p["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("Usage of EmptyDir volume \"scratch\" exceeds the limit"),
        "{msg}"
    );
}

#[test]
fn host_path_types_are_checked_and_created() {
    let mut env = Env::new("hostpath");
    let host = env.dir.join("host");
    std::fs::create_dir_all(host.join("existing")).unwrap();
    std::fs::write(host.join("file.txt"), "from the host\n").unwrap();
    let sock = std::os::unix::net::UnixListener::bind(host.join("app.sock")).unwrap();
    env.start_agent();
    let h = host.display();
    env.write_manifest(
        "hp.yaml",
        &pod_yaml(
            "hp",
            &format!(
                "  terminationGracePeriodSeconds: 0\n  volumes:\n  - {{name: any, hostPath: {{path: {h}/existing}}}}\n  - {{name: dir, hostPath: {{path: {h}/existing, type: Directory}}}}\n  - {{name: mkdir, hostPath: {{path: {h}/made/here, type: DirectoryOrCreate}}}}\n  - {{name: touch, hostPath: {{path: {h}/touched, type: FileOrCreate}}}}\n  - {{name: file, hostPath: {{path: {h}/file.txt, type: File}}}}\n  - {{name: sock, hostPath: {{path: {h}/app.sock, type: Socket}}}}\n  - {{name: devnull, hostPath: {{path: /dev/null, type: CharDevice}}}}\n  containers:\n  - name: a\n    image: busybox\n    command: [sh, -c, 'cat /in/file.txt; echo written > /made/out; test -S /run/app.sock && echo socket-ok; test -c /devnull && echo chardev-ok; sleep 3600']\n    volumeMounts:\n    - {{name: dir, mountPath: /dir}}\n    - {{name: any, mountPath: /any, readOnly: true}}\n    - {{name: mkdir, mountPath: /made}}\n    - {{name: touch, mountPath: /touched}}\n    - {{name: file, mountPath: /in/file.txt}}\n    - {{name: sock, mountPath: /run/app.sock}}\n    - {{name: devnull, mountPath: /devnull}}\n"
            ),
        ),
    );
    let text = wait_log(&env, "hp-node1", "a", "chardev-ok");
    assert!(
        text.contains("from the host") && text.contains("socket-ok"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(host.join("made/here/out")).unwrap(),
        "written\n"
    );
    assert_eq!(
        std::fs::metadata(host.join("made/here"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::metadata(host.join("touched"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
    drop(sock);

    // A type mismatch fails the pod with a clear reason.
    env.write_manifest(
        "bad.yaml",
        &pod_yaml(
            "bad",
            &format!("  volumes: [{{name: x, hostPath: {{path: {h}/file.txt, type: Directory}}}}]\n  containers: [{{name: a, image: busybox, volumeMounts: [{{name: x, mountPath: /x}}]}}]\n"),
        ),
    );
    let p = waiting_reason(&env, "bad-node1", "FailedMount");
    assert!(
        p["status"]["message"]
            .as_str()
            .unwrap()
            .contains("is not a directory"),
        "{p}"
    );
    env.write_manifest(
        "blk.yaml",
        &pod_yaml(
            "blk",
            "  volumes: [{name: x, hostPath: {path: /dev/null, type: BlockDevice}}]\n  containers: [{name: a, image: busybox, volumeMounts: [{name: x, mountPath: /x}]}]\n",
        ),
    );
    let p = waiting_reason(&env, "blk-node1", "FailedMount");
    assert!(
        p["status"]["message"]
            .as_str()
            .unwrap()
            .contains("is not a block device"),
        "{p}"
    );
    // Relative paths and '..' never get that far.
    env.write_manifest(
        "dots.yaml",
        &pod_yaml("dots", "  volumes: [{name: x, hostPath: {path: /tmp/../etc}}]\n  containers: [{name: a, image: busybox}]\n"),
    );
    env.wait_for("'..' refused", Duration::from_secs(20), || {
        env.agent_output()
            .contains(
                "dots.yaml: spec.volumes[0].hostPath.path: \"/tmp/../etc\" must not contain '..'",
            )
            .then_some(())
    });
}

#[test]
fn host_path_allow_list_refuses_other_paths() {
    let mut env = Env::new("allow");
    let allowed = env.dir.join("allowed");
    std::fs::create_dir_all(&allowed).unwrap();
    env.write_config(&format!(
        "hostPathAllowedPrefixes: [{}]\n",
        allowed.display()
    ));
    env.start_agent();
    env.write_manifest(
        "ok.yaml",
        &pod_yaml(
            "ok",
            &format!("  terminationGracePeriodSeconds: 0\n  volumes: [{{name: x, hostPath: {{path: {}/sub, type: DirectoryOrCreate}}}}]\n  containers: [{{name: a, image: busybox, command: [sleep, '3600'], volumeMounts: [{{name: x, mountPath: /x}}]}}]\n", allowed.display()),
        ),
    );
    env.write_manifest(
        "no.yaml",
        &pod_yaml("no", "  volumes: [{name: x, hostPath: {path: /etc}}]\n  containers: [{name: a, image: busybox, volumeMounts: [{name: x, mountPath: /x}]}]\n"),
    );
    // A symlink inside the allowed directory that leads out of it.
    std::os::unix::fs::symlink("/etc", allowed.join("etc-link")).unwrap();
    std::fs::create_dir_all(allowed.join("in")).unwrap();
    std::os::unix::fs::symlink("in", allowed.join("in-link")).unwrap();
    env.write_manifest(
        "sneaky.yaml",
        &pod_yaml("sneaky", &format!("  volumes: [{{name: x, hostPath: {{path: {}/etc-link, type: Directory}}}}]\n  containers: [{{name: a, image: busybox, volumeMounts: [{{name: x, mountPath: /x}}]}}]\n", allowed.display())),
    );
    // One that stays inside is fine, and containers see its target.
    std::fs::write(allowed.join("in/file"), b"inside\n").unwrap();
    env.write_manifest(
        "inner.yaml",
        &pod_yaml("inner", &format!("  terminationGracePeriodSeconds: 0\n  volumes: [{{name: x, hostPath: {{path: {}/in-link, type: Directory}}}}]\n  containers: [{{name: a, image: busybox, command: [sh, -c, 'cat /x/file; sleep 3600'], volumeMounts: [{{name: x, mountPath: /x}}]}}]\n", allowed.display())),
    );
    env.wait_running("ok-node1");
    assert!(allowed.join("sub").is_dir());
    let p = waiting_reason(&env, "no-node1", "FailedMount");
    assert!(
        p["status"]["message"]
            .as_str()
            .unwrap()
            .contains("outside the allowed prefixes"),
        "{p}"
    );
    let p = waiting_reason(&env, "sneaky-node1", "FailedMount");
    assert!(
        p["status"]["message"]
            .as_str()
            .unwrap()
            .contains("leads out of its allowed prefix"),
        "{p}"
    );
    wait_log(&env, "inner-node1", "a", "inside");
}

const CONFIG: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: crawler-config}\ndata:\n  START_URL: https://example.org\n  DEPTH: '3'\n  crawler.conf: |\n    depth=3\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: creds}\ntype: Opaque\ndata:\n  password: aHVudGVyMg==\n";

#[test]
fn config_maps_and_secrets_feed_files_and_env_and_replace_pods_when_changed() {
    let mut env = Env::new("config");
    env.start_agent();
    env.write_manifest("config.yaml", CONFIG);
    env.write_manifest(
        "crawler.yaml",
        &pod_yaml(
            "crawler",
            "  terminationGracePeriodSeconds: 0\n  volumes:\n  - {name: conf, configMap: {name: crawler-config, items: [{key: crawler.conf, path: etc/crawler.conf}]}}\n  - {name: creds, secret: {secretName: creds, defaultMode: 0400}}\n  containers:\n  - name: crawler\n    image: busybox\n    envFrom: [{configMapRef: {name: crawler-config}}]\n    env:\n    - name: PASSWORD\n      valueFrom: {secretKeyRef: {name: creds, key: password}}\n    - name: URL\n      valueFrom: {configMapKeyRef: {name: crawler-config, key: START_URL}}\n    command: [sh, -c, 'echo \"url=$URL depth=$DEPTH pw=$PASSWORD\"; cat /conf/etc/crawler.conf; stat -L -c %a /creds/password; touch /conf/new /creds/new 2>/dev/null && echo writable || echo read-only; echo \"file=$(cat /creds/password)\"; sleep 3600']\n    volumeMounts: [{name: conf, mountPath: /conf}, {name: creds, mountPath: /creds, readOnly: true}]\n",
        ),
    );
    // The last line: everything before it is in the log once it is.
    let text = wait_log(&env, "crawler-node1", "crawler", "file=hunter2");
    for want in [
        "url=https://example.org depth=3 pw=hunter2",
        "depth=3",
        "stdout F 400",
        // configMap and secret volumes are read-only, as Kubernetes mounts them.
        "stdout F read-only",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let p = env.pod("crawler-node1").unwrap();
    let u = uid(&p);
    // Secrets live on tmpfs, configMaps on disk.
    let secret_dir = format!(
        "{}/root/pods/{u}/volumes/kubernetes.io~secret/creds",
        env.dir.display()
    );
    assert!(
        mounts_of(&env, &u).contains(&secret_dir),
        "{:?}",
        mounts_of(&env, &u)
    );
    // The pod's status never shows the secret.
    assert!(!env.get("/pods").unwrap().contains("hunter2"));
    // Other users of the host cannot read it: the pod directory is 0750.
    let pod_dir = env.dir.join(format!("root/pods/{u}"));
    let mode = std::fs::metadata(&pod_dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o750);
    let as_nobody = std::process::Command::new("cat")
        .arg(Path::new(&secret_dir).join("password"))
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(
        !as_nobody.status.success(),
        "a non-root user read the secret"
    );
    assert!(
        String::from_utf8_lossy(&as_nobody.stderr).contains("Permission denied"),
        "{as_nobody:?}"
    );
    // The kubelet's atomic layout: ..data -> a version directory.
    assert!(
        std::fs::read_link(Path::new(&secret_dir).join("..data"))
            .unwrap()
            .to_string_lossy()
            .starts_with("..")
    );

    // A changed configMap replaces the pod.
    env.write_manifest("config.yaml", &CONFIG.replace("DEPTH: '3'", "DEPTH: '5'"));
    let text = env.wait_for("replaced pod", Duration::from_secs(30), || {
        let p = env.pod("crawler-node1")?;
        (uid(&p) != u).then_some(())?;
        let t = log_of(&env, &p, "crawler", 0);
        t.contains("depth=5").then_some(t)
    });
    assert!(text.contains("url=https://example.org depth=5"), "{text}");

    // A missing configMap keeps the pod waiting with the kubelet's message.
    env.write_manifest(
        "orphan.yaml",
        &pod_yaml("orphan", "  volumes: [{name: c, configMap: {name: nope}}]\n  containers: [{name: a, image: busybox, volumeMounts: [{name: c, mountPath: /c}]}]\n"),
    );
    let p = waiting_reason(&env, "orphan-node1", "FailedMount");
    assert!(
        p["status"]["message"]
            .as_str()
            .unwrap()
            .contains("configmap \"nope\" not found"),
        "{p}"
    );
}

fn pv(name: &str, size: &str, path: &Path, policy: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {name}}}\nspec:\n  capacity: {{storage: {size}}}\n  accessModes: [ReadWriteOnce]\n  storageClassName: manual\n  persistentVolumeReclaimPolicy: {policy}\n  hostPath: {{path: {}, type: DirectoryOrCreate}}\n",
        path.display()
    )
}

const CLAIM: &str = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: manual\n  resources: {requests: {storage: 1Gi}}\n";

fn db_pod() -> String {
    pod_yaml(
        "db",
        "  terminationGracePeriodSeconds: 0\n  volumes: [{name: store, persistentVolumeClaim: {claimName: data}}]\n  containers:\n  - name: db\n    image: busybox\n    command: [sh, -c, 'cat /store/rows 2>/dev/null; echo row-$(date +%s%N) >> /store/rows; sleep 3600']\n    volumeMounts: [{name: store, mountPath: /store}]\n",
    )
}

#[test]
fn claims_bind_to_the_smallest_fitting_volume_and_keep_their_data() {
    let mut env = Env::new("pvc");
    env.start_agent();
    let (small, big) = (env.dir.join("pv-small"), env.dir.join("pv-big"));
    env.write_manifest("claim.yaml", CLAIM);
    env.write_manifest("db.yaml", &db_pod());
    // No volume yet: the pod waits.
    let p = waiting_reason(&env, "db-node1", "FailedMount");
    assert!(
        p["status"]["message"]
            .as_str()
            .unwrap()
            .contains("persistentvolumeclaim \"data\" is not bound"),
        "{p}"
    );
    // Volumes appear (in one file, so that both are candidates at once: a
    // pending claim takes the first that fits); the smallest that fits is
    // bound, and the pod starts.
    env.write_manifest(
        "pvs.yaml",
        &format!(
            "{}---\n{}",
            pv("big", "10Gi", &big, "Retain"),
            pv("small", "2Gi", &small, "Retain")
        ),
    );
    env.wait_running("db-node1");
    env.wait_for("row written", Duration::from_secs(20), || {
        std::fs::read_to_string(small.join("rows"))
            .ok()
            .filter(|t| t.contains("row-"))
    });
    assert!(!big.join("rows").exists());
    let bindings = std::fs::read_to_string(env.dir.join("root/volume-bindings.json")).unwrap();
    assert!(bindings.contains("\"small\""), "{bindings}");

    // Delete and re-create the pod: the data is still there.
    env.remove_manifest("db.yaml");
    env.wait_for("db gone", Duration::from_secs(30), || {
        env.pod("db-node1").is_none().then_some(())
    });
    env.write_manifest("db.yaml", &db_pod());
    let text = wait_log(&env, "db-node1", "db", "row-");
    assert!(text.contains("stdout F row-"), "{text}");

    // Retain: removing the claim keeps the data.
    env.remove_manifest("db.yaml");
    env.remove_manifest("claim.yaml");
    env.wait_for("db gone", Duration::from_secs(30), || {
        env.pod("db-node1").is_none().then_some(())
    });
    env.wait_for("claim released", Duration::from_secs(30), || {
        env.agent_output().contains("claim released").then_some(())
    });
    env.wait_rescan();
    assert!(small.join("rows").exists());
}

#[test]
fn delete_reclaims_only_a_claim_really_gone_and_after_its_grace_period() {
    let mut env = Env::new("reclaim");
    env.write_config("reclaimGracePeriod: 6s\ncrashLoopBackOff:\n  initial: 1s\n  max: 8s\n");
    env.start_agent();
    let path = env.dir.join("pv-del");
    env.write_manifest("pv.yaml", &pv("scratch", "5Gi", &path, "Delete"));
    env.write_manifest("claim.yaml", CLAIM);
    env.write_manifest("db.yaml", &db_pod());
    env.wait_for("row written", Duration::from_secs(30), || {
        std::fs::read_to_string(path.join("rows"))
            .ok()
            .filter(|t| t.contains("row-"))
    });

    // A typo makes the claim unreadable, not deleted: past the grace period
    // the data is still there, and the claim coming back gets it.
    env.write_manifest("claim.yaml", &CLAIM.replace("accessModes", "acessModes"));
    env.wait_for("reclaim deferred", Duration::from_secs(30), || {
        env.agent_output()
            .contains("volume reclaim deferred")
            .then_some(())
    });
    assert!(path.join("rows").exists(), "data lost to a typo");
    env.write_manifest("claim.yaml", CLAIM);
    env.wait_for("claim back", Duration::from_secs(30), || {
        env.agent_output().contains("claim back").then_some(())
    });
    env.wait_for("db running again", Duration::from_secs(30), || {
        let p = env.pod("db-node1")?;
        (p["status"]["phase"] == "Running").then_some(())
    });
    assert!(path.join("rows").exists());

    // Really deleted: emptied once the grace period is over.
    let deleted = std::time::Instant::now();
    env.remove_manifest("claim.yaml");
    env.wait_for("volume emptied", Duration::from_secs(30), || {
        (path.is_dir() && !path.join("rows").exists()).then_some(())
    });
    assert!(
        deleted.elapsed() >= Duration::from_secs(6),
        "emptied after {:?}, before the grace period",
        deleted.elapsed()
    );
    // The pod now waits for its claim.
    let p = waiting_reason(&env, "db-node1", "FailedMount");
    assert!(
        p["status"]["message"]
            .as_str()
            .unwrap()
            .contains("persistentvolumeclaim \"data\" not found"),
        "{p}"
    );
}

/// With `rootDir` reached through a symlink, a pod's subPath bind of a
/// hostPath directory must be unmounted, never emptied, when the pod goes.
#[test]
fn deleting_a_pod_never_deletes_through_its_mounts() {
    let mut env = Env::new("teardown");
    let real = env.dir.join("root");
    let link = env.dir.join("root-link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    env.write_config(&format!(
        "rootDir: {}\ncrashLoopBackOff:\n  initial: 1s\n  max: 8s\n",
        link.display()
    ));
    env.start_agent();
    let host = env.dir.join("host-data");
    std::fs::create_dir_all(host.join("app")).unwrap();
    std::fs::write(host.join("app/precious"), b"keep me\n").unwrap();
    env.write_manifest(
        "hp.yaml",
        &pod_yaml(
            "hp",
            &format!(
                "  terminationGracePeriodSeconds: 0\n  volumes: [{{name: h, hostPath: {{path: {}}}}}]\n  containers:\n  - name: a\n    image: busybox\n    command: [sh, -c, 'cat /app/precious; sleep 3600']\n    volumeMounts: [{{name: h, mountPath: /app, subPath: app}}, {{name: h, mountPath: /whole}}]\n",
                host.display()
            ),
        ),
    );
    wait_log(&env, "hp-node1", "a", "keep me");
    let u = uid(&env.pod("hp-node1").unwrap());
    assert!(
        !mounts_of(&env, &u).is_empty(),
        "the subPath is bind-mounted"
    );
    env.remove_manifest("hp.yaml");
    env.wait_for("pod gone", Duration::from_secs(30), || {
        env.pod("hp-node1").is_none().then_some(())
    });
    assert_eq!(
        std::fs::read(host.join("app/precious")).unwrap(),
        b"keep me\n"
    );
    env.wait_for("pod directory removed", Duration::from_secs(30), || {
        (!real.join("pods").join(&u).exists()).then_some(())
    });
    assert!(mounts_of(&env, &u).is_empty(), "{:?}", mounts_of(&env, &u));
}

#[test]
fn sub_paths_mount_and_cannot_escape_through_symlinks() {
    let mut env = Env::new("subpath");
    env.start_agent();
    env.write_manifest(
        "sp.yaml",
        &pod_yaml(
            "sp",
            "  terminationGracePeriodSeconds: 0\n  volumes: [{name: v, emptyDir: {}}]\n  initContainers:\n  - name: prep\n    image: busybox\n    command: [sh, -c, 'mkdir -p /v/app/conf && echo sub > /v/app/conf/x && ln -s /etc /v/evil']\n    volumeMounts: [{name: v, mountPath: /v}]\n  containers:\n  - name: app\n    image: busybox\n    command: [sh, -c, 'cat /conf/x; ls /conf; sleep 3600']\n    volumeMounts: [{name: v, mountPath: /conf, subPath: app/conf}]\n",
        ),
    );
    let text = wait_log(&env, "sp-node1", "app", "sub");
    assert!(text.contains("stdout F sub"), "{text}");

    env.write_manifest(
        "escape.yaml",
        &pod_yaml(
            "escape",
            "  terminationGracePeriodSeconds: 0\n  volumes: [{name: v, emptyDir: {}}]\n  initContainers:\n  - name: plant\n    image: busybox\n    command: [sh, -c, 'ln -s / /v/root && ln -s ../../../../../.. /v/up']\n    volumeMounts: [{name: v, mountPath: /v}]\n  containers:\n  - name: thief\n    image: busybox\n    command: [sh, -c, 'ls /stolen; sleep 3600']\n    volumeMounts: [{name: v, mountPath: /stolen, subPath: root/etc}]\n",
        ),
    );
    let w = env.wait_for("escape refused", Duration::from_secs(30), || {
        let p = env.pod("escape-node1")?;
        let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "CreateContainerConfigError").then_some(w)
    });
    assert!(w["message"].as_str().unwrap().contains("symlink"), "{w}");
    assert!(
        env.pod("escape-node1").unwrap()["status"]["containerStatuses"][0]["restartCount"] == 0
    );
}

#[test]
fn inline_nfs_failure_is_reported_without_blocking_other_pods() {
    let mut env = Env::new("nfs");
    env.write_config("nfsMountTimeout: 3s\ncrashLoopBackOff:\n  initial: 1s\n  max: 8s\n");
    env.start_agent();
    // 192.0.2.0/24 is TEST-NET-1: nothing answers there.
    env.write_manifest(
        "nfs.yaml",
        &pod_yaml("nfs", "  volumes: [{name: n, nfs: {server: 192.0.2.1, path: /exports}}]\n  containers: [{name: a, image: busybox, volumeMounts: [{name: n, mountPath: /n}]}]\n"),
    );
    env.write_manifest("other.yaml", &pod_yaml("other", "  terminationGracePeriodSeconds: 0\n  containers: [{name: a, image: busybox, command: [sleep, '3600']}]\n"));
    env.wait_running("other-node1");
    let p = waiting_reason(&env, "nfs-node1", "FailedMount");
    assert!(
        p["status"]["message"].as_str().unwrap().contains("nfs"),
        "{p}"
    );
    assert!(env.get("/healthz").is_ok());
    // Deleting the waiting pod works and leaves nothing mounted.
    env.remove_manifest("nfs.yaml");
    env.wait_for("nfs pod gone", Duration::from_secs(30), || {
        env.pod("nfs-node1").is_none().then_some(())
    });
    env.wait_for("nfs unmounted", Duration::from_secs(30), || {
        env.mounts_under_dir()
            .iter()
            .all(|m| !m.contains("kubernetes.io~nfs"))
            .then_some(())
    });
}

#[test]
fn mounts_are_gone_after_restart_then_delete() {
    let mut env = Env::new("leak");
    env.start_agent();
    env.write_manifest("config.yaml", CONFIG);
    env.write_manifest(
        "m.yaml",
        &pod_yaml(
            "m",
            "  terminationGracePeriodSeconds: 0\n  volumes:\n  - {name: mem, emptyDir: {medium: Memory}}\n  - {name: s, secret: {secretName: creds}}\n  - {name: d, emptyDir: {}}\n  containers:\n  - name: a\n    image: busybox\n    command: [sleep, '3600']\n    volumeMounts: [{name: mem, mountPath: /mem}, {name: s, mountPath: /s}, {name: d, mountPath: /sub, subPath: x/y}]\n",
        ),
    );
    let p = env.wait_running("m-node1");
    let u = uid(&p);
    assert!(mounts_of(&env, &u).len() >= 6, "{:?}", mounts_of(&env, &u));
    env.stop_agent(libc::SIGKILL);
    env.start_agent();
    env.wait_running("m-node1");
    env.remove_manifest("m.yaml");
    env.wait_for("pod gone", Duration::from_secs(30), || {
        env.pods().is_empty().then_some(())
    });
    env.wait_for("sandbox torn down", Duration::from_secs(30), || {
        (mounts_of(&env, &u).is_empty() && !env.dir.join("root/pods").join(&u).exists())
            .then_some(())
    });
}

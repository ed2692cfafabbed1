//! `kubelet-lite check` as a linter: the real binary on each class of bad
//! file, its exit code, its text and its JSON.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const GOOD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n  - {name: a, image: busybox}\n  - {name: b, image: busybox}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: b}\n";

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("kl-check-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check(args: &[&Path], json: bool) -> (Output, Duration) {
    let start = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubelet-lite"));
    cmd.arg("check").args(args).env("KUBELET_LITE_LOG", "off");
    if json {
        cmd.args(["--output", "json"]);
    }
    let out = cmd.output().unwrap();
    (out, start.elapsed())
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_good_file_prints_what_it_defines_and_exits_0() {
    let d = Dir::new("good");
    let f = d.write("web.yaml", GOOD);
    let (out, _) = check(&[&f], false);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "{}: Pod default/web (2 containers), ConfigMap default/cfg\n",
            f.display()
        )
    );
}

#[test]
fn each_bad_file_class_exits_1_naming_the_file() {
    let d = Dir::new("bad");
    let utf16_no_bom: Vec<u8> = GOOD.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let fifo = d.0.join("fifo.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let zero = d.0.join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let cases: Vec<(PathBuf, &str)> = vec![
        (fifo, "is a FIFO, not a regular file: refused"),
        (zero, "is a character device, not a regular file: refused"),
        (
            d.write("big.yaml", vec![b'#'; (1 << 20) + 1]),
            "above the 1048576-byte (1 MiB) limit",
        ),
        (
            d.write("latin1.yaml", b"kind: Pod # caf\xe9\n"),
            "invalid UTF-8",
        ),
        (
            d.write("utf16.yaml", utf16_no_bom),
            "need a byte order mark",
        ),
        (
            d.write("empty.yaml", ""),
            "no Kubernetes object in this file",
        ),
        (
            d.write("comments.yaml", "# a pod, later\n---\n"),
            "no Kubernetes object in this file",
        ),
        (
            d.write(
                "kind.yaml",
                "apiVersion: v1\nkind: Pood\nmetadata: {name: x}\n",
            ),
            "kind: \"v1 Pood\" is not a kind kubelet-lite acts on",
        ),
        (
            d.write(
                "dupkey.yaml",
                GOOD.replace(
                    "{name: b, image: busybox}",
                    "{name: b, image: busybox, image: nginx}",
                ),
            ),
            "spec.containers[1].image: duplicate key",
        ),
        (
            d.write("invalid.yaml", GOOD.replace("name: web", "name: Web")),
            "metadata.name:",
        ),
    ];
    for (file, want) in &cases {
        let (out, took) = check(&[file], false);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "{}: {text}", file.display());
        assert!(
            took < Duration::from_secs(1),
            "{}: took {took:?}",
            file.display()
        );
        let line = format!("error: {}", file.display());
        assert!(
            text.lines()
                .any(|l| l.starts_with(&line) && l.contains(want)),
            "{}: want {want:?} in\n{text}",
            file.display()
        );
    }

    // JSON: all of them at once, with the good file, parse as one document.
    let good = d.write("good.yaml", GOOD);
    let mut all: Vec<&Path> = vec![&good];
    all.extend(cases.iter().map(|(f, _)| f.as_path()));
    let (out, _) = check(&all, true);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), all.len());
    assert_eq!(files[0]["file"], good.to_str().unwrap());
    assert_eq!(files[0]["objects"][0]["kind"], "Pod");
    assert_eq!(files[0]["objects"][0]["containers"], 2);
    assert_eq!(files[0]["errors"], serde_json::json!([]));
    for (f, (file, _)) in files[1..].iter().zip(&cases) {
        assert_eq!(f["file"], file.to_str().unwrap());
        assert!(!f["errors"].as_array().unwrap().is_empty(), "{f}");
    }
    let dup = files
        .iter()
        .find(|f| f["file"].as_str().unwrap().ends_with("dupkey.yaml"))
        .unwrap();
    assert_eq!(dup["errors"][0]["field"], "spec.containers[1].image");
    let multi = d.write(
        "multi.yaml",
        format!(
            "{GOOD}---\n{}",
            GOOD.replace("image: busybox}", "image: ''}")
        ),
    );
    let (out, _) = check(&[&multi], true);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = &v["files"][0]["errors"][0];
    assert_eq!(e["document"], 3, "{v}");
    assert_eq!(e["field"], "spec.containers[0].image");
    assert_eq!(e["message"], "Required value");
}

#[test]
fn the_directory_is_checked_by_default_with_duplicates_across_files() {
    let d = Dir::new("dir");
    d.write("a.yaml", GOOD);
    d.write(
        "b.yaml",
        GOOD.replace("kind: ConfigMap", "kind: Secret")
            .replace("{a: b}", "{a: Yg==}"),
    );
    let config = d.write(
        "../kl-check-config.yaml",
        format!("staticPodPath: {}\nnodeName: n1\n", d.0.display()),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_kubelet-lite"))
        .args(["--config", config.to_str().unwrap(), "check"])
        .env("KUBELET_LITE_LOG", "off")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&config);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let a = d.0.join("a.yaml");
    let b = d.0.join("b.yaml");
    assert!(
        text.contains(&format!("{}: Pod default/web (2 containers)", a.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "error: {}: metadata.name: pod default/web-n1 is already defined in {}",
            b.display(),
            a.display()
        )),
        "{text}"
    );
    // b.yaml's Secret still counts: only the duplicate pod is refused.
    assert!(
        text.contains(&format!("{}: Secret default/cfg", b.display())),
        "{text}"
    );
}

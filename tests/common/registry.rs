//! A private registry for tests and benches: Debian's `docker-registry`
//! (distribution 2.8) on a loopback port with its own storage and config,
//! seeded with `skopeo`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;

/// A private registry: own port, storage and config; killed by PID on drop.
pub struct Registry {
    pub port: u16,
    child: Option<Child>,
}

impl Registry {
    /// `htpasswd`: (user, password) for basic auth.
    pub fn start(dir: &Path, htpasswd: Option<(&str, &str)>) -> Registry {
        let port = free_port();
        let root = dir.join(format!("registry-{port}"));
        std::fs::create_dir_all(root.join("store")).unwrap();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            root.join("store").display()
        );
        if let Some((user, password)) = htpasswd {
            let file = root.join("htpasswd");
            let ok = Command::new("htpasswd")
                .args(["-Bbc"])
                .arg(&file)
                .args([user, password])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("running htpasswd (apache2-utils)");
            assert!(ok.success());
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                file.display()
            ));
        }
        let cfg_path = root.join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(std::fs::File::create(root.join("log")).unwrap())
            .stderr(std::fs::File::create(root.join("err")).unwrap())
            .spawn()
            .expect("starting docker-registry");
        let r = Registry {
            port,
            child: Some(child),
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return r;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("docker-registry did not listen on {port}");
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Copies the busybox archive to `repo:tag`; returns the manifest digest.
    pub fn push(&self, repo_tag: &str, creds: Option<&str>) -> String {
        let archive = format!("oci-archive:{}", super::busybox_archive().display());
        self.push_from(&archive, repo_tag, creds)
    }

    /// Copies `source` (a skopeo transport:path) to `repo:tag`; returns the
    /// manifest digest.
    pub fn push_from(&self, source: &str, repo_tag: &str, creds: Option<&str>) -> String {
        let dest = format!("docker://{}/{repo_tag}", self.host());
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--insecure-policy", "--dest-tls-verify=false"]);
        if let Some(c) = creds {
            cmd.args(["--dest-creds", c]);
        }
        let out = cmd.arg(source).arg(&dest).output().expect("running skopeo");
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cmd = Command::new("skopeo");
        cmd.args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"]);
        if let Some(c) = creds {
            cmd.args(["--creds", c]);
        }
        let out = cmd.arg(&dest).output().expect("running skopeo");
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own, not yet reaped, child.
            unsafe { libc::kill(c.id().cast_signed(), libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

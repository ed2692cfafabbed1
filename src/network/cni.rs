//! The Container Network Interface, as its runtimes (libcni, containerd's
//! go-cni) drive it: a network configuration list found in a directory,
//! each plugin an executable found in the bin directories, run with the
//! `CNI_*` variables in its environment and its configuration on stdin;
//! ADD runs the plugins in order, each given the previous one's result as
//! `prevResult`, DEL runs them in reverse with the ADD result. Spec:
//! <https://github.com/containernetworking/cni/blob/main/SPEC.md> (1.0.0).
//!
//! CHECK is never run: portmap 1.1.1 (Debian 12's plugins) fails it on
//! hosts without IPv6 NAT (containernetworking/plugins issue 819), and the
//! kubelet never asks for it either.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// No usable configuration or plugin: containerd then says the network
    /// is not ready, and so do we.
    #[error("no network configuration in {dir}")]
    NoConfig { dir: PathBuf },
    #[error("network configuration {path}: {message}")]
    BadConfig { path: PathBuf, message: String },
    #[error("failed to find plugin {plugin:?} in path {dirs:?}")]
    MissingPlugin { plugin: String, dirs: Vec<PathBuf> },
    /// The plugin's error result (`code`, `msg`, `details`), or what it
    /// said when it gave none.
    #[error("plugin type={plugin:?} failed ({command}): {message}")]
    Plugin {
        plugin: String,
        command: &'static str,
        message: String,
    },
    #[error("plugin type={plugin:?} ({command}) did not finish within {timeout:?}: killed")]
    Timeout {
        plugin: String,
        command: &'static str,
        timeout: Duration,
    },
    #[error("running plugin {path}: {source}")]
    Exec {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl CniError {
    /// Whether the error says the node's network is not set up (no
    /// configuration, a plugin binary missing), rather than that this pod
    /// could not be attached.
    pub fn not_ready(&self) -> bool {
        matches!(
            self,
            CniError::NoConfig { .. } | CniError::BadConfig { .. } | CniError::MissingPlugin { .. }
        )
    }
}

/// A network configuration list (`.conflist`), or a single configuration
/// (`.conf`, `.json`) made into a list of one, as libcni does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfList {
    pub name: String,
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Each plugin's configuration, as written.
    pub plugins: Vec<Map<String, Value>>,
    /// The file it was read from.
    pub source: PathBuf,
}

impl ConfList {
    /// Parses the text of `path`: a list when `path` ends in `.conflist`.
    pub fn parse(path: &Path, text: &str) -> Result<ConfList, CniError> {
        let bad = |message: String| CniError::BadConfig {
            path: path.to_path_buf(),
            message,
        };
        let v: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let Value::Object(mut top) = v else {
            return Err(bad("not a JSON object".into()));
        };
        let string = |top: &Map<String, Value>, key: &str| -> Result<String, CniError> {
            match top.get(key) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                _ => Err(bad(format!("{key}: missing or not a string"))),
            }
        };
        let name = string(&top, "name")?;
        let cni_version = string(&top, "cniVersion")?;
        let list = path.extension().is_some_and(|e| e == "conflist");
        let plugins = if list {
            match top.remove("plugins") {
                Some(Value::Array(ps)) if !ps.is_empty() => ps
                    .into_iter()
                    .enumerate()
                    .map(|(i, p)| match p {
                        Value::Object(m) => Ok(m),
                        _ => Err(bad(format!("plugins[{i}]: not an object"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                Some(Value::Array(_)) => return Err(bad("plugins: empty".into())),
                _ => return Err(bad("plugins: missing or not a list".into())),
            }
        } else {
            vec![top]
        };
        for (i, p) in plugins.iter().enumerate() {
            match p.get("type") {
                Some(Value::String(t)) if valid_plugin_name(t) => {}
                Some(Value::String(t)) => {
                    return Err(bad(format!(
                        "plugins[{i}].type: {t:?} is not a plugin name"
                    )));
                }
                _ => return Err(bad(format!("plugins[{i}].type: missing or not a string"))),
            }
        }
        // Results before 0.3.0 have another shape (ip4/ip6); Debian's
        // plugins speak 0.3.0 to 1.0.0.
        let major_minor: Vec<u32> = cni_version
            .split('.')
            .take(2)
            .map(|p| p.parse().unwrap_or(0))
            .collect();
        if major_minor.as_slice() < [0, 3].as_slice() {
            return Err(bad(format!(
                "cniVersion {cni_version:?}: versions before 0.3.0 are not supported"
            )));
        }
        Ok(ConfList {
            name,
            cni_version,
            plugins,
            source: path.to_path_buf(),
        })
    }

    pub fn plugin_type(&self, i: usize) -> &str {
        self.plugins[i]
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The host-local IPAM data directories of the list's plugins
    /// (`<dataDir>/<network name>`).
    pub fn host_local_dirs(&self) -> Vec<PathBuf> {
        self.plugins
            .iter()
            .filter_map(|p| p.get("ipam"))
            .filter(|ipam| ipam.get("type").and_then(Value::as_str) == Some("host-local"))
            .map(|ipam| {
                let data = ipam
                    .get("dataDir")
                    .and_then(Value::as_str)
                    .unwrap_or("/var/lib/cni/networks");
                Path::new(data).join(&self.name)
            })
            .collect()
    }
}

/// A plugin type names a file in a bin directory, nothing else.
fn valid_plugin_name(t: &str) -> bool {
    !t.is_empty() && t != "." && t != ".." && !t.contains('/')
}

/// The first configuration of `dir` in name order (`.conf`, `.conflist`,
/// `.json`), as go-cni loads it: a broken first file is an error, not
/// skipped. `Ok(None)` when the directory holds none.
pub fn load_dir(dir: &Path) -> Result<Option<ConfList>, CniError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CniError::BadConfig {
                path: dir.to_path_buf(),
                message: e.to_string(),
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "conf" || e == "conflist" || e == "json")
                && p.is_file()
        })
        .collect();
    files.sort();
    let Some(first) = files.first() else {
        return Ok(None);
    };
    let bad = |message: String| CniError::BadConfig {
        path: first.clone(),
        message,
    };
    // A configuration is a few hundred bytes; a huge file is a mistake.
    let len = std::fs::metadata(first)
        .map_err(|e| bad(e.to_string()))?
        .len();
    if len > 1 << 20 {
        return Err(bad(format!("{len} bytes is too large")));
    }
    let text = std::fs::read_to_string(first).map_err(|e| bad(e.to_string()))?;
    ConfList::parse(first, &text).map(Some)
}

/// One `hostPort` of the pod, as the `portMappings` capability carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp` (lower case, as containerd passes them).
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// Who the plugins attach: the runtime's side of the protocol.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub container_id: &'a str,
    /// The network namespace path; empty on a DEL whose namespace is gone.
    pub netns: &'a str,
    pub ifname: &'a str,
    /// `CNI_ARGS` pairs (the kubelet's `K8S_POD_*`).
    pub args: &'a [(&'a str, String)],
    pub port_mappings: &'a [PortMapping],
}

/// Runs plugins from `bin_dirs` with a deadline per plugin process.
#[derive(Debug, Clone)]
pub struct Cni {
    pub bin_dirs: Vec<PathBuf>,
    pub timeout: Duration,
}

impl Cni {
    /// The executable for plugin `plugin` (libcni's `FindInPath`).
    pub fn find(&self, plugin: &str) -> Result<PathBuf, CniError> {
        use std::os::unix::fs::PermissionsExt;
        self.bin_dirs
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| {
                std::fs::metadata(p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
            .ok_or_else(|| CniError::MissingPlugin {
                plugin: plugin.to_string(),
                dirs: self.bin_dirs.clone(),
            })
    }

    /// ADD through the whole list; returns the last plugin's result.
    pub fn add(&self, list: &ConfList, inv: &Invocation) -> Result<Value, CniError> {
        // Every binary first: a missing one is "not ready", before any
        // plugin has done anything.
        let paths = (0..list.plugins.len())
            .map(|i| self.find(list.plugin_type(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut prev: Option<Value> = None;
        for (i, path) in paths.iter().enumerate() {
            let conf = plugin_conf(list, i, prev.as_ref(), inv.port_mappings);
            let out = self.exec(path, list.plugin_type(i), "ADD", inv, &conf)?;
            let result: Value = serde_json::from_slice(&out).map_err(|e| CniError::Plugin {
                plugin: list.plugin_type(i).to_string(),
                command: "add",
                message: format!("result is not JSON: {e}"),
            })?;
            prev = Some(result);
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// DEL through the list in reverse, each plugin given the ADD result
    /// (when there was one) as `prevResult`. Plugins make DEL idempotent:
    /// a second DEL, or one without a namespace, succeeds.
    pub fn del(
        &self,
        list: &ConfList,
        inv: &Invocation,
        result: Option<&Value>,
    ) -> Result<(), CniError> {
        for i in (0..list.plugins.len()).rev() {
            let path = self.find(list.plugin_type(i))?;
            let conf = plugin_conf(list, i, result, inv.port_mappings);
            self.exec(&path, list.plugin_type(i), "DEL", inv, &conf)?;
        }
        Ok(())
    }

    fn exec(
        &self,
        path: &Path,
        plugin: &str,
        command: &'static str,
        inv: &Invocation,
        conf: &Value,
    ) -> Result<Vec<u8>, CniError> {
        let lower = if command == "ADD" { "add" } else { "delete" };
        let exec_err = |source| CniError::Exec {
            path: path.to_path_buf(),
            source,
        };
        let cni_path =
            std::env::join_paths(&self.bin_dirs).map_err(|e| exec_err(std::io::Error::other(e)))?;
        let args = inv
            .args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";");
        // The variables go to the child only: the agent's own environment
        // is shared by all its threads and never changed. The rest of it
        // (PATH above all: plugins run iptables) is inherited, as libcni
        // passes it.
        let mut child = Command::new(path)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", inv.container_id)
            .env("CNI_NETNS", inv.netns)
            .env("CNI_IFNAME", inv.ifname)
            .env("CNI_PATH", cni_path)
            .env("CNI_ARGS", args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(exec_err)?;
        let stdin = child.stdin.take();
        let input = serde_json::to_vec(conf).expect("a JSON value serializes");
        // Written and read on their own threads, so that a plugin that
        // neither reads nor exits cannot block us past the deadline.
        let writer = std::thread::spawn(move || {
            if let Some(mut s) = stdin {
                let _ = s.write_all(&input);
            }
        });
        let read = |r: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = vec![];
                if let Some(r) = r {
                    // At most 1 MiB of what a plugin says is kept.
                    let _ = r.take(1 << 20).read_to_end(&mut buf);
                }
                buf
            })
        };
        let stdout = read(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let stderr = read(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let started = Instant::now();
        let deadline = started + self.timeout;
        let exits = ExitWatch::new(&child);
        let status = loop {
            match child.try_wait().map_err(exec_err)? {
                Some(st) => break st,
                None if Instant::now() >= deadline => {
                    // Not reaped yet: the PID is still this child's.
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(CniError::Timeout {
                        plugin: plugin.to_string(),
                        command: lower,
                        timeout: self.timeout,
                    });
                }
                None => exits.wait(deadline.saturating_duration_since(Instant::now())),
            }
        };
        let _ = writer.join();
        // A plugin's children (iptables) may keep the pipes open: the
        // readers end with them, which the deadline above does not cover,
        // but they hold no lock of ours.
        let out = stdout.join().unwrap_or_default();
        let err = stderr.join().unwrap_or_default();
        tracing::debug!(
            plugin,
            command,
            container = inv.container_id,
            netns = inv.netns,
            %status,
            took = ?started.elapsed(),
            stderr = %String::from_utf8_lossy(&err),
            "CNI plugin ran"
        );
        if status.success() {
            return Ok(out);
        }
        Err(CniError::Plugin {
            plugin: plugin.to_string(),
            command: lower,
            message: error_message(&out, &err, status),
        })
    }
}

/// Waits for a child's exit without reaping it: a pidfd (Linux 5.3)
/// becomes readable when the process ends, so the exit is seen at once,
/// where a polling loop would add its period to every plugin run (a pod's
/// ADD runs two to four). Without pidfds, a short sleep.
struct ExitWatch(Option<std::os::fd::OwnedFd>);

impl ExitWatch {
    fn new(child: &std::process::Child) -> ExitWatch {
        use std::os::fd::FromRawFd;
        let Ok(pid) = libc::pid_t::try_from(child.id()) else {
            return ExitWatch(None);
        };
        // SAFETY: pidfd_open(2) takes a PID and flags and returns a new
        // descriptor or -1; the child is not reaped yet, so the PID is its.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0);
        // SAFETY: a descriptor just returned by the kernel, owned by nobody
        // else.
        ExitWatch(fd.map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    /// Returns when the process has ended, or after at most `limit`.
    fn wait(&self, limit: Duration) {
        use std::os::fd::AsRawFd;
        let Some(fd) = &self.0 else {
            std::thread::sleep(limit.min(Duration::from_millis(2)));
            return;
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // At least 1 ms: a deadline less than a millisecond away is not
        // turned into a busy loop.
        let ms = i32::try_from(limit.as_millis()).unwrap_or(i32::MAX).max(1);
        // SAFETY: one pollfd that lives across the call, on a descriptor we
        // own; an interrupted or failed poll only ends this wait early.
        unsafe { libc::poll(&raw mut pfd, 1, ms) };
    }
}

/// The plugin's error as libcni words it: `msg`, then `; details`. A
/// plugin that printed no error result is described by its stderr.
fn error_message(stdout: &[u8], stderr: &[u8], status: std::process::ExitStatus) -> String {
    #[derive(Deserialize)]
    struct ErrorResult {
        code: Option<u32>,
        msg: Option<String>,
        details: Option<String>,
    }
    if let Ok(e) = serde_json::from_slice::<ErrorResult>(stdout)
        && let Some(msg) = e.msg.filter(|m| !m.is_empty())
    {
        let details = e
            .details
            .filter(|d| !d.is_empty())
            .map(|d| format!("; {d}"))
            .unwrap_or_default();
        let _ = e.code;
        return format!("{msg}{details}");
    }
    let said = String::from_utf8_lossy(if stderr.is_empty() { stdout } else { stderr });
    let said = said.trim();
    if said.is_empty() {
        format!("exited with {status} and no error result")
    } else {
        format!("netplugin failed: {said:?}")
    }
}

/// One plugin's stdin (libcni's `buildOneConfig`): its configuration with
/// the list's `name` and `cniVersion`, `prevResult`, and `runtimeConfig`
/// for the capabilities it declares that the runtime has values for.
pub fn plugin_conf(
    list: &ConfList,
    i: usize,
    prev: Option<&Value>,
    port_mappings: &[PortMapping],
) -> Value {
    let mut conf = list.plugins[i].clone();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    if let Some(prev) = prev.filter(|p| !p.is_null()) {
        conf.insert("prevResult".into(), prev.clone());
    }
    let wants_ports = conf
        .get("capabilities")
        .and_then(|c| c.get("portMappings"))
        .and_then(Value::as_bool)
        == Some(true);
    if wants_ports && !port_mappings.is_empty() {
        let mut rc = match conf.remove("runtimeConfig") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        rc.insert(
            "portMappings".into(),
            serde_json::to_value(port_mappings).expect("port mappings serialize"),
        );
        conf.insert("runtimeConfig".into(), Value::Object(rc));
    }
    Value::Object(conf)
}

/// The addresses a result gives the pod: those of `ips` whose `interface`
/// is one inside the namespace (with a `sandbox`), or every one when the
/// result names no interfaces.
pub fn pod_ips(result: &Value) -> Vec<std::net::IpAddr> {
    let interfaces = result
        .get("interfaces")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    result
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|ip| match ip.get("interface").and_then(Value::as_u64) {
            Some(i) => usize::try_from(i)
                .ok()
                .and_then(|i| interfaces.get(i))
                .is_none_or(|itf| {
                    itf.get("sandbox")
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty())
                }),
            None => true,
        })
        .filter_map(|ip| {
            let cidr = ip.get("address")?.as_str()?;
            cidr.split('/').next()?.parse().ok()
        })
        .collect()
}

/// The default network of an agent that found no configuration: a bridge
/// (the pods' gateway, masquerading their traffic out) with host-local
/// addresses from `subnet`, and portmap for `hostPort`s, with `snat` so
/// that host ports answer on 127.0.0.1 too. Loopback is not in the list:
/// the sandbox brings `lo` up itself.
pub fn default_conflist(name: &str, bridge: &str, subnet: &str, data_dir: Option<&Path>) -> String {
    let mut ipam = serde_json::json!({
        "type": "host-local",
        "ranges": [[{"subnet": subnet}]],
        "routes": [{"dst": "0.0.0.0/0"}],
    });
    if let Some(d) = data_dir {
        ipam["dataDir"] = Value::String(d.display().to_string());
    }
    let v = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": ipam,
            },
            {
                "type": "portmap",
                "capabilities": {"portMappings": true},
                "snat": true,
            },
        ],
    });
    let mut text = serde_json::to_string_pretty(&v).expect("a JSON value serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmp(tag: &str) -> PathBuf {
        crate::test_support::temp_dir(&format!("cni-{tag}"))
    }

    #[test]
    fn configurations_are_parsed_as_libcni_reads_them() {
        let list = ConfList::parse(
            Path::new("/x/10-a.conflist"),
            &default_conflist("net", "br9", "10.9.0.0/24", Some(Path::new("/d"))),
        )
        .unwrap();
        assert_eq!(list.name, "net");
        assert_eq!(list.cni_version, "1.0.0");
        assert_eq!(list.plugins.len(), 2);
        assert_eq!(list.plugin_type(1), "portmap");
        assert_eq!(list.host_local_dirs(), [PathBuf::from("/d/net")]);
        // A single configuration is a list of one.
        let one = ConfList::parse(
            Path::new("/x/10-a.conf"),
            r#"{"cniVersion":"0.4.0","name":"n","type":"bridge","ipam":{"type":"host-local"}}"#,
        )
        .unwrap();
        assert_eq!(one.plugins.len(), 1);
        assert_eq!(
            one.host_local_dirs(),
            [PathBuf::from("/var/lib/cni/networks/n")]
        );
        let bad = [
            ("a.conflist", "{", "EOF while parsing"),
            (
                "a.conflist",
                r#"{"cniVersion":"1.0.0","name":"n"}"#,
                "plugins: missing",
            ),
            (
                "a.conflist",
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
                "plugins: empty",
            ),
            (
                "a.conflist",
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{}]}"#,
                "plugins[0].type",
            ),
            (
                "a.conflist",
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../x"}]}"#,
                "not a plugin name",
            ),
            (
                "a.conf",
                r#"{"cniVersion":"1.0.0","type":"bridge"}"#,
                "name: missing",
            ),
            (
                "a.conf",
                r#"{"cniVersion":"0.2.0","name":"n","type":"bridge"}"#,
                "before 0.3.0",
            ),
            ("a.conf", "[]", "not a JSON object"),
        ];
        for (file, text, want) in bad {
            let e = ConfList::parse(Path::new(file), text)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("network configuration {file}: ")),
                "{e}"
            );
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn the_first_file_by_name_is_the_configuration() {
        let d = tmp("dir");
        assert!(load_dir(&d.join("missing")).unwrap().is_none());
        assert!(load_dir(&d).unwrap().is_none());
        std::fs::write(d.join("README"), "not a config").unwrap();
        assert!(load_dir(&d).unwrap().is_none());
        std::fs::write(
            d.join("20-b.conflist"),
            default_conflist("b", "b0", "10.2.0.0/24", None),
        )
        .unwrap();
        std::fs::write(d.join("30-c.conf"), "{").unwrap();
        assert_eq!(load_dir(&d).unwrap().unwrap().name, "b");
        // A broken first file is an error, not skipped (go-cni).
        std::fs::write(d.join("10-a.json"), "{").unwrap();
        let e = load_dir(&d).unwrap_err();
        assert!(e.not_ready());
        assert!(e.to_string().contains("10-a.json"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn chaining_passes_name_version_prev_result_and_port_mappings() {
        let list = ConfList::parse(
            Path::new("a.conflist"),
            &default_conflist("net", "br9", "10.9.0.0/24", None),
        )
        .unwrap();
        let ports = [PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: String::new(),
        }];
        let first = plugin_conf(&list, 0, None, &ports);
        assert_eq!(first["name"], "net");
        assert_eq!(first["cniVersion"], "1.0.0");
        assert!(first.get("prevResult").is_none());
        // bridge does not declare the capability.
        assert!(first.get("runtimeConfig").is_none());
        let prev = serde_json::json!({"cniVersion": "1.0.0", "ips": [{"address": "10.9.0.2/24"}]});
        let second = plugin_conf(&list, 1, Some(&prev), &ports);
        assert_eq!(second["prevResult"], prev);
        assert_eq!(
            second["runtimeConfig"]["portMappings"],
            serde_json::json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}])
        );
        assert!(
            plugin_conf(&list, 1, Some(&prev), &[])
                .get("runtimeConfig")
                .is_none()
        );
    }

    #[test]
    fn pod_ips_are_those_inside_the_namespace() {
        let r = serde_json::json!({
            "interfaces": [
                {"name": "br0"},
                {"name": "veth1"},
                {"name": "eth0", "sandbox": "/ns"},
            ],
            "ips": [
                {"interface": 2, "address": "10.9.0.2/24", "gateway": "10.9.0.1"},
                {"interface": 0, "address": "10.9.0.1/24"},
                {"interface": 2, "address": "fd00::2/64"},
            ],
        });
        let ips: Vec<String> = pod_ips(&r).iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["10.9.0.2", "fd00::2"]);
        let bare = serde_json::json!({"ips": [{"address": "10.1.1.1/32"}]});
        assert_eq!(
            pod_ips(&bare),
            ["10.1.1.1".parse::<std::net::IpAddr>().unwrap()]
        );
        assert!(pod_ips(&Value::Null).is_empty());
    }

    /// A plugin that records its environment and stdin, then prints a
    /// result naming itself (or an error result, or hangs).
    fn fake_plugin(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\nlog={log}\nenv | grep '^CNI_' | sort > \"$log/{name}.$CNI_COMMAND.env\"\necho \"PATH=$PATH\" >> \"$log/{name}.$CNI_COMMAND.env\"\ncat > \"$log/{name}.$CNI_COMMAND.in\"\n{body}\n",
                log = dir.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn plugins_run_in_order_with_their_environment() {
        let d = tmp("exec");
        fake_plugin(
            &d,
            "one",
            r#"echo '{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/n"}],"ips":[{"interface":0,"address":"10.7.0.9/24"}]}'"#,
        );
        fake_plugin(
            &d,
            "two",
            r#"sed 's/.*"prevResult":\(.*\),"runtimeConfig".*/\1/' "$log/two.$CNI_COMMAND.in""#,
        );
        let list = ConfList::parse(
            &d.join("x.conflist"),
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"one"},{"type":"two","capabilities":{"portMappings":true}}]}"#,
        )
        .unwrap();
        let cni = Cni {
            bin_dirs: vec![d.join("nothing-here"), d.clone()],
            timeout: Duration::from_secs(10),
        };
        let args = [
            ("K8S_POD_NAMESPACE", "default".to_string()),
            ("K8S_POD_NAME", "web".to_string()),
        ];
        let ports = [PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "udp".into(),
            host_ip: String::new(),
        }];
        let inv = Invocation {
            container_id: "kl-abc",
            netns: "/run/ns/x",
            ifname: "eth0",
            args: &args,
            port_mappings: &ports,
        };
        let result = cni.add(&list, &inv).unwrap();
        assert_eq!(
            pod_ips(&result),
            ["10.7.0.9".parse::<std::net::IpAddr>().unwrap()]
        );
        let env = std::fs::read_to_string(d.join("one.ADD.env")).unwrap();
        for want in [
            "CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME=web\n",
            "CNI_COMMAND=ADD\n",
            "CNI_CONTAINERID=kl-abc\n",
            "CNI_IFNAME=eth0\n",
            "CNI_NETNS=/run/ns/x\n",
            &format!(
                "CNI_PATH={}:{}\n",
                d.join("nothing-here").display(),
                d.display()
            ),
            &format!("PATH={}\n", std::env::var("PATH").unwrap()),
        ] {
            assert!(env.contains(want), "{want:?} not in {env}");
        }
        // Never in the agent's own environment.
        assert!(std::env::var_os("CNI_COMMAND").is_none());
        let second: Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("two.ADD.in")).unwrap()).unwrap();
        assert_eq!(second["prevResult"]["ips"][0]["address"], "10.7.0.9/24");
        assert_eq!(
            second["runtimeConfig"]["portMappings"][0]["protocol"],
            "udp"
        );

        // DEL: in reverse, each given the stored result.
        cni.del(&list, &inv, Some(&result)).unwrap();
        for p in ["one", "two"] {
            let conf: Value = serde_json::from_str(
                &std::fs::read_to_string(d.join(format!("{p}.DEL.in"))).unwrap(),
            )
            .unwrap();
            assert_eq!(conf["prevResult"], result, "{p}");
        }
        let t = |p: &str| {
            std::fs::metadata(d.join(format!("{p}.DEL.in")))
                .unwrap()
                .modified()
                .unwrap()
        };
        assert!(t("two") <= t("one"));

        // An error result names the plugin and its message.
        fake_plugin(
            &d,
            "one",
            r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"no IP addresses available","details":"range 10.7.0.0/30"}'; exit 1"#,
        );
        let e = cni.add(&list, &inv).unwrap_err().to_string();
        assert_eq!(
            e,
            "plugin type=\"one\" failed (add): no IP addresses available; range 10.7.0.0/30"
        );
        fake_plugin(&d, "one", "echo oops >&2; exit 3");
        let e = cni.add(&list, &inv).unwrap_err().to_string();
        assert_eq!(
            e,
            "plugin type=\"one\" failed (add): netplugin failed: \"oops\""
        );
        // A missing binary: not ready, before anything ran.
        std::fs::remove_file(d.join("two.ADD.in")).unwrap();
        std::fs::remove_file(d.join("two")).unwrap();
        let e = cni.add(&list, &inv).unwrap_err();
        assert!(e.not_ready());
        assert!(
            e.to_string()
                .starts_with("failed to find plugin \"two\" in path"),
            "{e}"
        );
        assert!(!d.join("two.ADD.in").exists());
        // A plugin that hangs is killed at the deadline.
        fake_plugin(&d, "two", "exec sleep 30");
        let quick = Cni {
            timeout: Duration::from_millis(300),
            ..cni.clone()
        };
        fake_plugin(&d, "one", "echo '{}'");
        let t0 = Instant::now();
        let e = quick.add(&list, &inv).unwrap_err();
        assert!(matches!(e, CniError::Timeout { .. }), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        std::fs::remove_dir_all(&d).unwrap();
    }
}

//! Pod networking through CNI, as containerd's CRI plugin does it for the
//! kubelet: the pod's pinned network namespace is attached with ADD once
//! the sandbox exists, and detached with DEL before the namespace goes.
//! The ADD result is kept in `<rootDir>/pods/<uid>/network.json`, so that
//! an agent restart finds the pod's addresses without a new ADD and a DEL
//! gets the result it needs (the bridge and portmap plugins clean up from
//! it). A file written before the ADD (without a result) tells a restart
//! that an ADD may have run half: it is undone with a DEL before a new one.
//!
//! [`cni`] runs the plugins, [`dns`] makes the pod's hosts and resolv.conf.

pub mod cni;
pub mod dns;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

pub use cni::{CniError, ConfList, PortMapping};

/// The name of the network, the bridge and the file of the default
/// configuration, written when the configuration directory has none.
pub const DEFAULT_NETWORK: &str = "kubelet-lite";
pub const DEFAULT_BRIDGE: &str = "kubelite0";
pub const DEFAULT_CONFLIST: &str = "10-kubelet-lite.conflist";
/// The pods' interface inside their namespace, as every runtime names it.
pub const IFNAME: &str = "eth0";
/// CNI container IDs of our pods: the prefix and the pod UID. The prefix
/// tells our host-local reservations from other runtimes'.
pub const CONTAINER_ID_PREFIX: &str = "kubelet-lite-";
const STATE_FILE: &str = "network.json";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// No configuration, a broken one, or a plugin missing: the kubelet's
    /// `NetworkNotReady`.
    #[error("network is not ready: {0}")]
    NotReady(CniError),
    #[error("failed to set up network for pod {pod}: {source}")]
    Attach { pod: String, source: CniError },
    #[error("failed to tear down network of pod {pod}: {source}")]
    Detach { pod: String, source: CniError },
    #[error("hostPort {port}/{protocol} is already used by pod {other}")]
    PortConflict {
        port: u16,
        protocol: String,
        other: String,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pod network state {path}: {message}")]
    State { path: PathBuf, message: String },
}

impl NetworkError {
    fn io<'a>(
        what: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(std::io::Error) -> NetworkError + 'a {
        move |source| NetworkError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

impl From<NetworkError> for crate::pod::PodError {
    fn from(e: NetworkError) -> crate::pod::PodError {
        match e {
            NetworkError::NotReady(_) => crate::pod::PodError::NetworkNotReady(e.to_string()),
            _ => crate::pod::PodError::CreatePodSandbox(e.to_string()),
        }
    }
}

/// Where the configuration and the plugins are.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The configuration directory (`cniConfDir`).
    pub conf_dir: PathBuf,
    /// Plugin directories, searched in order (`cniBinDir`).
    pub bin_dirs: Vec<PathBuf>,
    /// Subnet of the default configuration (`podCIDR`).
    pub pod_cidr: String,
    /// Deadline of one plugin process.
    pub timeout: Duration,
    /// `<rootDir>/pods`: the pod directories and their state files.
    pub pods_dir: PathBuf,
}

/// The pod to attach.
#[derive(Debug, Clone)]
pub struct PodRef<'a> {
    pub uid: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    /// The pinned network namespace.
    pub netns: &'a Path,
    pub port_mappings: &'a [PortMapping],
}

/// What the pod got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub ips: Vec<IpAddr>,
    /// A new ADD ran (not a result found again after a restart).
    pub added: bool,
}

/// What is kept per pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    container_id: String,
    uid: String,
    namespace: String,
    name: String,
    netns: PathBuf,
    /// The namespace's inode: a namespace made again at the same path
    /// (after a reboot) is another one and needs a new ADD.
    netns_inode: u64,
    /// The configuration the ADD ran with: the DEL runs with it too.
    config: ConfList,
    port_mappings: Vec<PortMapping>,
    /// `None` while the ADD runs, or when it was cut short.
    result: Option<Value>,
}

impl Stored {
    fn args(&self) -> Vec<(&'static str, String)> {
        cni_args(&self.namespace, &self.name, &self.container_id, &self.uid)
    }
}

/// `CNI_ARGS` as containerd passes them for the kubelet.
fn cni_args(namespace: &str, name: &str, id: &str, uid: &str) -> Vec<(&'static str, String)> {
    vec![
        ("IgnoreUnknown", "1".to_string()),
        ("K8S_POD_NAMESPACE", namespace.to_string()),
        ("K8S_POD_NAME", name.to_string()),
        ("K8S_POD_INFRA_CONTAINER_ID", id.to_string()),
        ("K8S_POD_UID", uid.to_string()),
    ]
}

/// Pod networks over CNI. Blocking: call off the async executor. Two
/// operations on one pod never run at once (a per-pod lock).
pub struct Network {
    cfg: NetworkConfig,
    cni: cni::Cni,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Held while host ports are checked and claimed.
    ports: Mutex<()>,
}

impl Network {
    pub fn new(cfg: NetworkConfig) -> Network {
        let cni = cni::Cni {
            bin_dirs: cfg.bin_dirs.clone(),
            timeout: cfg.timeout,
        };
        Network {
            cfg,
            cni,
            locks: Mutex::new(HashMap::new()),
            ports: Mutex::new(()),
        }
    }

    /// Writes the default configuration when the directory has none, so
    /// that installing the plugins is all a node needs. Returns the file
    /// written.
    pub fn write_default_config(&self) -> Result<Option<PathBuf>, NetworkError> {
        match cni::load_dir(&self.cfg.conf_dir) {
            Ok(Some(_)) | Err(_) => return Ok(None),
            Ok(None) => {}
        }
        let dir = &self.cfg.conf_dir;
        std::fs::create_dir_all(dir).map_err(NetworkError::io("creating", dir))?;
        let path = dir.join(DEFAULT_CONFLIST);
        let text = cni::default_conflist(DEFAULT_NETWORK, DEFAULT_BRIDGE, &self.cfg.pod_cidr, None);
        write_atomic(&path, text.as_bytes())?;
        Ok(Some(path))
    }

    fn lock(&self, uid: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(locks.entry(uid.to_string()).or_default())
    }

    fn forget_lock(&self, uid: &str) {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.remove(uid);
    }

    fn state_path(&self, uid: &str) -> PathBuf {
        self.cfg.pods_dir.join(uid).join(STATE_FILE)
    }

    /// Whether pods can be attached: a configuration that parses, and
    /// every plugin it names in the plugin directories (the kubelet's
    /// `NetworkNotReady` otherwise). Checked when a sandbox is made, so
    /// that a network that cannot work stops the pod before anything else
    /// is created.
    pub fn ready(&self) -> Result<(), NetworkError> {
        let config = self.config()?;
        for i in 0..config.plugins.len() {
            self.cni
                .find(config.plugin_type(i))
                .map_err(NetworkError::NotReady)?;
        }
        Ok(())
    }

    /// The configuration in force: the first file of the directory.
    fn config(&self) -> Result<ConfList, NetworkError> {
        match cni::load_dir(&self.cfg.conf_dir) {
            Ok(Some(c)) => Ok(c),
            Ok(None) => Err(NetworkError::NotReady(CniError::NoConfig {
                dir: self.cfg.conf_dir.clone(),
            })),
            Err(e) => Err(NetworkError::NotReady(e)),
        }
    }

    /// Attaches the pod's namespace (ADD), or finds its earlier attachment
    /// when the namespace is the same one. A failed ADD is undone (DEL), so
    /// that nothing stays half set up.
    pub fn attach(&self, pod: &PodRef) -> Result<Attachment, NetworkError> {
        let lock = self.lock(pod.uid);
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.state_path(pod.uid);
        let inode = inode(pod.netns).map_err(NetworkError::io("reading", pod.netns))?;
        if let Some(old) = read_state(&path)? {
            // The namespace is compared, not its path: the path names the
            // agent's thread in the pin namespace, another after a restart.
            if let Some(result) = &old.result
                && old.netns_inode == inode
            {
                return Ok(Attachment {
                    ips: cni::pod_ips(result),
                    added: false,
                });
            }
            // Another namespace, or an ADD cut short: undone first, so that
            // its address and rules are released.
            self.del(&old, pod.netns)?;
            remove_state(&path)?;
        }
        let config = self.config()?;
        for i in 0..config.plugins.len() {
            self.cni
                .find(config.plugin_type(i))
                .map_err(NetworkError::NotReady)?;
        }
        let mut stored = Stored {
            container_id: format!("{CONTAINER_ID_PREFIX}{}", pod.uid),
            uid: pod.uid.to_string(),
            namespace: pod.namespace.to_string(),
            name: pod.name.to_string(),
            netns: pod.netns.to_path_buf(),
            netns_inode: inode,
            config,
            port_mappings: pod.port_mappings.to_vec(),
            result: None,
        };
        {
            // Checked and claimed together: two pods asking for one port
            // at once do not both get it.
            let _ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
            self.check_ports(pod)?;
            write_state(&path, &stored)?;
        }
        let netns = pod.netns.to_string_lossy();
        let args = stored.args();
        let inv = cni::Invocation {
            container_id: &stored.container_id,
            netns: &netns,
            ifname: IFNAME,
            args: &args,
            port_mappings: pod.port_mappings,
        };
        let key = format!("{}/{}", pod.namespace, pod.name);
        match self.cni.add(&stored.config, &inv) {
            Ok(result) => {
                let ips = cni::pod_ips(&result);
                stored.result = Some(result);
                if let Err(e) = write_state(&path, &stored) {
                    let _ = self.del(&stored, pod.netns);
                    let _ = remove_state(&path);
                    return Err(e);
                }
                info!(pod = %key, ips = ?ips, network = %stored.config.name, "pod network attached");
                Ok(Attachment { ips, added: true })
            }
            Err(e) => {
                // As containerd does after a failed ADD: DEL, so that the
                // plugins that did run release what they took.
                match self.del(&stored, pod.netns) {
                    Ok(()) => {
                        let _ = remove_state(&path);
                    }
                    Err(d) => warn!(pod = %key, "undoing a failed network ADD: {d}"),
                }
                Err(if e.not_ready() {
                    NetworkError::NotReady(e)
                } else {
                    NetworkError::Attach {
                        pod: key,
                        source: e,
                    }
                })
            }
        }
    }

    /// Host ports of `pod` already taken by another pod of this agent.
    fn check_ports(&self, pod: &PodRef) -> Result<(), NetworkError> {
        if pod.port_mappings.is_empty() {
            return Ok(());
        }
        for entry in std::fs::read_dir(&self.cfg.pods_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let uid = entry.file_name().to_string_lossy().into_owned();
            if uid == pod.uid {
                continue;
            }
            let Ok(Some(other)) = read_state(&entry.path().join(STATE_FILE)) else {
                continue;
            };
            for m in pod.port_mappings {
                if other.port_mappings.iter().any(|o| {
                    o.host_port == m.host_port
                        && o.protocol == m.protocol
                        && (o.host_ip.is_empty() || m.host_ip.is_empty() || o.host_ip == m.host_ip)
                }) {
                    return Err(NetworkError::PortConflict {
                        port: m.host_port,
                        protocol: m.protocol.to_uppercase(),
                        other: format!("{}/{}", other.namespace, other.name),
                    });
                }
            }
        }
        Ok(())
    }

    /// DEL with the stored configuration and result. The namespace (at
    /// `netns` now) is passed only while the one of the ADD is still pinned
    /// (not another one pinned at the same path since): plugins release
    /// addresses and rules without one.
    fn del(&self, s: &Stored, netns: &Path) -> Result<(), NetworkError> {
        let same = inode(netns).is_ok_and(|i| i == s.netns_inode);
        let netns = if same && crate::hostfs::is_mount_point(netns) {
            netns.to_string_lossy().into_owned()
        } else {
            String::new()
        };
        let args = s.args();
        let inv = cni::Invocation {
            container_id: &s.container_id,
            netns: &netns,
            ifname: IFNAME,
            args: &args,
            port_mappings: &s.port_mappings,
        };
        self.cni
            .del(&s.config, &inv, s.result.as_ref())
            .map_err(|source| NetworkError::Detach {
                pod: format!("{}/{}", s.namespace, s.name),
                source,
            })
    }

    /// Detaches the pod of `pod_dir`, whose network namespace is pinned at
    /// `netns`, (DEL) and forgets its result. Idempotent; an error leaves
    /// the state for the caller's retry. Call before the namespace pin goes
    /// (a DEL without it still releases the address, but not the interface
    /// inside).
    pub fn detach(&self, pod_dir: &Path, netns: &Path) -> Result<(), NetworkError> {
        let uid = pod_dir
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let lock = self.lock(&uid);
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        let path = pod_dir.join(STATE_FILE);
        let Some(stored) = read_state(&path)? else {
            return Ok(());
        };
        self.del(&stored, netns)?;
        remove_state(&path)?;
        drop(_held);
        self.forget_lock(&uid);
        info!(pod = %format!("{}/{}", stored.namespace, stored.name), "pod network detached");
        Ok(())
    }

    /// Releases what pods unknown to the agent still hold: the stored
    /// results of pod directories whose UID is not in `known` (DEL), and
    /// the current configuration's host-local reservations made under our
    /// container IDs for such UIDs (an ADD cut short before its result was
    /// kept). Call once at start, with the UIDs of the pods wanted and of
    /// those being torn down; `netns_of` gives the network namespace path
    /// of a pod directory. Returns what could not be released.
    pub fn release_orphans(
        &self,
        known: &HashSet<String>,
        netns_of: impl Fn(&Path) -> PathBuf,
    ) -> Vec<NetworkError> {
        let mut errors = vec![];
        let mut done: HashSet<String> = HashSet::new();
        for entry in std::fs::read_dir(&self.cfg.pods_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let uid = entry.file_name().to_string_lossy().into_owned();
            if known.contains(&uid) || !entry.path().join(STATE_FILE).exists() {
                continue;
            }
            match self.detach(&entry.path(), &netns_of(&entry.path())) {
                Ok(()) => {
                    done.insert(uid);
                }
                Err(e) => errors.push(e),
            }
        }
        let Ok(Some(config)) = cni::load_dir(&self.cfg.conf_dir) else {
            return errors;
        };
        for dir in config.host_local_dirs() {
            for (ip, id) in host_local_reservations(&dir) {
                let Some(uid) = id.strip_prefix(CONTAINER_ID_PREFIX) else {
                    continue;
                };
                if known.contains(uid) || done.contains(uid) {
                    continue;
                }
                info!(uid, %ip, network = %config.name, "releasing the address of a pod that is gone");
                let stored = Stored {
                    container_id: id.clone(),
                    uid: uid.to_string(),
                    namespace: String::new(),
                    name: String::new(),
                    netns: PathBuf::new(),
                    netns_inode: 0,
                    config: config.clone(),
                    port_mappings: vec![],
                    result: None,
                };
                match self.del(&stored, Path::new("")) {
                    Ok(()) => {
                        done.insert(uid.to_string());
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        errors
    }
}

/// (address, container ID) of each reservation in a host-local data
/// directory: files named by the address holding the container ID, then
/// the interface name on the next line.
pub fn host_local_reservations(dir: &Path) -> Vec<(IpAddr, String)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let ip: IpAddr = e.file_name().to_str()?.parse().ok()?;
            let text = std::fs::read_to_string(e.path()).ok()?;
            let id = text.lines().next()?.trim().to_string();
            Some((ip, id))
        })
        .collect()
}

/// The `hostPort`s of a pod's containers (TCP by default), for portmap.
pub fn port_mappings(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<PortMapping> {
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let host_port = u16::try_from(p.host_port?).ok().filter(|h| *h > 0)?;
            Some(PortMapping {
                host_port,
                container_port: u16::try_from(p.container_port).ok()?,
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_lowercase(),
                host_ip: p.host_ip.clone().unwrap_or_default(),
            })
        })
        .collect()
}

fn inode(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map(|m| m.ino())
}

fn read_state(path: &Path) -> Result<Option<Stored>, NetworkError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| NetworkError::State {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NetworkError::io("reading", path)(e)),
    }
}

fn write_state(path: &Path, s: &Stored) -> Result<(), NetworkError> {
    let text = serde_json::to_vec_pretty(s).expect("the state serializes");
    write_atomic(path, &text)
}

fn remove_state(path: &Path) -> Result<(), NetworkError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetworkError::io("removing", path)(e)),
    }
}

/// Written whole or not at all: a crash leaves the old file or the new.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), NetworkError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(NetworkError::io("creating", &tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(NetworkError::io("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(NetworkError::io("renaming to", path))
}

/// The node's address (a pod's `hostIP`): the first IPv4 address of the
/// interface of the default route, else of any interface that is up and
/// not loopback, else 127.0.0.1 (a node without a network).
pub fn node_ip() -> IpAddr {
    let route = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let default_iface = default_route_interface(&route);
    let addrs: Vec<(String, IpAddr, bool)> = nix::ifaddrs::getifaddrs()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let ip = a.address?.as_sockaddr_in()?.ip();
            let up = a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
            Some((a.interface_name, IpAddr::V4(ip), up))
        })
        .collect();
    pick_node_ip(default_iface.as_deref(), &addrs)
}

fn default_route_interface(route: &str) -> Option<String> {
    route.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"00000000") && f.get(7) == Some(&"00000000")).then(|| f[0].to_string())
    })
}

fn pick_node_ip(default_iface: Option<&str>, addrs: &[(String, IpAddr, bool)]) -> IpAddr {
    default_iface
        .and_then(|d| addrs.iter().find(|(n, _, _)| n == d))
        .or_else(|| addrs.iter().find(|(_, ip, up)| *up && !ip.is_loopback()))
        .map_or(IpAddr::from([127, 0, 0, 1]), |(_, ip, _)| *ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn node_ip_follows_the_default_route() {
        let route = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth1\t0010A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_route_interface(route).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface("Iface\n"), None);
        let a = |n: &str, ip: [u8; 4], up| (n.to_string(), IpAddr::from(ip), up);
        let addrs = [
            a("lo", [127, 0, 0, 1], true),
            a("eth1", [10, 0, 0, 2], true),
            a("eth0", [192, 168, 0, 5], true),
        ];
        assert_eq!(
            pick_node_ip(Some("eth0"), &addrs),
            IpAddr::from([192, 168, 0, 5])
        );
        assert_eq!(pick_node_ip(None, &addrs), IpAddr::from([10, 0, 0, 2]));
        assert_eq!(
            pick_node_ip(None, &addrs[..1]),
            IpAddr::from([127, 0, 0, 1])
        );
    }

    #[test]
    fn host_ports_of_the_containers() {
        let spec: k8s_openapi::api::core::v1::PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [
                {"name": "a", "ports": [
                    {"containerPort": 80, "hostPort": 8080},
                    {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "127.0.0.1"},
                    {"containerPort": 9090},
                ]},
                {"name": "b"},
            ]
        }))
        .unwrap();
        let m = port_mappings(&spec);
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!([
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
            ])
        );
    }

    /// A fake plugin that gives out 10.8.0.<n> from a counter and records
    /// every call, so attach/detach/orphans can be followed without root.
    fn fake_network(tag: &str) -> (PathBuf, Network) {
        let d = std::env::temp_dir().join(format!("kl-net-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        for sub in ["bin", "conf", "pods", "ipam/fake"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let plugin = d.join("bin/fake");
        std::fs::write(
            &plugin,
            format!(
                "#!/bin/sh\nd={d}\ncat > /dev/null\necho \"$CNI_COMMAND $CNI_CONTAINERID netns=$CNI_NETNS\" >> $d/calls\n\
                 if [ \"$CNI_COMMAND\" = ADD ]; then\n  [ -e $d/fail ] && {{ echo '{{\"code\":11,\"msg\":\"no IP addresses available\"}}'; exit 1; }}\n\
                 n=$(wc -l < $d/calls)\n  printf '%s\\r\\neth0' \"$CNI_CONTAINERID\" > $d/ipam/fake/10.8.0.$n\n\
                 echo \"{{\\\"cniVersion\\\":\\\"1.0.0\\\",\\\"ips\\\":[{{\\\"address\\\":\\\"10.8.0.$n/24\\\"}}]}}\"\n\
                 else\n  grep -l \"$CNI_CONTAINERID\" $d/ipam/fake/* 2>/dev/null | xargs -r rm -f\nfi\n",
                d = d.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            d.join("conf/10-fake.conflist"),
            format!(
                r#"{{"cniVersion":"1.0.0","name":"fake","plugins":[{{"type":"fake","ipam":{{"type":"host-local","dataDir":"{}"}}}}]}}"#,
                d.join("ipam").display()
            ),
        )
        .unwrap();
        let net = Network::new(NetworkConfig {
            conf_dir: d.join("conf"),
            bin_dirs: vec![d.join("bin")],
            pod_cidr: "10.8.0.0/24".into(),
            timeout: Duration::from_secs(10),
            pods_dir: d.join("pods"),
        });
        (d, net)
    }

    fn pod<'a>(uid: &'a str, netns: &'a Path, ports: &'a [PortMapping]) -> PodRef<'a> {
        PodRef {
            uid,
            namespace: "default",
            name: uid,
            netns,
            port_mappings: ports,
        }
    }

    fn calls(d: &Path) -> Vec<String> {
        std::fs::read_to_string(d.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn attach_keeps_the_result_and_detach_releases_it() {
        let (d, net) = fake_network("attach");
        let ns = d.join("pods/a/ns-net");
        std::fs::create_dir_all(d.join("pods/a")).unwrap();
        std::fs::write(&ns, "").unwrap();
        let first = net.attach(&pod("a", &ns, &[])).unwrap();
        assert!(first.added);
        assert_eq!(first.ips, ["10.8.0.1".parse::<IpAddr>().unwrap()]);
        // Found again: no second ADD.
        let again = net.attach(&pod("a", &ns, &[])).unwrap();
        assert_eq!(again.ips, first.ips);
        assert!(!again.added);
        assert_eq!(calls(&d).len(), 1);
        // Another namespace at the same path (another inode: the new file
        // exists before the old one goes): DEL, then a new ADD.
        std::fs::write(d.join("pods/a/ns-new"), "").unwrap();
        std::fs::rename(d.join("pods/a/ns-new"), &ns).unwrap();
        let other = net.attach(&pod("a", &ns, &[])).unwrap();
        assert!(other.added);
        assert_eq!(calls(&d)[1], "DEL kubelet-lite-a netns=");
        net.detach(&d.join("pods/a"), &ns).unwrap();
        net.detach(&d.join("pods/a"), &ns).unwrap();
        assert_eq!(calls(&d).len(), 4);
        assert!(!d.join("pods/a/network.json").exists());
        assert!(host_local_reservations(&d.join("ipam/fake")).is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn failures_are_undone_and_named() {
        let (d, net) = fake_network("fail");
        std::fs::create_dir_all(d.join("pods/a")).unwrap();
        let ns = d.join("pods/a/ns-net");
        std::fs::write(&ns, "").unwrap();
        std::fs::write(d.join("fail"), "").unwrap();
        let e = net.attach(&pod("a", &ns, &[])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to set up network for pod default/a: plugin type=\"fake\" failed (add): no IP addresses available"
        );
        assert_eq!(
            crate::pod::PodError::from(e).reason(),
            "FailedCreatePodSandBox"
        );
        // The failed ADD was followed by a DEL, and nothing is kept.
        assert_eq!(
            calls(&d),
            [
                "ADD kubelet-lite-a netns=".to_string() + &ns.display().to_string(),
                "DEL kubelet-lite-a netns=".into()
            ]
        );
        assert!(!d.join("pods/a/network.json").exists());
        std::fs::remove_file(d.join("fail")).unwrap();
        // A missing plugin: not ready.
        std::fs::rename(d.join("bin/fake"), d.join("fake.off")).unwrap();
        let e = net.attach(&pod("a", &ns, &[])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("network is not ready: failed to find plugin \"fake\""),
            "{e}"
        );
        assert_eq!(crate::pod::PodError::from(e).reason(), "NetworkNotReady");
        std::fs::rename(d.join("fake.off"), d.join("bin/fake")).unwrap();
        // A conflicting host port.
        let ports = [PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: String::new(),
        }];
        net.attach(&pod("a", &ns, &ports)).unwrap();
        std::fs::create_dir_all(d.join("pods/b")).unwrap();
        let e = net.attach(&pod("b", &ns, &ports)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "hostPort 8080/TCP is already used by pod default/a"
        );
        // A broken configuration: not ready, naming the file.
        std::fs::write(d.join("conf/10-fake.conflist"), "{").unwrap();
        let e = net.attach(&pod("b", &ns, &[])).unwrap_err();
        assert!(e.to_string().contains("10-fake.conflist"), "{e}");
        assert_eq!(crate::pod::PodError::from(e).reason(), "NetworkNotReady");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn orphans_are_released() {
        let (d, net) = fake_network("orphans");
        for uid in ["keep", "gone"] {
            std::fs::create_dir_all(d.join("pods").join(uid)).unwrap();
            let ns = d.join("pods").join(uid).join("ns-net");
            std::fs::write(&ns, "").unwrap();
            net.attach(&pod(uid, &ns, &[])).unwrap();
        }
        // A reservation of ours whose pod left no state (an ADD cut short),
        // and one of another runtime.
        std::fs::write(d.join("ipam/fake/10.8.0.77"), "kubelet-lite-lost\r\neth0").unwrap();
        std::fs::write(d.join("ipam/fake/10.8.0.78"), "abcdef\r\neth0").unwrap();
        let known: HashSet<String> = ["keep".to_string()].into();
        assert!(
            net.release_orphans(&known, |dir| dir.join("ns-net"))
                .is_empty()
        );
        let left: Vec<String> = host_local_reservations(&d.join("ipam/fake"))
            .into_iter()
            .map(|(_, id)| id)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(left, ["abcdef", "kubelet-lite-keep"]);
        assert!(d.join("pods/keep/network.json").exists());
        assert!(!d.join("pods/gone/network.json").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_default_configuration_is_written_only_where_none_is() {
        let (d, net) = fake_network("default");
        assert_eq!(net.write_default_config().unwrap(), None);
        std::fs::remove_file(d.join("conf/10-fake.conflist")).unwrap();
        let written = net.write_default_config().unwrap().unwrap();
        assert_eq!(written, d.join("conf").join(DEFAULT_CONFLIST));
        let list = cni::load_dir(&d.join("conf")).unwrap().unwrap();
        assert_eq!(list.name, DEFAULT_NETWORK);
        assert_eq!(list.plugins[0]["bridge"], DEFAULT_BRIDGE);
        assert_eq!(
            list.plugins[0]["ipam"]["ranges"][0][0]["subnet"],
            "10.8.0.0/24"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}

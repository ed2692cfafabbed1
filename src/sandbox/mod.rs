//! The pod sandbox without a pause container: the network, UTS and IPC
//! namespaces a pod's containers share are created once and pinned by bind
//! mounts of their `/proc/<tid>/ns/*` files (what `ip netns add` does), in
//! the agent's pin namespace ([`pins`]) rather than the host's mount table.
//! They outlive any container and any restart of the agent, and go away
//! when the pins are unmounted. The network namespace is
//! attached to the pod network through CNI ([`crate::network`]) by
//! [`attach`], after [`setup`] made it and while the pod's containers are
//! being created (they join it by path), and detached before its pin goes.
//! The pod's /etc/hosts, /etc/hostname
//! and resolv.conf ([`crate::network::dns`]), and a pod-wide /dev/shm
//! tmpfs, live beside them.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use std::net::IpAddr;
use std::sync::Arc;

use crate::hostfs::{self, is_mount_point};
use crate::manifest::StaticPod;
use crate::network::dns::{self, PodNames};
use crate::network::{self, Network, NetworkError};
use crate::oci::PodContext;

pub mod pins;
pub use pins::Pins;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("creating pod namespaces: {0}")]
    Namespaces(String),
    /// The pod's hostname cannot be made (an FQDN too long).
    #[error("{0}")]
    Names(String),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("unmounting the pod's volumes: {0}")]
    Unmount(String),
    #[error("removing the pod directory: {0}")]
    Remove(#[from] hostfs::RemoveError),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Teardown(Vec<SandboxError>),
}

impl From<SandboxError> for crate::pod::PodError {
    fn from(e: SandboxError) -> crate::pod::PodError {
        match e {
            SandboxError::Network(n) => n.into(),
            e => crate::pod::PodError::CreatePodSandbox(e.to_string()),
        }
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SandboxError + 'a {
    move |source| SandboxError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What a pod asks of its sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub dir: PathBuf,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// Hostname, subdomain, host aliases, DNS policy and config.
    pub names: PodNames,
    pub host_network: bool,
    pub host_ipc: bool,
    /// Size of the pod's /dev/shm tmpfs (Docker's and containerd's 64 MiB).
    pub shm_bytes: u64,
    /// The containers' `hostPort`s.
    pub port_mappings: Vec<network::PortMapping>,
}

impl SandboxSpec {
    /// The sandbox of `pod`, in the pod directory `dir`.
    pub fn of(pod: &StaticPod, dir: PathBuf) -> SandboxSpec {
        let spec = pod.spec();
        SandboxSpec {
            dir,
            uid: pod.uid.clone(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            names: PodNames::of(pod),
            host_network: spec.host_network == Some(true),
            host_ipc: spec.host_ipc == Some(true),
            shm_bytes: 64 << 20,
            port_mappings: network::port_mappings(spec),
        }
    }
}

/// What every sandbox of the node shares.
pub struct Host {
    /// Pod networks; `None`: pods have loopback only (`podNetwork:
    /// loopback`).
    pub network: Option<Arc<Network>>,
    /// The kubelet's `clusterDomain`, for FQDNs.
    pub cluster_domain: String,
    /// The node's resolv.conf (the kubelet's `resolvConf`).
    pub resolv_conf: PathBuf,
    /// The node's hosts file, given to host-network pods.
    pub hosts_file: PathBuf,
    /// The node's address (`status.hostIP`).
    pub host_ip: IpAddr,
    /// Where the pods' namespaces are pinned.
    pub pins: Arc<Pins>,
}

const NS_KINDS: [&str; 3] = pins::KINDS;

/// The UID of the pod whose directory is `dir` (its name).
fn uid_of(dir: &Path) -> String {
    dir.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Host {
    /// The path of namespace `kind` of the pod whose directory is `dir`,
    /// pinned or not: in the host's mount table where an earlier version
    /// of the agent pinned it, in the pin namespace otherwise.
    fn ns_path(&self, dir: &Path, kind: &str) -> PathBuf {
        let legacy = dir.join("ns").join(kind);
        if is_mount_point(&legacy) {
            legacy
        } else {
            self.pins.path(&uid_of(dir), kind)
        }
    }

    /// The path of the network namespace of the pod whose directory is
    /// `dir`, pinned or not.
    pub fn netns_of(&self, dir: &Path) -> PathBuf {
        self.ns_path(dir, "net")
    }
}

/// A sandbox made, its network maybe still to attach.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Without addresses while `attach` is due.
    pub ctx: PodContext,
    /// The pod network is to be attached ([`attach`]) before any container
    /// starts.
    pub attach: bool,
}

/// Creates (or, after an agent restart, finds) the sandbox: namespaces and
/// the managed files; idempotent. The pod network is checked (its
/// configuration and plugins are there), not attached: [`attach`] does
/// that, while the containers are being created. A pod on a CNI network
/// gets a hosts file without its address until then (none of its
/// containers runs before), and keeps the one it has after a restart.
pub fn setup(spec: &SandboxSpec, host: &Host) -> Result<Prepared, SandboxError> {
    let node_hostname = || {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default()
    };
    let hostname = if spec.host_network {
        node_hostname()
    } else {
        spec.names
            .uts_hostname(&host.cluster_domain)
            .map_err(SandboxError::Names)?
    };
    // Read first: the kubelet fails the sandbox when it cannot read it.
    let node_resolv = std::fs::read_to_string(&host.resolv_conf)
        .map_err(io_err("reading the node's resolv.conf", &host.resolv_conf))?;

    std::fs::create_dir_all(&spec.dir).map_err(io_err("creating", &spec.dir))?;
    // As the kubelet makes pod directories: what lies below (secrets and
    // configMaps among it) is not for other users of the host.
    std::fs::set_permissions(&spec.dir, std::fs::Permissions::from_mode(0o750))
        .map_err(io_err("setting the mode of", &spec.dir))?;
    let wanted: Vec<&str> = NS_KINDS
        .iter()
        .copied()
        .filter(|k| match *k {
            "net" | "uts" => !spec.host_network,
            _ => !spec.host_ipc,
        })
        .collect();
    // A pod that an earlier version of the agent pinned in the host's mount
    // table keeps its namespaces there.
    let legacy = spec.dir.join("ns");
    let in_host = !wanted.is_empty() && wanted.iter().all(|k| is_mount_point(&legacy.join(k)));
    if !in_host {
        for k in NS_KINDS {
            unpin(&legacy.join(k))?;
        }
        unpin(&legacy)?;
        if wanted.iter().any(|k| !host.pins.pinned(&spec.uid, k)) {
            // Namespaces are made together so that they stay consistent;
            // any half-made earlier set is dropped first.
            let uts = wanted.contains(&"uts");
            let net = wanted.contains(&"net");
            let hostname = hostname.clone();
            host.pins
                .pin_new(&spec.uid, &wanted, move || {
                    if uts {
                        nix::unistd::sethostname(&hostname)
                            .map_err(|e| format!("sethostname: {e}"))?;
                    }
                    if net {
                        loopback_up().map_err(|e| format!("bringing up lo: {e}"))?;
                    }
                    Ok(())
                })
                .map_err(SandboxError::Namespaces)?;
        }
    }

    let (pod_ips, attach): (Vec<IpAddr>, bool) = match (&host.network, spec.host_network) {
        (_, true) => (vec![host.host_ip], false),
        (None, false) => (vec![IpAddr::from([127, 0, 0, 1])], false),
        (Some(net), false) => {
            // A network that cannot be attached (no configuration, a
            // missing plugin) fails here, before any container is made.
            net.ready()?;
            (vec![], true)
        }
    };

    let write = |name: &str, text: String| -> Result<PathBuf, SandboxError> {
        let p = spec.dir.join(name);
        write_in_place(&p, &text)?;
        Ok(p)
    };
    let hosts_file = spec.dir.join(HOSTS_FILE);
    if spec.host_network {
        let node = std::fs::read_to_string(&host.hosts_file)
            .map_err(io_err("reading the node's hosts file", &host.hosts_file))?;
        write(HOSTS_FILE, dns::node_hosts_file(&node, &spec.names))?;
    } else if !attach || !hosts_file.exists() {
        write(
            HOSTS_FILE,
            dns::hosts_file(&spec.names, &host.cluster_domain, &pod_ips),
        )?;
    }
    let (resolv, warnings) = dns::resolv_conf(&spec.names, &dns::parse_resolv_conf(&node_resolv));
    let hostname_file = write("etc-hostname", format!("{hostname}\n"))?;
    let resolv_conf = write("resolv.conf", resolv)?;

    let shm = if spec.host_ipc {
        None
    } else {
        let shm = spec.dir.join("shm");
        std::fs::create_dir_all(&shm).map_err(io_err("creating", &shm))?;
        if !is_mount_point(&shm) {
            let opts = format!("mode=1777,size={}", spec.shm_bytes);
            mount(
                Some("shm"),
                &shm,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(opts.as_str()),
            )
            .map_err(|e| io_err("mounting tmpfs on", &shm)(e.into()))?;
        }
        Some(shm)
    };
    let pinned = |k: &str| wanted.contains(&k).then(|| host.ns_path(&spec.dir, k));
    Ok(Prepared {
        ctx: PodContext {
            net: pinned("net"),
            uts: pinned("uts"),
            ipc: pinned("ipc"),
            hosts_file,
            hostname_file,
            resolv_conf,
            shm,
            hostname,
            cgroupns: Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
            pod_ips,
            host_ip: host.host_ip,
            warnings,
        },
        attach,
    })
}

/// The pod's hosts file, in its directory.
const HOSTS_FILE: &str = "etc-hosts";

/// Attaches the pod's pinned network namespace to the pod network (CNI
/// ADD, or the result kept from before a restart; a failed ADD is undone)
/// and writes the pod's address into its hosts file. Returns the
/// addresses. Blocking.
pub fn attach(spec: &SandboxSpec, host: &Host) -> Result<Vec<IpAddr>, SandboxError> {
    let Some(net) = &host.network else {
        return Ok(vec![IpAddr::from([127, 0, 0, 1])]);
    };
    let netns = host.netns_of(&spec.dir);
    let ips = net
        .attach(&network::PodRef {
            uid: &spec.uid,
            namespace: &spec.namespace,
            name: &spec.name,
            netns: &netns,
            port_mappings: &spec.port_mappings,
        })?
        .ips;
    let hosts = dns::hosts_file(&spec.names, &host.cluster_domain, &ips);
    write_in_place(&spec.dir.join(HOSTS_FILE), &hosts)?;
    Ok(ips)
}

/// Writes a managed file in place, only when its text changes. Containers
/// bind-mount these files: a new file renamed over one would not reach a
/// container already created (its mount holds the old inode), and
/// rewriting the same text would let a running container read it half
/// written.
fn write_in_place(path: &Path, text: &str) -> Result<(), SandboxError> {
    match std::fs::read(path) {
        Ok(old) if old == text.as_bytes() => Ok(()),
        _ => std::fs::write(path, text).map_err(io_err("writing", path)),
    }
}

/// Sets IFF_UP on `lo` in the calling thread's network namespace. A new
/// network namespace starts with loopback down; runc only brings it up when
/// it creates the namespace itself, not when joining a pinned one.
fn loopback_up() -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = src.cast_signed();
    }
    // SAFETY: SIOCGIFFLAGS reads the interface named in `req` and writes its
    // flags into the union; `req` lives across the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let up = libc::c_short::try_from(libc::IFF_UP).unwrap_or(1);
    // SAFETY: the flags member is the one SIOCGIFFLAGS just filled.
    unsafe { req.ifr_ifru.ifru_flags |= up };
    // SAFETY: as above, SIOCSIFFLAGS reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unmounts a pin or tmpfs if mounted and removes the file or directory.
fn unpin(path: &Path) -> Result<(), SandboxError> {
    if is_mount_point(path) {
        umount2(path, MntFlags::MNT_DETACH).map_err(|e| io_err("unmounting", path)(e.into()))?;
    }
    match std::fs::remove_file(path).or_else(|e| {
        if e.kind() == io::ErrorKind::IsADirectory || path.is_dir() {
            std::fs::remove_dir(path)
        } else {
            Err(e)
        }
    }) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", path)(e)),
    }
}

/// Releases the namespaces and the shm tmpfs, unmounts the volumes and
/// removes the pod directory. Only call once no container of the pod runs.
/// Every step is tried even when an earlier one fails (the caller retries
/// the whole, which is idempotent). The removal never crosses into another
/// filesystem: whatever could not be unmounted stays, with its data, and is
/// named in the error.
///
/// The pod network is detached (CNI DEL) first, while the namespace is
/// still pinned; if that fails nothing else is touched, so that the kept
/// result (in the pod directory) is there for the retry.
pub fn teardown(dir: &Path, host: &Host) -> Result<(), SandboxError> {
    if !dir.exists() {
        return Ok(());
    }
    if let Some(net) = &host.network {
        net.detach(dir, &host.netns_of(dir))?;
    }
    let mut errors = vec![];
    for k in NS_KINDS {
        if let Err(e) = unpin(&dir.join("ns").join(k)) {
            errors.push(e);
        }
    }
    if let Err(e) = host.pins.unpin(&uid_of(dir)) {
        errors.push(SandboxError::Namespaces(e));
    }
    if let Err(e) = unpin(&dir.join("shm")) {
        errors.push(e);
    }
    // Volumes (tmpfs, NFS, subPath binds): unmounted before anything is
    // removed; the removal would not enter them anyway.
    if let Err(e) = crate::volume::mount::unmount_below(dir) {
        errors.push(SandboxError::Unmount(e));
    }
    if let Err(e) = hostfs::remove_all_one_filesystem(dir) {
        errors.push(e.into());
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(SandboxError::Teardown(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    /// A pod directory holding a FUSE mount whose server never answers (the
    /// /dev/fuse descriptor is held and never read, as a dead NFS server
    /// never answers) is torn down at once, and what was below the mount is
    /// not touched. Needs root and /dev/fuse; skipped without them.
    #[test]
    fn teardown_does_not_hang_on_a_dead_filesystem() {
        if !nix::unistd::Uid::effective().is_root() || !Path::new("/dev/fuse").exists() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("kl-sandbox-fuse-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let target = dir.join("volumes/kubernetes.io~nfs/dead");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(dir.join("plain"), b"x").unwrap();
        let fuse = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .unwrap();
        let opts = format!(
            "fd={},rootmode=40000,user_id=0,group_id=0",
            fuse.as_raw_fd()
        );
        mount(
            Some("dead"),
            &target,
            Some("fuse"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .unwrap();
        let pin_dir = std::env::temp_dir().join(format!("kl-sandbox-pins-{}", std::process::id()));
        let pins = Arc::new(Pins::open(&pin_dir).unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.clone();
        let started = Instant::now();
        std::thread::spawn(move || {
            let host = Host {
                pins,
                network: None,
                cluster_domain: String::new(),
                resolv_conf: "/etc/resolv.conf".into(),
                hosts_file: "/etc/hosts".into(),
                host_ip: IpAddr::from([127, 0, 0, 1]),
            };
            let _ = tx.send(teardown(&d, &host).map_err(|e| e.to_string()));
        });
        let result = rx.recv_timeout(Duration::from_secs(10));
        // Whatever happened, the mount goes and the server hangs up.
        let _ = umount2(&target, MntFlags::MNT_DETACH);
        drop(fuse);
        let _ = umount2(&pin_dir.join("namespace"), MntFlags::MNT_DETACH);
        let _ = umount2(&pin_dir, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&pin_dir);
        let result = result.expect("teardown hung on a dead filesystem");
        assert!(result.is_ok(), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!dir.exists());
    }
}

//! Agent configuration: a YAML file whose every key has a default, so that the
//! agent runs with no file at all. Unknown keys are rejected by name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

/// Everything the agent can be told. Field names follow the kubelet's
/// KubeletConfiguration where one exists (`staticPodPath`, `fileCheckFrequency`,
/// `podLogsDir`, `cgroupRoot`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// Directory watched for Pod manifests.
    pub static_pod_path: PathBuf,
    /// How often the whole directory is re-read, whatever inotify said.
    #[serde(with = "humantime_serde")]
    pub file_check_frequency: Duration,
    /// State of the agent: pod directories, pinned namespaces.
    pub root_dir: PathBuf,
    /// Container logs, laid out as the kubelet does.
    pub pod_logs_dir: PathBuf,
    /// OCI or Docker image archives (`*.tar`) imported on demand. Defaults to
    /// `<rootDir>/images`.
    pub images_dir: Option<PathBuf>,
    /// Registries by host (`docker.io`, `127.0.0.1:5000`): `mirrors`
    /// (URLs tried in order before the registry), `plainHTTP`, `caFile`.
    pub registries: std::collections::BTreeMap<String, crate::runtime::registry::HostConfig>,
    /// Docker `config.json` with registry credentials (the kubelet reads
    /// `/var/lib/kubelet/config.json`); a missing file means anonymous
    /// pulls.
    pub image_credentials_file: PathBuf,
    /// A registry pull that receives no byte for this long fails (and is
    /// retried with the image pull backoff).
    #[serde(with = "humantime_serde")]
    pub image_pull_stall_timeout: Duration,
    /// Image garbage collection starts when the filesystem of containerd's
    /// snapshotter is this full (percent; 100 turns it off).
    #[serde(rename = "imageGCHighThresholdPercent")]
    pub image_gc_high_threshold_percent: u8,
    /// ... and removes unused images until usage is down to this.
    #[serde(rename = "imageGCLowThresholdPercent")]
    pub image_gc_low_threshold_percent: u8,
    /// Images first seen less than this ago are never collected.
    #[serde(rename = "imageMinimumGCAge", with = "humantime_serde")]
    pub image_minimum_gc_age: Duration,
    /// How often the collector looks (the kubelet's is fixed at 5m).
    #[serde(rename = "imageGCPeriod", with = "humantime_serde")]
    pub image_gc_period: Duration,
    /// Node name used in static pod names (`<pod>-<nodeName>`). Defaults to the
    /// hostname, lower-cased.
    pub node_name: Option<String>,
    pub containerd: ContainerdConfig,
    /// `cgroupfs` (default) or `systemd`: who names and creates cgroups.
    pub cgroup_driver: crate::cgroup::Driver,
    /// Parent of the `kubepods` cgroup (cgroupfs driver), relative to each
    /// hierarchy's mount point.
    pub cgroup_root: String,
    /// cgroup v2: how CPU shares become `cpu.weight`.
    pub cpu_weight_formula: crate::cgroup::WeightFormula,
    /// cgroup v2: memory requests become `memory.min` (the kubelet's
    /// MemoryQoS feature).
    #[serde(rename = "memoryQoS")]
    pub memory_qos: bool,
    /// cgroup v2: leave `memory.oom.group` at 0 on container cgroups, so that
    /// the OOM killer takes one process rather than the whole container (the
    /// kubelet's `singleProcessOOMKill`, 1.32; ignored on cgroup v1).
    #[serde(rename = "singleProcessOOMKill")]
    pub single_process_oom_kill: bool,
    /// `pids.max` of every pod cgroup; -1 for no limit.
    pub pod_pids_limit: i64,
    /// Pods admitted at most (the kubelet's `maxPods`); the others wait with
    /// reason `OutOfpods`.
    pub max_pods: u32,
    /// Size at which a container's log file is rotated (a quantity, the
    /// kubelet's `containerLogMaxSize`); negative: never rotated.
    pub container_log_max_size: String,
    /// Log files kept per container, the current one included (the
    /// kubelet's `containerLogMaxFiles`, at least 2).
    pub container_log_max_files: u32,
    /// CPU and memory kept back from pods: allocatable = capacity - this.
    pub system_reserved: Reserved,
    /// HTTP endpoint for status and metrics.
    pub listen_address: SocketAddr,
    /// Unix socket of the command line (`get`, `describe`, `logs`, `top`,
    /// `events`): mode 0600, so only root may use it and no token is needed.
    pub cli_socket: PathBuf,
    /// File holding the bearer token that every HTTP request but /healthz
    /// must carry (`Authorization: Bearer ...`). Unset: the agent makes one
    /// at first start in `<rootDir>/http-token` (mode 0600) and reuses it.
    /// Either file is refused if it is a symlink or group/other-accessible.
    pub http_token_file: Option<PathBuf>,
    /// Serve `/metrics`, `/metrics/cadvisor`, `/metrics/resource` without a
    /// token (as the kubelet's read-only port did). `/pods` and
    /// `/stats/summary` always need one.
    pub metrics_anonymous: bool,
    /// Connections one client address may hold at once (of 256 in all;
    /// at most 128, so that one client never holds them all).
    pub max_connections_per_client: usize,
    /// How often volume usage is measured in the background (the kubelet's
    /// volumeStatsAggPeriod); `0s` turns it off.
    #[serde(with = "humantime_serde")]
    pub volume_stats_agg_period: Duration,
    /// PEM certificate chain served over TLS (the kubelet's name). With
    /// `tlsPrivateKeyFile`, the endpoint speaks HTTPS only.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tlsCertFile`.
    pub tls_private_key_file: Option<PathBuf>,
    /// PEM CA bundle: a client presenting a certificate signed by it is
    /// authenticated without a token.
    #[serde(rename = "tlsClientCAFile")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Allow a non-loopback `listenAddress` without TLS (the token then
    /// crosses the network in clear). Off: such a config is refused.
    pub allow_insecure_remote: bool,
    pub crash_loop_back_off: BackoffConfig,
    /// When not empty, hostPath volumes (and hostPath PersistentVolumes)
    /// must lie below one of these directories.
    pub host_path_allowed_prefixes: Vec<PathBuf>,
    /// Deadline of one NFS mount attempt; a failed mount is retried with
    /// backoff.
    #[serde(with = "humantime_serde")]
    pub nfs_mount_timeout: Duration,
    /// How long a deleted PersistentVolumeClaim must stay gone (with the
    /// manifest directory free of errors) before its Delete-policy volume
    /// is emptied.
    #[serde(with = "humantime_serde")]
    pub reclaim_grace_period: Duration,
    /// Deadline of each containerd call but task waits and data transfers
    /// (the kubelet's `runtimeRequestTimeout`): a containerd that hangs
    /// fails the call, which is retried, instead of freezing the agent.
    #[serde(with = "humantime_serde")]
    pub runtime_request_timeout: Duration,
    /// `cni` (default): pods without `hostNetwork` are attached through
    /// CNI. `loopback`: they get a network namespace with loopback only.
    pub pod_network: PodNetwork,
    /// CNI configuration directory: its first `.conf`/`.conflist`/`.json`
    /// file by name is the pod network. Without any, the agent writes a
    /// default one at start.
    #[serde(rename = "cniConfDir")]
    pub cni_conf_dir: PathBuf,
    /// CNI plugin directories, searched in order.
    #[serde(rename = "cniBinDir")]
    pub cni_bin_dir: Vec<PathBuf>,
    /// Subnet of the default CNI configuration (an IPv4 CIDR).
    #[serde(rename = "podCIDR")]
    pub pod_cidr: String,
    /// The cluster's DNS domain, in pods' FQDNs (`<hostname>.<subdomain>.
    /// <namespace>.svc.<clusterDomain>`).
    pub cluster_domain: String,
    /// The node's resolver configuration, given to pods with the
    /// `Default` DNS policy (and, without cluster DNS, `ClusterFirst`).
    pub resolv_conf: PathBuf,
}

/// How pods without `hostNetwork` are networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum PodNetwork {
    #[default]
    Cni,
    Loopback,
}

/// Resources held back from pods, as Kubernetes quantities.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Reserved {
    pub cpu: Option<String>,
    pub memory: Option<String>,
}

impl Reserved {
    /// (millicores, bytes); validated at load.
    pub fn values(&self) -> (i64, i64) {
        let q = |s: &Option<String>| {
            s.as_deref()
                .and_then(|s| crate::manifest::quantity::Quantity::parse(s).ok())
        };
        (
            q(&self.cpu).map_or(0, |q| q.milli_ceil()),
            q(&self.memory).map_or(0, |q| q.value_ceil()),
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ContainerdConfig {
    /// containerd's gRPC socket.
    pub address: PathBuf,
    /// containerd namespace that holds our images and containers. Kept apart
    /// from `k8s.io` so that a CRI kubelet on the same host never sees them.
    pub namespace: String,
    pub snapshotter: String,
    pub runtime: String,
}

/// The kubelet's crash-loop backoff: 10 s doubling to 5 min, forgotten after a
/// container has been left alone for twice the maximum.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BackoffConfig {
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

/// The default configuration's pod subnet: 253 pods (the kubelet's
/// default is 110 per node), in a range no common default takes (Docker
/// 172.17-31.x, Podman 10.88, Flannel 10.244, Calico 192.168, k3s
/// 10.42/10.43, kubeadm's services 10.96).
pub const DEFAULT_POD_CIDR: &str = "10.201.0.0/24";

impl Default for Config {
    fn default() -> Self {
        Config {
            static_pod_path: PathBuf::from("/etc/kubernetes/manifests"),
            file_check_frequency: Duration::from_secs(20),
            root_dir: PathBuf::from("/var/lib/kubelet-lite"),
            pod_logs_dir: PathBuf::from("/var/log/pods"),
            images_dir: None,
            registries: Default::default(),
            image_credentials_file: PathBuf::from("/var/lib/kubelet/config.json"),
            image_pull_stall_timeout: Duration::from_secs(60),
            image_gc_high_threshold_percent: 85,
            image_gc_low_threshold_percent: 80,
            image_minimum_gc_age: Duration::from_secs(120),
            image_gc_period: Duration::from_secs(300),
            node_name: None,
            containerd: ContainerdConfig::default(),
            cgroup_driver: Default::default(),
            cgroup_root: "/".to_string(),
            cpu_weight_formula: Default::default(),
            memory_qos: false,
            single_process_oom_kill: false,
            pod_pids_limit: -1,
            max_pods: 110,
            container_log_max_size: "10Mi".to_string(),
            container_log_max_files: 5,
            system_reserved: Reserved::default(),
            listen_address: SocketAddr::from(([127, 0, 0, 1], 10255)),
            cli_socket: PathBuf::from(crate::cli::DEFAULT_SOCKET),
            http_token_file: None,
            metrics_anonymous: false,
            max_connections_per_client: 32,
            volume_stats_agg_period: Duration::from_secs(60),
            tls_cert_file: None,
            tls_private_key_file: None,
            tls_client_ca_file: None,
            allow_insecure_remote: false,
            crash_loop_back_off: BackoffConfig::default(),
            host_path_allowed_prefixes: vec![],
            nfs_mount_timeout: Duration::from_secs(30),
            reclaim_grace_period: Duration::from_secs(60),
            runtime_request_timeout: Duration::from_secs(120),
            pod_network: PodNetwork::Cni,
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            // The kubelet's default, then where Debian's plugins are.
            cni_bin_dir: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            pod_cidr: DEFAULT_POD_CIDR.to_string(),
            cluster_domain: "cluster.local".to_string(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }
}

impl Default for ContainerdConfig {
    fn default() -> Self {
        ContainerdConfig {
            address: PathBuf::from("/run/containerd/containerd.sock"),
            namespace: "kubelet-lite".to_string(),
            snapshotter: "overlayfs".to_string(),
            runtime: "io.containerd.runc.v2".to_string(),
        }
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            let de = serde_norway::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: describe_path_error(&e),
            })?
        };
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            message,
        };
        for (field, dir) in [
            ("staticPodPath", &self.static_pod_path),
            ("rootDir", &self.root_dir),
            ("podLogsDir", &self.pod_logs_dir),
            ("cliSocket", &self.cli_socket),
        ] {
            if !dir.is_absolute() {
                return Err(invalid(field, format!("{} is not absolute", dir.display())));
            }
        }
        if let Some(dir) = &self.images_dir
            && !dir.is_absolute()
        {
            return Err(invalid(
                "imagesDir",
                format!("{} is not absolute", dir.display()),
            ));
        }
        for (host, h) in &self.registries {
            if let Err((field, message)) = crate::runtime::registry::validate_host(host, h) {
                return Err(invalid("registries", format!("{field}: {message}")));
            }
        }
        if !self.image_credentials_file.is_absolute() {
            return Err(invalid(
                "imageCredentialsFile",
                format!("{} is not absolute", self.image_credentials_file.display()),
            ));
        }
        if self.image_gc_high_threshold_percent > 100 {
            return Err(invalid(
                "imageGCHighThresholdPercent",
                "must be between 0 and 100".into(),
            ));
        }
        if self.image_gc_low_threshold_percent >= self.image_gc_high_threshold_percent {
            return Err(invalid(
                "imageGCLowThresholdPercent",
                format!(
                    "{} must be less than imageGCHighThresholdPercent ({})",
                    self.image_gc_low_threshold_percent, self.image_gc_high_threshold_percent
                ),
            ));
        }
        if self.image_gc_period.is_zero() {
            return Err(invalid("imageGCPeriod", "must be more than 0s".into()));
        }
        if self.image_pull_stall_timeout.is_zero() {
            return Err(invalid(
                "imagePullStallTimeout",
                "must be more than 0s".into(),
            ));
        }
        if let Some(name) = &self.node_name
            && let Err(e) = crate::manifest::validate::check_subdomain(name)
        {
            return Err(invalid("nodeName", e));
        }
        if !self.cgroup_root.starts_with('/') || self.cgroup_root.contains("..") {
            return Err(invalid(
                "cgroupRoot",
                format!("{:?} must be an absolute path without ..", self.cgroup_root),
            ));
        }
        if self.max_pods == 0 {
            return Err(invalid("maxPods", "must be at least 1".to_string()));
        }
        if let Err(e) = crate::manifest::quantity::Quantity::parse(&self.container_log_max_size) {
            return Err(invalid("containerLogMaxSize", e.to_string()));
        }
        if self.container_log_max_files < 2 {
            return Err(invalid(
                "containerLogMaxFiles",
                format!("{} must be at least 2", self.container_log_max_files),
            ));
        }
        if let Err(m) = check_containerd_namespace(&self.containerd.namespace) {
            return Err(invalid("containerd.namespace", m));
        }
        for (field, value) in [
            ("systemReserved.cpu", &self.system_reserved.cpu),
            ("systemReserved.memory", &self.system_reserved.memory),
        ] {
            if let Some(v) = value {
                match crate::manifest::quantity::Quantity::parse(v) {
                    Err(e) => return Err(invalid(field, e.to_string())),
                    Ok(q) if q.is_negative() => {
                        return Err(invalid(field, format!("{v:?} is negative")));
                    }
                    Ok(_) => {}
                }
            }
        }
        for p in &self.host_path_allowed_prefixes {
            if !p.is_absolute() {
                return Err(invalid(
                    "hostPathAllowedPrefixes",
                    format!("{} is not absolute", p.display()),
                ));
            }
        }
        for (field, file) in [
            ("httpTokenFile", &self.http_token_file),
            ("tlsCertFile", &self.tls_cert_file),
            ("tlsPrivateKeyFile", &self.tls_private_key_file),
            ("tlsClientCAFile", &self.tls_client_ca_file),
        ] {
            if let Some(f) = file
                && !f.is_absolute()
            {
                return Err(invalid(field, format!("{} is not absolute", f.display())));
            }
        }
        if self.tls_cert_file.is_some() != self.tls_private_key_file.is_some() {
            return Err(invalid(
                "tlsPrivateKeyFile",
                "tlsCertFile and tlsPrivateKeyFile go together".into(),
            ));
        }
        if self.tls_client_ca_file.is_some() && !self.tls() {
            return Err(invalid(
                "tlsClientCAFile",
                "client certificates need TLS: set tlsCertFile and tlsPrivateKeyFile".into(),
            ));
        }
        // Authentication is always on (a token, made if not configured);
        // what stays to refuse is the token crossing a network in clear.
        if !self.listen_address.ip().is_loopback() && !self.tls() && !self.allow_insecure_remote {
            return Err(invalid(
                "listenAddress",
                format!(
                    "{} is not a loopback address: set tlsCertFile and tlsPrivateKeyFile so that the token is not sent in clear, or allowInsecureRemote: true",
                    self.listen_address
                ),
            ));
        }
        // Below the server's 256 in all, so that one client can never
        // take every connection.
        if !(1..=128).contains(&self.max_connections_per_client) {
            return Err(invalid(
                "maxConnectionsPerClient",
                "must be between 1 and 128 (half the server's 256 connections)".into(),
            ));
        }
        if self.runtime_request_timeout.is_zero() {
            return Err(invalid("runtimeRequestTimeout", "must be positive".into()));
        }
        if self.file_check_frequency.is_zero() {
            return Err(invalid("fileCheckFrequency", "must be positive".into()));
        }
        for (field, dir) in [
            ("cniConfDir", &self.cni_conf_dir),
            ("resolvConf", &self.resolv_conf),
        ] {
            if !dir.is_absolute() {
                return Err(invalid(field, format!("{} is not absolute", dir.display())));
            }
        }
        if self.cni_bin_dir.is_empty() || self.cni_bin_dir.iter().any(|d| !d.is_absolute()) {
            return Err(invalid(
                "cniBinDir",
                "must be a list of absolute directories".into(),
            ));
        }
        if let Err(m) = check_ipv4_cidr(&self.pod_cidr) {
            return Err(invalid("podCIDR", m));
        }
        if !self.cluster_domain.is_empty()
            && let Err(e) = crate::manifest::validate::check_subdomain(&self.cluster_domain)
        {
            return Err(invalid("clusterDomain", e));
        }
        let b = &self.crash_loop_back_off;
        if b.initial.is_zero() || b.max < b.initial {
            return Err(invalid(
                "crashLoopBackOff",
                "initial must be positive and not above max".into(),
            ));
        }
        Ok(())
    }

    /// Whether the HTTP endpoint speaks TLS.
    pub fn tls(&self) -> bool {
        self.tls_cert_file.is_some() && self.tls_private_key_file.is_some()
    }

    /// The token file: configured, or the one made under the root directory.
    pub fn token_file(&self) -> PathBuf {
        self.http_token_file
            .clone()
            .unwrap_or_else(|| self.root_dir.join(crate::http::token::GENERATED_FILE))
    }

    /// What the runtime needs to reach registries.
    pub fn registry_options(&self) -> crate::runtime::registry::RegistryOptions {
        crate::runtime::registry::RegistryOptions {
            hosts: self.registries.clone(),
            credentials_file: self.image_credentials_file.clone(),
            connect_timeout: Duration::from_secs(10),
            stall_timeout: self.image_pull_stall_timeout,
        }
    }

    /// The image garbage collector's settings.
    pub fn image_gc_policy(&self) -> crate::runtime::image_gc::GcPolicy {
        crate::runtime::image_gc::GcPolicy {
            high_percent: self.image_gc_high_threshold_percent,
            low_percent: self.image_gc_low_threshold_percent,
            min_age: self.image_minimum_gc_age,
            period: self.image_gc_period,
        }
    }

    /// The container log rotation policy; `None` for a negative
    /// `containerLogMaxSize` (validated at load).
    pub fn log_rotation(&self) -> Option<crate::logs::rotate::Rotation> {
        let size = crate::manifest::quantity::Quantity::parse(&self.container_log_max_size).ok()?;
        (!size.is_negative()).then(|| crate::logs::rotate::Rotation {
            max_size: u64::try_from(size.value_ceil()).unwrap_or(u64::MAX),
            max_files: self.container_log_max_files,
        })
    }

    pub fn images_dir(&self) -> PathBuf {
        self.images_dir
            .clone()
            .unwrap_or_else(|| self.root_dir.join("images"))
    }

    /// The node name: configured, or the hostname lower-cased (as the kubelet
    /// does with `--hostname-override` unset).
    pub fn node_name(&self) -> String {
        if let Some(n) = &self.node_name {
            return n.clone();
        }
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .map(|h| h.trim().to_lowercase())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_string())
    }
}

/// An IPv4 subnet `a.b.c.d/n` with room for pods (n at most 30: a network
/// address, a gateway, at least one pod, a broadcast address) and no host
/// bits set.
pub fn check_ipv4_cidr(cidr: &str) -> Result<(), String> {
    let bad = || format!("{cidr:?} is not an IPv4 subnet such as {DEFAULT_POD_CIDR}");
    let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
    let addr: std::net::Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let len: u32 = len.parse().map_err(|_| bad())?;
    if !(1..=30).contains(&len) {
        return Err(format!("{cidr:?}: the prefix length must be 1 to 30"));
    }
    let mask = u32::MAX << (32 - len);
    if u32::from(addr) & !mask != 0 {
        return Err(format!("{cidr:?} has host bits set"));
    }
    Ok(())
}

/// containerd's identifier rule (pkg/identifiers), which its namespaces
/// service enforces: at most 76 characters, alphanumeric components joined
/// by single `.`, `_` or `-` (`^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$`).
/// Checked at load so that a bad name stops the agent at start, not at its
/// first request.
pub fn check_containerd_namespace(name: &str) -> Result<(), String> {
    const MAX_LEN: usize = 76;
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_LEN {
        return Err(format!(
            "{name:?} is longer than {MAX_LEN} characters (containerd's limit)"
        ));
    }
    let separator = |c: char| matches!(c, '.' | '_' | '-');
    let components_ok = name
        .split(separator)
        .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric()));
    if !components_ok {
        return Err(format!(
            "{name:?} is not a valid containerd namespace: letters and digits, in parts joined by single '.', '_' or '-'"
        ));
    }
    Ok(())
}

/// Turns a serde error with its path into `field.path: message`.
pub fn describe_path_error<E: std::fmt::Display>(e: &serde_path_to_error::Error<E>) -> String {
    let path = e.path().to_string();
    if path == "." || path.is_empty() {
        e.inner().to_string()
    } else {
        format!("{}: {}", path, e.inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("agent.yaml"))
    }

    #[test]
    fn network_keys() {
        let c = parse("podNetwork: loopback\ncniConfDir: /c\ncniBinDir: [/b1, /b2]\npodCIDR: 10.5.0.0/16\nclusterDomain: example.internal\nresolvConf: /run/r.conf\n").unwrap();
        assert_eq!(c.pod_network, PodNetwork::Loopback);
        assert_eq!(c.cni_bin_dir, [PathBuf::from("/b1"), PathBuf::from("/b2")]);
        assert_eq!(c.pod_cidr, "10.5.0.0/16");
        let d = Config::default();
        assert_eq!(d.pod_network, PodNetwork::Cni);
        assert_eq!(d.cni_conf_dir, PathBuf::from("/etc/cni/net.d"));
        assert_eq!(d.pod_cidr, "10.201.0.0/24");
        for (text, field) in [
            (
                "podCIDR: 10.5.0.1/16\n",
                "podCIDR: \"10.5.0.1/16\" has host bits set",
            ),
            (
                "podCIDR: 10.5.0.0/31\n",
                "podCIDR: \"10.5.0.0/31\": the prefix length",
            ),
            (
                "podCIDR: fd00::/64\n",
                "podCIDR: \"fd00::/64\" is not an IPv4 subnet",
            ),
            ("cniBinDir: []\n", "cniBinDir: must be"),
            ("cniBinDir: [bin]\n", "cniBinDir: must be"),
            ("cniConfDir: net.d\n", "cniConfDir: net.d is not absolute"),
            ("clusterDomain: Bad_Domain\n", "clusterDomain: "),
            ("podNetwork: flannel\n", "podNetwork"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with("agent.yaml: "), "{e}");
            assert!(e.contains(field), "{text}: {e}");
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(
            c.static_pod_path,
            PathBuf::from("/etc/kubernetes/manifests")
        );
        assert_eq!(
            c.images_dir(),
            PathBuf::from("/var/lib/kubelet-lite/images")
        );
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let c = parse("staticPodPath: /srv/pods\ncontainerd:\n  namespace: test\ncrashLoopBackOff:\n  initial: 1s\n").unwrap();
        assert_eq!(c.static_pod_path, PathBuf::from("/srv/pods"));
        assert_eq!(c.containerd.namespace, "test");
        assert_eq!(c.containerd.snapshotter, "overlayfs");
        assert_eq!(c.crash_loop_back_off.initial, Duration::from_secs(1));
        assert_eq!(c.crash_loop_back_off.max, Duration::from_secs(300));
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("staticPodPath: /x\nstaticPodPaht: /y\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("staticPodPaht"), "{msg}");
        assert!(msg.starts_with("agent.yaml"), "{msg}");
        let e = parse("containerd:\n  adress: /x\n").unwrap_err();
        assert!(e.to_string().contains("containerd.adress") || e.to_string().contains("adress"));
    }

    #[test]
    fn relative_paths_and_bad_names_are_refused() {
        let e = parse("rootDir: var/lib\n").unwrap_err();
        assert!(e.to_string().contains("rootDir"), "{e}");
        let e = parse("nodeName: Node_1\n").unwrap_err();
        assert!(e.to_string().contains("nodeName"), "{e}");
        let e = parse("crashLoopBackOff:\n  initial: 10m\n  max: 1m\n").unwrap_err();
        assert!(e.to_string().contains("crashLoopBackOff"), "{e}");
        let e = parse("systemReserved:\n  memory: -1Gi\n").unwrap_err();
        assert!(e.to_string().contains("systemReserved.memory"), "{e}");
        let e = parse("cgroupDriver: upstart\n").unwrap_err();
        assert!(e.to_string().contains("cgroupDriver"), "{e}");
        let c = parse("cgroupDriver: systemd\ncpuWeightFormula: quadratic\nmemoryQoS: true\nsystemReserved: {cpu: 500m, memory: 1Gi}\n").unwrap();
        assert_eq!(c.system_reserved.values(), (500, 1 << 30));
        assert!(c.memory_qos);
        assert!(!c.single_process_oom_kill);
        assert!(
            parse("singleProcessOOMKill: true\n")
                .unwrap()
                .single_process_oom_kill
        );
    }

    #[test]
    fn image_keys_are_read_and_checked() {
        let c = parse(
            "registries:\n  docker.io:\n    mirrors: ['http://127.0.0.1:5000']\n  registry.lan:5000:\n    plainHTTP: true\n    caFile: /etc/ca.pem\nimageCredentialsFile: /etc/kl/config.json\nimagePullStallTimeout: 5s\nimageGCHighThresholdPercent: 90\nimageGCLowThresholdPercent: 70\nimageMinimumGCAge: 1m\nimageGCPeriod: 30s\n",
        )
        .unwrap();
        let r = c.registry_options();
        assert_eq!(r.hosts["docker.io"].mirrors, ["http://127.0.0.1:5000"]);
        assert!(r.hosts["registry.lan:5000"].plain_http);
        assert_eq!(r.stall_timeout, Duration::from_secs(5));
        let gc = c.image_gc_policy();
        assert_eq!((gc.high_percent, gc.low_percent), (90, 70));
        assert_eq!(gc.min_age, Duration::from_secs(60));
        let d = Config::default();
        assert_eq!(
            d.image_credentials_file,
            PathBuf::from("/var/lib/kubelet/config.json")
        );
        assert_eq!(
            (
                d.image_gc_high_threshold_percent,
                d.image_gc_low_threshold_percent
            ),
            (85, 80)
        );
        for (text, field) in [
            (
                "registries:\n  docker.io:\n    mirrors: ['127.0.0.1:5000']\n",
                "registries.docker.io.mirrors[0]",
            ),
            (
                "registries:\n  docker.io:\n    caFile: ca.pem\n",
                "registries.docker.io.caFile",
            ),
            ("registries:\n  docker.io:\n    mirror: []\n", "mirror"),
            (
                "imageCredentialsFile: config.json\n",
                "imageCredentialsFile",
            ),
            (
                "imageGCHighThresholdPercent: 101\n",
                "imageGCHighThresholdPercent",
            ),
            (
                "imageGCHighThresholdPercent: 50\nimageGCLowThresholdPercent: 50\n",
                "imageGCLowThresholdPercent",
            ),
            ("imagePullStallTimeout: 0s\n", "imagePullStallTimeout"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(field), "{text}: {e}");
        }
    }

    #[test]
    fn container_log_rotation_keys() {
        use crate::logs::rotate::Rotation;
        assert_eq!(
            Config::default().log_rotation(),
            Some(Rotation {
                max_size: 10 << 20,
                max_files: 5
            })
        );
        let c = parse("containerLogMaxSize: 1M\ncontainerLogMaxFiles: 2\n").unwrap();
        assert_eq!(
            c.log_rotation(),
            Some(Rotation {
                max_size: 1_000_000,
                max_files: 2
            })
        );
        assert_eq!(
            parse("containerLogMaxSize: '-1'\n").unwrap().log_rotation(),
            None
        );
        for (text, field) in [
            ("containerLogMaxSize: 10 MB\n", "containerLogMaxSize"),
            ("containerLogMaxFiles: 1\n", "containerLogMaxFiles"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(field), "{text}: {e}");
        }
    }

    #[test]
    fn containerd_namespace_follows_containerd_rule() {
        for good in ["kubelet-lite", "k8s.io", "a", "A_1.b-2", &"x".repeat(76)] {
            assert_eq!(check_containerd_namespace(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a..b",
            "a-.b",
            ".a",
            "a b",
            "a/b",
            "näme",
            "a:b",
            &"x".repeat(77),
        ] {
            assert!(check_containerd_namespace(bad).is_err(), "{bad:?}");
        }
        let e = parse("containerd:\n  namespace: 'my ns'\n").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("agent.yaml")
                && msg.contains("containerd.namespace")
                && msg.contains("my ns"),
            "{msg}"
        );
        assert!(parse("containerd:\n  namespace: k8s.io\n").is_ok());
    }

    #[test]
    fn remote_listening_needs_tls_or_an_explicit_yes() {
        let e = parse("listenAddress: 0.0.0.0:10255\n").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("listenAddress") && msg.contains("tlsCertFile"),
            "{msg}"
        );
        parse("listenAddress: 0.0.0.0:10255\nallowInsecureRemote: true\n").unwrap();
        parse("listenAddress: '[::1]:10255'\n").unwrap();
        let c = parse(
            "listenAddress: 0.0.0.0:10250\ntlsCertFile: /etc/kl/tls.crt\ntlsPrivateKeyFile: /etc/kl/tls.key\ntlsClientCAFile: /etc/kl/ca.crt\n",
        )
        .unwrap();
        assert!(c.tls());
        let e = parse("tlsCertFile: /etc/kl/tls.crt\n").unwrap_err();
        assert!(e.to_string().contains("tlsPrivateKeyFile"), "{e}");
        let e = parse("tlsClientCAFile: /etc/kl/ca.crt\n").unwrap_err();
        assert!(e.to_string().contains("tlsClientCAFile"), "{e}");
        for n in [0, 129, 256] {
            let e = parse(&format!("maxConnectionsPerClient: {n}\n")).unwrap_err();
            assert!(e.to_string().contains("maxConnectionsPerClient"), "{e}");
        }
        parse("maxConnectionsPerClient: 128\n").unwrap();
        assert_eq!(
            parse("").unwrap().token_file(),
            PathBuf::from("/var/lib/kubelet-lite/http-token")
        );
    }
}

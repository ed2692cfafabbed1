//! Where an image is pulled from and with which credentials: the
//! registries section of the agent config (mirrors, plain HTTP, custom CA
//! per host) and a Docker `config.json` (the kubelet reads
//! `/var/lib/kubelet/config.json`). The choice of endpoints and the
//! credential lookup are pure; the HTTP clients are built here once per host.
//!
//! containerd's own `hosts.toml` is read by its clients (`ctr`, the CRI
//! plugin), not by the gRPC services we use, so the agent has its own
//! registry configuration.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

/// Layers downloaded at once per image (containerd's default is 3).
pub const PARALLEL_LAYERS: usize = 3;

/// One registry host's settings in the agent config (`registries:` keyed
/// by host, e.g. `docker.io` or `127.0.0.1:5000`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HostConfig {
    /// Endpoints tried in order before the registry itself, as URLs
    /// (`http://127.0.0.1:5000`, `https://mirror.example`).
    pub mirrors: Vec<String>,
    /// Speak plain HTTP to this host instead of HTTPS.
    #[serde(rename = "plainHTTP")]
    pub plain_http: bool,
    /// PEM file of CA certificates trusted for this host, besides the
    /// system's.
    pub ca_file: Option<PathBuf>,
}

/// Checks a host's settings; the message names the field.
pub fn validate_host(host: &str, c: &HostConfig) -> Result<(), (String, String)> {
    if host.is_empty() || host.contains('/') || host.contains("://") {
        return Err((
            format!("registries.{host}"),
            "a registry is named by its host[:port], without scheme or path".into(),
        ));
    }
    for (i, m) in c.mirrors.iter().enumerate() {
        if let Err(e) = parse_mirror(m) {
            return Err((format!("registries.{host}.mirrors[{i}]"), e));
        }
    }
    if let Some(ca) = &c.ca_file
        && !ca.is_absolute()
    {
        return Err((
            format!("registries.{host}.caFile"),
            format!("{} is not absolute", ca.display()),
        ));
    }
    Ok(())
}

/// `http://host:port` -> (host:port, plain HTTP).
fn parse_mirror(url: &str) -> Result<(String, bool), String> {
    let (plain, rest) = if let Some(r) = url.strip_prefix("http://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (false, r)
    } else {
        return Err(format!("{url:?} must start with http:// or https://"));
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') || host.contains('?') || host.contains('@') {
        return Err(format!(
            "{url:?} must be scheme://host[:port], without path or user"
        ));
    }
    Ok((host.to_string(), plain))
}

/// One place to try a pull from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// host[:port] the requests go to.
    pub host: String,
    pub plain_http: bool,
    pub ca_file: Option<PathBuf>,
    /// A mirror of `registry`, not the registry itself.
    pub mirror: bool,
}

/// The endpoints for an image of `registry`, in the order to try them:
/// the configured mirrors, then the registry itself. A mirror's own TLS
/// settings come from its URL's scheme and from its host's entry, if any.
pub fn endpoints(hosts: &BTreeMap<String, HostConfig>, registry: &str) -> Vec<Endpoint> {
    let own = hosts.get(registry).cloned().unwrap_or_default();
    let mut out = Vec::new();
    for m in &own.mirrors {
        let Ok((host, plain)) = parse_mirror(m) else {
            continue;
        };
        let ca_file = hosts.get(&host).and_then(|h| h.ca_file.clone());
        out.push(Endpoint {
            host,
            plain_http: plain,
            ca_file,
            mirror: true,
        });
    }
    out.push(Endpoint {
        host: registry.to_string(),
        plain_http: own.plain_http,
        ca_file: own.ca_file,
        mirror: false,
    });
    out
}

/// A user name and password for a registry. Its `Debug` hides both.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The key of a `config.json` entry as a host: `https://index.docker.io/v1/`
/// is `docker.io`, as Docker writes Docker Hub's entry.
fn auth_key_host(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    canonical_host(host).to_string()
}

fn canonical_host(host: &str) -> &str {
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io",
        h => h,
    }
}

/// Credentials for `host` from the text of a Docker `config.json`. An
/// entry without credentials is none; a malformed file is an error that
/// never quotes the file's content.
pub fn credentials_for(config_json: &str, host: &str) -> Result<Option<Credentials>, String> {
    let cfg: DockerConfig = serde_json::from_str(config_json)
        .map_err(|e| format!("not a Docker config.json (line {})", e.line()))?;
    let want = canonical_host(host);
    let Some(entry) = cfg
        .auths
        .iter()
        .find(|(k, _)| auth_key_host(k) == want)
        .map(|(_, v)| v)
    else {
        return Ok(None);
    };
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(Some(Credentials {
            username: u.clone(),
            password: p.clone(),
        }));
    }
    let Some(auth) = &entry.auth else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| format!("auths.{host}.auth is not base64"))?;
    let text = String::from_utf8(decoded).map_err(|_| format!("auths.{host}.auth is not UTF-8"))?;
    let (u, p) = text
        .split_once(':')
        .ok_or_else(|| format!("auths.{host}.auth is not user:password"))?;
    Ok(Some(Credentials {
        username: u.to_string(),
        password: p.to_string(),
    }))
}

/// Everything the puller needs to reach registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    pub hosts: BTreeMap<String, HostConfig>,
    /// Docker `config.json`; a missing file means no credentials.
    pub credentials_file: PathBuf,
    pub connect_timeout: Duration,
    /// A transfer that receives nothing for this long fails.
    pub stall_timeout: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            hosts: BTreeMap::new(),
            credentials_file: PathBuf::from("/var/lib/kubelet/config.json"),
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(60),
        }
    }
}

/// HTTP clients by endpoint, made on first use (each keeps its own bearer
/// tokens and connections).
pub(super) struct Registries {
    pub(super) opts: RegistryOptions,
    clients: Mutex<HashMap<String, Arc<oci_client::Client>>>,
}

impl Registries {
    pub(super) fn new(opts: RegistryOptions) -> Registries {
        Registries {
            opts,
            clients: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn endpoints(&self, registry: &str) -> Vec<Endpoint> {
        endpoints(&self.opts.hosts, registry)
    }

    /// The credentials for `host`, read from the file at each pull (so that
    /// a new `config.json` applies without a restart).
    pub(super) fn auth(&self, host: &str) -> Result<oci_client::secrets::RegistryAuth, String> {
        use oci_client::secrets::RegistryAuth;
        let path = &self.opts.credentials_file;
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RegistryAuth::Anonymous);
            }
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        match credentials_for(&text, host) {
            Ok(Some(c)) => Ok(RegistryAuth::Basic(c.username, c.password)),
            Ok(None) => Ok(RegistryAuth::Anonymous),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// The client for `ep` with `auth`. oci-client keeps the first
    /// credentials it is given per registry, so a client is kept per
    /// credentials (by a hash of them): a changed `config.json` gets a new
    /// one.
    pub(super) fn client(
        &self,
        ep: &Endpoint,
        auth: &oci_client::secrets::RegistryAuth,
    ) -> Result<Arc<oci_client::Client>, String> {
        use oci_client::secrets::RegistryAuth;
        use sha2::Digest;
        let secret = match auth {
            RegistryAuth::Anonymous => String::new(),
            RegistryAuth::Basic(u, p) => format!("basic\0{u}\0{p}"),
            RegistryAuth::Bearer(t) => format!("bearer\0{t}"),
        };
        let key = format!(
            "{}|{}|{}",
            ep.host,
            ep.plain_http,
            hex::encode(sha2::Sha256::digest(secret.as_bytes()))
        );
        if let Some(c) = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(Arc::clone(c));
        }
        // reqwest is built without a TLS provider of its own: use ring,
        // as the HTTP server does. Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut extra = Vec::new();
        if let Some(ca) = &ep.ca_file {
            let data = read_ca(ca)?;
            extra.push(oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data,
            });
        }
        let config = oci_client::client::ClientConfig {
            protocol: if ep.plain_http {
                oci_client::client::ClientProtocol::Http
            } else {
                oci_client::client::ClientProtocol::Https
            },
            extra_root_certificates: extra,
            connect_timeout: Some(self.opts.connect_timeout),
            read_timeout: Some(self.opts.stall_timeout),
            max_concurrent_download: PARALLEL_LAYERS,
            user_agent: concat!("kubelet-lite/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        let client = Arc::new(
            oci_client::Client::try_from(config)
                .map_err(|e| format!("registry client for {}: {e}", ep.host))?,
        );
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Arc::clone(&client));
        Ok(client)
    }
}

fn read_ca(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading CA file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(yaml: &str) -> BTreeMap<String, HostConfig> {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn mirrors_come_first_then_the_registry() {
        let h = hosts(
            "docker.io:\n  mirrors: ['http://127.0.0.1:5000', 'https://m.example']\n\
             m.example:\n  caFile: /etc/ca.pem\n\
             127.0.0.1:5001:\n  plainHTTP: true\n",
        );
        let eps = endpoints(&h, "docker.io");
        let got: Vec<(&str, bool, bool)> = eps
            .iter()
            .map(|e| (e.host.as_str(), e.plain_http, e.mirror))
            .collect();
        assert_eq!(
            got,
            [
                ("127.0.0.1:5000", true, true),
                ("m.example", false, true),
                ("docker.io", false, false)
            ]
        );
        assert_eq!(eps[1].ca_file.as_deref(), Some(Path::new("/etc/ca.pem")));
        let eps = endpoints(&h, "127.0.0.1:5001");
        assert_eq!(eps.len(), 1);
        assert!(eps[0].plain_http && !eps[0].mirror);
        assert_eq!(endpoints(&h, "quay.io")[0].host, "quay.io");
    }

    #[test]
    fn bad_host_settings_name_the_field() {
        let bad = HostConfig {
            mirrors: vec!["127.0.0.1:5000".into()],
            ..Default::default()
        };
        let (field, msg) = validate_host("docker.io", &bad).unwrap_err();
        assert_eq!(field, "registries.docker.io.mirrors[0]");
        assert!(msg.contains("http://"), "{msg}");
        let path = HostConfig {
            mirrors: vec!["http://h/v2".into()],
            ..Default::default()
        };
        assert!(validate_host("docker.io", &path).is_err());
        assert!(validate_host("https://docker.io", &HostConfig::default()).is_err());
        let ca = HostConfig {
            ca_file: Some("ca.pem".into()),
            ..Default::default()
        };
        assert_eq!(
            validate_host("h", &ca).unwrap_err().0,
            "registries.h.caFile"
        );
    }

    #[test]
    fn credentials_from_docker_config() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cr:et");
        let json = format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},
                "127.0.0.1:5000":{{"username":"bob","password":"pw"}},
                "empty.example":{{}}}}}}"#
        );
        let hub = credentials_for(&json, "docker.io").unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("alice", "s3cr:et")
        );
        let local = credentials_for(&json, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!(local.username, "bob");
        assert_eq!(credentials_for(&json, "empty.example").unwrap(), None);
        assert_eq!(credentials_for(&json, "quay.io").unwrap(), None);
        assert!(!format!("{hub:?}").contains("s3cr"));
        let e = credentials_for(r#"{"auths":{"h":{"auth":"!!"}}}"#, "h").unwrap_err();
        assert!(e.contains("auths.h.auth"), "{e}");
        let e = credentials_for("password=hunter2", "h").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }
}

//! Pulling an image from a registry into containerd's content store, as
//! containerd's own client does on 1.6 (which has no Transfer service):
//! resolve the reference, choose `linux/<arch>` from an index, then copy
//! config and layers (several at once) with Content.Write under the
//! caller's lease. containerd checks each blob's size and digest at commit;
//! the registry client checks them while streaming. Children are written
//! before their parents, with the `containerd.io/gc.ref.*` labels that keep
//! them alive once the image record exists.
//!
//! The registry protocol (bearer-token challenges, basic auth, mirrors'
//! `?ns=` parameter) is `oci-client`'s.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use containerd_client::services::v1::{WriteAction, WriteContentRequest};
use containerd_client::types::Descriptor;
use futures::{FutureExt, StreamExt, TryStreamExt};
use oci_client::Reference;
use oci_client::manifest::OciDescriptor;
use tracing::{info, warn};

use super::RuntimeError;
use super::client::Calls;
use super::content::Lease;
use super::registry::{Endpoint, PARALLEL_LAYERS, Registries};

/// Largest manifest or index accepted (containerd's limit is 4 MiB too).
pub const MAX_MANIFEST: usize = 4 << 20;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const CONFIG_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
const LAYER_TYPES: [&str; 7] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];

/// What a manifest document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Index,
    Manifest,
}

/// The media type of a manifest document: its `mediaType` field, or, for
/// OCI documents that omit it, what its fields say. Anything else is
/// refused (schema 1 manifests, artifacts, HTML error pages).
pub fn classify(bytes: &[u8]) -> Result<(Kind, String), String> {
    if bytes.len() > MAX_MANIFEST {
        return Err(format!(
            "manifest of {} bytes is larger than the {} bytes allowed",
            bytes.len(),
            MAX_MANIFEST
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("manifest is not JSON: {e}"))?;
    let mt = v["mediaType"].as_str().map(str::to_string);
    let kind = match mt.as_deref() {
        Some(OCI_INDEX | DOCKER_LIST) => Kind::Index,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => Kind::Manifest,
        Some(other) => return Err(format!("unsupported manifest media type {other:?}")),
        None if v["manifests"].is_array() => Kind::Index,
        None if v["layers"].is_array() && v["config"].is_object() => Kind::Manifest,
        None => return Err("manifest without a media type".into()),
    };
    if v["schemaVersion"].as_i64() != Some(2) {
        return Err("manifest schemaVersion is not 2".into());
    }
    let mt = mt.unwrap_or_else(|| {
        match kind {
            Kind::Index => OCI_INDEX,
            Kind::Manifest => OCI_MANIFEST,
        }
        .to_string()
    });
    Ok((kind, mt))
}

/// The manifest for `linux/<arch>` in an index, as containerd's default
/// platform matcher chooses it (an entry without a platform matches).
pub fn choose_platform(index: &serde_json::Value, arch: &str) -> Option<Descriptor> {
    let m = index["manifests"].as_array()?.iter().find(|m| {
        let p = &m["platform"];
        p.is_null() || (p["os"] == "linux" && p["architecture"] == arch)
    })?;
    Some(Descriptor {
        media_type: m["mediaType"].as_str().unwrap_or(OCI_MANIFEST).to_string(),
        digest: m["digest"].as_str()?.to_string(),
        size: m["size"].as_i64()?,
        annotations: HashMap::new(),
    })
}

/// A manifest's config and layers, checked: known media types, sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct Contents {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

pub fn contents(manifest: &[u8]) -> Result<Contents, String> {
    let v: serde_json::Value =
        serde_json::from_slice(manifest).map_err(|e| format!("manifest is not JSON: {e}"))?;
    let d = |x: &serde_json::Value, what: &str| -> Result<Descriptor, String> {
        let digest = x["digest"]
            .as_str()
            .filter(|d| d.starts_with("sha256:") && d.len() == 71)
            .ok_or_else(|| format!("{what} has no sha256 digest"))?;
        let size = x["size"]
            .as_i64()
            .filter(|s| *s >= 0)
            .ok_or_else(|| format!("{what} has no size"))?;
        Ok(Descriptor {
            media_type: x["mediaType"].as_str().unwrap_or_default().to_string(),
            digest: digest.to_string(),
            size,
            annotations: HashMap::new(),
        })
    };
    let config = d(&v["config"], "config")?;
    if !CONFIG_TYPES.contains(&config.media_type.as_str()) {
        return Err(format!(
            "unsupported config media type {:?}",
            config.media_type
        ));
    }
    let mut layers = Vec::new();
    for (i, l) in v["layers"].as_array().into_iter().flatten().enumerate() {
        let l = d(l, &format!("layers[{i}]"))?;
        if !LAYER_TYPES.contains(&l.media_type.as_str()) {
            return Err(format!(
                "unsupported layer media type {:?} (layers[{i}])",
                l.media_type
            ));
        }
        layers.push(l);
    }
    if layers.is_empty() {
        return Err("manifest has no layers".into());
    }
    Ok(Contents { config, layers })
}

/// The registry's own words for a failure: `manifest unknown`,
/// `unauthorized`, a connection error. Never includes credentials
/// (oci-client's errors carry URLs, and ours have none in them).
pub fn describe(e: &oci_client::errors::OciDistributionError) -> String {
    use oci_client::errors::OciDistributionError as E;
    match e {
        E::RegistryError { envelope, .. } => {
            let msgs: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| {
                    if e.message.is_empty() {
                        format!("{:?}", e.code)
                    } else {
                        e.message.clone()
                    }
                })
                .collect();
            msgs.join("; ")
        }
        E::UnauthorizedError { .. } => "unauthorized: authentication required".into(),
        E::AuthenticationFailure(m) => format!("unauthorized: {m}"),
        E::ImageManifestNotFoundError(m) => format!("manifest unknown: {m}"),
        E::ServerError { code, message, .. } => {
            let m: String = message.chars().take(200).collect();
            format!("registry answered {code}: {}", m.trim())
        }
        E::RequestError(r) => {
            let mut s = if r.is_timeout() {
                "timed out".to_string()
            } else if r.is_connect() {
                "cannot connect".to_string()
            } else {
                "request failed".to_string()
            };
            let mut src = std::error::Error::source(r);
            while let Some(inner) = src {
                s = format!("{s}: {inner}");
                src = inner.source();
            }
            s
        }
        other => other.to_string(),
    }
}

/// What a pull wrote.
pub(super) struct Fetched {
    /// The image record's target (index or manifest).
    pub target: Descriptor,
    /// Bytes of the manifest, config and layers for this platform.
    pub size: u64,
    /// The endpoint it came from.
    pub from: String,
}

fn pull_error(name: &str, host: &str, why: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Pull(format!("failed to pull image {name:?} from {host}: {why}"))
}

/// Fetches `name` (normalized) from its mirrors, then its registry; the
/// first endpoint that gives the whole image wins. The error is the
/// registry's own (the last endpoint tried), the mirrors' are logged.
pub(super) async fn fetch(
    c: &Calls,
    lease: &Lease,
    reg: &Registries,
    name: &str,
) -> Result<Fetched, RuntimeError> {
    let reference: Reference = name
        .parse()
        .map_err(|e| RuntimeError::Pull(format!("{name:?}: {e}")))?;
    let mut last = None;
    for ep in reg.endpoints(reference.registry()) {
        let mut r = reference.clone();
        if ep.mirror {
            r.set_mirror_registry(ep.host.clone());
        }
        match fetch_from(c, lease, reg, &ep, &r, name).await {
            Ok(f) => return Ok(f),
            Err(e) => {
                if ep.mirror {
                    warn!(image = name, mirror = %ep.host, "mirror failed, trying the next endpoint: {e}");
                }
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| RuntimeError::Pull(format!("{name}: no endpoint"))))
}

async fn fetch_from(
    c: &Calls,
    lease: &Lease,
    reg: &Registries,
    ep: &Endpoint,
    r: &Reference,
    name: &str,
) -> Result<Fetched, RuntimeError> {
    let fail = |why: String| pull_error(name, &ep.host, why);
    let auth = reg.auth(&ep.host).map_err(fail)?;
    let client = reg.client(ep, &auth).map_err(fail)?;
    let accepted = [OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST];
    let (bytes, digest) = client
        .pull_manifest_raw(r, &auth, &accepted)
        .await
        .map_err(|e| fail(describe(&e)))?;
    let (kind, media_type) = classify(&bytes).map_err(fail)?;
    let top = Descriptor {
        media_type,
        digest,
        size: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
        annotations: HashMap::new(),
    };
    let arch = super::image_ref::go_arch();
    let (manifest_desc, manifest, index) = match kind {
        Kind::Manifest => (top.clone(), bytes, None),
        Kind::Index => {
            let v: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| fail(e.to_string()))?;
            let chosen = choose_platform(&v, arch)
                .ok_or_else(|| fail(format!("no linux/{arch} image in the index")))?;
            let by_digest = r.clone_with_digest(chosen.digest.clone());
            let (m, d) = client
                .pull_manifest_raw(&by_digest, &auth, &[OCI_MANIFEST, DOCKER_MANIFEST])
                .await
                .map_err(|e| fail(describe(&e)))?;
            let (k, mt) = classify(&m).map_err(fail)?;
            if k != Kind::Manifest || d != chosen.digest {
                return Err(fail(format!(
                    "index entry {} is not an image manifest",
                    chosen.digest
                )));
            }
            let desc = Descriptor {
                media_type: mt,
                ..chosen
            };
            (desc, m, Some((top.clone(), bytes)))
        }
    };
    let parts = contents(&manifest).map_err(fail)?;
    info!(image = name, from = %ep.host, layers = parts.layers.len(), "pulling image");
    let started = Instant::now();
    let blobs: Vec<Descriptor> = std::iter::once(parts.config.clone())
        .chain(parts.layers.iter().cloned())
        .collect();
    let copies: Vec<futures::future::BoxFuture<'_, Result<(), RuntimeError>>> = blobs
        .iter()
        .map(|d| copy_blob(c, lease, &client, r, d, name).boxed())
        .collect();
    futures::stream::iter(copies)
        .buffer_unordered(PARALLEL_LAYERS)
        .try_collect::<Vec<()>>()
        .await
        .map_err(|e| match e {
            RuntimeError::Pull(m) => fail(m),
            other => other,
        })?;
    // The manifest keeps its config and layers; the index its manifest.
    let mut labels = HashMap::from([(
        "containerd.io/gc.ref.content.config".to_string(),
        parts.config.digest.clone(),
    )]);
    for (i, l) in parts.layers.iter().enumerate() {
        labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            l.digest.clone(),
        );
    }
    super::content::write_blob(c, lease, &manifest_desc, manifest.to_vec(), labels).await?;
    if let Some((d, bytes)) = &index {
        let labels = HashMap::from([(
            "containerd.io/gc.ref.content.m.0".to_string(),
            manifest_desc.digest.clone(),
        )]);
        super::content::write_blob(c, lease, d, bytes.to_vec(), labels).await?;
    }
    let size = blobs
        .iter()
        .map(|d| u64::try_from(d.size).unwrap_or(0))
        .sum::<u64>()
        + u64::try_from(manifest_desc.size).unwrap_or(0);
    info!(image = name, from = %ep.host, bytes = size, elapsed = ?started.elapsed(), "image fetched");
    Ok(Fetched {
        target: top,
        size,
        from: ep.host.clone(),
    })
}

/// Streams one blob from the registry into the content store, unless
/// containerd has it already. Logs progress every 10 s.
async fn copy_blob(
    c: &Calls,
    lease: &Lease,
    client: &oci_client::Client,
    r: &Reference,
    d: &Descriptor,
    name: &str,
) -> Result<(), RuntimeError> {
    if c.has_blob(&d.digest).await? {
        return Ok(());
    }
    let od = OciDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        ..Default::default()
    };
    let mut body = client
        .pull_blob_stream(r, &od)
        .await
        .map_err(|e| RuntimeError::Pull(format!("{}: {}", d.digest, describe(&e))))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
    let wref = super::content::write_ref(&d.digest);
    let total = d.size;
    let feed = async move {
        let mut offset: i64 = 0;
        let mut last_log = Instant::now();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| RuntimeError::Pull(format!("{}: {e}", d.digest)))?;
            let len = i64::try_from(chunk.len()).unwrap_or(i64::MAX);
            if offset.saturating_add(len) > total {
                return Err(RuntimeError::Pull(format!(
                    "{}: registry sent more than the {total} bytes of the descriptor",
                    d.digest
                )));
            }
            let msg = WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: wref.clone(),
                total,
                expected: d.digest.clone(),
                offset,
                data: chunk.to_vec(),
                labels: HashMap::new(),
            };
            offset += len;
            if tx.send(msg).await.is_err() {
                // The writer failed; its error is the one reported.
                return Ok(());
            }
            if last_log.elapsed() >= Duration::from_secs(10) {
                last_log = Instant::now();
                info!(image = name, blob = %d.digest, done = offset, total, "pulling image");
            }
        }
        if offset != total {
            return Err(RuntimeError::Pull(format!(
                "{}: registry sent {offset} of {total} bytes",
                d.digest
            )));
        }
        let _ = tx
            .send(WriteContentRequest {
                action: WriteAction::Commit as i32,
                r#ref: wref.clone(),
                total,
                expected: d.digest.clone(),
                offset,
                data: vec![],
                labels: HashMap::new(),
            })
            .await;
        Ok(())
    };
    let write = super::content::write(c, lease, tokio_stream::wrappers::ReceiverStream::new(rx));
    let (fed, written) = tokio::join!(feed, write);
    fed?;
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn manifests_are_classified_by_media_type() {
        let oci = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{}},"layers":[]}}"#
        );
        assert_eq!(classify(oci.as_bytes()).unwrap().0, Kind::Manifest);
        let list = format!(r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[]}}"#);
        assert_eq!(classify(list.as_bytes()).unwrap().0, Kind::Index);
        let bare = r#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(
            classify(bare.as_bytes()).unwrap(),
            (Kind::Index, OCI_INDEX.to_string())
        );
        let v1 = r#"{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#;
        assert!(classify(v1.as_bytes()).unwrap_err().contains("unsupported"));
        assert!(classify(b"<html>").unwrap_err().contains("not JSON"));
        let big = vec![b' '; MAX_MANIFEST + 1];
        assert!(classify(&big).unwrap_err().contains("larger"));
    }

    #[test]
    fn platform_is_chosen_from_an_index() {
        let index = serde_json::json!({"manifests": [
            {"mediaType": OCI_MANIFEST, "digest": "sha256:a", "size": 1,
             "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": OCI_MANIFEST, "digest": "sha256:b", "size": 2,
             "platform": {"os": "windows", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": "sha256:c", "size": 3,
             "platform": {"os": "linux", "architecture": "amd64"}},
        ]});
        assert_eq!(choose_platform(&index, "amd64").unwrap().digest, "sha256:c");
        assert_eq!(choose_platform(&index, "arm64").unwrap().digest, "sha256:a");
        assert!(choose_platform(&index, "s390x").is_none());
    }

    #[test]
    fn manifest_contents_are_checked() {
        let ok = serde_json::json!({
            "config": {"mediaType": CONFIG_TYPES[0], "digest": D, "size": 10},
            "layers": [{"mediaType": LAYER_TYPES[1], "digest": D, "size": 20}],
        });
        let c = contents(ok.to_string().as_bytes()).unwrap();
        assert_eq!(c.layers[0].size, 20);
        let mut bad = ok.clone();
        bad["layers"][0]["mediaType"] =
            "application/vnd.cncf.helm.chart.content.v1.tar+gzip".into();
        assert!(
            contents(bad.to_string().as_bytes())
                .unwrap_err()
                .contains("layer media type")
        );
        let mut bad = ok.clone();
        bad["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json".into();
        assert!(
            contents(bad.to_string().as_bytes())
                .unwrap_err()
                .contains("config media type")
        );
        let mut bad = ok.clone();
        bad["layers"][0]["digest"] = "md5:x".into();
        assert!(
            contents(bad.to_string().as_bytes())
                .unwrap_err()
                .contains("layers[0]")
        );
        let mut bad = ok;
        bad["layers"] = serde_json::json!([]);
        assert!(
            contents(bad.to_string().as_bytes())
                .unwrap_err()
                .contains("no layers")
        );
    }
}

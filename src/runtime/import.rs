//! Importing image archives through the containerd API (what `ctr images
//! import` does): blobs into the content store, then an image record. The
//! layers are unpacked later, when the image is first resolved.
//!
//! Two archive layouts are read: OCI image layouts (`oci-layout`,
//! `index.json`, `blobs/sha256/...`, as written by `skopeo`, `buildah` or
//! `docker save` since Docker 25) and Docker archives (`manifest.json` with
//! `RepoTags`, as written by `docker save` and `podman save`).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use containerd_client::services::v1::{
    CreateImageRequest, Image as ImageRecord, UpdateImageRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::Descriptor;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::RuntimeError;
use super::client::{Calls, status_error};
use super::content::Lease;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// One image an archive provides.
#[derive(Debug, Clone)]
struct ArchiveImage {
    name: String,
    target: Descriptor,
}

/// Everything needed to import an archive, from a first read of it.
#[derive(Debug, Default)]
pub(super) struct Plan {
    images: Vec<ArchiveImage>,
    /// Archive entry path -> descriptor and GC labels of the blob it holds.
    blobs: HashMap<String, (Descriptor, HashMap<String, String>)>,
    /// Blobs made up during planning (Docker archives have no manifest blob).
    generated: Vec<(Descriptor, Vec<u8>, HashMap<String, String>)>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

fn desc(media_type: &str, digest: &str, size: i64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: digest.to_string(),
        size,
        annotations: HashMap::new(),
    }
}

/// Small files of an archive by path, and every file's digest and size.
type ArchiveFiles = (HashMap<String, Vec<u8>>, HashMap<String, (String, i64)>);

/// Reads an archive once: small files kept, every file hashed.
fn read_archive(path: &Path) -> std::io::Result<ArchiveFiles> {
    let mut small = HashMap::new();
    let mut hashes = HashMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(path)?);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut hasher = Sha256::new();
        let mut kept = Vec::new();
        let keep = entry.size() <= 4 << 20;
        let mut buf = vec![0u8; 1 << 16];
        let mut size = 0i64;
        loop {
            let n = entry.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if keep {
                kept.extend_from_slice(&buf[..n]);
            }
            size += i64::try_from(n).unwrap_or(i64::MAX);
        }
        hashes.insert(
            name.clone(),
            (format!("sha256:{}", hex::encode(hasher.finalize())), size),
        );
        if keep {
            small.insert(name, kept);
        }
    }
    Ok((small, hashes))
}

fn plan_archive(path: &Path) -> Result<Plan, String> {
    let (small, hashes) =
        read_archive(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let json = |name: &str| -> Result<serde_json::Value, String> {
        let bytes = small
            .get(name)
            .ok_or_else(|| format!("{}: missing {name}", path.display()))?;
        serde_json::from_slice(bytes).map_err(|e| format!("{}: {name}: {e}", path.display()))
    };
    let mut plan = Plan::default();
    if small.contains_key("index.json") {
        // OCI layout: every blob is named by its digest; link manifests to
        // their content for the garbage collector.
        for (entry, (digest, size)) in &hashes {
            if entry.starts_with("blobs/") {
                plan.blobs
                    .insert(entry.clone(), (desc("", digest, *size), HashMap::new()));
            }
        }
        let index = json("index.json")?;
        for m in index["manifests"].as_array().into_iter().flatten() {
            let d = desc(
                m["mediaType"].as_str().unwrap_or(OCI_MANIFEST),
                m["digest"].as_str().unwrap_or_default(),
                m["size"].as_i64().unwrap_or_default(),
            );
            let ann = &m["annotations"];
            let name = ann["io.containerd.image.name"]
                .as_str()
                .or_else(|| ann["org.opencontainers.image.ref.name"].as_str());
            if let Some(name) = name.and_then(|n| super::image_ref::normalize(n).ok()) {
                plan.images.push(ArchiveImage {
                    name,
                    target: d.clone(),
                });
            }
        }
        // GC references: index -> manifests, manifest -> config and layers.
        for (entry, bytes) in &small {
            if !entry.starts_with("blobs/") {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
                continue;
            };
            let mut labels = HashMap::new();
            if let Some(ms) = v["manifests"].as_array() {
                for (i, m) in ms.iter().enumerate() {
                    if let Some(d) = m["digest"].as_str() {
                        labels.insert(format!("containerd.io/gc.ref.content.m.{i}"), d.to_string());
                    }
                }
            }
            if let Some(d) = v["config"]["digest"].as_str() {
                labels.insert("containerd.io/gc.ref.content.config".into(), d.to_string());
                for (i, l) in v["layers"].as_array().into_iter().flatten().enumerate() {
                    if let Some(d) = l["digest"].as_str() {
                        labels.insert(format!("containerd.io/gc.ref.content.l.{i}"), d.to_string());
                    }
                }
            }
            if let Some(b) = plan.blobs.get_mut(entry) {
                b.1 = labels;
            }
        }
    } else if small.contains_key("manifest.json") {
        let entries: Vec<DockerEntry> = serde_json::from_value(json("manifest.json")?)
            .map_err(|e| format!("{}: manifest.json: {e}", path.display()))?;
        for e in entries {
            let (cfg_digest, cfg_size) = hashes
                .get(&e.config)
                .cloned()
                .ok_or_else(|| format!("{}: missing {}", path.display(), e.config))?;
            plan.blobs.insert(
                e.config.clone(),
                (desc(DOCKER_CONFIG, &cfg_digest, cfg_size), HashMap::new()),
            );
            let mut layers = Vec::new();
            let mut labels = HashMap::from([(
                "containerd.io/gc.ref.content.config".to_string(),
                cfg_digest.clone(),
            )]);
            for (i, l) in e.layers.iter().enumerate() {
                let (digest, size) = hashes
                    .get(l)
                    .cloned()
                    .ok_or_else(|| format!("{}: missing {l}", path.display()))?;
                let gz = l.ends_with(".gz") || l.ends_with(".tgz");
                let d = desc(
                    if gz { DOCKER_LAYER_GZIP } else { DOCKER_LAYER },
                    &digest,
                    size,
                );
                plan.blobs.insert(l.clone(), (d.clone(), HashMap::new()));
                labels.insert(format!("containerd.io/gc.ref.content.l.{i}"), digest);
                layers.push(serde_json::json!({"mediaType": d.media_type, "digest": d.digest, "size": d.size}));
            }
            let manifest = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {"mediaType": DOCKER_CONFIG, "digest": cfg_digest, "size": cfg_size},
                "layers": layers,
            }))
            .expect("JSON serializes");
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(&manifest)));
            let target = desc(
                DOCKER_MANIFEST,
                &digest,
                i64::try_from(manifest.len()).unwrap_or(i64::MAX),
            );
            for tag in &e.repo_tags {
                if let Ok(name) = super::image_ref::normalize(tag) {
                    plan.images.push(ArchiveImage {
                        name,
                        target: target.clone(),
                    });
                }
            }
            plan.generated.push((target, manifest, labels));
        }
    } else {
        return Err(format!(
            "{}: neither an OCI layout (index.json) nor a Docker archive (manifest.json)",
            path.display()
        ));
    }
    Ok(plan)
}

/// Image names each archive of `dir` provides, by reading the archives.
/// Archives are small in number; reading their index costs one pass.
pub(super) fn archives(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "tar") && p.is_file())
        .collect();
    out.sort();
    out
}

/// An archive read once, remembered until its size or mtime changes.
pub(super) struct CachedArchive {
    stamp: (SystemTime, u64),
    plan: Arc<Plan>,
    imported: bool,
}

pub(super) type ArchiveCache = std::sync::Mutex<HashMap<PathBuf, CachedArchive>>;

/// Imports the first archive in `dir` that provides `name`, unless that
/// archive, unchanged, was already imported (and `force` is false). Returns
/// whether an archive provides the image.
pub(super) async fn import_matching(
    c: &Calls,
    cache: &ArchiveCache,
    dir: &Path,
    name: &str,
    force: bool,
) -> Result<bool, RuntimeError> {
    for path in archives(dir) {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        let cached = cache
            .lock()
            .unwrap()
            .get(&path)
            .filter(|a| a.stamp == stamp)
            .map(|a| (Arc::clone(&a.plan), a.imported));
        let (plan, imported) = match cached {
            Some(c) => c,
            None => {
                let p = path.clone();
                match tokio::task::spawn_blocking(move || plan_archive(&p)).await {
                    Ok(Ok(plan)) => (Arc::new(plan), false),
                    Ok(Err(e)) => {
                        warn!("skipping image archive: {e}");
                        continue;
                    }
                    Err(e) => {
                        return Err(RuntimeError::Failed {
                            op: "reading archive",
                            message: e.to_string(),
                        });
                    }
                }
            }
        };
        if !plan.images.iter().any(|i| i.name == name) {
            cache.lock().unwrap().insert(
                path,
                CachedArchive {
                    stamp,
                    plan,
                    imported,
                },
            );
            continue;
        }
        if !imported || force {
            info!(archive = %path.display(), image = name, "importing image archive");
            import(c, &path, &plan).await?;
        }
        cache.lock().unwrap().insert(
            path,
            CachedArchive {
                stamp,
                plan,
                imported: true,
            },
        );
        return Ok(true);
    }
    Ok(false)
}

async fn import(c: &Calls, path: &Path, plan: &Plan) -> Result<(), RuntimeError> {
    let lease = Lease::create(c).await?;
    let result = async {
        // Second pass: write each wanted blob that containerd lacks.
        let mut wanted = HashMap::new();
        for (entry, (d, labels)) in &plan.blobs {
            if !c.has_blob(&d.digest).await? {
                wanted.insert(entry.clone(), (d.clone(), labels.clone()));
            }
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<
            std::io::Result<(Descriptor, HashMap<String, String>, Vec<u8>)>,
        >(1);
        let p = path.to_path_buf();
        let reader = tokio::task::spawn_blocking(move || {
            let send = |item| tx.blocking_send(item).is_ok();
            let file = match std::fs::File::open(&p) {
                Ok(f) => f,
                Err(e) => return send(Err(e)),
            };
            let mut archive = tar::Archive::new(file);
            let entries = match archive.entries() {
                Ok(e) => e,
                Err(e) => return send(Err(e)),
            };
            for entry in entries {
                let mut entry = match entry {
                    Ok(e) => e,
                    Err(e) => return send(Err(e)),
                };
                let name = match entry.path() {
                    Ok(n) => n.to_string_lossy().trim_start_matches("./").to_string(),
                    Err(e) => return send(Err(e)),
                };
                if let Some((d, labels)) = wanted.remove(&name) {
                    let mut data = Vec::with_capacity(usize::try_from(d.size).unwrap_or(0));
                    if let Err(e) = entry.read_to_end(&mut data) {
                        return send(Err(e));
                    }
                    if !send(Ok((d, labels, data))) {
                        return false;
                    }
                }
            }
            true
        });
        while let Some(item) = rx.recv().await {
            let (d, labels, data) = item.map_err(|e| RuntimeError::Failed {
                op: "reading archive",
                message: format!("{}: {e}", path.display()),
            })?;
            super::content::write_blob(c, &lease, &d, data, labels).await?;
        }
        let _ = reader.await;
        for (d, data, labels) in &plan.generated {
            if !c.has_blob(&d.digest).await? {
                super::content::write_blob(c, &lease, d, data.clone(), labels.clone()).await?;
            }
        }
        for image in &plan.images {
            create_image(c, &image.name, image.target.clone()).await?;
        }
        Ok(())
    }
    .await;
    lease.delete(c).await;
    result
}

/// Creates the image record `name` -> `target`, or points an existing one
/// there.
pub(super) async fn create_image(
    c: &Calls,
    name: &str,
    target: Descriptor,
) -> Result<(), RuntimeError> {
    let record = ImageRecord {
        name: name.to_string(),
        labels: HashMap::new(),
        target: Some(target),
        created_at: None,
        updated_at: None,
    };
    let mut images = containerd_client::services::v1::images_client::ImagesClient::new(c.channel());
    match images
        .create(c.req(CreateImageRequest {
            image: Some(record.clone()),
            source_date_epoch: None,
        }))
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::AlreadyExists => {
            images
                .update(c.req(UpdateImageRequest {
                    image: Some(record),
                    update_mask: None,
                    source_date_epoch: None,
                }))
                .await
                .map_err(|s| status_error("updating image", s))?;
            Ok(())
        }
        Err(s) => Err(status_error("creating image", s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(files: &[(&str, &[u8])]) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "kl-import-{}-{}.tar",
            std::process::id(),
            files.len()
        ));
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.finish().unwrap();
        path
    }

    #[test]
    fn docker_archive_gets_a_generated_manifest() {
        let config = br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let manifest =
            br#"[{"Config":"c.json","RepoTags":["busybox:1"],"Layers":["l/layer.tar"]}]"#;
        let path = tar_with(&[
            ("manifest.json", manifest),
            ("c.json", config),
            ("l/layer.tar", b"layer"),
        ]);
        let plan = plan_archive(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(plan.images[0].name, "docker.io/library/busybox:1");
        assert_eq!(plan.images[0].target.media_type, DOCKER_MANIFEST);
        assert_eq!(plan.blobs["l/layer.tar"].0.media_type, DOCKER_LAYER);
        let (d, bytes, labels) = &plan.generated[0];
        assert_eq!(
            d.digest,
            format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
        );
        assert_eq!(
            labels["containerd.io/gc.ref.content.l.0"],
            plan.blobs["l/layer.tar"].0.digest
        );
    }

    #[test]
    fn not_an_archive_is_explained() {
        let path = tar_with(&[("hello.txt", b"hi")]);
        let e = plan_archive(&path).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(e.contains("neither an OCI layout"), "{e}");
    }
}

//! containerd over its v1 gRPC services (containerd 1.6 has no Transfer or
//! Sandbox service). Every request carries the `containerd-namespace` header.

use std::collections::HashMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use containerd_client::Client;
use containerd_client::services::v1::container::Runtime as RuntimeInfo;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
    StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, Container, CreateContainerRequest, CreateNamespaceRequest, CreateTaskRequest,
    DeleteContainerRequest, DeleteTaskRequest, GetImageRequest, GetRequest, KillRequest,
    ListContainersRequest, ListTasksRequest, StartRequest, UpdateContainerRequest,
    UpdateRequest as UpdateContentRequest, WaitRequest,
};
use containerd_client::tonic::{Code, Request};
use containerd_client::types::{Descriptor, Mount};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use tracing::{debug, info};

use super::client::{Calls, status_error, to_system_time};
use super::{
    ContainerRecord, ExecOutput, ExecRequest, Exit, Image, ImageConfig, NewContainer, PulledImage,
    Runtime, RuntimeError, TaskState,
};

/// The last outcome of a pull of one name, and when it ended: a pull that
/// waited for another of the same name takes its result.
type PullSlot = std::sync::Arc<
    tokio::sync::Mutex<Option<(std::time::Instant, Result<PulledImage, RuntimeError>)>>,
>;

const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

pub struct Containerd {
    pub(super) client: Client,
    /// The same connection, with the namespace and deadline, as the image
    /// import uses it.
    calls: Calls,
    namespace: String,
    snapshotter: String,
    runtime: String,
    images_dir: PathBuf,
    /// The binary the shim runs as the container's log writer (ourselves).
    logger: PathBuf,
    log_rotation: Option<crate::logs::rotate::Rotation>,
    systemd_cgroup: bool,
    /// Parsed image configs by manifest digest: images are immutable.
    configs: Mutex<HashMap<String, (String, ImageConfig)>>,
    /// Serializes imports so that two pods of one image import it once.
    import_lock: tokio::sync::Mutex<()>,
    archives: super::import::ArchiveCache,
    registries: super::registry::Registries,
    /// One transfer per image name at a time (single flight).
    pulls: Mutex<HashMap<String, PullSlot>>,
    /// Exec FIFOs and container process specs (see [`super::exec`]).
    pub(super) exec: ExecState,
}

/// What execs keep (see [`super::exec`]): the FIFO directory and the
/// process specs of the containers exec'd into (a container's spec never
/// changes; one Containers.Get per container).
pub(super) struct ExecState {
    pub(super) dir: PathBuf,
    pub(super) specs: Mutex<HashMap<String, oci_spec::runtime::Process>>,
}

impl ExecState {
    /// FIFOs in `dir`, the agent's own: those an agent killed during an
    /// exec left there are removed (no one reads them any more; an exec'd
    /// process still running keeps its ends open through the shim).
    pub(super) fn new(dir: PathBuf) -> ExecState {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_fifo()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        ExecState {
            dir,
            specs: Mutex::new(HashMap::new()),
        }
    }

    /// The container is gone: its spec is not needed any more.
    pub(super) fn forget(&self, id: &str) {
        self.specs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }
}

pub struct ContainerdOptions {
    pub address: PathBuf,
    pub namespace: String,
    pub snapshotter: String,
    pub runtime: String,
    pub images_dir: PathBuf,
    pub logger: PathBuf,
    /// Passed to the log writer.
    pub log_rotation: Option<crate::logs::rotate::Rotation>,
    /// Use runc's systemd cgroup driver.
    pub systemd_cgroup: bool,
    /// Deadline of one call (but waits and data transfers): the kubelet's
    /// `runtimeRequestTimeout`.
    pub call_timeout: Duration,
    /// Mirrors, TLS and credentials for registry pulls.
    pub registries: super::registry::RegistryOptions,
    /// Where execs' FIFOs are made (the agent's own directory).
    pub exec_dir: PathBuf,
}

impl Containerd {
    /// Connects and makes sure our namespace exists.
    pub async fn connect(opts: ContainerdOptions) -> Result<Containerd, RuntimeError> {
        let channel = containerd_client::connect(&opts.address)
            .await
            .map_err(|e| {
                RuntimeError::Unavailable(format!("connecting to {}: {e}", opts.address.display()))
            })?;
        let c = Containerd {
            calls: Calls::new(channel.clone(), &opts.namespace, opts.call_timeout),
            client: Client::from(channel),
            namespace: opts.namespace,
            snapshotter: opts.snapshotter,
            runtime: opts.runtime,
            images_dir: opts.images_dir,
            logger: opts.logger,
            log_rotation: opts.log_rotation,
            systemd_cgroup: opts.systemd_cgroup,
            configs: Mutex::new(HashMap::new()),
            import_lock: tokio::sync::Mutex::new(()),
            archives: Default::default(),
            registries: super::registry::Registries::new(opts.registries),
            pulls: Mutex::new(HashMap::new()),
            exec: ExecState::new(opts.exec_dir),
        };
        let req = c.req(CreateNamespaceRequest {
            namespace: Some(containerd_client::services::v1::Namespace {
                name: c.namespace.clone(),
                labels: HashMap::new(),
            }),
        });
        match c.client.namespaces().create(req).await {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => return Err(status_error("creating namespace", s)),
        }
        super::content::Lease::release_stale(&c.calls).await?;
        Ok(c)
    }

    /// containerd's version as the kubelet names the runtime
    /// (`containerd://1.6.20`): the cheap call that tells whether it answers.
    pub async fn version(&self) -> Result<String, RuntimeError> {
        let v = self
            .client
            .version()
            .version(self.req(()))
            .await
            .map_err(|s| status_error("asking the version", s))?
            .into_inner();
        Ok(format!("containerd://{}", v.version))
    }

    /// [`Calls::req`].
    pub(super) fn req<T>(&self, msg: T) -> Request<T> {
        self.calls.req(msg)
    }

    /// [`Calls::req_unbounded`].
    pub(super) fn req_unbounded<T>(&self, msg: T) -> Request<T> {
        self.calls.req_unbounded(msg)
    }

    /// The image as containerd knows it, with its layers unpacked; `None`
    /// when containerd has no image of that name.
    async fn resolve(&self, name: &str) -> Result<Option<Image>, RuntimeError> {
        let image = match self
            .client
            .images()
            .get(self.req(GetImageRequest {
                name: name.to_string(),
            }))
            .await
        {
            Ok(r) => r.into_inner().image,
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(status_error("getting image", s)),
        };
        let Some(target) = image.and_then(|i| i.target) else {
            return Ok(None);
        };
        self.load(name, target).await.map(Some)
    }

    /// The image whose record points at `target`, its layers unpacked
    /// (the content must be in the store).
    async fn load(&self, name: &str, target: Descriptor) -> Result<Image, RuntimeError> {
        let manifest_desc = self.platform_manifest(target, name).await?;
        if let Some((chain_id, config)) = self.configs.lock().unwrap().get(&manifest_desc.digest) {
            return Ok(Image {
                name: name.to_string(),
                chain_id: chain_id.clone(),
                config: config.clone(),
            });
        }
        let manifest: ImageManifest =
            parse_json(&self.calls.read_blob(&manifest_desc.digest).await?, name)?;
        let config_digest = manifest.config().digest().to_string();
        let config: ImageConfiguration =
            parse_json(&self.calls.read_blob(&config_digest).await?, name)?;
        let diff_ids = config.rootfs().diff_ids().clone();
        let chain_id =
            chain_ids(&diff_ids)
                .last()
                .cloned()
                .ok_or_else(|| RuntimeError::Failed {
                    op: "reading image",
                    message: format!("{name}: image has no layers"),
                })?;
        if !self.snapshot_exists(&chain_id).await? {
            self.unpack(name, &manifest, &diff_ids, &config_digest)
                .await?;
        }
        let c = config.config().clone().unwrap_or_default();
        let image_config = ImageConfig {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().unwrap_or_default(),
            user: c.user().clone().unwrap_or_default(),
        };
        self.configs.lock().unwrap().insert(
            manifest_desc.digest.clone(),
            (chain_id.clone(), image_config.clone()),
        );
        Ok(Image {
            name: name.to_string(),
            chain_id,
            config: image_config,
        })
    }

    /// Follows an index (multi-platform image) to this machine's manifest.
    async fn platform_manifest(
        &self,
        target: Descriptor,
        name: &str,
    ) -> Result<Descriptor, RuntimeError> {
        if !is_index(&target.media_type) {
            return Ok(target);
        }
        let index: ImageIndex = parse_json(&self.calls.read_blob(&target.digest).await?, name)?;
        let arch = super::image_ref::go_arch();
        let chosen = index
            .manifests()
            .iter()
            .find(|m| {
                m.platform().as_ref().is_none_or(|p| {
                    p.architecture().to_string() == arch && p.os().to_string() == "linux"
                })
            })
            .ok_or_else(|| {
                RuntimeError::ImageNotFound(format!("image {name} has no linux/{arch} variant"))
            })?;
        Ok(Descriptor {
            media_type: chosen.media_type().to_string(),
            digest: chosen.digest().to_string(),
            size: i64::try_from(chosen.size()).unwrap_or(i64::MAX),
            annotations: HashMap::new(),
        })
    }

    /// One pull: an archive of the images directory if one provides the
    /// name (air-gapped nodes), else the registry. Content goes in under a
    /// lease; the image record is created only once every layer is
    /// unpacked, so a failed pull leaves no image, and its content goes
    /// with the lease.
    async fn pull_now(&self, name: &str) -> Result<PulledImage, RuntimeError> {
        let started = std::time::Instant::now();
        {
            let _guard = self.import_lock.lock().await;
            let dir = &self.images_dir;
            if super::import::import_matching(&self.calls, &self.archives, dir, name, false).await?
            {
                let mut found = self.resolve(name).await?;
                if found.is_none() {
                    // Imported earlier, then removed from containerd (its
                    // snapshots may be gone too: forget the cached configs).
                    self.configs.lock().unwrap().clear();
                    super::import::import_matching(&self.calls, &self.archives, dir, name, true)
                        .await?;
                    found = self.resolve(name).await?;
                }
                if let Some(image) = found {
                    let size = self.image_size(name).await.unwrap_or(0);
                    return Ok(PulledImage {
                        image,
                        size,
                        took: started.elapsed(),
                    });
                }
            }
        }
        debug!(
            image = name,
            "no archive provides the image; pulling from its registry"
        );
        // The parsed-config cache trusts that an image's snapshots exist;
        // a pulled image may have been removed (by the image garbage
        // collector, or by hand) since it was cached: unpack again.
        self.configs.lock().unwrap().clear();
        let lease = super::content::Lease::create(&self.calls).await?;
        let result = async {
            let fetched = super::pull::fetch(&self.calls, &lease, &self.registries, name).await?;
            let image = self.load(name, fetched.target.clone()).await?;
            super::import::create_image(&self.calls, name, fetched.target).await?;
            info!(image = name, from = %fetched.from, bytes = fetched.size, "pulled image");
            Ok(PulledImage {
                image,
                size: fetched.size,
                took: started.elapsed(),
            })
        }
        .await;
        lease.delete(&self.calls).await;
        result
    }

    /// Every image of our namespace with its size (for this platform), for
    /// the image garbage collector.
    pub(crate) async fn images_with_sizes(&self) -> Result<Vec<(String, u64)>, RuntimeError> {
        let images = self
            .client
            .images()
            .list(self.req(containerd_client::services::v1::ListImagesRequest { filters: vec![] }))
            .await
            .map_err(|s| status_error("listing images", s))?
            .into_inner()
            .images;
        let mut out = Vec::new();
        for i in images {
            // An image whose content is partly gone counts as 0 bytes.
            let size = self.image_size(&i.name).await.unwrap_or(0);
            out.push((i.name, size));
        }
        Ok(out)
    }

    /// The container records of our namespace that match `filters`
    /// (containerd's filter syntax; none: all).
    async fn containers(
        &self,
        filters: Vec<String>,
    ) -> Result<Vec<containerd_client::services::v1::Container>, RuntimeError> {
        Ok(self
            .client
            .containers()
            .list(self.req(ListContainersRequest { filters }))
            .await
            .map_err(|s| status_error("listing containers", s))?
            .into_inner()
            .containers)
    }

    /// Names of the images that containers of our namespace were made from.
    pub(crate) async fn images_in_use(
        &self,
    ) -> Result<std::collections::HashSet<String>, RuntimeError> {
        Ok(self
            .containers(vec![])
            .await?
            .into_iter()
            .map(|c| c.image)
            .collect())
    }

    /// Where the snapshotter keeps its data (its plugin's `root` export):
    /// the filesystem the image garbage collector watches.
    pub(crate) async fn snapshotter_root(&self) -> Result<Option<PathBuf>, RuntimeError> {
        let plugins = self
            .client
            .introspection()
            .plugins(self.req(containerd_client::services::v1::PluginsRequest {
                filters: vec![format!(
                    "type==io.containerd.snapshotter.v1,id=={}",
                    self.snapshotter
                )],
            }))
            .await
            .map_err(|s| status_error("listing plugins", s))?
            .into_inner()
            .plugins;
        Ok(plugins
            .into_iter()
            .find_map(|p| p.exports.get("root").map(PathBuf::from)))
    }

    /// Deletes an image record; containerd's garbage collector then frees
    /// what no other image or container references.
    pub(crate) async fn remove_image(&self, name: &str) -> Result<(), RuntimeError> {
        self.configs.lock().unwrap().clear();
        match self
            .client
            .images()
            .delete(
                self.req(containerd_client::services::v1::DeleteImageRequest {
                    name: name.to_string(),
                    sync: true,
                    target: None,
                }),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(status_error("removing image", s)),
        }
    }

    /// Bytes of an image's manifest, config and layers for this platform.
    async fn image_size(&self, name: &str) -> Result<u64, RuntimeError> {
        let image = self
            .client
            .images()
            .get(self.req(GetImageRequest {
                name: name.to_string(),
            }))
            .await
            .map_err(|s| status_error("getting image", s))?
            .into_inner()
            .image
            .and_then(|i| i.target)
            .ok_or_else(|| RuntimeError::ImageNotFound(name.to_string()))?;
        let m = self.platform_manifest(image, name).await?;
        let manifest: ImageManifest = parse_json(&self.calls.read_blob(&m.digest).await?, name)?;
        let layers: u64 = manifest.layers().iter().map(|l| l.size()).sum();
        Ok(layers + manifest.config().size() + u64::try_from(m.size).unwrap_or(0))
    }

    async fn snapshot_exists(&self, key: &str) -> Result<bool, RuntimeError> {
        match self
            .client
            .snapshots()
            .stat(self.req(StatSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(status_error("stat snapshot", s)),
        }
    }

    /// Applies every layer onto a chain of committed snapshots named by chain
    /// ID, as containerd's unpacker does, then labels the config blob so that
    /// the garbage collector keeps the snapshots while the image exists.
    async fn unpack(
        &self,
        name: &str,
        manifest: &ImageManifest,
        diff_ids: &[String],
        config_digest: &str,
    ) -> Result<(), RuntimeError> {
        info!(image = name, "unpacking image");
        let chains = chain_ids(diff_ids);
        if manifest.layers().len() != chains.len() {
            return Err(RuntimeError::Failed {
                op: "unpacking image",
                message: format!(
                    "{name}: manifest has {} layers, config {} diff IDs",
                    manifest.layers().len(),
                    chains.len()
                ),
            });
        }
        let lease = super::content::Lease::create(&self.calls).await?;
        let result = async {
            let mut parent = String::new();
            for (i, (layer, chain)) in manifest.layers().iter().zip(&chains).enumerate() {
                if !self.snapshot_exists(chain).await? {
                    // Unique per unpack, as containerd's unpacker makes it:
                    // two images sharing a layer may unpack it at once, and
                    // the loser's commit finds the snapshot there.
                    static UNPACKS: std::sync::atomic::AtomicU64 =
                        std::sync::atomic::AtomicU64::new(0);
                    let n = UNPACKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let key = format!("extract-{}-{n}-{chain}", std::process::id());
                    let mounts = self
                        .client
                        .snapshots()
                        .prepare(lease.wrap(self.req(PrepareSnapshotRequest {
                            snapshotter: self.snapshotter.clone(),
                            key: key.clone(),
                            parent: parent.clone(),
                            labels: HashMap::new(),
                        })))
                        .await
                        .map_err(|s| status_error("preparing snapshot", s))?
                        .into_inner()
                        .mounts;
                    let applied = self
                        .client
                        .diff()
                        .apply(lease.wrap(self.req_unbounded(ApplyRequest {
                            diff: Some(Descriptor {
                                media_type: layer.media_type().to_string(),
                                digest: layer.digest().to_string(),
                                size: i64::try_from(layer.size()).unwrap_or(i64::MAX),
                                annotations: HashMap::new(),
                            }),
                            mounts,
                            payloads: HashMap::new(),
                            sync_fs: false,
                        })))
                        .await;
                    let applied = match applied {
                        Ok(r) => r.into_inner().applied,
                        Err(s) => {
                            let _ = self.remove_snapshot(&key).await;
                            return Err(status_error("applying layer", s));
                        }
                    };
                    // The uncompressed layer must be the one the config
                    // names: a registry cannot swap layers under a config.
                    if let Some(a) = applied
                        && Some(&a.digest) != diff_ids.get(i)
                    {
                        let _ = self.remove_snapshot(&key).await;
                        return Err(RuntimeError::Pull(format!(
                            "{name}: layer {} unpacks to {}, the config says {}",
                            layer.digest(),
                            a.digest,
                            diff_ids.get(i).map_or("nothing", String::as_str)
                        )));
                    }
                    let committed = self
                        .client
                        .snapshots()
                        .commit(lease.wrap(self.req(CommitSnapshotRequest {
                            snapshotter: self.snapshotter.clone(),
                            name: chain.clone(),
                            key: key.clone(),
                            labels: HashMap::new(),
                        })))
                        .await;
                    match committed {
                        Ok(_) => {}
                        // Another unpack of the same layer won the race.
                        Err(s) if s.code() == Code::AlreadyExists => {
                            let _ = self.remove_snapshot(&key).await;
                        }
                        Err(s) => {
                            let _ = self.remove_snapshot(&key).await;
                            return Err(status_error("committing snapshot", s));
                        }
                    }
                }
                parent = chain.clone();
            }
            let label = format!("containerd.io/gc.ref.snapshot.{}", self.snapshotter);
            self.client
                .content()
                .update(self.req(UpdateContentRequest {
                    info: Some(containerd_client::services::v1::Info {
                        digest: config_digest.to_string(),
                        labels: HashMap::from([(label.clone(), parent.clone())]),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec![format!("labels.{label}")],
                    }),
                }))
                .await
                .map_err(|s| status_error("labelling image config", s))?;
            Ok(())
        }
        .await;
        lease.delete(&self.calls).await;
        result
    }

    async fn remove_snapshot(&self, key: &str) -> Result<(), RuntimeError> {
        match self
            .client
            .snapshots()
            .remove(self.req(RemoveSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(status_error("removing snapshot", s)),
        }
    }

    async fn prepare_rootfs(&self, id: &str, parent: &str) -> Result<Vec<Mount>, RuntimeError> {
        let prepared = self
            .client
            .snapshots()
            .prepare(self.req(PrepareSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: id.to_string(),
                parent: parent.to_string(),
                labels: HashMap::new(),
            }))
            .await;
        match prepared {
            Ok(r) => Ok(r.into_inner().mounts),
            // Left by an earlier attempt that died before creating the task.
            Err(s) if s.code() == Code::AlreadyExists => Ok(self
                .client
                .snapshots()
                .mounts(self.req(MountsRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: id.to_string(),
                }))
                .await
                .map_err(|s| status_error("snapshot mounts", s))?
                .into_inner()
                .mounts),
            Err(s) => Err(status_error("preparing rootfs", s)),
        }
    }

    /// `binary://` log URI: the shim starts our own binary as the container's
    /// logger (fd 3 stdout, fd 4 stderr, fd 5 closed when ready), so logs keep
    /// flowing while the agent is down. A `file://` URI would be simpler, but
    /// containerd 1.6 merges stderr into it and writes raw bytes, not the CRI
    /// log format.
    fn log_uri(&self, path: &Path) -> String {
        log_uri(&self.logger, path, self.log_rotation)
    }
}

/// The shim passes the query to the writer as `key value` arguments (see
/// [`crate::logs::LoggerArgs`]).
fn log_uri(logger: &Path, path: &Path, rotation: Option<crate::logs::rotate::Rotation>) -> String {
    use crate::logs::LoggerArgs;
    let mut uri = format!(
        "binary://{}?{}={}",
        percent_encode(&logger.to_string_lossy()),
        LoggerArgs::PATH,
        percent_encode(&path.to_string_lossy())
    );
    if let Some(r) = rotation {
        uri.push_str(&format!(
            "&{}={}&{}={}",
            LoggerArgs::MAX_SIZE,
            r.max_size,
            LoggerArgs::MAX_FILES,
            r.max_files
        ));
    }
    uri
}

/// `containerd.runc.v1.Options{systemd_cgroup: true}`. containerd-client
/// does not generate this message, and it has one field: `bool
/// systemd_cgroup = 9`, so its encoding is the key byte (9 << 3 | varint)
/// followed by 1.
/// A task's state as containerd reports it.
fn task_state(t: &containerd_client::types::v1::Process) -> TaskState {
    use containerd_client::types::v1::Status;
    match Status::try_from(t.status).unwrap_or(Status::Unknown) {
        Status::Created => TaskState::Created,
        Status::Running | Status::Paused | Status::Pausing => TaskState::Running { pid: t.pid },
        Status::Stopped => TaskState::Exited(Exit {
            code: t.exit_status,
            at: to_system_time(t.exited_at).unwrap_or_else(SystemTime::now),
        }),
        Status::Unknown => TaskState::None,
    }
}

fn runc_systemd_options() -> prost_types::Any {
    prost_types::Any {
        type_url: "containerd.runc.v1.Options".to_string(),
        value: vec![9 << 3, 1],
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"/._-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn is_index(media_type: &str) -> bool {
    media_type == "application/vnd.oci.image.index.v1+json"
        || media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
}

fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    image: &str,
) -> Result<T, RuntimeError> {
    serde_json::from_slice(bytes).map_err(|e| RuntimeError::Failed {
        op: "reading image",
        message: format!("{image}: {e}"),
    })
}

/// Chain IDs of a layer stack: chain(0) = diff(0), chain(n) =
/// sha256(chain(n-1) + " " + diff(n)), per the OCI image spec.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    use sha2::{Digest, Sha256};
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}")))
            ),
        };
        out.push(next);
    }
    out
}

#[async_trait]
impl Runtime for Containerd {
    async fn image_status(&self, name: &str) -> Result<Option<Image>, RuntimeError> {
        self.resolve(name).await
    }

    async fn pull_image(&self, name: &str) -> Result<PulledImage, RuntimeError> {
        let slot = Arc::clone(
            self.pulls
                .lock()
                .unwrap()
                .entry(name.to_string())
                .or_default(),
        );
        let asked = std::time::Instant::now();
        let mut last = slot.lock().await;
        if let Some((ended, result)) = &*last
            && *ended >= asked
        {
            // Another pull of this name ran while we waited.
            return result.clone();
        }
        let result = self.pull_now(name).await;
        *last = Some((std::time::Instant::now(), result.clone()));
        result
    }

    async fn create(&self, c: &NewContainer) -> Result<(), RuntimeError> {
        let spec = serde_json::to_vec(&c.spec).map_err(|e| RuntimeError::Failed {
            op: "encoding spec",
            message: e.to_string(),
        })?;
        // The container record comes first: it references the snapshot
        // (by key) before the snapshot exists, so that the garbage
        // collector, which may run at any moment after another container's
        // removal, never finds the new snapshot unreferenced. (containerd's
        // own client holds a lease instead; this costs no extra call.)
        let container = Container {
            id: c.id.clone(),
            labels: c.labels.clone(),
            image: c.image.name.clone(),
            runtime: Some(RuntimeInfo {
                name: self.runtime.clone(),
                options: self.systemd_cgroup.then(runc_systemd_options),
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE_URL.to_string(),
                value: spec,
            }),
            snapshotter: self.snapshotter.clone(),
            snapshot_key: c.id.clone(),
            ..Default::default()
        };
        let t = std::time::Instant::now();
        let created = self
            .client
            .containers()
            .create(self.req(CreateContainerRequest {
                container: Some(container.clone()),
            }))
            .await;
        if let Err(s) = created {
            if s.code() != Code::AlreadyExists {
                return Err(status_error("creating container", s));
            }
            // A leftover of a crashed attempt with the same ID: replace it.
            self.client
                .containers()
                .delete(self.req(DeleteContainerRequest { id: c.id.clone() }))
                .await
                .map_err(|s| status_error("replacing container", s))?;
            self.client
                .containers()
                .create(self.req(CreateContainerRequest {
                    container: Some(container),
                }))
                .await
                .map_err(|s| status_error("creating container", s))?;
        }
        let record = t.elapsed();
        let mounts = match self.prepare_rootfs(&c.id, &c.image.chain_id).await {
            Ok(m) => m,
            Err(e) => {
                let _ = self
                    .client
                    .containers()
                    .delete(self.req(DeleteContainerRequest { id: c.id.clone() }))
                    .await;
                return Err(e);
            }
        };
        let snapshot = t.elapsed() - record;
        let uri = self.log_uri(&c.log_path);
        let task = self
            .client
            .tasks()
            .create(self.req(CreateTaskRequest {
                container_id: c.id.clone(),
                rootfs: mounts,
                stdout: uri.clone(),
                stderr: uri,
                ..Default::default()
            }))
            .await;
        // Where a creation's time goes (the task is the shim's start and
        // `runc create`), for start-up profiles.
        tracing::debug!(id = c.id, ?record, ?snapshot, task = ?(t.elapsed() - record - snapshot), "containerd create");
        if let Err(s) = task {
            let err = status_error("creating task", s);
            let _ = self.remove(&c.id).await;
            return Err(err);
        }
        Ok(())
    }

    async fn start(&self, id: &str) -> Result<u32, RuntimeError> {
        let r = self
            .client
            .tasks()
            .start(self.req(StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| status_error("starting task", s))?;
        Ok(r.into_inner().pid)
    }

    async fn wait(&self, id: &str) -> Result<Exit, RuntimeError> {
        let r = self
            .client
            .tasks()
            .wait(self.req_unbounded(WaitRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| status_error("waiting for task", s))?
            .into_inner();
        Ok(Exit {
            code: r.exit_status,
            at: to_system_time(r.exited_at).unwrap_or_else(SystemTime::now),
        })
    }

    async fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RuntimeError> {
        match self
            .client
            .tasks()
            .kill(self.req(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal: signal.cast_unsigned(),
                all,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound || s.code() == Code::FailedPrecondition => Ok(()),
            Err(s) => Err(status_error("killing task", s)),
        }
    }

    async fn delete_task(&self, id: &str) -> Result<(), RuntimeError> {
        match self
            .client
            .tasks()
            .delete(self.req(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(status_error("deleting task", s)),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.exec.forget(id);
        if let Err(e) = self.delete_task(id).await {
            // Still running (FailedPrecondition): kill it and try again.
            if e.is_transient() {
                return Err(e);
            }
            self.kill(id, libc::SIGKILL, true).await?;
            let _ = tokio::time::timeout(Duration::from_secs(10), self.wait(id)).await;
            self.delete_task(id).await?;
        }
        match self
            .client
            .containers()
            .delete(self.req(DeleteContainerRequest { id: id.to_string() }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(status_error("deleting container", s)),
        }
        self.remove_snapshot(id).await
    }

    async fn list(&self) -> Result<Vec<ContainerRecord>, RuntimeError> {
        let containers = self.containers(vec![]).await?;
        let tasks = self
            .client
            .tasks()
            .list(self.req(ListTasksRequest {
                filter: String::new(),
            }))
            .await
            .map_err(|s| status_error("listing tasks", s))?
            .into_inner()
            .tasks;
        let mut by_id: HashMap<String, TaskState> = HashMap::new();
        for t in tasks {
            let state = task_state(&t);
            // containerd 1.6 leaves `container_id` empty in task lists: a
            // task's `id` is its container's.
            let id = if t.container_id.is_empty() {
                t.id
            } else {
                t.container_id
            };
            by_id.insert(id, state);
        }
        Ok(containers
            .into_iter()
            .map(|c| ContainerRecord {
                task: by_id.remove(&c.id).unwrap_or(TaskState::None),
                created_at: to_system_time(c.created_at),
                id: c.id,
                labels: c.labels,
            })
            .collect())
    }

    async fn list_pod(&self, uid: &str) -> Result<Vec<ContainerRecord>, RuntimeError> {
        // Filtered by containerd: a container record carries its whole OCI
        // spec, so listing every container for each pod costs megabytes.
        let filter = format!("labels.\"{}\"==\"{uid}\"", super::labels::POD_UID);
        let containers = self.containers(vec![filter]).await?;
        let mut out = Vec::with_capacity(containers.len());
        for c in containers {
            let task = match self
                .client
                .tasks()
                .get(self.req(GetRequest {
                    container_id: c.id.clone(),
                    exec_id: String::new(),
                }))
                .await
            {
                Ok(r) => r
                    .into_inner()
                    .process
                    .as_ref()
                    .map_or(TaskState::None, task_state),
                Err(s) if s.code() == Code::NotFound => TaskState::None,
                Err(s) => return Err(status_error("getting task", s)),
            };
            out.push(ContainerRecord {
                task,
                created_at: to_system_time(c.created_at),
                id: c.id,
                labels: c.labels,
            });
        }
        Ok(out)
    }

    async fn exec(&self, id: &str, req: &ExecRequest) -> Result<ExecOutput, RuntimeError> {
        self.exec_process(id, req).await
    }

    async fn set_labels(
        &self,
        id: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        self.client
            .containers()
            .update(self.req(UpdateContainerRequest {
                container: Some(Container {
                    id: id.to_string(),
                    labels,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            }))
            .await
            .map_err(|s| status_error("updating container labels", s))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifos_left_by_a_killed_agent_are_removed_at_start() {
        let dir = crate::test_support::temp_dir("exec-fifos");
        let fifo = dir.join("exec-0123.stdout");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::write(dir.join("note"), "kept").unwrap();
        let state = ExecState::new(dir.clone());
        assert_eq!(state.dir, dir);
        assert!(!fifo.exists());
        assert!(dir.join("note").exists(), "only FIFOs are removed");
        // A directory not made yet is no error.
        ExecState::new(dir.join("absent"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = "sha256:aaaa".to_string();
        let b = "sha256:bbbb".to_string();
        let chains = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chains[0], a);
        use sha2::{Digest, Sha256};
        let want = format!(
            "sha256:{}",
            hex::encode(Sha256::digest("sha256:aaaa sha256:bbbb"))
        );
        assert_eq!(chains[1], want);
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn log_uri_escapes_query() {
        assert_eq!(
            percent_encode("/var/log/pods/a b?c"),
            "/var/log/pods/a%20b%3Fc"
        );
        let rotation = crate::logs::rotate::Rotation {
            max_size: 1024,
            max_files: 3,
        };
        assert_eq!(
            log_uri(Path::new("/bin/kl"), Path::new("/l/0.log"), Some(rotation)),
            "binary:///bin/kl?cri-log=/l/0.log&max-size=1024&max-files=3"
        );
        assert_eq!(
            log_uri(Path::new("/bin/kl"), Path::new("/l/0.log"), None),
            "binary:///bin/kl?cri-log=/l/0.log"
        );
    }
}

//! Pod volumes: emptyDir (disk or tmpfs), hostPath, NFS, configMap and
//! secret files, and PersistentVolumeClaims bound to hostPath, local or NFS
//! PersistentVolumes, laid out as the kubelet lays them out under
//! `<rootDir>/pods/<uid>/volumes/kubernetes.io~<plugin>/<name>`.
//!
//! [`resolve`] turns a pod's volume and env references into concrete
//! sources from the objects of the manifest directory (pure); [`mount`]
//! makes them exist on the host and removes them.

pub mod atomic;
pub mod bind;
pub mod mount;
pub mod resolve;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

/// A file of a configMap or secret volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct File {
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Where a volume's data comes from, everything looked up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Source {
    EmptyDir {
        memory: bool,
        size_limit: Option<i64>,
    },
    HostPath {
        path: PathBuf,
        /// The hostPath `type` ("" for no check).
        kind: String,
    },
    Nfs {
        server: String,
        path: String,
        read_only: bool,
        options: Vec<String>,
        /// The PersistentVolume's name, when it came from a claim.
        pv: Option<String>,
    },
    /// A `local` PersistentVolume: an existing directory.
    Local { path: PathBuf, pv: String },
    /// configMap (`secret: false`) or secret files.
    Files { secret: bool, files: Vec<File> },
    /// Cannot be set up until the manifests change (a claim without a
    /// volume, a missing configMap): the pod waits with this reason.
    Unavailable(crate::pod::PodError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    pub name: String,
    pub source: Source,
    /// Read-only for every mount (PVC `readOnly`, PV `nfs.readOnly`).
    pub read_only: bool,
}

impl Volume {
    /// Whether containers get it read-only: as asked, and always for
    /// configMap and secret volumes (as Kubernetes mounts them).
    pub fn mounted_read_only(&self) -> bool {
        self.read_only || matches!(self.source, Source::Files { .. })
    }

    /// The kubelet's plugin directory name for this volume, if it has one
    /// under the pod's directory.
    pub fn plugin_dir(&self) -> Option<PathBuf> {
        let (plugin, name) = match &self.source {
            Source::EmptyDir { .. } => ("kubernetes.io~empty-dir", self.name.as_str()),
            Source::Nfs { pv: Some(pv), .. } => ("kubernetes.io~nfs", pv.as_str()),
            Source::Nfs { pv: None, .. } => ("kubernetes.io~nfs", self.name.as_str()),
            Source::Files { secret: false, .. } => ("kubernetes.io~configmap", self.name.as_str()),
            Source::Files { secret: true, .. } => ("kubernetes.io~secret", self.name.as_str()),
            _ => return None,
        };
        Some(PathBuf::from("volumes").join(plugin).join(name))
    }
}

/// Environment a container gets from configMaps and secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ContainerEnv {
    /// `envFrom`, in order (later sources win).
    pub from: Vec<(String, String)>,
    /// Values of `env[].valueFrom.{configMapKeyRef,secretKeyRef}` by name.
    pub refs: BTreeMap<String, String>,
}

/// What a pod's volume and env references resolved to, from the objects of
/// the manifest directory (part of the desired pod and of its UID).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Resolved {
    pub volumes: Vec<Volume>,
    pub env: BTreeMap<String, ContainerEnv>,
    /// Why the pod cannot start yet.
    pub problem: Option<crate::pod::PodError>,
}

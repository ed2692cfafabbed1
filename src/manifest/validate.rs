//! Validation of a typed Pod before anything is created. Every problem is
//! collected (not just the first) with the field path Kubernetes would print.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::quantity::Quantity;
use super::{container, syntax};

pub(super) use super::field::Errors;
pub use super::field::FieldError;
pub use super::syntax::{check_label, check_subdomain};

const RESTART_POLICIES: [&str; 3] = ["Always", "OnFailure", "Never"];
const DNS_POLICIES: [&str; 4] = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];

/// The API server's limit on all of an object's annotations together
/// (keys and values), 256 KiB.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// Labels and annotations, as ValidateObjectMeta checks them.
fn validate_meta(meta: &ObjectMeta, e: &mut Errors) {
    for (k, v) in meta.labels.iter().flatten() {
        if let Err(m) = syntax::qualified_name(k) {
            e.add("metadata.labels", m);
        }
        if let Err(m) = syntax::label_value(v) {
            e.add(format!("metadata.labels[{k}]"), m);
        }
    }
    let mut total = 0usize;
    for (k, v) in meta.annotations.iter().flatten() {
        // Annotation keys are compared case-insensitively by the API server.
        if let Err(m) = syntax::qualified_name(&k.to_ascii_lowercase()) {
            e.add("metadata.annotations", m);
        }
        total = total.saturating_add(k.len()).saturating_add(v.len());
    }
    if total > MAX_ANNOTATIONS_BYTES {
        e.add(
            "metadata.annotations",
            format!(
                "Too long: may not be more than {MAX_ANNOTATIONS_BYTES} bytes (they hold {total})"
            ),
        );
    }
}

/// Validates a pod as it will run on `node` (the static pod name is
/// `<name>-<node>`).
pub fn validate_pod(pod: &Pod, node: &str) -> Vec<FieldError> {
    let mut e = Errors::default();
    match pod.metadata.name.as_deref() {
        None | Some("") => e.add("metadata.name", "required"),
        Some(name) => {
            if let Err(m) = check_subdomain(name) {
                e.add("metadata.name", m);
            } else if name.len() + 1 + node.len() > 253 {
                e.add(
                    "metadata.name",
                    format!("{name:?} with the node suffix -{node} is longer than 253 characters"),
                );
            }
        }
    }
    if let Some(ns) = pod.metadata.namespace.as_deref()
        && let Err(m) = check_label(ns)
    {
        e.add("metadata.namespace", m);
    }
    validate_meta(&pod.metadata, &mut e);
    match &pod.spec {
        None => e.add("spec", "required"),
        Some(spec) => validate_spec(spec, &mut e),
    }
    e.into_vec()
}

fn validate_spec(spec: &PodSpec, e: &mut Errors) {
    let mut volume_names = BTreeSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let field = format!("spec.volumes[{i}].name");
        if let Err(m) = check_label(&v.name) {
            e.add(&field, m);
        }
        if !volume_names.insert(v.name.as_str()) {
            e.add(&field, format!("Duplicate value: {:?}", v.name));
        }
        validate_volume_source(v, &format!("spec.volumes[{i}]"), e);
    }
    if spec.containers.is_empty() {
        e.add("spec.containers", "Required value: at least one container");
    }
    let grace = spec.termination_grace_period_seconds;
    let pod = container::PodContext {
        volumes: &volume_names,
        host_network: spec.host_network == Some(true),
        grace_period: grace.unwrap_or(30),
    };
    let init = spec.init_containers.as_deref().unwrap_or(&[]);
    // Names are unique across app and init containers; as in the API
    // server, a clash is reported on the init container.
    let mut names = BTreeSet::new();
    let groups = [
        (
            "spec.containers",
            spec.containers.as_slice(),
            container::Kind::App,
        ),
        ("spec.initContainers", init, container::Kind::Init),
    ];
    for (group, containers, kind) in groups {
        for (i, c) in containers.iter().enumerate() {
            let base = format!("{group}[{i}]");
            if !names.insert(c.name.as_str()) {
                e.add(
                    format!("{base}.name"),
                    format!("Duplicate value: {:?}", c.name),
                );
            }
            container::validate_container(c, &base, kind, &pod, e);
        }
    }
    // Two app containers cannot bind the same host port (init containers
    // run one at a time).
    let mut host_ports = BTreeSet::new();
    for (i, c) in spec.containers.iter().enumerate() {
        for (j, p) in c.ports.iter().flatten().enumerate() {
            let Some(hp) = p.host_port.filter(|hp| *hp != 0) else {
                continue;
            };
            let key = format!(
                "{}/{}/{hp}",
                p.protocol
                    .as_deref()
                    .filter(|p| !p.is_empty())
                    .unwrap_or("TCP"),
                p.host_ip.as_deref().unwrap_or("")
            );
            if !host_ports.insert(key.clone()) {
                e.add(
                    format!("spec.containers[{i}].ports[{j}].hostPort"),
                    format!("Duplicate value: {key:?}"),
                );
            }
        }
    }
    if let Some(p) = spec.restart_policy.as_deref()
        && !RESTART_POLICIES.contains(&p)
    {
        e.add(
            "spec.restartPolicy",
            format!(
                "Unsupported value: {p:?}: supported values: \"Always\", \"OnFailure\", \"Never\""
            ),
        );
    }
    match spec.dns_policy.as_deref().filter(|p| !p.is_empty()) {
        Some(p) if !DNS_POLICIES.contains(&p) => e.add(
            "spec.dnsPolicy",
            format!(
                "Unsupported value: {p:?}: supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\""
            ),
        ),
        Some("None")
            if spec
                .dns_config
                .as_ref()
                .and_then(|c| c.nameservers.as_ref())
                .is_none_or(Vec::is_empty) =>
        {
            e.add(
                "spec.dnsConfig.nameservers",
                "Required value: must provide at least one DNS nameserver when `dnsPolicy` is None",
            )
        }
        _ => {}
    }
    if let Some(g) = grace
        && g < 0
    {
        e.add(
            "spec.terminationGracePeriodSeconds",
            format!("{g} must be >= 0"),
        );
    }
    if let Some(d) = spec.active_deadline_seconds
        && !(1..=i64::from(i32::MAX)).contains(&d)
    {
        e.add(
            "spec.activeDeadlineSeconds",
            format!("Invalid value: {d}: must be between 1 and 2147483647, inclusive"),
        );
    }
    for (field, value) in [
        ("spec.hostname", spec.hostname.as_deref()),
        ("spec.subdomain", spec.subdomain.as_deref()),
    ] {
        if let Some(v) = value.filter(|v| !v.is_empty())
            && let Err(m) = syntax::dns_label(v)
        {
            e.add(field, m);
        }
    }
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty())
        && let Err(m) = check_subdomain(n)
    {
        e.add("spec.nodeName", m);
    }
    if let Some(sc) = &spec.security_context {
        container::check_id(sc.run_as_user, "spec.securityContext.runAsUser", e);
        container::check_id(sc.run_as_group, "spec.securityContext.runAsGroup", e);
        for (i, g) in sc.supplemental_groups.iter().flatten().enumerate() {
            container::check_id(
                Some(*g),
                &format!("spec.securityContext.supplementalGroups[{i}]"),
                e,
            );
        }
    }
}

const HOST_PATH_TYPES: [&str; 8] = [
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
];

fn check_host_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} must be an absolute path"));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(format!("{path:?} must not contain '..'"));
    }
    Ok(())
}

fn validate_volume_source(v: &k8s_openapi::api::core::v1::Volume, base: &str, e: &mut Errors) {
    let supported = [
        v.empty_dir.is_some(),
        v.host_path.is_some(),
        v.nfs.is_some(),
        v.config_map.is_some(),
        v.secret.is_some(),
        v.persistent_volume_claim.is_some(),
    ];
    let value = serde_json::to_value(v).unwrap_or_default();
    let set: Vec<&String> = value
        .as_object()
        .map(|m| m.keys().filter(|k| *k != "name").collect())
        .unwrap_or_default();
    match supported.iter().filter(|s| **s).count() {
        1 if set.len() == 1 => {}
        0 if set.len() == 1 => e.add(
            format!("{base}.{}", set[0]),
            "not supported by kubelet-lite (supported: emptyDir, hostPath, nfs, configMap, secret, persistentVolumeClaim)",
        ),
        _ => e.add(base.to_string(), "exactly one volume source must be set"),
    }
    if let Some(h) = &v.host_path {
        if let Err(m) = check_host_path(&h.path) {
            e.add(format!("{base}.hostPath.path"), m);
        }
        if let Some(t) = h.type_.as_deref()
            && !HOST_PATH_TYPES.contains(&t)
        {
            e.add(
                format!("{base}.hostPath.type"),
                format!("Unsupported value: {t:?}"),
            );
        }
    }
    if let Some(d) = &v.empty_dir {
        if let Some(m) = d.medium.as_deref()
            && !m.is_empty()
            && m != "Memory"
        {
            e.add(
                format!("{base}.emptyDir.medium"),
                format!("Unsupported value: {m:?}: supported values: \"\", \"Memory\""),
            );
        }
        if let Some(q) = &d.size_limit {
            match Quantity::parse(&q.0) {
                Err(m) => e.add(format!("{base}.emptyDir.sizeLimit"), m.to_string()),
                Ok(v) if v.is_negative() => e.add(
                    format!("{base}.emptyDir.sizeLimit"),
                    format!("{:?} is negative", q.0),
                ),
                Ok(_) => {}
            }
        }
    }
    if let Some(n) = &v.nfs {
        check_nfs(&n.server, &n.path, &format!("{base}.nfs"), e);
    }
    if let Some(c) = &v.config_map
        && c.name.is_empty()
    {
        e.add(format!("{base}.configMap.name"), "Required value");
    }
    if let Some(s) = &v.secret
        && s.secret_name.as_deref().is_none_or(str::is_empty)
    {
        e.add(format!("{base}.secret.secretName"), "Required value");
    }
    for (field, mode) in [
        (
            "configMap.defaultMode",
            v.config_map.as_ref().and_then(|c| c.default_mode),
        ),
        (
            "secret.defaultMode",
            v.secret.as_ref().and_then(|c| c.default_mode),
        ),
    ] {
        if let Some(m) = mode
            && !(0..=0o777).contains(&m)
        {
            e.add(
                format!("{base}.{field}"),
                format!("{m} must be a file mode between 0 and 0777 (511)"),
            );
        }
    }
    let items = v
        .config_map
        .as_ref()
        .and_then(|c| c.items.as_ref())
        .or(v.secret.as_ref().and_then(|s| s.items.as_ref()));
    for (i, item) in items.into_iter().flatten().enumerate() {
        if item.key.is_empty() {
            e.add(format!("{base}.items[{i}].key"), "Required value");
        }
        if let Some(m) = item.mode
            && !(0..=0o777).contains(&m)
        {
            e.add(
                format!("{base}.items[{i}].mode"),
                format!("{m} must be a file mode between 0 and 0777 (511)"),
            );
        }
        if item.path.starts_with('/')
            || item.path.split('/').any(|c| c == "..")
            || item.path.is_empty()
        {
            e.add(
                format!("{base}.items[{i}].path"),
                format!("{:?} must be a relative path without '..'", item.path),
            );
        }
    }
    if let Some(c) = &v.persistent_volume_claim
        && check_subdomain(&c.claim_name).is_err()
    {
        e.add(
            format!("{base}.persistentVolumeClaim.claimName"),
            format!("{:?} is not a valid name", c.claim_name),
        );
    }
}

/// NFS `server` and `path`, for inline volumes and PersistentVolumes.
fn check_nfs(server: &str, path: &str, base: &str, e: &mut Errors) {
    if let Err(m) = syntax::nfs_server(server) {
        e.add(format!("{base}.server"), m);
    }
    if path.is_empty() {
        e.add(format!("{base}.path"), "Required value");
    } else if !path.starts_with('/') {
        e.add(
            format!("{base}.path"),
            format!("{path:?} must be an absolute path"),
        );
    }
}

const ACCESS_MODES: [&str; 4] = [
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

fn check_access_modes(modes: Option<&Vec<String>>, field: &str, e: &mut Errors) {
    match modes {
        None => e.add(field, "Required value"),
        Some(m) if m.is_empty() => e.add(field, "Required value"),
        Some(m) => {
            for (i, mode) in m.iter().enumerate() {
                if !ACCESS_MODES.contains(&mode.as_str()) {
                    e.add(
                        format!("{field}[{i}]"),
                        format!("Unsupported value: {mode:?}"),
                    );
                }
            }
        }
    }
}

fn check_storage(
    q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    field: &str,
    e: &mut Errors,
) {
    match q {
        None => e.add(field, "Required value"),
        Some(q) => match Quantity::parse(&q.0) {
            Err(m) => e.add(field, m.to_string()),
            Ok(v) if v.is_negative() || v.is_zero() => {
                e.add(field, format!("{:?} must be greater than zero", q.0))
            }
            Ok(_) => {}
        },
    }
}

/// Validates a ConfigMap, Secret, PersistentVolume or PersistentVolumeClaim.
pub fn validate_object(o: &super::Object) -> Vec<FieldError> {
    use super::Object;
    let mut e = Errors::default();
    let meta = match o {
        Object::ConfigMap(c) => &c.metadata,
        Object::Secret(s) => &s.metadata,
        Object::PersistentVolume(p) => &p.metadata,
        Object::PersistentVolumeClaim(p) => &p.metadata,
    };
    match meta.name.as_deref() {
        None | Some("") => e.add("metadata.name", "Required value"),
        Some(n) => {
            if let Err(m) = check_subdomain(n) {
                e.add("metadata.name", m);
            }
        }
    }
    if let Some(ns) = meta.namespace.as_deref()
        && let Err(m) = check_label(ns)
    {
        e.add("metadata.namespace", m);
    }
    validate_meta(meta, &mut e);
    match o {
        Object::ConfigMap(c) => {
            let keys = c
                .data
                .iter()
                .flatten()
                .map(|(k, _)| k)
                .chain(c.binary_data.iter().flatten().map(|(k, _)| k));
            for k in keys {
                if let Err(m) = syntax::config_map_key(k) {
                    e.add(format!("data[{k}]"), m);
                }
            }
        }
        Object::Secret(s) => {
            let keys = s
                .data
                .iter()
                .flatten()
                .map(|(k, _)| k)
                .chain(s.string_data.iter().flatten().map(|(k, _)| k));
            for k in keys {
                if let Err(m) = syntax::config_map_key(k) {
                    e.add(format!("data[{k}]"), m);
                }
            }
        }
        Object::PersistentVolume(pv) => match &pv.spec {
            None => e.add("spec", "Required value"),
            Some(spec) => {
                check_storage(
                    spec.capacity.as_ref().and_then(|c| c.get("storage")),
                    "spec.capacity.storage",
                    &mut e,
                );
                check_access_modes(spec.access_modes.as_ref(), "spec.accessModes", &mut e);
                let sources = [
                    spec.host_path.is_some(),
                    spec.local.is_some(),
                    spec.nfs.is_some(),
                ];
                let value = serde_json::to_value(spec).unwrap_or_default();
                let other = [
                    "awsElasticBlockStore",
                    "azureDisk",
                    "azureFile",
                    "cephfs",
                    "cinder",
                    "csi",
                    "fc",
                    "flexVolume",
                    "flocker",
                    "gcePersistentDisk",
                    "glusterfs",
                    "iscsi",
                    "photonPersistentDisk",
                    "portworxVolume",
                    "quobyte",
                    "rbd",
                    "scaleIO",
                    "storageos",
                    "vsphereVolume",
                ]
                .into_iter()
                .find(|k| value.get(k).is_some());
                if let Some(k) = other {
                    e.add(
                        format!("spec.{k}"),
                        "not supported by kubelet-lite (supported: hostPath, local, nfs)",
                    );
                } else if sources.iter().filter(|s| **s).count() != 1 {
                    e.add("spec", "exactly one of hostPath, local and nfs must be set");
                }
                if let Some(h) = &spec.host_path
                    && let Err(m) = check_host_path(&h.path)
                {
                    e.add("spec.hostPath.path", m);
                }
                if let Some(l) = &spec.local
                    && let Err(m) = check_host_path(&l.path)
                {
                    e.add("spec.local.path", m);
                }
                if let Some(n) = &spec.nfs {
                    check_nfs(&n.server, &n.path, "spec.nfs", &mut e);
                }
                if let Some(p) = spec.persistent_volume_reclaim_policy.as_deref()
                    && p != "Retain"
                    && p != "Delete"
                {
                    e.add(
                        "spec.persistentVolumeReclaimPolicy",
                        format!(
                            "Unsupported value: {p:?}: supported values: \"Retain\", \"Delete\""
                        ),
                    );
                }
            }
        },
        Object::PersistentVolumeClaim(pvc) => match &pvc.spec {
            None => e.add("spec", "Required value"),
            Some(spec) => {
                check_access_modes(spec.access_modes.as_ref(), "spec.accessModes", &mut e);
                check_storage(
                    spec.resources
                        .as_ref()
                        .and_then(|r| r.requests.as_ref())
                        .and_then(|r| r.get("storage")),
                    "spec.resources.requests.storage",
                    &mut e,
                );
            }
        },
    }
    e.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        assert!(check_label("web-1").is_ok());
        for bad in ["", "Web", "-a", "a-", "a_b", &"a".repeat(64)] {
            assert!(check_label(bad).is_err(), "{bad:?}");
        }
        assert!(check_subdomain("node-1.example").is_ok());
        assert!(check_subdomain("node..1").is_err());
    }
}

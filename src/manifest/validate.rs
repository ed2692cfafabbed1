//! Validation of a typed Pod before anything is created. Every problem is
//! collected (not just the first) with the field path Kubernetes would print.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};

use super::quantity::Quantity;

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
}

/// RFC 1123 label: what Kubernetes requires of container, volume, port and
/// namespace names.
pub fn check_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 63 {
        return Err(format!("{s:?} is longer than 63 characters"));
    }
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric();
    if !ok_chars || !ok_ends {
        return Err(format!(
            "{s:?} must consist of lower case alphanumeric characters or '-', and start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

/// RFC 1123 subdomain: what Kubernetes requires of pod and node names.
pub fn check_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 253 {
        return Err(format!("{s:?} is longer than 253 characters"));
    }
    for part in s.split('.') {
        check_label(part).map_err(|_| {
            format!(
                "{s:?} must consist of lower case alphanumeric characters, '-' or '.', and start and end with an alphanumeric character"
            )
        })?;
    }
    Ok(())
}

const PULL_POLICIES: [&str; 3] = ["Always", "IfNotPresent", "Never"];
const RESTART_POLICIES: [&str; 3] = ["Always", "OnFailure", "Never"];

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
    match &pod.spec {
        None => e.add("spec", "required"),
        Some(spec) => validate_spec(spec, &mut e),
    }
    e.0
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
    let mut names = BTreeSet::new();
    let groups = [
        (
            "spec.initContainers",
            spec.init_containers.as_deref().unwrap_or(&[]),
        ),
        ("spec.containers", spec.containers.as_slice()),
    ];
    for (group, containers) in groups {
        for (i, c) in containers.iter().enumerate() {
            let base = format!("{group}[{i}]");
            if !names.insert(c.name.as_str()) {
                e.add(
                    format!("{base}.name"),
                    format!("Duplicate value: {:?}", c.name),
                );
            }
            validate_container(c, &base, &volume_names, spec.host_network == Some(true), e);
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
    if let Some(g) = spec.termination_grace_period_seconds
        && g < 0
    {
        e.add(
            "spec.terminationGracePeriodSeconds",
            format!("{g} must be >= 0"),
        );
    }
    if let Some(h) = spec.hostname.as_deref()
        && let Err(m) = check_label(h)
    {
        e.add("spec.hostname", m);
    }
}

fn validate_container(
    c: &Container,
    base: &str,
    volumes: &BTreeSet<&str>,
    host_network: bool,
    e: &mut Errors,
) {
    if let Err(m) = check_label(&c.name) {
        e.add(format!("{base}.name"), m);
    }
    match c.image.as_deref() {
        None | Some("") => e.add(format!("{base}.image"), "Required value"),
        Some(img) if img.trim() != img || img.contains(char::is_whitespace) => e.add(
            format!("{base}.image"),
            format!("{img:?} must not contain spaces"),
        ),
        Some(img) => {
            if let Err(m) = crate::runtime::image_ref::normalize(img) {
                e.add(format!("{base}.image"), m);
            }
        }
    }
    if let Some(p) = c.image_pull_policy.as_deref()
        && !PULL_POLICIES.contains(&p)
    {
        e.add(
            format!("{base}.imagePullPolicy"),
            format!("Unsupported value: {p:?}: supported values: \"Always\", \"IfNotPresent\", \"Never\""),
        );
    }
    let mut env_names = BTreeSet::new();
    for (i, var) in c.env.iter().flatten().enumerate() {
        let field = format!("{base}.env[{i}]");
        if var.name.is_empty() || var.name.contains('=') {
            e.add(
                format!("{field}.name"),
                format!("{:?} is not a valid environment variable name", var.name),
            );
        }
        env_names.insert(var.name.as_str());
        if let Some(from) = &var.value_from {
            if var.value.is_some() {
                e.add(&field, "value and valueFrom may not both be set");
            }
            let sources = [
                from.field_ref.is_some(),
                from.config_map_key_ref.is_some(),
                from.secret_key_ref.is_some(),
                from.resource_field_ref.is_some(),
            ];
            if sources.iter().filter(|s| **s).count() != 1 {
                e.add(
                    format!("{field}.valueFrom"),
                    "exactly one source must be set",
                );
            }
            if let Some(r) = &from.field_ref
                && !super::FIELD_REFS.contains(&r.field_path.as_str())
            {
                e.add(
                    format!("{field}.valueFrom.fieldRef.fieldPath"),
                    format!(
                        "Unsupported value: {:?}: supported values: {}",
                        r.field_path,
                        super::FIELD_REFS.join(", ")
                    ),
                );
            }
            if from.resource_field_ref.is_some() {
                e.add(
                    format!("{field}.valueFrom.resourceFieldRef"),
                    "not supported by kubelet-lite",
                );
            }
            for (kind, name) in [
                (
                    "configMapKeyRef",
                    from.config_map_key_ref.as_ref().map(|r| &r.name),
                ),
                (
                    "secretKeyRef",
                    from.secret_key_ref.as_ref().map(|r| &r.name),
                ),
            ] {
                if let Some(n) = name
                    && check_subdomain(n).is_err()
                {
                    e.add(
                        format!("{field}.valueFrom.{kind}.name"),
                        format!("{n:?} is not a valid name"),
                    );
                }
            }
        }
    }
    for (i, from) in c.env_from.iter().flatten().enumerate() {
        if from.config_map_ref.is_some() == from.secret_ref.is_some() {
            e.add(
                format!("{base}.envFrom[{i}]"),
                "exactly one of configMapRef and secretRef must be set",
            );
        }
    }
    let mut port_names = BTreeSet::new();
    for (i, p) in c.ports.iter().flatten().enumerate() {
        let field = format!("{base}.ports[{i}]");
        if !(1..=65535).contains(&p.container_port) {
            e.add(
                format!("{field}.containerPort"),
                format!("{} must be between 1 and 65535", p.container_port),
            );
        }
        if let Some(hp) = p.host_port
            && (!(1..=65535).contains(&hp) || (host_network && hp != p.container_port))
        {
            e.add(
                format!("{field}.hostPort"),
                format!(
                    "{hp} must be between 1 and 65535 and equal containerPort with hostNetwork"
                ),
            );
        }
        if let Some(proto) = p.protocol.as_deref()
            && !["TCP", "UDP", "SCTP"].contains(&proto)
        {
            e.add(
                format!("{field}.protocol"),
                format!("Unsupported value: {proto:?}"),
            );
        }
        if let Some(n) = p.name.as_deref()
            && (n.len() > 15 || check_label(n).is_err() || !port_names.insert(n))
        {
            e.add(
                format!("{field}.name"),
                format!("{n:?} must be a unique label of at most 15 characters"),
            );
        }
    }
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let field = format!("{base}.volumeMounts[{i}]");
        if !volumes.contains(m.name.as_str()) {
            e.add(format!("{field}.name"), format!("Not found: {:?}", m.name));
        }
        if let Some(sp) = m.sub_path.as_deref().filter(|s| !s.is_empty())
            && (sp.starts_with('/') || sp.split('/').any(|c| c == ".."))
        {
            e.add(
                format!("{field}.subPath"),
                format!("{sp:?} must be a relative path without '..'"),
            );
        }
        if m.sub_path_expr.is_some() {
            e.add(
                format!("{field}.subPathExpr"),
                "not supported by kubelet-lite",
            );
        }
        if !m.mount_path.starts_with('/') {
            e.add(
                format!("{field}.mountPath"),
                format!("{:?} must be an absolute path", m.mount_path),
            );
        }
    }
    if let Some(r) = &c.resources {
        validate_resources(r, &format!("{base}.resources"), e);
    }
}

fn validate_resources(r: &ResourceRequirements, base: &str, e: &mut Errors) {
    let mut parsed = |kind: &str,
                      map: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >| {
        let mut out = std::collections::BTreeMap::new();
        for (name, q) in map.iter().flatten() {
            let field = format!("{base}.{kind}.{name}");
            match Quantity::parse(&q.0) {
                Err(m) => e.add(field, m.to_string()),
                Ok(v) if v.is_negative() => e.add(field, format!("{:?} is negative", q.0)),
                Ok(v) => {
                    out.insert(name.clone(), v);
                }
            }
        }
        out
    };
    let limits = parsed("limits", &r.limits);
    let requests = parsed("requests", &r.requests);
    for (name, req) in &requests {
        if let Some(lim) = limits.get(name)
            && req > lim
        {
            e.add(
                format!("{base}.requests.{name}"),
                format!("must be less than or equal to {name} limit"),
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
        if n.server.is_empty() {
            e.add(format!("{base}.nfs.server"), "Required value");
        }
        if !n.path.starts_with('/') {
            e.add(
                format!("{base}.nfs.path"),
                format!("{:?} must be an absolute path", n.path),
            );
        }
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
    let key_ok = |k: &str| {
        !k.is_empty()
            && k.len() <= 253
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    };
    match o {
        Object::ConfigMap(c) => {
            let keys = c
                .data
                .iter()
                .flatten()
                .map(|(k, _)| k)
                .chain(c.binary_data.iter().flatten().map(|(k, _)| k));
            for k in keys {
                if !key_ok(k) {
                    e.add(format!("data[{k}]"), "a valid config key must consist of alphanumeric characters, '-', '_' or '.'");
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
                if !key_ok(k) {
                    e.add(format!("data[{k}]"), "a valid secret key must consist of alphanumeric characters, '-', '_' or '.'");
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
    e.0
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

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
            match &from.field_ref {
                Some(r) if super::FIELD_REFS.contains(&r.field_path.as_str()) => {}
                Some(r) => e.add(
                    format!("{field}.valueFrom.fieldRef.fieldPath"),
                    format!(
                        "Unsupported value: {:?}: supported values: {}",
                        r.field_path,
                        super::FIELD_REFS.join(", ")
                    ),
                ),
                None => e.add(
                    format!("{field}.valueFrom"),
                    "only fieldRef is supported (configMapKeyRef, secretKeyRef and resourceFieldRef are not)",
                ),
            }
        }
    }
    if c.env_from.as_ref().is_some_and(|v| !v.is_empty()) {
        e.add(
            format!("{base}.envFrom"),
            "not supported (no ConfigMap or Secret source yet)",
        );
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

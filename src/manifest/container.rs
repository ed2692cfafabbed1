//! Validation of one container, rule by rule after the API server's
//! validateContainerCommon, validateContainers/validateInitContainers,
//! validateProbe/validateHandler, validateContainerPorts, ValidateEnv,
//! ValidateVolumeMounts, ValidateContainerResourceRequirements and
//! ValidateSecurityContext (k8s.io/kubernetes
//! pkg/apis/core/validation/validation.go). docs/validation.md lists each
//! rule and whether it is enforced here.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, HTTPGetAction, Probe, ResourceRequirements, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::field::Errors;
use super::quantity::Quantity;
use super::syntax;
use super::syntax::check_subdomain;

const PULL_POLICIES: [&str; 3] = ["Always", "IfNotPresent", "Never"];
const MESSAGE_POLICIES: [&str; 2] = ["File", "FallbackToLogsOnError"];
const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];

fn unsupported(value: &str, supported: &[&str]) -> String {
    let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "Unsupported value: {value:?}: supported values: {}",
        list.join(", ")
    )
}

/// Where a container sits, which changes a few rules.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Init,
    App,
}

/// What a container's rules need from the pod.
pub struct PodContext<'a> {
    pub volumes: &'a BTreeSet<&'a str>,
    pub host_network: bool,
    /// spec.terminationGracePeriodSeconds, defaulted (30).
    pub grace_period: i64,
}

pub fn validate_container(c: &Container, base: &str, kind: Kind, pod: &PodContext, e: &mut Errors) {
    if let Err(m) = syntax::dns_label(&c.name) {
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
    // An empty string is what the API server defaults; any other value
    // must be one it knows.
    for (field, value, allowed) in [
        (
            "imagePullPolicy",
            c.image_pull_policy.as_deref(),
            &PULL_POLICIES[..],
        ),
        (
            "terminationMessagePolicy",
            c.termination_message_policy.as_deref(),
            &MESSAGE_POLICIES[..],
        ),
    ] {
        if let Some(v) = value.filter(|v| !v.is_empty())
            && !allowed.contains(&v)
        {
            e.add(format!("{base}.{field}"), unsupported(v, allowed));
        }
    }
    let port_names = validate_ports(c, base, pod.host_network, e);
    validate_env(c, base, e);
    validate_mounts(c, base, pod.volumes, e);
    if let Some(r) = &c.resources {
        validate_resources(r, &format!("{base}.resources"), e);
    }
    if let Some(sc) = &c.security_context {
        validate_security_context(sc, &format!("{base}.securityContext"), e);
    }

    // Probes and hooks: app containers and restartable init containers
    // (sidecars) only.
    let sidecar = kind == Kind::Init && c.restart_policy.as_deref() == Some("Always");
    match kind {
        Kind::Init => {
            if let Some(p) = c.restart_policy.as_deref()
                && p != "Always"
            {
                e.add(format!("{base}.restartPolicy"), unsupported(p, &["Always"]));
            }
        }
        Kind::App => {
            if c.restart_policy.is_some() {
                e.add(
                    format!("{base}.restartPolicy"),
                    "Forbidden: may not be set for non-init containers",
                );
            }
        }
    }
    let probes = [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ];
    let lifecycle = c.lifecycle.as_ref();
    if kind == Kind::Init && !sidecar {
        let set = probes
            .iter()
            .filter(|(_, p)| p.is_some())
            .map(|(n, _)| *n)
            .chain(lifecycle.map(|_| "lifecycle"));
        for field in set {
            e.add(
                format!("{base}.{field}"),
                "Forbidden: may not be set for init containers without restartPolicy=Always",
            );
        }
        return;
    }
    for (field, probe) in probes {
        if let Some(p) = probe {
            validate_probe(p, &format!("{base}.{field}"), field, &port_names, e);
        }
    }
    if let Some(l) = lifecycle {
        for (field, h) in [("postStart", &l.post_start), ("preStop", &l.pre_stop)] {
            let Some(h) = h else { continue };
            let at = format!("{base}.lifecycle.{field}");
            let handlers = [
                ("exec", h.exec.is_some()),
                ("httpGet", h.http_get.is_some()),
                ("tcpSocket", h.tcp_socket.is_some()),
                ("sleep", h.sleep.is_some()),
            ];
            one_handler(&handlers, &at, e);
            if let Some(x) = &h.exec {
                exec_command(x.command.as_deref(), &format!("{at}.exec"), e);
            }
            if let Some(g) = &h.http_get {
                http_get(g, &format!("{at}.httpGet"), &port_names, e);
            }
            if let Some(t) = &h.tcp_socket {
                port(&t.port, &format!("{at}.tcpSocket.port"), &port_names, e);
            }
            if let Some(s) = &h.sleep
                && (s.seconds <= 0 || s.seconds > pod.grace_period)
            {
                e.add(
                    format!("{at}.sleep"),
                    format!(
                        "Invalid value: {}: must be greater than 0 and less than terminationGracePeriodSeconds ({})",
                        s.seconds, pod.grace_period
                    ),
                );
            }
        }
    }
}

/// Validates the ports and returns the container's port names (a probe may
/// refer to them).
fn validate_ports<'a>(
    c: &'a Container,
    base: &str,
    host_network: bool,
    e: &mut Errors,
) -> BTreeSet<&'a str> {
    let mut names = BTreeSet::new();
    for (i, p) in c.ports.iter().flatten().enumerate() {
        let field = format!("{base}.ports[{i}]");
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            if let Err(m) = syntax::port_name(n) {
                e.add(format!("{field}.name"), m);
            } else if !names.insert(n) {
                e.add(format!("{field}.name"), format!("Duplicate value: {n:?}"));
            }
        }
        if p.container_port == 0 {
            e.add(format!("{field}.containerPort"), "Required value");
        } else if !(1..=65535).contains(&p.container_port) {
            e.add(
                format!("{field}.containerPort"),
                format!("{} must be between 1 and 65535", p.container_port),
            );
        }
        // hostPort 0 means none. With hostNetwork the pod's ports are the
        // node's: the API server defaults hostPort to containerPort and
        // refuses any other value.
        if let Some(hp) = p.host_port.filter(|hp| *hp != 0) {
            if !(1..=65535).contains(&hp) {
                e.add(
                    format!("{field}.hostPort"),
                    format!("Invalid value: {hp}: must be between 1 and 65535, inclusive"),
                );
            } else if host_network && hp != p.container_port {
                e.add(
                    format!("{field}.hostPort"),
                    format!(
                        "Invalid value: {hp}: must match `containerPort` when `hostNetwork` is true"
                    ),
                );
            }
        }
        if let Some(proto) = p.protocol.as_deref().filter(|p| !p.is_empty())
            && !PROTOCOLS.contains(&proto)
        {
            e.add(format!("{field}.protocol"), unsupported(proto, &PROTOCOLS));
        }
    }
    names
}

fn validate_env(c: &Container, base: &str, e: &mut Errors) {
    for (i, var) in c.env.iter().flatten().enumerate() {
        let field = format!("{base}.env[{i}]");
        if let Err(m) = syntax::env_var_name(&var.name) {
            e.add(format!("{field}.name"), m);
        }
        let Some(from) = &var.value_from else {
            continue;
        };
        let sources = [
            from.field_ref.is_some(),
            from.config_map_key_ref.is_some(),
            from.secret_key_ref.is_some(),
            from.resource_field_ref.is_some(),
        ];
        let n = sources.iter().filter(|s| **s).count();
        if n == 0 {
            e.add(
                format!("{field}.valueFrom"),
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            );
        } else if var.value.as_deref().is_some_and(|v| !v.is_empty()) {
            e.add(
                format!("{field}.valueFrom"),
                "may not be specified when `value` is not empty",
            );
        } else if n > 1 {
            e.add(
                format!("{field}.valueFrom"),
                "may not have more than one field specified at a time",
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
        let refs = [
            (
                "configMapKeyRef",
                from.config_map_key_ref.as_ref().map(|r| (&r.name, &r.key)),
            ),
            (
                "secretKeyRef",
                from.secret_key_ref.as_ref().map(|r| (&r.name, &r.key)),
            ),
        ];
        for (kind, r) in refs {
            let Some((name, key)) = r else { continue };
            if check_subdomain(name).is_err() {
                e.add(
                    format!("{field}.valueFrom.{kind}.name"),
                    format!("{name:?} is not a valid name"),
                );
            }
            if let Err(m) = syntax::config_map_key(key) {
                e.add(format!("{field}.valueFrom.{kind}.key"), m);
            }
        }
    }
    for (i, from) in c.env_from.iter().flatten().enumerate() {
        let field = format!("{base}.envFrom[{i}]");
        if let Some(p) = from.prefix.as_deref().filter(|p| !p.is_empty())
            && let Err(m) = syntax::env_var_name(p)
        {
            e.add(format!("{field}.prefix"), m);
        }
        let names = [
            (
                "configMapRef",
                from.config_map_ref.as_ref().map(|r| &r.name),
            ),
            ("secretRef", from.secret_ref.as_ref().map(|r| &r.name)),
        ];
        match names.iter().filter(|(_, n)| n.is_some()).count() {
            1 => {}
            0 => e.add(&field, "must specify one of: `configMapRef` or `secretRef`"),
            _ => e.add(
                &field,
                "may not have more than one field specified at a time",
            ),
        }
        for (kind, name) in names {
            if let Some(n) = name
                && let Err(m) = check_subdomain(n)
            {
                e.add(format!("{field}.{kind}.name"), m);
            }
        }
    }
}

fn validate_mounts(c: &Container, base: &str, volumes: &BTreeSet<&str>, e: &mut Errors) {
    let mut paths = BTreeSet::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let field = format!("{base}.volumeMounts[{i}]");
        if m.name.is_empty() {
            e.add(format!("{field}.name"), "Required value");
        } else if !volumes.contains(m.name.as_str()) {
            e.add(format!("{field}.name"), format!("Not found: {:?}", m.name));
        }
        if m.mount_path.is_empty() {
            e.add(format!("{field}.mountPath"), "Required value");
        } else if !m.mount_path.starts_with('/') {
            e.add(
                format!("{field}.mountPath"),
                format!("{:?} must be an absolute path", m.mount_path),
            );
        }
        if !paths.insert(m.mount_path.as_str()) {
            e.add(
                format!("{field}.mountPath"),
                format!("Invalid value: {:?}: must be unique", m.mount_path),
            );
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
    }
}

/// Resources whose name has no domain, or a kubernetes.io one.
fn is_native(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

/// Resources a device plugin or an operator defines (`example.com/gpu`):
/// whole units, never overcommitted.
fn is_extended(name: &str) -> bool {
    !is_native(name)
        && !name.starts_with("requests.")
        && syntax::qualified_name(&format!("requests.{name}")).is_ok()
}

fn check_resource_name(name: &str) -> Result<(), String> {
    syntax::qualified_name(name)?;
    if !name.contains('/') {
        let standard = ["cpu", "memory", "ephemeral-storage"].contains(&name)
            || name.starts_with("hugepages-");
        if !standard {
            return Err(format!(
                "Invalid value: {name:?}: must be a standard resource for containers (cpu, memory, ephemeral-storage, hugepages-<size>) or a domain-qualified extended resource"
            ));
        }
    } else if !is_native(name) && !is_extended(name) {
        return Err(format!(
            "Invalid value: {name:?}: doesn't follow extended resource name standard"
        ));
    }
    Ok(())
}

type Quantities = Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>;

/// The valid entries of `limits` or `requests`, parsed.
fn parse_quantities<'a>(
    map: &'a Quantities,
    base: &str,
    e: &mut Errors,
) -> BTreeMap<&'a str, Quantity> {
    let mut out = BTreeMap::new();
    for (name, q) in map.iter().flatten() {
        let field = format!("{base}.{name}");
        if let Err(m) = check_resource_name(name) {
            e.add(&field, m);
            continue;
        }
        match Quantity::parse(&q.0) {
            Err(m) => e.add(field, m.to_string()),
            Ok(v) if v.is_negative() => e.add(field, format!("{:?} is negative", q.0)),
            Ok(v) if is_extended(name) && !v.is_integer() => e.add(
                field,
                format!("Invalid value: {:?}: must be an integer", q.0),
            ),
            Ok(v) => {
                if let Some(size) = name.strip_prefix("hugepages-") {
                    let page = Quantity::parse(size).ok().filter(|p| !p.is_zero());
                    if !page.is_some_and(|p| v.is_multiple_of(&p)) {
                        e.add(
                            &field,
                            format!(
                                "Invalid value: {:?}: is not positive integer multiple of {name}",
                                q.0
                            ),
                        );
                    }
                }
                out.insert(name.as_str(), v);
            }
        }
    }
    out
}

fn validate_resources(r: &ResourceRequirements, base: &str, e: &mut Errors) {
    let limits = parse_quantities(&r.limits, &format!("{base}.limits"), e);
    let requests = parse_quantities(&r.requests, &format!("{base}.requests"), e);
    for (name, req) in &requests {
        // Extended resources and hugepages cannot be overcommitted: a
        // request needs an equal limit.
        let overcommit = is_native(name) && !name.starts_with("hugepages-");
        let field = format!("{base}.requests.{name}");
        match limits.get(name) {
            Some(lim) if !overcommit && req != lim => e.add(
                field,
                format!(
                    "must be equal to {name} limit of {}",
                    quantity_text(r, name)
                ),
            ),
            Some(lim) if req > lim => e.add(
                field,
                format!(
                    "must be less than or equal to {name} limit of {}",
                    quantity_text(r, name)
                ),
            ),
            None if !overcommit => e.add(
                format!("{base}.limits"),
                format!(
                    "Required value: Limit must be set for non overcommitable resources ({name})"
                ),
            ),
            _ => {}
        }
    }
    let compute = |m: &BTreeMap<&str, Quantity>| m.contains_key("cpu") || m.contains_key("memory");
    let huge = |m: &BTreeMap<&str, Quantity>| m.keys().any(|k| k.starts_with("hugepages-"));
    if (huge(&limits) || huge(&requests)) && !compute(&limits) && !compute(&requests) {
        e.add(base, "Forbidden: HugePages require cpu or memory");
    }
}

fn quantity_text(r: &ResourceRequirements, name: &str) -> String {
    r.limits
        .as_ref()
        .and_then(|l| l.get(name))
        .map(|q| q.0.clone())
        .unwrap_or_default()
}

/// Exactly one handler: more is Forbidden on each extra, none is Required.
fn one_handler(set: &[(&str, bool)], base: &str, e: &mut Errors) {
    let mut seen = false;
    for (name, is_set) in set {
        if !*is_set {
            continue;
        }
        if seen {
            e.add(
                format!("{base}.{name}"),
                "Forbidden: may not specify more than 1 handler type",
            );
        }
        seen = true;
    }
    if !seen {
        e.add(base, "Required value: must specify a handler type");
    }
}

fn exec_command(command: Option<&[String]>, base: &str, e: &mut Errors) {
    if command.is_none_or(<[String]>::is_empty) {
        e.add(format!("{base}.command"), "Required value");
    }
}

/// A probe's or hook's port: a number in 1..=65535 or the name of one of
/// the container's ports. The API server checks only the name's syntax;
/// a name no port has would make the kubelet fail every probe ("couldn't
/// find port"), so it is refused here up front.
fn port(p: &IntOrString, field: &str, names: &BTreeSet<&str>, e: &mut Errors) {
    match p {
        IntOrString::Int(n) if !(1..=65535).contains(n) => e.add(
            field,
            format!("Invalid value: {n}: must be between 1 and 65535, inclusive"),
        ),
        IntOrString::Int(_) => {}
        IntOrString::String(s) => {
            if let Err(m) = syntax::port_name(s) {
                e.add(field, m);
            } else if !names.contains(s.as_str()) {
                e.add(
                    field,
                    format!("Not found: {s:?}: no port of this container has this name"),
                );
            }
        }
    }
}

fn http_get(g: &HTTPGetAction, base: &str, names: &BTreeSet<&str>, e: &mut Errors) {
    port(&g.port, &format!("{base}.port"), names, e);
    if let Some(s) = g.scheme.as_deref().filter(|s| !s.is_empty())
        && s != "HTTP"
        && s != "HTTPS"
    {
        e.add(format!("{base}.scheme"), unsupported(s, &["HTTP", "HTTPS"]));
    }
    // RFC 7230 token characters.
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    for h in g.http_headers.iter().flatten() {
        if !token(&h.name) {
            e.add(
                format!("{base}.httpHeaders"),
                format!("Invalid value: {:?}: a valid HTTP header must consist of alphanumeric characters or '-'", h.name),
            );
        }
    }
}

fn validate_probe(p: &Probe, base: &str, which: &str, names: &BTreeSet<&str>, e: &mut Errors) {
    let handlers = [
        ("exec", p.exec.is_some()),
        ("httpGet", p.http_get.is_some()),
        ("tcpSocket", p.tcp_socket.is_some()),
        ("grpc", p.grpc.is_some()),
    ];
    one_handler(&handlers, base, e);
    if let Some(x) = &p.exec {
        exec_command(x.command.as_deref(), &format!("{base}.exec"), e);
    }
    if let Some(g) = &p.http_get {
        http_get(g, &format!("{base}.httpGet"), names, e);
    }
    if let Some(t) = &p.tcp_socket {
        port(&t.port, &format!("{base}.tcpSocket.port"), names, e);
    }
    if let Some(g) = &p.grpc {
        port(
            &IntOrString::Int(g.port),
            &format!("{base}.grpc.port"),
            names,
            e,
        );
    }
    // 0 (or unset) is defaulted by the API server (timeout 1, period 10,
    // success 1, failure 3); negative values are refused.
    for (field, v) in [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("periodSeconds", p.period_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        if let Some(v) = v.filter(|v| *v < 0) {
            e.add(
                format!("{base}.{field}"),
                format!("Invalid value: {v}: must be greater than or equal to 0"),
            );
        }
    }
    // Liveness and startup probes end on the first success or failure
    // streak of a restartable container: a success threshold other than 1
    // has no meaning there.
    if which != "readinessProbe"
        && let Some(v) = p.success_threshold.filter(|v| *v > 1)
    {
        e.add(
            format!("{base}.successThreshold"),
            format!("Invalid value: {v}: must be 1"),
        );
    }
    if let Some(g) = p.termination_grace_period_seconds {
        if which == "readinessProbe" {
            e.add(
                format!("{base}.terminationGracePeriodSeconds"),
                format!("Invalid value: {g}: must not be set for readinessProbes"),
            );
        } else if g <= 0 {
            e.add(
                format!("{base}.terminationGracePeriodSeconds"),
                format!("Invalid value: {g}: must be greater than 0"),
            );
        }
    }
}

/// User and group IDs: what the API server accepts (0..=2^31-1).
pub fn check_id(v: Option<i64>, field: &str, e: &mut Errors) {
    if let Some(v) = v
        && !(0..=i64::from(i32::MAX)).contains(&v)
    {
        e.add(
            field,
            format!("Invalid value: {v}: must be between 0 and 2147483647, inclusive"),
        );
    }
}

fn validate_security_context(sc: &SecurityContext, base: &str, e: &mut Errors) {
    check_id(sc.run_as_user, &format!("{base}.runAsUser"), e);
    check_id(sc.run_as_group, &format!("{base}.runAsGroup"), e);
    // A privileged process, or one with CAP_SYS_ADMIN, can regain any
    // privilege: no_new_privs would promise what it cannot keep.
    if sc.allow_privilege_escalation == Some(false) {
        if sc.privileged == Some(true) {
            e.add(
                base,
                "Invalid value: cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            );
        }
        let adds = sc.capabilities.as_ref().and_then(|c| c.add.as_ref());
        if adds
            .into_iter()
            .flatten()
            .any(|c| c == "SYS_ADMIN" || c == "CAP_SYS_ADMIN")
        {
            e.add(
                base,
                "Invalid value: cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
            );
        }
    }
}

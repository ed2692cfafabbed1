//! kubectl's printers, as pure functions of the objects and the time:
//! - `get pods`' columns and its STATUS, READY and RESTARTS, computed as
//!   kubectl's `printPod` (pkg/printers/internalversion/printers.go) does;
//! - ages in kubectl's short form (`duration.HumanDuration` of
//!   k8s.io/apimachinery);
//! - `get events` rows and the `describe pod` text;
//! - column layout as Go's `text/tabwriter` lays out kubectl's tables.

use k8s_openapi::api::core::v1::{Container, ContainerState, ContainerStatus, Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

/// `duration.HumanDuration`: how kubectl writes an age.
pub fn human_duration(secs: i64) -> String {
    // Up to two seconds in the future count as now (clock skew).
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 60 * 2 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// `translateTimestampSince`: the age of `t` at `now`, `<unknown>` without one.
pub fn since(t: Option<&Time>, now: Timestamp) -> String {
    match t {
        None => "<unknown>".into(),
        Some(t) => human_duration(now.as_second() - t.0.as_second()),
    }
}

/// What `get pods` derives from a pod's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSummary {
    pub ready: usize,
    pub total: usize,
    pub status: String,
    pub restarts: i64,
    pub last_restart: Option<Timestamp>,
}

fn is_restartable_init(c: Option<&Container>) -> bool {
    c.and_then(|c| c.restart_policy.as_deref()) == Some("Always")
}

fn condition_true(pod: &Pod, kind: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"))
}

fn has_condition(pod: &Pod, kind: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind))
}

fn last_finished(c: &ContainerStatus) -> Option<Timestamp> {
    c.last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.finished_at.as_ref())
        .map(|t| t.0)
}

/// kubectl's `printPod`, cell for cell.
pub fn summarize(pod: &Pod) -> PodSummary {
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let mut restarts: i64 = 0;
    let mut sidecar_restarts: i64 = 0;
    let mut total = spec.containers.len();
    let mut ready = 0;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_sidecar_restart: Option<Timestamp> = None;
    let later = |a: Option<Timestamp>, b: Option<Timestamp>| match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let phase = status.phase.clone().unwrap_or_default();
    let mut reason = match status.reason.as_deref() {
        Some(r) if !r.is_empty() => r.to_string(),
        _ => phase.clone(),
    };
    let init_specs = spec.init_containers.clone().unwrap_or_default();
    let init_spec = |name: &str| init_specs.iter().find(|c| c.name == name);
    total += init_specs
        .iter()
        .filter(|c| is_restartable_init(Some(c)))
        .count();

    let mut initializing = false;
    let init_statuses = status.init_container_statuses.clone().unwrap_or_default();
    for (i, c) in init_statuses.iter().enumerate() {
        restarts += i64::from(c.restart_count);
        last_restart = later(last_restart, last_finished(c));
        let sidecar = is_restartable_init(init_spec(&c.name));
        if sidecar {
            sidecar_restarts += i64::from(c.restart_count);
            last_sidecar_restart = later(last_sidecar_restart, last_finished(c));
        }
        let state = c.state.clone().unwrap_or_default();
        match (&state.terminated, &state.waiting) {
            (Some(t), _) if t.exit_code == 0 => continue,
            _ if sidecar && c.started == Some(true) => {
                if c.ready {
                    ready += 1;
                }
                continue;
            }
            (Some(t), _) => {
                reason = match t.reason.as_deref() {
                    Some(r) if !r.is_empty() => format!("Init:{r}"),
                    _ if t.signal.unwrap_or(0) != 0 => {
                        format!("Init:Signal:{}", t.signal.unwrap_or(0))
                    }
                    _ => format!("Init:ExitCode:{}", t.exit_code),
                };
            }
            (None, Some(w))
                if w.reason.as_deref().is_some_and(|r| !r.is_empty())
                    && w.reason.as_deref() != Some("PodInitializing") =>
            {
                reason = format!("Init:{}", w.reason.as_deref().unwrap_or(""));
            }
            _ => reason = format!("Init:{i}/{}", init_specs.len()),
        }
        initializing = true;
        break;
    }

    if !initializing || condition_true(pod, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for c in status.container_statuses.iter().flatten().rev() {
            restarts += i64::from(c.restart_count);
            last_restart = later(last_restart, last_finished(c));
            let state = c.state.clone().unwrap_or_default();
            let waiting = state
                .waiting
                .as_ref()
                .and_then(|w| w.reason.clone())
                .filter(|r| !r.is_empty());
            if let Some(r) = waiting {
                reason = r;
            } else if let Some(t) = &state.terminated {
                reason = match t.reason.as_deref() {
                    Some(r) if !r.is_empty() => r.to_string(),
                    _ if t.signal.unwrap_or(0) != 0 => format!("Signal:{}", t.signal.unwrap_or(0)),
                    _ => format!("ExitCode:{}", t.exit_code),
                };
            } else if c.ready && state.running.is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if has_condition(pod, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }

    let deleting = pod.metadata.deletion_timestamp.is_some();
    if deleting && status.reason.as_deref() == Some("NodeLost") {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }
    PodSummary {
        ready,
        total,
        status: reason,
        restarts,
        last_restart,
    }
}

/// The header of `get pods`.
pub fn pod_header(wide: bool, namespaced: bool) -> Vec<String> {
    let mut h = vec![];
    if namespaced {
        h.push("NAMESPACE");
    }
    h.extend(["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    if wide {
        h.extend(["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]);
    }
    h.into_iter().map(str::to_string).collect()
}

/// One row of `get pods`.
pub fn pod_row(pod: &Pod, now: Timestamp, wide: bool, namespaced: bool) -> Vec<String> {
    let s = summarize(pod);
    let restarts = match s.last_restart {
        Some(t) if s.restarts != 0 => format!(
            "{} ({} ago)",
            s.restarts,
            human_duration(now.as_second() - t.as_second())
        ),
        _ => s.restarts.to_string(),
    };
    let mut row = vec![];
    if namespaced {
        row.push(pod.metadata.namespace.clone().unwrap_or_default());
    }
    row.extend([
        pod.metadata.name.clone().unwrap_or_default(),
        format!("{}/{}", s.ready, s.total),
        s.status,
        restarts,
        since(pod.metadata.creation_timestamp.as_ref(), now),
    ]);
    if wide {
        let status = pod.status.clone().unwrap_or_default();
        let ip = status
            .pod_ips
            .as_ref()
            .and_then(|ips| ips.first())
            .map(|ip| ip.ip.clone())
            .filter(|ip| !ip.is_empty())
            .unwrap_or_else(|| "<none>".into());
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "<none>".into());
        row.extend([ip, node, "<none>".into(), "<none>".into()]);
    }
    row
}

/// The header of `get events`.
pub fn event_header(namespaced: bool) -> Vec<String> {
    let mut h = vec![];
    if namespaced {
        h.push("NAMESPACE");
    }
    h.extend(["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]);
    h.into_iter().map(str::to_string).collect()
}

/// One row of `get events`.
pub fn event_row(e: &Event, now: Timestamp, namespaced: bool) -> Vec<String> {
    let mut row = vec![];
    if namespaced {
        row.push(e.metadata.namespace.clone().unwrap_or_default());
    }
    let object = format!(
        "pod/{}",
        e.involved_object.name.as_deref().unwrap_or_default()
    );
    row.extend([
        since(e.last_timestamp.as_ref(), now),
        e.type_.clone().unwrap_or_default(),
        e.reason.clone().unwrap_or_default(),
        object,
        e.message.clone().unwrap_or_default().trim().to_string(),
    ]);
    row
}

/// Go's `text/tabwriter` over cells: every cell but a line's last is
/// padded to its column's width (at least `min_width`, `padding` more than
/// the widest cell of its block of consecutive lines). kubectl's tables use
/// (6, 3); `describe` uses (0, 2).
pub fn tabwrite(lines: &[Vec<String>], min_width: usize, padding: usize) -> String {
    let mut out = String::new();
    let mut widths = vec![];
    format_block(
        lines,
        0,
        lines.len(),
        0,
        min_width,
        padding,
        &mut widths,
        &mut out,
    );
    out
}

fn width(s: &str) -> usize {
    s.chars().count()
}

#[allow(clippy::too_many_arguments)]
fn format_block(
    lines: &[Vec<String>],
    mut line0: usize,
    line1: usize,
    column: usize,
    min_width: usize,
    padding: usize,
    widths: &mut Vec<usize>,
    out: &mut String,
) {
    let mut this = line0;
    while this < line1 {
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        write_lines(lines, line0, this, widths, out);
        line0 = this;
        let mut w = min_width;
        while this < line1 && column + 1 < lines[this].len() {
            w = w.max(width(&lines[this][column]) + padding);
            this += 1;
        }
        widths.push(w);
        format_block(
            lines,
            line0,
            this,
            column + 1,
            min_width,
            padding,
            widths,
            out,
        );
        widths.pop();
        line0 = this;
    }
    write_lines(lines, line0, line1, widths, out);
}

fn write_lines(lines: &[Vec<String>], from: usize, to: usize, widths: &[usize], out: &mut String) {
    for line in &lines[from..to] {
        for (j, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if j + 1 < line.len()
                && let Some(w) = widths.get(j)
            {
                out.extend(std::iter::repeat_n(' ', w.saturating_sub(width(cell))));
            }
        }
        out.push('\n');
    }
}

/// A table of kubectl's `get`: a header, then rows.
pub fn table(header: Vec<String>, rows: Vec<Vec<String>>) -> String {
    let mut lines = vec![header];
    lines.extend(rows);
    tabwrite(&lines, 6, 3)
}

/// `top pods` rows: CPU in millicores, memory in MiB, as kubectl prints them.
pub fn cpu_cell(milli: f64) -> String {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a non-negative rate rounded to millicores; `as` saturates"
    )]
    let m = milli.round().max(0.0) as u64;
    format!("{m}m")
}

pub fn memory_cell(bytes: u64) -> String {
    format!("{}Mi", bytes / (1024 * 1024))
}

/// kubectl describe's time format (RFC 1123 with a numeric zone), in UTC.
pub fn describe_time(t: &Time) -> String {
    t.0.strftime("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

/// Lines of `describe`, as (indent level, cells).
struct Out(Vec<Vec<String>>);

impl Out {
    fn line(&mut self, level: usize, cells: &[&str]) {
        let mut cells: Vec<String> = cells.iter().map(|c| c.to_string()).collect();
        if let Some(first) = cells.first_mut() {
            *first = format!("{}{first}", "  ".repeat(level));
        }
        self.0.push(cells);
    }
}

fn or_none(s: Option<String>) -> String {
    s.filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<none>".into())
}

fn map_lines(out: &mut Out, label: &str, m: Option<&std::collections::BTreeMap<String, String>>) {
    match m.filter(|m| !m.is_empty()) {
        None => out.line(0, &[&format!("{label}:"), "<none>"]),
        Some(m) => {
            for (i, (k, v)) in m.iter().enumerate() {
                let kv = if label == "Labels" {
                    format!("{k}={v}")
                } else {
                    format!("{k}: {v}")
                };
                let head = if i == 0 {
                    format!("{label}:")
                } else {
                    String::new()
                };
                out.line(0, &[&head, &kv]);
            }
        }
    }
}

fn state_lines(out: &mut Out, label: &str, state: Option<&ContainerState>) {
    let Some(s) = state else {
        out.line(2, &[&format!("{label}:"), "Waiting"]);
        return;
    };
    if let Some(r) = &s.running {
        out.line(2, &[&format!("{label}:"), "Running"]);
        if let Some(t) = &r.started_at {
            out.line(3, &["Started:", &describe_time(t)]);
        }
    } else if let Some(w) = &s.waiting {
        out.line(2, &[&format!("{label}:"), "Waiting"]);
        if let Some(r) = &w.reason {
            out.line(3, &["Reason:", r]);
        }
    } else if let Some(t) = &s.terminated {
        out.line(2, &[&format!("{label}:"), "Terminated"]);
        if let Some(r) = &t.reason {
            out.line(3, &["Reason:", r]);
        }
        if let Some(m) = t.message.as_ref().filter(|m| !m.is_empty()) {
            out.line(3, &["Message:", m]);
        }
        out.line(3, &["Exit Code:", &t.exit_code.to_string()]);
        if let Some(sig) = t.signal.filter(|s| *s != 0) {
            out.line(3, &["Signal:", &sig.to_string()]);
        }
        if let Some(at) = &t.started_at {
            out.line(3, &["Started:", &describe_time(at)]);
        }
        if let Some(at) = &t.finished_at {
            out.line(3, &["Finished:", &describe_time(at)]);
        }
    } else {
        out.line(2, &[&format!("{label}:"), "Waiting"]);
    }
}

/// A probe as `describe` prints it (`describeProbe`).
fn probe(p: &k8s_openapi::api::core::v1::Probe) -> String {
    let attrs = format!(
        "delay={}s timeout={}s period={}s #success={} #failure={}",
        p.initial_delay_seconds.unwrap_or(0),
        p.timeout_seconds.unwrap_or(1),
        p.period_seconds.unwrap_or(10),
        p.success_threshold.unwrap_or(1),
        p.failure_threshold.unwrap_or(3)
    );
    let port = |p: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString| match p {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => i.to_string(),
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s.clone(),
    };
    if let Some(e) = &p.exec {
        format!(
            "exec [{}] {attrs}",
            e.command.clone().unwrap_or_default().join(" ")
        )
    } else if let Some(h) = &p.http_get {
        format!(
            "http-get {}://{}:{}{} {attrs}",
            h.scheme.as_deref().unwrap_or("HTTP").to_lowercase(),
            h.host.as_deref().unwrap_or(""),
            port(&h.port),
            h.path.as_deref().unwrap_or("/"),
        )
    } else if let Some(t) = &p.tcp_socket {
        format!(
            "tcp-socket {}:{} {attrs}",
            t.host.as_deref().unwrap_or(""),
            port(&t.port)
        )
    } else if let Some(g) = &p.grpc {
        format!(
            "grpc <pod>:{} {} {attrs}",
            g.port,
            g.service.as_deref().unwrap_or("")
        )
    } else {
        format!("unknown {attrs}")
    }
}

fn container_lines(out: &mut Out, c: &Container, status: Option<&ContainerStatus>) {
    out.line(1, &[&format!("{}:", c.name)]);
    if let Some(s) = status {
        out.line(
            2,
            &["Container ID:", s.container_id.as_deref().unwrap_or("")],
        );
    }
    out.line(2, &["Image:", c.image.as_deref().unwrap_or("")]);
    if let Some(s) = status {
        out.line(2, &["Image ID:", &s.image_id]);
    }
    let ports = c.ports.clone().unwrap_or_default();
    let port_text = |f: &dyn Fn(&k8s_openapi::api::core::v1::ContainerPort) -> Option<i32>| {
        let v: Vec<String> = ports
            .iter()
            .filter_map(|p| f(p).map(|n| format!("{n}/{}", p.protocol.as_deref().unwrap_or("TCP"))))
            .collect();
        if v.is_empty() {
            "<none>".to_string()
        } else {
            v.join(", ")
        }
    };
    out.line(2, &["Port:", &port_text(&|p| Some(p.container_port))]);
    out.line(2, &["Host Port:", &port_text(&|p| p.host_port)]);
    for (label, v) in [("Command:", &c.command), ("Args:", &c.args)] {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            out.line(2, &[label]);
            for a in v {
                for l in a.lines() {
                    out.line(3, &[l]);
                }
            }
        }
    }
    if let Some(s) = status {
        state_lines(out, "State", s.state.as_ref());
        if let Some(last) = s
            .last_state
            .as_ref()
            .filter(|l| l.running.is_some() || l.waiting.is_some() || l.terminated.is_some())
        {
            state_lines(out, "Last State", Some(last));
        }
        out.line(2, &["Ready:", if s.ready { "True" } else { "False" }]);
        out.line(2, &["Restart Count:", &s.restart_count.to_string()]);
    } else {
        out.line(2, &["State:", "Waiting"]);
        out.line(2, &["Ready:", "False"]);
        out.line(2, &["Restart Count:", "0"]);
    }
    let res = c.resources.clone().unwrap_or_default();
    for (label, m) in [("Limits:", &res.limits), ("Requests:", &res.requests)] {
        if let Some(m) = m.as_ref().filter(|m| !m.is_empty()) {
            out.line(2, &[label]);
            for (k, q) in m {
                out.line(3, &[&format!("{k}:"), &q.0]);
            }
        }
    }
    for (label, p) in [
        ("Liveness:", &c.liveness_probe),
        ("Readiness:", &c.readiness_probe),
        ("Startup:", &c.startup_probe),
    ] {
        if let Some(p) = p {
            out.line(2, &[label, &probe(p)]);
        }
    }
    match c.env.as_ref().filter(|e| !e.is_empty()) {
        None => out.line(2, &["Environment:", "<none>"]),
        Some(env) => {
            out.line(2, &["Environment:"]);
            for e in env {
                let v = match (&e.value, &e.value_from) {
                    (Some(v), _) => v.clone(),
                    (None, Some(_)) => "<set from a reference>".into(),
                    (None, None) => String::new(),
                };
                out.line(3, &[&format!("{}:", e.name), &v]);
            }
        }
    }
    match c.volume_mounts.as_ref().filter(|m| !m.is_empty()) {
        None => out.line(2, &["Mounts:", "<none>"]),
        Some(mounts) => {
            out.line(2, &["Mounts:"]);
            for m in mounts {
                let rw = if m.read_only == Some(true) {
                    "ro"
                } else {
                    "rw"
                };
                let sub = m
                    .sub_path
                    .as_ref()
                    .map(|s| format!(",path=\"{s}\""))
                    .unwrap_or_default();
                out.line(
                    3,
                    &[&format!("{} from {} ({rw}{sub})", m.mount_path, m.name)],
                );
            }
        }
    }
}

/// A resolved volume (the agent's `volume::Volume` as JSON), as `describe`
/// prints its source.
fn volume_lines(out: &mut Out, v: &Value) {
    let name = v["name"].as_str().unwrap_or("");
    out.line(1, &[&format!("{name}:")]);
    let ro = v["read_only"].as_bool().unwrap_or(false).to_string();
    let src = &v["source"];
    let s = |k: &str| match &src[k] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let lines: Vec<(&str, String)> = if let Some(e) = src.get("EmptyDir") {
        let medium = if e["memory"].as_bool() == Some(true) {
            "Memory"
        } else {
            ""
        };
        let limit = e["size_limit"]
            .as_i64()
            .map_or("<unset>".to_string(), |l| l.to_string());
        vec![
            (
                "Type:",
                "EmptyDir (a temporary directory that shares a pod's lifetime)".into(),
            ),
            ("Medium:", medium.into()),
            ("SizeLimit:", limit),
        ]
    } else if let Some(h) = src.get("HostPath") {
        vec![
            ("Type:", "HostPath (bare host directory volume)".into()),
            ("Path:", h["path"].as_str().unwrap_or("").into()),
            ("HostPathType:", h["kind"].as_str().unwrap_or("").into()),
        ]
    } else if let Some(n) = src.get("Nfs") {
        let mut l = vec![
            (
                "Type:",
                "NFS (an NFS mount that lasts the lifetime of a pod)".into(),
            ),
            ("Server:", n["server"].as_str().unwrap_or("").into()),
            ("Path:", n["path"].as_str().unwrap_or("").into()),
            (
                "ReadOnly:",
                n["read_only"].as_bool().unwrap_or(false).to_string(),
            ),
        ];
        if let Some(pv) = n["pv"].as_str() {
            l.push(("PersistentVolume:", pv.into()));
        }
        l
    } else if let Some(lp) = src.get("Local") {
        vec![
            (
                "Type:",
                "LocalVolume (a persistent volume backed by local storage on a node)".into(),
            ),
            ("Path:", lp["path"].as_str().unwrap_or("").into()),
            ("PersistentVolume:", lp["pv"].as_str().unwrap_or("").into()),
        ]
    } else if let Some(f) = src.get("Files") {
        let secret = f["secret"].as_bool() == Some(true);
        let files = f["files"].as_array().map_or(0, Vec::len);
        vec![
            (
                "Type:",
                if secret {
                    "Secret (a volume populated by a Secret)"
                } else {
                    "ConfigMap (a volume populated by a ConfigMap)"
                }
                .into(),
            ),
            ("Files:", files.to_string()),
        ]
    } else if src.get("Unavailable").is_some() {
        vec![
            ("Type:", "<unavailable>".into()),
            ("Problem:", s("Unavailable")),
        ]
    } else {
        vec![("Type:", src.to_string())]
    };
    for (k, val) in lines {
        out.line(2, &[k, &val]);
    }
    out.line(2, &["ReadOnly (all mounts):", &ro]);
}

/// `describe pod`, from the agent's answer: the pod, its manifest file,
/// its cgroup, its resolved volumes and its events.
pub fn describe(answer: &Value, now: Timestamp) -> Result<String, serde_json::Error> {
    let pod: Pod = serde_json::from_value(answer["pod"].clone())?;
    let events: Vec<Event> = serde_json::from_value(answer["events"].clone())?;
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let meta = &pod.metadata;
    let mut out = Out(vec![]);
    out.line(0, &["Name:", meta.name.as_deref().unwrap_or("")]);
    out.line(0, &["Namespace:", meta.namespace.as_deref().unwrap_or("")]);
    out.line(0, &["Priority:", &spec.priority.unwrap_or(0).to_string()]);
    if let Some(pc) = &spec.priority_class_name {
        out.line(0, &["Priority Class Name:", pc]);
    }
    out.line(
        0,
        &[
            "Service Account:",
            spec.service_account_name.as_deref().unwrap_or("default"),
        ],
    );
    let node = match (&spec.node_name, &status.host_ip) {
        (Some(n), Some(ip)) => format!("{n}/{ip}"),
        (Some(n), None) => n.clone(),
        _ => "<none>".into(),
    };
    out.line(0, &["Node:", &node]);
    if let Some(t) = &status.start_time {
        out.line(0, &["Start Time:", &describe_time(t)]);
    }
    out.line(0, &["Manifest:", answer["manifest"].as_str().unwrap_or("")]);
    map_lines(&mut out, "Labels", meta.labels.as_ref());
    map_lines(&mut out, "Annotations", meta.annotations.as_ref());
    match &meta.deletion_timestamp {
        Some(t) => out.line(
            0,
            &[
                "Status:",
                &format!("Terminating (lasts {})", since(Some(t), now)),
            ],
        ),
        None => out.line(0, &["Status:", status.phase.as_deref().unwrap_or("")]),
    }
    if let Some(r) = status.reason.as_ref().filter(|r| !r.is_empty()) {
        out.line(0, &["Reason:", r]);
    }
    if let Some(m) = status.message.as_ref().filter(|m| !m.is_empty()) {
        out.line(0, &["Message:", m]);
    }
    out.line(0, &["IP:", status.pod_ip.as_deref().unwrap_or("")]);
    match status.pod_ips.as_ref().filter(|ips| !ips.is_empty()) {
        None => out.line(0, &["IPs:", "<none>"]),
        Some(ips) => {
            out.line(0, &["IPs:"]);
            for ip in ips {
                out.line(1, &["IP:", &ip.ip]);
            }
        }
    }
    let find = |list: &Option<Vec<ContainerStatus>>, name: &str| {
        list.as_ref()
            .and_then(|l| l.iter().find(|s| s.name == name).cloned())
    };
    if let Some(inits) = spec.init_containers.as_ref().filter(|i| !i.is_empty()) {
        out.line(0, &["Init Containers:"]);
        for c in inits {
            container_lines(
                &mut out,
                c,
                find(&status.init_container_statuses, &c.name).as_ref(),
            );
        }
    }
    out.line(0, &["Containers:"]);
    for c in &spec.containers {
        container_lines(
            &mut out,
            c,
            find(&status.container_statuses, &c.name).as_ref(),
        );
    }
    if let Some(conds) = status.conditions.as_ref().filter(|c| !c.is_empty()) {
        out.line(0, &["Conditions:"]);
        out.line(1, &["Type", "Status"]);
        for c in conds {
            out.line(1, &[&c.type_, &c.status]);
        }
    }
    match answer["volumes"].as_array().filter(|v| !v.is_empty()) {
        None => out.line(0, &["Volumes:", "<none>"]),
        Some(vols) => {
            out.line(0, &["Volumes:"]);
            for v in vols {
                volume_lines(&mut out, v);
            }
        }
    }
    out.line(
        0,
        &["QoS Class:", status.qos_class.as_deref().unwrap_or("")],
    );
    out.line(0, &["Cgroup:", answer["cgroup"].as_str().unwrap_or("")]);
    let selectors = spec.node_selector.as_ref().map(|m| {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    });
    out.line(0, &["Node-Selectors:", &or_none(selectors)]);
    let tolerations = spec.tolerations.as_ref().map(|t| {
        t.iter()
            .map(|t| {
                let mut s = t.key.clone().unwrap_or_default();
                if let Some(v) = &t.value {
                    s += &format!("={v}");
                }
                if let Some(e) = &t.effect {
                    s += &format!(":{e}");
                }
                if t.operator.as_deref() == Some("Exists") && t.key.is_none() {
                    s = "op=Exists".into();
                }
                s
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    out.line(0, &["Tolerations:", &or_none(tolerations)]);
    if let Some(w) = answer["warnings"].as_array().filter(|w| !w.is_empty()) {
        out.line(0, &["Ignored fields:"]);
        for w in w {
            out.line(1, &[w.as_str().unwrap_or("")]);
        }
    }
    let mut text = tabwrite(&out.0, 0, 2);
    text.push_str(&events_table(&events, now));
    Ok(text)
}

/// The events part of `describe` (`DescribeEvents`).
pub fn events_table(events: &[Event], now: Timestamp) -> String {
    if events.is_empty() {
        return "Events:  <none>\n".into();
    }
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0));
    let mut lines = vec![
        vec!["  Type", "Reason", "Age", "From", "Message"],
        vec!["  ----", "------", "----", "----", "-------"],
    ]
    .into_iter()
    .map(|l| l.into_iter().map(str::to_string).collect::<Vec<_>>())
    .collect::<Vec<_>>();
    for e in sorted {
        let count = e.count.unwrap_or(1);
        let age = if count > 1 {
            format!(
                "{} (x{count} over {})",
                since(e.last_timestamp.as_ref(), now),
                since(e.first_timestamp.as_ref(), now)
            )
        } else {
            since(e.first_timestamp.as_ref(), now)
        };
        let from = e
            .source
            .as_ref()
            .and_then(|s| s.component.clone())
            .or_else(|| e.reporting_component.clone())
            .unwrap_or_default();
        lines.push(vec![
            format!("  {}", e.type_.clone().unwrap_or_default()),
            e.reason.clone().unwrap_or_default(),
            age,
            from,
            e.message.clone().unwrap_or_default().trim().to_string(),
        ]);
    }
    format!("Events:\n{}", tabwrite(&lines, 0, 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn now() -> Timestamp {
        Timestamp::from_second(NOW).unwrap()
    }

    /// An RFC 3339 time `secs` seconds before [`NOW`].
    fn ago(secs: i64) -> String {
        Timestamp::from_second(NOW - secs).unwrap().to_string()
    }

    fn pod(containers: usize, inits: usize, status: Value) -> Pod {
        let c = |i| json!({"name": format!("c{i}")});
        let ic = |i| json!({"name": format!("i{i}")});
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "creationTimestamp": ago(300)},
            "spec": {
                "containers": (0..containers).map(c).collect::<Vec<_>>(),
                "initContainers": (0..inits).map(ic).collect::<Vec<_>>(),
                "nodeName": "n1",
            },
            "status": status,
        }))
        .unwrap()
    }

    fn cells(p: &Pod) -> Vec<String> {
        pod_row(p, now(), false, false)[1..4].to_vec()
    }

    fn running() -> Value {
        json!({"running": {"startedAt": ago(60)}})
    }

    #[test]
    fn status_column_as_kubectl_computes_it() {
        // (case, pod, READY, STATUS, RESTARTS), after kubectl's TestPrintPod.
        let terminated = |reason: Option<&str>, code: i32, signal: i32| {
            let mut t = json!({"exitCode": code, "finishedAt": ago(10)});
            if let Some(r) = reason {
                t["reason"] = json!(r);
            }
            if signal != 0 {
                t["signal"] = json!(signal);
            }
            json!({ "terminated": t })
        };
        let waiting = |r: &str| json!({"waiting": {"reason": r}});
        let last_exit =
            json!({"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(125)}});
        let cases: Vec<(&str, Pod, &str, &str, &str)> = vec![
            (
                "phase when nothing overrides it",
                pod(2, 0, json!({"phase": "podPhase", "containerStatuses": [
                    {"name": "c0", "ready": true, "restartCount": 3, "image": "", "imageID": "", "state": running()},
                    {"name": "c1", "ready": false, "restartCount": 3, "image": "", "imageID": ""}]})),
                "1/2", "podPhase", "6",
            ),
            (
                "a waiting reason overrides the phase",
                pod(2, 0, json!({"phase": "podPhase", "containerStatuses": [
                    {"name": "c0", "ready": true, "restartCount": 3, "image": "", "imageID": "", "state": running()},
                    {"name": "c1", "ready": false, "restartCount": 3, "image": "", "imageID": "", "state": waiting("ContainerWaitingReason")}]})),
                "1/2", "ContainerWaitingReason", "6",
            ),
            (
                "the first container's reason wins",
                pod(2, 0, json!({"phase": "podPhase", "containerStatuses": [
                    {"name": "c0", "ready": false, "restartCount": 3, "image": "", "imageID": "", "state": waiting("ContainerWaitingReason")},
                    {"name": "c1", "ready": false, "restartCount": 3, "image": "", "imageID": "", "state": terminated(Some("ContainerTerminatedReason"), 1, 0)}]})),
                "0/2", "ContainerWaitingReason", "6",
            ),
            (
                "the pod's reason overrides the phase",
                pod(1, 0, json!({"phase": "Pending", "reason": "NetworkNotReady", "containerStatuses": []})),
                "0/1", "NetworkNotReady", "0",
            ),
            (
                "one completed and one running without Ready: NotReady",
                pod(2, 0, json!({"phase": "Running", "containerStatuses": [
                    {"name": "c0", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": terminated(Some("Completed"), 0, 0)},
                    {"name": "c1", "ready": true, "restartCount": 0, "image": "", "imageID": "", "state": running()}]})),
                "1/2", "NotReady", "0",
            ),
            (
                "the same with the Ready condition: Running",
                pod(2, 0, json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}], "containerStatuses": [
                    {"name": "c0", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": terminated(Some("Completed"), 0, 0)},
                    {"name": "c1", "ready": true, "restartCount": 0, "image": "", "imageID": "", "state": running()}]})),
                "1/2", "Running", "0",
            ),
            (
                "crash loop, with the last restart's age",
                pod(1, 0, json!({"phase": "Running", "containerStatuses": [
                    {"name": "c0", "ready": false, "restartCount": 3, "image": "", "imageID": "", "state": waiting("CrashLoopBackOff"), "lastState": last_exit}]})),
                "0/1", "CrashLoopBackOff", "3 (2m5s ago)",
            ),
            (
                "OOMKilled",
                pod(1, 0, json!({"phase": "Running", "containerStatuses": [
                    {"name": "c0", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": terminated(Some("OOMKilled"), 137, 0)}]})),
                "0/1", "OOMKilled", "0",
            ),
            (
                "image pull back-off",
                pod(1, 0, json!({"phase": "Pending", "containerStatuses": [
                    {"name": "c0", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": waiting("ImagePullBackOff")}]})),
                "0/1", "ImagePullBackOff", "0",
            ),
            (
                "terminated without a reason: the exit code",
                pod(1, 0, json!({"phase": "Failed", "containerStatuses": [
                    {"name": "c0", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": terminated(None, 2, 0)}]})),
                "0/1", "ExitCode:2", "0",
            ),
            (
                "terminated by a signal",
                pod(1, 0, json!({"phase": "Failed", "containerStatuses": [
                    {"name": "c0", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": terminated(None, 137, 9)}]})),
                "0/1", "Signal:9", "0",
            ),
            (
                "completed and error",
                pod(2, 0, json!({"phase": "Failed", "containerStatuses": [
                    {"name": "c0", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": terminated(Some("Error"), 1, 0)},
                    {"name": "c1", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": terminated(Some("Completed"), 0, 0)}]})),
                "0/2", "Error", "0",
            ),
            (
                "an init container running",
                pod(1, 1, json!({"phase": "Pending", "conditions": [{"type": "Initialized", "status": "False"}],
                    "initContainerStatuses": [
                        {"name": "i0", "ready": false, "restartCount": 3, "image": "", "imageID": "", "state": running(), "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(10)}}}],
                    "containerStatuses": [
                        {"name": "c0", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": waiting("PodInitializing")}]})),
                "0/1", "Init:0/1", "3 (10s ago)",
            ),
            (
                "the second of two init containers",
                pod(1, 2, json!({"phase": "Pending", "initContainerStatuses": [
                        {"name": "i0", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": terminated(Some("Completed"), 0, 0)},
                        {"name": "i1", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": waiting("PodInitializing")}]})),
                "0/1", "Init:1/2", "0",
            ),
            (
                "an init container crash-looping",
                pod(1, 1, json!({"phase": "Pending", "initContainerStatuses": [
                        {"name": "i0", "ready": false, "restartCount": 3, "image": "", "imageID": "", "state": waiting("CrashLoopBackOff"), "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(10)}}}]})),
                "0/1", "Init:CrashLoopBackOff", "3 (10s ago)",
            ),
            (
                "an init container failed",
                pod(1, 1, json!({"phase": "Failed", "initContainerStatuses": [
                        {"name": "i0", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": terminated(Some("Error"), 1, 0)}]})),
                "0/1", "Init:Error", "0",
            ),
            (
                "an init container's exit code and signal",
                pod(1, 1, json!({"phase": "Failed", "initContainerStatuses": [
                        {"name": "i0", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": terminated(None, 3, 0)}]})),
                "0/1", "Init:ExitCode:3", "0",
            ),
            (
                "an init container killed",
                pod(1, 1, json!({"phase": "Failed", "initContainerStatuses": [
                        {"name": "i0", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": terminated(None, 137, 9)}]})),
                "0/1", "Init:Signal:9", "0",
            ),
            (
                "init done: the containers' status",
                pod(1, 1, json!({"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
                    "initContainerStatuses": [
                        {"name": "i0", "ready": false, "restartCount": 2, "image": "", "imageID": "", "state": terminated(Some("Completed"), 0, 0)}],
                    "containerStatuses": [
                        {"name": "c0", "ready": true, "restartCount": 1, "image": "", "imageID": "", "state": running(), "lastState": last_exit}]})),
                "1/1", "Running", "1 (2m5s ago)",
            ),
            (
                "a sidecar (restartable init container) counts in READY",
                serde_json::from_value(json!({
                    "metadata": {"name": "p"},
                    "spec": {"containers": [{"name": "c0"}], "initContainers": [{"name": "s", "restartPolicy": "Always"}]},
                    "status": {"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
                        "initContainerStatuses": [{"name": "s", "ready": true, "started": true, "restartCount": 1, "image": "", "imageID": "", "state": running()}],
                        "containerStatuses": [{"name": "c0", "ready": true, "restartCount": 0, "image": "", "imageID": "", "state": running()}]}})).unwrap(),
                "2/2", "Running", "1",
            ),
        ];
        for (case, p, ready, status, restarts) in cases {
            assert_eq!(cells(&p), [ready, status, restarts], "{case}");
        }
    }

    #[test]
    fn terminating_unless_the_phase_is_final() {
        let mut p = pod(
            1,
            0,
            json!({"phase": "Running", "containerStatuses": [
            {"name": "c0", "ready": true, "restartCount": 0, "image": "", "imageID": "", "state": running()}]}),
        );
        p.metadata.deletion_timestamp = Some(Time(now()));
        assert_eq!(cells(&p)[1], "Terminating");
        let mut done = pod(
            1,
            0,
            json!({"phase": "Succeeded", "containerStatuses": [
            {"name": "c0", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
        );
        done.metadata.deletion_timestamp = Some(Time(now()));
        assert_eq!(cells(&done)[1], "Completed");
    }

    #[test]
    fn ages_as_kubectl_writes_them() {
        // apimachinery's duration_test.go.
        for (secs, want) in [
            (-2, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (1, "1s"),
            (119, "119s"),
            (120, "2m"),
            (121, "2m1s"),
            (9 * 60 + 59, "9m59s"),
            (10 * 60, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (7 * 3600 + 59 * 60, "7h59m"),
            (8 * 3600, "8h"),
            (47 * 3600 + 59 * 60, "47h"),
            (48 * 3600, "2d"),
            (48 * 3600 + 3600, "2d1h"),
            (8 * 86400 - 1, "7d23h"),
            (8 * 86400, "8d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (731 * 86400, "2y1d"),
            (8 * 365 * 86400 - 86400, "7y364d"),
            (8 * 365 * 86400, "8y"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}s");
        }
        assert_eq!(since(None, now()), "<unknown>");
    }

    #[test]
    fn columns_are_laid_out_as_kubectl_does() {
        let p = pod(
            1,
            0,
            json!({"phase": "Running", "podIPs": [{"ip": "10.1.0.7"}], "containerStatuses": [
            {"name": "c0", "ready": true, "restartCount": 0, "image": "", "imageID": "", "state": running()}]}),
        );
        let text = table(
            pod_header(false, false),
            vec![pod_row(&p, now(), false, false)],
        );
        assert_eq!(
            text,
            "NAME   READY   STATUS    RESTARTS   AGE\n\
             p      1/1     Running   0          5m\n"
        );
        let wide = table(pod_header(true, true), vec![pod_row(&p, now(), true, true)]);
        assert_eq!(
            wide,
            "NAMESPACE   NAME   READY   STATUS    RESTARTS   AGE   IP         NODE   NOMINATED NODE   READINESS GATES\n\
             default     p      1/1     Running   0          5m    10.1.0.7   n1     <none>           <none>\n"
        );
    }

    #[test]
    fn tabwriter_aligns_blocks_of_consecutive_lines() {
        let l = |cells: &[&str]| cells.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        let lines = vec![
            l(&["Name:", "web"]),
            l(&["Namespace:", "default"]),
            l(&["Containers:"]),
            l(&["  app:"]),
            l(&["    Image:", "busybox"]),
            l(&["    Restart Count:", "0"]),
        ];
        assert_eq!(
            tabwrite(&lines, 0, 2),
            "Name:       web\nNamespace:  default\nContainers:\n  app:\n    Image:          busybox\n    Restart Count:  0\n"
        );
    }

    fn event(kind: &str, reason: &str, count: i32, first: i64, last: i64) -> Event {
        serde_json::from_value(json!({
            "metadata": {"name": "p.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default", "fieldPath": "spec.containers{c0}"},
            "type": kind, "reason": reason, "message": format!("{reason} message "),
            "count": count, "firstTimestamp": ago(first), "lastTimestamp": ago(last),
            "source": {"component": "kubelet", "host": "n1"},
        }))
        .unwrap()
    }

    #[test]
    fn events_as_describe_and_get_show_them() {
        let events = vec![
            event("Warning", "BackOff", 5, 600, 30),
            event("Normal", "Started", 1, 700, 700),
        ];
        assert_eq!(
            events_table(&events, now()),
            "Events:\n  Type     Reason   Age                From     Message\n  \
             ----     ------   ----               ----     -------\n  \
             Normal   Started  11m                kubelet  Started message\n  \
             Warning  BackOff  30s (x5 over 10m)  kubelet  BackOff message\n"
        );
        assert_eq!(events_table(&[], now()), "Events:  <none>\n");
        assert_eq!(
            event_row(&events[0], now(), false),
            ["30s", "Warning", "BackOff", "pod/p", "BackOff message"]
        );
    }

    #[test]
    fn describe_shows_the_agents_extras_and_the_containers() {
        let p = json!({
            "metadata": {"name": "web-n1", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{
                "name": "app", "image": "busybox",
                "command": ["sh", "-c", "sleep 1000"],
                "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "100m"}},
                "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 5},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }]},
            "status": {"phase": "Running", "qosClass": "Burstable", "hostIP": "192.168.0.5",
                "podIP": "10.1.0.7", "podIPs": [{"ip": "10.1.0.7"}],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 1, "image": "busybox", "imageID": "",
                    "containerID": "containerd://abc", "state": running(),
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": ago(100)}}}]},
        });
        let answer = json!({
            "pod": p, "manifest": "/etc/kubernetes/manifests/web.yaml",
            "cgroup": "kubepods/burstable/podu1",
            "volumes": [{"name": "data", "read_only": false, "source": {"EmptyDir": {"memory": false, "size_limit": null}}}],
            "events": [event("Normal", "Started", 1, 700, 700)],
        });
        let text = describe(&answer, now()).unwrap();
        for want in [
            "Name:             web-n1\n",
            "Node:             n1/192.168.0.5\n",
            "Manifest:         /etc/kubernetes/manifests/web.yaml\n",
            "Labels:           app=web\n",
            "IPs:\n  IP:  10.1.0.7\n",
            // Go's tabwriter restarts a block after a line without a tab
            // ("Command:"), as in kubectl's own output.
            "    Container ID:  containerd://abc\n",
            "    Command:\n      sh\n      -c\n      sleep 1000\n",
            "    State:          Running\n",
            "    Last State:     Terminated\n      Reason:       OOMKilled\n      Exit Code:    137\n",
            "    Restart Count:  1\n",
            "    Limits:\n      memory:  64Mi\n    Requests:\n      cpu:        100m\n",
            "    Liveness:     exec [true] delay=0s timeout=1s period=5s #success=1 #failure=3\n",
            "      /data from data (rw)\n",
            "    Type:                   EmptyDir (a temporary directory that shares a pod's lifetime)\n",
            "QoS Class:                  Burstable\n",
            "Cgroup:                     kubepods/burstable/podu1\n",
            "  Normal  Started  11m   kubelet  Started message\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn top_cells() {
        assert_eq!(cpu_cell(249.6), "250m");
        assert_eq!(cpu_cell(-1.0), "0m");
        assert_eq!(memory_cell(64 * 1024 * 1024 + 5), "64Mi");
    }
}

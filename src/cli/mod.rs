//! The operator's command line: kubectl's verbs (`get pods`, `describe pod`,
//! `logs`, `exec`, `top pods`, `events`) answered by the running agent over a Unix
//! socket that only root may open ([`server`], protocol in [`proto`]).
//! The client side here is synchronous and small: it connects, sends one
//! request line and prints what comes back with kubectl's printers
//! ([`print`]).
//!
//! `exec` runs a command in a container through containerd's exec, its
//! streams framed over the same socket ([`proto::frame`]).

mod exec;
pub mod print;
pub mod proto;
pub mod server;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use proto::{LogsRequest, Request};

/// The socket's path when the configuration does not set `cliSocket`.
pub const DEFAULT_SOCKET: &str = "/run/kubelet-lite/kubelet-lite.sock";

/// The verbs that ask the running agent.
#[derive(Subcommand, Debug)]
pub enum Verb {
    /// List pods, with kubectl's columns and STATUS.
    #[command(
        after_help = "Examples:\n  kubelet-lite get pods\n  kubelet-lite get pod web-node1 -o yaml\n  kubelet-lite get pods -A -o wide\n  kubelet-lite get pods -n kube-system -o yaml\n  kubelet-lite get pods -w"
    )]
    Get(GetArgs),
    /// Show a pod in detail: manifest, QoS, cgroup, volumes, containers, events.
    #[command(
        after_help = "Examples:\n  kubelet-lite describe pod web-node1\n  kubelet-lite describe pod etcd-node1 -n kube-system"
    )]
    Describe(DescribeArgs),
    /// Print a container's log from its CRI log file.
    #[command(
        after_help = "Examples:\n  kubelet-lite logs web-node1\n  kubelet-lite logs web-node1 -c sidecar --tail 20\n  kubelet-lite logs web-node1 --previous\n  kubelet-lite logs web-node1 -f --since 10m --timestamps"
    )]
    Logs(LogsArgs),
    /// CPU (millicores) and memory (working set) of pods.
    #[command(
        after_help = "Examples:\n  kubelet-lite top pods\n  kubelet-lite top pods -A --containers"
    )]
    Top(TopArgs),
    /// The node's recent events.
    #[command(after_help = "Examples:\n  kubelet-lite events\n  kubelet-lite events -A -w")]
    Events(EventsArgs),
    /// Run a command in a container (through containerd's exec).
    #[command(
        after_help = "The command's exit code is kubelet-lite's.\n\nExamples:\n  kubelet-lite exec web-node1 -- ls /data\n  kubelet-lite exec web-node1 -c sidecar -- cat /etc/hosts\n  echo hello | kubelet-lite exec -i web-node1 -- cat\n  kubelet-lite exec -it web-node1 -- sh"
    )]
    Exec(ExecArgs),
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    pub pod: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
    /// Namespace of the pod.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Container (default: the only one, or the first).
    #[arg(short, long)]
    pub container: Option<String>,
    /// Pass stdin to the command.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Run the command on a terminal (with -i: this terminal, in raw mode).
    #[arg(short, long)]
    pub tty: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Resource {
    #[value(alias = "pod", alias = "po")]
    Pods,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Wide,
    Yaml,
    Json,
}

#[derive(Args, Debug)]
pub struct Namespace {
    /// Namespace of the pods.
    #[arg(
        short,
        long,
        default_value = "default",
        conflicts_with = "all_namespaces"
    )]
    pub namespace: String,
    /// Pods of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    pub resource: Resource,
    /// Only this pod.
    pub name: Option<String>,
    #[command(flatten)]
    pub ns: Namespace,
    #[arg(short, long, value_enum)]
    pub output: Option<Format>,
    /// After the list, print a row for every change.
    #[arg(short, long)]
    pub watch: bool,
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    pub resource: Resource,
    pub name: String,
    /// Namespace of the pod.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    pub pod: String,
    /// Namespace of the pod.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Container (default: the only one, or the first).
    #[arg(short, long)]
    pub container: Option<String>,
    /// Keep printing what the container writes, until it stops.
    #[arg(short, long)]
    pub follow: bool,
    /// The log of the container's previous run.
    #[arg(short, long)]
    pub previous: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<usize>,
    /// Only lines newer than this (5s, 2m, 3h).
    #[arg(long, value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// Prefix each line with its time.
    #[arg(long)]
    pub timestamps: bool,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    pub resource: Resource,
    #[command(flatten)]
    pub ns: Namespace,
    /// One row per container.
    #[arg(long)]
    pub containers: bool,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    #[command(flatten)]
    pub ns: Namespace,
    /// After the list, print each new event.
    #[arg(short, long)]
    pub watch: bool,
}

/// A Go-style duration (`5s`, `2m`, `1h30m`), as kubectl's `--since` takes.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (mut total, mut num) = (0u64, String::new());
    if s.is_empty() {
        return Err("empty duration".into());
    }
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            num.push(ch);
            continue;
        }
        let unit = match ch {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(format!("{s:?}: units are s, m and h")),
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?}: a number must come before {ch:?}"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        num.clear();
    }
    if !num.is_empty() {
        return Err(format!("{s:?}: missing unit (s, m or h) after {num}"));
    }
    Ok(Duration::from_secs(total))
}

/// What went wrong on the client's side; printed as `error: ...`, exit 1.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("is the agent running? socket {0} not found")]
    NoSocket(PathBuf),
    #[error("is the agent running? nothing listens on socket {0}")]
    Refused(PathBuf),
    #[error("permission denied opening {0}: the agent's socket is root's only")]
    Denied(PathBuf),
    #[error("connecting to {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to the agent: {0}")]
    Io(#[from] std::io::Error),
    #[error("the agent's answer: {0}")]
    Answer(#[from] serde_json::Error),
    #[error("the agent closed the connection without an answer")]
    NoAnswer,
    /// What the agent refused, as it said it.
    #[error("{0}")]
    Agent(String),
    /// `exec`'s command ended with this code (not 0).
    #[error("command terminated with exit code {0}")]
    Exited(u32),
}

/// A connection to the agent with its request sent.
pub struct Conn {
    reader: BufReader<UnixStream>,
}

impl Conn {
    pub fn open(socket: &Path, request: &Request) -> Result<Conn, Error> {
        let stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NoSocket(socket.to_path_buf()),
            std::io::ErrorKind::ConnectionRefused => Error::Refused(socket.to_path_buf()),
            std::io::ErrorKind::PermissionDenied => Error::Denied(socket.to_path_buf()),
            _ => Error::Connect {
                path: socket.to_path_buf(),
                source: e,
            },
        })?;
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        (&stream).write_all(&line)?;
        Ok(Conn {
            reader: BufReader::new(stream),
        })
    }

    /// The next JSON line; `None` at the end of the stream. An error line
    /// becomes [`Error::Agent`].
    pub fn next_line(&mut self) -> Result<Option<Value>, Error> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let v: Value = serde_json::from_str(&line)?;
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            return Err(Error::Agent(e.to_string()));
        }
        Ok(Some(v))
    }

    /// The first answer, which must be there.
    pub fn answer(&mut self) -> Result<Value, Error> {
        self.next_line()?.ok_or(Error::NoAnswer)
    }
}

fn out(text: &str) -> Result<(), Error> {
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())?;
    o.flush()?;
    Ok(())
}

/// Runs a verb against the agent at `socket`.
pub fn run(verb: Verb, socket: &Path) -> Result<(), Error> {
    match verb {
        Verb::Get(a) => get(&a, socket),
        Verb::Describe(a) => {
            let mut c = Conn::open(
                socket,
                &Request::Describe {
                    namespace: a.namespace,
                    name: a.name,
                },
            )?;
            out(&print::describe(&c.answer()?, Timestamp::now())?)
        }
        Verb::Logs(a) => logs(a, socket),
        Verb::Top(a) => top(&a, socket),
        Verb::Events(a) => events(&a, socket),
        Verb::Exec(a) => exec::run(a, socket),
    }
}

fn in_namespace(ns: &Namespace, namespace: Option<&str>) -> bool {
    ns.all_namespaces || namespace == Some(ns.namespace.as_str())
}

fn get(a: &GetArgs, socket: &Path) -> Result<(), Error> {
    let mut c = Conn::open(socket, &Request::Pods { watch: a.watch })?;
    let first = c.answer()?;
    let mut items: Vec<Value> = first["items"].as_array().cloned().unwrap_or_default();
    items.retain(|p| in_namespace(&a.ns, p["metadata"]["namespace"].as_str()));
    // The API server lists by key: namespace, then name.
    items.sort_by(|x, y| {
        let key = |p: &Value| {
            (
                p["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
            )
        };
        key(x).cmp(&key(y))
    });
    if let Some(name) = &a.name {
        let known: Vec<String> = items
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        items.retain(|p| p["metadata"]["name"].as_str() == Some(name.as_str()));
        if items.is_empty() && !a.watch {
            return Err(Error::Agent(format!(
                "pods {name:?} not found; pods {}: {}",
                if a.ns.all_namespaces {
                    "on this node".to_string()
                } else {
                    format!("in namespace {:?}", a.ns.namespace)
                },
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
    }
    let wide = a.output == Some(Format::Wide);
    let namespaced = a.ns.all_namespaces;
    match a.output {
        Some(Format::Json) | Some(Format::Yaml) => {
            let list = serde_json::json!({
                "apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
                "items": items,
            });
            print_object(&list, a.output)?;
            if a.watch {
                while let Some(v) = c.next_line()? {
                    if let Some(p) = v.get("pod").or_else(|| v.get("deleted"))
                        && in_namespace(&a.ns, p["metadata"]["namespace"].as_str())
                        && a.name.as_deref().is_none_or(|n| p["metadata"]["name"] == n)
                    {
                        print_object(p, a.output)?;
                    }
                }
            }
            Ok(())
        }
        _ => {
            let pods: Vec<Pod> = items
                .iter()
                .map(|p| serde_json::from_value(p.clone()))
                .collect::<Result<_, _>>()?;
            let now = Timestamp::now();
            let header = print::pod_header(wide, namespaced);
            let widths_from: Vec<Vec<String>> = pods
                .iter()
                .map(|p| print::pod_row(p, now, wide, namespaced))
                .collect();
            if pods.is_empty() && !a.watch {
                let msg = if a.ns.all_namespaces {
                    "No resources found".to_string()
                } else {
                    format!("No resources found in {} namespace.", a.ns.namespace)
                };
                eprintln!("{msg}");
                return Ok(());
            }
            let text = print::table(header.clone(), widths_from.clone());
            out(&text)?;
            if a.watch {
                // kubectl -w prints each changed object's row under the
                // first table, with the widths of that table.
                let mut last: std::collections::HashMap<String, Vec<String>> = pods
                    .iter()
                    .zip(&widths_from)
                    .map(|(p, r)| (p.metadata.uid.clone().unwrap_or_default(), r.clone()))
                    .collect();
                while let Some(v) = c.next_line()? {
                    let Some(p) = v.get("pod").or_else(|| v.get("deleted")) else {
                        continue;
                    };
                    if !in_namespace(&a.ns, p["metadata"]["namespace"].as_str())
                        || a.name
                            .as_deref()
                            .is_some_and(|n| p["metadata"]["name"] != n)
                    {
                        continue;
                    }
                    let pod: Pod = serde_json::from_value(p.clone())?;
                    let row = print::pod_row(&pod, Timestamp::now(), wide, namespaced);
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    if last.get(&uid) == Some(&row) && v.get("deleted").is_none() {
                        continue;
                    }
                    let mut lines = vec![header.clone()];
                    lines.extend(widths_from.iter().cloned());
                    lines.push(row.clone());
                    let text = print::tabwrite(&lines, 6, 3);
                    out(&format!("{}\n", text.lines().last().unwrap_or("")))?;
                    last.insert(uid, row);
                }
            }
            Ok(())
        }
    }
}

fn print_object(v: &Value, format: Option<Format>) -> Result<(), Error> {
    match format {
        Some(Format::Yaml) => {
            let text = serde_norway::to_string(v).map_err(|e| Error::Agent(e.to_string()))?;
            out(&format!("{text}---\n"))
        }
        _ => out(&format!("{}\n", serde_json::to_string_pretty(v)?)),
    }
}

fn logs(a: LogsArgs, socket: &Path) -> Result<(), Error> {
    let request = Request::Logs(LogsRequest {
        namespace: a.namespace,
        pod: a.pod,
        container: a.container,
        follow: a.follow,
        previous: a.previous,
        tail: a.tail,
        since_seconds: a.since.map(|d| d.as_secs()),
        timestamps: a.timestamps,
    });
    let mut c = Conn::open(socket, &request)?;
    let head = c.answer()?;
    if head["defaulted"].as_bool() == Some(true) {
        eprintln!(
            "Defaulted container {:?} (use -c to choose another)",
            head["container"].as_str().unwrap_or("")
        );
    }
    // The rest is the log's text.
    let mut buf = [0u8; 16 * 1024];
    let mut stdout = std::io::stdout().lock();
    loop {
        let n = c.reader.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stdout.write_all(&buf[..n])?;
        stdout.flush()?;
    }
}

fn top(a: &TopArgs, socket: &Path) -> Result<(), Error> {
    let mut c = Conn::open(socket, &Request::Top)?;
    let answer = c.answer()?;
    let rows = answer["containers"].as_array().cloned().unwrap_or_default();
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    let mut rows: Vec<&Value> = rows
        .iter()
        .filter(|r| in_namespace(&a.ns, r["namespace"].as_str()))
        .collect();
    rows.sort_by_key(|r| (s(r, "namespace"), s(r, "pod"), s(r, "container")));
    let mut header = vec![];
    if a.ns.all_namespaces {
        header.push("NAMESPACE".to_string());
    }
    let mut table = vec![];
    if a.containers {
        header.extend(["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"].map(str::to_string));
        for r in &rows {
            let mut row = vec![];
            if a.ns.all_namespaces {
                row.push(s(r, "namespace"));
            }
            row.extend([
                s(r, "pod"),
                s(r, "container"),
                print::cpu_cell(r["cpuMilli"].as_f64().unwrap_or(0.0)),
                print::memory_cell(r["memoryBytes"].as_u64().unwrap_or(0)),
            ]);
            table.push(row);
        }
    } else {
        header.extend(["NAME", "CPU(cores)", "MEMORY(bytes)"].map(str::to_string));
        // metrics-server's pod metrics are the sums of its containers'.
        let mut pods: std::collections::BTreeMap<(String, String), (f64, u64)> = Default::default();
        for r in &rows {
            let e = pods.entry((s(r, "namespace"), s(r, "pod"))).or_default();
            e.0 += r["cpuMilli"].as_f64().unwrap_or(0.0);
            e.1 += r["memoryBytes"].as_u64().unwrap_or(0);
        }
        for ((ns, pod), (cpu, mem)) in pods {
            let mut row = vec![];
            if a.ns.all_namespaces {
                row.push(ns);
            }
            row.extend([pod, print::cpu_cell(cpu), print::memory_cell(mem)]);
            table.push(row);
        }
    }
    if table.is_empty() {
        return Err(Error::Agent(if a.ns.all_namespaces {
            "no running containers to measure".into()
        } else {
            format!(
                "no running containers to measure in namespace {:?}",
                a.ns.namespace
            )
        }));
    }
    out(&print::table(header, table))
}

fn events(a: &EventsArgs, socket: &Path) -> Result<(), Error> {
    let mut c = Conn::open(socket, &Request::Events { watch: a.watch })?;
    let first = c.answer()?;
    let mut events: Vec<Event> = serde_json::from_value(first["items"].clone())?;
    events.retain(|e| in_namespace(&a.ns, e.metadata.namespace.as_deref()));
    events.sort_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0));
    let namespaced = a.ns.all_namespaces;
    let now = Timestamp::now();
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| print::event_row(e, now, namespaced))
        .collect();
    if rows.is_empty() && !a.watch {
        eprintln!("No events found.");
        return Ok(());
    }
    out(&print::table(print::event_header(namespaced), rows.clone()))?;
    while let Some(v) = c.next_line()? {
        let e: Event = serde_json::from_value(v["event"].clone())?;
        if !in_namespace(&a.ns, e.metadata.namespace.as_deref()) {
            continue;
        }
        let mut lines = vec![print::event_header(namespaced)];
        lines.extend(rows.iter().cloned());
        lines.push(print::event_row(&e, Timestamp::now(), namespaced));
        let text = print::tabwrite(&lines, 6, 3);
        out(&format!("{}\n", text.lines().last().unwrap_or("")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_kubectl_takes_them() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5").unwrap_err().contains("missing unit"));
        assert!(parse_duration("5d").unwrap_err().contains("units"));
        assert!(parse_duration("").is_err());
    }
}

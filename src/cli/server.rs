//! The agent's side of the command line: a Unix socket that only root may
//! open (mode 0600, and the peer's credentials are checked), answering the
//! requests of [`super::proto`] from the pod store, the event ring, the
//! cgroup statistics and the CRI log files, and running `exec` through
//! containerd.
//!
//! Every connection is one task that owns everything it opened (a log file,
//! a subscription, an exec process). A stream ends when the client closes
//! its end (a read returns EOF), when a write fails or stays blocked for
//! [`WRITE_TIMEOUT`]:
//! the task then returns and drops them, so a client that goes away
//! mid-stream leaves nothing behind.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::proto::{ExecStart, LogsRequest, MAX_REQUEST, Request, frame};
use crate::http::Shared;
use crate::logs::read::{Follower, Select, render_lines};
use crate::pod::{ContainerState, PodEntry};

/// Connections served at once; more are refused with an error line.
pub const MAX_CONNECTIONS: usize = 64;
/// How long the agent waits for the request line.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that reads nothing for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a followed log file is read.
const FOLLOW_PERIOD: Duration = Duration::from_millis(200);
/// The window of `top`'s CPU rate.
const TOP_WINDOW: Duration = Duration::from_secs(1);

/// What the handlers read.
pub struct Agent {
    pub shared: Arc<Shared>,
    pub pod_logs_dir: PathBuf,
    /// containerd, once connected (`exec` needs it; the rest does not).
    pub runtime: Arc<std::sync::OnceLock<Arc<crate::runtime::containerd::Containerd>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("creating {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another agent is serving {0} (stop it, or set cliSocket to another path)")]
    InUse(PathBuf),
    #[error("removing the stale socket {path}: {source}")]
    Stale {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("listening on {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Binds the socket at `path`, mode 0600, in a directory made 0700 if it
/// did not exist. A socket file left by a previous agent is replaced; one
/// that a live agent answers on is not.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|source| BindError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BindError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(|source| BindError::Stale {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let listener = UnixListener::bind(path).map_err(|source| BindError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        BindError::Bind {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(listener)
}

/// Serves connections until the task is dropped.
pub async fn serve(listener: UnixListener, agent: Arc<Agent>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let own_uid = unsafe { libc::geteuid() };
    loop {
        let (mut stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!("command socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // The file mode keeps others out; the peer's credentials say so
        // again, should the socket's directory or mode be changed.
        let uid = stream.peer_cred().map(|c| c.uid()).ok();
        if uid != Some(0) && uid != Some(own_uid) {
            let _ = write_line(
                &mut stream,
                &json!({"error": "permission denied: only root may use the agent's socket"}),
            )
            .await;
            continue;
        }
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            let _ = write_line(
                &mut stream,
                &json!({"error": format!("the agent serves {MAX_CONNECTIONS} command connections already; retry later")}),
            )
            .await;
            continue;
        };
        let agent = Arc::clone(&agent);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = handle(stream, &agent).await {
                debug!("command connection ended: {e}");
            }
        });
    }
}

async fn write_line<W: AsyncWriteExt + Unpin>(w: &mut W, v: &Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(v)?;
    line.push(b'\n');
    write_all(w, &line).await
}

async fn write_all<W: AsyncWriteExt + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, w.write_all(bytes))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "client reads nothing"))?
}

/// Resolves when the client has closed its end (or the connection broke).
async fn closed(rd: &mut BufReader<OwnedReadHalf>) {
    let mut buf = [0u8; 256];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// An answer that is an error line.
struct Refusal(String);

async fn handle(stream: UnixStream, agent: &Agent) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = String::new();
    let read = tokio::time::timeout(
        READ_TIMEOUT,
        (&mut rd).take(MAX_REQUEST as u64).read_line(&mut line),
    )
    .await;
    let request = match read {
        Ok(Ok(_)) => {
            serde_json::from_str::<Request>(&line).map_err(|e| Refusal(format!("bad request: {e}")))
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => Err(Refusal("no request within 10s".into())),
    };
    let result = match request {
        Err(e) => Err(e),
        Ok(Request::Pods { watch }) => pods(agent, &mut rd, &mut wr, watch).await?,
        Ok(Request::Describe { namespace, name }) => describe(agent, &namespace, &name),
        Ok(Request::Logs(req)) => logs(agent, &mut rd, &mut wr, &req).await?,
        Ok(Request::Top) => top(agent).await,
        Ok(Request::Events { watch }) => events(agent, &mut rd, &mut wr, watch).await?,
        Ok(Request::Exec(req)) => exec(agent, &mut rd, &mut wr, req).await?,
    };
    match result {
        Ok(Some(v)) => write_line(&mut wr, &v).await?,
        Ok(None) => {}
        Err(Refusal(message)) => write_line(&mut wr, &json!({ "error": message })).await?,
    }
    wr.shutdown().await
}

fn pod_json(entry: &PodEntry) -> Result<Value, Refusal> {
    crate::http::pod_object(entry).map_err(|e| Refusal(format!("encoding the pod: {e}")))
}

fn snapshot(agent: &Agent) -> Result<BTreeMap<String, Value>, Refusal> {
    let store = agent.shared.store.read();
    store
        .iter()
        .map(|(uid, e)| Ok((uid.clone(), pod_json(e)?)))
        .collect()
}

type Answer = Result<Option<Value>, Refusal>;

async fn pods(
    agent: &Agent,
    rd: &mut BufReader<OwnedReadHalf>,
    wr: &mut OwnedWriteHalf,
    watch: bool,
) -> std::io::Result<Answer> {
    let mut changes = agent.shared.store.changes();
    changes.mark_unchanged();
    let mut last = match snapshot(agent) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    // The pods' JSON trees are moved or written as they are, not copied
    // into a list (`json!` would copy every tree: 2 MiB at 110 pods).
    if !watch {
        let items = Value::Array(last.into_values().collect());
        return Ok(Ok(Some(Value::Object(
            [("items".to_string(), items)].into_iter().collect(),
        ))));
    }
    let mut line = br#"{"items":["#.to_vec();
    for (i, v) in last.values().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        serde_json::to_writer(&mut line, v)?;
    }
    line.extend_from_slice(b"]}\n");
    write_all(wr, &line).await?;
    loop {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return Ok(Ok(None)) },
            () = closed(rd) => return Ok(Ok(None)),
        }
        let now = match snapshot(agent) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        for (uid, v) in &now {
            if last.get(uid) != Some(v) {
                write_line(wr, &json!({ "pod": v })).await?;
            }
        }
        for (uid, v) in &last {
            if !now.contains_key(uid) {
                write_line(wr, &json!({ "deleted": v })).await?;
            }
        }
        last = now;
    }
}

/// The pod named `name` in `namespace`, or an error that lists the pods.
fn find(agent: &Agent, namespace: &str, name: &str) -> Result<PodEntry, Refusal> {
    let store = agent.shared.store.read();
    if let Some(e) = store
        .values()
        .find(|e| e.pod.namespace == namespace && e.pod.name == name)
    {
        return Ok(e.clone());
    }
    let mut known: Vec<String> = store.values().map(|e| e.pod.key()).collect();
    known.sort();
    let known = if known.is_empty() {
        "there are no pods on this node".to_string()
    } else {
        format!("pods on this node: {}", known.join(", "))
    };
    Err(Refusal(format!(
        "pod {name:?} not found in namespace {namespace:?}; {known}"
    )))
}

fn describe(agent: &Agent, namespace: &str, name: &str) -> Answer {
    let entry = find(agent, namespace, name)?;
    let qos = entry
        .status
        .qos_class
        .unwrap_or(crate::cgroup::QosClass::BestEffort);
    let cgroup = agent
        .shared
        .cgroups
        .manager()
        .pod_cgroup(qos, &entry.pod.uid);
    Ok(Some(json!({
        "pod": pod_json(&entry)?,
        "manifest": entry.pod.source,
        "cgroup": cgroup,
        "volumes": serde_json::to_value(&entry.pod.resolved.volumes)
            .map_err(|e| Refusal(e.to_string()))?,
        "warnings": entry.pod.warnings,
        "events": agent.shared.events.of_pod(&entry.pod.uid),
    })))
}

/// `exec`: the process runs while its output goes out as frames and the
/// client's input and terminal sizes come in. The client going away (end
/// of its stream, a broken or stuck connection) cancels the exec, which
/// kills the process and deletes it from containerd; this task then ends.
async fn exec(
    agent: &Agent,
    rd: &mut BufReader<OwnedReadHalf>,
    wr: &mut OwnedWriteHalf,
    req: ExecStart,
) -> std::io::Result<Answer> {
    use crate::runtime::{ExecStreams, OutputStream};
    let chosen = (|| {
        let entry = find(agent, &req.namespace, &req.pod)?;
        let (c, defaulted) = pick_container(&entry, req.container.as_deref())?;
        let id = match (&c.state, &c.container_id) {
            (ContainerState::Running { .. }, Some(id)) => id.clone(),
            _ => {
                return Err(Refusal(format!(
                    "container {:?} in pod {:?} is not running",
                    c.name, req.pod
                )));
            }
        };
        if req.command.is_empty() {
            return Err(Refusal("no command to run (give it after --)".into()));
        }
        let rt = agent.runtime.get().cloned().ok_or_else(|| {
            Refusal("the agent is not connected to containerd yet; retry in a moment".into())
        })?;
        Ok((rt, id, c.name.clone(), defaulted))
    })();
    let (rt, id, name, defaulted) = match chosen {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    write_line(wr, &json!({ "container": name, "defaulted": defaulted })).await?;
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel(16);
    let (in_tx, in_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let (resize_tx, resize_rx) = tokio::sync::mpsc::channel(4);
    let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel();
    let mut in_tx = req.stdin.then_some(in_tx);
    let mut cancel_tx = Some(cancel_tx);
    let running = rt.exec_streaming(
        &id,
        req.command.clone(),
        ExecStreams {
            tty: req.tty,
            size: req.size,
            stdin: req.stdin.then_some(in_rx),
            resize: resize_rx,
            output: out_tx,
            cancel: cancel_rx,
        },
    );
    tokio::pin!(running);
    let mut decoder = frame::Decoder::default();
    let mut buf = vec![0u8; 32 * 1024];
    let mut gone = false;
    let send = |stream: OutputStream, bytes: &[u8]| {
        frame::encode(
            match stream {
                OutputStream::Stdout => frame::STDOUT,
                OutputStream::Stderr => frame::STDERR,
            },
            bytes,
        )
    };
    // Input frames not yet taken by the exec: the socket is not read while
    // there are some, so a process that reads slowly slows the client.
    let mut pending: std::collections::VecDeque<Vec<u8>> = Default::default();
    let ran = loop {
        tokio::select! {
            r = &mut running => break r,
            Some((stream, bytes)) = out_rx.recv() => {
                if !gone && write_all(wr, &send(stream, &bytes)).await.is_err() {
                    gone = true;
                    cancel_tx.take();
                }
            }
            permit = reserve(in_tx.clone()), if !pending.is_empty() => {
                let chunk = pending.pop_front().unwrap_or_default();
                let close = match permit {
                    Some(p) if !chunk.is_empty() => {
                        p.send(chunk);
                        false
                    }
                    // The end of the input, or the exec closed it.
                    other => {
                        drop(other);
                        true
                    }
                };
                if close {
                    in_tx = None;
                    pending.clear();
                }
            }
            n = rd.read(&mut buf), if !gone && pending.is_empty() => {
                let n = n.unwrap_or(0);
                if n == 0 {
                    gone = true;
                    cancel_tx.take();
                    continue;
                }
                decoder.push(&buf[..n]);
                loop {
                    match decoder.next_frame() {
                        Ok(Some((frame::STDIN, data))) => {
                            if in_tx.is_some() {
                                pending.push_back(data);
                            }
                        }
                        Ok(Some((frame::RESIZE, data))) => {
                            if let Some(size) = frame::parse_resize(&data) {
                                let _ = resize_tx.try_send(size);
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => {
                            debug!("exec: {e}; ending it");
                            gone = true;
                            cancel_tx.take();
                            break;
                        }
                    }
                }
            }
        }
    };
    if gone {
        return Ok(Ok(None));
    }
    while let Ok((stream, bytes)) = out_rx.try_recv() {
        write_all(wr, &send(stream, &bytes)).await?;
    }
    match ran {
        Ok(Some(code)) => write_all(wr, &frame::encode(frame::EXIT, &code.to_be_bytes())).await?,
        Ok(None) => {}
        Err(e) => write_all(wr, &frame::encode(frame::ERROR, e.to_string().as_bytes())).await?,
    }
    drop(cancel_tx);
    Ok(Ok(None))
}

/// Room for one more chunk of input; `None` once the input is closed.
async fn reserve(
    tx: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
) -> Option<tokio::sync::mpsc::OwnedPermit<Vec<u8>>> {
    tx?.reserve_owned().await.ok()
}

/// The container a `logs` request is about, and whether it was chosen for
/// the user (kubectl's "Defaulted container").
fn pick_container<'a>(
    entry: &'a PodEntry,
    asked: Option<&str>,
) -> Result<(&'a crate::pod::ContainerStatus, bool), Refusal> {
    let status = &entry.status;
    let all = || status.containers.iter().chain(&status.init_containers);
    match asked {
        Some(name) => all()
            .find(|c| c.name == name)
            .map(|c| (c, false))
            .ok_or_else(|| {
                let names = |v: &[crate::pod::ContainerStatus]| {
                    v.iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                let mut msg = format!(
                    "container {name:?} is not valid for pod {:?}: choose one of: [{}]",
                    entry.pod.name,
                    names(&status.containers)
                );
                if !status.init_containers.is_empty() {
                    msg += &format!(
                        " or one of the init containers: [{}]",
                        names(&status.init_containers)
                    );
                }
                Refusal(msg)
            }),
        None => {
            let annotated = entry
                .pod
                .pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubectl.kubernetes.io/default-container"))
                .and_then(|n| status.containers.iter().find(|c| &c.name == n));
            match annotated.or(status.containers.first()) {
                Some(c) => Ok((c, status.containers.len() > 1 && annotated.is_none())),
                None => Err(Refusal(format!(
                    "pod {:?} has no containers yet",
                    entry.pod.name
                ))),
            }
        }
    }
}

fn still_running(agent: &Agent, uid: &str, name: &str, id: &Option<String>) -> bool {
    agent.shared.store.get(uid).is_some_and(|e| {
        e.status
            .containers
            .iter()
            .chain(&e.status.init_containers)
            .any(|c| {
                c.name == name
                    && &c.container_id == id
                    && matches!(c.state, ContainerState::Running { .. })
            })
    })
}

async fn logs(
    agent: &Agent,
    rd: &mut BufReader<OwnedReadHalf>,
    wr: &mut OwnedWriteHalf,
    req: &LogsRequest,
) -> std::io::Result<Answer> {
    let opened = (|| {
        let entry = find(agent, &req.namespace, &req.pod)?;
        let (c, defaulted) = pick_container(&entry, req.container.as_deref())?;
        let attempt = if req.previous {
            c.restart_count.checked_sub(1).ok_or_else(|| {
                Refusal(format!(
                    "previous terminated container {:?} in pod {:?} not found",
                    c.name, req.pod
                ))
            })?
        } else {
            c.restart_count
        };
        let path = crate::logs::container_log_path(
            &agent.pod_logs_dir,
            &entry.pod.namespace,
            &entry.pod.name,
            &entry.pod.uid,
            &c.name,
            attempt,
        );
        let follower = Follower::open(&path).map_err(|e| match &c.state {
            ContainerState::Waiting { reason, .. } if !req.previous => Refusal(format!(
                "container {:?} in pod {:?} is waiting to start: {reason}",
                c.name, req.pod
            )),
            _ => Refusal(format!("reading {}: {e}", path.display())),
        })?;
        let follow = req.follow && !req.previous;
        Ok::<_, Refusal>((
            follower,
            c.name.clone(),
            c.container_id.clone(),
            defaulted,
            entry.pod.uid.clone(),
            follow,
        ))
    })();
    let (mut follower, name, id, defaulted, uid, follow) = match opened {
        Ok(o) => o,
        Err(e) => return Ok(Err(e)),
    };
    let since = req.since_seconds.map(|s| {
        jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_secs(
                i64::try_from(s).unwrap_or(i64::MAX),
            ))
            .unwrap_or(jiff::Timestamp::MIN)
    });
    let mut select = Select {
        tail: req.tail,
        since,
        timestamps: req.timestamps,
    };
    write_line(wr, &json!({ "container": name, "defaulted": defaulted })).await?;
    let first = follower.read_new()?;
    write_all(wr, &render_lines(&first, &select)).await?;
    if !follow {
        return Ok(Ok(None));
    }
    select.tail = None;
    loop {
        // Whether the container still runs is asked before reading, so
        // that what it wrote before it stopped is still read.
        let running = still_running(agent, &uid, &name, &id);
        let new = follower.read_new()?;
        if !new.is_empty() {
            write_all(wr, &render_lines(&new, &select)).await?;
        }
        if !running {
            return Ok(Ok(None));
        }
        tokio::select! {
            () = tokio::time::sleep(FOLLOW_PERIOD) => {}
            () = closed(rd) => return Ok(Ok(None)),
        }
    }
}

async fn top(agent: &Agent) -> Answer {
    let sample = || {
        let s = Arc::clone(&agent.shared);
        crate::http::scrape(&agent.shared.scrape_slots, move || {
            (
                Instant::now(),
                crate::http::cadvisor::usage(&s.store, &s.cgroups),
            )
        })
    };
    let failed = |e: crate::http::HandlerError| Refusal(e.to_string());
    let (t0, first) = sample().await.map_err(failed)?;
    tokio::time::sleep(TOP_WINDOW).await;
    let (t1, second) = sample().await.map_err(failed)?;
    let window = t1.duration_since(t0).as_secs_f64();
    let rows: Vec<Value> = second
        .iter()
        .filter_map(|now| {
            let before = first.iter().find(|b| {
                (&b.namespace, &b.pod, &b.container) == (&now.namespace, &now.pod, &now.container)
            })?;
            let used_ns = now.cpu_usage_ns.saturating_sub(before.cpu_usage_ns);
            // millicores = CPU seconds per second * 1000.
            let milli = used_ns as f64 / 1e6 / window;
            Some(json!({
                "namespace": now.namespace,
                "pod": now.pod,
                "container": now.container,
                "cpuMilli": milli,
                "memoryBytes": now.memory_working_set,
            }))
        })
        .collect();
    Ok(Some(json!({
        "windowMs": TOP_WINDOW.as_millis(),
        "containers": rows,
    })))
}

async fn events(
    agent: &Agent,
    rd: &mut BufReader<OwnedReadHalf>,
    wr: &mut OwnedWriteHalf,
    watch: bool,
) -> std::io::Result<Answer> {
    let mut rx = agent.shared.events.subscribe();
    let items = json!({ "items": agent.shared.events.list() });
    if !watch {
        return Ok(Ok(Some(items)));
    }
    write_line(wr, &items).await?;
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Ok(e) => write_line(wr, &json!({ "event": e })).await?,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    warn!("an events watcher fell {n} events behind");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(Ok(None)),
            },
            () = closed(rd) => return Ok(Ok(None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_socket_is_root_only_and_a_live_one_is_not_taken_over() {
        let dir = std::env::temp_dir().join(format!("kl-cli-sock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("run/agent.sock");
        let listener = bind(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.join("run")), 0o700);
        // A second agent on the same path is refused while the first listens.
        let e = bind(&path).unwrap_err();
        assert!(matches!(e, BindError::InUse(_)), "{e}");
        assert!(e.to_string().contains("cliSocket"), "{e}");
        // Once it is gone, its socket file is stale and replaced.
        drop(listener);
        assert!(path.exists());
        let _listener = bind(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Processes run in a running container, through containerd's
//! `Tasks.Exec`: the process spec is the container's own (user, working
//! directory, capabilities, environment, AppArmor/SELinux labels) with
//! other arguments, as `ctr task exec` and the CRI plugin's `ExecSync`
//! make it.
//!
//! Output: containerd 1.6 takes a plain path as a FIFO that the client
//! creates and reads (a `file://` URI would merge stderr into stdout). The
//! shim opens the write ends when the process starts and closes them once
//! it copied everything the process wrote; until the shim has them, our
//! own write ends keep the readers from seeing an early end of file.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, GetContainerRequest, KillRequest,
    ResizePtyRequest, StartRequest, WaitRequest,
};
use oci_spec::runtime::{Process, Spec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};

use super::client::status_error;
use super::containerd::Containerd;
use super::{ExecOutput, ExecRequest, RuntimeError};

const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// Once the process exited, how long what it wrote may take to come out of
/// the FIFOs (a child that kept them open would hold them forever).
const DRAIN: Duration = Duration::from_millis(500);
/// After the SIGKILL of a process past its timeout, how long to wait for
/// its exit before it is deleted anyway.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// The exec's process: the container's, with `req`'s arguments and
/// environment, and without a terminal.
pub(super) fn process_spec(base: &Process, req: &ExecRequest) -> Process {
    let mut p = base.clone();
    p.set_args(Some(req.argv.clone()));
    p.set_terminal(Some(false));
    p.set_console_size(None);
    let mut env = base.env().clone().unwrap_or_default();
    for kv in &req.env {
        let name = kv.split('=').next().unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(name));
        env.push(kv.clone());
    }
    p.set_env(Some(env));
    p
}

/// A random exec ID (containerd wants one per container, at most 76
/// characters of `[A-Za-z0-9_.-]`).
fn new_exec_id() -> Result<String, RuntimeError> {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).map_err(|e| RuntimeError::Failed {
        op: "exec",
        message: format!("random exec ID: {e}"),
    })?;
    Ok(format!("exec-{}", hex::encode(b)))
}

/// The FIFOs of one exec (`{exec_id}.{name}` for each name), removed when
/// dropped.
struct Fifos {
    paths: Vec<PathBuf>,
}

impl Fifos {
    fn make(dir: &Path, exec_id: &str, names: &[&str]) -> io::Result<Fifos> {
        std::fs::create_dir_all(dir)?;
        let fifos = Fifos {
            paths: names
                .iter()
                .map(|n| dir.join(format!("{exec_id}.{n}")))
                .collect(),
        };
        for p in &fifos.paths {
            nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| io::Error::other(format!("mkfifo {}: {e}", p.display())))?;
        }
        Ok(fifos)
    }
}

impl Drop for Fifos {
    fn drop(&mut self) {
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Reads `rx` to its end into `out`, keeping at most `limit` bytes.
async fn read_into(rx: &mut pipe::Receiver, out: &mut Vec<u8>, limit: usize) {
    let mut buf = [0u8; 4096];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = limit.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// The read end of an output FIFO, and a write end that keeps it from
/// seeing an end of file before the shim opened its own.
fn open_output(p: &Path) -> Result<(pipe::Receiver, pipe::Sender), RuntimeError> {
    let rx = pipe::OpenOptions::new()
        .open_receiver(p)
        .map_err(io_error)?;
    let hold = pipe::OpenOptions::new().open_sender(p).map_err(io_error)?;
    Ok((rx, hold))
}

/// Runs `running` (the exec, to its exit) beside `copying` (the reading of
/// its output FIFOs). Once the process has exited, our own write ends
/// (`holds`) are closed, so that the readers see the end of file once the
/// shim closed its ones, and what is left in the FIFOs has `DRAIN` to
/// come out.
async fn beside_output<T>(
    running: impl Future<Output = T>,
    copying: impl Future,
    holds: impl Sized,
) -> T {
    tokio::pin!(copying);
    tokio::pin!(running);
    let (ran, copied) = tokio::select! {
        r = &mut running => (r, false),
        _ = &mut copying => (running.await, true),
    };
    drop(holds);
    if !copied {
        let _ = tokio::time::timeout(DRAIN, &mut copying).await;
    }
    ran
}

/// The exec's process spec as containerd takes it.
fn process_any(process: &Process) -> Result<prost_types::Any, RuntimeError> {
    let value = serde_json::to_vec(process).map_err(|e| RuntimeError::Failed {
        op: "encoding process spec",
        message: e.to_string(),
    })?;
    Ok(prost_types::Any {
        type_url: PROCESS_TYPE_URL.to_string(),
        value,
    })
}

fn io_error(e: io::Error) -> RuntimeError {
    RuntimeError::Failed {
        op: "exec",
        message: e.to_string(),
    }
}

impl Containerd {
    /// The container's process spec, from containerd the first time.
    async fn base_process(&self, id: &str) -> Result<Process, RuntimeError> {
        let cached = self
            .exec
            .specs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned();
        if let Some(p) = cached {
            return Ok(p);
        }
        let c = self
            .client
            .containers()
            .get(self.req(GetContainerRequest { id: id.to_string() }))
            .await
            .map_err(|s| status_error("getting container", s))?
            .into_inner()
            .container
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id}")))?;
        let bad = |message: String| RuntimeError::Failed {
            op: "reading container spec",
            message,
        };
        let spec = c
            .spec
            .ok_or_else(|| bad(format!("container {id} has no spec")))?;
        let spec: Spec = serde_json::from_slice(&spec.value).map_err(|e| bad(e.to_string()))?;
        let p = spec
            .process()
            .clone()
            .ok_or_else(|| bad(format!("container {id} has no process")))?;
        self.exec
            .specs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_string(), p.clone());
        Ok(p)
    }

    pub(super) async fn exec_process(
        &self,
        id: &str,
        req: &ExecRequest,
    ) -> Result<ExecOutput, RuntimeError> {
        let base = self.base_process(id).await?;
        let spec = process_any(&process_spec(&base, req))?;
        let exec_id = new_exec_id()?;
        let fifos =
            Fifos::make(&self.exec.dir, &exec_id, &["stdout", "stderr"]).map_err(io_error)?;
        let (mut out_rx, out_hold) = open_output(&fifos.paths[0])?;
        let (mut err_rx, err_hold) = open_output(&fifos.paths[1])?;
        self.client
            .tasks()
            .exec(self.req(ExecProcessRequest {
                container_id: id.to_string(),
                stdin: String::new(),
                stdout: fifos.paths[0].to_string_lossy().into_owned(),
                stderr: fifos.paths[1].to_string_lossy().into_owned(),
                terminal: false,
                spec: Some(spec),
                exec_id: exec_id.clone(),
            }))
            .await
            .map_err(|s| status_error("exec", s))?;
        let mut output = ExecOutput::default();
        let limit = req.output_limit;
        let ran = beside_output(
            self.run_exec(id, &exec_id, req.timeout),
            futures::future::join(
                read_into(&mut out_rx, &mut output.stdout, limit),
                read_into(&mut err_rx, &mut output.stderr, limit),
            ),
            (out_hold, err_hold),
        )
        .await;
        self.delete_exec(id, &exec_id).await;
        drop(fifos);
        output.exit_code = ran?;
        Ok(output)
    }

    /// Starts exec process `exec_id` of container `id`.
    async fn start_exec(&self, id: &str, exec_id: &str) -> Result<(), RuntimeError> {
        self.client
            .tasks()
            .start(self.req(StartRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
            .map_err(|s| status_error("starting exec", s))?;
        Ok(())
    }

    /// Waits for exec process `exec_id` to exit; its exit code.
    async fn wait_exec(&self, id: &str, exec_id: &str) -> Result<u32, RuntimeError> {
        self.client
            .tasks()
            .wait(self.req_unbounded(WaitRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
            .map(|r| r.into_inner().exit_status)
            .map_err(|s| status_error("waiting for exec", s))
    }

    /// Deletes exec process `exec_id` from the shim, where it stays until
    /// deleted, run or not.
    async fn delete_exec(&self, id: &str, exec_id: &str) {
        if let Err(s) = self
            .client
            .tasks()
            .delete_process(self.req(DeleteProcessRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
        {
            tracing::debug!(id, exec_id, "deleting exec process: {s}");
        }
    }

    /// Starts the exec and waits for its exit code; `None` when it was
    /// killed at `timeout`.
    async fn run_exec(
        &self,
        id: &str,
        exec_id: &str,
        timeout: Option<Duration>,
    ) -> Result<Option<u32>, RuntimeError> {
        self.start_exec(id, exec_id).await?;
        let wait = || self.wait_exec(id, exec_id);
        let Some(timeout) = timeout else {
            return wait().await.map(Some);
        };
        if let Ok(r) = tokio::time::timeout(timeout, wait()).await {
            return r.map(Some);
        }
        self.client
            .tasks()
            .kill(self.req(KillRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                signal: 9,
                all: false,
            }))
            .await
            .map_err(|s| status_error("killing exec", s))?;
        let _ = tokio::time::timeout(KILL_WAIT, wait()).await;
        Ok(None)
    }
}

/// Which output stream a chunk of a streamed exec came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    /// Never with a terminal: the terminal merges it into stdout.
    Stderr,
}

/// The wiring of a streamed exec (`kubelet-lite exec`): what goes in and
/// out while the process runs.
pub struct ExecStreams {
    /// Run the process on a pseudo-terminal (`TERM=xterm` is added to its
    /// environment, as the CRI plugin does).
    pub tty: bool,
    /// Input for the process; `None` gives it no stdin. An empty chunk, or
    /// the sender dropped, is the end of the input.
    pub stdin: Option<mpsc::Receiver<Vec<u8>>>,
    /// The terminal's size (columns, rows) when the process starts.
    pub size: Option<(u16, u16)>,
    /// Terminal sizes (columns, rows); ignored without a terminal.
    pub resize: mpsc::Receiver<(u16, u16)>,
    /// What the process writes, as it writes it. A receiver that went
    /// away does not stop the process (`cancel` does).
    pub output: mpsc::Sender<(OutputStream, Vec<u8>)>,
    /// Fired (or dropped) when nobody wants the process any more: it is
    /// killed with SIGKILL.
    pub cancel: oneshot::Receiver<()>,
}

/// How long a write to the process's stdin may stay blocked (a process
/// that does not read its input) before its input is closed.
const STDIN_WRITE: Duration = Duration::from_secs(10);

/// Forwards what `rx` yields to `tx` until its end.
async fn pump(
    rx: &mut pipe::Receiver,
    stream: OutputStream,
    tx: &mpsc::Sender<(OutputStream, Vec<u8>)>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut forward = true;
    loop {
        match rx.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                // Nobody listens any more: keep draining the FIFO so the
                // shim never blocks on it.
                if forward && tx.send((stream, buf[..n].to_vec())).await.is_err() {
                    forward = false;
                }
            }
        }
    }
}

/// The next chunk of input, or never when there is no input (left).
async fn next_input(stdin: &mut Option<(mpsc::Receiver<Vec<u8>>, pipe::Sender)>) -> Vec<u8> {
    match stdin {
        Some((rx, _)) => rx.recv().await.unwrap_or_default(),
        None => std::future::pending().await,
    }
}

impl Containerd {
    /// Runs `argv` in the running container `id` with its streams wired
    /// to `io`, and returns its exit code; `None` when it was cancelled
    /// (killed). Whatever happens, the exec process is deleted from the
    /// shim and its FIFOs removed before this returns.
    pub async fn exec_streaming(
        &self,
        id: &str,
        argv: Vec<String>,
        io: ExecStreams,
    ) -> Result<Option<u32>, RuntimeError> {
        let base = self.base_process(id).await?;
        let mut process = process_spec(
            &base,
            &ExecRequest {
                argv,
                env: if io.tty {
                    vec!["TERM=xterm".to_string()]
                } else {
                    vec![]
                },
                ..Default::default()
            },
        );
        process.set_terminal(Some(io.tty));
        // runc sizes the terminal before the process starts; a resize
        // after the start would race with what the process reads first.
        if let (true, Some((width, height))) = (io.tty, io.size) {
            process.set_console_size(
                oci_spec::runtime::BoxBuilder::default()
                    .width(u64::from(width))
                    .height(u64::from(height))
                    .build()
                    .ok(),
            );
        }
        let spec = process_any(&process)?;
        let exec_id = new_exec_id()?;
        let mut names = vec!["stdout"];
        if !io.tty {
            names.push("stderr");
        }
        if io.stdin.is_some() {
            names.push("stdin");
        }
        let fifos = Fifos::make(&self.exec.dir, &exec_id, &names).map_err(io_error)?;
        let (mut out_rx, out_hold) = open_output(&fifos.paths[0])?;
        let (mut err_rx, err_hold) = if io.tty {
            (None, None)
        } else {
            let (rx, hold) = open_output(&fifos.paths[1])?;
            (Some(rx), Some(hold))
        };
        let stdin_path = io
            .stdin
            .as_ref()
            .map(|_| fifos.paths[names.len() - 1].clone());
        // Opened read-write, so that the open does not wait for the shim.
        let stdin = match (io.stdin, &stdin_path) {
            (Some(rx), Some(p)) => Some((
                rx,
                pipe::OpenOptions::new()
                    .read_write(true)
                    .open_sender(p)
                    .map_err(io_error)?,
            )),
            _ => None,
        };
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        self.client
            .tasks()
            .exec(self.req(ExecProcessRequest {
                container_id: id.to_string(),
                stdin: path(&stdin_path),
                stdout: fifos.paths[0].to_string_lossy().into_owned(),
                stderr: if io.tty {
                    String::new()
                } else {
                    fifos.paths[1].to_string_lossy().into_owned()
                },
                terminal: io.tty,
                spec: Some(spec),
                exec_id: exec_id.clone(),
            }))
            .await
            .map_err(|s| status_error("exec", s))?;
        let ran = {
            // Dropped with this block: the end of the output for its reader.
            let output = io.output;
            beside_output(
                self.control(id, &exec_id, stdin, io.resize, io.cancel),
                futures::future::join(pump(&mut out_rx, OutputStream::Stdout, &output), async {
                    if let Some(rx) = err_rx.as_mut() {
                        pump(rx, OutputStream::Stderr, &output).await;
                    }
                }),
                (out_hold, err_hold),
            )
            .await
        };
        self.delete_exec(id, &exec_id).await;
        drop(fifos);
        ran
    }

    /// Starts the exec, then feeds its input and terminal sizes until it
    /// exits or is cancelled.
    async fn control(
        &self,
        id: &str,
        exec_id: &str,
        mut stdin: Option<(mpsc::Receiver<Vec<u8>>, pipe::Sender)>,
        mut resize: mpsc::Receiver<(u16, u16)>,
        mut cancel: oneshot::Receiver<()>,
    ) -> Result<Option<u32>, RuntimeError> {
        self.start_exec(id, exec_id).await?;
        let wait = || self.wait_exec(id, exec_id);
        let waiting = wait();
        tokio::pin!(waiting);
        let mut resizing = true;
        loop {
            tokio::select! {
                r = &mut waiting => return r.map(Some),
                chunk = next_input(&mut stdin) => {
                    let written = match (&mut stdin, chunk.is_empty()) {
                        (Some((_, tx)), false) => {
                            matches!(tokio::time::timeout(STDIN_WRITE, tx.write_all(&chunk)).await, Ok(Ok(())))
                        }
                        _ => false,
                    };
                    if !written {
                        // The end of the input: the shim holds the FIFO
                        // open too, until told to close it.
                        stdin = None;
                        if let Err(s) = self.client.tasks().close_io(self.req(CloseIoRequest {
                            container_id: id.to_string(),
                            exec_id: exec_id.to_string(),
                            stdin: true,
                        })).await {
                            tracing::debug!(id, exec_id, "closing exec stdin: {s}");
                        }
                    }
                }
                size = resize.recv(), if resizing => match size {
                    Some((width, height)) => {
                        if let Err(s) = self.client.tasks().resize_pty(self.req(ResizePtyRequest {
                            container_id: id.to_string(),
                            exec_id: exec_id.to_string(),
                            width: u32::from(width),
                            height: u32::from(height),
                        })).await {
                            tracing::debug!(id, exec_id, "resizing exec terminal: {s}");
                        }
                    }
                    None => resizing = false,
                },
                _ = &mut cancel => {
                    if let Err(s) = self.client.tasks().kill(self.req(KillRequest {
                        container_id: id.to_string(),
                        exec_id: exec_id.to_string(),
                        signal: 9,
                        all: false,
                    })).await {
                        tracing::debug!(id, exec_id, "killing exec: {s}");
                    }
                    let _ = tokio::time::timeout(KILL_WAIT, &mut waiting).await;
                    return Ok(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::ProcessBuilder;

    #[test]
    fn the_exec_process_is_the_containers_with_other_args_and_env() {
        let base = ProcessBuilder::default()
            .args(vec!["httpd".to_string(), "-f".to_string()])
            .env(vec!["PATH=/bin".to_string(), "MODE=prod".to_string()])
            .cwd("/www")
            .terminal(true)
            .build()
            .unwrap();
        let p = process_spec(
            &base,
            &ExecRequest {
                argv: vec!["cat".into(), "/tmp/healthy".into()],
                env: vec!["MODE=probe".into(), "EXTRA=1".into()],
                ..Default::default()
            },
        );
        assert_eq!(
            p.args().as_deref(),
            Some(&["cat".to_string(), "/tmp/healthy".to_string()][..])
        );
        assert_eq!(
            p.env().as_deref(),
            Some(
                &[
                    "PATH=/bin".to_string(),
                    "MODE=probe".to_string(),
                    "EXTRA=1".to_string()
                ][..]
            )
        );
        assert_eq!(p.cwd(), &PathBuf::from("/www"));
        assert_eq!(p.terminal(), Some(false));
    }

    #[test]
    fn exec_ids_are_distinct_and_valid() {
        let a = new_exec_id().unwrap();
        assert_ne!(a, new_exec_id().unwrap());
        assert!(a.len() <= 76);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        );
    }
}

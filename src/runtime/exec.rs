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

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use containerd_client::services::v1::{
    DeleteProcessRequest, ExecProcessRequest, GetContainerRequest, KillRequest, StartRequest,
    WaitRequest,
};
use oci_spec::runtime::{Process, Spec};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

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

/// The FIFO directory and the process specs of the containers exec'd into
/// (a container's spec never changes; one Containers.Get per container).
pub(super) struct ExecState {
    dir: PathBuf,
    specs: Mutex<HashMap<String, Process>>,
}

impl Default for ExecState {
    fn default() -> Self {
        ExecState {
            dir: std::env::temp_dir().join("kubelet-lite-exec"),
            specs: Mutex::new(HashMap::new()),
        }
    }
}

impl ExecState {
    /// The container is gone: its spec is not needed any more.
    pub(super) fn forget(&self, id: &str) {
        self.specs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }
}

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

/// The stdout and stderr FIFOs of one exec, removed when dropped.
struct Fifos {
    paths: [PathBuf; 2],
}

impl Fifos {
    fn make(dir: &Path, exec_id: &str) -> io::Result<Fifos> {
        std::fs::create_dir_all(dir)?;
        let fifos = Fifos {
            paths: [
                dir.join(format!("{exec_id}.stdout")),
                dir.join(format!("{exec_id}.stderr")),
            ],
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
        let spec =
            serde_json::to_vec(&process_spec(&base, req)).map_err(|e| RuntimeError::Failed {
                op: "encoding process spec",
                message: e.to_string(),
            })?;
        let exec_id = new_exec_id()?;
        let fifos = Fifos::make(&self.exec.dir, &exec_id).map_err(io_error)?;
        let open = |p: &Path| -> Result<(pipe::Receiver, pipe::Sender), RuntimeError> {
            let rx = pipe::OpenOptions::new()
                .open_receiver(p)
                .map_err(io_error)?;
            let hold = pipe::OpenOptions::new().open_sender(p).map_err(io_error)?;
            Ok((rx, hold))
        };
        let (mut out_rx, out_hold) = open(&fifos.paths[0])?;
        let (mut err_rx, err_hold) = open(&fifos.paths[1])?;
        self.client
            .tasks()
            .exec(self.req(ExecProcessRequest {
                container_id: id.to_string(),
                stdin: String::new(),
                stdout: fifos.paths[0].to_string_lossy().into_owned(),
                stderr: fifos.paths[1].to_string_lossy().into_owned(),
                terminal: false,
                spec: Some(prost_types::Any {
                    type_url: PROCESS_TYPE_URL.to_string(),
                    value: spec,
                }),
                exec_id: exec_id.clone(),
            }))
            .await
            .map_err(|s| status_error("exec", s))?;
        let mut output = ExecOutput::default();
        let ran = {
            let limit = req.output_limit;
            let reading = futures::future::join(
                read_into(&mut out_rx, &mut output.stdout, limit),
                read_into(&mut err_rx, &mut output.stderr, limit),
            );
            tokio::pin!(reading);
            let running = self.run_exec(id, &exec_id, req.timeout);
            tokio::pin!(running);
            let (ran, read) = tokio::select! {
                r = &mut running => (r, false),
                _ = &mut reading => (running.await, true),
            };
            drop((out_hold, err_hold));
            if !read {
                let _ = tokio::time::timeout(DRAIN, &mut reading).await;
            }
            ran
        };
        // An exec process stays in the shim until deleted, run or not.
        if let Err(s) = self
            .client
            .tasks()
            .delete_process(self.req(DeleteProcessRequest {
                container_id: id.to_string(),
                exec_id: exec_id.clone(),
            }))
            .await
        {
            tracing::debug!(id, exec_id, "deleting exec process: {s}");
        }
        drop(fifos);
        output.exit_code = ran?;
        Ok(output)
    }

    /// Starts the exec and waits for its exit code; `None` when it was
    /// killed at `timeout`.
    async fn run_exec(
        &self,
        id: &str,
        exec_id: &str,
        timeout: Option<Duration>,
    ) -> Result<Option<u32>, RuntimeError> {
        self.client
            .tasks()
            .start(self.req(StartRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
            .map_err(|s| status_error("starting exec", s))?;
        let wait = || async {
            self.client
                .tasks()
                .wait(self.req_unbounded(WaitRequest {
                    container_id: id.to_string(),
                    exec_id: exec_id.to_string(),
                }))
                .await
                .map(|r| r.into_inner().exit_status)
                .map_err(|s| status_error("waiting for exec", s))
        };
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

//! Recording fakes of the host, for lifecycle tests without root or
//! containerd: a runtime whose containers exit when the test says so (or
//! when signalled), and cgroups, sandboxes and volumes that only record.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use tokio::sync::watch;

use super::host::{PodCgroups, Sandboxes, Volumes};
use crate::cgroup::{self, CgroupLimits, QosClass, WeightFormula};
use crate::oci::PodContext;
use crate::pod::PodError;
use crate::runtime::{
    ContainerRecord, ExecOutput, ExecRequest, Exit, Image, ImageConfig, NewContainer, PulledImage,
    Runtime, RuntimeError, TaskState, labels,
};
use crate::sandbox::SandboxSpec;
use crate::volume::Volume;

struct FakeContainer {
    labels: HashMap<String, String>,
    task: TaskState,
    exit: watch::Sender<Option<Exit>>,
}

#[derive(Default)]
struct State {
    containers: BTreeMap<String, FakeContainer>,
    calls: Vec<String>,
    next_pid: u32,
}

/// A container runtime in memory. Containers run until [`FakeRuntime::exit`]
/// or a signal they honour; every call is recorded.
#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
    /// Containers ignore SIGTERM (SIGKILL always ends them).
    pub ignore_term: std::sync::atomic::AtomicBool,
    /// Images that are not there.
    pub missing_images: Mutex<Vec<String>>,
    /// How execs end, by `<container> <argv joined>` or else by container
    /// name; exit 0 without output when not set.
    pub execs: Mutex<HashMap<String, FakeExec>>,
}

/// How an exec in the fake runtime ends.
#[derive(Debug, Clone, Default)]
pub struct FakeExec {
    pub code: u32,
    pub output: String,
    /// Never ends by itself: killed at the request's timeout.
    pub hang: bool,
    /// The exec cannot be run at all: the runtime answers this error.
    pub error: Option<String>,
}

impl FakeRuntime {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Containers created for `name`, in order of creation.
    pub fn created(&self, name: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| *c == &format!("create {name}"))
            .count()
    }

    /// The running container of `name`.
    pub fn running(&self, name: &str) -> Option<String> {
        self.lock()
            .containers
            .iter()
            .find(|(_, c)| {
                c.labels.get(labels::CONTAINER_NAME).map(String::as_str) == Some(name)
                    && matches!(c.task, TaskState::Running { .. })
            })
            .map(|(id, _)| id.clone())
    }

    /// Makes the running container of `name` exit with `code`.
    pub fn exit(&self, name: &str, code: u32) {
        let id = self
            .running(name)
            .unwrap_or_else(|| panic!("{name} is not running"));
        self.end(&id, code);
    }

    fn end(&self, id: &str, code: u32) {
        let mut s = self.lock();
        if let Some(c) = s.containers.get_mut(id) {
            let exit = Exit {
                code,
                at: SystemTime::now(),
            };
            c.task = TaskState::Exited(exit);
            c.exit.send_replace(Some(exit));
        }
    }

    /// Puts a container in place, as an earlier run of the agent left it.
    pub fn leave(&self, id: &str, labels: HashMap<String, String>, task: TaskState) {
        let exit = match task {
            TaskState::Exited(e) => Some(e),
            _ => None,
        };
        self.lock().containers.insert(
            id.to_string(),
            FakeContainer {
                labels,
                task,
                exit: watch::channel(exit).0,
            },
        );
    }

    pub fn ids(&self) -> Vec<String> {
        self.lock().containers.keys().cloned().collect()
    }
}

fn fake_image(name: &str) -> Image {
    Image {
        name: name.to_string(),
        chain_id: "sha256:chain".into(),
        config: ImageConfig {
            cmd: vec!["sh".into()],
            ..Default::default()
        },
    }
}

impl FakeRuntime {
    /// Whether `name` (normalized) is one of `missing_images` (as written
    /// in manifests).
    fn is_missing(&self, name: &str) -> bool {
        self.missing_images
            .lock()
            .unwrap()
            .iter()
            .any(|m| crate::runtime::image_ref::normalize(m).is_ok_and(|n| n == name))
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn image_status(&self, name: &str) -> Result<Option<Image>, RuntimeError> {
        self.lock().calls.push(format!("image_status {name}"));
        Ok((!self.is_missing(name)).then(|| fake_image(name)))
    }

    async fn pull_image(&self, name: &str) -> Result<PulledImage, RuntimeError> {
        self.lock().calls.push(format!("pull {name}"));
        if self.is_missing(name) {
            return Err(RuntimeError::Pull(format!(
                "failed to pull image {name:?}: manifest unknown"
            )));
        }
        Ok(PulledImage {
            image: fake_image(name),
            size: 1234,
            took: std::time::Duration::from_millis(1200),
        })
    }

    async fn create(&self, c: &NewContainer) -> Result<(), RuntimeError> {
        let name = c.labels[labels::CONTAINER_NAME].clone();
        let mut s = self.lock();
        s.calls.push(format!("create {name}"));
        if s.containers.contains_key(&c.id) {
            return Err(RuntimeError::Failed {
                op: "create",
                message: format!("container {} already exists", c.id),
            });
        }
        s.containers.insert(
            c.id.clone(),
            FakeContainer {
                labels: c.labels.clone(),
                task: TaskState::Created,
                exit: watch::channel(None).0,
            },
        );
        Ok(())
    }

    async fn start(&self, id: &str) -> Result<u32, RuntimeError> {
        let mut s = self.lock();
        s.next_pid += 1;
        let pid = 1000 + s.next_pid;
        let c = s
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound(id.into()))?;
        c.task = TaskState::Running { pid };
        let name = c.labels[labels::CONTAINER_NAME].clone();
        s.calls.push(format!("start {name}"));
        Ok(pid)
    }

    async fn wait(&self, id: &str) -> Result<Exit, RuntimeError> {
        let mut rx = self
            .lock()
            .containers
            .get(id)
            .ok_or_else(|| RuntimeError::NotFound(id.into()))?
            .exit
            .subscribe();
        let exit = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| RuntimeError::NotFound(id.into()))?;
        Ok(exit.expect("waited for Some"))
    }

    async fn kill(&self, id: &str, signal: i32, _all: bool) -> Result<(), RuntimeError> {
        let honoured = {
            let mut s = self.lock();
            let name = s
                .containers
                .get(id)
                .map(|c| c.labels[labels::CONTAINER_NAME].clone())
                .unwrap_or_default();
            s.calls.push(format!("kill {name} {signal}"));
            signal == libc::SIGKILL || !self.ignore_term.load(std::sync::atomic::Ordering::SeqCst)
        };
        if honoured {
            self.end(id, 128 + signal.cast_unsigned());
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        s.calls.push(format!("remove {id}"));
        s.containers.remove(id);
        Ok(())
    }

    async fn delete_task(&self, id: &str) -> Result<(), RuntimeError> {
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.task = TaskState::None;
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ContainerRecord>, RuntimeError> {
        Ok(self
            .lock()
            .containers
            .iter()
            .map(|(id, c)| ContainerRecord {
                id: id.clone(),
                labels: c.labels.clone(),
                created_at: None,
                task: c.task,
            })
            .collect())
    }

    async fn list_pod(&self, uid: &str) -> Result<Vec<ContainerRecord>, RuntimeError> {
        let all = self.list().await?;
        Ok(all
            .into_iter()
            .filter(|r| r.labels.get(labels::POD_UID).map(String::as_str) == Some(uid))
            .collect())
    }

    async fn exec(&self, id: &str, req: &ExecRequest) -> Result<ExecOutput, RuntimeError> {
        let name = {
            let mut s = self.lock();
            let c = s
                .containers
                .get(id)
                .filter(|c| matches!(c.task, TaskState::Running { .. }))
                .ok_or_else(|| RuntimeError::NotFound(format!("no running task {id}")))?;
            let name = c.labels[labels::CONTAINER_NAME].clone();
            s.calls.push(format!("exec {name} {}", req.argv.join(" ")));
            name
        };
        let how = {
            let execs = self.execs.lock().unwrap();
            execs
                .get(&format!("{name} {}", req.argv.join(" ")))
                .or_else(|| execs.get(&name))
                .cloned()
                .unwrap_or_default()
        };
        if let Some(e) = how.error {
            return Err(RuntimeError::Unavailable(e));
        }
        if how.hang {
            match req.timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
            return Ok(ExecOutput::default());
        }
        Ok(ExecOutput {
            exit_code: Some(how.code),
            stdout: how.output.into_bytes(),
            stderr: vec![],
        })
    }

    async fn set_labels(
        &self,
        id: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.labels.extend(labels);
        }
        Ok(())
    }
}

impl FakeRuntime {
    /// Sets how execs in container `name` end from now on (`name` may be
    /// followed by the command line, for that command only).
    pub fn set_exec(&self, name: &str, exec: FakeExec) {
        self.execs.lock().unwrap().insert(name.to_string(), exec);
    }

    /// Execs run so far of `what` (`<container> <command line>`, or its
    /// start).
    pub fn execs_of(&self, what: &str) -> usize {
        let prefix = format!("exec {what}");
        self.calls()
            .iter()
            .filter(|c| c.starts_with(&prefix))
            .count()
    }
}

/// Records what the worker asks of cgroups, sandboxes and volumes.
#[derive(Default)]
pub struct FakeHost {
    pub calls: Mutex<Vec<String>>,
    /// OOM kills reported for every container cgroup.
    pub oom_kills: Mutex<Option<u64>>,
    /// The next sandbox setups fail.
    pub sandbox_failures: Mutex<u32>,
    /// The next sandbox setups find the pod network not ready.
    pub network_not_ready: Mutex<u32>,
    /// The next network attaches fail.
    pub attach_failures: Mutex<u32>,
    /// While set, an attach waits until the test sends (or drops the
    /// sender).
    pub attach_gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    /// Pod addresses given out so far (10.88.0.<n>).
    pub addresses: Mutex<u8>,
    /// The `known` sets `release_orphans` was called with.
    pub released: Mutex<Vec<HashSet<String>>>,
    pub dir: PathBuf,
}

impl FakeHost {
    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl PodCgroups for FakeHost {
    fn apply_pod(&self, qos: QosClass, _uid: &str, _l: &CgroupLimits) -> Result<(), PodError> {
        self.record(format!("cgroup {}", qos.as_str()));
        Ok(())
    }

    fn remove_pod(&self, _uid: &str) -> Vec<String> {
        self.record("remove cgroup".into());
        vec![]
    }

    fn pod_uids(&self) -> Vec<String> {
        vec![]
    }

    fn container_oom_kills(&self, _q: QosClass, _uid: &str, _id: &str) -> Option<u64> {
        *self.oom_kills.lock().unwrap()
    }

    fn container_path(&self, _q: QosClass, uid: &str, id: &str) -> String {
        format!("/kubepods/pod{uid}/{id}")
    }

    fn v2(&self) -> Option<WeightFormula> {
        None
    }

    fn options(&self) -> cgroup::qos::Options {
        cgroup::qos::Options::default()
    }
}

impl Sandboxes for FakeHost {
    fn setup(&self, spec: &SandboxSpec) -> Result<crate::sandbox::Prepared, PodError> {
        let mut failures = self.sandbox_failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            self.record("sandbox failed".into());
            return Err(PodError::CreatePodSandbox("no namespaces today".into()));
        }
        let mut not_ready = self.network_not_ready.lock().unwrap();
        if *not_ready > 0 {
            *not_ready -= 1;
            self.record("sandbox failed".into());
            return Err(PodError::NetworkNotReady("no CNI configuration".into()));
        }
        self.record("sandbox".into());
        let d = &spec.dir;
        Ok(crate::sandbox::Prepared {
            ctx: PodContext {
                net: Some(d.join("ns/net")),
                uts: Some(d.join("ns/uts")),
                ipc: Some(d.join("ns/ipc")),
                hosts_file: d.join("etc-hosts"),
                hostname_file: d.join("etc-hostname"),
                resolv_conf: d.join("resolv.conf"),
                shm: None,
                hostname: spec.names.hostname.clone(),
                cgroupns: false,
                pod_ips: vec![],
                host_ip: std::net::IpAddr::from([192, 0, 2, 1]),
                warnings: vec![],
            },
            attach: true,
        })
    }

    fn attach(&self, _spec: &SandboxSpec) -> Result<Vec<std::net::IpAddr>, PodError> {
        let gate = self.attach_gate.lock().unwrap().take();
        if let Some(gate) = gate {
            self.record("attach waits".into());
            let _ = gate.recv();
        }
        let mut failures = self.attach_failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            self.record("attach failed".into());
            return Err(PodError::CreatePodSandbox(
                "failed to set up network: no IP addresses available".into(),
            ));
        }
        self.record("attach".into());
        let mut n = self.addresses.lock().unwrap();
        *n += 1;
        Ok(vec![std::net::IpAddr::from([10, 88, 0, *n])])
    }

    fn teardown(&self, dir: &Path) -> Result<(), String> {
        self.record("teardown sandbox".into());
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    }

    fn release_orphans(&self, known: &HashSet<String>) -> Vec<String> {
        self.record("release orphans".into());
        self.released.lock().unwrap().push(known.clone());
        vec![]
    }
}

impl Volumes for FakeHost {
    fn setup(&self, pod_dir: &Path, v: &Volume, _m: Option<i64>) -> Result<PathBuf, PodError> {
        self.record(format!("mount {}", v.name));
        let p = pod_dir.join("volumes").join(&v.name);
        std::fs::create_dir_all(&p).map_err(|e| PodError::Mount(e.to_string()))?;
        Ok(p)
    }

    fn bind_subpath(&self, volume: &Path, sub: &Path, _target: &Path) -> io::Result<PathBuf> {
        Ok(volume.join(sub))
    }

    fn unbind(&self, _target: &Path) -> Result<(), String> {
        Ok(())
    }

    fn usage(&self, _dir: &Path) -> u64 {
        0
    }

    fn reclaim(&self, path: &Path, _protected: &[PathBuf]) -> Result<(), String> {
        self.record(format!("reclaim {}", path.display()));
        Ok(())
    }
}

/// A worker environment over the fakes, in a fresh temporary directory.
pub fn env(rt: Arc<FakeRuntime>, host: Arc<FakeHost>) -> Arc<super::WorkerEnv> {
    let dir = host.dir.clone();
    Arc::new(super::WorkerEnv {
        rt,
        cgroups: host.clone(),
        sandboxes: host.clone(),
        volumes: host,
        root_dir: dir.join("root"),
        pod_logs_dir: dir.join("logs"),
        memory_capacity: 1 << 30,
        oom_score_floor: -1000,
        metrics: Arc::new(crate::metrics::AgentMetrics::new()),
        backoff_initial: std::time::Duration::from_secs(10),
        backoff_max: std::time::Duration::from_secs(300),
        store: crate::pod::Store::default(),
        events: crate::events::Recorder::default(),
        protected_dirs: vec![],
        probe_sockets: Default::default(),
    })
}

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use std::io::IsTerminal;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use tracing::{error, info, warn};

use kubelet_lite::config::{Config, PodNetwork};
use kubelet_lite::runtime::containerd::{Containerd, ContainerdOptions};
use kubelet_lite::runtime::health::{self, RuntimeHealth};
use kubelet_lite::{cgroup, cli, http, logs, network, node, source, worker};

/// A node agent that runs Kubernetes static pods on containerd.
///
/// Without a subcommand, or with `run`, it runs the agent. The verbs `get`,
/// `describe`, `logs`, `top` and `events` ask the running agent, as kubectl
/// would ask an API server, over a Unix socket that only root may open.
#[derive(Parser)]
#[command(
    version,
    about,
    after_help = "Examples:\n  kubelet-lite --config /etc/kubelet-lite/config.yaml   run the agent\n  kubelet-lite check /etc/kubernetes/manifests/web.yaml  validate manifests offline\n  kubelet-lite get pods -A                              list the node's pods\n  kubelet-lite describe pod web-node1                   a pod, its containers and events\n  kubelet-lite logs web-node1 -f                        follow a container's log\n  kubelet-lite exec -it web-node1 -- sh                 a shell in a container\n  kubelet-lite top pods                                 CPU and memory per pod\n  kubelet-lite events -w                                watch the node's events\n  kubelet-lite completion bash > /etc/bash_completion.d/kubelet-lite"
)]
struct Cli {
    /// Agent configuration (YAML). Without it, built-in defaults apply.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// The agent's command socket (default: the configuration's
    /// `cliSocket`, /run/kubelet-lite/kubelet-lite.sock).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (the default).
    Run,
    /// Check the manifests of the static pod directory (or the given
    /// files) and print what each defines, without running anything. Exits
    /// 1 when any file has an error or defines no object.
    Check {
        files: Vec<PathBuf>,
        /// `json`: one document listing per file its objects, errors and
        /// warnings (for editors and CI).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print the effective configuration.
    Config,
    #[command(flatten)]
    Verb(cli::Verb),
    /// Print a shell completion script (bash, zsh, fish, ...).
    #[command(
        after_help = "Examples:\n  kubelet-lite completion bash > /etc/bash_completion.d/kubelet-lite\n  kubelet-lite completion zsh > \"${fpath[1]}/_kubelet-lite\"\n  kubelet-lite completion fish > ~/.config/fish/completions/kubelet-lite.fish"
    )]
    Completion { shell: clap_complete::Shell },
}

fn main() -> std::process::ExitCode {
    // The container log writer that containerd's shim starts: its
    // arguments are the log URI's query, in no fixed order.
    if let Some(args) = logs::LoggerArgs::parse(std::env::args_os().skip(1)) {
        return std::process::ExitCode::from(u8::try_from(logs::run_logger(&args)).unwrap_or(1));
    }
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Completion { shell }) => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "kubelet-lite",
                &mut std::io::stdout(),
            );
            return std::process::ExitCode::SUCCESS;
        }
        Some(Command::Verb(verb)) => return run_verb(verb, cli.socket, cli.config.as_deref()),
        _ => {}
    }
    // Colour only for a person reading a terminal, not in log files or pipes.
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KUBELET_LITE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A verb of the command line: 0 when it went through, 1 with the reason
/// on stderr otherwise.
fn run_verb(
    verb: cli::Verb,
    socket: Option<PathBuf>,
    config: Option<&std::path::Path>,
) -> std::process::ExitCode {
    let socket = match (socket, config) {
        (Some(s), _) => s,
        (None, Some(path)) => match Config::load(path) {
            Ok(c) => c.cli_socket,
            Err(e) => {
                eprintln!("error: {e:#}");
                return std::process::ExitCode::FAILURE;
            }
        },
        (None, None) => PathBuf::from(cli::DEFAULT_SOCKET),
    };
    match cli::run(verb, &socket) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader went away (`| head`): not an error of ours.
        Err(cli::Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            std::process::ExitCode::SUCCESS
        }
        // kubectl's words and the command's own exit code.
        Err(e @ cli::Error::Exited(code)) => {
            eprintln!("{e}");
            std::process::ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Config => {
            print!("{}", serde_norway::to_string(&config)?);
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Check { files, output } => Ok(check(&config, &files, output)),
        Command::Run => {
            kubelet_lite::malloc::tune();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                // Few blocking threads: each is a malloc arena (memory).
                .max_blocking_threads(8)
                .enable_all()
                .build()?;
            rt.block_on(run(config))?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Verb(_) | Command::Completion { .. } => {
            unreachable!("handled before logging starts")
        }
    }
}

fn check(config: &Config, files: &[PathBuf], output: Output) -> std::process::ExitCode {
    let report = if files.is_empty() {
        kubelet_lite::check::check_dir(&config.static_pod_path, &config.node_name())
    } else {
        kubelet_lite::check::check_files(files, &config.node_name())
    };
    match output {
        Output::Text => print!("{}", report.text()),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("a check report serializes")
        ),
    }
    if report.ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

async fn connect(config: &Config, health: &RuntimeHealth) -> anyhow::Result<Containerd> {
    let mut retry =
        kubelet_lite::pod::Retry::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let opts = ContainerdOptions {
            address: config.containerd.address.clone(),
            namespace: config.containerd.namespace.clone(),
            snapshotter: config.containerd.snapshotter.clone(),
            runtime: config.containerd.runtime.clone(),
            images_dir: config.images_dir(),
            logger: std::env::current_exe().context("locating own binary for the log writer")?,
            log_rotation: config.log_rotation(),
            systemd_cgroup: config.cgroup_driver == cgroup::Driver::Systemd,
            call_timeout: config.runtime_request_timeout,
            registries: config.registry_options(),
            exec_dir: config.root_dir.join("exec"),
        };
        match Containerd::connect(opts).await {
            Ok(c) => return Ok(c),
            Err(e) if e.is_transient() => {
                health.down(&e);
                let wait = retry.failed();
                warn!("{e}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Raises the soft open-file limit to the hard one, as Go programs
/// (containerd, the kubelet) do at start: the statistics endpoints keep the
/// cgroup directories of every pod and container open between scrapes.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                warn!("raising the open-file limit from {soft} to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => warn!("reading the open-file limit: {e}"),
    }
}

/// Asks containerd every [`health::CHECK_PERIOD`] whether it answers, as
/// the kubelet asks its runtime, and logs when that changes.
async fn watch_runtime(rt: Arc<Containerd>, health: Arc<RuntimeHealth>) {
    let mut tick = tokio::time::interval(health::CHECK_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match tokio::time::timeout(health::CHECK_PERIOD, rt.version()).await {
            Ok(Ok(version)) => {
                if health.up(version.clone()) {
                    info!(%version, "container runtime is up");
                }
            }
            Ok(Err(e)) => {
                if health.down(&e) {
                    warn!("container runtime is down: {e}");
                }
            }
            Err(_) => {
                let e = format!("no answer within {:?}", health::CHECK_PERIOD);
                if health.down(&e) {
                    warn!("container runtime is down: {e}");
                }
            }
        }
    }
}

/// The node's side of pod sandboxes: its address, its names, and the pod
/// network (with a default CNI configuration written if there is none).
fn sandbox_host(config: &Config) -> anyhow::Result<kubelet_lite::sandbox::Host> {
    let network = match config.pod_network {
        PodNetwork::Loopback => {
            info!("podNetwork: loopback: pods without hostNetwork have loopback only");
            None
        }
        PodNetwork::Cni => {
            let net = network::Network::new(network::NetworkConfig {
                conf_dir: config.cni_conf_dir.clone(),
                bin_dirs: config.cni_bin_dir.clone(),
                pod_cidr: config.pod_cidr.clone(),
                timeout: config.runtime_request_timeout,
                pods_dir: config.root_dir.join("pods"),
            });
            if let Some(written) = net
                .write_default_config()
                .context("writing the default CNI configuration")?
            {
                info!(file = %written.display(), pod_cidr = %config.pod_cidr, "no CNI configuration found: wrote the default one");
            }
            Some(Arc::new(net))
        }
    };
    let host_ip = network::node_ip();
    info!(%host_ip, "node address");
    let pins = kubelet_lite::sandbox::Pins::open(&config.root_dir.join("pins"))
        .context("opening the namespace pins' mount namespace")?;
    Ok(kubelet_lite::sandbox::Host {
        pins: Arc::new(pins),
        network,
        cluster_domain: config.cluster_domain.clone(),
        resolv_conf: config.resolv_conf.clone(),
        hosts_file: "/etc/hosts".into(),
        host_ip,
    })
}

async fn run(mut config: Config) -> anyhow::Result<()> {
    let node = config.node_name();
    info!(
        node,
        static_pod_path = %config.static_pod_path.display(),
        containerd = %config.containerd.address.display(),
        "kubelet-lite starting"
    );
    raise_open_file_limit();
    // The agent's directories, resolved once: mount points below them are
    // compared with the kernel's (canonical) mount table, and a symlinked
    // rootDir must not make a mount look like a plain directory.
    for dir in [&mut config.root_dir, &mut config.pod_logs_dir] {
        std::fs::create_dir_all(&*dir).with_context(|| format!("creating {}", dir.display()))?;
        *dir =
            std::fs::canonicalize(&*dir).with_context(|| format!("resolving {}", dir.display()))?;
    }
    let pods_dir = config.root_dir.join("pods");
    std::fs::create_dir_all(&pods_dir)
        .and_then(|()| {
            std::fs::set_permissions(
                &pods_dir,
                std::os::unix::fs::PermissionsExt::from_mode(0o750),
            )
        })
        .with_context(|| format!("creating {}", pods_dir.display()))?;
    // Never open: the configured token, or one made at first start.
    let token_file = config.token_file();
    let token = if config.http_token_file.is_some() {
        http::token::read(&token_file)?
    } else {
        http::token::read_or_create(&token_file)?
    };
    let tls = match (&config.tls_cert_file, &config.tls_private_key_file) {
        (Some(cert), Some(key)) => Some(http::tls::server_config(&http::tls::Files {
            cert,
            key,
            client_ca: config.tls_client_ca_file.as_deref(),
        })?),
        _ => None,
    };
    let store = kubelet_lite::pod::Store::default();

    let mounts = kubelet_lite::hostfs::mounts().context("reading the mount table")?;
    let cgroups = cgroup::Cgroups::new(
        cgroup::Settings {
            driver: config.cgroup_driver,
            root: config.cgroup_root.clone(),
            formula: config.cpu_weight_formula,
            options: cgroup::qos::Options {
                memory_qos: config.memory_qos,
                pids_limit: Some(config.pod_pids_limit).filter(|p| *p > 0),
                single_process_oom_kill: config.single_process_oom_kill,
            },
        },
        &mounts,
    )?;
    let capacity = node::capacity(config.max_pods);
    let (cpu_reserved, mem_reserved) = config.system_reserved.values();
    let allocatable = node::allocatable(
        capacity,
        node::Resources {
            cpu_milli: cpu_reserved,
            memory: mem_reserved,
            pods: 0,
        },
    );
    info!(
        cgroups = %cgroups.mode.describe(),
        driver = ?config.cgroup_driver,
        capacity_cpu_milli = capacity.cpu_milli,
        capacity_memory = capacity.memory,
        max_pods = capacity.pods,
        allocatable_cpu_milli = allocatable.cpu_milli,
        allocatable_memory = allocatable.memory,
        "node resources"
    );
    let oom_score_floor = node::oom_score_floor();
    if oom_score_floor > -1000 {
        warn!(
            floor = oom_score_floor,
            "this host does not allow lowering OOM scores: Guaranteed and Burstable containers get at least {oom_score_floor} instead of the kubelet's -997..999"
        );
    }
    if !cgroups.mode.is_v2() {
        warn!(
            "cgroup v1 host: memory.min (memoryQoS) and cpu.weight do not apply; using cpu.shares and memory.limit_in_bytes"
        );
    }
    cgroups
        .setup(allocatable.cpu_milli, allocatable.memory)
        .context("creating the kubepods cgroups")?;
    let metrics = Arc::new(kubelet_lite::metrics::AgentMetrics::new());
    let events = kubelet_lite::events::Recorder::new(&node);
    let volume_stats = Arc::new(kubelet_lite::stats::volumes::VolumeStats::default());
    let runtime_health = Arc::new(RuntimeHealth::default());
    let nets = Arc::new(kubelet_lite::stats::NetFiles::default());
    tokio::spawn(kubelet_lite::stats::NetFiles::follow(
        Arc::clone(&nets),
        store.clone(),
    ));
    let shared = Arc::new(http::Shared {
        store: store.clone(),
        cgroups: cgroups.clone(),
        metrics: Arc::clone(&metrics),
        node_name: node.clone(),
        root_dir: config.root_dir.clone(),
        token,
        metrics_anonymous: config.metrics_anonymous,
        rates: Default::default(),
        nets,
        scrape_slots: http::Shared::scrape_slots(),
        volume_stats: Arc::clone(&volume_stats),
        events: events.clone(),
        runtime: Arc::clone(&runtime_health),
        capacity,
        allocatable,
    });
    {
        let store = store.clone();
        let root_dir = config.root_dir.clone();
        let collector = kubelet_lite::stats::volumes::Collector::new(volume_stats);
        tokio::spawn(collector.run(config.volume_stats_agg_period, move || {
            kubelet_lite::stats::volumes::dirs_of(&store, &root_dir)
        }));
    }
    tokio::spawn(kubelet_lite::malloc::trim_after_deletions(
        store.clone(),
        kubelet_lite::malloc::TRIM_QUIET,
        kubelet_lite::malloc::trim,
    ));
    let listener = tokio::net::TcpListener::bind(config.listen_address)
        .await
        .with_context(|| format!("listening on {}", config.listen_address))?;
    info!(
        address = %config.listen_address,
        scheme = if tls.is_some() { "https" } else { "http" },
        token_file = %token_file.display(),
        "serving /healthz, /pods, /metrics, /metrics/cadvisor, /metrics/resource, /stats/summary"
    );
    let cli_listener = cli::server::bind(&config.cli_socket)?;
    info!(socket = %config.cli_socket.display(), "serving the command line (get, describe, logs, exec, top, events)");
    let exec_runtime = Arc::new(std::sync::OnceLock::new());
    let cli_server = tokio::spawn(cli::server::serve(
        cli_listener,
        Arc::new(cli::server::Agent {
            shared: Arc::clone(&shared),
            pod_logs_dir: config.pod_logs_dir.clone(),
            runtime: Arc::clone(&exec_runtime),
        }),
    ));
    let server = tokio::spawn(http::server::serve(
        listener,
        http::router(shared),
        http::server::Options {
            max_connections_per_client: config.max_connections_per_client,
            tls,
        },
    ));

    // The endpoints answer while containerd is away; pods wait for it.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let rt = tokio::select! {
        rt = connect(&config, &runtime_health) => Arc::new(rt?),
        _ = term.recv() => {
            info!("SIGTERM before containerd answered: exiting");
            return Ok(());
        }
        _ = tokio::signal::ctrl_c() => return Ok(()),
    };
    let _ = exec_runtime.set(Arc::clone(&rt));
    tokio::spawn(watch_runtime(Arc::clone(&rt), runtime_health));
    tokio::spawn(kubelet_lite::runtime::image_gc::run(
        Arc::clone(&rt),
        config.image_gc_policy(),
    ));
    let env = Arc::new(worker::WorkerEnv {
        metrics,
        rt,
        cgroups: Arc::new(cgroups),
        sandboxes: Arc::new(worker::host::HostSandboxes(sandbox_host(&config)?)),
        volumes: Arc::new(worker::host::HostVolumes(
            kubelet_lite::volume::mount::MountConfig {
                allowed_host_paths: config.host_path_allowed_prefixes.clone(),
                nfs_timeout: config.nfs_mount_timeout,
            },
        )),
        root_dir: config.root_dir.clone(),
        pod_logs_dir: config.pod_logs_dir.clone(),
        memory_capacity: capacity.memory,
        oom_score_floor,
        backoff_initial: config.crash_loop_back_off.initial,
        backoff_max: config.crash_loop_back_off.max,
        store: store.clone(),
        events,
        protected_dirs: vec![
            config.root_dir.clone(),
            config.pod_logs_dir.clone(),
            std::fs::canonicalize(&config.static_pod_path)
                .unwrap_or_else(|_| config.static_pod_path.clone()),
        ],
        probe_sockets: Default::default(),
    });

    let (tx, rx) = tokio::sync::watch::channel(Arc::new(source::Desired::default()));
    let (reclaim_tx, reclaim_rx) = tokio::sync::mpsc::unbounded_channel();
    let (source_ping, source_pings) = tokio::sync::mpsc::unbounded_channel();
    let (manager_ping, manager_pings) = tokio::sync::mpsc::unbounded_channel();
    let src = source::Source::new(
        config.static_pod_path.clone(),
        node,
        config.file_check_frequency,
    )
    .with_volumes(
        config.root_dir.join("volume-bindings.json"),
        reclaim_tx,
        config.reclaim_grace_period,
    )
    .with_pings(source_pings);
    tokio::spawn(src.run(tx));
    let manager = tokio::spawn(worker::manager::run(
        rx,
        env,
        allocatable,
        reclaim_rx,
        manager_pings,
    ));
    // systemd (Type=notify): ready once the endpoint listens and the pod
    // manager runs; then pet the watchdog at half its period, if one is set,
    // but only while the directory watcher and the pod manager both answer:
    // a loop that is stuck gets the agent restarted.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    if let Some(period) = sd_notify::watchdog_enabled() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period / 2);
            loop {
                tick.tick().await;
                let asked = [
                    ("manifest watcher", &source_ping),
                    ("pod manager", &manager_ping),
                ]
                .map(|(name, ping)| {
                    let (reply, answer) = tokio::sync::oneshot::channel();
                    let _ = ping.send(reply);
                    async move {
                        match tokio::time::timeout(period / 4, answer).await {
                            Ok(Ok(())) => true,
                            _ => {
                                warn!(
                                    "the {name} did not answer: not petting the systemd watchdog"
                                );
                                false
                            }
                        }
                    }
                });
                if futures::future::join_all(asked)
                    .await
                    .into_iter()
                    .all(|alive| alive)
                {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
        });
    }

    tokio::select! {
        _ = server => warn!("HTTP server ended"),
        _ = cli_server => warn!("command socket server ended"),
        _ = term.recv() => info!("SIGTERM: exiting, pods keep running"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT: exiting, pods keep running"),
        _ = manager => warn!("pod manager ended"),
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let _ = std::fs::remove_file(&config.cli_socket);
    Ok(())
}

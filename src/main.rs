use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::{error, info, warn};

use kubelet_lite::config::Config;
use kubelet_lite::runtime::containerd::{Containerd, ContainerdOptions};
use kubelet_lite::{cgroup, http, logs, node, source, worker};

/// A node agent that runs Kubernetes static pods on containerd.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Agent configuration (YAML). Without it, built-in defaults apply.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (the default).
    Run,
    /// Check the manifests of the static pod directory (or the given
    /// files) and print what would run, without running anything.
    Check { files: Vec<PathBuf> },
    /// Print the effective configuration.
    Config,
    /// Container log writer started by containerd's shim (internal).
    #[command(name = "cri-log", hide = true)]
    CriLog { path: PathBuf },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::CriLog { path }) = &cli.command {
        return std::process::ExitCode::from(logs::run_logger(path) as u8);
    }
    tracing_subscriber::fmt()
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
        Command::Check { files } => Ok(check(&config, &files)),
        Command::Run => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                // Few blocking threads: each is a malloc arena (memory).
                .max_blocking_threads(8)
                .enable_all()
                .build()?;
            rt.block_on(run(config))?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::CriLog { .. } => unreachable!("handled before logging starts"),
    }
}

fn check(config: &Config, files: &[PathBuf]) -> std::process::ExitCode {
    let node = config.node_name();
    let desired = if files.is_empty() {
        source::scan(&config.static_pod_path, &node)
    } else {
        let mut d = source::Desired::default();
        for f in files {
            match std::fs::read_to_string(f) {
                Ok(text) => {
                    let p = kubelet_lite::manifest::parse_file(f, &text, &node);
                    d.pods.extend(p.pods);
                    d.errors.extend(p.errors);
                }
                Err(e) => eprintln!("{}: {e}", f.display()),
            }
        }
        d
    };
    for pod in &desired.pods {
        println!(
            "ok: {} (uid {}) from {}",
            pod.key(),
            pod.uid,
            pod.source.display()
        );
        for w in &pod.warnings {
            println!("  warning: {w}");
        }
    }
    for e in &desired.errors {
        println!("error: {e}");
    }
    if desired.errors.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

async fn connect(config: &Config) -> anyhow::Result<Containerd> {
    let mut delay = Duration::from_millis(200);
    loop {
        let opts = ContainerdOptions {
            address: config.containerd.address.clone(),
            namespace: config.containerd.namespace.clone(),
            snapshotter: config.containerd.snapshotter.clone(),
            runtime: config.containerd.runtime.clone(),
            images_dir: config.images_dir(),
            logger: std::env::current_exe().context("locating own binary for the log writer")?,
            systemd_cgroup: config.cgroup_driver == cgroup::Driver::Systemd,
        };
        match Containerd::connect(opts).await {
            Ok(c) => return Ok(c),
            Err(e) if e.is_transient() => {
                warn!("{e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let node = config.node_name();
    info!(
        node,
        static_pod_path = %config.static_pod_path.display(),
        containerd = %config.containerd.address.display(),
        "kubelet-lite starting"
    );
    for dir in [&config.root_dir, &config.pod_logs_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
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
    let rt = connect(&config).await?;
    let store: worker::StatusStore = Default::default();

    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mode = cgroup::Mode::detect(&mountinfo).context("no cgroup hierarchy is mounted")?;
    let capacity = node::capacity();
    let (cpu_reserved, mem_reserved) = config.system_reserved.values();
    let allocatable = node::allocatable(
        capacity,
        node::Resources {
            cpu_milli: cpu_reserved,
            memory: mem_reserved,
        },
    );
    info!(
        cgroups = %mode.describe(),
        driver = ?config.cgroup_driver,
        capacity_cpu_milli = capacity.cpu_milli,
        capacity_memory = capacity.memory,
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
    if !mode.is_v2() {
        warn!(
            "cgroup v1 host: memory.min (memoryQoS) and cpu.weight do not apply; using cpu.shares and memory.limit_in_bytes"
        );
    }
    let cgroups = cgroup::Cgroups {
        mode,
        layout: cgroup::Layout {
            driver: config.cgroup_driver,
            root: config.cgroup_root.clone(),
        },
        formula: config.cpu_weight_formula,
        options: cgroup::qos::Options {
            memory_qos: config.memory_qos,
            pids_limit: Some(config.pod_pids_limit).filter(|p| *p > 0),
        },
        mounts: cgroup::hierarchies(&mountinfo),
    };
    cgroups
        .setup(allocatable.cpu_milli, allocatable.memory)
        .context("creating the kubepods cgroups")?;
    let metrics = Arc::new(kubelet_lite::metrics::AgentMetrics::new());
    let volume_stats = Arc::new(kubelet_lite::stats::volumes::VolumeStats::default());
    let shared = Arc::new(http::Shared {
        store: store.clone(),
        cgroups: cgroups.clone(),
        metrics: Arc::clone(&metrics),
        node_name: node.clone(),
        root_dir: config.root_dir.clone(),
        token,
        metrics_anonymous: config.metrics_anonymous,
        rates: Default::default(),
        specs: Default::default(),
        scrape_slots: http::Shared::scrape_slots(),
        volume_stats: Arc::clone(&volume_stats),
    });
    {
        let store = store.clone();
        let root_dir = config.root_dir.clone();
        let collector = kubelet_lite::stats::volumes::Collector::new(volume_stats);
        tokio::spawn(collector.run(config.volume_stats_agg_period, move || {
            kubelet_lite::stats::volumes::dirs_of(&store, &root_dir)
        }));
    }
    let env = Arc::new(worker::WorkerEnv {
        metrics,
        rt: Arc::new(rt),
        root_dir: config.root_dir.clone(),
        pod_logs_dir: config.pod_logs_dir.clone(),
        cgroups,
        memory_capacity: capacity.memory,
        oom_score_floor,
        mounts: kubelet_lite::volume::mount::MountConfig {
            allowed_host_paths: config.host_path_allowed_prefixes.clone(),
            nfs_timeout: config.nfs_mount_timeout,
        },
        backoff_initial: config.crash_loop_back_off.initial,
        backoff_max: config.crash_loop_back_off.max,
        store: store.clone(),
    });

    let listener = tokio::net::TcpListener::bind(config.listen_address)
        .await
        .with_context(|| format!("listening on {}", config.listen_address))?;
    info!(
        address = %config.listen_address,
        scheme = if tls.is_some() { "https" } else { "http" },
        token_file = %token_file.display(),
        "serving /healthz, /pods, /metrics, /metrics/cadvisor, /metrics/resource, /stats/summary"
    );
    let server = http::server::serve(
        listener,
        http::router(shared),
        http::server::Options {
            max_connections_per_client: config.max_connections_per_client,
            tls,
        },
    );

    let (tx, rx) = tokio::sync::watch::channel(Arc::new(source::Desired::default()));
    let (reclaim_tx, reclaim_rx) = tokio::sync::mpsc::unbounded_channel();
    let src = source::Source::new(
        config.static_pod_path.clone(),
        node,
        config.file_check_frequency,
    )
    .with_volumes(config.root_dir.join("volume-bindings.json"), reclaim_tx);
    tokio::spawn(src.run(tx));
    let manager = tokio::spawn(worker::manager::run(rx, env, allocatable, reclaim_rx));
    // systemd (Type=notify): ready once the endpoint listens and the pod
    // manager runs; then pet the watchdog at half its period, if one is set.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    if let Some(period) = sd_notify::watchdog_enabled() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period / 2);
            loop {
                tick.tick().await;
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
        });
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = server => warn!("HTTP server ended"),
        _ = term.recv() => info!("SIGTERM: exiting, pods keep running"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT: exiting, pods keep running"),
        _ = manager => warn!("pod manager ended"),
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    Ok(())
}

//! Making volumes exist on the host: directories, tmpfs and NFS mounts,
//! configMap and secret files, hostPath type checks, safe subPath bind
//! mounts, and their removal. Blocking: callers run these off the async
//! executor.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::Mode;

use super::{Source, Volume};
use crate::hostfs::{self, is_mount_point};

use crate::pod::PodError;

fn failed(message: String) -> PodError {
    PodError::Mount(message)
}

#[derive(Debug, Clone)]
pub struct MountConfig {
    /// When not empty, hostPath volumes must be below one of these.
    pub allowed_host_paths: Vec<PathBuf>,
    /// Deadline of one NFS mount attempt.
    pub nfs_timeout: Duration,
}

/// Whether `path` is `prefix` or below it, component-wise.
fn is_below(path: &Path, prefix: &Path) -> bool {
    path.starts_with(prefix)
}

/// The hostPath `type` checks and creations of the kubelet.
pub fn check_host_path(path: &Path, kind: &str) -> Result<(), String> {
    let meta = std::fs::metadata(path);
    let mismatch = |what: &str| {
        Err(format!(
            "hostPath type check failed: {} is not a {what}",
            path.display()
        ))
    };
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => mismatch("directory"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(path)
                    .map_err(|e| format!("creating {}: {e}", path.display()))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| format!("{}: {e}", path.display()))
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        },
        "FileOrCreate" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => mismatch("file"),
            // As the kubelet: the file is created, its parent is not.
            Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .and_then(|f| f.set_permissions(std::fs::Permissions::from_mode(0o644)))
                .map_err(|e| format!("creating {}: {e}", path.display())),
            Err(e) => Err(format!("{}: {e}", path.display())),
        },
        _ => {
            let m =
                meta.map_err(|e| format!("hostPath type check failed: {}: {e}", path.display()))?;
            type_check(path, kind, m.file_type())
        }
    }
}

/// Whether a file of type `t` is what hostPath `type: kind` asks for.
fn type_check(path: &Path, kind: &str, t: std::fs::FileType) -> Result<(), String> {
    let (ok, what) = match kind {
        "" => (true, ""),
        "Directory" | "DirectoryOrCreate" => (t.is_dir(), "directory"),
        "File" | "FileOrCreate" => (t.is_file(), "file"),
        "Socket" => (t.is_socket(), "socket"),
        "CharDevice" => (t.is_char_device(), "character device"),
        "BlockDevice" => (t.is_block_device(), "block device"),
        other => return Err(format!("unknown hostPath type {other:?}")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "hostPath type check failed: {} is not a {what}",
            path.display()
        ))
    }
}

/// Sets up one volume of the pod whose directory is `pod_dir`; returns the
/// host path that containers bind-mount. Idempotent (an agent restart finds
/// mounts and files in place).
pub fn setup(
    pod_dir: &Path,
    v: &Volume,
    pod_memory_limit: Option<i64>,
    cfg: &MountConfig,
) -> Result<PathBuf, PodError> {
    let dir = v.plugin_dir().map(|d| pod_dir.join(d));
    let mkdir = |d: &Path, mode: u32| -> Result<(), PodError> {
        std::fs::create_dir_all(d)
            .and_then(|_| std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)))
            .map_err(|e| {
                failed(format!(
                    "volume {:?}: creating {}: {e}",
                    v.name,
                    d.display()
                ))
            })
    };
    match &v.source {
        Source::Unavailable(e) => Err(e.clone()),
        Source::EmptyDir { memory, size_limit } => {
            let d = dir.expect("emptyDir has a plugin dir");
            mkdir(&d, 0o777)?;
            if *memory && !is_mount_point(&d) {
                let size = size_limit.or(pod_memory_limit);
                let opts = match size {
                    Some(s) => format!("mode=0777,size={s}"),
                    None => "mode=0777".to_string(),
                };
                mount(
                    Some("tmpfs"),
                    &d,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(opts.as_str()),
                )
                .map_err(|e| failed(format!("volume {:?}: mounting tmpfs: {e}", v.name)))?;
            }
            Ok(d)
        }
        Source::HostPath { path, kind } => {
            if cfg.allowed_host_paths.is_empty() {
                check_host_path(path, kind)
                    .map_err(|m| failed(format!("volume {:?}: {m}", v.name)))?;
                return Ok(path.clone());
            }
            let prefix = allowed_prefix(path, cfg)
                .map_err(|m| failed(format!("volume {:?}: hostPath {m}", v.name)))?;
            let target = pod_dir
                .join("volumes/kubernetes.io~host-path")
                .join(&v.name);
            host_path_beneath(prefix, path, kind, &target)
                .map_err(|m| failed(format!("volume {:?}: {m}", v.name)))
        }
        Source::Local { path, pv } => {
            if !cfg.allowed_host_paths.is_empty() {
                let prefix = allowed_prefix(path, cfg)
                    .map_err(|m| failed(format!("local volume {pv:?}: {m}")))?;
                let target = pod_dir.join("volumes/kubernetes.io~local-volume").join(pv);
                return host_path_beneath(prefix, path, "Directory", &target)
                    .map_err(|m| failed(format!("local volume {pv:?}: {m}")));
            }
            match std::fs::metadata(path) {
                Ok(m) if m.is_dir() => Ok(path.clone()),
                _ => Err(failed(format!(
                    "local volume {pv:?}: {} is not a directory",
                    path.display()
                ))),
            }
        }
        Source::Files { secret, files } => {
            let d = dir.expect("configMap/secret have a plugin dir");
            // Host-side: only root may look in (the files keep their modes
            // for the containers).
            mkdir(&d, 0o755)?;
            if *secret && !is_mount_point(&d) {
                // Secrets live on tmpfs: never written to disk.
                mount(
                    Some("tmpfs"),
                    &d,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    Some("mode=0755"),
                )
                .map_err(|e| failed(format!("volume {:?}: mounting tmpfs: {e}", v.name)))?;
            }
            super::atomic::write(&d, files)
                .map_err(|e| failed(format!("volume {:?}: {e}", v.name)))?;
            Ok(d)
        }
        Source::Nfs {
            server,
            path,
            read_only,
            options,
            ..
        } => {
            let d = dir.expect("nfs has a plugin dir");
            mkdir(&d, 0o750)?;
            if !is_mount_point(&d) {
                let mut opts = options.clone();
                if *read_only {
                    opts.push("ro".into());
                }
                mount_nfs(&format!("{server}:{path}"), &d, &opts, cfg.nfs_timeout).map_err(
                    |m| {
                        failed(format!(
                            "MountVolume.SetUp failed for volume {:?}: {m}",
                            v.name
                        ))
                    },
                )?;
            }
            Ok(d)
        }
    }
}

/// The allowed prefix `path` lies below, compared component-wise.
fn allowed_prefix<'a>(path: &Path, cfg: &'a MountConfig) -> Result<&'a Path, String> {
    cfg.allowed_host_paths
        .iter()
        .find(|p| is_below(path, p))
        .map(PathBuf::as_path)
        .ok_or_else(|| {
            format!(
                "{} is outside the allowed prefixes ({})",
                path.display(),
                cfg.allowed_host_paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// A hostPath below an allowed prefix, resolved as the kernel sees it: the
/// part below the prefix is opened with openat2(RESOLVE_BENEATH), so a
/// symlink in there cannot lead out of the prefix; creation (`...OrCreate`)
/// happens beneath too; the type is checked on the opened file; and the
/// opened file itself is bind-mounted at `target`, which containers mount,
/// so that what was checked is what they get.
fn host_path_beneath(
    prefix: &Path,
    path: &Path,
    kind: &str,
    target: &Path,
) -> Result<PathBuf, String> {
    if is_mount_point(target) {
        return Ok(target.to_path_buf()); // set up before an agent restart
    }
    let rel = path.strip_prefix(prefix).map_err(|e| e.to_string())?;
    let escape = |e: nix::errno::Errno| match e {
        nix::errno::Errno::EXDEV | nix::errno::Errno::ELOOP => format!(
            "hostPath {} leads out of its allowed prefix {} (through a symlink or '..')",
            path.display(),
            prefix.display()
        ),
        e => format!("hostPath {}: {e}", path.display()),
    };
    let how = |flags: OFlag| {
        OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS)
    };
    let root = nix::fcntl::open(
        prefix,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("allowed prefix {}: {e}", prefix.display()))?;
    let open = |flags: OFlag| -> Result<OwnedFd, nix::errno::Errno> {
        if rel.as_os_str().is_empty() {
            nix::unistd::dup(&root)
        } else {
            openat2(&root, rel, how(flags))
        }
    };
    let fd = match (open(OFlag::O_PATH), kind) {
        (Ok(fd), _) => fd,
        (Err(nix::errno::Errno::ENOENT), "DirectoryOrCreate") => {
            // The kubelet makes missing directories 0755, all the way.
            let mut cur = nix::unistd::dup(&root).map_err(escape)?;
            for comp in rel.components() {
                let Component::Normal(name) = comp else {
                    return Err(escape(nix::errno::Errno::EXDEV));
                };
                cur = match openat2(&cur, name, how(OFlag::O_PATH | OFlag::O_DIRECTORY)) {
                    Ok(fd) => fd,
                    Err(nix::errno::Errno::ENOENT) => {
                        let dir = nix::fcntl::openat(
                            &cur,
                            ".",
                            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                            Mode::empty(),
                        )
                        .map_err(escape)?;
                        match nix::sys::stat::mkdirat(&dir, name, Mode::from_bits_truncate(0o755)) {
                            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                            Err(e) => return Err(escape(e)),
                        }
                        openat2(&cur, name, how(OFlag::O_PATH | OFlag::O_DIRECTORY))
                            .map_err(escape)?
                    }
                    Err(e) => return Err(escape(e)),
                };
            }
            cur
        }
        (Err(nix::errno::Errno::ENOENT), "FileOrCreate") => {
            // As the kubelet: the file is created, its parent is not.
            let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
                return Err(escape(nix::errno::Errno::EXDEV));
            };
            let dir = if parent.as_os_str().is_empty() {
                nix::fcntl::open(
                    prefix,
                    OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(escape)?
            } else {
                openat2(&root, parent, how(OFlag::O_DIRECTORY | OFlag::O_RDONLY)).map_err(escape)?
            };
            match nix::fcntl::openat(
                &dir,
                name,
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_WRONLY
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            ) {
                Ok(_) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(escape(e)),
            }
            openat2(&root, rel, how(OFlag::O_PATH)).map_err(escape)?
        }
        (Err(e), _) => return Err(escape(e)),
    };
    let file_type = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| format!("hostPath {}: {e}", path.display()))?
        .file_type();
    type_check(path, kind, file_type)?;
    let fd_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    let made = if file_type.is_dir() {
        std::fs::create_dir_all(target)
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(target)
            .map(drop)
    };
    made.map_err(|e| format!("creating {}: {e}", target.display()))?;
    mount(
        Some(fd_path.as_str()),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("bind-mounting hostPath {}: {e}", path.display()))?;
    Ok(target.to_path_buf())
}

/// Mounts with the kernel NFS client through mount(8), which handles
/// address resolution and version negotiation. A dead server can keep
/// mount(8) waiting for minutes: it is killed at the deadline, and the
/// caller retries later.
fn mount_nfs(
    source: &str,
    target: &Path,
    options: &[String],
    timeout: Duration,
) -> Result<(), String> {
    let mut cmd = Command::new("mount");
    cmd.args(["-t", "nfs"]);
    if !options.is_empty() {
        cmd.arg("-o").arg(options.join(","));
    }
    // The source comes from a manifest: after `--`, it can only ever be
    // read as the source, never as an option of mount(8).
    cmd.arg("--")
        .arg(source)
        .arg(target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("running mount: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                if status.success() {
                    return Ok(());
                }
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!("mount -t nfs {source}: {}", err.trim()));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                // Reap it off this thread: a mount stuck in the kernel may
                // not die at once.
                std::thread::spawn(move || child.wait());
                return Err(format!(
                    "mount -t nfs {source}: no answer within {timeout:?}"
                ));
            }
            Err(e) => return Err(format!("waiting for mount: {e}")),
        }
    }
}

/// Opens `rel` below the directory `root`, refusing any symlink and any
/// escape (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), creating missing
/// directories one component at a time on the way. This is what keeps a
/// container from pointing a subPath at the host through a symlink it
/// planted in the volume (CVE-2017-1002101, CVE-2021-25741).
pub fn open_beneath(root: &Path, rel: &Path) -> io::Result<OwnedFd> {
    let how = |flags: OFlag| {
        OpenHow::new().flags(flags | OFlag::O_CLOEXEC).resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        )
    };
    // The volume's own directory is trusted (the agent made it, or it is the
    // hostPath the manifest names); what lies below it is not.
    let mut cur: OwnedFd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let comps: Vec<&std::ffi::OsStr> = rel
        .components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("subPath {} must be relative without '..'", rel.display()),
            )),
        })
        .collect::<io::Result<_>>()?;
    for (i, name) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let flags = if last {
            OFlag::O_PATH
        } else {
            OFlag::O_PATH | OFlag::O_DIRECTORY
        };
        match openat2(&cur, *name, how(flags)) {
            Ok(fd) => cur = fd,
            Err(nix::errno::Errno::ENOENT) => {
                // The kubelet creates a missing subPath as a directory.
                let dirfd = nix::fcntl::openat(
                    &cur,
                    ".",
                    OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                match nix::sys::stat::mkdirat(&dirfd, *name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                cur = openat2(&cur, *name, how(flags))?;
            }
            Err(nix::errno::Errno::ELOOP) | Err(nix::errno::Errno::EXDEV) => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "subPath {} goes through a symlink or out of its volume",
                        rel.display()
                    ),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(cur)
}

/// Bind-mounts subPath `rel` of the volume at `volume_path` onto `target`
/// (created as a file or directory to match) and returns `target`. The bind
/// goes through the opened file descriptor, so what is mounted is what was
/// checked, not whatever the path names a moment later.
pub fn bind_subpath(volume_path: &Path, rel: &Path, target: &Path) -> io::Result<PathBuf> {
    if is_mount_point(target) {
        return Ok(target.to_path_buf());
    }
    let fd = open_beneath(volume_path, rel)?;
    let fd_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let is_dir = std::fs::metadata(&fd_path)?.is_dir();
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if is_dir {
        std::fs::create_dir_all(target)?;
    } else if !target.exists() {
        std::fs::File::create(target)?;
    }
    mount(
        Some(fd_path.as_str()),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )?;
    Ok(target.to_path_buf())
}

/// Bytes used by the files below `dir` (for emptyDir size limits).
pub fn usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

/// Unmounts everything mounted below `dir` (canonical), deepest first
/// (lazily, so that a dead NFS server cannot block it).
pub fn unmount_below(dir: &Path) -> Result<(), String> {
    let mounts = hostfs::mount_points_below(dir).map_err(|e| format!("reading mountinfo: {e}"))?;
    let mut errors = vec![];
    for m in mounts {
        if let Err(e) = unmount(&m) {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Unmounts whatever is mounted on `path` (every stacked mount), lazily.
pub fn unmount(path: &Path) -> Result<(), String> {
    while is_mount_point(path) {
        umount2(path, MntFlags::MNT_DETACH)
            .map_err(|e| format!("unmounting {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Directories a Delete reclaim never empties, whatever a
/// PersistentVolume says: the root and everything one level below it, and
/// the system's own trees. The agent's own directories are added by the
/// caller.
const SYSTEM_TREES: [&str; 14] = [
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var/lib/containerd",
];

/// Why a volume was not reclaimed.
#[derive(Debug, thiserror::Error)]
pub enum ReclaimError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("refusing to empty {0}: the root, a top-level directory or a system directory")]
    Protected(PathBuf),
    #[error("refusing to empty {0}: it holds {1}")]
    HoldsAgentDirectory(PathBuf, PathBuf),
    #[error("refusing to empty {path}: outside hostPathAllowedPrefixes ({allowed})")]
    NotAllowed { path: PathBuf, allowed: String },
    #[error(transparent)]
    Remove(#[from] hostfs::RemoveError),
}

/// Empties a hostPath/local PersistentVolume whose claim was deleted with
/// reclaim policy Delete, keeping the directory itself. The path is
/// resolved first (a symlink anywhere in it counts for where it leads);
/// the result must lie below `allowed` (when not empty), must not be the
/// root, a top-level directory or a system tree, and must not hold any of
/// `protected` (the agent's own directories). The removal never crosses
/// into another filesystem.
pub fn reclaim(
    path: &Path,
    allowed: &[PathBuf],
    protected: &[PathBuf],
) -> Result<(), ReclaimError> {
    let real = std::fs::canonicalize(path).map_err(|source| ReclaimError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !real.is_dir() {
        return Err(ReclaimError::NotADirectory(real));
    }
    if real.components().count() <= 2 || SYSTEM_TREES.iter().any(|t| real.starts_with(t)) {
        return Err(ReclaimError::Protected(real));
    }
    if let Some(p) = protected.iter().find(|p| p.starts_with(&real)) {
        return Err(ReclaimError::HoldsAgentDirectory(real, p.clone()));
    }
    if !allowed.is_empty() {
        let inside = allowed
            .iter()
            .any(|a| std::fs::canonicalize(a).is_ok_and(|a| real.starts_with(a)));
        if !inside {
            return Err(ReclaimError::NotAllowed {
                path: real,
                allowed: allowed
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    hostfs::empty_dir_one_filesystem(&real)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        crate::test_support::temp_dir(&format!("vol-{tag}"))
    }

    #[test]
    fn host_path_types() {
        let d = temp("hp");
        assert!(check_host_path(&d, "Directory").is_ok());
        assert!(
            check_host_path(&d, "File")
                .unwrap_err()
                .contains("is not a file")
        );
        assert!(check_host_path(&d.join("new/dir"), "DirectoryOrCreate").is_ok());
        assert!(d.join("new/dir").is_dir());
        assert!(check_host_path(&d.join("f"), "FileOrCreate").is_ok());
        assert!(std::fs::metadata(d.join("f")).unwrap().is_file());
        assert!(check_host_path(&d.join("no/parent/f"), "FileOrCreate").is_err());
        assert!(
            check_host_path(&d.join("f"), "DirectoryOrCreate")
                .unwrap_err()
                .contains("not a directory")
        );
        assert!(check_host_path(Path::new("/dev/null"), "CharDevice").is_ok());
        assert!(check_host_path(Path::new("/dev/null"), "BlockDevice").is_err());
        assert!(check_host_path(&d.join("missing"), "Directory").is_err());
        assert!(check_host_path(&d.join("missing"), "").is_ok());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn reclaims_empty_only_safe_directories() {
        let d = temp("reclaim");
        let vol = d.join("vol");
        std::fs::create_dir_all(vol.join("sub")).unwrap();
        std::fs::write(vol.join("sub/f"), b"x").unwrap();
        let keep = d.join("keep");
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::write(keep.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink(&keep, vol.join("link")).unwrap();
        std::os::unix::fs::symlink(&keep, d.join("via-link")).unwrap();
        let root = d.join("agent-root");
        std::fs::create_dir_all(&root).unwrap();
        // Refused: system and top-level directories, one holding the
        // agent's directory, one outside the allow-list (also when reached
        // through a symlink from inside it).
        for (path, allowed, what) in [
            (PathBuf::from("/"), vec![], "Protected"),
            (PathBuf::from("/etc"), vec![], "Protected"),
            (PathBuf::from("/tmp"), vec![], "Protected"),
            (PathBuf::from("/usr/share"), vec![], "Protected"),
            (d.clone(), vec![], "HoldsAgentDirectory"),
            (keep.clone(), vec![vol.clone()], "NotAllowed"),
            (d.join("via-link"), vec![d.join("via-link")], "NotAllowed"),
        ] {
            let allowed = if what == "NotAllowed" && path.ends_with("via-link") {
                vec![vol.clone()]
            } else {
                allowed
            };
            let e = reclaim(&path, &allowed, std::slice::from_ref(&root)).unwrap_err();
            assert!(
                format!("{e:?}").starts_with(what),
                "{}: {e:?}",
                path.display()
            );
        }
        assert!(keep.join("f").exists());
        reclaim(&vol, std::slice::from_ref(&d), std::slice::from_ref(&root)).unwrap();
        assert!(vol.is_dir());
        assert_eq!(std::fs::read_dir(&vol).unwrap().count(), 0);
        assert!(
            keep.join("f").exists(),
            "a symlink in the volume is not followed"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn subpaths_cannot_escape() {
        let d = temp("sp");
        let vol = d.join("vol");
        std::fs::create_dir_all(vol.join("ok")).unwrap();
        std::os::unix::fs::symlink("/etc", vol.join("evil")).unwrap();
        std::os::unix::fs::symlink("ok", vol.join("inner")).unwrap();
        assert!(open_beneath(&vol, Path::new("ok")).is_ok());
        assert!(open_beneath(&vol, Path::new("made/on/demand")).is_ok());
        assert!(vol.join("made/on/demand").is_dir());
        for bad in ["evil", "evil/passwd", "inner", "../vol"] {
            assert!(
                open_beneath(&vol, Path::new(bad)).is_err(),
                "{bad} should be refused"
            );
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}

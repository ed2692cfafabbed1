//! Where the pods' namespaces are pinned: a mount namespace of the agent's
//! own, the pin namespace, whose root is a small tmpfs holding a bind mount
//! of each pod's network, UTS and IPC namespace file at
//! `/pods/<uid>/<kind>`. The pin namespace is itself pinned by a bind
//! mount in the host's mount table (`<root>/pins/namespace`), so that it
//! and every pod namespace in it outlive the agent; a restarted agent
//! enters it again. A mount namespace's file can only be pinned on a mount
//! that is not shared (the kernel refuses what propagation could turn into
//! a loop; systemd makes `/` shared), so `<root>/pins` is first bound onto
//! itself and made private, as unshare(1) documents for `--mount=file`:
//! two mounts in the host's table for all pods.
//!
//! Why not pin each namespace in the host's mount table (`ip netns add`
//! does): every line of the host's table is read again and again as pods
//! start. runc and the containerd shim read `/proc/self/mountinfo` about 15
//! times per container, so three more lines per pod made the start of many
//! pods quadratic: at 110 pods, 440 more lines slowed raw containerd's
//! create and start of 220 containers by a quarter.
//!
//! A path inside the pin namespace is reached from the host through a
//! thread of the agent parked there: `/proc/<pid>/task/<tid>/root` is that
//! thread's root, and a lookup below it walks the pin namespace's mounts.
//! runc (joining a namespace by path), the CNI plugins (`CNI_NETNS`) and the
//! probes open these paths while the agent runs, which is the only time
//! they are used: a path is handed out for a creation, never kept by the
//! runtime past it.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

/// The namespace kinds a pod can have pinned, in their order.
pub const KINDS: [&str; 3] = ["net", "uts", "ipc"];

/// The pin namespace, entered.
pub struct Pins {
    /// The pin namespace's file, open (what threads `setns` into).
    ns: OwnedFd,
    /// `/proc/<pid>/task/<tid>/root` of the parked thread.
    root: PathBuf,
}

impl std::fmt::Debug for Pins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pins").field("root", &self.root).finish()
    }
}

fn errno(what: &str) -> impl FnOnce(nix::Error) -> io::Error + '_ {
    move |e| io::Error::new(io::Error::from(e).kind(), format!("{what}: {e}"))
}

/// Enters the mount namespace of `file` on the calling thread, which must
/// have its own filesystem context (`unshare(CLONE_FS)`) first.
fn enter(file: &impl AsFd) -> io::Result<()> {
    setns(file, CloneFlags::CLONE_NEWNS).map_err(errno("entering the pin namespace"))
}

/// Makes a new pin namespace on the calling thread and moves the thread
/// into it: a private copy of the host's mounts whose root is then
/// switched to a fresh tmpfs (mounted on `mount_dir`, an empty directory)
/// with `/proc` and `/pods`, and the copies dropped, so that it holds no
/// host filesystem busy.
fn create(mount_dir: &Path) -> io::Result<()> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(errno("unshare(CLONE_NEWNS)"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(errno("making the pin namespace private"))?;
    std::fs::create_dir_all(mount_dir)?;
    mount(
        Some("kubelet-lite-pins"),
        mount_dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700,size=1m"),
    )
    .map_err(errno("mounting the pin namespace's tmpfs"))?;
    for d in ["proc", "pods", ".old"] {
        std::fs::create_dir(mount_dir.join(d))?;
    }
    mount(
        Some("proc"),
        &mount_dir.join("proc"),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(errno("mounting /proc in the pin namespace"))?;
    nix::unistd::pivot_root(mount_dir, &mount_dir.join(".old"))
        .map_err(errno("pivot_root into the pin namespace's tmpfs"))?;
    nix::unistd::chdir("/").map_err(errno("chdir"))?;
    umount2("/.old", MntFlags::MNT_DETACH).map_err(errno("dropping the host's mounts"))?;
    std::fs::remove_dir("/.old")
}

impl Pins {
    /// Enters the pin namespace pinned in `dir` (at `dir/namespace`), or
    /// makes one and pins it there (its tmpfs mounted on `dir/root` inside
    /// it only), and parks a thread in it for the agent's lifetime.
    pub fn open(dir: &Path) -> io::Result<Pins> {
        std::fs::create_dir_all(dir)?;
        if !crate::hostfs::is_mount_point(dir) {
            mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(errno("binding the pins' directory onto itself"))?;
        }
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(errno("making the pins' directory private"))?;
        let file = dir.join("namespace");
        let file = file.as_path();
        let existing = File::open(file).ok();
        let mount_dir = dir.join("root");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("pin-namespace".into())
            .spawn(move || {
                let entered = (|| -> io::Result<bool> {
                    unshare(CloneFlags::CLONE_FS).map_err(errno("unshare(CLONE_FS)"))?;
                    // An earlier run's namespace, when the file pins one
                    // (setns refuses anything else) laid out as ours.
                    if let Some(f) = &existing
                        && enter(f).is_ok()
                    {
                        if Path::new("/pods").is_dir() {
                            return Ok(false);
                        }
                        return Err(io::Error::other(
                            "the pinned mount namespace is not a pin namespace",
                        ));
                    }
                    create(&mount_dir)?;
                    Ok(true)
                })();
                let ok = entered.is_ok();
                let _ = tx.send(entered.map(|made| (made, nix::unistd::gettid())));
                if ok {
                    // Parked for good: its root is how the host reaches the
                    // pins.
                    loop {
                        std::thread::park();
                    }
                }
            })?;
        let (made, tid) = rx
            .recv()
            .map_err(|_| io::Error::other("the pin namespace thread ended"))??;
        let root = PathBuf::from(format!("/proc/{}/task/{tid}/root", std::process::id()));
        if made {
            // A stale pin (not a pin namespace any more) goes first.
            let _ = umount2(file, MntFlags::MNT_DETACH);
            File::create(file)?;
            let source = format!("/proc/{}/task/{tid}/ns/mnt", std::process::id());
            mount(
                Some(source.as_str()),
                file,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(errno("pinning the pin namespace"))?;
        }
        let ns = File::open(file)?.into();
        Ok(Pins { ns, root })
    }

    /// The path of pod `uid`'s namespace `kind`, as the host reaches it.
    pub fn path(&self, uid: &str, kind: &str) -> PathBuf {
        self.root.join("pods").join(uid).join(kind)
    }

    /// Whether pod `uid`'s namespace `kind` is pinned.
    pub fn pinned(&self, uid: &str, kind: &str) -> bool {
        crate::hostfs::is_mount_point(&self.path(uid, kind))
    }

    /// The UIDs of the pods with a pin directory.
    pub fn pods(&self) -> Vec<String> {
        std::fs::read_dir(self.root.join("pods"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Runs `f` on a new thread inside the pin namespace.
    fn inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let ns = self.ns.try_clone().map_err(|e| e.to_string())?;
        std::thread::spawn(move || {
            unshare(CloneFlags::CLONE_FS).map_err(|e| format!("unshare(CLONE_FS): {e}"))?;
            enter(&ns).map_err(|e| e.to_string())?;
            drop(ns);
            f()
        })
        .join()
        .map_err(|_| "pin namespace thread panicked".to_string())?
    }

    /// Creates new namespaces of `kinds` for pod `uid` and pins them;
    /// `setup` runs in them first (hostname, loopback). Whatever was pinned
    /// for the pod before is dropped first, so that its set stays
    /// consistent; nothing stays pinned when this fails.
    pub fn pin_new(
        &self,
        uid: &str,
        kinds: &[&str],
        setup: impl FnOnce() -> Result<(), String> + Send + 'static,
    ) -> Result<(), String> {
        let uid = uid.to_string();
        let kinds: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
        self.inside(move || {
            let dir = Path::new("/pods").join(&uid);
            let made = (|| {
                unpin_all(&dir)?;
                if kinds.is_empty() {
                    return Ok(());
                }
                let mut flags = CloneFlags::empty();
                for k in &kinds {
                    flags |= match k.as_str() {
                        "net" => CloneFlags::CLONE_NEWNET,
                        "uts" => CloneFlags::CLONE_NEWUTS,
                        _ => CloneFlags::CLONE_NEWIPC,
                    };
                }
                std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                unshare(flags).map_err(|e| format!("unshare: {e}"))?;
                setup()?;
                for k in &kinds {
                    let target = dir.join(k);
                    File::create(&target).map_err(|e| format!("{}: {e}", target.display()))?;
                    let source = format!("/proc/thread-self/ns/{k}");
                    mount(
                        Some(source.as_str()),
                        &target,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .map_err(|e| format!("pinning the {k} namespace: {e}"))?;
                }
                Ok(())
            })();
            if made.is_err() {
                let _ = unpin_all(&dir);
            }
            made
        })
    }

    /// Releases pod `uid`'s namespaces (those no process uses any more go
    /// with their pins). Idempotent.
    pub fn unpin(&self, uid: &str) -> Result<(), String> {
        let dir = Path::new("/pods").join(uid);
        self.inside(move || unpin_all(&dir))
    }
}

/// Inside the pin namespace: unmounts and removes the pins of one pod's
/// directory, then the directory.
fn unpin_all(dir: &Path) -> Result<(), String> {
    for k in KINDS {
        super::unpin(&dir.join(k)).map_err(|e| e.to_string())?;
    }
    super::unpin(dir).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn inode(p: &Path) -> u64 {
        std::fs::metadata(p).map(|m| m.ino()).unwrap_or(0)
    }

    fn checks(base: &Path) -> Result<(), String> {
        let dir = base.join("pins");
        let pins = Pins::open(&dir).map_err(|e| format!("open: {e}"))?;
        pins.pin_new("u1", &["net", "uts"], || Ok(()))?;
        if !(pins.pinned("u1", "net") && pins.pinned("u1", "uts") && !pins.pinned("u1", "ipc")) {
            return Err("the pod's net and uts namespaces, and only those, are pinned".into());
        }
        let net = inode(&pins.path("u1", "net"));
        if net == 0 || net == inode(Path::new("/proc/self/ns/net")) {
            return Err(format!("the pinned network namespace is a new one: {net}"));
        }
        let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        if host.contains("/pods/u1") {
            return Err("a pin is in the host's mount table".into());
        }
        if pins.pods() != ["u1"] {
            return Err(format!("pods: {:?}", pins.pods()));
        }
        // As a restarted agent: the same namespace, entered again.
        let again = Pins::open(&dir).map_err(|e| format!("open again: {e}"))?;
        if !again.pinned("u1", "net") || inode(&again.path("u1", "net")) != net {
            return Err("the pin namespace was not found again".into());
        }
        again.unpin("u1")?;
        if pins.pinned("u1", "net") || !pins.pods().is_empty() {
            return Err("unpinned namespaces are still there".into());
        }
        Ok(())
    }

    /// The pins' directory on a shared mount (`/` is shared under
    /// systemd, where a mount namespace's file cannot be pinned): the pin
    /// namespace is made and pinned all the same, found again by a second
    /// opening, holds a pod's namespaces out of the host's mount table and
    /// releases them. Needs root.
    #[test]
    fn pins_live_out_of_the_host_table_even_on_a_shared_mount() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let base = crate::test_support::temp_dir("pins-shared");
        mount(
            Some("kl-test-pins"),
            &base,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=1m"),
        )
        .unwrap();
        mount(
            None::<&str>,
            &base,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .unwrap();
        // A peer of the mount in another mount namespace (systemd's services
        // with private mounts are such peers or slaves of `/`): what is
        // mounted below it propagates there.
        let (peer_ready, ready) = std::sync::mpsc::channel();
        let (end, ended) = std::sync::mpsc::channel::<()>();
        let peer = std::thread::spawn(move || {
            let made = unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS);
            let _ = peer_ready.send(made.is_ok());
            let _ = ended.recv();
        });
        assert!(ready.recv().unwrap(), "a second mount namespace");
        let result = checks(&base);
        drop(end);
        peer.join().unwrap();
        for m in ["pins/namespace", "pins", ""] {
            let _ = umount2(&base.join(m), MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&base);
        result.unwrap();
    }
}

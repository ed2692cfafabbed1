//! Host filesystem primitives the agent must get right because it runs as
//! root next to other people's data: the mount table, mount points, removal
//! that never crosses into another filesystem, and bounded reads of files a
//! container controls. Blocking: callers run these off the async executor.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, StatxAttributes, StatxFlags};

/// One line of `/proc/self/mountinfo` (proc(5)), the fields the agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted (field 5), unescaped.
    pub mount_point: PathBuf,
    /// The directory of the filesystem that is mounted there (field 4).
    pub root: String,
    pub fs_type: String,
    pub source: String,
    /// Per-superblock options (the last field): `rw,size=...`.
    pub super_options: String,
}

/// Parses a mountinfo text. Lines that do not parse are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mut pre = pre.split(' ');
            let root = unescape(pre.nth(3)?);
            let mount_point = PathBuf::from(unescape(pre.next()?));
            let mut post = post.split(' ');
            Some(MountEntry {
                mount_point,
                root,
                fs_type: post.next()?.to_string(),
                source: unescape(post.next()?),
                super_options: post.next().unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The mount table of the agent's mount namespace.
pub fn mounts() -> io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// Mount points strictly below `dir` (compared component-wise; `dir` should
/// be canonical, as the kernel reports canonical paths), deepest first.
pub fn mount_points_below(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut below: Vec<PathBuf> = mounts()?
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|m| m != dir && m.starts_with(dir))
        .collect();
    below.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    below.dedup();
    Ok(below)
}

/// Whether `path` (not followed if a symlink) is the root of a mount. Asks
/// the kernel (statx's STATX_ATTR_MOUNT_ROOT, Linux 5.8) rather than
/// comparing path text with the mount table, which a symlink or a bind mount
/// of a directory onto the same filesystem would fool; without it, falls
/// back to the mount table. A path that does not exist is not a mount point.
pub fn is_mount_point(path: &Path) -> bool {
    match mount_root_at(rustix::fs::CWD, path) {
        Ok(Some(root)) => root,
        Ok(None) => mounts().is_ok_and(|m| m.iter().any(|m| m.mount_point == path)),
        Err(_) => false,
    }
}

/// statx of `name` below `dir`, without following a final symlink and
/// without asking a network filesystem's server (AT_STATX_DONT_SYNC: a dead
/// NFS server must not hang the caller on cached metadata).
fn statx_at<Fd: AsFd>(dir: Fd, name: &Path) -> io::Result<rustix::fs::Statx> {
    Ok(rustix::fs::statx(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_DONT_SYNC,
        StatxFlags::TYPE | StatxFlags::MNT_ID,
    )?)
}

/// `Some(true)` when `name` below `dir` is a mount root, `None` when the
/// kernel cannot tell.
fn mount_root_at<Fd: AsFd>(dir: Fd, name: &Path) -> io::Result<Option<bool>> {
    let st = statx_at(dir, name)?;
    Ok(st
        .stx_attributes_mask
        .contains(StatxAttributes::MOUNT_ROOT)
        .then(|| st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)))
}

/// Why a removal stopped short.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("left in place, on another filesystem (still mounted?): {}", list(.0))]
    OtherFilesystem(Vec<PathBuf>),
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What identifies the filesystem a removal must stay on: the mount (by
/// its ID, which tells apart two bind mounts of one device) and the device.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Filesystem {
    mnt_id: Option<u64>,
    dev: (u32, u32),
}

impl Filesystem {
    fn of(st: &rustix::fs::Statx) -> Filesystem {
        Filesystem {
            mnt_id: (st.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(st.stx_mnt_id),
            dev: (st.stx_dev_major, st.stx_dev_minor),
        }
    }
}

/// Removes `dir` and everything below it, as `rm -rf --one-file-system`
/// (the kubelet's `RemoveAllOneFilesystem`): symlinks are removed, never
/// followed, and nothing on another filesystem (a mount point, whatever
/// the mount table says) is entered or removed; those are reported and
/// left, with the directories that hold them. Walks by file descriptor,
/// so a rename under the walk cannot redirect it. A missing `dir` is fine.
pub fn remove_all_one_filesystem(dir: &Path) -> Result<(), RemoveError> {
    let io_err = |e: io::Error| RemoveError::Io {
        path: dir.to_path_buf(),
        source: e,
    };
    let ignore_missing = |r: rustix::io::Result<()>| match r {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(io_err(e.into())),
    };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(e)),
        Ok(m) if !m.is_dir() => return ignore_missing(rustix::fs::unlink(dir)),
        Ok(_) if is_mount_point(dir) => {
            return Err(RemoveError::OtherFilesystem(vec![dir.to_path_buf()]));
        }
        Ok(_) => {}
    }
    empty_dir_one_filesystem(dir)?;
    ignore_missing(rustix::fs::rmdir(dir))
}

/// Removes everything below the directory `dir`, keeping `dir` itself,
/// with the same rules as [`remove_all_one_filesystem`]. `dir` itself
/// must not be a symlink, and may be a mount point (a volume's root).
pub fn empty_dir_one_filesystem(dir: &Path) -> Result<(), RemoveError> {
    let err = |e: io::Error| RemoveError::Io {
        path: dir.to_path_buf(),
        source: e,
    };
    let fd = rustix::fs::open(
        dir,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err(e.into()))?;
    let st = rustix::fs::statx(
        &fd,
        "",
        AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC,
        StatxFlags::TYPE | StatxFlags::MNT_ID,
    )
    .map_err(|e| err(e.into()))?;
    let mut left = vec![];
    empty_dir(&fd, dir, Filesystem::of(&st), &mut left)?;
    if left.is_empty() {
        Ok(())
    } else {
        Err(RemoveError::OtherFilesystem(left))
    }
}

/// Removes what `fd` (the directory at `path`, on `fs`) holds; entries on
/// another filesystem go to `left`.
fn empty_dir(
    fd: &OwnedFd,
    path: &Path,
    fs: Filesystem,
    left: &mut Vec<PathBuf>,
) -> Result<(), RemoveError> {
    let io_err = |p: &Path, e: io::Error| RemoveError::Io {
        path: p.to_path_buf(),
        source: e,
    };
    let dup = rustix::io::dup(fd).map_err(|e| io_err(path, e.into()))?;
    let mut names = vec![];
    for entry in rustix::fs::Dir::read_from(dup).map_err(|e| io_err(path, e.into()))? {
        let entry = entry.map_err(|e| io_err(path, e.into()))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(std::ffi::OsStr::from_bytes(name).to_os_string());
        }
    }
    for name in names {
        let child = path.join(&name);
        let st = match statx_at(fd, Path::new(&name)) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&child, e)),
        };
        if st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT) || Filesystem::of(&st) != fs {
            left.push(child);
            continue;
        }
        let is_dir = rustix::fs::FileType::from_raw_mode(st.stx_mode.into())
            == rustix::fs::FileType::Directory;
        if is_dir {
            let sub = rustix::fs::openat(
                fd,
                Path::new(&name),
                OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_err(&child, e.into()))?;
            let before = left.len();
            empty_dir(&sub, &child, fs, left)?;
            if left.len() > before {
                continue; // holds a mount: keep the directories leading to it
            }
        }
        let flags = if is_dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        match rustix::fs::unlinkat(fd, Path::new(&name), flags) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(io_err(&child, e.into())),
        }
    }
    Ok(())
}

/// Reads at most the last `max` bytes of the regular file at `path`, as the
/// kubelet reads a termination message (`tail.ReadAtMost`). The file is a
/// container's to fill: a symlink, a FIFO or a device is refused (opened
/// non-blocking and without following a final symlink, then checked), and a
/// file of any size costs at most `max` bytes.
pub fn read_tail(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut file = File::from(fd);
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    let len = meta.len();
    if len > max {
        file.seek(SeekFrom::Start(len - max))?;
    }
    let mut out = Vec::with_capacity(usize::try_from(len.min(max)).unwrap_or(0));
    file.take(max).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        crate::test_support::temp_dir(&format!("hostfs-{tag}"))
    }

    #[test]
    fn mountinfo_lines_parse_with_escapes() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    garbage\n\
                    40 35 0:5 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, Path::new("/mnt/with space"));
        assert_eq!(m[0].root, "/mnt1");
        assert_eq!(m[0].fs_type, "ext3");
        assert_eq!(m[0].source, "/dev/root");
        assert_eq!(m[0].super_options, "rw,errors=continue");
        assert_eq!(m[1].fs_type, "cgroup2");
    }

    #[test]
    fn mount_points_are_told_by_the_kernel() {
        assert!(is_mount_point(Path::new("/proc")));
        let d = temp("mp");
        assert!(!is_mount_point(&d));
        assert!(!is_mount_point(&d.join("missing")));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn removal_deletes_trees_and_symlinks_but_never_follows_them() {
        let d = temp("rm");
        let outside = d.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"data").unwrap();
        let tree = d.join("tree");
        std::fs::create_dir_all(tree.join("a/b/c")).unwrap();
        std::fs::write(tree.join("a/b/c/f"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/link")).unwrap();
        std::os::unix::fs::symlink(outside.join("keep"), tree.join("filelink")).unwrap();
        remove_all_one_filesystem(&tree).unwrap();
        assert!(!tree.exists());
        assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"data");
        // A missing directory is already removed.
        remove_all_one_filesystem(&tree).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// As root (the tests' normal case): a tmpfs and a bind mount of a
    /// directory of the same filesystem below the tree are both left alone.
    #[test]
    fn removal_stays_on_one_filesystem() {
        use nix::mount::{MntFlags, MsFlags, mount, umount2};
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let d = temp("onefs");
        let outside = d.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"data").unwrap();
        let tree = d.join("tree");
        for sub in ["tmp", "x/bind"] {
            std::fs::create_dir_all(tree.join(sub)).unwrap();
        }
        std::fs::write(tree.join("x/plain"), b"x").unwrap();
        let none: Option<&str> = None;
        mount(
            Some("tmpfs"),
            &tree.join("tmp"),
            Some("tmpfs"),
            MsFlags::empty(),
            none,
        )
        .unwrap();
        std::fs::write(tree.join("tmp/in-tmpfs"), b"t").unwrap();
        mount(
            Some(&outside),
            &tree.join("x/bind"),
            none,
            MsFlags::MS_BIND,
            none,
        )
        .unwrap();
        let result = remove_all_one_filesystem(&tree);
        let still = (
            std::fs::read(outside.join("keep")),
            std::fs::read(tree.join("tmp/in-tmpfs")),
            tree.join("x/plain").exists(),
        );
        umount2(&tree.join("tmp"), MntFlags::MNT_DETACH).unwrap();
        umount2(&tree.join("x/bind"), MntFlags::MNT_DETACH).unwrap();
        match result {
            Err(RemoveError::OtherFilesystem(mut left)) => {
                left.sort();
                assert_eq!(left, vec![tree.join("tmp"), tree.join("x/bind")]);
            }
            other => panic!("expected the mounts to be left: {other:?}"),
        }
        assert_eq!(still.0.unwrap(), b"data");
        assert_eq!(still.1.unwrap(), b"t");
        assert!(!still.2, "what is on the tree's own filesystem goes");
        remove_all_one_filesystem(&tree).unwrap();
        assert!(!tree.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn tails_are_bounded_and_only_regular_files_are_read() {
        let d = temp("tail");
        let f = d.join("msg");
        std::fs::write(&f, b"hello").unwrap();
        assert_eq!(read_tail(&f, 4096).unwrap(), b"hello");
        assert_eq!(read_tail(&f, 3).unwrap(), b"llo");
        // A 2 GiB sparse file costs 4 KiB.
        let big = File::create(d.join("big")).unwrap();
        big.set_len(2 << 30).unwrap();
        assert_eq!(read_tail(&d.join("big"), 4096).unwrap().len(), 4096);
        std::os::unix::fs::symlink("/etc/passwd", d.join("link")).unwrap();
        assert!(read_tail(&d.join("link"), 4096).is_err());
        nix::unistd::mkfifo(
            &d.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let t = std::time::Instant::now();
        assert!(read_tail(&d.join("fifo"), 4096).is_err());
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        assert!(read_tail(Path::new("/dev/zero"), 4096).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}

//! configMap and secret files written as the kubelet's `AtomicWriter`
//! (pkg/volume/util/atomic_writer.go) writes them:
//!
//! ```text
//! <volume>/..<version>/<key>          the files, in a fresh directory
//! <volume>/..data -> ..<version>      swapped in one rename(2)
//! <volume>/<key>  -> ..data/<key>     what containers open
//! ```
//!
//! A container sees either the old set or the new one, never a mix. The
//! version is a hash of the content, so an unchanged set is not rewritten
//! (an agent restart writes nothing). Every step goes through a descriptor
//! of the volume directory, creates with `O_EXCL | O_NOFOLLOW` in a
//! directory it has just made, and removes without following symlinks: an
//! entry planted in the volume cannot make the agent (root) write, chmod or
//! delete anything outside it.

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};
use sha2::{Digest, Sha256};

use super::File;
use crate::hostfs;

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// The components of a file's path, checked as the API server checks
/// `items[].path`: relative, no `..` component, not starting with `..`.
fn components(path: &str) -> io::Result<Vec<&str>> {
    let invalid = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("file path {path:?} {why}"),
        )
    };
    if path.is_empty() || path.starts_with("..") {
        return Err(invalid("must not be empty or start with '..'"));
    }
    Path::new(path)
        .components()
        .map(|c| match c {
            Component::Normal(n) => n.to_str().ok_or_else(|| invalid("is not UTF-8")),
            _ => Err(invalid("must be relative, without '..'")),
        })
        .collect()
}

/// Names the content: paths, modes and data.
fn version(files: &[File]) -> String {
    let mut h = Sha256::new();
    for f in files {
        for part in [f.path.as_bytes(), &f.mode.to_le_bytes(), &f.data] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
    }
    format!("..{}", hex::encode(&h.finalize()[..12]))
}

fn open_dir_at(dir: &OwnedFd, name: &str) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Removes `name` below `dir` (at `dir_path`) whatever it is, never
/// following a symlink and never leaving the volume's filesystem.
fn remove_at(dir_path: &Path, name: &str) -> io::Result<()> {
    hostfs::remove_all_one_filesystem(&dir_path.join(name)).map_err(io::Error::other)
}

/// Makes `dir` (an existing directory the agent made) hold exactly
/// `files`; returns whether anything was written.
pub fn write(dir: &Path, files: &[File]) -> io::Result<bool> {
    let mut top: Vec<&str> = vec![];
    for f in files {
        let first = components(&f.path)?[0];
        if !top.contains(&first) {
            top.push(first);
        }
    }
    let name = version(files);
    let dir_fd = rustix::fs::open(
        dir,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let current = rustix::fs::readlinkat(&dir_fd, DATA, vec![]).ok();
    let unchanged = current.is_some_and(|c| c.as_bytes() == name.as_bytes())
        && open_dir_at(&dir_fd, &name).is_ok();
    if !unchanged {
        // A directory of this name without `..data` pointing at it is a
        // leftover of an interrupted write: start it again.
        if rustix::fs::statx(
            &dir_fd,
            name.as_str(),
            AtFlags::SYMLINK_NOFOLLOW,
            rustix::fs::StatxFlags::TYPE,
        )
        .is_ok()
        {
            remove_at(dir, &name)?;
        }
        rustix::fs::mkdirat(&dir_fd, name.as_str(), Mode::from_raw_mode(0o755))?;
        let version_fd = open_dir_at(&dir_fd, &name)?;
        for f in files {
            write_file(&version_fd, &components(&f.path)?, f)?;
        }
        match rustix::fs::unlinkat(&dir_fd, DATA_TMP, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(_) => remove_at(dir, DATA_TMP)?,
        }
        rustix::fs::symlinkat(name.as_str(), &dir_fd, DATA_TMP)?;
        rustix::fs::renameat(&dir_fd, DATA_TMP, &dir_fd, DATA)?;
    }
    // What containers open: one symlink per top-level name, through
    // `..data`; anything else there (a stale name, an older layout's plain
    // file, something planted) goes.
    let mut changed = !unchanged;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(n) = entry.file_name().to_str().map(str::to_string) else {
            remove_at(dir, &entry.file_name().to_string_lossy())?;
            continue;
        };
        let wanted = if n.starts_with("..") {
            n == DATA || n == name
        } else {
            top.contains(&n.as_str())
                && std::fs::read_link(entry.path()).is_ok_and(|t| t == Path::new(DATA).join(&n))
        };
        if !wanted {
            remove_at(dir, &n)?;
            changed = true;
        }
    }
    for t in top {
        match rustix::fs::symlinkat(format!("{DATA}/{t}").as_str(), &dir_fd, t) {
            Ok(()) => changed = true,
            Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(changed)
}

/// Creates one file below the fresh version directory, making its parent
/// directories on the way.
fn write_file(version_fd: &OwnedFd, comps: &[&str], f: &File) -> io::Result<()> {
    let (leaf, parents) = comps.split_last().expect("checked: not empty");
    let mut parent: Option<OwnedFd> = None;
    for p in parents {
        let at = parent.as_ref().unwrap_or(version_fd);
        match rustix::fs::mkdirat(at, *p, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        parent = Some(open_dir_at(at, p)?);
    }
    let at = parent.as_ref().unwrap_or(version_fd);
    let mode = f.mode & 0o7777;
    let fd = rustix::fs::openat(
        at,
        *leaf,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
    .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("{}: {e}", f.path)))?;
    // The mode exactly as asked, whatever the umask.
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    std::fs::File::from(fd).write_all(&f.data)
}

/// The files the volume at `dir` shows now, for tests and checks.
pub fn read(dir: &Path) -> io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut out = vec![];
    let mut stack = vec![dir.join(DATA)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir.join(DATA)).map(Path::to_path_buf);
                out.push((rel.map_err(io::Error::other)?, std::fs::read(e.path())?));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp(tag: &str) -> PathBuf {
        crate::test_support::temp_dir(&format!("atomic-{tag}"))
    }

    fn file(path: &str, data: &str, mode: u32) -> File {
        File {
            path: path.into(),
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    #[test]
    fn writes_the_kubelet_layout_once_and_swaps_versions() {
        let d = temp("layout");
        let v1 = [file("a", "1", 0o644), file("conf/b.yaml", "2", 0o400)];
        assert!(write(&d, &v1).unwrap());
        assert_eq!(std::fs::read_to_string(d.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(d.join("conf/b.yaml")).unwrap(), "2");
        assert_eq!(
            std::fs::read_link(d.join("a")).unwrap(),
            Path::new("..data/a")
        );
        let mode = std::fs::metadata(d.join("conf/b.yaml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o400);
        let first = std::fs::read_link(d.join(DATA)).unwrap();
        // Unchanged: nothing is written.
        assert!(!write(&d, &v1).unwrap());
        // Changed: a new version, the old one and stale names gone.
        assert!(write(&d, &[file("a", "3", 0o644)]).unwrap());
        assert_ne!(std::fs::read_link(d.join(DATA)).unwrap(), first);
        assert!(!d.join(&first).exists());
        assert!(!d.join("conf").exists());
        assert_eq!(read(&d).unwrap(), vec![(PathBuf::from("a"), b"3".to_vec())]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn planted_symlinks_are_never_followed() {
        let d = temp("plant");
        let host = temp("plant-host");
        std::fs::write(host.join("passwd"), "root:x:0:0").unwrap();
        std::fs::set_permissions(host.join("passwd"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let v1 = [file("a", "1", 0o644), file("dir/b", "2", 0o644)];
        write(&d, &v1).unwrap();
        // A container with write access replaces what it can see with
        // symlinks to host files, and plants the next version's name.
        std::fs::remove_file(d.join("a")).unwrap();
        std::os::unix::fs::symlink(host.join("passwd"), d.join("a")).unwrap();
        std::os::unix::fs::symlink(&host, d.join(DATA_TMP)).unwrap();
        let v2 = [file("a", "new", 0o600), file("dir/b", "2", 0o644)];
        let next = version(&v2);
        std::os::unix::fs::symlink(&host, d.join(&next)).unwrap();
        assert!(write(&d, &v2).unwrap());
        assert_eq!(
            std::fs::read_to_string(host.join("passwd")).unwrap(),
            "root:x:0:0"
        );
        let mode = std::fs::metadata(host.join("passwd"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o644, "host file not chmod-ed");
        assert_eq!(std::fs::read_to_string(d.join("a")).unwrap(), "new");
        assert!(host.join("passwd").exists());
        std::fs::remove_dir_all(&d).unwrap();
        std::fs::remove_dir_all(&host).unwrap();
    }

    #[test]
    fn bad_paths_are_refused() {
        let d = temp("bad");
        for p in ["", "../x", "..x", "/abs", "a/../../b"] {
            assert!(write(&d, &[file(p, "x", 0o644)]).is_err(), "{p:?}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}

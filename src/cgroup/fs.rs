//! The file operations under every controller: reading a cgroup's files
//! through one directory descriptor, writing a value with an error that names
//! the file, creating a v2 cgroup with its controllers enabled, and removing a
//! cgroup tree. Every path comes from the caller, so unit tests run all of
//! this against a temporary directory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::fcntl::OFlag;

use super::Error;

/// Where a controller reads its files: a cgroup directory in production, a
/// map of file texts in unit tests.
pub trait Source {
    /// The file's text; `None` when it does not exist or cannot be read
    /// (a controller the kernel does not offer here, a cgroup that went).
    fn read(&self, file: &'static str) -> Option<String>;

    /// The file's text as one number (`None` for "max" and the like).
    fn num(&self, file: &'static str) -> Option<u64> {
        self.read(file)?.trim().parse().ok()
    }

    /// As [`Source::read`], for a counter read again at every scrape, whose
    /// text goes to `parse`: the source may keep the file open between
    /// reads and read it into a reused buffer.
    fn counter<T>(&self, file: &'static str, parse: impl FnOnce(&str) -> T) -> Option<T> {
        self.read(file).map(|t| parse(&t))
    }

    /// A counter as one number.
    fn counter_num(&self, file: &'static str) -> Option<u64> {
        self.counter(file, |t| t.trim().parse().ok()).flatten()
    }
}

/// An opened cgroup directory. Its files are opened relative to it: the
/// long path is walked once per cgroup, not once per file (path lookup is
/// most of a scrape's cost otherwise).
///
/// Counter files stay open once read (see [`Source::counter`]): a scrape
/// then costs one `pread` per file instead of open, read and close. The
/// kernel makes a cgroup file's text afresh at every read from offset 0,
/// and a read of a cgroup that was removed fails (`ENODEV`), so a kept file
/// never serves stale figures. Each kept file costs a descriptor and its
/// read buffer in the kernel (one page).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// Counter files opened so far; `None`: the file does not exist here.
    kept: Mutex<Vec<(&'static str, Option<File>)>>,
    /// Whether process listings may be kept open too (cgroup v2).
    keep_listings: bool,
}

impl Dir {
    /// `None` when the directory does not exist (a cgroup that is gone).
    pub fn open(path: &Path) -> Option<Dir> {
        nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()
        .map(|fd| Dir {
            fd,
            kept: Mutex::default(),
            keep_listings: false,
        })
    }

    /// Lets [`Source::counter`] keep process listings (`cgroup.procs`)
    /// open too: right on cgroup v2, whose listing starts afresh at every
    /// read from offset 0, wrong on v1, which serves an open file the
    /// listing it made for it for as long as it is read at least once a
    /// second.
    pub fn keeping_listings(mut self) -> Dir {
        self.keep_listings = true;
        self
    }

    fn open_file(&self, file_name: &str) -> nix::Result<File> {
        nix::fcntl::openat(
            &self.fd,
            file_name,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map(File::from)
    }
}

/// cgroup files listed record by record: one read may end between
/// records (see [`read_text`]).
const ITERATED: &[&str] = &["cgroup.procs", "cgroup.threads", "tasks"];

/// The first read's size (v1 `memory.stat`, the largest cgroup file of
/// values, is under 2 KiB).
const SINGLE_READ: usize = 4096;

/// The longest record of a listing read with [`read_text`]: a pid line of
/// `cgroup.procs`, an interface line of `/proc/<pid>/net/dev` (some 350
/// bytes at most).
const RECORD_MAX: usize = 512;

/// The whole text of a kernel-made file read from offset 0 into `buf`
/// (kept by the caller, so that a scrape does not allocate per file).
///
/// A cgroup file of values is made in one call into a buffer that grows
/// until all fits, then copied out: a short read means the end. A listing
/// (a `seq_file` that walks records: `cgroup.procs`, `/proc/<pid>/net/dev`)
/// stops a read when the next record does not fit in what was asked or in
/// its page-sized buffer, or at the end: a read shorter than asked by more
/// than [`RECORD_MAX`] is the end too. Either saves the read that would
/// only find it.
pub fn read_text<'a>(file: &File, listing: bool, buf: &'a mut Vec<u8>) -> Option<&'a str> {
    if buf.len() < SINGLE_READ {
        buf.resize(SINGLE_READ, 0);
    }
    let mut len = 0;
    loop {
        let asked = buf.len() - len;
        let n = file.read_at(&mut buf[len..], len as u64).ok()?;
        len += n;
        let end = if listing {
            n == 0 || n + RECORD_MAX <= asked
        } else {
            n < asked
        };
        if end {
            break;
        }
        if len == buf.len() {
            buf.resize(2 * len, 0);
        }
    }
    std::str::from_utf8(&buf[..len]).ok()
}

thread_local! {
    /// The buffer of [`read_with`]: one per scraping thread, kept for the
    /// next file.
    static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reads `file` as [`read_text`] does, into this thread's buffer, and
/// gives the text to `parse`.
pub fn read_with<T>(file: &File, listing: bool, parse: impl FnOnce(&str) -> T) -> Option<T> {
    BUF.with_borrow_mut(|buf| read_text(file, listing, buf).map(parse))
}

impl Source for Dir {
    fn read(&self, file_name: &'static str) -> Option<String> {
        let file = self.open_file(file_name).ok()?;
        read_text(&file, ITERATED.contains(&file_name), &mut Vec::new()).map(str::to_string)
    }

    fn counter<T>(&self, file_name: &'static str, parse: impl FnOnce(&str) -> T) -> Option<T> {
        let listing = ITERATED.contains(&file_name);
        if listing && !self.keep_listings {
            let file = self.open_file(file_name).ok()?;
            return read_with(&file, listing, parse);
        }
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, file)) = kept.iter().find(|(name, _)| *name == file_name) {
            return read_with(file.as_ref()?, listing, parse);
        }
        match self.open_file(file_name) {
            Ok(file) => {
                let value = read_with(&file, listing, parse);
                kept.push((file_name, Some(file)));
                value
            }
            // Absent here (a controller or file this kernel lacks): not
            // looked for again. Other errors (out of descriptors) are not
            // remembered.
            Err(nix::errno::Errno::ENOENT) => {
                kept.push((file_name, None));
                None
            }
            Err(_) => None,
        }
    }
}

/// Text fixtures: file name -> content.
impl Source for BTreeMap<&str, &str> {
    fn read(&self, file: &'static str) -> Option<String> {
        self.get(file).map(|t| (*t).to_string())
    }
}

/// The lines of a kernel-made text, found with `memchr` (a scrape goes
/// through some 25,000 lines of `memory.stat` at 110 pods).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let mut ends = memchr::memchr_iter(b'\n', text.as_bytes());
    std::iter::from_fn(move || {
        let end = match ends.next() {
            Some(end) => end,
            None if start < text.len() => text.len(),
            None => return None,
        };
        // Both ends are at an ASCII byte or the end: char boundaries.
        let line = text.get(start..end)?;
        start = end + 1;
        Some(line)
    })
}

/// The value of `line` if it is `key` followed by a space.
fn value_of<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(key)?;
    rest.strip_prefix(' ')
}

/// Value of `key` in a flat-keyed cgroup file (`key value` per line).
pub fn parse_keyed(text: &str, key: &str) -> Option<u64> {
    lines(text)
        .find_map(|l| value_of(l, key))
        .and_then(|v| v.trim().parse().ok())
}

/// Values of `keys` in a flat-keyed cgroup file, in one pass over its
/// lines (v1 `memory.stat` has some 75); 0 for a key that is missing or
/// not a number.
pub fn keyed_values<const N: usize>(text: &str, keys: [&str; N]) -> [u64; N] {
    let mut out = [0; N];
    let mut found = 0;
    for line in lines(text) {
        // Most lines are none of the keys: the length and the space after
        // the key rule them out before the bytes are compared.
        let hit = keys.iter().enumerate().find_map(|(i, key)| {
            (line.as_bytes().get(key.len()) == Some(&b' '))
                .then(|| value_of(line, key))
                .flatten()
                .map(|v| (i, v))
        });
        if let Some((i, v)) = hit {
            out[i] = v.trim().parse().unwrap_or(0);
            found += 1;
            if found == N {
                break;
            }
        }
    }
    out
}

/// Non-empty lines of a file: the entries of `cgroup.procs` or `tasks`.
pub fn count_lines(text: &str) -> u64 {
    lines(text).filter(|l| !l.trim().is_empty()).count() as u64
}

/// Writes `value` to the control file `file` of the cgroup at `dir`.
pub fn write(dir: &Path, file: &str, value: &str) -> Result<(), Error> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|source| Error::Write {
        path,
        value: value.to_string(),
        source,
    })
}

/// Creates a v1 cgroup and its parents (a v1 hierarchy needs nothing else).
pub fn create_v1(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Create {
        path: dir.to_path_buf(),
        source,
    })
}

/// Creates `dir` below the v2 root, enabling `controllers` for the children
/// of every level on the way: on cgroup v2 a controller's files exist in a
/// cgroup only when its parent lists it in `cgroup.subtree_control`.
pub fn create_v2(root: &Path, dir: &Path, controllers: &[&str]) -> Result<(), Error> {
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    let mut cur = root.to_path_buf();
    for comp in rel.components() {
        enable_controllers(&cur, controllers)?;
        cur.push(comp);
        if !cur.exists() {
            std::fs::create_dir(&cur).map_err(|source| Error::Create {
                path: cur.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

fn enable_controllers(dir: &Path, controllers: &[&str]) -> Result<(), Error> {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    for c in controllers {
        let has = |s: &str| s.split_whitespace().any(|x| x == *c);
        if has(&available) && !has(&enabled) {
            write(dir, "cgroup.subtree_control", &format!("+{c}"))?;
        }
    }
    Ok(())
}

/// Removes the cgroup directory `rel` (and empty children) in every
/// hierarchy of `mounts`. Only rmdir is used: a cgroup that still holds a
/// process is left alone and reported.
pub fn remove_everywhere(mounts: &[PathBuf], rel: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for m in mounts {
        let dir = m.join(rel.trim_start_matches('/'));
        if let Err(e) = remove_tree(&dir) {
            problems.push(format!("{}: {e}", dir.display()));
        }
    }
    problems
}

/// rmdir of a cgroup tree, children first. Cgroup directories cannot be
/// removed with remove_dir_all: their control files cannot be unlinked.
fn remove_tree(dir: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh temporary directory for one test.
    pub(crate) fn temp(tag: &str) -> PathBuf {
        crate::test_support::temp_dir(&format!("cgfs-{tag}"))
    }

    /// Text fixtures of a cgroup's files.
    pub(crate) fn files<'a>(pairs: &[(&'a str, &'a str)]) -> BTreeMap<&'a str, &'a str> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn keyed_files_and_lines() {
        assert_eq!(
            keyed_values("a 1\nb x\nc 3\n\nd 4\n", ["d", "b", "a", "z"]),
            [4, 0, 1, 0]
        );
        let text = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n";
        assert_eq!(parse_keyed(text, "oom_kill"), Some(2));
        assert_eq!(parse_keyed(text, "oom"), Some(1));
        assert_eq!(parse_keyed(text, "nope"), None);
        assert_eq!(parse_keyed("max max\n", "max"), None);
        assert_eq!(count_lines("12\n13\n\n"), 2);
        assert_eq!(count_lines(""), 0);
    }

    #[test]
    fn directory_source_and_write_errors() {
        let root = temp("dir");
        std::fs::write(root.join("memory.max"), "max\n").unwrap();
        std::fs::write(root.join("pids.max"), "100\n").unwrap();
        let d = Dir::open(&root).unwrap();
        assert_eq!(d.read("memory.max").as_deref(), Some("max\n"));
        assert_eq!(d.num("memory.max"), None);
        assert_eq!(d.num("pids.max"), Some(100));
        assert_eq!(d.read("nope"), None);
        assert!(Dir::open(&root.join("gone")).is_none());
        let e = write(&root.join("gone"), "cpu.max", "max 100000").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("gone/cpu.max"), "{text}");
        assert!(text.contains("\"max 100000\""), "{text}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn counters_stay_open_and_read_afresh() {
        let root = temp("kept");
        std::fs::write(root.join("cpu.stat"), "usage_usec 1\n").unwrap();
        let big = "x".repeat(3 * SINGLE_READ + 7);
        std::fs::write(root.join("memory.stat"), &big).unwrap();
        let d = Dir::open(&root).unwrap();
        assert_eq!(
            d.counter("cpu.stat", str::to_string).as_deref(),
            Some("usage_usec 1\n")
        );
        // Rewritten in place, as the kernel remakes a cgroup file's text:
        // the kept file reads the new text.
        std::fs::write(root.join("cpu.stat"), "usage_usec 22\n").unwrap();
        assert_eq!(
            d.counter("cpu.stat", str::to_string).as_deref(),
            Some("usage_usec 22\n")
        );
        // Longer than one read, twice (the second from the kept file).
        assert_eq!(
            d.counter("memory.stat", str::to_string).as_deref(),
            Some(big.as_str())
        );
        assert_eq!(
            d.counter("memory.stat", str::to_string).as_deref(),
            Some(big.as_str())
        );
        // An absent file is remembered as absent.
        assert_eq!(d.counter_num("pids.current"), None);
        std::fs::write(root.join("pids.current"), "3\n").unwrap();
        assert_eq!(d.counter_num("pids.current"), None);
        assert_eq!(
            Dir::open(&root).unwrap().counter_num("pids.current"),
            Some(3)
        );
        let kept = d.kept.lock().unwrap();
        let names: Vec<_> = kept.iter().map(|(n, f)| (*n, f.is_some())).collect();
        assert_eq!(
            names,
            [
                ("cpu.stat", true),
                ("memory.stat", true),
                ("pids.current", false)
            ]
        );
        drop(kept);
        // Listings are not kept (cgroup v1) ...
        std::fs::write(root.join("cgroup.procs"), "1\n2\n").unwrap();
        assert_eq!(
            d.counter("cgroup.procs", str::to_string).as_deref(),
            Some("1\n2\n")
        );
        assert_eq!(d.kept.lock().unwrap().len(), 3);
        // ... unless asked (v2), and read to the end either way.
        let v2 = Dir::open(&root).unwrap().keeping_listings();
        let long: String = (0..3000).map(|p| format!("{p}\n")).collect();
        std::fs::write(root.join("cgroup.procs"), &long).unwrap();
        assert_eq!(d.read("cgroup.procs").as_deref(), Some(long.as_str()));
        assert_eq!(
            v2.counter("cgroup.procs", str::to_string).as_deref(),
            Some(long.as_str())
        );
        std::fs::write(root.join("cgroup.procs"), "7\n").unwrap();
        assert_eq!(
            v2.counter("cgroup.procs", str::to_string).as_deref(),
            Some("7\n")
        );
        assert_eq!(v2.kept.lock().unwrap().len(), 1);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn removes_nested_empty_dirs_only() {
        let m = temp("rm");
        let pod = m.join("kl/kubepods/burstable/podu1");
        std::fs::create_dir_all(pod.join("c1")).unwrap();
        assert!(
            remove_everywhere(std::slice::from_ref(&m), "/kl/kubepods/burstable/podu1").is_empty()
        );
        assert!(!pod.exists());
        assert!(m.join("kl/kubepods/burstable").exists());
        // Gone already: nothing to report.
        assert!(
            remove_everywhere(std::slice::from_ref(&m), "/kl/kubepods/burstable/podu1").is_empty()
        );
        std::fs::remove_dir_all(&m).unwrap();
    }
}

//! Container log rotation, as the kubelet's container log manager does it
//! (`containerLogMaxSize`, `containerLogMaxFiles`): once the log reaches
//! the size, it is renamed to `<log>.<YYYYmmdd-HHMMSS>` and a new file is
//! started; older rotated files are compressed to `.gz` and the oldest are
//! removed so that at most `max_files` files remain, the current one
//! included.
//!
//! The kubelet checks every 10 s and asks the runtime to reopen the log.
//! Here the writer itself rotates, right after the record that reached the
//! size (so no record is split and no reopen is needed), at most once per
//! second: rotated names carry the second.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The kubelet's rotation policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Size in bytes at which the log is rotated.
    pub max_size: u64,
    /// Files kept per container log, the current one included (at least 2).
    pub max_files: u32,
}

const COMPRESSED: &str = ".gz";
const TEMPORARY: &str = ".tmp";

/// Where a log record goes: a rotated log file, or any writer (tests).
pub trait Records {
    fn append(&mut self, record: &[u8]) -> io::Result<()>;
}

impl<W: Write> Records for W {
    fn append(&mut self, record: &[u8]) -> io::Result<()> {
        self.write_all(record)
    }
}

/// A container's current log file, rotated by [`Rotation`].
pub struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Option<Rotation>,
    /// Set while older files are compressed and pruned in the background:
    /// one such job at a time (a rotation meanwhile leaves its work to the
    /// next).
    busy: Arc<AtomicBool>,
}

/// Clears the busy flag when the background job ends, however it ends.
struct Done(Arc<AtomicBool>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

impl LogFile {
    pub fn open(path: &Path, rotation: Option<Rotation>) -> io::Result<LogFile> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            size,
            rotation,
            busy: Arc::default(),
        })
    }

    /// Renames the current file to its rotated name and starts a new one;
    /// then compresses and prunes the older ones in the background. A
    /// failure is reported and writing goes on in the current file.
    fn rotate(&mut self, rotation: Rotation) {
        let stamp = jiff::Zoned::now().strftime("%Y%m%d-%H%M%S").to_string();
        let rotated = suffixed(&self.path, &format!(".{stamp}"));
        if rotated.exists() {
            // Rotated within this second already.
            return;
        }
        if let Err(e) = std::fs::rename(&self.path, &rotated) {
            eprintln!(
                "kubelet-lite cri-log: rotating {}: {e}",
                self.path.display()
            );
            return;
        }
        match open_append(&self.path) {
            Ok(f) => {
                self.file = f;
                self.size = 0;
            }
            Err(e) => {
                // Keep writing to the renamed file rather than lose output.
                eprintln!(
                    "kubelet-lite cri-log: reopening {}: {e}",
                    self.path.display()
                );
                return;
            }
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let done = Done(Arc::clone(&self.busy));
        let path = self.path.clone();
        std::thread::spawn(move || {
            let _done = done;
            if let Err(e) = tidy(&path, &rotated, rotation.max_files) {
                eprintln!(
                    "kubelet-lite cri-log: tidying rotated logs of {}: {e}",
                    path.display()
                );
            }
        });
    }
}

impl Records for LogFile {
    fn append(&mut self, record: &[u8]) -> io::Result<()> {
        self.file.write_all(record)?;
        self.size += record.len() as u64;
        if let Some(r) = self.rotation
            && self.size >= r.max_size
        {
            self.rotate(r);
        }
        Ok(())
    }
}

/// `path` with `suffix` appended to its file name.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The rotated files of `log` (`<log>.*`), as names in its directory.
fn rotated_files(log: &Path) -> io::Result<Vec<PathBuf>> {
    let (Some(dir), Some(name)) = (log.parent(), log.file_name()) else {
        return Ok(vec![]);
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut out = vec![];
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// After a rotation to `newest`: removes what an interrupted run left
/// (temporary files, originals whose `.gz` exists), removes the oldest
/// rotated files beyond `max_files - 1`, and compresses the others but
/// the newest (a reader may still be finishing it).
fn tidy(log: &Path, newest: &Path, max_files: u32) -> io::Result<()> {
    let files = rotated_files(log)?;
    let mut kept = vec![];
    for f in &files {
        let name = f.to_string_lossy();
        let superseded = !name.ends_with(COMPRESSED) && files.contains(&suffixed(f, COMPRESSED));
        if name.ends_with(TEMPORARY) || superseded {
            remove(f)?;
        } else {
            kept.push(f.clone());
        }
    }
    // Names sort by time: oldest first.
    let excess = kept
        .len()
        .saturating_sub(max_files.saturating_sub(1) as usize);
    for f in kept.drain(..excess) {
        remove(&f)?;
    }
    for f in kept {
        if f != newest && !f.to_string_lossy().ends_with(COMPRESSED) {
            compress(&f)?;
        }
    }
    Ok(())
}

fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `<f>` -> `<f>.gz` through `<f>.gz.tmp`, then `<f>` removed.
fn compress(f: &Path) -> io::Result<()> {
    let gz = suffixed(f, COMPRESSED);
    let tmp = suffixed(&gz, TEMPORARY);
    let result = (|| {
        let mut input = File::open(f)?;
        let out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(&tmp)?;
        let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        io::copy(&mut input, &mut enc)?;
        enc.finish()?.sync_all()?;
        std::fs::rename(&tmp, &gz)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    remove(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn temp(tag: &str) -> PathBuf {
        crate::test_support::temp_dir(&format!("rotate-{tag}"))
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn tidy_keeps_max_files_and_compresses_all_but_the_newest() {
        let d = temp("tidy");
        let log = d.join("0.log");
        std::fs::write(&log, "current\n").unwrap();
        for (name, text) in [
            ("0.log.20260101-000001.gz", "x"),
            ("0.log.20260101-000002", "two\n"),
            // Left by an interrupted run: compressed but not removed.
            ("0.log.20260101-000003", "three\n"),
            ("0.log.20260101-000003.gz", "x"),
            ("0.log.20260101-000004.gz.tmp", "partial"),
            ("0.log.20260101-000005", "five\n"),
            ("0.log.20260101-000006", "six\n"),
            ("1.log", "another attempt\n"),
        ] {
            std::fs::write(d.join(name), text).unwrap();
        }
        tidy(&log, &d.join("0.log.20260101-000006"), 4).unwrap();
        assert_eq!(
            names(&d),
            [
                "0.log",
                "0.log.20260101-000003.gz",
                "0.log.20260101-000005.gz",
                "0.log.20260101-000006",
                "1.log"
            ]
        );
        let mut text = String::new();
        flate2::read::GzDecoder::new(File::open(d.join("0.log.20260101-000005.gz")).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "five\n");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn rotates_after_the_record_that_reaches_the_size() {
        let d = temp("size");
        let log = d.join("0.log");
        let rotation = Rotation {
            max_size: 10,
            max_files: 2,
        };
        let mut f = LogFile::open(&log, Some(rotation)).unwrap();
        f.append(b"12345\n").unwrap();
        assert_eq!(names(&d), ["0.log"]);
        f.append(b"67890\n").unwrap();
        // Both records in the rotated file, a new empty current one.
        let n = names(&d);
        assert_eq!(n.len(), 2, "{n:?}");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "");
        assert_eq!(
            std::fs::read_to_string(d.join(&n[1])).unwrap(),
            "12345\n67890\n"
        );
        // Within the same second: no second rotation, the file grows.
        f.append(b"abcdefghijk\n").unwrap();
        let again = names(&d);
        if again.len() == 2 {
            assert_eq!(std::fs::read_to_string(&log).unwrap(), "abcdefghijk\n");
        }
        // Without a policy, never.
        let mut plain = LogFile::open(&d.join("1.log"), None).unwrap();
        plain.append(&[b'x'; 100]).unwrap();
        assert_eq!(std::fs::metadata(d.join("1.log")).unwrap().len(), 100);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn at_most_max_files_remain_across_rotations() {
        let d = temp("many");
        let log = d.join("0.log");
        let rotation = Rotation {
            max_size: 100,
            max_files: 3,
        };
        let mut f = LogFile::open(&log, Some(rotation)).unwrap();
        let rotated =
            |d: &Path| -> Vec<String> { names(d).into_iter().filter(|n| n != "0.log").collect() };
        // Rotations happen at most once a second: write until four did.
        let mut seen = std::collections::BTreeSet::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while seen.len() < 4 {
            assert!(std::time::Instant::now() < deadline, "{seen:?}");
            f.append(&[b'y'; 120]).unwrap();
            for n in rotated(&d) {
                seen.insert(
                    n.trim_end_matches(".gz")
                        .trim_end_matches(".tmp")
                        .to_string(),
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        // Once the background work is done: two rotated files beside the
        // current one, the older compressed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let r = rotated(&d);
            if r.len() == 2 && r[0].ends_with(".gz") && !r[1].ends_with(".gz") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{r:?}");
            f.append(&[b'z'; 30]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}

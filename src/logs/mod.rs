//! Container logs in the kubelet's CRI format, one file per container
//! attempt: `<podLogsDir>/<namespace>_<pod>_<uid>/<container>/<restart>.log`,
//! each line `<RFC 3339 nano time> <stdout|stderr> <F|P> <text>`.
//!
//! The writer runs as a containerd logging binary: the shim starts
//! `kubelet-lite cri-log <file>` with the container's stdout on fd 3, its
//! stderr on fd 4, and fd 5 to close once the file is open. It lives as long
//! as the container, independent of the agent.

pub mod read;
pub mod rotate;

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rotate::{LogFile, Records, Rotation};

/// The kubelet splits lines longer than this into partial (`P`) records.
pub const MAX_LINE: usize = 16 * 1024;

pub fn pod_log_dir(root: &Path, namespace: &str, pod: &str, uid: &str) -> PathBuf {
    root.join(format!("{namespace}_{pod}_{uid}"))
}

pub fn container_log_path(
    root: &Path,
    namespace: &str,
    pod: &str,
    uid: &str,
    container: &str,
    restart: u32,
) -> PathBuf {
    pod_log_dir(root, namespace, pod, uid)
        .join(container)
        .join(format!("{restart}.log"))
}

/// Removes the files of a container's attempts before `oldest_kept` in
/// `dir`: those named `<attempt>.<...>` (its logs, rotated or not, and its
/// termination message). The kubelet keeps one dead container per
/// container and removes an older one with its logs; a container that
/// restarts for days would otherwise leave a file per restart.
pub fn remove_attempts_before(dir: &Path, oldest_kept: u32) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let attempt = name
            .to_str()
            .and_then(|n| n.split_once('.'))
            .and_then(|(n, _)| n.parse::<u32>().ok());
        if attempt.is_some_and(|a| a < oldest_kept) {
            match std::fs::remove_file(entry.path()) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Copies `input` to `out` as CRI log records of `stream`.
pub fn copy_stream(
    input: impl io::Read,
    stream: &str,
    out: &Mutex<impl Records>,
) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(MAX_LINE, input);
    let mut line: Vec<u8> = Vec::with_capacity(MAX_LINE);
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            if !line.is_empty() {
                write_record(out, stream, "F", &line)?;
            }
            return Ok(());
        }
        let room = MAX_LINE - line.len();
        let take = buf.len().min(room);
        match buf[..take].iter().position(|b| *b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&buf[..i]);
                reader.consume(i + 1);
                write_record(out, stream, "F", &line)?;
                line.clear();
            }
            None => {
                line.extend_from_slice(&buf[..take]);
                reader.consume(take);
                if line.len() == MAX_LINE {
                    write_record(out, stream, "P", &line)?;
                    line.clear();
                }
            }
        }
    }
}

fn write_record(out: &Mutex<impl Records>, stream: &str, tag: &str, text: &[u8]) -> io::Result<()> {
    let now = jiff::Timestamp::now();
    let mut record = Vec::with_capacity(text.len() + 48);
    write!(record, "{now} {stream} {tag} ")?;
    record.extend_from_slice(text);
    record.push(b'\n');
    // One write per record so that stdout and stderr records never interleave.
    let mut f = out.lock().unwrap_or_else(|e| e.into_inner());
    f.append(&record)
}

/// What the shim passes the log writer: containerd 1.6 runs a `binary://`
/// logger with its URI's query as arguments, each key followed by its
/// value, in no fixed order (`cri-log <path> max-size <bytes> max-files
/// <n>`). `None` when `cri-log` is not among them: not a log writer.
#[derive(Debug, PartialEq, Eq)]
pub struct LoggerArgs {
    pub path: PathBuf,
    pub rotation: Option<Rotation>,
}

impl LoggerArgs {
    pub const PATH: &str = "cri-log";
    pub const MAX_SIZE: &str = "max-size";
    pub const MAX_FILES: &str = "max-files";

    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Option<LoggerArgs> {
        let args: Vec<OsString> = args.into_iter().collect();
        let known = [Self::PATH, Self::MAX_SIZE, Self::MAX_FILES];
        if !args.len().is_multiple_of(2)
            || !args.chunks(2).all(|p| known.iter().any(|k| p[0] == *k))
        {
            return None;
        }
        let value = |key: &str| {
            args.chunks(2)
                .find(|pair| pair[0] == key)
                .and_then(|pair| pair.get(1))
        };
        let path = PathBuf::from(value(Self::PATH)?);
        let number = |key| value(key)?.to_str()?.parse::<u64>().ok();
        let rotation = match (number(Self::MAX_SIZE), number(Self::MAX_FILES)) {
            (Some(max_size), Some(files)) => Some(Rotation {
                max_size,
                max_files: u32::try_from(files).unwrap_or(u32::MAX).max(2),
            }),
            _ => None,
        };
        Some(LoggerArgs { path, rotation })
    }
}

/// Entry point of the log writer (see [`LoggerArgs`]); returns the exit
/// code.
pub fn run_logger(args: &LoggerArgs) -> i32 {
    let path = &args.path;
    // SAFETY: containerd's binary logging protocol hands us fds 3, 4 and 5,
    // open and owned by this process; nothing else in it uses them.
    let (stdout, stderr, ready) = unsafe {
        (
            File::from_raw_fd(3),
            File::from_raw_fd(4),
            File::from_raw_fd(5),
        )
    };
    let file = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|_| LogFile::open(path, args.rotation));
    // Closing fd 5 tells the shim we are ready, whatever happened.
    drop(ready);
    let file = match file {
        Ok(f) => Arc::new(Mutex::new(f)),
        Err(e) => {
            eprintln!("kubelet-lite cri-log: {}: {e}", path.display());
            // Keep draining so that the container never blocks on a full pipe.
            let t = std::thread::spawn(move || io::copy(&mut { stderr }, &mut io::sink()));
            let _ = io::copy(&mut { stdout }, &mut io::sink());
            let _ = t.join();
            return 1;
        }
    };
    let f2 = Arc::clone(&file);
    let t = std::thread::spawn(move || copy_stream(stderr, "stderr", &f2));
    let a = copy_stream(stdout, "stdout", &file);
    let b = t.join().unwrap_or(Ok(()));
    if a.is_err() || b.is_err() { 1 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(input: &[u8]) -> Vec<String> {
        let out = Mutex::new(Vec::new());
        copy_stream(input, "stdout", &out).unwrap();
        String::from_utf8(out.into_inner().unwrap())
            .unwrap()
            .lines()
            .map(|l| l.split_once(' ').unwrap().1.to_string())
            .collect()
    }

    #[test]
    fn full_partial_and_unterminated_lines() {
        assert_eq!(records(b"a\nbb\n"), ["stdout F a", "stdout F bb"]);
        assert_eq!(records(b"tail"), ["stdout F tail"]);
        assert_eq!(records(b"\n"), ["stdout F "]);
        let long = vec![b'x'; MAX_LINE + 10];
        let mut input = long.clone();
        input.push(b'\n');
        let r = records(&input);
        assert_eq!(r.len(), 2);
        assert!(r[0].starts_with("stdout P xxx") && r[0].len() == MAX_LINE + 9);
        assert_eq!(r[1], format!("stdout F {}", "x".repeat(10)));
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let out = Mutex::new(Vec::new());
        copy_stream(&b"hi\n"[..], "stderr", &out).unwrap();
        let line = String::from_utf8(out.into_inner().unwrap()).unwrap();
        let ts = line.split(' ').next().unwrap();
        assert!(ts.parse::<k8s_openapi::jiff::Timestamp>().is_ok(), "{ts}");
        assert!(ts.ends_with('Z'));
    }

    #[test]
    fn logger_arguments_in_any_order() {
        let args = |a: &[&str]| LoggerArgs::parse(a.iter().map(OsString::from));
        let want = LoggerArgs {
            path: PathBuf::from("/var/log/pods/x/c/0.log"),
            rotation: Some(Rotation {
                max_size: 10485760,
                max_files: 5,
            }),
        };
        for order in [
            [
                "cri-log",
                "/var/log/pods/x/c/0.log",
                "max-size",
                "10485760",
                "max-files",
                "5",
            ],
            [
                "max-files",
                "5",
                "cri-log",
                "/var/log/pods/x/c/0.log",
                "max-size",
                "10485760",
            ],
            [
                "max-size",
                "10485760",
                "max-files",
                "5",
                "cri-log",
                "/var/log/pods/x/c/0.log",
            ],
        ] {
            assert_eq!(args(&order).as_ref(), Some(&want), "{order:?}");
        }
        // Without both settings: no rotation (a writer started by an older
        // agent).
        assert_eq!(
            args(&["cri-log", "/l/0.log"]),
            Some(LoggerArgs {
                path: PathBuf::from("/l/0.log"),
                rotation: None
            })
        );
        assert_eq!(args(&["get", "pods"]), None);
        assert_eq!(args(&["logs", "cri-log", "-c", "x"]), None);
        assert_eq!(args(&["describe", "pod", "cri-log", "x"]), None);
        assert_eq!(args(&["--config", "/etc/k.yaml"]), None);
        assert_eq!(args(&[]), None);
    }

    #[test]
    fn old_attempts_are_removed() {
        let d = crate::test_support::temp_dir("attempts");
        for n in [
            "0.log",
            "0.log.20260101-000000.gz",
            "1.log",
            "1.termination-log",
            "2.log",
            "2.log.20260101-000001",
            "3.log",
            "10.log",
            "notes",
        ] {
            std::fs::write(d.join(n), "x").unwrap();
        }
        remove_attempts_before(&d, 2).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["10.log", "2.log", "2.log.20260101-000001", "3.log", "notes"]
        );
        remove_attempts_before(&d.join("missing"), 5).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn paths_follow_the_kubelet() {
        let p = container_log_path(
            Path::new("/var/log/pods"),
            "default",
            "web-n1",
            "abc",
            "app",
            2,
        );
        assert_eq!(
            p,
            PathBuf::from("/var/log/pods/default_web-n1_abc/app/2.log")
        );
    }
}

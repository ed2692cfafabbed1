//! Container logs in the kubelet's CRI format, one file per container
//! attempt: `<podLogsDir>/<namespace>_<pod>_<uid>/<container>/<restart>.log`,
//! each line `<RFC 3339 nano time> <stdout|stderr> <F|P> <text>`.
//!
//! The writer runs as a containerd logging binary: the shim starts
//! `kubelet-lite cri-log <file>` with the container's stdout on fd 3, its
//! stderr on fd 4, and fd 5 to close once the file is open. It lives as long
//! as the container, independent of the agent.

pub mod read;

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::FromRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

/// Copies `input` to `out` as CRI log records of `stream`.
pub fn copy_stream(input: impl io::Read, stream: &str, out: &Mutex<impl Write>) -> io::Result<()> {
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

fn write_record(out: &Mutex<impl Write>, stream: &str, tag: &str, text: &[u8]) -> io::Result<()> {
    let now = jiff::Timestamp::now();
    let mut record = Vec::with_capacity(text.len() + 48);
    write!(record, "{now} {stream} {tag} ")?;
    record.extend_from_slice(text);
    record.push(b'\n');
    // One write per record so that stdout and stderr records never interleave.
    let mut f = out.lock().unwrap_or_else(|e| e.into_inner());
    f.write_all(&record)
}

/// Entry point of `kubelet-lite cri-log <path>`; returns the exit code.
pub fn run_logger(path: &Path) -> i32 {
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
        .and_then(|_| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(path)
        });
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

//! Reading CRI log files back, as the kubelet's `ReadLogs` does for
//! `kubectl logs`: records are parsed, `--since` and `--tail` select them,
//! `--timestamps` keeps each record's time, and a partial record (`P`) runs
//! on into the next one without a newline.
//!
//! [`Follower`] reads a file as it grows. Log rotation either replaces the
//! file (rename, then a new file at the same path: the kubelet's
//! `ContainerLogManager`) or truncates it in place (`copytruncate`); both
//! are followed: the rest of the old file is read, then the new one from
//! its start.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One record of a CRI log line: `<time> <stream> <P|F> <text>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    pub partial: bool,
    pub text: &'a [u8],
}

/// Parses one line (without its newline); `None` for a malformed line.
pub fn parse(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or(b"");
    if !matches!(stream, "stdout" | "stderr") {
        return None;
    }
    let partial = match tag {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(Record {
        time,
        stream,
        partial,
        text,
    })
}

/// What of a log is shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Select {
    /// Only the last N records.
    pub tail: Option<usize>,
    /// Only records at or after this time.
    pub since: Option<jiff::Timestamp>,
    /// Prefix each record with its time.
    pub timestamps: bool,
}

impl Select {
    fn keeps(&self, r: &Record) -> bool {
        match self.since {
            None => true,
            Some(since) => r.time.parse::<jiff::Timestamp>().is_ok_and(|t| t >= since),
        }
    }
}

fn render(r: &Record, timestamps: bool, out: &mut Vec<u8>) {
    if timestamps {
        out.extend_from_slice(r.time.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(r.text);
    if !r.partial {
        out.push(b'\n');
    }
}

/// Renders complete CRI lines (`data` ends with a newline or is empty),
/// applying `select` (with its tail, for the first read of a file).
pub fn render_lines(data: &[u8], select: &Select) -> Vec<u8> {
    let records: Vec<Record> = data
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(parse)
        .filter(|r| select.keeps(r))
        .collect();
    let skip = select.tail.map_or(0, |n| records.len().saturating_sub(n));
    let mut out = Vec::with_capacity(data.len());
    for r in &records[skip..] {
        render(r, select.timestamps, &mut out);
    }
    out
}

/// Reads a log file as it grows, across rotations.
pub struct Follower {
    path: PathBuf,
    file: File,
    pos: u64,
    /// An incomplete last line, kept until its newline arrives.
    pending: Vec<u8>,
}

impl Follower {
    pub fn open(path: &Path) -> io::Result<Follower> {
        Ok(Follower {
            path: path.to_path_buf(),
            file: File::open(path)?,
            pos: 0,
            pending: vec![],
        })
    }

    /// The complete lines written since the last call (all of the file on
    /// the first call).
    pub fn read_new(&mut self) -> io::Result<Vec<u8>> {
        let mut out = vec![];
        // Truncated in place: start again from its beginning.
        if self.file.metadata()?.len() < self.pos {
            self.file.seek(SeekFrom::Start(0))?;
            self.pos = 0;
            self.pending.clear();
        }
        self.drain(&mut out)?;
        // Replaced: what was written to the old file before is read above;
        // the new file is read from its start.
        let replaced = std::fs::metadata(&self.path).is_ok_and(|m| {
            self.file
                .metadata()
                .is_ok_and(|f| (f.dev(), f.ino()) != (m.dev(), m.ino()))
        });
        if replaced {
            self.file = File::open(&self.path)?;
            self.pos = 0;
            self.pending.clear();
            self.drain(&mut out)?;
        }
        Ok(out)
    }

    fn drain(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        let mut buf = vec![];
        let n = self.file.read_to_end(&mut buf)?;
        self.pos += n as u64;
        self.pending.extend_from_slice(&buf);
        if let Some(last) = self.pending.iter().rposition(|b| *b == b'\n') {
            out.extend(self.pending.drain(..=last));
        }
        Ok(())
    }

    /// Whether this file handle is the one open (for tests of leaks).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026-11-23T10:00:00.000000001Z stdout F one\n\
                       2026-11-23T10:00:01.000000000Z stderr F two\n\
                       2026-11-23T10:00:02.000000000Z stdout P thr\n\
                       2026-11-23T10:00:02.100000000Z stdout F ee\n\
                       garbage line\n\
                       2026-11-23T10:00:03.000000000Z stdout F \n";

    fn show(select: &Select) -> String {
        String::from_utf8(render_lines(LOG.as_bytes(), select)).unwrap()
    }

    #[test]
    fn records_parse_and_partials_join() {
        let r = parse(b"2026-11-23T10:00:00Z stderr P a b c").unwrap();
        assert_eq!(
            (r.time, r.stream, r.partial, r.text),
            ("2026-11-23T10:00:00Z", "stderr", true, &b"a b c"[..])
        );
        assert_eq!(parse(b"2026-11-23T10:00:00Z stdout F").unwrap().text, b"");
        assert!(parse(b"2026 stdin F x").is_none());
        assert!(parse(b"2026 stdout X x").is_none());
        assert_eq!(show(&Select::default()), "one\ntwo\nthree\n\n");
    }

    #[test]
    fn tail_since_and_timestamps() {
        let tail = |n| Select {
            tail: Some(n),
            ..Default::default()
        };
        // The tail counts records, as the kubelet counts lines of the file.
        assert_eq!(show(&tail(2)), "ee\n\n");
        assert_eq!(show(&tail(0)), "");
        assert_eq!(show(&tail(100)), "one\ntwo\nthree\n\n");
        let since = Select {
            since: Some("2026-11-23T10:00:01Z".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(show(&since), "two\nthree\n\n");
        let ts = Select {
            tail: Some(1),
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(show(&ts), "2026-11-23T10:00:03.000000000Z \n");
    }

    #[test]
    fn follower_reads_growth_truncation_and_replacement() {
        let dir = std::env::temp_dir().join(format!("kl-follow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("0.log");
        let line = |t: &str| format!("2026-11-23T10:00:00Z stdout F {t}\n");
        std::fs::write(&path, line("a")).unwrap();
        let mut f = Follower::open(&path).unwrap();
        let text = |b: Vec<u8>| String::from_utf8(render_lines(&b, &Select::default())).unwrap();
        assert_eq!(text(f.read_new().unwrap()), "a\n");
        assert_eq!(text(f.read_new().unwrap()), "");
        // A line in two writes is shown once complete.
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        use std::io::Write;
        w.write_all(b"2026-11-23T10:00:00Z stdout F b").unwrap();
        assert_eq!(text(f.read_new().unwrap()), "");
        w.write_all(b"c\n").unwrap();
        assert_eq!(text(f.read_new().unwrap()), "bc\n");
        // copytruncate.
        w.set_len(0).unwrap();
        w.write_all(line("d").as_bytes()).unwrap();
        assert_eq!(text(f.read_new().unwrap()), "d\n");
        // Rename and a new file: the old file's last lines, then the new one.
        w.write_all(line("e").as_bytes()).unwrap();
        std::fs::rename(&path, dir.join("0.log.20261123-100000")).unwrap();
        std::fs::write(&path, line("f")).unwrap();
        assert_eq!(text(f.read_new().unwrap()), "e\nf\n");
        std::fs::write(dir.join("more"), line("g")).unwrap();
        std::fs::rename(dir.join("more"), &path).unwrap();
        assert_eq!(text(f.read_new().unwrap()), "g\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

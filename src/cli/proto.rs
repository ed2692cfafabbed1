//! What the command line and the agent say to each other over the Unix
//! socket: the client writes one JSON request on one line; the agent
//! answers with JSON lines, the first of which is either the answer or
//! `{"error": "..."}`. Streams (`-w`, `-f`) go on with more lines until
//! either side closes the connection; a log stream's lines after the first
//! are the log's own text.
//!
//! `exec` answers its request with one JSON line (`{"container",
//! "defaulted"}` or the error), then both sides switch to binary frames
//! ([`frame`]) until the agent sends the exit frame and closes.

use serde::{Deserialize, Serialize};

/// Longest request line the agent reads.
pub const MAX_REQUEST: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "camelCase", deny_unknown_fields)]
pub enum Request {
    /// `{"items": [Pod...]}`, then with `watch` one `{"pod": Pod}` (or
    /// `{"deleted": Pod}`) per change.
    Pods { watch: bool },
    /// `{"pod": Pod, "manifest", "cgroup", "volumes", "events"}`.
    Describe { namespace: String, name: String },
    /// `{"container": NAME, "defaulted": bool}`, then the log text.
    Logs(LogsRequest),
    /// `{"window_ms", "containers": [{"namespace", "pod", "container",
    /// "cpuMilli", "memoryBytes"}]}`.
    Top,
    /// `{"items": [Event...]}`, then with `watch` one `{"event": Event}` per
    /// event recorded or counted again.
    Events { watch: bool },
    /// `{"container": NAME, "defaulted": bool}`, then [`frame`]s.
    Exec(ExecStart),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecStart {
    pub namespace: String,
    pub pod: String,
    pub container: Option<String>,
    pub command: Vec<String>,
    /// The client sends stdin frames.
    pub stdin: bool,
    /// Run the command on a terminal; the client sends resize frames.
    pub tty: bool,
    /// The terminal's size at the start (columns, rows), if known.
    #[serde(default)]
    pub size: Option<(u16, u16)>,
}

/// The binary streams of `exec`, after its first JSON line: each frame is
/// one byte of stream ID, four bytes of payload length (big-endian) and the
/// payload.
///
/// | ID | from   | payload |
/// |----|--------|---------|
/// | 0  | client | stdin bytes; an empty payload is the end of the input |
/// | 1  | agent  | stdout bytes (with a terminal, everything the process writes) |
/// | 2  | agent  | stderr bytes |
/// | 3  | client | terminal size: columns, rows (two big-endian `u16`) |
/// | 4  | agent  | the exit code (big-endian `u32`); the last frame |
/// | 5  | agent  | an error message (UTF-8); the last frame |
///
/// The client closing its end of the connection ends the exec: the agent
/// kills the process.
pub mod frame {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const RESIZE: u8 = 3;
    pub const EXIT: u8 = 4;
    pub const ERROR: u8 = 5;
    /// Longest payload either side accepts.
    pub const MAX_PAYLOAD: usize = 1 << 20;

    #[derive(Debug, PartialEq, Eq, thiserror::Error)]
    #[error("exec frame of {0} bytes (at most {MAX_PAYLOAD})")]
    pub struct TooLong(pub usize);

    /// One frame's bytes.
    pub fn encode(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(5 + payload.len());
        v.push(stream);
        v.extend_from_slice(
            &u32::try_from(payload.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        v.extend_from_slice(payload);
        v
    }

    pub fn resize(columns: u16, rows: u16) -> Vec<u8> {
        let mut p = columns.to_be_bytes().to_vec();
        p.extend_from_slice(&rows.to_be_bytes());
        encode(RESIZE, &p)
    }

    /// A resize payload's (columns, rows).
    pub fn parse_resize(p: &[u8]) -> Option<(u16, u16)> {
        let p: [u8; 4] = p.try_into().ok()?;
        Some((
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ))
    }

    /// Frames out of bytes as they arrive, in pieces of any size.
    #[derive(Debug, Default)]
    pub struct Decoder {
        buf: Vec<u8>,
    }

    impl Decoder {
        pub fn push(&mut self, bytes: &[u8]) {
            self.buf.extend_from_slice(bytes);
        }

        /// The next complete frame, if one arrived.
        pub fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, TooLong> {
            if self.buf.len() < 5 {
                return Ok(None);
            }
            let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if len > MAX_PAYLOAD {
                return Err(TooLong(len));
            }
            if self.buf.len() < 5 + len {
                return Ok(None);
            }
            let stream = self.buf[0];
            let payload = self.buf[5..5 + len].to_vec();
            self.buf.drain(..5 + len);
            Ok(Some((stream, payload)))
        }
    }

    /// Reads one frame; `None` at a clean end of the stream.
    pub fn read<R: std::io::Read>(r: &mut R) -> std::io::Result<Option<(u8, Vec<u8>)>> {
        let mut head = [0u8; 5];
        let mut got = 0;
        while got < head.len() {
            match r.read(&mut head[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let len = usize::try_from(u32::from_be_bytes([head[1], head[2], head[3], head[4]]))
            .unwrap_or(usize::MAX);
        if len > MAX_PAYLOAD {
            return Err(std::io::Error::other(TooLong(len)));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload)?;
        Ok(Some((head[0], payload)))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogsRequest {
    pub namespace: String,
    pub pod: String,
    pub container: Option<String>,
    pub follow: bool,
    pub previous: bool,
    pub tail: Option<usize>,
    pub since_seconds: Option<u64>,
    pub timestamps: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_line() {
        let r = Request::Logs(LogsRequest {
            namespace: "default".into(),
            pod: "web-n1".into(),
            tail: Some(3),
            ..Default::default()
        });
        let line = serde_json::to_string(&r).unwrap();
        assert!(!line.contains('\n'));
        assert!(
            line.starts_with(r#"{"verb":"logs","namespace":"default""#),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"verb":"pods","watch":true}"#).unwrap(),
            Request::Pods { watch: true }
        );
        assert!(serde_json::from_str::<Request>(r#"{"verb":"exec"}"#).is_err());
        let r = Request::Exec(ExecStart {
            namespace: "default".into(),
            pod: "web".into(),
            command: vec!["sh".into(), "-c".into(), "exit 7".into()],
            tty: true,
            ..Default::default()
        });
        let line = serde_json::to_string(&r).unwrap();
        assert!(
            line.starts_with(r#"{"verb":"exec","namespace":"default""#),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
    }

    #[test]
    fn frames_round_trip_in_any_pieces() {
        let mut bytes = frame::encode(frame::STDOUT, b"hello");
        bytes.extend(frame::encode(frame::STDIN, b""));
        bytes.extend(frame::resize(80, 24));
        bytes.extend(frame::encode(frame::EXIT, &7u32.to_be_bytes()));
        assert_eq!(&bytes[..6], &[1, 0, 0, 0, 5, b'h']);
        let want = vec![
            (frame::STDOUT, b"hello".to_vec()),
            (frame::STDIN, vec![]),
            (frame::RESIZE, vec![0, 80, 0, 24]),
            (frame::EXIT, vec![0, 0, 0, 7]),
        ];
        // Byte by byte, and all at once.
        for piece in [1, bytes.len()] {
            let mut d = frame::Decoder::default();
            let mut got = vec![];
            for chunk in bytes.chunks(piece) {
                d.push(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, want, "pieces of {piece}");
        }
        let mut r = &bytes[..];
        let mut got = vec![];
        while let Some(f) = frame::read(&mut r).unwrap() {
            got.push(f);
        }
        assert_eq!(got, want);
        assert_eq!(frame::parse_resize(&[0, 80, 0, 24]), Some((80, 24)));
        assert_eq!(frame::parse_resize(&[0, 80]), None);
    }

    #[test]
    fn frames_too_long_or_cut_are_errors() {
        let mut d = frame::Decoder::default();
        d.push(&[1, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(d.next_frame(), Err(frame::TooLong(0xffff_ffff)));
        let mut r = &[1u8, 0xff, 0xff, 0xff, 0xff][..];
        assert!(frame::read(&mut r).is_err());
        // A frame cut in its header or its payload.
        let mut r = &[1u8, 0, 0][..];
        assert_eq!(
            frame::read(&mut r).unwrap_err().kind(),
            std::io::ErrorKind::UnexpectedEof
        );
        let mut r = &[1u8, 0, 0, 0, 4, b'a'][..];
        assert_eq!(
            frame::read(&mut r).unwrap_err().kind(),
            std::io::ErrorKind::UnexpectedEof
        );
        let mut d = frame::Decoder::default();
        d.push(&[1u8, 0, 0, 0, 4, b'a']);
        assert_eq!(d.next_frame(), Ok(None));
    }
}

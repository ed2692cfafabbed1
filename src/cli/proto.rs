//! What the command line and the agent say to each other over the Unix
//! socket: the client writes one JSON request on one line; the agent
//! answers with JSON lines, the first of which is either the answer or
//! `{"error": "..."}`. Streams (`-w`, `-f`) go on with more lines until
//! either side closes the connection; a log stream's lines after the first
//! are the log's own text.

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
    }
}

//! The connection to containerd as the runtime's modules share it: every
//! request carries the `containerd-namespace` header and, but for waits and
//! data transfers, the call deadline; gRPC statuses become
//! [`RuntimeError`]s.

use std::time::{Duration, SystemTime};

use containerd_client::Client;
use containerd_client::services::v1::{InfoRequest, ReadContentRequest};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};

use super::RuntimeError;

pub(super) struct Calls {
    client: Client,
    namespace: String,
    call_timeout: Duration,
}

pub(super) fn status_error(op: &'static str, s: Status) -> RuntimeError {
    match s.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Cancelled => {
            RuntimeError::Unavailable(format!("{op}: {}", s.message()))
        }
        Code::NotFound => RuntimeError::NotFound(format!("{op}: {}", s.message())),
        _ => RuntimeError::Failed {
            op,
            message: s.message().to_string(),
        },
    }
}

pub(super) fn to_system_time(t: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    let t = t?;
    if t.seconds <= 0 {
        return None;
    }
    Some(
        SystemTime::UNIX_EPOCH
            + Duration::new(
                u64::try_from(t.seconds).ok()?,
                u32::try_from(t.nanos).unwrap_or(0),
            ),
    )
}

impl Calls {
    pub(super) fn new(channel: Channel, namespace: &str, call_timeout: Duration) -> Calls {
        Calls {
            client: Client::from(channel),
            namespace: namespace.to_string(),
            call_timeout,
        }
    }

    pub(super) fn channel(&self) -> Channel {
        self.client.channel()
    }

    /// Wraps a message with the namespace header and the deadline of one
    /// call: a containerd that hangs fails the call (as Unavailable, which
    /// callers retry) instead of freezing whoever waits on it.
    pub(super) fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = self.req_unbounded(msg);
        r.set_timeout(self.call_timeout);
        r
    }

    /// As [`Calls::req`], without a deadline: for waits on a task, and
    /// for content reads and layer unpacking, whose length depends on the
    /// data.
    pub(super) fn req_unbounded<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut().insert(
            "containerd-namespace",
            self.namespace.parse().expect("namespace names are ASCII"),
        );
        r
    }

    /// Reads a whole blob from the content store.
    pub(super) async fn read_blob(&self, digest: &str) -> Result<Vec<u8>, RuntimeError> {
        let mut stream = self
            .client
            .content()
            .read(self.req_unbounded(ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(|s| status_error("reading content", s))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| status_error("reading content", s))?
        {
            out.extend_from_slice(&chunk.data);
        }
        Ok(out)
    }

    pub(super) async fn has_blob(&self, digest: &str) -> Result<bool, RuntimeError> {
        match self
            .client
            .content()
            .info(self.req(InfoRequest {
                digest: digest.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(status_error("content info", s)),
        }
    }
}

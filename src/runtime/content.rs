//! containerd's content store as imports and pulls write to it: a lease
//! that keeps what is written from the garbage collector until the image is
//! complete, and Content.Write of a stream or of a blob held in memory.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use containerd_client::services::v1::{
    CreateRequest as CreateLeaseRequest, DeleteRequest as DeleteLeaseRequest,
    ListRequest as ListLeasesRequest, WriteAction, WriteContentRequest,
};
use containerd_client::tonic::{Code, Request};
use containerd_client::types::Descriptor;
use tracing::warn;

use super::RuntimeError;
use super::client::{Calls, status_error};

/// A containerd lease: content and snapshots written under it are safe from
/// the garbage collector until it is deleted (or expires, if we crash).
pub(super) struct Lease {
    id: String,
}

impl Lease {
    pub(super) async fn create(c: &Calls) -> Result<Lease, RuntimeError> {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let id = format!("kubelet-lite-{}-{nanos}", std::process::id());
        let expire = jiff::Timestamp::now() + Duration::from_secs(3600);
        let mut leases =
            containerd_client::services::v1::leases_client::LeasesClient::new(c.channel());
        leases
            .create(c.req(CreateLeaseRequest {
                id: id.clone(),
                labels: HashMap::from([(
                    "containerd.io/gc.expire".to_string(),
                    expire.to_string(),
                )]),
            }))
            .await
            .map_err(|s| status_error("creating lease", s))?;
        Ok(Lease { id })
    }

    /// Deletes the leases an earlier run of the agent left (killed during
    /// an import): their content would otherwise be kept until they expire.
    pub(super) async fn release_stale(c: &Calls) -> Result<(), RuntimeError> {
        let mut leases =
            containerd_client::services::v1::leases_client::LeasesClient::new(c.channel());
        let mine = format!("kubelet-lite-{}-", std::process::id());
        let all = leases
            .list(c.req(ListLeasesRequest { filters: vec![] }))
            .await
            .map_err(|s| status_error("listing leases", s))?
            .into_inner()
            .leases;
        for l in all {
            if l.id.starts_with("kubelet-lite-") && !l.id.starts_with(&mine) {
                tracing::info!(lease = %l.id, "deleting a lease an earlier run left");
                Lease { id: l.id }.delete(c).await;
            }
        }
        Ok(())
    }

    pub(super) fn wrap<T>(&self, mut r: Request<T>) -> Request<T> {
        r.metadata_mut().insert(
            "containerd-lease",
            self.id.parse().expect("lease ids are ASCII"),
        );
        r
    }

    pub(super) async fn delete(self, c: &Calls) {
        let mut leases =
            containerd_client::services::v1::leases_client::LeasesClient::new(c.channel());
        if let Err(s) = leases
            .delete(c.req(DeleteLeaseRequest {
                id: self.id.clone(),
                sync: false,
            }))
            .await
        {
            warn!(lease = %self.id, "deleting lease: {}", s.message());
        }
    }
}

/// A unique Content.Write ref: two pulls that share a layer write it
/// side by side (the second commit finds it there) instead of one failing
/// on the other's locked ref.
pub(super) fn write_ref(digest: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("kubelet-lite-pull-{}-{n}-{digest}", std::process::id())
}

/// Drives one Content.Write call over `msgs`; an AlreadyExists (another
/// pull committed the same blob first) is success.
pub(super) async fn write<S>(c: &Calls, lease: &Lease, msgs: S) -> Result<(), RuntimeError>
where
    S: futures::Stream<Item = WriteContentRequest> + Send + 'static,
{
    let mut content =
        containerd_client::services::v1::content_client::ContentClient::new(c.channel());
    match content.write(lease.wrap(c.req_unbounded(msgs))).await {
        Ok(resp) => {
            let mut stream = resp.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok(()),
                    Err(s) if s.code() == Code::AlreadyExists => return Ok(()),
                    Err(s) if s.code() == Code::FailedPrecondition => {
                        return Err(RuntimeError::Pull(format!(
                            "content store refused the blob: {}",
                            s.message()
                        )));
                    }
                    Err(s) => return Err(status_error("writing to containerd's content store", s)),
                }
            }
        }
        Err(s) if s.code() == Code::AlreadyExists => Ok(()),
        Err(s) => Err(status_error("writing to containerd's content store", s)),
    }
}

/// Writes a blob held in memory (a manifest, an index, an archive's
/// layer) in 1 MiB chunks, then commits it: containerd checks its size and
/// digest.
pub(super) async fn write_blob(
    c: &Calls,
    lease: &Lease,
    d: &Descriptor,
    data: Vec<u8>,
    labels: HashMap<String, String>,
) -> Result<(), RuntimeError> {
    const CHUNK: usize = 1 << 20;
    let wref = write_ref(&d.digest);
    let total = i64::try_from(data.len()).unwrap_or(i64::MAX);
    let mut msgs: Vec<WriteContentRequest> = data
        .chunks(CHUNK)
        .enumerate()
        .map(|(i, chunk)| WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: wref.clone(),
            total,
            expected: d.digest.clone(),
            offset: i64::try_from(i * CHUNK).unwrap_or(i64::MAX),
            data: chunk.to_vec(),
            labels: HashMap::new(),
        })
        .collect();
    msgs.push(WriteContentRequest {
        action: WriteAction::Commit as i32,
        r#ref: wref,
        total,
        expected: d.digest.clone(),
        offset: total,
        data: vec![],
        labels,
    });
    write(c, lease, tokio_stream::iter(msgs)).await
}

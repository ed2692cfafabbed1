//! The listener: hyper HTTP/1.1, over TLS when configured, with bounds on
//! what a client may cost. Each bound answers one way a client could stall
//! the agent:
//! - a TLS handshake and the request headers must arrive within 10 s (a
//!   client that opens and waits is cut off);
//! - headers are at most 64 KiB; a connection lives at most 60 s;
//! - at most 256 connections in all, and at most `maxConnectionsPerClient`
//!   (32) from one address, so that one client cannot take every slot and
//!   shut out the others, `/healthz` included. Past either limit a new
//!   connection is closed at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, warn};

use super::ClientCertificate;

const MAX_CONNECTIONS: usize = 256;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const HANDSHAKE_TIMEOUT: Duration = HEADER_READ_TIMEOUT;
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
const MAX_BUF: usize = 64 * 1024;

/// Connections held per client address.
pub struct PeerSlots {
    per_peer: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection of a client; gives its slot back when dropped, however
/// the connection ends.
pub struct PeerSlot {
    slots: Arc<PeerSlots>,
    ip: IpAddr,
}

impl PeerSlots {
    pub fn new(per_peer: usize) -> Arc<PeerSlots> {
        Arc::new(PeerSlots {
            per_peer,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `ip`, unless it already holds `per_peer`.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(ip).or_insert(0);
        if *n >= self.per_peer {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            slots: Arc::clone(self),
            ip,
        })
    }

    pub fn held(&self, ip: IpAddr) -> usize {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// How the server listens.
pub struct Options {
    pub max_connections_per_client: usize,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Serves until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, router: Router, options: Options) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    // Validated in the config to at most half of MAX_CONNECTIONS.
    let peers = PeerSlots::new(options.max_connections_per_client.min(MAX_CONNECTIONS / 2));
    let acceptor = options.tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // The client's own limit first, so that its excess never counts
        // against everyone's.
        let Some(peer_slot) = peers.try_acquire(peer.ip()) else {
            debug!(%peer, "too many connections from this client; closing");
            continue;
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(%peer, "too many connections; closing");
            continue;
        };
        let router = router.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let conn = async move {
                match acceptor {
                    None => serve_connection(stream, router).await,
                    Some(acceptor) => {
                        let tls =
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(tls)) => tls,
                                Ok(Err(e)) => {
                                    debug!(%peer, "TLS handshake failed: {e}");
                                    return;
                                }
                                Err(_) => {
                                    debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                        // The verifier accepted the certificate, if any was
                        // presented: its presence is the authentication.
                        let certified = tls.get_ref().1.peer_certificates().is_some();
                        let router = if certified {
                            router.layer(axum::Extension(ClientCertificate))
                        } else {
                            router
                        };
                        serve_connection(tls, router).await
                    }
                }
            };
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            drop(permit);
            drop(peer_slot);
        });
    }
}

async fn serve_connection<S>(io: S, router: Router)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(router);
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_BUF)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_holds_at_most_its_share_and_gets_it_back() {
        let peers = PeerSlots::new(2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.1".parse().unwrap();
        let s1 = peers.try_acquire(a).unwrap();
        let s2 = peers.try_acquire(a).unwrap();
        assert!(peers.try_acquire(a).is_none());
        // Another client is not affected.
        let s3 = peers.try_acquire(b).unwrap();
        drop(s1);
        assert_eq!(peers.held(a), 1);
        let s4 = peers.try_acquire(a).unwrap();
        drop((s2, s3, s4));
        assert_eq!((peers.held(a), peers.held(b)), (0, 0));
        assert!(peers.held.lock().unwrap().is_empty());
    }
}

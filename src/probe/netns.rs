//! Sockets opened in a pod's network namespace. A socket belongs to the
//! namespace of the thread that created it, whatever thread uses it
//! afterwards: one thread of the agent enters a pod's namespace
//! (`setns(2)`), creates the socket, and returns to its own; the socket
//! then connects from the async runtime like any other. This is how a
//! probe reaches 127.0.0.1 of a pod that has no address of its own
//! (`podNetwork: loopback`), without a thread per probe.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;

use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
use tokio::sync::oneshot;

struct Request {
    netns: PathBuf,
    family: AddressFamily,
    reply: oneshot::Sender<io::Result<OwnedFd>>,
}

/// The socket-making thread, started at the first request (and again if
/// it ever had to stop).
#[derive(Default)]
pub struct NetnsSockets {
    tx: Mutex<Option<mpsc::Sender<Request>>>,
}

impl std::fmt::Debug for NetnsSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NetnsSockets")
    }
}

/// Creates one non-blocking TCP socket in `netns`, then returns the
/// calling thread to `home`. An error returning home is fatal for the
/// thread (it would make the next sockets in the wrong namespace).
fn make(
    home: &File,
    netns: &Path,
    family: AddressFamily,
) -> Result<io::Result<OwnedFd>, io::Error> {
    let ns = match File::open(netns) {
        Ok(f) => f,
        Err(e) => {
            return Ok(Err(io::Error::new(
                e.kind(),
                format!("{}: {e}", netns.display()),
            )));
        }
    };
    if let Err(e) = setns(&ns, CloneFlags::CLONE_NEWNET) {
        return Ok(Err(io::Error::other(format!(
            "entering {}: {e}",
            netns.display()
        ))));
    }
    let s = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from);
    setns(home, CloneFlags::CLONE_NEWNET).map_err(|e| {
        io::Error::other(format!("returning to the agent's network namespace: {e}"))
    })?;
    Ok(s)
}

fn serve(rx: mpsc::Receiver<Request>) {
    let home = match File::open("/proc/thread-self/ns/net") {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("opening the agent's network namespace: {e}");
            return;
        }
    };
    for req in rx {
        match make(&home, &req.netns, req.family) {
            Ok(r) => {
                let _ = req.reply.send(r);
            }
            Err(e) => {
                tracing::error!("{e}; the probe socket thread stops");
                let _ = req.reply.send(Err(e));
                return;
            }
        }
    }
}

impl NetnsSockets {
    pub fn new() -> NetnsSockets {
        NetnsSockets::default()
    }

    /// A TCP socket of `netns` (not connected, non-blocking).
    pub async fn tcp(&self, netns: &Path, v6: bool) -> io::Result<OwnedFd> {
        let (reply, rx) = oneshot::channel();
        let mut req = Request {
            netns: netns.to_path_buf(),
            family: if v6 {
                AddressFamily::Inet6
            } else {
                AddressFamily::Inet
            },
            reply,
        };
        {
            let mut tx = self
                .tx
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for _ in 0..2 {
                let sender = match tx.as_ref() {
                    Some(s) => s.clone(),
                    None => {
                        let (s, r) = mpsc::channel();
                        std::thread::Builder::new()
                            .name("probe-netns".into())
                            .spawn(move || serve(r))?;
                        *tx = Some(s.clone());
                        s
                    }
                };
                match sender.send(req) {
                    Ok(()) => break,
                    // The thread stopped: start another.
                    Err(mpsc::SendError(back)) => {
                        req = back;
                        *tx = None;
                    }
                }
            }
        }
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("the probe socket thread stopped")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_namespace_is_an_error_naming_it() {
        let s = NetnsSockets::new();
        let e = s
            .tcp(Path::new("/nonexistent/ns/net"), false)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ns/net"), "{e}");
        // The thread is still there for the next one.
        let own = s.tcp(Path::new("/proc/self/ns/net"), false).await.unwrap();
        drop(own);
    }
}

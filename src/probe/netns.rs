//! Sockets opened in a pod's network namespace. A socket belongs to the
//! namespace of the thread that created it, whatever thread uses it
//! afterwards: the calling thread enters the pod's namespace (`setns(2)`),
//! creates the socket and returns to the agent's namespace, all in one
//! synchronous call (nothing else runs on the thread meanwhile: there is
//! no await in between); the socket then connects from the async runtime
//! like any other. This is how a probe reaches 127.0.0.1 of a pod that has
//! no address of its own (`podNetwork: loopback`), without a thread per
//! probe nor a hop to a helper thread.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::OnceLock;

use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

/// The agent's own network namespace, to return to.
#[derive(Default)]
pub struct NetnsSockets {
    home: OnceLock<Result<File, String>>,
}

impl std::fmt::Debug for NetnsSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NetnsSockets")
    }
}

impl NetnsSockets {
    pub fn new() -> NetnsSockets {
        NetnsSockets::default()
    }

    fn home(&self) -> io::Result<&File> {
        self.home
            .get_or_init(|| {
                File::open("/proc/self/ns/net")
                    .map_err(|e| format!("opening the agent's network namespace: {e}"))
            })
            .as_ref()
            .map_err(|e| io::Error::other(e.clone()))
    }

    /// A TCP socket of `netns` (not connected, non-blocking).
    pub fn tcp(&self, netns: &Path, v6: bool) -> io::Result<OwnedFd> {
        let home = self.home()?;
        let ns = File::open(netns)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", netns.display())))?;
        setns(&ns, CloneFlags::CLONE_NEWNET)
            .map_err(|e| io::Error::other(format!("entering {}: {e}", netns.display())))?;
        let s = socket(
            if v6 {
                AddressFamily::Inet6
            } else {
                AddressFamily::Inet
            },
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(io::Error::from);
        if let Err(e) = setns(home, CloneFlags::CLONE_NEWNET) {
            // This runtime thread would make every later socket, and
            // every process it spawns, in the pod's network: fail closed.
            tracing::error!("returning to the agent's network namespace: {e}; aborting");
            std::process::abort();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_namespace_is_an_error_naming_it() {
        let s = NetnsSockets::new();
        let e = s.tcp(Path::new("/nonexistent/ns/net"), false).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ns/net"), "{e}");
        let own = s.tcp(Path::new("/proc/self/ns/net"), false).unwrap();
        drop(own);
        // Still at home.
        let here = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        assert_eq!(here, std::fs::read_link("/proc/self/ns/net").unwrap());
    }
}

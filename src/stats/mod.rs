//! Statistics that are not a cgroup's: the machine (CPUs, memory, IDs,
//! see [`machine`]), volume usage (measured in the background, see
//! [`volumes`]) and a network namespace's interface counters ([`NetFiles`]). A cgroup's
//! statistics are read by its controllers ([`crate::cgroup::stats`]).

pub mod machine;
mod net;
pub mod volumes;

pub use net::{NetDev, NetFiles, parse_net_dev};

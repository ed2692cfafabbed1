//! Statistics that are not a cgroup's: the machine (CPUs, memory, IDs,
//! see [`machine`]), volume usage (measured in the background, see
//! [`volumes`]) and a network namespace's interface counters. A cgroup's
//! statistics are read by its controllers ([`crate::cgroup::stats`]).

pub mod machine;
pub mod volumes;

/// Per-interface counters of a network namespace, from `/proc/<pid>/net/dev`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetDev {
    pub interface: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

pub fn parse_net_dev(text: &str) -> Vec<NetDev> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            if f.len() < 16 {
                return None;
            }
            Some(NetDev {
                interface: name.trim().to_string(),
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
                tx_dropped: f[11],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:    1234      10    0    0    0     0          0         0     1234      10    0    0    0     0       0          0\n  eth0: 100 2 1 3 0 0 0 0 200 4 5 6 0 0 0 0\n";
        let d = parse_net_dev(text);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].interface, "lo");
        assert_eq!(
            (
                d[1].rx_bytes,
                d[1].rx_packets,
                d[1].rx_errors,
                d[1].rx_dropped
            ),
            (100, 2, 1, 3)
        );
        assert_eq!(
            (
                d[1].tx_bytes,
                d[1].tx_packets,
                d[1].tx_errors,
                d[1].tx_dropped
            ),
            (200, 4, 5, 6)
        );
    }
}

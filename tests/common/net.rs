//! A CNI network of one test or bench: its own bridge, subnet,
//! configuration and host-local data directories, and the host's iptables
//! rules and forwarding as they were, restored at the end.

#![allow(dead_code, reason = "each test file uses part of it")]

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::Env;

/// Debian's containernetworking-plugins.
pub const PLUGINS: &str = "/usr/lib/cni";

static N: AtomicU32 = AtomicU32::new(0);

/// The rules of every iptables table, without counters and comments.
pub fn iptables() -> Vec<(String, String)> {
    let out = Command::new("iptables-save")
        .output()
        .expect("iptables-save (apt-get install iptables)");
    let mut table = String::new();
    let mut lines = vec![];
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(t) = l.strip_prefix('*') {
            table = t.to_string();
        } else if l.starts_with('-') {
            lines.push((table.clone(), l.to_string()));
        } else if let Some(chain) = l.strip_prefix(':') {
            let name = chain.split_whitespace().next().unwrap_or("");
            lines.push((table.clone(), format!(":{name}")));
        }
    }
    lines
}

/// A network of one test: its bridge, subnet, configuration and data
/// directories, and what the host's iptables and forwarding were before.
pub struct Net {
    pub bridge: String,
    pub subnet: String,
    pub conf_dir: PathBuf,
    pub data_dir: PathBuf,
    before: Vec<(String, String)>,
    forward_before: String,
    cleaned: bool,
}

impl Net {
    /// A /24 (or, with `prefix`, a smaller subnet) for this test.
    pub fn new(env: &Env, prefix: u8) -> Net {
        let n = N.fetch_add(1, Ordering::SeqCst) + (std::process::id() % 50) * 4;
        let bridge = format!("kltest{n}");
        let subnet = format!("10.231.{n}.0/{prefix}");
        let conf_dir = env.dir.join("cni/net.d");
        let data_dir = env.dir.join("cni/ipam");
        std::fs::create_dir_all(&conf_dir).unwrap();
        let conflist = kubelet_lite::network::cni::default_conflist(
            &bridge,
            &bridge,
            &subnet,
            Some(&data_dir),
        );
        std::fs::write(conf_dir.join("10-test.conflist"), conflist).unwrap();
        Net {
            bridge,
            subnet,
            conf_dir,
            data_dir,
            before: iptables(),
            forward_before: std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
            cleaned: false,
        }
    }

    /// Agent configuration for this network.
    pub fn config(&self, extra: &str) -> String {
        format!(
            "podNetwork: cni\ncniConfDir: {}\ncrashLoopBackOff:\n  initial: 1s\n  max: 4s\n{extra}",
            self.conf_dir.display()
        )
    }

    /// The bridge's own address (the pods' gateway): the subnet's first.
    pub fn gateway(&self) -> IpAddr {
        let base: std::net::Ipv4Addr = self.subnet.split('/').next().unwrap().parse().unwrap();
        IpAddr::from(std::net::Ipv4Addr::from(u32::from(base) + 1))
    }

    /// Addresses host-local holds in this network.
    pub fn reservations(&self) -> Vec<(IpAddr, String)> {
        kubelet_lite::network::host_local_reservations(&self.data_dir.join(&self.bridge))
    }

    /// Rules and chains added since the start, except portmap's shared
    /// top-level chains (CNI-HOSTPORT-*), which it never removes.
    pub fn leftover_rules(&self) -> Vec<(String, String)> {
        self.ours(iptables())
            .into_iter()
            .filter(|(_, l)| !l.contains("CNI-HOSTPORT-") || l.contains("CNI-DN-"))
            .collect()
    }

    /// Of `rules`, those added since the start for this network: the CNI
    /// plugins name the network in each rule's comment, and a chain counts
    /// when such a rule is in it or jumps to it. Another test or bench
    /// running at the same time adds rules of its own network.
    fn ours(&self, rules: Vec<(String, String)>) -> Vec<(String, String)> {
        let added: Vec<(String, String)> = rules
            .into_iter()
            .filter(|r| !self.before.contains(r))
            .collect();
        let name = format!("name: \\\"{}\\\"", self.bridge);
        let mut chains = std::collections::HashSet::new();
        for (_, l) in added.iter().filter(|(_, l)| l.contains(&name)) {
            let words: Vec<&str> = l.split_whitespace().collect();
            for w in words.windows(2) {
                if w[0] == "-A" || w[0] == "-j" {
                    chains.insert(w[1].to_string());
                }
            }
        }
        added
            .into_iter()
            .filter(|(_, l)| {
                l.contains(&name) || l.strip_prefix(':').is_some_and(|c| chains.contains(c))
            })
            .collect()
    }

    /// Waits until the rules added since the start are gone, and fails
    /// with those left after 20 s. The bridge plugin's DEL releases the
    /// address before it removes the pod's masquerade chain, so the rules
    /// go a moment after the address.
    pub fn wait_rules_gone(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let left = self.leftover_rules();
            if left.is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "iptables rules left behind: {left:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Removes the bridge and every rule and chain added since the start,
    /// restores forwarding; returns the rules of this network then left
    /// (none, when all went well).
    pub fn clean(&mut self) -> Vec<(String, String)> {
        self.cleaned = true;
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
        let added: Vec<(String, String)> = iptables()
            .into_iter()
            .filter(|r| !self.before.contains(r))
            .collect();
        for (table, line) in &added {
            if let Some(rule) = line.strip_prefix("-A ") {
                let _ = Command::new("sh")
                    .arg("-c")
                    .arg(format!("iptables -w -t {table} -D {rule}"))
                    .status();
            }
        }
        for (table, line) in &added {
            if let Some(chain) = line.strip_prefix(':') {
                let _ = Command::new("iptables")
                    .args(["-w", "-t", table, "-F", chain])
                    .status();
                let _ = Command::new("iptables")
                    .args(["-w", "-t", table, "-X", chain])
                    .status();
            }
        }
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", &self.forward_before);
        self.ours(iptables())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if !self.cleaned {
            self.clean();
        }
    }
}

//! A pod's names, as the kubelet makes them: its hostname (and FQDN), the
//! managed `/etc/hosts` and `/etc/resolv.conf`. Pure: the sandbox writes
//! what these functions return.
//!
//! Sources: `GeneratePodHostNameAndDomain`, `managedHostsFileContent` and
//! `nodeHostsFileContent` (pkg/kubelet/kubelet_pods.go), and the DNS
//! configurer (pkg/kubelet/network/dns/dns.go).

use std::net::IpAddr;

use crate::manifest::StaticPod;
use crate::pod::error::reason;

/// The kubelet's limits (`validation.MaxDNSNameservers`, and the expanded
/// DNS config limits that are the default since 1.28).
pub const MAX_NAMESERVERS: usize = 3;
pub const MAX_SEARCH_PATHS: usize = 32;
pub const MAX_SEARCH_CHARS: usize = 2048;
/// Longer search domains make glibc 2.28 abort; the kubelet drops them.
const MAX_SEARCH_DOMAIN: usize = 253;
/// The kernel's limit on a hostname (`HOST_NAME_MAX`), which the kubelet
/// checks the FQDN against with setHostnameAsFQDN.
const MAX_HOSTNAME: usize = 64;

/// `spec.dnsPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsPolicy {
    ClusterFirst,
    ClusterFirstWithHostNet,
    Default,
    None,
}

/// `spec.dnsConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsConfig {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    /// `name` or `name:value`, in order.
    pub options: Vec<String>,
}

/// What of a pod decides its names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNames {
    /// `spec.hostname`, or the pod name cut to 63 characters without a
    /// trailing `-` or `.`.
    pub hostname: String,
    pub subdomain: Option<String>,
    pub namespace: String,
    pub set_hostname_as_fqdn: bool,
    pub host_network: bool,
    /// `spec.hostAliases`: (ip, hostnames).
    pub host_aliases: Vec<(String, Vec<String>)>,
    pub dns_policy: DnsPolicy,
    pub dns_config: Option<DnsConfig>,
}

/// Something the kubelet reports as a warning event while forming the
/// pod's DNS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub reason: &'static str,
    pub message: String,
}

impl PodNames {
    pub fn of(pod: &StaticPod) -> PodNames {
        let spec = pod.spec();
        let hostname = spec.hostname.clone().unwrap_or_else(|| {
            pod.name
                .chars()
                .take(63)
                .collect::<String>()
                .trim_end_matches(['-', '.'])
                .to_string()
        });
        let dns_policy = match spec.dns_policy.as_deref() {
            Some("ClusterFirstWithHostNet") => DnsPolicy::ClusterFirstWithHostNet,
            Some("Default") => DnsPolicy::Default,
            Some("None") => DnsPolicy::None,
            // The API server's default.
            _ => DnsPolicy::ClusterFirst,
        };
        PodNames {
            hostname,
            subdomain: spec.subdomain.clone().filter(|s| !s.is_empty()),
            namespace: pod.namespace.clone(),
            set_hostname_as_fqdn: spec.set_hostname_as_fqdn == Some(true),
            host_network: spec.host_network == Some(true),
            host_aliases: spec
                .host_aliases
                .iter()
                .flatten()
                .map(|a| (a.ip.clone(), a.hostnames.clone().unwrap_or_default()))
                .collect(),
            dns_policy,
            dns_config: spec.dns_config.as_ref().map(|c| DnsConfig {
                nameservers: c.nameservers.clone().unwrap_or_default(),
                searches: c.searches.clone().unwrap_or_default(),
                options: c
                    .options
                    .iter()
                    .flatten()
                    .filter_map(|o| {
                        let name = o.name.clone()?;
                        Some(match &o.value {
                            Some(v) => format!("{name}:{v}"),
                            None => name,
                        })
                    })
                    .collect(),
            }),
        }
    }

    /// `<subdomain>.<namespace>.svc.<clusterDomain>` when the pod has a
    /// subdomain.
    pub fn domain(&self, cluster_domain: &str) -> Option<String> {
        let sub = self.subdomain.as_ref()?;
        Some(if cluster_domain.is_empty() {
            format!("{sub}.{}.svc", self.namespace)
        } else {
            format!("{sub}.{}.svc.{cluster_domain}", self.namespace)
        })
    }

    /// The hostname of the pod's UTS namespace: the FQDN with
    /// `setHostnameAsFQDN` (and a subdomain), refused past 64 characters as
    /// the kubelet refuses it.
    pub fn uts_hostname(&self, cluster_domain: &str) -> Result<String, String> {
        match self.domain(cluster_domain) {
            Some(domain) if self.set_hostname_as_fqdn => {
                let fqdn = format!("{}.{domain}", self.hostname);
                if fqdn.len() > MAX_HOSTNAME {
                    return Err(format!(
                        "failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is too long ({MAX_HOSTNAME} characters is the max, {} characters requested)",
                        fqdn.len()
                    ));
                }
                Ok(fqdn)
            }
            _ => Ok(self.hostname.clone()),
        }
    }
}

/// The kubelet's managed hosts file of a pod with its own network: the
/// localhost lines, one line per pod IP with the FQDN (given a subdomain)
/// and the hostname, then the host aliases.
pub fn hosts_file(names: &PodNames, cluster_domain: &str, pod_ips: &[IpAddr]) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    let h = &names.hostname;
    for ip in pod_ips {
        match names.domain(cluster_domain) {
            Some(d) => out.push_str(&format!("{ip}\t{h}.{d}\t{h}\n")),
            None => out.push_str(&format!("{ip}\t{h}\n")),
        }
    }
    out.push_str(&host_aliases(&names.host_aliases));
    out
}

/// A host-network pod's hosts file: the node's, plus the host aliases.
pub fn node_hosts_file(node_hosts: &str, names: &PodNames) -> String {
    format!("{node_hosts}{}", host_aliases(&names.host_aliases))
}

fn host_aliases(aliases: &[(String, Vec<String>)]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for (ip, hostnames) in aliases {
        out.push_str(&format!("{ip}\t{}\n", hostnames.join("\t")));
    }
    out
}

/// What a resolv.conf says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// Reads a resolv.conf as the kubelet's `parseResolvConf` does: `#` and
/// `;` start comments, the first value of each `nameserver` line, the last
/// `search` line wins (trailing dots dropped, `.` alone ignored), options
/// accumulate (a later one of the same name replaces an earlier one).
pub fn parse_resolv_conf(text: &str) -> ResolvConf {
    let mut out = ResolvConf::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["nameserver", ns, ..] => out.nameservers.push((*ns).to_string()),
            ["search", rest @ ..] => {
                out.searches = rest
                    .iter()
                    .filter(|s| **s != ".")
                    .map(|s| s.trim_end_matches('.').to_string())
                    .collect();
            }
            ["options", rest @ ..] => {
                let given: Vec<String> = rest.iter().map(|s| (*s).to_string()).collect();
                out.options = merge_options(&out.options, &given);
            }
            _ => {}
        }
    }
    out
}

fn option_name(o: &str) -> &str {
    o.split_once(':').map_or(o, |(n, _)| n)
}

/// The kubelet's `mergeDNSOptions`: a later option replaces an earlier one
/// of the same name. The kubelet goes through a Go map (random order); here
/// the first occurrence's place is kept.
fn merge_options(existing: &[String], more: &[String]) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for o in existing.iter().chain(more) {
        match out.iter_mut().find(|e| option_name(e) == option_name(o)) {
            Some(e) => e.clone_from(o),
            None => out.push(o.clone()),
        }
    }
    out
}

fn omit_duplicates(v: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for s in v {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// The pod's resolv.conf and the warning events of forming it, given the
/// node's resolv.conf. There is no cluster DNS: `ClusterFirst` (and
/// `ClusterFirstWithHostNet`) fall back to `Default` with the kubelet's
/// `MissingClusterDNS` warning; a host-network pod with `ClusterFirst` gets
/// `Default` silently, as in the kubelet. `dnsConfig` is appended (servers
/// and searches without duplicates, options merged by name), then cut to
/// the kubelet's limits (`DNSConfigForming` warnings).
pub fn resolv_conf(names: &PodNames, node: &ResolvConf) -> (String, Vec<Warning>) {
    let mut warnings = vec![];
    let cluster = match names.dns_policy {
        DnsPolicy::None => None,
        DnsPolicy::Default => Some(false),
        DnsPolicy::ClusterFirst => Some(!names.host_network),
        DnsPolicy::ClusterFirstWithHostNet => Some(true),
    };
    let mut conf = match cluster {
        None => ResolvConf::default(),
        Some(cluster) => {
            if cluster {
                let policy = match names.dns_policy {
                    DnsPolicy::ClusterFirstWithHostNet => "ClusterFirstWithHostNet",
                    _ => "ClusterFirst",
                };
                warnings.push(Warning {
                    reason: reason::MISSING_CLUSTER_DNS,
                    message: format!(
                        "pod: {:?}. kubelet does not have ClusterDNS IP configured and cannot create Pod using {policy:?} policy. Falling back to \"Default\" policy.",
                        names.hostname
                    ),
                });
            }
            node.clone()
        }
    };
    if let Some(c) = &names.dns_config {
        conf.nameservers = omit_duplicates([conf.nameservers, c.nameservers.clone()].concat());
        conf.searches = omit_duplicates([conf.searches, c.searches.clone()].concat());
        conf.options = merge_options(&conf.options, &c.options);
    }
    if conf.nameservers.len() > MAX_NAMESERVERS {
        conf.nameservers.truncate(MAX_NAMESERVERS);
        warnings.push(Warning {
            reason: reason::DNS_CONFIG_FORMING,
            message: format!(
                "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: {}",
                conf.nameservers.join(" ")
            ),
        });
    }
    let (searches, cut) = fit_searches(conf.searches);
    conf.searches = searches;
    if cut {
        warnings.push(Warning {
            reason: reason::DNS_CONFIG_FORMING,
            message: format!(
                "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {}",
                conf.searches.join(" ")
            ),
        });
    }
    (format_resolv_conf(&conf), warnings)
}

/// The kubelet's `formDNSSearchFitsLimits`: at most 32 domains, none
/// longer than 253 characters, and a line of at most 2048 characters (cut
/// from the end). Returns the domains kept and whether any was dropped.
fn fit_searches(mut searches: Vec<String>) -> (Vec<String>, bool) {
    let mut cut = false;
    if searches.len() > MAX_SEARCH_PATHS {
        searches.truncate(MAX_SEARCH_PATHS);
        cut = true;
    }
    let before = searches.len();
    searches.retain(|s| s.len() <= MAX_SEARCH_DOMAIN);
    cut |= searches.len() != before;
    while searches.join(" ").len() > MAX_SEARCH_CHARS {
        searches.pop();
        cut = true;
    }
    (searches, cut)
}

/// As containerd writes a sandbox's resolv.conf.
fn format_resolv_conf(c: &ResolvConf) -> String {
    let mut out = String::new();
    if !c.searches.is_empty() {
        out.push_str(&format!("search {}\n", c.searches.join(" ")));
    }
    for ns in &c.nameservers {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    if !c.options.is_empty() {
        out.push_str(&format!("options {}\n", c.options.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> PodNames {
        PodNames {
            hostname: "web".into(),
            subdomain: None,
            namespace: "default".into(),
            set_hostname_as_fqdn: false,
            host_network: false,
            host_aliases: vec![],
            dns_policy: DnsPolicy::ClusterFirst,
            dns_config: None,
        }
    }

    const HEAD: &str = "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n";

    #[test]
    fn hosts_files_as_the_kubelet_writes_them() {
        let ip: IpAddr = "10.1.0.5".parse().unwrap();
        let mut sub = names();
        sub.subdomain = Some("sub".into());
        let mut aliased = names();
        aliased.host_aliases = vec![
            ("10.9.9.9".into(), vec!["a.example".into(), "b".into()]),
            ("::2".into(), vec!["six".into()]),
        ];
        let cases: [(&PodNames, &str, Vec<IpAddr>, String); 5] = [
            (
                &names(),
                "cluster.local",
                vec![ip],
                format!("{HEAD}10.1.0.5\tweb\n"),
            ),
            (
                &sub,
                "cluster.local",
                vec![ip],
                format!("{HEAD}10.1.0.5\tweb.sub.default.svc.cluster.local\tweb\n"),
            ),
            (
                &sub,
                "",
                vec![ip],
                format!("{HEAD}10.1.0.5\tweb.sub.default.svc\tweb\n"),
            ),
            (
                &aliased,
                "cluster.local",
                vec![ip],
                format!(
                    "{HEAD}10.1.0.5\tweb\n\n# Entries added by HostAliases.\n10.9.9.9\ta.example\tb\n::2\tsix\n"
                ),
            ),
            // No address (loopback-only pods): no hostname line.
            (&names(), "cluster.local", vec![], HEAD.to_string()),
        ];
        for (n, domain, ips, want) in cases {
            assert_eq!(hosts_file(n, domain, &ips), want, "{n:?}");
        }
        assert_eq!(
            node_hosts_file("127.0.0.1 localhost\n", &aliased),
            "127.0.0.1 localhost\n\n# Entries added by HostAliases.\n10.9.9.9\ta.example\tb\n::2\tsix\n"
        );
        assert_eq!(node_hosts_file("x\n", &names()), "x\n");
    }

    #[test]
    fn hostnames_and_fqdn() {
        let mut n = names();
        assert_eq!(n.uts_hostname("cluster.local").unwrap(), "web");
        n.set_hostname_as_fqdn = true;
        // No subdomain: no FQDN.
        assert_eq!(n.uts_hostname("cluster.local").unwrap(), "web");
        n.subdomain = Some("sub".into());
        assert_eq!(
            n.uts_hostname("cluster.local").unwrap(),
            "web.sub.default.svc.cluster.local"
        );
        n.set_hostname_as_fqdn = false;
        assert_eq!(n.uts_hostname("cluster.local").unwrap(), "web");
        n.set_hostname_as_fqdn = true;
        n.hostname = "h".repeat(40);
        let e = n.uts_hostname("cluster.local").unwrap_err();
        assert!(
            e.contains("is too long (64 characters is the max, 70 characters requested)"),
            "{e}"
        );
    }

    #[test]
    fn node_resolv_conf_is_read_as_the_kubelet_reads_it() {
        let text = "# comment\nnameserver 10.0.0.1 extra\nnameserver 10.0.0.2 ; c\nsearch old.example\nsearch a.example. . b.example\noptions ndots:2 timeout:1\noptions ndots:3 rotate\ndomain ignored\n";
        assert_eq!(
            parse_resolv_conf(text),
            ResolvConf {
                nameservers: vec!["10.0.0.1".into(), "10.0.0.2".into()],
                searches: vec!["a.example".into(), "b.example".into()],
                options: vec!["ndots:3".into(), "timeout:1".into(), "rotate".into()],
            }
        );
    }

    #[test]
    fn resolv_conf_by_policy() {
        let node = ResolvConf {
            nameservers: vec!["10.0.0.1".into()],
            searches: vec!["lan".into()],
            options: vec!["ndots:2".into()],
        };
        let node_text = "search lan\nnameserver 10.0.0.1\noptions ndots:2\n";
        let with = |policy, host_network, config: Option<DnsConfig>| PodNames {
            dns_policy: policy,
            host_network,
            dns_config: config,
            ..names()
        };
        let config = DnsConfig {
            nameservers: vec!["10.0.0.1".into(), "1.1.1.1".into()],
            searches: vec!["svc.example".into(), "lan".into()],
            options: vec!["ndots:5".into(), "edns0".into()],
        };
        let merged = "search lan svc.example\nnameserver 10.0.0.1\nnameserver 1.1.1.1\noptions ndots:5 edns0\n";
        let missing = |w: &[Warning]| w.iter().filter(|w| w.reason == "MissingClusterDNS").count();
        let cases = [
            (with(DnsPolicy::Default, false, None), node_text, 0),
            (with(DnsPolicy::ClusterFirst, false, None), node_text, 1),
            // A host-network pod with ClusterFirst gets Default, silently.
            (with(DnsPolicy::ClusterFirst, true, None), node_text, 0),
            (
                with(DnsPolicy::ClusterFirstWithHostNet, true, None),
                node_text,
                1,
            ),
            (
                with(DnsPolicy::Default, false, Some(config.clone())),
                merged,
                0,
            ),
            (
                with(DnsPolicy::None, false, Some(config.clone())),
                "search svc.example lan\nnameserver 10.0.0.1\nnameserver 1.1.1.1\noptions ndots:5 edns0\n",
                0,
            ),
        ];
        for (n, want, missing_dns) in cases {
            let (text, warnings) = resolv_conf(&n, &node);
            assert_eq!(text, want, "{n:?}");
            assert_eq!(missing(&warnings), missing_dns, "{n:?}: {warnings:?}");
            assert_eq!(warnings.len(), missing_dns, "{warnings:?}");
        }
    }

    #[test]
    fn resolv_conf_limits() {
        let many = |n: usize, f: &dyn Fn(usize) -> String| (0..n).map(f).collect::<Vec<_>>();
        let n = PodNames {
            dns_policy: DnsPolicy::None,
            dns_config: Some(DnsConfig {
                nameservers: many(5, &|i| format!("10.0.0.{i}")),
                searches: many(40, &|i| format!("d{i}.example")),
                options: vec![],
            }),
            ..names()
        };
        let (text, warnings) = resolv_conf(&n, &ResolvConf::default());
        assert_eq!(text.matches("nameserver").count(), 3);
        let search = text.lines().find(|l| l.starts_with("search ")).unwrap();
        assert_eq!(search.split(' ').count() - 1, 32);
        assert_eq!(warnings.len(), 2);
        assert!(warnings.iter().all(|w| w.reason == "DNSConfigForming"));
        assert!(warnings[0].message.ends_with("10.0.0.0 10.0.0.1 10.0.0.2"));
        // 2048 characters: long domains are cut from the end.
        let long = many(20, &|i| format!("{i:02}{}", "x".repeat(148)));
        let (kept, cut) = fit_searches(long.clone());
        assert!(cut);
        assert_eq!(kept.len(), 13);
        assert_eq!(kept[..], long[..13]);
        assert!(kept.join(" ").len() <= MAX_SEARCH_CHARS);
        let (kept, cut) = fit_searches(vec!["a".into(), "x".repeat(254), "b".into()]);
        assert!(cut);
        assert_eq!(kept, ["a", "b"]);
        assert_eq!(fit_searches(vec!["a".into()]), (vec!["a".into()], false));
    }
}

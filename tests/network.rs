//! Pod networking with the real CNI plugins (Debian's
//! containernetworking-plugins in /usr/lib/cni): addresses, hostPorts, pod
//! to pod traffic, the managed hosts and resolv.conf, restarts, faults.
//! Each test has its own configuration directory, bridge (`kltest<N>`),
//! subnet (10.231.<N>.0/24) and host-local data directory, and removes the
//! interfaces and iptables rules it made, also when it fails. The tests
//! take turns: iptables is one table for the whole host.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::net::{Net, PLUGINS};
use common::{Env, free_port, pod_yaml};

static TURN: Mutex<()> = Mutex::new(());

/// GET `path` over HTTP/1.0; the body, or what went wrong.
fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    match out.split_once("\r\n\r\n") {
        Some((head, body)) if head.contains(" 200 ") => Ok(body.to_string()),
        _ => Err(out),
    }
}

fn pod_ip(env: &Env, name: &str) -> IpAddr {
    let p = env.wait_running(name);
    p["status"]["podIP"]
        .as_str()
        .unwrap_or_else(|| panic!("no podIP: {p}"))
        .parse()
        .unwrap()
}

/// Waits for the pod's status reason; returns its message.
fn wait_reason(env: &Env, name: &str, reason: &str) -> String {
    env.wait_for(
        &format!("{name}: {reason}"),
        Duration::from_secs(60),
        || {
            let p = env.pod(name)?;
            (p["status"]["reason"] == reason)
                .then(|| p["status"]["message"].as_str().unwrap_or("").to_string())
        },
    )
}

fn wait_gone(env: &Env) {
    env.wait_for("every pod gone", Duration::from_secs(60), || {
        env.pods().is_empty().then_some(())
    });
}

/// The agent's open `/proc/<pid>/net/dev` files.
fn kept_net_files(env: &Env) -> usize {
    let pid = env.agent_pid().expect("the agent runs");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().contains("/net/dev"))
        .count()
}

fn web(port: u16) -> String {
    pod_yaml(
        "web",
        &format!(
            "  terminationGracePeriodSeconds: 0\n  hostname: www\n  subdomain: sub\n  dnsPolicy: None\n  dnsConfig:\n    nameservers: [192.0.2.53]\n    searches: [a.example, b.example]\n    options: [{{name: ndots, value: '2'}}, {{name: edns0}}]\n  hostAliases:\n  - ip: 192.0.2.10\n    hostnames: [alias.example, alias2]\n  containers:\n  - name: web\n    image: busybox\n    env:\n    - name: POD_IP\n      valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}\n    ports:\n    - {{containerPort: 80, hostPort: {port}}}\n    command: [sh, -c, 'mkdir -p /www && cp /etc/hosts /www/hosts && cp /etc/resolv.conf /www/resolv && hostname > /www/hostname && echo $POD_IP > /www/ip && echo hello-from-web > /www/index.html && exec httpd -f -p 80 -h /www']\n"
        ),
    )
}

#[test]
fn pods_are_reached_by_address_and_host_port_and_keep_them_across_restarts() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let mut env = Env::new("net-web");
    let mut net = Net::new(&env, 24);
    env.write_config(&net.config(""));
    env.start_agent();
    let port = free_port();
    env.write_manifest("web.yaml", &web(port));
    let ip = pod_ip(&env, "web-node1");
    let subnet_base = net.subnet.rsplit_once(".0/").unwrap().0;
    assert!(
        ip.to_string().starts_with(&format!("{subnet_base}.")),
        "{ip} not in {}",
        net.subnet
    );
    let pod = env.pod("web-node1").unwrap();
    assert_eq!(
        pod["status"]["podIPs"],
        serde_json::json!([{"ip": ip.to_string()}])
    );
    assert!(pod["status"]["hostIP"].is_string(), "{pod}");

    // From the host: at the pod's address, at the host port on loopback
    // and on the bridge's address.
    let at = |addr: SocketAddr, path: &str| {
        env.wait_for(
            &format!("GET {addr}{path}"),
            Duration::from_secs(20),
            || http_get(addr, path).ok(),
        )
    };
    assert_eq!(at(SocketAddr::new(ip, 80), "/"), "hello-from-web\n");
    assert_eq!(
        at(SocketAddr::from(([127, 0, 0, 1], port)), "/"),
        "hello-from-web\n"
    );
    assert_eq!(
        at(SocketAddr::new(net.gateway(), port), "/"),
        "hello-from-web\n"
    );

    // The names inside the container, and the downward API's address.
    assert_eq!(at(SocketAddr::new(ip, 80), "/ip"), format!("{ip}\n"));
    assert_eq!(at(SocketAddr::new(ip, 80), "/hostname"), "www\n");
    assert_eq!(
        at(SocketAddr::new(ip, 80), "/hosts"),
        format!(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n{ip}\twww.sub.default.svc.cluster.local\twww\n\n# Entries added by HostAliases.\n192.0.2.10\talias.example\talias2\n"
        )
    );
    assert_eq!(
        at(SocketAddr::new(ip, 80), "/resolv"),
        "search a.example b.example\nnameserver 192.0.2.53\noptions ndots:2 edns0\n"
    );

    // Pod to pod, by address.
    env.write_manifest(
        "client.yaml",
        &pod_yaml(
            "client",
            &format!("  terminationGracePeriodSeconds: 0\n  containers:\n  - name: client\n    image: busybox\n    command: [sh, -c, 'until wget -qO- http://{ip}/; do sleep 0.3; done; exec sleep 3600']\n"),
        ),
    );
    let client_ip = pod_ip(&env, "client-node1");
    assert_ne!(client_ip, ip);
    env.wait_for(
        "the client's fetch in its log",
        Duration::from_secs(30),
        || {
            env.log_files()
                .iter()
                .filter(|f| f.to_string_lossy().contains("client"))
                .any(|f| {
                    std::fs::read_to_string(f)
                        .unwrap_or_default()
                        .contains("hello-from-web")
                })
                .then_some(())
        },
    );

    // The same host port for another pod: refused, the others unaffected.
    env.write_manifest(
        "web2.yaml",
        &web(port).replace("name: web\nspec", "name: web2\nspec"),
    );
    let message = wait_reason(&env, "web2-node1", "FailedCreatePodSandBox");
    assert_eq!(
        message,
        format!("hostPort {port}/TCP is already used by pod default/web-node1")
    );
    env.remove_manifest("web2.yaml");

    // A host-network pod: no CNI, the node's address.
    env.write_manifest(
        "hn.yaml",
        &pod_yaml(
            "hn",
            "  hostNetwork: true\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, '3600']\n",
        ),
    );
    let hn = env.wait_running("hn-node1");
    assert_eq!(hn["status"]["podIP"], hn["status"]["hostIP"], "{hn}");
    assert_eq!(hn["status"]["hostIP"], pod["status"]["hostIP"]);
    env.remove_manifest("hn.yaml");
    assert_eq!(net.reservations().len(), 2);

    // Network counters of the pod, without loopback.
    let cadvisor = env.get("/metrics/cadvisor").unwrap();
    let rx = cadvisor
        .lines()
        .find(|l| {
            l.starts_with("container_network_receive_bytes_total{")
                && l.contains("pod=\"web-node1\"")
                && l.contains("interface=\"eth0\"")
        })
        .unwrap_or_else(|| panic!("no eth0 series for web:\n{cadvisor}"));
    assert!(
        rx.rsplit(' ').next().unwrap().parse::<f64>().unwrap() > 0.0,
        "{rx}"
    );
    assert!(cadvisor.contains("container_network_transmit_packets_dropped_total{"));
    assert!(!cadvisor.contains("interface=\"lo\""));
    let summary: serde_json::Value =
        serde_json::from_str(&env.get("/stats/summary").unwrap()).unwrap();
    let web_stats = summary["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == "web-node1")
        .unwrap();
    assert_eq!(web_stats["network"]["name"], "eth0");
    assert!(web_stats["network"]["rxBytes"].as_u64().unwrap() > 0);
    assert_eq!(web_stats["network"]["interfaces"][0]["name"], "eth0");

    // SIGKILL and restart: the same addresses, no new ADD, still reached.
    let adds = |env: &Env| env.agent_output().matches("pod network attached").count();
    assert_eq!(adds(&env), 2);
    env.stop_agent(libc::SIGKILL);
    env.start_agent();
    assert_eq!(pod_ip(&env, "web-node1"), ip);
    assert_eq!(pod_ip(&env, "client-node1"), client_ip);
    assert_eq!(adds(&env), 2, "a restart ran a new ADD");
    assert_eq!(
        http_get(SocketAddr::new(ip, 80), "/").unwrap(),
        "hello-from-web\n"
    );
    assert_eq!(
        http_get(SocketAddr::from(([127, 0, 0, 1], port)), "/").unwrap(),
        "hello-from-web\n"
    );
    assert_eq!(net.reservations().len(), 2);
    // A pod's network counter file is kept open from one scrape to the
    // next (it holds the pod's network namespace) ...
    assert_eq!(kept_net_files(&env), 0);
    env.get("/metrics/cadvisor").unwrap();
    assert_eq!(kept_net_files(&env), 2);

    // Deleted: addresses released, per-pod rules gone.
    env.remove_manifest("web.yaml");
    env.remove_manifest("client.yaml");
    wait_gone(&env);
    // ... and let go with the pod, without waiting for a scrape.
    env.wait_for("network files closed", Duration::from_secs(10), || {
        (kept_net_files(&env) == 0).then_some(())
    });
    env.wait_for("addresses released", Duration::from_secs(30), || {
        net.reservations().is_empty().then_some(())
    });
    net.wait_rules_gone();
    env.stop_agent(libc::SIGTERM);
    assert_eq!(net.clean(), []);
}

#[test]
fn fifty_pods_get_fifty_addresses_and_give_them_back() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let mut env = Env::new("net-fifty");
    let mut net = Net::new(&env, 24);
    env.write_config(&net.config(""));
    env.start_agent();
    let t0 = Instant::now();
    for i in 0..50 {
        // Some with host ports, so that portmap's rules come and go too.
        let ports = if i % 10 == 0 {
            format!(
                "    ports: [{{containerPort: 80, hostPort: {}, protocol: UDP}}]\n",
                free_port()
            )
        } else {
            String::new()
        };
        env.write_manifest(
            &format!("p{i}.yaml"),
            &pod_yaml(
                &format!("p{i}"),
                &format!("  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: busybox\n{ports}    command: [sleep, '3600']\n"),
            ),
        );
    }
    let ips: Vec<String> = env.wait_for("50 pods running", Duration::from_secs(240), || {
        let pods = env.pods();
        let ips: Vec<String> = pods
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
            .collect();
        (ips.len() == 50).then_some(ips)
    });
    let started = t0.elapsed();
    let distinct: std::collections::HashSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), 50, "{ips:?}");
    assert_eq!(net.reservations().len(), 50);
    assert!(
        net.reservations()
            .iter()
            .all(|(_, id)| id.starts_with("kubelet-lite-")),
        "{:?}",
        net.reservations()
    );
    // The check below sees per-pod rules (portmap's, the bridge's masquerade).
    assert!(
        net.leftover_rules()
            .iter()
            .any(|(_, l)| l.contains("CNI-DN-")),
        "{:?}",
        net.leftover_rules()
    );
    let t1 = Instant::now();
    for i in 0..50 {
        env.remove_manifest(&format!("p{i}.yaml"));
    }
    wait_gone(&env);
    env.wait_for("every address released", Duration::from_secs(60), || {
        net.reservations().is_empty().then_some(())
    });
    eprintln!(
        "50 pods: running after {started:?}, all gone after {:?}",
        t1.elapsed()
    );
    net.wait_rules_gone();
    env.stop_agent(libc::SIGTERM);
    assert_eq!(net.clean(), []);
}

/// A bin directory with the plugins of the list but `missing`.
fn bin_dir_without(dir: &Path, missing: &str) -> PathBuf {
    let bin = dir.join("cni/bin");
    std::fs::create_dir_all(&bin).unwrap();
    for p in ["bridge", "host-local", "portmap"] {
        if p != missing {
            std::os::unix::fs::symlink(Path::new(PLUGINS).join(p), bin.join(p)).unwrap();
        }
    }
    bin
}

#[test]
fn a_missing_plugin_keeps_pods_waiting_until_it_appears() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let mut env = Env::new("net-missing");
    let mut net = Net::new(&env, 24);
    let bin = bin_dir_without(&env.dir, "portmap");
    env.write_config(&net.config(&format!("cniBinDir: [{}]\n", bin.display())));
    env.start_agent();
    env.write_manifest(
        "a.yaml",
        &pod_yaml("a", "  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, '3600']\n"),
    );
    let message = wait_reason(&env, "a-node1", "NetworkNotReady");
    assert!(
        message.starts_with("network is not ready: failed to find plugin \"portmap\" in path"),
        "{message}"
    );
    let events = env.pod("a-node1").unwrap()["status"]["events"].to_string();
    assert!(events.contains("NetworkNotReady"), "{events}");
    // Nothing was attached, nothing is held, no container was made: the
    // missing plugin is found before the ADD and the containers' creation.
    assert!(net.reservations().is_empty());
    assert_eq!(env.containers(), Vec::<String>::new());
    std::os::unix::fs::symlink(Path::new(PLUGINS).join("portmap"), bin.join("portmap")).unwrap();
    let ip = pod_ip(&env, "a-node1");
    assert_eq!(net.reservations().len(), 1, "{ip}");
    env.remove_manifest("a.yaml");
    wait_gone(&env);
    env.wait_for("address released", Duration::from_secs(30), || {
        net.reservations().is_empty().then_some(())
    });
    env.stop_agent(libc::SIGTERM);
    assert_eq!(net.clean(), []);
}

#[test]
fn an_exhausted_subnet_keeps_the_next_pod_waiting() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let mut env = Env::new("net-full");
    // A /30: the gateway and one pod.
    let mut net = Net::new(&env, 30);
    env.write_config(&net.config(""));
    env.start_agent();
    let pod = |name: &str| {
        pod_yaml(
            name,
            "  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, '3600']\n",
        )
    };
    env.write_manifest("a.yaml", &pod("a"));
    pod_ip(&env, "a-node1");
    env.write_manifest("b.yaml", &pod("b"));
    let message = wait_reason(&env, "b-node1", "FailedCreatePodSandBox");
    assert!(
        message.starts_with(
            "failed to set up network for pod default/b-node1: plugin type=\"bridge\" failed (add):"
        ) && message.contains("no IP addresses available"),
        "{message}"
    );
    // The failed ADDs were undone: only a's address is held, and b has no
    // interface left on the bridge. b's container, created while its
    // first ADD ran, was removed with it (its task, snapshot and log
    // file), and the retries attach before creating anything.
    assert_eq!(net.reservations().len(), 1);
    assert_eq!(env.containers().len(), 1, "{:?}", env.containers());
    assert_eq!(env.tasks().len(), 1, "{:?}", env.tasks());
    let snapshots = env.ctr(&["snapshots", "ls"]);
    let active = snapshots.lines().filter(|l| l.contains("Active")).count();
    assert_eq!(active, 1, "{snapshots}");
    let logs = env.log_files();
    assert!(
        !logs
            .iter()
            .any(|l| l.to_string_lossy().contains("_b-node1_")),
        "{logs:?}"
    );
    env.remove_manifest("a.yaml");
    let ip = pod_ip(&env, "b-node1");
    assert_eq!(net.reservations(), [(ip, net.reservations()[0].1.clone())]);
    env.remove_manifest("b.yaml");
    wait_gone(&env);
    env.wait_for("address released", Duration::from_secs(30), || {
        net.reservations().is_empty().then_some(())
    });
    net.wait_rules_gone();
    env.stop_agent(libc::SIGTERM);
    assert_eq!(net.clean(), []);
}

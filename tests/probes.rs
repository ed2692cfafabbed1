//! Probes end to end: the agent binary, a real containerd and runc,
//! busybox containers on their own loopback (`podNetwork: loopback`, so
//! probes connect inside the pods' network namespaces) and exec probes
//! through containerd's Tasks.Exec.

mod common;

use std::time::{Duration, Instant};

use common::{Env, pod_yaml};
use serde_json::Value;

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

fn restarts(pod: &Value, name: &str) -> i64 {
    container(pod, name)["restartCount"].as_i64().unwrap_or(-1)
}

fn condition<'a>(pod: &'a Value, kind: &str) -> &'a Value {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

fn events(pod: &Value, reason: &str) -> Vec<String> {
    pod["status"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["reason"] == reason)
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn liveness_restarts_a_container_and_readiness_flips_without_restarts() {
    let mut env = Env::new("probes-live");
    env.start_agent();
    let www = env.dir.join("www");
    let flags = env.dir.join("flags");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::create_dir_all(&flags).unwrap();
    std::fs::write(www.join("healthz"), "ok\n").unwrap();
    let port = common::free_port();
    let closed = common::free_port();
    // web: httpd with its health file on a hostPath the test controls; a
    // tcpSocket readiness probe on its port.
    env.write_manifest(
        "web.yaml",
        &pod_yaml(
            "web",
            &format!(
                "  terminationGracePeriodSeconds: 1\n  volumes: [{{name: www, hostPath: {{path: {www}}}}}]\n  containers:\n  - name: web\n    image: busybox\n    command: [httpd, -f, -p, '{port}', -h, /www]\n    ports: [{{name: http, containerPort: {port}}}]\n    volumeMounts: [{{name: www, mountPath: /www}}]\n    livenessProbe: {{httpGet: {{path: /healthz, port: http}}, periodSeconds: 1, failureThreshold: 3}}\n    readinessProbe: {{tcpSocket: {{port: {port}}}, periodSeconds: 1}}\n",
                www = www.display()
            ),
        ),
    );
    // flag: readiness from a file (exec); a sidecar whose tcp readiness
    // probe points at a closed port.
    env.write_manifest(
        "flag.yaml",
        &pod_yaml(
            "flag",
            &format!(
                "  terminationGracePeriodSeconds: 1\n  volumes: [{{name: flags, hostPath: {{path: {flags}}}}}]\n  containers:\n  - name: app\n    image: busybox\n    command: [sleep, '3600']\n    volumeMounts: [{{name: flags, mountPath: /flags}}]\n    readinessProbe: {{exec: {{command: [cat, /flags/ready]}}, periodSeconds: 1}}\n  - name: side\n    image: busybox\n    command: [sleep, '3600']\n    readinessProbe: {{tcpSocket: {{port: {closed}}}, periodSeconds: 1}}\n",
                flags = flags.display()
            ),
        ),
    );
    env.wait_running("web-node1");
    env.wait_running("flag-node1");
    let pod = env.wait_for("web ready", Duration::from_secs(20), || {
        env.pod("web-node1")
            .filter(|p| container(p, "web")["ready"] == true)
    });
    assert_eq!(condition(&pod, "Ready")["status"], "True");
    assert_eq!(condition(&pod, "ContainersReady")["status"], "True");
    assert!(condition(&pod, "Ready")["lastTransitionTime"].is_string());

    // The health file goes: three failed GETs (404), then a restart.
    let removed = Instant::now();
    std::fs::remove_file(www.join("healthz")).unwrap();
    let pod = env.wait_for("web restarted", Duration::from_secs(30), || {
        env.pod("web-node1").filter(|p| restarts(p, "web") == 1)
    });
    let took = removed.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "restarted after {took:?}: before three failures one period apart"
    );
    std::fs::write(www.join("healthz"), "ok\n").unwrap();
    let unhealthy = events(&pod, "Unhealthy");
    assert!(
        unhealthy
            .iter()
            .any(|m| m == "Liveness probe failed: HTTP probe failed with statuscode: 404"),
        "{unhealthy:?}"
    );
    assert!(
        events(&pod, "Killing")
            .iter()
            .any(|m| m == "Container web failed liveness probe, will be restarted"),
        "{:?}",
        events(&pod, "Killing")
    );
    let last = &container(&pod, "web")["lastState"]["terminated"];
    assert!(last.is_object(), "{pod}");
    // Healthy again: it stays at one restart and becomes ready.
    env.wait_for("web ready again", Duration::from_secs(20), || {
        env.pod("web-node1")
            .filter(|p| container(p, "web")["ready"] == true)
    });
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(restarts(&env.pod("web-node1").unwrap(), "web"), 1);

    // Readiness by file, both ways, without restarts.
    let pod = env.pod("flag-node1").unwrap();
    assert_eq!(container(&pod, "app")["ready"], false);
    assert_eq!(condition(&pod, "Ready")["status"], "False");
    std::fs::write(flags.join("ready"), "yes\n").unwrap();
    env.wait_for("app ready", Duration::from_secs(20), || {
        env.pod("flag-node1")
            .filter(|p| container(p, "app")["ready"] == true)
    });
    std::fs::remove_file(flags.join("ready")).unwrap();
    let pod = env.wait_for("app not ready", Duration::from_secs(20), || {
        env.pod("flag-node1")
            .filter(|p| container(p, "app")["ready"] == false)
    });
    assert_eq!(restarts(&pod, "app"), 0);
    assert_eq!(restarts(&pod, "side"), 0);
    // The sidecar's port is closed: never ready, so neither is the pod.
    assert_eq!(container(&pod, "side")["ready"], false);
    assert_eq!(condition(&pod, "ContainersReady")["status"], "False");
    let unhealthy = events(&pod, "Unhealthy");
    assert!(
        unhealthy.iter().any(|m| m
            == &format!(
                "Readiness probe failed: dial tcp 127.0.0.1:{closed}: connect: connection refused"
            )),
        "{unhealthy:?}"
    );
    assert!(
        unhealthy
            .iter()
            .any(|m| m.starts_with("Readiness probe failed: cat: can't open '/flags/ready'")),
        "{unhealthy:?}"
    );
    assert!(events(&pod, "Killing").is_empty());

    let metrics = env.get("/metrics/probes").unwrap();
    let uid = env.pod("web-node1").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    for want in [
        format!(
            "prober_probe_total{{probe_type=\"Liveness\",result=\"failed\",container=\"web\",pod=\"web-node1\",namespace=\"default\",pod_uid=\"{uid}\"}} "
        ),
        format!(
            "prober_probe_total{{probe_type=\"Liveness\",result=\"successful\",container=\"web\",pod=\"web-node1\",namespace=\"default\",pod_uid=\"{uid}\"}} "
        ),
        "prober_probe_duration_seconds_count{probe_type=\"Readiness\",container=\"app\",pod=\"flag-node1\",namespace=\"default\"} ".to_string(),
    ] {
        assert!(metrics.contains(&want), "{want} in\n{metrics}");
    }
    env.remove_manifest("web.yaml");
    env.remove_manifest("flag.yaml");
    env.wait_for("pods gone", Duration::from_secs(30), || {
        env.pods().is_empty().then_some(())
    });
    assert!(
        !env.get("/metrics/probes").unwrap().contains("web-node1"),
        "series of a removed pod"
    );
}

#[test]
fn exec_probe_timeouts_and_startup_gating() {
    let mut env = Env::new("probes-exec");
    env.start_agent();
    // hang: a liveness exec that never answers within its timeout.
    env.write_manifest(
        "hang.yaml",
        &pod_yaml(
            "hang",
            "  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: busybox\n    command: [sleep, '3600']\n    livenessProbe: {exec: {command: [sleep, '30']}, periodSeconds: 1, timeoutSeconds: 1, failureThreshold: 2}\n",
        ),
    );
    // boot: ready to be probed only after 5 s; a liveness probe that would
    // kill it at once must wait for the startup probe.
    env.write_manifest(
        "boot.yaml",
        &pod_yaml(
            "boot",
            "  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: busybox\n    command: [sh, -c, 'sleep 5; touch /tmp/started; exec sleep 3600']\n    startupProbe: {exec: {command: [test, -f, /tmp/started]}, periodSeconds: 1, failureThreshold: 30}\n    livenessProbe: {exec: {command: [test, -f, /tmp/started]}, periodSeconds: 1, failureThreshold: 1}\n",
        ),
    );
    let t0 = Instant::now();
    env.wait_running("boot-node1");
    let pod = env.wait_for("hang restarted", Duration::from_secs(40), || {
        env.pod("hang-node1").filter(|p| restarts(p, "main") >= 1)
    });
    let unhealthy = events(&pod, "Unhealthy");
    assert!(
        unhealthy
            .iter()
            .any(|m| m == "Liveness probe failed: command \"sleep 30\" timed out"),
        "{unhealthy:?}"
    );
    // The timed-out execs were killed: no `sleep 30` is left in the
    // container (each is SIGKILLed at its timeout, then deleted).
    let main = env.wait_running("hang-node1");
    let id = container(&main, "main")["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("containerd://")
        .to_string();
    let ps = env.ctr(&["tasks", "ps", &id]);
    let procs = ps.lines().skip(1).count();
    assert!(procs <= 2, "the container's processes: {ps}");

    let pod = env.wait_for("boot started", Duration::from_secs(30), || {
        env.pod("boot-node1")
            .filter(|p| container(p, "main")["started"] == true)
    });
    assert!(
        t0.elapsed() >= Duration::from_secs(5),
        "started before its startup probe could succeed"
    );
    assert_eq!(container(&pod, "main")["ready"], true);
    std::thread::sleep(Duration::from_secs(3));
    let pod = env.pod("boot-node1").unwrap();
    assert_eq!(restarts(&pod, "main"), 0, "liveness ran before startup");
    assert!(events(&pod, "Killing").is_empty());
    let unhealthy = events(&pod, "Unhealthy");
    assert!(!unhealthy.is_empty());
    assert!(
        unhealthy
            .iter()
            .all(|m| m.starts_with("Startup probe failed")),
        "{unhealthy:?}"
    );
}

/// A grpc.health.v1 server on h2, in the test process: service "" is
/// SERVING, "down" NOT_SERVING.
mod health {
    use prost::Message;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        #[prost(string, tag = "1")]
        pub service: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Response {
        #[prost(int32, tag = "1")]
        pub status: i32,
    }

    async fn answer(
        req: http::Request<h2::RecvStream>,
        mut respond: h2::server::SendResponse<bytes::Bytes>,
    ) {
        let ok_path = req.uri().path() == "/grpc.health.v1.Health/Check";
        let mut body = req.into_body();
        let mut data = vec![];
        while let Some(Ok(chunk)) = body.data().await {
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let head = http::Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let Ok(mut stream) = respond.send_response(head, false) else {
            return;
        };
        let mut trailers = http::HeaderMap::new();
        if ok_path && data.len() >= 5 {
            let req = Request::decode(&data[5..]).unwrap_or_default();
            let status = if req.service == "down" { 2 } else { 1 };
            let msg = Response { status }.encode_to_vec();
            let mut framed = vec![0u8];
            framed.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
            framed.extend_from_slice(&msg);
            let _ = stream.send_data(framed.into(), false);
            trailers.insert("grpc-status", "0".parse().unwrap());
        } else {
            trailers.insert("grpc-status", "12".parse().unwrap());
        }
        let _ = stream.send_trailers(trailers);
    }

    /// Serves on `listener` until the runtime goes.
    pub async fn serve(listener: tokio::net::TcpListener) {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(s).await else {
                    return;
                };
                while let Some(Ok((req, respond))) = conn.accept().await {
                    tokio::spawn(answer(req, respond));
                }
            });
        }
    }
}

#[test]
fn grpc_probes_of_a_host_network_pod() {
    let mut env = Env::new("probes-grpc");
    env.start_agent();
    let port = common::free_port();
    // Probed on the node's address, where the test's server listens.
    env.write_manifest(
        "grpc.yaml",
        &pod_yaml(
            "grpc",
            &format!(
                "  hostNetwork: true\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: up\n    image: busybox\n    command: [sleep, '3600']\n    readinessProbe: {{grpc: {{port: {port}}}, periodSeconds: 1}}\n  - name: down\n    image: busybox\n    command: [sleep, '3600']\n    readinessProbe: {{grpc: {{port: {port}, service: down}}, periodSeconds: 1}}\n"
            ),
        ),
    );
    let pod = env.wait_running("grpc-node1");
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    assert_eq!(Some(ip.as_str()), pod["status"]["hostIP"].as_str());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind((ip.as_str(), port)))
        .unwrap();
    rt.spawn(health::serve(listener));
    let pod = env.wait_for("up ready", Duration::from_secs(20), || {
        env.pod("grpc-node1")
            .filter(|p| container(p, "up")["ready"] == true)
    });
    assert_eq!(container(&pod, "down")["ready"], false);
    env.wait_for("NOT_SERVING reported", Duration::from_secs(20), || {
        let pod = env.pod("grpc-node1")?;
        events(&pod, "Unhealthy")
            .iter()
            .any(|m| {
                m == "Readiness probe failed: service unhealthy (responded with \"NOT_SERVING\")"
            })
            .then_some(())
    });
    env.remove_manifest("grpc.yaml");
    env.wait_for("pod gone", Duration::from_secs(30), || {
        env.pods().is_empty().then_some(())
    });
    drop(rt);
}

//! The handlers against real sockets on loopback: a tiny HTTP server, a
//! closed port, a gRPC health server on h2; exec through the fake runtime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::probe::{Kind, Timing};
use crate::worker::fake::{FakeExec, FakeRuntime};

fn spec(handler: Handler) -> ProbeSpec {
    ProbeSpec {
        kind: Kind::Liveness,
        handler,
        timing: Timing {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 3,
        },
        termination_grace: None,
    }
}

async fn probe(handler: Handler, target: &Target, rt: &FakeRuntime) -> Outcome {
    let sockets = NetnsSockets::new();
    run(
        &spec(handler),
        &Context {
            rt,
            container_id: "c1",
            target,
            sockets: &sockets,
        },
    )
    .await
}

fn local() -> Target {
    Target {
        pod_ip: Some("127.0.0.1".parse().unwrap()),
        netns: None,
    }
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn tcp_succeeds_on_a_listener_and_fails_on_a_closed_port() {
    let rt = FakeRuntime::default();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let o = probe(Handler::Tcp { host: None, port }, &local(), &rt).await;
    assert_eq!(o, Outcome::Success);
    let port = closed_port().await;
    let o = probe(Handler::Tcp { host: None, port }, &local(), &rt).await;
    assert_eq!(
        o,
        Outcome::Failure(format!(
            "dial tcp 127.0.0.1:{port}: connect: connection refused"
        ))
    );
    // Without a pod IP there is nothing to probe: an error, not a failure.
    let o = probe(Handler::Tcp { host: None, port }, &Target::default(), &rt).await;
    assert!(matches!(o, Outcome::Error(_)), "{o:?}");
}

#[tokio::test]
async fn loopback_is_reached_inside_the_pods_network_namespace() {
    // The test's own namespace stands for the pod's: the socket is made
    // by the namespace thread, and connects.
    let rt = FakeRuntime::default();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let target = Target {
        netns: Some("/proc/self/ns/net".into()),
        ..local()
    };
    let o = probe(Handler::Tcp { host: None, port }, &target, &rt).await;
    assert_eq!(o, Outcome::Success);
    let gone = Target {
        netns: Some("/nonexistent/ns/net".into()),
        ..local()
    };
    let o = probe(Handler::Tcp { host: None, port }, &gone, &rt).await;
    assert!(
        matches!(o, Outcome::Error(ref m) if m.contains("/nonexistent/ns/net")),
        "{o:?}"
    );
}

/// Serves canned answers by path; records the requests' headers.
async fn http_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(vec![]));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(m) => n += m,
                    }
                }
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let target = req.split(' ').nth(1).unwrap_or("");
                let path = target.split('?').next().unwrap_or("").to_string();
                log.lock().unwrap().push(req);
                let (status, extra, body) = match path.as_str() {
                    "/ok" => ("200 OK", String::new(), "fine"),
                    "/bad" => ("500 Internal Server Error", String::new(), "broken"),
                    "/redirect" => ("302 Found", "Location: /ok\r\n".into(), ""),
                    "/relative/here" => ("301 Moved", "Location: there\r\n".into(), ""),
                    "/relative/there" => ("200 OK", String::new(), ""),
                    "/away" => (
                        "302 Found",
                        "Location: http://other.invalid/\r\n".into(),
                        "elsewhere",
                    ),
                    "/loop" => ("302 Found", "Location: /loop\r\n".into(), ""),
                    "/slow" => {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        ("200 OK", String::new(), "")
                    }
                    _ => ("404 Not Found", String::new(), ""),
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, seen)
}

fn get(port: u16, path: &str) -> Handler {
    Handler::Http(HttpGet {
        https: false,
        host: None,
        port,
        path: path.into(),
        headers: vec![],
    })
}

#[tokio::test]
async fn http_gets_follow_the_kubelets_rules() {
    let rt = FakeRuntime::default();
    let (port, seen) = http_server().await;
    assert_eq!(
        probe(get(port, "/ok"), &local(), &rt).await,
        Outcome::Success
    );
    assert_eq!(
        probe(get(port, "/bad"), &local(), &rt).await,
        Outcome::Failure("HTTP probe failed with statuscode: 500".into())
    );
    assert_eq!(
        probe(get(port, "/nowhere"), &local(), &rt).await,
        Outcome::Failure("HTTP probe failed with statuscode: 404".into())
    );
    // Redirects on the same host are followed, relative ones too.
    assert_eq!(
        probe(get(port, "/redirect"), &local(), &rt).await,
        Outcome::Success
    );
    assert_eq!(
        probe(get(port, "/relative/here"), &local(), &rt).await,
        Outcome::Success
    );
    // A redirect to another host is not: a success with a warning.
    assert_eq!(
        probe(get(port, "/away"), &local(), &rt).await,
        Outcome::Warning("Probe terminated redirects, Response body: elsewhere".into())
    );
    assert_eq!(
        probe(get(port, "/loop"), &local(), &rt).await,
        Outcome::Failure(format!(
            "Get \"http://127.0.0.1:{port}/loop\": stopped after 10 redirects"
        ))
    );
    assert_eq!(
        probe(get(port, "/slow"), &local(), &rt).await,
        Outcome::Failure(format!(
            "Get \"http://127.0.0.1:{port}/slow\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        ))
    );
    let closed = closed_port().await;
    assert_eq!(
        probe(get(closed, "/ok"), &local(), &rt).await,
        Outcome::Failure(format!(
            "dial tcp 127.0.0.1:{closed}: connect: connection refused"
        ))
    );
    // The kubelet's headers, and the probe's own replacing them.
    seen.lock().unwrap().clear();
    let with_headers = Handler::Http(HttpGet {
        https: false,
        host: None,
        port,
        path: "/ok?x=1".into(),
        headers: vec![
            ("X-Probe".into(), "yes".into()),
            ("Host".into(), "web.example".into()),
        ],
    });
    assert_eq!(probe(with_headers, &local(), &rt).await, Outcome::Success);
    let req = seen.lock().unwrap()[0].to_lowercase();
    assert!(req.starts_with("get /ok?x=1 http/1.1\r\n"), "{req}");
    for h in [
        "user-agent: kube-probe/1.34",
        "accept: */*",
        "x-probe: yes",
        "host: web.example",
    ] {
        assert!(req.contains(h), "{h} in {req}");
    }
    assert!(!req.contains(&format!("host: 127.0.0.1:{port}")), "{req}");
}

#[tokio::test]
async fn exec_probes_report_output_and_timeouts() {
    let rt = FakeRuntime::default();
    let id = "c1";
    rt.leave(
        id,
        HashMap::from([(
            crate::runtime::labels::CONTAINER_NAME.to_string(),
            "web".to_string(),
        )]),
        crate::runtime::TaskState::Running { pid: 7 },
    );
    let cat = || Handler::Exec(vec!["cat".into(), "/tmp/healthy".into()]);
    assert_eq!(probe(cat(), &local(), &rt).await, Outcome::Success);
    rt.set_exec(
        "web",
        FakeExec {
            code: 1,
            output: "cat: can't open '/tmp/healthy': No such file or directory\n".into(),
            ..Default::default()
        },
    );
    assert_eq!(
        probe(cat(), &local(), &rt).await,
        Outcome::Failure("cat: can't open '/tmp/healthy': No such file or directory\n".into())
    );
    rt.set_exec(
        "web",
        FakeExec {
            hang: true,
            ..Default::default()
        },
    );
    let sleep = Handler::Exec(vec!["sleep".into(), "10".into()]);
    assert_eq!(
        probe(sleep, &local(), &rt).await,
        Outcome::Failure("command \"sleep 10\" timed out".into())
    );
}

async fn answer(
    req: hyper::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<bytes::Bytes>,
) {
    let path = req.uri().path().to_string();
    let mut body = req.into_body();
    let mut data = vec![];
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let head = hyper::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let mut stream = respond.send_response(head, false).unwrap();
    let mut trailers = hyper::HeaderMap::new();
    let service = if path == "/grpc.health.v1.Health/Check" {
        let req: HealthCheckRequest = prost::Message::decode(&data[5..]).unwrap();
        req.service
    } else {
        "unimplemented".into()
    };
    if service != "unimplemented" {
        let status = if service == "down" { 2 } else { 1 };
        let msg = prost::Message::encode_to_vec(&HealthCheckResponse { status });
        let mut framed = vec![0u8];
        framed.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
        framed.extend_from_slice(&msg);
        stream.send_data(framed.into(), false).unwrap();
        trailers.insert("grpc-status", "0".parse().unwrap());
    } else {
        trailers.insert("grpc-status", "12".parse().unwrap());
        trailers.insert("grpc-message", "unknown service".parse().unwrap());
    }
    let _ = stream.send_trailers(trailers);
}

/// A gRPC health server on h2: service "" is SERVING, "down" NOT_SERVING,
/// "unimplemented" (and anything but Check) unimplemented.
async fn grpc_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(s).await else {
                    return;
                };
                // The connection is driven by accept(): each call is
                // answered in a task of its own.
                while let Some(Ok((req, respond))) = conn.accept().await {
                    tokio::spawn(answer(req, respond));
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn grpc_health_checks() {
    let rt = FakeRuntime::default();
    let port = grpc_server().await;
    let check = |service: Option<&str>| Handler::Grpc {
        port,
        service: service.map(str::to_string),
    };
    assert_eq!(probe(check(None), &local(), &rt).await, Outcome::Success);
    assert_eq!(
        probe(check(Some("down")), &local(), &rt).await,
        Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
    );
    assert_eq!(
        probe(check(Some("unimplemented")), &local(), &rt).await,
        Outcome::Failure("this server does not implement the grpc health protocol (grpc.health.v1.Health): unknown service".into())
    );
    let closed = closed_port().await;
    let o = probe(
        Handler::Grpc {
            port: closed,
            service: None,
        },
        &local(),
        &rt,
    )
    .await;
    assert!(
        matches!(&o, Outcome::Failure(m) if m.starts_with(&format!("timeout: failed to connect service \"127.0.0.1:{closed}\" within 1s"))),
        "{o:?}"
    );
}

#[tokio::test]
async fn https_gets_do_not_check_the_certificate() {
    // A self-signed certificate for another name: the kubelet's probes
    // skip verification (InsecureSkipVerify).
    let dir = std::env::temp_dir().join(format!("kl-probe-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let made = std::process::Command::new("openssl")
        .current_dir(&dir)
        .args([
            "req",
            "-x509",
            "-nodes",
            "-days",
            "1",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-subj",
            "/CN=somewhere.else",
        ])
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{made:?}");
    let config = crate::http::tls::server_config(&crate::http::tls::Files {
        cert: &dir.join("cert.pem"),
        key: &dir.join("key.pem"),
        client_ca: None,
    })
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let answer = if req.starts_with("GET /ok ") {
                    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                } else {
                    "HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                };
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    let rt = FakeRuntime::default();
    let https = |path: &str| {
        Handler::Http(HttpGet {
            https: true,
            host: None,
            port,
            path: path.into(),
            headers: vec![],
        })
    };
    assert_eq!(probe(https("/ok"), &local(), &rt).await, Outcome::Success);
    assert_eq!(
        probe(https("/down"), &local(), &rt).await,
        Outcome::Failure("HTTP probe failed with statuscode: 503".into())
    );
}

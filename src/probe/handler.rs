//! The four probe handlers, with the kubelet's results and messages
//! (pkg/probe/{exec,http,tcp,grpc}): what an `Unhealthy` event says is
//! what the kubelet would say.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};

use super::netns::NetnsSockets;
use super::{Handler, HttpGet, Outcome, ProbeSpec};
use crate::runtime::{ExecRequest, Runtime};

/// Output kept of an exec probe and of an HTTP body (the kubelet's
/// maxReadLength / maxRespBodyLength).
pub const MAX_OUTPUT: usize = 10 * 1024;
/// Redirects followed (Go's http client and the kubelet's redirect check).
const MAX_REDIRECTS: usize = 10;
/// The kubelet sends `kube-probe/<major>.<minor>`; the API version this
/// agent speaks.
pub const USER_AGENT: &str = "kube-probe/1.34";

/// Where a pod's probes connect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// The pod's IP (`status.podIP`), the default host.
    pub pod_ip: Option<IpAddr>,
    /// The pod's network namespace; `None` with `hostNetwork`. Loopback
    /// addresses are reached inside it: without a pod network the pod's
    /// IP is its own 127.0.0.1, not the node's.
    pub netns: Option<PathBuf>,
}

/// What a probe run needs besides its spec.
pub struct Context<'a> {
    pub rt: &'a dyn Runtime,
    pub container_id: &'a str,
    pub target: &'a Target,
    pub sockets: &'a NetnsSockets,
}

/// Runs the probe once, within its timeout.
pub async fn run(spec: &ProbeSpec, ctx: &Context<'_>) -> Outcome {
    let timeout = spec.timing.timeout;
    match &spec.handler {
        Handler::Exec(argv) => exec(argv, timeout, ctx).await,
        Handler::Tcp { host, port } => tcp(host.as_deref(), *port, timeout, ctx).await,
        Handler::Http(g) => http(g, timeout, ctx).await,
        Handler::Grpc { port, service } => grpc(*port, service.as_deref(), timeout, ctx).await,
    }
}

async fn exec(argv: &[String], timeout: Duration, ctx: &Context<'_>) -> Outcome {
    let req = ExecRequest {
        argv: argv.to_vec(),
        env: vec![],
        timeout: Some(timeout),
        output_limit: MAX_OUTPUT,
    };
    match ctx.rt.exec(ctx.container_id, &req).await {
        Err(e) => Outcome::Error(e.to_string()),
        Ok(out) if out.timed_out() => {
            Outcome::Failure(format!("command {:?} timed out", argv.join(" ")))
        }
        Ok(out) if out.exit_code == Some(0) => Outcome::Success,
        Ok(mut out) => {
            // CombinedOutput: stdout, then stderr.
            out.stdout.extend_from_slice(&out.stderr);
            out.stdout.truncate(MAX_OUTPUT);
            Outcome::Failure(String::from_utf8_lossy(&out.stdout).into_owned())
        }
    }
}

/// `host:port`, with IPv6 addresses in brackets.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Go's text for an errno (`connect: connection refused`).
fn errno_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => {
            let d = nix::errno::Errno::from_raw(n).desc();
            let mut c = d.chars();
            c.next()
                .map(|f| f.to_lowercase().chain(c).collect())
                .unwrap_or_default()
        }
        None => e.to_string(),
    }
}

/// Why a connection could not be made, as Go's dialer says it.
#[derive(Debug)]
enum Dial {
    /// Nothing to connect to (no pod IP yet, a name that does not
    /// resolve): the probe could not run.
    NoAddress(String),
    Failed(String),
}

/// The address of `host` (the pod's IP when empty).
async fn resolve(host: Option<&str>, port: u16, ctx: &Context<'_>) -> Result<SocketAddr, Dial> {
    let Some(host) = host else {
        return ctx
            .target
            .pod_ip
            .map(|ip| SocketAddr::new(ip, port))
            .ok_or_else(|| Dial::NoAddress("the pod has no IP address yet".into()));
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    match tokio::net::lookup_host((bare, port)).await {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| Dial::Failed(format!("dial tcp: lookup {bare}: no such host"))),
        Err(e) => Err(Dial::Failed(format!("dial tcp: lookup {bare}: {e}"))),
    }
}

/// Connects to `addr`: from inside the pod's network namespace for a
/// loopback address of a pod that has one, from the node otherwise.
async fn dial(addr: SocketAddr, ctx: &Context<'_>) -> Result<TcpStream, Dial> {
    let failed =
        |e: io::Error| Dial::Failed(format!("dial tcp {addr}: connect: {}", errno_text(&e)));
    let socket = match (&ctx.target.netns, addr.ip().is_loopback()) {
        (Some(ns), true) => {
            let fd = ctx
                .sockets
                .tcp(ns, addr.is_ipv6())
                .map_err(|e| Dial::NoAddress(format!("socket in the pod's network: {e}")))?;
            TcpSocket::from_std_stream(std::net::TcpStream::from(fd))
        }
        _ => if addr.is_ipv6() {
            TcpSocket::new_v6()
        } else {
            TcpSocket::new_v4()
        }
        .map_err(failed)?,
    };
    socket.connect(addr).await.map_err(failed)
}

async fn tcp(host: Option<&str>, port: u16, timeout: Duration, ctx: &Context<'_>) -> Outcome {
    let addr = match resolve(host, port, ctx).await {
        Ok(a) => a,
        Err(Dial::NoAddress(m)) => return Outcome::Error(m),
        Err(Dial::Failed(m)) => return Outcome::Failure(m),
    };
    match tokio::time::timeout(timeout, dial(addr, ctx)).await {
        Err(_) => Outcome::Failure(format!("dial tcp {addr}: i/o timeout")),
        Ok(Err(Dial::NoAddress(m))) => Outcome::Error(m),
        Ok(Err(Dial::Failed(m))) => Outcome::Failure(m),
        // The kubelet only connects and closes.
        Ok(Ok(_)) => Outcome::Success,
    }
}

/// A byte stream, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// One HTTP GET and its answer: the status, the `Location` header, and
/// the start of the body.
struct Answer {
    status: u16,
    location: Option<String>,
    body: String,
}

/// An HTTP(S) URL as a probe follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    https: bool,
    /// Without brackets; `None`: the pod's IP.
    host: Option<String>,
    port: u16,
    path: String,
}

impl Url {
    fn host_text(&self, pod_ip: Option<IpAddr>) -> String {
        self.host
            .clone()
            .or_else(|| pod_ip.map(|ip| ip.to_string()))
            .unwrap_or_default()
    }

    fn show(&self, pod_ip: Option<IpAddr>) -> String {
        format!(
            "{}://{}{}",
            if self.https { "https" } else { "http" },
            join_host_port(&self.host_text(pod_ip), self.port),
            self.path
        )
    }

    /// Where a `Location` points from here.
    fn join(&self, location: &str) -> Option<Url> {
        if location.starts_with("http://") || location.starts_with("https://") {
            let uri: Uri = location.parse().ok()?;
            let https = uri.scheme_str() == Some("https");
            let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
            return Some(Url {
                https,
                host: Some(host.to_string()),
                port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
                path: uri
                    .path_and_query()
                    .map_or_else(|| "/".to_string(), ToString::to_string),
            });
        }
        let path = if location.starts_with('/') {
            location.to_string()
        } else {
            let base = self.path.split('?').next().unwrap_or("/");
            let dir = &base[..=base.rfind('/').unwrap_or(0)];
            format!("{dir}{location}")
        };
        Some(Url {
            path,
            ..self.clone()
        })
    }
}

async fn get(url: &Url, headers: &[(String, String)], ctx: &Context<'_>) -> Result<Answer, Dial> {
    let host = url.host_text(ctx.target.pod_ip);
    let addr = resolve(url.host.as_deref(), url.port, ctx).await?;
    let tcp = dial(addr, ctx).await?;
    let shown = url.show(ctx.target.pod_ip);
    let failed = |m: String| Dial::Failed(format!("Get {shown:?}: {m}"));
    let io: Box<dyn Stream> = if url.https {
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|e| failed(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(insecure_tls())
            .connect(name, tcp)
            .await
            .map_err(|e| failed(e.to_string()))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| failed(e.to_string()))?;
    let conn = tokio::spawn(conn);
    let mut req = hyper::Request::get(url.path.as_str())
        .header(hyper::header::HOST, join_host_port(&host, url.port))
        .header(hyper::header::USER_AGENT, USER_AGENT)
        .header(hyper::header::ACCEPT, "*/*")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed(e.to_string()))?;
    // The probe's headers replace the defaults (Host included).
    for (name, _) in headers {
        if let Ok(name) = hyper::header::HeaderName::try_from(name.as_str()) {
            req.headers_mut().remove(&name);
        }
    }
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::try_from(name.as_str()),
            hyper::header::HeaderValue::try_from(value.as_str()),
        ) {
            req.headers_mut().append(name, value);
        }
    }
    let res = send
        .send_request(req)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = res.status().as_u16();
    let location = res
        .headers()
        .get(hyper::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = Vec::new();
    let mut incoming = res.into_body();
    while body.len() < MAX_OUTPUT {
        match incoming.frame().await {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    body.extend_from_slice(d);
                }
            }
            _ => break,
        }
    }
    body.truncate(MAX_OUTPUT);
    conn.abort();
    Ok(Answer {
        status,
        location,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

async fn http(g: &HttpGet, timeout: Duration, ctx: &Context<'_>) -> Outcome {
    let first = Url {
        https: g.https,
        host: g.host.clone(),
        port: g.port,
        path: g.path.clone(),
    };
    let shown = first.show(ctx.target.pod_ip);
    match tokio::time::timeout(timeout, follow(first, &g.headers, ctx)).await {
        Err(_) => Outcome::Failure(format!(
            "Get {shown:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
        Ok(o) => o,
    }
}

/// GETs `url`, following redirects to the same host as the kubelet does;
/// a redirect elsewhere ends the probe with a warning (a success).
async fn follow(mut url: Url, headers: &[(String, String)], ctx: &Context<'_>) -> Outcome {
    let first_host = url.host_text(ctx.target.pod_ip);
    for _ in 0..=MAX_REDIRECTS {
        let a = match get(&url, headers, ctx).await {
            Ok(a) => a,
            Err(Dial::NoAddress(m)) => return Outcome::Error(m),
            Err(Dial::Failed(m)) => return Outcome::Failure(m),
        };
        if !(200..400).contains(&a.status) {
            return Outcome::Failure(format!("HTTP probe failed with statuscode: {}", a.status));
        }
        if a.status < 300 {
            return Outcome::Success;
        }
        let next = a
            .location
            .as_deref()
            .filter(|_| matches!(a.status, 301 | 302 | 303 | 307 | 308))
            .and_then(|l| url.join(l));
        match next {
            Some(next) if next.host_text(ctx.target.pod_ip) == first_host => url = next,
            _ => {
                return Outcome::Warning(format!(
                    "Probe terminated redirects, Response body: {}",
                    a.body
                ));
            }
        }
    }
    Outcome::Failure(format!(
        "Get {:?}: stopped after {MAX_REDIRECTS} redirects",
        url.show(ctx.target.pod_ip)
    ))
}

/// The kubelet does not verify probe servers' certificates
/// (InsecureSkipVerify): signatures are checked, names and chains are not.
fn insecure_tls() -> Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct Any(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for Any {
        fn verify_server_cert(
            &self,
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &[rustls_pki_types::CertificateDer<'_>],
            _: &rustls_pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Any(provider)))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// grpc.health.v1 messages (grpc/health/v1/health.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// `HealthCheckResponse.ServingStatus` names.
pub fn serving_status(n: i32) -> &'static str {
    match n {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNKNOWN",
    }
}

async fn grpc(port: u16, service: Option<&str>, timeout: Duration, ctx: &Context<'_>) -> Outcome {
    let secs = timeout.as_secs();
    let addr = match resolve(None, port, ctx).await {
        Ok(a) => a,
        Err(Dial::NoAddress(m)) => return Outcome::Error(m),
        Err(Dial::Failed(m)) => return Outcome::Failure(m),
    };
    let connect_failed = |e: String| {
        Outcome::Failure(format!(
            "timeout: failed to connect service {:?} within {secs}s: {e}",
            addr.to_string()
        ))
    };
    let started = tokio::time::Instant::now();
    let stream = match tokio::time::timeout(timeout, dial(addr, ctx)).await {
        Err(_) => return connect_failed("context deadline exceeded".into()),
        Ok(Err(Dial::NoAddress(m))) => return Outcome::Error(m),
        Ok(Err(Dial::Failed(m))) => return connect_failed(m),
        Ok(Ok(s)) => s,
    };
    // The connection is made above (in the pod's namespace if need be);
    // the channel takes it over.
    let slot = Arc::new(std::sync::Mutex::new(Some(stream)));
    let connector = tower::service_fn(move |_: Uri| {
        let s = slot.lock().ok().and_then(|mut s| s.take());
        async move {
            s.map(TokioIo::new)
                .ok_or_else(|| io::Error::other("the probe connection was already used"))
        }
    });
    let remaining = timeout.saturating_sub(started.elapsed());
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => e
            .user_agent(USER_AGENT)
            .map_err(|e| e.to_string())
            .map(|e| e.timeout(remaining)),
        Err(e) => Err(e.to_string()),
    };
    let endpoint = match endpoint {
        Ok(e) => e,
        Err(m) => return Outcome::Error(m),
    };
    let call = async {
        let channel = endpoint
            .connect_with_connector(connector)
            .await
            .map_err(|e| connect_failed(e.to_string()))?;
        let mut client = tonic::client::Grpc::new(channel);
        client
            .ready()
            .await
            .map_err(|e| connect_failed(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
        client
            .unary(
                tonic::Request::new(HealthCheckRequest {
                    service: service.unwrap_or_default().to_string(),
                }),
                tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/grpc.health.v1.Health/Check",
                ),
                codec,
            )
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| match s.code() {
                tonic::Code::Unimplemented => Outcome::Failure(format!(
                    "this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                    s.message()
                )),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => Outcome::Failure(
                    format!("timeout: health rpc did not complete within {secs}s"),
                ),
                _ => Outcome::Failure(format!(
                    "error: health rpc probe failed: rpc error: code = {:?} desc = {}",
                    s.code(),
                    s.message()
                )),
            })
    };
    match tokio::time::timeout(remaining, call).await {
        Err(_) => Outcome::Failure(format!(
            "timeout: health rpc did not complete within {secs}s"
        )),
        Ok(Err(o)) => o,
        Ok(Ok(r)) if r.status == 1 => Outcome::Success,
        Ok(Ok(r)) => Outcome::Failure(format!(
            "service unhealthy (responded with {:?})",
            serving_status(r.status)
        )),
    }
}

#[cfg(test)]
mod tests;

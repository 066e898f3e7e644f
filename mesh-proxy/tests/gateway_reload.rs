//! Gateway listeners that follow the config and the certificate files, as a user sees them:
//! the real `mesh run --gateway`, its Gateway file rewritten while it runs, its credentials
//! folder's secret files rewritten, real clients (hyper, rustls) on loopback.
//!
//! - A server added on a new port serves within 2 s of the write; removed, its port refuses new
//!   connections while a request in flight on it still gets its answer (the drain of SIGTERM).
//! - A named Gateway that leaves the config: its ports refuse, with a warning; back, they serve.
//! - A rewritten `tls.crt`/`tls.key` serves the next handshakes, while a connection made
//!   before keeps working; a certificate that does not load is shown in `/config_dump` and
//!   changes nothing until it is fixed.

use std::{
    convert::Infallible,
    future::Future,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::Value;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Notify, mpsc as tmpsc},
};
use tokio_rustls::{TlsConnector, client::TlsStream};

/// Every network step of a test is bounded by this.
const STEP: Duration = Duration::from_secs(5);
/// DESIGN.md's promise for a reload: seen within this long.
const SWITCH: Duration = Duration::from_secs(2);

// === the mesh process ===

/// `mesh run`, killed on drop; its stderr drained by a thread and kept for failure messages.
struct Mesh {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Mesh {
    fn start(config: &Path, args: &[&str]) -> Mesh {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mesh"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(["--gateway-bind", "127.0.0.1", "--concurrency", "2"])
            .args(["--admin", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mesh");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Mesh {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (up to 10 s) for the `ready:` line; returns the admin address.
    fn ready(&mut self) -> SocketAddr {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(10)) {
                Ok(line) if line.contains("mesh run: ready:") => {
                    let admin = line
                        .split(", ")
                        .find_map(|part| part.split("admin ").nth(1))
                        .unwrap_or_else(|| panic!("no admin address in {line}"));
                    return admin.trim().parse().unwrap();
                }
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("mesh run not ready within 10 s; stderr: {:#?}", self.seen),
            }
        }
    }

    /// The stderr lines so far.
    fn stderr(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }
}

fn temp_dir(what: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "mesh-gateway-reload-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A loopback port that was free a moment ago (Gateway ports are written in the YAML).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every 20 ms until it holds; panics with `what` after `within`. Returns how
/// long it took.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === upstream and clients ===

/// An HTTP server answering `upstream PATH`. A request for `/hold` is announced on the
/// returned channel and answered once `release` is notified.
async fn upstream(release: Arc<Notify>) -> (SocketAddr, tmpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (held_tx, held) = tmpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (release, held_tx) = (release.clone(), held_tx.clone());
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (release, held_tx) = (release.clone(), held_tx.clone());
                async move {
                    if req.uri().path() == "/hold" {
                        let released = release.notified();
                        let _ = held_tx.send(());
                        released.await;
                    }
                    let body = format!("upstream {}", req.uri().path());
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                }
            });
            tokio::spawn(
                auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .into_owned(),
            );
        }
    });
    (addr, held)
}

/// One HTTP/1.1 request on a new connection to `port` (or on `io`); status and body.
async fn get(port: u16, path: &str) -> Result<(StatusCode, String), String> {
    let tcp = tokio::time::timeout(STEP, TcpStream::connect(("127.0.0.1", port)))
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| e.to_string())?;
    get_on(tcp, "app.example.com", path).await
}

async fn get_on<I>(io: I, host: &str, path: &str) -> Result<(StatusCode, String), String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    request(&mut send, host, path).await
}

async fn request(
    send: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: &str,
    path: &str,
) -> Result<(StatusCode, String), String> {
    let req = Request::get(path)
        .header("host", host)
        .body(Full::<Bytes>::default())
        .unwrap();
    let fut = async {
        let res = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = res.status();
        let body = res.into_body().collect().await.map_err(|e| e.to_string())?;
        Ok((
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        ))
    };
    tokio::time::timeout(STEP, fut)
        .await
        .map_err(|_| "timeout".to_string())?
}

/// Whether a TCP connection to `port` is refused now.
async fn refused(port: u16) -> bool {
    matches!(
        TcpStream::connect(("127.0.0.1", port)).await,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

async fn config_dump(admin: SocketAddr) -> Value {
    let tcp = TcpStream::connect(admin).await.unwrap();
    let (status, body) = get_on(tcp, "admin", "/config_dump").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    serde_json::from_str(&body).unwrap()
}

// === the tests ===

fn routes(upstream: SocketAddr) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: app}}
spec:
  hosts: [app.example.internal]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: app}}
spec:
  hosts: [app.example.com]
  gateways: [edge]
  http:
  - route: [{{destination: {{host: app.example.internal, port: {{number: 80}}}}}}]
"#,
        port = upstream.port()
    )
}

fn gateway(name: &str, servers: &[String]) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}}}\nspec:\n  servers:\n{}",
        servers.concat()
    )
}

fn http_server(port: u16) -> String {
    format!(
        "  - port: {{number: {port}, name: http-{port}, protocol: HTTP}}\n    hosts: [app.example.com]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_servers_open_their_ports_and_removed_ones_drain() {
    let release = Arc::new(Notify::new());
    let (app, mut held) = upstream(release.clone()).await;
    let (a, b) = (free_port(), free_port());
    let config = temp_dir("config");
    std::fs::write(config.join("routes.yaml"), routes(app)).unwrap();
    let gateway_file = config.join("gateway.yaml");
    std::fs::write(&gateway_file, gateway("edge", &[http_server(a)])).unwrap();
    let mut mesh = Mesh::start(&config, &["--gateway", "edge"]);
    mesh.ready();
    assert_eq!(
        get(a, "/one").await,
        Ok((StatusCode::OK, "upstream /one".into()))
    );
    assert!(
        refused(b).await,
        "port {b} served before its server existed"
    );

    // A server on a new port: it serves within 2 s of the write.
    std::fs::write(
        &gateway_file,
        gateway("edge", &[http_server(a), http_server(b)]),
    )
    .unwrap();
    let took = eventually("the new port serving", SWITCH, || async {
        get(b, "/two").await == Ok((StatusCode::OK, "upstream /two".into()))
    })
    .await;
    eprintln!("the new port served {took:?} after the write");
    assert_eq!(
        get(a, "/one").await,
        Ok((StatusCode::OK, "upstream /one".into()))
    );

    // A request in flight on port b, then b's server goes: b refuses new connections, the
    // request in flight still gets its answer, and port a goes on serving.
    let in_flight = tokio::spawn(get(b, "/hold"));
    tokio::time::timeout(STEP, held.recv())
        .await
        .expect("the held request did not reach the upstream");
    std::fs::write(&gateway_file, gateway("edge", &[http_server(a)])).unwrap();
    eventually("the removed port refusing", SWITCH, || refused(b)).await;
    release.notify_one();
    let answer = tokio::time::timeout(STEP, in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, Ok((StatusCode::OK, "upstream /hold".into())));
    assert_eq!(
        get(a, "/one").await,
        Ok((StatusCode::OK, "upstream /one".into()))
    );

    // The named Gateway leaves the config: its ports refuse, with a warning; back, they serve.
    std::fs::write(&gateway_file, gateway("other", &[http_server(b)])).unwrap();
    eventually("the gone Gateway's port refusing", SWITCH, || refused(a)).await;
    assert!(
        refused(b).await,
        "port {b} of a Gateway not named was opened"
    );
    std::fs::write(&gateway_file, gateway("edge", &[http_server(a)])).unwrap();
    eventually("the Gateway's port serving again", SWITCH, || async {
        get(a, "/three")
            .await
            .is_ok_and(|(s, _)| s == StatusCode::OK)
    })
    .await;
    let log = mesh.stderr();
    assert!(
        log.contains(&format!("gateway {b} -> 127.0.0.1:{b}: new listener")),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "gateway {b} -> 127.0.0.1:{b}: no server of the named Gateways uses this port any more: stopped accepting"
        )),
        "{log}"
    );
    assert!(
        log.contains("warning: Gateway default/edge (--gateway) is no longer in the config"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&config);
}

// === certificates ===

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gateway reload test ca");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    /// A certificate for `name` and its key, PEM.
    fn issue(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn client(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    }
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

async fn tls_connect(client: &TlsConnector, port: u16) -> Result<TlsStream<TcpStream>, String> {
    let fut = async {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from("app.example.com").unwrap();
        client.connect(name, tcp).await.map_err(|e| e.to_string())
    };
    tokio::time::timeout(STEP, fut)
        .await
        .map_err(|_| "timeout".to_string())?
}

/// The certificate a new TLS connection to `port` is served.
async fn served(client: &TlsConnector, port: u16) -> Option<CertificateDer<'static>> {
    let tls = tls_connect(client, port).await.ok()?;
    tls.get_ref().1.peer_certificates()?.first().cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewritten_certificates_serve_new_handshakes() {
    let (app, _held) = upstream(Arc::new(Notify::new())).await;
    let port = free_port();
    let config = temp_dir("config");
    std::fs::write(config.join("routes.yaml"), routes(app)).unwrap();
    let server = format!(
        "  - port: {{number: {port}, name: https, protocol: HTTPS}}\n    hosts: [app.example.com]\n    tls: {{mode: SIMPLE, credentialName: app-cert}}\n"
    );
    std::fs::write(config.join("gateway.yaml"), gateway("edge", &[server])).unwrap();
    let creds = temp_dir("credentials");
    let secret = creds.join("app-cert");
    std::fs::create_dir_all(&secret).unwrap();
    let ca = Ca::new();
    let (first_cert, first_key) = ca.issue("app.example.com");
    std::fs::write(secret.join("tls.crt"), &first_cert).unwrap();
    std::fs::write(secret.join("tls.key"), &first_key).unwrap();
    let mut mesh = Mesh::start(
        &config,
        &[
            "--gateway",
            "edge",
            "--credentials-dir",
            creds.to_str().unwrap(),
        ],
    );
    let admin = mesh.ready();
    let client = ca.client();
    assert_eq!(served(&client, port).await, Some(der(&first_cert)));
    // A connection made before the rotation, kept open.
    let early = tls_connect(&client, port).await.unwrap();
    let (mut early, conn) = hyper::client::conn::http1::handshake(TokioIo::new(early))
        .await
        .unwrap();
    tokio::spawn(conn);

    // The secret is rewritten (key, then certificate, as `kubectl create secret` updates do).
    let (second_cert, second_key) = ca.issue("app.example.com");
    std::fs::write(secret.join("tls.key"), &second_key).unwrap();
    std::fs::write(secret.join("tls.crt"), &second_cert).unwrap();
    let want = der(&second_cert);
    let took = eventually("new handshakes with the new certificate", STEP, || async {
        served(&client, port).await.as_ref() == Some(&want)
    })
    .await;
    eprintln!("the new certificate served {took:?} after the write");
    // The earlier connection goes on, and a new one is routed as before.
    let res = request(&mut early, "app.example.com", "/early").await;
    assert_eq!(res, Ok((StatusCode::OK, "upstream /early".into())));
    let tls = tls_connect(&client, port).await.unwrap();
    let res = get_on(tls, "app.example.com", "/late").await;
    assert_eq!(res, Ok((StatusCode::OK, "upstream /late".into())));

    // A certificate that does not load: reported, and the port keeps serving the last good one.
    std::fs::write(secret.join("tls.crt"), "not a certificate").unwrap();
    eventually("the bad certificate in /config_dump", STEP, || async {
        !config_dump(admin).await["last_reload_error"].is_null()
    })
    .await;
    let error = config_dump(admin).await["last_reload_error"].clone();
    let message = error["message"].as_str().unwrap_or_default();
    let file = secret.join("tls.crt");
    assert!(
        message.contains(&format!(
            "{} (serverCertificate): no PEM certificate",
            file.display()
        )),
        "{error}"
    );
    assert!(
        message.contains(&format!(
            "gateway port {port} keeps its previous servers and certificates"
        )),
        "{error}"
    );
    assert_eq!(served(&client, port).await, Some(want.clone()));

    // Fixed: the report goes.
    std::fs::write(secret.join("tls.crt"), &second_cert).unwrap();
    eventually("the report cleared", STEP, || async {
        config_dump(admin).await["last_reload_error"].is_null()
    })
    .await;
    assert_eq!(served(&client, port).await, Some(want));
    let log = mesh.stderr();
    assert!(log.contains("gateway listeners not updated: "), "{log}");
    let _ = std::fs::remove_dir_all(&config);
    let _ = std::fs::remove_dir_all(&creds);
}

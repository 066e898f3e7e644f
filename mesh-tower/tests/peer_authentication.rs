//! PeerAuthentication end to end: `inbound::serve` over `InboundAcceptor` and the inbound stack
//! on 127.0.0.1, real TCP and rustls clients (with a mesh certificate, with none, with an expired
//! one, from another CA), and what the app behind it sees.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_tower::{
    MeshHandle, MeshStack,
    authz::ConnectionInfo,
    body::{self, BoxError, MeshBody},
    inbound::{InboundAcceptor, serve},
    tls::{
        ALPN_H2_HTTP11, CertificateAuthority, ExpectedPeer, Identity, IdentitySource,
        SpiffeServerVerifier, WorkloadCertificate, client_config, provider,
    },
};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsConnector;

fn id(ns: &str, sa: &str) -> Identity {
    Identity::new("cluster.local", ns, sa)
}

fn source(ca: &CertificateAuthority, identity: &Identity) -> IdentitySource {
    let cert = ca.issue(identity, Duration::from_secs(3600)).unwrap();
    IdentitySource::new(cert.workload_certificate().unwrap()).unwrap()
}

fn mesh(yaml: &str) -> MeshHandle {
    let mesh = mesh_config::Loader::new()
        .check_str("peer-authentication.yaml", yaml)
        .into_mesh()
        .unwrap();
    MeshHandle::from(&mesh)
}

/// A workload to serve: where it lives, and its identity.
struct Workload<'a> {
    namespace: &'a str,
    app: &'a str,
    /// The app's own port, for `portLevelMtls` (default: the listener's).
    port: Option<u16>,
    identity: Option<IdentitySource>,
}

impl<'a> Workload<'a> {
    fn new(namespace: &'a str, app: &'a str, identity: Option<&IdentitySource>) -> Self {
        Workload {
            namespace,
            app,
            port: None,
            identity: identity.cloned(),
        }
    }
}

/// The app: answers `xfcc=<x-forwarded-client-cert or ->;principal=<ConnectionInfo's or ->`.
fn app() -> impl tower::Service<
    Request<MeshBody>,
    Response = http::Response<MeshBody>,
    Error = BoxError,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(|req: Request<MeshBody>| async move {
        let xfcc = req
            .headers()
            .get("x-forwarded-client-cert")
            .map_or("-".to_owned(), |v| v.to_str().unwrap().to_owned());
        let principal = req
            .extensions()
            .get::<ConnectionInfo>()
            .and_then(|c| c.peer_principal.clone())
            .unwrap_or_else(|| "-".into());
        Ok::<_, BoxError>(http::Response::new(body::full(format!(
            "xfcc={xfcc};principal={principal}"
        ))))
    })
}

/// Serves `workload` with the inbound stack over `inbound::serve` on an ephemeral port.
async fn start(handle: &MeshHandle, workload: Workload<'_>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let labels = [("app", workload.app)];
    let mut acceptor = InboundAcceptor::new(handle)
        .namespace(workload.namespace)
        .workload_labels(labels);
    if let Some(identity) = workload.identity {
        acceptor = acceptor.identity(identity);
    }
    if let Some(port) = workload.port {
        acceptor = acceptor.workload_port(port);
    }
    let stack = MeshStack::inbound(handle, app())
        .namespace(workload.namespace)
        .workload_labels(labels)
        .build();
    tokio::spawn(serve(listener, acceptor, stack, std::future::pending()));
    addr
}

type Answer = Result<(StatusCode, String), String>;

async fn request<B>(send: impl Future<Output = hyper::Result<http::Response<B>>>) -> Answer
where
    B: http_body::Body,
    B::Error: std::fmt::Display,
{
    let res = tokio::time::timeout(Duration::from_secs(5), send)
        .await
        .map_err(|_| "timeout".to_owned())?
        .map_err(|e| format!("request: {}", chain(&e)))?;
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok((
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    ))
}

/// An error and its sources, `: `-separated (hyper hides a TLS alert behind "connection error").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(e) = next {
        out.push_str(&format!(": {e}"));
        next = e.source();
    }
    out
}

fn get(headers: &[(&str, &str)]) -> Request<Empty<Bytes>> {
    let mut req = Request::get("/ratings/0").header("host", "ratings");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Empty::new()).unwrap()
}

/// A plain-text HTTP/1.1 request.
async fn plain(addr: SocketAddr, headers: &[(&str, &str)]) -> Answer {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut send, conn) = http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    request(send.send_request(get(headers))).await
}

/// A TLS connection with `config`: the stream and the server's leaf certificate.
async fn tls(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<
    (
        tokio_rustls::client::TlsStream<TcpStream>,
        CertificateDer<'static>,
    ),
    String,
> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("ratings.default.svc.cluster.local").unwrap();
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| "handshake timeout".to_owned())?
    .map_err(|e| format!("handshake: {e}"))?;
    let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    Ok((stream, leaf))
}

/// An HTTP/1.1 sender over TLS with `config`, and the server's leaf certificate.
async fn tls_h1(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<(http1::SendRequest<Empty<Bytes>>, CertificateDer<'static>), String> {
    let (stream, leaf) = tls(addr, config).await?;
    let (send, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("http handshake: {e}"))?;
    tokio::spawn(conn);
    Ok((send, leaf))
}

/// One HTTP/1.1 request over mTLS as `client`, expecting the server to be `server`.
async fn mtls(addr: SocketAddr, client: &IdentitySource, server: &Identity) -> Answer {
    let config = client_config(
        client,
        ExpectedPeer::OneOf(vec![server.to_string()]),
        &[b"http/1.1"],
    );
    let (mut send, _) = tls_h1(addr, config).await?;
    request(send.send_request(get(&[]))).await
}

/// TLS that verifies the server against `roots_of`'s roots but presents no client certificate.
fn one_way_tls(roots_of: &IdentitySource) -> Arc<rustls::ClientConfig> {
    let verifier = SpiffeServerVerifier::new(roots_of.clone(), ExpectedPeer::AnyInMesh);
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

async fn no_client_cert(addr: SocketAddr, roots_of: &IdentitySource) -> Answer {
    let (mut send, _) = tls_h1(addr, one_way_tls(roots_of)).await?;
    request(send.send_request(get(&[]))).await
}

const PRODUCTPAGE: &str = "spiffe://cluster.local/ns/default/sa/productpage";

struct Pki {
    ca: CertificateAuthority,
    ratings: Identity,
    server: IdentitySource,
    productpage: IdentitySource,
}

fn pki() -> Pki {
    let ca = CertificateAuthority::generate("test mesh CA").unwrap();
    let ratings = id("default", "ratings");
    Pki {
        server: source(&ca, &ratings),
        productpage: source(&ca, &id("default", "productpage")),
        ratings,
        ca,
    }
}

fn mesh_wide(mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {{name: default, namespace: istio-system}}\nspec: {{mtls: {{mode: {mode}}}}}\n"
    )
}

#[tokio::test]
async fn strict_takes_mesh_clients_only() {
    let pki = pki();
    let handle = mesh(&mesh_wide("STRICT"));
    let addr = start(
        &handle,
        Workload::new("default", "ratings", Some(&pki.server)),
    )
    .await;

    let (status, body) = mtls(addr, &pki.productpage, &pki.ratings).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        body.starts_with("xfcc=By=spiffe://cluster.local/ns/default/sa/ratings;Hash="),
        "{body}"
    );
    assert!(
        body.ends_with(&format!(
            ";Subject=\"\";URI={PRODUCTPAGE};principal={PRODUCTPAGE}"
        )),
        "{body}"
    );

    let refused = plain(addr, &[]).await;
    assert!(
        refused.is_err(),
        "plain text got through STRICT: {refused:?}"
    );
    let refused = no_client_cert(addr, &pki.productpage).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("CertificateRequired")),
        "one-way TLS must be refused: {refused:?}"
    );
}

#[tokio::test]
async fn h2_over_mtls_is_negotiated_by_alpn() {
    let pki = pki();
    let handle = mesh(&mesh_wide("STRICT"));
    let addr = start(
        &handle,
        Workload::new("default", "ratings", Some(&pki.server)),
    )
    .await;
    let config = client_config(&pki.productpage, ExpectedPeer::AnyInMesh, &ALPN_H2_HTTP11);
    let (stream, _) = tls(addr, config).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = get(&[]);
    *req.uri_mut() = "https://ratings/ratings/0".parse().unwrap();
    let (status, body) = request(send.send_request(req)).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        body.ends_with(&format!("principal={PRODUCTPAGE}")),
        "{body}"
    );
}

#[tokio::test]
async fn permissive_takes_mtls_and_plain_text_on_one_port() {
    let pki = pki();
    let handle = mesh(&mesh_wide("PERMISSIVE"));
    let addr = start(
        &handle,
        Workload::new("default", "ratings", Some(&pki.server)),
    )
    .await;

    let (status, body) = mtls(addr, &pki.productpage, &pki.ratings).await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains(&format!(";URI={PRODUCTPAGE};")), "{body}");

    // Plain text: no identity, and a client's own XFCC does not reach the app.
    let forged = [(
        "x-forwarded-client-cert",
        "URI=spiffe://cluster.local/ns/x/sa/admin",
    )];
    let (status, body) = plain(addr, &forged).await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "xfcc=-;principal=-")
    );

    // TLS in PERMISSIVE means mutual TLS.
    let refused = no_client_cert(addr, &pki.productpage).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("CertificateRequired")),
        "one-way TLS accepted: {refused:?}"
    );
}

#[tokio::test]
async fn disable_takes_plain_text_only() {
    let pki = pki();
    let handle = mesh(&mesh_wide("DISABLE"));
    let addr = start(
        &handle,
        Workload::new("default", "ratings", Some(&pki.server)),
    )
    .await;
    let (status, body) = plain(addr, &[]).await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "xfcc=-;principal=-")
    );
    let refused = mtls(addr, &pki.productpage, &pki.ratings).await;
    // The ClientHello reached the HTTP server, whose 400 is no TLS record.
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("InvalidContentType")),
        "a TLS handshake succeeded on DISABLE: {refused:?}"
    );
}

#[tokio::test]
async fn workload_beats_namespace_beats_mesh_wide_and_ports_have_their_own_mode() {
    let pki = pki();
    let handle = mesh(&format!(
        "{}---\n{}",
        mesh_wide("STRICT"),
        r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: legacy}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: old-client-port, namespace: legacy}
spec:
  selector: {matchLabels: {app: ratings}}
  mtls: {mode: STRICT}
  portLevelMtls:
    9080: {mode: DISABLE}
"#
    ));
    let serve_as = |ns: &'static str, app: &'static str, port: u16| {
        let handle = handle.clone();
        let identity = pki.server.clone();
        async move {
            let workload = Workload {
                port: Some(port),
                ..Workload::new(ns, app, Some(&identity))
            };
            start(&handle, workload).await
        }
    };
    // (namespace, app, workload port) -> plain text accepted?, mTLS accepted?
    let cases = [
        ("default", "ratings", 9080, false, true), // mesh-wide STRICT
        ("legacy", "reviews", 9080, true, true),   // namespace PERMISSIVE
        ("legacy", "ratings", 9090, false, true),  // workload STRICT
        ("legacy", "ratings", 9080, true, false),  // its port 9080: DISABLE
    ];
    for (ns, app, port, plain_ok, mtls_ok) in cases {
        let addr = serve_as(ns, app, port).await;
        let what = format!("{ns}/{app}:{port}");
        assert_eq!(
            plain(addr, &[]).await.is_ok(),
            plain_ok,
            "plain text to {what}"
        );
        assert_eq!(
            mtls(addr, &pki.productpage, &pki.ratings).await.is_ok(),
            mtls_ok,
            "mTLS to {what}"
        );
    }
}

#[tokio::test]
async fn a_reload_applies_to_the_next_connection() {
    let pki = pki();
    let handle = mesh(&mesh_wide("PERMISSIVE"));
    let addr = start(
        &handle,
        Workload::new("default", "ratings", Some(&pki.server)),
    )
    .await;
    // An open plain-text connection, before the change.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut before, conn) = http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    assert!(request(before.send_request(get(&[]))).await.is_ok());

    let strict = mesh_config::Loader::new()
        .check_str("strict.yaml", &mesh_wide("STRICT"))
        .into_mesh()
        .unwrap();
    handle.store(strict.compiled().clone());
    assert!(plain(addr, &[]).await.is_err(), "STRICT after the reload");
    assert!(mtls(addr, &pki.productpage, &pki.ratings).await.is_ok());
    // The connection accepted under PERMISSIVE stays, as an Envoy listener update drains it.
    assert!(request(before.send_request(get(&[]))).await.is_ok());
}

#[tokio::test]
async fn expired_and_foreign_client_certificates_are_refused() {
    let pki = pki();
    let handle = mesh(&mesh_wide("STRICT"));
    let addr = start(
        &handle,
        Workload::new("default", "ratings", Some(&pki.server)),
    )
    .await;
    let hour = Duration::from_secs(3600);
    let now = SystemTime::now();
    let expired = pki
        .ca
        .issue_valid(&id("default", "productpage"), now - 2 * hour, now - hour)
        .unwrap();
    let expired = IdentitySource::new(expired.workload_certificate().unwrap()).unwrap();
    let refused = mtls(addr, &expired, &pki.ratings).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("CertificateExpired")),
        "an expired certificate must be refused: {refused:?}"
    );

    // Same identity, another CA's signature: the server's roots do not lead to it.
    let other_ca = CertificateAuthority::generate("another mesh").unwrap();
    let foreign = other_ca.issue(&id("default", "productpage"), hour).unwrap();
    // It trusts the mesh's CA, so only the server's check can refuse it.
    let foreign = WorkloadCertificate::from_pem(
        foreign.chain_pem().as_bytes(),
        foreign.key_pem().as_bytes(),
        pki.ca.cert_pem().as_bytes(),
    )
    .unwrap();
    let foreign = IdentitySource::new(foreign).unwrap();
    let refused = mtls(addr, &foreign, &pki.ratings).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("UnknownCA")),
        "a foreign certificate must be refused: {refused:?}"
    );
    // And the mesh's own client still gets in.
    assert!(mtls(addr, &pki.productpage, &pki.ratings).await.is_ok());
}

#[tokio::test]
async fn a_server_with_the_wrong_identity_is_refused_by_secure_naming() {
    let pki = pki();
    let handle = mesh(&mesh_wide("STRICT"));
    let addr = start(
        &handle,
        Workload::new("default", "ratings", Some(&pki.server)),
    )
    .await;
    let err = mtls(addr, &pki.productpage, &id("default", "reviews"))
        .await
        .unwrap_err();
    assert!(err.contains("SecureNaming"), "{err}");
    assert!(
        err.contains(r#"presented: "spiffe://cluster.local/ns/default/sa/ratings""#),
        "{err}"
    );
}

#[tokio::test]
async fn principals_in_authorization_policy_see_the_mtls_identity() {
    let pki = pki();
    let handle = mesh(&format!(
        "{}---\n{}",
        mesh_wide("STRICT"),
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/productpage"]}}]
"#
    ));
    let addr = start(
        &handle,
        Workload::new("default", "ratings", Some(&pki.server)),
    )
    .await;
    let (status, body) = mtls(addr, &pki.productpage, &pki.ratings).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("URI={PRODUCTPAGE}")), "{body}");

    let sleep = source(&pki.ca, &id("default", "sleep"));
    let (status, body) = mtls(addr, &sleep, &pki.ratings).await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::FORBIDDEN, "RBAC: access denied")
    );
}

#[tokio::test]
async fn rotation_keeps_connections_and_new_ones_see_the_new_certificate() {
    let pki = pki();
    let handle = mesh(&mesh_wide("STRICT"));
    let addr = start(
        &handle,
        Workload::new("default", "ratings", Some(&pki.server)),
    )
    .await;
    let config = || {
        client_config(
            &pki.productpage,
            ExpectedPeer::OneOf(vec![pki.ratings.to_string()]),
            &[b"http/1.1"],
        )
    };
    let (mut before, old_leaf) = tls_h1(addr, config()).await.unwrap();
    assert_eq!(request(before.send_request(get(&[]))).await.unwrap().0, 200);

    let renewed = pki
        .ca
        .issue(&pki.ratings, Duration::from_secs(7200))
        .unwrap();
    pki.server
        .rotate(renewed.workload_certificate().unwrap())
        .unwrap();

    let (mut after, new_leaf) = tls_h1(addr, config()).await.unwrap();
    assert_ne!(
        old_leaf, new_leaf,
        "a new connection must see the renewed certificate"
    );
    assert_eq!(new_leaf, pki.server.certificate().chain()[0]);
    assert_eq!(request(after.send_request(get(&[]))).await.unwrap().0, 200);
    // The connection from before the rotation is still up and serving.
    assert_eq!(request(before.send_request(get(&[]))).await.unwrap().0, 200);
}

#[tokio::test]
async fn bytes_that_open_a_tls_record_get_a_tls_answer_in_permissive() {
    // PERMISSIVE decides on the first bytes: a TLS record header goes to the TLS handshake
    // (which answers a malformed ClientHello with a TLS alert, record type 0x15), never to the
    // HTTP server (which would answer `HTTP/1.1 400`).
    let pki = pki();
    let handle = mesh(&mesh_wide("PERMISSIVE"));
    let addr = start(
        &handle,
        Workload::new("default", "ratings", Some(&pki.server)),
    )
    .await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // A record holding one empty handshake message of an unknown type.
    tcp.write_all(&[0x16, 0x03, 0x01, 0x00, 0x04, 0xff, 0x00, 0x00, 0x00])
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf))
        .await
        .expect("the server closes after its alert")
        .unwrap();
    assert_eq!(
        buf.first(),
        Some(&0x15),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
}

#[tokio::test]
async fn an_outbound_stack_with_an_identity_reaches_a_strict_inbound_in_process() {
    // Istio's picture in one process: productpage's outbound stack (auto mTLS to an endpoint
    // labelled `security.istio.io/tlsMode: istio`, secure naming against its serviceAccount)
    // to ratings' inbound side.
    let pki = pki();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = mesh(&format!(
        "{}---\n{}",
        mesh_wide("STRICT"),
        format_args!(
            r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings, namespace: default}}
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints:
  - address: 127.0.0.1
    ports: {{http: {port}}}
    labels: {{app: ratings, security.istio.io/tlsMode: istio}}
    serviceAccount: ratings
"#
        )
    ));
    let acceptor = InboundAcceptor::new(&handle)
        .workload_labels([("app", "ratings")])
        .identity(pki.server.clone());
    let inbound = MeshStack::inbound(&handle, app())
        .workload_labels([("app", "ratings")])
        .build();
    tokio::spawn(serve(listener, acceptor, inbound, std::future::pending()));

    let client = MeshStack::outbound(&handle)
        .namespace("default")
        .workload_labels([("app", "productpage")])
        .identity(pki.productpage.clone())
        .build::<Empty<Bytes>>();
    let req = Request::get("http://ratings.default.svc.cluster.local:9080/ratings/0")
        .body(Empty::new())
        .unwrap();
    let res = tower::ServiceExt::oneshot(client, req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.ends_with(&format!("URI={PRODUCTPAGE};principal={PRODUCTPAGE}")),
        "{body}"
    );
}

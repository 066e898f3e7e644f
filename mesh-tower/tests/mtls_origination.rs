//! TLS origination to endpoints, end to end: DestinationRule `tls` (DISABLE, SIMPLE, MUTUAL,
//! ISTIO_MUTUAL with secure naming) and auto mTLS, against real TLS servers on 127.0.0.1.

mod support;

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use mesh_tower::{
    MeshService, MeshStack,
    tls::{CertificateAuthority, ClientAuth, Identity, IdentitySource, peer_identity, provider},
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use support::{get, send, upstream};
use tokio::net::TcpListener;
use tower::Service;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

fn id(sa: &str) -> Identity {
    Identity::new("cluster.local", "default", sa)
}

fn source(ca: &CertificateAuthority, sa: &str) -> IdentitySource {
    IdentitySource::new(
        ca.issue(&id(sa), DAY)
            .unwrap()
            .workload_certificate()
            .unwrap(),
    )
    .unwrap()
}

/// The outbound stack over `yaml` in namespace `default`, with `identity` if given.
fn stack(yaml: &str, identity: Option<IdentitySource>) -> MeshService<Full<Bytes>> {
    let report = mesh_config::Loader::new().check_str("test.yaml", yaml);
    assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
    let mesh = report.into_mesh().unwrap();
    let mut b = MeshStack::outbound(&mesh).namespace("default");
    if let Some(identity) = identity {
        b = b.identity(identity);
    }
    b.build()
}

/// A ServiceEntry `host` on `port` (protocol `protocol`) with one endpoint at `addr`, with
/// `labels` (flow map text) and `serviceAccount: sa`.
fn service(host: &str, protocol: &str, addr: SocketAddr, labels: &str, sa: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: {port_name}, protocol: {protocol}}}]
  endpoints:
  - address: {ip}
    ports: {{{port_name}: {port}}}
    labels: {labels}
    serviceAccount: {sa}
---
",
        name = host.replace('.', "-"),
        port_name = protocol.to_lowercase(),
        ip = addr.ip(),
        port = addr.port(),
    )
}

const MESH: &str = "{security.istio.io/tlsMode: istio}";

/// A DestinationRule for `host` with `tls` (flow map text).
fn rule(host: &str, tls: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}}}
spec:
  host: {host}
  trafficPolicy:
    tls: {tls}
---
",
        name = host.replace('.', "-"),
    )
}

/// A TLS server on 127.0.0.1 that answers 200 with what it saw of the connection: `x-peer`
/// (the client certificate's SPIFFE ID, `certificate` for another certificate, `none`),
/// `x-sni`, `x-alpn` and `x-version`.
struct TlsServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

async fn tls_server(config: Arc<ServerConfig>) -> TlsServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let (_, session) = tls.get_ref();
                let peer = match session.peer_certificates().and_then(|c| c.first()) {
                    Some(cert) => peer_identity(cert)
                        .map(|id| id.to_string())
                        .unwrap_or_else(|_| "certificate".into()),
                    None => "none".into(),
                };
                let sni = session.server_name().unwrap_or("").to_owned();
                let alpn = session
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .unwrap_or_default();
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let res = Response::builder()
                        .header("x-peer", peer.clone())
                        .header("x-sni", sni.clone())
                        .header("x-alpn", alpn.clone())
                        .header("x-version", format!("{:?}", req.version()))
                        .body(Full::new(Bytes::from("tls")))
                        .unwrap();
                    async move { Ok::<_, Infallible>(res) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    TlsServer { addr, connections }
}

/// A mesh workload's inbound: presents `identity`, requires a mesh client certificate.
async fn mesh_server(identity: &IdentitySource) -> TlsServer {
    tls_server(mesh_tower::tls::server_config(
        identity,
        ClientAuth::Required,
    ))
    .await
}

// === auto mTLS ===

#[tokio::test]
async fn auto_mtls_to_labelled_endpoints_and_plain_text_to_the_others() {
    let ca = CertificateAuthority::generate("mesh test CA").unwrap();
    let reviews = mesh_server(&source(&ca, "reviews")).await;
    let legacy = upstream("legacy").await;
    let yaml = service(
        "reviews.example.internal",
        "HTTP",
        reviews.addr,
        MESH,
        "reviews",
    ) + &service(
        "legacy.example.internal",
        "HTTP",
        legacy,
        "{app: legacy}",
        "legacy",
    );
    let client = stack(&yaml, Some(source(&ca, "productpage")));

    let req = get("http://reviews.example.internal:9080/").body(Full::default());
    let (status, h, body) = send(&client, req.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    // The server saw the client's mesh identity, Istio's SNI, and HTTP/1.1 stays HTTP/1.1.
    assert_eq!(h["x-peer"], id("productpage").to_string());
    assert_eq!(h["x-sni"], "outbound_.9080_._.reviews.example.internal");
    assert_eq!(h["x-alpn"], "http/1.1");
    assert_eq!(h["x-version"], "HTTP/1.1");

    let req = get("http://legacy.example.internal:9080/").body(Full::default());
    let (status, h, _) = send(&client, req.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(h["x-upstream"], "legacy");

    // Without an identity the labelled endpoint gets plain text, which its mTLS inbound refuses.
    let plain = stack(&yaml, None);
    let req = get("http://reviews.example.internal:9080/").body(Full::default());
    let (status, h, _) = send(&plain, req.unwrap()).await;
    assert_eq!(status, 503);
    assert_eq!(h["x-mesh-error"], "upstream-connect-failure");
}

#[tokio::test]
async fn a_custom_connector_keeps_the_identity() {
    let ca = CertificateAuthority::generate("mesh test CA").unwrap();
    let reviews = mesh_server(&source(&ca, "reviews")).await;
    let yaml = service(
        "reviews.example.internal",
        "HTTP",
        reviews.addr,
        MESH,
        "reviews",
    );
    let mesh = mesh_config::Loader::new()
        .check_str("test.yaml", &yaml)
        .into_mesh()
        .unwrap();
    let dials = Arc::new(AtomicUsize::new(0));
    let counted = dials.clone();
    let connector = tower::service_fn(move |uri: http::Uri| {
        counted.fetch_add(1, Ordering::SeqCst);
        let mut tcp = mesh_tower::endpoint::http_connector();
        Box::pin(async move { tcp.call(uri).await })
    });
    // The identity is set before the connector: TLS origination wraps the custom connector.
    let client = MeshStack::outbound(&mesh)
        .namespace("default")
        .identity(source(&ca, "productpage"))
        .connector(connector)
        .build();
    let req = get("http://reviews.example.internal:9080/").body(Full::default());
    let (status, h, body) = send(&client, req.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h["x-peer"], id("productpage").to_string());
    assert_eq!(dials.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn destination_rule_disable_overrides_auto_mtls() {
    let ca = CertificateAuthority::generate("mesh test CA").unwrap();
    // A labelled endpoint whose server speaks plain HTTP.
    let plain = upstream("ratings").await;
    let host = "ratings.example.internal";
    let svc = service(host, "HTTP", plain, MESH, "ratings");
    let url = format!("http://{host}:9080/");

    // Auto mTLS alone: a TLS handshake with a plain-text server fails.
    let client = stack(&svc, Some(source(&ca, "productpage")));
    let (status, h, body) = send(&client, get(&url).body(Full::default()).unwrap()).await;
    assert_eq!(status, 503);
    assert_eq!(h["x-mesh-error"], "upstream-connect-failure");
    assert!(
        body.contains("transport failure reason: TLS handshake"),
        "{body}"
    );

    let client = stack(
        &(svc + &rule(host, "{mode: DISABLE}")),
        Some(source(&ca, "productpage")),
    );
    let (status, h, _) = send(&client, get(&url).body(Full::default()).unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(h["x-upstream"], "ratings");
}

// === ISTIO_MUTUAL and secure naming ===

#[tokio::test]
async fn istio_mutual_checks_the_service_account_of_the_endpoint() {
    let ca = CertificateAuthority::generate("mesh test CA").unwrap();
    // Both endpoints are registered as `reviews`; one presents `ratings`. No tlsMode label:
    // the DestinationRule asks for ISTIO_MUTUAL.
    let impostor = mesh_server(&source(&ca, "ratings")).await;
    let genuine = mesh_server(&source(&ca, "reviews")).await;
    let yaml = service(
        "wrong.example.internal",
        "HTTP",
        impostor.addr,
        "{}",
        "reviews",
    ) + &rule("wrong.example.internal", "{mode: ISTIO_MUTUAL}")
        + &service(
            "right.example.internal",
            "HTTP",
            genuine.addr,
            "{}",
            "reviews",
        )
        + &rule("right.example.internal", "{mode: ISTIO_MUTUAL}");
    let client = stack(&yaml, Some(source(&ca, "productpage")));

    let req = get("http://wrong.example.internal:9080/").body(Full::default());
    let (status, h, body) = send(&client, req.unwrap()).await;
    assert_eq!(status, 503);
    assert_eq!(h["x-mesh-error"], "upstream-connect-failure");
    assert!(
        body.starts_with("upstream connect error or disconnect/reset before headers.")
            && body.contains("secure naming: the server presented spiffe://cluster.local/ns/default/sa/ratings, expected spiffe://cluster.local/ns/default/sa/reviews"),
        "{body}"
    );

    let req = get("http://right.example.internal:9080/").body(Full::default());
    let (status, h, body) = send(&client, req.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h["x-peer"], id("productpage").to_string());
}

#[tokio::test]
async fn istio_mutual_without_an_identity_fails_saying_what_to_configure() {
    let ca = CertificateAuthority::generate("mesh test CA").unwrap();
    let server = mesh_server(&source(&ca, "reviews")).await;
    let host = "reviews.example.internal";
    let yaml =
        service(host, "HTTP", server.addr, MESH, "reviews") + &rule(host, "{mode: ISTIO_MUTUAL}");
    let client = stack(&yaml, None);
    let req = get("http://reviews.example.internal:9080/").body(Full::default());
    let (status, h, body) = send(&client, req.unwrap()).await;
    assert_eq!(status, 503);
    assert_eq!(h["x-mesh-error"], "upstream-connect-failure");
    assert!(
        body.contains("no workload identity: configure one"),
        "{body}"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused() {
    let ca = CertificateAuthority::generate("mesh test CA").unwrap();
    let now = SystemTime::now();
    let expired = ca
        .issue_valid(&id("reviews"), now - 2 * DAY, now - DAY)
        .unwrap();
    let server =
        mesh_server(&IdentitySource::new(expired.workload_certificate().unwrap()).unwrap()).await;
    let yaml = service(
        "reviews.example.internal",
        "HTTP",
        server.addr,
        MESH,
        "reviews",
    );
    let client = stack(&yaml, Some(source(&ca, "productpage")));
    let req = get("http://reviews.example.internal:9080/").body(Full::default());
    let (status, h, body) = send(&client, req.unwrap()).await;
    assert_eq!(status, 503);
    assert_eq!(h["x-mesh-error"], "upstream-connect-failure");
    assert!(body.contains("certificate expired"), "{body}");
}

// === ALPN and pools ===

#[tokio::test]
async fn http2_ports_negotiate_h2_over_mtls_and_pools_never_mix_tls_settings() {
    let ca = CertificateAuthority::generate("mesh test CA").unwrap();
    let server = mesh_server(&source(&ca, "greeter")).await;
    // Two hosts on the same endpoint: one with auto mTLS, one with TLS disabled.
    let yaml = service(
        "greeter.example.internal",
        "HTTP2",
        server.addr,
        MESH,
        "greeter",
    ) + &service(
        "plain.example.internal",
        "HTTP2",
        server.addr,
        MESH,
        "greeter",
    ) + &rule("plain.example.internal", "{mode: DISABLE}");
    let client = stack(&yaml, Some(source(&ca, "productpage")));

    for _ in 0..2 {
        let req = get("http://greeter.example.internal:9080/").body(Full::default());
        let (status, h, body) = send(&client, req.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(h["x-alpn"], "h2");
        assert_eq!(h["x-version"], "HTTP/2.0");
        assert_eq!(h["x-peer"], id("productpage").to_string());
    }
    // One HTTP/2 connection, reused.
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);

    // The same endpoint in plain text must not get the pooled mTLS connection: a new one, which
    // the mTLS server refuses.
    let req = get("http://plain.example.internal:9080/").body(Full::default());
    let (status, _, _) = send(&client, req.unwrap()).await;
    assert_eq!(status, 503);
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

// === SIMPLE and MUTUAL ===

/// A CA for DNS certificates, and its certificates written to a temporary folder.
struct DnsPki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    dir: PathBuf,
}

impl DnsPki {
    fn new(test: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "mesh test DNS CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = params.self_signed(&key).unwrap().pem();
        let dir = std::env::temp_dir().join(format!(
            "mesh-mtls-origination-{}-{test}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = DnsPki {
            issuer: Issuer::new(params, key),
            ca_pem,
            dir,
        };
        pki.write("ca.pem", &pki.ca_pem.clone());
        pki
    }

    /// A certificate for `names`, for servers or clients: (chain PEM, key PEM).
    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(&self, name: &str, pem: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    }

    /// A server presenting a certificate for `names`, requiring a client certificate of this
    /// CA when `mutual`.
    async fn server(&self, names: &[&str], mutual: bool) -> TlsServer {
        let (cert, key) = self.issue(names, ExtendedKeyUsagePurpose::ServerAuth);
        let chain: Vec<_> = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if mutual {
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap())
                .unwrap();
            builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .unwrap(),
            )
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_single_cert(chain, key).unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tls_server(Arc::new(config)).await
    }
}

impl Drop for DnsPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn simple_tls_verifies_the_server_against_ca_certificates() {
    let pki = DnsPki::new("simple");
    let ca = pki.dir.join("ca.pem").display().to_string();
    let server = pki.server(&["secure.example.internal"], false).await;
    let mut yaml = String::new();
    // (host, tls): the host is the SNI unless `sni` says otherwise.
    let cases = [
        (
            "secure.example.internal",
            format!("{{mode: SIMPLE, caCertificates: {ca}}}"),
        ),
        (
            "alias.example.internal",
            format!("{{mode: SIMPLE, caCertificates: {ca}, sni: secure.example.internal}}"),
        ),
        (
            "san.example.internal",
            format!(
                "{{mode: SIMPLE, caCertificates: {ca}, subjectAltNames: [secure.example.internal]}}"
            ),
        ),
        (
            "other.example.internal",
            format!("{{mode: SIMPLE, caCertificates: {ca}}}"),
        ),
        ("public.example.internal", "{mode: SIMPLE}".to_owned()),
        (
            "insecure.example.internal",
            "{mode: SIMPLE, insecureSkipVerify: true}".to_owned(),
        ),
    ];
    for (host, tls) in &cases {
        yaml += &service(host, "HTTP", server.addr, "{}", "default");
        yaml += &rule(host, tls);
    }
    let client = stack(&yaml, None);
    let call = |host: &str| {
        let req = get(&format!("http://{host}:9080/")).body(Full::default());
        send(&client, req.unwrap())
    };

    let (status, h, body) = call("secure.example.internal").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h["x-sni"], "secure.example.internal");
    assert_eq!(h["x-peer"], "none");
    assert_eq!(h["x-alpn"], "http/1.1");

    let (status, h, body) = call("alias.example.internal").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h["x-sni"], "secure.example.internal");

    // subjectAltNames replace the hostname check: the SNI (the host) is not in the certificate.
    let (status, h, body) = call("san.example.internal").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h["x-sni"], "san.example.internal");

    // The certificate is not valid for the SNI.
    let (status, h, body) = call("other.example.internal").await;
    assert_eq!(status, 503);
    assert_eq!(h["x-mesh-error"], "upstream-connect-failure");
    assert!(body.contains("not valid for name"), "{body}");

    // Without caCertificates the public roots are used, which do not know the test CA.
    let (status, _, body) = call("public.example.internal").await;
    assert_eq!(status, 503);
    assert!(body.contains("UnknownIssuer"), "{body}");

    // insecureSkipVerify: neither the issuer nor the name is checked.
    let (status, h, body) = call("insecure.example.internal").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h["x-sni"], "insecure.example.internal");
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate_files() {
    let pki = DnsPki::new("mutual");
    let ca = pki.dir.join("ca.pem").display().to_string();
    let (cert, key) = pki.issue(
        &["productpage.example.internal"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let cert = pki.write("client.pem", &cert);
    let key = pki.write("client-key.pem", &key);
    let server = pki.server(&["secure.example.internal"], true).await;
    let yaml = service(
        "secure.example.internal",
        "HTTP",
        server.addr,
        "{}",
        "default",
    ) + &rule(
        "secure.example.internal",
        &format!(
            "{{mode: MUTUAL, caCertificates: {ca}, clientCertificate: {cert}, privateKey: {key}}}"
        ),
    ) + &service(
        "nocert.example.internal",
        "HTTP",
        server.addr,
        "{}",
        "default",
    ) + &rule(
        "nocert.example.internal",
        &format!("{{mode: SIMPLE, caCertificates: {ca}, sni: secure.example.internal}}"),
    ) + &service(
        "missing.example.internal",
        "HTTP",
        server.addr,
        "{}",
        "default",
    ) + &rule(
        "missing.example.internal",
        &format!(
            "{{mode: MUTUAL, caCertificates: {ca}, clientCertificate: /nonexistent/cert.pem, privateKey: {key}}}"
        ),
    );
    let client = stack(&yaml, None);

    let req = get("http://secure.example.internal:9080/").body(Full::default());
    let (status, h, body) = send(&client, req.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h["x-peer"], "certificate");

    // The server requires a client certificate: SIMPLE is refused.
    let req = get("http://nocert.example.internal:9080/").body(Full::default());
    let (status, _, _) = send(&client, req.unwrap()).await;
    assert_eq!(status, 503);

    // A file that cannot be read: 503 naming it.
    let req = get("http://missing.example.internal:9080/").body(Full::default());
    let (status, _, body) = send(&client, req.unwrap()).await;
    assert_eq!(status, 503);
    assert!(
        body.contains("tls.clientCertificate `/nonexistent/cert.pem`"),
        "{body}"
    );
}

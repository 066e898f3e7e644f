//! The mTLS handshake between two mesh workloads: what a new sidecar-to-sidecar connection
//! costs before its first request, with mesh's configs (ECDSA P-256 SPIFFE certificates, the
//! SPIFFE verifiers on both sides, TLS 1.3, ring). The baseline in the same run is a
//! server-authenticated handshake with rustls' stock verifier and a DNS certificate from the
//! same CA: the difference is what client authentication and the SPIFFE checks add.
//!
//! `cargo bench -p mesh-benches --bench tls` (add `-- --quick` for a fast pass).

use std::{hint::black_box, sync::Arc, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use mesh_tower::tls::{
    ALPN_H2_HTTP11, CertificateAuthority, ClientAuth, ExpectedPeer, Identity, IdentitySource,
    client_config, provider, server_config,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::duplex;
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn source(ca: &CertificateAuthority, sa: &str) -> IdentitySource {
    let issued = ca
        .issue(
            &Identity::new("cluster.local", "default", sa),
            Duration::from_secs(3600),
        )
        .unwrap();
    IdentitySource::new(issued.workload_certificate().unwrap()).unwrap()
}

async fn handshake(server: Arc<rustls::ServerConfig>, client: Arc<rustls::ClientConfig>) {
    let (c, s) = duplex(64 * 1024);
    let sni = ServerName::try_from("reviews.default.svc.cluster.local").unwrap();
    let (server, client) = tokio::join!(
        TlsAcceptor::from(server).accept(s),
        TlsConnector::from(client).connect(sni, c)
    );
    black_box((server.unwrap(), client.unwrap()));
}

/// A server-only TLS pair: a DNS certificate signed by `ca`, verified by rustls' webpki.
fn one_way(ca: &CertificateAuthority) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["reviews.default.svc.cluster.local".into()]).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(
        ca.cert_der(),
        rcgen::KeyPair::from_pem(&ca.key_pem()).unwrap(),
    )
    .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.cert_der().to_vec()))
        .unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.resumption = rustls::client::Resumption::disabled();
    (Arc::new(server), Arc::new(client))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let ca = CertificateAuthority::generate("bench CA").unwrap();
    let server_id = source(&ca, "reviews");
    let client_id = source(&ca, "productpage");
    let mtls_server = server_config(&server_id, ClientAuth::Required);
    let mtls_client = client_config(
        &client_id,
        ExpectedPeer::OneOf(vec!["spiffe://cluster.local/ns/default/sa/reviews".into()]),
        &ALPN_H2_HTTP11,
    );
    let (tls_server, tls_client) = one_way(&ca);

    let mut g = c.benchmark_group("handshake");
    g.bench_function("server_only_tls_webpki", |b| {
        b.iter(|| rt.block_on(handshake(tls_server.clone(), tls_client.clone())))
    });
    g.bench_function("mesh_mtls_spiffe", |b| {
        b.iter(|| rt.block_on(handshake(mtls_server.clone(), mtls_client.clone())))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

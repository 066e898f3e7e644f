use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;

fn id(ns: &str, sa: &str) -> Identity {
    Identity::new("cluster.local", ns, sa)
}

fn source(ca: &CertificateAuthority, identity: &Identity) -> IdentitySource {
    let cert = ca.issue(identity, Duration::from_secs(3600)).unwrap();
    IdentitySource::new(cert.workload_certificate().unwrap()).unwrap()
}

fn sni() -> ServerName<'static> {
    ServerName::try_from("reviews.default.svc.cluster.local").unwrap()
}

/// A handshake over an in-memory pipe; the server's view of the client identity, or the
/// client's and server's errors as text.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> Result<Option<Identity>, String> {
    let (c, s) = duplex(64 * 1024);
    let accept = tokio::spawn(async move {
        let mut tls = TlsAcceptor::from(server)
            .accept(s)
            .await
            .map_err(|e| format!("server: {e}"))?;
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| peer_identity(c).unwrap());
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(&buf).await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(peer)
    });
    let connected = TlsConnector::from(client).connect(sni(), c).await;
    let mut tls = match connected {
        Ok(tls) => tls,
        Err(e) => {
            let server = accept.await.unwrap().err().unwrap_or_default();
            return Err(format!("client: {e}; {server}"));
        }
    };
    tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    let read = tls.read_exact(&mut buf).await.map_err(|e| e.to_string());
    let peer = accept.await.unwrap()?;
    read?;
    assert_eq!(&buf, b"ping");
    Ok(peer)
}

#[tokio::test]
async fn mutual_tls_carries_both_identities() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let server = source(&ca, &id("default", "bookinfo-reviews"));
    let client = source(&ca, &id("default", "bookinfo-productpage"));
    let expected = ExpectedPeer::OneOf(vec![
        "spiffe://cluster.local/ns/default/sa/bookinfo-reviews".into(),
    ]);
    let peer = handshake(
        server_config(&server, ClientAuth::Required),
        client_config(&client, expected, &ALPN_H2_HTTP11),
    )
    .await
    .unwrap();
    assert_eq!(peer, Some(id("default", "bookinfo-productpage")));
}

#[tokio::test]
async fn secure_naming_refuses_another_identity() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let server = source(&ca, &id("default", "impostor"));
    let client = source(&ca, &id("default", "bookinfo-productpage"));
    let expected = ExpectedPeer::OneOf(vec![
        "spiffe://cluster.local/ns/default/sa/bookinfo-reviews".into(),
    ]);
    let err = handshake(
        server_config(&server, ClientAuth::Required),
        client_config(&client, expected, &ALPN_H2_HTTP11),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("SecureNamingError")
            && err.contains("spiffe://cluster.local/ns/default/sa/impostor")
            && err.contains("spiffe://cluster.local/ns/default/sa/bookinfo-reviews"),
        "{err}"
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_both_ways() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let other = CertificateAuthority::generate("other CA").unwrap();
    let good = source(&ca, &id("default", "a"));
    let foreign = source(&other, &id("default", "b"));
    // A client of `ca` does not trust a server of `other`.
    let err = handshake(
        server_config(&foreign, ClientAuth::Required),
        client_config(&good, ExpectedPeer::AnyInMesh, &ALPN_H2_HTTP11),
    )
    .await
    .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    // A server of `ca` does not take a client certificate of `other`.
    let mut client = (*client_config(&foreign, ExpectedPeer::AnyInMesh, &ALPN_H2_HTTP11)).clone();
    // Let the foreign client trust the server, so only the server's check is left.
    client
        .dangerous()
        .set_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            good.clone(),
            ExpectedPeer::AnyInMesh,
        )));
    let err = handshake(server_config(&good, ClientAuth::Required), Arc::new(client))
        .await
        .unwrap_err();
    assert!(
        err.contains("server:") && err.contains("UnknownIssuer"),
        "{err}"
    );
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let now = SystemTime::now();
    let expired = ca
        .issue_valid(
            &id("default", "old"),
            now - Duration::from_secs(7200),
            now - Duration::from_secs(3600),
        )
        .unwrap();
    let expired = IdentitySource::new(expired.workload_certificate().unwrap()).unwrap();
    let client = source(&ca, &id("default", "productpage"));
    let err = handshake(
        server_config(&expired, ClientAuth::Required),
        client_config(&client, ExpectedPeer::AnyInMesh, &ALPN_H2_HTTP11),
    )
    .await
    .unwrap_err();
    assert!(err.contains("Expired"), "{err}");
}

#[tokio::test]
async fn required_client_auth_refuses_a_client_without_a_certificate() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let server = source(&ca, &id("default", "reviews"));
    let no_cert = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            server.clone(),
            ExpectedPeer::AnyInMesh,
        )))
        .with_no_client_auth();
    let err = handshake(
        server_config(&server, ClientAuth::Required),
        Arc::new(no_cert.clone()),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("server:") && err.contains("certificate"),
        "{err}"
    );
    // Optional client auth lets it in, with no identity.
    let peer = handshake(
        server_config(&server, ClientAuth::Optional),
        Arc::new(no_cert),
    )
    .await
    .unwrap();
    assert_eq!(peer, None);
}

#[tokio::test]
async fn a_certificate_without_a_spiffe_id_is_refused() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    // A DNS-only certificate signed by the mesh CA: a webpki-valid chain, but no identity.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = rcgen::CertificateParams::new(vec!["reviews.example.com".into()]).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(
        ca.cert_der(),
        rcgen::KeyPair::from_pem(&ca.key_pem()).unwrap(),
    )
    .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let err = WorkloadCertificate::from_pem(
        cert.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
        ca.cert_pem().as_bytes(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("no spiffe:// URI SAN"), "{err}");
}

#[tokio::test]
async fn rotation_keeps_live_connections_and_serves_the_new_certificate() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let server = source(&ca, &id("default", "reviews"));
    let client = source(&ca, &id("default", "productpage"));
    let server_cfg = server_config(&server, ClientAuth::Required);
    let client_cfg = client_config(&client, ExpectedPeer::AnyInMesh, &ALPN_H2_HTTP11);

    // A connection made before the rotation.
    let (c, s) = duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(server_cfg.clone());
    let accepted = tokio::spawn(async move { acceptor.accept(s).await.unwrap() });
    let mut old_conn = TlsConnector::from(client_cfg.clone())
        .connect(sni(), c)
        .await
        .unwrap();
    let mut old_server = accepted.await.unwrap();
    let first_leaf = old_conn.get_ref().1.peer_certificates().unwrap()[0].clone();

    let renewed = ca
        .issue(&id("default", "reviews"), Duration::from_secs(7200))
        .unwrap();
    server
        .rotate(renewed.workload_certificate().unwrap())
        .unwrap();

    // The old connection still carries data both ways.
    old_conn.write_all(b"ping").await.unwrap();
    old_conn.flush().await.unwrap();
    let mut buf = [0u8; 4];
    old_server.read_exact(&mut buf).await.unwrap();
    old_server.write_all(b"pong").await.unwrap();
    old_server.flush().await.unwrap();
    old_conn.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");

    // A new connection sees the renewed certificate.
    let (c, s) = duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(server_cfg);
    let accepted = tokio::spawn(async move { acceptor.accept(s).await.unwrap() });
    let new_conn = TlsConnector::from(client_cfg)
        .connect(sni(), c)
        .await
        .unwrap();
    accepted.await.unwrap();
    let new_leaf = new_conn.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_ne!(first_leaf, new_leaf);
    assert_eq!(new_leaf, renewed.workload_certificate().unwrap().chain()[0]);
}

#[tokio::test]
async fn a_bad_rotation_keeps_the_current_certificate() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let server = source(&ca, &id("default", "reviews"));
    let before = server.certificate().chain()[0].clone();
    let other = ca
        .issue(&id("default", "x"), Duration::from_secs(60))
        .unwrap();
    let mismatched = WorkloadCertificate::from_pem(
        ca.issue(&id("default", "reviews"), Duration::from_secs(60))
            .unwrap()
            .chain_pem()
            .as_bytes(),
        other.key_pem().as_bytes(),
        ca.cert_pem().as_bytes(),
    );
    let err = mismatched.unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    assert_eq!(server.certificate().chain()[0], before);
}

#[tokio::test(start_paused = true)]
async fn the_in_memory_issuer_renews_at_80_percent_of_the_lifetime() {
    let issuer = InMemoryIssuer::generate(Duration::from_secs(100)).unwrap();
    let (source, _renewal) = issuer.issue_renewed(&id("default", "ratings")).unwrap();
    let first = source.certificate().chain()[0].clone();
    tokio::time::sleep(Duration::from_secs(79)).await;
    assert_eq!(source.certificate().chain()[0], first, "renewed too early");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = source.certificate().chain()[0].clone();
    assert_ne!(second, first, "not renewed at 80%");
    assert_eq!(source.identity(), id("default", "ratings"));
    tokio::time::sleep(Duration::from_secs(80)).await;
    assert_ne!(source.certificate().chain()[0], second, "not renewed again");
}

#[test]
fn istio_file_layout_round_trips() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let issued = ca
        .issue(&id("shop", "cart"), Duration::from_secs(600))
        .unwrap();
    let dir = std::env::temp_dir().join(format!("mesh-tls-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(CERT_CHAIN_FILE), issued.chain_pem()).unwrap();
    std::fs::write(dir.join(KEY_FILE), issued.key_pem()).unwrap();
    std::fs::write(dir.join(ROOT_CERT_FILE), issued.root_pem()).unwrap();
    let source = IdentitySource::from_dir(&dir).unwrap();
    assert_eq!(source.identity(), id("shop", "cart"));
    std::fs::remove_file(dir.join(KEY_FILE)).unwrap();
    let err = IdentitySource::from_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("key.pem"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn write_identity(dir: &std::path::Path, issued: &IssuedCertificate) {
    // As `mesh ca issue` does: each file replaced by a rename.
    for (name, text) in [
        (KEY_FILE, issued.key_pem().to_owned()),
        (CERT_CHAIN_FILE, issued.chain_pem()),
        (ROOT_CERT_FILE, issued.root_pem().to_owned()),
    ] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

/// Polls `cond` for up to 5 s.
fn eventually(cond: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_watched_identity_folder_rotates_and_skips_bad_writes() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let dir = std::env::temp_dir().join(format!("mesh-tls-watch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let first = ca
        .issue(&id("default", "reviews"), Duration::from_secs(600))
        .unwrap();
    write_identity(&dir, &first);
    let (source, watch) = IdentitySource::watch_dir(&dir).unwrap();
    let first_leaf = source.certificate().chain()[0].clone();

    let second = ca
        .issue(&id("default", "reviews"), Duration::from_secs(900))
        .unwrap();
    write_identity(&dir, &second);
    let second_leaf = second.workload_certificate().unwrap().chain()[0].clone();
    assert_ne!(first_leaf, second_leaf);
    assert!(
        eventually(|| source.certificate().chain()[0] == second_leaf),
        "the rewritten files were not picked up"
    );

    // A broken key: the current certificate stays.
    std::fs::write(dir.join(KEY_FILE), "not a key").unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(source.certificate().chain()[0], second_leaf);

    drop(watch);
    let _ = std::fs::remove_dir_all(&dir);
}

use std::{convert::Infallible, time::Duration};

use http::Request;
use mesh_core::{
    CompiledMesh, Identity,
    model::{MtlsMode, PeerAuthenticationPolicy, PolicyScope},
};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
};
use tower::{ServiceBuilder, ServiceExt};

use super::*;
use crate::{
    snapshot::MeshHandle,
    tls::{CertificateAuthority, IdentitySource},
};

#[test]
fn tls_is_told_from_plain_text_by_the_record_header() {
    let cases: &[(&[u8], bool)] = &[
        (&[0x16, 0x03, 0x01, 0x02, 0x00], true), // ClientHello, TLS 1.0 record version
        (&[0x16, 0x03], true),
        (&[0x16], true), // the version byte has not arrived yet
        (b"GET / HTTP/1.1\r\n", false),
        (b"PRI * HTTP/2.0\r\n", false), // h2c prior knowledge
        (&[0x16, 0x02], false),
        (&[0x15, 0x03], false), // an alert record is no handshake
        (&[], false),
    ];
    for (bytes, tls) in cases {
        assert_eq!(looks_like_tls(bytes), *tls, "{bytes:?}");
    }
}

fn mtls() -> MutualTls {
    MutualTls {
        local_identity: Identity::new("cluster.local", "default", "reviews"),
        peer_identity: Identity::new("cluster.local", "default", "productpage"),
        peer_certificate_sha256: std::array::from_fn(|i| i as u8),
    }
}

/// The app's view of `x-forwarded-client-cert` for `req`, through the layer.
async fn xfcc_seen(req: Request<()>) -> Option<String> {
    let app = tower::service_fn(|req: Request<()>| async move {
        Ok::<_, Infallible>(
            req.headers()
                .get_all(X_FORWARDED_CLIENT_CERT)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>(),
        )
    });
    let mut seen = ServiceBuilder::new()
        .layer(XfccLayer::new())
        .service(app)
        .oneshot(req)
        .await
        .unwrap();
    assert!(seen.len() <= 1, "one header at most: {seen:?}");
    seen.pop()
}

#[tokio::test]
async fn xfcc_is_set_from_the_connection_over_mtls() {
    let mut req = Request::new(());
    req.extensions_mut().insert(mtls());
    assert_eq!(
        xfcc_seen(req).await.as_deref(),
        Some(
            "By=spiffe://cluster.local/ns/default/sa/reviews;\
             Hash=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f;\
             Subject=\"\";URI=spiffe://cluster.local/ns/default/sa/productpage"
        )
    );
}

#[tokio::test]
async fn xfcc_from_the_client_is_replaced_over_mtls_and_dropped_otherwise() {
    let forged = || {
        Request::builder()
            .header(
                X_FORWARDED_CLIENT_CERT,
                "URI=spiffe://cluster.local/ns/x/sa/admin",
            )
            .header(
                X_FORWARDED_CLIENT_CERT,
                "URI=spiffe://cluster.local/ns/y/sa/root",
            )
            .body(())
            .unwrap()
    };
    let mut over_mtls = forged();
    over_mtls.extensions_mut().insert(mtls());
    let seen = xfcc_seen(over_mtls).await.unwrap();
    assert!(
        seen.ends_with(";URI=spiffe://cluster.local/ns/default/sa/productpage"),
        "{seen}"
    );
    assert_eq!(xfcc_seen(forged()).await, None);
}

fn mesh_with(mode: MtlsMode) -> MeshHandle {
    MeshHandle::new(CompiledMesh {
        root_namespace: "istio-system".into(),
        peer_authentications: vec![PeerAuthenticationPolicy {
            name: "istio-system/default".into(),
            scope: PolicyScope {
                namespace: "istio-system".into(),
                selector: None,
            },
            mode,
            port_modes: vec![],
        }],
        ..CompiledMesh::default()
    })
}

async fn connected() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_closed_after_the_handshake_timeout() {
    let acceptor = InboundAcceptor::new(mesh_with(MtlsMode::Permissive))
        .handshake_timeout(Duration::from_secs(3));
    let (_client, server) = connected().await;
    let err = acceptor.accept(server, 80).await.unwrap_err();
    assert!(
        matches!(err, AcceptError::Timeout { after, .. } if after == Duration::from_secs(3)),
        "{err}"
    );
}

#[tokio::test]
async fn strict_without_an_identity_refuses_tls_and_says_what_to_do() {
    let acceptor = InboundAcceptor::new(mesh_with(MtlsMode::Strict));
    let (mut client, server) = connected().await;
    client.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let err = acceptor.accept(server, 80).await.unwrap_err();
    assert!(
        matches!(err, AcceptError::NoIdentity { mode: "STRICT", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("--identity-dir"), "{err}");
}

#[tokio::test]
async fn strict_without_an_identity_refuses_plain_text_too() {
    let acceptor = InboundAcceptor::new(mesh_with(MtlsMode::Strict));
    let (mut client, server) = connected().await;
    client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let err = acceptor.accept(server, 80).await.unwrap_err();
    assert!(matches!(err, AcceptError::NoIdentity { .. }), "{err}");
}

#[tokio::test]
async fn strict_refuses_plain_text_naming_the_policy() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let cert = ca
        .issue(
            &Identity::new("cluster.local", "default", "reviews"),
            Duration::from_secs(60),
        )
        .unwrap();
    let identity = IdentitySource::new(cert.workload_certificate().unwrap()).unwrap();
    let acceptor = InboundAcceptor::new(mesh_with(MtlsMode::Strict)).identity(identity);
    let (mut client, server) = connected().await;
    client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let err = acceptor.accept(server, 80).await.unwrap_err();
    assert!(
        matches!(&err, AcceptError::PlainTextRefused { policy, port: 80, .. } if policy == "istio-system/default"),
        "{err}"
    );
}

#[tokio::test]
async fn disable_and_permissive_take_plain_text_without_consuming_it() {
    for mode in [MtlsMode::Disable, MtlsMode::Permissive] {
        let acceptor = InboundAcceptor::new(mesh_with(mode));
        let (mut client, server) = connected().await;
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let (mut stream, info) = acceptor.accept(server, 80).await.unwrap();
        assert!(!stream.is_tls() && stream.mutual_tls().is_none());
        assert_eq!(info.peer_addr, Some(client.local_addr().unwrap()));
        assert_eq!(info.peer_principal, None);
        let mut buf = [0u8; 16];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut buf)
            .await
            .unwrap();
        assert_eq!(&buf, b"GET / HTTP/1.1\r\n", "{mode:?}");
    }
}

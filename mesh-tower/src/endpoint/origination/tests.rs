use std::{cell::Cell, sync::Arc};

use mesh_core::{
    Host, Identity, Selector,
    model::{
        ClientTls, ClientTlsMode, CompiledMesh, Endpoint, EndpointAddress, Location, MtlsMode,
        PeerAuthenticationPolicy, PolicyScope, Resolution, Service,
    },
};

use super::{config::san_matches, *};

const HOST: &str = "reviews.default.svc.cluster.local";
const REVIEWS: &str = "spiffe://cluster.local/ns/default/sa/reviews";

fn facts<'a>(tls: Option<&'a ClientTls>, has_identity: bool) -> ClusterFacts<'a> {
    ClusterFacts {
        host: HOST,
        port: 9080,
        subset: Some("v1"),
        h2: false,
        tls,
        rule: Some("default/reviews"),
        identities: vec![REVIEWS.to_owned()],
        mtls_disabled: false,
        has_identity,
    }
}

fn tls(mode: ClientTlsMode) -> ClientTls {
    ClientTls {
        mode,
        client_certificate: None,
        private_key: None,
        ca_certificates: None,
        credential_name: None,
        subject_alt_names: Vec::new(),
        sni: None,
        insecure_skip_verify: false,
    }
}

fn key(t: Result<Transport, OriginationError>) -> TlsKey {
    match t {
        Ok(Transport::Tls(k)) => (*k).clone(),
        other => panic!("expected TLS, got {other:?}"),
    }
}

// === auto mTLS (no DestinationRule tls) ===

#[test]
fn auto_mtls_is_istio_mutual_to_mesh_workloads_and_plain_to_others() {
    let f = facts(None, true);
    let k = key(decide(&f, true));
    assert_eq!(k.mode, OriginationMode::IstioMutual);
    assert_eq!(k.sni, format!("outbound_.9080_.v1_.{HOST}"));
    assert_eq!(k.subject_alt_names, vec![REVIEWS.to_owned()]);
    assert!(!k.h2);
    assert_eq!(decide(&f, false).unwrap(), Transport::Plain);
}

#[test]
fn auto_mtls_without_an_identity_is_plain() {
    assert_eq!(decide(&facts(None, false), true).unwrap(), Transport::Plain);
}

#[test]
fn auto_mtls_is_off_where_peer_authentication_disables_mtls() {
    let f = ClusterFacts {
        mtls_disabled: true,
        ..facts(None, true)
    };
    assert_eq!(decide(&f, true).unwrap(), Transport::Plain);
}

#[test]
fn auto_mtls_offers_h2_for_http2_clusters() {
    let f = ClusterFacts {
        h2: true,
        ..facts(None, true)
    };
    assert!(key(decide(&f, true)).h2);
}

#[test]
fn no_known_identities_accept_any_mesh_identity() {
    let f = ClusterFacts {
        identities: Vec::new(),
        ..facts(None, true)
    };
    assert!(key(decide(&f, true)).subject_alt_names.is_empty());
}

// === DestinationRule tls ===

#[test]
fn disable_overrides_auto_mtls() {
    let t = tls(ClientTlsMode::Disable);
    assert_eq!(
        decide(&facts(Some(&t), true), true).unwrap(),
        Transport::Plain
    );
}

#[test]
fn istio_mutual_applies_to_every_endpoint_and_needs_an_identity() {
    let t = tls(ClientTlsMode::IstioMutual);
    // The rule wins over the label: endpoints without it get mTLS too.
    assert_eq!(
        key(decide(&facts(Some(&t), true), false)).mode,
        OriginationMode::IstioMutual
    );
    let err = decide(&facts(Some(&t), false), true).unwrap_err();
    assert!(matches!(err, OriginationError::NoIdentity { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("default/reviews") && msg.contains("configure one"),
        "{msg}"
    );
}

#[test]
fn istio_mutual_subject_alt_names_and_sni_replace_the_defaults() {
    let mut t = tls(ClientTlsMode::IstioMutual);
    t.subject_alt_names = vec![
        "spiffe://cluster.local/ns/default/sa/b".into(),
        "spiffe://cluster.local/ns/default/sa/a".into(),
    ];
    t.sni = Some("reviews.internal".into());
    let k = key(decide(&facts(Some(&t), true), true));
    assert_eq!(
        k.subject_alt_names,
        vec![
            "spiffe://cluster.local/ns/default/sa/a".to_owned(),
            "spiffe://cluster.local/ns/default/sa/b".to_owned()
        ]
    );
    assert_eq!(k.sni, "reviews.internal");
}

#[test]
fn simple_verifies_the_host_with_the_given_roots() {
    let mut t = tls(ClientTlsMode::Simple);
    t.ca_certificates = Some("/etc/certs/ca.pem".into());
    // Ignored by SIMPLE: no client certificate is sent.
    t.client_certificate = Some("/etc/certs/cert.pem".into());
    let k = key(decide(&facts(Some(&t), false), false));
    assert_eq!(k.mode, OriginationMode::Simple);
    assert_eq!(k.sni, HOST);
    assert_eq!(k.ca_certificates.as_deref(), Some("/etc/certs/ca.pem"));
    assert_eq!(k.client_certificate, None);
    assert!(k.subject_alt_names.is_empty());
    // The same for mesh workloads: the rule wins over auto mTLS.
    assert_eq!(key(decide(&facts(Some(&t), true), true)), k);
}

#[test]
fn simple_sni_and_subject_alt_names_are_kept() {
    let mut t = tls(ClientTlsMode::Simple);
    t.sni = Some("api.example.com".into());
    t.subject_alt_names = vec!["api.example.com".into()];
    let k = key(decide(&facts(Some(&t), true), false));
    assert_eq!(k.sni, "api.example.com");
    assert_eq!(k.subject_alt_names, vec!["api.example.com".to_owned()]);
    t.sni = Some("not a name".into());
    assert!(matches!(
        decide(&facts(Some(&t), true), false),
        Err(OriginationError::BadSni { .. })
    ));
}

#[test]
fn insecure_skip_verify_drops_what_it_would_check() {
    // (mesh-config rejects these together, as Istio does; the decision drops them anyway.)
    let mut t = tls(ClientTlsMode::Simple);
    t.insecure_skip_verify = true;
    t.ca_certificates = Some("/ca.pem".into());
    t.subject_alt_names = vec!["api.example.com".into()];
    let k = key(decide(&facts(Some(&t), false), false));
    assert!(k.insecure_skip_verify);
    assert_eq!(k.ca_certificates, None);
    assert!(k.subject_alt_names.is_empty());
}

#[test]
fn mutual_needs_client_certificate_files() {
    let mut t = tls(ClientTlsMode::Mutual);
    let err = decide(&facts(Some(&t), false), false).unwrap_err();
    assert!(
        matches!(err, OriginationError::MissingClientCertificate { .. }),
        "{err}"
    );
    t.client_certificate = Some("/c.pem".into());
    t.private_key = Some("/k.pem".into());
    let k = key(decide(&facts(Some(&t), false), false));
    assert_eq!(k.mode, OriginationMode::Mutual);
    assert_eq!(k.client_certificate.as_deref(), Some("/c.pem"));
    assert_eq!(k.private_key.as_deref(), Some("/k.pem"));
}

#[test]
fn credential_name_is_refused_with_what_to_do() {
    for mode in [ClientTlsMode::Simple, ClientTlsMode::Mutual] {
        let mut t = tls(mode);
        t.credential_name = Some("client-secret".into());
        let err = decide(&facts(Some(&t), false), false).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("client-secret")
                && msg.contains("gateways")
                && msg.contains("caCertificates"),
            "{msg}"
        );
    }
}

#[test]
fn equal_settings_make_equal_keys() {
    // Pools are shared by value: decisions of two config versions with the same settings.
    let t = tls(ClientTlsMode::IstioMutual);
    assert_eq!(
        decide(&facts(Some(&t), true), true).unwrap(),
        decide(&facts(None, true), true).unwrap()
    );
    let plain = facts(None, true);
    let other_port = ClusterFacts {
        port: 9081,
        ..facts(None, true)
    };
    assert_ne!(
        decide(&plain, true).unwrap(),
        decide(&other_port, true).unwrap()
    );
}

// === SNI ===

#[test]
fn istio_sni_is_the_dns_srv_subset_key() {
    assert_eq!(
        istio_sni("ratings.default.svc.cluster.local", 9080, None),
        "outbound_.9080_._.ratings.default.svc.cluster.local"
    );
    assert_eq!(
        istio_sni("reviews.x", 80, Some("v2")),
        "outbound_.80_.v2_.reviews.x"
    );
    // A subset name too long for a DNS label: the host.
    let long = "v".repeat(70);
    assert_eq!(istio_sni("reviews.x", 80, Some(&long)), "reviews.x");
}

// === facts from the registry ===

fn endpoint(sa: Option<&str>) -> Endpoint {
    Endpoint {
        address: EndpointAddress::Ip("127.0.0.1".parse().unwrap()),
        ports: Default::default(),
        labels: Default::default(),
        service_account: sa.map(str::to_owned),
        identity: sa.map(|sa| Identity::new("cluster.local", "default", sa)),
        weight: 1,
        locality: None,
        network: None,
        source: "test".into(),
    }
}

fn service(location: Location, endpoints: Vec<Endpoint>) -> Service {
    Service {
        hostname: Host::new(HOST),
        namespace: "default".into(),
        ports: Vec::new(),
        resolution: Resolution::Static,
        location,
        addresses: Vec::new(),
        endpoints,
        export_to: Vec::new(),
        source: "test".into(),
    }
}

#[test]
fn service_identities_are_every_service_account_once() {
    let s = service(
        Location::MeshInternal,
        vec![
            endpoint(Some("reviews")),
            endpoint(None),
            endpoint(Some("reviews")),
            endpoint(Some("legacy")),
        ],
    );
    assert_eq!(
        service_identities(&s),
        vec![
            "spiffe://cluster.local/ns/default/sa/legacy".to_owned(),
            REVIEWS.to_owned()
        ]
    );
}

fn peer_auth(namespace: &str, selector: bool, mode: MtlsMode) -> PeerAuthenticationPolicy {
    PeerAuthenticationPolicy {
        name: "pa".into(),
        scope: PolicyScope {
            namespace: namespace.into(),
            selector: selector.then(|| Selector::from_iter([("app", "reviews")])),
        },
        mode,
        port_modes: Vec::new(),
    }
}

#[test]
fn peer_authentication_disable_is_inferred_from_mesh_and_namespace_policies() {
    let internal = service(Location::MeshInternal, vec![endpoint(Some("reviews"))]);
    let mesh = |pas: Vec<PeerAuthenticationPolicy>| CompiledMesh {
        root_namespace: "istio-system".into(),
        peer_authentications: pas,
        ..Default::default()
    };
    use MtlsMode::*;
    let cases = [
        (vec![], false),
        (vec![peer_auth("default", false, Disable)], true),
        (vec![peer_auth("istio-system", false, Disable)], true),
        // The namespace's policy beats the mesh's; UNSET inherits.
        (
            vec![
                peer_auth("istio-system", false, Disable),
                peer_auth("default", false, Strict),
            ],
            false,
        ),
        (
            vec![
                peer_auth("istio-system", false, Disable),
                peer_auth("default", false, Unset),
            ],
            true,
        ),
        // Workload policies are not looked at (Istio's best effort), nor other namespaces.
        (vec![peer_auth("default", true, Disable)], false),
        (vec![peer_auth("other", false, Disable)], false),
    ];
    for (pas, disabled) in cases {
        let m = mesh(pas.clone());
        assert_eq!(mtls_disabled(&m, &internal), disabled, "{pas:?}");
    }
    let external = service(Location::MeshExternal, vec![]);
    assert!(!mtls_disabled(
        &mesh(vec![peer_auth("default", false, Disable)]),
        &external
    ));
}

// === the per-cluster cache ===

#[test]
fn decisions_are_made_once_per_cluster_and_version() {
    let cache = ClusterTransports::default();
    let cluster: crate::endpoint::ClusterKey = (HOST.into(), None, 9080);
    let made = Cell::new(0);
    let make = |version| {
        made.set(made.get() + 1);
        Decided::new(version, &facts(None, true))
    };
    let a = cache.for_version(&cluster, 1, || make(1));
    let b = cache.for_version(&cluster, 1, || make(1));
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(made.get(), 1);
    let c = cache.for_version(&cluster, 2, || make(2));
    assert!(!Arc::ptr_eq(&a, &c));
    assert_eq!(made.get(), 2);
    // A request still on version 1 gets its own decisions; version 2's stay.
    cache.for_version(&cluster, 1, || make(1));
    let d = cache.for_version(&cluster, 2, || make(2));
    assert!(Arc::ptr_eq(&c, &d));
    assert_eq!(made.get(), 3);
}

#[test]
fn decided_picks_by_the_tls_mode_label() {
    let d = Decided::new(1, &facts(None, true));
    let mut ep = endpoint(Some("reviews"));
    assert_eq!(d.for_endpoint(&ep).unwrap(), Transport::Plain);
    ep.labels
        .insert("security.istio.io/tlsMode".into(), "istio".into());
    assert!(matches!(d.for_endpoint(&ep).unwrap(), Transport::Tls(_)));
}

// === client configs ===

#[test]
fn unreadable_files_name_the_field_and_path() {
    let k = TlsKey {
        mode: OriginationMode::Simple,
        sni: "api.example.com".into(),
        subject_alt_names: Vec::new(),
        ca_certificates: Some("/nonexistent/mesh-test/ca.pem".into()),
        client_certificate: None,
        private_key: None,
        insecure_skip_verify: false,
        h2: false,
    };
    let msg = client_config(&k, None).unwrap_err().to_string();
    assert!(
        msg.contains("caCertificates") && msg.contains("/nonexistent/mesh-test/ca.pem"),
        "{msg}"
    );
    // Without caCertificates: webpki-roots.
    let k = TlsKey {
        ca_certificates: None,
        ..k
    };
    let config = client_config(&k, None).unwrap();
    assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
}

#[test]
fn the_local_principal_is_the_presented_certificates_uri_san() {
    use crate::tls::{CertificateAuthority, IdentitySource};
    let ca = CertificateAuthority::generate("origination test CA").unwrap();
    let issued = ca
        .issue(
            &Identity::new("cluster.local", "default", "productpage"),
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
    let productpage = "spiffe://cluster.local/ns/default/sa/productpage";
    let dir = std::env::temp_dir().join(format!("mesh-origination-local-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, issued.chain_pem()).unwrap();
    let key = |mode, client_certificate: Option<&std::path::Path>| TlsKey {
        mode,
        sni: "api.example.com".into(),
        subject_alt_names: Vec::new(),
        ca_certificates: None,
        client_certificate: client_certificate.map(|p| p.display().to_string()),
        private_key: None,
        insecure_skip_verify: false,
        h2: false,
    };
    let principal = |k: &TlsKey, identity: Option<&IdentitySource>| match config::local_certificate(
        k, identity,
    ) {
        connector::LocalCertificate::None => None,
        connector::LocalCertificate::Fixed(p) => Some(p.to_string()),
        connector::LocalCertificate::Workload(s) => Some(s.identity().to_string()),
    };
    // MUTUAL: the clientCertificate file's.
    let mutual = key(OriginationMode::Mutual, Some(&cert));
    assert_eq!(principal(&mutual, None).as_deref(), Some(productpage));
    // ISTIO_MUTUAL: the workload's.
    let source = IdentitySource::new(issued.workload_certificate().unwrap()).unwrap();
    let istio = key(OriginationMode::IstioMutual, None);
    assert_eq!(
        principal(&istio, Some(&source)).as_deref(),
        Some(productpage)
    );
    // SIMPLE presents none, nor does a file that cannot be read.
    assert_eq!(
        principal(&key(OriginationMode::Simple, None), Some(&source)),
        None
    );
    let missing = key(OriginationMode::Mutual, Some(&dir.join("missing.pem")));
    assert_eq!(principal(&missing, None), None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn subject_alt_names_match_dns_and_uri_sans() {
    assert!(san_matches("api.example.com", "api.example.com"));
    assert!(san_matches("api.example.com", "API.example.com"));
    assert!(san_matches("*.example.com", "api.example.com"));
    assert!(!san_matches("*.example.com", "a.b.example.com"));
    assert!(!san_matches("*.example.com", "example.com"));
    assert!(!san_matches("api.example.com", "web.example.com"));
    assert!(san_matches(REVIEWS, REVIEWS));
    assert!(!san_matches(REVIEWS, &REVIEWS.to_uppercase()));
}

#[test]
fn the_transport_failure_reason_is_found_in_the_chain() {
    let err = crate::error::MeshError::UpstreamConnect {
        endpoint: "10.0.0.1:80".into(),
        source: Box::new(OriginationError::MissingClientCertificate {
            rule: "default/x".into(),
        }),
    };
    let reason = transport_failure_reason(&err).unwrap();
    assert!(reason.contains("clientCertificate"), "{reason}");
    let plain: crate::body::BoxError = "refused".into();
    assert!(transport_failure_reason(plain.as_ref()).is_none());
}

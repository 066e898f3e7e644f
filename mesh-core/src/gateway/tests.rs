use super::*;
use crate::{
    Host, Labels, Selector,
    matching::{L4Match, TlsMatch},
    model::{Destination, HeaderOperations, RouteDestination, ServerTls, WeightedDestinations},
    weighted::WeightedChoice,
};

fn server(gateway: &str, port: u16, protocol: Protocol, hosts: &[&str]) -> GatewayServer {
    GatewayServer {
        gateway: gateway.into(),
        selector: Selector::default(),
        port,
        port_name: format!("p{port}"),
        protocol,
        bind: None,
        hosts: hosts
            .iter()
            .map(|h| match h.split_once('/') {
                Some((ns, h)) => (ns.to_owned(), Host::new(h)),
                None => ("*".to_owned(), Host::new(h)),
            })
            .collect(),
        tls: None,
    }
}

fn with_tls(mut s: GatewayServer, mode: ServerTlsMode, redirect: bool) -> GatewayServer {
    s.tls = Some(ServerTls {
        mode,
        https_redirect: redirect,
        credential_name: None,
        server_certificate: None,
        private_key: None,
        ca_certificates: None,
        subject_alt_names: Vec::new(),
        min_protocol_version: None,
        max_protocol_version: None,
    });
    s
}

fn to(host: &str) -> WeightedDestinations {
    WeightedDestinations {
        destinations: vec![RouteDestination {
            destination: Destination {
                host: Host::new(host),
                subset: None,
                port: None,
            },
            weight: 0,
            headers: HeaderOperations::default(),
        }],
        choice: WeightedChoice::new([0]).unwrap(),
    }
}

fn vh(gateway: &str, namespace: &str, hosts: &[&str]) -> VirtualHost {
    VirtualHost {
        gateway: gateway.into(),
        hosts: hosts.iter().map(|h| Host::new(h)).collect(),
        virtual_service: format!("{namespace}/vs"),
        namespace: namespace.into(),
        http: Vec::new(),
        tcp: Vec::new(),
        tls: Vec::new(),
    }
}

fn dest_of_tcp(r: Option<&TcpRoute>) -> Option<&str> {
    r.map(|r| r.destinations.destinations[0].destination.host.as_str())
}

fn dest_of_tls(r: Option<&TlsRoute>) -> Option<&str> {
    r.map(|r| r.destinations.destinations[0].destination.host.as_str())
}

#[test]
fn kinds_follow_protocol_and_tls_mode() {
    let http = server("ns/gw", 80, Protocol::Http, &["*"]);
    assert_eq!(
        ServerKind::of(&http),
        Ok(ServerKind::Http {
            https_redirect: false
        })
    );
    assert_eq!(
        ServerKind::of(&with_tls(http.clone(), ServerTlsMode::Passthrough, true)),
        Ok(ServerKind::Http {
            https_redirect: true
        })
    );
    let https = server("ns/gw", 443, Protocol::Https, &["*"]);
    assert_eq!(ServerKind::of(&https), Err(Unsupported::NoTls));
    for (mode, kind) in [
        (ServerTlsMode::Simple, Ok(ServerKind::Https)),
        (ServerTlsMode::Mutual, Ok(ServerKind::Https)),
        (ServerTlsMode::OptionalMutual, Ok(ServerKind::Https)),
        (ServerTlsMode::Passthrough, Ok(ServerKind::Passthrough)),
        (ServerTlsMode::AutoPassthrough, Ok(ServerKind::Passthrough)),
        (ServerTlsMode::IstioMutual, Err(Unsupported::IstioMutual)),
    ] {
        assert_eq!(ServerKind::of(&with_tls(https.clone(), mode, false)), kind);
    }
    let tls = with_tls(
        server("ns/gw", 443, Protocol::Tls, &["*"]),
        ServerTlsMode::Simple,
        false,
    );
    assert_eq!(ServerKind::of(&tls), Ok(ServerKind::TlsTerminated));
    assert!(ServerKind::TlsTerminated.is_tls());
    assert_eq!(
        ServerKind::of(&server("ns/gw", 27017, Protocol::Mongo, &["*"])),
        Ok(ServerKind::Tcp)
    );
    assert!(!ServerKind::Tcp.is_tls());
    assert_eq!(
        ServerKind::of(&server("ns/gw", 1, Protocol::Unknown, &["*"])),
        Err(Unsupported::Protocol)
    );
}

#[test]
fn server_for_prefers_the_most_specific_host_then_the_first() {
    let a = server("ns/a", 443, Protocol::Https, &["*.example.com"]);
    let b = server("ns/b", 443, Protocol::Https, &["bookinfo.example.com"]);
    let c = server("ns/c", 443, Protocol::Https, &["*"]);
    let d = server("ns/d", 443, Protocol::Https, &["bookinfo.example.com"]);
    let all = [a, b, c, d];
    assert_eq!(server_for(&all, Some("bookinfo.example.com")), Some(1));
    assert_eq!(server_for(&all, Some("api.example.com")), Some(0));
    assert_eq!(server_for(&all, Some("other.org")), Some(2));
    assert_eq!(server_for(&all[..2], Some("other.org")), None);
    assert_eq!(server_for(&all[1..], None), Some(0));
    assert_eq!(server_for(&[], None), None);
    assert_eq!(server_for(&[], Some("a.example.com")), None);
}

#[test]
fn exposure_checks_gateway_namespace_and_hosts() {
    let s = server(
        "istio-system/gw",
        80,
        Protocol::Http,
        &[
            "./admin.example.com",
            "bookinfo/*.example.com",
            "*/shop.example.org",
        ],
    );
    assert!(exposes(
        &s,
        &vh("istio-system/gw", "bookinfo", &["www.example.com"])
    ));
    assert!(exposes(
        &s,
        &vh("istio-system/gw", "shop", &["shop.example.org"])
    ));
    assert!(exposes(
        &s,
        &vh("istio-system/gw", "istio-system", &["admin.example.com"])
    ));
    // A wildcard VirtualService host overlaps the server's names.
    assert!(exposes(&s, &vh("istio-system/gw", "any", &["*.org"])));
    // Wrong namespace for the host entry, wrong gateway, no overlap.
    assert!(!exposes(
        &s,
        &vh("istio-system/gw", "other", &["www.example.com"])
    ));
    assert!(!exposes(
        &s,
        &vh("istio-system/other", "bookinfo", &["www.example.com"])
    ));
    assert!(!exposes(
        &s,
        &vh("istio-system/gw", "bookinfo", &["www.example.net"])
    ));
}

#[test]
fn http_virtual_host_is_the_gateways_choice_if_exposed() {
    let s = server("ns/gw", 80, Protocol::Http, &["ns/bookinfo.example.com"]);
    let mesh = CompiledMesh {
        virtual_hosts: vec![
            vh("ns/gw", "other", &["*.example.com"]),
            vh("ns/gw", "ns", &["bookinfo.example.com"]),
            vh("ns/other", "ns", &["bookinfo.example.com"]),
        ],
        ..CompiledMesh::default()
    };
    assert_eq!(
        http_virtual_host(&mesh, &s, "bookinfo.example.com"),
        Some(1)
    );
    // The gateway's table gives `*.example.com` (namespace `other`), which this server does
    // not expose: Envoy answers 404.
    assert_eq!(http_virtual_host(&mesh, &s, "api.example.com"), None);
}

#[test]
fn tcp_route_is_the_first_match_among_exposed_virtual_services() {
    let s = server("ns/gw", 31400, Protocol::Tcp, &["*"]);
    let labels = Labels::new();
    let mut hidden = vh("ns/other", "ns", &["*"]);
    hidden.tcp.push(TcpRoute {
        matches: Vec::new(),
        destinations: to("hidden"),
    });
    let mut first = vh("ns/gw", "ns", &["*"]);
    first.tcp.push(TcpRoute {
        matches: vec![L4Match {
            port: Some(27017),
            ..L4Match::default()
        }],
        destinations: to("mongo"),
    });
    let mut second = vh("ns/gw", "ns", &["*"]);
    second.tcp.push(TcpRoute {
        matches: vec![L4Match {
            port: Some(31400),
            ..L4Match::default()
        }],
        destinations: to("echo"),
    });
    second.tcp.push(TcpRoute {
        matches: Vec::new(),
        destinations: to("fallback"),
    });
    let mesh = CompiledMesh {
        virtual_hosts: vec![hidden, first, second],
        ..CompiledMesh::default()
    };
    let conn = ConnectionView::new(31400, &labels);
    assert_eq!(dest_of_tcp(tcp_route(&mesh, &s, &conn)), Some("echo"));
    let s2 = server("ns/gw", 9000, Protocol::Tcp, &["*"]);
    let conn = ConnectionView::new(9000, &labels);
    assert_eq!(dest_of_tcp(tcp_route(&mesh, &s2, &conn)), Some("fallback"));
    let nowhere = server("ns/none", 9000, Protocol::Tcp, &["*"]);
    assert_eq!(dest_of_tcp(tcp_route(&mesh, &nowhere, &conn)), None);
}

#[test]
fn tls_route_is_the_most_specific_sni_among_exposed_virtual_services() {
    let s = with_tls(
        server("ns/gw", 443, Protocol::Tls, &["*.example.com"]),
        ServerTlsMode::Passthrough,
        false,
    );
    let labels = Labels::new();
    let sni = |hosts: &[&str]| TlsMatch {
        sni_hosts: hosts.iter().map(|h| Host::new(h)).collect(),
        ..TlsMatch::default()
    };
    let mut wide = vh("ns/gw", "ns", &["*.example.com"]);
    wide.tls.push(TlsRoute {
        matches: vec![sni(&["*.example.com"])],
        destinations: to("wide"),
    });
    let mut exact = vh("ns/gw", "ns", &["db.example.com"]);
    exact.tls.push(TlsRoute {
        matches: vec![sni(&["db.example.com"])],
        destinations: to("db"),
    });
    let mesh = CompiledMesh {
        virtual_hosts: vec![wide, exact],
        ..CompiledMesh::default()
    };
    let conn = |name| ConnectionView {
        sni: Some(name),
        ..ConnectionView::new(443, &labels)
    };
    assert_eq!(
        dest_of_tls(tls_route(&mesh, &s, &conn("db.example.com"))),
        Some("db")
    );
    assert_eq!(
        dest_of_tls(tls_route(&mesh, &s, &conn("web.example.com"))),
        Some("wide")
    );
    assert_eq!(
        dest_of_tls(tls_route(&mesh, &s, &conn("example.org"))),
        None
    );
}

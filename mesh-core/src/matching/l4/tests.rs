use std::net::IpAddr;

use proptest::prelude::*;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sni(hosts: &[&str]) -> TlsMatch {
    TlsMatch {
        sni_hosts: hosts.iter().map(|h| Host::new(h)).collect(),
        ..TlsMatch::default()
    }
}

#[test]
fn empty_l4_match_takes_every_connection() {
    let none = Labels::new();
    let conn = ConnectionView::new(31400, &none);
    assert!(L4Match::default().matches(&conn));
    // A route without matches takes everything; the first route wins.
    let routes: [&[L4Match]; 2] = [&[], &[]];
    assert_eq!(first_tcp_match(routes, &conn), Some(0));
}

#[test]
fn l4_conditions_are_anded() {
    let gw = labels(&[("istio", "ingressgateway")]);
    let m = L4Match {
        port: Some(31400),
        destination_subnets: vec!["10.0.0.0/8".parse().unwrap()],
        source_labels: Selector::new(labels(&[("istio", "ingressgateway")])),
        source_namespace: Some("istio-system".into()),
    };
    let ip: IpAddr = "10.1.2.3".parse().unwrap();
    let ok = ConnectionView {
        destination_ip: Some(ip),
        source_namespace: Some("istio-system"),
        ..ConnectionView::new(31400, &gw)
    };
    assert!(m.matches(&ok));
    assert!(!m.matches(&ConnectionView { port: 31401, ..ok }));
    assert!(!m.matches(&ConnectionView {
        destination_ip: Some("192.168.0.1".parse().unwrap()),
        ..ok
    }));
    assert!(!m.matches(&ConnectionView {
        destination_ip: None,
        ..ok
    }));
    assert!(!m.matches(&ConnectionView {
        source_namespace: Some("default"),
        ..ok
    }));
    let other = labels(&[("app", "x")]);
    assert!(!m.matches(&ConnectionView {
        source_labels: &other,
        ..ok
    }));
}

#[test]
fn first_tcp_route_whose_matches_accept_wins() {
    let none = Labels::new();
    let on = |p| L4Match {
        port: Some(p),
        ..L4Match::default()
    };
    let routes = [vec![on(27017)], vec![on(31400), on(31401)], vec![]];
    let pick = |port| {
        first_tcp_match(
            routes.iter().map(Vec::as_slice),
            &ConnectionView::new(port, &none),
        )
    };
    assert_eq!(pick(27017), Some(0));
    assert_eq!(pick(31401), Some(1));
    assert_eq!(pick(9999), Some(2));
    assert_eq!(
        first_tcp_match(
            routes[..2].iter().map(Vec::as_slice),
            &ConnectionView::new(9999, &none)
        ),
        None
    );
}

#[test]
fn tls_most_specific_sni_wins_then_order() {
    let none = Labels::new();
    let routes = [
        vec![sni(&["*"])],
        vec![sni(&["*.example.com"])],
        vec![sni(&["*.api.example.com"])],
        vec![sni(&["db.example.com"])],
        vec![sni(&["db.example.com"])],
    ];
    let pick = |name: Option<&str>| {
        let conn = ConnectionView {
            sni: name,
            ..ConnectionView::new(443, &none)
        };
        best_tls_match(routes.iter().map(Vec::as_slice), &conn)
    };
    assert_eq!(pick(Some("db.example.com")), Some(3));
    assert_eq!(pick(Some("v1.api.example.com")), Some(2));
    assert_eq!(pick(Some("web.example.com")), Some(1));
    assert_eq!(pick(Some("example.org")), Some(0));
    // No server name: only `*` takes it.
    assert_eq!(pick(None), Some(0));
    assert_eq!(
        best_tls_match(
            routes[1..].iter().map(Vec::as_slice),
            &ConnectionView::new(443, &none)
        ),
        None
    );
}

#[test]
fn tls_match_checks_port_and_routes_without_matches_take_nothing() {
    let none = Labels::new();
    let m = TlsMatch {
        port: Some(443),
        ..sni(&["a.example.com", "b.example.com"])
    };
    let conn = ConnectionView {
        sni: Some("b.example.com"),
        ..ConnectionView::new(443, &none)
    };
    assert!(m.matches(&conn));
    assert!(!m.matches(&ConnectionView { port: 8443, ..conn }));
    assert!(!m.matches(&ConnectionView {
        sni: Some("c.example.com"),
        ..conn
    }));
    let routes: [&[TlsMatch]; 1] = [&[]];
    assert_eq!(best_tls_match(routes, &conn), None);
}

proptest! {
    /// Whatever the names, the chosen route covers the name, and no other route covers it more
    /// specifically; among equals the earliest is chosen.
    #[test]
    fn tls_choice_is_the_most_specific_cover(
        hosts in proptest::collection::vec(
            prop_oneof![
                Just("*"), Just("*.example.com"), Just("*.a.example.com"),
                Just("x.a.example.com"), Just("y.example.com"), Just("example.com"),
            ],
            0..6,
        ),
        name in prop_oneof![
            Just("x.a.example.com"), Just("y.example.com"), Just("example.com"), Just("z.org"),
        ],
    ) {
        let none = Labels::new();
        let routes: Vec<Vec<TlsMatch>> = hosts.iter().map(|h| vec![sni(&[h])]).collect();
        let conn = ConnectionView { sni: Some(name), ..ConnectionView::new(443, &none) };
        let spec = |i: usize| routes[i][0].specificity(&conn);
        match best_tls_match(routes.iter().map(Vec::as_slice), &conn) {
            None => prop_assert!((0..routes.len()).all(|i| spec(i).is_none())),
            Some(i) => {
                let s = spec(i).unwrap();
                for j in 0..routes.len() {
                    if let Some(o) = spec(j) {
                        prop_assert!(o < s || (o == s && j >= i));
                    }
                }
            }
        }
    }
}

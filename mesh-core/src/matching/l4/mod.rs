//! Connection matching: which of a VirtualService's `tcp` or `tls` routes takes a connection.
//!
//! The compiled, pure form of Istio's
//! [`L4MatchAttributes`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#L4MatchAttributes)
//! and
//! [`TLSMatchAttributes`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#TLSMatchAttributes),
//! with the semantics Envoy gives them once Istio has turned them into filter chains:
//!
//! - the conditions of one match are ANDed; a condition left empty is not checked;
//! - a route's `match` list is ORed; an empty `tcp` match list matches every connection (a
//!   `tls` route must have matches: `sniHosts` is required);
//! - `tcp` routes: the first route that matches wins ([`first_tcp_match`]), as Istio takes the
//!   first matching `tcp` route of a gateway server;
//! - `tls` routes: Envoy chooses a filter chain by its `server_names`, the most specific name
//!   first (an exact name beats a wildcard, a longer wildcard a shorter one); among routes with
//!   equally specific names the first one wins, as Istio drops later duplicates
//!   ([`best_tls_match`]).
//!
//! `gateways` are resolved when the config is compiled (each gateway has its own route table),
//! so they are not part of these types.
//!
//! ```
//! use mesh_core::{Host, Labels};
//! use mesh_core::matching::{ConnectionView, TlsMatch, best_tls_match};
//!
//! // tls:
//! // - match: [{sniHosts: ["*.example.com"], port: 443}]    # route 0
//! // - match: [{sniHosts: [db.example.com]}]                # route 1
//! let wildcard = TlsMatch { sni_hosts: vec![Host::new("*.example.com")], port: Some(443), ..TlsMatch::default() };
//! let db = TlsMatch { sni_hosts: vec![Host::new("db.example.com")], ..TlsMatch::default() };
//! let routes = [vec![wildcard], vec![db]];
//!
//! let labels = Labels::new();
//! let conn = ConnectionView { sni: Some("db.example.com"), ..ConnectionView::new(443, &labels) };
//! assert_eq!(best_tls_match(routes.iter().map(Vec::as_slice), &conn), Some(1)); // exact wins
//! let conn = ConnectionView { sni: Some("web.example.com"), ..conn };
//! assert_eq!(best_tls_match(routes.iter().map(Vec::as_slice), &conn), Some(0));
//! let conn = ConnectionView { port: 8443, ..conn };
//! assert_eq!(best_tls_match(routes.iter().map(Vec::as_slice), &conn), None);
//! ```

use std::net::IpAddr;

use ipnet::IpNet;

use crate::{Host, Labels, Selector};

#[cfg(test)]
mod tests;

/// One compiled `L4MatchAttributes`: the conditions a connection must meet for a `tcp` route.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct L4Match {
    /// [`port`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#L4MatchAttributes-port):
    /// the destination port (for a gateway, the server's port).
    pub port: Option<u16>,
    /// [`destinationSubnets`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#L4MatchAttributes-destination_subnets):
    /// the destination address must be in one of them (empty: any). An address without a
    /// prefix length is a /32 (/128).
    pub destination_subnets: Vec<IpNet>,
    /// [`sourceLabels`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#L4MatchAttributes-source_labels):
    /// labels the workload running the proxy must have (for a gateway, the gateway's).
    pub source_labels: Selector,
    /// [`sourceNamespace`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#L4MatchAttributes-source_namespace):
    /// the namespace of the workload running the proxy.
    pub source_namespace: Option<String>,
}

/// One compiled `TLSMatchAttributes`: SNI names plus the L4 conditions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsMatch {
    /// [`sniHosts`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#TLSMatchAttributes-sni_hosts):
    /// the ClientHello's server name must match one (wildcards as `*.example.com`; `*`
    /// matches any name, and a ClientHello without one).
    pub sni_hosts: Vec<Host>,
    pub port: Option<u16>,
    pub destination_subnets: Vec<IpNet>,
    pub source_labels: Selector,
    pub source_namespace: Option<String>,
}

/// What the matches look at, for one accepted connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionView<'a> {
    /// The port the connection arrived on (a gateway server's port).
    pub port: u16,
    /// The address the connection was accepted on.
    pub destination_ip: Option<IpAddr>,
    /// The server name of the TLS ClientHello, lowercase, if there was one.
    pub sni: Option<&'a str>,
    /// The labels of the workload running the proxy (`--workload-labels`).
    pub source_labels: &'a Labels,
    /// The namespace of the workload running the proxy.
    pub source_namespace: Option<&'a str>,
}

impl<'a> ConnectionView<'a> {
    /// A connection on `port`, nothing else known.
    pub fn new(port: u16, source_labels: &'a Labels) -> Self {
        ConnectionView {
            port,
            destination_ip: None,
            sni: None,
            source_labels,
            source_namespace: None,
        }
    }
}

/// The L4 conditions common to both kinds of match.
fn l4_ok(
    port: Option<u16>,
    subnets: &[IpNet],
    labels: &Selector,
    namespace: Option<&str>,
    conn: &ConnectionView<'_>,
) -> bool {
    port.is_none_or(|p| p == conn.port)
        && (subnets.is_empty()
            || conn
                .destination_ip
                .is_some_and(|ip| subnets.iter().any(|n| n.contains(&ip))))
        && labels.matches(conn.source_labels)
        && namespace.is_none_or(|ns| conn.source_namespace == Some(ns))
}

impl L4Match {
    pub fn matches(&self, conn: &ConnectionView<'_>) -> bool {
        l4_ok(
            self.port,
            &self.destination_subnets,
            &self.source_labels,
            self.source_namespace.as_deref(),
            conn,
        )
    }
}

impl TlsMatch {
    /// How specifically this match's SNI names cover the connection's server name, when the
    /// whole match applies: `(exact, length)` of the best name, as [`Host::specificity`].
    pub fn specificity(&self, conn: &ConnectionView<'_>) -> Option<(bool, usize)> {
        if !l4_ok(
            self.port,
            &self.destination_subnets,
            &self.source_labels,
            self.source_namespace.as_deref(),
            conn,
        ) {
            return None;
        }
        self.sni_hosts
            .iter()
            .filter(|h| match conn.sni {
                Some(name) => h.matches(name),
                None => h.as_str() == "*",
            })
            .map(Host::specificity)
            .max()
    }

    pub fn matches(&self, conn: &ConnectionView<'_>) -> bool {
        self.specificity(conn).is_some()
    }
}

/// The index of the first `tcp` route (given as each route's match list) that takes `conn`;
/// a route with no matches takes every connection.
pub fn first_tcp_match<'m>(
    routes: impl IntoIterator<Item = &'m [L4Match]>,
    conn: &ConnectionView<'_>,
) -> Option<usize> {
    routes
        .into_iter()
        .position(|matches| matches.is_empty() || matches.iter().any(|m| m.matches(conn)))
}

/// The index of the `tls` route (given as each route's match list) that takes `conn`: the one
/// whose SNI name covers the server name most specifically, the first among equals. A route
/// without matches takes nothing (Istio requires `sniHosts`).
pub fn best_tls_match<'m>(
    routes: impl IntoIterator<Item = &'m [TlsMatch]>,
    conn: &ConnectionView<'_>,
) -> Option<usize> {
    let mut best: Option<(usize, (bool, usize))> = None;
    for (i, matches) in routes.into_iter().enumerate() {
        let Some(spec) = matches.iter().filter_map(|m| m.specificity(conn)).max() else {
            continue;
        };
        if best.is_none_or(|(_, b)| spec > b) {
            best = Some((i, spec));
        }
    }
    best.map(|(i, _)| i)
}

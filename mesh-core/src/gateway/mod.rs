//! Gateway decisions: what a [Gateway](https://istio.io/latest/docs/reference/config/networking/gateway/)
//! server does with a connection, which server of a port serves a name, which VirtualServices a
//! server exposes, and which `tcp` or `tls` route takes a connection.
//!
//! Istio turns every server into Envoy filter chains on the server's port, matched by the TLS
//! server name (SNI) against the server's `hosts`; the VirtualServices bound to the Gateway
//! (`gateways: [name]`) whose hosts overlap a server's hosts give that server its routes. The
//! same rules, as pure functions:
//!
//! - [`ServerKind::of`]: HTTP (perhaps only redirecting to HTTPS), HTTPS terminated, TLS
//!   terminated to TCP routes, TLS passed through by SNI, or plain TCP.
//! - [`server_for`]: the server of a port for a name (the SNI, or the HTTP Host): the one
//!   whose host covers the name most specifically (Envoy's `server_names` match: an exact name
//!   beats a wildcard, a longer wildcard a shorter one), the first among equals.
//! - [`exposes`]: whether a server exposes a VirtualService: same gateway, a server host whose
//!   namespace part (`*`, `.`, or a namespace) admits the VirtualService's namespace and which
//!   overlaps one of its hosts.
//! - [`tcp_route`] and [`tls_route`]: the route among the exposed VirtualServices, in load
//!   order (see [`first_tcp_match`] and [`best_tls_match`]).

use crate::{
    CompiledMesh,
    matching::{ConnectionView, best_tls_match, first_tcp_match},
    model::{GatewayServer, Protocol, ServerTlsMode, TcpRoute, TlsRoute, VirtualHost},
};

#[cfg(test)]
mod tests;

/// What a gateway server does with a connection, from its `port.protocol` and `tls.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    /// HTTP, HTTP2, GRPC, GRPC-WEB in plain text; `https_redirect` answers every request with
    /// a 301 to `https://` ([`tls.httpsRedirect`](https://istio.io/latest/docs/reference/config/networking/gateway/#ServerTLSSettings-https_redirect)).
    Http { https_redirect: bool },
    /// HTTPS with `SIMPLE`, `MUTUAL` or `OPTIONAL_MUTUAL`: TLS terminated here, then HTTP.
    Https,
    /// TLS with `SIMPLE`, `MUTUAL` or `OPTIONAL_MUTUAL`: TLS terminated here, then the
    /// VirtualServices' `tcp` routes.
    TlsTerminated,
    /// HTTPS or TLS with `PASSTHROUGH` (or `AUTO_PASSTHROUGH`, taken as PASSTHROUGH): routed by
    /// the ClientHello's SNI with the VirtualServices' `tls` routes, bytes untouched.
    Passthrough,
    /// TCP, MONGO, REDIS, MYSQL: the VirtualServices' `tcp` routes.
    Tcp,
}

/// Why a server cannot be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// `ISTIO_MUTUAL` needs the gateway's own workload certificate (SDS), which `mesh run`
    /// does not give gateways.
    IstioMutual,
    /// HTTPS or TLS without a `tls` block (validation reports it).
    NoTls,
    /// A protocol Istio does not know.
    Protocol,
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unsupported::IstioMutual => {
                "tls.mode ISTIO_MUTUAL is not supported on gateways yet (use SIMPLE or MUTUAL with a credentialName)"
            }
            Unsupported::NoTls => "an HTTPS or TLS server needs a `tls` block",
            Unsupported::Protocol => "its port protocol is not one mesh can serve",
        })
    }
}

impl ServerKind {
    pub fn of(server: &GatewayServer) -> Result<ServerKind, Unsupported> {
        let mode = server.tls.as_ref().map(|t| t.mode);
        let terminated = |kind| match mode {
            None => Err(Unsupported::NoTls),
            Some(ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough) => {
                Ok(ServerKind::Passthrough)
            }
            Some(ServerTlsMode::IstioMutual) => Err(Unsupported::IstioMutual),
            Some(ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual) => {
                Ok(kind)
            }
        };
        match server.protocol {
            p if p.is_http() => Ok(ServerKind::Http {
                https_redirect: server.tls.as_ref().is_some_and(|t| t.https_redirect),
            }),
            Protocol::Https => terminated(ServerKind::Https),
            Protocol::Tls => terminated(ServerKind::TlsTerminated),
            Protocol::Tcp | Protocol::Mongo | Protocol::Redis | Protocol::Mysql => {
                Ok(ServerKind::Tcp)
            }
            _ => Err(Unsupported::Protocol),
        }
    }

    /// Whether connections start with a TLS ClientHello (the listener reads it first).
    pub fn is_tls(self) -> bool {
        matches!(
            self,
            ServerKind::Https | ServerKind::TlsTerminated | ServerKind::Passthrough
        )
    }
}

/// How specifically the server's hosts cover `name` (lowercase, no port): `(exact, length)`
/// of the best host, as [`Host::specificity`](crate::Host::specificity); `None` if no host does.
pub fn specificity(server: &GatewayServer, name: &str) -> Option<(bool, usize)> {
    server
        .hosts
        .iter()
        .filter(|(_, h)| h.matches(name))
        .map(|(_, h)| h.specificity())
        .max()
}

/// The server (index in `servers`, all on one port) for `name`: the most specific cover, the
/// first among equals. Without a name (a ClientHello without SNI) the first server.
pub fn server_for<'a>(
    servers: impl IntoIterator<Item = &'a GatewayServer>,
    name: Option<&str>,
) -> Option<usize> {
    let mut servers = servers.into_iter();
    let Some(name) = name else {
        return servers.next().map(|_| 0);
    };
    let mut best: Option<(usize, (bool, usize))> = None;
    for (i, s) in servers.enumerate() {
        if let Some(spec) = specificity(s, name)
            && best.is_none_or(|(_, b)| spec > b)
        {
            best = Some((i, spec));
        }
    }
    best.map(|(i, _)| i)
}

/// Whether `server` exposes the VirtualService routes `vh`: bound to the server's Gateway, and
/// one of the server's `namespace/host` entries admits the VirtualService's namespace (`*`:
/// any, `.`: the Gateway's own) and overlaps one of its hosts.
pub fn exposes(server: &GatewayServer, vh: &VirtualHost) -> bool {
    if vh.gateway != server.gateway {
        return false;
    }
    let gateway_ns = server.gateway.split_once('/').map_or("", |(ns, _)| ns);
    server.hosts.iter().any(|(ns, host)| {
        let ns_ok = match ns.as_str() {
            "*" => true,
            "." => vh.namespace == gateway_ns,
            ns => vh.namespace == ns,
        };
        ns_ok && vh.hosts.iter().any(|h| h.overlaps(host))
    })
}

/// The VirtualServices `server` exposes, in load order.
pub fn exposed<'m>(
    mesh: &'m CompiledMesh,
    server: &'m GatewayServer,
) -> impl Iterator<Item = &'m VirtualHost> + 'm {
    mesh.virtual_hosts.iter().filter(|vh| exposes(server, vh))
}

/// The index in `mesh.virtual_hosts` of the VirtualService that routes an HTTP request for
/// `host` on `server`: the one the Gateway's route table picks for the host
/// ([`CompiledMesh::virtual_host_index`]), if the server exposes it. `None` is Envoy's 404.
pub fn http_virtual_host(mesh: &CompiledMesh, server: &GatewayServer, host: &str) -> Option<usize> {
    mesh.virtual_host_index(&server.gateway, host)
        .filter(|i| exposes(server, &mesh.virtual_hosts[*i]))
}

/// The `tcp` route that takes `conn` on `server`: the first matching one of the exposed
/// VirtualServices, in load order.
pub fn tcp_route<'m>(
    mesh: &'m CompiledMesh,
    server: &'m GatewayServer,
    conn: &ConnectionView<'_>,
) -> Option<&'m TcpRoute> {
    let routes: Vec<&TcpRoute> = exposed(mesh, server).flat_map(|vh| &vh.tcp).collect();
    first_tcp_match(routes.iter().map(|r| r.matches.as_slice()), conn).map(|i| routes[i])
}

/// The `tls` route that takes `conn` (its SNI) on `server`: the most specific SNI match of
/// the exposed VirtualServices, the first in load order among equals.
pub fn tls_route<'m>(
    mesh: &'m CompiledMesh,
    server: &'m GatewayServer,
    conn: &ConnectionView<'_>,
) -> Option<&'m TlsRoute> {
    let routes: Vec<&TlsRoute> = exposed(mesh, server).flat_map(|vh| &vh.tls).collect();
    best_tls_match(routes.iter().map(|r| r.matches.as_slice()), conn).map(|i| routes[i])
}

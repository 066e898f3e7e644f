//! HTTP on a gateway port, plain or after TLS termination: the server for the request's host,
//! `httpsRedirect`, the VirtualServices that server exposes, then the Gateway's outbound stack.
//!
//! What the upstream sees, as from Envoy at the edge: `x-forwarded-proto` set to the
//! connection's scheme, the client's address appended to `x-forwarded-for`, the `Host` as the
//! client sent it. On TLS connections an origin-form HTTP/1.1 request gets the `https` scheme,
//! so VirtualService `scheme` matches and redirects see what HTTP/2 clients send.

use std::{net::SocketAddr, sync::Arc};

use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use hyper::body::Incoming;
use mesh_core::{gateway, host::split_authority};
use mesh_tower::{
    MeshError,
    authz::ConnectionInfo,
    body::{self, MeshBody},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
};
use tower::ServiceExt;

use super::{Ctx, Servers};

/// Which servers a connection's requests may use.
#[derive(Clone, Debug)]
pub(super) struct Scope {
    pub(super) servers: Arc<Servers>,
    /// The server chosen by SNI for a TLS connection; plain HTTP chooses per request by host.
    pub(super) fixed: Option<usize>,
    pub(super) tls: bool,
    pub(super) peer: SocketAddr,
    pub(super) local: Option<SocketAddr>,
    pub(super) sni: Option<String>,
}

/// Serves HTTP/1.1 and HTTP/2 (h2c, or h2 by ALPN) on `io` until it closes, or until `stop`,
/// when it finishes the requests under way and closes. The limits, idle timeout and upgrades
/// (WebSocket) are those of every listener: see [`connection`](crate::run::connection).
pub(super) async fn serve<I>(io: I, scope: Scope, ctx: Arc<Ctx>, stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let scope = Arc::new(scope);
    let answer = move |req: Request<Incoming>| {
        let (scope, ctx) = (scope.clone(), ctx.clone());
        async move { handle(req, &scope, &ctx).await }
    };
    // The accept loop holds the connection's slot; an upgraded connection's tunnel does not.
    crate::run::connection::serve(io, answer, None, stop).await;
}

/// The response to one request.
async fn handle(mut req: Request<Incoming>, scope: &Scope, ctx: &Ctx) -> Response<MeshBody> {
    let Some(authority) = authority(&req) else {
        return MeshError::NoAuthority.to_response(false);
    };
    let host = split_authority(&authority).0.to_ascii_lowercase();
    let servers = &scope.servers;
    let index = match scope.fixed {
        Some(i) => Some(i).filter(|_| gateway::specificity(&servers.list[i], &host).is_some()),
        None => gateway::server_for(&servers.list, Some(&host)),
    };
    let Some(server) = index.map(|i| &servers.list[i]) else {
        // No server of this port serves the host: Envoy's 404 (no virtual host).
        return MeshError::NoRoute { authority }.to_response(false);
    };
    if server.tls.as_ref().is_some_and(|t| t.https_redirect) && !scope.tls {
        return redirect_to_https(&req, &authority);
    }
    let snapshot = ctx.handle.snapshot();
    if gateway::http_virtual_host(&snapshot, server, &host).is_none() {
        return MeshError::NoRoute { authority }.to_response(false);
    }
    let Some(svc) = ctx.stack(&server.gateway) else {
        return MeshError::NoRoute { authority }.to_response(false);
    };
    if scope.tls
        && req.uri().scheme().is_none()
        && let Ok(uri) = format!(
            "https://{authority}{}",
            req.uri().path_and_query().map_or("/", |p| p.as_str())
        )
        .parse::<Uri>()
    {
        *req.uri_mut() = uri;
    }
    // The upstream's pooled client sends a request in its own HTTP version, and refuses an
    // HTTP/2 one on an HTTP/1.1 connection: the version the client spoke to the gateway says
    // nothing about the upstream's, which the destination port decides (an h2 pool sends
    // HTTP/1.1-marked requests as HTTP/2).
    *req.version_mut() = http::Version::HTTP_11;
    let proto = if scope.tls { "https" } else { "http" };
    let headers = req.headers_mut();
    headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    let peer_ip = scope.peer.ip().to_string();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(list) if !list.trim().is_empty() => format!("{list}, {peer_ip}"),
        _ => peer_ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    // `match.port` on a gateway is the server's port, not the Host header's.
    req.extensions_mut()
        .insert(mesh_tower::route::ListenerPort(server.port));
    req.extensions_mut().insert(ConnectionInfo {
        peer_addr: Some(scope.peer),
        local_addr: scope.local,
        peer_principal: None,
        sni: scope.sni.clone(),
    });
    match svc.oneshot(req).await {
        Ok(res) => res,
        Err(never) => match never {},
    }
}

/// The request's authority: the absolute URI's (HTTP/2, proxies), else the Host header.
fn authority<B>(req: &Request<B>) -> Option<String> {
    req.uri()
        .authority()
        .map(|a| {
            a.as_str()
                .rsplit_once('@')
                .map_or(a.as_str(), |(_, h)| h)
                .to_owned()
        })
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .filter(|a| !a.is_empty())
}

/// `tls.httpsRedirect`: Envoy's `require_tls: ALL` answer, a 301 to the same host and path
/// over `https`. The port goes when it was plain HTTP's default (80) and stays otherwise.
pub(super) fn redirect_to_https<B>(req: &Request<B>, authority: &str) -> Response<MeshBody> {
    let location = https_location(req.uri(), authority);
    let mut res = Response::new(body::empty());
    *res.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

pub(super) fn https_location(uri: &Uri, authority: &str) -> String {
    let (host, port) = split_authority(authority);
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    match port.filter(|p| *p != 80) {
        Some(p) => format!("https://{host}:{p}{path}"),
        None => format!("https://{host}{path}"),
    }
}

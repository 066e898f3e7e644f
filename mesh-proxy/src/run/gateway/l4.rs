//! TCP and TLS passthrough on a gateway port: the VirtualService `tcp` or `tls` route for the
//! connection, a weighted destination, an endpoint, then bytes copied both ways.

use std::{net::SocketAddr, sync::Arc};

use mesh_core::{gateway, matching::ConnectionView, model::GatewayServer};
use mesh_tower::tcp;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Ctx;

/// What the connection is routed by.
#[derive(Clone, Copy, Debug)]
pub(super) enum Routes<'a> {
    /// `tcp` routes (TCP servers, and TLS servers that terminate).
    Tcp,
    /// `tls` routes by the ClientHello's server name (PASSTHROUGH servers).
    Tls { sni: Option<&'a str> },
}

/// Routes `client` (whose first bytes, already read, are `first`) and forwards it. A
/// connection nothing routes, or whose upstream cannot be reached, is closed, as Envoy closes
/// it; the reason goes to stderr.
pub(super) async fn forward<S>(
    client: S,
    first: &[u8],
    server: &GatewayServer,
    routes: Routes<'_>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    ctx: Arc<Ctx>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let snapshot = ctx.handle.snapshot();
    let view = ConnectionView {
        port: server.port,
        destination_ip: local.map(|a| a.ip()),
        sni: match routes {
            Routes::Tls { sni } => sni,
            Routes::Tcp => None,
        },
        source_labels: &ctx.labels,
        source_namespace: Some(&ctx.namespace),
    };
    let destinations = match routes {
        Routes::Tcp => gateway::tcp_route(&snapshot, server, &view).map(|r| &r.destinations),
        Routes::Tls { .. } => gateway::tls_route(&snapshot, server, &view).map(|r| &r.destinations),
    };
    let Some(destinations) = destinations else {
        let what = match routes {
            Routes::Tcp => "no VirtualService tcp route".to_owned(),
            Routes::Tls { sni } => format!(
                "no VirtualService tls route for SNI {}",
                sni.unwrap_or("(none)")
            ),
        };
        eprintln!(
            "mesh run: gateway {}: {what} takes the connection from {peer}; closed",
            server.port
        );
        return;
    };
    let dest = &destinations.pick(fastrand::u64(..)).destination;
    let target = match ctx.tcp.pick(
        &snapshot,
        dest,
        server.port,
        &ctx.namespace,
        Some(peer.ip()),
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mesh run: gateway {}: {e}; closed", server.port);
            return;
        }
    };
    drop(snapshot);
    let upstream = match target.connect().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mesh run: gateway {}: {e}; closed", server.port);
            return;
        }
    };
    if let Err(e) = tcp::proxy(client, upstream, first, target.idle_timeout()).await {
        // Resets and idle timeouts end connections; worth a line, not more.
        eprintln!(
            "mesh run: gateway {}: connection from {peer} to {}: {e}",
            server.port,
            target.endpoint()
        );
    }
}

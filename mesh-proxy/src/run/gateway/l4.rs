//! TCP and TLS passthrough on a gateway port: the VirtualService `tcp` or `tls` route for the
//! connection, a weighted destination, an endpoint, then bytes copied both ways.
//!
//! Each routed connection records Istio's TCP metrics
//! ([Istio Standard Metrics](https://istio.io/latest/docs/reference/config/metrics/)), as a
//! gateway's Envoy reports them (`reporter="source"`, `request_protocol="tcp"`):
//! `istio_tcp_connections_opened_total` once the upstream connection is attempted,
//! `istio_tcp_connections_closed_total` when the connection ends, and the bytes received from
//! and sent to the client (`istio_tcp_received_bytes_total`, `istio_tcp_sent_bytes_total`) as
//! they flow, so a long-lived connection shows its traffic before it closes. The labels name
//! the routed `destination_service`; a connection whose upstream has no endpoint is flagged
//! `UH`, one whose upstream refused it `UF`. A connection no route takes is closed before any
//! of this, as Envoy closes one that matches no filter chain, and is not counted.
//!
//! With `--access-log`, each routed connection also writes a line when it closes, as Envoy's
//! TCP proxy does in Istio's format: `"- - -" 0` for the request, the flags, the bytes
//! received and sent, the duration, the endpoint, Istio's cluster name, the client's
//! addresses and, for TLS passthrough, the SNI.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use mesh_core::{gateway, matching::ConnectionView, model::GatewayServer};
use mesh_tower::{
    tcp,
    telemetry::{ResponseFlags, TcpConnectionMetrics, TcpPeer},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
        say!(
            "mesh run: gateway {}: {what} takes the connection from {peer}; closed",
            server.port
        );
        return;
    };
    let dest = &destinations.pick(fastrand::u64(..)).destination;
    let service = dest.host.to_string();
    // Istio's cluster name, for the access log line.
    let cluster = format!(
        "outbound|{}|{}|{service}",
        dest.port.unwrap_or(server.port),
        dest.subset.as_deref().unwrap_or("")
    );
    let sni = match routes {
        Routes::Tls { sni } => sni,
        Routes::Tcp => None,
    };
    let open = |flags, upstream_host: Option<&str>| {
        ctx.telemetry.tcp_connection(TcpPeer {
            service: Some(&service),
            principal: None,
            flags,
            upstream_host,
            upstream_cluster: Some(&cluster),
            downstream_local: local,
            downstream_remote: Some(peer),
            server_name: sni,
        })
    };
    let target = match ctx.tcp.pick(
        &snapshot,
        dest,
        server.port,
        &ctx.namespace,
        Some(peer.ip()),
    ) {
        Ok(t) => t,
        Err(e) => {
            drop(open(ResponseFlags::NO_HEALTHY_UPSTREAM, None));
            say!("mesh run: gateway {}: {e}; closed", server.port);
            return;
        }
    };
    drop(snapshot);
    let upstream = match target.connect().await {
        Ok(s) => s,
        Err(e) => {
            drop(open(
                ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
                Some(target.endpoint()),
            ));
            say!("mesh run: gateway {}: {e}; closed", server.port);
            return;
        }
    };
    let metrics = open(ResponseFlags::NONE, Some(target.endpoint()));
    metrics.received(first.len() as u64);
    let client = Counted {
        inner: client,
        metrics,
    };
    if let Err(e) = tcp::proxy(client, upstream, first, target.idle_timeout()).await {
        // Resets and idle timeouts end connections; worth a line, not more.
        say!(
            "mesh run: gateway {}: connection from {peer} to {}: {e}",
            server.port,
            target.endpoint()
        );
    }
}

/// The client's side of a proxied connection, counting the bytes read from it (received) and
/// written to it (sent) into its TCP metrics as they move; the connection counts as closed
/// when this is dropped.
#[derive(Debug)]
struct Counted<S> {
    inner: S,
    metrics: TcpConnectionMetrics,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.metrics.received(read as u64);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled
            && *n > 0
        {
            self.metrics.sent(*n as u64);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

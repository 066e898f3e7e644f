//! Istio's TCP metrics, for a proxy of TCP connections to count through
//! [`TelemetryLayer::tcp_connection`], and with an access log a line per connection.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering},
    time::SystemTime,
};

use metrics::{Counter, Key};
use tokio::time::Instant;

use super::{
    AccessLog, Reporter, ResponseFlags, TCP_CLOSED, TCP_OPENED, TCP_RECEIVED_BYTES, TCP_SENT_BYTES,
    TelemetryLayer,
    cache::METADATA,
    labels::{self, Outcome, Protocol, Security},
};

/// What a TCP proxy knows of a connection when it opens it.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpPeer<'a> {
    /// The service host the connection is for (the registry's, or the address asked for);
    /// `None` when unknown.
    pub service: Option<&'a str>,
    /// Inbound: the peer certificate's principal (`spiffe://...`), `None` for plain text.
    pub principal: Option<&'a str>,
    /// Why the connection failed or ended early (`UF`, `UH`, `UC`, ...).
    pub flags: ResponseFlags,
    /// For the access log line: the endpoint (`address:port`), Istio's cluster name
    /// (`outbound|PORT|SUBSET|HOST`), the client connection's two addresses and its SNI.
    pub upstream_host: Option<&'a str>,
    pub upstream_cluster: Option<&'a str>,
    pub downstream_local: Option<SocketAddr>,
    pub downstream_remote: Option<SocketAddr>,
    pub server_name: Option<&'a str>,
}

/// The metrics of one proxied TCP connection: counted as opened when made, as closed when
/// dropped; bytes are added as they flow. Its labels are those of the HTTP metrics with
/// `request_protocol="tcp"` and without `response_code` and `grpc_response_status`, as Istio's.
/// With an access log (the layer's [`access_log`](TelemetryLayer::access_log)), the
/// connection's line is written when this is dropped.
///
/// ```
/// use mesh_tower::telemetry::{TcpPeer, TelemetryLayer};
/// # let mesh = mesh_tower::MeshHandle::new(mesh_core::CompiledMesh::default());
/// let telemetry = TelemetryLayer::inbound(&mesh).namespace("default");
/// let conn = telemetry.tcp_connection(TcpPeer {
///     principal: Some("spiffe://cluster.local/ns/default/sa/client"),
///     ..TcpPeer::default()
/// });
/// conn.received(512); // from the client
/// conn.sent(2048); // to the client
/// drop(conn); // istio_tcp_connections_closed_total
/// ```
#[derive(Debug)]
pub struct TcpConnectionMetrics {
    sent: Counter,
    received: Counter,
    closed: Counter,
    log: Option<Box<TcpLog>>,
}

/// What a connection's access log line needs, gathered until it closes.
#[derive(Debug)]
struct TcpLog {
    log: AccessLog,
    start: SystemTime,
    started: Instant,
    flags: ResponseFlags,
    sent: AtomicU64,
    received: AtomicU64,
    upstream_host: Option<String>,
    upstream_cluster: Option<String>,
    downstream_local: Option<SocketAddr>,
    downstream_remote: Option<SocketAddr>,
    server_name: Option<String>,
}

impl TcpConnectionMetrics {
    /// Bytes sent to the downstream (`istio_tcp_sent_bytes_total`).
    pub fn sent(&self, bytes: u64) {
        self.sent.increment(bytes);
        if let Some(log) = &self.log {
            log.sent.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Bytes received from the downstream (`istio_tcp_received_bytes_total`).
    pub fn received(&self, bytes: u64) {
        self.received.increment(bytes);
        if let Some(log) = &self.log {
            log.received.fetch_add(bytes, Ordering::Relaxed);
        }
    }
}

impl Drop for TcpConnectionMetrics {
    fn drop(&mut self) {
        self.closed.increment(1);
        if let Some(l) = self.log.take() {
            l.log.log_tcp(&crate::access_log::TcpRecord {
                start: l.start,
                flags: l.flags,
                bytes_received: l.received.load(Ordering::Relaxed),
                bytes_sent: l.sent.load(Ordering::Relaxed),
                duration_ms: l.started.elapsed().as_millis() as u64,
                upstream_host: l.upstream_host.as_deref(),
                upstream_cluster: l.upstream_cluster.as_deref(),
                downstream_local: l.downstream_local,
                downstream_remote: l.downstream_remote,
                server_name: l.server_name.as_deref(),
            });
        }
    }
}

impl TelemetryLayer {
    /// Counts a TCP connection as opened and returns its metrics, which count it as closed
    /// when dropped. The labels are resolved now (a few map lookups and one registration per
    /// connection, not per byte).
    pub fn tcp_connection(&self, peer: TcpPeer<'_>) -> TcpConnectionMetrics {
        let shared = &self.shared;
        let mesh = shared.handle.snapshot();
        let (dest, remote, security) = match shared.reporter {
            Reporter::Source => (
                match peer.service {
                    Some(host) => shared.service_dest(&mesh, host),
                    None => shared.unknown_dest.clone(),
                },
                shared.unknown_peer.clone(),
                Security::Unknown,
            ),
            Reporter::Destination => (
                match peer.service {
                    Some(host) => shared.inbound_dest(&mesh, host),
                    None => shared.inbound_dest(&mesh, ""),
                },
                peer.principal
                    .map_or_else(|| shared.unknown_peer.clone(), |p| shared.principal_peer(p)),
                if peer.principal.is_some() {
                    Security::MutualTls
                } else {
                    Security::None
                },
            ),
        };
        let outcome = Outcome {
            protocol: Protocol::Tcp,
            code: None,
            grpc_status: None,
            flags: peer.flags,
            security,
        };
        let log = shared.outputs.access_log.as_ref().map(|log| {
            Box::new(TcpLog {
                log: log.clone(),
                start: SystemTime::now(),
                started: Instant::now(),
                flags: peer.flags,
                sent: AtomicU64::new(0),
                received: AtomicU64::new(0),
                upstream_host: peer.upstream_host.map(str::to_owned),
                upstream_cluster: peer.upstream_cluster.map(str::to_owned),
                downstream_local: peer.downstream_local,
                downstream_remote: peer.downstream_remote,
                server_name: peer.server_name.map(str::to_owned),
            })
        });
        if !shared.outputs.metrics {
            return TcpConnectionMetrics {
                sent: Counter::noop(),
                received: Counter::noop(),
                closed: Counter::noop(),
                log,
            };
        }
        let labels = labels::labels(shared.reporter, &shared.local, &remote, &dest, &outcome);
        let (opened, metrics) = metrics::with_recorder(|r| {
            let counter = |name: &'static str| {
                r.register_counter(&Key::from_parts(name, labels.clone()), &METADATA)
            };
            (
                counter(TCP_OPENED),
                TcpConnectionMetrics {
                    sent: counter(TCP_SENT_BYTES),
                    received: counter(TCP_RECEIVED_BYTES),
                    closed: counter(TCP_CLOSED),
                    log,
                },
            )
        });
        opened.increment(1);
        metrics
    }
}

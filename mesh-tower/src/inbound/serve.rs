//! The whole inbound side in one call: accept as PeerAuthentication says, serve HTTP/1.1 and
//! HTTP/2 over the accepted streams, and tell every request what its connection proved.

use std::{future::Future, sync::Arc, time::Duration};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};

use super::InboundAcceptor;
use crate::body::BoxError;

/// How long connections may finish their requests after `shutdown`: Istio's default
/// `terminationDrainDuration` (5 s).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `service` on `listener` until `shutdown` completes, then stops accepting and lets open
/// connections finish for up to [`DRAIN_TIMEOUT`].
///
/// Each connection is accepted by `acceptor` (PeerAuthentication; the workload port is the
/// acceptor's [`workload_port`](InboundAcceptor::workload_port), else the listener's port) in a
/// task of its own, so a slow handshake holds up no other client; then HTTP/1.1 or HTTP/2
/// (ALPN over TLS, the preface in plain text). Every request carries the connection's
/// [`ConnectionInfo`](crate::authz::ConnectionInfo) and, over mTLS, its
/// [`MutualTls`](super::MutualTls) as extensions: what authorization and
/// [`XfccLayer`](super::XfccLayer) read. With the stack of
/// [`MeshStack::inbound`](crate::MeshStack::inbound) as `service` this is a workload's
/// whole inbound side:
///
/// ```no_run
/// # async fn run(mesh: mesh_tower::MeshHandle, identity: mesh_tower::tls::IdentitySource)
/// # -> std::io::Result<()> {
/// use mesh_tower::{MeshStack, body::{self, BoxError, MeshBody}, inbound::{InboundAcceptor, serve}};
/// let app = tower::service_fn(|_req: http::Request<MeshBody>| async {
///     Ok::<_, BoxError>(http::Response::new(body::full("ok")))
/// });
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9080").await?;
/// let acceptor = InboundAcceptor::new(&mesh)
///     .namespace("default")
///     .workload_labels([("app", "reviews")])
///     .identity(identity);
/// let stack = MeshStack::inbound(&mesh, app)
///     .namespace("default")
///     .workload_labels([("app", "reviews")])
///     .build();
/// serve(listener, acceptor, stack, std::future::pending()).await;
/// # Ok(())
/// # }
/// ```
pub async fn serve<S, B>(
    listener: TcpListener,
    acceptor: InboundAcceptor,
    service: S,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // With a timer, HTTP/1.1's header read timeout (30 s) guards against slow clients.
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let local = listener.local_addr().ok();
    let port = acceptor
        .configured_workload_port()
        .or(local.map(|a| a.port()))
        .unwrap_or_default();
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(target: "mesh::inbound", "accept on {local:?}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, service, builder) = (acceptor.clone(), service.clone(), builder.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // accept() logs its refusals.
            let Ok((stream, info)) = acceptor.accept(tcp, port).await else {
                return;
            };
            let mtls = stream.mutual_tls().cloned();
            let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(info.clone());
                if let Some(mtls) = &mtls {
                    req.extensions_mut().insert(mtls.clone());
                }
                service.clone().oneshot(req)
            });
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(target: "mesh::inbound", "connection: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!(target: "mesh::inbound", "connections still open after the drain timeout");
    }
}

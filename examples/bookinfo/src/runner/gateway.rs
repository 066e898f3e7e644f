//! The ingress gateway's listener: plain HTTP/1.1 and h2c from browsers and curl, served by
//! the outbound stack that routes as `bookinfo-gateway` (Istio's ingress gateway does the same
//! with Envoy: the Gateway's VirtualServices pick the destination, then mTLS to the workload).
//!
//! The workloads' listeners use [`mesh_tower::inbound::serve`], which applies
//! PeerAuthentication; an ingress takes plain text from outside the mesh whatever the mesh's
//! mTLS mode, so it has this loop of its own. A standalone service (`bookinfo serve`, behind a
//! sidecar) is served by the same loop: plain text, no policy of its own.

use std::{future::Future, sync::Arc, time::Duration};

use http::Request;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use mesh_tower::MeshService;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// How long open connections may finish after a shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `service` on `listener` until `shutdown` completes, then drains.
pub(crate) async fn serve(
    listener: TcpListener,
    service: MeshService<Incoming>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(target: "bookinfo::gateway", "accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let (service, builder) = (service.clone(), builder.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                service.clone().oneshot(req)
            });
            let conn = builder.serve_connection(TokioIo::new(tcp), svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(target: "bookinfo::gateway", "connection: {e}");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}

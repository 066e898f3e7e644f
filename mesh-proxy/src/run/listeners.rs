//! Accept loops, and the outbound and inbound request handlers.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use mesh_tower::{
    MeshHandle, MeshStack,
    authz::ConnectionInfo,
    body::{self, BoxError, MeshBody},
};
use tokio::{net::TcpListener, sync::watch};
use tower::ServiceExt;

/// How long in-flight connections may finish after a stop.
const DRAIN: Duration = Duration::from_secs(5);

type ResponseFuture = Pin<Box<dyn Future<Output = Response<MeshBody>> + Send>>;

/// A listener's request handler: the request, the peer and the local address.
pub(crate) type Handler =
    Arc<dyn Fn(Request<Incoming>, SocketAddr, Option<SocketAddr>) -> ResponseFuture + Send + Sync>;

/// Serves `listener` until `stop` changes, then drains for up to [`DRAIN`].
pub(crate) async fn serve(
    listener: TcpListener,
    handler: Handler,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    let local = listener.local_addr().ok();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        eprintln!("mesh run: accept on {local:?}: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let fut = handler(req, peer, local);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let conn = builder
                    .serve_connection(TokioIo::new(stream), svc)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}

/// The outbound listener: the outbound stack, routing by the request's authority.
pub(crate) fn outbound(
    handle: &MeshHandle,
    namespace: &str,
    labels: &[(String, String)],
) -> Handler {
    let svc = MeshStack::outbound(handle)
        .namespace(namespace)
        .workload_labels(labels.iter().cloned())
        .build::<Incoming>();
    // The boxed stack is Send but not Sync: clone it under a lock (cheap, per request).
    let svc = Mutex::new(svc);
    Arc::new(move |req, _peer, _local| {
        let svc = svc.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Box::pin(async move {
            match svc.oneshot(req).await {
                Ok(res) => res,
                Err(never) => match never {},
            }
        })
    })
}

/// The inbound listener: the inbound stack in front of a client to `app`.
pub(crate) fn inbound(
    handle: &MeshHandle,
    namespace: &str,
    labels: &[(String, String)],
    app: String,
) -> Handler {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, MeshBody> = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector);
    let app: Arc<str> = app.into();
    let forward = tower::service_fn(move |req: Request<MeshBody>| {
        let client = client.clone();
        let app = app.clone();
        async move { forward(&client, &app, req).await }
    });
    let svc = MeshStack::inbound(handle, forward)
        .namespace(namespace)
        .workload_labels(labels.iter().cloned())
        .build::<Incoming>();
    let svc = Mutex::new(svc);
    Arc::new(move |mut req, peer, local| {
        req.extensions_mut().insert(ConnectionInfo {
            peer_addr: Some(peer),
            local_addr: local,
            ..Default::default()
        });
        let svc = svc.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Box::pin(async move {
            match svc.oneshot(req).await {
                Ok(res) => res,
                Err(never) => match never {},
            }
        })
    })
}

/// Sends `req` to `http://APP` + its path and query; headers kept, bodies streamed.
async fn forward(
    client: &Client<HttpConnector, MeshBody>,
    app: &str,
    mut req: Request<MeshBody>,
) -> Result<Response<MeshBody>, BoxError> {
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri: Uri = format!("http://{app}{pq}").parse()?;
    *req.uri_mut() = uri;
    // The app speaks what the client spoke, as far as the pool can tell; HTTP/1.1 by default.
    *req.version_mut() = http::Version::HTTP_11;
    let res = client.request(req).await?;
    Ok(res.map(body::boxed))
}

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
use mesh_core::model::MtlsMode;
use mesh_tower::{
    MeshHandle, MeshStack,
    body::{self, BoxError, MeshBody},
    inbound::InboundAcceptor,
    tls::IdentitySource,
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
/// With an `identity`, mesh endpoints get mTLS (auto mTLS, DestinationRule ISTIO_MUTUAL).
pub(crate) fn outbound(
    handle: &MeshHandle,
    namespace: &str,
    labels: &[(String, String)],
    identity: Option<&IdentitySource>,
) -> Handler {
    let mut stack = MeshStack::outbound(handle)
        .namespace(namespace)
        .workload_labels(labels.iter().cloned());
    if let Some(identity) = identity {
        stack = stack.identity(identity.clone());
    }
    let svc = stack.build::<Incoming>();
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

/// What the inbound listener serves, and as whom.
pub(crate) struct InboundOptions {
    pub(crate) namespace: String,
    pub(crate) labels: Vec<(String, String)>,
    /// `--app`: `host:port` of the application.
    pub(crate) app: String,
    /// `--identity-dir`: without it, plain text only (a STRICT port refuses everything).
    pub(crate) identity: Option<IdentitySource>,
}

/// The inbound listener, until `stop` changes (then it drains for up to 5 s): each connection
/// accepted as PeerAuthentication says for the app's port (mTLS from peer proxies, plain text
/// where PERMISSIVE or DISABLE allow it), then the inbound stack
/// (`x-forwarded-client-cert`, request authentication, rate limit, authorization), then a
/// client to `--app`.
pub(crate) async fn inbound(
    listener: TcpListener,
    handle: &MeshHandle,
    opts: InboundOptions,
    mut stop: watch::Receiver<bool>,
) {
    // portLevelMtls names the workload's own port: the app's, as behind an Istio sidecar.
    let app_port = app_port(&opts.app);
    if opts.identity.is_none() {
        let effective = handle
            .snapshot()
            .peer_authentication(&opts.namespace, &opts.labels.iter().cloned().collect());
        if effective.mode_for_port(app_port) == MtlsMode::Strict {
            eprintln!(
                "mesh run: warning: PeerAuthentication {} is STRICT for this workload's port \
                 {app_port}, but there is no --identity-dir: every inbound connection will be \
                 refused until it has a certificate",
                effective.policy_for_port(app_port).unwrap_or("?")
            );
        }
    }
    let mut acceptor = InboundAcceptor::new(handle)
        .namespace(opts.namespace.clone())
        .workload_labels(opts.labels.iter().cloned())
        .workload_port(app_port);
    if let Some(identity) = opts.identity {
        acceptor = acceptor.identity(identity);
    }

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let app_client = |h2: bool| -> Client<HttpConnector, MeshBody> {
        Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(h2)
            .build(connector.clone())
    };
    // The app speaks what the peer spoke to us: HTTP/2 (h2c: gRPC apps) or HTTP/1.1, as
    // Envoy's inbound cluster with `useClientProtocol`.
    let (h1, h2) = (app_client(false), app_client(true));
    let app: Arc<str> = opts.app.into();
    let forward = tower::service_fn(move |req: Request<MeshBody>| {
        let client = if req.version() == http::Version::HTTP_2 {
            h2.clone()
        } else {
            h1.clone()
        };
        let app = app.clone();
        async move { forward(&client, &app, req).await }
    });
    let svc = MeshStack::inbound(handle, forward)
        .namespace(opts.namespace)
        .workload_labels(opts.labels)
        .build::<Incoming>();
    let stopped = async move {
        let _ = stop.changed().await;
    };
    mesh_tower::inbound::serve(listener, acceptor, svc, stopped).await;
}

/// The port of `host:port` (80 without one, as `http://host` means).
fn app_port(app: &str) -> u16 {
    app.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(80)
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
    // The pool (HTTP/1.1 or HTTP/2-only, chosen by the caller) decides the protocol.
    *req.version_mut() = http::Version::HTTP_11;
    let res = client.request(req).await?;
    Ok(res.map(body::boxed))
}

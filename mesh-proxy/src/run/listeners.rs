//! Accept loops, and the outbound and inbound request handlers.
//!
//! Every listener (outbound, inbound, admin) accepts while it has a free connection slot
//! ([`Limits::max_connections`](super::connection::Limits)), serves each connection on a task
//! of its own (see [`connection`](super::connection): limits, idle timeout, upgrades), and on
//! stop closes its socket at once (new connections are refused), asks its connections to
//! close after their requests in flight, and waits until every slot is back (upgraded
//! connections included) or [`DRAIN`] has passed.

use std::{
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
    rt::{TokioExecutor, TokioTimer},
};
use mesh_core::model::MtlsMode;
use mesh_tower::{
    MeshHandle, MeshStack,
    authz::ConnectionInfo,
    body::{self, BoxError, MeshBody},
    inbound::InboundAcceptor,
    tls::IdentitySource,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
};
use tower::ServiceExt;

use super::connection::{self, Limits, Slot, stopped};

/// How long in-flight connections may finish after a stop: Istio's default
/// `terminationDrainDuration` (5 s).
pub(crate) const DRAIN: Duration = Duration::from_secs(5);

type ResponseFuture = Pin<Box<dyn Future<Output = Response<MeshBody>> + Send>>;

/// A listener's request handler: the request, the peer and the local address.
pub(crate) type Handler =
    Arc<dyn Fn(Request<Incoming>, SocketAddr, Option<SocketAddr>) -> ResponseFuture + Send + Sync>;

/// Serves `listener` with `handler` until `stop` changes, then drains for up to [`DRAIN`].
pub(crate) async fn serve(listener: TcpListener, handler: Handler, stop: watch::Receiver<bool>) {
    let conn_stop = stop.clone();
    accept_loop(listener, stop, move |tcp, peer, slot| {
        let (handler, stop) = (handler.clone(), conn_stop.clone());
        async move {
            let local = tcp.local_addr().ok();
            let answer = move |req| handler(req, peer, local);
            connection::serve(tcp, answer, slot, stop).await;
        }
    })
    .await;
}

/// Accepts connections until `stop`, each handed to `connection` on a task of its own with
/// the listener slot it holds; then drains.
async fn accept_loop<C, F>(listener: TcpListener, mut stop: watch::Receiver<bool>, connection: C)
where
    C: Fn(TcpStream, SocketAddr, Slot) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let max = Limits::current().max_connections;
    let slots = Arc::new(Semaphore::new(max as usize));
    let local = listener.local_addr().ok();
    loop {
        // No free slot: do not accept; clients wait in the kernel's backlog.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = stopped(&mut stop) => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(target: "mesh::listener", "accept on {local:?}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(tcp, peer, Some(Arc::new(slot))));
    }
    // New connections are refused from here on.
    drop(listener);
    if tokio::time::timeout(DRAIN, slots.acquire_many(max))
        .await
        .is_err()
    {
        tracing::info!(
            target: "mesh::listener",
            "listener {local:?}: connections still open after the {DRAIN:?} drain are dropped"
        );
    }
}

/// The outbound listener: the outbound stack, routing by the request's authority.
/// With an `identity`, mesh endpoints get mTLS (auto mTLS, DestinationRule ISTIO_MUTUAL).
pub(crate) fn outbound(
    handle: &MeshHandle,
    namespace: &str,
    labels: &[(String, String)],
    identity: Option<&IdentitySource>,
    observability: &super::observability::Observability,
) -> Handler {
    let mut stack = MeshStack::outbound(handle)
        .namespace(namespace)
        .workload_labels(labels.iter().cloned());
    if let Some(identity) = identity {
        stack = stack.identity(identity.clone());
    }
    let svc = observability.outbound(stack).build::<Incoming>();
    // The boxed stack is Send but not Sync: clone it under a lock (cheap, per request).
    let svc = Mutex::new(svc);
    Arc::new(move |mut req, peer, local| {
        // The app's connection, for the access log's downstream addresses (and rate limits'
        // `remote_address`).
        req.extensions_mut().insert(ConnectionInfo {
            peer_addr: Some(peer),
            local_addr: local,
            ..ConnectionInfo::default()
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

/// What the inbound listener serves, and as whom.
pub(crate) struct InboundOptions {
    pub(crate) namespace: String,
    pub(crate) labels: Vec<(String, String)>,
    /// `--app`: `host:port` of the application.
    pub(crate) app: String,
    /// `--identity-dir`: without it, plain text only (a STRICT port refuses everything).
    pub(crate) identity: Option<IdentitySource>,
    /// `--tracing-*`, `--access-log*`.
    pub(crate) observability: super::observability::Observability,
}

/// The inbound listener, until `stop` changes (then it drains for up to [`DRAIN`]): each
/// connection accepted as PeerAuthentication says for the app's port (mTLS from peer proxies,
/// plain text where PERMISSIVE or DISABLE allow it), then the inbound stack
/// (`x-forwarded-client-cert`, request authentication, rate limit, authorization), then a
/// client to `--app`.
pub(crate) async fn inbound(
    listener: TcpListener,
    handle: &MeshHandle,
    opts: InboundOptions,
    stop: watch::Receiver<bool>,
) {
    // portLevelMtls names the workload's own port: the app's, as behind an Istio sidecar.
    let app_port = app_port(&opts.app);
    if opts.identity.is_none() {
        let effective = handle
            .snapshot()
            .peer_authentication(&opts.namespace, &opts.labels.iter().cloned().collect());
        if effective.mode_for_port(app_port) == MtlsMode::Strict {
            say!(
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
    let stack = MeshStack::inbound(handle, forward)
        .namespace(opts.namespace)
        .workload_labels(opts.labels);
    let svc = opts.observability.inbound(stack).build::<Incoming>();
    let conn_stop = stop.clone();
    accept_loop(listener, stop, move |tcp, _peer, slot| {
        let (acceptor, svc, stop) = (acceptor.clone(), svc.clone(), conn_stop.clone());
        async move {
            // accept() logs its refusals.
            let Ok((stream, info)) = acceptor.accept(tcp, app_port).await else {
                return;
            };
            let mtls = stream.mutual_tls().cloned();
            let answer = move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(info.clone());
                if let Some(mtls) = &mtls {
                    req.extensions_mut().insert(mtls.clone());
                }
                let svc = svc.clone();
                async move {
                    match svc.oneshot(req).await {
                        Ok(res) => res,
                        Err(never) => match never {},
                    }
                }
            };
            connection::serve(stream, answer, slot, stop).await;
        }
    })
    .await;
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

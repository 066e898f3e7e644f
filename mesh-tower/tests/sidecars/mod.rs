//! Two sidecars in one process, over real loopback sockets: a client workload's outbound stack
//! (`productpage`), whose `reviews` endpoint is the inbound listener of a second workload
//! (`reviews`), served by `mesh_tower::inbound::serve` in front of an app (the echoing
//! upstream of `support`, which returns every request header it got as `x-echo-<name>`).
#![allow(dead_code)]

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::Empty;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use mesh_tower::{
    MeshService, MeshStack,
    access_log::AccessLog,
    body::{self, BoxError, MeshBody},
    inbound::InboundAcceptor,
    trace::Tracing,
};
use tokio::{net::TcpListener, sync::oneshot};

use crate::support;

/// What each side has.
#[derive(Default)]
pub struct Options {
    pub client_tracing: Option<Tracing>,
    pub server_tracing: Option<Tracing>,
    pub client_log: Option<AccessLog>,
    pub server_log: Option<AccessLog>,
}

pub struct Sidecars {
    /// The client workload's outbound stack.
    pub client: MeshService<Empty<Bytes>>,
    /// The server workload's inbound listener.
    pub inbound: SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// `reviews` (port 9080, a VirtualService route named `primary`) reaches the inbound
/// listener; `details` has one endpoint on a closed port.
fn yaml(inbound: u16, closed: u16) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {inbound}}}, labels: {{app: reviews}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - name: primary
    route: [{{destination: {{host: reviews}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: details, namespace: default}}
spec:
  hosts: [details.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {closed}}}}}]
"#
    )
}

pub async fn start(opts: Options) -> Sidecars {
    let app = support::upstream("reviews-app").await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let inbound = listener.local_addr().unwrap();
    let report = mesh_config::Loader::new().check_str(
        "sidecars.yaml",
        &yaml(inbound.port(), support::closed_port().await.port()),
    );
    assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
    let mesh = report.into_mesh().unwrap();

    // The server side: the inbound stack, then a client to the app.
    let client: Client<HttpConnector, MeshBody> = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .build_http();
    let forward = tower::service_fn(move |mut req: Request<MeshBody>| {
        let client = client.clone();
        async move {
            let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
            *req.uri_mut() = format!("http://{app}{pq}").parse::<Uri>()?;
            *req.version_mut() = http::Version::HTTP_11;
            let res: Response<_> = client.request(req).await?;
            Ok::<_, BoxError>(res.map(body::boxed))
        }
    });
    let mut server = MeshStack::inbound(&mesh, forward)
        .namespace("default")
        .workload_labels([("app", "reviews"), ("version", "v1")]);
    if let Some(t) = opts.server_tracing {
        server = server.tracing(t);
    }
    if let Some(log) = opts.server_log {
        server = server.access_log(log);
    }
    let server = server.build();
    let acceptor = InboundAcceptor::new(&mesh)
        .namespace("default")
        .workload_labels([("app", "reviews"), ("version", "v1")]);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(mesh_tower::inbound::serve(
        listener,
        acceptor,
        server,
        async move {
            let _ = stopped.await;
        },
    ));

    let mut client = MeshStack::outbound(&mesh)
        .namespace("default")
        .workload_labels([("app", "productpage"), ("version", "v1")]);
    if let Some(t) = opts.client_tracing {
        client = client.tracing(t);
    }
    if let Some(log) = opts.client_log {
        client = client.access_log(log);
    }
    Sidecars {
        client: client.build(),
        inbound,
        _stop: stop,
    }
}

/// Polls `check` until it returns `Some`, for up to 5 s (each side records a request when its
/// response body ends, which the client may see a moment earlier).
pub async fn eventually<T>(mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "not within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

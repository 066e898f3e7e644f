//! The stack builder: the one place that knows the order of the layers.
//!
//! ```text
//! outbound (client side):
//!   request ─► telemetry (Istio's standard metrics, `reporter="source"`: every response the
//!                         client sees, local replies included; see `MeshStack::telemetry`;
//!                         and the access log, `MeshStack::access_log`)
//!           ─► trace (a CLIENT span, W3C and B3 headers for the next hop; `MeshStack::tracing`)
//!           ─► edge (box the body; errors become responses, as DESIGN.md's table says)
//!           ─► local rate limit (EnvoyFilter `local_ratelimit`, context SIDECAR_OUTBOUND,
//!                                or GATEWAY for a gateway; ANY for both: 429 at once)
//!           ─► route (VirtualService match, weighted destination, redirect, directResponse,
//!                     rewrite, header operations; the decision is handed up to telemetry)
//!           ─► cors (`corsPolicy`: preflights answered here, CORS headers on responses)
//!           ─► fault (`fault`: delay, then abort; independent percentages)
//!           ─► timeout (`timeout`, or `x-envoy-upstream-rq-timeout-ms`: from the end of the
//!                       request body until the end of the response body, retries included)
//!           ─► mirror (`mirror`/`mirrors`: fire-and-forget copies, Host `...-shadow`, sent
//!                      below with no route policies; bodies teed up to 64 KiB)
//!           ─► retry (the route's `retries`, or Istio's default policy: per-try timeout,
//!                     jittered back-off, retry budget, request body replayed up to 64 KiB;
//!                     each retry prefers an endpoint not tried before)
//!           ─► upstream (subset endpoints, DestinationRule load balancer with outlier
//!                        ejection, connection-pool limits as circuit breakers failing fast
//!                        with 503 overflow, pooled HTTP/1.1 or HTTP/2 client over plain
//!                        text or TLS: DestinationRule `tls`, else auto mTLS)
//!
//! inbound (server side, [`MeshStack::inbound`]):
//!   request ─► telemetry (`reporter="destination"`; outermost, so that the 401, 403 and 429
//!                         local replies below are counted, as Envoy's stats see them)
//!           ─► trace (a SERVER span, its context passed on to the app)
//!           ─► edge (box the body; errors become responses)
//!           ─► x-forwarded-client-cert (set from the mTLS peer, removed on plain text)
//!           ─► request authentication (RequestAuthentication: JWTs verified against the
//!                                      issuers' JWKS; no token passes, a bad one is 401;
//!                                      the verified principal and claims go to authorization)
//!           ─► local rate limit (EnvoyFilter `local_ratelimit`, context SIDECAR_INBOUND or
//!                                ANY: one bucket per EnvoyFilter and workload, 429 at once)
//!           ─► authorization (AuthorizationPolicy: CUSTOM not applied, DENY, ALLOW; AUDIT
//!                             and dry-run logged; 403 `RBAC: access denied`)
//!           ─► app
//! ```
//!
//! Inbound, the rate limit comes before authorization: a flood is refused before any policy
//! is evaluated, and denied requests spend tokens too. This differs from Istio's usual
//! EnvoyFilter, which inserts the filter just before `envoy.filters.http.router`, after RBAC,
//! so that a denied request spends no token there. Request authentication comes first, as
//! Envoy's `jwt_authn` filter precedes both: a request with a bad token spends no token.
//! Peer authentication (mTLS) happens per connection, before this stack: the
//! [`InboundAcceptor`](crate::inbound::InboundAcceptor) (served by
//! [`inbound::serve`](crate::inbound::serve)) puts the connection's
//! [`ConnectionInfo`](crate::authz::ConnectionInfo) and, over mTLS, its
//! [`MutualTls`](crate::inbound::MutualTls) in every request's extensions; without them a
//! request is plain text from an unknown peer.
//!
//! Connection-pool limits and outlier detection live in the upstream, per destination cluster
//! (host, subset, port), below the retry layer: each attempt counts on its own, as in Envoy.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use mesh_core::{Labels, model::MESH_GATEWAY};
use tower::{Service, util::BoxCloneService};

use crate::{
    access_log::AccessLog,
    authz::AuthorizationLayer,
    body::{self, BoxError, MeshBody},
    endpoint::{Upstream, UpstreamConnector},
    error::{error_to_response, is_grpc},
    jwt::RequestAuthenticationLayer,
    ratelimit::{LocalRateLimitLayer, TrafficDirection},
    route::{ClientIdentity, RouteLayer},
    snapshot::MeshHandle,
    telemetry::{RouteTapLayer, TelemetryLayer},
    trace::{TraceLayer, Tracing},
};

/// A cloneable `Service<http::Request<B>>` that never fails: mesh failures are responses.
pub type MeshService<B> = BoxCloneService<Request<B>, Response<MeshBody>, Infallible>;

/// Builds the mesh stacks: Istio's YAML in, a tower `Service` out.
///
/// Two versions of `reviews` run on loopback ports; a DestinationRule names them as subsets
/// and a VirtualService sends every request to `v2`, as in Istio's
/// [request routing](https://istio.io/latest/docs/tasks/traffic-management/request-routing/)
/// task:
///
/// ```
/// # use std::convert::Infallible;
/// # use bytes::Bytes;
/// # use http_body_util::{BodyExt, Empty, Full};
/// # use tower::ServiceExt;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let (v1, v2) = (serve("v1").await?, serve("v2").await?); // each answers with its name
/// let yaml = format!(
///     r#"
/// apiVersion: networking.istio.io/v1
/// kind: ServiceEntry
/// metadata:
///   name: reviews
/// spec:
///   hosts:
///   - reviews.example.internal
///   location: MESH_INTERNAL
///   resolution: STATIC
///   ports:
///   - number: 9080
///     name: http
///     protocol: HTTP
///   endpoints:
///   - address: 127.0.0.1
///     ports:
///       http: {v1}
///     labels:
///       version: v1
///   - address: 127.0.0.1
///     ports:
///       http: {v2}
///     labels:
///       version: v2
/// ---
/// apiVersion: networking.istio.io/v1
/// kind: DestinationRule
/// metadata:
///   name: reviews
/// spec:
///   host: reviews.example.internal
///   subsets:
///   - name: v1
///     labels:
///       version: v1
///   - name: v2
///     labels:
///       version: v2
/// ---
/// apiVersion: networking.istio.io/v1
/// kind: VirtualService
/// metadata:
///   name: reviews
/// spec:
///   hosts:
///   - reviews.example.internal
///   http:
///   - route:
///     - destination:
///         host: reviews.example.internal
///         subset: v2
/// "#
/// );
/// let mesh = mesh_config::Loader::new()
///     .check_str("reviews.yaml", &yaml)
///     .into_mesh()?;
///
/// let client = mesh_tower::MeshStack::outbound(&mesh)
///     .namespace("default")
///     .workload_labels([("app", "productpage")])
///     .build();
///
/// let req = http::Request::get("http://reviews.example.internal:9080/reviews/0")
///     .body(Empty::<Bytes>::new())?;
/// let res = client.oneshot(req).await?;
/// assert_eq!(res.status(), 200);
/// assert_eq!(res.into_body().collect().await?.to_bytes(), "v2");
/// # Ok(())
/// # }
/// #
/// # /// An HTTP/1.1 server on an ephemeral loopback port that answers `name`; its port.
/// # async fn serve(name: &'static str) -> std::io::Result<u16> {
/// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// #     let port = listener.local_addr()?.port();
/// #     tokio::spawn(async move {
/// #         while let Ok((stream, _)) = listener.accept().await {
/// #             let svc = hyper::service::service_fn(move |_req| async move {
/// #                 Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(name))))
/// #             });
/// #             let conn = hyper::server::conn::http1::Builder::new()
/// #                 .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
/// #             tokio::spawn(conn);
/// #         }
/// #     });
/// #     Ok(port)
/// # }
/// ```
///
/// Failures are responses too (404 `no-route`, 503 `no-healthy-upstream`, ...: see
/// [`MeshError`](crate::MeshError)), so the service's error type is `Infallible`.
#[derive(Debug, Clone)]
pub struct MeshStack<C = crate::endpoint::HttpConnector> {
    handle: MeshHandle,
    client: ClientIdentity,
    upstream: Upstream<C>,
    telemetry: bool,
    tracing: Option<Tracing>,
    access_log: Option<AccessLog>,
}

impl MeshStack {
    /// The client side: routes requests by their authority, as a sidecar's outbound listener.
    pub fn outbound(mesh: impl Into<MeshHandle>) -> Self {
        MeshStack {
            handle: mesh.into(),
            client: ClientIdentity::default(),
            upstream: Upstream::new(),
            telemetry: true,
            tracing: None,
            access_log: None,
        }
    }
}

impl<C: UpstreamConnector> MeshStack<C> {
    /// The client workload's namespace (short hosts are qualified in it; `sourceNamespace`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.client.namespace = namespace.into();
        self
    }

    /// The client workload's labels (`sourceLabels` matches, Sidecar selection).
    pub fn workload_labels<K: Into<String>, V: Into<String>>(
        mut self,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.client.labels = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect::<Labels>();
        self
    }

    /// Route as the named Gateway (`namespace/name`) instead of as a sidecar.
    pub fn gateway(mut self, gateway: impl Into<String>) -> Self {
        self.client.gateway = gateway.into();
        self
    }

    /// Makes upstream connections with `connector` (plain: TLS origination wraps it, and the
    /// identity set with [`identity`](Self::identity) is kept).
    pub fn connector<C2: UpstreamConnector>(self, connector: C2) -> MeshStack<C2> {
        let mut upstream = Upstream::with_connector(connector);
        if let Some(source) = self.upstream.identity() {
            upstream = upstream.with_identity(source.clone());
        }
        MeshStack {
            handle: self.handle,
            client: self.client,
            upstream,
            telemetry: self.telemetry,
            tracing: self.tracing,
            access_log: self.access_log,
        }
    }

    /// The workload's identity (its SPIFFE certificate, key and mesh roots): mutual TLS to
    /// endpoints, as Istio's sidecars do. Auto mTLS then sends ISTIO_MUTUAL to endpoints
    /// labelled `security.istio.io/tlsMode: istio` (put the label in their WorkloadEntry or
    /// ServiceEntry endpoint `labels`) when no DestinationRule sets `tls`, and verifies that
    /// the server presents an identity of the destination service (secure naming). Without an
    /// identity those endpoints get plain text, and a DestinationRule's ISTIO_MUTUAL fails
    /// with 503.
    pub fn identity(mut self, source: crate::tls::IdentitySource) -> Self {
        self.upstream = self.upstream.with_identity(source);
        self
    }

    /// Whether to record Istio's standard metrics ([`telemetry`](crate::telemetry); on by
    /// default): off to measure the stack without them, or when nothing collects them.
    pub fn telemetry(mut self, enabled: bool) -> Self {
        self.telemetry = enabled;
        self
    }

    /// A `CLIENT` span per request, sampled and exported as `tracing` says
    /// ([`trace`](crate::trace)); off by default.
    pub fn tracing(mut self, tracing: Tracing) -> Self {
        self.tracing = Some(tracing);
        self
    }

    /// An access log line per request ([`access_log`](crate::access_log)); off by default.
    /// Written by the telemetry layer, which is kept for it even with `telemetry(false)`.
    pub fn access_log(mut self, log: AccessLog) -> Self {
        self.access_log = Some(log);
        self
    }

    /// Builds the stack for request bodies of type `B`.
    pub fn build<B>(self) -> MeshService<B>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let upstream = self.upstream.clone();
        self.build_over(upstream)
    }

    /// Builds the stack over `leaf` instead of the HTTP upstream: the service that receives
    /// each routed request (with its [`RouteCtx`](crate::route::RouteCtx) in the extensions).
    /// For in-memory services, tests and benchmarks.
    pub fn build_over<B, L>(self, leaf: L) -> MeshService<B>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
        L: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>
            + Clone
            + Send
            + 'static,
        L::Future: Send + 'static,
    {
        if self.client.gateway.is_empty() {
            // An empty gateway name would match nothing; mean the sidecar.
            return MeshStack {
                client: ClientIdentity {
                    gateway: MESH_GATEWAY.into(),
                    ..self.client
                },
                ..self
            }
            .build_over(leaf);
        }
        let direction = if self.client.gateway == MESH_GATEWAY {
            TrafficDirection::SidecarOutbound
        } else {
            TrafficDirection::Gateway
        };
        let rate_limit = LocalRateLimitLayer::new(&self.handle, direction)
            .namespace(self.client.namespace.clone())
            .workload_labels(self.client.labels.clone());
        let telemetry = (self.telemetry || self.access_log.is_some()).then(|| {
            let layer = TelemetryLayer::outbound(&self.handle)
                .namespace(self.client.namespace.clone())
                .workload_labels(self.client.labels.clone())
                .metrics(self.telemetry);
            match self.access_log.clone() {
                Some(log) => layer.access_log(log),
                None => layer,
            }
        });
        let trace = self.tracing.as_ref().map(|t| {
            TraceLayer::outbound(t)
                .namespace(self.client.namespace.clone())
                .workload_labels(self.client.labels.clone())
        });
        // The order of the layers, outermost first (see the diagram above). Each per-route
        // layer reads the RouteCtx the router put in the request.
        let inner = tower::ServiceBuilder::new()
            .layer(rate_limit)
            .layer(RouteLayer::new(self.handle, self.client))
            .layer(RouteTapLayer)
            .layer(crate::cors::CorsLayer::new())
            .layer(crate::fault::FaultLayer::new())
            .layer(crate::timeout::TimeoutLayer::new())
            // Envoy mirrors in its router, after the fault filter: an aborted request is not
            // mirrored, and the copy is bounded by the route timeout.
            .layer(crate::mirror::MirrorLayer::new())
            .layer(crate::retry::RetryLayer::new())
            .service(leaf);
        let edge = Edge {
            inner,
            not_ready: None,
        };
        BoxCloneService::new(
            tower::ServiceBuilder::new()
                .option_layer(telemetry)
                .option_layer(trace)
                .service(edge),
        )
    }
}

/// Builds the server side of a workload: Istio's inbound policies in front of `app`.
///
/// Made by [`MeshStack::inbound`]; see the order of the layers in the [module](self) docs.
///
/// ```
/// # use bytes::Bytes;
/// # use http_body_util::Empty;
/// # use tower::ServiceExt;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let yaml = r#"
/// apiVersion: security.istio.io/v1
/// kind: AuthorizationPolicy
/// metadata: {name: no-posts, namespace: default}
/// spec:
///   selector: {matchLabels: {app: ratings}}
///   action: DENY
///   rules:
///   - to: [{operation: {methods: [POST]}}]
/// "#;
/// let mesh = mesh_config::Loader::new()
///     .check_str("ratings.yaml", yaml)
///     .into_mesh()?;
/// let app = tower::service_fn(|_req: http::Request<mesh_tower::body::MeshBody>| async {
///     Ok::<_, mesh_tower::body::BoxError>(http::Response::new(mesh_tower::body::full("ok")))
/// });
/// let server = mesh_tower::MeshStack::inbound(&mesh, app)
///     .namespace("default")
///     .workload_labels([("app", "ratings")])
///     .build();
///
/// let post = http::Request::post("/ratings/0").body(Empty::<Bytes>::new())?;
/// assert_eq!(server.clone().oneshot(post).await?.status(), 403);
/// let get = http::Request::get("/ratings/0").body(Empty::<Bytes>::new())?;
/// assert_eq!(server.oneshot(get).await?.status(), 200);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct InboundStack<A> {
    handle: MeshHandle,
    workload: ClientIdentity,
    app: A,
    tracing: Option<Tracing>,
    access_log: Option<AccessLog>,
}

impl MeshStack {
    /// The server side of a workload: local rate limit and authorization in front of `app`,
    /// as a sidecar's inbound listener.
    pub fn inbound<A>(mesh: impl Into<MeshHandle>, app: A) -> InboundStack<A> {
        InboundStack {
            handle: mesh.into(),
            workload: ClientIdentity::default(),
            app,
            tracing: None,
            access_log: None,
        }
    }
}

impl<A> InboundStack<A> {
    /// The workload's namespace (which policies and rate limits apply).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.workload.namespace = namespace.into();
        self
    }

    /// The workload's labels (policy `selector`s, EnvoyFilter `workloadSelector`s).
    pub fn workload_labels<K: Into<String>, V: Into<String>>(
        mut self,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.workload.labels = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect::<Labels>();
        self
    }

    /// A `SERVER` span per request, its context passed on to the app ([`trace`](crate::trace));
    /// off by default.
    pub fn tracing(mut self, tracing: Tracing) -> Self {
        self.tracing = Some(tracing);
        self
    }

    /// An access log line per request ([`access_log`](crate::access_log)); off by default.
    pub fn access_log(mut self, log: AccessLog) -> Self {
        self.access_log = Some(log);
        self
    }

    /// Builds the stack for request bodies of type `B`.
    pub fn build<B>(self) -> MeshService<B>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
        A: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>
            + Clone
            + Send
            + 'static,
        A::Future: Send + 'static,
    {
        let InboundStack {
            handle,
            workload,
            app,
            tracing,
            access_log,
        } = self;
        let mut telemetry = TelemetryLayer::inbound(&handle)
            .namespace(workload.namespace.clone())
            .workload_labels(workload.labels.clone());
        if let Some(log) = access_log {
            telemetry = telemetry.access_log(log);
        }
        let trace = tracing.as_ref().map(|t| {
            TraceLayer::inbound(t)
                .namespace(workload.namespace.clone())
                .workload_labels(workload.labels.clone())
        });
        // The order of the layers, outermost first (see the diagram above).
        let inner = tower::ServiceBuilder::new()
            .layer(crate::inbound::XfccLayer::new())
            .layer(
                RequestAuthenticationLayer::new(&handle)
                    .namespace(workload.namespace.clone())
                    .workload_labels(workload.labels.clone()),
            )
            .layer(
                LocalRateLimitLayer::new(&handle, TrafficDirection::SidecarInbound)
                    .namespace(workload.namespace.clone())
                    .workload_labels(workload.labels.clone()),
            )
            .layer(
                AuthorizationLayer::new(&handle)
                    .namespace(workload.namespace)
                    .workload_labels(workload.labels),
            )
            .service(app);
        BoxCloneService::new(
            tower::ServiceBuilder::new()
                .layer(telemetry)
                .option_layer(trace)
                .service(Edge {
                    inner,
                    not_ready: None,
                }),
        )
    }
}

/// The edge of the stack: boxes the body and turns every error into its response.
#[derive(Debug)]
struct Edge<S> {
    inner: S,
    not_ready: Option<BoxError>,
}

impl<S: Clone> Clone for Edge<S> {
    fn clone(&self) -> Self {
        Edge {
            inner: self.inner.clone(),
            not_ready: None,
        }
    }
}

impl<S, B> Service<Request<B>> for Edge<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<MeshBody>;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The inner layers are always ready; a readiness error would be a response too, but
        // there is no request to answer yet, so it is reported on the next call.
        match self.inner.poll_ready(cx) {
            Poll::Ready(Err(err)) => {
                self.not_ready = Some(err);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let grpc = is_grpc(&req);
        // Envoy's `generate_request_id`: every request carries an `x-request-id` (a UUID),
        // kept when the client sent one, so logs and traces of one request can be joined.
        if !req.headers().contains_key(X_REQUEST_ID) {
            req.headers_mut().insert(X_REQUEST_ID, new_request_id());
        }
        let state = match self.not_ready.take() {
            Some(err) => EdgeState::Failed { err: Some(err) },
            None => EdgeState::Call {
                fut: self.inner.call(req.map(body::boxed)),
            },
        };
        EdgeFuture { state, grpc }
    }
}

pub(crate) const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// A random (version 4) UUID, as Envoy generates request ids: written straight into the
/// header's bytes (formatting machinery cost a quarter of the stack's own time here).
pub(crate) fn new_request_id() -> http::HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = (fastrand::u128(..) & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let mut id = [0u8; 36];
    let mut nibble = 0;
    for (i, b) in id.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            *b = b'-';
            continue;
        }
        *b = HEX[((n >> (124 - 4 * nibble)) & 0xf) as usize];
        nibble += 1;
    }
    http::HeaderValue::from_maybe_shared(Bytes::copy_from_slice(&id))
        .expect("hex and dashes are a valid header value")
}

pin_project_lite::pin_project! {
    /// The edge's response: the stack's, or the response for its error.
    pub struct EdgeFuture<F> {
        #[pin]
        state: EdgeState<F>,
        grpc: bool,
    }
}

pin_project_lite::pin_project! {
    #[project = EdgeStateProj]
    enum EdgeState<F> {
        Call { #[pin] fut: F },
        Failed { err: Option<BoxError> },
    }
}

impl<F> std::future::Future for EdgeFuture<F>
where
    F: std::future::Future<Output = Result<Response<MeshBody>, BoxError>>,
{
    type Output = Result<Response<MeshBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let grpc = *this.grpc;
        match this.state.project() {
            EdgeStateProj::Call { fut } => Poll::Ready(Ok(match std::task::ready!(fut.poll(cx)) {
                Ok(res) => res,
                Err(err) => error_to_response(err, grpc),
            })),
            EdgeStateProj::Failed { err } => Poll::Ready(Ok(error_to_response(
                err.take().expect("polled after completion"),
                grpc,
            ))),
        }
    }
}

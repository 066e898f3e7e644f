//! Istio's standard metrics: the
//! [Istio Standard Metrics](https://istio.io/latest/docs/reference/config/metrics/) with their
//! names, types and labels, recorded through the [`metrics`] facade.
//!
//! | metric | type | recorded |
//! |---|---|---|
//! | `istio_requests_total` | counter | once per request, when its response ends |
//! | `istio_request_duration_milliseconds` | histogram | from the request to the end of the response body, in whole ms as Envoy |
//! | `istio_request_bytes`, `istio_response_bytes` | histograms | body bytes (istio.io: "HTTP request body sizes"; Envoy counts wire bytes, headers included) |
//! | `istio_tcp_*` | counters | by a TCP proxy, through [`TcpConnectionMetrics`] |
//!
//! Labels are [`HTTP_LABELS`], filled as Istio's stats filter fills them (see the `labels`
//! module). Both sides report: [`TelemetryLayer::outbound`] as `reporter="source"` (a sidecar's
//! client side, or a gateway), [`TelemetryLayer::inbound`] as `reporter="destination"`.
//!
//! The layer sits outermost in the stacks, so it sees what the client sees, local replies
//! included: `response_code` is the status sent, `response_flags` come from the reply's
//! `x-mesh-error` header (Envoy's flags: see [`ResponseFlags`]), a response body cut short is
//! flagged `DC`, a request dropped before its response is `response_code="0"` with `DC`.
//!
//! The outbound side learns the destination from the routing decision (below the router, see
//! [`RouteCtx`]) and the destination workload from the endpoint the upstream picked (its
//! registry labels: Istio's client-side fallback when the peer sends no metadata); over an
//! upstream TLS connection (ISTIO_MUTUAL, auto mTLS) `source_principal` and
//! `destination_principal` are the URI SANs of the two certificates ([`UpstreamTls`]), and the
//! destination's namespace the one in its SPIFFE ID, as Istio's client side reads them
//! (`connection_security_policy` stays `unknown` there, as Istio's). The inbound
//! side learns the peer from the [`ConnectionInfo`] the listener inserted: its principal, its
//! namespace (from the SPIFFE ID), and `connection_security_policy="mutual_tls"`.
//!
//! With an [`AccessLog`](crate::access_log::AccessLog) the layer also writes an access log
//! line per request when its record is complete (see [`access_log`](crate::access_log)); with
//! [`metrics(false)`](TelemetryLayer::metrics) it writes only that.
//!
//! Nothing here installs a recorder: install one (Prometheus, or any `metrics` recorder)
//! before the first request; each label set's handles are registered with the recorder in
//! place when it is first seen, and kept. Histograms need [`HISTOGRAM_BUCKETS`] in the
//! recorder to render as Istio's `_bucket` series. Label cardinality is bounded (see the
//! limits in [`MAX_SERIES`] and beside it).
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Empty};
//! use mesh_tower::telemetry::{RequestBody, TelemetryLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! # let mesh = mesh_tower::MeshHandle::new(mesh_core::CompiledMesh::default());
//! let app = tower::service_fn(|_req: http::Request<RequestBody<Empty<Bytes>>>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(mesh_tower::body::full("ok")))
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(
//!         TelemetryLayer::inbound(&mesh)
//!             .namespace("bookinfo")
//!             .workload_labels([("app", "ratings"), ("version", "v1")]),
//!     )
//!     .service(app);
//! let res = svc.oneshot(http::Request::get("/").body(Empty::new())?).await?;
//! // Recorded (`reporter="destination"`, `destination_app="ratings"`, ...) when the body ends.
//! res.into_body().collect().await?;
//! # Ok(())
//! # }
//! ```

mod cache;
mod flags;
mod labels;
mod tcp;
#[cfg(test)]
mod tests;

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU16, AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, header::HOST, uri::Authority};
use http_body::{Body, Frame, SizeHint};
use mesh_core::{
    CompiledMesh, Labels,
    host::split_authority,
    model::{Endpoint, Service},
};
use tokio::time::Instant;
use tower::{Layer, Service as TowerService};

pub use cache::{MAX_AUTHORITIES, MAX_PRINCIPALS, MAX_SERIES};
pub use flags::ResponseFlags;
pub use labels::HTTP_LABELS;
pub use tcp::{TcpConnectionMetrics, TcpPeer};

use crate::{
    access_log::{self, AccessLog, RequestInfo},
    authz::ConnectionInfo,
    body::{BoxError, MeshBody},
    endpoint::UpstreamTls,
    error::is_grpc,
    route::{RouteCtx, Target},
    snapshot::MeshHandle,
    stack::{X_REQUEST_ID, new_request_id},
};
use cache::Shared;
use labels::{Dest, Outcome, Protocol, Security, Workload};

pub const REQUESTS_TOTAL: &str = "istio_requests_total";
pub const REQUEST_DURATION: &str = "istio_request_duration_milliseconds";
pub const REQUEST_BYTES: &str = "istio_request_bytes";
pub const RESPONSE_BYTES: &str = "istio_response_bytes";
pub const TCP_SENT_BYTES: &str = "istio_tcp_sent_bytes_total";
pub const TCP_RECEIVED_BYTES: &str = "istio_tcp_received_bytes_total";
pub const TCP_OPENED: &str = "istio_tcp_connections_opened_total";
pub const TCP_CLOSED: &str = "istio_tcp_connections_closed_total";

/// The three histograms.
pub const HISTOGRAMS: [&str; 3] = [REQUEST_DURATION, REQUEST_BYTES, RESPONSE_BYTES];

/// Istio's buckets for all three histograms: Envoy's default histogram buckets, which Istio
/// keeps unless `sidecar.istio.io/statsHistogramBuckets` says otherwise.
pub const HISTOGRAM_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Which side reports: the `reporter` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reporter {
    /// The client side (outbound stack, gateway).
    Source,
    /// The server side (inbound stack).
    Destination,
}

impl Reporter {
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        }
    }
}

/// Records Istio's standard metrics for the requests through it. Clones share their caches.
#[derive(Debug, Clone)]
pub struct TelemetryLayer {
    shared: Arc<Shared>,
    namespace: String,
    labels: Labels,
}

/// What a layer does besides knowing its workload.
#[derive(Debug, Clone)]
pub(crate) struct Outputs {
    /// Record Istio's metrics.
    pub metrics: bool,
    pub access_log: Option<AccessLog>,
}

impl Default for Outputs {
    fn default() -> Self {
        Outputs {
            metrics: true,
            access_log: None,
        }
    }
}

impl TelemetryLayer {
    /// The client side: `reporter="source"`, for a workload of namespace `default` with no
    /// labels until [`namespace`](Self::namespace) and [`workload_labels`](Self::workload_labels).
    pub fn outbound(mesh: impl Into<MeshHandle>) -> Self {
        Self::with(
            Reporter::Source,
            mesh.into(),
            "default".into(),
            Labels::new(),
            Outputs::default(),
        )
    }

    /// The server side: `reporter="destination"`.
    pub fn inbound(mesh: impl Into<MeshHandle>) -> Self {
        Self::with(
            Reporter::Destination,
            mesh.into(),
            "default".into(),
            Labels::new(),
            Outputs::default(),
        )
    }

    fn with(
        reporter: Reporter,
        handle: MeshHandle,
        namespace: String,
        labels: Labels,
        outputs: Outputs,
    ) -> Self {
        let local = Workload::from_labels(&namespace, &labels, None);
        TelemetryLayer {
            shared: Arc::new(Shared::new(reporter, handle, local, outputs)),
            namespace,
            labels,
        }
    }

    /// The same layer with some settings changed (a fresh cache for the new workload).
    fn rebuilt(
        self,
        namespace: Option<String>,
        labels: Option<Labels>,
        outputs: Option<Outputs>,
    ) -> Self {
        let s = &self.shared;
        Self::with(
            s.reporter,
            s.handle.clone(),
            namespace.unwrap_or(self.namespace),
            labels.unwrap_or(self.labels),
            outputs.unwrap_or_else(|| s.outputs.clone()),
        )
    }

    /// The workload's namespace (`source_workload_namespace` on the client side).
    pub fn namespace(self, namespace: impl Into<String>) -> Self {
        self.rebuilt(Some(namespace.into()), None, None)
    }

    /// Writes an access log line per request to `log` ([`access_log`](crate::access_log)).
    pub fn access_log(self, log: AccessLog) -> Self {
        let outputs = Outputs {
            access_log: Some(log),
            ..self.shared.outputs.clone()
        };
        self.rebuilt(None, None, Some(outputs))
    }

    /// Whether to record Istio's metrics (on by default): off to write only access logs.
    pub fn metrics(self, enabled: bool) -> Self {
        let outputs = Outputs {
            metrics: enabled,
            ..self.shared.outputs.clone()
        };
        self.rebuilt(None, None, Some(outputs))
    }

    /// The workload's labels: `app`, `version`, the canonical service and revision
    /// (`service.istio.io/canonical-name`, `-revision`, as Istio's injector derives them), the
    /// workload name (`service.istio.io/workload-name`, else `unknown`) and the cluster
    /// (`topology.istio.io/cluster`, else `unknown`).
    pub fn workload_labels<K: Into<String>, V: Into<String>>(
        self,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let labels = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self.rebuilt(None, Some(labels), None)
    }
}

impl<S> Layer<S> for TelemetryLayer {
    type Service = Telemetry<S>;

    fn layer(&self, inner: S) -> Telemetry<S> {
        Telemetry {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The telemetry service: see the [module](self) docs.
#[derive(Debug, Clone)]
pub struct Telemetry<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Telemetry<S> {
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// A workload's names as Istio derives them from its labels, for the spans of
/// [`trace`](crate::trace).
#[derive(Debug, Clone)]
pub(crate) struct WorkloadAttributes {
    pub workload: String,
    pub canonical_service: String,
    pub canonical_revision: String,
}

impl WorkloadAttributes {
    pub(crate) fn of(namespace: &str, labels: &Labels) -> Self {
        let w = Workload::from_labels(namespace, labels, None);
        WorkloadAttributes {
            workload: w.name.to_string(),
            canonical_service: w.canonical_service.to_string(),
            canonical_revision: w.canonical_revision.to_string(),
        }
    }
}

/// What the layers below tell the telemetry layer about a request, in its extensions.
#[derive(Debug, Clone)]
pub(crate) struct RequestTelemetry(Arc<RequestState>);

#[derive(Debug)]
struct RequestState {
    shared: Arc<Shared>,
    dest: OnceLock<Arc<Dest>>,
    /// The endpoint of the last attempt.
    endpoint: ArcSwapOption<Workload>,
    request_bytes: AtomicU64,
    /// Envoy's flags the layers below set on their own (`DI`, `URX`, `UO`: see
    /// [`mark_response_flags`]), besides those the reply's `x-mesh-error` says.
    flags: AtomicU16,
    /// For the access log only (left empty without one): the route and the endpoint's
    /// `address:port`.
    route_log: OnceLock<RouteLog>,
    upstream_host: Mutex<Option<String>>,
}

/// The routing decision as an access log line shows it.
#[derive(Debug)]
struct RouteLog {
    cluster: std::borrow::Cow<'static, str>,
    name: std::borrow::Cow<'static, str>,
    /// The service port, to name the endpoint's address.
    port: u16,
}

impl RequestTelemetry {
    /// The routing decision: the destination service.
    pub(crate) fn record_route(&self, ctx: &RouteCtx) {
        let shared = &self.0.shared;
        let dest = match &ctx.target {
            Target::Destination(d) => shared.service_dest(&ctx.snapshot, d.host.as_str()),
            Target::Passthrough { authority } => {
                shared.authority_dest(authority, Some("PassthroughCluster"))
            }
        };
        let _ = self.0.dest.set(dest);
        if shared.outputs.access_log.is_some() {
            let port = match &ctx.target {
                Target::Destination(d) => d.port.unwrap_or(ctx.port),
                Target::Passthrough { .. } => ctx.port,
            };
            let _ = self.0.route_log.set(RouteLog {
                cluster: access_log::upstream_cluster(ctx),
                name: access_log::route_name(ctx),
                port,
            });
        }
    }

    /// The endpoint an attempt goes to: the destination workload.
    pub(crate) fn record_endpoint(
        &self,
        mesh: &Arc<CompiledMesh>,
        service: &Service,
        ep: &Endpoint,
    ) {
        let peer = self.0.shared.endpoint_peer(mesh, service, ep);
        self.0.endpoint.store(Some(peer));
        if let Some(route) = self.0.route_log.get() {
            let port = service.port(route.port).or_else(|| service.single_port());
            if let Some(port) = port {
                let host = crate::endpoint::endpoint_authority(ep, port);
                *self
                    .0
                    .upstream_host
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(host);
            }
        }
    }
}

#[cfg(test)]
impl RequestTelemetry {
    /// A request's telemetry outside any stack, for the layers' unit tests to read the flags
    /// they set.
    pub(crate) fn detached() -> Self {
        let layer = TelemetryLayer::outbound(MeshHandle::new(CompiledMesh::default()));
        RequestTelemetry(Arc::new(RequestState {
            shared: layer.shared,
            dest: OnceLock::new(),
            endpoint: ArcSwapOption::empty(),
            request_bytes: AtomicU64::new(0),
            flags: AtomicU16::new(0),
            route_log: OnceLock::new(),
            upstream_host: Mutex::new(None),
        }))
    }

    pub(crate) fn flags(&self) -> ResponseFlags {
        ResponseFlags::from_bits(self.0.flags.load(Ordering::Relaxed))
    }
}

/// Sets Envoy response `flags` on the request whose extensions are `extensions`, for its
/// metrics, access log line and span: what a layer below the telemetry layer knows and the
/// reply does not say (a fault delay, `DI`; retries exhausted, `URX`; a retry refused, `UO`).
/// Nothing happens for a request no telemetry or trace layer follows.
pub(crate) fn mark_response_flags(extensions: &http::Extensions, flags: ResponseFlags) {
    if let Some(t) = extensions.get::<RequestTelemetry>() {
        t.0.flags.fetch_or(flags.bits(), Ordering::Relaxed);
    }
    if let Some(span) = extensions.get::<crate::trace::SpanRoute>() {
        span.add_flags(flags);
    }
}

/// Where the outbound side's destination comes from when the router decided nothing (no
/// route, a blocked host): the request's authority, as Istio's Host header fallback.
#[derive(Debug)]
enum RequestAuthority {
    Uri(Authority),
    Host(HeaderValue),
}

impl RequestAuthority {
    fn of<B>(req: &Request<B>) -> Option<Self> {
        match req.uri().authority() {
            Some(a) => Some(RequestAuthority::Uri(a.clone())),
            None => req.headers().get(HOST).cloned().map(RequestAuthority::Host),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            RequestAuthority::Uri(a) => a.as_str(),
            RequestAuthority::Host(h) => h.to_str().unwrap_or(""),
        }
    }
}

impl<S, B> TowerService<Request<B>> for Telemetry<S>
where
    S: TowerService<Request<RequestBody<B>>, Response = Response<MeshBody>>,
{
    type Response = Response<MeshBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let shared = &self.shared;
        let state = Arc::new(RequestState {
            shared: shared.clone(),
            dest: OnceLock::new(),
            endpoint: ArcSwapOption::empty(),
            request_bytes: AtomicU64::new(0),
            flags: AtomicU16::new(0),
            route_log: OnceLock::new(),
            upstream_host: Mutex::new(None),
        });
        let log = shared.outputs.access_log.is_some().then(|| {
            // The id the line shows is the one the request goes on with (the edge keeps it).
            if !req.headers().contains_key(X_REQUEST_ID) {
                req.headers_mut().insert(X_REQUEST_ID, new_request_id());
            }
            RequestInfo::capture(&req)
        });
        let grpc = is_grpc(&req);
        let mut flight = InFlight {
            state: state.clone(),
            start: Instant::now(),
            outcome: Outcome {
                protocol: if grpc { Protocol::Grpc } else { Protocol::Http },
                code: Some(0),
                grpc_status: None,
                flags: ResponseFlags::NONE,
                security: Security::Unknown,
            },
            peer: None,
            fallback: None,
            blocked: false,
            response_bytes: 0,
            done: false,
            log,
            mesh_error: None,
            upstream_tls: None,
        };
        match shared.reporter {
            Reporter::Source => flight.fallback = RequestAuthority::of(&req),
            Reporter::Destination => {
                let principal = req
                    .extensions()
                    .get::<ConnectionInfo>()
                    .and_then(|c| c.peer_principal.as_deref());
                flight.outcome.security = match principal {
                    Some(_) => Security::MutualTls,
                    None => Security::None,
                };
                flight.peer = principal.map(|p| shared.principal_peer(p));
                let authority = match req.uri().authority() {
                    Some(a) => a.as_str(),
                    None => req
                        .headers()
                        .get(HOST)
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or(""),
                };
                let host = split_authority(authority).0;
                let _ = state
                    .dest
                    .set(shared.inbound_dest(&shared.handle.snapshot(), host));
            }
        }
        req.extensions_mut().insert(RequestTelemetry(state.clone()));
        let req = req.map(|inner| RequestBody { inner, state });
        ResponseFuture {
            inner: self.inner.call(req),
            flight: Some(flight),
        }
    }
}

/// One request until its response ends: recorded once, when finished or dropped.
#[derive(Debug)]
struct InFlight {
    state: Arc<RequestState>,
    start: Instant,
    outcome: Outcome,
    /// The inbound side's peer (the outbound side's is the endpoint, in `state`).
    peer: Option<Arc<Workload>>,
    fallback: Option<RequestAuthority>,
    /// A host the Sidecar's `REGISTRY_ONLY` refused (Istio's `BlackHoleCluster`).
    blocked: bool,
    response_bytes: u64,
    done: bool,
    /// With an access log: the request as its line shows it.
    log: Option<Box<RequestInfo>>,
    /// The reply's `x-mesh-error`, for the line's response code details.
    mesh_error: Option<&'static str>,
    /// The outbound side's upstream TLS connection, when the response came over one.
    upstream_tls: Option<UpstreamTls>,
}

impl InFlight {
    /// Takes what the response head says: status, `x-mesh-error`, a trailers-only gRPC status.
    fn head(&mut self, res: &Response<MeshBody>) {
        self.outcome.code = Some(res.status().as_u16());
        self.trailers(res.headers());
        if self.state.shared.reporter == Reporter::Source {
            self.upstream_tls = res.extensions().get::<UpstreamTls>().cloned();
        }
        if let Some(code) = res
            .headers()
            .get("x-mesh-error")
            .and_then(|v| v.to_str().ok())
        {
            self.outcome.flags |= ResponseFlags::from_mesh_error(code);
            self.blocked = code == "registry-only";
            if self.log.is_some() {
                self.mesh_error = Some(access_log::response_code_details(Some(code)));
            }
        }
    }

    fn trailers(&mut self, headers: &HeaderMap) {
        if self.outcome.protocol == Protocol::Grpc
            && let Some(s) = headers.get("grpc-status").and_then(|v| v.to_str().ok())
        {
            self.outcome.grpc_status = s.parse().ok();
        }
    }

    fn finish(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let shared = &self.state.shared;
        self.outcome.flags |= ResponseFlags::from_bits(self.state.flags.load(Ordering::Relaxed));
        let dest = match self.state.dest.get() {
            Some(d) => d.clone(),
            None => match &self.fallback {
                Some(a) => {
                    shared.authority_dest(a.as_str(), self.blocked.then_some("BlackHoleCluster"))
                }
                None => shared.unknown_dest.clone(),
            },
        };
        let mut peer = self
            .peer
            .take()
            .or_else(|| self.state.endpoint.load_full())
            .unwrap_or_else(|| shared.unknown_peer.clone());
        // Istio's client side: the principals of the upstream TLS connection.
        let mut local = None;
        if let Some(tls) = self.upstream_tls.take() {
            local = tls.local_principal().map(|p| shared.local_principal(p));
            if let Some(p) = tls.peer_principal() {
                peer = shared.peer_principal(&peer, p);
            }
        }
        let duration = self.start.elapsed().as_millis();
        let request_bytes = self.state.request_bytes.load(Ordering::Relaxed);
        if shared.outputs.metrics {
            let local = local.as_ref().unwrap_or(&shared.local);
            let series = shared.series(&dest, &peer, local, self.outcome);
            series.requests.increment(1);
            series.duration.record(duration as f64);
            series.request_bytes.record(request_bytes as f64);
            series.response_bytes.record(self.response_bytes as f64);
        }
        if let (Some(log), Some(request)) = (&shared.outputs.access_log, self.log.take()) {
            self.write_log(log, &request, duration as u64, request_bytes);
        }
    }

    fn write_log(&self, log: &AccessLog, request: &RequestInfo, duration_ms: u64, bytes: u64) {
        let state = &self.state;
        let code = self.outcome.code.unwrap_or(0);
        let host = state
            .upstream_host
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let inbound_cluster;
        let (cluster, route) = match (state.shared.reporter, state.route_log.get()) {
            (Reporter::Source, Some(r)) => (Some(&*r.cluster), Some(&*r.name)),
            (Reporter::Source, None) if self.blocked => {
                (Some("BlackHoleCluster"), Some("block_all"))
            }
            (Reporter::Source, None) => (None, None),
            (Reporter::Destination, _) => {
                // Istio's inbound cluster, `inbound|PORT||`, by the port the client addressed.
                let port = request
                    .authority
                    .as_deref()
                    .and_then(|a| split_authority(a).1)
                    .or(request.downstream_local.map(|a| a.port()));
                inbound_cluster = port.map(|p| format!("inbound|{p}||"));
                (inbound_cluster.as_deref(), Some("default"))
            }
        };
        let details = match (code, self.mesh_error) {
            (0, _) => "-",
            (_, Some(d)) => d,
            (_, None) => access_log::response_code_details(None),
        };
        log.log(&access_log::Record {
            request,
            code,
            flags: self.outcome.flags,
            details,
            bytes_received: bytes,
            bytes_sent: self.response_bytes,
            duration_ms,
            upstream_host: host.as_deref(),
            upstream_cluster: cluster,
            route_name: route,
        });
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            self.outcome.flags |= ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION;
            self.finish();
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future: the inner one's response, its body counted until it ends.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        flight: Option<InFlight>,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<MeshBody>, E>>,
{
    type Output = Result<Response<MeshBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(mut flight) = this.flight.take() else {
            return Poll::Ready(result);
        };
        let res = match result {
            Ok(res) => res,
            Err(e) => {
                // No response: Envoy's code 0.
                flight.finish();
                return Poll::Ready(Err(e));
            }
        };
        flight.head(&res);
        if res.body().is_end_stream() {
            // Nothing more will come: no need to wrap the body.
            flight.finish();
            return Poll::Ready(Ok(res));
        }
        Poll::Ready(Ok(res.map(|inner| {
            MeshBody::new(ResponseBody {
                inner,
                flight: Some(flight),
            })
        })))
    }
}

pin_project_lite::pin_project! {
    /// A request body whose bytes are counted for `istio_request_bytes`.
    pub struct RequestBody<B> {
        #[pin]
        inner: B,
        state: Arc<RequestState>,
    }
}

impl<B> std::fmt::Debug for RequestBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody").finish_non_exhaustive()
    }
}

impl<B: Body<Data = Bytes>> Body for RequestBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()) {
            this.state
                .request_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that finishes its request's record when it ends, fails or is dropped.
struct ResponseBody {
    inner: MeshBody,
    flight: Option<InFlight>,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        let end = self.inner.is_end_stream();
        if let Some(flight) = self.flight.as_mut() {
            match &frame {
                Some(Ok(f)) => {
                    if let Some(data) = f.data_ref() {
                        flight.response_bytes += data.len() as u64;
                    } else if let Some(trailers) = f.trailers_ref() {
                        flight.trailers(trailers);
                    }
                }
                Some(Err(_)) => flight.outcome.flags |= ResponseFlags::UPSTREAM_REMOTE_RESET,
                None => {}
            }
            if end || !matches!(frame, Some(Ok(_))) {
                flight.finish();
                self.flight = None;
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A body whose end was reached but not polled past (hyper stops at `is_end_stream`)
        // is complete; any other is cut short (`DC`, from `InFlight`'s drop).
        if self.inner.is_end_stream()
            && let Some(flight) = self.flight.as_mut()
        {
            flight.finish();
        }
    }
}

/// Below the router: hands the routing decision to the telemetry and trace layers above.
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteTapLayer;

impl<S> Layer<S> for RouteTapLayer {
    type Service = RouteTap<S>;

    fn layer(&self, inner: S) -> RouteTap<S> {
        RouteTap { inner }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct RouteTap<S> {
    inner: S,
}

impl<S, B> TowerService<Request<B>> for RouteTap<S>
where
    S: TowerService<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> S::Future {
        if let Some(ctx) = req.extensions().get::<RouteCtx>() {
            if let Some(t) = req.extensions().get::<RequestTelemetry>() {
                t.record_route(ctx);
            }
            if let Some(span) = req.extensions().get::<crate::trace::SpanRoute>() {
                span.record(ctx);
            }
        }
        self.inner.call(req)
    }
}

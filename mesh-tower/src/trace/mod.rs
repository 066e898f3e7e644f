//! Distributed tracing: a span per request on each side, as Istio's sidecars make them
//! ([Distributed Tracing](https://istio.io/latest/docs/tasks/observability/distributed-tracing/overview/)).
//!
//! The outbound stack's [`TraceLayer::outbound`] makes a `CLIENT` span, the inbound stack's
//! [`TraceLayer::inbound`] a `SERVER` span. Each continues the trace of the request's headers
//! (W3C `traceparent` or B3, see [`propagation`]) and writes its own span's context on the
//! request it passes on (W3C and B3 multi), so a client span is the parent of the next
//! sidecar's server span, and the application's own spans hang below the server span when it
//! copies the headers to its outgoing requests (which Istio requires of applications).
//!
//! Sampling is decided once per trace: the caller's decision (`traceparent` flags,
//! `x-b3-sampled`, `b3`, `x-b3-flags: 1`) is kept; without one, the
//! [`sampling`](TracingBuilder::sampling) percentage decides (Istio's 1% by default), and the
//! decision travels on with the context. An unsampled request costs a header parse, two random
//! ids and the injected headers: no span is built, nothing is exported, nothing is wrapped.
//!
//! A sampled span carries OpenTelemetry's HTTP attributes (`http.request.method`, `url.path`,
//! `server.address`, `server.port`, `network.protocol.version`, `user_agent.original`,
//! `client.address`, `http.response.status_code`) and Envoy's and Istio's tags
//! (`upstream_cluster`, `response_flags`, `guid:x-request-id`, `component`, `node_id`,
//! `istio.canonical_service`, `istio.canonical_revision`, `istio.namespace`,
//! `istio.mesh_id`); it ends when the response body ends, and is an error for a 5xx (or, on
//! the client side, a 4xx) or a response cut short. Its name is Istio's operation name,
//! `host:port/*`.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Empty};
//! use mesh_tower::trace::{TraceLayer, Tracing};
//! use tower::{ServiceBuilder, ServiceExt};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! # let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
//! // Tracing::otlp("http://127.0.0.1:4318/v1/traces")? for an OpenTelemetry collector.
//! let tracing = Tracing::exporter(exporter.clone())
//!     .sampling(mesh_core::Percent::HUNDRED)
//!     .service_name("ratings.default")
//!     .build();
//! let app = tower::service_fn(|req: http::Request<Empty<Bytes>>| async move {
//!     // The application sees the server span's context, to pass on.
//!     assert!(req.headers().contains_key("traceparent"));
//!     Ok::<_, std::convert::Infallible>(http::Response::new(mesh_tower::body::full("ok")))
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(TraceLayer::inbound(&tracing).workload_labels([("app", "ratings")]))
//!     .service(app);
//! let req = http::Request::get("http://ratings:9080/ratings/0").body(Empty::new())?;
//! svc.oneshot(req).await?.into_body().collect().await?;
//! tracing.flush(std::time::Duration::from_secs(1)).await;
//! assert_eq!(exporter.get_finished_spans()?[0].name, "ratings:9080/*");
//! # Ok(())
//! # }
//! ```

mod exporter;
pub mod propagation;
#[cfg(test)]
mod tests;

use std::{
    borrow::Cow,
    future::Future,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU16, Ordering},
    },
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, Version, header::USER_AGENT};
use http_body::{Body, Frame, SizeHint};
use mesh_core::{Labels, host::split_authority};
use opentelemetry::{
    Context as OtelContext, KeyValue,
    trace::{
        Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags,
        TraceId, Tracer as _,
    },
};
use opentelemetry_sdk::trace::Span;
use tower::{Layer, Service};

pub use exporter::{DEFAULT_SAMPLING_PERCENT, Tracing, TracingBuilder, TracingError};
pub use propagation::MeshPropagator;

use crate::{
    authz::ConnectionInfo,
    body::{BoxError, MeshBody},
    route::RouteCtx,
    stack::{X_REQUEST_ID, new_request_id},
    telemetry::{ResponseFlags, WorkloadAttributes},
};

/// Which side of the mesh a span is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The client side: `CLIENT` spans.
    Outbound,
    /// The server side: `SERVER` spans.
    Inbound,
}

/// Makes a span per request: see the [module](self) docs.
#[derive(Debug, Clone)]
pub struct TraceLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    tracing: Tracing,
    side: Side,
    namespace: String,
    labels: Labels,
    /// This workload's attributes, the same on every span.
    local: Vec<KeyValue>,
}

impl TraceLayer {
    /// The client side (outbound stack, gateway): `CLIENT` spans.
    pub fn outbound(tracing: &Tracing) -> Self {
        Self::with(
            tracing.clone(),
            Side::Outbound,
            "default".into(),
            Labels::new(),
        )
    }

    /// The server side (inbound stack): `SERVER` spans.
    pub fn inbound(tracing: &Tracing) -> Self {
        Self::with(
            tracing.clone(),
            Side::Inbound,
            "default".into(),
            Labels::new(),
        )
    }

    fn with(tracing: Tracing, side: Side, namespace: String, labels: Labels) -> Self {
        let w = WorkloadAttributes::of(&namespace, &labels);
        let local = vec![
            KeyValue::new("component", "proxy"),
            KeyValue::new("istio.canonical_service", w.canonical_service.clone()),
            KeyValue::new("istio.canonical_revision", w.canonical_revision),
            KeyValue::new("istio.namespace", namespace.clone()),
            KeyValue::new("istio.mesh_id", tracing.mesh_id().to_owned()),
            // Istio's `sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local`, without the IP
            // and with the workload name for the pod's.
            KeyValue::new(
                "node_id",
                format!(
                    "sidecar~~{}.{namespace}~{namespace}.svc.cluster.local",
                    w.workload
                ),
            ),
        ];
        TraceLayer {
            shared: Arc::new(Shared {
                tracing,
                side,
                namespace,
                labels,
                local,
            }),
        }
    }

    /// The workload's namespace (`istio.namespace`).
    pub fn namespace(self, namespace: impl Into<String>) -> Self {
        let s = &self.shared;
        Self::with(
            s.tracing.clone(),
            s.side,
            namespace.into(),
            s.labels.clone(),
        )
    }

    /// The workload's labels: `istio.canonical_service` and `istio.canonical_revision` as
    /// Istio derives them (`service.istio.io/canonical-name`, `app`, ...).
    pub fn workload_labels<K: Into<String>, V: Into<String>>(
        self,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let labels = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let s = &self.shared;
        Self::with(s.tracing.clone(), s.side, s.namespace.clone(), labels)
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The tracing service: see the [module](self) docs.
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Trace<S> {
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

/// Below the router, the routing decision for a sampled outbound span (its upstream cluster
/// and operation name), handed over by the route tap, and the response flags the layers
/// below set ([`mark_response_flags`](crate::telemetry::mark_response_flags)).
#[derive(Debug, Clone, Default)]
pub(crate) struct SpanRoute(Arc<SpanRouteState>);

#[derive(Debug, Default)]
struct SpanRouteState {
    route: OnceLock<RouteInfo>,
    flags: AtomicU16,
}

#[derive(Debug)]
struct RouteInfo {
    cluster: String,
    operation: String,
}

impl SpanRoute {
    pub(crate) fn record(&self, ctx: &RouteCtx) {
        let cluster = crate::access_log::upstream_cluster(ctx).into_owned();
        let operation = match &ctx.target {
            crate::route::Target::Destination(d) => {
                format!("{}:{}/*", d.host, d.port.unwrap_or(ctx.port))
            }
            crate::route::Target::Passthrough { authority } => format!("{authority}/*"),
        };
        let _ = self.0.route.set(RouteInfo { cluster, operation });
    }

    pub(crate) fn add_flags(&self, flags: ResponseFlags) {
        self.0.flags.fetch_or(flags.bits(), Ordering::Relaxed);
    }
}

fn random_trace_id() -> TraceId {
    TraceId::from(fastrand::u128(1..))
}

fn random_span_id() -> SpanId {
    SpanId::from(fastrand::u64(1..))
}

impl<S, B> Service<Request<B>> for Trace<S>
where
    S: Service<Request<B>, Response = Response<MeshBody>>,
{
    type Response = Response<MeshBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let shared = &self.shared;
        let extracted = propagation::extract(req.headers());
        let (parent, decided) = match extracted {
            Some(e) => (e.parent, e.sampled),
            None => (None, None),
        };
        let sampled = decided.unwrap_or_else(|| shared.tracing.sampling().hit(fastrand::f64()));
        let parent_id = parent.as_ref().map(SpanContext::span_id);
        if !sampled {
            // The decision travels on; nothing else is done.
            let sc = SpanContext::new(
                parent
                    .as_ref()
                    .map_or_else(random_trace_id, |p| p.trace_id()),
                random_span_id(),
                TraceFlags::NOT_SAMPLED,
                false,
                parent.map(|p| p.trace_state().clone()).unwrap_or_default(),
            );
            propagation::inject(req.headers_mut(), &sc, parent_id);
            return ResponseFuture {
                inner: self.inner.call(req),
                span: None,
            };
        }

        let parent_cx = match parent {
            Some(p) => OtelContext::new().with_remote_span_context(SpanContext::new(
                p.trace_id(),
                p.span_id(),
                TraceFlags::SAMPLED,
                true,
                p.trace_state().clone(),
            )),
            None => OtelContext::new(),
        };
        if !req.headers().contains_key(X_REQUEST_ID) {
            req.headers_mut().insert(X_REQUEST_ID, new_request_id());
        }
        let (operation, attributes) = start_attributes(&req, shared);
        let kind = match shared.side {
            Side::Outbound => SpanKind::Client,
            Side::Inbound => SpanKind::Server,
        };
        let builder = SpanBuilder::from_name(operation)
            .with_kind(kind)
            .with_attributes(attributes);
        let span = shared
            .tracing
            .tracer()
            .build_with_context(builder, &parent_cx);
        propagation::inject(req.headers_mut(), span.span_context(), parent_id);
        let route = (shared.side == Side::Outbound).then(|| {
            let route = SpanRoute::default();
            req.extensions_mut().insert(route.clone());
            route
        });
        ResponseFuture {
            inner: self.inner.call(req),
            span: Some(Box::new(Active {
                span,
                route,
                side: shared.side,
                flags: ResponseFlags::NONE,
                done: false,
            })),
        }
    }
}

/// The operation name (`host:port/*`, Istio's route decorator) and the attributes known when
/// the request starts.
fn start_attributes<B>(req: &Request<B>, shared: &Shared) -> (String, Vec<KeyValue>) {
    let headers = req.headers();
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(http::header::HOST)?.to_str().ok())
        .unwrap_or("");
    let (host, port) = split_authority(authority);
    let port = port.unwrap_or(match req.uri().scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    let mut attrs = Vec::with_capacity(shared.local.len() + 12);
    attrs.extend(shared.local.iter().cloned());
    attrs.push(KeyValue::new(
        "http.request.method",
        req.method().as_str().to_owned(),
    ));
    attrs.push(KeyValue::new("url.path", req.uri().path().to_owned()));
    if let Some(q) = req.uri().query() {
        attrs.push(KeyValue::new("url.query", q.to_owned()));
    }
    attrs.push(KeyValue::new("server.address", host.to_owned()));
    attrs.push(KeyValue::new("server.port", i64::from(port)));
    attrs.push(KeyValue::new(
        "network.protocol.version",
        protocol_version(req.version()),
    ));
    if let Some(ua) = header_str(headers, USER_AGENT.as_str()) {
        attrs.push(KeyValue::new("user_agent.original", ua.to_owned()));
    }
    if let Some(id) = header_str(headers, X_REQUEST_ID.as_str()) {
        attrs.push(KeyValue::new("guid:x-request-id", id.to_owned()));
    }
    let conn = req.extensions().get::<ConnectionInfo>();
    if let Some(peer) = conn.and_then(|c| c.peer_addr) {
        attrs.push(KeyValue::new("client.address", peer.ip().to_string()));
    }
    if shared.side == Side::Inbound {
        // Istio's inbound cluster: `inbound|PORT||`.
        attrs.push(KeyValue::new(
            "upstream_cluster",
            format!("inbound|{port}||"),
        ));
    }
    (format!("{host}:{port}/*"), attrs)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn protocol_version(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// A sampled request's span, until its response ends: ended once, when finished or dropped.
#[derive(Debug)]
struct Active {
    span: Span,
    route: Option<SpanRoute>,
    side: Side,
    flags: ResponseFlags,
    done: bool,
}

impl Active {
    fn head(&mut self, res: &Response<MeshBody>) {
        let status = res.status().as_u16();
        self.span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if let Some(code) = header_str(res.headers(), "x-mesh-error") {
            self.flags |= ResponseFlags::from_mesh_error(code);
        }
        self.trailers(res.headers());
        let error = match self.side {
            Side::Inbound => status >= 500,
            Side::Outbound => status >= 400,
        };
        if error {
            self.span.set_status(Status::error(status.to_string()));
        }
    }

    fn trailers(&mut self, headers: &HeaderMap) {
        if let Some(code) = header_str(headers, "grpc-status").and_then(|s| s.parse::<i64>().ok()) {
            self.span
                .set_attribute(KeyValue::new("rpc.grpc.status_code", code));
        }
    }

    fn fail(&mut self, flag: ResponseFlags, why: &'static str) {
        self.flags |= flag;
        self.span.set_status(Status::error(why));
    }

    /// Sets what only the end knows, then ends the span.
    fn finish(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if let Some(route) = &self.route {
            if let Some(info) = route.0.route.get() {
                self.span
                    .set_attribute(KeyValue::new("upstream_cluster", info.cluster.clone()));
                self.span.update_name(Cow::Owned(info.operation.clone()));
            }
            self.flags |= ResponseFlags::from_bits(route.0.flags.load(Ordering::Relaxed));
        }
        self.span
            .set_attribute(KeyValue::new("response_flags", self.flags.to_string()));
        self.span.end();
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if !self.done {
            // Dropped before the response ended: the downstream went away (Envoy's `DC`).
            self.fail(
                ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION,
                "downstream disconnected",
            );
            self.finish();
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future: the inner one's response; a sampled span ends with its body.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        span: Option<Box<Active>>,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("sampled", &self.span.is_some())
            .finish_non_exhaustive()
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
        let Some(mut active) = this.span.take() else {
            return Poll::Ready(result);
        };
        let res = match result {
            Ok(res) => res,
            Err(e) => {
                active.fail(ResponseFlags::NONE, "no response");
                active.finish();
                return Poll::Ready(Err(e));
            }
        };
        active.head(&res);
        if res.body().is_end_stream() {
            active.finish();
            return Poll::Ready(Ok(res));
        }
        Poll::Ready(Ok(res.map(|inner| {
            MeshBody::new(SpanBody {
                inner,
                active: Some(active),
            })
        })))
    }
}

/// A response body that ends its span when it ends, fails or is dropped.
struct SpanBody {
    inner: MeshBody,
    active: Option<Box<Active>>,
}

impl Body for SpanBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        let end = self.inner.is_end_stream();
        if let Some(active) = self.active.as_mut() {
            match &frame {
                Some(Ok(f)) => {
                    if let Some(t) = f.trailers_ref() {
                        active.trailers(t);
                    }
                }
                Some(Err(_)) => {
                    active.fail(ResponseFlags::UPSTREAM_REMOTE_RESET, "response body failed")
                }
                None => {}
            }
            if end || !matches!(frame, Some(Ok(_))) {
                active.finish();
                self.active = None;
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

impl Drop for SpanBody {
    fn drop(&mut self) {
        // A body at its end but not polled past it (hyper stops at `is_end_stream`) is
        // complete; any other is cut short (`DC`, from `Active`'s drop).
        if self.inner.is_end_stream()
            && let Some(active) = self.active.as_mut()
        {
            active.finish();
        }
    }
}

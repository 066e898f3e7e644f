//! Traffic mirroring: the route's
//! [`mirror`/`mirrors`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPMirrorPolicy)
//! with their percentages, as Envoy's request mirror policies send them.
//!
//! For each mirror whose percentage hits (one independent draw per mirror; Istio: "If this
//! field is absent, all the traffic (100%) will be mirrored"), a copy of the request goes to the
//! mirror destination:
//! - its Host/authority is suffixed `-shadow` before the port, as Envoy does
//!   (`reviews:9080` becomes `reviews-shadow:9080`);
//! - it is fire and forget: Envoy "will not wait for the shadow cluster to respond before
//!   returning the response from the primary cluster". The copy runs on its own task, its
//!   response is discarded, and its failure or hang never touches the main request. When the
//!   route has a `timeout`, the copy is bounded by it too (Envoy gives shadows the route's
//!   timeout); otherwise it lives until its upstream answers or fails;
//! - it goes through the inner service with [`RouteCtx::direct`] to the mirror destination, so
//!   no route policy (fault, timeout, retries) applies to it.
//!
//! The main body streams to the upstream unbuffered. A copy of it (cheap `Bytes` clones) is
//! kept up to a cap ([`MirrorLayer::body_cap`], 64 KiB by default); the mirrors are sent when the
//! main body has ended. A body over the cap (by its size hint, or as it streams) is not mirrored:
//! such skips are counted ([`MirrorLayer::skipped_bodies`]) and logged. A main body that fails
//! or is dropped before its end is not mirrored either.
//!
//! In the stack this layer sits right below CORS and above fault injection, so a request the
//! fault layer aborts is still mirrored (and a delayed one is mirrored at once). Envoy mirrors in
//! its router, after the fault filter, and would not mirror an aborted request.
//!
//! ```
//! use tower::ServiceBuilder;
//! # let leaf = tower::service_fn(|_req: http::Request<mesh_tower::body::MeshBody>| async {
//! #     Ok::<_, mesh_tower::body::BoxError>(http::Response::new(mesh_tower::body::empty()))
//! # });
//! let svc = ServiceBuilder::new()
//!     .layer(mesh_tower::mirror::MirrorLayer::new().body_cap(16 * 1024))
//!     .service(leaf);
//! # let _ = svc;
//! ```

mod tee;
#[cfg(test)]
mod tests;

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, header::HOST};
use http_body::Body;
use tokio::sync::oneshot;
use tower::{Layer, Service, ServiceExt};

use tee::{ReplayBody, TeeBody};

use crate::{
    body::{self, BoxError, MeshBody},
    route::{RouteCtx, Target, authority_of, with_authority},
};

/// The default cap on the request body kept for mirrors.
pub const DEFAULT_BODY_CAP: usize = 64 * 1024;

/// Builds [`Mirror`] services. The mirrors are read per request from the [`RouteCtx`].
#[derive(Debug, Clone)]
pub struct MirrorLayer {
    body_cap: usize,
    skipped: Arc<AtomicU64>,
}

impl Default for MirrorLayer {
    fn default() -> Self {
        MirrorLayer {
            body_cap: DEFAULT_BODY_CAP,
            skipped: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl MirrorLayer {
    pub fn new() -> Self {
        MirrorLayer::default()
    }

    /// The largest request body that is mirrored, in bytes.
    #[must_use]
    pub fn body_cap(mut self, bytes: usize) -> Self {
        self.body_cap = bytes;
        self
    }

    /// How many requests were not mirrored because their body was over the cap (shared by
    /// every service this layer built).
    pub fn skipped_bodies(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }
}

impl<S> Layer<S> for MirrorLayer {
    type Service = Mirror<S>;

    fn layer(&self, inner: S) -> Mirror<S> {
        Mirror {
            inner,
            body_cap: self.body_cap,
            skipped: self.skipped.clone(),
        }
    }
}

/// Sends shadow copies of routed requests to the route's mirrors.
#[derive(Debug, Clone)]
pub struct Mirror<S> {
    inner: S,
    body_cap: usize,
    skipped: Arc<AtomicU64>,
}

impl<S> Mirror<S> {
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

/// Envoy's shadow host: `-shadow` appended to the host, before the port.
pub fn shadow_authority(authority: &str) -> String {
    // A port follows the last ':' unless that colon is inside an IPv6 literal.
    match authority.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.starts_with('[') || host.ends_with(']')) =>
        {
            format!("{host}-shadow:{port}")
        }
        _ => format!("{authority}-shadow"),
    }
}

/// Everything a shadow copy needs but its body.
#[derive(Debug)]
struct Shadow {
    parts: http::request::Parts,
    ctxs: Vec<RouteCtx>,
    timeout: Option<Duration>,
}

/// The body of the main request as the mirrors will replay it.
#[derive(Debug)]
struct Captured {
    chunks: Vec<Bytes>,
    trailers: Option<HeaderMap>,
}

impl<S> Mirror<S> {
    /// The shadow copy of `req` for the mirrors that hit, if any.
    fn shadow(req: &Request<MeshBody>) -> Option<Shadow> {
        let ctx = req.extensions().get::<RouteCtx>()?;
        let route = ctx.route()?;
        if route.mirrors.is_empty() || is_upgrade(req) {
            return None;
        }
        let ctxs: Vec<RouteCtx> = route
            .mirrors
            .iter()
            .filter(|m| m.percentage.hit(fastrand::f64()))
            .map(|m| {
                let mut direct = RouteCtx::direct(
                    ctx.snapshot.clone(),
                    Target::Destination(m.destination.clone()),
                    ctx.client.clone(),
                    ctx.port,
                );
                direct.grpc = ctx.grpc;
                direct
            })
            .collect();
        if ctxs.is_empty() {
            return None;
        }
        let authority = shadow_authority(&authority_of(req)?);
        let mut headers = req.headers().clone();
        headers.insert(HOST, HeaderValue::from_str(&authority).ok()?);
        let uri = with_authority(req.uri(), &authority).ok()?;
        let parts = bare_parts(req.method(), uri, req.version(), headers);
        Some(Shadow {
            parts,
            ctxs,
            timeout: route.timeout,
        })
    }
}

/// A request that asks to switch protocols (WebSocket, `CONNECT`): not mirrored. A copy would
/// open a second upgraded connection that nobody reads, and Envoy's router shadows only
/// plain HTTP requests.
fn is_upgrade(req: &Request<MeshBody>) -> bool {
    req.method() == http::Method::CONNECT || req.headers().contains_key(http::header::UPGRADE)
}

impl<S> Service<Request<MeshBody>> for Mirror<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<MeshBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<MeshBody>) -> Self::Future {
        let req = match Self::shadow(&req) {
            Some(shadow) => self.start(shadow, req),
            None => req,
        };
        ResponseFuture {
            inner: self.inner.call(req),
        }
    }
}

impl<S> Mirror<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    /// Starts the shadow task for `req`; returns the main request (its body teed).
    fn start(&self, shadow: Shadow, req: Request<MeshBody>) -> Request<MeshBody> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!("no tokio runtime: request not mirrored");
            return req;
        };
        let inner = self.inner.clone();
        if req.body().is_end_stream() {
            let captured = Captured {
                chunks: Vec::new(),
                trailers: None,
            };
            let _enter = runtime.enter();
            send_shadows(inner, shadow, captured);
            return req;
        }
        let over_cap = req
            .body()
            .size_hint()
            .lower()
            .try_into()
            .map_or(true, |n: usize| n > self.body_cap);
        if over_cap {
            count_skip(&self.skipped, self.body_cap);
            return req;
        }
        let (tx, rx) = oneshot::channel::<Captured>();
        let skipped = self.skipped.clone();
        let cap = self.body_cap;
        runtime.spawn(async move {
            // Err: the main body failed, was dropped early, or went over the cap.
            if let Ok(captured) = rx.await {
                send_shadows(inner, shadow, captured);
            }
        });
        req.map(|b| body::boxed(TeeBody::new(b, cap, tx, skipped)))
    }
}

fn count_skip(skipped: &AtomicU64, cap: usize) {
    let n = skipped.fetch_add(1, Ordering::Relaxed) + 1;
    // Counted always, logged at 1, 2, 4, 8, ... skips: visible without flooding the log.
    if n.is_power_of_two() {
        tracing::info!(
            cap,
            skipped_total = n,
            "request not mirrored: its body is over the mirror cap"
        );
    }
}

/// Sends one copy per mirror, each on its own task, and forgets them.
fn send_shadows<S>(inner: S, shadow: Shadow, captured: Captured)
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let Shadow {
        parts,
        ctxs,
        timeout,
    } = shadow;
    for ctx in ctxs {
        let mut req = Request::from_parts(
            bare_parts(
                &parts.method,
                parts.uri.clone(),
                parts.version,
                parts.headers.clone(),
            ),
            body::boxed(ReplayBody::new(
                captured.chunks.clone(),
                captured.trailers.clone(),
            )),
        );
        let target = match &ctx.target {
            Target::Destination(d) => d.to_string(),
            Target::Passthrough { authority } => authority.clone(),
        };
        req.extensions_mut().insert(ctx);
        // Boxed before the task: the task then names no associated type of `S` (rustc cannot
        // yet prove such futures `Send` for every lifetime inside an async block).
        let sent: Pin<Box<dyn Future<Output = Result<Response<MeshBody>, BoxError>> + Send>> =
            Box::pin(inner.clone().oneshot(req));
        tokio::spawn(async move {
            let result = match timeout {
                Some(t) => match tokio::time::timeout(t, sent).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("mirror timed out after {t:?}").into()),
                },
                None => sent.await,
            };
            match result {
                // Discarded: dropping the response releases its body.
                Ok(res) => tracing::trace!(%target, status = %res.status(), "mirror answered"),
                Err(e) => tracing::debug!(%target, error = %e, "mirror failed"),
            }
        });
    }
}

/// Request parts without extensions (a shadow gets its own RouteCtx).
fn bare_parts(
    method: &http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: HeaderMap,
) -> http::request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method.clone();
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    parts
}

pin_project_lite::pin_project! {
    /// The mirror layer's response: the main request's, untouched.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<MeshBody>, BoxError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

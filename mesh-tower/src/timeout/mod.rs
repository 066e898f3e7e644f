//! The route's [`timeout`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPRoute-timeout):
//! the whole request, retries included, must be answered within it, else
//! [`MeshError::Timeout`] (504, `x-mesh-error: upstream-timeout`).
//!
//! The span is Envoy's route timeout: it "spans between the point at which the entire
//! downstream request (i.e. end-of-stream) has been processed and when the upstream response has
//! been completely processed". So:
//! - the clock starts when the request body ends (at once for a request without a body; when
//!   the body is dropped unfinished, at that point);
//! - it bounds the response body as well as the head: a response whose head arrived in time but
//!   whose body is still streaming at the deadline ends with a [`MeshError::Timeout`] body error
//!   (the client sees the stream reset, as with Envoy once headers are sent).
//!
//! There is no timeout when the route has none: Istio's default is disabled ("By default, the
//! request timeout is disabled"). An application can set one per request with the
//! `x-envoy-upstream-rq-timeout-ms` header, which Istio documents for outbound requests ("they
//! can also be overridden on a per-request basis if the application adds an
//! x-envoy-upstream-rq-timeout-ms header on outbound requests"): a valid value (milliseconds)
//! replaces the route's timeout, `0` disables it, an invalid one is ignored, and the header is
//! not forwarded (Envoy's router consumes it). It is honoured on every routed request (any
//! [`RouteCtx`]), Istio's default route included, as Envoy's router reads it for every route.
//!
//! Placed above the retry layer, the deadline covers every attempt; the fault layer's delay sits
//! above it and is not counted (Envoy's fault filter runs before the router starts its timer).
//!
//! ```
//! use tower::ServiceBuilder;
//! # let leaf = tower::service_fn(|_req: http::Request<mesh_tower::body::MeshBody>| async {
//! #     Ok::<_, mesh_tower::body::BoxError>(http::Response::new(mesh_tower::body::empty()))
//! # });
//! let svc = ServiceBuilder::new()
//!     .layer(mesh_tower::timeout::TimeoutLayer::new())
//!     .service(leaf);
//! # let _ = svc;
//! ```

#[cfg(test)]
mod tests;

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderName, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::{sync::oneshot, time::Sleep};
use tower::{Layer, Service};

use crate::{
    body::{self, BoxError, MeshBody},
    error::MeshError,
    route::RouteCtx,
};

/// The per-request override Envoy's router honours.
pub const UPSTREAM_RQ_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-upstream-rq-timeout-ms");

/// Builds [`Timeout`] services. The timeout is read per request from the [`RouteCtx`].
#[derive(Debug, Clone, Default)]
pub struct TimeoutLayer {
    _priv: (),
}

impl TimeoutLayer {
    pub fn new() -> Self {
        TimeoutLayer::default()
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout { inner }
    }
}

/// Bounds each request by its route's timeout.
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
}

impl<S> Timeout<S> {
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

/// The timeout for `req`: the header's override, else the route's. Removes the header.
fn timeout_for(req: &mut Request<MeshBody>) -> Option<Duration> {
    let ctx = req.extensions().get::<RouteCtx>()?;
    let route = ctx.route().and_then(|r| r.timeout);
    let header = req
        .headers_mut()
        .remove(UPSTREAM_RQ_TIMEOUT_MS)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    match header {
        Some(0) => None,
        Some(ms) => Some(Duration::from_millis(ms)),
        None => route,
    }
}

impl<S> Service<Request<MeshBody>> for Timeout<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>,
{
    type Response = Response<MeshBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<MeshBody>) -> Self::Future {
        let timeout = if req.extensions().get::<RouteCtx>().is_some() {
            timeout_for(&mut req)
        } else {
            None
        };
        let deadline = match timeout {
            None => None,
            Some(timeout) if req.body().is_end_stream() => Some(Deadline::started(timeout)),
            Some(timeout) => {
                let (tx, rx) = oneshot::channel();
                req = req.map(|b| body::boxed(EndOfStream::new(b, tx)));
                Some(Deadline {
                    timeout,
                    state: DeadlineState::AwaitingRequestEnd(rx),
                })
            }
        };
        ResponseFuture {
            fut: self.inner.call(req),
            deadline,
        }
    }
}

// === impl Deadline ===

/// A route deadline: waiting for the request to end, then running.
#[derive(Debug)]
struct Deadline {
    timeout: Duration,
    state: DeadlineState,
}

#[derive(Debug)]
enum DeadlineState {
    /// The clock starts when the request body ends (or is dropped): the receiver resolves.
    AwaitingRequestEnd(oneshot::Receiver<()>),
    Running(Pin<Box<Sleep>>),
}

impl Deadline {
    fn started(timeout: Duration) -> Self {
        Deadline {
            timeout,
            state: DeadlineState::Running(Box::pin(tokio::time::sleep(timeout))),
        }
    }

    /// Ready when the deadline has passed.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let DeadlineState::AwaitingRequestEnd(rx) = &mut self.state {
            // Sent or dropped: either way the request body is done with.
            let _ = ready!(Pin::new(rx).poll(cx));
            self.state = DeadlineState::Running(Box::pin(tokio::time::sleep(self.timeout)));
        }
        match &mut self.state {
            DeadlineState::Running(sleep) => sleep.as_mut().poll(cx),
            DeadlineState::AwaitingRequestEnd(_) => Poll::Pending,
        }
    }

    fn error(&self) -> BoxError {
        MeshError::Timeout(self.timeout).into()
    }
}

pin_project_lite::pin_project! {
    /// The timeout layer's response: the inner response, with its body bounded by the same
    /// deadline, or [`MeshError::Timeout`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        fut: F,
        deadline: Option<Deadline>,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<MeshBody>, BoxError>>,
{
    type Output = Result<Response<MeshBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.fut.poll(cx) {
            let res = result?;
            return Poll::Ready(Ok(match this.deadline.take() {
                Some(deadline) if !res.body().is_end_stream() => {
                    res.map(|b| body::boxed(TimeoutBody { inner: b, deadline }))
                }
                _ => res,
            }));
        }
        match this.deadline {
            Some(deadline) => {
                ready!(deadline.poll_expired(cx));
                tracing::debug!(timeout = ?deadline.timeout, "route timeout");
                Poll::Ready(Err(deadline.error()))
            }
            None => Poll::Pending,
        }
    }
}

// === bodies ===

pin_project_lite::pin_project! {
    /// A request body that signals its end (or its drop: the sender goes with it).
    #[derive(Debug)]
    struct EndOfStream<B> {
        #[pin]
        inner: B,
        tx: Option<oneshot::Sender<()>>,
    }
}

impl<B> EndOfStream<B> {
    fn new(inner: B, tx: oneshot::Sender<()>) -> Self {
        EndOfStream {
            inner,
            tx: Some(tx),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for EndOfStream<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let frame = ready!(inner.as_mut().poll_frame(cx));
        if (frame.is_none() || inner.is_end_stream())
            && let Some(tx) = this.tx.take()
        {
            let _ = tx.send(());
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

pin_project_lite::pin_project! {
    /// A response body bounded by the route deadline.
    #[derive(Debug)]
    struct TimeoutBody<B> {
        #[pin]
        inner: B,
        deadline: Deadline,
    }
}

impl<B> Body for TimeoutBody<B>
where
    B: Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame);
        }
        ready!(this.deadline.poll_expired(cx));
        tracing::debug!(timeout = ?this.deadline.timeout, "route timeout while streaming the response");
        Poll::Ready(Some(Err(this.deadline.error())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

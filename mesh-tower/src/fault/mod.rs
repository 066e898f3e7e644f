//! Fault injection: the route's
//! [`fault`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPFaultInjection),
//! as Envoy's fault filter applies it.
//!
//! For each request the layer decides, from the route's percentages:
//! - **delay** (`fixedDelay`, for `percentage` of requests): wait before forwarding;
//! - **abort** (`httpStatus` or `grpcStatus`, for `percentage` of requests): answer
//!   [`MeshError::FaultAbort`] instead of forwarding (after the delay, when both hit).
//!
//! The two decisions are independent draws, as Istio documents: "delay and abort faults are
//! independent of one another, even if both are specified simultaneously". Fractions are
//! honoured (`percentage: {value: 0.1}` is one request in a thousand).
//!
//! An abort with `grpcStatus` is Envoy's: HTTP status 200 and, for a gRPC request, a
//! trailers-only response with that `grpc-status`. Envoy's fault filter answers such an abort
//! with `Http::Code::OK` plus the gRPC status, and a local reply to a request that is not gRPC
//! carries only the HTTP status: so a plain HTTP client sees 200 with the body
//! `fault filter abort` (and `x-mesh-error: fault-abort`). An `httpStatus` abort of a gRPC
//! request is mapped to a gRPC status by [`MeshError::to_response`], as Envoy maps local
//! replies.
//!
//! Envoy's response flags follow: a delayed request is flagged `DI` (in Istio's metrics, the
//! access log and the span), an aborted one `FI`, both `DI,FI`.
//!
//! A request whose [`RouteCtx`] has no route (Istio's default route, a mirror copy) or whose
//! route has no `fault` passes through untouched.
//!
//! ```
//! use tower::ServiceBuilder;
//! # let leaf = tower::service_fn(|_req: http::Request<mesh_tower::body::MeshBody>| async {
//! #     Ok::<_, mesh_tower::body::BoxError>(http::Response::new(mesh_tower::body::empty()))
//! # });
//! let svc = ServiceBuilder::new()
//!     .layer(mesh_tower::fault::FaultLayer::new())
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

use http::{Request, Response, StatusCode};
use mesh_core::model::{AbortStatus, Fault as FaultPolicy};
use tokio::time::Sleep;
use tower::{Layer, Service};

use crate::{
    body::{BoxError, MeshBody},
    error::MeshError,
    route::RouteCtx,
    telemetry::ResponseFlags,
};

/// What the fault policy injects into one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Injection {
    /// Wait this long before forwarding (or aborting).
    pub delay: Option<Duration>,
    /// Answer with this abort instead of forwarding.
    pub abort: Option<AbortStatus>,
}

impl Injection {
    /// The decision for one request, from two independent uniform draws in `[0, 1)`: pure, so
    /// the percentages can be tested without a runtime.
    pub fn decide(policy: &FaultPolicy, delay_draw: f64, abort_draw: f64) -> Injection {
        Injection {
            delay: policy
                .delay
                .as_ref()
                .filter(|d| d.percentage.hit(delay_draw))
                .map(|d| d.delay),
            abort: policy
                .abort
                .as_ref()
                .filter(|a| a.percentage.hit(abort_draw))
                .map(|a| a.status),
        }
    }

    fn is_none(&self) -> bool {
        self.delay.is_none() && self.abort.is_none()
    }
}

/// The error an abort answers with.
fn abort_error(status: AbortStatus) -> BoxError {
    match status {
        AbortStatus::Http(status) => MeshError::FaultAbort {
            status,
            grpc_status: None,
        },
        // Envoy: a gRPC abort is HTTP 200 with the gRPC status.
        AbortStatus::Grpc(code) => MeshError::FaultAbort {
            status: StatusCode::OK,
            grpc_status: Some(code),
        },
    }
    .into()
}

/// Builds [`Fault`] services. The policy is read per request from the [`RouteCtx`].
#[derive(Debug, Clone, Default)]
pub struct FaultLayer {
    _priv: (),
}

impl FaultLayer {
    pub fn new() -> Self {
        FaultLayer::default()
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = Fault<S>;

    fn layer(&self, inner: S) -> Fault<S> {
        Fault { inner }
    }
}

/// Injects the route's delays and aborts.
#[derive(Debug, Clone)]
pub struct Fault<S> {
    inner: S,
}

impl<S> Fault<S> {
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

impl<S> Service<Request<MeshBody>> for Fault<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError> + Clone,
{
    type Response = Response<MeshBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<MeshBody>) -> Self::Future {
        let injection = req
            .extensions()
            .get::<RouteCtx>()
            .and_then(RouteCtx::route)
            .and_then(|r| r.fault.as_ref())
            .map(|f| Injection::decide(f, fastrand::f64(), fastrand::f64()))
            .unwrap_or_default();
        if injection.is_none() {
            return ResponseFuture {
                state: State::Called {
                    fut: self.inner.call(req),
                },
            };
        }
        tracing::debug!(?injection, "fault injected");
        let state = match injection.delay {
            Some(delay) => {
                // Envoy flags `DI` when the delay starts (a client gone mid-delay is `DI,DC`);
                // an abort after it adds `FI` from the reply.
                crate::telemetry::mark_response_flags(
                    req.extensions(),
                    ResponseFlags::DELAY_INJECTED,
                );
                // The readied service goes with the request; a clone takes its place here
                // (tower's pattern for calling later than `call`).
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                State::Delayed {
                    sleep: tokio::time::sleep(delay),
                    then: Some(Then {
                        inner: ready,
                        req,
                        abort: injection.abort,
                    }),
                }
            }
            None => State::Aborted {
                abort: injection.abort,
            },
        };
        ResponseFuture { state }
    }
}

/// What a delayed request does when its delay ends.
#[derive(Debug)]
struct Then<S> {
    inner: S,
    req: Request<MeshBody>,
    abort: Option<AbortStatus>,
}

pin_project_lite::pin_project! {
    /// The fault layer's response: the inner response, possibly after a delay, or the abort.
    pub struct ResponseFuture<S: Service<Request<MeshBody>>> {
        #[pin]
        state: State<S>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<S: Service<Request<MeshBody>>> {
        Delayed { #[pin] sleep: Sleep, then: Option<Then<S>> },
        Aborted { abort: Option<AbortStatus> },
        Called { #[pin] fut: S::Future },
    }
}

impl<S> std::fmt::Debug for ResponseFuture<S>
where
    S: Service<Request<MeshBody>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("fault::ResponseFuture")
            .finish_non_exhaustive()
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>,
{
    type Output = Result<Response<MeshBody>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Called { fut } => return fut.poll(cx),
                StateProj::Aborted { abort } => {
                    let abort = abort.take().expect("polled after completion");
                    return Poll::Ready(Err(abort_error(abort)));
                }
                StateProj::Delayed { sleep, then } => {
                    ready!(sleep.poll(cx));
                    let Then {
                        mut inner,
                        req,
                        abort,
                    } = then.take().expect("polled after completion");
                    match abort {
                        Some(abort) => State::Aborted { abort: Some(abort) },
                        None => State::Called {
                            fut: inner.call(req),
                        },
                    }
                }
            };
            self.as_mut().project().state.set(next);
        }
    }
}

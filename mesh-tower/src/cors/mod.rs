//! CORS: the route's
//! [`corsPolicy`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#CorsPolicy),
//! with the semantics of Envoy's CORS filter.
//!
//! Only requests with a non-empty `Origin` are CORS requests; the origin is allowed when one of
//! `allowOrigins` matches it (or matches `*`, as Envoy checks, so `exact: "*"` allows all).
//! - A **preflight** (`OPTIONS` with `Origin` and a non-empty `Access-Control-Request-Method`)
//!   from an allowed origin is answered here, 200, with `access-control-allow-origin` (the
//!   request's origin), `-allow-credentials: true` when `allowCredentials`, `-allow-methods`,
//!   `-allow-headers` (a lone `*` echoes the request's `access-control-request-method` /
//!   `-headers`, as Envoy does) and `-max-age` (seconds). Envoy: "Any legal OPTIONS requests
//!   will be responded directly by the filter and will not be passed to the next filter".
//! - A preflight from an origin that is not allowed is forwarded upstream under
//!   `unmatchedPreflights: FORWARD` (the default; Istio: "Preflight requests not matching the
//!   configured allowed origin will be forwarded to the upstream"). Under `IGNORE` ("will not be
//!   forwarded to the upstream") it is answered here with 200 and no
//!   `access-control-allow-origin`, so the browser refuses the cross-origin call. The other
//!   `access-control-*` headers are those of an allowed preflight, as Envoy's filter sends them
//!   (they grant nothing without the origin header).
//! - Any other request from an allowed origin goes upstream and its response gets
//!   `access-control-allow-origin`, `-allow-credentials` and `-expose-headers`; from an origin
//!   that is not allowed, the response is untouched.
//!
//! Lists are joined with `,` as Istio hands them to Envoy. A request whose [`RouteCtx`] has no
//! route, or whose route has no `corsPolicy`, passes through untouched.
//!
//! ```
//! use tower::ServiceBuilder;
//! # let leaf = tower::service_fn(|_req: http::Request<mesh_tower::body::MeshBody>| async {
//! #     Ok::<_, mesh_tower::body::BoxError>(http::Response::new(mesh_tower::body::empty()))
//! # });
//! let svc = ServiceBuilder::new()
//!     .layer(mesh_tower::cors::CorsLayer::new())
//!     .service(leaf);
//! # let _ = svc;
//! ```

#[cfg(test)]
mod tests;

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{
    HeaderMap, HeaderValue, Method, Request, Response, StatusCode,
    header::{
        ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
        ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS,
        ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD,
        ORIGIN,
    },
};
use mesh_core::model::CorsPolicy;
use tower::{Layer, Service};

use crate::{
    body::{self, BoxError, MeshBody},
    route::RouteCtx,
};

/// Builds [`Cors`] services. The policy is read per request from the [`RouteCtx`].
#[derive(Debug, Clone, Default)]
pub struct CorsLayer {
    _priv: (),
}

impl CorsLayer {
    pub fn new() -> Self {
        CorsLayer::default()
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Cors<S> {
        Cors { inner }
    }
}

/// Answers CORS preflights and decorates CORS responses.
#[derive(Debug, Clone)]
pub struct Cors<S> {
    inner: S,
}

impl<S> Cors<S> {
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

/// What the policy does with one request.
#[derive(Debug)]
enum Decision {
    /// Not a CORS request, or one from an origin that is not allowed: untouched.
    Pass,
    /// A preflight answered here.
    Preflight(Response<MeshBody>),
    /// An allowed CORS request: these headers go on the response.
    Decorate(HeaderMap),
}

/// Whether `policy` allows `origin` (Envoy also accepts a matcher that matches `*`).
pub fn origin_allowed(policy: &CorsPolicy, origin: &str) -> bool {
    policy
        .allow_origins
        .iter()
        .any(|m| m.matches("*") || m.matches(origin))
}

fn joined(values: &[String]) -> Option<HeaderValue> {
    if values.is_empty() {
        return None;
    }
    HeaderValue::from_str(&values.join(",")).ok()
}

/// The list's header, or the request's own header when the list is a lone `*`.
fn list_or_echo(values: &[String], req: &HeaderMap, echo: http::HeaderName) -> Option<HeaderValue> {
    if values.len() == 1 && values[0] == "*" {
        return req.get(echo).cloned();
    }
    joined(values)
}

fn decide(policy: &CorsPolicy, headers: &HeaderMap, method: &Method) -> Decision {
    let Some(origin) = headers.get(ORIGIN).filter(|o| !o.is_empty()) else {
        return Decision::Pass;
    };
    let allowed = origin
        .to_str()
        .is_ok_and(|origin| origin_allowed(policy, origin));
    let preflight = method == Method::OPTIONS
        && headers
            .get(ACCESS_CONTROL_REQUEST_METHOD)
            .is_some_and(|m| !m.is_empty());
    if !preflight {
        if !allowed {
            return Decision::Pass;
        }
        let mut add = HeaderMap::new();
        add.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if policy.allow_credentials == Some(true) {
            add.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(v) = joined(&policy.expose_headers) {
            add.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
        return Decision::Decorate(add);
    }
    if !allowed && policy.unmatched_preflights_forward {
        return Decision::Pass;
    }
    let mut res = Response::new(body::empty());
    *res.status_mut() = StatusCode::OK;
    let out = res.headers_mut();
    if allowed {
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    if policy.allow_credentials == Some(true) {
        out.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Some(v) = list_or_echo(
        &policy.allow_methods,
        headers,
        ACCESS_CONTROL_REQUEST_METHOD,
    ) {
        out.insert(ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    if let Some(v) = list_or_echo(
        &policy.allow_headers,
        headers,
        ACCESS_CONTROL_REQUEST_HEADERS,
    ) {
        out.insert(ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    if let Some(max_age) = policy.max_age {
        out.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from(max_age.as_secs()));
    }
    Decision::Preflight(res)
}

impl<S> Service<Request<MeshBody>> for Cors<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>,
{
    type Response = Response<MeshBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<MeshBody>) -> Self::Future {
        let decision = req
            .extensions()
            .get::<RouteCtx>()
            .and_then(RouteCtx::route)
            .and_then(|r| r.cors.as_ref())
            .map_or(Decision::Pass, |policy| {
                decide(policy, req.headers(), req.method())
            });
        let state = match decision {
            Decision::Preflight(res) => State::Answered { res: Some(res) },
            Decision::Pass => State::Called {
                fut: self.inner.call(req),
                add: None,
            },
            Decision::Decorate(add) => State::Called {
                fut: self.inner.call(req),
                add: Some(add),
            },
        };
        ResponseFuture { state }
    }
}

pin_project_lite::pin_project! {
    /// The CORS layer's response: a preflight answer, or the inner response (with the CORS
    /// headers of an allowed origin).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        Answered { res: Option<Response<MeshBody>> },
        Called { #[pin] fut: F, add: Option<HeaderMap> },
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<MeshBody>, BoxError>>,
{
    type Output = Result<Response<MeshBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Answered { res } => {
                Poll::Ready(Ok(res.take().expect("polled after completion")))
            }
            StateProj::Called { fut, add } => {
                let mut res = ready!(fut.poll(cx))?;
                if let Some(add) = add.take() {
                    for (name, value) in add.iter() {
                        res.headers_mut().insert(name.clone(), value.clone());
                    }
                }
                Poll::Ready(Ok(res))
            }
        }
    }
}

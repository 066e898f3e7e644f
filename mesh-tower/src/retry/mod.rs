//! Retries, as Istio configures Envoy's router: the VirtualService route's
//! [`retries`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPRetry)
//! (`attempts`, `perTryTimeout`, `retryOn`), Envoy's jittered back-off between attempts, and
//! Envoy's retry budget.
//!
//! For each request whose [`RouteCtx`] has a VirtualService route, [`Retry`] applies that
//! route's `retries`: the policy the user wrote, or Istio's default when the route has no
//! `retries` field (compiled by mesh-config as [`RetryPolicy::istio_default`]: 2 retries on
//! `connect-failure`, `refused-stream`, `unavailable`, `cancelled`, so a plain 503 answer is
//! *not* retried). Istio's default route (a registry service without a VirtualService) gets the
//! default policy too; a request without a route otherwise (a [`RouteCtx::direct`] one: mirrored
//! copies) is sent once. Then:
//!
//! 1. Before the first attempt one [`TriedEndpoints`] goes into the request's extensions; every
//!    attempt is a clone of the request (method, URI, headers, extensions, so the `RouteCtx` and
//!    that one `TriedEndpoints` too) and the upstream prefers endpoints no earlier attempt used.
//!    The `n`-th retry also carries [`RetryAttempt`]`(n)`, which the upstream counts against
//!    the destination's `connectionPool.http.maxRetries`.
//! 2. Each attempt has the route's per-try timeout; when it fires, the attempt's outcome is
//!    [`AttemptOutcome::PerTryTimeout`], and if it was the last attempt the request fails with
//!    [`MeshError::Timeout`] (504 `upstream request timeout`). The attempt carries its
//!    deadline as an [`AttemptDeadline`] (the earlier of the per-try one and any the route
//!    timeout set) so that outlier detection can count the timeout against the endpoint.
//! 3. The outcome is classified (see below) and mesh-core's [`RetryConditions::should_retry`]
//!    decides. A retry also needs retries left (`attempts` counts retries: at most
//!    `1 + attempts` tries), a body that can be replayed ([`replay`]) and room in the retry
//!    budget; then the discarded response is read while the back-off runs (up to 64 KiB: its
//!    connection goes back to the pool) and kept until the retry is admitted.
//! 4. The final attempt's response, or error, is returned as it is. When the upstream refuses
//!    a retry with [`RetryOverflow`] (`maxRetries` reached) the retrying stops and the previous
//!    attempt's outcome is returned, as Envoy does on `upstream_rq_retry_overflow`; if that
//!    response was too large to keep, the overflow (503) is.
//!
//! How attempt failures are classified (the upstream wraps every client error in
//! [`MeshError::UpstreamConnect`]; its source tells the cases apart):
//!
//! | the attempt | outcome |
//! |---|---|
//! | response headers | `Response` with the status, and `grpc-status` / `x-envoy-ratelimited` of the headers ([`ResponseInfo::from_headers`]) |
//! | the connection could not be made (hyper-util says `is_connect`, or `ECONNREFUSED`), or an `UpstreamConnect` without a client error inside | `ConnectFailure` |
//! | an HTTP/2 `REFUSED_STREAM` reset from the upstream | `RefusedStream` |
//! | any other client or transport error after the connection was made | `Reset`, `request_sent` when the attempt's body had been read to its end |
//! | the per-try timeout fired | `PerTryTimeout` |
//! | `NoHealthyUpstream`, `Overflow`, or any other `MeshError` | never retried |
//!
//! The semantics, and the sentences of Envoy's and Istio's documentation (and code) they rest on:
//! - *Counting.* Istio: "The maximum possible number of requests made will be 1 + attempts",
//!   and "If 0, retries will be disabled". With `attempts: 0` the request is sent once,
//!   unchanged (its body is not wrapped).
//! - *The default route.* Istio's `BuildDefaultHTTPOutboundRoute` "builds a default outbound
//!   route, including a retry policy" (`retry.DefaultPolicy()`), so a service without a
//!   VirtualService is retried too: the router marks that route
//!   ([`RouteCtx::is_default_route`]) and it gets `RetryPolicy::istio_default()`. A mirrored
//!   copy is not retried (Envoy sends shadows with no retry policy), and the catch-all
//!   passthrough route of ALLOW_ANY has no retry policy in Istio either: a
//!   [`Target::Passthrough`] request is never retried.
//! - *Per-try timeout.* Istio's `perTryTimeout`: "Timeout per attempt for a given request,
//!   including the initial call and any retries"; Envoy answers a request whose last attempt
//!   timed out with 504. The timer covers an attempt up to its response headers: once headers
//!   are passed on a retry is impossible anyway, and the route's `timeout` (a layer above)
//!   bounds the whole request, retries included ("The route timeout ... includes all retries").
//! - *No healthy upstream and overflow are not retried.* Envoy's router answers "no healthy
//!   upstream" itself when it has no host to send an attempt to (`sendNoHealthyUpstreamResponse`
//!   in `doRetry` too), and its retry state says "we never retry if the reset reason is
//!   overflow" (a circuit breaker's pending or request limit).
//! - *Connect failure vs reset.* Envoy's `connect-failure`: "Envoy will attempt a retry if a
//!   request is failed because of a connection failure to the upstream server (connect
//!   timeout, etc.)"; a disconnect after the connection was made is a `reset`, which Istio's
//!   default policy does not retry (a POST that reached the upstream is not sent twice).
//! - *Back-off.* Envoy's `x-envoy-max-retries`: "Envoy uses a fully jittered exponential
//!   back-off algorithm for retries with a default base interval of 25ms"; see
//!   [`Backoff`] for the bounds (0-24 ms, 0-74 ms, 0-174 ms, then 0-249 ms).
//! - *Budget.* Envoy's `retry_budget`: `budget_percent` "Specifies the limit on concurrent
//!   retries as a percentage of the sum of active requests and active pending requests"
//!   (default 20%) and `min_retry_concurrency`: "The limit on the number of active retries may
//!   never go below this number" (default 3). Counted per destination (Envoy's cluster) across
//!   every clone of the layer: a request is active from the moment it enters this layer until
//!   its final response headers (or error); a retry from its scheduling, through its back-off,
//!   until its outcome is known.
//! - *Body.* Envoy buffers the request for retries up to a limit ("The maximum bytes which will
//!   be buffered for retries and shadowing", `per_request_buffer_limit_bytes`) and gives up
//!   retrying past it. Here the cap is [`RetryLayer::max_replay_bytes`] (64 KiB by default).
//!   Envoy's router also does not retry when the attempt failed before the client finished
//!   sending ("If we responded before the request was complete we don't bother doing a
//!   retry"); mesh does, by replaying what was read and streaming the rest (see [`replay`]),
//!   which is what Envoy would do with a complete body and changes nothing the upstream sees.
//! - *Response flags.* Envoy's router flags `URX` ("the upstream retry limit (HTTP) ... was
//!   reached") when an outcome its policy retries comes with no retry left, whatever the
//!   outcome (a retriable status, a reset, a per-try timeout: `UT,URX`), and `UO` when its
//!   retries resource (the budget, `maxRetries`) refuses a retry. Both are set here, for
//!   Istio's metrics, the access log and the span.
//! - *Not applied.* `retryRemoteLocalities` (the config warns), Envoy's `x-envoy-retry-on`
//!   request headers (Istio's sidecars ignore them from applications), and
//!   `x-envoy-attempt-count` (Istio does not turn it on by default).

mod budget;
pub mod replay;
#[cfg(test)]
mod tests;

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use mesh_core::{
    model::{Destination, RetryPolicy},
    retry::{AttemptOutcome, Backoff, ResponseInfo, RetryBudget, RetryConditions},
};
use tower::{Layer, Service, ServiceExt};

use crate::{
    body::{self, BoxError, MeshBody},
    endpoint::{AttemptDeadline, RetryAttempt, RetryOverflow, TriedEndpoints},
    error::MeshError,
    route::{RouteCtx, Target},
    telemetry::{ResponseFlags, mark_response_flags},
};
use budget::{ActiveRequest, Budgets};
use replay::Replay;

/// The default cap of the replayable request body: 64 KiB.
pub const DEFAULT_MAX_REPLAY_BYTES: usize = 64 * 1024;

/// At most this much of a discarded response is read (during the back-off) and kept: its
/// connection goes back to the pool, and it is returned if the upstream refuses the retry.
/// A larger one is dropped with its connection.
const KEEP_LIMIT: usize = 64 * 1024;

/// Builds [`Retry`] services. Clones share the retry budget's counters.
///
/// ```
/// use http::{Request, Response};
/// use mesh_tower::{body::{self, BoxError, MeshBody}, retry::RetryLayer};
/// use tower::ServiceBuilder;
///
/// let svc = ServiceBuilder::new()
///     .layer(RetryLayer::new().max_replay_bytes(128 * 1024))
///     .service(tower::service_fn(|_req: Request<MeshBody>| async {
///         Ok::<_, BoxError>(Response::new(body::empty()))
///     }));
/// # let _ = svc;
/// ```
#[derive(Debug, Clone)]
pub struct RetryLayer {
    settings: Settings,
    budgets: Arc<Budgets>,
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    max_replay_bytes: usize,
    budget: RetryBudget,
    backoff: Backoff,
}

impl RetryLayer {
    /// Envoy's defaults: 25 ms back-off base, a 20% budget with at least 3 concurrent
    /// retries, and a 64 KiB replay cap.
    pub fn new() -> Self {
        RetryLayer {
            settings: Settings {
                max_replay_bytes: DEFAULT_MAX_REPLAY_BYTES,
                budget: RetryBudget::default(),
                backoff: Backoff::default(),
            },
            budgets: Arc::default(),
        }
    }

    /// The most bytes of a request body kept for replay; a request whose body goes past it
    /// is not retried once any of it was sent.
    pub fn max_replay_bytes(mut self, bytes: usize) -> Self {
        self.settings.max_replay_bytes = bytes;
        self
    }

    /// The retry budget (Envoy's `retry_budget`; Istio's API has none, so Envoy's defaults).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.settings.budget = budget;
        self
    }

    /// The back-off between attempts (Envoy's `retry_back_off`).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.settings.backoff = backoff;
        self
    }
}

impl Default for RetryLayer {
    fn default() -> Self {
        RetryLayer::new()
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            settings: self.settings,
            budgets: self.budgets.clone(),
        }
    }
}

/// The retry service: sends each routed request, and again as its route's retry policy says.
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    settings: Settings,
    budgets: Arc<Budgets>,
}

impl<S> Retry<S> {
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

impl<S> Service<Request<MeshBody>> for Retry<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<MeshBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<MeshBody>) -> ResponseFuture {
        // The ready service takes the first attempt; the clone left behind is readied again.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let plan = req.extensions().get::<RouteCtx>().and_then(Plan::of);
        let Some((plan, destination)) = plan else {
            return ResponseFuture(Box::pin(inner.call(req)));
        };
        let active = self.budgets.request(destination);
        ResponseFuture(Box::pin(run(inner, req, plan, self.settings, active)))
    }
}

/// The response of [`Retry`]: the final attempt's.
pub struct ResponseFuture(BoxFuture);

impl Future for ResponseFuture {
    type Output = Result<Response<MeshBody>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// A route's retry policy, ready to apply.
#[derive(Debug, Clone)]
struct Plan {
    retries: u32,
    per_try_timeout: Option<Duration>,
    conditions: RetryConditions,
}

impl Plan {
    fn new(policy: &RetryPolicy) -> Self {
        Plan {
            retries: policy.attempts,
            per_try_timeout: policy.per_try_timeout,
            conditions: RetryConditions::new(policy),
        }
    }

    /// One try, no per-try timeout.
    fn once() -> Self {
        Plan {
            retries: 0,
            per_try_timeout: None,
            conditions: RetryConditions::default(),
        }
    }

    /// The plan for a routed request and the destination its budget counts against (every
    /// request to it is active, retried or not); `None` for a passthrough request.
    fn of(ctx: &RouteCtx) -> Option<(Plan, &Destination)> {
        let Target::Destination(destination) = &ctx.target else {
            return None;
        };
        static ISTIO_DEFAULT: std::sync::LazyLock<mesh_core::model::RetryPolicy> =
            std::sync::LazyLock::new(mesh_core::model::RetryPolicy::istio_default);
        let plan = match ctx.route() {
            Some(route) => Plan::new(&route.retries),
            // Istio's default route carries the default retry policy; mirror copies none.
            None if ctx.is_default_route() => Plan::new(&ISTIO_DEFAULT),
            None => Plan::once(),
        };
        Some((plan, destination))
    }
}

/// How one attempt ended.
enum Tried {
    Response(Response<MeshBody>),
    Failed(BoxError),
    TimedOut(Duration),
}

impl Tried {
    fn into_result(self) -> Result<Response<MeshBody>, BoxError> {
        match self {
            Tried::Response(res) => Ok(res),
            Tried::Failed(err) => Err(err),
            Tried::TimedOut(after) => Err(MeshError::Timeout(after).into()),
        }
    }
}

/// Every attempt of one request.
async fn run<S>(
    mut svc: S,
    req: Request<MeshBody>,
    plan: Plan,
    settings: Settings,
    active: ActiveRequest,
) -> Result<Response<MeshBody>, BoxError>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>,
    S::Future: Send + 'static,
{
    if plan.retries == 0 {
        return attempt(boxed(svc.call(req)), plan.per_try_timeout)
            .await
            .into_result();
    }
    let (mut parts, body) = req.into_parts();
    if parts.extensions.get::<TriedEndpoints>().is_none() {
        parts.extensions.insert(TriedEndpoints::default());
    }
    let (replay, mut body) = Replay::new(body, settings.max_replay_bytes);
    let mut retries = 0;
    let mut _active_retry = None;
    // The outcome before a retry, returned if the upstream refuses the retry (`maxRetries`).
    let mut previous: Option<Tried> = None;
    loop {
        let mut attempt_parts = parts.clone();
        if retries > 0 {
            attempt_parts.extensions.insert(RetryAttempt(retries));
        }
        if let Some(limit) = plan.per_try_timeout {
            let per_try = tokio::time::Instant::now() + limit;
            let deadline = attempt_parts
                .extensions
                .get::<AttemptDeadline>()
                .map_or(per_try, |d| d.0.min(per_try));
            attempt_parts.extensions.insert(AttemptDeadline(deadline));
        }
        let req = Request::from_parts(attempt_parts, body);
        if retries > 0 {
            // The first attempt uses the service `poll_ready` readied.
            svc.ready().await?;
        }
        let tried = attempt(boxed(svc.call(req)), plan.per_try_timeout).await;
        // The retry (if this attempt was one) is over.
        _active_retry = None;
        if let Tried::Failed(err) = &tried
            && is_retry_overflow(err)
        {
            tracing::debug!("retry refused by maxRetries: the previous outcome stands");
            mark_response_flags(&parts.extensions, ResponseFlags::UPSTREAM_OVERFLOW);
            return previous.unwrap_or(tried).into_result();
        }
        drop(previous.take());
        let outcome = match &tried {
            Tried::Response(res) => Some(AttemptOutcome::Response(ResponseInfo::from_headers(
                res.status(),
                res.headers(),
            ))),
            Tried::Failed(err) => classify(err, replay.current_sent()),
            Tried::TimedOut(_) => Some(AttemptOutcome::PerTryTimeout),
        };
        let Some(outcome) = outcome else {
            return tried.into_result();
        };
        if !plan.conditions.should_retry(&outcome) {
            return tried.into_result();
        }
        if retries >= plan.retries {
            // Envoy's `NoRetryLimitExceeded`: this outcome would be retried, but no retry is
            // left.
            mark_response_flags(
                &parts.extensions,
                ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED,
            );
            return tried.into_result();
        }
        if !replay.is_replayable() {
            tracing::debug!(
                ?outcome,
                "not retried: the request body cannot be replayed (over the cap, or it failed)"
            );
            return tried.into_result();
        }
        let (requests, active_retries) = active.load();
        if !settings.budget.allows(requests, active_retries) {
            tracing::debug!(
                ?outcome,
                requests,
                active_retries,
                "not retried: the retry budget is spent"
            );
            // Envoy's `NoOverflow`: the budget is its retries resource limit.
            mark_response_flags(&parts.extensions, ResponseFlags::UPSTREAM_OVERFLOW);
            return tried.into_result();
        }
        let Some(next) = replay.next_attempt() else {
            return tried.into_result();
        };
        _active_retry = Some(active.retry());
        retries += 1;
        let delay = settings.backoff.delay(retries, fastrand::u64(..));
        tracing::debug!(?outcome, retry = retries, ?delay, "retrying");
        let deadline = tokio::time::Instant::now() + delay;
        previous = match tried {
            Tried::Response(res) => tokio::time::timeout_at(deadline, keep(res))
                .await
                .ok()
                .flatten()
                .map(Tried::Response),
            other => Some(other),
        };
        tokio::time::sleep_until(deadline).await;
        body = next;
    }
}

/// Whether `err` is the upstream refusing a retry (`maxRetries`).
fn is_retry_overflow(err: &BoxError) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
    while let Some(e) = cur {
        if e.is::<RetryOverflow>() {
            return true;
        }
        cur = e.source();
    }
    false
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<MeshBody>, BoxError>> + Send>>;

/// Boxes an attempt's future: its concrete type inside `run`'s state trips rustc's proof that
/// the state is `Send` (a known limitation with higher-ranked lifetimes in async fns).
fn boxed<F>(fut: F) -> BoxFuture
where
    F: Future<Output = Result<Response<MeshBody>, BoxError>> + Send + 'static,
{
    Box::pin(fut)
}

/// One attempt's response, under the per-try timeout.
async fn attempt<F>(send: F, per_try_timeout: Option<Duration>) -> Tried
where
    F: Future<Output = Result<Response<MeshBody>, BoxError>>,
{
    let result = match per_try_timeout {
        None => send.await,
        Some(limit) => match tokio::time::timeout(limit, send).await {
            Ok(result) => result,
            Err(_) => return Tried::TimedOut(limit),
        },
    };
    match result {
        Ok(res) => Tried::Response(res),
        Err(err) => Tried::Failed(err),
    }
}

/// Reads a discarded response whole, up to 64 KiB, so that its connection goes back to the
/// pool and the response can still be returned if the retry is refused. `None` (the response
/// dropped, with its connection) when it is larger or fails.
async fn keep(res: Response<MeshBody>) -> Option<Response<MeshBody>> {
    let (parts, mut body) = res.into_parts();
    let mut chunks = Vec::new();
    let mut len = 0;
    let mut trailers: Option<HeaderMap> = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame.ok()?.into_data() {
            Ok(data) => {
                len += data.len();
                if len > KEEP_LIMIT {
                    return None;
                }
                chunks.push(data);
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(t) = frame.into_trailers() {
            trailers.get_or_insert_with(HeaderMap::new).extend(t);
        }
    }
    let data = match chunks.len() {
        1 => chunks.pop().unwrap_or_default(),
        _ => Bytes::from(chunks.concat()),
    };
    let kept = Full::new(data).with_trailers(async move { trailers.map(Ok) });
    Some(Response::from_parts(parts, body::boxed(kept)))
}

/// The outcome of an attempt that failed with `err`; `None` when it is never retried.
fn classify(err: &BoxError, request_sent: bool) -> Option<AttemptOutcome> {
    match MeshError::find(err) {
        Some(MeshError::UpstreamConnect { source, .. }) => {
            Some(transport_outcome(source.as_ref(), request_sent).unwrap_or(
                // The upstream names it a connect failure and nothing inside says otherwise.
                AttemptOutcome::ConnectFailure,
            ))
        }
        // Answers of the mesh itself: no healthy upstream, overflow, ...
        Some(_) => None,
        None => Some(
            transport_outcome(err.as_ref(), request_sent)
                .unwrap_or(AttemptOutcome::Reset { request_sent }),
        ),
    }
}

/// What the error chain of a client (hyper) error says; `None` when nothing in it tells.
fn transport_outcome(
    err: &(dyn std::error::Error + 'static),
    request_sent: bool,
) -> Option<AttemptOutcome> {
    // h2's text for a REFUSED_STREAM reset (h2 is not a direct dependency to downcast to).
    const REFUSED_STREAM: &str = "refused stream before processing any application logic";
    let mut after_connect = false;
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(client) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            if client.is_connect() {
                return Some(AttemptOutcome::ConnectFailure);
            }
            after_connect = true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return Some(AttemptOutcome::ConnectFailure);
        }
        if e.to_string().contains(REFUSED_STREAM) {
            return Some(AttemptOutcome::RefusedStream);
        }
        cur = e.source();
    }
    after_connect.then_some(AttemptOutcome::Reset { request_sent })
}

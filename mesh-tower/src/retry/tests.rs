//! The retry layer over `tower_test::mock`, behind the real router, in paused time.

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use mesh_core::{Percent, retry::RetryBudget};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt, util::BoxCloneService};
use tower_test::mock;

use super::*;
use crate::{
    body,
    route::{ClientIdentity, RouteLayer},
    snapshot::MeshHandle,
};

type Handle = mock::Handle<Request<MeshBody>, Response<MeshBody>>;
type Svc = BoxCloneService<Request<MeshBody>, Response<MeshBody>, BoxError>;

const URL: &str = "http://svc.example.internal:9080/items";

fn service_entry() -> &'static str {
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: svc}\nspec:\n  hosts: [svc.example.internal]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 9080, name: http, protocol: HTTP}]\n  endpoints: [{address: 127.0.0.1}, {address: 127.0.0.2}]\n---\n"
}

/// A VirtualService with `retries` (YAML flow mapping, or `None` for no `retries` field).
fn with_vs(retries: Option<&str>) -> String {
    let retries = retries.map_or(String::new(), |r| format!("\n    retries: {r}"));
    format!(
        "{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc}}\nspec:\n  hosts: [svc.example.internal]\n  http:\n  - route: [{{destination: {{host: svc.example.internal}}}}]{retries}\n",
        service_entry()
    )
}

/// The router, then `layer`, over a mock upstream.
fn stack_with(yaml: &str, layer: RetryLayer) -> (Svc, Handle) {
    let report = mesh_config::Loader::new().check_str("t.yaml", yaml);
    assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
    let mesh = report.into_mesh().unwrap();
    let (upstream, handle) = mock::pair();
    let svc = ServiceBuilder::new()
        .layer(RouteLayer::new(
            MeshHandle::from(&mesh),
            ClientIdentity::default(),
        ))
        .layer(layer)
        .service(upstream);
    (BoxCloneService::new(svc), handle)
}

fn stack(yaml: &str) -> (Svc, Handle) {
    stack_with(yaml, RetryLayer::new())
}

fn get() -> Request<MeshBody> {
    Request::get(URL).body(body::empty()).unwrap()
}

fn send(
    svc: &Svc,
    req: Request<MeshBody>,
) -> tokio::task::JoinHandle<Result<Response<MeshBody>, BoxError>> {
    tokio::spawn(svc.clone().oneshot(req))
}

fn status(code: u16) -> Response<MeshBody> {
    let mut res = Response::new(body::empty());
    *res.status_mut() = StatusCode::from_u16(code).unwrap();
    res
}

fn tagged(code: u16, tag: usize) -> Response<MeshBody> {
    let mut res = status(code);
    res.headers_mut().insert("x-try", HeaderValue::from(tag));
    res
}

fn refused() -> MeshError {
    MeshError::UpstreamConnect {
        endpoint: "127.0.0.1:9080".into(),
        source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
    }
}

/// Asserts the upstream sees no further request (paused time skips the wait).
async fn assert_no_more(handle: &mut Handle) {
    let next = tokio::time::timeout(Duration::from_secs(60), handle.next_request()).await;
    assert!(
        !matches!(next, Ok(Some(_))),
        "an unexpected attempt was made"
    );
}

/// A body of the given frames.
struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

fn grpc_trailers() -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from_static("0"));
    t.insert("x-checksum", HeaderValue::from_static("abc"));
    t
}

/// Three data frames and trailers.
fn streamed_body() -> MeshBody {
    body::boxed(Frames(VecDeque::from([
        Frame::data(Bytes::from_static(b"first,")),
        Frame::data(Bytes::from_static(b"second,")),
        Frame::data(Bytes::from_static(b"third")),
        Frame::trailers(grpc_trailers()),
    ])))
}

/// A response body that records being dropped.
struct DropFlag(Arc<AtomicBool>, Option<Bytes>);

impl Body for DropFlag {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.1.take().map(|b| Ok(Frame::data(b))))
    }
}

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn istio_default_policy_does_not_retry_a_503() {
    let (svc, mut handle) = stack(&with_vs(None));
    let res = send(&svc, get());
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(status(503));
    assert_eq!(res.await.unwrap().unwrap().status(), 503);
    assert_no_more(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn istio_default_policy_retries_grpc_unavailable() {
    let (svc, mut handle) = stack(&with_vs(None));
    let res = send(&svc, get());
    let (_, reply) = handle.next_request().await.unwrap();
    let mut unavailable = status(200);
    unavailable
        .headers_mut()
        .insert("grpc-status", HeaderValue::from_static("14"));
    reply.send_response(unavailable);
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(tagged(200, 2));
    assert_eq!(res.await.unwrap().unwrap().headers()["x-try"], "2");
}

#[tokio::test(start_paused = true)]
async fn retry_on_5xx_with_3_attempts_makes_4_tries_and_returns_the_last() {
    let (svc, mut handle) = stack(&with_vs(Some("{attempts: 3, retryOn: 5xx}")));
    let res = send(&svc, get());
    let mut dropped = Vec::new();
    for n in 1..=4 {
        let (_, reply) = handle.next_request().await.unwrap();
        let flag = Arc::new(AtomicBool::new(false));
        dropped.push(flag.clone());
        let mut r = tagged(503, n);
        *r.body_mut() = body::boxed(DropFlag(flag, Some(Bytes::from_static(b"overloaded"))));
        reply.send_response(r);
    }
    let res = res.await.unwrap().unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["x-try"], "4", "the last attempt's response");
    assert_no_more(&mut handle).await;
    for flag in &dropped[..3] {
        assert!(
            flag.load(Ordering::SeqCst),
            "discarded responses are dropped"
        );
    }
    assert!(
        !dropped[3].load(Ordering::SeqCst),
        "the returned one is alive"
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "overloaded");
}

#[tokio::test(start_paused = true)]
async fn a_connect_failure_is_retried_with_the_same_context() {
    let (svc, mut handle) = stack(&with_vs(None));
    let res = send(&svc, get());
    let (first, reply) = handle.next_request().await.unwrap();
    assert!(first.extensions().get::<RouteCtx>().is_some());
    assert!(first.extensions().get::<TriedEndpoints>().is_some());
    reply.send_error(refused());
    let (second, reply) = handle.next_request().await.unwrap();
    assert!(second.extensions().get::<RouteCtx>().is_some());
    assert!(second.extensions().get::<TriedEndpoints>().is_some());
    assert_eq!(second.uri(), first.uri());
    assert_eq!(second.method(), first.method());
    reply.send_response(tagged(200, 2));
    assert_eq!(res.await.unwrap().unwrap().headers()["x-try"], "2");
}

#[tokio::test(start_paused = true)]
async fn a_request_without_a_virtual_service_gets_istios_default_retries() {
    // No VirtualService: the router's default route carries Istio's default policy, so a
    // refused connection is retried (twice at most) and the last failure is returned.
    let (svc, mut handle) = stack(service_entry());
    let res = send(&svc, get());
    for _ in 0..3 {
        let (_, reply) = handle.next_request().await.unwrap();
        reply.send_error(refused());
    }
    let err = res.await.unwrap().unwrap_err();
    assert!(matches!(
        MeshError::find(&err),
        Some(MeshError::UpstreamConnect { .. })
    ));
    assert_no_more(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn no_healthy_upstream_and_overflow_are_not_retried() {
    let (svc, mut handle) = stack(&with_vs(Some("{attempts: 3, retryOn: \"5xx,reset\"}")));
    for err in [
        MeshError::NoHealthyUpstream {
            destination: "svc".into(),
        },
        MeshError::Overflow {
            destination: "svc".into(),
        },
    ] {
        let res = send(&svc, get());
        let (_, reply) = handle.next_request().await.unwrap();
        reply.send_error(err);
        assert!(res.await.unwrap().is_err());
        assert_no_more(&mut handle).await;
    }
}

#[tokio::test(start_paused = true)]
async fn retries_are_marked_and_carry_their_deadline() {
    let (svc, mut handle) = stack(&with_vs(Some(
        "{attempts: 2, perTryTimeout: 100ms, retryOn: 5xx}",
    )));
    let res = send(&svc, get());
    for n in 0..3 {
        let (req, reply) = handle.next_request().await.unwrap();
        let now = Instant::now();
        assert_eq!(
            req.extensions().get::<RetryAttempt>().copied(),
            (n > 0).then_some(RetryAttempt(n)),
        );
        assert_eq!(
            req.extensions().get::<AttemptDeadline>().copied(),
            Some(AttemptDeadline(now + Duration::from_millis(100)))
        );
        reply.send_response(status(503));
    }
    assert_eq!(res.await.unwrap().unwrap().status(), 503);
}

#[tokio::test(start_paused = true)]
async fn a_retry_refused_by_max_retries_returns_the_previous_outcome() {
    let (svc, mut handle) = stack(&with_vs(Some(
        "{attempts: 2, retryOn: \"5xx,connect-failure\"}",
    )));
    let overflow = || {
        RetryOverflow(MeshError::Overflow {
            destination: "svc".into(),
        })
    };

    let res = send(&svc, get());
    let (_, reply) = handle.next_request().await.unwrap();
    let mut first = tagged(503, 1);
    *first.body_mut() = body::full("first try");
    reply.send_response(first);
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error(overflow());
    let res = res.await.unwrap().unwrap();
    assert_eq!(res.headers()["x-try"], "1");
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes(),
        "first try"
    );
    assert_no_more(&mut handle).await;

    let res = send(&svc, get());
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error(refused());
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error(overflow());
    let err = res.await.unwrap().unwrap_err();
    assert!(matches!(
        MeshError::find(&err),
        Some(MeshError::UpstreamConnect { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_per_try_timeout_triggers_a_retry() {
    let (svc, mut handle) = stack(&with_vs(Some(
        "{attempts: 2, perTryTimeout: 100ms, retryOn: gateway-error}",
    )));
    let start = Instant::now();
    let res = send(&svc, get());
    let (_, _silent) = handle.next_request().await.unwrap();
    let (_, reply) = handle.next_request().await.unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_millis(125),
        "the retry starts after the per-try timeout and a first back-off: {waited:?}"
    );
    reply.send_response(tagged(200, 2));
    assert_eq!(res.await.unwrap().unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn the_last_per_try_timeout_is_a_timeout() {
    let (svc, mut handle) = stack(&with_vs(Some(
        "{attempts: 2, perTryTimeout: 100ms, retryOn: gateway-error}",
    )));
    let start = Instant::now();
    let res = send(&svc, get());
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(handle.next_request().await.unwrap());
    }
    let err = res.await.unwrap().unwrap_err();
    let total = start.elapsed();
    assert!(matches!(
        MeshError::find(&err),
        Some(MeshError::Timeout(d)) if *d == Duration::from_millis(100)
    ));
    // Three tries of 100 ms, and back-offs below 25 ms and 75 ms.
    assert!(
        total >= Duration::from_millis(300) && total < Duration::from_millis(400),
        "{total:?}"
    );
    assert_no_more(&mut handle).await;
}

/// `get()` with a [`RequestTelemetry`](crate::telemetry::RequestTelemetry) to read the flags
/// the layer set.
fn followed() -> (Request<MeshBody>, crate::telemetry::RequestTelemetry) {
    let t = crate::telemetry::RequestTelemetry::detached();
    let mut req = get();
    req.extensions_mut().insert(t.clone());
    (req, t)
}

#[tokio::test(start_paused = true)]
async fn response_flags_say_why_retrying_stopped() {
    let (svc, mut handle) = stack(&with_vs(Some(
        "{attempts: 2, perTryTimeout: 100ms, retryOn: \"5xx,connect-failure\"}",
    )));

    // Retriable to the last: Envoy's URX.
    let (req, exhausted) = followed();
    let res = send(&svc, req);
    for _ in 0..3 {
        let (_, reply) = handle.next_request().await.unwrap();
        reply.send_response(status(503));
    }
    assert_eq!(res.await.unwrap().unwrap().status(), 503);
    assert_eq!(exhausted.flags().to_string(), "URX");

    // The last try timed out: URX here, UT from the 504 the edge makes of the error.
    let (req, timed_out) = followed();
    let res = send(&svc, req);
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(handle.next_request().await.unwrap());
    }
    assert!(res.await.unwrap().is_err());
    assert_eq!(timed_out.flags().to_string(), "URX");

    // A retry that succeeded, and an answer the policy does not retry: no flag.
    let (req, recovered) = followed();
    let res = send(&svc, req);
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(status(503));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(status(200));
    assert_eq!(res.await.unwrap().unwrap().status(), 200);
    assert_eq!(recovered.flags().to_string(), "-");
    let (req, not_retriable) = followed();
    let res = send(&svc, req);
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(status(404));
    assert_eq!(res.await.unwrap().unwrap().status(), 404);
    assert_eq!(not_retriable.flags().to_string(), "-");

    // A retry refused by maxRetries: Envoy's UO, the previous answer stands.
    let (req, refused_retry) = followed();
    let res = send(&svc, req);
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(status(503));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error(RetryOverflow(MeshError::Overflow {
        destination: "svc".into(),
    }));
    assert_eq!(res.await.unwrap().unwrap().status(), 503);
    assert_eq!(refused_retry.flags().to_string(), "UO");
    assert_no_more(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn the_budget_spent_is_flagged_uo() {
    let budget = RetryBudget {
        budget_percent: Percent::new(0.0).unwrap(),
        min_retry_concurrency: 0,
    };
    let layer = RetryLayer::new().budget(budget);
    let (svc, mut handle) = stack_with(&with_vs(Some("{attempts: 2, retryOn: 5xx}")), layer);
    let (req, t) = followed();
    let res = send(&svc, req);
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(status(503));
    assert_eq!(res.await.unwrap().unwrap().status(), 503);
    assert_no_more(&mut handle).await;
    assert_eq!(t.flags().to_string(), "UO");
}

#[tokio::test(start_paused = true)]
async fn back_off_stays_within_envoys_bounds() {
    let (svc, mut handle) = stack(&with_vs(Some("{attempts: 4, retryOn: 5xx}")));
    let bounds = [25, 75, 175, 250].map(Duration::from_millis);
    let mut longest = [Duration::ZERO; 4];
    for _ in 0..25 {
        let res = send(&svc, get());
        let mut last = None::<Instant>;
        for n in 0..5 {
            let (_, reply) = handle.next_request().await.unwrap();
            let now = Instant::now();
            if let Some(prev) = last {
                let waited = now - prev;
                assert!(waited < bounds[n - 1], "retry {n} waited {waited:?}");
                longest[n - 1] = longest[n - 1].max(waited);
            }
            last = Some(now);
            reply.send_response(status(503));
        }
        assert_eq!(res.await.unwrap().unwrap().status(), 503);
    }
    assert!(
        longest[3] > Duration::from_millis(25),
        "later retries wait longer: {longest:?}"
    );
}

/// Collects a request body: its data and trailers.
async fn collect(body: MeshBody) -> (Bytes, Option<HeaderMap>) {
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (collected.to_bytes(), trailers)
}

#[tokio::test(start_paused = true)]
async fn a_post_body_and_its_trailers_are_replayed() {
    let (svc, mut handle) = stack(&with_vs(Some("{attempts: 3, retryOn: 5xx}")));
    let req = Request::post(URL).body(streamed_body()).unwrap();
    let res = send(&svc, req);

    // The first attempt answers before reading any of the body.
    let (first, reply) = handle.next_request().await.unwrap();
    reply.send_response(status(503));
    // The second reads one chunk, then fails.
    let (second, reply) = handle.next_request().await.unwrap();
    let mut partial = second.into_body();
    let chunk = partial.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(chunk, "first,");
    reply.send_response(status(503));
    // The third gets everything, trailers included.
    let (third, reply) = handle.next_request().await.unwrap();
    assert_eq!(third.method(), "POST");
    let (data, trailers) = collect(third.into_body()).await;
    assert_eq!(data, "first,second,third");
    assert_eq!(trailers, Some(grpc_trailers()));
    reply.send_response(status(200));
    assert_eq!(res.await.unwrap().unwrap().status(), 200);

    // The abandoned attempts' bodies fail rather than end: no truncated request upstream.
    for mut stale in [first.into_body(), partial] {
        let frame = stale.frame().await.unwrap();
        assert!(frame.is_err(), "an abandoned body must fail");
    }
}

#[tokio::test(start_paused = true)]
async fn a_fully_sent_body_is_replayed_identically() {
    let (svc, mut handle) = stack(&with_vs(Some("{attempts: 1, retryOn: 5xx}")));
    let payload = Bytes::from(vec![7u8; 10_000]);
    let req = Request::post(URL)
        .body(body::boxed(Full::new(payload.clone())))
        .unwrap();
    let res = send(&svc, req);
    let (first, reply) = handle.next_request().await.unwrap();
    assert_eq!(first.body().size_hint().exact(), Some(10_000));
    let (data, _) = collect(first.into_body()).await;
    assert_eq!(data, payload);
    reply.send_response(status(502));
    let (second, reply) = handle.next_request().await.unwrap();
    assert_eq!(
        second.body().size_hint().exact(),
        Some(10_000),
        "the replay keeps the size, so Content-Length stays the same"
    );
    let (data, trailers) = collect(second.into_body()).await;
    assert_eq!(data, payload);
    assert_eq!(trailers, None);
    reply.send_response(status(201));
    assert_eq!(res.await.unwrap().unwrap().status(), 201);
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_cap_is_not_retried() {
    let layer = RetryLayer::new().max_replay_bytes(1024);
    let (svc, mut handle) = stack_with(&with_vs(Some("{attempts: 3, retryOn: 5xx}")), layer);
    let chunks = (0..4).map(|_| Frame::data(Bytes::from(vec![1u8; 512])));
    let req = Request::post(URL)
        .body(body::boxed(Frames(chunks.collect())))
        .unwrap();
    let res = send(&svc, req);
    let (first, reply) = handle.next_request().await.unwrap();
    let (data, _) = collect(first.into_body()).await;
    assert_eq!(data.len(), 2048);
    reply.send_response(tagged(503, 1));
    assert_eq!(res.await.unwrap().unwrap().headers()["x-try"], "1");
    assert_no_more(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn a_large_body_not_yet_read_can_still_be_retried() {
    // 100 KiB is over the default cap (its size says so up front): nothing is copied, but a
    // connect failure happened before a byte was read, so the retry sends it whole.
    let (svc, mut handle) = stack(&with_vs(None));
    let payload = Bytes::from(vec![9u8; 100 * 1024]);
    let req = Request::post(URL)
        .body(body::boxed(Full::new(payload.clone())))
        .unwrap();
    let res = send(&svc, req);
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error(refused());
    let (second, reply) = handle.next_request().await.unwrap();
    let (data, _) = collect(second.into_body()).await;
    assert_eq!(data, payload);
    reply.send_error(refused());
    // Now it was read: no third try.
    let err = res.await.unwrap().unwrap_err();
    assert!(MeshError::find(&err).is_some());
    assert_no_more(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn the_budget_stops_retries_when_spent() {
    let budget = RetryBudget {
        budget_percent: Percent::new(0.0).unwrap(),
        min_retry_concurrency: 1,
    };
    let layer = RetryLayer::new().budget(budget);
    let (svc, mut handle) = stack_with(&with_vs(Some("{attempts: 2, retryOn: 5xx}")), layer);

    // A's retry takes the one retry the budget allows...
    let a = send(&svc, get());
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(tagged(503, 1));
    let (_, a_retry) = handle.next_request().await.unwrap();

    // ...so B's failure is returned as it is.
    let b = send(&svc, get());
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(tagged(503, 1));
    assert_eq!(b.await.unwrap().unwrap().headers()["x-try"], "1");
    assert_no_more(&mut handle).await;

    a_retry.send_response(tagged(200, 2));
    assert_eq!(a.await.unwrap().unwrap().headers()["x-try"], "2");

    // With A done, the budget has room again.
    let c = send(&svc, get());
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(tagged(503, 1));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(tagged(200, 2));
    assert_eq!(c.await.unwrap().unwrap().headers()["x-try"], "2");
}

#[tokio::test(start_paused = true)]
async fn attempts_0_makes_exactly_one_try() {
    let (svc, mut handle) = stack(&with_vs(Some("{attempts: 0}")));
    let res = send(&svc, get());
    let (req, reply) = handle.next_request().await.unwrap();
    assert!(
        req.extensions().get::<TriedEndpoints>().is_none(),
        "no retries, nothing to remember"
    );
    reply.send_error(refused());
    assert!(res.await.unwrap().is_err());
    assert_no_more(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn requests_without_a_route_pass_through() {
    let (upstream, mut handle) = mock::pair::<Request<MeshBody>, Response<MeshBody>>();
    let svc = RetryLayer::new().layer(upstream);
    let res = tokio::spawn(svc.oneshot(get()));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(status(503));
    assert_eq!(res.await.unwrap().unwrap().status(), 503);
    assert_no_more(&mut handle).await;
}

#[test]
fn failures_are_classified_as_envoy_does() {
    let boxed = |e: MeshError| -> BoxError { e.into() };
    assert_eq!(
        classify(&boxed(refused()), false),
        Some(AttemptOutcome::ConnectFailure)
    );
    let unnamed = MeshError::UpstreamConnect {
        endpoint: "e".into(),
        source: "unix domain sockets are not supported".into(),
    };
    assert_eq!(
        classify(&boxed(unnamed), false),
        Some(AttemptOutcome::ConnectFailure)
    );
    let reset: BoxError = std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
    assert_eq!(
        classify(&reset, true),
        Some(AttemptOutcome::Reset { request_sent: true })
    );
    let refused_stream: BoxError =
        "stream error received: refused stream before processing any application logic".into();
    assert_eq!(
        classify(&refused_stream, false),
        Some(AttemptOutcome::RefusedStream)
    );
    for local in [
        MeshError::NoHealthyUpstream {
            destination: "d".into(),
        },
        MeshError::Overflow {
            destination: "d".into(),
        },
        MeshError::Timeout(Duration::from_secs(1)),
    ] {
        assert_eq!(classify(&boxed(local), false), None);
    }
}

use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_test::mock;

use super::*;
use crate::{
    body::{self, MeshBody},
    route::{ClientIdentity, Route, RouteLayer},
    snapshot::MeshHandle,
};

type Mock = mock::Mock<Request<MeshBody>, Response<MeshBody>>;
type Handle = mock::Handle<Request<MeshBody>, Response<MeshBody>>;

/// `reviews.example.internal`: `/slow` has a 2 s timeout, everything else none.
const YAML: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews.example.internal]\n  http:\n  - match: [{uri: {prefix: /slow}}]\n    timeout: 2s\n    route: [{destination: {host: reviews.example.internal}}]\n  - route: [{destination: {host: reviews.example.internal}}]\n";

fn stack() -> (Route<Timeout<Mock>>, Handle) {
    let report = mesh_config::Loader::new().check_str("test.yaml", YAML);
    assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
    let mesh = MeshHandle::from(&report.into_mesh().unwrap());
    let (mock, handle) = mock::pair();
    let svc = ServiceBuilder::new()
        .layer(RouteLayer::new(mesh, ClientIdentity::default()))
        .layer(TimeoutLayer::new())
        .service(mock);
    (svc, handle)
}

fn get(path: &str) -> http::request::Builder {
    Request::get(format!("http://reviews.example.internal:9080{path}"))
}

fn timed_out(err: &BoxError) -> Option<Duration> {
    match MeshError::find(err) {
        Some(MeshError::Timeout(d)) => Some(*d),
        _ => None,
    }
}

/// A body that never yields.
struct Stalled;

impl Body for Stalled {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Pending
    }
}

#[tokio::test(start_paused = true)]
async fn fires_at_the_deadline() {
    let (svc, mut handle) = stack();
    let start = Instant::now();
    let call = tokio::spawn(svc.oneshot(get("/slow").body(body::empty()).unwrap()));
    let (_req, _send) = handle.next_request().await.unwrap();
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(timed_out(&err), Some(Duration::from_secs(2)));
    let res = crate::error::error_to_response(err, false);
    assert_eq!(res.status(), 504);
    assert_eq!(res.headers()["x-mesh-error"], "upstream-timeout");
}

#[tokio::test(start_paused = true)]
async fn an_answer_just_before_the_deadline_passes() {
    let (svc, mut handle) = stack();
    let call = tokio::spawn(svc.oneshot(get("/slow").body(body::empty()).unwrap()));
    let (_, send) = handle.next_request().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_999)).await;
    send.send_response(Response::new(body::full("late but in time")));
    let res = call.await.unwrap().unwrap();
    let text = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, "late but in time");
}

#[tokio::test(start_paused = true)]
async fn no_timeout_without_one_on_the_route() {
    let (svc, mut handle) = stack();
    let call = tokio::spawn(svc.oneshot(get("/fast").body(body::empty()).unwrap()));
    let (_, send) = handle.next_request().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3_600)).await;
    send.send_response(Response::new(body::empty()));
    assert_eq!(call.await.unwrap().unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn the_response_body_is_bounded_too() {
    let (svc, mut handle) = stack();
    let start = Instant::now();
    let call = tokio::spawn(svc.oneshot(get("/slow").body(body::empty()).unwrap()));
    let (_, send) = handle.next_request().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    send.send_response(Response::new(body::boxed(Stalled)));
    let res = call.await.unwrap().unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "the head is in time"
    );
    let err = res.into_body().collect().await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(timed_out(&err), Some(Duration::from_secs(2)));
}

#[tokio::test(start_paused = true)]
async fn the_header_overrides_the_route() {
    let (svc, mut handle) = stack();
    let start = Instant::now();
    let req = get("/slow")
        .header("x-envoy-upstream-rq-timeout-ms", "500")
        .body(body::empty())
        .unwrap();
    let call = tokio::spawn(svc.clone().oneshot(req));
    let (req, _send) = handle.next_request().await.unwrap();
    assert!(
        req.headers()
            .get("x-envoy-upstream-rq-timeout-ms")
            .is_none(),
        "consumed, not forwarded"
    );
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    assert_eq!(timed_out(&err), Some(Duration::from_millis(500)));

    // A timeout where the route has none.
    let start = Instant::now();
    let req = get("/fast")
        .header("x-envoy-upstream-rq-timeout-ms", "300")
        .body(body::empty())
        .unwrap();
    let call = tokio::spawn(svc.clone().oneshot(req));
    let (_req, _send) = handle.next_request().await.unwrap();
    call.await.unwrap().unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(300));

    // 0 disables the route's.
    let req = get("/slow")
        .header("x-envoy-upstream-rq-timeout-ms", "0")
        .body(body::empty())
        .unwrap();
    let call = tokio::spawn(svc.oneshot(req));
    let (_, send) = handle.next_request().await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    send.send_response(Response::new(body::empty()));
    assert_eq!(call.await.unwrap().unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn the_clock_starts_when_the_request_body_ends() {
    let (svc, mut handle) = stack();
    let start = Instant::now();
    let req = get("/slow").body(body::full("a request body")).unwrap();
    let call = tokio::spawn(svc.oneshot(req));
    let (req, _send) = handle.next_request().await.unwrap();
    // The upstream has not read the body yet: no deadline runs.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!call.is_finished());
    let body = req.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "a request body");
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(7));
    assert!(timed_out(&err).is_some());
}

#[tokio::test(start_paused = true)]
async fn requests_without_a_route_context_pass() {
    let (mock, mut handle) = mock::pair::<Request<MeshBody>, Response<MeshBody>>();
    let req = get("/slow")
        .header("x-envoy-upstream-rq-timeout-ms", "10")
        .body(body::empty())
        .unwrap();
    let call = tokio::spawn(TimeoutLayer::new().layer(mock).oneshot(req));
    let (req, send) = handle.next_request().await.unwrap();
    assert!(req.headers().contains_key("x-envoy-upstream-rq-timeout-ms"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    send.send_response(Response::new(body::empty()));
    assert_eq!(call.await.unwrap().unwrap().status(), 200);
}

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use http::{Request, Response};
use http_body_util::BodyExt;
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

/// `reviews.example.internal` goes to v1 and is mirrored to v2 (`mirror` holds the rest of the
/// route, e.g. its percentage).
fn yaml(mirror: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews}}\nspec:\n  host: reviews.example.internal\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews.example.internal]\n  http:\n  - route: [{{destination: {{host: reviews.example.internal, subset: v1}}}}]\n    {mirror}\n"
    )
}

const MIRROR_ALL: &str = "mirror: {host: reviews.example.internal, subset: v2}";

fn mesh(yaml: &str) -> MeshHandle {
    let report = mesh_config::Loader::new().check_str("test.yaml", yaml);
    assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
    MeshHandle::from(&report.into_mesh().unwrap())
}

fn stack_with(yaml: &str, layer: MirrorLayer) -> (Route<Mirror<Mock>>, Handle) {
    let (mock, handle) = mock::pair();
    let svc = ServiceBuilder::new()
        .layer(RouteLayer::new(mesh(yaml), ClientIdentity::default()))
        .layer(layer)
        .service(mock);
    (svc, handle)
}

fn reviews(body: MeshBody) -> Request<MeshBody> {
    Request::post("http://reviews.example.internal:9080/reviews/0")
        .header("x-request-id", "abc")
        .body(body)
        .unwrap()
}

fn subset(req: &Request<MeshBody>) -> Option<String> {
    match &req.extensions().get::<RouteCtx>()?.target {
        Target::Destination(d) => d.subset.clone(),
        Target::Passthrough { .. } => None,
    }
}

async fn text(body: MeshBody) -> String {
    String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// Takes the main request and its shadow from the mock, whichever comes first.
async fn main_and_shadow(
    handle: &mut Handle,
) -> (
    (Request<MeshBody>, mock::SendResponse<Response<MeshBody>>),
    (Request<MeshBody>, mock::SendResponse<Response<MeshBody>>),
) {
    let a = handle.next_request().await.unwrap();
    let b = handle.next_request().await.unwrap();
    if subset(&a.0).as_deref() == Some("v1") {
        (a, b)
    } else {
        (b, a)
    }
}

#[test]
fn the_shadow_host_is_suffixed_before_the_port() {
    assert_eq!(shadow_authority("reviews:9080"), "reviews-shadow:9080");
    assert_eq!(shadow_authority("reviews"), "reviews-shadow");
    assert_eq!(
        shadow_authority("reviews.default.svc.cluster.local:9080"),
        "reviews.default.svc.cluster.local-shadow:9080"
    );
    assert_eq!(shadow_authority("[::1]:80"), "[::1]-shadow:80");
    assert_eq!(shadow_authority("[::1]"), "[::1]-shadow");
}

#[tokio::test(start_paused = true)]
async fn the_copy_goes_to_the_mirror_with_a_shadow_host() {
    let (svc, mut handle) = stack_with(&yaml(MIRROR_ALL), MirrorLayer::new());
    let call = tokio::spawn(svc.oneshot(reviews(body::full("payload"))));
    // The main request comes first; the copy follows once its body has been read.
    let (main, send) = handle.next_request().await.unwrap();
    assert_eq!(subset(&main).as_deref(), Some("v1"));
    assert!(
        main.extensions()
            .get::<RouteCtx>()
            .unwrap()
            .route()
            .is_some()
    );
    assert_eq!(
        main.uri().authority().unwrap().as_str(),
        "reviews.example.internal:9080"
    );
    assert_eq!(text(main.into_body()).await, "payload");
    send.send_response(Response::new(body::full("from v1")));

    let (shadow, shadow_send) = handle.next_request().await.unwrap();
    let ctx = shadow.extensions().get::<RouteCtx>().unwrap();
    assert_eq!(subset(&shadow).as_deref(), Some("v2"));
    assert!(ctx.route().is_none(), "no route policies for the copy");
    assert_eq!(
        shadow.headers()["host"],
        "reviews.example.internal-shadow:9080"
    );
    assert_eq!(
        shadow.uri().authority().unwrap().as_str(),
        "reviews.example.internal-shadow:9080"
    );
    assert_eq!(shadow.uri().path(), "/reviews/0");
    assert_eq!(shadow.method(), "POST");
    assert_eq!(shadow.headers()["x-request-id"], "abc");
    assert_eq!(text(shadow.into_body()).await, "payload");
    shadow_send.send_response(Response::new(body::full("from v2")));

    let res = call.await.unwrap().unwrap();
    assert_eq!(text(res.into_body()).await, "from v1");
}

#[tokio::test(start_paused = true)]
async fn a_failing_mirror_does_not_touch_the_main_request() {
    let (svc, mut handle) = stack_with(&yaml(MIRROR_ALL), MirrorLayer::new());
    let call = tokio::spawn(svc.oneshot(reviews(body::empty())));
    let ((_, send), (_, shadow_send)) = main_and_shadow(&mut handle).await;
    shadow_send.send_error("mirror upstream down");
    send.send_response(Response::new(body::full("from v1")));
    let res = call.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(text(res.into_body()).await, "from v1");
}

#[tokio::test(start_paused = true)]
async fn a_hanging_mirror_does_not_delay_the_main_request() {
    let (svc, mut handle) = stack_with(&yaml(MIRROR_ALL), MirrorLayer::new());
    let start = tokio::time::Instant::now();
    let call = tokio::spawn(svc.oneshot(reviews(body::empty())));
    let ((_, send), (_shadow, _never_answered)) = main_and_shadow(&mut handle).await;
    send.send_response(Response::new(body::full("from v1")));
    let res = call.await.unwrap().unwrap();
    assert_eq!(text(res.into_body()).await, "from v1");
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn bodies_over_the_cap_are_not_mirrored() {
    let layer = MirrorLayer::new().body_cap(8);
    // Known too big from its size hint.
    let (svc, mut handle) = stack_with(&yaml(MIRROR_ALL), layer.clone());
    let call = tokio::spawn(svc.clone().oneshot(reviews(body::full("0123456789"))));
    let (main, send) = handle.next_request().await.unwrap();
    assert_eq!(text(main.into_body()).await, "0123456789");
    send.send_response(Response::new(body::empty()));
    call.await.unwrap().unwrap();
    assert_eq!(layer.skipped_bodies(), 1);

    // Found too big while streaming: the main body still streams whole.
    let chunks = ["0123", "4567", "89"].map(Bytes::from);
    let call = tokio::spawn(svc.oneshot(reviews(body::boxed(Chunked(chunks.into())))));
    let (main, send) = handle.next_request().await.unwrap();
    assert_eq!(text(main.into_body()).await, "0123456789");
    send.send_response(Response::new(body::empty()));
    call.await.unwrap().unwrap();
    assert_eq!(layer.skipped_bodies(), 2);

    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(
        matches!(handle.poll_request(), Poll::Ready(None)),
        "no copy was sent"
    );
}

#[tokio::test(start_paused = true)]
async fn streamed_bodies_under_the_cap_are_mirrored_with_trailers() {
    let (svc, mut handle) = stack_with(&yaml(MIRROR_ALL), MirrorLayer::new());
    let chunks = ["ab", "cd"].map(Bytes::from);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let body =
        body::boxed(Chunked(chunks.into()).with_trailers(std::future::ready(Some(Ok(trailers)))));
    let call = tokio::spawn(svc.oneshot(reviews(body)));
    let (main, send) = handle.next_request().await.unwrap();
    assert_eq!(text(main.into_body()).await, "abcd");
    send.send_response(Response::new(body::empty()));
    let (shadow, _) = handle.next_request().await.unwrap();
    let collected = shadow.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(collected.to_bytes(), "abcd");
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_main_body_that_fails_is_not_mirrored() {
    let (svc, mut handle) = stack_with(&yaml(MIRROR_ALL), MirrorLayer::new());
    let call = tokio::spawn(svc.oneshot(reviews(body::boxed(Failing))));
    let (main, send) = handle.next_request().await.unwrap();
    assert!(main.into_body().collect().await.is_err());
    send.send_response(Response::new(body::empty()));
    call.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(matches!(handle.poll_request(), Poll::Ready(None)));
}

async fn mirrored_of(percentage: &str, n: usize) -> usize {
    let shadows = Arc::new(AtomicUsize::new(0));
    let mut svc = ServiceBuilder::new()
        .layer(RouteLayer::new(
            mesh(&yaml(&format!(
                "{MIRROR_ALL}\n    mirrorPercentage: {{value: {percentage}}}"
            ))),
            ClientIdentity::default(),
        ))
        .layer(MirrorLayer::new())
        .service(tower::service_fn({
            let shadows = shadows.clone();
            move |req: Request<MeshBody>| {
                if req.headers().contains_key("host") {
                    shadows.fetch_add(1, Ordering::Relaxed);
                }
                async { Ok::<_, BoxError>(Response::new(body::empty())) }
            }
        }));
    for _ in 0..n {
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(reviews(body::empty()))
            .await;
        assert_eq!(res.unwrap().status(), 200);
    }
    // Paused time: the runtime runs every spawned copy before the clock moves.
    tokio::time::sleep(Duration::from_millis(1)).await;
    shadows.load(Ordering::Relaxed)
}

#[tokio::test(start_paused = true)]
async fn percentages_choose_the_mirrored_share() {
    fastrand::seed(7);
    assert_eq!(mirrored_of("0", 200).await, 0);
    assert_eq!(mirrored_of("100", 200).await, 200);
    let half = mirrored_of("50", 1_000).await;
    // sd ~ 15.8: five sigma is 421..579.
    assert!((421..=579).contains(&half), "{half} of 1000 mirrored");
}

#[tokio::test(start_paused = true)]
async fn each_mirror_has_its_own_percentage() {
    fastrand::seed(11);
    let shadows = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let counter = shadows.clone();
    let leaf = tower::service_fn(move |req: Request<MeshBody>| {
        if req.headers().get("host").is_some() {
            counter.fetch_add(1, Ordering::Relaxed);
            seen2.lock().unwrap().push(subset(&req));
        }
        async { Ok::<_, BoxError>(Response::new(body::empty())) }
    });
    let mut svc = ServiceBuilder::new()
        .layer(RouteLayer::new(
            mesh(&yaml(
                "mirrors:\n    - {destination: {host: reviews.example.internal, subset: v2}, percentage: {value: 100}}\n    - {destination: {host: reviews.example.internal, subset: v1}, percentage: {value: 0}}",
            )),
            ClientIdentity::default(),
        ))
        .layer(MirrorLayer::new())
        .service(leaf);
    for _ in 0..20 {
        svc.ready()
            .await
            .unwrap()
            .call(reviews(body::empty()))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(shadows.load(Ordering::Relaxed), 20);
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|s| s.as_deref() == Some("v2"))
    );
}

#[tokio::test(start_paused = true)]
async fn requests_without_mirrors_are_not_copied() {
    let (svc, mut handle) = stack_with(&yaml(""), MirrorLayer::new());
    let call = tokio::spawn(svc.oneshot(reviews(body::empty())));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(body::empty()));
    call.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(matches!(handle.poll_request(), Poll::Ready(None)));
}

#[tokio::test(start_paused = true)]
async fn upgrade_requests_are_not_copied() {
    let (svc, mut handle) = stack_with(&yaml(MIRROR_ALL), MirrorLayer::new());
    let mut req = reviews(body::empty());
    *req.method_mut() = http::Method::GET;
    req.headers_mut().insert(
        http::header::CONNECTION,
        HeaderValue::from_static("upgrade"),
    );
    req.headers_mut()
        .insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    let call = tokio::spawn(svc.oneshot(req));
    let (main, send) = handle.next_request().await.unwrap();
    assert_eq!(subset(&main).as_deref(), Some("v1"));
    send.send_response(Response::new(body::empty()));
    call.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(
        matches!(handle.poll_request(), Poll::Ready(None)),
        "a WebSocket upgrade was mirrored"
    );
}

/// A body of chunks with no size hint (as a chunked upload).
struct Chunked(VecDeque<Bytes>);

impl Body for Chunked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.pop_front().map(|c| Ok(http_body::Frame::data(c))))
    }
}

/// A body that fails at once.
struct Failing;

impl Body for Failing {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        Poll::Ready(Some(Err("client went away".into())))
    }
}

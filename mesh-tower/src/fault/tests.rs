use std::time::Duration;

use http::{Request, Response, StatusCode};
use mesh_core::{
    Percent,
    model::{AbortStatus, Fault as FaultPolicy, FaultAbort, FaultDelay},
};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_test::mock;

use super::*;
use crate::{
    body::{self, MeshBody},
    error::error_to_response,
    route::{ClientIdentity, Route, RouteLayer},
    snapshot::MeshHandle,
};

type Mock = mock::Mock<Request<MeshBody>, Response<MeshBody>>;
type Handle = mock::Handle<Request<MeshBody>, Response<MeshBody>>;

/// A VirtualService for `ratings.example.internal` whose only route has `fault`.
fn vs(fault: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: ratings}}\nspec:\n  hosts: [ratings.example.internal]\n  http:\n  - fault: {fault}\n    route: [{{destination: {{host: ratings.example.internal}}}}]\n"
    )
}

fn mesh(yaml: &str) -> MeshHandle {
    let report = mesh_config::Loader::new().check_str("test.yaml", yaml);
    assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
    MeshHandle::from(&report.into_mesh().unwrap())
}

/// The router, then the fault layer, over a mock.
fn stack(yaml: &str) -> (Route<Fault<Mock>>, Handle) {
    let (mock, handle) = mock::pair();
    let svc = ServiceBuilder::new()
        .layer(RouteLayer::new(mesh(yaml), ClientIdentity::default()))
        .layer(FaultLayer::new())
        .service(mock);
    (svc, handle)
}

fn get(uri: &str) -> Request<MeshBody> {
    Request::get(uri).body(body::empty()).unwrap()
}

fn ratings() -> Request<MeshBody> {
    get("http://ratings.example.internal:9080/ratings/0")
}

fn ok() -> Response<MeshBody> {
    Response::new(body::full("ok"))
}

fn percent(v: f64) -> Percent {
    Percent::new(v).unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_delay_is_exact() {
    let (svc, mut handle) = stack(&vs("{delay: {fixedDelay: 7s, percentage: {value: 100}}}"));
    let start = Instant::now();
    let call = tokio::spawn(svc.oneshot(ratings()));
    tokio::time::sleep(Duration::from_millis(6_999)).await;
    assert!(
        handle.poll_request().is_pending(),
        "forwarded before the delay ended"
    );
    let (req, send) = handle.next_request().await.expect("forwarded");
    assert_eq!(start.elapsed(), Duration::from_secs(7));
    assert_eq!(req.uri().path(), "/ratings/0");
    send.send_response(ok());
    let res = call.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(start.elapsed(), Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn zero_percent_injects_nothing() {
    let (svc, mut handle) = stack(&vs(
        "{delay: {fixedDelay: 7s, percentage: {value: 0}}, abort: {httpStatus: 500, percentage: {value: 0}}}",
    ));
    let start = Instant::now();
    for _ in 0..50 {
        let call = tokio::spawn(svc.clone().oneshot(ratings()));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(ok());
        assert_eq!(call.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn an_http_abort_answers_its_status_without_forwarding() {
    let (svc, mut handle) = stack(&vs("{abort: {httpStatus: 503, percentage: {value: 100}}}"));
    let err = svc.oneshot(ratings()).await.unwrap_err();
    assert!(matches!(
        MeshError::find(&err),
        Some(MeshError::FaultAbort {
            status: StatusCode::SERVICE_UNAVAILABLE,
            grpc_status: None
        })
    ));
    assert!(
        matches!(handle.poll_request(), Poll::Ready(None)),
        "nothing forwarded"
    );
    let res = error_to_response(err, false);
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["x-mesh-error"], "fault-abort");
}

#[tokio::test(start_paused = true)]
async fn a_grpc_abort_is_a_grpc_status() {
    let (svc, _handle) = stack(&vs(
        "{abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}",
    ));
    let err = svc.clone().oneshot(ratings()).await.unwrap_err();
    assert!(matches!(
        MeshError::find(&err),
        Some(MeshError::FaultAbort {
            status: StatusCode::OK,
            grpc_status: Some(14)
        })
    ));
    // A gRPC client: trailers-only, HTTP 200, grpc-status 14.
    let res = error_to_response(err, true);
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["grpc-status"], "14");
    // A plain HTTP client gets Envoy's local reply: the abort's HTTP status, 200.
    let err = svc.oneshot(ratings()).await.unwrap_err();
    let res = error_to_response(err, false);
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-mesh-error"], "fault-abort");
    assert!(res.headers().get("grpc-status").is_none());
}

#[tokio::test(start_paused = true)]
async fn an_abort_comes_after_the_delay() {
    let (svc, mut handle) = stack(&vs(
        "{delay: {fixedDelay: 2s, percentage: {value: 100}}, abort: {httpStatus: 418, percentage: {value: 100}}}",
    ));
    let start = Instant::now();
    let err = svc.oneshot(ratings()).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(MeshError::find(&err).unwrap().status(), 418);
    assert!(matches!(handle.poll_request(), Poll::Ready(None)));
}

/// `req` with a [`RequestTelemetry`](crate::telemetry::RequestTelemetry) whose flags the test
/// reads afterwards.
fn followed(mut req: Request<MeshBody>) -> (Request<MeshBody>, crate::telemetry::RequestTelemetry) {
    let t = crate::telemetry::RequestTelemetry::detached();
    req.extensions_mut().insert(t.clone());
    (req, t)
}

#[tokio::test(start_paused = true)]
async fn a_delayed_request_is_flagged_di_and_others_are_not() {
    let (svc, mut handle) = stack(&vs("{delay: {fixedDelay: 1s, percentage: {value: 100}}}"));
    let (req, delayed) = followed(ratings());
    let call = tokio::spawn(svc.oneshot(req));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(ok());
    assert_eq!(call.await.unwrap().unwrap().status(), 200);
    assert_eq!(delayed.flags().to_string(), "DI");

    let (svc, mut handle) = stack(&vs("{delay: {fixedDelay: 1s, percentage: {value: 0}}}"));
    let (req, not_delayed) = followed(ratings());
    let call = tokio::spawn(svc.oneshot(req));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(ok());
    assert_eq!(call.await.unwrap().unwrap().status(), 200);
    assert_eq!(not_delayed.flags().to_string(), "-");

    // An abort after the delay: `DI` here, `FI` from the reply (the telemetry layer reads it).
    let (svc, _handle) = stack(&vs(
        "{delay: {fixedDelay: 1s, percentage: {value: 100}}, abort: {httpStatus: 503, percentage: {value: 100}}}",
    ));
    let (req, aborted) = followed(ratings());
    svc.oneshot(req).await.unwrap_err();
    assert_eq!(aborted.flags().to_string(), "DI");
}

#[tokio::test(start_paused = true)]
async fn requests_without_a_route_or_fault_pass() {
    // No VirtualService for this host: Istio's default route, no route in the context.
    let (svc, mut handle) = stack(&vs("{abort: {httpStatus: 500, percentage: {value: 100}}}"));
    let call = tokio::spawn(svc.oneshot(get("http://other.example.internal/")));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(ok());
    assert_eq!(call.await.unwrap().unwrap().status(), 200);

    // Not routed at all (no RouteCtx).
    let (mock, mut handle) = mock::pair::<Request<MeshBody>, Response<MeshBody>>();
    let call = tokio::spawn(FaultLayer::new().layer(mock).oneshot(ratings()));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(ok());
    assert_eq!(call.await.unwrap().unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn half_of_the_requests_abort() {
    fastrand::seed(0x5eed);
    let leaf = tower::service_fn(|_req: Request<MeshBody>| async { Ok::<_, BoxError>(ok()) });
    let mut svc = ServiceBuilder::new()
        .layer(RouteLayer::new(
            mesh(&vs("{abort: {httpStatus: 500, percentage: {value: 50}}}")),
            ClientIdentity::default(),
        ))
        .layer(FaultLayer::new())
        .service(leaf);
    let n = 1_000;
    let mut aborted = 0;
    for _ in 0..n {
        let res = svc.ready().await.unwrap().call(ratings()).await;
        aborted += usize::from(res.is_err());
    }
    // sd = sqrt(1000 * .5 * .5) ~ 15.8: five sigma is 421..579.
    assert!((421..=579).contains(&aborted), "{aborted} of {n} aborted");
}

fn policy(delay: f64, abort: f64) -> FaultPolicy {
    FaultPolicy {
        delay: Some(FaultDelay {
            delay: Duration::from_secs(1),
            percentage: percent(delay),
        }),
        abort: Some(FaultAbort {
            status: AbortStatus::Http(StatusCode::INTERNAL_SERVER_ERROR),
            percentage: percent(abort),
        }),
    }
}

#[test]
fn fractions_are_honoured() {
    let p = policy(0.1, 0.1);
    assert!(Injection::decide(&p, 0.000_9, 0.000_9).delay.is_some());
    assert!(Injection::decide(&p, 0.001_1, 0.001_1).delay.is_none());
    assert!(Injection::decide(&p, 0.000_9, 0.000_9).abort.is_some());
    assert!(Injection::decide(&p, 0.001_1, 0.001_1).abort.is_none());
}

#[test]
fn delay_and_abort_are_independent() {
    let p = policy(50.0, 50.0);
    let mut rng = fastrand::Rng::with_seed(42);
    let mut cells = [0usize; 4];
    let n = 4_000;
    for _ in 0..n {
        let i = Injection::decide(&p, rng.f64(), rng.f64());
        cells[usize::from(i.delay.is_some()) * 2 + usize::from(i.abort.is_some())] += 1;
    }
    // Each combination is a quarter: sd = sqrt(4000 * .25 * .75) ~ 27.4, five sigma ~ 137.
    for c in cells {
        assert!((863..=1_137).contains(&c), "{cells:?}");
    }
}

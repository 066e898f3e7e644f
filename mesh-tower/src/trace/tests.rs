use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Empty};
use mesh_core::Percent;
use opentelemetry::{
    Value,
    trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tower::{ServiceBuilder, ServiceExt};

use super::{propagation::*, *};
use crate::body;

// === propagation ===

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN: &str = "00f067aa0ba902b7";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            )
        })
        .collect()
}

fn hex(sc: &SpanContext) -> (String, String) {
    (
        format!("{:032x}", sc.trace_id()),
        format!("{:016x}", sc.span_id()),
    )
}

#[test]
fn traceparent_is_read_with_its_sampled_flag_and_tracestate() {
    let h = headers(&[
        ("traceparent", &format!("00-{TRACE}-{SPAN}-01")),
        ("tracestate", "congo=t61rcWkgMzE"),
    ]);
    let ex = extract(&h).unwrap();
    assert_eq!(ex.format, Format::TraceContext);
    assert_eq!(ex.sampled, Some(true));
    let parent = ex.parent.unwrap();
    assert_eq!(hex(&parent), (TRACE.into(), SPAN.into()));
    assert!(parent.is_remote());
    assert_eq!(parent.trace_state().get("congo"), Some("t61rcWkgMzE"));

    let unsampled = extract(&headers(&[(
        "traceparent",
        &format!("00-{TRACE}-{SPAN}-00"),
    )]));
    assert_eq!(unsampled.unwrap().sampled, Some(false));
}

#[test]
fn invalid_traceparents_are_ignored() {
    for bad in [
        format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
        format!("00-{}-{SPAN}-01", "0".repeat(32)),
        format!("00-{TRACE}-{}-01", "0".repeat(16)),
        format!("ff-{TRACE}-{SPAN}-01"),
        format!("00-{TRACE}-{SPAN}-01-extra"),
        format!("00-{}-{SPAN}-01", &TRACE[..16]),
        format!("00-{TRACE}-{SPAN}-1"),
        format!("00-{TRACE}-{SPAN}"),
        "garbage".to_owned(),
    ] {
        assert_eq!(extract(&headers(&[("traceparent", &bad)])), None, "{bad}");
    }
    // A later version may carry more fields; read as version 00.
    let later = extract(&headers(&[(
        "traceparent",
        &format!("01-{TRACE}-{SPAN}-01-more"),
    )]));
    assert!(later.is_some());
}

#[test]
fn b3_single_header_forms() {
    let full = extract(&headers(&[(
        "b3",
        &format!("{TRACE}-{SPAN}-1-05e3ac9a4f6e3b90"),
    )]))
    .unwrap();
    assert_eq!(full.format, Format::B3Single);
    assert_eq!(full.sampled, Some(true));
    assert_eq!(hex(&full.parent.unwrap()), (TRACE.into(), SPAN.into()));

    let deferred = extract(&headers(&[("b3", &format!("{TRACE}-{SPAN}"))])).unwrap();
    assert_eq!(deferred.sampled, None, "no sampling state: ours decides");
    assert!(deferred.parent.is_some());

    let debug = extract(&headers(&[("b3", &format!("{TRACE}-{SPAN}-d"))])).unwrap();
    assert_eq!(debug.sampled, Some(true));

    let deny = extract(&headers(&[("b3", "0")])).unwrap();
    assert_eq!((deny.parent, deny.sampled), (None, Some(false)));

    for bad in [
        format!("{TRACE}-{SPAN}-x"),
        TRACE.to_owned(),
        format!("{TRACE}-{SPAN}-1-zz"),
        "2".to_owned(),
    ] {
        assert_eq!(extract(&headers(&[("b3", &bad)])), None, "{bad}");
    }
}

#[test]
fn b3_multi_headers_with_a_64_bit_trace_id_and_debug_flag() {
    let ex = extract(&headers(&[
        ("x-b3-traceid", "463ac35c9f6413ad"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ("x-b3-sampled", "0"),
        ("x-b3-flags", "1"),
    ]))
    .unwrap();
    assert_eq!(ex.format, Format::B3Multi);
    assert_eq!(ex.sampled, Some(true), "debug wins over sampled=0");
    let parent = ex.parent.unwrap();
    assert_eq!(
        u128::from_be_bytes(parent.trace_id().to_bytes()),
        0x463ac35c9f6413ad
    );

    let deferred = extract(&headers(&[
        ("x-b3-traceid", "463ac35c9f6413ad"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
    ]))
    .unwrap();
    assert_eq!(deferred.sampled, None);

    let decision_only = extract(&headers(&[("x-b3-sampled", "1")])).unwrap();
    assert_eq!(
        (decision_only.parent, decision_only.sampled),
        (None, Some(true))
    );

    assert_eq!(
        extract(&headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "xyz")
        ])),
        None
    );
}

#[test]
fn traceparent_wins_over_b3() {
    let ex = extract(&headers(&[
        ("traceparent", &format!("00-{TRACE}-{SPAN}-01")),
        ("x-b3-traceid", "463ac35c9f6413ad"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
    ]))
    .unwrap();
    assert_eq!(ex.format, Format::TraceContext);
    assert_eq!(hex(&ex.parent.unwrap()).0, TRACE);
}

fn span(trace: u128, span: u64, sampled: bool) -> SpanContext {
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::NOT_SAMPLED
    };
    SpanContext::new(
        TraceId::from(trace),
        SpanId::from(span),
        flags,
        false,
        TraceState::NONE,
    )
}

#[test]
fn inject_writes_w3c_and_b3_multi_and_keeps_a_64_bit_trace_id_short() {
    let mut h = headers(&[
        ("x-b3-parentspanid", "1111111111111111"),
        ("x-b3-flags", "1"),
    ]);
    inject(&mut h, &span(0x463ac35c9f6413ad, 0xb7, true), None);
    assert_eq!(
        h["traceparent"],
        "00-0000000000000000463ac35c9f6413ad-00000000000000b7-01"
    );
    assert_eq!(h["x-b3-traceid"], "463ac35c9f6413ad");
    assert_eq!(h["x-b3-spanid"], "00000000000000b7");
    assert_eq!(h["x-b3-sampled"], "1");
    assert_eq!(h["x-b3-flags"], "1", "a debug trace stays one");
    assert!(
        !h.contains_key("x-b3-parentspanid"),
        "a stale parent is removed"
    );
    assert!(!h.contains_key("b3"), "b3 only when the caller used it");

    let mut h = headers(&[("b3", "whatever")]);
    let trace = u128::from_str_radix(TRACE, 16).unwrap();
    inject(&mut h, &span(trace, 0xb7, false), Some(SpanId::from(0xa)));
    assert_eq!(h["x-b3-traceid"], TRACE);
    assert_eq!(h["x-b3-sampled"], "0");
    assert_eq!(h["x-b3-parentspanid"], "000000000000000a");
    assert_eq!(
        h["b3"],
        format!("{TRACE}-00000000000000b7-0-000000000000000a")
    );
    assert!(h["traceparent"].to_str().unwrap().ends_with("-00"));
}

// === the layer ===

fn traced(percent: f64) -> (Tracing, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let tracing = Tracing::from_provider(provider, Percent::new(percent).unwrap());
    (tracing, exporter)
}

/// The headers each request reached the app with.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<HeaderMap>>>;

/// An app that answers `status` and hands back the headers it received.
type App =
    tower::util::BoxCloneService<Request<Empty<Bytes>>, Response<body::MeshBody>, Infallible>;

fn echo_app(status: u16) -> (App, Seen) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let svc = tower::service_fn(move |req: Request<Empty<Bytes>>| {
        record.lock().unwrap().push(req.headers().clone());
        async move {
            let mut res = Response::new(body::full("ok"));
            *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
            Ok::<_, Infallible>(res)
        }
    });
    (App::new(svc), seen)
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn attr_str(span: &SpanData, key: &str) -> String {
    attr(span, key)
        .map(|v| v.as_str().into_owned())
        .unwrap_or_default()
}

async fn call<S>(svc: S, req: Request<Empty<Bytes>>) -> Response<body::MeshBody>
where
    S: tower::Service<Request<Empty<Bytes>>, Response = Response<body::MeshBody>>,
    S::Error: std::fmt::Debug,
{
    svc.oneshot(req).await.unwrap()
}

#[tokio::test]
async fn a_sampled_server_span_continues_the_callers_trace_and_is_passed_to_the_app() {
    let (tracing, exporter) = traced(100.0);
    let (app, seen) = echo_app(200);
    let svc = ServiceBuilder::new()
        .layer(
            TraceLayer::inbound(&tracing)
                .namespace("bookinfo")
                .workload_labels([("app", "ratings"), ("version", "v1")]),
        )
        .service(app);
    let req = Request::get("/ratings/0?x=1")
        .header("host", "ratings:9080")
        .header("user-agent", "curl/8")
        .header("x-request-id", "req-1")
        .header("traceparent", format!("00-{TRACE}-{SPAN}-01"))
        .body(Empty::new())
        .unwrap();
    let res = call(svc, req).await;
    assert!(
        exporter.get_finished_spans().unwrap().is_empty(),
        "ends with the body"
    );
    res.into_body().collect().await.unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    assert_eq!(s.span_kind, SpanKind::Server);
    assert_eq!(s.name, "ratings:9080/*");
    assert_eq!(format!("{:032x}", s.span_context.trace_id()), TRACE);
    assert_eq!(format!("{:016x}", s.parent_span_id), SPAN);
    assert!(s.parent_span_is_remote);
    for (k, v) in [
        ("http.request.method", "GET"),
        ("url.path", "/ratings/0"),
        ("url.query", "x=1"),
        ("server.address", "ratings"),
        ("network.protocol.version", "1.1"),
        ("user_agent.original", "curl/8"),
        ("guid:x-request-id", "req-1"),
        ("istio.canonical_service", "ratings"),
        ("istio.canonical_revision", "v1"),
        ("istio.namespace", "bookinfo"),
        ("istio.mesh_id", "cluster.local"),
        ("upstream_cluster", "inbound|9080||"),
        ("response_flags", "-"),
        ("component", "proxy"),
    ] {
        assert_eq!(attr_str(s, k), v, "{k}");
    }
    assert_eq!(attr(s, "http.response.status_code"), Some(&Value::I64(200)));
    assert_eq!(attr(s, "server.port"), Some(&Value::I64(9080)));
    assert_eq!(s.status, Status::Unset);

    // The app continues from the server span, in both formats.
    let h = &seen.lock().unwrap()[0];
    let span_id = format!("{:016x}", s.span_context.span_id());
    assert_eq!(h["traceparent"], format!("00-{TRACE}-{span_id}-01"));
    assert_eq!(h["x-b3-traceid"], TRACE);
    assert_eq!(h["x-b3-spanid"], span_id.as_str());
    assert_eq!(h["x-b3-parentspanid"], SPAN);
    assert_eq!(h["x-b3-sampled"], "1");
    assert_eq!(h["x-request-id"], "req-1", "kept");
}

#[tokio::test]
async fn unsampled_requests_export_nothing_but_carry_the_decision_on() {
    let (tracing, exporter) = traced(0.0);
    let (app, seen) = echo_app(200);
    let svc = TraceLayer::inbound(&tracing).layer(app);
    call(svc.clone(), Request::get("/").body(Empty::new()).unwrap())
        .await
        .into_body()
        .collect()
        .await
        .unwrap();
    // A caller's "not sampled" holds too, whatever our percentage.
    let (tracing100, exporter100) = traced(100.0);
    let (app100, seen100) = echo_app(200);
    let svc100 = TraceLayer::inbound(&tracing100).layer(app100);
    let req = Request::get("/")
        .header("traceparent", format!("00-{TRACE}-{SPAN}-00"))
        .body(Empty::new())
        .unwrap();
    call(svc100, req).await.into_body().collect().await.unwrap();

    assert!(exporter.get_finished_spans().unwrap().is_empty());
    assert!(exporter100.get_finished_spans().unwrap().is_empty());
    let h = &seen.lock().unwrap()[0];
    assert!(h["traceparent"].to_str().unwrap().ends_with("-00"));
    assert_eq!(h["x-b3-sampled"], "0");
    assert!(
        !h.contains_key("x-request-id"),
        "left to the edge when unsampled"
    );
    let h = &seen100.lock().unwrap()[0];
    assert!(
        h["traceparent"].to_str().unwrap().contains(TRACE),
        "same trace"
    );
    assert_eq!(h["x-b3-parentspanid"], SPAN);
    assert_eq!(h["x-b3-sampled"], "0");
}

#[tokio::test]
async fn the_callers_sampled_decision_wins_over_zero_percent() {
    let (tracing, exporter) = traced(0.0);
    let (app, _) = echo_app(200);
    let svc = TraceLayer::inbound(&tracing).layer(app);
    for h in [
        ("x-b3-sampled", "1"),
        ("b3", "463ac35c9f6413ad-a2fb4a1d1a96d312-1"),
    ] {
        let req = Request::get("/")
            .header("x-b3-traceid", "463ac35c9f6413ad")
            .header("x-b3-spanid", "a2fb4a1d1a96d312")
            .header(h.0, h.1)
            .body(Empty::new())
            .unwrap();
        call(svc.clone(), req)
            .await
            .into_body()
            .collect()
            .await
            .unwrap();
    }
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 2);
    for s in &spans {
        assert_eq!(
            u128::from_be_bytes(s.span_context.trace_id().to_bytes()),
            0x463ac35c9f6413ad
        );
        assert_eq!(s.parent_span_id, SpanId::from(0xa2fb4a1d1a96d312));
    }
}

#[tokio::test]
async fn a_deferred_b3_decision_is_ours_and_keeps_the_trace_id() {
    let (tracing, exporter) = traced(100.0);
    let (app, seen) = echo_app(200);
    let svc = TraceLayer::inbound(&tracing).layer(app);
    let req = Request::get("/")
        .header("x-b3-traceid", "463ac35c9f6413ad")
        .header("x-b3-spanid", "a2fb4a1d1a96d312")
        .body(Empty::new())
        .unwrap();
    call(svc, req).await.into_body().collect().await.unwrap();
    assert_eq!(exporter.get_finished_spans().unwrap().len(), 1);
    let h = &seen.lock().unwrap()[0];
    assert_eq!(h["x-b3-traceid"], "463ac35c9f6413ad");
    assert_eq!(h["x-b3-sampled"], "1");
}

#[tokio::test]
async fn a_server_span_is_an_error_for_5xx_and_a_request_id_is_made_when_missing() {
    let (tracing, exporter) = traced(100.0);
    let (app, seen) = echo_app(503);
    let svc = TraceLayer::inbound(&tracing).layer(app);
    call(svc, Request::get("/").body(Empty::new()).unwrap())
        .await
        .into_body()
        .collect()
        .await
        .unwrap();
    let s = &exporter.get_finished_spans().unwrap()[0];
    assert!(matches!(s.status, Status::Error { .. }), "{:?}", s.status);
    let id = seen.lock().unwrap()[0]["x-request-id"].clone();
    assert_eq!(attr_str(s, "guid:x-request-id"), id.to_str().unwrap());
    assert_eq!(
        s.parent_span_id,
        SpanId::INVALID,
        "a new trace: a root span"
    );
}

#[tokio::test]
async fn a_response_dropped_before_its_end_is_flagged_dc() {
    let (tracing, exporter) = traced(100.0);
    let (app, _) = echo_app(200);
    let svc = TraceLayer::inbound(&tracing).layer(app);
    let res = call(svc, Request::get("/").body(Empty::new()).unwrap()).await;
    drop(res);
    let s = &exporter.get_finished_spans().unwrap()[0];
    assert_eq!(attr_str(s, "response_flags"), "DC");
    assert!(matches!(s.status, Status::Error { .. }));
}

fn mesh(yaml: &str) -> mesh_config::Mesh {
    let report = mesh_config::Loader::new().check_str("trace.yaml", yaml);
    assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
    report.into_mesh().unwrap()
}

const REVIEWS: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  subsets: [{name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /reviews}}]
    route:
    - destination: {host: reviews, subset: v2}
"#;

#[tokio::test]
async fn a_fault_delay_shows_in_the_spans_response_flags() {
    let (tracing, exporter) = traced(100.0);
    let delayed = REVIEWS.replace(
        "  - match: [{uri: {prefix: /reviews}}]\n",
        "  - match: [{uri: {prefix: /reviews}}]\n    fault: {delay: {fixedDelay: 1ms, percentage: {value: 100}}}\n",
    );
    let leaf = tower::service_fn(|_req: Request<body::MeshBody>| async {
        Ok::<_, body::BoxError>(Response::new(body::full("ok")))
    });
    let client = crate::MeshStack::outbound(&mesh(&delayed))
        .tracing(tracing.clone())
        .build_over::<Empty<Bytes>, _>(leaf);
    let req = Request::get("http://reviews:9080/reviews/0")
        .body(Empty::new())
        .unwrap();
    let res = call(client, req).await;
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(attr_str(&spans[0], "response_flags"), "DI");
}

#[tokio::test]
async fn the_outbound_stack_makes_client_spans_named_after_the_routed_cluster() {
    let (tracing, exporter) = traced(100.0);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let leaf = tower::service_fn(move |req: Request<body::MeshBody>| {
        record.lock().unwrap().push(req.headers().clone());
        async { Ok::<_, body::BoxError>(Response::new(body::full("ok"))) }
    });
    let client = crate::MeshStack::outbound(&mesh(REVIEWS))
        .workload_labels([("app", "productpage")])
        .tracing(tracing.clone())
        .build_over::<Empty<Bytes>, _>(leaf);
    let req = Request::get("http://reviews:9080/reviews/0")
        .body(Empty::new())
        .unwrap();
    call(client.clone(), req)
        .await
        .into_body()
        .collect()
        .await
        .unwrap();
    let req = Request::get("http://reviews:9080/other")
        .body(Empty::new())
        .unwrap();
    let res = call(client, req).await;
    assert_eq!(res.status(), 404);
    res.into_body().collect().await.unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 2);
    let ok = &spans[0];
    assert_eq!(ok.span_kind, SpanKind::Client);
    assert_eq!(ok.name, "reviews.default.svc.cluster.local:9080/*");
    assert_eq!(
        attr_str(ok, "upstream_cluster"),
        "outbound|9080|v2|reviews.default.svc.cluster.local"
    );
    assert_eq!(attr_str(ok, "istio.canonical_service"), "productpage");
    let h = &seen.lock().unwrap()[0];
    assert_eq!(
        h["x-b3-spanid"],
        format!("{:016x}", ok.span_context.span_id()).as_str(),
        "the upstream request carries the client span"
    );
    assert!(h.contains_key("x-request-id"));

    let nr = &spans[1];
    assert_eq!(attr_str(nr, "response_flags"), "NR");
    assert_eq!(
        attr(nr, "http.response.status_code"),
        Some(&Value::I64(404))
    );
    assert!(
        matches!(nr.status, Status::Error { .. }),
        "4xx fails a client span"
    );
    assert_eq!(attr(nr, "upstream_cluster"), None, "no route, no cluster");
}

#[tokio::test]
async fn sampling_percentages_between_none_and_all() {
    let (tracing, exporter) = traced(50.0);
    let (app, _) = echo_app(200);
    let svc = TraceLayer::inbound(&tracing).layer(app);
    for _ in 0..400 {
        call(svc.clone(), Request::get("/").body(Empty::new()).unwrap())
            .await
            .into_body()
            .collect()
            .await
            .unwrap();
    }
    let n = exporter.get_finished_spans().unwrap().len();
    // Binomial(400, 0.5): 200 ± 20 is ±2σ; ±60 fails once in a blue moon.
    assert!((140..=260).contains(&n), "{n} of 400 sampled at 50%");
}

#[test]
fn the_batch_exporter_flushes_and_drops_on_a_current_thread_runtime() {
    // The SDK's shutdown blocks until its batch task answers: on the runtime's only thread it
    // would wait forever. Run on a thread of its own so that a hang fails the test.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let spans = rt.block_on(async {
            let exporter = InMemorySpanExporter::default();
            let tracing = Tracing::exporter(exporter.clone())
                .sampling(Percent::HUNDRED)
                .build();
            let (app, _) = echo_app(200);
            let svc = TraceLayer::inbound(&tracing).layer(app);
            call(svc, Request::get("/").body(Empty::new()).unwrap())
                .await
                .into_body()
                .collect()
                .await
                .unwrap();
            tracing.flush(std::time::Duration::from_secs(5)).await;
            let spans = exporter.get_finished_spans().unwrap().len();
            drop(tracing);
            spans
        });
        let _ = done.send(spans);
    });
    let spans = finished
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("flushed and dropped within 20 s");
    assert_eq!(spans, 1);
}

//! Traces across two sidecars over real sockets: one trace, the client workload's `CLIENT`
//! span the parent of the server workload's `SERVER` span, the app handed the server span's
//! context; and a B3-only caller's trace id kept end to end.

mod sidecars;
mod support;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Empty};
use mesh_core::Percent;
use mesh_tower::trace::Tracing;
use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tower::ServiceExt;

use sidecars::{Options, eventually};

/// A tracer whose spans are kept in memory as they end.
fn traced(percent: f64) -> (Tracing, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    (
        Tracing::from_provider(provider, Percent::new(percent).unwrap()),
        exporter,
    )
}

fn one_span(exporter: &InMemorySpanExporter) -> Option<SpanData> {
    let mut spans = exporter.get_finished_spans().unwrap();
    (spans.len() == 1).then(|| spans.remove(0))
}

fn attr(span: &SpanData, key: &str) -> String {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
        .unwrap_or_default()
}

/// The request headers the app saw (echoed back as `x-echo-<name>`).
fn echoed(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(format!("x-echo-{name}"))
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_through_two_sidecars_is_one_trace_of_client_and_server_spans() {
    let (client_tracing, client_spans) = traced(100.0);
    let (server_tracing, server_spans) = traced(100.0);
    let mesh = sidecars::start(Options {
        client_tracing: Some(client_tracing),
        server_tracing: Some(server_tracing),
        ..Options::default()
    })
    .await;

    let req = Request::get("http://reviews:9080/reviews/0")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = mesh.client.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let app_saw = res.headers().clone();
    res.into_body().collect().await.unwrap();

    let client = eventually(|| one_span(&client_spans)).await;
    let server = eventually(|| one_span(&server_spans)).await;
    assert_eq!(client.span_kind, SpanKind::Client);
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(client.parent_span_id, SpanId::INVALID, "a new trace");
    assert_eq!(
        server.span_context.trace_id(),
        client.span_context.trace_id(),
        "one trace"
    );
    assert_eq!(server.parent_span_id, client.span_context.span_id());
    assert!(server.parent_span_is_remote);

    assert_eq!(client.name, "reviews.default.svc.cluster.local:9080/*");
    assert_eq!(
        attr(&client, "upstream_cluster"),
        "outbound|9080||reviews.default.svc.cluster.local"
    );
    assert_eq!(attr(&client, "istio.canonical_service"), "productpage");
    assert_eq!(attr(&server, "istio.canonical_service"), "reviews");
    assert_eq!(attr(&server, "http.request.method"), "GET");
    assert_eq!(attr(&server, "url.path"), "/reviews/0");
    let id = attr(&client, "guid:x-request-id");
    assert!(!id.is_empty());
    assert_eq!(attr(&server, "guid:x-request-id"), id, "one x-request-id");

    // The app continues from the server span, in W3C and B3.
    let trace = format!("{:032x}", server.span_context.trace_id());
    let span = format!("{:016x}", server.span_context.span_id());
    assert_eq!(
        echoed(&app_saw, "traceparent"),
        format!("00-{trace}-{span}-01")
    );
    assert_eq!(echoed(&app_saw, "x-b3-traceid"), trace);
    assert_eq!(echoed(&app_saw, "x-b3-spanid"), span);
    assert_eq!(
        echoed(&app_saw, "x-b3-parentspanid"),
        format!("{:016x}", client.span_context.span_id())
    );
    assert_eq!(echoed(&app_saw, "x-request-id"), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_b3_only_callers_trace_id_and_decision_are_kept() {
    // 0%: only the caller's `x-b3-sampled: 1` gets these requests traced.
    let (client_tracing, client_spans) = traced(0.0);
    let (server_tracing, server_spans) = traced(0.0);
    let mesh = sidecars::start(Options {
        client_tracing: Some(client_tracing),
        server_tracing: Some(server_tracing),
        ..Options::default()
    })
    .await;

    let req = Request::get("http://reviews:9080/reviews/1")
        .header("x-b3-traceid", "80f198ee56343ba8")
        .header("x-b3-spanid", "e457b5a2e4d86bd1")
        .header("x-b3-sampled", "1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = mesh.client.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let app_saw = res.headers().clone();
    res.into_body().collect().await.unwrap();

    let client = eventually(|| one_span(&client_spans)).await;
    let server = eventually(|| one_span(&server_spans)).await;
    let caller = TraceId::from(0x80f198ee56343ba8_u128);
    assert_eq!(client.span_context.trace_id(), caller);
    assert_eq!(server.span_context.trace_id(), caller);
    assert_eq!(client.parent_span_id, SpanId::from(0xe457b5a2e4d86bd1));
    assert_eq!(server.parent_span_id, client.span_context.span_id());
    // The app gets the 64-bit id back as the caller wrote it.
    assert_eq!(echoed(&app_saw, "x-b3-traceid"), "80f198ee56343ba8");
    assert_eq!(echoed(&app_saw, "x-b3-sampled"), "1");

    // Unsampled by the caller: nothing recorded, the decision passed on.
    let req = Request::get("http://reviews:9080/reviews/2")
        .header("x-b3-traceid", "80f198ee56343ba8")
        .header("x-b3-spanid", "e457b5a2e4d86bd1")
        .header("x-b3-sampled", "0")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = mesh.client.clone().oneshot(req).await.unwrap();
    let app_saw = res.headers().clone();
    res.into_body().collect().await.unwrap();
    assert_eq!(echoed(&app_saw, "x-b3-traceid"), "80f198ee56343ba8");
    assert_eq!(echoed(&app_saw, "x-b3-sampled"), "0");
    assert_eq!(client_spans.get_finished_spans().unwrap().len(), 1);
    assert_eq!(server_spans.get_finished_spans().unwrap().len(), 1);
}

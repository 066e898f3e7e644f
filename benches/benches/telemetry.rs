//! The cost of Istio's standard metrics: the outbound stack (`build_over` an in-memory leaf that
//! answers 200 with a 5-byte body) with the telemetry layer off, on with no recorder installed
//! (the `metrics` facade's no-op), and on with a Prometheus recorder (the one `mesh run`
//! installs, with Istio's buckets).
//!
//! Each iteration clones a prepared request, calls the stack, polls the response future once
//! and reads the body to its end with a no-op waker: the leaf answers at once, so what is
//! measured is the stacks, not a runtime. The body is read because the metrics are recorded
//! when it ends. After criterion's measurements, a plain timed loop prints the overhead per
//! request and the ratio to the stack without the layer.
//!
//! `cargo bench -p mesh-benches --bench telemetry` (add `-- --quick` for a fast pass).

use std::{
    future::Future,
    hint::black_box,
    pin::pin,
    task::{Context, Poll, Waker},
    time::Instant,
};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use mesh_tower::{
    MeshService, MeshStack,
    body::{self, BoxError, MeshBody},
    telemetry::{HISTOGRAM_BUCKETS, HISTOGRAMS},
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tower::{Service, service_fn};

const MESH: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, labels: {app: reviews, version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http:
  - route: [{destination: {host: reviews.default.svc.cluster.local}}]
"#;

fn leaf(_req: Request<MeshBody>) -> std::future::Ready<Result<Response<MeshBody>, BoxError>> {
    std::future::ready(Ok(Response::new(body::full("hello"))))
}

fn stack(telemetry: bool) -> MeshService<Empty<Bytes>> {
    let report = mesh_config::Loader::new().check_str("bench.yaml", MESH);
    assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
    let mesh = report.into_mesh().expect("the config loads");
    MeshStack::outbound(&mesh)
        .namespace("default")
        .workload_labels([("app", "productpage"), ("version", "v1")])
        .telemetry(telemetry)
        .build_over(service_fn(leaf))
}

/// One request through `svc`, its body read to the end; the body's length.
fn request(svc: &mut MeshService<Empty<Bytes>>, req: &Request<Empty<Bytes>>) -> usize {
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        svc.poll_ready(&mut cx).is_ready(),
        "the stack is always ready"
    );
    let Poll::Ready(Ok(res)) = pin!(svc.call(req.clone())).poll(&mut cx) else {
        panic!("the in-memory leaf answers at once");
    };
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut len = 0;
    loop {
        match pin!(body.frame()).poll(&mut cx) {
            Poll::Ready(Some(frame)) => {
                len += frame
                    .expect("an in-memory body")
                    .data_ref()
                    .map_or(0, |d| d.len());
            }
            Poll::Ready(None) => return len,
            Poll::Pending => panic!("an in-memory body is ready at once"),
        }
    }
}

fn prometheus() -> metrics_exporter_prometheus::PrometheusRecorder {
    HISTOGRAMS
        .iter()
        .try_fold(PrometheusBuilder::new(), |b, name| {
            b.set_buckets_for_metric(Matcher::Full((*name).to_owned()), &HISTOGRAM_BUCKETS)
        })
        .expect("Istio's buckets")
        .build_recorder()
}

/// Nanoseconds per request over `n` requests, after a warm-up.
fn timed(svc: &mut MeshService<Empty<Bytes>>, req: &Request<Empty<Bytes>>, n: u32) -> f64 {
    for _ in 0..n / 10 {
        black_box(request(svc, req));
    }
    let start = Instant::now();
    for _ in 0..n {
        black_box(request(svc, req));
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn telemetry_overhead(c: &mut Criterion) {
    // Layers use tokio's clock; give them a runtime context (nothing is spawned on it).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let _rt = rt.enter();
    let req = Request::get("http://reviews.default.svc.cluster.local:9080/reviews/1")
        .body(Empty::new())
        .expect("a request");
    let recorder = prometheus();
    let handle = recorder.handle();

    let mut group = c.benchmark_group("telemetry/outbound");
    let mut without = stack(false);
    group.bench_function("without", |b| b.iter(|| request(&mut without, &req)));
    let mut noop = stack(true);
    group.bench_function("with_noop_recorder", |b| {
        b.iter(|| request(&mut noop, &req))
    });
    let mut with = {
        // Series are registered with the recorder in place when first seen.
        let _local = metrics::set_default_local_recorder(&recorder);
        let mut svc = stack(true);
        request(&mut svc, &req);
        svc
    };
    group.bench_function("with_prometheus", |b| {
        let _local = metrics::set_default_local_recorder(&recorder);
        b.iter(|| request(&mut with, &req))
    });
    group.finish();
    assert!(
        handle
            .render()
            .contains("istio_request_duration_milliseconds_bucket"),
        "the Prometheus recorder saw the requests"
    );

    let n = 200_000;
    let base = timed(&mut without, &req, n);
    let noop = timed(&mut noop, &req, n);
    let prom = {
        let _local = metrics::set_default_local_recorder(&recorder);
        timed(&mut with, &req, n)
    };
    println!("telemetry overhead over {n} requests (outbound stack, 1 route, 5-byte body):");
    println!("  without the layer:       {base:8.0} ns/request");
    for (name, ns) in [("no-op recorder", noop), ("Prometheus recorder", prom)] {
        println!(
            "  with, {name:<19} {ns:8.0} ns/request: +{:.0} ns, ratio {:.2}",
            ns - base,
            ns / base
        );
    }
}

criterion_group!(benches, telemetry_overhead);
criterion_main!(benches);

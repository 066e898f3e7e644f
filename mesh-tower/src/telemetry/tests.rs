use std::{collections::BTreeMap, future::pending, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::{Service, ServiceExt};

use super::{
    labels::{self, Dest, Outcome, Protocol, Security, Workload},
    *,
};
use crate::{
    MeshStack,
    body::{self, BoxError, MeshBody},
};

// === helpers ===

/// One recorded series: name, labels, value.
#[derive(Debug)]
struct Metric {
    name: String,
    labels: BTreeMap<String, String>,
    value: DebugValue,
}

/// Series named `name` whose labels include every pair of `with`.
fn find<'a>(metrics: &'a [Metric], name: &str, with: &[(&str, &str)]) -> Vec<&'a Metric> {
    metrics
        .iter()
        .filter(|m| m.name == name)
        .filter(|m| {
            with.iter()
                .all(|(k, v)| m.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

fn snapshot(s: &Snapshotter) -> Vec<Metric> {
    s.snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| Metric {
            name: key.key().name().to_owned(),
            labels: key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect(),
            value,
        })
        .collect()
}

fn counter(m: &Metric) -> u64 {
    match m.value {
        DebugValue::Counter(n) => n,
        ref v => panic!("{} is not a counter: {v:?}", m.name),
    }
}

fn histogram(m: &Metric) -> Vec<f64> {
    match &m.value {
        DebugValue::Histogram(v) => v.iter().map(|f| f.0).collect(),
        v => panic!("{} is not a histogram: {v:?}", m.name),
    }
}

fn mesh(yaml: &str) -> mesh_config::Mesh {
    let report = mesh_config::Loader::new().check_str("telemetry.yaml", yaml);
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
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2, namespace: default}
spec:
  address: 127.0.0.1
  labels: {app: reviews, version: v2}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: bookinfo}
spec:
  selector: {app: ratings}
  ports: [{port: 9080, name: http}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http:
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: reviews.default.svc.cluster.local}}]
  - match: [{uri: {prefix: /slow}}]
    timeout: 1s
    route: [{destination: {host: reviews.default.svc.cluster.local}}]
  - match: [{uri: {prefix: /reviews}}]
    route: [{destination: {host: reviews.default.svc.cluster.local}}]
"#;

type Leaf = tower::util::BoxCloneService<Request<MeshBody>, Response<MeshBody>, BoxError>;

/// A leaf that reads the request body, waits `delay` (`Duration::MAX`: forever), and answers
/// `body`.
fn leaf(delay: Duration, body: &'static str) -> Leaf {
    Leaf::new(tower::service_fn(
        move |req: Request<MeshBody>| async move {
            req.into_body().collect().await?;
            if delay == Duration::MAX {
                pending::<()>().await;
            }
            tokio::time::sleep(delay).await;
            Ok(Response::new(body::full(body)))
        },
    ))
}

fn productpage(mesh: &mesh_config::Mesh, leaf: Leaf) -> crate::MeshService<Full<Bytes>> {
    MeshStack::outbound(mesh)
        .namespace("default")
        .workload_labels([
            ("app", "productpage"),
            ("version", "v1"),
            ("service.istio.io/workload-name", "productpage-v1"),
        ])
        .build_over(leaf)
}

fn get(uri: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post(uri)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

// === flags ===

#[test]
fn flags_print_as_envoy_does() {
    let cases = [
        (ResponseFlags::NONE, "-"),
        (ResponseFlags::NO_HEALTHY_UPSTREAM, "UH"),
        (
            ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION
                | ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
            "UT,DC",
        ),
        (
            ResponseFlags::FAULT_INJECTED | ResponseFlags::DELAY_INJECTED,
            "DI,FI",
        ),
        (ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED, "URX"),
        (ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE, "UAEX"),
    ];
    for (flags, text) in cases {
        assert_eq!(flags.to_string(), text);
    }
}

#[test]
fn local_replies_map_to_envoys_flags() {
    // DESIGN.md's table of `x-mesh-error` values, and what Envoy flags for each.
    let cases = [
        ("no-route", "NR"),
        ("no-healthy-upstream", "UH"),
        ("upstream-connect-failure", "UF"),
        ("upstream-timeout", "UT"),
        ("rate-limited", "RL"),
        ("rbac-denied", "-"),
        ("fault-abort", "FI"),
        ("overflow", "UO"),
        ("registry-only", "-"),
        ("something-new", "-"),
    ];
    for (code, flags) in cases {
        assert_eq!(
            ResponseFlags::from_mesh_error(code).to_string(),
            flags,
            "{code}"
        );
    }
}

// === labels ===

/// istio.io's list of labels (Istio Standard Metrics, "Labels"), written out here on its own so
/// that the test compares the code against the documentation, not against itself.
const DOCUMENTED: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "request_protocol",
    "response_code",
    "connection_security_policy",
    "response_flags",
    "source_canonical_service",
    "source_canonical_revision",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "source_cluster",
    "grpc_response_status",
];

fn outcome(protocol: Protocol, code: Option<u16>, security: Security) -> Outcome {
    Outcome {
        protocol,
        code,
        grpc_status: None,
        flags: ResponseFlags::NONE,
        security,
    }
}

#[test]
fn the_label_names_are_istios_documented_set() {
    let local = Workload::unknown();
    let dest = Dest::unknown();
    let http: Vec<&str> = DOCUMENTED.to_vec();
    let tcp: Vec<&str> = DOCUMENTED
        .iter()
        .copied()
        .filter(|l| *l != "response_code" && *l != "grpc_response_status")
        .collect();
    let cases = [
        (
            Reporter::Source,
            outcome(Protocol::Http, Some(200), Security::Unknown),
            &http,
        ),
        (
            Reporter::Destination,
            outcome(Protocol::Grpc, Some(200), Security::None),
            &http,
        ),
        (
            Reporter::Source,
            outcome(Protocol::Tcp, None, Security::Unknown),
            &tcp,
        ),
        (
            Reporter::Destination,
            outcome(Protocol::Tcp, None, Security::MutualTls),
            &tcp,
        ),
    ];
    for (reporter, outcome, expected) in cases {
        let mut got: Vec<String> = labels::labels(reporter, &local, &local, &dest, &outcome)
            .iter()
            .map(|l| l.key().to_owned())
            .collect();
        got.sort();
        let mut want: Vec<&str> = expected.clone();
        want.sort();
        assert_eq!(got, want, "{reporter:?} {:?}", outcome.protocol);
    }
    let mut exported = HTTP_LABELS.to_vec();
    exported.sort();
    let mut documented = DOCUMENTED.to_vec();
    documented.sort();
    assert_eq!(exported, documented);
}

fn values(
    reporter: Reporter,
    local: &Workload,
    peer: &Workload,
    dest: &Dest,
    outcome: &Outcome,
) -> BTreeMap<String, String> {
    labels::labels(reporter, local, peer, dest, outcome)
        .iter()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect()
}

#[test]
fn labels_are_filled_as_istios_stats_filter_fills_them() {
    let mesh = mesh(REVIEWS);
    let registry = &mesh.compiled().services;
    let reviews = registry
        .iter()
        .find(|s| s.hostname.as_str() == "reviews.default.svc.cluster.local")
        .unwrap();
    let ratings = registry
        .iter()
        .find(|s| s.hostname.as_str() == "ratings.bookinfo.svc.cluster.local")
        .unwrap();
    let productpage = Workload::from_labels(
        "default",
        &[
            ("app", "productpage"),
            ("version", "v1"),
            ("service.istio.io/workload-name", "productpage-v1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        None,
    );
    let canonical = Workload::from_labels(
        "shop",
        &[
            ("app", "cart"),
            ("version", "v3"),
            ("service.istio.io/canonical-name", "cart-svc"),
            ("service.istio.io/canonical-revision", "2024-01"),
            ("topology.istio.io/cluster", "east"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        None,
    );
    let k8s_name = Workload::from_labels(
        "shop",
        &[
            ("app.kubernetes.io/name", "cart"),
            ("app.kubernetes.io/version", "1.2"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        None,
    );
    let reviews_v2 = Workload::from_endpoint(&reviews.endpoints[0], reviews);
    let mtls_peer = Workload::from_principal("cluster.local/ns/bookinfo/sa/productpage");
    let http = outcome(Protocol::Http, Some(200), Security::Unknown);
    let grpc = Outcome {
        grpc_status: Some(14),
        flags: ResponseFlags::NO_HEALTHY_UPSTREAM,
        ..outcome(Protocol::Grpc, Some(200), Security::Unknown)
    };
    let unknown = Workload::unknown();
    struct Case<'a> {
        name: &'a str,
        reporter: Reporter,
        local: &'a Workload,
        peer: &'a Workload,
        dest: Dest,
        outcome: Outcome,
        want: Vec<(&'a str, &'a str)>,
    }
    let cases = [
        Case {
            name: "client side, to a registry endpoint",
            reporter: Reporter::Source,
            local: &productpage,
            peer: &reviews_v2,
            dest: Dest::service(reviews),
            outcome: http,
            want: vec![
                ("reporter", "source"),
                ("source_workload", "productpage-v1"),
                ("source_workload_namespace", "default"),
                ("source_app", "productpage"),
                ("source_version", "v1"),
                ("source_canonical_service", "productpage"),
                ("source_canonical_revision", "v1"),
                ("source_principal", "unknown"),
                ("destination_workload", "reviews-v2"),
                ("destination_workload_namespace", "default"),
                ("destination_app", "reviews"),
                ("destination_version", "v2"),
                ("destination_canonical_service", "reviews"),
                ("destination_canonical_revision", "v2"),
                ("destination_service", "reviews.default.svc.cluster.local"),
                // A ServiceEntry's service name is its host, as Istio's cluster metadata.
                (
                    "destination_service_name",
                    "reviews.default.svc.cluster.local",
                ),
                ("destination_service_namespace", "default"),
                ("destination_principal", "unknown"),
                ("request_protocol", "http"),
                ("response_code", "200"),
                ("grpc_response_status", ""),
                ("response_flags", "-"),
                ("connection_security_policy", "unknown"),
            ],
        },
        Case {
            name: "client side, no endpoint reached (a local reply), a Kubernetes Service",
            reporter: Reporter::Source,
            local: &productpage,
            peer: &unknown,
            dest: Dest::service(ratings),
            outcome: grpc,
            want: vec![
                ("destination_workload", "unknown"),
                ("destination_canonical_service", "unknown"),
                ("destination_canonical_revision", "latest"),
                ("destination_service", "ratings.bookinfo.svc.cluster.local"),
                ("destination_service_name", "ratings"),
                // Known from the peer only, as Istio's source reporter.
                ("destination_service_namespace", "unknown"),
                ("request_protocol", "grpc"),
                ("grpc_response_status", "14"),
                ("response_flags", "UH"),
            ],
        },
        Case {
            name: "server side, an mTLS peer",
            reporter: Reporter::Destination,
            local: &canonical,
            peer: &mtls_peer,
            dest: Dest {
                namespace: "shop".into(),
                ..Dest::service(ratings)
            },
            outcome: outcome(Protocol::Http, Some(403), Security::MutualTls),
            want: vec![
                ("reporter", "destination"),
                (
                    "source_principal",
                    "spiffe://cluster.local/ns/bookinfo/sa/productpage",
                ),
                ("source_workload_namespace", "bookinfo"),
                ("source_workload", "unknown"),
                ("source_canonical_revision", "latest"),
                ("destination_workload", "unknown"),
                ("destination_workload_namespace", "shop"),
                ("destination_app", "cart"),
                ("destination_version", "v3"),
                ("destination_canonical_service", "cart-svc"),
                ("destination_canonical_revision", "2024-01"),
                ("destination_cluster", "east"),
                ("destination_service_namespace", "shop"),
                ("response_code", "403"),
                ("connection_security_policy", "mutual_tls"),
            ],
        },
        Case {
            name: "server side, plain text, Kubernetes recommended labels",
            reporter: Reporter::Destination,
            local: &k8s_name,
            peer: &unknown,
            dest: Dest::unknown(),
            outcome: outcome(Protocol::Http, Some(200), Security::None),
            want: vec![
                ("source_principal", "unknown"),
                ("source_workload_namespace", "unknown"),
                ("destination_canonical_service", "cart"),
                ("destination_canonical_revision", "1.2"),
                ("destination_app", "unknown"),
                ("connection_security_policy", "none"),
            ],
        },
    ];
    for c in cases {
        let got = values(c.reporter, c.local, c.peer, &c.dest, &c.outcome);
        for (k, v) in c.want {
            assert_eq!(got.get(k).map(String::as_str), Some(v), "{}: {k}", c.name);
        }
    }
}

// === the layer, through the stacks ===

#[tokio::test(start_paused = true)]
async fn a_request_is_counted_when_its_response_body_ends() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let mesh = mesh(REVIEWS);
    let client = productpage(&mesh, leaf(Duration::from_millis(30), "hello"));

    let res = client
        .oneshot(get(
            "http://reviews.default.svc.cluster.local:9080/reviews/1",
            "abc",
        ))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        find(&snapshot(&snapshotter), REQUESTS_TOTAL, &[]).is_empty(),
        "counted before the body ended"
    );
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "hello");

    let metrics = snapshot(&snapshotter);
    let with = [
        ("reporter", "source"),
        ("destination_service", "reviews.default.svc.cluster.local"),
        ("source_workload", "productpage-v1"),
        ("response_code", "200"),
        ("response_flags", "-"),
    ];
    let total = find(&metrics, REQUESTS_TOTAL, &with);
    assert_eq!(total.len(), 1, "{metrics:#?}");
    assert_eq!(counter(total[0]), 1);
    assert_eq!(
        histogram(find(&metrics, REQUEST_DURATION, &with)[0]),
        [30.0]
    );
    assert_eq!(histogram(find(&metrics, REQUEST_BYTES, &with)[0]), [3.0]);
    assert_eq!(histogram(find(&metrics, RESPONSE_BYTES, &with)[0]), [5.0]);
}

#[tokio::test(start_paused = true)]
async fn local_replies_are_counted_with_their_code_and_flags() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let mesh = mesh(REVIEWS);
    let reviews = "reviews.default.svc.cluster.local";
    let cases = [
        ("/abort", Duration::ZERO, "418", "FI", reviews),
        ("/slow", Duration::MAX, "504", "UT", reviews),
        // No route matched: the authority stands for the service (Istio's Host fallback).
        (
            "/other",
            Duration::ZERO,
            "404",
            "NR",
            "reviews.default.svc.cluster.local:9080",
        ),
    ];
    for (path, delay, code, flags, service) in cases {
        let client = productpage(&mesh, leaf(delay, "x"));
        let uri = format!("http://reviews.default.svc.cluster.local:9080{path}");
        let res = client.oneshot(get(&uri, "")).await.unwrap();
        assert_eq!(res.status().as_str(), code, "{path}");
        res.into_body().collect().await.unwrap();
        let metrics = snapshot(&snapshotter);
        let with = [
            ("response_code", code),
            ("response_flags", flags),
            ("destination_service", service),
        ];
        let found = find(&metrics, REQUESTS_TOTAL, &with);
        assert_eq!(found.len(), 1, "{path}: {metrics:#?}");
        assert_eq!(counter(found[0]), 1, "{path}");
    }
}

/// A route with a fault delay, and one retried on 5xx.
const FLAGGED: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http:
  - match: [{uri: {prefix: /delayed-abort}}]
    fault:
      delay: {fixedDelay: 2s, percentage: {value: 100}}
      abort: {httpStatus: 503, percentage: {value: 100}}
    route: [{destination: {host: reviews.default.svc.cluster.local}}]
  - match: [{uri: {prefix: /delayed}}]
    fault: {delay: {fixedDelay: 2s, percentage: {value: 100}}}
    route: [{destination: {host: reviews.default.svc.cluster.local}}]
  - match: [{uri: {prefix: /flaky}}]
    retries: {attempts: 2, retryOn: 5xx}
    route: [{destination: {host: reviews.default.svc.cluster.local}}]
"#;

#[tokio::test(start_paused = true)]
async fn fault_delays_and_exhausted_retries_are_flagged_di_and_urx() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    // REVIEWS' registry, FLAGGED's routes.
    let registry = REVIEWS.split("kind: VirtualService").next().unwrap();
    let registry = registry
        .trim_end()
        .trim_end_matches("apiVersion: networking.istio.io/v1");
    let mesh = mesh(&format!("{registry}{FLAGGED}"));
    // `/flaky` always fails with 503; the others answer 200.
    let leaf = Leaf::new(tower::service_fn(|req: Request<MeshBody>| async move {
        let mut res = Response::new(body::full("x"));
        if req.uri().path().starts_with("/flaky") {
            *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        }
        Ok(res)
    }));
    let log_buf = LogBuf::default();
    let log = AccessLog::to_writer(log_buf.clone(), access_log::LogFormat::Text);
    let client = MeshStack::outbound(&mesh)
        .namespace("default")
        .access_log(log.clone())
        .build_over(leaf);
    let cases = [
        ("/delayed", "200", "DI"),
        ("/delayed-abort", "503", "DI,FI"),
        ("/flaky", "503", "URX"),
        ("/reviews", "404", "NR"),
    ];
    for (path, code, flags) in cases {
        let uri = format!("http://reviews.default.svc.cluster.local:9080{path}");
        let res = client.clone().oneshot(get(&uri, "")).await.unwrap();
        assert_eq!(res.status().as_str(), code, "{path}");
        res.into_body().collect().await.unwrap();
        let metrics = snapshot(&snapshotter);
        let with = [("response_code", code), ("response_flags", flags)];
        let found = find(&metrics, REQUESTS_TOTAL, &with);
        assert_eq!(found.len(), 1, "{path}: {metrics:#?}");
        assert_eq!(counter(found[0]), 1, "{path}");
    }
    tokio::task::spawn_blocking(move || log.flush())
        .await
        .unwrap();
    let text = log_buf.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), cases.len(), "{text}");
    for ((path, code, flags), line) in cases.iter().zip(&lines) {
        assert!(
            line.contains(&format!("\"POST {path} HTTP/1.1\" {code} {flags} ")),
            "{line}"
        );
    }
}

/// An access log's lines in memory.
#[derive(Clone, Default)]
struct LogBuf(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn no_healthy_upstream_is_uh_with_the_service_known() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    // `ratings` has no endpoint: 503 UH from the real upstream.
    let mesh = mesh(REVIEWS);
    let client = MeshStack::outbound(&mesh)
        .namespace("default")
        .build::<Full<Bytes>>();
    let res = client
        .oneshot(get("http://ratings.bookinfo.svc.cluster.local:9080/", ""))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    res.into_body().collect().await.unwrap();
    let metrics = snapshot(&snapshotter);
    let found = find(
        &metrics,
        REQUESTS_TOTAL,
        &[
            ("response_code", "503"),
            ("response_flags", "UH"),
            ("destination_service_name", "ratings"),
            ("destination_workload", "unknown"),
        ],
    );
    assert_eq!(found.len(), 1, "{metrics:#?}");
}

#[tokio::test]
async fn a_body_cut_short_or_a_dropped_request_is_flagged_dc() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let mesh = mesh(REVIEWS);
    let streaming = Leaf::new(tower::service_fn(|_req: Request<MeshBody>| async {
        // One chunk, then nothing more.
        let chunks = futures_stream(vec![Bytes::from_static(b"part")]);
        Ok(Response::new(body::boxed(chunks)))
    }));
    let client = productpage(&mesh, streaming);
    let uri = "http://reviews.default.svc.cluster.local:9080/reviews/1";
    let res = client.clone().oneshot(get(uri, "")).await.unwrap();
    let mut body = res.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "part");
    drop(body);

    // A request whose caller goes away before the response.
    let mut never = productpage(&mesh, leaf(Duration::MAX, "x"));
    let fut = never.ready().await.unwrap().call(get(uri, ""));
    drop(fut);

    let metrics = snapshot(&snapshotter);
    let cut = find(
        &metrics,
        RESPONSE_BYTES,
        &[("response_code", "200"), ("response_flags", "DC")],
    );
    assert_eq!(cut.len(), 1, "{metrics:#?}");
    assert_eq!(histogram(cut[0]), [4.0]);
    let dropped = find(
        &metrics,
        REQUESTS_TOTAL,
        &[("response_code", "0"), ("response_flags", "DC")],
    );
    assert_eq!(dropped.len(), 1, "{metrics:#?}");
}

/// A body of `chunks` that then stays open forever.
fn futures_stream(
    chunks: Vec<Bytes>,
) -> impl http_body::Body<Data = Bytes, Error = BoxError> + Send {
    let frames = chunks
        .into_iter()
        .map(|c| Ok::<_, BoxError>(http_body::Frame::data(c)));
    StreamBody::new(tokio_stream::StreamExt::chain(
        tokio_stream::iter(frames),
        tokio_stream::pending(),
    ))
}

#[tokio::test]
async fn a_grpc_status_in_the_trailers_is_the_grpc_response_status() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let mesh = mesh(REVIEWS);
    let grpc = Leaf::new(tower::service_fn(|_req: Request<MeshBody>| async {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "5".parse().unwrap());
        let body = http_body_util::Full::new(Bytes::from_static(b"\0\0\0\0\0"))
            .with_trailers(async move { Some(Ok(trailers)) });
        Ok(Response::new(body::boxed(
            body.map_err(|never| match never {}),
        )))
    }));
    let client = productpage(&mesh, grpc);
    let req = Request::post("http://reviews.default.svc.cluster.local:9080/reviews.Reviews/Get")
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = client.oneshot(req).await.unwrap();
    res.into_body().collect().await.unwrap();
    let metrics = snapshot(&snapshotter);
    let found = find(
        &metrics,
        REQUESTS_TOTAL,
        &[
            ("request_protocol", "grpc"),
            ("grpc_response_status", "5"),
            ("response_code", "200"),
        ],
    );
    assert_eq!(found.len(), 1, "{metrics:#?}");
}

const RATINGS_POLICY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-posts, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: ratings}}
  action: DENY
  rules:
  - to: [{operation: {methods: [POST]}}]
"#;

#[tokio::test]
async fn the_inbound_side_counts_denials_and_knows_its_peer() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let mesh = mesh(&format!("{REVIEWS}\n---\n{RATINGS_POLICY}"));
    let app = tower::service_fn(|_req: Request<MeshBody>| async {
        Ok::<_, BoxError>(Response::new(body::full("ok")))
    });
    let server = MeshStack::inbound(&mesh, app)
        .namespace("bookinfo")
        .workload_labels([("app", "ratings"), ("version", "v1")])
        .build::<Full<Bytes>>();

    let mut post = get("/ratings/0", "");
    post.headers_mut()
        .insert("host", "ratings:9080".parse().unwrap());
    post.extensions_mut().insert(crate::authz::ConnectionInfo {
        peer_principal: Some("spiffe://cluster.local/ns/default/sa/productpage".into()),
        ..Default::default()
    });
    let res = server.clone().oneshot(post).await.unwrap();
    assert_eq!(res.status(), 403);
    res.into_body().collect().await.unwrap();
    let plain = Request::get("/ratings/0")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = server.oneshot(plain).await.unwrap();
    res.into_body().collect().await.unwrap();

    let metrics = snapshot(&snapshotter);
    let denied = find(
        &metrics,
        REQUESTS_TOTAL,
        &[
            ("reporter", "destination"),
            ("response_code", "403"),
            ("response_flags", "-"),
            ("connection_security_policy", "mutual_tls"),
            (
                "source_principal",
                "spiffe://cluster.local/ns/default/sa/productpage",
            ),
            ("source_workload_namespace", "default"),
            ("destination_app", "ratings"),
            // The Host named a registry service, qualified in the workload's namespace.
            ("destination_service", "ratings.bookinfo.svc.cluster.local"),
            ("destination_service_name", "ratings"),
            ("destination_service_namespace", "bookinfo"),
        ],
    );
    assert_eq!(denied.len(), 1, "{metrics:#?}");
    let plain = find(
        &metrics,
        REQUESTS_TOTAL,
        &[
            ("response_code", "200"),
            ("connection_security_policy", "none"),
            ("source_principal", "unknown"),
            // No Host: the workload's canonical service, as Istio's inbound reporter.
            ("destination_service", "ratings"),
        ],
    );
    assert_eq!(plain.len(), 1, "{metrics:#?}");
}

#[tokio::test]
async fn authorities_outside_the_registry_are_capped() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let mesh = mesh(REVIEWS);
    let client = productpage(&mesh, leaf(Duration::ZERO, ""));
    for i in 0..MAX_AUTHORITIES + 20 {
        let res = client
            .clone()
            .oneshot(get(&format!("http://host-{i}.example.com/"), ""))
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
    let metrics = snapshot(&snapshotter);
    let passthrough = find(
        &metrics,
        REQUESTS_TOTAL,
        &[("destination_service_name", "PassthroughCluster")],
    );
    assert_eq!(
        passthrough.len(),
        MAX_AUTHORITIES,
        "one series per host up to the cap"
    );
    let rest = find(
        &metrics,
        REQUESTS_TOTAL,
        &[("destination_service", "unknown")],
    );
    assert_eq!(rest.len(), 1);
    assert_eq!(counter(rest[0]), 20);
}

#[test]
fn tcp_connections_are_counted_opened_closed_and_in_bytes() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let mesh = mesh(REVIEWS);
    let telemetry = TelemetryLayer::inbound(&mesh)
        .namespace("bookinfo")
        .workload_labels([("app", "ratings")]);
    let conn = telemetry.tcp_connection(TcpPeer {
        service: Some("ratings"),
        principal: Some("spiffe://cluster.local/ns/default/sa/productpage"),
        ..TcpPeer::default()
    });
    conn.received(100);
    conn.sent(250);
    conn.sent(50);
    let before_close = snapshot(&snapshotter);
    assert_eq!(counter(find(&before_close, TCP_OPENED, &[])[0]), 1);
    assert!(
        find(&before_close, TCP_CLOSED, &[])
            .iter()
            .all(|m| counter(m) == 0)
    );
    drop(conn);

    let metrics = snapshot(&snapshotter);
    let with = [
        ("reporter", "destination"),
        ("request_protocol", "tcp"),
        ("connection_security_policy", "mutual_tls"),
        ("destination_service", "ratings.bookinfo.svc.cluster.local"),
        ("source_workload_namespace", "default"),
    ];
    assert_eq!(counter(find(&metrics, TCP_CLOSED, &with)[0]), 1);
    // The snapshot drains counters: what was added since the first one.
    assert_eq!(counter(find(&metrics, TCP_SENT_BYTES, &with)[0]), 0);
    let sent = find(&before_close, TCP_SENT_BYTES, &with);
    assert_eq!(counter(sent[0]), 300);
    assert_eq!(
        counter(find(&before_close, TCP_RECEIVED_BYTES, &with)[0]),
        100
    );
    assert!(
        !find(&metrics, TCP_CLOSED, &with)[0]
            .labels
            .contains_key("response_code")
    );
}

#[test]
fn a_tcp_connection_with_an_access_log_writes_its_line_when_it_closes() {
    let mesh = mesh(REVIEWS);
    let buf = LogBuf::default();
    let log = AccessLog::to_writer(buf.clone(), access_log::LogFormat::Json);
    let telemetry = TelemetryLayer::outbound(&mesh)
        .metrics(false)
        .access_log(log.clone());
    let conn = telemetry.tcp_connection(TcpPeer {
        service: Some("reviews.default.svc.cluster.local"),
        upstream_host: Some("127.0.0.1:9080"),
        upstream_cluster: Some("outbound|9080||reviews.default.svc.cluster.local"),
        downstream_remote: Some("127.0.0.2:40000".parse().unwrap()),
        server_name: Some("reviews.example.com"),
        ..TcpPeer::default()
    });
    conn.received(7);
    conn.sent(11);
    log.flush();
    assert_eq!(buf.text(), "", "written when the connection closes");
    drop(conn);
    log.flush();
    let text = buf.text();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["response_code"], 0, "{text}");
    assert_eq!(v["response_flags"], "-");
    assert_eq!(v["method"], serde_json::Value::Null);
    assert_eq!(v["bytes_received"], 7);
    assert_eq!(v["bytes_sent"], 11);
    assert_eq!(v["upstream_host"], "127.0.0.1:9080");
    assert_eq!(
        v["upstream_cluster"],
        "outbound|9080||reviews.default.svc.cluster.local"
    );
    assert_eq!(v["downstream_remote_address"], "127.0.0.2:40000");
    assert_eq!(v["requested_server_name"], "reviews.example.com");
}

#[test]
fn upstream_tls_principals_fill_the_client_sides_labels() {
    let mesh = mesh(REVIEWS);
    let layer = TelemetryLayer::outbound(&mesh)
        .namespace("default")
        .workload_labels([("app", "productpage")]);
    let shared = &layer.shared;
    let snapshot = shared.handle.snapshot();
    let service = snapshot
        .service("reviews.default.svc.cluster.local")
        .unwrap();
    let endpoint = shared.endpoint_peer(&snapshot, service, &service.endpoints[0]);
    // The SPIFFE ID's namespace wins over the registry's, as in Istio.
    let peer_id = "spiffe://cluster.local/ns/bookinfo/sa/reviews";
    let peer = shared.peer_principal(&endpoint, peer_id);
    assert!(Arc::ptr_eq(
        &peer,
        &shared.peer_principal(&endpoint, peer_id)
    ));
    let local = shared.local_principal("spiffe://cluster.local/ns/default/sa/productpage");
    let dest = shared.service_dest(&snapshot, "reviews.default.svc.cluster.local");
    let labels: BTreeMap<String, String> = labels::labels(
        Reporter::Source,
        &local,
        &peer,
        &dest,
        &outcome(Protocol::Http, Some(200), Security::Unknown),
    )
    .into_iter()
    .map(|l| (l.key().to_owned(), l.value().to_owned()))
    .collect();
    let want = [
        (
            "source_principal",
            "spiffe://cluster.local/ns/default/sa/productpage",
        ),
        ("source_workload_namespace", "default"),
        ("source_app", "productpage"),
        ("destination_principal", peer_id),
        ("destination_workload", "reviews-v2"),
        ("destination_app", "reviews"),
        ("destination_workload_namespace", "bookinfo"),
        ("destination_service_namespace", "bookinfo"),
        ("connection_security_policy", "unknown"),
    ];
    for (k, v) in want {
        assert_eq!(labels[k], v, "{k}");
    }

    // Bounded: past MAX_PRINCIPALS pairs, the peer keeps `unknown`.
    for i in 0..MAX_PRINCIPALS {
        shared.peer_principal(&endpoint, &format!("spiffe://cluster.local/ns/x/sa/{i}"));
    }
    let over = shared.peer_principal(&endpoint, "spiffe://cluster.local/ns/x/sa/one-more");
    assert!(Arc::ptr_eq(&over, &endpoint));
    assert_eq!(&*over.principal, "unknown");
}

#[test]
fn a_new_snapshot_drops_what_was_derived_from_the_old_one() {
    let mesh = mesh(REVIEWS);
    let handle = MeshHandle::from(&mesh);
    let layer = TelemetryLayer::outbound(&handle);
    let first = handle.snapshot();
    let a = layer
        .shared
        .service_dest(&first, "reviews.default.svc.cluster.local");
    let again = layer
        .shared
        .service_dest(&first, "reviews.default.svc.cluster.local");
    assert!(
        Arc::ptr_eq(&a, &again),
        "cached while the snapshot is the same"
    );
    let mut next = (*first).clone();
    next.version += 1;
    next.services
        .retain(|s| !s.hostname.as_str().starts_with("reviews"));
    handle.store(next);
    let b = layer
        .shared
        .service_dest(&handle.snapshot(), "reviews.default.svc.cluster.local");
    assert_eq!(&*b.name, "reviews.default.svc.cluster.local");
    assert_eq!(&*b.namespace, "unknown", "no longer a registry service");
}

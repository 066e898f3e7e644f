//! Istio's standard metrics end to end: the outbound stack against real upstreams on 127.0.0.1,
//! the inbound stack in-process and served by hyper, with a `metrics` debugging recorder per
//! test (a thread-local one: each test runs on one thread).

use std::{collections::BTreeMap, convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use mesh_tower::{
    MeshService, MeshStack,
    authz::ConnectionInfo,
    body::{self, BoxError, MeshBody},
    telemetry::{REQUEST_DURATION, REQUESTS_TOTAL, RESPONSE_BYTES},
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::net::TcpListener;
use tower::ServiceExt;

type Series = BTreeMap<String, String>;

/// Every series recorded since the last snapshot (a snapshot drains the values): name,
/// labels, value.
fn snapshot(s: &Snapshotter) -> Vec<(String, Series, DebugValue)> {
    s.snapshot()
        .into_vec()
        .into_iter()
        .map(|(k, _, _, v)| {
            let labels = k
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            (k.key().name().to_owned(), labels, v)
        })
        .collect()
}

/// `name`'s series in a snapshot.
fn series<'a>(
    snapshot: &'a [(String, Series, DebugValue)],
    name: &str,
) -> Vec<(&'a Series, &'a DebugValue)> {
    snapshot
        .iter()
        .filter(|(n, ..)| n == name)
        .map(|(_, l, v)| (l, v))
        .collect()
}

fn has(labels: &Series, want: &[(&str, &str)]) -> bool {
    want.iter()
        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
}

fn mesh(yaml: &str) -> mesh_config::Mesh {
    let report = mesh_config::Loader::new().check_str("telemetry.yaml", yaml);
    assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
    report.into_mesh().unwrap()
}

/// An HTTP/1.1 server on 127.0.0.1 that answers `hello world`.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello world"))))
            });
            tokio::spawn(
                auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .into_owned(),
            );
        }
    });
    addr
}

/// A loopback port nothing listens on.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

fn registry(reviews_port: u16, details_port: u16) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: reviews}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-v2, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {reviews_port}}}
  labels: {{app: reviews, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: details, namespace: default}}
spec:
  hosts: [details.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {details_port}}}}}]
"#
    )
}

#[tokio::test]
async fn the_client_side_reports_the_endpoint_it_reached() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let mesh = mesh(&registry(upstream().await.port(), closed_port().await));
    let client: MeshService<Empty<Bytes>> = MeshStack::outbound(&mesh)
        .namespace("default")
        .workload_labels([("app", "productpage"), ("version", "v1")])
        .build();

    for host in ["reviews", "details"] {
        let req = Request::get(format!("http://{host}.default.svc.cluster.local:9080/"))
            .body(Empty::new())
            .unwrap();
        let res = client.clone().oneshot(req).await.unwrap();
        res.into_body().collect().await.unwrap();
    }

    let snap = snapshot(&snapshotter);
    let requests = series(&snap, REQUESTS_TOTAL);
    let reached = [
        ("reporter", "source"),
        ("source_app", "productpage"),
        ("source_version", "v1"),
        ("source_workload_namespace", "default"),
        ("destination_service", "reviews.default.svc.cluster.local"),
        ("destination_workload", "reviews-v2"),
        ("destination_workload_namespace", "default"),
        ("destination_app", "reviews"),
        ("destination_version", "v2"),
        ("destination_canonical_service", "reviews"),
        ("destination_canonical_revision", "v2"),
        ("destination_service_namespace", "default"),
        ("response_code", "200"),
        ("response_flags", "-"),
        ("request_protocol", "http"),
        ("connection_security_policy", "unknown"),
    ];
    let found: Vec<_> = requests.iter().filter(|(l, _)| has(l, &reached)).collect();
    assert_eq!(found.len(), 1, "{requests:#?}");
    assert_eq!(*found[0].1, DebugValue::Counter(1));
    let failed = [
        ("destination_service", "details.default.svc.cluster.local"),
        ("response_code", "503"),
        // Refused, then retried twice by Istio's default policy: Envoy's `UF,URX`.
        ("response_flags", "UF,URX"),
    ];
    assert_eq!(
        requests.iter().filter(|(l, _)| has(l, &failed)).count(),
        1,
        "{requests:#?}"
    );
    let bytes = series(&snap, RESPONSE_BYTES);
    let reviews = bytes.iter().find(|(l, _)| has(l, &reached)).unwrap();
    assert_eq!(*reviews.1, DebugValue::Histogram(vec![11.0.into()]));
}

/// Two tokens a minute for `app: ratings`, and no POSTs.
const RATINGS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: bookinfo}
spec:
  selector: {app: ratings}
  ports: [{port: 9080, name: http}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-no-post, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: ratings}}
  action: DENY
  rules:
  - to: [{operation: {methods: [POST]}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ratings-ratelimit, namespace: bookinfo}
spec:
  workloadSelector: {labels: {app: ratings}}
  configPatches:
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_INBOUND}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: http_local_rate_limiter
            token_bucket: {max_tokens: 2, tokens_per_fill: 2, fill_interval: 60s}
            filter_enabled:
              default_value: {numerator: 100, denominator: HUNDRED}
            filter_enforced:
              default_value: {numerator: 100, denominator: HUNDRED}
"#;

const PEER: &str = "spiffe://cluster.local/ns/default/sa/productpage";

/// The user's application, and the inbound stack of `ratings` around it.
fn ratings<B>() -> MeshService<B>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let app = tower::service_fn(|_req: Request<MeshBody>| async {
        Ok::<_, BoxError>(Response::new(body::full("5 stars")))
    });
    MeshStack::inbound(&mesh(RATINGS), app)
        .namespace("bookinfo")
        .workload_labels([("app", "ratings"), ("version", "v1")])
        .build()
}

/// The three requests both runs send: GET, GET (the last token), POST (rate limited first).
fn requests() -> Vec<Request<Empty<Bytes>>> {
    ["GET", "GET", "POST"]
        .into_iter()
        .map(|m| {
            Request::builder()
                .method(m)
                .uri("http://ratings:9080/ratings/0")
                .body(Empty::new())
                .unwrap()
        })
        .collect()
}

/// The inbound stack served on 127.0.0.1, as the proxy serves it; each request carries the
/// connection's peer, as a TLS acceptor would set it.
async fn serve(stack: MeshService<Incoming>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let stack = stack.clone();
            let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ConnectionInfo {
                    peer_addr: Some(peer),
                    local_addr: Some(addr),
                    peer_principal: Some(PEER.into()),
                    ..Default::default()
                });
                stack.clone().oneshot(req)
            });
            tokio::spawn(
                auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .into_owned(),
            );
        }
    });
    addr
}

#[tokio::test]
async fn an_in_process_service_emits_the_series_the_proxy_would() {
    // In-process: the user's service wrapped by the inbound stack, called directly.
    let in_process = DebuggingRecorder::new();
    let in_process_snapshot = in_process.snapshotter();
    {
        let _guard = metrics::set_default_local_recorder(&in_process);
        let stack = ratings::<Empty<Bytes>>();
        for mut req in requests() {
            req.extensions_mut().insert(ConnectionInfo {
                peer_principal: Some(PEER.into()),
                ..Default::default()
            });
            let res = stack.clone().oneshot(req).await.unwrap();
            res.into_body().collect().await.unwrap();
        }
    }
    let in_process_all = snapshot(&in_process_snapshot);
    let in_process = series(&in_process_all, REQUESTS_TOTAL);

    // Served: the same stack behind a listener, called by a real HTTP client.
    let served = DebuggingRecorder::new();
    let served_snapshot = served.snapshotter();
    let _guard = metrics::set_default_local_recorder(&served);
    let addr = serve(ratings::<Incoming>()).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut statuses = Vec::new();
    for mut req in requests() {
        *req.uri_mut() = format!("http://{addr}/ratings/0").parse().unwrap();
        req.headers_mut()
            .insert("host", "ratings:9080".parse().unwrap());
        let res = client.request(req).await.unwrap();
        statuses.push(res.status().as_u16());
        res.into_body().collect().await.unwrap();
    }
    assert_eq!(statuses, [200, 200, 429]);
    let served_all = snapshot(&served_snapshot);
    let served = series(&served_all, REQUESTS_TOTAL);

    assert_eq!(in_process, served, "the same series, with the same counts");
    let common = [
        ("reporter", "destination"),
        ("source_principal", PEER),
        ("source_workload_namespace", "default"),
        ("destination_app", "ratings"),
        ("destination_version", "v1"),
        ("destination_workload_namespace", "bookinfo"),
        ("destination_service", "ratings.bookinfo.svc.cluster.local"),
        ("destination_service_name", "ratings"),
        ("connection_security_policy", "mutual_tls"),
    ];
    let count = |code: &str, flags: &str| {
        served
            .iter()
            .filter(|(l, _)| has(l, &common))
            .filter(|(l, _)| has(l, &[("response_code", code), ("response_flags", flags)]))
            .map(|(_, v)| *v)
            .collect::<Vec<_>>()
    };
    assert_eq!(count("200", "-"), [&DebugValue::Counter(2)]);
    assert_eq!(count("429", "RL"), [&DebugValue::Counter(1)]);
    assert_eq!(served.len(), 2, "{served:#?}");
    let durations = series(&served_all, REQUEST_DURATION);
    assert_eq!(durations.len(), 2, "one duration histogram per label set");
    let samples: usize = durations
        .iter()
        .map(|(_, v)| match v {
            DebugValue::Histogram(h) => h.len(),
            v => panic!("not a histogram: {v:?}"),
        })
        .sum();
    assert_eq!(samples, 3, "one duration per request");
}

#[tokio::test]
async fn an_mtls_upstream_fills_both_principals_on_the_client_side() {
    use mesh_tower::{
        endpoint::UpstreamTls,
        inbound::InboundAcceptor,
        tls::{CertificateAuthority, Identity, IdentitySource},
    };
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let ca = CertificateAuthority::generate("telemetry test CA").unwrap();
    let source = |sa: &str| {
        let cert = ca
            .issue(
                &Identity::new("cluster.local", "bookinfo", sa),
                std::time::Duration::from_secs(3600),
            )
            .unwrap();
        IdentitySource::new(cert.workload_certificate().unwrap()).unwrap()
    };

    // ratings' inbound side (mTLS), and a plain endpoint for details.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = mesh_tower::MeshHandle::from(&mesh(&format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings, namespace: bookinfo}}
spec:
  hosts: [ratings.bookinfo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints:
  - address: 127.0.0.1
    ports: {{http: {port}}}
    labels: {{app: ratings, version: v1, security.istio.io/tlsMode: istio}}
    serviceAccount: ratings
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: details, namespace: bookinfo}}
spec:
  hosts: [details.bookinfo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {details}}}, labels: {{app: details}}}}]
"#,
        details = upstream().await.port(),
    )));
    let app = tower::service_fn(|_req: Request<MeshBody>| async {
        Ok::<_, BoxError>(Response::new(body::full("5 stars")))
    });
    let inbound = MeshStack::inbound(&handle, app)
        .namespace("bookinfo")
        .workload_labels([("app", "ratings")])
        .build();
    let acceptor = InboundAcceptor::new(&handle)
        .namespace("bookinfo")
        .workload_labels([("app", "ratings")])
        .identity(source("ratings"));
    tokio::spawn(mesh_tower::inbound::serve(
        listener,
        acceptor,
        inbound,
        std::future::pending(),
    ));

    // productpage's outbound side: auto mTLS to ratings (a mesh workload), plain to details.
    let client: MeshService<Empty<Bytes>> = MeshStack::outbound(&handle)
        .namespace("bookinfo")
        .workload_labels([("app", "productpage")])
        .identity(source("productpage"))
        .build();
    let productpage = "spiffe://cluster.local/ns/bookinfo/sa/productpage";
    let ratings = "spiffe://cluster.local/ns/bookinfo/sa/ratings";
    for host in ["ratings", "details"] {
        let req = Request::get(format!("http://{host}.bookinfo.svc.cluster.local:9080/"))
            .body(Empty::new())
            .unwrap();
        let res = client.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200, "{host}");
        // The principals reach the response's extensions too, for in-process users.
        let tls = res.extensions().get::<UpstreamTls>().cloned();
        if host == "ratings" {
            let tls = tls.expect("an mTLS response carries its connection's principals");
            assert_eq!(tls.local_principal(), Some(productpage));
            assert_eq!(tls.peer_principal(), Some(ratings));
        } else {
            assert_eq!(tls, None, "plain text");
        }
        res.into_body().collect().await.unwrap();
    }

    let snap = snapshot(&snapshotter);
    let requests = series(&snap, REQUESTS_TOTAL);
    let mtls = [
        ("reporter", "source"),
        ("destination_service", "ratings.bookinfo.svc.cluster.local"),
        ("source_principal", productpage),
        ("destination_principal", ratings),
        ("destination_app", "ratings"),
        ("destination_workload_namespace", "bookinfo"),
        ("connection_security_policy", "unknown"),
        ("response_code", "200"),
    ];
    assert_eq!(
        requests.iter().filter(|(l, _)| has(l, &mtls)).count(),
        1,
        "{requests:#?}"
    );
    let plain = [
        ("reporter", "source"),
        ("destination_service", "details.bookinfo.svc.cluster.local"),
        ("source_principal", "unknown"),
        ("destination_principal", "unknown"),
    ];
    assert_eq!(
        requests.iter().filter(|(l, _)| has(l, &plain)).count(),
        1,
        "{requests:#?}"
    );
    // ratings' own side saw the same two identities over the same connection.
    let server = [
        ("reporter", "destination"),
        ("source_principal", productpage),
        ("connection_security_policy", "mutual_tls"),
    ];
    assert_eq!(
        requests.iter().filter(|(l, _)| has(l, &server)).count(),
        1,
        "{requests:#?}"
    );
}

//! The inbound stack end to end: `MeshStack::inbound` served by hyper on 127.0.0.1, a real
//! hyper client, and what it observes.

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use mesh_tower::{
    MeshService, MeshStack,
    body::{self, BoxError, MeshBody},
};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Istio's local rate limit task: 5 tokens a minute for `app: ratings`, inbound.
const RATE_LIMIT: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: ratings-ratelimit
  namespace: default
spec:
  workloadSelector:
    labels:
      app: ratings
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: http_local_rate_limiter
            token_bucket:
              max_tokens: 5
              tokens_per_fill: 5
              fill_interval: 60s
            filter_enabled:
              runtime_key: local_rate_limit_enabled
              default_value: {numerator: 100, denominator: HUNDRED}
            filter_enforced:
              runtime_key: local_rate_limit_enforced
              default_value: {numerator: 100, denominator: HUNDRED}
            response_headers_to_add:
            - append_action: OVERWRITE_IF_EXISTS_OR_ADD
              header: {key: x-local-rate-limit, value: "true"}
"#;

/// The per-route shape of Istio's rate limit sample, for `app: ratings`: a route-level bucket
/// of 6 a minute, and a bucket of 2 for requests whose path starts with `/ratings/limited`
/// (a `header_value_match` descriptor), plus one per client address that never runs dry.
const PER_ROUTE_DESCRIPTORS: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: ratings-route-limits
  namespace: default
spec:
  workloadSelector:
    labels:
      app: ratings
  configPatches:
  - applyTo: HTTP_ROUTE
    match:
      context: SIDECAR_INBOUND
      routeConfiguration:
        vhost:
          name: "inbound|http|9080"
          route:
            action: ANY
    patch:
      operation: MERGE
      value:
        route:
          rate_limits:
          - actions:
            - remote_address: {}
          - actions:
            - header_value_match:
                descriptor_value: limited
                headers:
                - name: :path
                  string_match:
                    prefix: /Ratings/Limited
                    ignore_case: true
        typed_per_filter_config:
          envoy.filters.http.local_ratelimit:
            "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            stat_prefix: ratings_route
            token_bucket: {max_tokens: 6, tokens_per_fill: 6, fill_interval: 60s}
            filter_enabled:
              default_value: {numerator: 100, denominator: HUNDRED}
            filter_enforced:
              default_value: {numerator: 100, denominator: HUNDRED}
            descriptors:
            - entries:
              - key: header_match
                value: limited
              token_bucket: {max_tokens: 2, tokens_per_fill: 2, fill_interval: 60s}
            - entries:
              - key: remote_address
                value: ""
              token_bucket: {max_tokens: 1000, tokens_per_fill: 1000, fill_interval: 60s}
"#;

const DENY_POST: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ratings-no-post
  namespace: default
spec:
  selector:
    matchLabels:
      app: ratings
  action: DENY
  rules:
  - to:
    - operation:
        methods: ["POST"]
"#;

/// Serves `MeshStack::inbound` for `app: ratings` in `default` over `yaml` on a loopback port.
async fn serve(yaml: &str) -> SocketAddr {
    let report = mesh_config::Loader::new().check_str("test.yaml", yaml);
    assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
    let mesh = report.into_mesh().unwrap();
    let app = tower::service_fn(|_req: Request<MeshBody>| async {
        Ok::<_, BoxError>(http::Response::new(body::full("ratings")))
    });
    let svc: MeshService<hyper::body::Incoming> = MeshStack::inbound(&mesh, app)
        .namespace("default")
        .workload_labels([("app", "ratings"), ("version", "v1")])
        .build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let svc = svc.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| svc.clone().oneshot(req));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send(client: &HttpClient, method: &str, uri: String) -> (u16, http::HeaderMap, String) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Empty::new())
        .unwrap();
    let res = client.request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn local_rate_limit_answers_429_after_five_requests() {
    let addr = serve(RATE_LIMIT).await;
    let client = client();
    let (mut ok, mut limited) = (0, 0);
    for i in 0..12 {
        let (status, headers, body) =
            send(&client, "GET", format!("http://{addr}/ratings/{i}")).await;
        match status {
            200 => {
                assert_eq!(body, "ratings");
                ok += 1;
            }
            429 => {
                assert_eq!(body, "local_rate_limited");
                assert_eq!(headers["x-mesh-error"], "rate-limited");
                assert_eq!(headers["x-local-rate-limit"], "true");
                limited += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, limited), (5, 7));
}

#[tokio::test]
async fn per_route_descriptors_limit_matching_requests_with_their_own_bucket() {
    let addr = serve(PER_ROUTE_DESCRIPTORS).await;
    let client = client();
    let mut limited_path = Vec::new();
    for _ in 0..4 {
        let (status, ..) = send(&client, "GET", format!("http://{addr}/ratings/limited/1")).await;
        limited_path.push(status);
    }
    // The descriptor bucket holds 2; the two that passed also drew from the route's bucket
    // (Envoy's always_consume_default_token_bucket), the two refused did not.
    assert_eq!(limited_path, [200, 200, 429, 429]);
    let mut others = Vec::new();
    for _ in 0..6 {
        let (status, ..) = send(&client, "GET", format!("http://{addr}/ratings/0")).await;
        others.push(status);
    }
    assert_eq!(others, [200, 200, 200, 200, 429, 429]);
}

#[tokio::test]
async fn authorization_policy_denies_post_and_allows_get() {
    let addr = serve(DENY_POST).await;
    let client = client();
    let (status, headers, body) = send(&client, "POST", format!("http://{addr}/ratings/0")).await;
    assert_eq!((status, body.as_str()), (403, "RBAC: access denied"));
    assert_eq!(headers["x-mesh-error"], "rbac-denied");
    let (status, _, body) = send(&client, "GET", format!("http://{addr}/ratings/0")).await;
    assert_eq!((status, body.as_str()), (200, "ratings"));
}

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
async fn authorization_policy_denies_post_and_allows_get() {
    let addr = serve(DENY_POST).await;
    let client = client();
    let (status, headers, body) = send(&client, "POST", format!("http://{addr}/ratings/0")).await;
    assert_eq!((status, body.as_str()), (403, "RBAC: access denied"));
    assert_eq!(headers["x-mesh-error"], "rbac-denied");
    let (status, _, body) = send(&client, "GET", format!("http://{addr}/ratings/0")).await;
    assert_eq!((status, body.as_str()), (200, "ratings"));
}

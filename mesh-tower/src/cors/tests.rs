use http::{Request, Response};
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

/// `api.example.internal` with a CORS policy (`extra` adds fields to it).
fn yaml(extra: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: api}}\nspec:\n  hosts: [api.example.internal]\n  http:\n  - corsPolicy:\n      allowOrigins: [{{exact: 'https://app.example'}}, {{regex: 'https://.*\\.trusted\\.example'}}]\n      allowMethods: [GET, POST]\n      allowHeaders: [content-type, x-token]\n      exposeHeaders: [x-request-id, x-version]\n      maxAge: 24h\n      allowCredentials: true\n{extra}    route: [{{destination: {{host: api.example.internal}}}}]\n"
    )
}

fn stack(yaml: &str) -> (Route<Cors<Mock>>, Handle) {
    let report = mesh_config::Loader::new().check_str("test.yaml", yaml);
    assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
    let mesh = MeshHandle::from(&report.into_mesh().unwrap());
    let (mock, handle) = mock::pair();
    let svc = ServiceBuilder::new()
        .layer(RouteLayer::new(mesh, ClientIdentity::default()))
        .layer(CorsLayer::new())
        .service(mock);
    (svc, handle)
}

fn preflight(origin: &str) -> Request<MeshBody> {
    Request::options("http://api.example.internal/items")
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .body(body::empty())
        .unwrap()
}

fn upstream_response() -> Response<MeshBody> {
    Response::builder()
        .header("x-from", "upstream")
        .body(body::empty())
        .unwrap()
}

/// Sends `req`; answers it upstream if it gets there. Returns the response and whether the
/// upstream saw the request.
async fn send(
    svc: Route<Cors<Mock>>,
    handle: &mut Handle,
    req: Request<MeshBody>,
) -> (Response<MeshBody>, bool) {
    let call = tokio::spawn(svc.oneshot(req));
    tokio::task::yield_now().await;
    let forwarded = match handle.poll_request() {
        Poll::Ready(Some((_, send))) => {
            send.send_response(upstream_response());
            true
        }
        _ => false,
    };
    (call.await.unwrap().unwrap(), forwarded)
}

const CORS_HEADERS: [http::HeaderName; 6] = [
    ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_ALLOW_CREDENTIALS,
    ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_EXPOSE_HEADERS,
];

#[tokio::test(start_paused = true)]
async fn an_allowed_preflight_is_answered_here() {
    for origin in ["https://app.example", "https://eu.trusted.example"] {
        let (svc, mut handle) = stack(&yaml(""));
        let (res, forwarded) = send(svc, &mut handle, preflight(origin)).await;
        assert!(!forwarded);
        assert_eq!(res.status(), 200);
        let h = res.headers();
        assert_eq!(h["access-control-allow-origin"], origin);
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-allow-methods"], "GET,POST");
        assert_eq!(h["access-control-allow-headers"], "content-type,x-token");
        assert_eq!(h["access-control-max-age"], "86400");
        assert!(h.get("access-control-expose-headers").is_none());
    }
}

#[tokio::test(start_paused = true)]
async fn an_unmatched_preflight_is_forwarded_by_default() {
    let (svc, mut handle) = stack(&yaml(""));
    let (res, forwarded) = send(svc, &mut handle, preflight("https://evil.example")).await;
    assert!(forwarded);
    assert_eq!(res.headers()["x-from"], "upstream");
    for h in CORS_HEADERS {
        assert!(!res.headers().contains_key(&h), "{h}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_unmatched_preflight_under_ignore_stops_here_without_the_origin() {
    let (svc, mut handle) = stack(&yaml("      unmatchedPreflights: IGNORE\n"));
    let (res, forwarded) = send(svc, &mut handle, preflight("https://evil.example")).await;
    assert!(!forwarded);
    assert_eq!(res.status(), 200);
    assert!(!res.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));

    let (svc, mut handle) = stack(&yaml("      unmatchedPreflights: IGNORE\n"));
    let (res, forwarded) = send(svc, &mut handle, preflight("https://app.example")).await;
    assert!(!forwarded);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example"
    );
}

#[tokio::test(start_paused = true)]
async fn simple_requests_from_allowed_origins_get_the_headers() {
    let (svc, mut handle) = stack(&yaml(""));
    let req = Request::get("http://api.example.internal/items")
        .header("origin", "https://app.example")
        .body(body::empty())
        .unwrap();
    let (res, forwarded) = send(svc, &mut handle, req).await;
    assert!(forwarded);
    let h = res.headers();
    assert_eq!(h["x-from"], "upstream");
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-expose-headers"], "x-request-id,x-version");
    assert!(!h.contains_key(ACCESS_CONTROL_ALLOW_METHODS));
}

#[tokio::test(start_paused = true)]
async fn other_requests_are_untouched() {
    let cases = [
        // Origin not allowed.
        Request::get("http://api.example.internal/items")
            .header("origin", "https://evil.example")
            .body(body::empty())
            .unwrap(),
        // No origin: not a CORS request, even an OPTIONS with a request method.
        Request::options("http://api.example.internal/items")
            .header("access-control-request-method", "POST")
            .body(body::empty())
            .unwrap(),
        // OPTIONS without Access-Control-Request-Method is not a preflight: forwarded.
        Request::options("http://api.example.internal/items")
            .header("origin", "https://evil.example")
            .body(body::empty())
            .unwrap(),
        // No policy: a host without a VirtualService.
        Request::get("http://other.example.internal/")
            .header("origin", "https://app.example")
            .body(body::empty())
            .unwrap(),
    ];
    for req in cases {
        let (svc, mut handle) = stack(&yaml(""));
        let (res, forwarded) = send(svc, &mut handle, req).await;
        assert!(forwarded);
        for h in CORS_HEADERS {
            assert!(!res.headers().contains_key(&h), "{h}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_star_allows_any_origin_and_echoes_lists() {
    let y = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api}\nspec:\n  hosts: [api.example.internal]\n  http:\n  - corsPolicy:\n      allowOrigins: [{exact: '*'}]\n      allowMethods: ['*']\n      allowHeaders: ['*']\n    route: [{destination: {host: api.example.internal}}]\n";
    let (svc, mut handle) = stack(y);
    let (res, forwarded) = send(svc, &mut handle, preflight("https://anyone.example")).await;
    assert!(!forwarded);
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], "https://anyone.example");
    assert_eq!(h["access-control-allow-methods"], "POST");
    assert_eq!(h["access-control-allow-headers"], "content-type");
    assert!(!h.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
    assert!(!h.contains_key(ACCESS_CONTROL_MAX_AGE));
}

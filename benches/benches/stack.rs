//! The per-request overhead of the whole outbound stack: `MeshStack::outbound(..).build_over(leaf)`
//! over an in-memory leaf that answers 200 at once, against calling that leaf directly.
//!
//! The VirtualService has 1, 10 or 100 routes (the `routing` bench's three shapes of match,
//! written as YAML) and the request matches only the last one, so every route is tried. The
//! leaf's future is ready at once, so each request is polled once with a no-op waker: what is
//! measured is the stack (body boxing, snapshot load, matching, the routing context, header
//! handling, the boxed futures), not a runtime's scheduling. Both sides also pay for a clone of
//! a prepared request (method, URI, four headers) and for dropping it and the response; the
//! difference between the two is the stack's own cost. `routes_among_services/1_of_1000` is
//! the one-route request again in a mesh with 1,000 other services (each with a VirtualService
//! and a DestinationRule): the same cost as `routes/1`, or the lookups scan the mesh.
//!
//! `cargo bench -p mesh-benches --bench stack` (add `-- --quick` for a fast pass).

use std::{
    fmt::Write,
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Empty;
use mesh_benches::routing::request_for_route;
use mesh_tower::{
    MeshStack,
    body::{self, BoxError, MeshBody},
    route::RouteCtx,
};
use tower::{Service, service_fn};

const HOST: &str = "reviews.default.svc.cluster.local";

/// A ServiceEntry for `reviews` and a VirtualService with `n` routes named `route-<i>`. Route
/// `i` matches what `request_for_route(i)` sends, and nothing else:
///
/// - `uri: {prefix: /api/v<i>/}` and `headers: {x-tenant: {exact: tenant-<i>}}`
/// - `uri: {regex: /items/[0-9]+/r<i>}`
/// - `method: {exact: GET}` and `headers: {x-user: {regex: user-[a-z]+-<i>}}`
fn mesh_yaml(n: usize) -> String {
    let mut y = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: reviews}}\nspec:\n  hosts: [{HOST}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 9080, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, labels: {{version: v1}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [{HOST}]\n  http:\n"
    );
    for i in 0..n {
        let matches = match i % 3 {
            0 => format!(
                "{{uri: {{prefix: /api/v{i}/}}, headers: {{x-tenant: {{exact: tenant-{i}}}}}}}"
            ),
            1 => format!("{{uri: {{regex: \"/items/[0-9]+/r{i}\"}}}}"),
            _ => format!(
                "{{method: {{exact: GET}}, headers: {{x-user: {{regex: \"user-[a-z]+-{i}\"}}}}}}"
            ),
        };
        let _ = write!(
            y,
            "  - name: route-{i}\n    match: [{matches}]\n    route: [{{destination: {{host: {HOST}}}}}]\n"
        );
    }
    y
}

/// The leaf: answers 200 with an empty body, at once.
fn leaf(_req: Request<MeshBody>) -> std::future::Ready<Result<Response<MeshBody>, BoxError>> {
    std::future::ready(Ok(Response::new(body::empty())))
}

/// Calls `svc` and polls the response future once: every service here answers without waiting.
fn call_now<S, R>(svc: &mut S, req: R) -> S::Response
where
    S: Service<R>,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("the stack and the leaf are always ready"),
    }
    match pin!(svc.call(req)).poll(&mut cx) {
        Poll::Ready(Ok(res)) => res,
        _ => panic!("the in-memory leaf answers at once"),
    }
}

fn request(n: usize) -> Request<Empty<Bytes>> {
    request_for_route(n - 1).map(|()| Empty::new())
}

fn outbound_overhead(c: &mut Criterion) {
    // Layers may use tokio's clock; give them a runtime context (nothing is spawned on it).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let _rt = rt.enter();

    let mut group = c.benchmark_group("stack/outbound");

    let mut bare = service_fn(leaf);
    let req = request_for_route(0);
    group.bench_function("bare_leaf", |b| {
        b.iter(|| call_now(&mut bare, req.clone().map(|()| body::empty())))
    });

    for n in [1usize, 10, 100] {
        let report = mesh_config::Loader::new().check_str("bench.yaml", &mesh_yaml(n));
        assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
        let mesh = report.into_mesh().expect("the generated config loads");

        // The fixture must match the last route, and only through the whole stack.
        let mut check =
            MeshStack::outbound(&mesh).build_over(service_fn(|req: Request<MeshBody>| {
                let name = req
                    .extensions()
                    .get::<RouteCtx>()
                    .and_then(RouteCtx::route)
                    .map(|r| r.name.clone())
                    .unwrap_or_default();
                let mut res = Response::new(body::empty());
                res.headers_mut()
                    .insert("x-route", name.parse().expect("a header value"));
                std::future::ready(Ok::<_, BoxError>(res))
            }));
        let res = call_now(&mut check, request(n));
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()["x-route"],
            format!("route-{}", n - 1).as_str()
        );

        let mut stack = MeshStack::outbound(&mesh).build_over(service_fn(leaf));
        let req = request(n);
        group.bench_with_input(BenchmarkId::new("routes", n), &req, |b, req| {
            b.iter(|| call_now(&mut stack, req.clone()))
        });
    }
    // The same one-route request in a mesh of 1,000 other services, each with a
    // VirtualService and a DestinationRule: the per-request lookups (the service, its
    // VirtualService, its DestinationRule) must not grow with the mesh.
    let mut big = mesh_yaml(1);
    for i in 0..1000 {
        let _ = write!(
            big,
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: other-{i}}}\nspec:\n  hosts: [other-{i}.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 9080, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: other-{i}}}\nspec:\n  hosts: [other-{i}.default.svc.cluster.local]\n  http: [{{route: [{{destination: {{host: other-{i}.default.svc.cluster.local}}}}]}}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: other-{i}}}\nspec:\n  host: other-{i}.default.svc.cluster.local\n  trafficPolicy: {{loadBalancer: {{simple: ROUND_ROBIN}}}}\n"
        );
    }
    let report = mesh_config::Loader::new().check_str("bench.yaml", &big);
    assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
    let mesh = report.into_mesh().expect("the generated config loads");
    let mut stack = MeshStack::outbound(&mesh).build_over(service_fn(leaf));
    let req = request(1);
    assert_eq!(call_now(&mut stack, req.clone()).status(), 200);
    group.bench_with_input(
        BenchmarkId::new("routes_among_services", "1_of_1000"),
        &req,
        |b, req| b.iter(|| call_now(&mut stack, req.clone())),
    );
    group.finish();
}

/// The inbound policies of a workload: ten ALLOW AuthorizationPolicies (the request matches the
/// last), a RequestAuthentication (the request carries no token, so nothing is verified: the
/// common case of service-to-service calls), and a local rate limit whose bucket never runs dry.
fn inbound_yaml() -> String {
    let mut y = String::from(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt}\nspec:\n  selector: {matchLabels: {app: reviews}}\n  jwtRules: [{issuer: https://issuer.example, jwks: '{\"keys\":[]}'}]\n---\napiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: rl}\nspec:\n  workloadSelector: {labels: {app: reviews}}\n  configPatches:\n  - applyTo: HTTP_FILTER\n    match: {context: SIDECAR_INBOUND}\n    patch:\n      operation: INSERT_BEFORE\n      value:\n        name: envoy.filters.http.local_ratelimit\n        typed_config:\n          '@type': type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit\n          stat_prefix: rl\n          token_bucket: {max_tokens: 4000000000, tokens_per_fill: 4000000000, fill_interval: 1s}\n          filter_enabled: {default_value: {numerator: 100, denominator: HUNDRED}}\n          filter_enforced: {default_value: {numerator: 100, denominator: HUNDRED}}\n",
    );
    for i in 0..10 {
        let _ = write!(
            y,
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-{i}}}\nspec:\n  selector: {{matchLabels: {{app: reviews}}}}\n  rules:\n  - to: [{{operation: {{methods: [GET], paths: [\"/api/v{i}/*\"]}}}}]\n"
        );
    }
    y
}

fn inbound_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let _rt = rt.enter();
    let mut group = c.benchmark_group("stack/inbound");
    let req = Request::get("http://reviews:9080/api/v9/items")
        .header("user-agent", "bench")
        .header("accept", "*/*")
        .header("x-request-id", "3f1c2d4e-0000-4000-8000-000000000000")
        .body(())
        .expect("a request");

    let mut bare = service_fn(leaf);
    group.bench_function("bare_leaf", |b| {
        b.iter(|| call_now(&mut bare, req.clone().map(|()| body::empty())))
    });

    let empty = mesh_config::Loader::new()
        .check_str("none.yaml", "")
        .into_mesh()
        .expect("an empty config loads");
    let mut no_policy = MeshStack::inbound(&empty, service_fn(leaf))
        .workload_labels([("app", "reviews")])
        .build::<Empty<Bytes>>();
    group.bench_function("no_policies", |b| {
        b.iter(|| call_now(&mut no_policy, req.clone().map(|()| Empty::new())))
    });

    let report = mesh_config::Loader::new().check_str("inbound.yaml", &inbound_yaml());
    assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
    let mesh = report.into_mesh().expect("the inbound config loads");
    let mut policies = MeshStack::inbound(&mesh, service_fn(leaf))
        .workload_labels([("app", "reviews")])
        .build::<Empty<Bytes>>();
    let res = call_now(&mut policies, req.clone().map(|()| Empty::new()));
    assert_eq!(res.status(), 200, "the last ALLOW policy must match");
    let denied = Request::post("http://reviews:9080/api/v9/items")
        .body(Empty::new())
        .expect("a request");
    assert_eq!(call_now(&mut policies, denied).status(), 403);
    group.bench_function("jwt_ratelimit_10_authz", |b| {
        b.iter(|| call_now(&mut policies, req.clone().map(|()| Empty::new())))
    });
    group.finish();
}

criterion_group!(benches, outbound_overhead, inbound_overhead);
criterion_main!(benches);

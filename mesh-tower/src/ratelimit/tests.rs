use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use mesh_core::{CompiledMesh, Percent, labels::Selector, model::TokenBucket};
use tower::{Service, ServiceExt};

use super::*;
use crate::body::{self, MeshBody};

const MINUTE: Duration = Duration::from_secs(60);

fn limit(max_tokens: u32, fill: Duration) -> LocalRateLimitPolicy {
    LocalRateLimitPolicy {
        envoy_filter: "default/ratings-rl".into(),
        namespace: "default".into(),
        selector: Some(Selector::from_iter([("app", "ratings")])),
        context: "SIDECAR_INBOUND".into(),
        bucket: Some(TokenBucket {
            max_tokens,
            tokens_per_fill: max_tokens,
            fill_interval: fill,
        }),
        filter_enabled: Percent::HUNDRED,
        filter_enforced: Percent::HUNDRED,
        response_headers: vec![("x-local-rate-limit".into(), "true".into())],
        descriptors: Vec::new(),
        actions: Vec::new(),
        always_consume_default: true,
    }
}

fn mesh(version: u64, limits: Vec<LocalRateLimitPolicy>) -> CompiledMesh {
    CompiledMesh {
        version,
        root_namespace: "istio-system".into(),
        rate_limits: limits,
        ..CompiledMesh::default()
    }
}

type App = tower::util::BoxCloneService<Request<MeshBody>, Response<MeshBody>, BoxError>;

fn app() -> App {
    tower::util::BoxCloneService::new(tower::service_fn(|_req: Request<MeshBody>| async {
        Ok::<_, BoxError>(Response::new(body::full("ok")))
    }))
}

fn layer(handle: &MeshHandle, labels: &[(&str, &str)]) -> LocalRateLimitLayer {
    LocalRateLimitLayer::new(handle, TrafficDirection::SidecarInbound)
        .namespace("default")
        .workload_labels(labels.iter().copied())
}

fn ratings(handle: &MeshHandle) -> LocalRateLimit<App> {
    layer(handle, &[("app", "ratings")]).layer(app())
}

async fn status(svc: &mut LocalRateLimit<App>) -> u16 {
    let req = Request::get("/ratings/0").body(body::empty()).unwrap();
    svc.ready()
        .await
        .unwrap()
        .call(req)
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn passed(svc: &mut LocalRateLimit<App>, n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        if status(svc).await == 200 {
            ok += 1;
        }
    }
    ok
}

#[tokio::test(start_paused = true)]
async fn five_per_minute_then_five_more() {
    let handle = MeshHandle::new(mesh(1, vec![limit(5, MINUTE)]));
    let mut svc = ratings(&handle);
    assert_eq!(passed(&mut svc, 12).await, 5);
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(passed(&mut svc, 3).await, 0, "no token before the fill");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(passed(&mut svc, 12).await, 5);
}

#[tokio::test(start_paused = true)]
async fn limited_responses_are_429_with_the_headers() {
    let handle = MeshHandle::new(mesh(1, vec![limit(1, MINUTE)]));
    let mut svc = ratings(&handle);
    let req = || Request::get("/").body(body::empty()).unwrap();
    let ok = svc.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(
        ok.headers().get("x-local-rate-limit").is_none(),
        "only rate-limited responses carry response_headers_to_add"
    );
    let res = svc.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["x-mesh-error"], "rate-limited");
    assert_eq!(res.headers()["x-local-rate-limit"], "true");
    assert_eq!(res.headers()["x-envoy-ratelimited"], "true");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "local_rate_limited");
}

#[tokio::test(start_paused = true)]
async fn filter_enabled_zero_never_consults_the_bucket() {
    let mut l = limit(5, MINUTE);
    l.filter_enabled = Percent::ZERO;
    let handle = MeshHandle::new(mesh(1, vec![l]));
    let mut svc = ratings(&handle);
    assert_eq!(passed(&mut svc, 12).await, 12);
    let layer = layer(&handle, &[("app", "ratings")]);
    assert_eq!(layer.available(), vec![("default/ratings-rl".into(), 5)]);
}

#[tokio::test(start_paused = true)]
async fn filter_enforced_zero_lets_everything_pass() {
    let mut l = limit(5, MINUTE);
    l.filter_enforced = Percent::ZERO;
    let handle = MeshHandle::new(mesh(1, vec![l]));
    let layer = layer(&handle, &[("app", "ratings")]);
    let mut svc = layer.layer(app());
    assert_eq!(passed(&mut svc, 12).await, 12);
    // The bucket was consulted all the same.
    assert_eq!(layer.available(), vec![("default/ratings-rl".into(), 0)]);
}

#[tokio::test(start_paused = true)]
async fn concurrent_clones_share_one_bucket() {
    let handle = MeshHandle::new(mesh(1, vec![limit(5, MINUTE)]));
    let svc = ratings(&handle);
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let mut svc = svc.clone();
            tokio::spawn(async move { passed(&mut svc, 3).await })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 5);
}

#[tokio::test(start_paused = true)]
async fn other_workloads_and_directions_are_not_limited() {
    let handle = MeshHandle::new(mesh(1, vec![limit(1, MINUTE)]));
    let mut reviews = layer(&handle, &[("app", "reviews")]).layer(app());
    assert_eq!(passed(&mut reviews, 5).await, 5);
    let mut other_ns = LocalRateLimitLayer::new(&handle, TrafficDirection::SidecarInbound)
        .namespace("prod")
        .workload_labels([("app", "ratings")])
        .layer(app());
    assert_eq!(passed(&mut other_ns, 5).await, 5);
    let mut outbound = LocalRateLimitLayer::new(&handle, TrafficDirection::SidecarOutbound)
        .namespace("default")
        .workload_labels([("app", "ratings")])
        .layer(app());
    assert_eq!(passed(&mut outbound, 5).await, 5);
}

#[tokio::test(start_paused = true)]
async fn root_namespace_and_any_context_apply_to_all() {
    let mut l = limit(2, MINUTE);
    l.namespace = "istio-system".into();
    l.selector = None;
    l.context = "ANY".into();
    let handle = MeshHandle::new(mesh(1, vec![l]));
    let mut svc = LocalRateLimitLayer::new(&handle, TrafficDirection::Gateway)
        .namespace("prod")
        .layer(app());
    assert_eq!(passed(&mut svc, 5).await, 2);
}

#[tokio::test(start_paused = true)]
async fn reloads_keep_unchanged_buckets_and_replace_changed_ones() {
    let handle = MeshHandle::new(mesh(1, vec![limit(5, MINUTE)]));
    let mut svc = ratings(&handle);
    assert_eq!(passed(&mut svc, 3).await, 3);
    // Same EnvoyFilter, same bucket: the tokens taken stay taken.
    handle.store(mesh(2, vec![limit(5, MINUTE)]));
    assert_eq!(passed(&mut svc, 5).await, 2);
    // A new bucket size: a new, full bucket.
    handle.store(mesh(3, vec![limit(3, MINUTE)]));
    assert_eq!(passed(&mut svc, 5).await, 3);
    // The limit removed: nothing is limited.
    handle.store(mesh(4, vec![]));
    assert_eq!(passed(&mut svc, 5).await, 5);
}

#[test]
fn verdicts() {
    let l = limit(1, MINUTE);
    assert_eq!(Verdict::decide(&l, 0.5, 0.5, || true), Verdict::Pass);
    assert_eq!(Verdict::decide(&l, 0.5, 0.5, || false), Verdict::Limited);
    let mut half = l.clone();
    half.filter_enforced = Percent::new(50.0).unwrap();
    assert_eq!(
        Verdict::decide(&half, 0.0, 0.7, || false),
        Verdict::LimitedNotEnforced
    );
    assert_eq!(Verdict::decide(&half, 0.0, 0.3, || false), Verdict::Limited);
    half.filter_enabled = Percent::new(50.0).unwrap();
    assert_eq!(
        Verdict::decide(&half, 0.7, 0.0, || panic!("not consulted")),
        Verdict::Pass
    );
}

//! DestinationRule resilience end to end: circuit breaking, outlier detection, load balancers,
//! sticky cookies and DNS endpoints, against real hyper upstreams on 127.0.0.1.

mod support;

use std::{
    collections::BTreeSet,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use mesh_tower::MeshService;
use support::*;
use tokio::net::TcpListener;

const HOST: &str = "reviews.example.internal";

fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

fn destination_rule(traffic_policy: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews}}\nspec:\n  host: {HOST}\n  trafficPolicy: {traffic_policy}\n"
    )
}

async fn get_path(
    svc: &MeshService<Full<Bytes>>,
    path: &str,
) -> (StatusCode, http::HeaderMap, String) {
    send(
        svc,
        get(&format!("http://{HOST}:9080{path}"))
            .body(empty())
            .unwrap(),
    )
    .await
}

/// An upstream that answers every request with `status` and body `name`, after `delay`, and
/// counts the requests it serves at once (the highest count is in the returned counter).
async fn scripted_upstream(
    name: &'static str,
    status: u16,
    delay: Duration,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let active = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let max2 = max.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (active, max) = (active.clone(), max2.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    let (active, max) = (active.clone(), max.clone());
                    async move {
                        let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                        max.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        active.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .header("x-upstream", name)
                                .body(Full::new(Bytes::from(name)))
                                .unwrap(),
                        )
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, max)
}

/// Sends `n` requests for `path` at once; returns the statuses with their `x-mesh-error`.
async fn concurrently(
    svc: &MeshService<Full<Bytes>>,
    n: usize,
    path: &str,
) -> Vec<(u16, Option<String>)> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (svc, path) = (svc.clone(), path.to_owned());
        set.spawn(async move {
            use tower::ServiceExt;
            // The service is Send but not Sync: the task owns its clone.
            let req = get(&format!("http://{HOST}:9080{path}"))
                .body(empty())
                .unwrap();
            let res = svc.oneshot(req).await.unwrap();
            let error = res
                .headers()
                .get("x-mesh-error")
                .map(|v| v.to_str().unwrap().to_owned());
            (res.status().as_u16(), error)
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out
}

fn count(results: &[(u16, Option<String>)], status: u16, error: Option<&str>) -> usize {
    results
        .iter()
        .filter(|(s, e)| *s == status && e.as_deref() == error)
        .count()
}

// === circuit breaking ===

#[tokio::test]
async fn http2_max_requests_overflows_instead_of_queueing() {
    let a = upstream("v1").await;
    let yaml = format!(
        "{}{}",
        service_entry(HOST, 9080, &[(a, "v1")]),
        destination_rule("{connectionPool: {http: {http2MaxRequests: 1}}}")
    );
    let svc = stack(&yaml);
    let results = tokio::time::timeout(
        Duration::from_secs(20),
        concurrently(&svc, 10, "/delay/300"),
    )
    .await
    .expect("overflows answer at once");
    assert!(count(&results, 503, Some("overflow")) >= 1, "{results:?}");
    assert!(count(&results, 200, None) >= 1, "{results:?}");
    assert_eq!(
        count(&results, 503, Some("overflow")) + count(&results, 200, None),
        10,
        "{results:?}"
    );
    // The limit counts requests in flight: once they are done, requests pass again.
    let (status, _, _) = get_path(&svc, "/").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn max_connections_and_pending_requests_hold_http1_requests() {
    let (a, max_seen) = scripted_upstream("v1", 200, Duration::from_millis(300)).await;
    let yaml = format!(
        "{}{}",
        service_entry(HOST, 9080, &[(a, "v1")]),
        destination_rule(
            "{connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}}"
        )
    );
    let svc = stack(&yaml);
    let results = tokio::time::timeout(Duration::from_secs(20), concurrently(&svc, 10, "/"))
        .await
        .unwrap();
    // One request on the connection, one pending; the others overflow (Istio's circuit
    // breaking task, with fortio replaced by ten tasks).
    assert!(count(&results, 503, Some("overflow")) >= 1, "{results:?}");
    assert!(count(&results, 200, None) >= 2, "{results:?}");
    assert_eq!(
        max_seen.load(Ordering::SeqCst),
        1,
        "one connection at a time"
    );
}

#[tokio::test]
async fn max_connections_alone_queues_without_overflow() {
    // Istio's default http1MaxPendingRequests is 2^32-1: over maxConnections, requests wait.
    let (a, max_seen) = scripted_upstream("v1", 200, Duration::from_millis(50)).await;
    let yaml = format!(
        "{}{}",
        service_entry(HOST, 9080, &[(a, "v1")]),
        destination_rule("{connectionPool: {tcp: {maxConnections: 1}}}")
    );
    let svc = stack(&yaml);
    let results = tokio::time::timeout(Duration::from_secs(20), concurrently(&svc, 8, "/"))
        .await
        .unwrap();
    assert_eq!(count(&results, 200, None), 8, "{results:?}");
    assert_eq!(max_seen.load(Ordering::SeqCst), 1);
}

// === outlier detection ===

const EJECT_AFTER_TWO: &str = "{outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}}";

#[tokio::test]
async fn consecutive_5xx_errors_eject_the_failing_endpoint() {
    let good = upstream("good").await;
    let (bad, _) = scripted_upstream("bad", 500, Duration::ZERO).await;
    let yaml = format!(
        "{}{}",
        service_entry(HOST, 9080, &[(good, "v1"), (bad, "v1")]),
        destination_rule(EJECT_AFTER_TWO)
    );
    let svc = stack(&yaml);
    let mut failures = 0;
    for _ in 0..100 {
        let (status, _, body) = get_path(&svc, "/").await;
        if body == "bad" {
            assert_eq!(status, 500);
            failures += 1;
        }
        if failures == 2 {
            break;
        }
    }
    assert_eq!(failures, 2, "the failing endpoint was picked twice");
    for _ in 0..20 {
        let (status, _, body) = get_path(&svc, "/").await;
        assert_eq!(
            (status.as_u16(), body.as_str()),
            (200, "good"),
            "ejected for 30 s"
        );
    }
}

#[tokio::test]
async fn all_endpoints_ejected_is_no_healthy_upstream() {
    let (a, _) = scripted_upstream("a", 503, Duration::ZERO).await;
    let (b, _) = scripted_upstream("b", 502, Duration::ZERO).await;
    let yaml = format!(
        "{}{}",
        service_entry(HOST, 9080, &[(a, "v1"), (b, "v1")]),
        destination_rule(
            "{loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}}"
        )
    );
    let svc = stack(&yaml);
    // Round robin: four requests, two errors for each endpoint.
    for _ in 0..4 {
        let (status, headers, _) = get_path(&svc, "/").await;
        assert!(status == 502 || status == 503);
        assert!(
            headers.get("x-mesh-error").is_none(),
            "the upstreams answered"
        );
    }
    let (status, headers, body) = get_path(&svc, "/").await;
    assert_eq!(status, 503);
    assert_eq!(headers["x-mesh-error"], "no-healthy-upstream");
    assert_eq!(body, "no healthy upstream");
}

// === load balancers ===

async fn three_endpoints() -> String {
    let (a, b, c) = (
        upstream("a").await,
        upstream("b").await,
        upstream("c").await,
    );
    service_entry(HOST, 9080, &[(a, "v1"), (b, "v1"), (c, "v1")])
}

#[tokio::test]
async fn round_robin_alternates_over_every_endpoint() {
    let yaml = format!(
        "{}{}",
        three_endpoints().await,
        destination_rule("{loadBalancer: {simple: ROUND_ROBIN}}")
    );
    let svc = stack(&yaml);
    let mut seen = Vec::new();
    for _ in 0..12 {
        seen.push(get_path(&svc, "/").await.2);
    }
    let first: BTreeSet<_> = seen[..3].iter().cloned().collect();
    assert_eq!(first.len(), 3, "{seen:?}");
    for (i, name) in seen.iter().enumerate().skip(3) {
        assert_eq!(name, &seen[i - 3], "a fixed rotation: {seen:?}");
    }
}

#[tokio::test]
async fn consistent_hash_on_a_header_sticks_and_spreads() {
    let yaml = format!(
        "{}{}",
        three_endpoints().await,
        destination_rule("{loadBalancer: {consistentHash: {httpHeaderName: x-user}}}")
    );
    let svc = stack(&yaml);
    let by_user = |user: String| {
        let svc = svc.clone();
        async move {
            send(
                &svc,
                get(&format!("http://{HOST}:9080/"))
                    .header("x-user", user)
                    .body(empty())
                    .unwrap(),
            )
            .await
            .2
        }
    };
    let alice = by_user("alice".into()).await;
    for _ in 0..20 {
        assert_eq!(by_user("alice".into()).await, alice);
    }
    let mut seen = BTreeSet::new();
    for i in 0..30 {
        seen.insert(by_user(format!("user-{i}")).await);
    }
    assert!(seen.len() >= 2, "different keys spread: {seen:?}");
}

#[tokio::test]
async fn a_sticky_cookie_is_set_and_then_followed() {
    let yaml = format!(
        "{}{}",
        three_endpoints().await,
        destination_rule(
            "{loadBalancer: {consistentHash: {httpCookie: {name: sticky, path: /, ttl: 60s}}}}"
        )
    );
    let svc = stack(&yaml);
    let (status, headers, first) = get_path(&svc, "/").await;
    assert_eq!(status, 200);
    let set_cookie = headers["set-cookie"].to_str().unwrap().to_owned();
    let (pair, attributes) = set_cookie.split_once("; ").unwrap();
    assert!(pair.starts_with("sticky="), "{set_cookie}");
    assert_eq!(attributes, "Path=/; Max-Age=60; HttpOnly");
    for _ in 0..20 {
        let (status, headers, body) = send(
            &svc,
            get(&format!("http://{HOST}:9080/"))
                .header("cookie", format!("theme=dark; {pair}"))
                .body(empty())
                .unwrap(),
        )
        .await;
        assert_eq!((status.as_u16(), body.as_str()), (200, first.as_str()));
        assert!(
            headers.get("set-cookie").is_none(),
            "the client has its cookie"
        );
    }
    // New clients get new cookies, spread over the endpoints.
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        let (_, headers, body) = get_path(&svc, "/").await;
        assert!(headers.contains_key("set-cookie"));
        seen.insert(body);
    }
    assert!(seen.len() >= 2, "{seen:?}");
}

// === DNS ===

#[tokio::test]
async fn a_dns_endpoint_resolves_through_the_system_resolver() {
    let (a, _) = scripted_upstream("local", 200, Duration::ZERO).await;
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: local}}\nspec:\n  hosts: [{HOST}]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports: [{{number: 9080, name: http, protocol: HTTP}}]\n  endpoints:\n  - {{address: localhost, ports: {{http: {}}}}}\n",
        a.port()
    );
    let svc = stack(&yaml);
    for _ in 0..3 {
        let (status, headers, body) = get_path(&svc, "/").await;
        assert_eq!(
            (status.as_u16(), body.as_str()),
            (200, "local"),
            "{headers:?}"
        );
    }
}

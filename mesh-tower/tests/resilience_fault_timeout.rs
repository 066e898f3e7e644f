//! Fault injection, route timeouts, mirroring and CORS end to end: real hyper upstreams on
//! 127.0.0.1, the config as YAML, and what a client observes (Istio's fault-injection,
//! request-timeouts and mirroring tasks, scaled down).

mod support;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use support::*;
use tokio::net::TcpListener;

const SUBSETS: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews.example.internal\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n---\n";

fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

fn reviews(path: &str) -> http::request::Builder {
    get(&format!("http://reviews.example.internal:9080{path}"))
}

/// `reviews` with one `v1` endpoint (`upstream("v1")`) and the `v2` endpoint given.
async fn reviews_with_v2(v2: SocketAddr) -> String {
    let v1 = upstream("v1").await;
    format!(
        "{}{SUBSETS}",
        service_entry("reviews.example.internal", 9080, &[(v1, "v1"), (v2, "v2")])
    )
}

fn virtual_service(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews.example.internal]\n  http:\n{http}"
    )
}

#[tokio::test]
async fn a_fixed_delay_holds_the_request() {
    let yaml = format!(
        "{}{}",
        reviews_with_v2(upstream("v2").await).await,
        virtual_service(
            "  - fault: {delay: {fixedDelay: 300ms, percentage: {value: 100}}}\n    route: [{destination: {host: reviews.example.internal, subset: v1}}]\n"
        )
    );
    let svc = stack(&yaml);
    let start = Instant::now();
    let (status, _, body) = send(&svc, reviews("/").body(empty()).unwrap()).await;
    let elapsed = start.elapsed();
    assert_eq!((status.as_u16(), body.as_str()), (200, "v1"));
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn an_abort_for_one_user_only() {
    let yaml = format!(
        "{}{}",
        reviews_with_v2(upstream("v2").await).await,
        virtual_service(
            "  - match: [{headers: {end-user: {exact: jason}}}]\n    fault: {abort: {httpStatus: 500, percentage: {value: 100}}}\n    route: [{destination: {host: reviews.example.internal, subset: v1}}]\n  - route: [{destination: {host: reviews.example.internal, subset: v1}}]\n"
        )
    );
    let svc = stack(&yaml);
    for _ in 0..3 {
        let (status, headers, body) = send(
            &svc,
            reviews("/")
                .header("end-user", "jason")
                .body(empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, 500);
        assert_eq!(headers["x-mesh-error"], "fault-abort");
        assert!(headers.get("x-upstream").is_none(), "never reached v1");
        assert_eq!(body, "fault filter abort");

        let (status, headers, body) = send(&svc, reviews("/").body(empty()).unwrap()).await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "v1"));
        assert_eq!(headers["x-upstream"], "v1");
    }
}

#[tokio::test]
async fn a_route_timeout_answers_504() {
    let yaml = format!(
        "{}{}",
        reviews_with_v2(upstream("v2").await).await,
        virtual_service(
            "  - timeout: 200ms\n    route: [{destination: {host: reviews.example.internal, subset: v1}}]\n"
        )
    );
    let svc = stack(&yaml);
    let start = Instant::now();
    let (status, headers, body) = send(&svc, reviews("/delay/1000").body(empty()).unwrap()).await;
    let elapsed = start.elapsed();
    assert_eq!(status, 504);
    assert_eq!(headers["x-mesh-error"], "upstream-timeout");
    assert_eq!(body, "upstream request timeout");
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_millis(900),
        "{elapsed:?}"
    );

    // A fast answer is untouched.
    let (status, _, body) = send(&svc, reviews("/delay/10").body(empty()).unwrap()).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "v1"));
}

/// What the mirror upstream saw: the Host and body of each request.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, Bytes)>>>);

impl Seen {
    fn snapshot(&self) -> Vec<(String, Bytes)> {
        self.0.lock().unwrap().clone()
    }

    /// Waits (bounded) until `n` requests were seen.
    async fn wait_for(&self, n: usize) -> Vec<(String, Bytes)> {
        for _ in 0..300 {
            if self.0.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.snapshot()
    }
}

/// An upstream that records what it gets and answers `v2`; on `/hang` it never answers.
async fn recording_upstream(seen: Seen) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let host = req
                            .headers()
                            .get(http::header::HOST)
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let hang = req.uri().path().starts_with("/hang");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        seen.0.lock().unwrap().push((host, body));
                        if hang {
                            std::future::pending::<()>().await;
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("v2"))))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

const MIRROR_V2: &str = "  - route: [{destination: {host: reviews.example.internal, subset: v1}}]\n    mirror: {host: reviews.example.internal, subset: v2}\n    mirrorPercentage: {value: 100}\n";

#[tokio::test]
async fn v1_traffic_is_mirrored_to_v2() {
    let seen = Seen::default();
    let v2 = recording_upstream(seen.clone()).await;
    let yaml = format!(
        "{}{}",
        reviews_with_v2(v2).await,
        virtual_service(MIRROR_V2)
    );
    let svc = stack(&yaml);
    let n = 5;
    for i in 0..n {
        let req = Request::post("http://reviews.example.internal:9080/reviews/0")
            .body(Full::new(Bytes::from(format!("review {i}"))))
            .unwrap();
        let (status, headers, body) = send(&svc, req).await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-upstream"], "v1", "the main request goes to v1");
        assert_eq!(body, format!("review {i}"), "v1 echoes the body it got");
    }
    let copies = seen.wait_for(n).await;
    assert_eq!(copies.len(), n, "every request mirrored once");
    for (host, _) in &copies {
        assert_eq!(host, "reviews.example.internal-shadow:9080");
    }
    let mut bodies: Vec<_> = copies.iter().map(|(_, b)| b.clone()).collect();
    bodies.sort();
    let expected: Vec<Bytes> = (0..n).map(|i| Bytes::from(format!("review {i}"))).collect();
    assert_eq!(bodies, expected);
}

#[tokio::test]
async fn a_hanging_mirror_never_slows_the_main_request() {
    let seen = Seen::default();
    let v2 = recording_upstream(seen.clone()).await;
    let yaml = format!(
        "{}{}",
        reviews_with_v2(v2).await,
        virtual_service(MIRROR_V2)
    );
    let svc = stack(&yaml);
    let start = Instant::now();
    for _ in 0..3 {
        let (status, _, body) = send(&svc, reviews("/hang").body(empty()).unwrap()).await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "v1"));
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(seen.wait_for(3).await.len(), 3, "the copies did arrive");

    // A mirror that refuses connections does not fail the main request either.
    let yaml = format!(
        "{}{}",
        reviews_with_v2(closed_port().await).await,
        virtual_service(MIRROR_V2)
    );
    let svc = stack(&yaml);
    let (status, _, body) = send(&svc, reviews("/").body(empty()).unwrap()).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "v1"));
}

#[tokio::test]
async fn cors_preflights_are_answered_by_the_mesh() {
    let yaml = format!(
        "{}{}",
        reviews_with_v2(upstream("v2").await).await,
        virtual_service(
            "  - corsPolicy:\n      allowOrigins: [{exact: 'https://bookinfo.example'}]\n      allowMethods: [GET, POST]\n      allowHeaders: [content-type]\n      exposeHeaders: [x-upstream]\n      maxAge: 1h\n    route: [{destination: {host: reviews.example.internal, subset: v1}}]\n"
        )
    );
    let svc = stack(&yaml);
    let preflight = |origin: &str| {
        Request::options("http://reviews.example.internal:9080/reviews/0")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .body(empty())
            .unwrap()
    };

    let (status, headers, _) = send(&svc, preflight("https://bookinfo.example")).await;
    assert_eq!(status, 200);
    assert!(headers.get("x-upstream").is_none(), "answered by the mesh");
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://bookinfo.example"
    );
    assert_eq!(headers["access-control-allow-methods"], "GET,POST");
    assert_eq!(headers["access-control-allow-headers"], "content-type");
    assert_eq!(headers["access-control-max-age"], "3600");

    // Not an allowed origin: forwarded (unmatchedPreflights defaults to FORWARD), no CORS.
    let (_, headers, _) = send(&svc, preflight("https://elsewhere.example")).await;
    assert_eq!(headers["x-upstream"], "v1");
    assert!(headers.get("access-control-allow-origin").is_none());

    // A simple request from the allowed origin reaches v1 and carries the headers back.
    let (status, headers, body) = send(
        &svc,
        reviews("/reviews/0")
            .header("origin", "https://bookinfo.example")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "v1"));
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://bookinfo.example"
    );
    assert_eq!(headers["access-control-expose-headers"], "x-upstream");
}

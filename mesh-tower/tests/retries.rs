//! Retries end to end: real hyper upstreams on 127.0.0.1 (one of them a closed port), the
//! config as YAML, and what a client observes.

mod support;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use support::*;
use tokio::net::TcpListener;

const HOST: &str = "ratings.example.internal";

fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

fn virtual_service(retries: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: ratings}}\nspec:\n  hosts: [{HOST}]\n  http:\n  - route: [{{destination: {{host: {HOST}}}}}]\n    retries: {retries}\n"
    )
}

/// What the counting upstream saw.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    bodies: Mutex<Vec<Bytes>>,
}

/// An upstream that answers 503 to its first `failures` requests and 200 afterwards, and
/// remembers every request body.
async fn flaky_upstream(failures: usize) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = counter.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let n = seen.requests.fetch_add(1, Ordering::SeqCst) + 1;
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        seen.bodies.lock().unwrap().push(body.unwrap_or_default());
                        let status = if n <= failures {
                            StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            StatusCode::OK
                        };
                        let res = Response::builder()
                            .status(status)
                            .header("x-request-number", n)
                            .body(Full::new(Bytes::from(format!("request {n}"))))
                            .unwrap();
                        Ok::<_, Infallible>(res)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn istios_default_policy_moves_past_an_endpoint_that_refuses_connections() {
    let (up, down) = (upstream("up").await, closed_port().await);
    // A VirtualService route without `retries`: Istio's default retry policy.
    let yaml = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: ratings}}\nspec:\n  hosts: [{HOST}]\n  http:\n  - route: [{{destination: {{host: {HOST}}}}}]\n",
        service_entry(HOST, 9080, &[(down, "v1"), (up, "v1")])
    );
    let svc = stack(&yaml);
    for i in 0..20 {
        let (status, headers, body) = send(
            &svc,
            get(&format!("http://{HOST}:9080/r/{i}"))
                .body(empty())
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status.as_u16(), body.as_str()),
            (200, "up"),
            "request {i}: {headers:?}"
        );
    }
}

#[tokio::test]
async fn with_attempts_0_the_refusing_endpoint_shows() {
    // The contrast: without retries some of the same requests fail, so the test above did
    // meet the closed port.
    let (up, down) = (upstream("up").await, closed_port().await);
    let yaml = format!(
        "{}{}",
        service_entry(HOST, 9080, &[(down, "v1"), (up, "v1")]),
        virtual_service("{attempts: 0}")
    );
    let svc = stack(&yaml);
    let mut refused = 0;
    for i in 0..20 {
        let (status, headers, _) = send(
            &svc,
            get(&format!("http://{HOST}:9080/r/{i}"))
                .body(empty())
                .unwrap(),
        )
        .await;
        if status == 503 {
            assert_eq!(headers["x-mesh-error"], "upstream-connect-failure");
            refused += 1;
        }
    }
    assert!(refused > 0, "the closed port was never picked");
}

#[tokio::test]
async fn retry_on_5xx_gets_past_failures_and_replays_the_body() {
    let failures = 2;
    let (addr, seen) = flaky_upstream(failures).await;
    let yaml = format!(
        "{}{}",
        service_entry(HOST, 9080, &[(addr, "v1")]),
        virtual_service("{attempts: 3, retryOn: 5xx}")
    );
    let svc = stack(&yaml);
    let payload = Bytes::from(vec![b'x'; 20_000]);
    let req = Request::post(format!("http://{HOST}:9080/ratings"))
        .body(Full::new(payload.clone()))
        .unwrap();
    let (status, headers, body) = send(&svc, req).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-request-number"], "3");
    assert_eq!(body, "request 3");
    assert_eq!(seen.requests.load(Ordering::SeqCst), failures + 1);
    let bodies = seen.bodies.lock().unwrap();
    assert!(
        bodies.iter().all(|b| *b == payload),
        "every attempt carried the whole body"
    );
}

#[tokio::test]
async fn without_retries_for_5xx_the_first_failure_is_returned() {
    let (addr, seen) = flaky_upstream(1).await;
    let yaml = format!(
        "{}{}",
        service_entry(HOST, 9080, &[(addr, "v1")]),
        virtual_service("{attempts: 3}") // Istio's default conditions: not 503
    );
    let svc = stack(&yaml);
    let (status, _, _) = send(
        &svc,
        get(&format!("http://{HOST}:9080/")).body(empty()).unwrap(),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(seen.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn per_try_timeouts_end_in_a_504_well_within_the_delay() {
    let addr = upstream("slow").await;
    let yaml = format!(
        "{}{}",
        service_entry(HOST, 9080, &[(addr, "v1")]),
        virtual_service("{attempts: 2, perTryTimeout: 100ms, retryOn: 5xx}")
    );
    let svc = stack(&yaml);
    let start = Instant::now();
    let (status, headers, body) = send(
        &svc,
        get(&format!("http://{HOST}:9080/delay/1000"))
            .body(empty())
            .unwrap(),
    )
    .await;
    let took = start.elapsed();
    assert_eq!(status, 504);
    assert_eq!(headers["x-mesh-error"], "upstream-timeout");
    assert_eq!(body, "upstream request timeout");
    // Three tries of 100 ms and two back-offs (under 25 ms and 75 ms).
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(900),
        "took {took:?}"
    );
}

use std::{
    convert::Infallible,
    future::Future,
    sync::atomic::{AtomicU64, AtomicUsize},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;

use super::*;
use crate::grpc::{
    handle,
    tests::{server_with, upstream},
};

#[test]
fn requests_are_due_evenly_and_without_drift() {
    let start = Instant::now();
    assert_eq!(due(start, 0, 1000), start);
    assert_eq!(due(start, 1, 1000), start + Duration::from_millis(1));
    assert_eq!(due(start, 1, 3), start + Duration::from_nanos(333_333_333));
    // A rounded period added up would be 1 ns short per request; the schedule is not.
    assert_eq!(
        due(start, 3_000_000, 3),
        start + Duration::from_secs(1_000_000)
    );
}

#[test]
fn a_late_request_is_measured_from_when_it_was_due() {
    let due = Instant::now();
    let (early, late) = (
        due - Duration::from_millis(3),
        due + Duration::from_millis(7),
    );
    // Free before the due time: the timer's own lateness is not the proxy's.
    let sent = due + Duration::from_micros(900);
    assert_eq!(measured_from(due, early, sent), sent);
    // Busy past the due time (the previous answer was late): from the due time.
    assert_eq!(measured_from(due, late, late), due);
}

#[test]
fn wires_are_named_by_their_ids() {
    for w in Wire::ALL {
        assert_eq!(Wire::from_id(w.id()), Some(w));
    }
    assert_eq!(Wire::from_id("http3"), None);
}

fn settings(addr: SocketAddr, wire: Wire, conns: u32, mode: Mode, millis: u64) -> Settings {
    Settings {
        addr,
        authority: "upstream.bench.local".into(),
        wire,
        conns,
        mode,
        duration: Duration::from_millis(millis),
    }
}

// === HTTP/1.1 and h2c ===

/// An HTTP/1.1 and h2c server on 127.0.0.1 port 0 (hyper's auto builder, as the harness's
/// upstream) answering every request with `handler`'s status and a 1 KiB body.
async fn http_server<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(hyper::Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = u16> + Send + 'static,
{
    counting_http_server(handler).await.0
}

/// [`http_server`], and how many connections it has accepted.
async fn counting_http_server<F, Fut>(handler: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(hyper::Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = u16> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            let service = service_fn(move |req| {
                let status = handler(req);
                async move {
                    let mut answer = Response::new(Full::new(Bytes::from_static(&[b'x'; 1024])));
                    *answer.status_mut() = http::StatusCode::from_u16(status.await).unwrap();
                    Ok::<_, Infallible>(answer)
                }
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_fixed_rate_http_run_sends_the_requests_due_with_the_host() {
    for wire in [Wire::Http1, Wire::H2c] {
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        let addr = http_server(move |req: hyper::Request<Incoming>| {
            // HTTP/1.1 sends a Host header, h2c the URI's authority.
            let host = req
                .headers()
                .get(http::header::HOST)
                .map(|h| h.to_str().unwrap().to_owned())
                .or_else(|| req.uri().authority().map(|a| a.to_string()));
            let _ = seen_tx.send((req.version(), host));
            async { 200 }
        })
        .await;
        let r = run(&settings(addr, wire, 4, Mode::Fixed { rps: 400 }, 250))
            .await
            .unwrap();
        assert_eq!(r.errors, 0, "{wire:?}: {:?}", r.first_error);
        assert_eq!(r.requests, 100, "{wire:?}: 400 rps for 0.25 s");
        assert!((r.rps() - 400.0).abs() < 1e-9, "{}", r.rps());
        let (version, host) = seen_rx.recv().await.unwrap();
        let expect = match wire {
            Wire::Http1 => http::Version::HTTP_11,
            _ => http::Version::HTTP_2,
        };
        assert_eq!(version, expect);
        assert_eq!(host.as_deref(), Some("upstream.bench.local"));
    }
}

#[tokio::test]
async fn an_http_stall_counts_for_every_request_it_delayed() {
    // The 20th request is answered 200 ms late; at 100 rps over one connection the requests
    // due in those 200 ms wait behind it. Measured from their due times, about 20 are slow;
    // measured from their sends (a closed loop's view), one would be.
    for wire in [Wire::Http1, Wire::H2c] {
        let seen = Arc::new(AtomicU64::new(0));
        let addr = http_server(move |_req| {
            let n = seen.fetch_add(1, Ordering::Relaxed);
            async move {
                if n == 19 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                200
            }
        })
        .await;
        let r = run(&settings(addr, wire, 1, Mode::Fixed { rps: 100 }, 1000))
            .await
            .unwrap();
        assert_eq!(r.errors, 0, "{wire:?}: {:?}", r.first_error);
        assert_eq!(r.requests, 100, "{wire:?}: delayed requests are sent late");
        let slow = r.latency.count_between(50_000_000, u64::MAX);
        assert!(slow >= 10, "{wire:?}: {slow} requests over 50 ms");
        assert!(r.latency.max() >= 200_000_000, "{}", r.latency.max());
        // Without the stall nearly every request is answered well under 50 ms: the slow
        // ones are the stall's, not the machine's.
        assert!(slow <= 25, "{wire:?}: {slow} requests over 50 ms");
    }
}

#[tokio::test]
async fn http_errors_are_counted_with_the_first_reason() {
    // Every third answer is a 503: an error, after which the client goes on (on a new
    // connection: it does not trust one that failed).
    let n = Arc::new(AtomicUsize::new(0));
    let addr = http_server(move |_req| {
        let i = n.fetch_add(1, Ordering::Relaxed);
        async move { if i % 3 == 2 { 503 } else { 200 } }
    })
    .await;
    let r = run(&settings(
        addr,
        Wire::Http1,
        2,
        Mode::Fixed { rps: 300 },
        100,
    ))
    .await
    .unwrap();
    assert_eq!(r.requests + r.errors, 30);
    assert_eq!(r.errors, 10, "{:?}", r.first_error);
    assert!(r.first_error.unwrap().contains("503"));
}

/// A server that answers one request per connection and closes it (as a proxy at its
/// keep-alive limit does): every request after the first needs a new connection.
async fn one_request_per_connection() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            let service = service_fn(|_req| async {
                let mut answer = Response::new(Full::new(Bytes::from_static(b"ok")));
                answer.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
                Ok::<_, Infallible>(answer)
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn an_http1_connection_the_server_closed_is_opened_again() {
    let (addr, accepted) = one_request_per_connection().await;
    let r = run(&settings(
        addr,
        Wire::Http1,
        1,
        Mode::Fixed { rps: 100 },
        100,
    ))
    .await
    .unwrap();
    assert_eq!((r.requests, r.errors), (10, 0), "{:?}", r.first_error);
    assert_eq!(accepted.load(Ordering::Relaxed), 10);
}

#[tokio::test]
async fn a_closed_loop_http_run_keeps_every_connection_busy() {
    for (wire, streams) in [(Wire::Http1, 1), (Wire::H2c, 4)] {
        let (addr, accepted) = counting_http_server(|_req| async { 200 }).await;
        let r = run(&settings(addr, wire, 2, Mode::Max { streams }, 200))
            .await
            .unwrap();
        assert_eq!(r.errors, 0, "{wire:?}: {:?}", r.first_error);
        assert!(r.requests >= 8, "{wire:?}: {}", r.requests);
        assert!(r.elapsed >= Duration::from_millis(200));
        // Two connections, whatever the streams: no stream opened one of its own.
        assert_eq!(accepted.load(Ordering::Relaxed), 2, "{wire:?}");
    }
    let addr = http_server(|_req| async { 200 }).await;
    let err = run(&settings(
        addr,
        Wire::Http1,
        2,
        Mode::Max { streams: 2 },
        200,
    ))
    .await
    .unwrap_err();
    assert!(err.contains("--streams 1"), "{err}");
}

#[tokio::test]
async fn a_closed_port_is_an_error_naming_it() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    for wire in Wire::ALL {
        let err = run(&settings(addr, wire, 1, Mode::Fixed { rps: 10 }, 100))
            .await
            .unwrap_err();
        assert!(err.contains(&addr.to_string()), "{wire:?}: {err}");
    }
}

// === gRPC ===

#[tokio::test]
async fn a_fixed_rate_grpc_run_sends_the_calls_due() {
    let addr = upstream().await;
    let r = run(&settings(
        addr,
        Wire::Grpc,
        2,
        Mode::Fixed { rps: 200 },
        500,
    ))
    .await
    .unwrap();
    assert_eq!(r.errors, 0, "{:?}", r.first_error);
    assert_eq!(r.requests, 100, "200 rps for 0.5 s");
    assert!((r.rps() - 200.0).abs() < 1e-9, "{}", r.rps());
    let p50 = r.quantile_ms(0.5).unwrap();
    assert!(p50 > 0.0 && p50 < 100.0, "{p50}");
    let json = r.to_json();
    assert_eq!(json["requests"], 100);
    assert!(json["p99.9_ms"].as_f64().is_some());
}

#[tokio::test]
async fn a_grpc_stall_counts_for_every_call_it_delayed() {
    let seen = Arc::new(AtomicU64::new(0));
    let addr = server_with(move |req| {
        let n = seen.fetch_add(1, Ordering::Relaxed);
        async move {
            if n == 19 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            handle(req).await
        }
    })
    .await;
    let r = run(&settings(
        addr,
        Wire::Grpc,
        1,
        Mode::Fixed { rps: 100 },
        1000,
    ))
    .await
    .unwrap();
    assert_eq!(r.errors, 0, "{:?}", r.first_error);
    assert_eq!(
        r.requests, 100,
        "the delayed calls are sent late, not dropped"
    );
    let slow = r.latency.count_between(50_000_000, u64::MAX);
    assert!(slow >= 10, "{slow} calls over 50 ms");
    assert!(r.latency.max() >= 200_000_000, "{}", r.latency.max());
}

#[tokio::test]
async fn a_closed_loop_grpc_run_keeps_every_stream_busy() {
    let addr = upstream().await;
    let r = run(&settings(
        addr,
        Wire::Grpc,
        2,
        Mode::Max { streams: 3 },
        300,
    ))
    .await
    .unwrap();
    assert_eq!(r.errors, 0, "{:?}", r.first_error);
    assert!(r.requests >= 6, "{}", r.requests);
    assert!(r.rps() > 0.0);
    assert!(r.elapsed >= Duration::from_millis(300));
}

#[tokio::test]
async fn failed_calls_are_counted_with_the_first_reason() {
    let addr = server_with(|_req| async { tonic::Status::internal("boom").into_http() }).await;
    let r = run(&settings(
        addr,
        Wire::Grpc,
        1,
        Mode::Fixed { rps: 100 },
        100,
    ))
    .await
    .unwrap();
    assert_eq!((r.requests, r.errors), (0, 10));
    assert!(r.first_error.as_deref().unwrap().contains("boom"));
    assert_eq!(r.quantile_ms(0.5), None);
    assert_eq!(r.to_json()["p50_ms"], Value::Null);
}

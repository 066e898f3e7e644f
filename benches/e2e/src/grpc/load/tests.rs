use std::sync::atomic::AtomicU64;

use super::*;
use crate::grpc::{
    handle,
    tests::{server_with, upstream},
};

#[test]
fn calls_are_due_evenly_and_without_drift() {
    let start = Instant::now();
    assert_eq!(due(start, 0, 1000), start);
    assert_eq!(due(start, 1, 1000), start + Duration::from_millis(1));
    assert_eq!(due(start, 1, 3), start + Duration::from_nanos(333_333_333));
    // A rounded period added up would be 1 ns short per call; the schedule is not.
    assert_eq!(
        due(start, 3_000_000, 3),
        start + Duration::from_secs(1_000_000)
    );
}

#[test]
fn a_late_call_is_measured_from_when_it_was_due() {
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

fn settings(addr: SocketAddr, conns: u32, mode: Mode, millis: u64) -> Settings {
    Settings {
        addr,
        authority: "grpc.bench.local".into(),
        conns,
        mode,
        duration: Duration::from_millis(millis),
    }
}

#[tokio::test]
async fn a_fixed_rate_run_sends_the_calls_due() {
    let addr = upstream().await;
    let r = run(&settings(addr, 2, Mode::Fixed { rps: 200 }, 500))
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
async fn a_stall_counts_for_every_call_it_delayed() {
    // The 20th call is answered 200 ms late; at 100 rps over one connection the calls due in
    // those 200 ms wait behind it. Measured from their due times, about 20 calls are slow;
    // measured from their sends (a closed loop's view), one would be.
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
    let r = run(&settings(addr, 1, Mode::Fixed { rps: 100 }, 1000))
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
async fn a_closed_loop_run_keeps_every_stream_busy() {
    let addr = upstream().await;
    let r = run(&settings(addr, 2, Mode::Max { streams: 3 }, 300))
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
    let r = run(&settings(addr, 1, Mode::Fixed { rps: 100 }, 100))
        .await
        .unwrap();
    assert_eq!((r.requests, r.errors), (0, 10));
    assert!(r.first_error.as_deref().unwrap().contains("boom"));
    assert_eq!(r.quantile_ms(0.5), None);
    assert_eq!(r.to_json()["p50_ms"], Value::Null);
}

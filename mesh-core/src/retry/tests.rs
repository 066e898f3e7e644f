use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use proptest::prelude::*;

use super::*;
use crate::percent::Percent;

fn policy(retry_on: &str, codes: &[u16]) -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        per_try_timeout: None,
        retry_on: retry_on
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        retriable_status_codes: codes.to_vec(),
        retry_remote_localities: false,
        is_default: false,
    }
}

fn status(code: u16) -> AttemptOutcome {
    AttemptOutcome::status(StatusCode::from_u16(code).unwrap())
}

fn grpc(code: u32) -> AttemptOutcome {
    AttemptOutcome::Response(ResponseInfo {
        status: StatusCode::OK,
        grpc_status: Some(code),
        envoy_ratelimited: false,
    })
}

fn ratelimited(code: u16) -> AttemptOutcome {
    AttemptOutcome::Response(ResponseInfo {
        status: StatusCode::from_u16(code).unwrap(),
        grpc_status: None,
        envoy_ratelimited: true,
    })
}

const RESET_SENT: AttemptOutcome = AttemptOutcome::Reset { request_sent: true };
const RESET_UNSENT: AttemptOutcome = AttemptOutcome::Reset {
    request_sent: false,
};

#[test]
fn condition_table() {
    use AttemptOutcome::{ConnectFailure, PerTryTimeout, RefusedStream};
    let cases: &[(&str, &[u16], AttemptOutcome, bool)] = &[
        // 5xx: any 5xx and every attempt without a response.
        ("5xx", &[], status(500), true),
        ("5xx", &[], status(503), true),
        ("5xx", &[], status(599), true),
        ("5xx", &[], status(499), false),
        ("5xx", &[], status(200), false),
        ("5xx", &[], ConnectFailure, true),
        ("5xx", &[], RESET_SENT, true),
        ("5xx", &[], RefusedStream, true),
        ("5xx", &[], PerTryTimeout, true),
        ("5xx", &[], grpc(14), false),
        // gateway-error: 502, 503, 504 only, and no-response attempts.
        ("gateway-error", &[], status(502), true),
        ("gateway-error", &[], status(503), true),
        ("gateway-error", &[], status(504), true),
        ("gateway-error", &[], status(500), false),
        ("gateway-error", &[], status(501), false),
        ("gateway-error", &[], ConnectFailure, true),
        ("gateway-error", &[], PerTryTimeout, true),
        ("gateway-error", &[], RESET_SENT, true),
        // reset: no response at all.
        ("reset", &[], RESET_SENT, true),
        ("reset", &[], RESET_UNSENT, true),
        ("reset", &[], ConnectFailure, true),
        ("reset", &[], RefusedStream, true),
        ("reset", &[], PerTryTimeout, true),
        ("reset", &[], status(503), false),
        // reset-before-request: only when the request did not reach the upstream.
        ("reset-before-request", &[], RESET_UNSENT, true),
        ("reset-before-request", &[], RESET_SENT, false),
        ("reset-before-request", &[], ConnectFailure, true),
        ("reset-before-request", &[], PerTryTimeout, false),
        ("reset-before-request", &[], RefusedStream, false),
        ("reset-before-request", &[], status(503), false),
        // connect-failure.
        ("connect-failure", &[], ConnectFailure, true),
        ("connect-failure", &[], RESET_UNSENT, false),
        ("connect-failure", &[], PerTryTimeout, false),
        ("connect-failure", &[], status(503), false),
        // refused-stream.
        ("refused-stream", &[], RefusedStream, true),
        ("refused-stream", &[], RESET_SENT, false),
        ("refused-stream", &[], ConnectFailure, false),
        // retriable-4xx: 409 only.
        ("retriable-4xx", &[], status(409), true),
        ("retriable-4xx", &[], status(429), false),
        ("retriable-4xx", &[], status(400), false),
        // retriable-status-codes: the policy's codes.
        ("retriable-status-codes", &[503], status(503), true),
        ("retriable-status-codes", &[503], status(502), false),
        ("retriable-status-codes", &[429, 409], status(429), true),
        ("retriable-status-codes", &[], status(503), false),
        ("retriable-status-codes", &[503], ConnectFailure, false),
        // Codes without the condition do nothing (the compiler always adds it).
        ("connect-failure", &[503], status(503), false),
        // envoy-ratelimited, and the header suppresses every other condition.
        ("envoy-ratelimited", &[], ratelimited(429), true),
        ("envoy-ratelimited", &[], status(429), false),
        ("5xx", &[], ratelimited(503), false),
        ("5xx,envoy-ratelimited", &[], ratelimited(503), true),
        ("retriable-status-codes", &[429], ratelimited(429), false),
        // Never match: Istio cannot configure retriable headers; no HTTP/3 upstream.
        ("retriable-headers", &[], status(503), false),
        ("retriable-headers", &[], RESET_SENT, false),
        ("http3-post-connect-failure", &[], RESET_SENT, false),
        ("http3-post-connect-failure", &[], ConnectFailure, false),
        // gRPC, by grpc-status in the response headers.
        ("cancelled", &[], grpc(1), true),
        ("deadline-exceeded", &[], grpc(4), true),
        ("resource-exhausted", &[], grpc(8), true),
        ("internal", &[], grpc(13), true),
        ("unavailable", &[], grpc(14), true),
        ("unavailable", &[], grpc(13), false),
        ("unavailable", &[], grpc(0), false),
        ("unavailable", &[], status(503), false),
        ("unavailable", &[], ConnectFailure, false),
        ("cancelled,deadline-exceeded", &[], grpc(4), true),
        ("cancelled,deadline-exceeded", &[], grpc(8), false),
        // Nothing configured, unknown names: no retry.
        ("", &[], status(503), false),
        ("", &[], ConnectFailure, false),
        ("bogus", &[], status(503), false),
    ];
    for (retry_on, codes, outcome, expected) in cases {
        let p = policy(retry_on, codes);
        assert_eq!(
            should_retry(&p, outcome),
            *expected,
            "retryOn {retry_on:?} codes {codes:?} outcome {outcome:?}"
        );
    }
}

#[test]
fn istio_default_policy() {
    let p = RetryPolicy::istio_default();
    let c = RetryConditions::new(&p);
    // A plain 503 response is not retried by default...
    assert!(!c.should_retry(&status(503)));
    assert!(!c.should_retry(&status(500)));
    assert!(!c.should_retry(&AttemptOutcome::PerTryTimeout));
    assert!(!c.should_retry(&RESET_SENT));
    // ...connection failures, refused streams and gRPC unavailable/cancelled are.
    assert!(c.should_retry(&AttemptOutcome::ConnectFailure));
    assert!(c.should_retry(&AttemptOutcome::RefusedStream));
    assert!(c.should_retry(&grpc(14)));
    assert!(c.should_retry(&grpc(1)));
    assert!(!c.should_retry(&grpc(4)));

    // retryOn: "503" (the compiler stores the code and adds retriable-status-codes).
    let p = policy("retriable-status-codes", &[503]);
    assert!(should_retry(&p, &status(503)));
    assert!(!should_retry(&p, &status(500)));
}

#[test]
fn grpc_unavailable_from_headers() {
    let mut headers = HeaderMap::new();
    headers.insert("grpc-status", HeaderValue::from_static("14"));
    let info = ResponseInfo::from_headers(StatusCode::OK, &headers);
    assert_eq!(info.grpc_status, Some(14));
    assert!(!info.envoy_ratelimited);
    let p = policy("unavailable", &[]);
    assert!(should_retry(&p, &AttemptOutcome::Response(info)));

    headers.insert("grpc-status", HeaderValue::from_static("nope"));
    headers.insert("x-envoy-ratelimited", HeaderValue::from_static(""));
    let info = ResponseInfo::from_headers(StatusCode::TOO_MANY_REQUESTS, &headers);
    assert_eq!(info.grpc_status, None);
    assert!(info.envoy_ratelimited);
}

#[test]
fn condition_names_round_trip() {
    for c in RetryOn::ALL {
        assert_eq!(RetryOn::parse(c.as_str()), Some(c));
    }
    assert_eq!(RetryOn::parse("503"), None);
    assert_eq!(RetryOn::parse("5XX"), None);
    let c = RetryConditions::new(&policy("5xx,unavailable", &[]));
    assert!(c.contains(RetryOn::FiveXx) && c.contains(RetryOn::GrpcUnavailable));
    assert!(!c.contains(RetryOn::Reset));
}

#[test]
fn backoff_follows_envoys_examples() {
    let b = Backoff::default();
    assert_eq!(b.base(), Duration::from_millis(25));
    assert_eq!(b.max(), Duration::from_millis(250));
    // "the first retry will be delayed randomly by 0-24ms, the 2nd by 0-74ms, the 3rd by
    // 0-174ms", then capped at 250 ms.
    let bounds: Vec<u64> = (1..=6)
        .map(|n| b.upper_bound(n).as_millis() as u64)
        .collect();
    assert_eq!(bounds, [25, 75, 175, 250, 250, 250]);
    assert_eq!(b.delay(1, u64::MAX), Duration::from_millis(u64::MAX % 25));
    assert_eq!(b.delay(2, 74), Duration::from_millis(74));
    assert_eq!(b.delay(3, 175), Duration::ZERO);
    assert_eq!(b.upper_bound(0), b.upper_bound(1));
    assert_eq!(b.upper_bound(u32::MAX), Duration::from_millis(250));

    let b = Backoff::new(Duration::from_millis(100), Some(Duration::from_secs(1)));
    assert_eq!(b.upper_bound(3), Duration::from_millis(700));
    assert_eq!(b.upper_bound(4), Duration::from_secs(1));
    // A maximum below the base is raised to the base.
    let b = Backoff::new(Duration::from_millis(100), Some(Duration::from_millis(10)));
    assert_eq!(b.max(), Duration::from_millis(100));
    // Sub-millisecond bases wait nothing, as Envoy's millisecond arithmetic does.
    let b = Backoff::new(Duration::from_micros(500), None);
    assert_eq!(b.delay(5, 12345), Duration::ZERO);
}

#[test]
fn retry_budget() {
    let p20 = Percent::new(20.0).unwrap();
    // The floor applies while 20% is below it.
    assert!(budget_allows(10, 2, p20, 3));
    assert!(!budget_allows(10, 3, p20, 3));
    assert!(budget_allows(50, 9, p20, 3));
    assert!(!budget_allows(50, 10, p20, 3));
    // Rounds down: 20% of 24 is 4.8, so 4.
    assert!(budget_allows(24, 3, p20, 0));
    assert!(!budget_allows(24, 4, p20, 0));
    // 0% with a floor of 0: no retries at all.
    assert!(!budget_allows(1000, 0, Percent::ZERO, 0));
    let d = RetryBudget::default();
    assert_eq!(d.min_retry_concurrency, 3);
    assert_eq!(d.budget_percent, p20);
    assert!(d.allows(100, 19) && !d.allows(100, 20));
}

proptest! {
    #[test]
    fn backoff_bounds(
        base_ms in 0u64..10_000,
        max_ms in proptest::option::of(0u64..100_000),
        retry in 0u32..100,
        random in any::<u64>(),
    ) {
        let b = Backoff::new(
            Duration::from_millis(base_ms),
            max_ms.map(Duration::from_millis),
        );
        let max = b.max().as_millis() as u64;
        prop_assert!(max >= base_ms);
        prop_assert_eq!(max, max_ms.unwrap_or(base_ms * 10).max(base_ms));
        let bound = b.upper_bound(retry).as_millis() as u64;
        let n = retry.clamp(1, 63);
        let exact = u128::from(base_ms) * ((1u128 << n) - 1);
        prop_assert_eq!(u128::from(bound), exact.min(u128::from(max)));
        let delay = b.delay(retry, random).as_millis() as u64;
        if bound == 0 {
            prop_assert_eq!(delay, 0);
        } else {
            prop_assert!(delay < bound);
        }
        // The bound never shrinks as retries go on.
        prop_assert!(b.upper_bound(retry + 1) >= b.upper_bound(retry));
    }

    #[test]
    fn delays_cover_the_whole_range(retry in 1u32..8) {
        let b = Backoff::default();
        let bound = b.upper_bound(retry).as_millis() as u64;
        // Uniform input maps onto every millisecond of [0, bound).
        let seen: std::collections::BTreeSet<u64> = (0..bound)
            .map(|r| b.delay(retry, r).as_millis() as u64)
            .collect();
        prop_assert_eq!(seen.len() as u64, bound);
        prop_assert_eq!(seen.last().copied(), bound.checked_sub(1));
    }

    #[test]
    fn budget_is_monotone(
        active in 0u64..10_000,
        retries in 0u64..10_000,
        pct in 0.0f64..=100.0,
        min in 0u32..10,
    ) {
        let p = Percent::new(pct).unwrap();
        let allowed = budget_allows(active, retries, p, min);
        if retries < u64::from(min) {
            prop_assert!(allowed);
        }
        if allowed {
            // More load, or fewer retries in flight, never takes the room away.
            prop_assert!(budget_allows(active + 1, retries, p, min));
            if retries > 0 {
                prop_assert!(budget_allows(active, retries - 1, p, min));
            }
        }
        prop_assert!(!allowed || retries < u64::from(min) || (retries as f64) < pct / 100.0 * active as f64);
    }
}

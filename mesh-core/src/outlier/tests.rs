use std::time::Duration;

use http::StatusCode;
use proptest::prelude::*;

use super::*;

const S: fn(u64) -> Duration = Duration::from_secs;

fn policy() -> OutlierDetection {
    // Istio's defaults as mesh-config compiles them, with maxEjectionPercent opened up.
    OutlierDetection {
        consecutive_5xx_errors: Some(5),
        consecutive_gateway_errors: None,
        consecutive_local_origin_failures: None,
        split_external_local_origin_errors: false,
        interval: S(10),
        base_ejection_time: S(30),
        max_ejection_percent: 100,
        min_health_percent: 0,
    }
}

fn status(code: u16) -> Outcome {
    Outcome::Response(StatusCode::from_u16(code).unwrap())
}

fn record_n(od: &mut OutlierDetector, i: usize, outcome: Outcome, n: usize, now: Duration) {
    for _ in 0..n {
        od.record(i, outcome, now);
    }
}

#[test]
fn five_consecutive_5xx_eject() {
    let mut od = OutlierDetector::new(&policy(), 4);
    let t = S(1);
    for _ in 0..4 {
        assert_eq!(od.record(2, status(500), t), None);
    }
    assert!(!od.is_ejected(2, t));
    let ejection = od.record(2, status(500), t).unwrap();
    assert_eq!(
        ejection,
        Ejection {
            endpoint: 2,
            reason: EjectionReason::Consecutive5xx,
            duration: S(30),
        }
    );
    assert!(od.is_ejected(2, t));
    assert_eq!(od.eligible(t).collect::<Vec<_>>(), [0, 1, 3]);
    assert_eq!(od.ejected_count(t), 1);
}

#[test]
fn a_success_resets_the_counter() {
    let mut od = OutlierDetector::new(&policy(), 2);
    let t = S(1);
    record_n(&mut od, 0, status(503), 4, t);
    od.record(0, status(200), t);
    record_n(&mut od, 0, status(503), 4, t);
    assert!(!od.is_ejected(0, t));
    // 4xx are not server errors: they reset too.
    od.record(0, status(404), t);
    record_n(&mut od, 0, status(503), 4, t);
    assert!(!od.is_ejected(0, t));
    od.record(0, status(503), t);
    assert!(od.is_ejected(0, t));
}

#[test]
fn ejection_lasts_base_times_count_until_the_next_sweep() {
    let mut od = OutlierDetector::new(&policy(), 2);
    // First ejection at t=5: 30 s, so due at 35 s; sweeps every 10 s return it at 40 s.
    record_n(&mut od, 0, status(500), 5, S(5));
    assert!(od.is_ejected(0, S(35)));
    assert!(od.is_ejected(0, Duration::from_millis(39_999)));
    assert!(!od.is_ejected(0, S(40)));
    assert_eq!(od.advance(S(40)), 1);

    // Ejected again right away: multiplier 2, 60 s (due at 101 s, back at 110 s).
    let e = (0..5)
        .find_map(|_| od.record(0, Outcome::Reset, S(41)))
        .unwrap();
    assert_eq!(e.duration, S(60));
    assert_eq!(e.reason, EjectionReason::Consecutive5xx);
    assert!(od.is_ejected(0, S(109)));
    assert!(!od.is_ejected(0, S(110)));

    // Third time: 90 s.
    let e = (0..5)
        .find_map(|_| od.record(0, status(502), S(110)))
        .unwrap();
    assert_eq!(e.duration, S(90));
}

#[test]
fn ejection_time_is_capped_and_the_multiplier_decays() {
    let mut p = policy();
    p.base_ejection_time = S(100);
    let mut od = OutlierDetector::new(&p, 1);
    assert_eq!(od.settings().max_ejection_time, S(300));
    let mut now = S(0);
    let mut durations = Vec::new();
    for _ in 0..5 {
        let e = (0..5).find_map(|_| od.record(0, status(500), now)).unwrap();
        durations.push(e.duration);
        // Come back at the sweep after the ejection ends.
        now += e.duration;
        assert!(!od.is_ejected(0, now));
    }
    assert_eq!(durations, [S(100), S(200), S(300), S(300), S(300)]);

    // Healthy for 2 sweeps: the multiplier (3, the cap) drops to 1, the next ejection is 200 s.
    od.advance(now + S(20));
    let e = (0..5)
        .find_map(|_| od.record(0, status(500), now + S(20)))
        .unwrap();
    assert_eq!(e.duration, S(200));

    // Healthy for a long time (caught up in one call): back to the base.
    let later = now + S(20) + S(200) + S(3600);
    let e = (0..5)
        .find_map(|_| od.record(0, status(500), later))
        .unwrap();
    assert_eq!(e.duration, S(100));
}

#[test]
fn base_ejection_time_longer_than_the_default_cap() {
    let mut p = policy();
    p.base_ejection_time = S(600);
    let mut od = OutlierDetector::new(&p, 1);
    assert_eq!(od.settings().max_ejection_time, S(600));
    let e = (0..5)
        .find_map(|_| od.record(0, status(500), S(0)))
        .unwrap();
    assert_eq!(e.duration, S(600));
    let e = (0..5)
        .find_map(|_| od.record(0, status(500), S(600)))
        .unwrap();
    assert_eq!(e.duration, S(600));
}

#[test]
fn max_ejection_percent_caps_ejections() {
    let mut p = policy();
    p.max_ejection_percent = 50;
    let mut od = OutlierDetector::new(&p, 4);
    let t = S(1);
    for i in 0..4 {
        record_n(&mut od, i, status(500), 5, t);
    }
    assert_eq!(od.ejected_count(t), 2);
    assert!(od.is_ejected(0, t) && od.is_ejected(1, t));
    assert_eq!(od.eligible(t).collect::<Vec<_>>(), [2, 3]);

    // The counter was reset when the threshold was hit: once there is room, endpoint 2 needs
    // another five errors.
    assert!(!od.is_ejected(0, S(40)));
    od.record(2, status(500), S(40));
    assert!(!od.is_ejected(2, S(40)));
    record_n(&mut od, 2, status(500), 4, S(40));
    assert!(od.is_ejected(2, S(40)));
}

#[test]
fn istio_default_ten_percent_ejects_nothing_in_a_small_set() {
    let mut p = policy();
    p.max_ejection_percent = 10;
    // Envoy >= 1.28 checks the percentage on the first ejection: 1 of 9 is 11% > 10%.
    let mut od = OutlierDetector::new(&p, 9);
    record_n(&mut od, 0, status(500), 5, S(1));
    assert!(!od.is_ejected(0, S(1)));
    // 1 of 10 is exactly 10%: allowed; a second is not.
    let mut od = OutlierDetector::new(&p, 10);
    record_n(&mut od, 0, status(500), 5, S(1));
    record_n(&mut od, 1, status(500), 5, S(1));
    assert_eq!(od.ejected_count(S(1)), 1);
    // always_eject_one_host restores the older "at least one" behaviour.
    let mut settings = OutlierSettings::from_policy(&p);
    settings.always_eject_one_host = true;
    let mut od = OutlierDetector::with_settings(settings, 3);
    record_n(&mut od, 0, status(500), 5, S(1));
    record_n(&mut od, 1, status(500), 5, S(1));
    assert_eq!(od.ejected_count(S(1)), 1);
}

#[test]
fn single_endpoint_at_100_percent_leaves_nothing_to_pick() {
    let mut od = OutlierDetector::new(&policy(), 1);
    record_n(&mut od, 0, Outcome::ConnectFailure, 5, S(1));
    assert!(od.is_ejected(0, S(1)));
    assert!(!od.is_panic(S(1)));
    assert_eq!(od.eligible(S(1)).count(), 0);
}

#[test]
fn min_health_percent_is_the_panic_threshold() {
    let mut p = policy();
    p.min_health_percent = 50;
    let mut od = OutlierDetector::new(&p, 4);
    let t = S(1);
    record_n(&mut od, 0, status(500), 5, t);
    record_n(&mut od, 1, status(500), 5, t);
    // 2 of 4 healthy: 50% is not below 50%, detection is in force.
    assert!(!od.is_panic(t));
    assert_eq!(od.eligible(t).collect::<Vec<_>>(), [2, 3]);
    record_n(&mut od, 2, status(500), 5, t);
    // 1 of 4 healthy (25% < 50%): panic, every endpoint is eligible, ejections still recorded.
    assert!(od.is_panic(t));
    assert!(od.is_ejected(2, t));
    assert_eq!(od.eligible(t).collect::<Vec<_>>(), [0, 1, 2, 3]);
    // The ejections end: out of panic.
    assert!(!od.is_panic(S(40)));
    assert_eq!(od.eligible(S(40)).count(), 4);
}

#[test]
fn gateway_errors() {
    let mut p = policy();
    p.consecutive_5xx_errors = None;
    p.consecutive_gateway_errors = Some(3);
    let mut od = OutlierDetector::new(&p, 2);
    let t = S(1);
    // A 500 is not a gateway error and ends a run of them.
    record_n(&mut od, 0, status(503), 2, t);
    od.record(0, status(500), t);
    record_n(&mut od, 0, status(504), 2, t);
    assert!(!od.is_ejected(0, t));
    // Local failures count as gateway errors in default mode.
    let e = od.record(0, Outcome::Timeout, t).unwrap();
    assert_eq!(e.reason, EjectionReason::ConsecutiveGatewayFailure);
    // 500s never eject with only the gateway detector.
    record_n(&mut od, 1, status(500), 20, t);
    assert!(!od.is_ejected(1, t));
}

#[test]
fn five_xx_is_reported_first_when_both_thresholds_are_reached() {
    let mut p = policy();
    p.consecutive_gateway_errors = Some(5);
    let mut od = OutlierDetector::new(&p, 1);
    let e = (0..5)
        .find_map(|_| od.record(0, status(502), S(1)))
        .unwrap();
    assert_eq!(e.reason, EjectionReason::Consecutive5xx);
}

#[test]
fn default_mode_counts_local_failures_as_5xx() {
    let mut od = OutlierDetector::new(&policy(), 1);
    let t = S(1);
    od.record(0, Outcome::ConnectFailure, t);
    od.record(0, Outcome::Timeout, t);
    od.record(0, Outcome::Reset, t);
    // A successful connection is not a successful transaction in default mode.
    od.record(0, Outcome::ConnectSuccess, t);
    od.record(0, status(500), t);
    assert!(!od.is_ejected(0, t));
    od.record(0, status(503), t);
    assert!(od.is_ejected(0, t));
    // For TCP, a connection is the whole transaction: it resets the run.
    let mut od = OutlierDetector::new(&policy(), 1);
    record_n(&mut od, 0, Outcome::ConnectFailure, 4, t);
    od.record(0, Outcome::ConnectSuccessFinal, t);
    record_n(&mut od, 0, Outcome::ConnectFailure, 4, t);
    assert!(!od.is_ejected(0, t));
}

#[test]
fn split_mode_separates_local_and_external_errors() {
    let mut p = policy();
    p.split_external_local_origin_errors = true;
    p.consecutive_local_origin_failures = Some(3);
    let mut od = OutlierDetector::new(&p, 2);
    let t = S(1);
    // Local failures do not count toward the 5xx detector...
    record_n(&mut od, 0, status(500), 4, t);
    record_n(&mut od, 0, Outcome::ConnectFailure, 2, t);
    od.record(0, Outcome::ConnectSuccess, t);
    record_n(&mut od, 0, Outcome::Timeout, 2, t);
    assert!(!od.is_ejected(0, t));
    // ...which still has its four 500s.
    let e = od.record(0, status(500), t).unwrap();
    assert_eq!(e.reason, EjectionReason::Consecutive5xx);

    let e = (0..3)
        .find_map(|_| od.record(1, Outcome::Reset, t))
        .unwrap();
    assert_eq!(e.reason, EjectionReason::ConsecutiveLocalOriginFailure);
}

#[test]
fn split_mode_local_detector_defaults_to_five_and_zero_disables_it() {
    let mut p = policy();
    p.split_external_local_origin_errors = true;
    p.max_ejection_percent = 100;
    let mut od = OutlierDetector::new(&p, 2);
    assert_eq!(od.settings().consecutive_local_origin, Some(5));
    record_n(&mut od, 0, Outcome::ConnectFailure, 4, S(1));
    assert!(!od.is_ejected(0, S(1)));
    od.record(0, Outcome::ConnectFailure, S(1));
    assert!(od.is_ejected(0, S(1)));

    p.consecutive_local_origin_failures = Some(0);
    let mut od = OutlierDetector::new(&p, 1);
    record_n(&mut od, 0, Outcome::ConnectFailure, 50, S(1));
    assert!(!od.is_ejected(0, S(1)));
}

#[test]
fn disabled_5xx_detector() {
    let mut p = policy();
    p.consecutive_5xx_errors = None;
    let mut od = OutlierDetector::new(&p, 1);
    record_n(&mut od, 0, status(500), 100, S(1));
    assert!(!od.is_ejected(0, S(1)));
}

#[test]
fn errors_while_ejected_do_not_extend_the_ejection() {
    let mut od = OutlierDetector::new(&policy(), 2);
    record_n(&mut od, 0, status(500), 5, S(1));
    // In-flight requests finishing with errors after the ejection.
    record_n(&mut od, 0, status(500), 5, S(2));
    assert!(!od.is_ejected(0, S(40)));
    // The next ejection is the second one: 60 s.
    let e = (0..5)
        .find_map(|_| od.record(0, status(500), S(40)))
        .unwrap();
    assert_eq!(e.duration, S(60));
}

#[test]
fn endpoints_changed_keeps_the_state_of_those_that_stay() {
    let mut od = OutlierDetector::new(&policy(), 3);
    let t = S(1);
    record_n(&mut od, 1, status(500), 5, t);
    record_n(&mut od, 2, status(500), 4, t);
    // New set: [old 2, new, old 1].
    od.on_endpoints_changed([Some(2), None, Some(1)]);
    assert_eq!(od.len(), 3);
    assert!(od.is_ejected(2, t));
    assert!(!od.is_ejected(0, t) && !od.is_ejected(1, t));
    // Old endpoint 2 kept its four errors.
    od.record(0, status(500), t);
    assert!(od.is_ejected(0, t));
    // Out-of-range indices are ignored.
    assert_eq!(od.record(7, status(500), t), None);
    assert!(!od.is_ejected(7, t));
}

#[test]
fn empty_set() {
    let mut od = OutlierDetector::new(&policy(), 0);
    assert!(od.is_empty());
    assert_eq!(od.record(0, status(500), S(1)), None);
    assert!(!od.is_panic(S(1)));
    assert_eq!(od.eligible(S(1)).count(), 0);
}

proptest! {
    /// Whatever happens, ejections never exceed maxEjectionPercent, every ejection lasts
    /// between base and max, and the lazy queries agree with the swept state.
    #[test]
    fn invariants(
        n in 1usize..12,
        max_pct in 0u32..=100,
        events in proptest::collection::vec((0usize..12, 0u8..6, 0u64..20_000), 1..200),
    ) {
        let mut p = policy();
        p.max_ejection_percent = max_pct;
        p.consecutive_gateway_errors = Some(3);
        let mut od = OutlierDetector::new(&p, n);
        let mut now = Duration::ZERO;
        for (i, kind, advance_ms) in events {
            now += Duration::from_millis(advance_ms);
            let outcome = match kind {
                0 => status(200),
                1 => status(500),
                2 => status(503),
                3 => Outcome::ConnectFailure,
                4 => Outcome::Timeout,
                _ => Outcome::Reset,
            };
            let lazy: Vec<bool> = (0..n).map(|e| od.is_ejected(e, now)).collect();
            od.advance(now);
            let swept: Vec<bool> = (0..n).map(|e| od.is_ejected(e, now)).collect();
            prop_assert_eq!(lazy, swept);
            if let Some(e) = od.record(i % n, outcome, now) {
                prop_assert!(e.duration >= S(30) && e.duration <= S(300));
            }
            let ejected = od.ejected_count(now);
            prop_assert!(100 * ejected <= max_pct as usize * n);
            prop_assert_eq!(od.eligible(now).count(), n - ejected);
        }
    }
}

//! Outlier detection: passive health checking of the endpoints of one load-balancing set.
//!
//! Implements Istio's DestinationRule
//! [`outlierDetection`](https://istio.io/latest/docs/reference/config/networking/destination-rule/#OutlierDetection)
//! with the semantics of the Envoy settings Istio translates it into
//! ([architecture overview](https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/outlier),
//! [`OutlierDetection` proto](https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/cluster/v3/outlier_detection.proto)).
//! Only the consecutive-error detectors exist: Istio sets none of Envoy's success-rate or
//! failure-percentage detectors.
//!
//! # What counts as an error
//! Each finished attempt is reported as an [`Outcome`]. Envoy distinguishes *externally
//! originated* errors (the upstream answered, with a 5xx) from *locally originated* ones (no
//! usable answer: connection failure, timeout, reset).
//!
//! - Default mode (`splitExternalLocalOriginErrors: false`): both kinds share the counters. A
//!   connection failure or reset counts as a 503 and a timeout as a 504, so all of them are 5xx
//!   errors *and* gateway errors. A response below 500 resets both counters; a 5xx that is not
//!   502, 503 or 504 counts toward `consecutive5xxErrors` but ends a run of gateway errors.
//! - Split mode (`splitExternalLocalOriginErrors: true`): the 5xx and gateway counters see only
//!   responses; local failures go to their own counter, `consecutiveLocalOriginFailures` (Envoy's
//!   default 5 when Istio leaves it unset; 0 disables it). A successful connection, or any response,
//!   resets the local counter.
//!
//! A counter reaching its threshold ejects the endpoint at once (Envoy runs consecutive-error
//! ejection inline, not at the interval) and is reset, whether or not the ejection was allowed.
//! Ejection resets all of the endpoint's counters. When several thresholds are reached by one
//! outcome, `consecutive5xxErrors` is named as the reason (Istio: "if the value of
//! consecutive_gateway_errors is greater than or equal to the value of consecutive_5xx_errors,
//! consecutive_gateway_errors will have no effect").
//!
//! # Ejection
//! - `maxEjectionPercent`: an ejection happens only if, counting the endpoint being ejected, at
//!   most that share of the set is ejected: `100 * (ejected + 1) <= max * n`. This is Envoy since
//!   1.28 (the percentage is checked on the first ejection too), so with Istio's default of 10%
//!   a set of fewer than 10 endpoints ejects nothing. (The proto comment "will eject at least one
//!   host regardless of the value" describes the older behaviour, which Envoy 1.31 made optional
//!   as `always_eject_one_host`; Istio does not set it; see [`OutlierSettings`].)
//! - Duration: `baseEjectionTime * k`, where `k` is the endpoint's ejection multiplier after it is
//!   incremented by this ejection, capped at Envoy's `max_ejection_time` (which Istio does not
//!   set: 300 s, or `baseEjectionTime` if that is longer). The multiplier stops growing once the
//!   cap is reached.
//! - `interval`: sweeps run at every whole multiple of `interval`. A sweep returns an endpoint to
//!   service once its ejection time has passed, so the real ejection lasts until the first sweep
//!   at or after `ejected_at + duration`. At each sweep that finds an endpoint not ejected, its
//!   multiplier decreases by one, so a host that stays healthy returns to `baseEjectionTime`
//!   after about `max_ejection_time / baseEjectionTime * interval`.
//!
//! # minHealthPercent (Envoy's panic threshold)
//! Istio translates `minHealthPercent` into the cluster's `healthy_panic_threshold`. When fewer
//! than that share of endpoints are healthy, the load balancer is in *panic*: it ignores health
//! and balances over every endpoint. Detection keeps running (endpoints are still ejected and
//! returned), only [`OutlierDetector::eligible`] stops filtering. Istio's default is 0%: panic
//! never happens, and when every endpoint is ejected there is none to send to (503
//! `no-healthy-upstream`).
//!
//! # Time and sharing
//! No clock is read: every call takes `now`, a [`Duration`] since an epoch the caller picks once
//! per detector (the `Instant` the detector was built, for example); sweeps are due at whole
//! multiples of `interval` since that epoch. Sweeps that fell due between calls are caught up by
//! the next call that takes `&mut self` ([`record`](OutlierDetector::record),
//! [`advance`](OutlierDetector::advance)), in O(endpoints), however many intervals passed; the
//! `&self` queries account for due sweeps without mutating. The detector is plain data: the layer
//! owns one per endpoint set, behind a `Mutex` (every operation is short and allocation-free).

use std::time::Duration;

use http::StatusCode;

use crate::model::OutlierDetection;

#[cfg(test)]
mod tests;

/// Envoy's default `max_ejection_time`, used because Istio does not set it.
pub const DEFAULT_MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

/// Envoy's default `consecutive_local_origin_failure`, used in split mode when Istio's
/// `consecutiveLocalOriginFailures` is unset.
pub const DEFAULT_CONSECUTIVE_LOCAL_ORIGIN_FAILURES: u32 = 5;

/// How one attempt to an endpoint ended, as outlier detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered with this status (externally originated).
    Response(StatusCode),
    /// A connection to the endpoint was established; a request follows. Resets the
    /// local-origin counter in split mode, ignored otherwise (the response decides).
    ConnectSuccess,
    /// A connection was established and that is the whole transaction (TCP proxying): counts as
    /// a success in both modes.
    ConnectSuccessFinal,
    /// No connection could be made (refused, connect timeout, TLS handshake failure).
    /// Locally originated; a 503 in default mode.
    ConnectFailure,
    /// The endpoint did not answer in time (per-try or request timeout). Locally originated; a
    /// 504 in default mode.
    Timeout,
    /// The connection or stream was reset before a response. Locally originated; a 503 in
    /// default mode.
    Reset,
}

/// Which detector ejected an endpoint (Envoy's `ejections_enforced_*` statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EjectionReason {
    Consecutive5xx,
    ConsecutiveGatewayFailure,
    ConsecutiveLocalOriginFailure,
}

/// An ejection that [`OutlierDetector::record`] just made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    pub endpoint: usize,
    pub reason: EjectionReason,
    /// The ejection time; the endpoint returns at the first sweep after it has passed.
    pub duration: Duration,
}

/// The settings the detector runs on: Istio's fields with Envoy's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierSettings {
    /// `consecutive5xxErrors`; `None` (or 0) disables the detector.
    pub consecutive_5xx: Option<u32>,
    /// `consecutiveGatewayErrors`; `None` (or 0) disables the detector.
    pub consecutive_gateway: Option<u32>,
    /// `consecutiveLocalOriginFailures`, in effect only in split mode; `None` or 0 disables it.
    pub consecutive_local_origin: Option<u32>,
    pub split_external_local_origin_errors: bool,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    /// Envoy's `max_ejection_time`: [`DEFAULT_MAX_EJECTION_TIME`] or `base_ejection_time`,
    /// whichever is larger, unless set otherwise.
    pub max_ejection_time: Duration,
    /// `maxEjectionPercent`, 0 to 100.
    pub max_ejection_percent: u32,
    /// `minHealthPercent` (Envoy's `healthy_panic_threshold`), 0 to 100.
    pub min_health_percent: u32,
    /// Envoy's `always_eject_one_host`: allow one ejection whatever `max_ejection_percent` says.
    /// Istio cannot set it, so it is `false` from [`OutlierSettings::from_policy`].
    pub always_eject_one_host: bool,
}

impl OutlierSettings {
    /// The settings Istio's `outlierDetection` produces in Envoy.
    pub fn from_policy(od: &OutlierDetection) -> Self {
        let consecutive_local_origin = if od.split_external_local_origin_errors {
            Some(
                od.consecutive_local_origin_failures
                    .unwrap_or(DEFAULT_CONSECUTIVE_LOCAL_ORIGIN_FAILURES),
            )
        } else {
            None
        };
        OutlierSettings {
            consecutive_5xx: od.consecutive_5xx_errors,
            consecutive_gateway: od.consecutive_gateway_errors,
            consecutive_local_origin,
            split_external_local_origin_errors: od.split_external_local_origin_errors,
            interval: od.interval,
            base_ejection_time: od.base_ejection_time,
            max_ejection_time: DEFAULT_MAX_EJECTION_TIME.max(od.base_ejection_time),
            max_ejection_percent: od.max_ejection_percent.min(100),
            min_health_percent: od.min_health_percent.min(100),
            always_eject_one_host: false,
        }
    }
}

/// Per-endpoint state (Envoy's host monitor).
#[derive(Debug, Clone, Default)]
struct EndpointState {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_local: u32,
    /// The ejection multiplier: ejections in a row, decayed by healthy sweeps.
    multiplier: u32,
    /// `Some((ejected_at, duration))` while ejected.
    ejected: Option<(Duration, Duration)>,
}

impl EndpointState {
    fn reset_counters(&mut self) {
        self.consecutive_5xx = 0;
        self.consecutive_gateway = 0;
        self.consecutive_local = 0;
    }
}

/// Outlier detection state for one set of endpoints (a service or subset's endpoints, by
/// index).
///
/// ```
/// use std::time::Duration;
/// use http::StatusCode;
/// use mesh_core::outlier::{OutlierDetector, OutlierSettings, Outcome};
/// # use mesh_core::model::OutlierDetection;
/// # let policy = OutlierDetection {
/// #     consecutive_5xx_errors: Some(5), consecutive_gateway_errors: None,
/// #     consecutive_local_origin_failures: None, split_external_local_origin_errors: false,
/// #     interval: Duration::from_secs(10), base_ejection_time: Duration::from_secs(30),
/// #     max_ejection_percent: 100, min_health_percent: 0,
/// # };
/// let mut od = OutlierDetector::new(&policy, 3);
/// let now = Duration::from_secs(1);
/// for _ in 0..5 {
///     od.record(1, Outcome::Response(StatusCode::BAD_GATEWAY), now);
/// }
/// assert!(od.is_ejected(1, now));
/// assert_eq!(od.eligible(now).collect::<Vec<_>>(), [0, 2]);
/// // Ejected for 30 s, returned by the sweep at 40 s (sweeps every 10 s).
/// assert!(od.is_ejected(1, Duration::from_secs(39)));
/// assert!(!od.is_ejected(1, Duration::from_secs(40)));
/// ```
#[derive(Debug, Clone)]
pub struct OutlierDetector {
    settings: OutlierSettings,
    endpoints: Vec<EndpointState>,
    /// The index of the last sweep run (`now / interval`).
    last_sweep: u64,
}

impl OutlierDetector {
    /// A detector for `n_endpoints` endpoints, none ejected, configured as Istio configures
    /// Envoy from `policy`.
    pub fn new(policy: &OutlierDetection, n_endpoints: usize) -> Self {
        Self::with_settings(OutlierSettings::from_policy(policy), n_endpoints)
    }

    pub fn with_settings(settings: OutlierSettings, n_endpoints: usize) -> Self {
        OutlierDetector {
            settings,
            endpoints: vec![EndpointState::default(); n_endpoints],
            last_sweep: 0,
        }
    }

    pub fn settings(&self) -> &OutlierSettings {
        &self.settings
    }

    /// The number of endpoints in the set.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Records how an attempt to `endpoint` ended, and ejects it if a detector's threshold is
    /// reached and `maxEjectionPercent` allows. Returns the ejection made, if any. An index out
    /// of range is ignored.
    pub fn record(&mut self, endpoint: usize, outcome: Outcome, now: Duration) -> Option<Ejection> {
        self.advance(now);
        let split = self.settings.split_external_local_origin_errors;
        let state = self.endpoints.get_mut(endpoint)?;

        // The status this outcome counts as for the 5xx and gateway counters, if it counts.
        let status = match outcome {
            Outcome::Response(s) => {
                if split {
                    state.consecutive_local = 0;
                }
                Some(s.as_u16())
            }
            Outcome::ConnectSuccessFinal => {
                state.consecutive_local = 0;
                Some(200)
            }
            Outcome::ConnectSuccess => {
                state.consecutive_local = 0;
                None
            }
            Outcome::ConnectFailure | Outcome::Reset | Outcome::Timeout if split => {
                state.consecutive_local = state.consecutive_local.saturating_add(1);
                None
            }
            Outcome::ConnectFailure | Outcome::Reset => Some(503),
            Outcome::Timeout => Some(504),
        };
        if let Some(status) = status {
            if (500..600).contains(&status) {
                state.consecutive_5xx = state.consecutive_5xx.saturating_add(1);
                if matches!(status, 502..=504) {
                    state.consecutive_gateway = state.consecutive_gateway.saturating_add(1);
                } else {
                    state.consecutive_gateway = 0;
                }
            } else {
                state.consecutive_5xx = 0;
                state.consecutive_gateway = 0;
            }
        }

        let reached = |count: &mut u32, threshold: Option<u32>| {
            let hit = threshold.is_some_and(|t| t > 0 && *count >= t);
            if hit {
                *count = 0;
            }
            hit
        };
        let s = &self.settings;
        // Evaluate every counter so that each one reaching its threshold is reset.
        let by_5xx = reached(&mut state.consecutive_5xx, s.consecutive_5xx);
        let by_gateway = reached(&mut state.consecutive_gateway, s.consecutive_gateway);
        let by_local = split && reached(&mut state.consecutive_local, s.consecutive_local_origin);
        let reason = if by_5xx {
            EjectionReason::Consecutive5xx
        } else if by_gateway {
            EjectionReason::ConsecutiveGatewayFailure
        } else if by_local {
            EjectionReason::ConsecutiveLocalOriginFailure
        } else {
            return None;
        };
        if state.ejected.is_some() || !self.may_eject() {
            return None;
        }
        Some(self.eject(endpoint, reason, now))
    }

    /// Runs the sweeps due at or before `now`: returns endpoints whose ejection time has passed
    /// and decays the multipliers of healthy ones. Returns how many endpoints came back.
    pub fn advance(&mut self, now: Duration) -> usize {
        let tick = self.sweep_index(now);
        if tick <= self.last_sweep {
            return 0;
        }
        let interval = self.interval();
        let mut returned = 0;
        for state in &mut self.endpoints {
            // Sweeps last_sweep+1 ..= tick; those after the endpoint's return find it healthy.
            let healthy_sweeps = match state.ejected {
                None => tick - self.last_sweep,
                Some((at, duration)) => {
                    let back = first_sweep_at_or_after(at + duration, interval);
                    if back > tick {
                        continue;
                    }
                    state.ejected = None;
                    returned += 1;
                    // The sweep that returns it found it ejected: no decay for that one.
                    tick - back.max(self.last_sweep + 1)
                }
            };
            let decay = u32::try_from(healthy_sweeps).unwrap_or(u32::MAX);
            state.multiplier = state.multiplier.saturating_sub(decay);
        }
        self.last_sweep = tick;
        returned
    }

    /// Whether `endpoint` is ejected at `now` (out of range: `false`).
    pub fn is_ejected(&self, endpoint: usize, now: Duration) -> bool {
        self.endpoints
            .get(endpoint)
            .is_some_and(|s| self.ejected_at(s, now))
    }

    /// The number of endpoints ejected at `now`.
    pub fn ejected_count(&self, now: Duration) -> usize {
        self.endpoints
            .iter()
            .filter(|s| self.ejected_at(s, now))
            .count()
    }

    /// Whether the set is in panic at `now`: fewer than `minHealthPercent` of the endpoints are
    /// healthy, so the load balancer ignores outlier detection. Never with a threshold of 0.
    pub fn is_panic(&self, now: Duration) -> bool {
        let n = self.endpoints.len() as u64;
        let healthy = n - self.ejected_count(now) as u64;
        n > 0 && 100 * healthy < u64::from(self.settings.min_health_percent) * n
    }

    /// The endpoints the load balancer may pick at `now`: the ones not ejected, or all of them
    /// in panic ([`is_panic`](Self::is_panic)). Empty when every endpoint is ejected and panic
    /// is disabled.
    pub fn eligible(&self, now: Duration) -> impl Iterator<Item = usize> + '_ {
        let panic = self.is_panic(now);
        self.endpoints
            .iter()
            .enumerate()
            .filter(move |(_, s)| panic || !self.ejected_at(s, now))
            .map(|(i, _)| i)
    }

    /// The endpoint set changed (registry update, reload). `previous` gives, for each endpoint
    /// of the new set in order, its index in the old set, or `None` for a new endpoint. Endpoints
    /// that stay keep their counters, multiplier and ejection (as Envoy keeps a host's monitor
    /// while the host stays in the cluster); new ones start healthy; removed ones are forgotten.
    pub fn on_endpoints_changed<I>(&mut self, previous: I)
    where
        I: IntoIterator<Item = Option<usize>>,
    {
        let old = std::mem::take(&mut self.endpoints);
        self.endpoints = previous
            .into_iter()
            .map(|p| p.and_then(|i| old.get(i)).cloned().unwrap_or_default())
            .collect();
    }

    // === private ===

    fn interval(&self) -> Duration {
        self.settings.interval.max(Duration::from_nanos(1))
    }

    fn sweep_index(&self, now: Duration) -> u64 {
        u64::try_from(now.as_nanos() / self.interval().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether `state` is still ejected once the sweeps due by `now` have run.
    fn ejected_at(&self, state: &EndpointState, now: Duration) -> bool {
        state.ejected.is_some_and(|(at, duration)| {
            first_sweep_at_or_after(at + duration, self.interval()) > self.sweep_index(now)
        })
    }

    /// Whether one more ejection is allowed now (sweeps already run by `record`).
    fn may_eject(&self) -> bool {
        let n = self.endpoints.len() as u64;
        let ejected = self
            .endpoints
            .iter()
            .filter(|s| s.ejected.is_some())
            .count() as u64;
        (self.settings.always_eject_one_host && ejected == 0)
            || 100 * (ejected + 1) <= u64::from(self.settings.max_ejection_percent) * n
    }

    fn eject(&mut self, endpoint: usize, reason: EjectionReason, now: Duration) -> Ejection {
        let base = self.settings.base_ejection_time;
        let max = self.settings.max_ejection_time.max(base);
        // The multiplier at which base * multiplier reaches the cap: it grows no further.
        let max_multiplier = if base.is_zero() {
            1
        } else {
            u32::try_from(max.as_nanos().div_ceil(base.as_nanos())).unwrap_or(u32::MAX)
        };
        let state = &mut self.endpoints[endpoint];
        state.multiplier = state
            .multiplier
            .saturating_add(1)
            .min(max_multiplier.max(1));
        let duration = base.saturating_mul(state.multiplier).min(max);
        state.ejected = Some((now, duration));
        state.reset_counters();
        Ejection {
            endpoint,
            reason,
            duration,
        }
    }
}

/// The index of the first sweep at or after `t`.
fn first_sweep_at_or_after(t: Duration, interval: Duration) -> u64 {
    u64::try_from(t.as_nanos().div_ceil(interval.as_nanos())).unwrap_or(u64::MAX)
}

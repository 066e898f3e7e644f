//! Envoy's retry back-off and retry budget.

use std::time::Duration;

use crate::percent::Percent;

/// Envoy's default `budget_percent` of a cluster's `retry_budget`, in percent.
pub const DEFAULT_BUDGET_PERCENT: f64 = 20.0;

/// Envoy's default `min_retry_concurrency` of a cluster's `retry_budget`.
pub const DEFAULT_MIN_RETRY_CONCURRENCY: u32 = 3;

/// Envoy's fully jittered exponential back-off between retries.
///
/// From Envoy's router documentation
/// ([`x-envoy-max-retries`](https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/router_filter#x-envoy-max-retries)):
/// given a base interval B and retry number N, the back-off is uniform in `[0, (2^N - 1) * B)`,
/// and that upper bound is capped at the maximum interval, by default 10 times the base. With
/// the default 25 ms base, the first retry waits 0-24 ms, the second 0-74 ms, the third
/// 0-174 ms, and every later one 0-249 ms. Envoy counts whole milliseconds; so does this.
///
/// The random number is an argument (`fastrand::u64(..)` in the layer) so the bounds are
/// testable.
///
/// ```
/// use std::time::Duration;
/// use mesh_core::retry::Backoff;
///
/// let b = Backoff::default();
/// assert_eq!(b.upper_bound(1), Duration::from_millis(25));
/// assert_eq!(b.delay(1, 24), Duration::from_millis(24));
/// assert_eq!(b.delay(1, 25), Duration::ZERO);
/// assert_eq!(b.upper_bound(10), Duration::from_millis(250));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base_ms: u64,
    max_ms: u64,
}

impl Default for Backoff {
    /// Envoy's default: 25 ms base, 250 ms maximum.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(25), None)
    }
}

impl Backoff {
    /// Envoy's `retry_back_off`: `base_interval`, and `max_interval` (default 10 times the
    /// base; never below the base).
    pub fn new(base: Duration, max: Option<Duration>) -> Self {
        let base_ms = millis(base);
        let max_ms = max.map_or(base_ms.saturating_mul(10), millis).max(base_ms);
        Backoff { base_ms, max_ms }
    }

    pub fn base(&self) -> Duration {
        Duration::from_millis(self.base_ms)
    }

    pub fn max(&self) -> Duration {
        Duration::from_millis(self.max_ms)
    }

    /// The exclusive upper bound of the wait before retry number `retry` (1 for the first
    /// retry; 0 is treated as 1): `min(max, (2^retry - 1) * base)`.
    pub fn upper_bound(&self, retry: u32) -> Duration {
        Duration::from_millis(self.upper_bound_ms(retry))
    }

    /// The wait before retry number `retry`, from a uniform random `random`: a whole number of
    /// milliseconds in `[0, upper_bound(retry))` (zero when that range is empty).
    pub fn delay(&self, retry: u32, random: u64) -> Duration {
        let bound = self.upper_bound_ms(retry);
        if bound == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(random % bound)
    }

    fn upper_bound_ms(&self, retry: u32) -> u64 {
        let n = retry.clamp(1, 63);
        let multiplier = (1u64 << n) - 1;
        self.base_ms.saturating_mul(multiplier).min(self.max_ms)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether Envoy's retry budget lets one more retry start.
///
/// Envoy's [`retry_budget`](https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/cluster/v3/circuit_breaker.proto#config-cluster-v3-circuitbreakers-thresholds-retrybudget):
/// the concurrent retries to a cluster are limited to `budget_percent` of its active (and
/// pending) requests, but never to fewer than `min_retry_concurrency`. `active_requests` is the
/// requests in flight to the destination, retries included, plus those waiting for a
/// connection; `active_retries` is the retries among them. One more retry may start while
/// `active_retries < max(min_retry_concurrency, floor(budget_percent * active_requests / 100))`.
///
/// Istio's API has no retry budget (it sets the `max_retries` circuit breaker from
/// `connectionPool.http.maxRetries` instead); [`RetryBudget::default`] holds Envoy's defaults,
/// [`DEFAULT_BUDGET_PERCENT`] and [`DEFAULT_MIN_RETRY_CONCURRENCY`], so that every retry can
/// have a budget.
///
/// ```
/// use mesh_core::{Percent, retry::budget_allows};
///
/// let p = Percent::new(20.0).unwrap();
/// assert!(budget_allows(0, 2, p, 3)); // the floor: 3 retries whatever the load
/// assert!(!budget_allows(0, 3, p, 3));
/// assert!(budget_allows(100, 19, p, 3)); // 20% of 100 active requests
/// assert!(!budget_allows(100, 20, p, 3));
/// ```
pub fn budget_allows(
    active_requests: u64,
    active_retries: u64,
    budget_percent: Percent,
    min_retry_concurrency: u32,
) -> bool {
    let budget = (budget_percent.value() / 100.0 * active_requests as f64) as u64;
    active_retries < budget.max(u64::from(min_retry_concurrency))
}

/// A retry budget's settings: Envoy's `retry_budget`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    pub budget_percent: Percent,
    pub min_retry_concurrency: u32,
}

impl Default for RetryBudget {
    /// Envoy's defaults: 20%, at least 3.
    fn default() -> Self {
        RetryBudget {
            budget_percent: Percent::new(DEFAULT_BUDGET_PERCENT).unwrap_or(Percent::HUNDRED),
            min_retry_concurrency: DEFAULT_MIN_RETRY_CONCURRENCY,
        }
    }
}

impl RetryBudget {
    /// [`budget_allows`] with these settings.
    pub fn allows(&self, active_requests: u64, active_retries: u64) -> bool {
        budget_allows(
            active_requests,
            active_retries,
            self.budget_percent,
            self.min_retry_concurrency,
        )
    }
}

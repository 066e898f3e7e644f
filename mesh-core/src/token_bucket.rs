//! The token bucket of Envoy's local rate limit, shared by every connection of a workload.
//!
//! Istio has no rate-limit field of its own: a local rate limit is an EnvoyFilter that inserts
//! [`envoy.filters.http.local_ratelimit`](https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/local_rate_limit_filter)
//! with a [`token_bucket`](https://www.envoyproxy.io/docs/envoy/latest/api-v3/type/v3/token_bucket.proto)
//! (`max_tokens`, `tokens_per_fill`, `fill_interval`), compiled into
//! [`TokenBucket`]. The semantics implemented here:
//!
//! - the bucket starts full (`max_tokens`);
//! - every whole `fill_interval` adds `tokens_per_fill` tokens, never beyond `max_tokens`. Fills
//!   happen at fixed points (`epoch + k * fill_interval`), so a request half-way through an interval
//!   neither gains nor loses the partial interval; fills while the bucket is full are lost;
//! - a request takes one token, or is refused at once: the caller answers 429 and never waits
//!   (STYLE.md: "Rate limiting answers 429 at once and never parks the caller").
//!
//! These are the discrete fills the token bucket proto describes. (Envoy's newest builds may refill
//! continuously, a fraction of a token at a time; the totals per interval are the same, only when
//! within an interval a token appears differs.)
//!
//! # Time
//! No clock is read here. Every call takes `now` as a [`Duration`] since an epoch the caller picks
//! once per bucket (typically the `Instant` at which the bucket was built:
//! `now = Instant::now().duration_since(start)`, or tokio's `Instant` so tests can pause time).
//! Tests simply pass `Duration`s and need no sleeping.
//!
//! # Sharing
//! Envoy keeps one bucket per filter configuration, shared by all worker threads; mesh keeps one
//! per workload, shared by every connection and clone of the layer (put it in an `Arc`). The
//! state, the token count and the index of the last fill, is packed into one [`AtomicU64`] and
//! updated with a compare-and-swap loop: lock-free, no allocation, and a token is never handed out
//! twice because every update is a read-modify-write of that one word (see the thread test).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::model::TokenBucket;

/// How far behind the stored fill index a caller's fill index may be and still count as "time went
/// backwards" (a thread that read the clock just before another one updated the bucket) rather
/// than as a wrap of the 32-bit index after a very long idle period. 2^20 intervals is over 17
/// minutes at Envoy's smallest interval (1 ms).
const BACKWARDS_WINDOW: u32 = 1 << 20;

/// A token bucket shared across threads: Envoy's local rate limit bucket.
///
/// ```
/// use std::time::Duration;
/// use mesh_core::model::TokenBucket;
/// use mesh_core::token_bucket::SharedTokenBucket;
///
/// let bucket = SharedTokenBucket::new(TokenBucket {
///     max_tokens: 2,
///     tokens_per_fill: 1,
///     fill_interval: Duration::from_secs(1),
/// });
/// let t0 = Duration::ZERO;
/// assert!(bucket.try_acquire(t0));
/// assert!(bucket.try_acquire(t0));
/// assert!(!bucket.try_acquire(t0)); // empty: answer 429 now
/// assert!(bucket.try_acquire(Duration::from_millis(1000))); // one fill later
/// ```
#[derive(Debug)]
pub struct SharedTokenBucket {
    config: TokenBucket,
    /// `fill_interval` in nanoseconds, at least 1.
    interval_nanos: u128,
    /// High 32 bits: the low 32 bits of the index of the last fill (`now / fill_interval`).
    /// Low 32 bits: the tokens in the bucket.
    state: AtomicU64,
}

impl SharedTokenBucket {
    /// A full bucket whose epoch (fill index 0) is `now == Duration::ZERO`.
    pub fn new(config: TokenBucket) -> Self {
        SharedTokenBucket {
            config,
            interval_nanos: config.fill_interval.as_nanos().max(1),
            state: AtomicU64::new(pack(config.max_tokens, 0)),
        }
    }

    /// The bucket's settings.
    pub fn config(&self) -> TokenBucket {
        self.config
    }

    /// Takes one token if there is one at `now`; `false` means "rate limited, answer 429".
    pub fn try_acquire(&self, now: Duration) -> bool {
        let tick = self.tick(now);
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let (tokens, last) = unpack(current);
            let (tokens, last) = refill(&self.config, tokens, last, tick);
            let Some(left) = tokens.checked_sub(1) else {
                // Nothing to take. Storing the refilled state is unnecessary: a bucket with no
                // tokens cannot have gained any, so `last` only moved if nothing was added.
                return false;
            };
            // Relaxed is enough: the whole state lives in this one word, and read-modify-write
            // operations on one atomic are totally ordered, so no token is taken twice.
            match self.state.compare_exchange_weak(
                current,
                pack(left, last),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// The tokens available at `now`, without taking any (for `/config_dump` and tests).
    pub fn available(&self, now: Duration) -> u32 {
        let (tokens, last) = unpack(self.state.load(Ordering::Relaxed));
        refill(&self.config, tokens, last, self.tick(now)).0
    }

    /// The index of the last fill at or before `now`.
    fn tick(&self, now: Duration) -> u64 {
        u64::try_from(now.as_nanos() / self.interval_nanos).unwrap_or(u64::MAX)
    }
}

fn pack(tokens: u32, tick: u32) -> u64 {
    (u64::from(tick) << 32) | u64::from(tokens)
}

fn unpack(state: u64) -> (u32, u32) {
    (state as u32, (state >> 32) as u32)
}

/// The bucket after the fills between fill index `last` (32-bit, wrapping) and `now_tick`:
/// `(tokens, new last)`. Pure, so the arithmetic is testable on its own.
fn refill(config: &TokenBucket, tokens: u32, last: u32, now_tick: u64) -> (u32, u32) {
    let now_low = now_tick as u32;
    let elapsed = now_low.wrapping_sub(last);
    if elapsed == 0 || elapsed > u32::MAX - BACKWARDS_WINDOW {
        // No fill due, or a caller whose clock reading is slightly older than the last update:
        // keep the newer state.
        return (tokens, last);
    }
    let added = u64::from(elapsed) * u64::from(config.tokens_per_fill);
    let tokens = (u64::from(tokens) + added).min(u64::from(config.max_tokens)) as u32;
    (tokens, now_low)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    use proptest::prelude::*;

    use super::*;

    fn bucket(max_tokens: u32, tokens_per_fill: u32, fill_interval: Duration) -> SharedTokenBucket {
        SharedTokenBucket::new(TokenBucket {
            max_tokens,
            tokens_per_fill,
            fill_interval,
        })
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn five_per_minute() {
        let b = bucket(5, 5, MINUTE);
        let t0 = Duration::ZERO;
        let passed = (0..12).filter(|_| b.try_acquire(t0)).count();
        assert_eq!(passed, 5);
        // Within the first interval nothing comes back.
        assert!(!b.try_acquire(Duration::from_secs(59)));
        assert_eq!(b.available(Duration::from_secs(59)), 0);
        let t60 = Duration::from_secs(60);
        assert_eq!(b.available(t60), 5);
        let passed = (0..12).filter(|_| b.try_acquire(t60)).count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn fills_are_capped_and_partial_intervals_are_kept() {
        let b = bucket(3, 1, Duration::from_secs(10));
        // Idle for an hour: still only max_tokens.
        assert_eq!(b.available(Duration::from_secs(3600)), 3);
        let t = Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(b.try_acquire(t));
        }
        assert!(!b.try_acquire(t));
        // Fills happen at multiples of 10 s since the epoch: the next at 3610 s, not 3600 + 10
        // after the last request (3605 s gains nothing; 3610 s gains one).
        assert!(!b.try_acquire(t + Duration::from_secs(5)));
        assert!(b.try_acquire(t + Duration::from_secs(10)));
        assert!(!b.try_acquire(t + Duration::from_secs(19)));
        assert_eq!(b.available(t + Duration::from_secs(40)), 3);
    }

    #[test]
    fn older_clock_readings_do_not_refill() {
        let b = bucket(2, 1, Duration::from_secs(1));
        let t = Duration::from_secs(100);
        assert!(b.try_acquire(t));
        assert!(b.try_acquire(t));
        // A thread that read the clock before the last update: no fills, no wrap-around refill.
        assert!(!b.try_acquire(Duration::from_secs(99)));
        assert!(!b.try_acquire(Duration::ZERO));
        assert!(b.try_acquire(Duration::from_secs(101)));
    }

    #[test]
    fn fill_index_wraps_after_a_long_idle_period() {
        let b = bucket(2, 1, Duration::from_millis(1));
        let t = Duration::from_millis(10);
        assert!(b.try_acquire(t));
        assert!(b.try_acquire(t));
        // 2^32 + 5 intervals later (about 50 days at 1 ms): the 32-bit index wrapped, the bucket
        // still refills.
        let later = t + Duration::from_millis((1u64 << 32) + 5);
        assert_eq!(b.available(later), 2);
    }

    #[test]
    fn empty_bucket_and_no_fills() {
        let b = bucket(0, 1, MINUTE);
        assert!(!b.try_acquire(Duration::ZERO));
        let b = bucket(1, 0, MINUTE);
        assert!(b.try_acquire(Duration::ZERO));
        assert!(!b.try_acquire(Duration::from_secs(3600)));
    }

    #[test]
    fn threads_cannot_take_more_tokens_than_exist() {
        let b = Arc::new(bucket(1000, 10, Duration::from_millis(100)));
        let taken = Arc::new(AtomicU32::new(0));
        // Fixed time: exactly max_tokens are handed out among 10 threads.
        let threads: Vec<_> = (0..10)
            .map(|_| {
                let (b, taken) = (Arc::clone(&b), Arc::clone(&taken));
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        if b.try_acquire(Duration::from_millis(50)) {
                            taken.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(taken.load(Ordering::Relaxed), 1000);

        // Moving time, each thread with its own (slightly different) clock readings: never more
        // than the initial tokens plus the fills up to the latest reading.
        let b = Arc::new(bucket(50, 10, Duration::from_millis(100)));
        let taken = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..10u64)
            .map(|i| {
                let (b, taken) = (Arc::clone(&b), Arc::clone(&taken));
                std::thread::spawn(move || {
                    for step in 0..1000u64 {
                        let now = Duration::from_millis(step + i * 3);
                        if b.try_acquire(now) {
                            taken.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Latest reading: 999 + 27 ms, fill index 10.
        assert!(taken.load(Ordering::Relaxed) <= 50 + 10 * 10);
    }

    proptest! {
        #[test]
        fn never_over_max_and_never_more_than_filled(
            max_tokens in 0u32..50,
            tokens_per_fill in 0u32..20,
            interval_ms in 1u64..1000,
            steps in proptest::collection::vec((0u64..2000, 0u32..8), 1..60),
        ) {
            let b = bucket(max_tokens, tokens_per_fill, Duration::from_millis(interval_ms));
            let mut now_ms = 0u64;
            let mut taken = 0u64;
            for (advance, requests) in steps {
                now_ms += advance;
                let now = Duration::from_millis(now_ms);
                for _ in 0..requests {
                    let before = b.available(now);
                    prop_assert!(before <= max_tokens);
                    if b.try_acquire(now) {
                        prop_assert!(before >= 1);
                        taken += 1;
                    } else {
                        prop_assert_eq!(before, 0);
                    }
                }
                prop_assert!(b.available(now) <= max_tokens);
                let fills = now_ms / interval_ms;
                prop_assert!(
                    taken <= u64::from(max_tokens) + fills * u64::from(tokens_per_fill)
                );
            }
        }

        #[test]
        fn refill_is_monotone_and_capped(
            max_tokens in 0u32..100,
            per_fill in 0u32..100,
            tokens in 0u32..100,
            last in any::<u32>(),
            elapsed in 0u32..10_000,
        ) {
            let cfg = TokenBucket {
                max_tokens,
                tokens_per_fill: per_fill,
                fill_interval: Duration::from_secs(1),
            };
            let tokens = tokens.min(max_tokens);
            let now = u64::from(last.wrapping_add(elapsed));
            let (after, new_last) = refill(&cfg, tokens, last, now);
            prop_assert!(after >= tokens);
            prop_assert!(after <= max_tokens);
            prop_assert!(u64::from(after - tokens) <= u64::from(elapsed) * u64::from(per_fill));
            prop_assert_eq!(new_last, now as u32);
        }
    }
}

//! Weighted choice among a route's destinations.
//!
//! Istio's [`HTTPRouteDestination.weight`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPRouteDestination-weight):
//! "Weight specifies the relative proportion of traffic to be forwarded to the destination. A
//! destination will receive `weight/(sum of all weights)` requests. If there is only one
//! destination in a rule, it will receive all traffic. Otherwise, if weight is `0`, the
//! destination will not receive any traffic." Istio translates the weights into Envoy's
//! `weighted_clusters`, whose weights are relative to their sum (`total_weight`); it leaves
//! zero-weight destinations out, and its validation rejects a rule with several destinations
//! whose weights sum to 0 (Envoy needs a total of at least 1). [`WeightedChoice::new`] does the
//! same, so the config loader reports that case instead of a request finding it.
//!
//! The choice is pure: the caller supplies the random number (e.g. `fastrand::u64(..)`), so the
//! split can be tested exactly.

use std::fmt;

/// A weighted choice among `n` destinations, built once per route from its weights.
///
/// Picking is a binary search over prefix sums: O(log n), exact (no floating point), no
/// allocation.
///
/// ```
/// use mesh_core::weighted::WeightedChoice;
///
/// let split = WeightedChoice::new([90, 10]).unwrap();
/// // Every point of 0..100 lands on a destination: 90 on the first, 10 on the second.
/// let second = (0..100).filter(|&p| split.pick_point(p) == 1).count();
/// assert_eq!(second, 10);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightedChoice {
    /// `ends[i]` is the sum of the weights of destinations `0..=i`: destination `i` owns the
    /// points `ends[i-1]..ends[i]` (empty for a weight of 0).
    ends: Box<[u64]>,
}

/// Why a set of destination weights cannot be chosen from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightError {
    /// A route without destinations.
    NoDestinations,
    /// Several destinations, all of weight 0: no destination would ever receive traffic.
    AllZero {
        /// The number of destinations.
        destinations: usize,
    },
}

impl fmt::Display for WeightError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightError::NoDestinations => f.write_str("a route needs at least one destination"),
            WeightError::AllZero { destinations } => write!(
                f,
                "total destination weight = 0 across {destinations} destinations: give at least \
                 one destination a positive weight (a weight of 0 means no traffic)"
            ),
        }
    }
}

impl std::error::Error for WeightError {}

// === impl WeightedChoice ===

impl WeightedChoice {
    /// Builds the choice from the destinations' weights, in route order.
    ///
    /// - One destination receives all traffic whatever its weight (even 0), as in Istio.
    /// - Several destinations: each receives `weight / sum` of the traffic; a weight of 0 is
    ///   never picked; a sum of 0 is [`WeightError::AllZero`].
    /// - No destination is [`WeightError::NoDestinations`].
    ///
    /// The sum is a `u64`, so no combination of `u32` weights overflows.
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Result<Self, WeightError> {
        let mut total = 0u64;
        let mut ends: Vec<u64> = weights
            .into_iter()
            .map(|w| {
                total += u64::from(w);
                total
            })
            .collect();
        match ends.len() {
            0 => return Err(WeightError::NoDestinations),
            // The single destination owns the whole (possibly empty) range.
            1 => ends[0] = ends[0].max(1),
            n if total == 0 => return Err(WeightError::AllZero { destinations: n }),
            _ => {}
        }
        Ok(Self {
            ends: ends.into_boxed_slice(),
        })
    }

    /// The number of destinations (zero-weight ones included).
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Always `false`: a choice has at least one destination.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The sum of the weights (Envoy's `total_weight`): the size of the range that
    /// [`pick_point`](Self::pick_point) takes. At least 1 (a single destination of weight 0
    /// counts as 1).
    pub fn total_weight(&self) -> u64 {
        self.ends[self.ends.len() - 1]
    }

    /// Picks a destination index from a uniformly random `u64` (e.g. `fastrand::u64(..)`).
    ///
    /// `random` is scaled onto `0..total_weight()` by multiply-and-shift, so destination `i` is
    /// picked for a share of the `u64` range equal to `weight_i / total` (up to one part in
    /// 2^64 / total).
    pub fn pick(&self, random: u64) -> usize {
        let total = self.total_weight();
        let point = ((u128::from(random) * u128::from(total)) >> 64) as u64;
        self.pick_point(point)
    }

    /// Picks the destination that owns `point` of `0..total_weight()`: destination `i` owns
    /// `weight_i` consecutive points, in route order. A larger `point` wraps around (it is
    /// reduced modulo the total), so this never panics.
    pub fn pick_point(&self, point: u64) -> usize {
        let point = point % self.total_weight();
        // The first destination whose range ends after `point`; a zero-weight destination's
        // range ends where its predecessor's does, so it is never the first.
        self.ends.partition_point(|&end| end <= point)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `n` draws spread evenly over the `u64` range: draw `k` is `ceil(k * 2^64 / n)`.
    fn even_draws(n: u64) -> impl Iterator<Item = u64> {
        (0..n).map(move |k| (u128::from(k) << 64).div_ceil(u128::from(n)) as u64)
    }

    fn counts(choice: &WeightedChoice, draws: impl Iterator<Item = u64>) -> Vec<u64> {
        let mut counts = vec![0; choice.len()];
        for r in draws {
            counts[choice.pick(r)] += 1;
        }
        counts
    }

    #[test]
    fn ninety_ten_is_ninety_ten() {
        let choice = WeightedChoice::new([90, 10]).unwrap();
        assert_eq!(counts(&choice, even_draws(1000)), [900, 100]);
        assert_eq!(choice.pick(0), 0);
        assert_eq!(choice.pick(u64::MAX), 1);
    }

    #[test]
    fn one_destination_gets_everything_whatever_its_weight() {
        for w in [0, 1, 7, 100, u32::MAX] {
            let choice = WeightedChoice::new([w]).unwrap();
            assert_eq!(choice.len(), 1);
            for r in [0, 1, u64::MAX / 2, u64::MAX] {
                assert_eq!(choice.pick(r), 0);
                assert_eq!(choice.pick_point(r), 0);
            }
        }
    }

    #[test]
    fn zero_weights_are_skipped() {
        let choice = WeightedChoice::new([0, 50, 0, 50, 0]).unwrap();
        assert_eq!(counts(&choice, even_draws(100)), [0, 50, 0, 50, 0]);
    }

    #[test]
    fn rejects_no_destinations_and_all_zero() {
        assert_eq!(WeightedChoice::new([]), Err(WeightError::NoDestinations));
        let err = WeightedChoice::new([0, 0]).unwrap_err();
        assert_eq!(err, WeightError::AllZero { destinations: 2 });
        assert!(err.to_string().contains("total destination weight = 0"));
    }

    #[test]
    fn large_weights_do_not_overflow() {
        let choice = WeightedChoice::new([u32::MAX; 4]).unwrap();
        assert_eq!(choice.total_weight(), 4 * u64::from(u32::MAX));
        assert_eq!(counts(&choice, even_draws(4000)), [1000; 4]);
    }

    fn weights() -> impl Strategy<Value = Vec<u32>> {
        prop::collection::vec(
            prop_oneof![2 => 0u32..10, 2 => 0u32..1000, 1 => any::<u32>()],
            1..12,
        )
        .prop_filter("some weight must be positive when there are several", |w| {
            w.len() == 1 || w.iter().any(|&x| x > 0)
        })
    }

    proptest! {
        /// Over `m * total` evenly spaced draws each destination is picked exactly
        /// `m * weight` times: the split is exact, not approximately right.
        #[test]
        fn share_is_exactly_the_weight_share(
            w in prop::collection::vec(0u32..200, 2..10).prop_filter("positive", |w| w.iter().any(|&x| x > 0)),
            m in 1u64..4,
        ) {
            let choice = WeightedChoice::new(w.iter().copied()).unwrap();
            let total = choice.total_weight();
            let got = counts(&choice, even_draws(m * total));
            let want: Vec<u64> = w.iter().map(|&x| m * u64::from(x)).collect();
            prop_assert_eq!(got, want);
        }

        /// Every point of the range belongs to exactly one destination, `weight` points each.
        #[test]
        fn points_partition_the_range(w in prop::collection::vec(0u32..500, 2..10).prop_filter("positive", |w| w.iter().any(|&x| x > 0))) {
            let choice = WeightedChoice::new(w.iter().copied()).unwrap();
            let mut got = vec![0u64; w.len()];
            for p in 0..choice.total_weight() {
                got[choice.pick_point(p)] += 1;
            }
            let want: Vec<u64> = w.iter().map(|&x| u64::from(x)).collect();
            prop_assert_eq!(got, want);
        }

        /// `pick` and `pick_point` stay in range, never panic, never pick a zero weight
        /// (when there are several destinations), and `pick` is monotonic in its input.
        #[test]
        fn pick_is_in_range_and_skips_zero(w in weights(), r in any::<u64>(), s in any::<u64>(), p in any::<u64>()) {
            let choice = WeightedChoice::new(w.iter().copied()).unwrap();
            for i in [choice.pick(r), choice.pick(s), choice.pick_point(p)] {
                prop_assert!(i < w.len());
                prop_assert!(w.len() == 1 || w[i] > 0);
            }
            let (lo, hi) = (r.min(s), r.max(s));
            prop_assert!(choice.pick(lo) <= choice.pick(hi));
        }
    }
}

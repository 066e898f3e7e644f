//! `simple: LEAST_REQUEST`, Istio's default: power of two choices.

use super::{Candidates, effective_weight, splitmix, uniform_eligible};

/// Envoy's least request load balancer, which Istio uses unless a DestinationRule says
/// otherwise ([`LEAST_REQUEST`](https://istio.io/latest/docs/reference/config/networking/destination-rule/#LoadBalancerSettings-SimpleLB)).
///
/// - Equal weights: draw [`choice_count`](Self::with_choice_count) random eligible endpoints
///   (2 by default, with replacement, as Envoy) and take the one with the fewest active requests
///   (the first drawn on a tie). The most loaded endpoint is picked only when every draw lands on
///   it: with two choices among `n`, a share of `1/n²` instead of `1/n`.
/// - Unequal weights: each eligible endpoint gets the effective weight
///   `weight / (active_requests + 1)^active_request_bias` (bias 1.0 by default; 0 ignores the
///   load) and one is drawn at random by effective weight. Envoy feeds the same effective
///   weights to its earliest-deadline-first scheduler; a weighted draw has the same expected
///   shares and needs no state across picks. This path is O(n).
///
/// Istio exposes neither knob (`choice_count`, `active_request_bias`); they are here for Envoy
/// parity and tests.
///
/// ```
/// use mesh_core::balance::{Candidate, LeastRequest};
///
/// let busy = Candidate::new(1).with_active_requests(100);
/// let idle = Candidate::new(1);
/// let lb = LeastRequest::default();
/// // With one busy and one idle endpoint, the busy one wins only if both draws hit it.
/// let picks = (0..1000u64).filter(|&r| lb.pick(&[busy, idle], r.wrapping_mul(0x9E37_79B9_7F4A_7C15)) == Some(0));
/// assert!(picks.count() < 400);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LeastRequest {
    choice_count: u32,
    active_request_bias: f64,
}

impl Default for LeastRequest {
    /// Two choices and a bias of 1.0: Envoy's defaults.
    fn default() -> Self {
        Self {
            choice_count: 2,
            active_request_bias: 1.0,
        }
    }
}

// === impl LeastRequest ===

impl LeastRequest {
    /// Envoy's defaults: two choices, bias 1.0.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many endpoints to draw when weights are equal (Envoy's `choice_count`, at least 2;
    /// a smaller value counts as 2).
    pub fn with_choice_count(self, choice_count: u32) -> Self {
        Self {
            choice_count: choice_count.max(2),
            ..self
        }
    }

    /// The exponent of `active_requests + 1` in the effective weight when weights differ
    /// (Envoy's `active_request_bias`). A negative or non-finite value counts as 1.0, the
    /// default.
    pub fn with_active_request_bias(self, bias: f64) -> Self {
        let bias = if bias.is_finite() && bias >= 0.0 {
            bias
        } else {
            1.0
        };
        Self {
            active_request_bias: bias,
            ..self
        }
    }

    /// The number of draws for equal weights.
    pub fn choice_count(&self) -> u32 {
        self.choice_count
    }

    /// The load exponent for unequal weights.
    pub fn active_request_bias(&self) -> f64 {
        self.active_request_bias
    }

    /// Picks an eligible endpoint using `random` as the only source of randomness; `None` when
    /// none is eligible.
    pub fn pick<C: Candidates + ?Sized>(&self, candidates: &C, random: u64) -> Option<usize> {
        let mut state = random;
        if candidates.uniform_weights() {
            let mut best = uniform_eligible(candidates, &mut state)?;
            for _ in 1..self.choice_count {
                // Some endpoint is eligible, so every draw succeeds.
                let Some(other) = uniform_eligible(candidates, &mut state) else {
                    break;
                };
                if candidates.active_requests(other) < candidates.active_requests(best) {
                    best = other;
                }
            }
            return Some(best);
        }
        self.pick_weighted(candidates, &mut state)
    }

    fn effective_weight<C: Candidates + ?Sized>(&self, candidates: &C, i: usize) -> f64 {
        let weight = f64::from(effective_weight(candidates.weight(i)));
        let load = candidates.active_requests(i) as f64 + 1.0;
        if self.active_request_bias == 1.0 {
            weight / load
        } else if self.active_request_bias == 0.0 {
            weight
        } else {
            weight / load.powf(self.active_request_bias)
        }
    }

    fn pick_weighted<C: Candidates + ?Sized>(&self, c: &C, state: &mut u64) -> Option<usize> {
        let eligible = || (0..c.len()).filter(|&i| c.is_eligible(i));
        let total: f64 = eligible().map(|i| self.effective_weight(c, i)).sum();
        if !(total.is_finite() && total > 0.0) {
            // Every effective weight underflowed (a huge bias): fall back to a uniform draw.
            return uniform_eligible(c, state);
        }
        // A uniform point in [0, total), from the top 53 bits of a draw.
        let unit = (splitmix(state) >> 11) as f64 / (1u64 << 53) as f64;
        let mut point = unit * total;
        let mut last = None;
        for i in eligible() {
            let w = self.effective_weight(c, i);
            if point < w {
                return Some(i);
            }
            point -= w;
            if w > 0.0 {
                last = Some(i);
            }
        }
        // Rounding left the point past the end: the last endpoint with a share owns it.
        last.or_else(|| eligible().next())
    }
}

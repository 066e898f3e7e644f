//! `simple: RANDOM`: a weighted random eligible endpoint.

use super::{Candidates, below, effective_weight, uniform_eligible};

/// Picks a random eligible endpoint, each with probability `weight / (sum of eligible
/// weights)`; `None` when none is eligible.
///
/// Istio's
/// [`RANDOM`](https://istio.io/latest/docs/reference/config/networking/destination-rule/#LoadBalancerSettings-SimpleLB)
/// is Envoy's random load balancer, which "selects a random available host" and is a good
/// choice when no health checking is configured. We honour endpoint weights (Envoy's random
/// balancer draws uniformly); with equal weights, the common case, the two are the same.
///
/// Equal weights take an O(1) path (rejection sampling over the eligible endpoints); unequal
/// weights a pass over the candidates with exact integer arithmetic.
///
/// ```
/// use mesh_core::balance::{Candidate, random};
///
/// let endpoints = [Candidate::new(1), Candidate::new(1).ejected(), Candidate::new(3)];
/// let picked = random(&endpoints, 0x1234_5678_9abc_def0).unwrap();
/// assert_ne!(picked, 1);
/// assert_eq!(random(&[] as &[Candidate], 7), None);
/// ```
pub fn random<C: Candidates + ?Sized>(candidates: &C, random: u64) -> Option<usize> {
    let n = candidates.len();
    if n == 0 {
        return None;
    }
    if candidates.uniform_weights() {
        let mut state = random;
        return uniform_eligible(candidates, &mut state);
    }
    let weight = |i: usize| u64::from(effective_weight(candidates.weight(i)));
    let total: u64 = (0..n)
        .filter(|&i| candidates.is_eligible(i))
        .map(weight)
        .sum();
    if total == 0 {
        return None;
    }
    // The eligible endpoint owning `point` of `0..total`, in index order.
    let mut point = below(random, total);
    (0..n).filter(|&i| candidates.is_eligible(i)).find(|&i| {
        let w = weight(i);
        if point < w {
            true
        } else {
            point -= w;
            false
        }
    })
}

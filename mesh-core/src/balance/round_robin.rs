//! `simple: ROUND_ROBIN`: weighted round robin.

use std::{cmp::Reverse, collections::BinaryHeap};

use super::effective_weight;

/// Envoy's round robin load balancer
/// ([`ROUND_ROBIN`](https://istio.io/latest/docs/reference/config/networking/destination-rule/#LoadBalancerSettings-SimpleLB)):
/// each eligible endpoint in turn, as often as its weight says.
///
/// - Equal weights: plain rotation.
/// - Unequal weights: earliest deadline first, as Envoy schedules weighted hosts. Endpoint `i`
///   has a deadline on a virtual clock and is due again `1 / weight_i` later when picked; the
///   earliest deadline (ties: the lower index) is picked. Over any `sum(weights)` consecutive
///   picks from the start, endpoint `i` is picked exactly `weight_i` times, interleaved rather
///   than in bursts (1:2:3 gives `2 1 2 2 0 1`).
///
/// Deadlines are fixed point (`2^64 / weight` per turn, in `u128`), so no floating point drifts.
///
/// An ineligible endpoint is skipped: its turn passes (its deadline advances) without a pick, so
/// it neither receives traffic nor a burst of catch-up picks when it becomes eligible again. The
/// eligible endpoints keep their relative shares.
///
/// Build a new `RoundRobin` when the endpoint list changes (as Envoy rebuilds its scheduler);
/// eligibility may change on every pick. Picks need `&mut self`: a layer keeps one per endpoint
/// set behind a lock or one per worker. Envoy starts each scheduler at a random position so that
/// many clients do not move in step; a layer can do the same by discarding a random number of
/// picks (below `sum(weights)`) after building.
///
/// ```
/// use mesh_core::balance::RoundRobin;
///
/// let mut rr = RoundRobin::new([1, 2, 3]);
/// let cycle: Vec<usize> = (0..6).map(|_| rr.pick(|_| true).unwrap()).collect();
/// assert_eq!(cycle, [2, 1, 2, 2, 0, 1]);
/// // Endpoint 2 ejected: 0 and 1 share the traffic 1:2.
/// let cycle: Vec<usize> = (0..3).map(|_| rr.pick(|i| i != 2).unwrap()).collect();
/// assert_eq!(cycle.iter().filter(|&&i| i == 1).count(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct RoundRobin {
    schedule: Schedule,
}

#[derive(Clone, Debug)]
enum Schedule {
    /// Equal weights: the next index to try.
    Rotation { len: usize, next: usize },
    /// Unequal weights: `(deadline, index)`, earliest first, and each endpoint's step.
    Edf {
        heap: BinaryHeap<Reverse<(u128, usize)>>,
        steps: Box<[u128]>,
    },
}

// === impl RoundRobin ===

impl RoundRobin {
    /// A schedule over endpoints of these weights, by index (0 counts as 1).
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let weights: Vec<u32> = weights.into_iter().map(effective_weight).collect();
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        let schedule = if uniform {
            Schedule::Rotation {
                len: weights.len(),
                next: 0,
            }
        } else {
            let steps: Box<[u128]> = weights
                .iter()
                .map(|&w| (1u128 << 64) / u128::from(w))
                .collect();
            let heap = steps
                .iter()
                .enumerate()
                .map(|(i, &step)| Reverse((step, i)))
                .collect();
            Schedule::Edf { heap, steps }
        };
        Self { schedule }
    }

    /// The number of endpoints.
    pub fn len(&self) -> usize {
        match &self.schedule {
            Schedule::Rotation { len, .. } => *len,
            Schedule::Edf { steps, .. } => steps.len(),
        }
    }

    /// Whether there is no endpoint.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next eligible endpoint; `None` when none is eligible (or there is none).
    ///
    /// O(1) for equal weights when the next endpoint is eligible, O(log n) for unequal weights;
    /// skipping ineligible endpoints costs one step each, and at most O(n log n) in all.
    pub fn pick(&mut self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        match &mut self.schedule {
            Schedule::Rotation { len, next } => {
                let len = *len;
                let start = *next;
                let picked = (0..len).map(|k| (start + k) % len).find(|&i| eligible(i))?;
                *next = (picked + 1) % len;
                Some(picked)
            }
            Schedule::Edf { heap, steps } => {
                // The earliest deadline, passing ineligible turns, at most once per endpoint.
                for _ in 0..steps.len() {
                    let mut top = heap.peek_mut()?;
                    let (deadline, i) = top.0;
                    top.0 = (deadline + steps[i], i);
                    drop(top);
                    if eligible(i) {
                        return Some(i);
                    }
                }
                // Many ineligible turns come first: find the earliest eligible endpoint
                // directly, and bring the ineligible ones up to its deadline so they cannot
                // burst when they come back.
                let mut entries = std::mem::take(heap).into_vec();
                let best = entries
                    .iter()
                    .map(|e| e.0)
                    .filter(|&(_, i)| eligible(i))
                    .min();
                if let Some((now, picked)) = best {
                    for Reverse((deadline, i)) in &mut entries {
                        if *i == picked {
                            *deadline += steps[picked];
                        } else if *deadline < now {
                            // Its turn passed while it was ineligible: next due one step on.
                            *deadline = now + steps[*i];
                        }
                    }
                }
                *heap = BinaryHeap::from(entries);
                best.map(|(_, i)| i)
            }
        }
    }
}

//! Load balancing: which endpoint of a (subset of a) service receives a request.
//!
//! These are the decisions Istio's DestinationRule
//! [`trafficPolicy.loadBalancer`](https://istio.io/latest/docs/reference/config/networking/destination-rule/#LoadBalancerSettings)
//! configures, with Envoy's load balancers
//! ([architecture overview](https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/load_balancing/load_balancers))
//! as the specification:
//!
//! | `loadBalancer` | here | state |
//! |---|---|---|
//! | `simple: ROUND_ROBIN` | [`RoundRobin`]: weighted round robin (earliest deadline first), plain rotation when weights are equal | `&mut self` position |
//! | `simple: LEAST_REQUEST` (Istio's default) | [`LeastRequest`]: power of two choices; `weight / (active + 1)^bias` when weights differ | none |
//! | `simple: RANDOM` | [`random`]: weighted random | none |
//! | `simple: PASSTHROUGH` | no pick: see below | |
//! | `consistentHash.ringHash` | [`RingHash`], built once per endpoint set | immutable table |
//! | `consistentHash.maglev` | [`Maglev`], built once per endpoint set | immutable table |
//!
//! Everything here is pure: no I/O, no clock, no lock. Randomness arrives as a `u64` argument
//! (the layer passes `fastrand::u64(..)`), so every pick is deterministic under test.
//!
//! # Endpoints, weights and eligibility
//! The stateless balancers ([`LeastRequest`], [`random`]) read everything per pick from a
//! [`Candidates`] set: a `[Candidate]` slice, or the layer's own endpoint table implementing the
//! trait (no copy per request). The built balancers ([`RoundRobin`], [`RingHash`], [`Maglev`])
//! take the weights once and, per pick, only the part that changes: an `eligible(index)` test
//! (`false` for an endpoint ejected by outlier detection or otherwise unusable). Indexes are
//! positions in the list the balancer was given.
//!
//! A weight of 0 counts as 1 everywhere: Envoy requires `load_balancing_weight >= 1`, and Istio
//! reads an endpoint weight of 0 as unset (proto3), which the config loader already maps to 1.
//! Weights are `u32`, and sums are computed in `u64`/`u128`, so no weight overflows.
//!
//! # PASSTHROUGH
//! `simple: PASSTHROUGH` makes no pick: the connection goes to the original destination address
//! the client asked for (Envoy's `ORIGINAL_DST` cluster), so there is no code here. The layer
//! bypasses the balancer and connects to the request's authority.
//!
//! # Consistent hashing
//! The layer extracts the bytes of the configured key (`httpHeaderName`'s value,
//! `httpCookie`'s value, the source IP's text, `httpQueryParameterName`'s value) and hashes them
//! with [`hash_key`] (xxHash64, seed 0, as Envoy); [`RingHash::pick`] and [`Maglev::pick`] map
//! that hash to an endpoint. Envoy's `hash_balance_factor` (bounded load) and
//! `use_hostname_for_hashing` are not implemented: the endpoint key is whatever the layer
//! passes (e.g. `"10.0.0.1:8080"`).

mod least_request;
mod maglev;
mod random;
mod ring_hash;
mod round_robin;
mod xxhash;

#[cfg(test)]
mod tests;

pub use least_request::LeastRequest;
pub use maglev::{DEFAULT_TABLE_SIZE, MAX_TABLE_SIZE, Maglev, MaglevError, is_prime};
pub use random::random;
pub use ring_hash::{DEFAULT_MINIMUM_RING_SIZE, MAX_RING_SIZE, RingHash};
pub use round_robin::RoundRobin;
pub use xxhash::xxh64;

/// Hashes a request's hash key (header value, cookie value, source IP text, query parameter
/// value) to the `u64` that [`RingHash::pick`] and [`Maglev::pick`] take: xxHash64 with seed 0,
/// as Envoy hashes them.
pub fn hash_key(key: &[u8]) -> u64 {
    xxh64(key, 0)
}

/// One endpoint as a stateless balancer sees it at the moment of a pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Load-balancing weight (0 counts as 1).
    pub weight: u32,
    /// `false` when the endpoint must not be picked (ejected, draining, not ready).
    pub eligible: bool,
    /// Requests in flight to the endpoint (Envoy's `rq_active`), for [`LeastRequest`].
    pub active_requests: u64,
}

impl Candidate {
    /// An eligible, idle endpoint of `weight`.
    pub const fn new(weight: u32) -> Self {
        Self {
            weight,
            eligible: true,
            active_requests: 0,
        }
    }

    /// The same endpoint, marked ineligible.
    pub const fn ejected(self) -> Self {
        Self {
            eligible: false,
            ..self
        }
    }

    /// The same endpoint, with `active` requests in flight.
    pub const fn with_active_requests(self, active: u64) -> Self {
        Self {
            active_requests: active,
            ..self
        }
    }
}

/// The endpoints a stateless balancer picks from, by index `0..len()`.
///
/// Implemented for slices, arrays and vectors of [`Candidate`]; a layer can implement it over its
/// own endpoint table (atomics for in-flight counts, ejection flags) to avoid copying per pick.
pub trait Candidates {
    /// The number of endpoints.
    fn len(&self) -> usize;

    /// Whether there is no endpoint.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The weight of endpoint `index` (0 counts as 1).
    fn weight(&self, index: usize) -> u32;

    /// Whether endpoint `index` may be picked.
    fn is_eligible(&self, index: usize) -> bool;

    /// Requests in flight to endpoint `index`.
    fn active_requests(&self, index: usize) -> u64;

    /// Whether every endpoint has the same (effective) weight, which selects the O(1) paths.
    /// The default compares them all; an implementation may cache the answer.
    fn uniform_weights(&self) -> bool {
        let first = effective_weight(if self.is_empty() { 1 } else { self.weight(0) });
        (1..self.len()).all(|i| effective_weight(self.weight(i)) == first)
    }
}

impl Candidates for [Candidate] {
    fn len(&self) -> usize {
        <[Candidate]>::len(self)
    }
    fn weight(&self, index: usize) -> u32 {
        self[index].weight
    }
    fn is_eligible(&self, index: usize) -> bool {
        self[index].eligible
    }
    fn active_requests(&self, index: usize) -> u64 {
        self[index].active_requests
    }
    fn uniform_weights(&self) -> bool {
        match self.split_first() {
            None => true,
            Some((first, rest)) => {
                let w = effective_weight(first.weight);
                rest.iter().all(|c| effective_weight(c.weight) == w)
            }
        }
    }
}

impl<const N: usize> Candidates for [Candidate; N] {
    fn len(&self) -> usize {
        N
    }
    fn weight(&self, index: usize) -> u32 {
        self[index].weight
    }
    fn is_eligible(&self, index: usize) -> bool {
        self[index].eligible
    }
    fn active_requests(&self, index: usize) -> u64 {
        self[index].active_requests
    }
    fn uniform_weights(&self) -> bool {
        self.as_slice().uniform_weights()
    }
}

impl Candidates for Vec<Candidate> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn weight(&self, index: usize) -> u32 {
        self[index].weight
    }
    fn is_eligible(&self, index: usize) -> bool {
        self[index].eligible
    }
    fn active_requests(&self, index: usize) -> u64 {
        self[index].active_requests
    }
    fn uniform_weights(&self) -> bool {
        self.as_slice().uniform_weights()
    }
}

// === helpers shared by the balancers ===

/// A weight as the balancers use it: at least 1.
pub(crate) fn effective_weight(weight: u32) -> u32 {
    weight.max(1)
}

/// Scales a uniformly random `u64` onto `0..n` (multiply and shift: a bias of at most
/// `n / 2^64`, no division).
pub(crate) fn below(random: u64, n: u64) -> u64 {
    ((u128::from(random) * u128::from(n)) >> 64) as u64
}

/// The next value of a splitmix64 stream: turns the one random `u64` a pick receives into as
/// many independent-looking draws as it needs.
pub(crate) fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniformly random eligible index: a few rejection draws (O(1) when most endpoints are
/// eligible), then a counting pass. `None` when no endpoint is eligible.
pub(crate) fn uniform_eligible<C: Candidates + ?Sized>(c: &C, state: &mut u64) -> Option<usize> {
    let n = c.len();
    if n == 0 {
        return None;
    }
    for _ in 0..8 {
        let i = below(splitmix(state), n as u64) as usize;
        if c.is_eligible(i) {
            return Some(i);
        }
    }
    let eligible = (0..n).filter(|&i| c.is_eligible(i)).count();
    if eligible == 0 {
        return None;
    }
    let k = below(splitmix(state), eligible as u64) as usize;
    (0..n).filter(|&i| c.is_eligible(i)).nth(k)
}

/// Sorts endpoint keys and returns, for each input index, its rank in key order (ties by input
/// index): what makes the hash tables independent of the order of the endpoint list.
pub(crate) fn key_ranks<K: AsRef<[u8]>>(keys: &[K]) -> Vec<u32> {
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&a, &b| keys[a].as_ref().cmp(keys[b].as_ref()).then(a.cmp(&b)));
    let mut ranks = vec![0u32; keys.len()];
    for (rank, &i) in order.iter().enumerate() {
        ranks[i] = rank as u32;
    }
    ranks
}

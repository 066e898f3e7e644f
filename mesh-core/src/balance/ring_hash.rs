//! `consistentHash.ringHash`: Envoy's ring hash (Ketama-style consistent hashing).

use super::{effective_weight, key_ranks, xxh64};

/// Istio's and Envoy's default `minimumRingSize`.
pub const DEFAULT_MINIMUM_RING_SIZE: u64 = 1024;

/// Envoy's limit on the ring size (8M entries).
pub const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;

/// A consistent-hash ring
/// ([`consistentHash.ringHash`](https://istio.io/latest/docs/reference/config/networking/destination-rule/#LoadBalancerSettings-ConsistentHashLB-RingHash),
/// Envoy's [ring hash](https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/load_balancing/load_balancers#ring-hash)).
///
/// Every endpoint places entries on a ring of `u64` hashes, as many as its weight says; a
/// request's key hash ([`hash_key`](super::hash_key)) belongs to the first entry at or after it
/// (wrapping around), found by binary search. Because an endpoint's entries do not depend on the
/// other endpoints, removing one of `n` endpoints moves only the keys it owned (about `1/n`),
/// and adding one moves only the keys it takes.
///
/// # Ring size
/// The ring has at least `minimum_ring_size` entries (default 1024, Envoy's default; at most
/// 8M): every endpoint gets `round(weight * U)` entries (at least 1), where `U`, the entries per
/// unit of weight, is the smallest power of two (possibly below 1) with `sum(weights) * U >=
/// minimum_ring_size`. The ring so holds between 1× and 2× the minimum.
///
/// Envoy instead sizes the ring to exactly `ceil(minimum / n)` entries per equal-weight host, so
/// every change of `n` changes every host's entry count too, and a removal moves about `2/n` of
/// the keys. Rounding `U` to a power of two keeps the entry counts unchanged unless the total
/// weight crosses a power of two (e.g. 8 → 7 endpoints of weight 1 with the default size),
/// where every count doubles or halves: such a change moves about half of the keys, once.
///
/// Entry `j` of an endpoint hashes as `xxh64(key, seed = j)` (Envoy hashes the text
/// `"{address}_{j}"`; same idea, no allocation). Entries sort by hash, then by key, so the ring
/// is the same whatever the order of the endpoint list; keys should be unique (e.g.
/// `"10.0.0.1:8080"`).
///
/// # Ineligible endpoints
/// When the endpoint owning a key is ineligible, the pick walks the ring to the next entry of an
/// eligible endpoint: exactly where the key would land on a ring built without the ineligible
/// endpoints (as Envoy's ring over healthy hosts), so only the ejected endpoint's keys move.
///
/// ```
/// use mesh_core::balance::{RingHash, hash_key};
///
/// let ring = RingHash::new([("10.0.0.1:80", 1), ("10.0.0.2:80", 1), ("10.0.0.3:80", 2)], 1024);
/// let h = hash_key(b"user-42");
/// let owner = ring.pick(h, |_| true).unwrap();
/// // Ejecting another endpoint does not move this key.
/// let other = (owner + 1) % 3;
/// assert_eq!(ring.pick(h, |i| i != other), Some(owner));
/// // Ejecting its owner moves it to an eligible endpoint.
/// assert_ne!(ring.pick(h, |i| i != owner), Some(owner));
/// ```
#[derive(Clone, Debug)]
pub struct RingHash {
    /// Entry hashes, ascending.
    hashes: Box<[u64]>,
    /// The endpoint (input index) owning each entry.
    owners: Box<[u32]>,
    endpoints: usize,
}

// === impl RingHash ===

impl RingHash {
    /// Builds the ring from `(key, weight)` pairs; indexes returned by [`pick`](Self::pick) are
    /// positions in this list. A `minimum_ring_size` of 0 means the default (1024); sizes above
    /// 8M count as 8M.
    pub fn new<K: AsRef<[u8]>>(
        endpoints: impl IntoIterator<Item = (K, u32)>,
        minimum_ring_size: u64,
    ) -> Self {
        Self::with_maximum(endpoints, minimum_ring_size, MAX_RING_SIZE)
    }

    /// Like [`new`](Self::new), with Envoy's `maximum_ring_size` (default and limit 8M; at
    /// least the minimum). Every endpoint keeps at least one entry, so the ring may exceed the
    /// maximum by up to the number of endpoints.
    pub fn with_maximum<K: AsRef<[u8]>>(
        endpoints: impl IntoIterator<Item = (K, u32)>,
        minimum_ring_size: u64,
        maximum_ring_size: u64,
    ) -> Self {
        let (keys, weights): (Vec<K>, Vec<u32>) = endpoints
            .into_iter()
            .take(u32::MAX as usize)
            .map(|(k, w)| (k, effective_weight(w)))
            .unzip();
        let maximum = maximum_ring_size.clamp(1, MAX_RING_SIZE);
        let minimum = match minimum_ring_size {
            0 => DEFAULT_MINIMUM_RING_SIZE,
            n => n,
        }
        .min(maximum);
        let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
        let shift = scale_shift(total, minimum, maximum);
        let ranks = key_ranks(&keys);

        let counts: Vec<u64> = weights.iter().map(|&w| entries(w, shift)).collect();
        let size = counts.iter().sum::<u64>() as usize;
        let mut entries_by_hash: Vec<(u64, u32, u32)> = Vec::with_capacity(size);
        for (i, (key, &count)) in keys.iter().zip(&counts).enumerate() {
            for j in 0..count {
                entries_by_hash.push((xxh64(key.as_ref(), j), ranks[i], i as u32));
            }
        }
        entries_by_hash.sort_unstable();
        Self {
            hashes: entries_by_hash.iter().map(|e| e.0).collect(),
            owners: entries_by_hash.iter().map(|e| e.2).collect(),
            endpoints: keys.len(),
        }
    }

    /// The number of entries on the ring.
    pub fn ring_size(&self) -> usize {
        self.hashes.len()
    }

    /// The number of endpoints the ring was built from.
    pub fn endpoints(&self) -> usize {
        self.endpoints
    }

    /// How many ring entries each endpoint owns, by index.
    pub fn entries_per_endpoint(&self) -> Vec<usize> {
        let mut counts = vec![0; self.endpoints];
        for &o in self.owners.iter() {
            counts[o as usize] += 1;
        }
        counts
    }

    /// The endpoint owning `hash`, walking past ineligible endpoints; `None` when the ring is
    /// empty or no endpoint is eligible. O(log size), plus a walk when the owner is ineligible.
    pub fn pick(&self, hash: u64, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.hashes.len();
        if len == 0 {
            return None;
        }
        let first = self.hashes.partition_point(|&h| h < hash) % len;
        let owner = self.owners[first] as usize;
        if eligible(owner) {
            return Some(owner);
        }
        if !(0..self.endpoints).any(&eligible) {
            return None;
        }
        (1..len)
            .map(|k| self.owners[(first + k) % len] as usize)
            .find(|&o| o != owner && eligible(o))
    }
}

/// The exponent `e` of `U = 2^e` entries per unit of weight: the smallest with
/// `total * U >= minimum`, lowered while `total * U > maximum`.
fn scale_shift(total: u128, minimum: u64, maximum: u64) -> i32 {
    if total == 0 {
        return 0;
    }
    let size = |e: i32| {
        if e >= 0 { total << e } else { total >> -e }
    };
    // total <= 2^64, so e stays within -64..=24.
    let mut e = 0i32;
    while size(e) < u128::from(minimum) {
        e += 1;
    }
    while e > -64 && size(e - 1) >= u128::from(minimum) {
        e -= 1;
    }
    while e > -64 && size(e) > u128::from(maximum) {
        e -= 1;
    }
    e
}

/// `round(weight * 2^shift)`, at least 1.
fn entries(weight: u32, shift: i32) -> u64 {
    let w = u64::from(weight);
    let n = if shift >= 0 {
        w << shift
    } else {
        let s = -shift as u32;
        if s >= 64 {
            0
        } else {
            (w + ((1u64 << s) >> 1)) >> s
        }
    };
    n.max(1)
}

//! `consistentHash.maglev`: Maglev consistent hashing (Eisenbud et al., NSDI 2016).

use std::fmt;

use super::{effective_weight, key_ranks, xxh64};

/// Istio's and Envoy's default Maglev `tableSize`.
pub const DEFAULT_TABLE_SIZE: u64 = 65537;

/// The largest table size Envoy (and so Istio) accepts.
pub const MAX_TABLE_SIZE: u64 = 5_000_011;

/// A Maglev lookup table
/// ([`consistentHash.maglev`](https://istio.io/latest/docs/reference/config/networking/destination-rule/#LoadBalancerSettings-ConsistentHashLB-MagLev),
/// Envoy's [Maglev](https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/load_balancing/load_balancers#maglev)).
///
/// A table of `table_size` slots (a prime, default 65537) maps `hash % table_size` to an
/// endpoint: one array read per pick, faster to build and to query than a ring, at the price of
/// slightly more keys moving when the endpoint set changes.
///
/// # Building
/// Every endpoint has its own permutation of the slots, from two hashes of its key:
/// `offset = xxh64(key, 0) % M` and `skip = xxh64(key, 1) % (M - 1) + 1`, visiting
/// `offset, offset + skip, offset + 2·skip, ... (mod M)` (a full permutation because `M` is
/// prime). Endpoints take turns, in key order, each claiming the next free slot of its
/// permutation, until the table is full. Weights: in every round an endpoint earns
/// `weight / max_weight` of a turn and claims a slot per whole turn earned, so its share of
/// slots is proportional to its weight (equal weights give the paper's algorithm); every endpoint
/// claims a slot in the first round, so even a tiny weight keeps one slot. Envoy weighs
/// its turns the same way. Taking turns in key order makes the table independent of the order of
/// the endpoint list; keys should be unique (e.g. `"10.0.0.1:8080"`).
///
/// # Ineligible endpoints
/// When the slot's endpoint is ineligible, the pick moves to the following slots until one
/// belongs to an eligible endpoint. Envoy rebuilds its table over the healthy hosts instead; we
/// keep one table per endpoint set so ejection costs nothing. Consecutive slots are claimed by
/// effectively random endpoints (slots are filled along pseudo-random permutations), so an ejected
/// endpoint's keys spread over the others by their shares, each key consistently, and no other
/// key moves.
///
/// ```
/// use mesh_core::balance::{Maglev, hash_key};
///
/// let table = Maglev::new([("10.0.0.1:80", 1), ("10.0.0.2:80", 1)], 65537).unwrap();
/// let owner = table.pick(hash_key(b"session-7"), |_| true).unwrap();
/// assert_eq!(table.pick(hash_key(b"session-7"), |i| i != owner), Some(1 - owner));
/// assert!(Maglev::new([("a", 1)], 65536).is_err()); // not prime
/// ```
#[derive(Clone, Debug)]
pub struct Maglev {
    /// The endpoint (input index) of each slot; empty when there is no endpoint.
    table: Box<[u32]>,
    endpoints: usize,
}

/// Why a Maglev table cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaglevError {
    /// `tableSize` must be a prime (so that every skip yields a full permutation).
    NotPrime { table_size: u64 },
    /// `tableSize` above Envoy's limit, [`MAX_TABLE_SIZE`].
    TooLarge { table_size: u64 },
}

impl fmt::Display for MaglevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaglevError::NotPrime { table_size } => write!(
                f,
                "maglev tableSize {table_size} is not a prime: use a prime such as 65537 (the \
                 default) or 5000011"
            ),
            MaglevError::TooLarge { table_size } => write!(
                f,
                "maglev tableSize {table_size} is above the limit of {MAX_TABLE_SIZE}"
            ),
        }
    }
}

impl std::error::Error for MaglevError {}

/// Whether `n` is a prime (trial division: fine up to [`MAX_TABLE_SIZE`], and beyond).
pub fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut d = 3u64;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

// === impl Maglev ===

impl Maglev {
    /// Builds the table from `(key, weight)` pairs; indexes returned by [`pick`](Self::pick) are
    /// positions in this list. A `table_size` of 0 means the default, 65537. O(M log M) for a
    /// table of `M` slots.
    pub fn new<K: AsRef<[u8]>>(
        endpoints: impl IntoIterator<Item = (K, u32)>,
        table_size: u64,
    ) -> Result<Self, MaglevError> {
        let m = match table_size {
            0 => DEFAULT_TABLE_SIZE,
            n => n,
        };
        if m > MAX_TABLE_SIZE {
            return Err(MaglevError::TooLarge { table_size: m });
        }
        if !is_prime(m) {
            return Err(MaglevError::NotPrime { table_size: m });
        }
        let (keys, weights): (Vec<K>, Vec<u32>) = endpoints
            .into_iter()
            .take(u32::MAX as usize - 1)
            .map(|(k, w)| (k, effective_weight(w)))
            .unzip();
        if keys.is_empty() {
            return Ok(Self {
                table: Box::new([]),
                endpoints: 0,
            });
        }

        // Endpoints in key order, each with its permutation's position and step.
        let ranks = key_ranks(&keys);
        let max_weight = max_weight_of(&weights);
        let mut turns: Vec<Turn> = vec![Turn::default(); keys.len()];
        for (i, key) in keys.iter().enumerate() {
            let key = key.as_ref();
            turns[ranks[i] as usize] = Turn {
                index: i as u32,
                weight: u64::from(weights[i]),
                next: xxh64(key, 0) % m,
                skip: xxh64(key, 1) % (m - 1) + 1,
                // Everyone claims a slot in the first round, then by weight.
                credit: max_weight - u64::from(weights[i]),
            };
        }

        const EMPTY: u32 = u32::MAX;
        let mut table = vec![EMPTY; m as usize];
        let mut filled = 0u64;
        'rounds: loop {
            for turn in &mut turns {
                turn.credit += turn.weight;
                if turn.credit < max_weight {
                    continue;
                }
                turn.credit -= max_weight;
                // The next free slot of this endpoint's permutation; one exists while the table
                // is not full, because the permutation visits every slot.
                loop {
                    let slot = turn.next as usize;
                    turn.next += turn.skip;
                    if turn.next >= m {
                        turn.next -= m;
                    }
                    if table[slot] == EMPTY {
                        table[slot] = turn.index;
                        filled += 1;
                        break;
                    }
                }
                if filled == m {
                    break 'rounds;
                }
            }
        }
        Ok(Self {
            table: table.into_boxed_slice(),
            endpoints: keys.len(),
        })
    }

    /// The number of slots (0 when built without endpoints).
    pub fn table_size(&self) -> usize {
        self.table.len()
    }

    /// The number of endpoints the table was built from.
    pub fn endpoints(&self) -> usize {
        self.endpoints
    }

    /// How many slots each endpoint owns, by index.
    pub fn slots_per_endpoint(&self) -> Vec<usize> {
        let mut counts = vec![0; self.endpoints];
        for &o in self.table.iter() {
            counts[o as usize] += 1;
        }
        counts
    }

    /// The endpoint of slot `hash % table_size`, moving to the following slots past ineligible
    /// endpoints; `None` when there is no endpoint or none is eligible. O(1), plus a walk when
    /// the owner is ineligible.
    pub fn pick(&self, hash: u64, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.table.len();
        if len == 0 {
            return None;
        }
        let first = (hash % len as u64) as usize;
        let owner = self.table[first] as usize;
        if eligible(owner) {
            return Some(owner);
        }
        if !(0..self.endpoints).any(&eligible) {
            return None;
        }
        (1..len)
            .map(|k| self.table[(first + k) % len] as usize)
            .find(|&o| eligible(o))
            .or_else(|| {
                // Only endpoints without a slot are eligible (more endpoints than slots): any
                // of them, still a function of the hash.
                let count = (0..self.endpoints).filter(|&i| eligible(i)).count() as u64;
                let k = (hash % count) as usize;
                (0..self.endpoints).filter(|&i| eligible(i)).nth(k)
            })
    }
}

fn max_weight_of(weights: &[u32]) -> u64 {
    weights.iter().copied().max().map_or(1, u64::from)
}

/// An endpoint's progress while the table fills.
#[derive(Clone, Copy, Debug, Default)]
struct Turn {
    index: u32,
    weight: u64,
    /// The next slot of its permutation to try.
    next: u64,
    skip: u64,
    /// Weight earned towards its next claim, below `max_weight` (starting at
    /// `max_weight - weight`, so that every endpoint has a slot when there are enough).
    credit: u64,
}

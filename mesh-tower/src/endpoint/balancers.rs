//! Load-balancer state shared by every clone of the stack: round-robin positions, in-flight
//! counts for least request, consistent-hash tables. Keyed by config version and cluster
//! (destination host, subset, port), so a reload starts from fresh tables and old ones age out.
//!
//! Every table is built from the cluster's whole endpoint list; what may be picked (not ejected
//! by outlier detection, not tried before by this request) is the per-pick `eligible` set, as
//! mesh-core's balancers take it.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use http::{HeaderValue, Request};
use mesh_core::{
    balance::{Candidate, LeastRequest, Maglev, RingHash, RoundRobin, hash_key, random},
    model::{ConsistentHash, Endpoint, HashAlgorithm, HashKey, LoadBalancer},
};

use super::ClusterKey;

/// Tables kept per destination; at most this many, oldest versions dropped first.
const MAX_TABLES: usize = 4096;

type Key = (u64, ClusterKey);

#[derive(Debug, Default)]
pub struct Balancers {
    round_robin: Mutex<HashMap<Key, RoundRobin>>,
    hashes: Mutex<HashMap<Key, Arc<HashTable>>>,
    in_flight: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

#[derive(Debug)]
enum HashTable {
    Ring(RingHash),
    Maglev(Maglev),
}

/// An in-flight request to an endpoint (least request counts these).
#[derive(Debug)]
pub struct InFlight(Arc<AtomicU64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The endpoint a balancer picked.
#[derive(Debug)]
pub(crate) struct Pick {
    /// Index in the cluster's endpoint list.
    pub index: usize,
    /// Held while the request is in flight (least request).
    pub in_flight: Option<InFlight>,
    /// A `Set-Cookie` value to add to the response (consistent hash on a cookie the request did
    /// not carry, with a `ttl`).
    pub set_cookie: Option<HeaderValue>,
}

/// The endpoints of one cluster as a balancer sees them for one pick: the whole list (the
/// built tables are made from it, once per config version), their `host:port` keys, and which
/// may be picked now.
#[derive(Debug)]
pub(crate) struct PickSet<'a> {
    pub version: u64,
    pub cluster: &'a ClusterKey,
    pub endpoints: &'a [&'a Endpoint],
    pub authorities: &'a [String],
    pub eligible: &'a [bool],
}

impl Balancers {
    /// Picks an eligible endpoint of `set` as `lb` says (Istio's default: least request).
    /// `None` when none is eligible.
    pub(crate) fn pick<B>(
        &self,
        set: &PickSet<'_>,
        lb: Option<&LoadBalancer>,
        req: &Request<B>,
    ) -> Option<Pick> {
        let PickSet {
            version,
            cluster,
            endpoints,
            authorities,
            eligible,
        } = *set;
        if !eligible.iter().any(|e| *e) {
            return None;
        }
        let ok = |i: usize| eligible[i];
        let key = || (version, cluster.clone());
        let candidates = || -> Vec<Candidate> {
            endpoints
                .iter()
                .zip(eligible)
                .map(|(e, ok)| {
                    let c = Candidate::new(e.weight);
                    if *ok { c } else { c.ejected() }
                })
                .collect()
        };
        let picked = |index| Pick {
            index,
            in_flight: None,
            set_cookie: None,
        };
        match lb {
            Some(LoadBalancer::RoundRobin) => {
                let mut tables = self.round_robin.lock().unwrap_or_else(|e| e.into_inner());
                evict(&mut tables, version);
                let rr = tables
                    .entry(key())
                    .or_insert_with(|| RoundRobin::new(endpoints.iter().map(|e| e.weight)));
                rr.pick(ok).map(picked)
            }
            Some(LoadBalancer::Random) | Some(LoadBalancer::Passthrough) => {
                random(&candidates(), fastrand::u64(..)).map(picked)
            }
            Some(LoadBalancer::ConsistentHash(ch)) => {
                let table = self.hash_table(key(), ch, authorities, endpoints, version);
                let (hash, set_cookie) = match request_hash(&ch.key, req) {
                    Some(h) => (Some(h), None),
                    None => match generate_cookie(&ch.key) {
                        Some((value, header)) => (Some(hash_key(value.as_bytes())), Some(header)),
                        None => (None, None),
                    },
                };
                let index = match hash {
                    Some(h) => match &*table {
                        HashTable::Ring(r) => r.pick(h, ok)?,
                        HashTable::Maglev(m) => m.pick(h, ok)?,
                    },
                    // No key in the request (no header, no cookie and no ttl...): any
                    // endpoint, as Envoy.
                    None => random(&candidates(), fastrand::u64(..))?,
                };
                Some(Pick {
                    index,
                    in_flight: None,
                    set_cookie,
                })
            }
            Some(LoadBalancer::LeastRequest) | None => {
                let counters: Vec<Arc<AtomicU64>> = {
                    let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
                    if map.len() > MAX_TABLES {
                        map.retain(|_, c| Arc::strong_count(c) > 1);
                    }
                    authorities
                        .iter()
                        .map(|a| map.entry(a.clone()).or_default().clone())
                        .collect()
                };
                let candidates: Vec<Candidate> = candidates()
                    .into_iter()
                    .zip(&counters)
                    .map(|(c, n)| c.with_active_requests(n.load(Ordering::Relaxed)))
                    .collect();
                let i = LeastRequest::new().pick(&candidates, fastrand::u64(..))?;
                counters[i].fetch_add(1, Ordering::Relaxed);
                Some(Pick {
                    index: i,
                    in_flight: Some(InFlight(counters[i].clone())),
                    set_cookie: None,
                })
            }
        }
    }

    fn hash_table(
        &self,
        key: Key,
        ch: &ConsistentHash,
        authorities: &[String],
        endpoints: &[&Endpoint],
        version: u64,
    ) -> Arc<HashTable> {
        let mut tables = self.hashes.lock().unwrap_or_else(|e| e.into_inner());
        evict(&mut tables, version);
        tables
            .entry(key)
            .or_insert_with(|| {
                // Endpoints are keyed by `host:port`: two endpoints on one address differ.
                let keyed = authorities
                    .iter()
                    .zip(endpoints)
                    .map(|(a, e)| (a.as_bytes(), e.weight));
                Arc::new(match ch.algorithm {
                    HashAlgorithm::RingHash { minimum_ring_size } => {
                        HashTable::Ring(RingHash::new(keyed, minimum_ring_size))
                    }
                    HashAlgorithm::Maglev { table_size } => {
                        match Maglev::new(keyed.clone(), table_size) {
                            Ok(m) => HashTable::Maglev(m),
                            // Validation rejects bad sizes; fall back to the default.
                            Err(_) => HashTable::Maglev(
                                Maglev::new(keyed, 0).expect("default table size"),
                            ),
                        }
                    }
                })
            })
            .clone()
    }
}

/// Keeps tables of the newest config versions only, and a bounded number of them.
fn evict<V>(tables: &mut HashMap<Key, V>, version: u64) {
    if tables.len() >= MAX_TABLES || tables.keys().any(|k| k.0 + 2 < version) {
        tables.retain(|k, _| k.0 + 2 >= version);
        if tables.len() >= MAX_TABLES {
            tables.clear();
        }
    }
}

/// The consistent-hash key of a request: a header, a cookie, the source IP (the first
/// `x-forwarded-for` address, when there is one) or a query parameter.
fn request_hash<B>(key: &HashKey, req: &Request<B>) -> Option<u64> {
    match key {
        HashKey::Header(name) => req
            .headers()
            .get(name.as_str())
            .map(|v| hash_key(v.as_bytes())),
        HashKey::Cookie { name, .. } => req
            .headers()
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map(|(_, v)| hash_key(unquote(v).as_bytes())),
        HashKey::SourceIp => req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|ip| hash_key(ip.trim().as_bytes())),
        HashKey::QueryParameter(name) => req.uri().query().and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                .find(|(k, _)| k == name)
                .map(|(_, v)| hash_key(v.as_bytes()))
        }),
    }
}

/// A cookie value without the double quotes a server may have put around it.
fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// For `httpCookie` with a `ttl`, when the request has no such cookie: a new random value and
/// the `Set-Cookie` that gives it to the client. Envoy: "If the cookie is not present and ttl
/// below is not set, no hash will be produced. If the cookie is not present and ttl is set, the
/// generator will generate a cookie with the given ttl"; "If the TTL is present and zero, the
/// generated cookie will be a session cookie."
pub(crate) fn generate_cookie(key: &HashKey) -> Option<(String, HeaderValue)> {
    let HashKey::Cookie {
        name,
        path,
        ttl: Some(ttl),
    } = key
    else {
        return None;
    };
    let value = format!("{:016x}", fastrand::u64(..));
    let mut cookie = format!("{name}={value}");
    if let Some(path) = path {
        cookie.push_str(&format!("; Path={path}"));
    }
    if !ttl.is_zero() {
        // Max-Age is whole seconds; a sub-second ttl still lasts a second.
        cookie.push_str(&format!("; Max-Age={}", ttl.as_secs().max(1)));
    }
    cookie.push_str("; HttpOnly");
    let header = HeaderValue::from_str(&cookie).ok()?;
    Some((value, header))
}

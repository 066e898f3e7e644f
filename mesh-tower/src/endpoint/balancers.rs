//! Load-balancer state shared by every clone of the stack: round-robin positions, in-flight
//! counts for least request, consistent-hash tables. Keyed by config version, destination and
//! port, so a reload starts from fresh tables and old ones age out.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http::Request;
use mesh_core::{
    balance::{Candidate, LeastRequest, Maglev, RingHash, RoundRobin, hash_key, random},
    model::{Destination, Endpoint, HashAlgorithm, HashKey, LoadBalancer},
};

/// Tables kept per destination; at most this many, oldest versions dropped first.
const MAX_TABLES: usize = 4096;

type Key = (u64, String, Option<String>, u16);

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

fn endpoint_key(e: &Endpoint) -> String {
    e.address.to_string()
}

impl Balancers {
    /// Picks one of `endpoints` for `dest` as `lb` says (Istio's default: least request).
    pub(crate) fn pick<B>(
        &self,
        version: u64,
        dest: &Destination,
        port: u16,
        endpoints: &[&Endpoint],
        lb: Option<&LoadBalancer>,
        req: &Request<B>,
    ) -> Option<(usize, Option<InFlight>)> {
        if endpoints.is_empty() {
            return None;
        }
        let key = || (version, dest.host.to_string(), dest.subset.clone(), port);
        let index = match lb {
            Some(LoadBalancer::RoundRobin) => {
                let mut tables = self.round_robin.lock().unwrap_or_else(|e| e.into_inner());
                evict(&mut tables, version);
                tables
                    .entry(key())
                    .or_insert_with(|| RoundRobin::new(endpoints.iter().map(|e| e.weight)))
                    .pick(|_| true)?
            }
            Some(LoadBalancer::Random) | Some(LoadBalancer::Passthrough) => {
                let candidates: Vec<Candidate> =
                    endpoints.iter().map(|e| Candidate::new(e.weight)).collect();
                random(&candidates, fastrand::u64(..))?
            }
            Some(LoadBalancer::ConsistentHash(ch)) => {
                let table = {
                    let mut tables = self.hashes.lock().unwrap_or_else(|e| e.into_inner());
                    evict(&mut tables, version);
                    tables
                        .entry(key())
                        .or_insert_with(|| {
                            let keyed = endpoints.iter().map(|e| (endpoint_key(e), e.weight));
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
                };
                match request_hash(&ch.key, req) {
                    Some(h) => match &*table {
                        HashTable::Ring(r) => r.pick(h, |_| true)?,
                        HashTable::Maglev(m) => m.pick(h, |_| true)?,
                    },
                    // No key in the request (no header, cookie...): any endpoint, as Envoy.
                    None => fastrand::usize(..endpoints.len()),
                }
            }
            Some(LoadBalancer::LeastRequest) | None => {
                let counters: Vec<Arc<AtomicU64>> = {
                    let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
                    if map.len() > MAX_TABLES {
                        map.retain(|_, c| Arc::strong_count(c) > 1);
                    }
                    endpoints
                        .iter()
                        .map(|e| map.entry(endpoint_key(e)).or_default().clone())
                        .collect()
                };
                let candidates: Vec<Candidate> = endpoints
                    .iter()
                    .zip(&counters)
                    .map(|(e, c)| {
                        Candidate::new(e.weight).with_active_requests(c.load(Ordering::Relaxed))
                    })
                    .collect();
                let i = LeastRequest::new().pick(&candidates, fastrand::u64(..))?;
                counters[i].fetch_add(1, Ordering::Relaxed);
                return Some((i, Some(InFlight(counters[i].clone()))));
            }
        };
        Some((index, None))
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
            .map(|(_, v)| hash_key(v.as_bytes())),
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

pin_project_lite::pin_project! {
    /// A response body that holds its endpoint's in-flight count until it is done.
    pub struct GuardedBody<B> {
        #[pin]
        inner: B,
        guard: Option<InFlight>,
    }
}

impl<B> GuardedBody<B> {
    pub fn new(inner: B, guard: Option<InFlight>) -> Self {
        GuardedBody { inner, guard }
    }
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for GuardedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = &polled {
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

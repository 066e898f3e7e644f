//! Circuit breaking: DestinationRule `connectionPool` limits, as Envoy's cluster circuit
//! breakers ([overview](https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/circuit_breaking)).
//!
//! One [`Breaker`] per cluster (destination host, subset and port: what Istio makes an Envoy
//! cluster), shared by every clone of the stack. A request over a limit fails at once with
//! [`MeshError::Overflow`] (503, `x-mesh-error: overflow`); nothing waits beyond the limits.
//!
//! | Istio field | Envoy circuit breaker | here |
//! |---|---|---|
//! | `http.http2MaxRequests` | `max_requests`: "the maximum number of requests that can be outstanding to all hosts in a cluster at any given time" | requests in flight (including pending ones), HTTP/1.1 and HTTP/2 ("applicable to both HTTP/1.1 and HTTP2", Istio) |
//! | `tcp.maxConnections` | `max_connections`: "the maximum number of connections that Envoy will establish to all hosts in an upstream cluster" | HTTP/1.1: a semaphore of that many permits per cluster, one held by each request from before it is sent until its response body ends. hyper-util's pool has no per-host cap, but an HTTP/1.1 connection carries one request at a time, so at most that many connections are *busy*; idle pooled connections are not counted. HTTP/2 multiplexes every request on one connection per endpoint: not limited. |
//! | `http.http1MaxPendingRequests` | `max_pending_requests`: "the maximum number of requests that will be queued while waiting for a ready connection pool connection" | HTTP/1.1 requests waiting for a `maxConnections` permit; only those wait, and only up to this many. Without `maxConnections` nothing is ever pending here (Envoy also counts requests waiting for a new connection to be established, which hyper's pool does not show). |
//! | `http.maxRetries` | `max_retries`: "the maximum number of retries that can be outstanding to all hosts in a cluster at any given time" | attempts marked [`RetryAttempt`](super::RetryAttempt) in flight; over the limit the attempt fails with [`RetryOverflow`] |
//!
//! Istio's default for each is 2^32-1 ("Default 2^32-1"), overriding Envoy's own 1024/3: a
//! destination without `connectionPool` has no circuit breaking, and pays nothing for it.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use mesh_core::model::ConnectionPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ClusterKey;
use crate::error::MeshError;

/// Breakers kept at most (idle ones are dropped first).
const MAX_BREAKERS: usize = 4096;

/// A retry attempt refused by `maxRetries` (Envoy's `upstream_rq_retry_overflow`). It answers
/// as [`MeshError::Overflow`] (its source); a retry layer that sees it should stop retrying and
/// return the previous attempt's outcome, as Envoy does when the retry circuit breaker is open.
#[derive(Debug, thiserror::Error)]
#[error("retry overflow: maxRetries reached")]
pub struct RetryOverflow(#[source] pub MeshError);

/// The limits of one destination, `u32::MAX` (2^32-1) where unset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub max_requests: u32,
    pub max_pending: u32,
    pub max_connections: u32,
    pub max_retries: u32,
}

impl Limits {
    pub fn from_pool(pool: &ConnectionPool) -> Self {
        Limits {
            max_requests: pool.http2_max_requests.unwrap_or(u32::MAX),
            max_pending: pool.http1_max_pending_requests.unwrap_or(u32::MAX),
            max_connections: pool.max_connections.unwrap_or(u32::MAX),
            max_retries: pool.max_retries.unwrap_or(u32::MAX),
        }
    }

    fn unlimited(&self) -> bool {
        *self
            == Limits {
                max_requests: u32::MAX,
                max_pending: u32::MAX,
                max_connections: u32::MAX,
                max_retries: u32::MAX,
            }
    }
}

/// The circuit breakers of every cluster.
#[derive(Debug, Default)]
pub(crate) struct CircuitBreakers {
    clusters: Mutex<HashMap<ClusterKey, Arc<Breaker>>>,
}

/// One cluster's counters.
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    requests: AtomicU64,
    pending: AtomicU64,
    retries: AtomicU64,
    /// The `maxConnections` semaphore and the limit it was made for (a reload that changes the
    /// limit starts a new one; requests holding the old one finish on it).
    connections: Mutex<Option<(u32, Arc<Semaphore>)>>,
}

/// A request admitted by the breakers: holds its counts until dropped (the upstream keeps it
/// until the response body ends).
#[derive(Debug)]
pub(crate) struct Admission {
    breaker: Arc<Breaker>,
    retry: bool,
    connection: Connection,
}

#[derive(Debug)]
enum Connection {
    NotLimited,
    Held(#[allow(dead_code)] OwnedSemaphorePermit),
    /// Counted in `pending` until a permit comes.
    Pending(Arc<Semaphore>),
}

impl CircuitBreakers {
    /// Admits a request to `cluster` or fails with an overflow. `retry`: the request is a retry
    /// attempt; `h1`: it goes over HTTP/1.1 (where `maxConnections` applies).
    pub fn admit(
        &self,
        cluster: &ClusterKey,
        limits: &Limits,
        retry: bool,
        h1: bool,
        destination: &dyn Fn() -> String,
    ) -> Result<Option<Admission>, crate::body::BoxError> {
        if limits.unlimited() {
            return Ok(None);
        }
        let breaker = self.breaker(cluster);
        let overflow = || MeshError::Overflow {
            destination: destination(),
        };
        let mut admission = Admission {
            breaker: breaker.clone(),
            retry: false,
            connection: Connection::NotLimited,
        };
        // Counted first, then checked: concurrent requests never both slip under a limit.
        let requests = breaker.requests.fetch_add(1, Ordering::AcqRel);
        if retry {
            admission.retry = true;
            if breaker.retries.fetch_add(1, Ordering::AcqRel) >= u64::from(limits.max_retries) {
                return Err(RetryOverflow(overflow()).into());
            }
        }
        if requests >= u64::from(limits.max_requests) {
            return Err(overflow().into());
        }
        if h1 && limits.max_connections != u32::MAX {
            let sem = breaker.semaphore(limits.max_connections);
            match sem.clone().try_acquire_owned() {
                Ok(permit) => admission.connection = Connection::Held(permit),
                Err(_) => {
                    // No connection free: the request is pending, if the queue has room.
                    let pending = breaker.pending.fetch_add(1, Ordering::AcqRel);
                    admission.connection = Connection::Pending(sem);
                    if pending >= u64::from(limits.max_pending) {
                        return Err(overflow().into());
                    }
                }
            }
        }
        Ok(Some(admission))
    }

    fn breaker(&self, cluster: &ClusterKey) -> Arc<Breaker> {
        let mut clusters = self.clusters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = clusters.get(cluster) {
            return b.clone();
        }
        if clusters.len() >= MAX_BREAKERS {
            clusters.retain(|_, b| Arc::strong_count(b) > 1);
        }
        clusters.entry(cluster.clone()).or_default().clone()
    }
}

impl Breaker {
    fn semaphore(&self, limit: u32) -> Arc<Semaphore> {
        let mut current = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        match &*current {
            Some((l, sem)) if *l == limit => sem.clone(),
            _ => {
                let permits = (limit as usize).min(Semaphore::MAX_PERMITS);
                let sem = Arc::new(Semaphore::new(permits));
                *current = Some((limit, sem.clone()));
                sem
            }
        }
    }
}

impl Admission {
    /// Waits for a connection permit if the request is pending (HTTP/1.1 over
    /// `maxConnections`, within `http1MaxPendingRequests`).
    pub async fn connection(&mut self) {
        if let Connection::Pending(sem) = &self.connection {
            let acquired = sem.clone().acquire_owned().await;
            self.breaker.pending.fetch_sub(1, Ordering::AcqRel);
            self.connection = match acquired {
                Ok(permit) => Connection::Held(permit),
                // The semaphores are never closed; if one were, do not hold the request.
                Err(_) => Connection::NotLimited,
            };
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.breaker.requests.fetch_sub(1, Ordering::AcqRel);
        if self.retry {
            self.breaker.retries.fetch_sub(1, Ordering::AcqRel);
        }
        if let Connection::Pending(_) = self.connection {
            self.breaker.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

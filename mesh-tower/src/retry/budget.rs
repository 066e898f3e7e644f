//! Active requests and active retries per destination, for Envoy's retry budget.
//!
//! Envoy keeps the budget per cluster; a cluster is a destination's service, subset and port,
//! so the counters are kept per [`Destination`](mesh_core::model::Destination). Every clone of
//! a [`RetryLayer`](super::RetryLayer) (and every service it made) shares them.

use mesh_core::model::Destination;
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

/// Destinations kept before entries no request holds are swept.
const SWEEP_AT: usize = 1024;

/// The counters of every destination.
#[derive(Debug, Default)]
pub(crate) struct Budgets {
    by_destination: Mutex<HashMap<Destination, Arc<Counters>>>,
}

/// One destination's counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
}

impl Budgets {
    /// Counts a request to `destination` as active until the guard drops.
    pub(crate) fn request(&self, destination: &Destination) -> ActiveRequest {
        let counters = {
            let mut map = self
                .by_destination
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match map.get(destination) {
                Some(c) => c.clone(),
                None => {
                    if map.len() >= SWEEP_AT {
                        // Destinations come from the config; a reload can retire them.
                        map.retain(|_, c| Arc::strong_count(c) > 1);
                    }
                    map.entry(destination.clone()).or_default().clone()
                }
            }
        };
        counters.requests.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(counters)
    }
}

/// A request in flight to a destination.
#[derive(Debug)]
pub(crate) struct ActiveRequest(Arc<Counters>);

impl ActiveRequest {
    /// `(active requests, active retries)` of the destination.
    pub(crate) fn load(&self) -> (u64, u64) {
        (
            self.0.requests.load(Ordering::Relaxed),
            self.0.retries.load(Ordering::Relaxed),
        )
    }

    /// Counts a retry as active until the guard drops.
    pub(crate) fn retry(&self) -> ActiveRetry {
        self.0.retries.fetch_add(1, Ordering::Relaxed);
        ActiveRetry(self.0.clone())
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A retry in flight (from its scheduling, through its back-off, to its outcome).
#[derive(Debug)]
pub(crate) struct ActiveRetry(Arc<Counters>);

impl Drop for ActiveRetry {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::Relaxed);
    }
}

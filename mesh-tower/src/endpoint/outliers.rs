//! Outlier detection in the upstream: one [`OutlierDetector`] (mesh-core's pure state machine)
//! per cluster (destination host, subset and port), fed with the outcome of every attempt and
//! read by the load balancer, which skips ejected endpoints.
//!
//! - Time: the detector takes a `Duration`; it gets `tokio::time::Instant::elapsed()` since the
//!   detector was made, so paused-time tests drive ejections and returns.
//! - Reloads: the detector is kept per cluster across config versions, and remapped to the new
//!   endpoint list by `host:port` (endpoints that stay keep their state, as Envoy keeps a host's
//!   monitor while it stays in the cluster); new settings start a fresh detector.
//! - What is recorded ([`Outcome`]): the response status (a gRPC trailers-only response by its
//!   `grpc-status`, mapped to HTTP as Envoy maps it), a connect failure (refused, connect
//!   timeout, TLS), a reset or disconnect before the response, and a timeout when the attempt is
//!   dropped after its [`AttemptDeadline`](super::AttemptDeadline). Circuit-breaker overflows
//!   and "no healthy upstream" never reach an endpoint and are not recorded.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use mesh_core::{
    model::OutlierDetection,
    outlier::{Outcome, OutlierDetector},
};
use tokio::time::Instant;

use super::ClusterKey;

/// Detectors kept at most (idle ones of old versions are dropped first).
const MAX_DETECTORS: usize = 4096;

/// The detectors of every cluster that has `outlierDetection`.
#[derive(Debug, Default)]
pub(crate) struct OutlierDetectors {
    sets: Mutex<HashMap<ClusterKey, Arc<Mutex<DetectorSet>>>>,
}

/// One cluster's detector, and the endpoints (by `host:port`) its indexes mean.
#[derive(Debug)]
pub(crate) struct DetectorSet {
    cluster: String,
    version: u64,
    policy: OutlierDetection,
    index: HashMap<String, usize>,
    keys: Vec<String>,
    detector: OutlierDetector,
    start: Instant,
}

impl OutlierDetectors {
    /// The detector of `cluster` for config `version`, whose endpoints are `authorities`.
    pub fn set_for(
        &self,
        cluster: &ClusterKey,
        version: u64,
        policy: &OutlierDetection,
        authorities: &[String],
    ) -> Arc<Mutex<DetectorSet>> {
        let set = {
            let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(set) = sets.get(cluster) {
                set.clone()
            } else {
                if sets.len() >= MAX_DETECTORS {
                    sets.retain(|_, s| Arc::strong_count(s) > 1);
                }
                let set = Arc::new(Mutex::new(DetectorSet::new(
                    cluster,
                    version,
                    policy,
                    authorities,
                )));
                sets.insert(cluster.clone(), set.clone());
                return set;
            }
        };
        {
            let mut s = set.lock().unwrap_or_else(|e| e.into_inner());
            // A request on an older snapshot uses the newer detector as it is.
            if version > s.version {
                s.update(version, policy, authorities);
            }
        }
        set
    }
}

impl DetectorSet {
    fn new(
        cluster: &ClusterKey,
        version: u64,
        policy: &OutlierDetection,
        authorities: &[String],
    ) -> Self {
        DetectorSet {
            cluster: cluster_name(cluster),
            version,
            policy: policy.clone(),
            index: index_of(authorities),
            keys: authorities.to_vec(),
            detector: OutlierDetector::new(policy, authorities.len()),
            start: Instant::now(),
        }
    }

    /// A new config version: keep the state of endpoints that stay, unless the settings changed.
    fn update(&mut self, version: u64, policy: &OutlierDetection, authorities: &[String]) {
        if *policy != self.policy {
            let cluster = std::mem::take(&mut self.cluster);
            *self = DetectorSet {
                cluster,
                version,
                policy: policy.clone(),
                index: index_of(authorities),
                keys: authorities.to_vec(),
                detector: OutlierDetector::new(policy, authorities.len()),
                start: self.start,
            };
            return;
        }
        if authorities != self.keys {
            self.detector
                .on_endpoints_changed(authorities.iter().map(|a| self.index.get(a).copied()));
            self.index = index_of(authorities);
            self.keys = authorities.to_vec();
        }
        self.version = version;
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// For each of `authorities`: whether the load balancer must skip it now (ejected, and the
    /// set is not in panic). Endpoints the detector does not know are never skipped.
    pub fn ejected(&self, authorities: &[String]) -> Vec<bool> {
        let now = self.now();
        let mut eligible = vec![false; self.keys.len()];
        for i in self.detector.eligible(now) {
            eligible[i] = true;
        }
        authorities
            .iter()
            .map(|a| self.index.get(a).is_some_and(|&i| !eligible[i]))
            .collect()
    }

    /// Records how an attempt to `authority` ended.
    pub fn record(&mut self, authority: &str, outcome: Outcome) {
        let Some(&i) = self.index.get(authority) else {
            return;
        };
        let now = self.now();
        if let Some(ejection) = self.detector.record(i, outcome, now) {
            tracing::warn!(
                cluster = %self.cluster,
                endpoint = authority,
                reason = ?ejection.reason,
                duration = ?ejection.duration,
                "outlier detection ejected an endpoint",
            );
        }
    }
}

/// Where one attempt's outcome goes.
#[derive(Debug, Clone)]
pub(crate) struct OutlierHandle {
    pub set: Arc<Mutex<DetectorSet>>,
    pub authority: String,
}

impl OutlierHandle {
    pub fn record(&self, outcome: Outcome) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(&self.authority, outcome);
    }
}

fn index_of(authorities: &[String]) -> HashMap<String, usize> {
    authorities
        .iter()
        .enumerate()
        .map(|(i, a)| (a.clone(), i))
        .collect()
}

fn cluster_name((host, subset, port): &ClusterKey) -> String {
    match subset {
        Some(s) => format!("outbound|{port}|{s}|{host}"),
        None => format!("outbound|{port}||{host}"),
    }
}

/// The HTTP status Envoy's outlier detection sees for a gRPC status (Envoy's gRPC-to-HTTP
/// mapping, as its router reports trailers-only gRPC responses).
pub(crate) fn grpc_to_http(code: u32) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        2 | 13 | 15 => 500,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

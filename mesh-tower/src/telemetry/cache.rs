//! What one telemetry layer keeps between requests: its own workload's labels, computed once,
//! and bounded maps of the label values and metric handles it has seen, so that a request in
//! the steady state allocates no label and registers no metric.
//!
//! Bounds (they also bound what a request can add to the recorder):
//! - label values come from the config (registry services and endpoints, the workload's own
//!   labels), from Envoy's fixed sets (codes, flags, protocols), or from the peers' principals
//!   (at most [`MAX_PRINCIPALS`], then `unknown`; as many again for the principals of
//!   upstream TLS connections, on each side of them) and the authorities of requests outside the
//!   registry (at most [`MAX_AUTHORITIES`], then `unknown`);
//! - the metric handles are cached per label set, at most [`MAX_SERIES`]; past that the cache
//!   starts over (a handle lost from it is registered again, at the cost of a lookup).
//!
//! Everything derived from a config snapshot is dropped when a request brings a new one.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, RwLock, Weak},
};

use mesh_core::{
    CompiledMesh,
    model::{Endpoint, Service},
};
use metrics::{Counter, Histogram, Key, Level, Metadata};

use super::{
    REQUEST_BYTES, REQUEST_DURATION, REQUESTS_TOTAL, RESPONSE_BYTES, Reporter,
    labels::{self, Dest, Outcome, Workload},
};
use crate::snapshot::MeshHandle;

/// Distinct peer principals given their own labels.
pub const MAX_PRINCIPALS: usize = 1024;
/// Distinct authorities outside the registry given their own `destination_service`.
pub const MAX_AUTHORITIES: usize = 256;
/// Label sets whose metric handles are kept.
pub const MAX_SERIES: usize = 4096;

pub(crate) static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The handles of one HTTP series. It holds the label values its key points at.
pub(crate) struct Series {
    pub requests: Counter,
    pub duration: Histogram,
    pub request_bytes: Histogram,
    pub response_bytes: Histogram,
    _values: (Arc<Dest>, Arc<Workload>, Arc<Workload>),
}

/// A series by the identity of its interned parts (kept alive by the [`Series`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SeriesKey {
    dest: usize,
    peer: usize,
    /// This workload's labels: with or without the principal of its certificate.
    local: usize,
    outcome: Outcome,
}

impl SeriesKey {
    pub(crate) fn new(
        dest: &Arc<Dest>,
        peer: &Arc<Workload>,
        local: &Arc<Workload>,
        outcome: Outcome,
    ) -> Self {
        SeriesKey {
            dest: Arc::as_ptr(dest) as usize,
            peer: Arc::as_ptr(peer) as usize,
            local: Arc::as_ptr(local) as usize,
            outcome,
        }
    }
}

/// A peer's labels with principals from TLS connections, by principal; the peer is kept so
/// that its address (the key) stays its own.
type WithPrincipals = (Arc<Workload>, HashMap<Box<str>, Arc<Workload>>);

#[derive(Default)]
struct Caches {
    /// The snapshot the config-derived maps below were computed from.
    snapshot: Weak<CompiledMesh>,
    /// Registry services by destination host (outbound) or request host (inbound).
    services: HashMap<Box<str>, Arc<Dest>>,
    /// Registry endpoints by address in the snapshot.
    endpoints: HashMap<usize, Arc<Workload>>,
    /// Destinations outside the registry, by Istio cluster name (passthrough, blocked, none)
    /// and authority.
    authorities: HashMap<Option<&'static str>, HashMap<Box<str>, Arc<Dest>>>,
    authority_count: usize,
    principals: HashMap<Box<str>, Arc<Workload>>,
    /// This workload with the principal of the certificate it presented upstream.
    local_principals: HashMap<Box<str>, Arc<Workload>>,
    /// Upstream peers (by address) with the principal their certificate carried.
    peer_principals: HashMap<usize, WithPrincipals>,
    peer_principal_count: usize,
    series: HashMap<SeriesKey, Arc<Series>>,
}

impl Caches {
    fn is_for(&self, mesh: &Arc<CompiledMesh>) -> bool {
        std::ptr::eq(self.snapshot.as_ptr(), Arc::as_ptr(mesh))
    }
}

/// The state shared by every clone of a telemetry layer and its services.
pub(crate) struct Shared {
    pub reporter: Reporter,
    pub outputs: super::Outputs,
    pub handle: MeshHandle,
    /// This workload's labels, computed once.
    pub local: Arc<Workload>,
    pub unknown_peer: Arc<Workload>,
    pub unknown_dest: Arc<Dest>,
    /// Where inbound requests for no registry service go: this workload's canonical service.
    local_dest: Arc<Dest>,
    caches: RwLock<Caches>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("reporter", &self.reporter)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(
        reporter: Reporter,
        handle: MeshHandle,
        local: Workload,
        outputs: super::Outputs,
    ) -> Self {
        let name = local.canonical_service.clone();
        let local_dest = Arc::new(Dest {
            service: name.clone(),
            name,
            namespace: local.namespace.clone(),
        });
        Shared {
            reporter,
            outputs,
            handle,
            local_dest,
            local: Arc::new(local),
            unknown_peer: Arc::new(Workload::unknown()),
            unknown_dest: Arc::new(Dest::unknown()),
            caches: RwLock::default(),
        }
    }

    /// A cached value: read under the shared lock; computed and stored under the exclusive
    /// one when missing. With `mesh`, the config-derived maps are first reset if they were
    /// computed from another snapshot.
    fn cached<T>(
        &self,
        mesh: Option<&Arc<CompiledMesh>>,
        get: impl Fn(&Caches) -> Option<T>,
        make: impl FnOnce(&mut Caches) -> T,
    ) -> T {
        {
            let c = self.caches.read().unwrap_or_else(|e| e.into_inner());
            if mesh.is_none_or(|m| c.is_for(m))
                && let Some(v) = get(&c)
            {
                return v;
            }
        }
        let mut c = self.caches.write().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = mesh.filter(|m| !c.is_for(m)) {
            c.snapshot = Arc::downgrade(m);
            c.services.clear();
            c.endpoints.clear();
            c.peer_principals.clear();
            c.peer_principal_count = 0;
            c.series.clear();
        }
        if let Some(v) = get(&c) {
            return v;
        }
        make(&mut c)
    }

    /// The destination of an outbound request routed to registry host `host`.
    pub(crate) fn service_dest(&self, mesh: &Arc<CompiledMesh>, host: &str) -> Arc<Dest> {
        let get = |c: &Caches| c.services.get(host).map(|d| Some(d.clone()));
        match self.cached(Some(mesh), get, |c| {
            let dest = Arc::new(Dest::service(mesh.service(host)?));
            c.services.insert(host.into(), dest.clone());
            Some(dest)
        }) {
            Some(d) => d,
            None => self.authority_dest(host, None),
        }
    }

    /// The destination an inbound request to `host` (no port) is for: the registry service it
    /// names, qualified in this workload's namespace, else this workload's canonical service
    /// (Istio's inbound reporter does not fall back to the Host header).
    pub(crate) fn inbound_dest(&self, mesh: &Arc<CompiledMesh>, host: &str) -> Arc<Dest> {
        self.cached(
            Some(mesh),
            |c| c.services.get(host).cloned(),
            |c| {
                let q = mesh_core::Host::qualify(host, &self.local.namespace);
                let dest = match mesh.service(q.as_str()) {
                    Some(svc) => Arc::new(Dest {
                        namespace: self.local.namespace.clone(),
                        ..Dest::service(svc)
                    }),
                    None => self.local_dest.clone(),
                };
                if c.services.len() < MAX_AUTHORITIES {
                    c.services.insert(host.into(), dest.clone());
                }
                dest
            },
        )
    }

    /// A destination outside the registry, by authority, while fewer than
    /// [`MAX_AUTHORITIES`] have been seen; `unknown` after that.
    pub(crate) fn authority_dest(
        &self,
        authority: &str,
        cluster: Option<&'static str>,
    ) -> Arc<Dest> {
        let get = |c: &Caches| c.authorities.get(&cluster)?.get(authority).cloned();
        self.cached(None, get, |c| {
            if c.authority_count >= MAX_AUTHORITIES {
                return self.unknown_dest.clone();
            }
            c.authority_count += 1;
            let dest = Arc::new(Dest::authority(authority, cluster));
            let by_cluster = c.authorities.entry(cluster).or_default();
            by_cluster.insert(authority.into(), dest.clone());
            dest
        })
    }

    /// The workload of a registry endpoint of `mesh`.
    pub(crate) fn endpoint_peer(
        &self,
        mesh: &Arc<CompiledMesh>,
        service: &Service,
        ep: &Endpoint,
    ) -> Arc<Workload> {
        let key = ep as *const Endpoint as usize;
        self.cached(
            Some(mesh),
            |c| c.endpoints.get(&key).cloned(),
            |c| {
                let w = Arc::new(Workload::from_endpoint(ep, service));
                c.endpoints.insert(key, w.clone());
                w
            },
        )
    }

    /// A peer known by its principal, while fewer than [`MAX_PRINCIPALS`] have been seen.
    pub(crate) fn principal_peer(&self, principal: &str) -> Arc<Workload> {
        self.cached(
            None,
            |c| c.principals.get(principal).cloned(),
            |c| {
                if c.principals.len() >= MAX_PRINCIPALS {
                    return self.unknown_peer.clone();
                }
                let w = Arc::new(Workload::from_principal(principal));
                c.principals.insert(principal.into(), w.clone());
                w
            },
        )
    }

    /// This workload with `principal`, the URI SAN of the certificate it presented to the
    /// upstream (Istio's client-side `source_principal`), while fewer than
    /// [`MAX_PRINCIPALS`] have been seen; without it after that.
    pub(crate) fn local_principal(&self, principal: &str) -> Arc<Workload> {
        self.cached(
            None,
            |c| c.local_principals.get(principal).cloned(),
            |c| {
                if c.local_principals.len() >= MAX_PRINCIPALS {
                    return self.local.clone();
                }
                let w = Arc::new(self.local.with_principal(principal, false));
                c.local_principals.insert(principal.into(), w.clone());
                w
            },
        )
    }

    /// The upstream `peer` with `principal`, the URI SAN its certificate carried (Istio's
    /// client-side `destination_principal`, and the namespace in it), while fewer than
    /// [`MAX_PRINCIPALS`] such pairs have been seen; `peer` as it is after that. Dropped with
    /// the endpoints when a request brings a new snapshot.
    pub(crate) fn peer_principal(&self, peer: &Arc<Workload>, principal: &str) -> Arc<Workload> {
        let key = Arc::as_ptr(peer) as usize;
        self.cached(
            None,
            |c| c.peer_principals.get(&key)?.1.get(principal).cloned(),
            |c| {
                if c.peer_principal_count >= MAX_PRINCIPALS {
                    return peer.clone();
                }
                c.peer_principal_count += 1;
                let w = Arc::new(peer.with_principal(principal, true));
                let (_, by_principal) = c
                    .peer_principals
                    .entry(key)
                    .or_insert_with(|| (peer.clone(), HashMap::new()));
                by_principal.insert(principal.into(), w.clone());
                w
            },
        )
    }

    /// The handles of a series, registered with the current recorder the first time. `local`
    /// is this workload's labels ([`Shared::local`], or with a principal).
    pub(crate) fn series(
        &self,
        dest: &Arc<Dest>,
        peer: &Arc<Workload>,
        local: &Arc<Workload>,
        outcome: Outcome,
    ) -> Arc<Series> {
        let key = SeriesKey::new(dest, peer, local, outcome);
        self.cached(
            None,
            |c| c.series.get(&key).cloned(),
            |c| {
                if c.series.len() >= MAX_SERIES {
                    c.series.clear();
                }
                let labels = labels::labels(self.reporter, local, peer, dest, &outcome);
                let series = metrics::with_recorder(|r| {
                    let key = |name: &'static str| Key::from_parts(name, labels.clone());
                    Series {
                        requests: r.register_counter(&key(REQUESTS_TOTAL), &METADATA),
                        duration: r.register_histogram(&key(REQUEST_DURATION), &METADATA),
                        request_bytes: r.register_histogram(&key(REQUEST_BYTES), &METADATA),
                        response_bytes: r.register_histogram(&key(RESPONSE_BYTES), &METADATA),
                        _values: (dest.clone(), peer.clone(), local.clone()),
                    }
                });
                let series = Arc::new(series);
                c.series.insert(key, series.clone());
                series
            },
        )
    }
}

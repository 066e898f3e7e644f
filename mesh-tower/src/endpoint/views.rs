//! What [`Upstream::pick`](super::Upstream) needs of a cluster that changes only with the
//! config: the endpoints of the subset and their addresses, made once per cluster and config
//! version instead of once per request (formatting every endpoint's `host:port` on each
//! request made a pick cost O(endpoints)).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use http::uri::Authority;
use mesh_core::model::{Endpoint, EndpointAddress, Service, ServicePort, Subset};

use super::{ClusterKey, endpoint_authority};

/// Views kept before the map is cleared (clusters come from the config; a reload retires
/// them).
const MAX_CLUSTERS: usize = 4096;

/// One cluster's endpoints, for one config version.
#[derive(Debug)]
pub(crate) struct ClusterView {
    version: u64,
    /// Indices in the service's `endpoints` of the cluster's (the subset's) endpoints.
    pub indices: Vec<usize>,
    /// `host:port` of each, as balancers, outlier detection and logs name endpoints.
    pub authorities: Vec<String>,
    /// The same as the upstream request's URI authority (`None` for an endpoint that has no
    /// TCP address, a Unix socket).
    pub uri_authorities: Vec<Option<Authority>>,
    /// Every endpoint eligible: the pick set when no outlier detection or earlier attempt
    /// narrows it.
    pub all_eligible: Vec<bool>,
}

impl ClusterView {
    pub(crate) fn new(service: &Service, subset: Option<&Subset>, port: &ServicePort) -> Self {
        let indices: Vec<usize> = service
            .endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| subset.is_none_or(|s| s.selector.matches(&e.labels)))
            .map(|(i, _)| i)
            .collect();
        let authorities: Vec<String> = indices
            .iter()
            .map(|&i| endpoint_authority(&service.endpoints[i], port))
            .collect();
        let uri_authorities = indices
            .iter()
            .zip(&authorities)
            .map(|(&i, a)| match service.endpoints[i].address {
                EndpointAddress::Unix(_) => None,
                _ => a.parse().ok(),
            })
            .collect();
        ClusterView {
            version: 0,
            all_eligible: vec![true; indices.len()],
            indices,
            authorities,
            uri_authorities,
        }
    }

    /// The endpoints themselves, in the service of the snapshot the view was made from.
    pub(crate) fn endpoints<'s>(&self, service: &'s Service) -> Vec<&'s Endpoint> {
        self.indices
            .iter()
            .map(|&i| &service.endpoints[i])
            .collect()
    }
}

/// Every cluster's view, remade when the config version changes.
#[derive(Debug, Default)]
pub(crate) struct ClusterViews {
    views: Mutex<HashMap<ClusterKey, Arc<ClusterView>>>,
}

impl ClusterViews {
    /// `cluster`'s view for config `version`, made by `make` when there is none yet. A request
    /// on an older snapshot gets a view of its own version, not kept.
    pub(crate) fn view(
        &self,
        cluster: &ClusterKey,
        version: u64,
        make: impl FnOnce() -> ClusterView,
    ) -> Arc<ClusterView> {
        let mut map = self.views.lock().unwrap_or_else(|e| e.into_inner());
        let kept = map.get(cluster);
        if let Some(v) = kept
            && v.version == version
        {
            return v.clone();
        }
        let newer = kept.is_none_or(|v| v.version < version);
        let view = Arc::new(ClusterView { version, ..make() });
        if newer {
            if map.len() >= MAX_CLUSTERS && !map.contains_key(cluster) {
                map.clear();
            }
            map.insert(cluster.clone(), view.clone());
        }
        view
    }
}

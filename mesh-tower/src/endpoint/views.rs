//! What [`Upstream::pick`](super::Upstream) needs of a cluster that changes only with the
//! config: the endpoints of the subset and their addresses, made once per cluster and config
//! version instead of once per request (formatting every endpoint's `host:port` on each
//! request made a pick cost O(endpoints)).

use http::uri::Authority;
use mesh_core::model::{Endpoint, EndpointAddress, Service, ServicePort, Subset};

use super::endpoint_authority;

/// One cluster's endpoints, for one config version (kept per cluster in a
/// [`PerCluster`](super::per_cluster::PerCluster)).
#[derive(Debug)]
pub(crate) struct ClusterView {
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

//! The compiled mesh: what every layer reads, built once per config version by `mesh-config`.
//!
//! Everything here is resolved: hosts are qualified, durations and percentages typed, regexes
//! compiled, subsets resolved to label selectors, policies merged. Nothing in the request path
//! parses or allocates config. A `CompiledMesh` is immutable; a reload builds a new one.

mod index;
mod policy;
mod registry;
mod route;
mod security;

pub use index::HostIndex;
pub use policy::*;
pub use registry::*;
pub use route::*;
pub use security::*;

use crate::{host::Host, labels::Labels};

pub use crate::matching::MESH_GATEWAY;

/// An immutable, validated snapshot of the mesh config.
#[derive(Debug, Clone, Default)]
pub struct CompiledMesh {
    /// Increases with every successful load; shown in `/config_dump`.
    pub version: u64,
    /// Istio's root namespace (`istio-system`): policies there apply mesh-wide.
    pub root_namespace: String,
    pub services: Vec<Service>,
    /// Routing, per VirtualService host, for sidecars (`mesh`) and for each gateway.
    pub virtual_hosts: Vec<VirtualHost>,
    pub destination_policies: Vec<DestinationPolicy>,
    pub gateways: Vec<GatewayServer>,
    pub sidecars: Vec<SidecarScope>,
    pub peer_authentications: Vec<PeerAuthenticationPolicy>,
    pub authorization_policies: Vec<AuthorizationPolicy>,
    pub request_authentications: Vec<RequestAuthenticationPolicy>,
    pub rate_limits: Vec<LocalRateLimit>,
    /// Hash indexes over the hosts above, for the per-request lookups; made by
    /// [`build_index`](Self::build_index) (`mesh-config` does, once per load). Left empty the
    /// lookups scan, as they do when the three lists no longer have the lengths the index was
    /// built from; after editing `services`, `virtual_hosts` or `destination_policies` of an
    /// indexed mesh in place, build it again.
    pub index: HostIndex,
}

impl CompiledMesh {
    /// The service registered for `host` (exact name), if any.
    pub fn service(&self, host: &str) -> Option<&Service> {
        if self.index.usable(self) {
            let exact = self.index.services.get(&*index::lowercase(host));
            return match exact {
                Some(&i) => Some(&self.services[i]),
                None => self
                    .index
                    .wildcard_services
                    .iter()
                    .map(|&i| &self.services[i])
                    .filter(|s| s.hostname.matches(host))
                    .max_by_key(|s| s.hostname.specificity()),
            };
        }
        self.services
            .iter()
            .find(|s| s.hostname.matches(host) && !s.hostname.is_wildcard())
            .or_else(|| {
                self.services
                    .iter()
                    .filter(|s| s.hostname.matches(host))
                    .max_by_key(|s| s.hostname.specificity())
            })
    }

    /// The routing for a request to `host` (no port) arriving through `gateway` (`mesh` for
    /// sidecars and in-process clients, `namespace/name` for a Gateway): the VirtualService whose
    /// host matches most specifically; an exact name beats a wildcard, a longer wildcard a
    /// shorter one, and among equals the one loaded first wins (Istio's oldest-first rule).
    pub fn virtual_host(&self, gateway: &str, host: &str) -> Option<&VirtualHost> {
        self.virtual_host_index(gateway, host)
            .map(|i| &self.virtual_hosts[i])
    }

    /// The index in `virtual_hosts` of what [`CompiledMesh::virtual_host`] returns.
    pub fn virtual_host_index(&self, gateway: &str, host: &str) -> Option<usize> {
        if self.index.usable(self) {
            // An exact name beats every wildcard; among exact names the first wins.
            let exact = self
                .index
                .virtual_hosts
                .get(gateway)
                .and_then(|hosts| hosts.get(&*index::lowercase(host)));
            if let Some(&i) = exact {
                return Some(i);
            }
            let mut best: Option<(usize, (bool, usize))> = None;
            for (g, i, j) in &self.index.wildcard_virtual_hosts {
                let h = &self.virtual_hosts[*i].hosts[*j];
                if &**g == gateway && h.matches(host) {
                    let spec = h.specificity();
                    if best.is_none_or(|(_, s)| spec > s) {
                        best = Some((*i, spec));
                    }
                }
            }
            return best.map(|(i, _)| i);
        }
        let mut best: Option<(usize, (bool, usize))> = None;
        for (i, vh) in self
            .virtual_hosts
            .iter()
            .enumerate()
            .filter(|(_, vh)| vh.gateway == gateway)
        {
            for h in &vh.hosts {
                if h.matches(host) {
                    let spec = h.specificity();
                    if best.is_none_or(|(_, s)| spec > s) {
                        best = Some((i, spec));
                    }
                }
            }
        }
        best.map(|(i, _)| i)
    }

    /// The DestinationRule that applies to `host` for a client in `client_namespace`: Istio
    /// looks in the client's namespace first, then the service's, then the root namespace;
    /// within one, an exact host beats a wildcard.
    pub fn destination_policy(
        &self,
        host: &str,
        client_namespace: &str,
    ) -> Option<&DestinationPolicy> {
        let service_ns = self.service(host).map(|s| s.namespace.as_str());
        if self.index.usable(self) {
            return self.indexed_destination_policy(host, client_namespace, service_ns);
        }
        let candidates = |ns: &str| {
            self.destination_policies
                .iter()
                .filter(move |p| p.namespace == ns && p.host.matches(host))
                .max_by_key(|p| p.host.specificity())
        };
        candidates(client_namespace)
            .or_else(|| service_ns.and_then(candidates))
            .or_else(|| candidates(&self.root_namespace))
            .or_else(|| {
                self.destination_policies
                    .iter()
                    .filter(|p| p.host.matches(host))
                    .max_by_key(|p| p.host.specificity())
            })
    }

    /// [`destination_policy`](Self::destination_policy) through the index.
    fn indexed_destination_policy(
        &self,
        host: &str,
        client_namespace: &str,
        service_ns: Option<&str>,
    ) -> Option<&DestinationPolicy> {
        let host_lc = index::lowercase(host);
        // An exact host beats a wildcard; among equals the last one wins (`max_by_key`).
        let wildcard = |ns: Option<&str>| {
            self.index
                .wildcard_policies
                .iter()
                .map(|&i| &self.destination_policies[i])
                .filter(|p| ns.is_none_or(|ns| p.namespace == ns) && p.host.matches(host))
                .max_by_key(|p| p.host.specificity())
        };
        let in_namespace = |ns: &str| {
            let exact = self
                .index
                .policies
                .get(ns)
                .and_then(|hosts| hosts.get(&*host_lc));
            match exact {
                Some(&i) => Some(&self.destination_policies[i]),
                None => wildcard(Some(ns)),
            }
        };
        in_namespace(client_namespace)
            .or_else(|| service_ns.and_then(in_namespace))
            .or_else(|| in_namespace(&self.root_namespace))
            .or_else(|| match self.index.policies_any_namespace.get(&*host_lc) {
                Some(&i) => Some(&self.destination_policies[i]),
                None => wildcard(None),
            })
    }

    /// Builds [`index`](Self::index) from the services, virtual hosts and DestinationRule
    /// policies as they are now.
    pub fn build_index(&mut self) {
        self.index = HostIndex::new(self);
    }

    /// The endpoints of `host` on `port` that a subset's labels select (all endpoints when
    /// `subset` is `None`).
    pub fn endpoints<'a>(
        &'a self,
        host: &str,
        subset: Option<&'a Subset>,
    ) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.service(host)
            .into_iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(move |e| subset.is_none_or(|s| s.selector.matches(&e.labels)))
    }

    /// The Sidecar resource that scopes a workload: one with a matching `workloadSelector` in
    /// its namespace, else the namespace's selector-less one, else the root namespace's.
    pub fn sidecar_for(&self, namespace: &str, labels: &Labels) -> Option<&SidecarScope> {
        let in_ns = |ns: &str, selected: bool| {
            self.sidecars.iter().find(|s| {
                s.namespace == ns
                    && match &s.selector {
                        Some(sel) => selected && sel.matches(labels),
                        None => !selected,
                    }
            })
        };
        in_ns(namespace, true)
            .or_else(|| in_ns(namespace, false))
            .or_else(|| in_ns(&self.root_namespace, false))
    }

    /// Whether `host` is known to the registry or named by some VirtualService.
    pub fn knows_host(&self, host: &Host) -> bool {
        self.services.iter().any(|s| s.hostname.overlaps(host))
    }
}

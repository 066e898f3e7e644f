//! Hash indexes over a [`CompiledMesh`](super::CompiledMesh)'s hosts, so that the lookups every
//! request makes (its service, its VirtualService, its DestinationRule) cost a hash, not a scan
//! of every service, VirtualService and DestinationRule of the mesh.
//!
//! Exact hostnames are hashed; wildcard hosts (`*.example.com`) stay in short lists scanned in
//! config order, since any of them may cover a name. The answers are the scans' answers, tie
//! rules included (see [`CompiledMesh::service`](super::CompiledMesh::service) and its
//! neighbours); the tests compare both on generated meshes.

use std::collections::HashMap;

use super::CompiledMesh;

/// The indexes of one compiled mesh, made by [`CompiledMesh::build_index`](super::CompiledMesh::build_index).
#[derive(Debug, Clone, Default)]
pub struct HostIndex {
    /// Whether it was built (a mesh assembled by hand and never indexed scans).
    built: bool,
    /// How many services, virtual hosts and policies it was built from: a mesh changed since
    /// (a clone edited by hand) scans rather than trust a stale index.
    lens: (usize, usize, usize),
    /// Exact service hostname → the first service with it.
    pub(crate) services: HashMap<Box<str>, usize>,
    /// Services with a wildcard hostname, in config order.
    pub(crate) wildcard_services: Vec<usize>,
    /// Gateway → exact host → the first virtual host that lists it.
    pub(crate) virtual_hosts: HashMap<Box<str>, HashMap<Box<str>, usize>>,
    /// `(gateway, virtual host, host)` for wildcard hosts, in config order.
    pub(crate) wildcard_virtual_hosts: Vec<(Box<str>, usize, usize)>,
    /// Namespace → exact host → the last DestinationRule policy for it.
    pub(crate) policies: HashMap<Box<str>, HashMap<Box<str>, usize>>,
    /// Exact host → the last policy for it in any namespace.
    pub(crate) policies_any_namespace: HashMap<Box<str>, usize>,
    /// DestinationRule policies with a wildcard host, in config order.
    pub(crate) wildcard_policies: Vec<usize>,
}

impl HostIndex {
    pub(crate) fn new(mesh: &CompiledMesh) -> Self {
        let mut index = HostIndex {
            built: true,
            lens: lens(mesh),
            ..HostIndex::default()
        };
        for (i, s) in mesh.services.iter().enumerate() {
            if s.hostname.is_wildcard() {
                index.wildcard_services.push(i);
            } else {
                index
                    .services
                    .entry(s.hostname.as_str().into())
                    .or_insert(i);
            }
        }
        for (i, vh) in mesh.virtual_hosts.iter().enumerate() {
            for (j, h) in vh.hosts.iter().enumerate() {
                if h.is_wildcard() {
                    index
                        .wildcard_virtual_hosts
                        .push((vh.gateway.as_str().into(), i, j));
                } else {
                    index
                        .virtual_hosts
                        .entry(vh.gateway.as_str().into())
                        .or_default()
                        .entry(h.as_str().into())
                        .or_insert(i);
                }
            }
        }
        for (i, p) in mesh.destination_policies.iter().enumerate() {
            if p.host.is_wildcard() {
                index.wildcard_policies.push(i);
            } else {
                // The last one wins, as `max_by_key` keeps the last of equals.
                index
                    .policies
                    .entry(p.namespace.as_str().into())
                    .or_default()
                    .insert(p.host.as_str().into(), i);
                index
                    .policies_any_namespace
                    .insert(p.host.as_str().into(), i);
            }
        }
        index
    }
}

impl HostIndex {
    /// Whether lookups in `mesh` may use this index.
    pub(crate) fn usable(&self, mesh: &CompiledMesh) -> bool {
        self.built && self.lens == lens(mesh)
    }
}

fn lens(mesh: &CompiledMesh) -> (usize, usize, usize) {
    (
        mesh.services.len(),
        mesh.virtual_hosts.len(),
        mesh.destination_policies.len(),
    )
}

/// `name` lowercased, borrowed when it already is (hosts are stored lowercase).
pub(crate) fn lowercase(name: &str) -> std::borrow::Cow<'_, str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        name.to_ascii_lowercase().into()
    } else {
        name.into()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::{
        CompiledMesh, DestinationPolicy, Location, Resolution, Service, TrafficPolicy, VirtualHost,
    };
    use crate::host::Host;

    /// Hosts from a small alphabet, so that exact names, wildcards and case collide often.
    const HOSTS: [&str; 8] = [
        "a.example.com",
        "b.example.com",
        "*.example.com",
        "*",
        "x.a.example.com",
        "*.a.example.com",
        "reviews.default.svc.cluster.local",
        "*.svc.cluster.local",
    ];
    const NAMESPACES: [&str; 3] = ["default", "prod", "istio-system"];
    const GATEWAYS: [&str; 2] = ["mesh", "ns/gw"];
    const QUERIES: [&str; 6] = [
        "a.example.com",
        "A.Example.com",
        "x.a.example.com",
        "c.example.com",
        "reviews.default.svc.cluster.local",
        "other.org",
    ];

    fn service(h: usize, ns: usize) -> Service {
        Service {
            hostname: Host::new(HOSTS[h]),
            namespace: NAMESPACES[ns].into(),
            ports: Vec::new(),
            resolution: Resolution::Static,
            location: Location::MeshInternal,
            addresses: Vec::new(),
            endpoints: Vec::new(),
            export_to: Vec::new(),
            source: format!("service {h}/{ns}"),
        }
    }

    fn virtual_host(g: usize, hosts: &[usize]) -> VirtualHost {
        VirtualHost {
            gateway: GATEWAYS[g].into(),
            hosts: hosts.iter().map(|&h| Host::new(HOSTS[h])).collect(),
            virtual_service: String::new(),
            namespace: "default".into(),
            http: Vec::new(),
            tcp: Vec::new(),
            tls: Vec::new(),
        }
    }

    fn policy(h: usize, ns: usize) -> DestinationPolicy {
        DestinationPolicy {
            host: Host::new(HOSTS[h]),
            namespace: NAMESPACES[ns].into(),
            destination_rule: String::new(),
            traffic_policy: TrafficPolicy::default(),
            port_policies: Vec::new(),
            subsets: Vec::new(),
            export_to: Vec::new(),
        }
    }

    /// Which of `list` `found` is, by address (the scan and the index must agree on the
    /// element, not just on an equal one).
    fn position<T>(list: &[T], found: Option<&T>) -> Option<usize> {
        found.map(|f| list.iter().position(|x| std::ptr::eq(x, f)).unwrap())
    }

    proptest! {
        #[test]
        fn the_index_answers_as_the_scans(
            services in prop::collection::vec((0..HOSTS.len(), 0..NAMESPACES.len()), 0..8),
            vhosts in prop::collection::vec(
                (0..GATEWAYS.len(), prop::collection::vec(0..HOSTS.len(), 1..3)),
                0..8,
            ),
            policies in prop::collection::vec((0..HOSTS.len(), 0..NAMESPACES.len()), 0..8),
        ) {
            let scanned = CompiledMesh {
                root_namespace: "istio-system".into(),
                services: services.iter().map(|&(h, ns)| service(h, ns)).collect(),
                virtual_hosts: vhosts.iter().map(|(g, hs)| virtual_host(*g, hs)).collect(),
                destination_policies: policies.iter().map(|&(h, ns)| policy(h, ns)).collect(),
                ..CompiledMesh::default()
            };
            let mut indexed = scanned.clone();
            indexed.build_index();
            for q in QUERIES {
                prop_assert_eq!(
                    position(&scanned.services, scanned.service(q)),
                    position(&indexed.services, indexed.service(q)),
                    "service({})", q
                );
                for g in GATEWAYS {
                    prop_assert_eq!(
                        scanned.virtual_host_index(g, q),
                        indexed.virtual_host_index(g, q),
                        "virtual_host_index({}, {})", g, q
                    );
                }
                for ns in NAMESPACES {
                    prop_assert_eq!(
                        position(
                            &scanned.destination_policies,
                            scanned.destination_policy(q, ns)
                        ),
                        position(
                            &indexed.destination_policies,
                            indexed.destination_policy(q, ns)
                        ),
                        "destination_policy({}, {})", q, ns
                    );
                }
            }
        }
    }
}

//! The service registry: ServiceEntries (inline endpoints or a workloadSelector over
//! WorkloadEntries), and Kubernetes Services whose selector matches WorkloadEntries.

use std::net::IpAddr;

use mesh_core::{
    Host, Identity, Selector,
    identity::DEFAULT_TRUST_DOMAIN,
    model::{Endpoint, EndpointAddress, Location, Protocol, Resolution, Service, ServicePort},
};

use super::Sink;
use crate::{
    kinds::{
        kube,
        service_entry::{self as se, ServiceEntry, WorkloadEntry},
    },
    load::{Config, Object},
};

pub(crate) fn services(config: &Config, sink: &mut Sink<'_>) -> Vec<Service> {
    let mut out: Vec<Service> = Vec::new();
    for obj in &config.services {
        out.push(kube_service(obj, config));
    }
    for obj in &config.service_entries {
        for host in &obj.spec.hosts {
            let hostname = Host::qualify(host, &obj.namespace);
            let svc = service_entry(obj, hostname, config, sink);
            // A ServiceEntry for a host a Service already provides adds to it (Istio merges
            // them by hostname); otherwise it is a service of its own.
            match out
                .iter_mut()
                .find(|s| s.hostname == svc.hostname && s.namespace == svc.namespace)
            {
                Some(existing) => {
                    existing.endpoints.extend(svc.endpoints);
                    for p in svc.ports {
                        if existing.port(p.number).is_none() {
                            existing.ports.push(p);
                        }
                    }
                }
                None => out.push(svc),
            }
        }
    }
    out
}

fn kube_service(obj: &Object<kube::Service>, config: &Config) -> Service {
    let spec = &obj.spec;
    let ports: Vec<ServicePort> = spec
        .ports
        .iter()
        .map(|p| {
            let name = p.name.clone().unwrap_or_default();
            let protocol = p
                .app_protocol
                .as_deref()
                .or(p.protocol.as_deref())
                .map(Protocol::parse)
                .filter(|p| *p != Protocol::Unknown)
                .unwrap_or_else(|| Protocol::from_port_name(&name));
            ServicePort {
                number: u16::try_from(p.port).unwrap_or(0),
                name,
                protocol,
                target_port: u16::try_from(p.target_port_number())
                    .ok()
                    .filter(|t| *t != 0 && i64::from(*t) != p.port),
            }
        })
        .collect();
    // Endpoints: WorkloadEntries in the namespace that the Service's selector picks.
    let selector = Selector::new(spec.selector.clone());
    let endpoints = if spec.selector.is_empty() {
        Vec::new()
    } else {
        config
            .workload_entries
            .iter()
            .filter(|we| we.namespace == obj.namespace && selector.matches(&we.spec.labels))
            .filter_map(|we| {
                endpoint(
                    &we.spec,
                    &we.namespace,
                    format!("WorkloadEntry {}", we.key()),
                )
            })
            .collect()
    };
    Service {
        hostname: Host::qualify(&obj.name, &obj.namespace),
        namespace: obj.namespace.clone(),
        ports,
        resolution: Resolution::Static,
        location: Location::MeshInternal,
        addresses: Vec::new(),
        endpoints,
        export_to: Vec::new(),
        source: format!("Service {}", obj.key()),
    }
}

fn service_entry(
    obj: &Object<ServiceEntry>,
    hostname: Host,
    config: &Config,
    sink: &mut Sink<'_>,
) -> Service {
    let spec = &obj.spec;
    let ports = spec
        .ports
        .iter()
        .map(|p| ServicePort {
            number: u16::try_from(p.number).unwrap_or(0),
            name: p.name.clone(),
            protocol: if p.protocol.is_empty() {
                Protocol::from_port_name(&p.name)
            } else {
                Protocol::parse(&p.protocol)
            },
            target_port: p.target_port.and_then(|t| u16::try_from(t).ok()),
        })
        .collect();
    let source = format!("ServiceEntry {}", obj.key());
    let mut endpoints: Vec<Endpoint> = spec
        .endpoints
        .iter()
        .enumerate()
        .filter_map(|(i, ep)| {
            let e = endpoint(ep, &obj.namespace, format!("{source} endpoints[{i}]"));
            if e.is_none() {
                sink.error(
                    obj,
                    &format!("spec.endpoints[{i}].address"),
                    format!("cannot use endpoint address {:?}", ep.address),
                );
            }
            e
        })
        .collect();
    if let Some(sel) = &spec.workload_selector {
        let selector = Selector::new(sel.labels.clone());
        endpoints.extend(
            config
                .workload_entries
                .iter()
                .filter(|we| we.namespace == obj.namespace && selector.matches(&we.spec.labels))
                .filter_map(|we| {
                    endpoint(
                        &we.spec,
                        &we.namespace,
                        format!("WorkloadEntry {}", we.key()),
                    )
                }),
        );
    }
    // DNS resolution without endpoints resolves the host itself.
    let resolution = match spec.resolution {
        se::Resolution::None => Resolution::None,
        se::Resolution::Static => Resolution::Static,
        se::Resolution::Dns | se::Resolution::DynamicDns => Resolution::Dns,
        se::Resolution::DnsRoundRobin => Resolution::DnsRoundRobin,
    };
    if matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin)
        && endpoints.is_empty()
        && !hostname.is_wildcard()
    {
        endpoints.push(Endpoint {
            address: EndpointAddress::Dns(hostname.as_str().to_owned()),
            ports: Default::default(),
            labels: Default::default(),
            service_account: None,
            identity: None,
            weight: 1,
            locality: None,
            network: None,
            source: source.clone(),
        });
    }
    Service {
        hostname,
        namespace: obj.namespace.clone(),
        ports,
        resolution,
        location: match spec.location {
            se::Location::MeshInternal => Location::MeshInternal,
            se::Location::MeshExternal => Location::MeshExternal,
        },
        addresses: spec.addresses.clone(),
        endpoints,
        export_to: spec.export_to.clone(),
        source,
    }
}

/// One endpoint from a WorkloadEntry (or an inline ServiceEntry endpoint).
fn endpoint(we: &WorkloadEntry, namespace: &str, source: String) -> Option<Endpoint> {
    let address = if let Some(path) = we.address.strip_prefix("unix://") {
        EndpointAddress::Unix(path.to_owned())
    } else if let Ok(ip) = we.address.parse::<IpAddr>() {
        EndpointAddress::Ip(ip)
    } else if we.address.is_empty() {
        return None;
    } else {
        EndpointAddress::Dns(we.address.clone())
    };
    let service_account = (!we.service_account.is_empty()).then(|| we.service_account.clone());
    Some(Endpoint {
        address,
        ports: we
            .ports
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), u16::try_from(*v).ok()?)))
            .collect(),
        labels: we.labels.clone(),
        identity: service_account
            .as_deref()
            .map(|sa| Identity::new(DEFAULT_TRUST_DOMAIN, namespace, sa)),
        service_account,
        weight: we.weight.filter(|w| *w > 0).unwrap_or(1),
        locality: (!we.locality.is_empty()).then(|| we.locality.clone()),
        network: (!we.network.is_empty()).then(|| we.network.clone()),
        source,
    })
}

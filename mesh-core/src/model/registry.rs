//! The service registry: services, their ports and their endpoints.

use std::{collections::BTreeMap, net::IpAddr};

use crate::{host::Host, identity::Identity, labels::Labels};

/// A service a client can address by name: a Kubernetes Service (with WorkloadEntries behind
/// it) or a ServiceEntry host.
#[derive(Debug, Clone)]
pub struct Service {
    pub hostname: Host,
    pub namespace: String,
    pub ports: Vec<ServicePort>,
    pub resolution: Resolution,
    pub location: Location,
    /// Virtual IPs or CIDRs (ServiceEntry `addresses`).
    pub addresses: Vec<String>,
    pub endpoints: Vec<Endpoint>,
    /// Namespaces the service is visible to (`exportTo`; empty means all, `.` is resolved).
    pub export_to: Vec<String>,
    /// Where the service came from (`ServiceEntry default/foo`, `Service default/reviews`).
    pub source: String,
}

impl Service {
    pub fn port(&self, number: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.number == number)
    }

    /// The one port, when the service has exactly one (Istio's rule for destinations that
    /// name no port).
    pub fn single_port(&self) -> Option<&ServicePort> {
        match self.ports.as_slice() {
            [p] => Some(p),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub number: u16,
    pub name: String,
    pub protocol: Protocol,
    /// The port on the endpoints, when it differs (`targetPort`).
    pub target_port: Option<u16>,
}

/// Istio's port protocols (from `protocol`, or the port name's prefix: `http-web`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Http2,
    Https,
    Grpc,
    GrpcWeb,
    Tcp,
    Tls,
    Mongo,
    Redis,
    Mysql,
    Unknown,
}

impl Protocol {
    /// Parses Istio's protocol names, case-insensitively.
    pub fn parse(name: &str) -> Protocol {
        match name.to_ascii_uppercase().as_str() {
            "HTTP" => Protocol::Http,
            "HTTP2" => Protocol::Http2,
            "HTTPS" => Protocol::Https,
            "GRPC" => Protocol::Grpc,
            "GRPC-WEB" => Protocol::GrpcWeb,
            "TCP" => Protocol::Tcp,
            "TLS" => Protocol::Tls,
            "MONGO" => Protocol::Mongo,
            "REDIS" => Protocol::Redis,
            "MYSQL" => Protocol::Mysql,
            _ => Protocol::Unknown,
        }
    }

    /// The protocol of a Kubernetes port named `http-web` or `grpc` (Istio's naming
    /// convention), when `appProtocol` is not set.
    pub fn from_port_name(name: &str) -> Protocol {
        let prefix = name.split('-').next().unwrap_or(name);
        Protocol::parse(prefix)
    }

    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::Https => "HTTPS",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-WEB",
            Protocol::Tcp => "TCP",
            Protocol::Tls => "TLS",
            Protocol::Mongo => "MONGO",
            Protocol::Redis => "REDIS",
            Protocol::Mysql => "MYSQL",
            Protocol::Unknown => "UNKNOWN",
        }
    }
}

/// How endpoints are found (ServiceEntry `resolution`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Use the destination address the client asked for.
    None,
    /// The listed endpoints' IP addresses.
    Static,
    /// Resolve the endpoints' (or the host's) names by DNS, using all addresses.
    Dns,
    /// Resolve by DNS and use the first address only.
    DnsRoundRobin,
}

/// Whether a service is part of the mesh (`MESH_INTERNAL`: mTLS applies) or outside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    MeshInternal,
    MeshExternal,
}

/// Where an endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointAddress {
    Ip(IpAddr),
    /// A DNS name, resolved when connecting.
    Dns(String),
    /// A Unix domain socket path (`unix:///var/run/app.sock`).
    Unix(String),
}

impl std::fmt::Display for EndpointAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointAddress::Ip(ip) => write!(f, "{ip}"),
            EndpointAddress::Dns(name) => f.write_str(name),
            EndpointAddress::Unix(path) => write!(f, "unix://{path}"),
        }
    }
}

/// One instance of a service.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub address: EndpointAddress,
    /// Port overrides by service port name (ServiceEntry endpoint `ports`).
    pub ports: BTreeMap<String, u16>,
    pub labels: Labels,
    pub service_account: Option<String>,
    /// The SPIFFE identity secure naming expects the endpoint to present.
    pub identity: Option<Identity>,
    /// Load-balancing weight relative to the other endpoints (default 1).
    pub weight: u32,
    pub locality: Option<String>,
    pub network: Option<String>,
    /// Where the endpoint came from (`WorkloadEntry default/ratings-v1`).
    pub source: String,
}

impl Endpoint {
    /// The port to connect to for `port` of `service`: the endpoint's override for the port's
    /// name, else the service port's `targetPort`, else the port itself.
    pub fn port_for(&self, port: &ServicePort) -> u16 {
        self.ports
            .get(&port.name)
            .copied()
            .or(port.target_port)
            .unwrap_or(port.number)
    }

    /// Whether the endpoint runs a mesh proxy (Istio's `security.istio.io/tlsMode: istio`
    /// label), which makes auto mTLS use ISTIO_MUTUAL towards it.
    pub fn is_mesh_workload(&self) -> bool {
        self.labels
            .get("security.istio.io/tlsMode")
            .map(String::as_str)
            == Some("istio")
    }
}

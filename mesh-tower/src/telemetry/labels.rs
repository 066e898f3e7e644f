//! The labels of Istio's standard metrics, filled as Istio's stats filter fills them.
//!
//! The names and their meaning are istio.io's
//! [Istio Standard Metrics](https://istio.io/latest/docs/reference/config/metrics/); how each
//! is filled follows Istio's stats filter: the reporter's own workload on its side, the peer's
//! metadata on the other, `unknown` where nothing is known (`latest` for a canonical
//! revision), and `connection_security_policy` known only to the destination reporter.

use std::sync::Arc;

use mesh_core::{
    Labels,
    host::Host,
    model::{Endpoint, Service},
};
use metrics::{Label, SharedString};

use super::{Reporter, ResponseFlags};

pub(crate) const UNKNOWN: &str = "unknown";

/// The labels of the HTTP metrics, in the order Istio's stats filter adds them (after
/// `reporter`, the source and destination halves, then the request's own).
pub const HTTP_LABELS: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// Istio's label keys on workloads, read as Istio reads them.
const WORKLOAD_NAME: &str = "service.istio.io/workload-name";
const CANONICAL_NAME: [&str; 3] = [
    "service.istio.io/canonical-name",
    "app.kubernetes.io/name",
    "app",
];
const CANONICAL_REVISION: [&str; 3] = [
    "service.istio.io/canonical-revision",
    "app.kubernetes.io/version",
    "version",
];
const CLUSTER: &str = "topology.istio.io/cluster";

/// What is known of the workload at one end: Istio's peer metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Workload {
    pub name: SharedString,
    pub namespace: SharedString,
    pub principal: SharedString,
    pub app: SharedString,
    pub version: SharedString,
    pub canonical_service: SharedString,
    pub canonical_revision: SharedString,
    pub cluster: SharedString,
}

fn shared(s: &str) -> SharedString {
    SharedString::from_shared(Arc::from(s))
}

fn unknown() -> SharedString {
    SharedString::const_str(UNKNOWN)
}

impl Workload {
    /// A peer nothing is known of (no metadata exchange, no certificate).
    pub(crate) fn unknown() -> Self {
        Workload {
            name: unknown(),
            namespace: unknown(),
            principal: unknown(),
            app: unknown(),
            version: unknown(),
            canonical_service: unknown(),
            canonical_revision: SharedString::const_str("latest"),
            cluster: unknown(),
        }
    }

    /// A workload described by its labels (the stack's own workload, or a registry endpoint):
    /// the name from `service.istio.io/workload-name` (else `fallback_name`), `app`, `version`,
    /// the canonical service from `service.istio.io/canonical-name`, `app.kubernetes.io/name`
    /// or `app` (else the workload name), the canonical revision from
    /// `service.istio.io/canonical-revision`, `app.kubernetes.io/version` or `version` (else
    /// `latest`), the cluster from `topology.istio.io/cluster`: Istio's injector rules.
    pub(crate) fn from_labels(
        namespace: &str,
        labels: &Labels,
        fallback_name: Option<&str>,
    ) -> Self {
        let get = |k: &str| labels.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let first = |keys: &[&str]| keys.iter().find_map(|k| get(k));
        let name = get(WORKLOAD_NAME).or(fallback_name);
        let or_unknown = |v: Option<&str>| v.map_or_else(unknown, shared);
        Workload {
            name: or_unknown(name),
            namespace: or_unknown(Some(namespace).filter(|n| !n.is_empty())),
            principal: unknown(),
            app: or_unknown(get("app")),
            version: or_unknown(get("version")),
            canonical_service: or_unknown(first(&CANONICAL_NAME).or(name)),
            canonical_revision: first(&CANONICAL_REVISION)
                .map_or_else(|| SharedString::const_str("latest"), shared),
            cluster: or_unknown(get(CLUSTER)),
        }
    }

    /// The workload behind a registry endpoint, Istio's client-side fallback when the peer
    /// sent no metadata: a WorkloadEntry's name and namespace, or the service's namespace.
    pub(crate) fn from_endpoint(ep: &Endpoint, service: &Service) -> Self {
        let entry = ep
            .source
            .strip_prefix("WorkloadEntry ")
            .and_then(|key| key.split_once('/'));
        let namespace = entry.map_or(service.namespace.as_str(), |(ns, _)| ns);
        Self::from_labels(namespace, &ep.labels, entry.map(|(_, name)| name))
    }

    /// This workload, or the endpoint's, with the principal its certificate carries: Istio's
    /// client side reads both from the upstream TLS connection. The endpoint's namespace is
    /// then the SPIFFE ID's, which Istio prefers to the peer's metadata (`peer_namespace`).
    pub(crate) fn with_principal(&self, principal: &str, namespace_from_san: bool) -> Self {
        let namespace = namespace_from_san
            .then(|| spiffe_namespace(principal))
            .flatten()
            .map_or_else(|| self.namespace.clone(), shared);
        Workload {
            principal: shared(principal),
            namespace,
            ..self.clone()
        }
    }

    /// A peer known by its certificate only: the principal (as a `spiffe://` URI) and the
    /// namespace in it, as Istio's filter reads it from the SAN.
    pub(crate) fn from_principal(principal: &str) -> Self {
        let uri = if principal.starts_with("spiffe://") {
            principal.to_owned()
        } else {
            format!("spiffe://{principal}")
        };
        let namespace = spiffe_namespace(&uri);
        Workload {
            namespace: namespace.map_or_else(unknown, shared),
            principal: shared(&uri),
            ..Self::unknown()
        }
    }
}

/// The namespace of a SPIFFE ID (`spiffe://TD/ns/NS/sa/SA`), as Istio's `GetNamespace`.
fn spiffe_namespace(principal: &str) -> Option<&str> {
    principal
        .split_once("/ns/")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(rest))
        .filter(|ns| !ns.is_empty())
}

/// The destination service of a request: `destination_service`, `destination_service_name`,
/// and the namespace the destination reporter gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dest {
    pub service: SharedString,
    pub name: SharedString,
    pub namespace: SharedString,
}

impl Dest {
    /// A registry service, as Istio's cluster metadata names it: the hostname (a wildcard as
    /// written), and the Kubernetes Service's short name, or for a ServiceEntry the host.
    pub(crate) fn service(svc: &Service) -> Self {
        let name = if svc.source.starts_with("Service ") {
            short_name(&svc.hostname)
        } else {
            svc.hostname.as_str()
        };
        Dest {
            service: shared(svc.hostname.as_str()),
            name: shared(name),
            namespace: shared(&svc.namespace),
        }
    }

    /// A destination outside the registry, named by the request's authority (Istio's Host
    /// header fallback) and, for passthrough and blocked traffic, Istio's cluster names.
    pub(crate) fn authority(authority: &str, cluster: Option<&'static str>) -> Self {
        Dest {
            service: shared(authority),
            name: cluster.map_or_else(|| shared(authority), SharedString::const_str),
            namespace: unknown(),
        }
    }

    pub(crate) fn unknown() -> Self {
        Dest {
            service: unknown(),
            name: unknown(),
            namespace: unknown(),
        }
    }
}

fn short_name(host: &Host) -> &str {
    host.service_name_and_namespace()
        .map_or_else(|| host.as_str().split('.').next().unwrap_or(""), |(n, _)| n)
}

/// `request_protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Protocol {
    Http,
    Grpc,
    Tcp,
}

/// `connection_security_policy`: `mutual_tls` or `none` as the destination reporter saw the
/// connection; `unknown` on the source reporter, which cannot know the server's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Security {
    MutualTls,
    None,
    Unknown,
}

/// One request's (or connection's) label values besides the two workloads and the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Outcome {
    pub protocol: Protocol,
    /// The HTTP status; `0` when no response was sent (Envoy's value). `None` for TCP.
    pub code: Option<u16>,
    /// `grpc-status` of a gRPC response.
    pub grpc_status: Option<u16>,
    pub flags: ResponseFlags,
    pub security: Security,
}

/// The label set of one series: `local` is the reporter's workload, `peer` the other end.
pub(crate) fn labels(
    reporter: Reporter,
    local: &Workload,
    peer: &Workload,
    dest: &Dest,
    outcome: &Outcome,
) -> Vec<Label> {
    let (source, destination) = match reporter {
        Reporter::Source => (local, peer),
        Reporter::Destination => (peer, local),
    };
    // The source reporter learns the service's namespace from the peer; the destination
    // reporter is in it.
    let service_namespace = match reporter {
        Reporter::Source => &peer.namespace,
        Reporter::Destination => &local.namespace,
    };
    let s = SharedString::const_str;
    let owned = |v: String| SharedString::from_owned(v);
    let protocol = match outcome.protocol {
        Protocol::Http => "http",
        Protocol::Grpc => "grpc",
        Protocol::Tcp => "tcp",
    };
    let security = match outcome.security {
        Security::MutualTls => "mutual_tls",
        Security::None => "none",
        Security::Unknown => UNKNOWN,
    };
    // In the order of HTTP_LABELS.
    let values: [SharedString; 25] = [
        s(reporter.as_str()),
        source.name.clone(),
        source.canonical_service.clone(),
        source.canonical_revision.clone(),
        source.namespace.clone(),
        source.principal.clone(),
        source.app.clone(),
        source.version.clone(),
        source.cluster.clone(),
        destination.name.clone(),
        destination.namespace.clone(),
        destination.principal.clone(),
        destination.app.clone(),
        destination.version.clone(),
        dest.service.clone(),
        destination.canonical_service.clone(),
        destination.canonical_revision.clone(),
        dest.name.clone(),
        service_namespace.clone(),
        destination.cluster.clone(),
        s(protocol),
        owned(outcome.code.unwrap_or(0).to_string()),
        outcome.grpc_status.map_or(s(""), |g| owned(g.to_string())),
        owned(outcome.flags.to_string()),
        s(security),
    ];
    HTTP_LABELS
        .into_iter()
        .zip(values)
        // TCP series carry neither a response code nor a gRPC status.
        .filter(|(k, _)| {
            outcome.code.is_some() || !matches!(*k, "response_code" | "grpc_response_status")
        })
        .map(|(k, v)| Label::new(k, v))
        .collect()
}

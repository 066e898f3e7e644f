//! Destination policies (DestinationRule), gateway servers, sidecar scopes and rate limits.

use std::time::Duration;

use crate::{host::Host, labels::Selector, percent::Percent};

/// A DestinationRule, compiled: the top-level policy, port overrides, and subsets whose
/// policies are already merged with the top level.
#[derive(Debug, Clone)]
pub struct DestinationPolicy {
    pub host: Host,
    pub namespace: String,
    /// `namespace/name` of the DestinationRule.
    pub destination_rule: String,
    pub traffic_policy: TrafficPolicy,
    pub port_policies: Vec<(u16, TrafficPolicy)>,
    pub subsets: Vec<Subset>,
    pub export_to: Vec<String>,
}

impl DestinationPolicy {
    pub fn subset(&self, name: &str) -> Option<&Subset> {
        self.subsets.iter().find(|s| s.name == name)
    }

    /// The policy for traffic to `subset` on `port`: the most specific setting of each part
    /// (subset port-level, subset, port-level, top-level), as Istio merges them.
    pub fn policy_for(&self, subset: Option<&str>, port: Option<u16>) -> TrafficPolicy {
        let port_level = |list: &[(u16, TrafficPolicy)]| {
            port.and_then(|p| list.iter().find(|(n, _)| *n == p).map(|(_, tp)| tp.clone()))
        };
        let mut merged = self.traffic_policy.clone();
        if let Some(tp) = port_level(&self.port_policies) {
            merged = tp.over(&merged);
        }
        if let Some(s) = subset.and_then(|name| self.subset(name)) {
            merged = s.traffic_policy.over(&merged);
            if let Some(tp) = port_level(&s.port_policies) {
                merged = tp.over(&merged);
            }
        }
        merged
    }
}

/// A named subset of a service's endpoints.
#[derive(Debug, Clone)]
pub struct Subset {
    pub name: String,
    pub selector: Selector,
    /// Only the subset's own settings; see [`DestinationPolicy::policy_for`].
    pub traffic_policy: TrafficPolicy,
    pub port_policies: Vec<(u16, TrafficPolicy)>,
}

/// A traffic policy; each part is `None` when this level does not set it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrafficPolicy {
    pub load_balancer: Option<LoadBalancer>,
    pub connection_pool: Option<ConnectionPool>,
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<ClientTls>,
}

impl TrafficPolicy {
    /// `self`'s parts where set, `base`'s otherwise.
    pub fn over(&self, base: &TrafficPolicy) -> TrafficPolicy {
        TrafficPolicy {
            load_balancer: self
                .load_balancer
                .clone()
                .or_else(|| base.load_balancer.clone()),
            connection_pool: self
                .connection_pool
                .clone()
                .or_else(|| base.connection_pool.clone()),
            outlier_detection: self
                .outlier_detection
                .clone()
                .or_else(|| base.outlier_detection.clone()),
            tls: self.tls.clone().or_else(|| base.tls.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum LoadBalancer {
    RoundRobin,
    /// Power of two choices: Istio's default.
    LeastRequest,
    Random,
    Passthrough,
    ConsistentHash(ConsistentHash),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConsistentHash {
    pub key: HashKey,
    pub algorithm: HashAlgorithm,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HashKey {
    Header(String),
    Cookie {
        name: String,
        path: Option<String>,
        ttl: Option<Duration>,
    },
    SourceIp,
    QueryParameter(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HashAlgorithm {
    RingHash { minimum_ring_size: u64 },
    Maglev { table_size: u64 },
}

/// `connectionPool`, as circuit-breaking limits. `None` means Envoy's default (effectively
/// unlimited, 2^32-1).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectionPool {
    pub max_connections: Option<u32>,
    pub connect_timeout: Option<Duration>,
    pub tcp_keepalive: Option<TcpKeepalive>,
    pub max_connection_duration: Option<Duration>,
    pub http1_max_pending_requests: Option<u32>,
    pub http2_max_requests: Option<u32>,
    pub max_requests_per_connection: Option<u32>,
    pub max_retries: Option<u32>,
    pub idle_timeout: Option<Duration>,
    pub h2_upgrade: bool,
    pub use_client_protocol: bool,
    pub max_concurrent_streams: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TcpKeepalive {
    pub probes: Option<u32>,
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutlierDetection {
    pub consecutive_5xx_errors: Option<u32>,
    pub consecutive_gateway_errors: Option<u32>,
    pub consecutive_local_origin_failures: Option<u32>,
    pub split_external_local_origin_errors: bool,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
    pub min_health_percent: u32,
}

/// Client-side TLS (DestinationRule `tls`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientTls {
    pub mode: ClientTlsMode,
    pub client_certificate: Option<String>,
    pub private_key: Option<String>,
    pub ca_certificates: Option<String>,
    pub credential_name: Option<String>,
    pub subject_alt_names: Vec<String>,
    pub sni: Option<String>,
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTlsMode {
    Disable,
    Simple,
    Mutual,
    IstioMutual,
}

/// One server of a Gateway: a port, the hosts it serves and its TLS.
#[derive(Debug, Clone)]
pub struct GatewayServer {
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    pub selector: Selector,
    pub port: u16,
    pub port_name: String,
    pub protocol: crate::model::Protocol,
    pub bind: Option<String>,
    /// `(namespace filter, host)`: `*` or a namespace, and a (wildcard) hostname.
    pub hosts: Vec<(String, Host)>,
    pub tls: Option<ServerTls>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerTls {
    pub mode: ServerTlsMode,
    pub https_redirect: bool,
    pub credential_name: Option<String>,
    pub server_certificate: Option<String>,
    pub private_key: Option<String>,
    pub ca_certificates: Option<String>,
    pub subject_alt_names: Vec<String>,
    pub min_protocol_version: Option<String>,
    pub max_protocol_version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerTlsMode {
    Passthrough,
    Simple,
    Mutual,
    AutoPassthrough,
    IstioMutual,
    OptionalMutual,
}

/// A Sidecar resource: what a workload's outbound side may reach.
#[derive(Debug, Clone)]
pub struct SidecarScope {
    pub namespace: String,
    pub name: String,
    /// `None`: applies to every workload of the namespace without a more specific Sidecar.
    pub selector: Option<Selector>,
    pub egress: Vec<EgressListener>,
    pub outbound_policy: OutboundTrafficPolicy,
}

impl SidecarScope {
    /// Whether the outbound side may send to `host` (in `host_namespace`) on `port`.
    pub fn allows(&self, host: &Host, host_namespace: &str, port: Option<u16>) -> bool {
        if self.egress.is_empty() {
            return true;
        }
        self.egress.iter().any(|l| {
            (l.port.is_none() || l.port == port)
                && l.hosts.iter().any(|(ns, h)| {
                    (ns == "*"
                        || ns == host_namespace
                        || (ns == "." && host_namespace == self.namespace))
                        && h.overlaps(host)
                })
        })
    }
}

#[derive(Debug, Clone)]
pub struct EgressListener {
    pub port: Option<u16>,
    /// `(namespace, host)`: `*`, `.`, `~` or a namespace, and a (wildcard) hostname.
    pub hosts: Vec<(String, Host)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutboundTrafficPolicy {
    /// Unknown hosts pass through to their DNS address (Istio's default).
    #[default]
    AllowAny,
    /// Unknown hosts get 502.
    RegistryOnly,
}

/// Envoy's local rate limit (from an EnvoyFilter), a token bucket per workload.
#[derive(Debug, Clone)]
pub struct LocalRateLimit {
    /// `namespace/name` of the EnvoyFilter.
    pub envoy_filter: String,
    pub namespace: String,
    pub selector: Option<Selector>,
    /// `SIDECAR_INBOUND`, `SIDECAR_OUTBOUND`, `GATEWAY` or `ANY`.
    pub context: String,
    /// The default bucket (`token_bucket`); `None`: only descriptor buckets limit.
    pub bucket: Option<TokenBucket>,
    pub filter_enabled: Percent,
    pub filter_enforced: Percent,
    pub response_headers: Vec<(String, String)>,
    /// `descriptors`: buckets for requests whose generated descriptor matches.
    pub descriptors: Vec<crate::rate_limit::Descriptor>,
    /// The route's `rate_limits`: each entry's actions build one descriptor per request.
    pub actions: Vec<crate::rate_limit::RateLimitActions>,
    /// `always_consume_default_token_bucket` (Envoy's default: true): whether the default
    /// bucket is drawn from even when a descriptor bucket matched.
    pub always_consume_default: bool,
}

/// `max_tokens` tokens, refilled by `tokens_per_fill` every `fill_interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    pub max_tokens: u32,
    pub tokens_per_fill: u32,
    pub fill_interval: Duration,
}

//! `DestinationRule` (networking.istio.io v1, v1beta1, v1alpha3): what happens to traffic for a
//! service after routing: load balancing, connection pool limits, outlier detection, client TLS,
//! and the subsets that VirtualService routes name.
//!
//! The three served versions share one schema, so one model parses them all. Oneofs (`simple` or
//! `consistentHash`, the hash key, `ringHash` or `maglev`) are plain optional fields here and
//! their exclusivity is checked by [`DestinationRule::validate`], so that a violation is reported
//! at its position with Istio's words rather than as an opaque parse error.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::common::{Duration, PortSelector, WorkloadSelector};

#[cfg(test)]
mod tests;
mod validate;

pub(crate) use validate::validate_connection_pool;

/// The `spec` of a DestinationRule.
///
/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#DestinationRule>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct DestinationRule {
    /// The service the rule applies to: a short name (`reviews`, qualified with the rule's
    /// namespace), an FQDN, or a wildcard (`*.example.com`). Required.
    pub host: String,
    pub traffic_policy: Option<TrafficPolicy>,
    pub subsets: Vec<Subset>,
    pub export_to: Vec<String>,
    /// Restricts the rule to the workloads it selects (the security form, `matchLabels`).
    pub workload_selector: Option<WorkloadSelector>,
}

/// Policies applied to all ports of the destination, or overridden per port and per subset.
///
/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#TrafficPolicy>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficPolicy {
    pub load_balancer: Option<LoadBalancerSettings>,
    pub connection_pool: Option<ConnectionPoolSettings>,
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<ClientTlsSettings>,
    /// At most 4096 entries; a port's entry overrides the fields above for that port.
    pub port_level_settings: Vec<PortTrafficPolicy>,
    pub tunnel: Option<TunnelSettings>,
    pub proxy_protocol: Option<ProxyProtocol>,
    pub retry_budget: Option<RetryBudget>,
}

/// A named set of the service's endpoints, selected by labels, with its own policy.
///
/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#Subset>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Subset {
    /// A DNS-1123 label, unique within the rule. Required.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub traffic_policy: Option<TrafficPolicy>,
}

/// The load balancing algorithm: `simple` or `consistentHash` (at most one), and locality and
/// warmup settings.
///
/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#LoadBalancerSettings>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancerSettings {
    pub simple: Option<SimpleLb>,
    pub consistent_hash: Option<ConsistentHashLb>,
    pub locality_lb_setting: Option<LocalityLoadBalancerSetting>,
    /// Deprecated: use `warmup`.
    pub warmup_duration_secs: Option<Duration>,
    pub warmup: Option<WarmupConfiguration>,
    pub zone_aware_lb_setting: Option<ZoneAwareLbSetting>,
}

/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#LoadBalancerSettings-SimpleLB>
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    #[default]
    Unspecified,
    LeastConn,
    Random,
    Passthrough,
    RoundRobin,
    LeastRequest,
}

/// Consistent-hash (session affinity) balancing: at most one hash key (`httpHeaderName`,
/// `httpCookie`, `useSourceIp`, `httpQueryParameterName`) and at most one of `ringHash`/`maglev`.
///
/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#LoadBalancerSettings-ConsistentHashLB>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ConsistentHashLb {
    pub http_header_name: Option<String>,
    pub http_cookie: Option<HttpCookie>,
    pub use_source_ip: Option<bool>,
    pub http_query_parameter_name: Option<String>,
    pub ring_hash: Option<RingHash>,
    pub maglev: Option<Maglev>,
    /// Deprecated: use `ringHash.minimumRingSize`.
    pub minimum_ring_size: Option<u64>,
}

/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#LoadBalancerSettings-ConsistentHashLB-HTTPCookie>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpCookie {
    /// Required.
    pub name: String,
    pub path: String,
    pub ttl: Option<Duration>,
    pub attributes: Vec<HttpCookieAttribute>,
}

/// An extra attribute of a generated cookie (`SameSite=Strict`).
///
/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#LoadBalancerSettings-ConsistentHashLB-HTTPCookie>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpCookieAttribute {
    /// Required.
    pub name: String,
    pub value: String,
}

/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#LoadBalancerSettings-ConsistentHashLB-RingHash>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct RingHash {
    pub minimum_ring_size: Option<u64>,
}

/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#LoadBalancerSettings-ConsistentHashLB-MagLev>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Maglev {
    /// A prime below 5000011.
    pub table_size: Option<u64>,
}

/// Locality-weighted distribution or failover.
///
/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#LocalityLoadBalancerSetting>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalityLoadBalancerSetting {
    pub distribute: Vec<LocalityDistribute>,
    pub failover: Vec<LocalityFailover>,
    pub failover_priority: Vec<String>,
    pub enabled: Option<bool>,
}

/// `from` locality (`region/zone/subzone`, `*` allowed at the end) to weights per locality.
///
/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#LocalityLoadBalancerSetting-Distribute>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalityDistribute {
    pub from: String,
    pub to: BTreeMap<String, u32>,
}

/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#LocalityLoadBalancerSetting-Failover>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalityFailover {
    pub from: String,
    pub to: String,
}

/// Slow start: ramps new endpoints' share of traffic up over `duration`.
///
/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#WarmupConfiguration>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct WarmupConfiguration {
    /// Required.
    pub duration: Option<Duration>,
    /// 0 to 100.
    pub minimum_percent: Option<f64>,
    /// At least 1.
    pub aggression: Option<f64>,
}

/// Zone-aware routing (Envoy's `zone_aware_lb_config`).
///
/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#LoadBalancerSettings>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ZoneAwareLbSetting {
    pub enabled: Option<bool>,
    pub failover: Vec<LocalityFailover>,
    pub failover_priority: Vec<String>,
    /// At least 1.
    pub min_cluster_size: Option<u64>,
}

/// Connection limits toward each endpoint (circuit breaking).
///
/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#ConnectionPoolSettings>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectionPoolSettings {
    pub tcp: Option<TcpSettings>,
    pub http: Option<HttpSettings>,
}

/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#ConnectionPoolSettings-TCPSettings>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpSettings {
    pub max_connections: Option<i32>,
    pub connect_timeout: Option<Duration>,
    pub tcp_keepalive: Option<TcpKeepalive>,
    pub max_connection_duration: Option<Duration>,
    /// `0s` disables the idle timeout.
    pub idle_timeout: Option<Duration>,
}

/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#ConnectionPoolSettings-TCPSettings-TcpKeepalive>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpKeepalive {
    pub probes: Option<u32>,
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
}

/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#ConnectionPoolSettings-HTTPSettings>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpSettings {
    pub http1_max_pending_requests: Option<i32>,
    pub http2_max_requests: Option<i32>,
    pub max_requests_per_connection: Option<i32>,
    pub max_retries: Option<i32>,
    pub idle_timeout: Option<Duration>,
    pub h2_upgrade_policy: H2UpgradePolicy,
    pub use_client_protocol: bool,
    pub max_concurrent_streams: Option<i32>,
    pub http2_keep_alive: Option<Http2KeepAlive>,
}

/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#ConnectionPoolSettings-HTTPSettings-H2UpgradePolicy>
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    #[default]
    Default,
    DoNotUpgrade,
    Upgrade,
}

/// HTTP/2 PING keepalive on upstream connections.
///
/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#ConnectionPoolSettings-HTTPSettings>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Http2KeepAlive {
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
}

/// Ejects endpoints that keep failing.
///
/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#OutlierDetection>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct OutlierDetection {
    pub split_external_local_origin_errors: bool,
    pub consecutive_local_origin_failures: Option<u32>,
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(rename = "consecutive5xxErrors")]
    pub consecutive_5xx_errors: Option<u32>,
    /// Deprecated: use `consecutiveGatewayErrors` or `consecutive5xxErrors`.
    pub consecutive_errors: Option<i32>,
    pub interval: Option<Duration>,
    pub base_ejection_time: Option<Duration>,
    /// 0 to 100.
    pub max_ejection_percent: Option<i32>,
    /// 0 to 100.
    pub min_health_percent: Option<i32>,
    /// Status codes (100 to 599) counted as errors.
    pub outlier_detection_http_error_codes: Vec<u32>,
}

/// TLS from the proxy to the destination.
///
/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#ClientTLSSettings>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientTlsSettings {
    pub mode: TlsMode,
    pub client_certificate: String,
    pub private_key: String,
    pub ca_certificates: String,
    pub credential_name: String,
    pub subject_alt_names: Vec<String>,
    pub sni: String,
    pub insecure_skip_verify: Option<bool>,
    pub ca_crl: String,
}

/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#ClientTLSSettings-TLSmode>
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    #[default]
    Disable,
    Simple,
    Mutual,
    IstioMutual,
}

/// A policy for one port of the destination; overrides the rule's policy on that port.
///
/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#TrafficPolicy-PortTrafficPolicy>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct PortTrafficPolicy {
    /// Required.
    pub port: Option<PortSelector>,
    pub load_balancer: Option<LoadBalancerSettings>,
    pub connection_pool: Option<ConnectionPoolSettings>,
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<ClientTlsSettings>,
}

/// Tunnels TCP to the destination through a proxy (HTTP `CONNECT` or `POST`).
///
/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#TrafficPolicy-TunnelSettings>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TunnelSettings {
    /// `CONNECT` (the default) or `POST`.
    pub protocol: String,
    /// Required.
    pub target_host: String,
    /// Required.
    pub target_port: Option<u32>,
}

/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#TrafficPolicy-ProxyProtocol>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ProxyProtocol {
    pub version: ProxyProtocolVersion,
}

/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#TrafficPolicy-ProxyProtocol-VERSION>
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum ProxyProtocolVersion {
    #[default]
    V1,
    V2,
}

/// Caps concurrent retries relative to active requests.
///
/// <https://istio.io/latest/docs/reference/config/networking/destination-rule/#TrafficPolicy-RetryBudget>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct RetryBudget {
    /// 0 to 100.
    pub percent: Option<f64>,
    pub min_retry_concurrency: Option<u32>,
    pub budget_interval: Option<Duration>,
}

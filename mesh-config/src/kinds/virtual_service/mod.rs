//! `VirtualService` (networking.istio.io v1, v1beta1 and v1alpha3): how requests to a host are
//! routed. The three served versions share one schema, so one model parses them all.
//!
//! Reference: <https://istio.io/latest/docs/reference/config/networking/virtual-service/>

use std::collections::BTreeMap;

use serde::Deserialize;

use super::common::{Duration, PortSelector, StringMatch};

pub(crate) mod rules;
mod validate;

#[cfg(test)]
pub(crate) mod tests;

/// The `spec` of a VirtualService.
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#VirtualService>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VirtualService {
    /// Hosts this VirtualService applies to. Empty only for a delegate VirtualService.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Gateways (`namespace/name`, or `mesh`) the routes apply to; empty means `mesh`.
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    #[serde(default)]
    pub tls: Vec<TlsRoute>,
    #[serde(default)]
    pub tcp: Vec<TcpRoute>,
    #[serde(default)]
    pub export_to: Vec<String>,
}

/// One HTTP routing rule: matches, and what to do with a matching request.
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPRoute>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRoute {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub r#match: Vec<HttpMatchRequest>,
    #[serde(default)]
    pub route: Vec<HttpRouteDestination>,
    #[serde(default)]
    pub redirect: Option<HttpRedirect>,
    #[serde(default)]
    pub direct_response: Option<HttpDirectResponse>,
    #[serde(default)]
    pub delegate: Option<Delegate>,
    #[serde(default)]
    pub rewrite: Option<HttpRewrite>,
    #[serde(default)]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub retries: Option<HttpRetry>,
    #[serde(default)]
    pub fault: Option<HttpFaultInjection>,
    #[serde(default)]
    pub mirror: Option<Destination>,
    #[serde(default)]
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Deprecated: use `mirrorPercentage`.
    #[serde(default)]
    pub mirror_percent: Option<u32>,
    /// The same deprecated field, spelled as the proto names it; the CRD accepts both.
    #[serde(default, rename = "mirror_percent")]
    pub mirror_percent_snake: Option<u32>,
    /// Removed from Istio's API (WebSocket upgrades are always allowed); accepted and ignored,
    /// with a warning.
    #[serde(default)]
    pub websocket_upgrade: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub mirror_percentage: Option<Percent>,
    #[serde(default)]
    pub cors_policy: Option<CorsPolicy>,
    #[serde(default)]
    pub headers: Option<Headers>,
}

/// Conditions a request must meet for its rule to apply. Within one match all conditions must
/// hold (AND); the matches of a rule are alternatives (OR).
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPMatchRequest>
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpMatchRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub uri: Option<StringMatch>,
    #[serde(default)]
    pub scheme: Option<StringMatch>,
    #[serde(default)]
    pub method: Option<StringMatch>,
    #[serde(default)]
    pub authority: Option<StringMatch>,
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatch>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub query_params: BTreeMap<String, StringMatch>,
    #[serde(default)]
    pub ignore_uri_case: Option<bool>,
    #[serde(default)]
    pub without_headers: BTreeMap<String, StringMatch>,
    #[serde(default)]
    pub source_namespace: Option<String>,
    #[serde(default)]
    pub stat_prefix: Option<String>,
}

/// A weighted destination of an HTTP rule, with its own header operations.
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPRouteDestination>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteDestination {
    /// Required by Istio; a `{}` entry (seen in Istio's own analyzer fixtures) parses and is
    /// reported by validation.
    #[serde(default)]
    pub destination: Destination,
    /// Relative share of traffic; `int32` in the proto so that negative values parse and are
    /// rejected by validation with Istio's message.
    #[serde(default)]
    pub weight: Option<i32>,
    #[serde(default)]
    pub headers: Option<Headers>,
}

/// A weighted destination of a TLS or TCP rule.
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#RouteDestination>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteDestination {
    pub destination: Destination,
    #[serde(default)]
    pub weight: Option<i32>,
}

/// A service (and optionally a subset and port of it) that traffic is sent to.
///
/// `host` is required by the CRD; it defaults to empty here so that Istio's own generated
/// objects (which may omit it under Gateway API semantics) still parse, and validation reports a
/// missing host where the webhook would.
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#Destination>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Destination {
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub subset: Option<String>,
    #[serde(default)]
    pub port: Option<PortSelector>,
}

/// Conditions of a TLS rule; `sniHosts` is required.
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#TLSMatchAttributes>
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsMatchAttributes {
    pub sni_hosts: Vec<String>,
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub source_namespace: Option<String>,
}

/// Conditions of a TCP rule.
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#L4MatchAttributes>
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct L4MatchAttributes {
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub source_subnet: Option<String>,
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub source_namespace: Option<String>,
}

/// A rule for TLS and HTTPS passthrough traffic, matched on SNI.
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#TLSRoute>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsRoute {
    #[serde(rename = "match")]
    pub r#match: Vec<TlsMatchAttributes>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// A rule for opaque TCP traffic.
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#TCPRoute>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpRoute {
    #[serde(default, rename = "match")]
    pub r#match: Vec<L4MatchAttributes>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// Answers a matching request with a redirect. `port` and `derivePort` are a oneof.
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPRedirect>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRedirect {
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub derive_port: Option<RedirectPortSelection>,
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub redirect_code: Option<u32>,
    #[serde(default)]
    pub prefix_rewrite: Option<String>,
}

/// `HTTPRedirect.RedirectPortSelection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RedirectPortSelection {
    FromProtocolDefault,
    FromRequestPort,
}

/// Answers a matching request directly, without forwarding it.
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPDirectResponse>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpDirectResponse {
    pub status: u32,
    #[serde(default)]
    pub body: Option<HttpBody>,
}

/// Body of a direct response: a oneof of `string` and `bytes` (base64).
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPBody>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpBody {
    #[serde(default)]
    pub string: Option<String>,
    /// Base64, as the CRD's `format: byte`.
    #[serde(default)]
    pub bytes: Option<String>,
}

/// Hands the rule over to another (delegate) VirtualService.
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#Delegate>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Delegate {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
}

/// Rewrites the path and/or authority before forwarding.
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPRewrite>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRewrite {
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default)]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// A regex path rewrite (`match` is RE2, `rewrite` may use `\1` groups).
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#RegexRewrite>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegexRewrite {
    #[serde(default, rename = "match")]
    pub r#match: Option<String>,
    #[serde(default)]
    pub rewrite: Option<String>,
}

/// Retry policy of a rule.
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPRetry>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRetry {
    /// `int32` in the proto: negative values parse and are rejected by validation.
    #[serde(default)]
    pub attempts: Option<i32>,
    #[serde(default)]
    pub per_try_timeout: Option<Duration>,
    #[serde(default)]
    pub retry_on: Option<String>,
    #[serde(default)]
    pub retry_remote_localities: Option<bool>,
    #[serde(default)]
    pub retry_ignore_previous_hosts: Option<bool>,
    #[serde(default)]
    pub backoff: Option<Duration>,
}

/// Faults injected into matching requests.
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPFaultInjection>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpFaultInjection {
    #[serde(default)]
    pub delay: Option<HttpFaultInjectionDelay>,
    #[serde(default)]
    pub abort: Option<HttpFaultInjectionAbort>,
}

/// `HTTPFaultInjection.Delay`: `fixedDelay` and `exponentialDelay` are a oneof.
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPFaultInjection-Delay>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpFaultInjectionDelay {
    #[serde(default)]
    pub fixed_delay: Option<Duration>,
    #[serde(default)]
    pub exponential_delay: Option<Duration>,
    /// Deprecated integer percentage; use `percentage`.
    #[serde(default)]
    pub percent: Option<i32>,
    #[serde(default)]
    pub percentage: Option<Percent>,
}

/// `HTTPFaultInjection.Abort`: `httpStatus`, `grpcStatus` and `http2Error` are a oneof.
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPFaultInjection-Abort>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpFaultInjectionAbort {
    #[serde(default)]
    pub http_status: Option<i32>,
    #[serde(default)]
    pub grpc_status: Option<String>,
    #[serde(default)]
    pub http2_error: Option<String>,
    #[serde(default)]
    pub percentage: Option<Percent>,
}

/// A mirror target with its own share of traffic.
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPMirrorPolicy>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpMirrorPolicy {
    pub destination: Destination,
    #[serde(default)]
    pub percentage: Option<Percent>,
}

/// A percentage in `[0.0, 100.0]`.
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#Percent>
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Percent {
    #[serde(default)]
    pub value: f64,
}

/// Cross-origin resource sharing policy of a rule.
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#CorsPolicy>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CorsPolicy {
    /// Deprecated exact-match origins; use `allowOrigins`.
    #[serde(default)]
    pub allow_origin: Vec<String>,
    #[serde(default)]
    pub allow_origins: Vec<StringMatch>,
    #[serde(default)]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub max_age: Option<Duration>,
    #[serde(default)]
    pub allow_credentials: Option<bool>,
    #[serde(default)]
    pub unmatched_preflights: Option<UnmatchedPreflights>,
}

/// `CorsPolicy.UnmatchedPreflights`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UnmatchedPreflights {
    Unspecified,
    Forward,
    Ignore,
}

/// Header operations on requests and responses.
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#Headers>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Headers {
    #[serde(default)]
    pub request: Option<HeaderOperations>,
    #[serde(default)]
    pub response: Option<HeaderOperations>,
}

/// `Headers.HeaderOperations`: `set` overwrites, `add` appends, `remove` deletes.
///
/// <https://istio.io/latest/docs/reference/config/networking/virtual-service/#Headers-HeaderOperations>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderOperations {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

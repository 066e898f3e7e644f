//! `EnvoyFilter` (networking.istio.io v1alpha3): patches to the Envoy configuration istiod
//! generates.
//!
//! mesh applies one kind of patch, Envoy's HTTP local rate limit
//! (`envoy.filters.http.local_ratelimit`), which [`EnvoyConfigObjectPatch::local_rate_limit`]
//! recognises and extracts; every other patch is parsed and validated but not applied. A patch's
//! `value` is free-form Envoy configuration, kept as JSON: positions inside it are lost, so issues
//! about it point at `patch.value`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::common::{NetworkingWorkloadSelector, PolicyTargetReference};

mod local_rate_limit;
#[cfg(test)]
mod tests;
mod validate;

pub use local_rate_limit::{
    DescriptorEntry, FractionDenominator, HeaderValueOption, LOCAL_RATE_LIMIT_FILTER,
    LocalRateLimit, LocalRateLimitDescriptor, LocalRateLimitPatch, RateLimitPlacement,
    RuntimeFractionalPercent, TokenBucket, route_rate_limit_actions,
};

/// The `spec` of an EnvoyFilter.
///
/// <https://istio.io/latest/docs/reference/config/networking/envoy-filter/#EnvoyFilter>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvoyFilter {
    /// Exclusive with `targetRefs`; none of both applies the patches to every workload in the
    /// namespace (or the whole mesh from the root namespace).
    pub workload_selector: Option<NetworkingWorkloadSelector>,
    /// At most 16; exclusive with `workloadSelector`.
    pub target_refs: Vec<PolicyTargetReference>,
    pub config_patches: Vec<EnvoyConfigObjectPatch>,
    /// Order of application among EnvoyFilters in the same context (lower first).
    pub priority: i32,
    /// `workloadLabels` and `filters`: removed from Istio's API (use `workloadSelector` and
    /// `configPatches`); accepted and ignored, with a warning.
    pub workload_labels: Option<serde::de::IgnoredAny>,
    pub filters: Option<serde::de::IgnoredAny>,
}

/// One patch: where (`applyTo`, `match`) and what (`patch`).
///
/// <https://istio.io/latest/docs/reference/config/networking/envoy-filter/#EnvoyFilter-EnvoyConfigObjectPatch>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvoyConfigObjectPatch {
    pub apply_to: ApplyTo,
    pub r#match: Option<EnvoyConfigObjectMatch>,
    pub patch: Option<Patch>,
}

/// <https://istio.io/latest/docs/reference/config/networking/envoy-filter/#EnvoyFilter-ApplyTo>
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApplyTo {
    #[default]
    Invalid,
    Listener,
    FilterChain,
    NetworkFilter,
    HttpFilter,
    RouteConfiguration,
    VirtualHost,
    HttpRoute,
    Cluster,
    ExtensionConfig,
    Bootstrap,
    ListenerFilter,
}

impl ApplyTo {
    /// Istio's spelling (`HTTP_FILTER`).
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyTo::Invalid => "INVALID",
            ApplyTo::Listener => "LISTENER",
            ApplyTo::FilterChain => "FILTER_CHAIN",
            ApplyTo::NetworkFilter => "NETWORK_FILTER",
            ApplyTo::HttpFilter => "HTTP_FILTER",
            ApplyTo::RouteConfiguration => "ROUTE_CONFIGURATION",
            ApplyTo::VirtualHost => "VIRTUAL_HOST",
            ApplyTo::HttpRoute => "HTTP_ROUTE",
            ApplyTo::Cluster => "CLUSTER",
            ApplyTo::ExtensionConfig => "EXTENSION_CONFIG",
            ApplyTo::Bootstrap => "BOOTSTRAP",
            ApplyTo::ListenerFilter => "LISTENER_FILTER",
        }
    }
}

/// Which generated objects a patch applies to. At most one of `listener`,
/// `routeConfiguration`, `cluster` and `waypoint`.
///
/// <https://istio.io/latest/docs/reference/config/networking/envoy-filter/#EnvoyFilter-EnvoyConfigObjectMatch>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EnvoyConfigObjectMatch {
    pub context: PatchContext,
    pub proxy: Option<ProxyMatch>,
    pub listener: Option<ListenerMatch>,
    pub route_configuration: Option<RouteConfigurationMatch>,
    pub cluster: Option<ClusterMatch>,
    /// Only with `context: WAYPOINT`, which requires it.
    pub waypoint: Option<WaypointMatch>,
    /// Fields that are not part of the match. Istio rejects them; mesh applies no patch that
    /// has them (validation warns), since only local rate limit patches are applied at all.
    #[serde(flatten)]
    pub unknown: std::collections::BTreeMap<String, serde_json::Value>,
}

/// <https://istio.io/latest/docs/reference/config/networking/envoy-filter/#EnvoyFilter-PatchContext>
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PatchContext {
    #[default]
    Any,
    SidecarInbound,
    SidecarOutbound,
    Gateway,
    Waypoint,
}

/// <https://istio.io/latest/docs/reference/config/networking/envoy-filter/#EnvoyFilter-ProxyMatch>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ProxyMatch {
    /// A regular expression (RE2) on the proxy's Istio version.
    pub proxy_version: String,
    pub metadata: BTreeMap<String, String>,
}

/// <https://istio.io/latest/docs/reference/config/networking/envoy-filter/#EnvoyFilter-ListenerMatch>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ListenerMatch {
    pub port_number: Option<u32>,
    pub port_name: String,
    pub filter_chain: Option<FilterChainMatch>,
    pub listener_filter: String,
    pub name: String,
}

/// <https://istio.io/latest/docs/reference/config/networking/envoy-filter/#EnvoyFilter-ListenerMatch-FilterChainMatch>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct FilterChainMatch {
    pub name: String,
    pub sni: String,
    pub transport_protocol: String,
    pub application_protocols: String,
    pub filter: Option<FilterMatch>,
    pub destination_port: Option<u32>,
}

/// <https://istio.io/latest/docs/reference/config/networking/envoy-filter/#EnvoyFilter-ListenerMatch-FilterMatch>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct FilterMatch {
    pub name: String,
    pub sub_filter: Option<SubFilterMatch>,
}

/// <https://istio.io/latest/docs/reference/config/networking/envoy-filter/#EnvoyFilter-ListenerMatch-SubFilterMatch>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct SubFilterMatch {
    pub name: String,
}

/// <https://istio.io/latest/docs/reference/config/networking/envoy-filter/#EnvoyFilter-RouteConfigurationMatch>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteConfigurationMatch {
    pub port_number: Option<u32>,
    pub port_name: String,
    pub gateway: String,
    pub vhost: Option<VirtualHostMatch>,
    pub name: String,
}

/// <https://istio.io/latest/docs/reference/config/networking/envoy-filter/#EnvoyFilter-RouteConfigurationMatch-VirtualHostMatch>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct VirtualHostMatch {
    pub name: String,
    pub domain_name: String,
    pub route: Option<RouteMatch>,
}

/// <https://istio.io/latest/docs/reference/config/networking/envoy-filter/#EnvoyFilter-RouteConfigurationMatch-RouteMatch>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteMatch {
    pub name: String,
    pub action: RouteAction,
}

/// <https://istio.io/latest/docs/reference/config/networking/envoy-filter/#EnvoyFilter-RouteConfigurationMatch-RouteMatch-Action>
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RouteAction {
    #[default]
    Any,
    Route,
    Redirect,
    DirectResponse,
}

/// <https://istio.io/latest/docs/reference/config/networking/envoy-filter/#EnvoyFilter-ClusterMatch>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterMatch {
    pub port_number: Option<u32>,
    pub service: String,
    pub subset: String,
    pub name: String,
}

/// Matches objects of a waypoint proxy (`context: WAYPOINT`).
///
/// <https://istio.io/latest/docs/reference/config/networking/envoy-filter/#EnvoyFilter-WaypointMatch>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct WaypointMatch {
    pub filter: Option<FilterMatch>,
    pub route: Option<WaypointRouteMatch>,
    /// 1 to 65535.
    pub port_number: Option<u32>,
}

/// <https://istio.io/latest/docs/reference/config/networking/envoy-filter/#EnvoyFilter-WaypointMatch-RouteMatch>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct WaypointRouteMatch {
    pub name: String,
}

/// What to do at the matched place.
///
/// <https://istio.io/latest/docs/reference/config/networking/envoy-filter/#EnvoyFilter-Patch>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Patch {
    pub operation: Operation,
    /// The Envoy configuration to add or merge, as Envoy's JSON (snake_case keys, `@type`).
    pub value: Option<serde_json::Value>,
    pub filter_class: FilterClass,
}

/// <https://istio.io/latest/docs/reference/config/networking/envoy-filter/#EnvoyFilter-Patch-Operation>
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    #[default]
    Invalid,
    Merge,
    Add,
    Remove,
    InsertBefore,
    InsertAfter,
    InsertFirst,
    Replace,
    MergeAndReplaceList,
}

/// <https://istio.io/latest/docs/reference/config/networking/envoy-filter/#EnvoyFilter-Patch-FilterClass>
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FilterClass {
    #[default]
    Unspecified,
    Authn,
    Authz,
    Stats,
}

//! Gateways to servers, Sidecars to scopes, EnvoyFilter local rate limits to token buckets.

use mesh_core::{
    Host, Percent, Selector,
    model::{
        EgressListener, GatewayServer, LocalRateLimit, OutboundTrafficPolicy, Protocol, ServerTls,
        ServerTlsMode, SidecarScope, TokenBucket,
    },
};

use super::Sink;
use crate::{
    kinds::{
        envoy_filter::{EnvoyFilter, PatchContext, RateLimitPlacement},
        gateway::{self as gw, Gateway},
        sidecar::{OutboundTrafficPolicyMode, Sidecar},
    },
    load::Object,
};

/// `ns/host` or `host` (any namespace, `*/`), as Gateway and Sidecar hosts are written.
fn namespaced_host(h: &str, default_ns: &str) -> (String, Host) {
    match h.split_once('/') {
        Some((ns, host)) => (ns.to_owned(), Host::new(host)),
        None => (default_ns.to_owned(), Host::new(h)),
    }
}

pub(crate) fn gateway_servers(obj: &Object<Gateway>) -> Vec<GatewayServer> {
    let spec = &obj.spec;
    spec.servers
        .iter()
        // A SIMPLE or MUTUAL server without a certificate cannot start (reported).
        .filter(|s| {
            s.tls.as_ref().is_none_or(|t| {
                !matches!(t.mode, Some(gw::TlsMode::Simple | gw::TlsMode::Mutual))
                    || t.credential_name.is_some()
                    || t.credential_names.as_ref().is_some_and(|c| !c.is_empty())
                    || t.tls_certificates.as_ref().is_some_and(|c| !c.is_empty())
                    || (t.server_certificate.is_some() && t.private_key.is_some())
            })
        })
        .filter_map(|s| {
            Some(GatewayServer {
                gateway: obj.key(),
                selector: Selector::new(spec.selector.clone()),
                port: u16::try_from(s.port.number).ok()?,
                port_name: s.port.name.clone(),
                protocol: Protocol::parse(&s.port.protocol),
                bind: s.bind.clone(),
                hosts: s.hosts.iter().map(|h| namespaced_host(h, "*")).collect(),
                tls: s.tls.as_ref().map(|t| ServerTls {
                    mode: match t.mode {
                        Some(gw::TlsMode::Passthrough) => ServerTlsMode::Passthrough,
                        Some(gw::TlsMode::Simple) | None => ServerTlsMode::Simple,
                        Some(gw::TlsMode::Mutual) => ServerTlsMode::Mutual,
                        Some(gw::TlsMode::AutoPassthrough) => ServerTlsMode::AutoPassthrough,
                        Some(gw::TlsMode::IstioMutual) => ServerTlsMode::IstioMutual,
                        Some(gw::TlsMode::OptionalMutual) => ServerTlsMode::OptionalMutual,
                    },
                    https_redirect: t.https_redirect.unwrap_or(false),
                    credential_name: t.credential_name.clone(),
                    server_certificate: t.server_certificate.clone(),
                    private_key: t.private_key.clone(),
                    ca_certificates: t.ca_certificates.clone(),
                    subject_alt_names: t.subject_alt_names.clone(),
                    min_protocol_version: t.min_protocol_version.map(|v| format!("{v:?}")),
                    max_protocol_version: t.max_protocol_version.map(|v| format!("{v:?}")),
                }),
            })
        })
        .collect()
}

pub(crate) fn sidecar_scope(obj: &Object<Sidecar>) -> SidecarScope {
    let spec = &obj.spec;
    SidecarScope {
        namespace: obj.namespace.clone(),
        name: obj.name.clone(),
        selector: spec
            .workload_selector
            .as_ref()
            .filter(|s| !s.labels.is_empty())
            .map(|s| Selector::new(s.labels.clone())),
        egress: spec
            .egress
            .iter()
            .map(|l| EgressListener {
                port: l.port.as_ref().and_then(|p| u16::try_from(p.number).ok()),
                hosts: l.hosts.iter().map(|h| namespaced_host(h, "*")).collect(),
            })
            .collect(),
        outbound_policy: match spec.outbound_traffic_policy.as_ref().and_then(|p| p.mode) {
            Some(OutboundTrafficPolicyMode::RegistryOnly) => OutboundTrafficPolicy::RegistryOnly,
            _ => OutboundTrafficPolicy::AllowAny,
        },
    }
}

/// The local rate limits of an EnvoyFilter. Other patches are reported as unsupported: mesh
/// applies only `envoy.filters.http.local_ratelimit`.
pub(crate) fn rate_limits(obj: &Object<EnvoyFilter>, sink: &mut Sink<'_>) -> Vec<LocalRateLimit> {
    let spec = &obj.spec;
    let mut out = Vec::new();
    for (i, patch) in spec.config_patches.iter().enumerate() {
        let path = format!("spec.configPatches[{i}]");
        match patch.local_rate_limit() {
            None => sink.warn(
                obj,
                &format!("{path}.applyTo"),
                format!(
                    "{} patch is not supported: mesh applies only the {} filter of EnvoyFilter; this patch is ignored",
                    patch.apply_to.as_str(),
                    crate::kinds::envoy_filter::LOCAL_RATE_LIMIT_FILTER
                ),
            ),
            Some(Err(e)) => sink.error(obj, &format!("{path}.patch.value"), e),
            Some(Ok(found)) => {
                let context = patch.r#match.as_ref().map(|m| m.context).unwrap_or(PatchContext::Any);
                if found.placement == RateLimitPlacement::PerRoute && !found.route_rate_limits.is_empty() {
                    sink.warn(
                        obj,
                        &format!("{path}.patch.value"),
                        "route rate_limits actions (descriptors) are not applied yet: only the route's token bucket is".to_owned(),
                    );
                }
                let Some(bucket) = found.config.token_bucket else {
                    continue;
                };
                let pct = |f: &Option<crate::kinds::envoy_filter::RuntimeFractionalPercent>| {
                    f.as_ref()
                        .and_then(|f| Percent::new(f.fraction() * 100.0))
                        .unwrap_or(Percent::ZERO)
                };
                out.push(LocalRateLimit {
                    envoy_filter: obj.key(),
                    namespace: obj.namespace.clone(),
                    selector: spec
                        .workload_selector
                        .as_ref()
                        .filter(|s| !s.labels.is_empty())
                        .map(|s| Selector::new(s.labels.clone())),
                    context: match context {
                        PatchContext::Any => "ANY",
                        PatchContext::SidecarInbound => "SIDECAR_INBOUND",
                        PatchContext::SidecarOutbound => "SIDECAR_OUTBOUND",
                        PatchContext::Gateway => "GATEWAY",
                        PatchContext::Waypoint => "WAYPOINT",
                    }
                    .to_owned(),
                    bucket: TokenBucket {
                        max_tokens: bucket.max_tokens,
                        tokens_per_fill: bucket.tokens_per_fill,
                        fill_interval: bucket.fill_interval,
                    },
                    // Envoy: without filter_enabled/filter_enforced the filter neither runs nor
                    // enforces (0%).
                    filter_enabled: pct(&found.config.filter_enabled),
                    filter_enforced: pct(&found.config.filter_enforced),
                    response_headers: found
                        .config
                        .response_headers_to_add
                        .iter()
                        .map(|h| (h.key.clone(), h.value.clone()))
                        .collect(),
                });
            }
        }
    }
    out
}

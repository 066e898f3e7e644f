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
        envoy_filter::{EnvoyFilter, PatchContext},
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
                    // Unset is PASSTHROUGH, the proto's default, as in Istio.
                    mode: match t.effective_mode() {
                        gw::TlsMode::Passthrough => ServerTlsMode::Passthrough,
                        gw::TlsMode::Simple => ServerTlsMode::Simple,
                        gw::TlsMode::Mutual => ServerTlsMode::Mutual,
                        gw::TlsMode::AutoPassthrough => ServerTlsMode::AutoPassthrough,
                        gw::TlsMode::IstioMutual => ServerTlsMode::IstioMutual,
                        gw::TlsMode::OptionalMutual => ServerTlsMode::OptionalMutual,
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
                let (actions, skipped) =
                    crate::kinds::envoy_filter::route_rate_limit_actions(&found.route_rate_limits);
                for (j, why) in skipped {
                    sink.warn(
                        obj,
                        &format!("{path}.patch.value.route.rate_limits[{j}]"),
                        format!("{why}; this rate_limits entry produces no descriptor"),
                    );
                }
                let to_bucket = |b: &crate::kinds::envoy_filter::TokenBucket| TokenBucket {
                    max_tokens: b.max_tokens,
                    tokens_per_fill: b.tokens_per_fill,
                    fill_interval: b.fill_interval,
                };
                let descriptors: Vec<_> = found
                    .config
                    .descriptors
                    .iter()
                    .map(|d| mesh_core::rate_limit::Descriptor {
                        entries: d.entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect(),
                        bucket: to_bucket(&d.token_bucket),
                    })
                    .collect();
                if !descriptors.is_empty() && actions.is_empty() {
                    sink.warn(
                        obj,
                        &format!("{path}.patch.value"),
                        "descriptors are configured but no route rate_limits actions produce descriptors: only the default token bucket applies".to_owned(),
                    );
                }
                if found.config.token_bucket.is_none() && (descriptors.is_empty() || actions.is_empty()) {
                    continue;
                }
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
                    bucket: found.config.token_bucket.as_ref().map(to_bucket),
                    descriptors,
                    actions,
                    always_consume_default: found
                        .config
                        .always_consume_default_token_bucket
                        .unwrap_or(true),
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

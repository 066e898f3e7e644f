//! PeerAuthentication, AuthorizationPolicy and RequestAuthentication to their compiled forms,
//! scoped (mesh, namespace, workload selector) so the layers can index them by workload.

use mesh_core::{
    Selector,
    model::{
        AuthorizationAction, AuthorizationPolicy, AuthorizationRule, Condition, JwtRule, MtlsMode,
        Operation, PeerAuthenticationPolicy, PolicyScope, RequestAuthenticationPolicy, Source,
    },
};

use super::Sink;
use crate::{
    kinds::{
        authorization_policy as ap, common::WorkloadSelector, peer_authentication as pa,
        request_authentication as ra,
    },
    load::Object,
};

fn scope<S>(obj: &Object<S>, selector: Option<&WorkloadSelector>) -> PolicyScope {
    PolicyScope {
        namespace: obj.namespace.clone(),
        selector: selector
            .filter(|s| !s.match_labels.is_empty())
            .map(|s| Selector::new(s.match_labels.clone())),
    }
}

fn mode(m: pa::MutualTlsMode) -> MtlsMode {
    match m {
        pa::MutualTlsMode::Unset => MtlsMode::Unset,
        pa::MutualTlsMode::Disable => MtlsMode::Disable,
        pa::MutualTlsMode::Permissive => MtlsMode::Permissive,
        pa::MutualTlsMode::Strict => MtlsMode::Strict,
    }
}

pub(crate) fn peer_authentication(
    obj: &Object<pa::PeerAuthentication>,
) -> PeerAuthenticationPolicy {
    let spec = &obj.spec;
    PeerAuthenticationPolicy {
        name: obj.key(),
        scope: scope(obj, spec.selector.as_ref()),
        mode: spec.mtls.map(|m| mode(m.mode)).unwrap_or(MtlsMode::Unset),
        port_modes: spec
            .port_level_mtls
            .iter()
            .flatten()
            .filter_map(|(port, m)| Some((port.parse().ok()?, mode(m.mode))))
            .collect(),
    }
}

pub(crate) fn authorization_policy(
    obj: &Object<ap::AuthorizationPolicy>,
    sink: &mut Sink<'_>,
) -> AuthorizationPolicy {
    let spec = &obj.spec;
    let mut rules = Vec::new();
    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let mut from = Vec::new();
        for (j, f) in rule.from.iter().flatten().enumerate() {
            let Some(s) = &f.source else { continue };
            let path = format!("spec.rules[{i}].from[{j}].source");
            let nets = |list: &[String], field: &str, sink: &mut Sink<'_>| {
                list.iter()
                    .enumerate()
                    .filter_map(|(k, v)| match parse_net(v) {
                        Some(n) => Some(n),
                        None => {
                            sink.error(
                                obj,
                                &format!("{path}.{field}[{k}]"),
                                format!("{v:?} is not an IP address or CIDR"),
                            );
                            None
                        }
                    })
                    .collect::<Vec<_>>()
            };
            from.push(Source {
                principals: s.principals.clone(),
                not_principals: s.not_principals.clone(),
                request_principals: s.request_principals.clone(),
                not_request_principals: s.not_request_principals.clone(),
                namespaces: s.namespaces.clone(),
                not_namespaces: s.not_namespaces.clone(),
                ip_blocks: nets(&s.ip_blocks, "ipBlocks", sink),
                not_ip_blocks: nets(&s.not_ip_blocks, "notIpBlocks", sink),
                remote_ip_blocks: nets(&s.remote_ip_blocks, "remoteIpBlocks", sink),
                not_remote_ip_blocks: nets(&s.not_remote_ip_blocks, "notRemoteIpBlocks", sink),
                service_accounts: s.service_accounts.clone(),
                not_service_accounts: s.not_service_accounts.clone(),
                trust_domains: s.trust_domains.clone(),
                not_trust_domains: s.not_trust_domains.clone(),
            });
        }
        let to = rule
            .to
            .iter()
            .flatten()
            .filter_map(|t| t.operation.as_ref())
            .map(|o| Operation {
                hosts: o.hosts.clone(),
                not_hosts: o.not_hosts.clone(),
                ports: o.ports.iter().filter_map(|p| p.parse().ok()).collect(),
                not_ports: o.not_ports.iter().filter_map(|p| p.parse().ok()).collect(),
                methods: o.methods.clone(),
                not_methods: o.not_methods.clone(),
                paths: o.paths.clone(),
                not_paths: o.not_paths.clone(),
            })
            .collect();
        let when = rule
            .when
            .iter()
            .map(|c| Condition {
                key: c.key.clone().unwrap_or_default(),
                values: c.values.clone(),
                not_values: c.not_values.clone(),
            })
            .collect();
        rules.push(AuthorizationRule { from, to, when });
    }
    AuthorizationPolicy {
        name: obj.key(),
        scope: scope(obj, spec.selector.as_ref()),
        action: match spec.action {
            ap::Action::Allow => AuthorizationAction::Allow,
            ap::Action::Deny => AuthorizationAction::Deny,
            ap::Action::Audit => AuthorizationAction::Audit,
            ap::Action::Custom => AuthorizationAction::Custom,
        },
        provider: spec.provider.as_ref().and_then(|p| p.name.clone()),
        dry_run: obj
            .metadata
            .annotations
            .get("istio.io/dry-run")
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        rules,
    }
}

fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

pub(crate) fn request_authentication(
    obj: &Object<ra::RequestAuthentication>,
) -> RequestAuthenticationPolicy {
    let spec = &obj.spec;
    RequestAuthenticationPolicy {
        name: obj.key(),
        scope: scope(obj, spec.selector.as_ref()),
        jwt_rules: spec
            .jwt_rules
            .iter()
            .map(|r| JwtRule {
                issuer: r.issuer.clone().unwrap_or_default(),
                audiences: r.audiences.clone(),
                jwks_uri: r.jwks_uri().map(str::to_owned),
                jwks: r.jwks.clone(),
                from_headers: r
                    .from_headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.clone().unwrap_or_default(),
                            h.prefix.clone().unwrap_or_default(),
                        )
                    })
                    .collect(),
                from_params: r.from_params.clone(),
                from_cookies: r.from_cookies.clone(),
                output_payload_to_header: r.output_payload_to_header.clone(),
                output_claim_to_headers: r
                    .output_claim_to_headers
                    .iter()
                    .map(|c| {
                        (
                            c.header.clone().unwrap_or_default(),
                            c.claim.clone().unwrap_or_default(),
                        )
                    })
                    .collect(),
                forward_original_token: r.forward_original_token,
            })
            .collect(),
    }
}

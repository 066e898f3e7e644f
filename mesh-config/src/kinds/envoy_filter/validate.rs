//! Admission validation of EnvoyFilter: the CRD's schema limits and CEL rules, and istiod's
//! webhook rules (`applyTo`, `match` and `patch` must line up). istiod also builds the patched
//! Envoy object to reject malformed values; mesh does that only for the local rate limit filter,
//! the one patch it applies.

use regex::Regex;

use super::{ApplyTo, EnvoyConfigObjectPatch, EnvoyFilter, Operation, PatchContext};
use crate::kinds::{
    Issues, Meta,
    rules::{
        GROUP_RE, KIND_RE, too_long, too_many, validate_selector, warn_selector_without_labels,
    },
};

const HCM: &str = "envoy.filters.network.http_connection_manager";

/// Envoy's deprecated filter names and their replacements (istiod warns on them in matches).
const DEPRECATED_FILTER_NAMES: &[(&str, &str)] = &[
    ("envoy.http_connection_manager", HCM),
    ("envoy.tcp_proxy", "envoy.filters.network.tcp_proxy"),
    ("envoy.router", "envoy.filters.http.router"),
    ("envoy.cors", "envoy.filters.http.cors"),
    ("envoy.fault", "envoy.filters.http.fault"),
    ("envoy.lua", "envoy.filters.http.lua"),
    ("envoy.ext_authz", "envoy.filters.http.ext_authz"),
    ("envoy.rate_limit", "envoy.filters.http.ratelimit"),
    ("envoy.grpc_web", "envoy.filters.http.grpc_web"),
    ("envoy.health_check", "envoy.filters.http.health_check"),
];

impl EnvoyFilter {
    /// Checks what Istio rejects when the object is applied (the CRD schema, its CEL rules and
    /// istiod's webhook), and warns where istiod warns, including its warning on every
    /// EnvoyFilter.
    pub fn validate(&self, _meta: &Meta<'_>, out: &mut Issues) {
        out.warn(
            "spec",
            "EnvoyFilter exposes internal implementation details that may change at any time. \
             Prefer other APIs if possible, and exercise extreme caution, especially around \
             upgrades.",
        );
        if self.workload_selector.is_some() && !self.target_refs.is_empty() {
            out.error(
                "spec",
                "Invalid value: \"object\": only one of targetRefs or workloadSelector can be set",
            );
        }
        if let Some(sel) = &self.workload_selector {
            validate_selector(sel, "spec.workloadSelector", out);
            warn_selector_without_labels(sel, "spec.workloadSelector.labels", "Envoy filter", out);
        }
        self.validate_target_refs(out);
        for (i, cp) in self.config_patches.iter().enumerate() {
            validate_patch(cp, &format!("spec.configPatches[{i}]"), out);
        }
    }

    fn validate_target_refs(&self, out: &mut Issues) {
        if self.target_refs.len() > 16 {
            too_many(out, "spec.targetRefs", self.target_refs.len(), 16);
        }
        for (i, r) in self.target_refs.iter().enumerate() {
            let base = format!("spec.targetRefs[{i}]");
            let group = r.group.as_deref().unwrap_or("");
            if group.len() > 253 {
                too_long(out, &format!("{base}.group"), group.len(), 253);
            } else if !GROUP_RE.is_match(group) {
                out.error(
                    format!("{base}.group"),
                    format!("Invalid value: {group:?}: group must be a DNS subdomain"),
                );
            }
            match r.kind.as_deref().unwrap_or("") {
                "" => out.error(
                    format!("{base}.kind"),
                    "Required value: set the target's kind",
                ),
                k if k.len() > 63 => too_long(out, &format!("{base}.kind"), k.len(), 63),
                k if !KIND_RE.is_match(k) => out.error(
                    format!("{base}.kind"),
                    format!("Invalid value: {k:?}: kind must be a Kubernetes kind name"),
                ),
                _ => {}
            }
            match r.name.as_deref().unwrap_or("") {
                "" => out.error(
                    format!("{base}.name"),
                    "Required value: set the target's name",
                ),
                n if n.len() > 253 => too_long(out, &format!("{base}.name"), n.len(), 253),
                _ => {}
            }
            if r.namespace.as_deref().is_some_and(|ns| !ns.is_empty()) {
                out.error(
                    format!("{base}.namespace"),
                    "Invalid value: \"string\": cross namespace referencing is not currently \
                     supported (remove namespace: the target must be in the EnvoyFilter's \
                     namespace)",
                );
            }
        }
    }
}

fn validate_patch(cp: &EnvoyConfigObjectPatch, base: &str, out: &mut Issues) {
    // The CRD's rules on `match` come first: the API server checks them before the webhook.
    if let Some(m) = &cp.r#match {
        let mpath = format!("{base}.match");
        for key in m.unknown.keys() {
            out.error(
                format!("{mpath}.{key}"),
                format!(
                    "unknown field `{key}` in an EnvoyFilter match (valid fields: context, proxy, \
                     listener, routeConfiguration, cluster, waypoint)"
                ),
            );
        }
        let kinds: Vec<&str> = [
            ("listener", m.listener.is_some()),
            ("routeConfiguration", m.route_configuration.is_some()),
            ("cluster", m.cluster.is_some()),
            ("waypoint", m.waypoint.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        if kinds.len() > 1 {
            out.error(
                &mpath,
                format!(
                    "Invalid value: \"object\": must validate one and only one schema (oneOf): a \
                     match takes one of listener, routeConfiguration, cluster or waypoint, found {}",
                    kinds.join(", ")
                ),
            );
        }
        if (m.context == PatchContext::Waypoint) != m.waypoint.is_some() {
            out.error(
                &mpath,
                "Invalid value: \"object\": only support waypointMatch when context is WAYPOINT \
                 (use `waypoint` with `context: WAYPOINT`, and listener/routeConfiguration/cluster \
                 otherwise)",
            );
        }
        if let Some(p) = m.waypoint.as_ref().and_then(|w| w.port_number)
            && !(1..=65535).contains(&p)
        {
            out.error(
                format!("{mpath}.waypoint.portNumber"),
                format!("Invalid value: \"integer\": port must be between 1-65535 (got {p})"),
            );
        }
    }
    if let Some(v) = cp.patch.as_ref().and_then(|p| p.value.as_ref())
        && !v.is_object()
    {
        out.error(
            format!("{base}.patch.value"),
            "Invalid value: must be of type object (a map of Envoy configuration)",
        );
    }

    if cp.apply_to == ApplyTo::Invalid {
        out.error(
            format!("{base}.applyTo"),
            "Envoy filter: missing applyTo (e.g. HTTP_FILTER, CLUSTER)",
        );
        return;
    }
    let Some(patch) = &cp.patch else {
        out.error(base, "Envoy filter: missing patch");
        return;
    };
    if patch.operation == Operation::Invalid {
        out.error(
            format!("{base}.patch.operation"),
            "Envoy filter: missing patch operation (e.g. MERGE, ADD, INSERT_BEFORE, REMOVE)",
        );
        return;
    }
    if patch.operation != Operation::Remove && patch.value.is_none() {
        out.error(
            format!("{base}.patch"),
            "Envoy filter: missing patch value for non-remove operation",
        );
        return;
    }
    if let Some(proxy) = cp.r#match.as_ref().and_then(|m| m.proxy.as_ref())
        && !proxy.proxy_version.is_empty()
        && let Err(e) = Regex::new(&proxy.proxy_version)
    {
        out.error(
            format!("{base}.match.proxy.proxyVersion"),
            format!("Envoy filter: invalid regex for proxy version, [{e}]"),
        );
        return;
    }
    validate_apply_to_and_match(cp, base, out);

    if let Some(Err(e)) = cp.local_rate_limit() {
        out.error(format!("{base}.patch.value"), e);
    } else if let Some(Ok(rl)) = cp.local_rate_limit() {
        for field in rl.config.unknown_fields() {
            out.warn(
                format!("{base}.patch.value"),
                format!("unknown field {field:?} in LocalRateLimit (Envoy ignores or rejects it)"),
            );
        }
    }
}

/// istiod's "applyTo, match and patch all line up" rules. A waypoint match fits every class.
fn validate_apply_to_and_match(cp: &EnvoyConfigObjectPatch, base: &str, out: &mut Issues) {
    let Some(m) = &cp.r#match else { return };
    let has_object_match = m.listener.is_some()
        || m.route_configuration.is_some()
        || m.cluster.is_some()
        || m.waypoint.is_some();
    if !has_object_match || m.waypoint.is_some() {
        return;
    }
    let mpath = format!("{base}.match");
    match cp.apply_to {
        ApplyTo::Listener | ApplyTo::FilterChain | ApplyTo::NetworkFilter | ApplyTo::HttpFilter => {
            let Some(listener) = &m.listener else {
                out.error(
                    &mpath,
                    "Envoy filter: applyTo for listener class objects cannot have non listener \
                     match",
                );
                return;
            };
            let Some(filter) = listener
                .filter_chain
                .as_ref()
                .and_then(|fc| fc.filter.as_ref())
            else {
                return;
            };
            let fpath = format!("{mpath}.listener.filterChain.filter");
            if matches!(cp.apply_to, ApplyTo::Listener | ApplyTo::FilterChain) {
                out.warn(
                    &fpath,
                    format!(
                        "Envoy filter: filter match has no effect when used with {}",
                        cp.apply_to.as_str()
                    ),
                );
            }
            if filter.name.is_empty() {
                out.error(
                    format!("{fpath}.name"),
                    "Envoy filter: filter match has no name to match on",
                );
                return;
            }
            if let Some(sub) = &filter.sub_filter {
                if cp.apply_to != ApplyTo::HttpFilter {
                    out.error(
                        format!("{fpath}.subFilter"),
                        "Envoy filter: subfilter match can be used with applyTo HTTP_FILTER only",
                    );
                    return;
                }
                if filter.name != HCM && filter.name != "envoy.http_connection_manager" {
                    out.error(
                        format!("{fpath}.name"),
                        format!("Envoy filter: subfilter match requires filter match with {HCM}"),
                    );
                    return;
                }
                if sub.name.is_empty() {
                    out.error(
                        format!("{fpath}.subFilter.name"),
                        "Envoy filter: subfilter match has no name to match on",
                    );
                    return;
                }
                warn_deprecated_name(&sub.name, &format!("{fpath}.subFilter.name"), out);
            }
            warn_deprecated_name(&filter.name, &format!("{fpath}.name"), out);
        }
        ApplyTo::RouteConfiguration | ApplyTo::VirtualHost | ApplyTo::HttpRoute
            if m.route_configuration.is_none() =>
        {
            out.error(
                &mpath,
                "Envoy filter: applyTo for http route class objects cannot have non route \
                     configuration match",
            );
        }
        ApplyTo::Cluster if m.cluster.is_none() => {
            out.error(
                &mpath,
                "Envoy filter: applyTo for cluster class objects cannot have non cluster match",
            );
        }
        _ => {}
    }
}

fn warn_deprecated_name(name: &str, path: &str, out: &mut Issues) {
    if let Some((_, new)) = DEPRECATED_FILTER_NAMES.iter().find(|(old, _)| *old == name) {
        out.warn(
            path,
            format!("using deprecated filter name {name:?}; use {new:?} instead"),
        );
    }
}

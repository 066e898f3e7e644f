//! Istio rules that mesh reports as warnings instead of errors.
//!
//! Each concerns a part of an object that is inert: Istio would refuse the object when applied,
//! but what the rule protects against cannot happen in mesh, because compilation ignores that
//! part (a rule that routes nowhere, a Gateway without servers, an EnvoyFilter patch that is not
//! a local rate limit, which mesh never applies). Istio's own `istioctl analyze` fixtures hold
//! such objects, and a user who has them in a cluster dump should see a warning, not lose the
//! rest of the object. Everything else Istio rejects stays an error.

use crate::kinds::{Issue, Severity};

/// `(kind, text in the message, what mesh does instead)`.
const INERT: &[(&str, &str, &str)] = &[
    (
        "VirtualService",
        "HTTP route, redirect or direct_response is required",
        "the rule is ignored",
    ),
    (
        "VirtualService",
        "http, tcp or tls must be provided in virtual service",
        "the VirtualService routes nothing and is ignored",
    ),
    (
        "VirtualService",
        "wildcard host * is not allowed for virtual services bound to the mesh gateway",
        "the `*` host is ignored for sidecars",
    ),
    (
        "VirtualService",
        "invalid value for gateway name",
        "no Gateway has that name, so the binding routes nothing",
    ),
    (
        "VirtualService",
        "empty domain name not allowed",
        "the destination without a host is ignored",
    ),
    (
        "VirtualService",
        "a route needs at least one destination",
        "the route is ignored",
    ),
    (
        "VirtualService",
        "is not a compatible subset of",
        "the SNI host is matched as written",
    ),
    (
        "Gateway",
        "gateway must have at least one server",
        "the Gateway serves nothing",
    ),
    (
        "Gateway",
        "TLS requires a server certificate",
        "the server is not started",
    ),
    (
        "Gateway",
        "TLS requires a private key",
        "the server is not started",
    ),
    (
        "Gateway",
        "port names in servers must be unique",
        "the servers are told apart by port, not name",
    ),
    (
        "ServiceEntry",
        "hosts must be FQDN if no endpoints are provided",
        "the wildcard host gets no endpoints",
    ),
    (
        "EnvoyFilter",
        "Envoy filter: missing patch",
        "the patch is ignored (mesh applies only local rate limit patches)",
    ),
    (
        "EnvoyFilter",
        "Envoy filter: applyTo for",
        "the patch is ignored (mesh applies only local rate limit patches)",
    ),
    (
        "EnvoyFilter",
        "in an EnvoyFilter match",
        "the patch is ignored (mesh applies only local rate limit patches)",
    ),
];

/// Downgrades the inert findings of a `kind` document to warnings that say why.
pub(crate) fn soften(kind: &str, issues: &mut [Issue]) {
    for issue in issues.iter_mut().filter(|i| i.severity == Severity::Error) {
        if let Some((_, _, instead)) = INERT
            .iter()
            .find(|(k, text, _)| *k == kind && issue.message.contains(text))
        {
            issue.severity = Severity::Warning;
            issue.message = format!(
                "{} (Istio rejects this when applied; mesh accepts it: {instead})",
                issue.message
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_rules_are_softened() {
        let mut issues = vec![
            Issue {
                path: "spec".into(),
                severity: Severity::Error,
                message: "gateway must have at least one server".into(),
            },
            Issue {
                path: "spec".into(),
                severity: Severity::Error,
                message: "something else".into(),
            },
        ];
        soften("Gateway", &mut issues);
        assert_eq!(issues[0].severity, Severity::Warning);
        assert!(
            issues[0]
                .message
                .ends_with("mesh accepts it: the Gateway serves nothing)")
        );
        assert_eq!(issues[1].severity, Severity::Error);
        let mut other_kind = vec![Issue {
            path: "spec".into(),
            severity: Severity::Error,
            message: "gateway must have at least one server".into(),
        }];
        soften("VirtualService", &mut other_kind);
        assert_eq!(other_kind[0].severity, Severity::Error);
    }
}

//! Fields mesh parses (so the YAML is accepted and checked) but does not apply yet. Each is a
//! warning that names the field, so nobody believes a setting is in force when it is not.

use crate::{
    diag::Diagnostic,
    kinds::Severity,
    load::{Config, Object, tree::Node},
};

/// `(kind, path pattern, what to say)`. In patterns, `[*]` is any index and `*` any map key.
const NOT_APPLIED: &[(&str, &str, &str)] = &[
    (
        "DestinationRule",
        "spec.trafficPolicy.connectionPool.tcp.maxConnectionDuration",
        "maxConnectionDuration is not applied yet (hyper's pool has no such setting)",
    ),
    (
        "DestinationRule",
        "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive",
        "tcpKeepalive is not applied yet",
    ),
    (
        "DestinationRule",
        "spec.trafficPolicy.connectionPool.http.maxConcurrentStreams",
        "maxConcurrentStreams is not applied yet",
    ),
    (
        "DestinationRule",
        "spec.trafficPolicy.connectionPool.http.useClientProtocol",
        "useClientProtocol is not applied yet: the port's protocol decides HTTP/1.1 or HTTP/2",
    ),
    (
        "DestinationRule",
        "spec.trafficPolicy.connectionPool.http.http2KeepAlive",
        "http2KeepAlive is not applied yet",
    ),
    (
        "DestinationRule",
        "spec.trafficPolicy.portLevelSettings[*].connectionPool.tcp.maxConnectionDuration",
        "maxConnectionDuration is not applied yet (hyper's pool has no such setting)",
    ),
    (
        "DestinationRule",
        "spec.trafficPolicy.portLevelSettings[*].connectionPool.tcp.tcpKeepalive",
        "tcpKeepalive is not applied yet",
    ),
    (
        "DestinationRule",
        "spec.trafficPolicy.portLevelSettings[*].connectionPool.http.maxConcurrentStreams",
        "maxConcurrentStreams is not applied yet",
    ),
    (
        "DestinationRule",
        "spec.trafficPolicy.portLevelSettings[*].connectionPool.http.useClientProtocol",
        "useClientProtocol is not applied yet: the port's protocol decides HTTP/1.1 or HTTP/2",
    ),
    (
        "DestinationRule",
        "spec.trafficPolicy.portLevelSettings[*].connectionPool.http.http2KeepAlive",
        "http2KeepAlive is not applied yet",
    ),
    (
        "DestinationRule",
        "spec.subsets[*].trafficPolicy.connectionPool.tcp.maxConnectionDuration",
        "maxConnectionDuration is not applied yet (hyper's pool has no such setting)",
    ),
    (
        "DestinationRule",
        "spec.subsets[*].trafficPolicy.connectionPool.tcp.tcpKeepalive",
        "tcpKeepalive is not applied yet",
    ),
    (
        "DestinationRule",
        "spec.subsets[*].trafficPolicy.connectionPool.http.maxConcurrentStreams",
        "maxConcurrentStreams is not applied yet",
    ),
    (
        "DestinationRule",
        "spec.subsets[*].trafficPolicy.connectionPool.http.useClientProtocol",
        "useClientProtocol is not applied yet: the port's protocol decides HTTP/1.1 or HTTP/2",
    ),
    (
        "DestinationRule",
        "spec.subsets[*].trafficPolicy.connectionPool.http.http2KeepAlive",
        "http2KeepAlive is not applied yet",
    ),
    (
        "DestinationRule",
        "spec.subsets[*].trafficPolicy.portLevelSettings[*].connectionPool.tcp.maxConnectionDuration",
        "maxConnectionDuration is not applied yet (hyper's pool has no such setting)",
    ),
    (
        "DestinationRule",
        "spec.subsets[*].trafficPolicy.portLevelSettings[*].connectionPool.tcp.tcpKeepalive",
        "tcpKeepalive is not applied yet",
    ),
    (
        "DestinationRule",
        "spec.subsets[*].trafficPolicy.portLevelSettings[*].connectionPool.http.maxConcurrentStreams",
        "maxConcurrentStreams is not applied yet",
    ),
    (
        "DestinationRule",
        "spec.subsets[*].trafficPolicy.portLevelSettings[*].connectionPool.http.useClientProtocol",
        "useClientProtocol is not applied yet: the port's protocol decides HTTP/1.1 or HTTP/2",
    ),
    (
        "DestinationRule",
        "spec.subsets[*].trafficPolicy.portLevelSettings[*].connectionPool.http.http2KeepAlive",
        "http2KeepAlive is not applied yet",
    ),
    (
        "VirtualService",
        "spec.http[*].retries.retryRemoteLocalities",
        "retryRemoteLocalities is ignored: mesh has no localities",
    ),
    (
        "VirtualService",
        "spec.http[*].delegate",
        "VirtualService delegation is not applied yet",
    ),
    (
        "VirtualService",
        "spec.http[*].match[*].statPrefix",
        "per-match stat prefixes are not applied",
    ),
    (
        "DestinationRule",
        "spec.trafficPolicy.loadBalancer.localityLbSetting",
        "locality load balancing is not applied yet",
    ),
    (
        "DestinationRule",
        "spec.trafficPolicy.loadBalancer.warmup",
        "slow-start warmup is not applied yet",
    ),
    (
        "DestinationRule",
        "spec.trafficPolicy.loadBalancer.warmupDurationSecs",
        "slow-start warmup is not applied yet",
    ),
    (
        "DestinationRule",
        "spec.trafficPolicy.tunnel",
        "tunneling is not applied",
    ),
    (
        "DestinationRule",
        "spec.trafficPolicy.proxyProtocol",
        "PROXY protocol is not applied",
    ),
    (
        "DestinationRule",
        "spec.trafficPolicy.retryBudget",
        "retry budgets in DestinationRule are not applied yet",
    ),
    (
        "DestinationRule",
        "spec.subsets[*].trafficPolicy.tunnel",
        "tunneling is not applied",
    ),
    (
        "DestinationRule",
        "spec.workloadSelector",
        "DestinationRule workloadSelector is not applied yet; the rule applies to every client",
    ),
    (
        "Gateway",
        "spec.servers[*].tls.cipherSuites",
        "TLS cipher suite selection is not applied; rustls' defaults are used",
    ),
    (
        "Sidecar",
        "spec.inboundConnectionPool",
        "Sidecar inboundConnectionPool is not applied yet",
    ),
    (
        "Sidecar",
        "spec.outboundTrafficPolicy.egressProxy",
        "Sidecar egressProxy is not applied yet",
    ),
    (
        "Sidecar",
        "spec.ingress",
        "Sidecar ingress listeners are not applied yet; use `mesh run --inbound`",
    ),
    (
        "ServiceEntry",
        "spec.endpoints[*].network",
        "multi-network endpoints are not applied",
    ),
    (
        "ServiceEntry",
        "spec.endpoints[*].locality",
        "endpoint locality is not applied yet",
    ),
    (
        "WorkloadEntry",
        "spec.network",
        "multi-network endpoints are not applied",
    ),
    (
        "WorkloadEntry",
        "spec.locality",
        "endpoint locality is not applied yet",
    ),
    (
        "AuthorizationPolicy",
        "spec.targetRef",
        "targetRef (Gateway API attachment) is not applied yet; use selector",
    ),
    (
        "AuthorizationPolicy",
        "spec.targetRefs",
        "targetRefs (Gateway API attachment) is not applied yet; use selector",
    ),
    (
        "RequestAuthentication",
        "spec.targetRef",
        "targetRef (Gateway API attachment) is not applied yet; use selector",
    ),
    (
        "RequestAuthentication",
        "spec.targetRefs",
        "targetRefs (Gateway API attachment) is not applied yet; use selector",
    ),
    (
        "PeerAuthentication",
        "spec.targetRef",
        "targetRef is not applied yet; use selector",
    ),
];

/// Warnings for every not-yet-applied field present in `config`.
pub fn not_applied(config: &Config, out: &mut Vec<Diagnostic>) {
    scan(&config.virtual_services, "VirtualService", out);
    scan(&config.destination_rules, "DestinationRule", out);
    scan(&config.gateways, "Gateway", out);
    scan(&config.sidecars, "Sidecar", out);
    scan(&config.service_entries, "ServiceEntry", out);
    scan(&config.workload_entries, "WorkloadEntry", out);
    scan(&config.authorization_policies, "AuthorizationPolicy", out);
    scan(
        &config.request_authentications,
        "RequestAuthentication",
        out,
    );
    scan(&config.peer_authentications, "PeerAuthentication", out);
    scan(&config.envoy_filters, "EnvoyFilter", out);
}

fn scan<S>(objects: &[Object<S>], kind: &str, out: &mut Vec<Diagnostic>) {
    let rules: Vec<_> = NOT_APPLIED.iter().filter(|(k, ..)| *k == kind).collect();
    if rules.is_empty() {
        return;
    }
    for obj in objects {
        obj.origin.tree.walk(&mut |path, key, _value: &Node| {
            for (_, pattern, note) in &rules {
                if path_matches(pattern, path) {
                    out.push(obj.diagnostic_at(
                        key.start(),
                        Severity::Warning,
                        format!("{path}: {note} (the field is accepted and ignored)"),
                    ));
                }
            }
        });
    }
}

/// Whether a concrete path (`spec.http[3].delegate`) fits a pattern (`spec.http[*].delegate`).
pub(crate) fn path_matches(pattern: &str, path: &str) -> bool {
    let (mut p, mut s) = (pattern.as_bytes(), path.as_bytes());
    loop {
        match (p.first(), s.first()) {
            (None, None) => return true,
            (Some(b'['), Some(b'[')) if p.starts_with(b"[*]") => {
                let Some(close) = s.iter().position(|&c| c == b']') else {
                    return false;
                };
                p = &p[3..];
                s = &s[close + 1..];
            }
            (Some(b'*'), Some(_)) => {
                let end = s
                    .iter()
                    .position(|&c| c == b'.' || c == b'[')
                    .unwrap_or(s.len());
                p = &p[1..];
                s = &s[end..];
            }
            (Some(a), Some(b)) if a == b => {
                p = &p[1..];
                s = &s[1..];
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::path_matches;

    #[test]
    fn fields_not_applied_are_named() {
        let report = crate::Loader::new().check_str(
            "t.yaml",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec:\n  host: r\n  subsets:\n  - name: v1\n    labels: {version: v1}\n    trafficPolicy:\n      connectionPool: {tcp: {tcpKeepalive: {time: 10s}}}\n",
        );
        let w: Vec<_> = report
            .diagnostics
            .warnings()
            .map(|d| (d.line, d.message.clone()))
            .collect();
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].0, 10);
        assert!(w[0].1.starts_with("spec.subsets[0].trafficPolicy.connectionPool.tcp.tcpKeepalive: tcpKeepalive is not applied yet"), "{w:?}");
    }

    #[test]
    fn patterns() {
        assert!(path_matches(
            "spec.http[*].delegate",
            "spec.http[12].delegate"
        ));
        assert!(!path_matches(
            "spec.http[*].delegate",
            "spec.http[1].delegatex"
        ));
        assert!(!path_matches("spec.http[*].delegate", "spec.http[1]"));
        assert!(path_matches(
            "spec.portLevelMtls.*.mode",
            "spec.portLevelMtls.8080.mode"
        ));
    }
}

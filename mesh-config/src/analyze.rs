//! What `istioctl analyze` reports: configs that Istio accepts but that cannot work as written.
//! Warnings (errors under `--strict`), each with Istio's analyzer code so users can look it up.

use std::collections::BTreeMap;

use mesh_core::{CompiledMesh, Host, Selector, model::MESH_GATEWAY};

use crate::{
    compile::routes::{bound_gateways, qualify_gateway},
    diag::Diagnostic,
    kinds::{Severity, common::WorkloadSelector},
    load::{Config, LoadOptions, Object},
};

/// Appends the analysis findings for `config` (already compiled into `mesh`).
pub fn analyze(
    config: &Config,
    mesh: &CompiledMesh,
    opts: &LoadOptions,
    out: &mut Vec<Diagnostic>,
) {
    virtual_service_references(config, mesh, out);
    conflicting_virtual_services(config, out);
    selectors_that_select_nothing(config, out);
    authorization_without_request_authentication(config, opts, out);
}

fn warn<S>(obj: &Object<S>, path: &str, message: String) -> Diagnostic {
    obj.diagnostic(path, Severity::Warning, message)
}

/// IST0101: gateways, hosts and subsets a VirtualService names must exist.
fn virtual_service_references(config: &Config, mesh: &CompiledMesh, out: &mut Vec<Diagnostic>) {
    let gateways: Vec<String> = config.gateways.iter().map(Object::key).collect();
    for vs in &config.virtual_services {
        for (i, g) in vs.spec.gateways.iter().enumerate() {
            let q = qualify_gateway(g, &vs.namespace);
            if q != MESH_GATEWAY && !gateways.contains(&q) {
                out.push(warn(
                    vs,
                    &format!("spec.gateways[{i}]"),
                    format!("IST0101 Referenced gateway not found: {q:?}: define a Gateway {q} or fix the name"),
                ));
            }
        }
        let mut dests = Vec::new();
        for (i, r) in vs.spec.http.iter().enumerate() {
            for (j, d) in r.route.iter().enumerate() {
                dests.push((
                    format!("spec.http[{i}].route[{j}].destination"),
                    &d.destination,
                ));
            }
            if let Some(m) = &r.mirror {
                dests.push((format!("spec.http[{i}].mirror"), m));
            }
            for (j, m) in r.mirrors.iter().enumerate() {
                dests.push((
                    format!("spec.http[{i}].mirrors[{j}].destination"),
                    &m.destination,
                ));
            }
        }
        for (i, r) in vs.spec.tcp.iter().enumerate() {
            for (j, d) in r.route.iter().enumerate() {
                dests.push((
                    format!("spec.tcp[{i}].route[{j}].destination"),
                    &d.destination,
                ));
            }
        }
        for (i, r) in vs.spec.tls.iter().enumerate() {
            for (j, d) in r.route.iter().enumerate() {
                dests.push((
                    format!("spec.tls[{i}].route[{j}].destination"),
                    &d.destination,
                ));
            }
        }
        for (path, d) in dests {
            let host = Host::qualify(&d.host, &vs.namespace);
            if !host.is_wildcard() && mesh.service(host.as_str()).is_none() {
                out.push(warn(
                    vs,
                    &format!("{path}.host"),
                    format!(
                        "IST0101 Referenced host not found: {:?}: no Service or ServiceEntry provides {host}",
                        d.host
                    ),
                ));
            }
            if let Some(subset) = d.subset.as_deref().filter(|s| !s.is_empty()) {
                let defined = mesh
                    .destination_policy(host.as_str(), &vs.namespace)
                    .is_some_and(|p| p.subset(subset).is_some());
                if !defined {
                    out.push(warn(
                        vs,
                        &format!("{path}.subset"),
                        format!(
                            "IST0101 Referenced host+subset in destinationrule not found: \"{}+{subset}\": add subset {subset} to a DestinationRule for {host}, or requests to it fail with 503",
                            d.host
                        ),
                    ));
                }
            }
        }
    }
}

/// IST0109: two VirtualServices for the same host on the same gateway; only the first is used.
fn conflicting_virtual_services(config: &Config, out: &mut Vec<Diagnostic>) {
    let mut seen: BTreeMap<(String, Host), String> = BTreeMap::new();
    for vs in &config.virtual_services {
        // On Gateways Istio merges VirtualServices for the same host; for sidecars it does not.
        for gateway in bound_gateways(vs).into_iter().filter(|g| g == MESH_GATEWAY) {
            for (i, h) in vs.spec.hosts.iter().enumerate() {
                let host = Host::qualify(h, &vs.namespace);
                match seen.get(&(gateway.clone(), host.clone())) {
                    Some(first) if *first != vs.key() => out.push(warn(
                        vs,
                        &format!("spec.hosts[{i}]"),
                        format!(
                            "IST0109 The VirtualServices {first},{} associated with mesh gateway define the same host {host:?}: only {first} is used; merge them into one",
                            vs.key(),
                        ),
                    )),
                    Some(_) => {}
                    None => {
                        seen.insert((gateway.clone(), host), vs.key());
                    }
                }
            }
        }
    }
}

/// The workloads the config describes: WorkloadEntries and ServiceEntry inline endpoints, with
/// their namespaces.
fn workloads(config: &Config) -> Vec<(&str, &BTreeMap<String, String>)> {
    let mut out: Vec<(&str, &BTreeMap<String, String>)> = config
        .workload_entries
        .iter()
        .map(|we| (we.namespace.as_str(), &we.spec.labels))
        .collect();
    for se in &config.service_entries {
        out.extend(
            se.spec
                .endpoints
                .iter()
                .map(|e| (se.namespace.as_str(), &e.labels)),
        );
    }
    out
}

/// IST0127: a selector that no workload matches. Only checked when the config describes
/// workloads at all (WorkloadEntries or ServiceEntry endpoints): without them mesh cannot know.
fn selectors_that_select_nothing(config: &Config, out: &mut Vec<Diagnostic>) {
    let workloads = workloads(config);
    if workloads.is_empty() {
        return;
    }
    let check = |ns: &str, labels: &BTreeMap<String, String>, emit: &mut dyn FnMut(String)| {
        if labels.is_empty() {
            return;
        }
        let sel = Selector::new(labels.clone());
        if !workloads
            .iter()
            .any(|(wns, l)| *wns == ns && sel.matches(l))
        {
            let text = labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            emit(format!(
                "IST0127 No matching workloads for this resource with the following labels: {text}"
            ));
        }
    };
    let sel = |s: &Option<WorkloadSelector>| {
        s.as_ref()
            .map(|s| s.match_labels.clone())
            .unwrap_or_default()
    };
    for o in &config.authorization_policies {
        check(&o.namespace, &sel(&o.spec.selector), &mut |m| {
            out.push(warn(o, "spec.selector", m))
        });
    }
    for o in &config.peer_authentications {
        check(&o.namespace, &sel(&o.spec.selector), &mut |m| {
            out.push(warn(o, "spec.selector", m))
        });
    }
    for o in &config.request_authentications {
        check(&o.namespace, &sel(&o.spec.selector), &mut |m| {
            out.push(warn(o, "spec.selector", m))
        });
    }
    for o in &config.sidecars {
        let labels = o
            .spec
            .workload_selector
            .as_ref()
            .map(|s| s.labels.clone())
            .unwrap_or_default();
        check(&o.namespace, &labels, &mut |m| {
            out.push(warn(o, "spec.workloadSelector", m))
        });
    }
}

/// An ALLOW/DENY rule on `requestPrincipals` can only match a request with a validated JWT: with
/// no RequestAuthentication for the workload it never matches (an ALLOW then denies everything
/// it was meant to allow).
fn authorization_without_request_authentication(
    config: &Config,
    opts: &LoadOptions,
    out: &mut Vec<Diagnostic>,
) {
    for ap in &config.authorization_policies {
        let labels = ap
            .spec
            .selector
            .as_ref()
            .map(|s| s.match_labels.clone())
            .unwrap_or_default();
        let covered = config.request_authentications.iter().any(|ra| {
            let ra_labels = ra
                .spec
                .selector
                .as_ref()
                .map(|s| s.match_labels.clone())
                .unwrap_or_default();
            let ns_ok = ra.namespace == ap.namespace || ra.namespace == opts.root_namespace;
            // The RequestAuthentication covers the policy's workloads if its selector is no
            // narrower than the policy's.
            ns_ok && Selector::new(ra_labels).matches(&labels)
        });
        if covered {
            continue;
        }
        for (i, rule) in ap.spec.rules.iter().flatten().enumerate() {
            for (j, from) in rule.from.iter().flatten().enumerate() {
                let Some(src) = &from.source else { continue };
                if !src.request_principals.is_empty() || !src.not_request_principals.is_empty() {
                    out.push(warn(
                        ap,
                        &format!("spec.rules[{i}].from[{j}].source"),
                        "requestPrincipals can never match: no RequestAuthentication applies to the workloads this policy selects, so requests carry no validated JWT; add a RequestAuthentication".to_owned(),
                    ));
                }
            }
            for (j, cond) in rule.when.iter().enumerate() {
                if cond
                    .key
                    .as_deref()
                    .is_some_and(|k| k.starts_with("request.auth."))
                {
                    out.push(warn(
                        ap,
                        &format!("spec.rules[{i}].when[{j}].key"),
                        "request.auth conditions can never match: no RequestAuthentication applies to the workloads this policy selects; add a RequestAuthentication".to_owned(),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Loader;

    /// The analysis warnings for `yaml`, as `"Kind name: message"`.
    fn warnings(yaml: &str) -> Vec<String> {
        let report = Loader::new().check_str("t.yaml", yaml);
        assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
        report
            .diagnostics
            .warnings()
            .map(|d| format!("{} {}: {}", d.kind, d.name, d.message))
            .collect()
    }

    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec:\n  selector: {app: reviews}\n  ports: [{name: http, port: 9080}]\n---\n";
    const WORKLOAD: &str = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: r1}\nspec: {address: 10.0.0.1, labels: {app: reviews, version: v1}}\n---\n";

    #[test]
    fn missing_gateways_hosts_and_subsets() {
        let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  gateways: [mesh, ingress]\n  http:\n  - route: [{destination: {host: reviews, subset: v2}, weight: 1}, {destination: {host: nowhere}, weight: 0}]\n";
        let w = warnings(&format!("{SERVICE}{vs}"));
        assert!(w.contains(&"VirtualService reviews: IST0101 Referenced gateway not found: \"default/ingress\": define a Gateway default/ingress or fix the name".to_owned()), "{w:?}");
        assert!(
            w.iter().any(|m| m
                .contains("Referenced host+subset in destinationrule not found: \"reviews+v2\"")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|m| m.contains("Referenced host not found: \"nowhere\"")),
            "{w:?}"
        );
        assert!(
            !w.iter()
                .any(|m| m.contains("Referenced host not found: \"reviews\"")),
            "{w:?}"
        );

        let fixed = format!(
            "{SERVICE}{vs}---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: ingress}}\nspec:\n  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ['*']}}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews}}\nspec: {{host: reviews, subsets: [{{name: v2, labels: {{version: v2}}}}]}}\n"
        );
        let w = warnings(&fixed);
        assert!(
            !w.iter()
                .any(|m| m.contains("gateway not found") || m.contains("host+subset")),
            "{w:?}"
        );
    }

    #[test]
    fn two_virtual_services_for_one_host() {
        let vs = |name: &str| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: [reviews.default.svc.cluster.local]\n  http: [{{route: [{{destination: {{host: reviews}}}}]}}]\n---\n"
            )
        };
        let w = warnings(&format!("{SERVICE}{}{}", vs("a"), vs("b")));
        assert!(w.iter().any(|m| m.starts_with("VirtualService b: IST0109 The VirtualServices default/a,default/b associated with mesh gateway define the same host")), "{w:?}");
    }

    #[test]
    fn selectors_that_select_nothing() {
        let pa = |app: &str| {
            format!(
                "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: pa-{app}}}\nspec:\n  selector: {{matchLabels: {{app: {app}}}}}\n  mtls: {{mode: STRICT}}\n---\n"
            )
        };
        let w = warnings(&format!("{WORKLOAD}{}{}", pa("reviews"), pa("ghost")));
        let ist0127: Vec<_> = w.iter().filter(|m| m.contains("IST0127")).collect();
        assert_eq!(ist0127, [&"PeerAuthentication pa-ghost: IST0127 No matching workloads for this resource with the following labels: app=ghost".to_owned()]);
        // Without any workload in the config, mesh cannot tell: no warning.
        assert!(!warnings(&pa("ghost")).iter().any(|m| m.contains("IST0127")));
    }

    #[test]
    fn request_principals_need_a_request_authentication() {
        let ap = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: jwt-only}\nspec:\n  selector: {matchLabels: {app: reviews}}\n  rules: [{from: [{source: {requestPrincipals: ['*']}}]}]\n---\n";
        let w = warnings(ap);
        assert!(
            w.iter().any(|m| m
                .starts_with("AuthorizationPolicy jwt-only: requestPrincipals can never match")),
            "{w:?}"
        );
        let ra = "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt, namespace: istio-system}\nspec:\n  jwtRules: [{issuer: https://issuer.example}]\n";
        let w = warnings(&format!("{ap}{ra}"));
        assert!(
            !w.iter().any(|m| m.contains("can never match")),
            "a mesh-wide RequestAuthentication covers it: {w:?}"
        );
    }

    #[test]
    fn strict_makes_analysis_an_error() {
        let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [r]\n  http: [{route: [{destination: {host: r}}]}]\n";
        assert!(
            !Loader::new()
                .check_str("t.yaml", yaml)
                .diagnostics
                .has_errors()
        );
        let strict = Loader::new().strict(true).check_str("t.yaml", yaml);
        assert!(strict.diagnostics.has_errors());
        assert!(strict.into_mesh().is_err());
    }
}

//! Admission validation of a VirtualService: the CRD's schema constraints and CEL rules that serde
//! cannot express, and the rules of istiod's validating webhook, in Istio's wording.

use std::collections::BTreeMap;

use super::{
    HttpDirectResponse, HttpFaultInjection, HttpMatchRequest, HttpRedirect, HttpRetry, HttpRewrite,
    HttpRoute, HttpRouteDestination, RouteDestination, TcpRoute, TlsRoute, VirtualService,
    rules::*,
};
use crate::kinds::{Issues, Meta, common::StringMatch, rules::*};

// === string matches ===

fn regex_error_line(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("error:"))
        .map(|l| l.trim_start_matches("error:").trim().to_string())
        .unwrap_or_else(|| text.lines().map(str::trim).collect::<Vec<_>>().join(" "))
}

/// A regex as Envoy compiles it (RE2 syntax, at most 1024 characters).
fn validate_regex(re: &str, where_: &str) -> Result<(), String> {
    if re.len() > 1024 {
        return Err(format!(
            "{where_:?}: regex is too large, max length allowed is 1024"
        ));
    }
    regex::Regex::new(re).map(|_| ()).map_err(|e| {
        format!(
            "{where_:?}: error parsing regexp: {}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)",
            regex_error_line(&e)
        )
    })
}

fn validate_string_match_regex(sm: &StringMatch, where_: &str) -> Result<(), String> {
    match sm {
        StringMatch::Regex(re) if re.is_empty() => Err(format!(
            "{where_:?}: regex string match should not be empty"
        )),
        StringMatch::Regex(re) => validate_regex(re, where_),
        _ => Ok(()),
    }
}

fn validate_string_match(sm: &StringMatch, where_: &str) -> Result<(), String> {
    match sm {
        StringMatch::Prefix(p) if p.is_empty() => Err(format!(
            "{where_:?}: prefix string match should not be empty"
        )),
        _ => validate_string_match_regex(sm, where_),
    }
}

// === impl VirtualService ===

/// `internal.istio.io/route-semantics: gateway` marks objects istiod generated from Gateway API
/// routes; some checks are relaxed for them, as istiod does.
fn has_gateway_route_semantics(meta: &Meta<'_>) -> bool {
    meta.metadata
        .annotations
        .get("internal.istio.io/route-semantics")
        .is_some_and(|v| v == "gateway")
}

impl VirtualService {
    /// What Istio rejects (errors) or warns about when this VirtualService is applied.
    pub fn validate(&self, meta: &Meta<'_>, out: &mut Issues) {
        validate_dry_run_annotation(meta, out);
        let gateway_semantics = has_gateway_route_semantics(meta);
        let delegate = self.hosts.is_empty();
        if delegate {
            if !self.gateways.is_empty() {
                out.error(
                    "spec.gateways",
                    "delegate virtual service must have no gateways specified",
                );
            }
            if !self.tls.is_empty() {
                out.error(
                    "spec.tls",
                    "delegate virtual service must have no tls route specified",
                );
            }
            if !self.tcp.is_empty() {
                out.error(
                    "spec.tcp",
                    "delegate virtual service must have no tcp route specified",
                );
            }
        }

        let applies_to_gateway =
            !self.gateways.is_empty() && !self.gateways.iter().any(|g| g == "mesh");
        let applies_to_mesh = !applies_to_gateway;
        if !self.gateways.is_empty() {
            validate_gateway_names(out, "spec.gateways", &self.gateways, gateway_semantics);
        }

        if !applies_to_gateway {
            for (i, http) in self.http.iter().enumerate() {
                for (j, m) in http.r#match.iter().enumerate() {
                    for (field, map) in [
                        ("headers", &m.headers),
                        ("withoutHeaders", &m.without_headers),
                    ] {
                        for key in map.keys().filter(|k| is_jwt_claim_route(k)) {
                            out.error(
                                format!("spec.http[{i}].match[{j}].{field}.{key}"),
                                format!(
                                    "JWT claim based routing (key: {key}) is only supported for gateway, found no gateways: {:?}; bind the VirtualService to an ingress gateway in spec.gateways",
                                    self.gateways
                                ),
                            );
                        }
                    }
                }
            }
        }

        let sni = self
            .tls
            .iter()
            .any(|t| t.r#match.iter().any(|m| !m.sni_hosts.is_empty()));
        let mut all_hosts_valid = true;
        for (i, host) in self.hosts.iter().enumerate() {
            let res = if applies_to_gateway {
                validate_wildcard_domain_for_gateway(sni, host)
            } else {
                validate_wildcard_domain(host)
            };
            match res {
                Err(e) => {
                    if !is_ip_address(host) {
                        out.error(format!("spec.hosts[{i}]"), e);
                        all_hosts_valid = false;
                    }
                }
                Ok(()) if applies_to_mesh && host == "*" => {
                    out.error(
                        format!("spec.hosts[{i}]"),
                        "wildcard host * is not allowed for virtual services bound to the mesh gateway; name the hosts, or bind the VirtualService to a gateway",
                    );
                    all_hosts_valid = false;
                }
                Ok(()) => {}
            }
        }
        if all_hosts_valid {
            for i in 0..self.hosts.len() {
                for j in i + 1..self.hosts.len() {
                    if hosts_match(&self.hosts[i], &self.hosts[j]) {
                        out.error(
                            format!("spec.hosts[{j}]"),
                            format!(
                                "duplicate hosts in virtual service: {} & {}",
                                self.hosts[i], self.hosts[j]
                            ),
                        );
                    }
                }
            }
        }

        if self.http.is_empty() && self.tcp.is_empty() && self.tls.is_empty() {
            out.error(
                "spec",
                "http, tcp or tls must be provided in virtual service",
            );
        }
        for (i, route) in self.http.iter().enumerate() {
            validate_http_route(
                out,
                &format!("spec.http[{i}]"),
                route,
                delegate,
                gateway_semantics,
            );
        }
        for (i, route) in self.tls.iter().enumerate() {
            validate_tls_route(
                out,
                &format!("spec.tls[{i}]"),
                route,
                self,
                gateway_semantics,
            );
        }
        for (i, route) in self.tcp.iter().enumerate() {
            validate_tcp_route(out, &format!("spec.tcp[{i}]"), route, gateway_semantics);
        }
        validate_export_to(meta.namespace, &self.export_to, ExportToOf::Other, out);
        self.warn_unreachable_rules(out);
    }

    /// istiod's warnings about rules that can never match: a rule after a catch-all rule, and
    /// matches repeated from an earlier rule.
    fn warn_unreachable_rules(&self, out: &mut Issues) {
        fn route_name(name: Option<&str>, n: usize) -> String {
            match name.filter(|s| !s.is_empty()) {
                Some(name) => format!("{name:?}"),
                None => format!("#{n}"),
            }
        }
        let mut seen: Vec<(HttpMatchRequest, usize)> = Vec::new();
        let mut catch_all = false;
        for (n, route) in self.http.iter().enumerate() {
            let name = route_name(route.name.as_deref(), n);
            let path = format!("spec.http[{n}]");
            if route.r#match.is_empty() {
                if catch_all {
                    out.warn(&path, format!("virtualService rule {name} not used (only the last rule can have no matches)"));
                }
                catch_all = true;
                continue;
            }
            let mut duplicates = 0;
            for (m, mr) in route.r#match.iter().enumerate() {
                if catch_all {
                    out.warn(&path, format!("virtualService rule {name} not used (route without matches defined before)"));
                    continue;
                }
                let key = HttpMatchRequest {
                    name: None,
                    ..mr.clone()
                };
                if let Some((_, dup)) = seen.iter().find(|(k, _)| *k == key) {
                    let match_name = route_name(mr.name.as_deref(), m);
                    let dup_name = route_name(self.http[*dup].name.as_deref(), *dup);
                    out.warn(
                        format!("{path}.match[{m}]"),
                        format!("virtualService rule {name} match {match_name} is not used (duplicate/overlapping match in rule {dup_name})"),
                    );
                    duplicates += 1;
                    continue;
                }
                seen.push((key, n));
            }
            if duplicates == route.r#match.len() {
                out.warn(
                    &path,
                    format!(
                        "virtualService rule {name} not used (all matches used by prior rules)"
                    ),
                );
            }
        }
        l4_unreachable(out, "spec.tcp", self.tcp.iter().map(|r| &r.r#match));
        l4_unreachable(out, "spec.tls", self.tls.iter().map(|r| &r.r#match));
    }
}

fn l4_unreachable<'a, M: PartialEq + 'a>(
    out: &mut Issues,
    field: &str,
    routes: impl Iterator<Item = &'a Vec<M>>,
) {
    let mut seen: Vec<(&M, usize)> = Vec::new();
    let mut catch_all = false;
    for (n, matches) in routes.enumerate() {
        let path = format!("{field}[{n}]");
        if matches.is_empty() {
            if catch_all {
                out.warn(
                    &path,
                    format!(
                        "virtualService rule #{n} not used (only the last rule can have no matches)"
                    ),
                );
            }
            catch_all = true;
            continue;
        }
        let mut duplicates = 0;
        for (m, mr) in matches.iter().enumerate() {
            if catch_all {
                out.warn(
                    &path,
                    format!(
                        "virtualService rule #{n} not used (route without matches defined before)"
                    ),
                );
                continue;
            }
            if let Some((_, dup)) = seen.iter().find(|(k, _)| *k == mr) {
                out.warn(
                    format!("{path}.match[{m}]"),
                    format!("virtualService rule #{n} match #{m} is not used (duplicate/overlapping match in rule #{dup})"),
                );
                duplicates += 1;
            } else {
                seen.push((mr, n));
            }
        }
        if duplicates == matches.len() {
            out.warn(
                &path,
                format!("virtualService rule #{n} not used (all matches used by prior rules)"),
            );
        }
    }
}

/// `gateways` entries: `namespace/name` (both DNS labels), or a legacy FQDN-style name.
fn validate_gateway_names(out: &mut Issues, path: &str, names: &[String], gateway_semantics: bool) {
    for (i, name) in names.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let Some((ns, gw)) = name.split_once('/') else {
            if name.contains('.') {
                let mut parts = name.split('.');
                let (first, second) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                out.warn(
                    &p,
                    format!(
                        "using legacy gatewayName format {name:?}; prefer the <namespace>/<name> format: \"{second}/{first}\""
                    ),
                );
            }
            if let Err(e) = validate_fqdn(name) {
                out.error(&p, e);
            }
            continue;
        };
        if ns.is_empty() || gw.is_empty() {
            out.error(&p, "config namespace and gateway name cannot be empty");
        }
        if !is_dns1123_label(ns) {
            out.error(&p, format!("invalid value for namespace: {ns:?}"));
        }
        if !gateway_semantics && !is_dns1123_label(gw) {
            out.error(&p, format!("invalid value for gateway name: {gw:?}"));
        }
    }
}

fn check_percentage(out: &mut Issues, path: &str, value: f64) {
    if !(0.0..=100.0).contains(&value) || (value > 0.0 && value < 0.0001) {
        out.error(
            path,
            format!("percentage {value} is neither 0.0, nor in range [0.0001, 100.0]"),
        );
    }
}

fn validate_http_route(
    out: &mut Issues,
    path: &str,
    http: &HttpRoute,
    delegate: bool,
    gateway_semantics: bool,
) {
    validate_http_route_conflict(out, path, http, delegate);
    for (j, m) in http.r#match.iter().enumerate() {
        validate_http_match(out, &format!("{path}.match[{j}]"), m);
    }
    if let Some(headers) = &http.headers {
        validate_header_operations(out, &format!("{path}.headers"), headers);
    }
    if let Some(cors) = &http.cors_policy {
        let p = format!("{path}.corsPolicy");
        for (i, origin) in cors.allow_origins.iter().enumerate() {
            let value = origin.value();
            let res = if value.is_empty() {
                Err("'' is not a valid match type for CORS allow origins".to_string())
            } else {
                validate_string_match_regex(origin, "corsPolicy.allowOrigins")
            };
            if let Err(e) = res {
                out.error(format!("{p}.allowOrigins[{i}]"), e);
            }
        }
        for (i, method) in cors.allow_methods.iter().enumerate() {
            const METHODS: [&str; 10] = [
                "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
            ];
            if !METHODS.contains(&method.as_str()) {
                out.error(
                    format!("{p}.allowMethods[{i}]"),
                    format!(
                        "{method:?} is not a supported HTTP method; use one of {}",
                        METHODS.join(", ")
                    ),
                );
            }
        }
        for (field, names) in [
            ("allowHeaders", &cors.allow_headers),
            ("exposeHeaders", &cors.expose_headers),
        ] {
            for (i, name) in names.iter().enumerate() {
                if let Err(e) = validate_cors_header_name(name) {
                    out.error(format!("{p}.{field}[{i}]"), e);
                }
            }
        }
        if let Some(max_age) = cors.max_age {
            let mp = format!("{p}.maxAge");
            check_duration(out, &mp, Some(max_age), DurationRule::CelAndWebhook);
            if max_age.get().subsec_nanos() > 0 {
                out.error(mp, "max_age duration is accurate only to seconds precision");
            }
        }
    }
    if let Some(fault) = &http.fault {
        validate_fault(out, &format!("{path}.fault"), fault);
    }
    for (key, value) in [
        ("mirrorPercent", http.mirror_percent),
        ("mirror_percent", http.mirror_percent_snake),
    ] {
        if let Some(v) = value {
            let p = format!("{path}.{key}");
            if v > 100 {
                out.error(
                    &p,
                    format!("mirror_percent must have a max value of 100 (it has {v})"),
                );
            }
            out.warn(
                p,
                "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
            );
        }
    }
    if let Some(pct) = http.mirror_percentage {
        let p = format!("{path}.mirrorPercentage.value");
        if pct.value > 100.0 {
            out.error(
                &p,
                format!(
                    "mirror_percentage must have a max value of 100 (it has {:.6})",
                    pct.value
                ),
            );
        }
        if pct.value < 0.0 {
            out.error(
                &p,
                format!(
                    "mirror_percentage must have a min value of 0 (it has {:.6})",
                    pct.value
                ),
            );
        }
    }
    if let Some(mirror) = &http.mirror {
        validate_destination(out, &format!("{path}.mirror"), mirror);
    }
    for (i, mirror) in http.mirrors.iter().enumerate() {
        let p = format!("{path}.mirrors[{i}]");
        validate_destination(out, &format!("{p}.destination"), &mirror.destination);
        if let Some(pct) = mirror.percentage {
            let pp = format!("{p}.percentage.value");
            if pct.value > 100.0 {
                out.error(
                    &pp,
                    format!(
                        "mirror percentage must have a max value of 100 (it has {:.6})",
                        pct.value
                    ),
                );
            }
            if pct.value < 0.0 {
                out.error(
                    &pp,
                    format!(
                        "mirror percentage must have a min value of 0 (it has {:.6})",
                        pct.value
                    ),
                );
            }
        }
    }
    if let Some(redirect) = &http.redirect {
        validate_redirect(out, &format!("{path}.redirect"), redirect);
    }
    if let Some(dr) = &http.direct_response {
        validate_direct_response(out, &format!("{path}.directResponse"), dr);
    }
    if let Some(retries) = &http.retries {
        validate_retry(out, &format!("{path}.retries"), retries);
    }
    if let Some(rewrite) = &http.rewrite {
        validate_rewrite(out, &format!("{path}.rewrite"), rewrite);
    }
    validate_authority_rewrite(out, path, http);
    validate_http_route_destinations(out, path, &http.route, gateway_semantics);
    if let Some(timeout) = http.timeout {
        check_duration(
            out,
            &format!("{path}.timeout"),
            Some(timeout),
            DurationRule::CelAndWebhook,
        );
    }
}

fn validate_http_route_conflict(out: &mut Issues, path: &str, http: &HttpRoute, delegate: bool) {
    let name = http.name.as_deref().unwrap_or("");
    if !delegate && http.delegate.is_some() {
        // A root rule of a root VirtualService: it may only delegate.
        if http.redirect.is_some() {
            out.error(
                format!("{path}.redirect"),
                format!("root HTTP route {name} must not specify redirect"),
            );
        }
        if !http.route.is_empty() {
            out.error(
                format!("{path}.route"),
                format!("root HTTP route {name} must not specify route"),
            );
        }
    } else {
        if delegate && http.delegate.is_some() {
            out.error(
                format!("{path}.delegate"),
                "delegate HTTP route cannot contain delegate",
            );
        }
        if http.redirect.is_some() {
            let p = format!("{path}.redirect");
            if !http.route.is_empty() {
                out.error(&p, "HTTP route cannot contain both route and redirect");
            }
            if http.fault.is_some() {
                out.error(&p, "HTTP route cannot contain both fault and redirect");
            }
            if http.rewrite.is_some() {
                out.error(
                    &p,
                    "HTTP route rule cannot contain both rewrite and redirect",
                );
            }
            if http.direct_response.is_some() {
                out.error(
                    &p,
                    "HTTP route rule cannot contain both direct_response and redirect",
                );
            }
        } else if http.direct_response.is_some() {
            let p = format!("{path}.directResponse");
            if !http.route.is_empty() {
                out.error(
                    &p,
                    "HTTP route cannot contain both route and direct_response",
                );
            }
            if http.fault.is_some() {
                out.error(
                    &p,
                    "HTTP route cannot contain both fault and direct_response",
                );
            }
            if http.rewrite.is_some() {
                out.error(
                    &p,
                    "HTTP route rule cannot contain both rewrite and direct_response",
                );
            }
        } else if http.route.is_empty() {
            out.error(path, "HTTP route, redirect or direct_response is required");
        }
    }
    if http.mirror.is_some() && !http.mirrors.is_empty() {
        out.error(
            format!("{path}.mirrors"),
            "HTTP route cannot contain both mirror and mirrors",
        );
    }
}

fn validate_http_match(out: &mut Issues, p: &str, m: &HttpMatchRequest) {
    for (name, sm) in &m.headers {
        let hp = format!("{p}.headers.{name}");
        if let Err(e) = validate_header_name_or_jwt_claim_route(name) {
            out.error(&hp, e);
        }
        if let Err(e) = validate_string_match(sm, "headers") {
            out.error(&hp, e);
        }
    }
    for (name, sm) in &m.without_headers {
        let hp = format!("{p}.withoutHeaders.{name}");
        if let Err(e) = validate_header_name_or_jwt_claim_route(name) {
            out.error(&hp, e);
        }
        // `regex: "*"` is not a regex: Istio reads it as "header present".
        if *sm != StringMatch::Regex("*".into())
            && let Err(e) = validate_string_match(sm, "withoutHeaders")
        {
            out.error(&hp, e);
        }
    }
    // An empty uri prefix is allowed (it matches everything); scheme, method and authority
    // prefixes must not be empty.
    if let Some(uri) = &m.uri
        && let Err(e) = validate_string_match_regex(uri, "uri")
    {
        out.error(format!("{p}.uri"), e);
    }
    for (field, sm) in [
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm
            && let Err(e) = validate_string_match(sm, field)
        {
            out.error(format!("{p}.{field}"), e);
        }
    }
    for (name, sm) in &m.query_params {
        if let Err(e) = validate_string_match(sm, "queryParams") {
            out.error(format!("{p}.queryParams.{name}"), e);
        }
    }
    if let Some(port) = m.port.filter(|p| *p != 0)
        && let Err(e) = validate_port(port.into())
    {
        out.error(format!("{p}.port"), e);
    }
    for (_, e) in label_errors(&m.source_labels) {
        out.error(format!("{p}.sourceLabels"), e);
    }
    validate_gateway_names(out, &format!("{p}.gateways"), &m.gateways, false);
    if let Some(ns) = m.source_namespace.as_deref().filter(|s| !s.is_empty())
        && !is_dns1123_label(ns)
    {
        out.error(
            format!("{p}.sourceNamespace"),
            format!("sourceNamespace match {ns} is invalid"),
        );
    }
}

fn validate_fault(out: &mut Issues, p: &str, fault: &HttpFaultInjection) {
    if fault.abort.is_none() && fault.delay.is_none() {
        out.error(p, "HTTP fault injection must have an abort and/or a delay");
    }
    if let Some(abort) = &fault.abort {
        let ap = format!("{p}.abort");
        if let Some(pct) = abort.percentage {
            check_percentage(out, &format!("{ap}.percentage.value"), pct.value);
        }
        let set = [
            abort.http_status.is_some(),
            abort.grpc_status.is_some(),
            abort.http2_error.is_some(),
        ];
        match set.iter().filter(|s| **s).count() {
            0 => out.warn(
                &ap,
                "abort configured, but error type not set; set httpStatus or grpcStatus",
            ),
            1 => {}
            _ => out.error(
                &ap,
                "only one of httpStatus, grpcStatus or http2Error can be set",
            ),
        }
        if let Some(status) = &abort.grpc_status {
            const CODES: [&str; 17] = [
                "OK",
                "CANCELLED",
                "UNKNOWN",
                "INVALID_ARGUMENT",
                "DEADLINE_EXCEEDED",
                "NOT_FOUND",
                "ALREADY_EXISTS",
                "PERMISSION_DENIED",
                "RESOURCE_EXHAUSTED",
                "FAILED_PRECONDITION",
                "ABORTED",
                "OUT_OF_RANGE",
                "UNIMPLEMENTED",
                "INTERNAL",
                "UNAVAILABLE",
                "DATA_LOSS",
                "UNAUTHENTICATED",
            ];
            if !CODES.contains(&status.as_str()) {
                out.error(
                    format!("{ap}.grpcStatus"),
                    format!("gRPC status {status:?} is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'"),
                );
            }
        }
        if abort.http2_error.is_some() {
            out.error(
                format!("{ap}.http2Error"),
                "HTTP/2 abort fault injection not supported yet; use httpStatus or grpcStatus",
            );
        }
        if let Some(status) = abort.http_status
            && !(200..=600).contains(&status)
        {
            out.error(
                format!("{ap}.httpStatus"),
                format!("HTTP status {status} is not in range 200-599"),
            );
        }
    }
    if let Some(delay) = &fault.delay {
        let dp = format!("{p}.delay");
        if let Some(pct) = delay.percentage {
            check_percentage(out, &format!("{dp}.percentage.value"), pct.value);
        }
        if delay.fixed_delay.is_some() && delay.exponential_delay.is_some() {
            out.error(&dp, "only one of fixedDelay or exponentialDelay can be set");
        }
        if let Some(d) = delay.fixed_delay {
            check_duration(
                out,
                &format!("{dp}.fixedDelay"),
                Some(d),
                DurationRule::CelAndWebhook,
            );
        }
        if let Some(d) = delay.exponential_delay {
            let ep = format!("{dp}.exponentialDelay");
            check_duration(out, &ep, Some(d), DurationRule::CelAndWebhook);
            out.error(ep, "exponentialDelay not supported yet; use fixedDelay");
        }
    }
}

fn validate_redirect(out: &mut Issues, p: &str, r: &HttpRedirect) {
    if r.port.is_some() && r.derive_port.is_some() {
        out.error(p, "only one of port or derivePort can be set");
    }
    let empty = |s: &Option<String>| s.as_deref().is_none_or(str::is_empty);
    if empty(&r.uri)
        && empty(&r.authority)
        && r.port.is_none()
        && r.derive_port.is_none()
        && empty(&r.scheme)
    {
        out.error(p, "redirect must specify URI, authority, scheme, or port");
        return;
    }
    if let Some(code) = r.redirect_code.filter(|c| *c != 0)
        && !(300..=399).contains(&code)
    {
        out.error(
            format!("{p}.redirectCode"),
            format!("{code} is not a valid redirect code, must be 3xx"),
        );
        return;
    }
    if let Some(scheme) = r.scheme.as_deref().filter(|s| !s.is_empty())
        && scheme != "http"
        && scheme != "https"
    {
        out.error(
            format!("{p}.scheme"),
            "invalid redirect scheme, must be \"http\" or \"https\"",
        );
        return;
    }
    if let Some(port) = r.port.filter(|p| *p > 0)
        && let Err(e) = validate_port(port.into())
    {
        out.error(format!("{p}.port"), e);
    }
}

/// Whether `s` is standard base64 with padding, as the CRD's `format: byte`; returns the decoded
/// length.
fn base64_decoded_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(4) {
        return None;
    }
    let pad = b.iter().rev().take_while(|c| **c == b'=').count();
    if pad > 2 {
        return None;
    }
    let body = &b[..b.len() - pad];
    if !body
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
    {
        return None;
    }
    Some(b.len() / 4 * 3 - pad)
}

fn validate_direct_response(out: &mut Issues, p: &str, dr: &HttpDirectResponse) {
    const KB: usize = 1024;
    const MB: usize = 1024 * KB;
    if let Some(body) = &dr.body {
        let bp = format!("{p}.body");
        if body.string.is_some() && body.bytes.is_some() {
            out.error(&bp, "only one of string or bytes can be set");
        }
        let mut size = body.string.as_ref().map_or(0, String::len);
        if let Some(bytes) = &body.bytes {
            match base64_decoded_len(bytes) {
                Some(n) => size = size.max(n),
                None => out.error(
                    format!("{bp}.bytes"),
                    "must be base64 encoded (standard alphabet, with padding)",
                ),
            }
        }
        if size > MB {
            out.error(&bp, "large direct_responses may impact control plane performance, must be less than 1MB");
        } else if size > 100 * KB {
            out.warn(
                &bp,
                "large direct_responses may impact control plane performance",
            );
        }
    }
    if !(200..=600).contains(&dr.status) {
        out.error(
            format!("{p}.status"),
            format!("HTTP status {} is not in range 200-599", dr.status),
        );
    }
}

/// Status codes Go's `http.StatusText` knows: `retryOn` accepts these as retriable codes.
fn is_known_http_status(code: i64) -> bool {
    matches!(code,
        100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429
        | 431 | 451 | 500..=508 | 510 | 511)
}

fn validate_retry(out: &mut Issues, p: &str, r: &HttpRetry) {
    let attempts = r.attempts.unwrap_or(0);
    if attempts < 0 {
        out.error(format!("{p}.attempts"), "attempts cannot be negative");
    }
    let retry_on = r.retry_on.as_deref().unwrap_or("");
    if attempts == 0
        && (r.per_try_timeout.is_some()
            || !retry_on.is_empty()
            || r.retry_remote_localities.is_some())
    {
        out.error(
            p,
            "http retry policy configured when attempts are set to 0 (disabled); set attempts, or remove the retry policy",
        );
    }
    if let Some(d) = r.per_try_timeout {
        check_duration(
            out,
            &format!("{p}.perTryTimeout"),
            Some(d),
            DurationRule::CelAndWebhook,
        );
    }
    if !retry_on.is_empty() {
        const POLICIES: [&str; 16] = [
            "5xx",
            "gateway-error",
            "reset",
            "reset-before-request",
            "connect-failure",
            "retriable-4xx",
            "refused-stream",
            "retriable-status-codes",
            "retriable-headers",
            "envoy-ratelimited",
            "http3-post-connect-failure",
            "cancelled",
            "deadline-exceeded",
            "internal",
            "resource-exhausted",
            "unavailable",
        ];
        for policy in retry_on.split(',') {
            let code_ok = policy.parse::<i64>().is_ok_and(is_known_http_status);
            if !code_ok && !POLICIES.contains(&policy) {
                out.error(
                    format!("{p}.retryOn"),
                    format!("{policy:?} is not a valid retryOn policy"),
                );
            }
        }
    }
    if let Some(d) = r.backoff {
        check_duration(
            out,
            &format!("{p}.backoff"),
            Some(d),
            DurationRule::CelAndWebhook,
        );
    }
}

fn validate_rewrite(out: &mut Issues, p: &str, r: &HttpRewrite) {
    let uri = r.uri.as_deref().unwrap_or("");
    let authority = r.authority.as_deref().unwrap_or("");
    if !uri.is_empty() && r.uri_regex_rewrite.is_some() {
        out.error(p, "rewrite may only contain one of URI or UriRegexRewrite");
        return;
    }
    if uri.is_empty() && r.uri_regex_rewrite.is_none() && authority.is_empty() {
        out.error(p, "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified");
        return;
    }
    if let Some(rr) = &r.uri_regex_rewrite {
        let rp = format!("{p}.uriRegexRewrite");
        let m = rr.r#match.as_deref().unwrap_or("");
        if m.is_empty() || rr.rewrite.as_deref().unwrap_or("").is_empty() {
            out.error(rp, "UriRegexRewrite has errors: UriRegexRewrite requires both Rewrite and Match fields to be specified");
        } else if let Err(e) = validate_regex(m, "HTTPRewrite.UriRegexRewrite.Match") {
            out.error(
                format!("{rp}.match"),
                format!("UriRegexRewrite has errors: {e}"),
            );
        }
    }
}

/// The authority may be rewritten in one place only: `rewrite.authority` or one request header
/// operation on `:authority`/`host`.
fn validate_authority_rewrite(out: &mut Issues, path: &str, http: &HttpRoute) {
    let mut current = http
        .rewrite
        .as_ref()
        .and_then(|r| r.authority.clone())
        .unwrap_or_default();
    let Some(req) = http.headers.as_ref().and_then(|h| h.request.as_ref()) else {
        return;
    };
    for (kind, map) in [("set", &req.set), ("add", &req.add)] {
        for (k, v) in map.iter().filter(|(k, _)| is_authority_header(k)) {
            if !current.is_empty() {
                out.error(
                    format!("{path}.headers.request.{kind}.{k}"),
                    format!("authority header cannot be set multiple times: have {current:?}, attempting to set {v:?}"),
                );
                return;
            }
            current = v.clone();
        }
    }
}

/// `weights` yields `None` for an entry without a destination host: it is reported elsewhere,
/// ignored by mesh, and does not count towards the total.
fn validate_weights(
    out: &mut Issues,
    path: &str,
    weights: impl Iterator<Item = Option<Option<i32>>>,
) {
    let mut total: i64 = 0;
    let mut count = 0;
    for (i, w) in weights.enumerate() {
        let Some(w) = w else { continue };
        count += 1;
        let w = w.unwrap_or(0);
        if w < 0 {
            out.error(
                format!("{path}.route[{i}].weight"),
                format!("weight {w} < 0"),
            );
        }
        total += i64::from(w);
    }
    if count > 1 && total == 0 {
        out.error(
            format!("{path}.route"),
            "total destination weight = 0; give at least one destination a positive weight",
        );
    }
}

fn validate_http_route_destinations(
    out: &mut Issues,
    path: &str,
    route: &[HttpRouteDestination],
    gateway_semantics: bool,
) {
    for (i, d) in route.iter().enumerate() {
        let p = format!("{path}.route[{i}]");
        if let Some(headers) = &d.headers {
            validate_header_operations(out, &format!("{p}.headers"), headers);
        }
        if !gateway_semantics {
            validate_destination(out, &format!("{p}.destination"), &d.destination);
        }
    }
    validate_weights(
        out,
        path,
        route
            .iter()
            .map(|d| (!d.destination.host.is_empty()).then_some(d.weight)),
    );
}

fn validate_route_destinations(
    out: &mut Issues,
    path: &str,
    route: &[RouteDestination],
    gateway_semantics: bool,
) {
    if !gateway_semantics {
        for (i, d) in route.iter().enumerate() {
            validate_destination(
                out,
                &format!("{path}.route[{i}].destination"),
                &d.destination,
            );
        }
    }
    validate_weights(
        out,
        path,
        route
            .iter()
            .map(|d| (!d.destination.host.is_empty()).then_some(d.weight)),
    );
}

fn validate_l4_common(
    out: &mut Issues,
    p: &str,
    subnets: &[String],
    port: Option<u32>,
    labels: &BTreeMap<String, String>,
    gateways: &[String],
) {
    for (k, s) in subnets.iter().enumerate() {
        if let Err(e) = validate_ip_subnet(s) {
            out.error(format!("{p}.destinationSubnets[{k}]"), e);
        }
    }
    if let Some(port) = port.filter(|p| *p != 0)
        && let Err(e) = validate_port(port.into())
    {
        out.error(format!("{p}.port"), e);
    }
    for (_, e) in label_errors(labels) {
        out.error(format!("{p}.sourceLabels"), e);
    }
    validate_gateway_names(out, &format!("{p}.gateways"), gateways, false);
}

fn validate_tls_route(
    out: &mut Issues,
    path: &str,
    tls: &TlsRoute,
    vs: &VirtualService,
    gateway_semantics: bool,
) {
    if tls.r#match.is_empty() {
        out.error(
            format!("{path}.match"),
            "TLS route must have at least one match condition",
        );
    }
    let bound_to_gateway = !vs.gateways.iter().any(|g| g == "mesh");
    for (j, m) in tls.r#match.iter().enumerate() {
        let p = format!("{path}.match[{j}]");
        if m.sni_hosts.is_empty() {
            out.error(
                format!("{p}.sniHosts"),
                "TLS match must have at least one SNI host",
            );
        }
        for (k, sni) in m.sni_hosts.iter().enumerate() {
            let sp = format!("{p}.sniHosts[{k}]");
            let res = if bound_to_gateway {
                validate_wildcard_domain_for_gateway(true, sni)
            } else {
                validate_wildcard_domain(sni)
            };
            if let Err(e) = res {
                if is_ip_address(sni) {
                    out.warn(sp, format!("using an IP address ({sni:?}) goes against SNI spec and most clients do not support this"));
                } else {
                    out.error(sp, e);
                }
                continue;
            }
            if !vs.hosts.iter().any(|h| host_subset_of(sni, h)) {
                out.error(
                    sp,
                    format!(
                        "SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]",
                        vs.hosts.join(", ")
                    ),
                );
            }
        }
        validate_l4_common(
            out,
            &p,
            &m.destination_subnets,
            m.port,
            &m.source_labels,
            &m.gateways,
        );
    }
    if tls.route.is_empty() {
        out.error(format!("{path}.route"), "TLS route is required");
    }
    validate_route_destinations(out, path, &tls.route, gateway_semantics);
}

fn validate_tcp_route(out: &mut Issues, path: &str, tcp: &TcpRoute, gateway_semantics: bool) {
    for (j, m) in tcp.r#match.iter().enumerate() {
        let p = format!("{path}.match[{j}]");
        validate_l4_common(
            out,
            &p,
            &m.destination_subnets,
            m.port,
            &m.source_labels,
            &m.gateways,
        );
    }
    if tcp.route.is_empty() {
        out.error(format!("{path}.route"), "TCP route is required");
    }
    validate_route_destinations(out, path, &tcp.route, gateway_semantics);
}

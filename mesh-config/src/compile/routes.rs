//! VirtualService to routes, per host and gateway.

use http::{HeaderName, HeaderValue, StatusCode};
use mesh_core::{
    Host, Percent, Selector,
    matching::{HeaderMatcher, HttpMatch, L4Match, StringMatcher, TlsMatch},
    model::{
        self, AbortStatus, DirectResponse, Fault, FaultAbort, FaultDelay, HeaderOperations,
        HeaderOps, HttpRoute, MESH_GATEWAY, Mirror, Redirect, RedirectPort, RetryPolicy, Rewrite,
        RouteAction, RouteDestination, TcpRoute, TlsRoute, VirtualHost, WeightedDestinations,
    },
    weighted::{WeightError, WeightedChoice},
};

use super::Sink;
use crate::{
    kinds::{
        common::StringMatch,
        virtual_service::{self as vs, VirtualService},
    },
    load::Object,
};

/// The gateways a VirtualService is bound to, as `mesh` or `namespace/name`.
pub(crate) fn bound_gateways(obj: &Object<VirtualService>) -> Vec<String> {
    if obj.spec.gateways.is_empty() {
        vec![MESH_GATEWAY.to_owned()]
    } else {
        obj.spec
            .gateways
            .iter()
            .map(|g| qualify_gateway(g, &obj.namespace))
            .collect()
    }
}

/// `mesh`, `ns/name`, or a bare name in the VirtualService's namespace.
pub(crate) fn qualify_gateway(name: &str, namespace: &str) -> String {
    if name == MESH_GATEWAY || name.contains('/') {
        name.to_owned()
    } else if let Some((gw, ns)) = name.split_once('.') {
        // `name.namespace.svc.cluster.local`, the older FQDN form.
        format!("{}/{gw}", ns.split('.').next().unwrap_or(ns))
    } else {
        format!("{namespace}/{name}")
    }
}

pub(crate) fn compile_virtual_service(
    obj: &Object<VirtualService>,
    sink: &mut Sink<'_>,
) -> Vec<VirtualHost> {
    let spec = &obj.spec;
    if spec.http.is_empty() && spec.tcp.is_empty() && spec.tls.is_empty() {
        return Vec::new(); // routes nothing (a warning said so)
    }
    let all_hosts: Vec<Host> = spec
        .hosts
        .iter()
        .map(|h| Host::qualify(h, &obj.namespace))
        .collect();
    let mut out = Vec::new();
    for gateway in bound_gateways(obj) {
        // `*` is refused for sidecars (it would capture every host): ignored there.
        let hosts: Vec<Host> = all_hosts
            .iter()
            .filter(|h| gateway != MESH_GATEWAY || h.as_str() != "*")
            .cloned()
            .collect();
        let mut http = Vec::new();
        for (i, route) in spec.http.iter().enumerate() {
            if let Some(r) = compile_http_route(obj, i, route, &gateway, sink) {
                http.push(r);
            }
        }
        let tcp = spec
            .tcp
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let matches = tcp_matches(&r.r#match, &gateway, &obj.namespace)?;
                let destinations = weighted(
                    obj,
                    &format!("spec.tcp[{i}].route"),
                    r.route.iter().map(|d| (&d.destination, d.weight, None)),
                    sink,
                )?;
                Some(TcpRoute {
                    matches,
                    destinations,
                })
            })
            .collect();
        let tls = spec
            .tls
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let matches = tls_matches(&r.r#match, &gateway, &obj.namespace)?;
                let destinations = weighted(
                    obj,
                    &format!("spec.tls[{i}].route"),
                    r.route.iter().map(|d| (&d.destination, d.weight, None)),
                    sink,
                )?;
                Some(TlsRoute {
                    matches,
                    destinations,
                })
            })
            .collect();
        out.push(VirtualHost {
            gateway,
            hosts,
            virtual_service: obj.key(),
            namespace: obj.namespace.clone(),
            http,
            tcp,
            tls,
        });
    }
    out
}

/// Adds a compiled VirtualService to the table. On a Gateway, Istio merges the routes of
/// VirtualServices for the same hosts (in load order, the first one's routes first); for
/// sidecars (`mesh`) it does not (the first one wins, and analysis warns with IST0109).
pub(crate) fn add_virtual_host(table: &mut Vec<VirtualHost>, vh: VirtualHost) {
    if vh.gateway != MESH_GATEWAY
        && let Some(first) = table
            .iter_mut()
            .find(|t| t.gateway == vh.gateway && t.hosts == vh.hosts)
    {
        first.http.extend(vh.http);
        first.tcp.extend(vh.tcp);
        first.tls.extend(vh.tls);
        first.virtual_service = format!("{},{}", first.virtual_service, vh.virtual_service);
        return;
    }
    table.push(vh);
}

/// The `tcp` matches that apply to `gateway`; `None` when the route has matches but none for
/// this gateway (the route is then not part of its table).
fn tcp_matches(
    matches: &[vs::L4MatchAttributes],
    gateway: &str,
    namespace: &str,
) -> Option<Vec<L4Match>> {
    let out: Vec<L4Match> = matches
        .iter()
        .filter(|m| gateway_ok(&m.gateways, gateway, namespace))
        .map(|m| L4Match {
            port: m.port.and_then(|p| u16::try_from(p).ok()),
            destination_subnets: subnets(&m.destination_subnets),
            source_labels: Selector::new(m.source_labels.clone()),
            source_namespace: m.source_namespace.clone(),
        })
        .collect();
    (matches.is_empty() || !out.is_empty()).then_some(out)
}

/// The `tls` matches that apply to `gateway`, as [`tcp_matches`]. `sniHosts` are taken as
/// written (Istio does not qualify them).
fn tls_matches(
    matches: &[vs::TlsMatchAttributes],
    gateway: &str,
    namespace: &str,
) -> Option<Vec<TlsMatch>> {
    let out: Vec<TlsMatch> = matches
        .iter()
        .filter(|m| gateway_ok(&m.gateways, gateway, namespace))
        .map(|m| TlsMatch {
            sni_hosts: m.sni_hosts.iter().map(|h| Host::new(h)).collect(),
            port: m.port.and_then(|p| u16::try_from(p).ok()),
            destination_subnets: subnets(&m.destination_subnets),
            source_labels: Selector::new(m.source_labels.clone()),
            source_namespace: m.source_namespace.clone(),
        })
        .collect();
    (matches.is_empty() || !out.is_empty()).then_some(out)
}

/// `destinationSubnets`: CIDRs, or addresses (a /32 or /128). Validation reported bad ones.
fn subnets(list: &[String]) -> Vec<ipnet::IpNet> {
    list.iter()
        .filter_map(|s| {
            s.parse::<ipnet::IpNet>()
                .ok()
                .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
        })
        .collect()
}

/// A match's own `gateways` override the VirtualService's.
fn gateway_ok(match_gateways: &[String], gateway: &str, namespace: &str) -> bool {
    match_gateways.is_empty()
        || match_gateways
            .iter()
            .any(|g| qualify_gateway(g, namespace) == gateway)
}

fn compile_http_route(
    obj: &Object<VirtualService>,
    index: usize,
    route: &vs::HttpRoute,
    gateway: &str,
    sink: &mut Sink<'_>,
) -> Option<HttpRoute> {
    let path = format!("spec.http[{index}]");
    // Matches that apply to this gateway; a route whose matches all name other gateways is not
    // part of this gateway's table.
    let mut matches = Vec::new();
    for (j, m) in route.r#match.iter().enumerate() {
        if !gateway_ok(&m.gateways, gateway, &obj.namespace) {
            continue;
        }
        if m.headers
            .keys()
            .chain(m.without_headers.keys())
            .any(|k| k.starts_with('@'))
        {
            sink.warn(
                obj,
                &format!("{path}.match[{j}].headers"),
                "JWT claim matches (`@request.auth.claims.*`) are not applied yet: this match never matches".to_owned(),
            );
            continue;
        }
        matches.push(compile_match(obj, &format!("{path}.match[{j}]"), m, sink)?);
    }
    if !route.r#match.is_empty() && matches.is_empty() {
        return None;
    }
    let action = if let Some(r) = &route.redirect {
        RouteAction::Redirect(Redirect {
            uri: r.uri.clone(),
            authority: r.authority.clone(),
            scheme: r.scheme.clone(),
            port: match (r.port, r.derive_port) {
                (Some(p), _) => u16::try_from(p).ok().map(RedirectPort::Port),
                (None, Some(vs::RedirectPortSelection::FromProtocolDefault)) => {
                    Some(RedirectPort::FromProtocolDefault)
                }
                (None, Some(vs::RedirectPortSelection::FromRequestPort)) => {
                    Some(RedirectPort::FromRequestPort)
                }
                (None, None) => None,
            },
            status: status(
                r.redirect_code.unwrap_or(301),
                sink,
                obj,
                &format!("{path}.redirect.redirectCode"),
            )?,
        })
    } else if let Some(d) = &route.direct_response {
        let body = d.body.as_ref().and_then(|b| match (&b.string, &b.bytes) {
            (Some(s), _) => Some(s.clone().into_bytes()),
            (None, Some(b64)) => decode_base64(b64),
            _ => None,
        });
        RouteAction::DirectResponse(DirectResponse {
            status: status(
                d.status,
                sink,
                obj,
                &format!("{path}.directResponse.status"),
            )?,
            body,
        })
    } else if !route.route.is_empty() {
        RouteAction::Forward(weighted(
            obj,
            &format!("{path}.route"),
            route
                .route
                .iter()
                .map(|d| (&d.destination, d.weight, d.headers.as_ref())),
            sink,
        )?)
    } else {
        // Delegation (reported as not applied) or an empty route (rejected by validation).
        return None;
    };
    let retries = match &route.retries {
        None => RetryPolicy::istio_default(),
        Some(r) if r.attempts.unwrap_or(0) <= 0 => RetryPolicy::disabled(),
        Some(r) => {
            let mut retry_on = Vec::new();
            let mut codes = Vec::new();
            for cond in r
                .retry_on
                .as_deref()
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
            {
                match cond.parse::<u16>() {
                    Ok(code) => codes.push(code),
                    Err(_) => retry_on.push(cond.to_owned()),
                }
            }
            if !codes.is_empty() && !retry_on.iter().any(|c| c == "retriable-status-codes") {
                retry_on.push("retriable-status-codes".to_owned());
            }
            if retry_on.is_empty() {
                retry_on = RetryPolicy::istio_default().retry_on;
            }
            RetryPolicy {
                attempts: r.attempts.unwrap_or(0) as u32,
                per_try_timeout: r.per_try_timeout.map(|d| d.get()).filter(|d| !d.is_zero()),
                retry_on,
                retriable_status_codes: codes,
                retry_remote_localities: r.retry_remote_localities.unwrap_or(false),
                is_default: false,
            }
        }
    };
    let fault = route.fault.as_ref().map(|f| Fault {
        delay: f.delay.as_ref().and_then(|d| {
            Some(FaultDelay {
                delay: d.fixed_delay.or(d.exponential_delay)?.get(),
                percentage: percent(d.percentage.map(|p| p.value).or(d.percent.map(f64::from))),
            })
        }),
        abort: f.abort.as_ref().and_then(|a| {
            let status = match (&a.http_status, &a.grpc_status) {
                (Some(code), _) => {
                    AbortStatus::Http(StatusCode::from_u16(u16::try_from(*code).ok()?).ok()?)
                }
                (None, Some(grpc)) => AbortStatus::Grpc(grpc_code(grpc)?),
                _ => return None,
            };
            Some(FaultAbort {
                status,
                percentage: percent(a.percentage.map(|p| p.value)),
            })
        }),
    });
    let mut mirrors = Vec::new();
    if let Some(m) = &route.mirror {
        let pct = route.mirror_percentage.map(|p| p.value).or(route
            .mirror_percent
            .or(route.mirror_percent_snake)
            .map(f64::from));
        mirrors.push(Mirror {
            destination: destination(obj, m),
            percentage: percent(pct),
        });
    }
    for m in &route.mirrors {
        mirrors.push(Mirror {
            destination: destination(obj, &m.destination),
            percentage: percent(m.percentage.map(|p| p.value)),
        });
    }
    let cors = match &route.cors_policy {
        Some(c) => {
            let mut origins: Vec<StringMatcher> =
                c.allow_origin.iter().map(StringMatcher::exact).collect();
            for (k, o) in c.allow_origins.iter().enumerate() {
                origins.push(string_matcher(
                    o,
                    false,
                    obj,
                    &format!("{path}.corsPolicy.allowOrigins[{k}]"),
                    sink,
                )?);
            }
            Some(model::CorsPolicy {
                allow_origins: origins,
                allow_methods: c.allow_methods.clone(),
                allow_headers: c.allow_headers.clone(),
                expose_headers: c.expose_headers.clone(),
                max_age: c.max_age.map(|d| d.get()),
                allow_credentials: c.allow_credentials,
                unmatched_preflights_forward: c.unmatched_preflights
                    != Some(vs::UnmatchedPreflights::Ignore),
            })
        }
        None => None,
    };
    let rewrite = match &route.rewrite {
        Some(r) => Some(Rewrite {
            uri: r.uri.clone(),
            uri_regex: match &r.uri_regex_rewrite {
                Some(rr) => {
                    let pattern = rr.r#match.clone().unwrap_or_default();
                    let re = match regex::Regex::new(&pattern) {
                        Ok(re) => re,
                        Err(e) => {
                            sink.error(
                                obj,
                                &format!("{path}.rewrite.uriRegexRewrite.match"),
                                format!("invalid regex: {e}"),
                            );
                            return None;
                        }
                    };
                    Some((
                        re,
                        envoy_substitution(rr.rewrite.as_deref().unwrap_or_default()),
                    ))
                }
                None => None,
            },
            authority: r.authority.clone(),
        }),
        None => None,
    };
    Some(HttpRoute {
        name: route
            .name
            .clone()
            .unwrap_or_else(|| format!("{}/http[{index}]", obj.key())),
        matches,
        action,
        rewrite,
        timeout: route.timeout.map(|d| d.get()).filter(|d| !d.is_zero()),
        retries,
        fault,
        mirrors,
        cors,
        headers: header_operations(
            route.headers.as_ref(),
            obj,
            &format!("{path}.headers"),
            sink,
        ),
    })
}

fn compile_match(
    obj: &Object<VirtualService>,
    path: &str,
    m: &vs::HttpMatchRequest,
    sink: &mut Sink<'_>,
) -> Option<HttpMatch> {
    let ignore_case = m.ignore_uri_case.unwrap_or(false);
    let opt = |sm: &Option<StringMatch>,
               field: &str,
               ic: bool,
               sink: &mut Sink<'_>|
     -> Result<Option<StringMatcher>, ()> {
        match sm {
            None | Some(StringMatch::Empty) => Ok(None),
            Some(sm) => string_matcher(sm, ic, obj, &format!("{path}.{field}"), sink)
                .map(Some)
                .ok_or(()),
        }
    };
    let uri = opt(&m.uri, "uri", ignore_case, sink).ok()?;
    let scheme = opt(&m.scheme, "scheme", false, sink).ok()?;
    let method = opt(&m.method, "method", false, sink).ok()?;
    let authority = opt(&m.authority, "authority", false, sink).ok()?;
    let mut headers = Vec::new();
    // Istio ignores the header keys `uri`, `scheme`, `method` and `authority` (they have fields).
    for (name, sm) in m
        .headers
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "uri" | "scheme" | "method" | "authority"))
    {
        headers.push((
            header_name(name, obj, &format!("{path}.headers.{name}"), sink)?,
            header_matcher(sm, obj, &format!("{path}.headers.{name}"), sink)?,
        ));
    }
    let mut without_headers = Vec::new();
    for (name, sm) in &m.without_headers {
        without_headers.push((
            header_name(name, obj, &format!("{path}.withoutHeaders.{name}"), sink)?,
            header_matcher(sm, obj, &format!("{path}.withoutHeaders.{name}"), sink)?,
        ));
    }
    let mut query_params = Vec::new();
    for (name, sm) in &m.query_params {
        query_params.push((
            name.clone(),
            header_matcher(sm, obj, &format!("{path}.queryParams.{name}"), sink)?,
        ));
    }
    Some(HttpMatch {
        name: m.name.clone(),
        uri,
        scheme,
        method,
        authority,
        headers,
        without_headers,
        query_params,
        port: m.port.and_then(|p| u16::try_from(p).ok()),
        source_labels: Selector::new(m.source_labels.clone()),
        source_namespace: m.source_namespace.clone(),
        // Gateways were resolved into the per-gateway tables.
        gateways: Vec::new(),
        ignore_uri_case: ignore_case,
    })
}

pub(crate) fn string_matcher<S>(
    sm: &StringMatch,
    ignore_case: bool,
    obj: &Object<S>,
    path: &str,
    sink: &mut Sink<'_>,
) -> Option<StringMatcher> {
    Some(match sm {
        StringMatch::Exact(v) => StringMatcher::exact(v.clone()).ignore_case(ignore_case),
        StringMatch::Prefix(v) => StringMatcher::prefix(v.clone()).ignore_case(ignore_case),
        StringMatch::Regex(v) => match StringMatcher::regex(v) {
            Ok(m) => m,
            Err(e) => {
                sink.error(
                    obj,
                    &format!("{path}.regex"),
                    format!("invalid regex {v:?}: {e}"),
                );
                return None;
            }
        },
        // `{}`: no condition; an empty prefix matches every value.
        StringMatch::Empty => StringMatcher::prefix(""),
    })
}

fn header_matcher<S>(
    sm: &StringMatch,
    obj: &Object<S>,
    path: &str,
    sink: &mut Sink<'_>,
) -> Option<HeaderMatcher> {
    if sm.value().is_empty() {
        return Some(HeaderMatcher::Present);
    }
    string_matcher(sm, false, obj, path, sink).map(HeaderMatcher::Value)
}

fn header_name<S>(
    name: &str,
    obj: &Object<S>,
    path: &str,
    sink: &mut Sink<'_>,
) -> Option<HeaderName> {
    match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            sink.error(obj, path, format!("invalid header name {name:?}"));
            None
        }
    }
}

fn header_operations<S>(
    h: Option<&vs::Headers>,
    obj: &Object<S>,
    path: &str,
    sink: &mut Sink<'_>,
) -> HeaderOperations {
    let ops = |o: Option<&vs::HeaderOperations>, which: &str, sink: &mut Sink<'_>| {
        let mut out = HeaderOps::default();
        let Some(o) = o else { return out };
        let pair = |k: &str, v: &str, field: &str, sink: &mut Sink<'_>| {
            let p = format!("{path}.{which}.{field}.{k}");
            let name = header_name(k, obj, &p, sink)?;
            match HeaderValue::from_str(v) {
                Ok(v) => Some((name, v)),
                Err(_) => {
                    sink.error(obj, &p, format!("invalid header value {v:?}"));
                    None
                }
            }
        };
        out.set = o
            .set
            .iter()
            .filter_map(|(k, v)| pair(k, v, "set", sink))
            .collect();
        out.add = o
            .add
            .iter()
            .filter_map(|(k, v)| pair(k, v, "add", sink))
            .collect();
        out.remove = o
            .remove
            .iter()
            .enumerate()
            .filter_map(|(i, k)| header_name(k, obj, &format!("{path}.{which}.remove[{i}]"), sink))
            .collect();
        out
    };
    match h {
        Some(h) => HeaderOperations {
            request: ops(h.request.as_ref(), "request", sink),
            response: ops(h.response.as_ref(), "response", sink),
        },
        None => HeaderOperations::default(),
    }
}

fn weighted<'a>(
    obj: &Object<VirtualService>,
    path: &str,
    dests: impl Iterator<Item = (&'a vs::Destination, Option<i32>, Option<&'a vs::Headers>)>,
    sink: &mut Sink<'_>,
) -> Option<WeightedDestinations> {
    let mut destinations = Vec::new();
    // A destination without a host (reported) is ignored.
    for (i, (d, weight, headers)) in dests.enumerate().filter(|(_, (d, ..))| !d.host.is_empty()) {
        destinations.push(RouteDestination {
            destination: destination(obj, d),
            weight: weight.unwrap_or(0).max(0) as u32,
            headers: header_operations(headers, obj, &format!("{path}[{i}].headers"), sink),
        });
    }
    match WeightedChoice::new(destinations.iter().map(|d| d.weight)) {
        Ok(choice) => Some(WeightedDestinations {
            destinations,
            choice,
        }),
        // No destination left: the route is ignored (validation reported why).
        Err(WeightError::NoDestinations) => None,
        Err(e) => {
            sink.error(obj, path, e.to_string());
            None
        }
    }
}

pub(crate) fn destination<S>(obj: &Object<S>, d: &vs::Destination) -> model::Destination {
    model::Destination {
        host: Host::qualify(&d.host, &obj.namespace),
        subset: d.subset.clone().filter(|s| !s.is_empty()),
        port: d
            .port
            .and_then(|p| p.number)
            .and_then(|n| u16::try_from(n).ok()),
    }
}

fn status<S>(code: u32, sink: &mut Sink<'_>, obj: &Object<S>, path: &str) -> Option<StatusCode> {
    match u16::try_from(code)
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
    {
        Some(s) => Some(s),
        None => {
            sink.error(obj, path, format!("{code} is not an HTTP status code"));
            None
        }
    }
}

/// A percentage, 100% when absent (Istio's default for faults and mirrors).
fn percent(value: Option<f64>) -> Percent {
    value.and_then(Percent::new).unwrap_or(Percent::HUNDRED)
}

/// gRPC status names (`UNAVAILABLE`) or numbers to codes.
pub(crate) fn grpc_code(name: &str) -> Option<u32> {
    const NAMES: [&str; 17] = [
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
    name.parse().ok().filter(|c| *c < 17).or_else(|| {
        NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .map(|p| p as u32)
    })
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        buf = (buf << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    Some(out)
}

/// Envoy's `regex_rewrite` substitution (RE2 style: `\1` is the first group) in the `regex`
/// crate's syntax (`${1}`), with a literal `$` escaped.
fn envoy_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(d) if d.is_ascii_digit() => {
                    out.push_str("${");
                    out.push(*d);
                    out.push('}');
                    chars.next();
                }
                Some('\\') => {
                    out.push('\\');
                    chars.next();
                }
                _ => out.push('\\'),
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod substitution_tests {
    #[test]
    fn envoy_groups_become_rust_groups() {
        assert_eq!(super::envoy_substitution("/v2/\\1/\\2"), "/v2/${1}/${2}");
        assert_eq!(super::envoy_substitution("/cost/$5"), "/cost/$$5");
        let re = regex::Regex::new("^/v1/(.*)$").unwrap();
        assert_eq!(
            re.replace("/v1/items", super::envoy_substitution("/v2/\\1").as_str()),
            "/v2/items"
        );
    }
}

#[cfg(test)]
mod l4_match_tests {
    use mesh_core::{Host, matching::L4Match};

    /// `tcp` and `tls` matches keep each match's own conditions, per gateway: a match naming
    /// another gateway is not in this gateway's table, and a route left without matches for it
    /// is not either.
    #[test]
    fn tcp_and_tls_matches_are_compiled_per_gateway() {
        let yaml = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: l4, namespace: edge}
spec:
  hosts: ["*.example.com"]
  gateways: [public, internal]
  tcp:
  - match:
    - {port: 27017, gateways: [public], destinationSubnets: [10.0.0.0/8, 192.168.1.1], sourceLabels: {app: gw}}
    - {port: 27018, gateways: [internal]}
    route: [{destination: {host: mongo.example.com}}]
  - match: [{port: 1, gateways: [internal]}]
    route: [{destination: {host: internal-only.example.com}}]
  tls:
  - match: [{sniHosts: [db.example.com], port: 443, sourceNamespace: edge}]
    route: [{destination: {host: db.example.com}}]
"#;
        let mesh = crate::Loader::new()
            .check_str("l4.yaml", yaml)
            .into_mesh()
            .unwrap();
        let table = |gw: &str| {
            mesh.compiled()
                .virtual_hosts
                .iter()
                .find(|vh| vh.gateway == gw)
                .unwrap()
                .clone()
        };
        let public = table("edge/public");
        assert_eq!(public.tcp.len(), 1);
        assert_eq!(
            public.tcp[0].matches,
            [L4Match {
                port: Some(27017),
                destination_subnets: vec![
                    "10.0.0.0/8".parse().unwrap(),
                    "192.168.1.1/32".parse().unwrap()
                ],
                source_labels: [("app", "gw")].into_iter().collect(),
                source_namespace: None,
            }]
        );
        let internal = table("edge/internal");
        assert_eq!(internal.tcp.len(), 2);
        assert_eq!(internal.tcp[0].matches[0].port, Some(27018));
        assert_eq!(internal.tls.len(), 1);
        let tls = &internal.tls[0].matches[0];
        assert_eq!(tls.sni_hosts, [Host::new("db.example.com")]);
        assert_eq!(
            (tls.port, tls.source_namespace.as_deref()),
            (Some(443), Some("edge"))
        );
    }
}

//! Istio's rules for names, hosts, ports, addresses, durations and header operations, shared
//! by the VirtualService, Gateway and Sidecar validators (istiod applies the same checks to all
//! three). Each returns Istio's message, so callers only add the document path.

use std::{collections::BTreeMap, net::IpAddr, time::Duration as StdDuration};

use super::{Destination, HeaderOperations, Headers};
use crate::kinds::{Issues, Meta, common::Duration};

// === names, hosts and addresses (shared) ===

/// Prefix of a Unix domain socket address in `bind` and `defaultEndpoint`.
pub(crate) const UNIX_ADDRESS_PREFIX: &str = "unix://";

/// A DNS-1123 label as Istio checks it (letters of either case, digits, inner `-`, at most 63).
pub(crate) fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// A DNS-1123 label that may start with `*` or `*-`, or be `*` alone.
pub(crate) fn is_wildcard_dns1123_label(s: &str) -> bool {
    if s.len() > 63 {
        return false;
    }
    if s == "*" {
        return true;
    }
    let rest = s
        .strip_prefix("*-")
        .filter(|r| is_dns1123_label(r))
        .or_else(|| s.strip_prefix('*'))
        .unwrap_or(s);
    is_dns1123_label(rest)
}

pub(crate) fn check_dns1123_preconditions(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    if name.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    Ok(())
}

pub(crate) fn validate_dns1123_labels(domain: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let tld = parts[parts.len() - 1];
    if tld.parse::<i64>().is_ok() {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {tld:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        // A trailing dot (`istio.io.`) leaves an empty last label, which is allowed.
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

/// A fully qualified domain name, without wildcards.
pub(crate) fn validate_fqdn(fqdn: &str) -> Result<(), String> {
    check_dns1123_preconditions(fqdn)?;
    validate_dns1123_labels(fqdn)
}

/// A domain name whose first label may be a wildcard (`*.example.com`, `*`).
pub(crate) fn validate_wildcard_domain(domain: &str) -> Result<(), String> {
    check_dns1123_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (domain, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    match rest {
        Some(rest) => validate_dns1123_labels(rest),
        None => Ok(()),
    }
}

/// As [`validate_wildcard_domain`], but an SNI host of a gateway-bound VirtualService may also be
/// an auto-generated `outbound_.<PORT>_._.<HOSTNAME>` name (AUTO_PASSTHROUGH).
pub(crate) fn validate_wildcard_domain_for_gateway(sni: bool, domain: &str) -> Result<(), String> {
    check_dns1123_preconditions(domain)?;
    if sni && domain.starts_with("outbound_") {
        const FORMAT: &str = "outbound_.<PORT>_._.<HOSTNAME>";
        let parts: Vec<&str> = domain.split('_').collect();
        if parts.len() < 4 {
            return Err(format!(
                "domain name {domain} invalid, should follow '{FORMAT}' format"
            ));
        }
        let port = parts[1].trim_matches('.');
        let hostname = parts[3].trim_matches('.');
        if !port.bytes().any(|c| c.is_ascii_digit()) {
            return Err(format!(
                "domain name {domain:?} invalid (label {port:?} invalid). should follow {FORMAT} format"
            ));
        }
        if !hostname.bytes().any(|c| c.is_ascii_alphabetic()) {
            return Err(format!(
                "domain name {domain:?} invalid (label {hostname:?} invalid). should follow {FORMAT} format"
            ));
        }
        return Ok(());
    }
    validate_wildcard_domain(domain)
}

/// A port number in 1..=65535.
pub(crate) fn validate_port(port: i64) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port number {port} must be in the range 1..65535"))
    }
}

pub(crate) fn is_ip_address(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

pub(crate) fn validate_ip_address(addr: &str) -> Result<(), String> {
    if is_ip_address(addr) {
        Ok(())
    } else {
        Err(format!("{addr} is not a valid IP"))
    }
}

/// An IP address or a CIDR block.
pub(crate) fn validate_ip_subnet(subnet: &str) -> Result<(), String> {
    if subnet.matches('/').count() == 1 {
        return match subnet.parse::<ipnet::IpNet>() {
            Ok(_) => Ok(()),
            Err(_) => Err(format!("{subnet} is not a valid CIDR block")),
        };
    }
    validate_ip_address(subnet)
}

/// The path of a Unix domain socket (after `unix://`): absolute, or abstract (`@name`).
pub(crate) fn validate_unix_address(addr: &str) -> Result<(), String> {
    if addr.is_empty() {
        return Err("unix address must not be empty".into());
    }
    if addr.starts_with('@') {
        return Ok(());
    }
    if !addr.starts_with('/') || addr.ends_with('/') {
        return Err(format!("{addr} is not an absolute path to a file"));
    }
    Ok(())
}

pub(crate) fn is_qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Kubernetes label keys and values (`sourceLabels`, selectors): one message per bad entry.
pub(crate) fn validate_labels(labels: &BTreeMap<String, String>) -> Vec<String> {
    let mut errs = Vec::new();
    for (k, v) in labels {
        let (prefix, name) = match k.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, k.as_str()),
        };
        let prefix_ok = prefix.is_none_or(|p| !p.is_empty() && p.split('.').all(is_dns1123_label));
        if !prefix_ok || !is_qualified_name(name) {
            errs.push(format!("invalid tag key: {k:?}"));
        } else if prefix.is_some_and(|p| p.len() > 253) {
            errs.push(format!("invalid tag key: {k:?} (DNS prefix is too long)"));
        } else if name.len() > 63 {
            errs.push(format!("invalid tag key: {k:?} (name is too long)"));
        }
        if !v.is_empty() && !is_qualified_name(v) {
            errs.push(format!("invalid tag value: {v:?}"));
        }
    }
    errs
}

/// The protocols Istio knows for a port (case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Tcp,
    Udp,
    Grpc,
    GrpcWeb,
    Http,
    HttpProxy,
    Http2,
    Https,
    Tls,
    Mongo,
    Redis,
    MySql,
    Unsupported,
}

impl Protocol {
    pub(crate) fn parse(s: &str) -> Protocol {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "http" => Protocol::Http,
            "http_proxy" => Protocol::HttpProxy,
            "http2" => Protocol::Http2,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::MySql,
            _ => Protocol::Unsupported,
        }
    }

    pub(crate) fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::HttpProxy
                | Protocol::Grpc
                | Protocol::GrpcWeb
        )
    }

    pub(crate) fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }
}

/// A port protocol; empty means "detect".
pub(crate) fn validate_protocol(protocol: &str) -> Result<(), String> {
    if !protocol.is_empty() && Protocol::parse(protocol) == Protocol::Unsupported {
        return Err(format!(
            "unsupported protocol: {protocol}; use one of HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS, MONGO, REDIS, MYSQL, UDP, HTTP_PROXY"
        ));
    }
    Ok(())
}

pub(crate) fn validate_port_name(name: &str) -> Result<(), String> {
    if is_dns1123_label(name) {
        Ok(())
    } else {
        Err(format!("invalid port name: {name}"))
    }
}

pub(crate) fn validate_partial_wildcard(host: &str) -> Result<(), String> {
    if host.contains('*') && host.len() != 1 && !host.starts_with("*.") {
        return Err(format!("partial wildcard {host:?} not allowed"));
    }
    Ok(())
}

pub(crate) fn validate_sidecar_or_gateway_hostname_part(
    host: &str,
    is_gateway: bool,
) -> Vec<String> {
    let mut errs = Vec::new();
    if host != "*" && !host.contains('.') {
        errs.push("short names (non FQDN) are not allowed".to_string());
    }
    if let Err(e) = validate_wildcard_domain(host) {
        // Gateways accept an IP address as a host, too. (istiod reports a sidecar's bad host
        // twice; once is enough.)
        if !is_gateway || !is_ip_address(host) {
            errs.push(e);
        }
    }
    if let Err(e) = validate_partial_wildcard(host) {
        errs.push(e);
    }
    errs
}

/// A `namespace/dnsName` host of a Gateway server or a Sidecar egress listener. Gateways also
/// accept a bare `dnsName`.
pub(crate) fn validate_namespace_slash_wildcard_hostname(
    hostname: &str,
    is_gateway: bool,
    gateway_semantics: bool,
) -> Vec<String> {
    let Some((ns, dns)) = hostname.split_once('/') else {
        if is_gateway {
            return validate_sidecar_or_gateway_hostname_part(hostname, true);
        }
        return vec!["host must be of form namespace/dnsName".to_string()];
    };
    let mut errs = Vec::new();
    if ns.is_empty() || dns.is_empty() {
        errs.push("config namespace and dnsName in host entry cannot be empty".to_string());
    }
    if !is_gateway {
        if ns != "*" && ns != "." && ns != "~" && !is_dns1123_label(ns) {
            errs.push(format!("invalid namespace value {ns:?} in sidecar"));
        }
    } else if ns != "*" && ns != "." && (ns != "~" || !gateway_semantics) && !is_dns1123_label(ns) {
        errs.push(format!("invalid namespace value {ns:?} in gateway"));
    }
    errs.extend(validate_sidecar_or_gateway_hostname_part(dns, is_gateway));
    errs
}

/// A duration field: the CRD's CEL rule (at least 1ms) and the webhook's millisecond precision.
pub(crate) fn check_duration(out: &mut Issues, path: &str, d: Duration) {
    let d = d.get();
    if d < StdDuration::from_millis(1) {
        out.error(path, "must be a valid duration greater than 1ms");
    } else if !d.subsec_nanos().is_multiple_of(1_000_000) {
        out.error(path, "only durations to ms precision are supported");
    }
}

/// `exportTo` entries: `.`, `*`, or namespace names, without duplicates, `*` alone.
pub(crate) fn validate_export_to(
    out: &mut Issues,
    path: &str,
    namespace: &str,
    export_to: &[String],
) {
    let mut seen: Vec<&str> = Vec::new();
    for (i, e) in export_to.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let key = if e == "." { namespace } else { e.as_str() };
        if seen.contains(&key) {
            if key != e {
                out.error(
                    p,
                    format!("duplicate entries in exportTo: . and current namespace {namespace}"),
                );
            } else {
                out.error(p, format!("duplicate entries in exportTo for entry {e}"));
            }
            continue;
        }
        match key {
            "*" => seen.push(key),
            "~" => out.error(
                p,
                "exportTo ~ (none) is not allowed for Istio configuration objects",
            ),
            _ if is_dns1123_label(key) => seen.push(key),
            _ => out.error(
                p,
                "only .,*,~, or a valid DNS 1123 label is allowed as exportTo entry",
            ),
        }
    }
    if seen.contains(&"*") && export_to.len() > 1 {
        out.error(
            path,
            "cannot have both public (*) and non-public exportTo values for a resource",
        );
    }
}

/// Rejects the `istio.io/dry-run` annotation, which only AuthorizationPolicy supports.
pub(crate) fn validate_dry_run_annotation(meta: &Meta<'_>, out: &mut Issues) {
    if meta.metadata.annotations.contains_key("istio.io/dry-run") {
        out.error(
            "metadata.annotations.istio.io/dry-run",
            format!(
                "{}/{} has unsupported annotation istio.io/dry-run, please remove the annotation",
                meta.namespace, meta.name
            ),
        );
    }
}

/// `host.Name.Matches`: either host covers the other (wildcards on either side).
pub(crate) fn hosts_match(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => {
            if a.len() < b.len() {
                b.ends_with(sa)
            } else {
                a.ends_with(sb)
            }
        }
        (Some(sa), None) => b.ends_with(sa),
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => a == b,
    }
}

/// `host.Name.SubsetOf`: every name `n` covers is covered by `o`.
pub(crate) fn host_subset_of(n: &str, o: &str) -> bool {
    match (n.strip_prefix('*'), o.strip_prefix('*')) {
        (Some(sn), Some(so)) => n.len() >= o.len() && sn.ends_with(so),
        (None, Some(so)) => n.ends_with(so),
        (Some(_), None) => false,
        (None, None) => n == o,
    }
}

// === headers (shared) ===

pub(crate) fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

pub(crate) fn is_valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_token_char)
}

/// `@request.auth.claims.x` / `@request.auth.claims[x]`: JWT claim based routing keys.
pub(crate) fn is_jwt_claim_route(name: &str) -> bool {
    const PREFIX: &str = "@request.auth.claims";
    if name.len() < PREFIX.len() || !name[..PREFIX.len()].eq_ignore_ascii_case(PREFIX) {
        return false;
    }
    let rest = &name[PREFIX.len()..];
    (rest.starts_with('.') && rest.len() > 1)
        || (rest.starts_with('[') && rest.ends_with(']') && rest.len() > 2)
}

pub(crate) fn validate_header_name_or_jwt_claim_route(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if is_jwt_claim_route(name)
        || matches!(
            name,
            ":method" | ":scheme" | ":authority" | ":path" | ":status"
        )
    {
        return Ok(());
    }
    if !is_valid_header_name(name) {
        return Err(format!("header name {name} is not a valid header name"));
    }
    Ok(())
}

pub(crate) fn validate_cors_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name == "*" || is_valid_header_name(name) {
        return Ok(());
    }
    Err(format!("header name {name} is not a valid header name"))
}

pub(crate) fn is_internal_header(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

pub(crate) fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// Names in request `set`/`add`: no pseudo-headers, except the authority (checked elsewhere).
pub(crate) fn validate_header_with_authority_operation_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if is_internal_header(name) && !is_authority_header(name) {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    Ok(())
}

/// Names in request `remove` and in every response operation.
pub(crate) fn validate_header_operation_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name.eq_ignore_ascii_case("host") {
        return Err(format!("invalid header {name:?}: cannot set Host header"));
    }
    if is_internal_header(name) {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    Ok(())
}

/// A header value: no control characters, and `%VARIABLE%` expressions Envoy can parse (`%%`
/// is a literal `%`).
pub(crate) fn validate_header_value(value: &str) -> Result<(), String> {
    if value
        .chars()
        .any(|c| (c <= '\u{1f}' && c != '\t') || c == '\u{7f}')
    {
        return Err(format!("header value configuration {value} is invalid"));
    }
    validate_header_variables(value).map_err(|e| format!("header value configuration: {e}"))
}

/// Envoy's header formatter grammar: literal text, `%%`, `%VAR%` and `%VAR(args)%`.
pub(crate) fn validate_header_variables(v: &str) -> Result<(), String> {
    #[derive(PartialEq)]
    enum S {
        Literal,
        Name,
        ExpectArray,
        ExpectString,
        InString,
        ExpectDelimOrEnd,
        ExpectArgsEnd,
        ExpectVarEnd,
    }
    let b = v.as_bytes();
    let mut state = S::Literal;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let has_next = i + 1 < b.len();
        match state {
            S::Literal => {
                if c == b'%' {
                    if !has_next {
                        return Err("invalid header configuration. Un-escaped %".into());
                    }
                    if b[i + 1] == b'%' {
                        i += 1;
                    } else {
                        state = S::Name;
                    }
                }
            }
            S::Name => {
                if c == b'%' {
                    state = S::Literal;
                } else if c == b'(' {
                    state = S::ExpectArray;
                }
            }
            S::ExpectArray => {
                if c == b'[' {
                    state = S::ExpectString;
                } else if c != b' ' {
                    state = S::InString;
                }
            }
            S::ExpectDelimOrEnd => {
                if c == b',' {
                    state = S::ExpectString;
                } else if c == b']' {
                    state = S::ExpectArgsEnd;
                } else if c != b' ' {
                    return Err(
                        "invalid header configuration. Expecting ',', ']', or whitespace".into(),
                    );
                }
            }
            S::ExpectString => {
                if c == b'"' {
                    state = S::InString;
                } else if c != b' ' {
                    return Err("invalid header configuration. Expecting '\"'".into());
                }
            }
            S::InString => {
                if c == b'\\' {
                    if !has_next {
                        return Err(
                            "invalid header configuration. Un-terminated backslash in JSON string"
                                .into(),
                        );
                    }
                    i += 1;
                } else if c == b')' {
                    state = S::ExpectVarEnd;
                } else if c == b'"' {
                    state = S::ExpectDelimOrEnd;
                }
            }
            S::ExpectArgsEnd => {
                if c == b')' {
                    state = S::ExpectVarEnd;
                } else if c != b' ' {
                    return Err("invalid header configuration. Expecting ')' or whitespace".into());
                }
            }
            S::ExpectVarEnd => {
                if c == b'%' {
                    state = S::Literal;
                } else if c != b' ' {
                    return Err(
                        "invalid header configuration. Expecting '%' or whitespace after".into(),
                    );
                }
            }
        }
        i += 1;
    }
    if state != S::Literal {
        return Err(format!(
            "invalid header configuration. Un-terminated variable expression '{v}'"
        ));
    }
    Ok(())
}

pub(crate) fn validate_header_operations(out: &mut Issues, path: &str, headers: &Headers) {
    let ops = |out: &mut Issues, dir: &str, op: &HeaderOperations| {
        let request = dir == "request";
        for (kind, map) in [("set", &op.set), ("add", &op.add)] {
            for (name, value) in map {
                let p = format!("{path}.{dir}.{kind}.{name}");
                let name_check = if request {
                    validate_header_with_authority_operation_name(name)
                } else {
                    validate_header_operation_name(name)
                };
                if let Err(e) = name_check {
                    out.error(&p, e);
                }
                if let Err(e) = validate_header_value(value) {
                    out.error(&p, e);
                }
            }
        }
        for (i, name) in op.remove.iter().enumerate() {
            if let Err(e) = validate_header_operation_name(name) {
                out.error(format!("{path}.{dir}.remove[{i}]"), e);
            }
        }
    };
    if let Some(req) = &headers.request {
        ops(out, "request", req);
    }
    if let Some(resp) = &headers.response {
        ops(out, "response", resp);
    }
}

// === destinations (shared with Sidecar's egressProxy) ===

/// A `Destination`: a host (not `*`), a DNS-label subset, a valid port.
pub(crate) fn validate_destination(out: &mut Issues, path: &str, d: &Destination) {
    if d.host == "*" {
        out.error(
            format!("{path}.host"),
            "invalid destination host *; name a service host, such as reviews or reviews.default.svc.cluster.local",
        );
    } else if let Err(e) = validate_wildcard_domain(&d.host) {
        out.error(format!("{path}.host"), e);
    }
    if let Some(subset) = d.subset.as_deref().filter(|s| !s.is_empty())
        && !is_dns1123_label(subset)
    {
        out.error(
            format!("{path}.subset"),
            format!("subset name is invalid: {subset}"),
        );
    }
    if let Some(port) = &d.port
        && let Err(e) = validate_port(port.number.unwrap_or(0).into())
    {
        out.error(format!("{path}.port.number"), e);
    }
}

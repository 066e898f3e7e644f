//! Istio's rules for header names, header values and header operations, and for a route's
//! `Destination`, shared by the VirtualService and Sidecar validators. Each returns Istio's
//! message, so callers only add the document path. The rules other kinds share too (hosts,
//! ports, addresses, durations, `exportTo`) are in [`crate::kinds::rules`].

use super::{Destination, HeaderOperations, Headers};
use crate::kinds::{
    Issues,
    rules::{is_dns1123_label, validate_port, validate_wildcard_domain},
};

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

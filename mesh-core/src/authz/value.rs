//! How one policy value matches one attribute value: Istio's exact, prefix, suffix and presence
//! forms, path templates, CIDR blocks and ports. Built once per value when the engine is built.

use std::net::IpAddr;

/// A string value of a rule, as the reference's `Rule` section describes it: "Exact match:
/// `abc` will match on value `abc`. Prefix match: `abc*` will match on value `abc` and `abcd`.
/// Suffix match: `*abc` will match on value `abc` and `xabc`. Presence match: `*` will match when
/// value is not empty."
///
/// A value with a `*` at both ends (`*abc*`) is a suffix match of `abc*`, literally: Istio has
/// no "contains" form, and a leading `*` is read first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StrMatch {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    Presence,
}

impl StrMatch {
    pub(crate) fn parse(value: &str) -> Self {
        if value == "*" {
            StrMatch::Presence
        } else if let Some(suffix) = value.strip_prefix('*') {
            StrMatch::Suffix(suffix.into())
        } else if let Some(prefix) = value.strip_suffix('*') {
            StrMatch::Prefix(prefix.into())
        } else {
            StrMatch::Exact(value.into())
        }
    }

    /// Case-sensitive match (principals, namespaces, methods, headers, claims, ...).
    pub(crate) fn matches(&self, value: &str) -> bool {
        match self {
            StrMatch::Exact(e) => value == &**e,
            StrMatch::Prefix(p) => value.starts_with(&**p),
            StrMatch::Suffix(s) => value.ends_with(&**s),
            StrMatch::Presence => !value.is_empty(),
        }
    }

    /// ASCII case-insensitive match (`hosts`: "The match is case-insensitive.").
    pub(crate) fn matches_ignore_case(&self, value: &str) -> bool {
        let v = value.as_bytes();
        match self {
            StrMatch::Exact(e) => v.eq_ignore_ascii_case(e.as_bytes()),
            StrMatch::Prefix(p) => {
                v.len() >= p.len() && v[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            }
            StrMatch::Suffix(s) => {
                v.len() >= s.len() && v[v.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
            StrMatch::Presence => !v.is_empty(),
        }
    }
}

/// A value of `paths`/`notPaths`: a string form, or a path template when it contains `{*}` or
/// `{**}` (the reference's `Operation.paths`: "`{*}` matches a single glob that cannot extend
/// beyond a path segment. `{**}` matches zero or more globs. If a path contains `{**}`, it must
/// be the last operator.").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathMatch {
    Str(StrMatch),
    Template(PathTemplate),
}

impl PathMatch {
    /// The matcher for a `paths` value, or an error for a template Istio rejects (the caller
    /// then falls back to an exact match, which such a value never meets in a real request).
    pub(crate) fn parse(value: &str) -> Result<Self, String> {
        if value.contains("{*}") || value.contains("{**}") {
            PathTemplate::parse(value).map(PathMatch::Template)
        } else {
            Ok(PathMatch::Str(StrMatch::parse(value)))
        }
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Str(m) => m.matches(path),
            PathMatch::Template(t) => t.matches(path),
        }
    }
}

/// A parsed path template: literal runs and operators, `{**}` at most once and last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathTemplate {
    parts: Vec<TemplatePart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplatePart {
    Literal(Box<str>),
    /// `{*}`: one or more segment characters, no `/`.
    Segment,
    /// `{**}`: zero or more segment characters and `/`.
    Rest,
}

/// The characters a `{*}`/`{**}` operator matches (RFC 3986 `pchar` without percent decoding),
/// and the only ones allowed in the literal segments of a template.
fn is_segment_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&b)
}

impl PathTemplate {
    fn parse(template: &str) -> Result<Self, String> {
        let mut parts: Vec<TemplatePart> = Vec::new();
        let mut literal = String::new();
        let mut seen_rest = false;
        for (i, segment) in template.split('/').enumerate() {
            if i > 0 {
                literal.push('/');
            }
            let op = match segment {
                "{*}" => TemplatePart::Segment,
                "{**}" => TemplatePart::Rest,
                _ => {
                    if !segment.bytes().all(is_segment_char) {
                        return Err(format!(
                            "path template {template:?}: segment {segment:?} has characters \
                             other than a whole {{*}} or {{**}} operator"
                        ));
                    }
                    literal.push_str(segment);
                    continue;
                }
            };
            if seen_rest {
                return Err(format!(
                    "path template {template:?}: {{**}} must be the last operator"
                ));
            }
            seen_rest = op == TemplatePart::Rest;
            if !literal.is_empty() {
                parts.push(TemplatePart::Literal(std::mem::take(&mut literal).into()));
            }
            parts.push(op);
        }
        if !literal.is_empty() {
            parts.push(TemplatePart::Literal(literal.into()));
        }
        Ok(PathTemplate { parts })
    }

    /// Whether the whole path matches.
    pub(crate) fn matches(&self, path: &str) -> bool {
        let mut rest = path;
        let mut parts = self.parts.iter();
        while let Some(part) = parts.next() {
            match part {
                TemplatePart::Literal(lit) => match rest.strip_prefix(&**lit) {
                    Some(r) => rest = r,
                    None => return false,
                },
                TemplatePart::Segment => {
                    let n = rest.bytes().take_while(|&b| is_segment_char(b)).count();
                    if n == 0 {
                        return false;
                    }
                    rest = &rest[n..];
                }
                TemplatePart::Rest => {
                    // `{**}` is last: what follows is one literal (or nothing) that ends the path.
                    let tail = match parts.next() {
                        Some(TemplatePart::Literal(lit)) => &**lit,
                        _ => "",
                    };
                    let Some(middle) = rest.strip_suffix(tail) else {
                        return false;
                    };
                    return middle.bytes().all(|b| b == b'/' || is_segment_char(b));
                }
            }
        }
        rest.is_empty()
    }
}

/// Whether `ip` is in one of `blocks`; an IPv4-mapped IPv6 peer address (`::ffff:a.b.c.d`, as a
/// dual-stack listener reports IPv4 clients) is compared as the IPv4 address.
pub(crate) fn ip_in(blocks: &[ipnet::IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    blocks.iter().any(|b| b.contains(&ip))
}

/// An IP address or CIDR range of `ipBlocks` or of a `source.ip`-like condition.
pub(crate) fn parse_ip_block(value: &str) -> Option<ipnet::IpNet> {
    value
        .parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| value.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

//! Where a JWT rule looks for tokens ([`fromHeaders`], [`fromParams`], [`fromCookies`]) and how
//! a token is taken off the request afterwards, as Envoy's `jwt_authn` extractor does.
//!
//! [`fromHeaders`]: https://istio.io/latest/docs/reference/config/security/request_authentication/#JWTRule-from_headers
//! [`fromParams`]: https://istio.io/latest/docs/reference/config/security/request_authentication/#JWTRule-from_params
//! [`fromCookies`]: https://istio.io/latest/docs/reference/config/security/request_authentication/#JWTRule-from_cookies

use std::borrow::Cow;

use http::{HeaderName, Uri, header, request::Parts, uri::PathAndQuery};

/// One place a rule reads tokens from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Location {
    /// A header; with a prefix (`Bearer `), only values containing it, from the first base64url
    /// character after it.
    Header { name: HeaderName, prefix: String },
    /// A query parameter (its first value, percent-decoded).
    Param(String),
    /// A cookie (its first value, surrounding quotes removed).
    Cookie(String),
}

/// Istio's default when a rule names no location: `Authorization: Bearer <token>` and the
/// `access_token` query parameter.
pub(super) fn default_locations() -> Vec<Location> {
    vec![
        Location::Header {
            name: header::AUTHORIZATION,
            prefix: "Bearer ".into(),
        },
        Location::Param("access_token".into()),
    ]
}

/// The characters of a base64url JWT, and the dots between its parts.
fn jwt_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

impl Location {
    /// Appends the tokens found here.
    pub(super) fn extract(&self, parts: &Parts, out: &mut Vec<String>) {
        match self {
            Location::Header { name, prefix } => {
                for value in parts.headers.get_all(name) {
                    let Ok(value) = value.to_str() else { continue };
                    if prefix.is_empty() {
                        out.push(value.to_owned());
                        continue;
                    }
                    let Some(at) = value.find(prefix.as_str()) else {
                        continue;
                    };
                    let rest = &value[at + prefix.len()..];
                    // Envoy skips to the first JWT character; with none it keeps the value.
                    let token = rest.find(jwt_char).map_or(value, |i| &rest[i..]);
                    out.push(token.to_owned());
                }
            }
            Location::Param(name) => {
                if let Some(v) = query_pairs(parts.uri.query())
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v)
                {
                    out.push(v.into_owned());
                }
            }
            Location::Cookie(name) => {
                if let Some(v) = cookie(parts, name) {
                    out.push(v.to_owned());
                }
            }
        }
    }

    /// Takes the token off the request (`forwardOriginalToken: false`): the whole header, or
    /// every value of the query parameter. Cookies stay, as in Envoy (which does not remove
    /// cookie tokens).
    pub(super) fn remove(&self, parts: &mut Parts) {
        match self {
            Location::Header { name, .. } => {
                parts.headers.remove(name);
            }
            Location::Param(name) => remove_param(&mut parts.uri, name),
            Location::Cookie(_) => {}
        }
    }
}

/// `key=value` pairs of a query, percent-decoded.
fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
}

/// Removes every `name=...` pair from the query, leaving the others as they were written.
fn remove_param(uri: &mut Uri, name: &str) {
    let Some(query) = uri.query() else { return };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            percent_decode(key) != name
        })
        .collect();
    let mut pq = uri.path().to_owned();
    if !kept.is_empty() {
        pq.push('?');
        pq.push_str(&kept.join("&"));
    }
    let mut parts = std::mem::take(uri).into_parts();
    // Built from a valid path and a subset of a valid query: cannot fail.
    parts.path_and_query = PathAndQuery::try_from(pq).ok();
    *uri = Uri::from_parts(parts).unwrap_or_default();
}

/// `%XX` decoding (invalid escapes are kept as written).
fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// The first value of cookie `name` in the `Cookie` headers.
fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim_start().split_once('=')?;
            (k == name).then(|| {
                v.strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v)
            })
        })
}

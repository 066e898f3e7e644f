//! Signing in and out: the `user` cookie, the sign-in form, and where to go back to.

use http::{HeaderMap, HeaderValue, Response, StatusCode, Uri, header};
use mesh_tower::body::{self, MeshBody};

/// The cookie that holds the signed-in user.
pub const USER_COOKIE: &str = "user";

/// Longer names are not accepted (the name goes into a header on every call).
const MAX_USER: usize = 256;

/// The signed-in user, from the `user` cookie; `None` when signed out or when the cookie does
/// not decode to a usable name.
pub(crate) fn user(headers: &HeaderMap) -> Option<String> {
    let raw = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == USER_COOKIE)
        .map(|(_, value)| value.trim_matches('"'))?;
    let name = String::from_utf8(percent_decode(raw.as_bytes(), false)).ok()?;
    usable(&name).then_some(name)
}

/// A name that fits in a header and a cookie: not empty, not too long, no control characters.
fn usable(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USER
        && !name.chars().any(char::is_control)
        && HeaderValue::from_str(name).is_ok()
}

/// `POST /login`: signs `username` in (an unusable or missing name signs nobody in) and goes
/// back.
pub(crate) fn login(headers: &HeaderMap, username: Option<&str>) -> Response<MeshBody> {
    let name = username.map(str::trim).filter(|n| usable(n));
    let cookie = name.map(|n| format!("{USER_COOKIE}={}; Path=/; SameSite=Lax", percent_encode(n)));
    go_back(headers, cookie)
}

/// `GET /logout`: clears the cookie and goes back.
pub(crate) fn logout(headers: &HeaderMap) -> Response<MeshBody> {
    go_back(
        headers,
        Some(format!("{USER_COOKIE}=; Path=/; Max-Age=0; SameSite=Lax")),
    )
}

/// 302 to the page the form was on (the path of the `Referer`, so never another site), else
/// to `/productpage`.
fn go_back(headers: &HeaderMap, set_cookie: Option<String>) -> Response<MeshBody> {
    let back = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Uri>().ok())
        .and_then(|u| u.path_and_query().map(|p| p.as_str().to_owned()))
        .filter(|p| p.starts_with('/') && !p.starts_with("//"))
        .unwrap_or_else(|| "/productpage".to_owned());
    let mut res = Response::new(body::empty());
    *res.status_mut() = StatusCode::FOUND;
    if let Ok(location) = HeaderValue::from_str(&back) {
        res.headers_mut().insert(header::LOCATION, location);
    }
    if let Some(cookie) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        res.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    res
}

/// The value of `key` in an `application/x-www-form-urlencoded` body or query.
pub(crate) fn form_value(form: &[u8], key: &str) -> Option<String> {
    form.split(|b| *b == b'&')
        .filter_map(|pair| {
            let mut it = pair.splitn(2, |b| *b == b'=');
            Some((it.next()?, it.next().unwrap_or_default()))
        })
        .find(|(k, _)| percent_decode(k, true) == key.as_bytes())
        .and_then(|(_, v)| String::from_utf8(percent_decode(v, true)).ok())
}

/// Decodes `%XX` escapes (and `+` as a space in forms); a malformed escape stays as it is.
pub(super) fn percent_decode(input: &[u8], plus_is_space: bool) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' if i + 2 < input.len() => match (hex(input[i + 1]), hex(input[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Encodes all but RFC 3986's unreserved characters, so any name fits in a cookie value.
pub(super) fn percent_encode(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for b in input.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

//! One compiled `HTTPMatchRequest`, and the choice of the first matching route.

use http::HeaderName;

use crate::Selector;

use super::{
    request::{HeaderValue, MESH_GATEWAY, RequestView},
    string::{HeaderMatcher, StringMatcher},
};

/// One compiled Istio
/// [`HTTPMatchRequest`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPMatchRequest):
/// the conditions a request must meet for an `http` route to apply.
///
/// All the conditions are ANDed; a condition left at its default (`None`, empty) is not checked,
/// so `HttpMatch::default()` matches every request. A route's `match` list is ORed: see
/// [`matches_any`] and [`first_match`].
///
/// The loader builds it from the YAML, once: regexes compiled, header names parsed (which
/// lowercases them), short gateway names qualified. Istio ignores the keys `uri`, `scheme`,
/// `method` and `authority` in `headers`; the loader drops them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpMatch {
    /// [`name`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPMatchRequest-name):
    /// for logs and `mesh route`; it takes no part in matching.
    pub name: Option<String>,
    /// [`uri`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPMatchRequest-uri):
    /// matched against the path without the query string.
    pub uri: Option<StringMatcher>,
    /// [`scheme`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPMatchRequest-scheme):
    /// the URI scheme (`http`, `https`), case-sensitive.
    pub scheme: Option<StringMatcher>,
    /// [`method`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPMatchRequest-method):
    /// the HTTP method, case-sensitive.
    pub method: Option<StringMatcher>,
    /// [`authority`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPMatchRequest-authority):
    /// the `:authority`/`Host` value as sent (with its port, if any), case-sensitive.
    pub authority: Option<StringMatcher>,
    /// [`headers`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPMatchRequest-headers):
    /// every one must match. Several fields of one name are matched as their values joined
    /// with `,` (as Envoy does).
    pub headers: Vec<(HeaderName, HeaderMatcher)>,
    /// [`withoutHeaders`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPMatchRequest-without_headers):
    /// the request must match **none** of them (`Present` means: the header must be absent).
    pub without_headers: Vec<(HeaderName, HeaderMatcher)>,
    /// [`queryParams`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPMatchRequest-query_params):
    /// every one must match the first parameter of that name, compared as written in the URL
    /// (not percent-decoded). `?key` and `?key=` have the value `""`.
    pub query_params: Vec<(String, HeaderMatcher)>,
    /// [`port`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPMatchRequest-port):
    /// the destination port.
    pub port: Option<u16>,
    /// [`sourceLabels`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPMatchRequest-source_labels):
    /// each of these labels must be on the client workload with the same value (empty: any).
    pub source_labels: Selector,
    /// [`sourceNamespace`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPMatchRequest-source_namespace):
    /// the client workload's namespace.
    pub source_namespace: Option<String>,
    /// [`gateways`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPMatchRequest-gateways):
    /// the request must arrive through one of these gateways; `"mesh"` stands for sidecars and
    /// in-process clients. Empty: any. Istio applies the VirtualService's top-level `gateways`
    /// (default `[mesh]`) when a match names none; the loader does that, either by copying them
    /// here or by routing per gateway before matching.
    pub gateways: Vec<String>,
    /// [`ignoreUriCase`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPMatchRequest-ignore_uri_case):
    /// compare an `exact` or `prefix` uri ASCII case-insensitively (no effect on `regex`).
    pub ignore_uri_case: bool,
}

// === impl HttpMatch ===

impl HttpMatch {
    /// Does the request meet every condition of this match?
    ///
    /// Cheap conditions are checked first; nothing allocates unless a header matched by value
    /// occurs several times in the request.
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        self.gateway_matches(req)
            && self.port.is_none_or(|p| req.port() == Some(p))
            && self
                .source_namespace
                .as_deref()
                .is_none_or(|ns| req.source_namespace() == Some(ns))
            && self.source_labels.matches(req.source_labels())
            && self.method.as_ref().is_none_or(|m| m.matches(req.method()))
            && self.scheme.as_ref().is_none_or(|m| m.matches(req.scheme()))
            && self
                .authority
                .as_ref()
                .is_none_or(|m| req.authority().is_some_and(|a| m.matches(a)))
            && self
                .uri
                .as_ref()
                .is_none_or(|m| m.matches_with(req.path(), self.ignore_uri_case))
            && self
                .headers
                .iter()
                .all(|(name, m)| header_matches(req, name, m))
            && !self
                .without_headers
                .iter()
                .any(|(name, m)| header_matches(req, name, m))
            && self
                .query_params
                .iter()
                .all(|(name, m)| m.matches(req.query_param(name)))
    }

    fn gateway_matches(&self, req: &RequestView<'_>) -> bool {
        if self.gateways.is_empty() {
            return true;
        }
        let arrived = req.gateway().unwrap_or(MESH_GATEWAY);
        self.gateways.iter().any(|g| g == arrived)
    }
}

fn header_matches(req: &RequestView<'_>, name: &HeaderName, m: &HeaderMatcher) -> bool {
    match m {
        HeaderMatcher::Present => req.headers().contains_key(name),
        HeaderMatcher::Value(m) => match req.header_value(name) {
            HeaderValue::Text(v) => m.matches(&v),
            HeaderValue::Absent | HeaderValue::NotUtf8 => false,
        },
    }
}

/// Does a route's `match` list accept the request? The list is ORed, and an empty list matches
/// every request (Istio: a route without `match` is a catch-all).
pub fn matches_any(matches: &[HttpMatch], req: &RequestView<'_>) -> bool {
    matched_condition(matches, req).is_some()
}

/// Which route matched, and by which entry of its `match` list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteMatch {
    /// Index of the route (in the order the routes were given).
    pub route: usize,
    /// Index of the first entry of the route's `match` list that matched; `None` when the list
    /// is empty (a catch-all route).
    pub condition: Option<usize>,
}

/// The index of the first route whose `match` list accepts the request.
///
/// This is Istio's order of evaluation for a VirtualService's `http` routes: "the first rule
/// matching an incoming request is used". Give each route's `match` list in order; `None` means
/// no route matched (Envoy answers 404, `x-mesh-error: no-route`).
pub fn first_match<'m>(
    routes: impl IntoIterator<Item = &'m [HttpMatch]>,
    req: &RequestView<'_>,
) -> Option<usize> {
    first_match_detail(routes, req).map(|m| m.route)
}

/// Like [`first_match`], and also says which entry of the route's `match` list matched (its
/// `name` is what Istio appends to the route name in stats and logs).
pub fn first_match_detail<'m>(
    routes: impl IntoIterator<Item = &'m [HttpMatch]>,
    req: &RequestView<'_>,
) -> Option<RouteMatch> {
    routes.into_iter().enumerate().find_map(|(route, matches)| {
        matched_condition(matches, req).map(|condition| RouteMatch { route, condition })
    })
}

/// `Some(None)` for an empty list, `Some(Some(i))` for the first matching entry, `None` if none.
fn matched_condition(matches: &[HttpMatch], req: &RequestView<'_>) -> Option<Option<usize>> {
    if matches.is_empty() {
        return Some(None);
    }
    matches.iter().position(|m| m.matches(req)).map(Some)
}

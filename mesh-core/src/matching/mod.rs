//! Request matching: which of a VirtualService's `http` routes applies to a request.
//!
//! This is the compiled, pure form of Istio's
//! [`HTTPMatchRequest`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPMatchRequest)
//! with the semantics Envoy gives it once Istio has translated it into route matchers:
//!
//! - a [`StringMatcher`] is `exact`, `prefix` or `regex`; a regex matches the **whole** value
//!   (Envoy's `safe_regex`), and `ignoreUriCase` makes exact and prefix uri matches ASCII
//!   case-insensitive;
//! - a [`HeaderMatcher`] checks a header or query parameter by value, or only its presence;
//! - the conditions of one [`HttpMatch`] are ANDed, an empty `HttpMatch` matches everything;
//! - a route's `match` list is ORed and an empty list matches every request ([`matches_any`]);
//! - routes are tried in order and the first match wins ([`first_match`]).
//!
//! The request side is a [`RequestView`], a cheap borrowed view of the request head plus what
//! the layer knows about the connection and the client workload.
//!
//! ```
//! use mesh_core::matching::{HeaderMatcher, HttpMatch, RequestView, StringMatcher, first_match};
//!
//! // http:
//! // - match: [{headers: {end-user: {exact: jason}}}]   # route 0
//! // - match: [{uri: {prefix: /ratings/}}]              # route 1
//! // - route: ...                                       # route 2: no match, catch-all
//! let jason = HttpMatch {
//!     headers: vec![(
//!         "end-user".parse().unwrap(),
//!         HeaderMatcher::Value(StringMatcher::exact("jason")),
//!     )],
//!     ..HttpMatch::default()
//! };
//! let ratings = HttpMatch {
//!     uri: Some(StringMatcher::prefix("/ratings/")),
//!     ..HttpMatch::default()
//! };
//! let routes: Vec<Vec<HttpMatch>> = vec![vec![jason], vec![ratings], vec![]];
//!
//! let req = http::Request::get("http://reviews:9080/ratings/0?x=1").body(()).unwrap();
//! let view = RequestView::from_request(&req);
//! assert_eq!(first_match(routes.iter().map(Vec::as_slice), &view), Some(1));
//! ```

mod http_match;
mod l4;
mod request;
mod string;

#[cfg(test)]
mod tests;

pub use http_match::{HttpMatch, RouteMatch, first_match, first_match_detail, matches_any};
pub use l4::{ConnectionView, L4Match, TlsMatch, best_tls_match, first_tcp_match};
pub use request::{MESH_GATEWAY, RequestView};
pub use string::{HeaderMatcher, StringMatchKind, StringMatcher};

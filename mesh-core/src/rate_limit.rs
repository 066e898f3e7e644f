//! Descriptors for Envoy's local rate limit: which per-descriptor buckets a request draws from.
//!
//! A route's [`rate_limits`](https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/route/v3/route_components.proto#config-route-v3-ratelimit)
//! entries each hold a list of actions; for one request, an entry yields one descriptor (a list
//! of key/value entries, one per action) when **every** action produces its entry, and nothing
//! otherwise. The local rate limit filter then looks for its configured
//! [`descriptors`](https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto)
//! whose entries equal a generated descriptor's (an empty configured value matches any value:
//! Envoy's wildcard for local descriptors), and draws from those buckets.

use std::net::IpAddr;

use http::HeaderName;

use crate::{
    matching::{RequestView, StringMatcher},
    model::TokenBucket,
};

/// A configured descriptor and its bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// `(key, value)`; an empty value matches any value of the key.
    pub entries: Vec<(String, String)>,
    pub bucket: TokenBucket,
}

/// One `rate_limits` entry: the actions that together build a descriptor.
pub type RateLimitActions = Vec<RateLimitAction>;

/// The rate limit actions mesh evaluates.
#[derive(Debug, Clone)]
pub enum RateLimitAction {
    /// `remote_address`: `("remote_address", <client IP>)`; produces nothing without one.
    RemoteAddress,
    /// `generic_key`: a constant entry (`descriptor_key` defaults to `generic_key`).
    GenericKey { key: String, value: String },
    /// `request_headers`: `(descriptor_key, <header value>)`; without the header the whole
    /// descriptor is skipped (`skip_if_absent` or not: both produce no descriptor).
    RequestHeaders { header: String, key: String },
    /// `header_value_match`: `(descriptor_key, descriptor_value)` when the headers match (or,
    /// with `expect_match: false`, when they do not). `descriptor_key` defaults to
    /// `header_match`.
    HeaderValueMatch {
        key: String,
        value: String,
        expect_match: bool,
        headers: Vec<HeaderCondition>,
    },
}

/// One of Envoy's route `HeaderMatcher`s, as `header_value_match` uses them. The name may be a
/// pseudo-header: `:path` (with the query), `:method`, `:authority`, `:scheme`.
#[derive(Debug, Clone)]
pub struct HeaderCondition {
    pub name: String,
    /// `None`: `present_match`.
    pub matcher: Option<StringMatcher>,
    pub invert: bool,
}

impl HeaderCondition {
    fn matches(&self, req: &RequestView<'_>) -> bool {
        let value = header(req, &self.name);
        let hit = match (&self.matcher, value) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(m), Some(v)) => m.matches(&v),
        };
        hit != self.invert
    }
}

/// A header's value by name, pseudo-headers included.
fn header<'a>(req: &RequestView<'a>, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    use std::borrow::Cow;
    match name {
        ":path" => Some(match req.query() {
            Some(q) => Cow::Owned(format!("{}?{q}", req.path())),
            None => Cow::Borrowed(req.path()),
        }),
        ":method" => Some(Cow::Borrowed(req.method())),
        ":authority" => req.authority().map(Cow::Borrowed),
        ":scheme" => Some(Cow::Borrowed(req.scheme())),
        _ => {
            let name = HeaderName::try_from(name).ok()?;
            req.headers()
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .map(Cow::Borrowed)
        }
    }
}

/// The descriptors `actions` generate for a request from `remote`.
pub fn generate(
    actions: &[RateLimitActions],
    req: &RequestView<'_>,
    remote: Option<IpAddr>,
) -> Vec<Vec<(String, String)>> {
    actions
        .iter()
        .filter_map(|entry| {
            entry
                .iter()
                .map(|action| produce(action, req, remote))
                .collect::<Option<Vec<_>>>()
        })
        .filter(|d| !d.is_empty())
        .collect()
}

fn produce(
    action: &RateLimitAction,
    req: &RequestView<'_>,
    remote: Option<IpAddr>,
) -> Option<(String, String)> {
    match action {
        RateLimitAction::RemoteAddress => Some(("remote_address".into(), remote?.to_string())),
        RateLimitAction::GenericKey { key, value } => Some((key.clone(), value.clone())),
        RateLimitAction::RequestHeaders { header: name, key } => {
            Some((key.clone(), header(req, name)?.into_owned()))
        }
        RateLimitAction::HeaderValueMatch {
            key,
            value,
            expect_match,
            headers,
        } => {
            let all = headers.iter().all(|h| h.matches(req));
            (all == *expect_match).then(|| (key.clone(), value.clone()))
        }
    }
}

impl Descriptor {
    /// Whether a generated descriptor matches this one: the same keys in the same order, and
    /// equal values where this one sets a value.
    pub fn matches(&self, generated: &[(String, String)]) -> bool {
        self.entries.len() == generated.len()
            && self
                .entries
                .iter()
                .zip(generated)
                .all(|((k, v), (gk, gv))| k == gk && (v.is_empty() || v == gv))
    }
}

/// The indexes of the configured descriptors the request's generated descriptors match, each
/// once, in configuration order.
pub fn matching(configured: &[Descriptor], generated: &[Vec<(String, String)>]) -> Vec<usize> {
    configured
        .iter()
        .enumerate()
        .filter(|(_, d)| generated.iter().any(|g| d.matches(g)))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{HeaderMap, Method, Uri};

    use super::*;

    fn bucket(n: u32) -> TokenBucket {
        TokenBucket {
            max_tokens: n,
            tokens_per_fill: n,
            fill_interval: Duration::from_secs(60),
        }
    }

    fn productpage_match() -> RateLimitAction {
        RateLimitAction::HeaderValueMatch {
            key: "header_match".into(),
            value: "productpage".into(),
            expect_match: true,
            headers: vec![HeaderCondition {
                name: ":path".into(),
                matcher: Some(StringMatcher::prefix("/productpage").ignore_case(true)),
                invert: false,
            }],
        }
    }

    #[test]
    fn istio_sample_shape_generates_and_matches() {
        // Istio's samples/ratelimit local-rate-limit-service: remote_address, and a
        // header_value_match on :path.
        let actions = vec![
            vec![RateLimitAction::RemoteAddress],
            vec![productpage_match()],
        ];
        let configured = vec![Descriptor {
            entries: vec![("header_match".into(), "productpage".into())],
            bucket: bucket(10),
        }];
        let headers = HeaderMap::new();
        let (get, uri) = (Method::GET, Uri::from_static("/ProductPage?u=normal"));
        let req = RequestView::new(&get, &uri, &headers);
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let generated = generate(&actions, &req, Some(ip));
        assert_eq!(
            generated,
            vec![
                vec![("remote_address".to_owned(), "10.0.0.7".to_owned())],
                vec![("header_match".to_owned(), "productpage".to_owned())],
            ]
        );
        assert_eq!(matching(&configured, &generated), vec![0]);

        let other = Uri::from_static("/reviews/0");
        let req = RequestView::new(&get, &other, &headers);
        let generated = generate(&actions, &req, None);
        assert!(generated.is_empty(), "{generated:?}");
        assert!(matching(&configured, &generated).is_empty());
    }

    #[test]
    fn a_descriptor_needs_every_action() {
        let actions = vec![vec![
            RateLimitAction::GenericKey {
                key: "generic_key".into(),
                value: "api".into(),
            },
            RateLimitAction::RequestHeaders {
                header: "x-user".into(),
                key: "user".into(),
            },
        ]];
        let (get, uri) = (Method::GET, Uri::from_static("/"));
        let mut headers = HeaderMap::new();
        assert!(generate(&actions, &RequestView::new(&get, &uri, &headers), None).is_empty());
        headers.insert("x-user", "jason".parse().unwrap());
        let generated = generate(&actions, &RequestView::new(&get, &uri, &headers), None);
        assert_eq!(
            generated,
            vec![vec![
                ("generic_key".to_owned(), "api".to_owned()),
                ("user".to_owned(), "jason".to_owned())
            ]]
        );
        let wildcard = Descriptor {
            entries: vec![
                ("generic_key".into(), "api".into()),
                ("user".into(), "".into()),
            ],
            bucket: bucket(1),
        };
        let exact_other = Descriptor {
            entries: vec![
                ("generic_key".into(), "api".into()),
                ("user".into(), "kim".into()),
            ],
            bucket: bucket(1),
        };
        assert_eq!(matching(&[exact_other, wildcard], &generated), vec![1]);
    }

    #[test]
    fn expect_match_false_and_invert() {
        let action = RateLimitAction::HeaderValueMatch {
            key: "header_match".into(),
            value: "not-get".into(),
            expect_match: false,
            headers: vec![HeaderCondition {
                name: ":method".into(),
                matcher: Some(StringMatcher::exact("GET")),
                invert: false,
            }],
        };
        let uri = Uri::from_static("/");
        let headers = HeaderMap::new();
        let get = Method::GET;
        let post = Method::POST;
        assert!(
            generate(
                &[vec![action.clone()]],
                &RequestView::new(&get, &uri, &headers),
                None
            )
            .is_empty()
        );
        assert_eq!(
            generate(
                &[vec![action]],
                &RequestView::new(&post, &uri, &headers),
                None
            )
            .len(),
            1
        );
    }
}

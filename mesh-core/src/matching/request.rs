//! The request attributes that Istio's route matching looks at, borrowed from the request.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, Method, Uri, header::HOST, request::Parts};

use crate::Labels;

/// The gateway name Istio reserves for sidecars (and, here, in-process clients).
pub const MESH_GATEWAY: &str = "mesh";

static NO_LABELS: Labels = Labels::new();

/// A borrowed view of the attributes of one request that a
/// [`HttpMatch`](super::HttpMatch) looks at.
///
/// Building one copies a few references and parses nothing that allocates: layers build it per
/// request from the request head ([`from_parts`](Self::from_parts),
/// [`from_request`](Self::from_request)) plus what they know about the connection and the
/// workload (destination port, client workload labels and namespace, gateway).
///
/// What each attribute is, as Envoy sees it:
/// - `uri` matching uses the **path without the query string** (Envoy strips it before
///   `path`/`prefix`/`safe_regex` route matching).
/// - `authority` is the `:authority` pseudo-header: the URI's authority (HTTP/2, or an HTTP/1.1
///   absolute-form request through a proxy), else the `Host` header, verbatim (with its port).
/// - `scheme` is the URI's scheme, else `http` (a plain-text HTTP/1.1 request in origin form);
///   a TLS listener sets `https` with [`with_scheme`](Self::with_scheme).
/// - `port` is the destination port: the authority's port, else the scheme's default (80, 443);
///   a listener that knows better sets it with [`with_port`](Self::with_port).
/// - `source_labels` and `source_namespace` describe the **client** workload, i.e. the workload
///   this stack runs for (Istio evaluates `sourceLabels` against the proxy's own workload
///   labels; for a gateway that is the gateway's labels). Empty until set.
/// - `gateway` is the gateway the request arrived through: `None` (or `"mesh"`) for a sidecar or
///   in-process client.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    method: &'a str,
    scheme: &'a str,
    authority: Option<&'a str>,
    path: &'a str,
    query: Option<&'a str>,
    headers: &'a HeaderMap,
    port: Option<u16>,
    source_labels: &'a Labels,
    source_namespace: Option<&'a str>,
    gateway: Option<&'a str>,
}

// === impl RequestView ===

impl<'a> RequestView<'a> {
    /// A view of a request head given as its parts (e.g. for `mesh route`, or a request whose
    /// head is not in an `http::Request`).
    pub fn new(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap) -> Self {
        let scheme = uri.scheme_str().unwrap_or("http");
        let authority = match uri.authority() {
            // `:authority` carries no userinfo: drop a `user@` an absolute-form URI may have.
            Some(a) => Some(
                a.as_str()
                    .rsplit_once('@')
                    .map_or(a.as_str(), |(_, host)| host),
            ),
            None => headers.get(HOST).and_then(|v| v.to_str().ok()),
        };
        let port = authority.and_then(authority_port).or(match scheme {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        });
        Self {
            method: method.as_str(),
            scheme,
            authority,
            path: uri.path(),
            query: uri.query(),
            headers,
            port,
            source_labels: &NO_LABELS,
            source_namespace: None,
            gateway: None,
        }
    }

    /// A view of a request head.
    pub fn from_parts(parts: &'a Parts) -> Self {
        Self::new(&parts.method, &parts.uri, &parts.headers)
    }

    /// A view of a request (the body is not looked at).
    pub fn from_request<B>(req: &'a http::Request<B>) -> Self {
        Self::new(req.method(), req.uri(), req.headers())
    }

    /// Sets the scheme (`https` behind a TLS listener).
    #[must_use]
    pub fn with_scheme(mut self, scheme: &'a str) -> Self {
        self.scheme = scheme;
        self
    }

    /// Sets the destination port (Istio's `port` match: the port of the addressed service).
    #[must_use]
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Sets the client workload's labels (Istio's `sourceLabels`).
    #[must_use]
    pub fn with_source_labels(mut self, labels: &'a Labels) -> Self {
        self.source_labels = labels;
        self
    }

    /// Sets the client workload's namespace (Istio's `sourceNamespace`).
    #[must_use]
    pub fn with_source_namespace(mut self, namespace: &'a str) -> Self {
        self.source_namespace = Some(namespace);
        self
    }

    /// Sets the gateway the request arrived through, as the config loader names gateways
    /// (`namespace/name`). `"mesh"` is the same as not setting it.
    #[must_use]
    pub fn with_gateway(mut self, gateway: &'a str) -> Self {
        self.gateway = Some(gateway);
        self
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// The scheme, e.g. `http`.
    pub fn scheme(&self) -> &'a str {
        self.scheme
    }

    /// The `:authority` (or `Host`), if any.
    pub fn authority(&self) -> Option<&'a str> {
        self.authority
    }

    /// The path, without the query string.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The query string (after `?`), if any.
    pub fn query(&self) -> Option<&'a str> {
        self.query
    }

    /// The request headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The destination port, if known.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The client workload's labels.
    pub fn source_labels(&self) -> &'a Labels {
        self.source_labels
    }

    /// The client workload's namespace, if set.
    pub fn source_namespace(&self) -> Option<&'a str> {
        self.source_namespace
    }

    /// The gateway the request arrived through; `None` for sidecars and in-process clients.
    pub fn gateway(&self) -> Option<&'a str> {
        self.gateway.filter(|g| *g != MESH_GATEWAY)
    }

    /// The value of a header as Envoy's header matchers see it: several fields of the same name
    /// are joined with `,` (the only case that allocates). `None` when the header is absent or
    /// a value is not UTF-8 (such a header only satisfies presence matches).
    pub(crate) fn header_value(&self, name: &HeaderName) -> HeaderValue<'a> {
        let mut values = self.headers.get_all(name).iter();
        let Some(first) = values.next() else {
            return HeaderValue::Absent;
        };
        let Ok(first) = std::str::from_utf8(first.as_bytes()) else {
            return HeaderValue::NotUtf8;
        };
        let mut rest = values.peekable();
        if rest.peek().is_none() {
            return HeaderValue::Text(Cow::Borrowed(first));
        }
        let mut joined = String::from(first);
        for v in rest {
            let Ok(v) = std::str::from_utf8(v.as_bytes()) else {
                return HeaderValue::NotUtf8;
            };
            joined.push(',');
            joined.push_str(v);
        }
        HeaderValue::Text(Cow::Owned(joined))
    }

    /// The value of the first query parameter named `name`, as written (not percent-decoded);
    /// `Some("")` for `?name` and `?name=`.
    pub(crate) fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    }
}

/// A header's value for matching.
pub(crate) enum HeaderValue<'a> {
    Absent,
    NotUtf8,
    Text(Cow<'a, str>),
}

/// The port of an authority (`host:port`, `[v6]:port`), if it has one.
fn authority_port(authority: &str) -> Option<u16> {
    let after_host = match authority.rfind(']') {
        Some(i) => &authority[i + 1..],
        None => authority,
    };
    let (_, port) = after_host.rsplit_once(':')?;
    port.parse().ok()
}

//! The attributes of one request that an AuthorizationPolicy looks at, borrowed from the request
//! and from what the inbound layers learned about the connection (peer certificate, JWT).

use std::{borrow::Cow, collections::BTreeMap, net::IpAddr};

use http::{HeaderMap, HeaderName, Method, Uri, header::HOST, request::Parts};

/// The claims of a validated JWT, by name (`iss`, `sub`, `groups`, ...).
pub type Claims = BTreeMap<String, Claim>;

/// One JWT claim, as far as `request.auth.claims[...]` can look into it: a string, a list, or a
/// nested object (`request.auth.claims[a][b]`).
///
/// JSON numbers and booleans have no variant: the JWT layer decides whether to pass them as
/// their text (`String("42")`) or to leave them out. Envoy's string matchers never match them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    String(String),
    /// A list claim matches when one of its **string** items does (`groups: [a, b]`).
    List(Vec<Claim>),
    Map(Claims),
}

impl From<&str> for Claim {
    fn from(s: &str) -> Self {
        Claim::String(s.to_owned())
    }
}

/// The peer identity of an mTLS connection, split once into the parts policies match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Peer<'a> {
    /// `td/ns/NS/sa/SA`: the SPIFFE URI without `spiffe://` (Istio's `source.principal`).
    pub(super) principal: &'a str,
    /// `td`, `NS`, `SA` when the principal has Istio's Kubernetes shape.
    pub(super) trust_domain: Option<&'a str>,
    pub(super) namespace: Option<&'a str>,
    pub(super) service_account: Option<&'a str>,
}

impl<'a> Peer<'a> {
    fn parse(principal: &'a str) -> Self {
        let principal = principal.strip_prefix("spiffe://").unwrap_or(principal);
        let mut parts = principal.split('/');
        let shape = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        );
        let (trust_domain, namespace, service_account) = match shape {
            (Some(td), Some("ns"), Some(ns), Some("sa"), Some(sa), None)
                if !td.is_empty() && !ns.is_empty() && !sa.is_empty() =>
            {
                (Some(td), Some(ns), Some(sa))
            }
            _ => (None, None, None),
        };
        Peer {
            principal,
            trust_domain,
            namespace,
            service_account,
        }
    }
}

/// A borrowed view of the attributes Istio's authorization looks at, built per request by the
/// inbound layer. Building one copies references and parses the peer principal once; nothing
/// allocates.
///
/// What each attribute is (the names are Istio's
/// [condition keys](https://istio.io/latest/docs/reference/config/security/conditions/)):
/// - `source.principal`: the peer certificate's SPIFFE identity without `spiffe://`
///   (`cluster.local/ns/default/sa/sleep`); `None` for plain text. `source.namespace`,
///   `source.serviceAccount` and `source.trustDomain` are parsed from it.
/// - `source.ip`: the peer address of the connection. `remote.ip`: the client address the
///   layer derived from `X-Forwarded-For` (Istio's `numTrustedProxies`); when not set it is
///   `source.ip`, as in Envoy without trusted proxies.
/// - `request.auth.principal`: `iss/sub` of the validated JWT; `request.auth.claims[...]` its
///   claims, `request.auth.audiences` its `aud` claim (a string or a list) and
///   `request.auth.presenter` its `azp` claim.
/// - `hosts` match the `:authority` (or `Host`) verbatim, with its port if it has one.
/// - `paths` match the path **without the query string** (Envoy's `url_path` matcher, which
///   Istio uses for `paths`); the path is matched as the request carries it, so a layer that
///   normalizes paths (Istio's `pathNormalization`) does so before building this view.
/// - `ports` and `destination.port`: the port the connection was accepted on, `None` until
///   [`with_destination`](Self::with_destination) or
///   [`with_destination_port`](Self::with_destination_port) sets it.
#[derive(Debug, Clone, Copy)]
pub struct AuthzRequest<'a> {
    pub(super) method: &'a str,
    pub(super) path: &'a str,
    pub(super) authority: Option<&'a str>,
    pub(super) headers: &'a HeaderMap,
    pub(super) peer: Option<Peer<'a>>,
    pub(super) source_ip: Option<IpAddr>,
    pub(super) remote_ip: Option<IpAddr>,
    pub(super) request_principal: Option<&'a str>,
    pub(super) claims: Option<&'a Claims>,
    pub(super) destination_ip: Option<IpAddr>,
    pub(super) destination_port: Option<u16>,
    pub(super) sni: Option<&'a str>,
}

// === impl AuthzRequest ===

impl<'a> AuthzRequest<'a> {
    /// The HTTP attributes of a request head; the connection attributes are unset.
    pub fn new(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap) -> Self {
        let authority = match uri.authority() {
            Some(a) => Some(
                a.as_str()
                    .rsplit_once('@')
                    .map_or(a.as_str(), |(_, host)| host),
            ),
            None => headers.get(HOST).and_then(|v| v.to_str().ok()),
        };
        AuthzRequest {
            method: method.as_str(),
            path: uri.path(),
            authority,
            headers,
            peer: None,
            source_ip: None,
            remote_ip: None,
            request_principal: None,
            claims: None,
            destination_ip: None,
            destination_port: None,
            sni: None,
        }
    }

    /// The attributes of a request head.
    pub fn from_parts(parts: &'a Parts) -> Self {
        Self::new(&parts.method, &parts.uri, &parts.headers)
    }

    /// The attributes of a request (the body is not looked at).
    pub fn from_request<B>(req: &'a http::Request<B>) -> Self {
        Self::new(req.method(), req.uri(), req.headers())
    }

    /// The peer's identity from its mTLS certificate, with or without `spiffe://`.
    #[must_use]
    pub fn with_peer_principal(mut self, principal: &'a str) -> Self {
        self.peer = Some(Peer::parse(principal));
        self
    }

    /// The peer address of the connection (`source.ip`, `ipBlocks`).
    #[must_use]
    pub fn with_source_ip(mut self, ip: IpAddr) -> Self {
        self.source_ip = Some(ip);
        self
    }

    /// The original client address (`remote.ip`, `remoteIpBlocks`), from `X-Forwarded-For`
    /// per the gateway's trusted proxies.
    #[must_use]
    pub fn with_remote_ip(mut self, ip: IpAddr) -> Self {
        self.remote_ip = Some(ip);
        self
    }

    /// A validated JWT: its `iss/sub` principal and its claims.
    #[must_use]
    pub fn with_request_auth(mut self, principal: &'a str, claims: &'a Claims) -> Self {
        self.request_principal = Some(principal);
        self.claims = Some(claims);
        self
    }

    /// The local address the connection was accepted on (`destination.ip`, `destination.port`,
    /// `ports`).
    #[must_use]
    pub fn with_destination(mut self, ip: IpAddr, port: u16) -> Self {
        self.destination_ip = Some(ip);
        self.destination_port = Some(port);
        self
    }

    /// The port the connection was accepted on, when the address is not known.
    #[must_use]
    pub fn with_destination_port(mut self, port: u16) -> Self {
        self.destination_port = Some(port);
        self
    }

    /// The TLS server name the client asked for (`connection.sni`).
    #[must_use]
    pub fn with_sni(mut self, sni: &'a str) -> Self {
        self.sni = Some(sni);
        self
    }

    /// `source.principal`, without `spiffe://`.
    pub fn source_principal(&self) -> Option<&'a str> {
        self.peer.map(|p| p.principal)
    }

    /// `source.namespace`, parsed from the principal.
    pub fn source_namespace(&self) -> Option<&'a str> {
        self.peer.and_then(|p| p.namespace)
    }

    /// `remote.ip`: the forwarded client address, else the peer address.
    pub fn remote_ip(&self) -> Option<IpAddr> {
        self.remote_ip.or(self.source_ip)
    }

    /// `request.auth.principal`.
    pub fn request_principal(&self) -> Option<&'a str> {
        self.request_principal
    }

    /// The path without the query string.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The value of a header as Envoy's header matchers see it: several fields of the same name
    /// joined with `,` (the only case that allocates). `None` when absent or not UTF-8.
    pub(super) fn header(&self, name: &HeaderName) -> Option<Cow<'a, str>> {
        let mut values = self.headers.get_all(name).iter();
        let first = values.next()?.to_str().ok()?;
        let mut rest = values.peekable();
        if rest.peek().is_none() {
            return Some(Cow::Borrowed(first));
        }
        let mut joined = String::from(first);
        for v in rest {
            joined.push(',');
            joined.push_str(v.to_str().ok()?);
        }
        Some(Cow::Owned(joined))
    }

    /// Whether any string value of the claim at `path` satisfies `f`: a string claim is one
    /// value, a list claim its string items; a missing claim or an object has none.
    pub(super) fn claim_any(&self, path: &[Box<str>], f: impl FnMut(&str) -> bool) -> bool {
        let Some((first, rest)) = path.split_first() else {
            return false;
        };
        let mut claim = self.claims.and_then(|c| c.get(&**first));
        for key in rest {
            claim = match claim {
                Some(Claim::Map(m)) => m.get(&**key),
                _ => None,
            };
        }
        claim_strings_any(claim, f)
    }
}

fn claim_strings_any(claim: Option<&Claim>, mut f: impl FnMut(&str) -> bool) -> bool {
    match claim {
        Some(Claim::String(s)) => f(s),
        Some(Claim::List(items)) => items.iter().any(|c| match c {
            Claim::String(s) => f(s),
            _ => false,
        }),
        _ => false,
    }
}

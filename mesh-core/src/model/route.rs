//! Routing: VirtualServices compiled per host and gateway.

use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};

use crate::{
    host::Host,
    matching::{HttpMatch, StringMatcher},
    percent::Percent,
    weighted::WeightedChoice,
};

/// The routes of one VirtualService as one gateway (or `mesh`) sees them.
#[derive(Debug, Clone)]
pub struct VirtualHost {
    /// `mesh`, or the Gateway's `namespace/name`.
    pub gateway: String,
    /// The VirtualService's hosts, qualified in its namespace.
    pub hosts: Vec<Host>,
    /// `namespace/name` of the VirtualService.
    pub virtual_service: String,
    pub namespace: String,
    pub http: Vec<HttpRoute>,
    pub tcp: Vec<TcpRoute>,
    pub tls: Vec<TlsRoute>,
}

impl VirtualHost {
    /// The first route whose matches accept the request (Istio: first match wins).
    pub fn route(&self, req: &crate::matching::RequestView<'_>) -> Option<&HttpRoute> {
        crate::matching::first_match(self.http.iter().map(|r| r.matches.as_slice()), req)
            .map(|i| &self.http[i])
    }
}

/// One `http` route, compiled.
#[derive(Debug, Clone)]
pub struct HttpRoute {
    /// The route's `name`, or `<virtual service>/http[<index>]`.
    pub name: String,
    /// Empty: matches every request.
    pub matches: Vec<HttpMatch>,
    pub action: RouteAction,
    pub rewrite: Option<Rewrite>,
    pub timeout: Option<Duration>,
    pub retries: RetryPolicy,
    pub fault: Option<Fault>,
    pub mirrors: Vec<Mirror>,
    pub cors: Option<CorsPolicy>,
    pub headers: HeaderOperations,
}

/// What a route does with a matched request.
#[derive(Debug, Clone)]
pub enum RouteAction {
    /// Forward to one of the weighted destinations.
    Forward(WeightedDestinations),
    Redirect(Redirect),
    DirectResponse(DirectResponse),
}

/// A route's destinations and the weighted choice over them.
#[derive(Debug, Clone)]
pub struct WeightedDestinations {
    pub destinations: Vec<RouteDestination>,
    pub choice: WeightedChoice,
}

impl WeightedDestinations {
    /// The destination a uniform random `r` picks.
    pub fn pick(&self, r: u64) -> &RouteDestination {
        &self.destinations[self.choice.pick(r)]
    }
}

#[derive(Debug, Clone)]
pub struct RouteDestination {
    pub destination: Destination,
    pub weight: u32,
    pub headers: HeaderOperations,
}

/// A service, a subset and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    pub host: Host,
    pub subset: Option<String>,
    pub port: Option<u16>,
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.host.as_str())?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        if let Some(s) = &self.subset {
            write!(f, " (subset {s})")?;
        }
        Ok(())
    }
}

/// `rewrite`: uri (prefix replacement of the matched prefix, or whole path), `uriRegexRewrite`,
/// authority.
#[derive(Debug, Clone)]
pub struct Rewrite {
    pub uri: Option<String>,
    pub uri_regex: Option<(regex::Regex, String)>,
    pub authority: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Redirect {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub scheme: Option<String>,
    pub port: Option<RedirectPort>,
    pub status: StatusCode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectPort {
    Port(u16),
    /// `derivePort: FROM_PROTOCOL_DEFAULT` (80 for http, 443 for https).
    FromProtocolDefault,
    /// `derivePort: FROM_REQUEST_PORT`.
    FromRequestPort,
}

#[derive(Debug, Clone)]
pub struct DirectResponse {
    pub status: StatusCode,
    pub body: Option<Vec<u8>>,
}

/// Retries, as Envoy's retry policy. `attempts` counts retries, not tries.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    /// Envoy's `retry_on` conditions (`connect-failure`, `5xx`, `gateway-error`, ...).
    pub retry_on: Vec<String>,
    /// Status codes from integers in `retryOn` (`retriable-status-codes`).
    pub retriable_status_codes: Vec<u16>,
    pub retry_remote_localities: bool,
    /// Istio's default policy (no `retries` field) rather than one the user wrote.
    pub is_default: bool,
}

impl RetryPolicy {
    /// Istio's default when a route has no `retries`: 2 retries on connect-failure,
    /// refused-stream, unavailable, cancelled and retriable-status-codes (with no codes, so a
    /// 503 response is not retried).
    pub fn istio_default() -> Self {
        RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            retry_on: [
                "connect-failure",
                "refused-stream",
                "unavailable",
                "cancelled",
                "retriable-status-codes",
            ]
            .map(String::from)
            .to_vec(),
            retriable_status_codes: Vec::new(),
            retry_remote_localities: false,
            is_default: true,
        }
    }

    /// `attempts: 0`.
    pub fn disabled() -> Self {
        RetryPolicy {
            attempts: 0,
            per_try_timeout: None,
            retry_on: Vec::new(),
            retriable_status_codes: Vec::new(),
            retry_remote_localities: false,
            is_default: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone)]
pub struct FaultDelay {
    pub delay: Duration,
    pub percentage: Percent,
}

#[derive(Debug, Clone)]
pub struct FaultAbort {
    pub status: AbortStatus,
    pub percentage: Percent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortStatus {
    Http(StatusCode),
    /// A gRPC status code (answered as HTTP 200 with `grpc-status`).
    Grpc(u32),
}

#[derive(Debug, Clone)]
pub struct Mirror {
    pub destination: Destination,
    pub percentage: Percent,
}

#[derive(Debug, Clone)]
pub struct CorsPolicy {
    pub allow_origins: Vec<StringMatcher>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age: Option<Duration>,
    pub allow_credentials: Option<bool>,
    pub unmatched_preflights_forward: bool,
}

/// `headers`: request and response operations.
#[derive(Debug, Clone, Default)]
pub struct HeaderOperations {
    pub request: HeaderOps,
    pub response: HeaderOps,
}

#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// A `tcp` route: matches on port, destination subnets and source (ORed; none: every
/// connection), weighted destinations. See [`first_tcp_match`](crate::matching::first_tcp_match).
#[derive(Debug, Clone)]
pub struct TcpRoute {
    pub matches: Vec<crate::matching::L4Match>,
    pub destinations: WeightedDestinations,
}

/// A `tls` route: matches on SNI, port, destination subnets and source (ORed), weighted
/// destinations. See [`best_tls_match`](crate::matching::best_tls_match).
#[derive(Debug, Clone)]
pub struct TlsRoute {
    pub matches: Vec<crate::matching::TlsMatch>,
    pub destinations: WeightedDestinations,
}

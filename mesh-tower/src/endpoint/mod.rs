//! The leaf of the outbound stack: pick an endpoint of the routed destination and send the
//! request to it, under the DestinationRule's resilience settings.
//!
//! The destination's service (from the snapshot's registry), its subset (a DestinationRule
//! subset, resolved to a label selector), the port, and the load balancer of the merged traffic
//! policy (subset and port-level settings over the rule's) decide the endpoint; the request then
//! goes over a pooled hyper client, HTTP/2 for gRPC and HTTP2 ports (or when the rule's
//! `h2UpgradePolicy` is UPGRADE), HTTP/1.1 otherwise. Bodies stream both ways; trailers pass.
//! The `Host` header keeps the authority the client used, as Envoy does.
//!
//! Per cluster (destination host, subset and port, what Istio makes an Envoy cluster), shared
//! by every clone of the stack:
//! - `outlierDetection` (`outliers.rs`): every attempt's outcome is recorded; the balancer skips
//!   ejected endpoints; when all are ejected the answer is 503 `no-healthy-upstream` (unless
//!   `minHealthPercent` puts the set in panic, when all endpoints are used).
//! - `connectionPool` limits (`circuit.rs`, Envoy's circuit breakers): `http2MaxRequests` caps
//!   requests in flight (HTTP/1.1 and HTTP/2); `tcp.maxConnections` caps HTTP/1.1 requests in
//!   flight, each holding a connection, and requests beyond it wait (pending) only up to
//!   `http1MaxPendingRequests`; `maxRetries` caps retries in flight ([`RetryAttempt`]). Over a
//!   limit the answer is 503 `overflow` at once.
//! - `connectionPool` client settings ([`ClientSettings`]): connect timeout, idle timeout,
//!   keep-alive.
//! - `tls` and auto mTLS (`origination/`): plain text, SIMPLE, MUTUAL or ISTIO_MUTUAL with
//!   secure naming, decided once per cluster and config version; the transport is part of the
//!   client settings, so pools never mix TLS settings.
//! - `loadBalancer.consistentHash.httpCookie` with a `ttl`: a request without the cookie gets a
//!   generated one, in a `Set-Cookie` on the response, so the client sticks to the endpoint.
//!
//! Not applied (hyper-util has no setting for them): `maxRequestsPerConnection` above 1 (1
//! disables keep-alive, which is applied), `maxConcurrentStreams`, `tcp.maxConnectionDuration`,
//! `tcp.tcpKeepalive` (a connector setting: a custom connector can set it), and
//! `useClientProtocol`.

mod balancers;
mod circuit;
mod connect;
mod origination;
mod outliers;
mod per_cluster;
#[cfg(test)]
mod tests;
mod views;

use std::{
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{
    HeaderValue, Request, Response, StatusCode, Uri,
    header::{HOST, SET_COOKIE},
    uri::{Authority, Scheme},
};
use mesh_core::{
    model::{EndpointAddress, Protocol},
    outlier::Outcome,
};
use tower::Service;

pub use balancers::Balancers;
pub(crate) use balancers::{InFlight, PickSet};
pub use circuit::RetryOverflow;
pub use connect::{
    ClientSettings, ConnectTimeout, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, HttpClients,
    HttpConnector, PooledClient, TimedConnector, UpstreamConnector, http_connector,
};
pub(crate) use origination::transport_failure_reason;
pub use origination::{
    Originate, OriginationError, OriginationMode, TlsHandshakeError, TlsKey, Transport,
    UpstreamStream, UpstreamTls,
};

use crate::{
    body::{self, BoxError, MeshBody},
    error::MeshError,
    route::{RouteCtx, Target, authority_of},
};

/// A cluster, as Istio names Envoy's: destination host, subset and port. The unit of load
/// balancing, circuit breaking and outlier detection.
pub(crate) type ClusterKey = (String, Option<String>, u16);

/// The endpoint picker and HTTP client.
///
/// Its state (balancer positions, circuit breakers, outlier detectors, connection pools) is
/// shared by every clone, so every clone of a stack sees the same limits and ejections.
#[derive(Clone, Debug)]
pub struct Upstream<C = connect::HttpConnector> {
    clients: HttpClients<C>,
    balancers: Arc<Balancers>,
    breakers: Arc<circuit::CircuitBreakers>,
    outliers: Arc<outliers::OutlierDetectors>,
    transports: Arc<origination::ClusterTransports>,
    views: Arc<per_cluster::PerCluster<views::ClusterView>>,
}

impl Upstream {
    /// Plain-text upstream connections (HTTP/1.1 and h2c).
    pub fn new() -> Self {
        Upstream::with_connector(connect::http_connector())
    }
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream::new()
    }
}

impl<C: UpstreamConnector> Upstream<C> {
    /// Upstream connections made by `connector` (plain TCP: TLS origination wraps it). The
    /// destination's `connectionPool.tcp.connectTimeout` (default 10 s) is applied around both.
    pub fn with_connector(connector: C) -> Self {
        Upstream {
            clients: HttpClients::new(connector),
            balancers: Arc::new(Balancers::default()),
            breakers: Arc::default(),
            outliers: Arc::default(),
            transports: Arc::default(),
            views: Arc::default(),
        }
    }

    /// The workload's identity: ISTIO_MUTUAL (a DestinationRule's, or auto mTLS to endpoints
    /// labelled `security.istio.io/tlsMode: istio`) presents it and verifies servers against
    /// its roots. Without one, auto mTLS sends plain text and ISTIO_MUTUAL fails with 503.
    pub fn with_identity(self, source: crate::tls::IdentitySource) -> Self {
        Upstream {
            clients: self.clients.with_identity(source),
            transports: Arc::default(),
            ..self
        }
    }

    /// The workload identity, if any.
    pub fn identity(&self) -> Option<&crate::tls::IdentitySource> {
        self.clients.identity()
    }
}

/// The endpoints earlier attempts of this request went to. The retry layer puts one in the
/// request's extensions (shared by every attempt); the upstream records each pick in it and,
/// as Istio's default retry policy asks (`retry_host_predicate: previous_hosts`), prefers an
/// endpoint not tried before when there is one (among those outlier detection has not ejected).
#[derive(Clone, Debug, Default)]
pub struct TriedEndpoints(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl TriedEndpoints {
    /// The `host:port` of every endpoint picked so far, in order.
    pub fn list(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record(&self, authority: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(authority.to_owned());
    }

    fn is_empty(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    fn contains(&self, authority: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|a| a == authority)
    }
}

/// Marks a request as a retry: the retry layer inserts `RetryAttempt(n)` in the extensions of
/// its `n`-th retry (`n >= 1`; the first attempt carries none). While such an attempt is in
/// flight it counts against the destination's `connectionPool.http.maxRetries` (Envoy's
/// `max_retries` circuit breaker: "the maximum number of retries that can be outstanding to all
/// hosts in a cluster at any given time"). Over the limit the attempt fails at once with
/// [`RetryOverflow`], before anything is sent: the retry layer should then stop and return the
/// previous attempt's response or error, as Envoy does on `upstream_rq_retry_overflow`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryAttempt(pub u32);

/// When the attempt times out (the earlier of the route timeout and the per-try timeout). The
/// timeout layers insert it; if the attempt's future is dropped at or after this instant before
/// response headers arrived, outlier detection records a timeout for the endpoint (Envoy counts
/// timeouts as locally originated errors, a 504 in the default mode). Without it a dropped
/// attempt is not recorded: a client that goes away says nothing about the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptDeadline(pub tokio::time::Instant);

/// Where one request goes, and what it holds while in flight.
#[derive(Debug)]
struct Picked {
    /// `host:port` to connect to.
    authority: String,
    /// The same, as the upstream request's URI authority.
    uri_authority: Option<Authority>,
    settings: ClientSettings,
    held: Held,
    outlier: Option<outliers::OutlierHandle>,
    set_cookie: Option<HeaderValue>,
}

/// Held until the response body is done with: the endpoint's in-flight count (least request)
/// and the circuit breakers' counts and connection permit.
#[derive(Debug, Default)]
struct Held {
    _in_flight: Option<balancers::InFlight>,
    admission: Option<circuit::Admission>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<C: UpstreamConnector> Service<Request<MeshBody>> for Upstream<C> {
    type Response = Response<MeshBody>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response<MeshBody>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<MeshBody>) -> Self::Future {
        let picked = match req.extensions().get::<RouteCtx>() {
            Some(ctx) => self.pick(ctx, &req),
            None => {
                Err("the upstream service needs a RouteCtx: put the router in front of it".into())
            }
        };
        let deadline = req.extensions().get::<AttemptDeadline>().map(|d| d.0);
        let clients = self.clients.clone();
        Box::pin(async move {
            let mut picked = picked?;
            if let Some(admission) = picked.held.admission.as_mut() {
                // HTTP/1.1 over `maxConnections`: pending until a connection is free.
                admission.connection().await;
            }
            if !req.headers().contains_key(HOST)
                && let Some(a) = authority_of(&req)
                && let Ok(v) = HeaderValue::from_str(&a)
            {
                req.headers_mut().insert(HOST, v);
            }
            let authority = match picked.uri_authority.take() {
                Some(a) => a,
                None => picked.authority.parse()?,
            };
            *req.uri_mut() = upstream_uri(req.uri(), authority)?;
            // The destination decides the upstream protocol (its port's protocol, ALPN), not
            // the HTTP version the client spoke to us: hyper's pool refuses an HTTP/2-marked
            // request on an HTTP/1.1 connection, and sends an HTTP/1.1-marked one as HTTP/2 on
            // an HTTP/2 connection.
            *req.version_mut() = http::Version::HTTP_11;
            let client =
                clients
                    .client(picked.settings)
                    .map_err(|e| MeshError::UpstreamConnect {
                        endpoint: picked.authority.clone(),
                        source: e.into(),
                    })?;
            let mut attempt = Attempt {
                outlier: picked.outlier.take(),
                deadline,
            };
            let mut res = match client.request(req).await {
                Ok(res) => {
                    attempt.finish(outcome_of(&res));
                    res
                }
                Err(e) => {
                    attempt.finish(if e.is_connect() {
                        Outcome::ConnectFailure
                    } else {
                        Outcome::Reset
                    });
                    return Err(MeshError::UpstreamConnect {
                        endpoint: picked.authority,
                        source: e.into(),
                    }
                    .into());
                }
            };
            if let Some(cookie) = picked.set_cookie {
                res.headers_mut().append(SET_COOKIE, cookie);
            }
            let held = picked.held;
            // The endpoint stays "in flight" until the response body is done with.
            Ok(res.map(move |b| body::boxed(GuardedBody::new(b, held))))
        })
    }
}

/// One attempt's report to outlier detection: made once, or as a timeout when dropped after
/// its deadline.
struct Attempt {
    outlier: Option<outliers::OutlierHandle>,
    deadline: Option<tokio::time::Instant>,
}

impl Attempt {
    fn finish(&mut self, outcome: Outcome) {
        if let Some(o) = self.outlier.take() {
            o.record(outcome);
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if self
            .deadline
            .is_some_and(|d| tokio::time::Instant::now() >= d)
        {
            self.finish(Outcome::Timeout);
        }
    }
}

/// What outlier detection sees of a response: its status, or for a trailers-only gRPC response
/// its `grpc-status` mapped to HTTP.
fn outcome_of<B>(res: &Response<B>) -> Outcome {
    let grpc = res
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok());
    match grpc {
        Some(code) if res.status() == StatusCode::OK => Outcome::Response(
            StatusCode::from_u16(outliers::grpc_to_http(code))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        ),
        _ => Outcome::Response(res.status()),
    }
}

fn upstream_uri(uri: &Uri, authority: Authority) -> Result<Uri, BoxError> {
    let mut parts = uri.clone().into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some("/".parse()?);
    }
    Ok(Uri::from_parts(parts)?)
}

/// `address:port` of an endpoint for a service port.
pub(crate) fn endpoint_authority(
    ep: &mesh_core::model::Endpoint,
    port: &mesh_core::model::ServicePort,
) -> String {
    match &ep.address {
        EndpointAddress::Ip(ip) => join(&ip.to_string(), ep.port_for(port)),
        EndpointAddress::Dns(name) | EndpointAddress::Unix(name) => join(name, ep.port_for(port)),
    }
}

fn join(host: &str, port: u16) -> String {
    if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()) {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl<C> Upstream<C> {
    /// Picks the endpoint for `req` and admits it through the circuit breakers.
    fn pick(&self, ctx: &RouteCtx, req: &Request<MeshBody>) -> Result<Picked, BoxError> {
        let dest = match &ctx.target {
            Target::Passthrough { authority } => {
                let authority = if authority.contains(':') {
                    authority.clone()
                } else {
                    join(authority, ctx.port)
                };
                return Ok(Picked {
                    authority,
                    uri_authority: None,
                    settings: ClientSettings::for_pool(None, false),
                    held: Held::default(),
                    outlier: None,
                    set_cookie: None,
                });
            }
            Target::Destination(d) => d,
        };
        let snapshot = &ctx.snapshot;
        let unavailable = || MeshError::NoHealthyUpstream {
            destination: dest.to_string(),
        };
        let service = snapshot
            .service(dest.host.as_str())
            .ok_or_else(unavailable)?;
        let port_number = dest.port.unwrap_or(ctx.port);
        let port = service
            .port(port_number)
            .or_else(|| dest.port.is_none().then(|| service.single_port()).flatten())
            .ok_or_else(unavailable)?;
        let policy = snapshot.destination_policy(dest.host.as_str(), &ctx.client.namespace);
        let subset = match &dest.subset {
            Some(name) => Some(
                policy
                    .and_then(|p| p.subset(name))
                    .ok_or_else(unavailable)?,
            ),
            None => None,
        };
        let traffic = policy
            .map(|p| p.policy_for(dest.subset.as_deref(), Some(port.number)))
            .unwrap_or_default();
        let cluster: ClusterKey = (dest.host.to_string(), dest.subset.clone(), port.number);
        let view = self.views.for_version(&cluster, snapshot.version, || {
            views::ClusterView::new(service, subset, port)
        });
        let endpoints = view.endpoints(service);
        let authorities = &view.authorities;

        // Eligible: not ejected by outlier detection and, for a retry, not tried before when
        // another one is.
        let outlier_set = traffic.outlier_detection.as_ref().map(|od| {
            self.outliers
                .set_for(&cluster, snapshot.version, od, authorities)
        });
        let mut eligible: std::borrow::Cow<'_, [bool]> = match &outlier_set {
            Some(set) => set
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .ejected(authorities)
                .into_iter()
                .map(|ejected| !ejected)
                .collect(),
            None => std::borrow::Cow::Borrowed(&view.all_eligible),
        };
        let tried = req.extensions().get::<TriedEndpoints>();
        if let Some(tried) = tried.filter(|t| !t.is_empty()) {
            let untried: Vec<bool> = eligible
                .iter()
                .zip(authorities)
                .map(|(ok, a)| *ok && !tried.contains(a))
                .collect();
            if untried.contains(&true) {
                eligible = untried.into();
            }
        }
        let pick = self
            .balancers
            .pick(
                &balancers::PickSet {
                    version: snapshot.version,
                    cluster: &cluster,
                    endpoints: &endpoints,
                    authorities,
                    eligible: &eligible,
                },
                traffic.load_balancer.as_ref(),
                req,
            )
            .ok_or_else(unavailable)?;
        let ep = endpoints[pick.index];
        // The destination workload of Istio's metrics (the client-side fallback to the
        // endpoint's registry labels).
        if let Some(t) = req.extensions().get::<crate::telemetry::RequestTelemetry>() {
            t.record_endpoint(snapshot, service, ep);
        }
        if let EndpointAddress::Unix(path) = &ep.address {
            return Err(MeshError::UpstreamConnect {
                endpoint: format!("unix://{path}"),
                source: "unix domain socket endpoints are not supported yet".into(),
            }
            .into());
        }
        let authority = authorities[pick.index].clone();
        let uri_authority = view.uri_authorities[pick.index].clone();

        let pool = traffic.connection_pool.as_ref();
        let h2 = matches!(port.protocol, Protocol::Http2 | Protocol::Grpc)
            || pool.is_some_and(|cp| cp.h2_upgrade);
        let transport = self
            .transports
            .for_version(&cluster, snapshot.version, || {
                origination::Decided::new(
                    snapshot.version,
                    &origination::ClusterFacts {
                        host: dest.host.as_str(),
                        port: port.number,
                        subset: dest.subset.as_deref(),
                        h2,
                        tls: traffic.tls.as_ref(),
                        rule: policy.map(|p| p.destination_rule.as_str()),
                        identities: origination::service_identities(service),
                        mtls_disabled: origination::mtls_disabled(snapshot, service),
                        has_identity: self.clients.identity().is_some(),
                    },
                )
            })
            .for_endpoint(ep)
            .map_err(|e| MeshError::UpstreamConnect {
                endpoint: authority.clone(),
                source: e.into(),
            })?;
        let admission = match pool {
            Some(cp) => self.breakers.admit(
                &cluster,
                &circuit::Limits::from_pool(cp),
                req.extensions().get::<RetryAttempt>().is_some(),
                !h2,
                &|| dest.to_string(),
            )?,
            None => None,
        };
        if let Some(tried) = tried {
            tried.record(&authority);
        }
        Ok(Picked {
            outlier: outlier_set.map(|set| outliers::OutlierHandle {
                set,
                authority: authority.clone(),
            }),
            authority,
            uri_authority,
            settings: ClientSettings::for_pool(pool, h2).with_transport(transport),
            held: Held {
                _in_flight: pick.in_flight,
                admission,
            },
            set_cookie: pick.set_cookie,
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its endpoint's in-flight count and circuit-breaker counts
    /// until it is done.
    struct GuardedBody<B, G> {
        #[pin]
        inner: B,
        guard: Option<G>,
    }
}

impl<B, G> GuardedBody<B, G> {
    fn new(inner: B, guard: G) -> Self {
        GuardedBody {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B: http_body::Body<Data = bytes::Bytes>, G> http_body::Body for GuardedBody<B, G> {
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = &polled {
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

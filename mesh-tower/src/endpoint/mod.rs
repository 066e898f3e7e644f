//! The leaf of the outbound stack: pick an endpoint of the routed destination and send the
//! request to it.
//!
//! The destination's service (from the snapshot's registry), its subset (a DestinationRule
//! subset, resolved to a label selector), the port, and the load balancer of the merged traffic
//! policy (subset and port-level settings over the rule's) decide the endpoint; the request then
//! goes over a pooled hyper client, HTTP/2 for gRPC and HTTP2 ports (or when the rule's
//! `h2UpgradePolicy` is UPGRADE), HTTP/1.1 otherwise. Bodies stream both ways; trailers pass.
//! The `Host` header keeps the authority the client used, as Envoy does.

mod balancers;
mod connect;

use std::{
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderValue, Request, Response, Uri, header::HOST, uri::Scheme};
use mesh_core::model::{EndpointAddress, Protocol};
use tower::Service;

pub use balancers::Balancers;
pub use connect::{HttpClients, HttpConnector, UpstreamConnector, http_connector};

use crate::{
    body::{self, BoxError, MeshBody},
    error::MeshError,
    route::{RouteCtx, Target, authority_of},
};

/// The endpoint picker and HTTP client.
#[derive(Clone, Debug)]
pub struct Upstream<C = connect::HttpConnector> {
    clients: HttpClients<C>,
    balancers: Arc<Balancers>,
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
    /// Upstream connections made by `connector`: the seam where TLS origination plugs in.
    pub fn with_connector(connector: C) -> Self {
        Upstream {
            clients: HttpClients::new(connector),
            balancers: Arc::new(Balancers::default()),
        }
    }
}

/// The endpoints earlier attempts of this request went to. The retry layer puts one in the
/// request's extensions (shared by every attempt); the upstream records each pick in it and,
/// as Istio's default retry policy asks (`retry_host_predicate: previous_hosts`), prefers an
/// endpoint not tried before when there is one.
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

    fn contains(&self, authority: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|a| a == authority)
    }
}

/// Where one request goes.
#[derive(Debug)]
struct Picked {
    /// `host:port` to connect to.
    authority: String,
    /// Use HTTP/2 (prior knowledge).
    h2: bool,
    /// Decrements the endpoint's in-flight count (least request) when dropped.
    _guard: Option<balancers::InFlight>,
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
            Some(ctx) => pick(ctx, &self.balancers, &req),
            None => {
                Err("the upstream service needs a RouteCtx: put the router in front of it".into())
            }
        };
        let clients = self.clients.clone();
        Box::pin(async move {
            let picked = picked?;
            if !req.headers().contains_key(HOST)
                && let Some(a) = authority_of(&req)
                && let Ok(v) = HeaderValue::from_str(&a)
            {
                req.headers_mut().insert(HOST, v);
            }
            *req.uri_mut() = upstream_uri(req.uri(), &picked.authority)?;
            let sent = if picked.h2 {
                clients.h2.request(req).await
            } else {
                clients.h1.request(req).await
            };
            let res = sent.map_err(|e| MeshError::UpstreamConnect {
                endpoint: picked.authority.clone(),
                source: e.into(),
            })?;
            let guard = picked._guard;
            Ok(res.map(move |b| {
                // The endpoint stays "in flight" until the response body is done with.
                body::boxed(balancers::GuardedBody::new(b, guard))
            }))
        })
    }
}

fn upstream_uri(uri: &Uri, authority: &str) -> Result<Uri, BoxError> {
    let mut parts = uri.clone().into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority.parse()?);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some("/".parse()?);
    }
    Ok(Uri::from_parts(parts)?)
}

/// `address:port` of an endpoint for a service port.
fn endpoint_authority(
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

fn pick(
    ctx: &RouteCtx,
    balancers: &Balancers,
    req: &Request<MeshBody>,
) -> Result<Picked, BoxError> {
    let dest = match &ctx.target {
        Target::Passthrough { authority } => {
            let authority = if authority.contains(':') {
                authority.clone()
            } else {
                join(authority, ctx.port)
            };
            return Ok(Picked {
                authority,
                h2: false,
                _guard: None,
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
    let mut endpoints: Vec<_> = service
        .endpoints
        .iter()
        .filter(|e| subset.is_none_or(|s| s.selector.matches(&e.labels)))
        .collect();
    let tried = req.extensions().get::<TriedEndpoints>();
    if let Some(tried) = tried {
        let untried: Vec<_> = endpoints
            .iter()
            .copied()
            .filter(|e| !tried.contains(&endpoint_authority(e, port)))
            .collect();
        if !untried.is_empty() {
            endpoints = untried;
        }
    }
    let (index, guard) = balancers
        .pick(
            snapshot.version,
            dest,
            port.number,
            &endpoints,
            traffic.load_balancer.as_ref(),
            req,
        )
        .ok_or_else(unavailable)?;
    let ep = endpoints[index];
    if let EndpointAddress::Unix(path) = &ep.address {
        return Err(MeshError::UpstreamConnect {
            endpoint: format!("unix://{path}"),
            source: "unix domain socket endpoints are not supported yet".into(),
        }
        .into());
    }
    let authority = endpoint_authority(ep, port);
    if let Some(tried) = tried {
        tried.record(&authority);
    }
    let h2 = matches!(port.protocol, Protocol::Http2 | Protocol::Grpc)
        || traffic
            .connection_pool
            .as_ref()
            .is_some_and(|cp| cp.h2_upgrade);
    Ok(Picked {
        authority,
        h2,
        _guard: guard,
    })
}

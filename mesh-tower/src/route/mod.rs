//! Routing: the VirtualService decision for each request.
//!
//! [`Route`] reads the live snapshot, finds the VirtualService for the request's authority (as
//! a sidecar, or as the named Gateway), takes the first matching route (mesh-core's matching)
//! and then:
//! - `redirect` and `directResponse` are answered here;
//! - `route` picks a weighted destination, applies `rewrite` and the request `headers`
//!   operations (destination level, then route level, as Envoy orders them), and passes the
//!   request on with a [`RouteCtx`] in its extensions for the per-route layers below (fault,
//!   timeout, retries, the endpoint picker); the response `headers` operations are applied on
//!   the way back.
//!
//! A host without a VirtualService goes to the service itself (Istio's default route), and a
//! host the registry does not know passes through to its own address (ALLOW_ANY) unless the
//! workload's Sidecar says REGISTRY_ONLY (502). A host the Sidecar's `egress` does not import
//! counts as unknown, its VirtualServices too.

mod redirect;
mod rewrite;
#[cfg(test)]
mod tests;

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderMap, Request, Response, Uri, header::HOST};
use mesh_core::{
    CompiledMesh, Host, Labels,
    host::split_authority,
    matching::{RequestView, first_match_detail},
    model::{
        Destination, HeaderOps, HttpRoute, MESH_GATEWAY, OutboundTrafficPolicy, RouteAction,
        SidecarScope,
    },
};
use tower::{Layer, Service};

use crate::{
    body::{BoxError, MeshBody},
    error::{MeshError, is_grpc},
    snapshot::MeshHandle,
};

/// Who the client is: what `sourceLabels`, `sourceNamespace` and `gateways` matches see, and the
/// namespace short hosts are qualified in.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    pub namespace: String,
    pub labels: Labels,
    /// `mesh` for a sidecar or in-process client, `namespace/name` for a Gateway.
    pub gateway: String,
}

impl Default for ClientIdentity {
    fn default() -> Self {
        ClientIdentity {
            namespace: "default".into(),
            labels: Labels::new(),
            gateway: MESH_GATEWAY.into(),
        }
    }
}

/// Where a routed request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A service of the registry (a subset of it, on a port).
    Destination(Destination),
    /// A host outside the registry, sent to its own address (ALLOW_ANY).
    Passthrough { authority: String },
}

/// The routing decision, in the request's extensions for the layers below the router.
#[derive(Debug, Clone)]
pub struct RouteCtx {
    /// The config snapshot the request started with: it keeps it to the end.
    pub snapshot: Arc<CompiledMesh>,
    pub target: Target,
    /// `(virtual host index, route index)` in the snapshot; `None` for the default route.
    route: Option<(usize, usize)>,
    /// Istio's default route (a registry service without a VirtualService), which carries
    /// Istio's default retry policy; not a passthrough, not a mirror copy.
    default_route: bool,
    pub client: Arc<ClientIdentity>,
    /// The port the client addressed (from the authority, or the scheme's default).
    pub port: u16,
    pub grpc: bool,
}

impl RouteCtx {
    /// Whether this is Istio's default route to a registry service (no VirtualService): it
    /// gets Istio's default retry policy, while passthrough and mirrored requests get none.
    pub fn is_default_route(&self) -> bool {
        self.default_route
    }

    /// The VirtualService route that matched, `None` for the default route.
    pub fn route(&self) -> Option<&HttpRoute> {
        self.route
            .map(|(vh, r)| &self.snapshot.virtual_hosts[vh].http[r])
    }

    /// A context for a request sent straight to `target` (no VirtualService), e.g. in tests of
    /// the layers below the router.
    pub fn direct(
        snapshot: Arc<CompiledMesh>,
        target: Target,
        client: Arc<ClientIdentity>,
        port: u16,
    ) -> Self {
        RouteCtx {
            snapshot,
            target,
            route: None,
            default_route: false,
            client,
            port,
            grpc: false,
        }
    }
}

/// Builds [`Route`] services.
#[derive(Debug, Clone)]
pub struct RouteLayer {
    handle: MeshHandle,
    client: Arc<ClientIdentity>,
}

impl RouteLayer {
    pub fn new(handle: MeshHandle, client: ClientIdentity) -> Self {
        RouteLayer {
            handle,
            client: Arc::new(client),
        }
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = Route<S>;

    fn layer(&self, inner: S) -> Route<S> {
        Route {
            inner,
            handle: self.handle.clone(),
            client: self.client.clone(),
        }
    }
}

/// The router service. It adds no readiness of its own (routing decides per request, and
/// back-pressure belongs to the layers that queue): it is ready when the layer below is, and
/// every layer below it in the mesh stack is always ready.
#[derive(Debug, Clone)]
pub struct Route<S> {
    inner: S,
    handle: MeshHandle,
    client: Arc<ClientIdentity>,
}

impl<S> Route<S> {
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// What the router decided for one request.
enum Decision {
    Respond(Response<MeshBody>),
    Forward {
        ctx: RouteCtx,
        /// Destination level, then route level.
        response_ops: Option<Box<[HeaderOps; 2]>>,
    },
}

impl<S> Service<Request<MeshBody>> for Route<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<MeshBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<MeshBody>) -> Self::Future {
        let state = match decide(&self.handle.snapshot(), &self.client, &mut req) {
            Err(e) => State::Done {
                result: Some(Err(e)),
            },
            Ok(Decision::Respond(res)) => State::Done {
                result: Some(Ok(res)),
            },
            Ok(Decision::Forward { ctx, response_ops }) => {
                req.extensions_mut().insert(ctx);
                State::Forward {
                    fut: self.inner.call(req),
                    ops: response_ops,
                }
            }
        };
        ResponseFuture { state }
    }
}

pin_project_lite::pin_project! {
    /// The router's response: answered at once, or the inner response with the route's
    /// response header operations applied.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Done { result: Option<Result<Response<MeshBody>, BoxError>> },
        Forward { #[pin] fut: F, ops: Option<Box<[HeaderOps; 2]>> },
    }
}

impl<F> std::future::Future for ResponseFuture<F>
where
    F: std::future::Future<Output = Result<Response<MeshBody>, BoxError>>,
{
    type Output = Result<Response<MeshBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Done { result } => {
                Poll::Ready(result.take().expect("polled after completion"))
            }
            StateProj::Forward { fut, ops } => {
                let mut res = std::task::ready!(fut.poll(cx))?;
                for o in ops.iter().flat_map(|ops| ops.iter()) {
                    apply(res.headers_mut(), o);
                }
                Poll::Ready(Ok(res))
            }
        }
    }
}

/// The router's decision for `req` (which it may rewrite).
fn decide(
    snapshot: &Arc<CompiledMesh>,
    client: &Arc<ClientIdentity>,
    req: &mut Request<MeshBody>,
) -> Result<Decision, BoxError> {
    // A cheap handle on the request's bytes (no copy): the request is rewritten below.
    let authority = RequestAuthority::of(req).ok_or(MeshError::NoAuthority)?;
    let authority = authority.as_str();
    let (host_name, port) = split_authority(authority);
    let port = port.unwrap_or(if req.uri().scheme_str() == Some("https") {
        443
    } else {
        80
    });
    let host = Host::qualify(host_name, &client.namespace);
    let grpc = is_grpc(req);
    let new_ctx = |target: Target, route: Option<(usize, usize)>| RouteCtx {
        snapshot: snapshot.clone(),
        default_route: route.is_none() && matches!(target, Target::Destination(_)),
        target,
        route,
        client: client.clone(),
        port,
        grpc,
    };

    // The workload's Sidecar `egress` hosts: what it does not import (services by their
    // namespace, VirtualServices by theirs, on the listener's port) is unknown to it, as Istio
    // leaves it out of the sidecar's routes; the outbound traffic policy then decides.
    let sidecar = (client.gateway == MESH_GATEWAY)
        .then(|| snapshot.sidecar_for(&client.namespace, &client.labels))
        .flatten();
    let imported = |namespace: &str| sidecar.is_none_or(|s| s.allows(&host, namespace, Some(port)));
    let vh_index = snapshot
        .virtual_host_index(&client.gateway, host.as_str())
        .filter(|&i| imported(&snapshot.virtual_hosts[i].namespace));
    let Some(vh_index) = vh_index else {
        if client.gateway != MESH_GATEWAY {
            // A gateway forwards only what a VirtualService bound to it routes (Envoy's
            // gateway listeners have no default route): 404.
            return Err(MeshError::NoRoute {
                authority: authority.to_owned(),
            }
            .into());
        }
        return default_route(snapshot, sidecar, &host, authority, port).map(|target| {
            Decision::Forward {
                ctx: new_ctx(target, None),
                response_ops: None,
            }
        });
    };
    let vh = &snapshot.virtual_hosts[vh_index];
    let found = {
        // On a gateway, `match.port` is the port of the server the request came in on.
        let match_port = req.extensions().get::<ListenerPort>().map_or(port, |p| p.0);
        let mut view = RequestView::new(req.method(), req.uri(), req.headers())
            .with_port(match_port)
            .with_source_labels(&client.labels)
            .with_source_namespace(&client.namespace);
        if client.gateway != MESH_GATEWAY {
            view = view.with_gateway(&client.gateway);
        }
        first_match_detail(vh.http.iter().map(|r| r.matches.as_slice()), &view)
    };
    let Some(found) = found else {
        return Err(MeshError::NoRoute {
            authority: authority.to_owned(),
        }
        .into());
    };
    let route = &vh.http[found.route];
    match &route.action {
        RouteAction::Redirect(r) => Ok(Decision::Respond(redirect::response(
            r, req, authority, port,
        ))),
        RouteAction::DirectResponse(d) => Ok(Decision::Respond(redirect::direct(d))),
        RouteAction::Forward(w) => {
            let picked = w.pick(fastrand::u64(..));
            let matched_prefix = found
                .condition
                .and_then(|c| route.matches[c].uri.as_ref())
                .filter(|m| m.kind() == mesh_core::matching::StringMatchKind::Prefix)
                .map(|m| m.as_str().to_owned());
            if let Some(rw) = &route.rewrite {
                rewrite::apply(rw, matched_prefix.as_deref(), req)?;
            }
            // Destination level first, then route level, so the route's `set` wins (Envoy's
            // default order of header mutations).
            apply(req.headers_mut(), &picked.headers.request);
            apply(req.headers_mut(), &route.headers.request);
            // Most routes change no response header: nothing to carry then.
            let response_ops = (!picked.headers.response.is_empty()
                || !route.headers.response.is_empty())
            .then(|| {
                Box::new([
                    picked.headers.response.clone(),
                    route.headers.response.clone(),
                ])
            });
            let target = Target::Destination(picked.destination.clone());
            Ok(Decision::Forward {
                ctx: new_ctx(target, Some((vh_index, found.route))),
                response_ops,
            })
        }
    }
}

/// The port of the listener a request arrived on, as a request extension: a gateway server's
/// port. Istio matches a VirtualService's `match.port` on a gateway against it (the Host
/// header may carry no port, or another one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerPort(pub u16);

/// Istio's default route: the service itself (when the workload's Sidecar imports it), or the
/// host's own address outside the registry (ALLOW_ANY; REGISTRY_ONLY answers 502).
fn default_route(
    snapshot: &CompiledMesh,
    sidecar: Option<&SidecarScope>,
    host: &Host,
    authority: &str,
    port: u16,
) -> Result<Target, BoxError> {
    if let Some(svc) = snapshot
        .service(host.as_str())
        .filter(|svc| sidecar.is_none_or(|s| s.allows(host, &svc.namespace, Some(port))))
    {
        let host = if svc.hostname.is_wildcard() {
            host.clone()
        } else {
            svc.hostname.clone()
        };
        return Ok(Target::Destination(Destination {
            host,
            subset: None,
            port: Some(port),
        }));
    }
    let policy = sidecar.map(|s| s.outbound_policy).unwrap_or_default();
    match policy {
        OutboundTrafficPolicy::AllowAny => Ok(Target::Passthrough {
            authority: authority.to_owned(),
        }),
        OutboundTrafficPolicy::RegistryOnly => Err(MeshError::RegistryOnly {
            host: host.to_string(),
        }
        .into()),
    }
}

/// The request's authority without copying it: the absolute URI's (without userinfo), else
/// the Host header's.
#[derive(Debug, Clone)]
pub(crate) enum RequestAuthority {
    Uri(http::uri::Authority),
    Host(http::HeaderValue),
}

impl RequestAuthority {
    pub(crate) fn of<B>(req: &Request<B>) -> Option<Self> {
        match req.uri().authority() {
            Some(a) => Some(RequestAuthority::Uri(a.clone())),
            None => req
                .headers()
                .get(HOST)
                .filter(|h| h.to_str().is_ok())
                .cloned()
                .map(RequestAuthority::Host),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            RequestAuthority::Uri(a) => a.as_str().rsplit_once('@').map_or(a.as_str(), |(_, h)| h),
            RequestAuthority::Host(h) => h.to_str().unwrap_or_default(),
        }
    }
}

/// The request's authority: the absolute URI's, else the Host header.
pub(crate) fn authority_of<B>(req: &Request<B>) -> Option<String> {
    req.uri()
        .authority()
        .map(|a| {
            a.as_str()
                .rsplit_once('@')
                .map_or(a.as_str(), |(_, h)| h)
                .to_owned()
        })
        .or_else(|| {
            req.headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
}

/// Applies header operations: set (replace), add (append), remove.
pub(crate) fn apply(headers: &mut HeaderMap, ops: &HeaderOps) {
    for (name, value) in &ops.set {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in &ops.add {
        headers.append(name.clone(), value.clone());
    }
    for name in &ops.remove {
        headers.remove(name);
    }
}

/// Replaces the authority of `uri` (keeping scheme, path and query), for an origin-form URI
/// too.
pub(crate) fn with_authority(uri: &Uri, authority: &str) -> Result<Uri, http::Error> {
    let mut parts = uri.clone().into_parts();
    if parts.scheme.is_some() {
        parts.authority = Some(authority.parse()?);
    }
    Ok(Uri::from_parts(parts)?)
}

//! Authorization: Istio's
//! [AuthorizationPolicy](https://istio.io/latest/docs/reference/config/security/authorization-policy/)
//! enforced on a workload's inbound requests, as Envoy's RBAC filter does.
//!
//! The decision is mesh-core's ([`AuthzEngine`]); this layer is its shell:
//! - one engine per config snapshot, compiled when the first request sees a new
//!   [`CompiledMesh::version`], and the workload's policies ([`WorkloadPolicies`]) selected once
//!   per engine;
//! - per request, an [`AuthzRequest`] from the request head (method, path, authority, headers)
//!   and what the connection knows, a [`ConnectionInfo`] in the request's extensions (inserted
//!   by the inbound listener or TLS acceptor; absent means plain text from an unknown peer);
//! - denied: [`MeshError::RbacDenied`] (403 `RBAC: access denied`); AUDIT matches and dry-run
//!   (`istio.io/dry-run`) results are logged with `tracing` and never change the decision;
//! - CUSTOM policies are not applied (mesh has no external authorizer): the engine's warning is
//!   logged once, and the requests they match are logged at debug level.
//!
//! ```
//! use mesh_tower::authz::AuthorizationLayer;
//! use tower::ServiceBuilder;
//! # let mesh = mesh_tower::MeshHandle::new(mesh_core::CompiledMesh::default());
//! # let app = tower::service_fn(|_req: http::Request<mesh_tower::body::MeshBody>| async {
//! #     Ok::<_, mesh_tower::body::BoxError>(http::Response::new(mesh_tower::body::empty()))
//! # });
//! let layer = AuthorizationLayer::new(&mesh)
//!     .namespace("bookinfo")
//!     .workload_labels([("app", "ratings")]);
//! let svc = ServiceBuilder::new().layer(layer).service(app);
//! # let _ = svc;
//! ```

#[cfg(test)]
mod tests;

use std::{
    collections::HashSet,
    fmt,
    future::{Future, Ready, ready},
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use arc_swap::ArcSwapOption;
use http::{Request, Response};
use mesh_core::{
    CompiledMesh, Labels,
    authz::{AuthzEngine, AuthzRequest, WorkloadPolicies},
};
use tower::{Layer, Service};

use crate::{
    body::{BoxError, MeshBody},
    error::MeshError,
    jwt::RequestAuth,
    snapshot::MeshHandle,
};

/// What the inbound listener knows about the connection a request came on, as a request
/// extension. Without it a request is plain text from an unknown peer: no `source.principal`,
/// no `source.ip`, no `destination.port`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The client's address (`source.ip`, `ipBlocks`).
    pub peer_addr: Option<SocketAddr>,
    /// The address the connection was accepted on (`destination.ip`, `destination.port`,
    /// `ports`).
    pub local_addr: Option<SocketAddr>,
    /// The peer certificate's SPIFFE identity, with or without `spiffe://` (`principals`,
    /// `namespaces`, `source.principal`); `None` for plain text.
    pub peer_principal: Option<String>,
    /// The TLS server name the client asked for (`connection.sni`).
    pub sni: Option<String>,
}

/// The engine of one config version and the workload's policies in it.
#[derive(Debug)]
struct Compiled {
    version: u64,
    engine: AuthzEngine,
    policies: WorkloadPolicies,
}

#[derive(Debug)]
struct Shared {
    handle: MeshHandle,
    namespace: String,
    labels: Labels,
    current: ArcSwapOption<Compiled>,
    /// Held while compiling, so a new version is compiled once.
    rebuild: Mutex<()>,
    /// Warnings already logged (CUSTOM policies, conditions that cannot be evaluated), so a
    /// reload does not repeat them.
    warned: Mutex<HashSet<String>>,
}

impl Shared {
    fn compiled(&self, mesh: &CompiledMesh) -> Arc<Compiled> {
        if let Some(c) = self
            .current
            .load_full()
            .filter(|c| c.version == mesh.version)
        {
            return c;
        }
        let _guard = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = self
            .current
            .load_full()
            .filter(|c| c.version == mesh.version)
        {
            return c;
        }
        let engine = AuthzEngine::new(mesh);
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        for w in engine.warnings() {
            if warned.insert(w.clone()) {
                tracing::warn!(version = mesh.version, "authorization: {w}");
            }
        }
        drop(warned);
        let policies = engine.workload(&self.namespace, &self.labels);
        let compiled = Arc::new(Compiled {
            version: mesh.version,
            engine,
            policies,
        });
        self.current.store(Some(Arc::clone(&compiled)));
        compiled
    }

    /// Whether `req` is allowed, logging what the decision reports.
    fn allowed<B>(&self, req: &Request<B>) -> bool {
        let mesh = self.handle.snapshot();
        let compiled = self.compiled(&mesh);
        if compiled.policies.is_empty() {
            return true;
        }
        let conn = req.extensions().get::<ConnectionInfo>();
        let mut view = AuthzRequest::from_request(req);
        if let Some(conn) = conn {
            if let Some(p) = conn.peer_principal.as_deref() {
                view = view.with_peer_principal(p);
            }
            if let Some(a) = conn.peer_addr {
                view = view.with_source_ip(a.ip());
            }
            if let Some(a) = conn.local_addr {
                view = view.with_destination(a.ip(), a.port());
            }
            if let Some(sni) = conn.sni.as_deref() {
                view = view.with_sni(sni);
            }
        }
        // Put there by the request authentication layer for a verified JWT.
        if let Some(auth) = req.extensions().get::<RequestAuth>() {
            view = view.with_request_auth(&auth.principal, &auth.claims);
        }
        let decision = compiled.engine.evaluate(&compiled.policies, &view);
        if !decision.audit.is_empty() || !decision.dry_run.is_empty() {
            tracing::info!(
                target: "mesh::authz",
                method = %req.method(),
                path = %req.uri().path(),
                "authorization: {decision}"
            );
        } else if !decision.allowed || !decision.custom.is_empty() {
            tracing::debug!(
                target: "mesh::authz",
                method = %req.method(),
                path = %req.uri().path(),
                "authorization: {decision}"
            );
        }
        decision.allowed
    }
}

/// Builds [`Authorization`] services for one workload. Clones share the compiled engine.
#[derive(Debug, Clone)]
pub struct AuthorizationLayer {
    shared: Arc<Shared>,
}

impl AuthorizationLayer {
    /// The layer for a workload of namespace `default` with no labels; set them with
    /// [`namespace`](Self::namespace) and [`workload_labels`](Self::workload_labels).
    pub fn new(mesh: impl Into<MeshHandle>) -> Self {
        Self::for_workload(mesh.into(), "default".into(), Labels::new())
    }

    fn for_workload(handle: MeshHandle, namespace: String, labels: Labels) -> Self {
        AuthorizationLayer {
            shared: Arc::new(Shared {
                handle,
                namespace,
                labels,
                current: ArcSwapOption::empty(),
                rebuild: Mutex::new(()),
                warned: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// The workload's namespace.
    pub fn namespace(self, namespace: impl Into<String>) -> Self {
        let s = &self.shared;
        Self::for_workload(s.handle.clone(), namespace.into(), s.labels.clone())
    }

    /// The workload's labels (policy `selector` matches).
    pub fn workload_labels<K: Into<String>, V: Into<String>>(
        self,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let s = &self.shared;
        Self::for_workload(
            s.handle.clone(),
            s.namespace.clone(),
            labels
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl<S> Layer<S> for AuthorizationLayer {
    type Service = Authorization<S>;

    fn layer(&self, inner: S) -> Authorization<S> {
        Authorization {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Enforces the workload's AuthorizationPolicies; see the [module](self) docs.
#[derive(Debug, Clone)]
pub struct Authorization<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Authorization<S> {
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

impl<S> Service<Request<MeshBody>> for Authorization<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>,
{
    type Response = Response<MeshBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<MeshBody>) -> Self::Future {
        let state = if self.shared.allowed(&req) {
            State::Inner {
                fut: self.inner.call(req),
            }
        } else {
            State::Denied {
                fut: ready(Err(MeshError::RbacDenied.into())),
            }
        };
        ResponseFuture { state }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's response, or the denial.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner { #[pin] fut: F },
        Denied { #[pin] fut: Ready<Result<Response<MeshBody>, BoxError>> },
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<MeshBody>, BoxError>>,
{
    type Output = Result<Response<MeshBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { fut } => fut.poll(cx),
            StateProj::Denied { fut } => fut.poll(cx),
        }
    }
}

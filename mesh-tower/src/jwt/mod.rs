//! Request authentication: Istio's
//! [RequestAuthentication](https://istio.io/latest/docs/reference/config/security/request_authentication/)
//! enforced on a workload's inbound requests, as Envoy's `jwt_authn` filter configured by
//! istiod does.
//!
//! - The workload's policies are selected once per config version: those of its namespace and
//!   of the root namespace whose `selector` matches its labels (or that have none). Their JWT
//!   rules add up; each is a [provider](provider::Provider).
//! - Per request, each rule looks for tokens where it says (`fromHeaders`, `fromParams`,
//!   `fromCookies`; by default `Authorization: Bearer <token>` and the `access_token` query
//!   parameter). Then, as istiod's requirement "any rule passes, or every rule finds no token":
//!   - no token anywhere: the request passes unauthenticated, and authorization decides
//!     (`requestPrincipals: ["*"]` requires a token);
//!   - a rule whose tokens all verify: the request passes with a [`RequestAuth`] extension
//!     (principal `iss/sub`, claims) for the authorization layer;
//!   - otherwise [`MeshError::JwtInvalid`]: 401 with Envoy's reason as the body (`Jwt is
//!     expired`, `Jwt verification fails`, `Jwt issuer is not configured`, ...) and
//!     `www-authenticate: Bearer realm="<url>", error="invalid_token"`; 403 `Audiences in Jwt
//!     are not allowed` when only the audience is wrong.
//! - A token is verified as Envoy does, in its order: parsed; its `iss` equal to the rule's
//!   `issuer`; `nbf`/`exp` with 60 s of clock skew (no `exp`: no expiry); its `aud` containing
//!   one of the rule's `audiences` when the rule lists some (with none, Istio accepts any
//!   audience: the reference's "the service name will be accepted" is not what istiod
//!   configures); its signature by a key of the issuer's JWKS (the key with the token's `kid`,
//!   or each key when either has none; RS256/384/512, PS256/384/512, ES256/384, HS256/384/512,
//!   EdDSA).
//! - A verified token adds `outputPayloadToHeader` (the base64url payload) and
//!   `outputClaimToHeaders` (string, number and boolean claims) and, unless
//!   `forwardOriginalToken: true`, is taken off the request (the header, or the query
//!   parameter; a cookie stays, as in Envoy). Those output headers are always removed from
//!   incoming requests first, so a client cannot forge them.
//! - CORS preflights pass without a check (istiod sets `bypass_cors_preflight`).
//! - Keys: inline `jwks` is parsed per config version; `jwksUri` (or the issuer's OpenID
//!   discovery document) is fetched and cached as [`jwks`] describes.
//!
//! Not applied: `timeout` and `spaceDelimitedClaims` are not in the compiled model (the
//! default 5 s and `scope`/`permission` are used), `presence` neither; ES512 tokens fail as
//! unsupported (the `jsonwebtoken` crate has no P-521).
//!
//! ```
//! use mesh_tower::jwt::RequestAuthenticationLayer;
//! use tower::ServiceBuilder;
//! # let mesh = mesh_tower::MeshHandle::new(mesh_core::CompiledMesh::default());
//! # let app = tower::service_fn(|_req: http::Request<mesh_tower::body::MeshBody>| async {
//! #     Ok::<_, mesh_tower::body::BoxError>(http::Response::new(mesh_tower::body::empty()))
//! # });
//! let layer = RequestAuthenticationLayer::new(&mesh)
//!     .namespace("foo")
//!     .workload_labels([("app", "httpbin")]);
//! let svc = ServiceBuilder::new().layer(layer).service(app);
//! # let _ = svc;
//! ```

pub mod jwks;
mod location;
mod provider;
mod token;

#[cfg(test)]
mod tests;

use std::{
    collections::HashSet,
    fmt,
    future::{Future, Ready, ready},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwapOption;
use http::{Method, Request, Response, header, request::Parts};
use mesh_core::{CompiledMesh, Labels, authz::Claims};
use tower::{Layer, Service};

pub use self::token::JwtFailure;
use self::{
    jwks::{FetchSettings, JwksCache, JwksEntry, KeySet, Keys},
    provider::{Found, KeySource, Provider},
};
use crate::{
    body::{BoxError, MeshBody},
    error::MeshError,
    snapshot::MeshHandle,
};

/// A verified JWT, as a request extension for the authorization layer: Istio's
/// `request.auth.principal`, `request.auth.claims[...]`, `request.auth.audiences` and
/// `request.auth.presenter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestAuth {
    /// `iss/sub` (`requestPrincipals`).
    pub principal: String,
    pub issuer: String,
    pub subject: String,
    /// The `aud` claim (a string or a list).
    pub audiences: Vec<String>,
    /// The `azp` claim.
    pub presenter: Option<String>,
    /// Every claim: lists and nested objects kept, numbers and booleans as their text, and
    /// `scope`/`permission` split on spaces into lists (Istio's `spaceDelimitedClaims`).
    pub claims: Claims,
}

/// The providers of one config version.
#[derive(Debug)]
struct Compiled {
    version: u64,
    providers: Vec<Provider>,
}

#[derive(Debug)]
struct Shared {
    handle: MeshHandle,
    namespace: String,
    labels: Labels,
    jwks: JwksCache,
    current: ArcSwapOption<Compiled>,
    /// Held while compiling, so a new version is compiled once.
    rebuild: Mutex<()>,
    /// Warnings already logged, so a reload does not repeat them.
    warned: Mutex<HashSet<String>>,
}

impl Shared {
    fn compiled(&self, mesh: &CompiledMesh) -> Arc<Compiled> {
        let current = |s: &Self| s.current.load_full().filter(|c| c.version == mesh.version);
        if let Some(c) = current(self) {
            return c;
        }
        let _guard = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = current(self) {
            return c;
        }
        let mut warnings = Vec::new();
        let mut providers = Vec::new();
        // The workload's namespace first, then the root namespace (istiod's order).
        let mut namespaces = vec![self.namespace.as_str()];
        if mesh.root_namespace != self.namespace {
            namespaces.push(&mesh.root_namespace);
        }
        for ns in namespaces {
            for policy in mesh.request_authentications.iter().filter(|p| {
                p.scope.namespace == ns
                    && p.scope
                        .selector
                        .as_ref()
                        .is_none_or(|s| s.matches(&self.labels))
            }) {
                for rule in &policy.jwt_rules {
                    providers.push(Provider::compile(
                        &policy.name,
                        rule,
                        &self.jwks,
                        &mut warnings,
                    ));
                }
            }
        }
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        for w in warnings {
            if warned.insert(w.clone()) {
                tracing::warn!(version = mesh.version, "RequestAuthentication: {w}");
            }
        }
        drop(warned);
        let mut used = HashSet::new();
        for p in &providers {
            if let KeySource::Remote(entry) = &p.keys {
                used.insert(entry.source().clone());
                entry.prefetch();
            }
        }
        self.jwks.retain(&used);
        let compiled = Arc::new(Compiled {
            version: mesh.version,
            providers,
        });
        self.current.store(Some(Arc::clone(&compiled)));
        compiled
    }
}

/// Builds [`RequestAuthentication`] services for one workload. Clones share the compiled
/// rules and the fetched key sets.
#[derive(Debug, Clone)]
pub struct RequestAuthenticationLayer {
    shared: Arc<Shared>,
}

impl RequestAuthenticationLayer {
    /// The layer for a workload of namespace `default` with no labels; set them with
    /// [`namespace`](Self::namespace) and [`workload_labels`](Self::workload_labels).
    pub fn new(mesh: impl Into<MeshHandle>) -> Self {
        Self::build(
            mesh.into(),
            "default".into(),
            Labels::new(),
            jwks::DEFAULT_REFRESH_INTERVAL,
        )
    }

    fn build(handle: MeshHandle, namespace: String, labels: Labels, refresh: Duration) -> Self {
        RequestAuthenticationLayer {
            shared: Arc::new(Shared {
                handle,
                namespace,
                labels,
                jwks: JwksCache::new(FetchSettings {
                    refresh,
                    timeout: jwks::DEFAULT_FETCH_TIMEOUT,
                }),
                current: ArcSwapOption::empty(),
                rebuild: Mutex::new(()),
                warned: Mutex::new(HashSet::new()),
            }),
        }
    }

    fn refresh(&self) -> Duration {
        self.shared.jwks.settings().refresh
    }

    /// The workload's namespace.
    pub fn namespace(self, namespace: impl Into<String>) -> Self {
        let s = &self.shared;
        Self::build(
            s.handle.clone(),
            namespace.into(),
            s.labels.clone(),
            self.refresh(),
        )
    }

    /// The workload's labels (policy `selector` matches).
    pub fn workload_labels<K: Into<String>, V: Into<String>>(
        self,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let s = &self.shared;
        let labels = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self::build(
            s.handle.clone(),
            s.namespace.clone(),
            labels,
            self.refresh(),
        )
    }

    /// How often fetched key sets are refreshed (istiod's `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`,
    /// 20 minutes by default).
    pub fn jwks_refresh_interval(self, interval: Duration) -> Self {
        let s = &self.shared;
        Self::build(
            s.handle.clone(),
            s.namespace.clone(),
            s.labels.clone(),
            interval,
        )
    }
}

impl<S> Layer<S> for RequestAuthenticationLayer {
    type Service = RequestAuthentication<S>;

    fn layer(&self, inner: S) -> RequestAuthentication<S> {
        RequestAuthentication {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Enforces the workload's RequestAuthentications; see the [module](self) docs.
#[derive(Debug, Clone)]
pub struct RequestAuthentication<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> RequestAuthentication<S> {
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

/// The key set each provider with tokens verifies with.
enum KeyState {
    /// Not needed: a token failed before the signature check.
    Unneeded,
    Ready(Arc<KeySet>),
    Failed,
    Pending(Arc<JwksEntry>),
}

impl KeyState {
    fn keys(&self) -> Option<&KeySet> {
        match self {
            KeyState::Ready(k) => Some(k),
            _ => None,
        }
    }
}

impl<S> Service<Request<MeshBody>> for RequestAuthentication<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<MeshBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<MeshBody>) -> Self::Future {
        let mesh = self.shared.handle.snapshot();
        let compiled = self.shared.compiled(&mesh);
        let (mut parts, body) = req.into_parts();
        // Only this layer says who the request's token belongs to.
        parts.extensions.remove::<RequestAuth>();
        if compiled.providers.is_empty() || is_cors_preflight(&parts) {
            return ResponseFuture::inner(self.inner.call(Request::from_parts(parts, body)));
        }
        for p in &compiled.providers {
            p.sanitize(&mut parts);
        }
        let found: Vec<Found> = (compiled.providers.iter().enumerate())
            .filter_map(|(i, p)| p.find(i, &parts))
            .collect();
        if found.is_empty() {
            return ResponseFuture::inner(self.inner.call(Request::from_parts(parts, body)));
        }
        let now = unix_now();
        let keys: Vec<KeyState> = found
            .iter()
            .map(|f| {
                let p = &compiled.providers[f.provider];
                if !f.tokens.iter().all(|(_, jwt)| p.precheck(jwt, now).is_ok()) {
                    return KeyState::Unneeded;
                }
                match (p.keys_now(), &p.keys) {
                    (Keys::Ready(k), _) => KeyState::Ready(k),
                    (Keys::Pending, KeySource::Remote(e)) => KeyState::Pending(Arc::clone(e)),
                    _ => KeyState::Failed,
                }
            })
            .collect();
        if !keys.iter().any(|k| matches!(k, KeyState::Pending(_))) {
            return match decide(&compiled, found, &keys, now, &mut parts) {
                Ok(auth) => {
                    if let Some(auth) = auth {
                        parts.extensions.insert(auth);
                    }
                    ResponseFuture::inner(self.inner.call(Request::from_parts(parts, body)))
                }
                Err(failure) => ResponseFuture::failed(failure, &parts),
            };
        }
        // Keys never fetched yet: wait for the fetch in flight, then decide.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let wait = async move {
            let mut settled = Vec::with_capacity(keys.len());
            for k in keys {
                settled.push(match k {
                    KeyState::Pending(entry) => {
                        entry.wait().await;
                        entry.settled().map_or(KeyState::Failed, KeyState::Ready)
                    }
                    other => other,
                });
            }
            match decide(&compiled, found, &settled, unix_now(), &mut parts) {
                Ok(auth) => {
                    if let Some(auth) = auth {
                        parts.extensions.insert(auth);
                    }
                    Ok(parts)
                }
                Err(failure) => Err(jwt_invalid(failure, &parts)),
            }
        };
        ResponseFuture {
            state: State::Waiting {
                wait: Box::pin(wait),
                call: Some(Box::new(move |parts| {
                    inner.call(Request::from_parts(parts, body))
                })),
            },
        }
    }
}

/// istiod's requirement over the providers that found tokens: the first whose tokens all
/// verify is applied; if none, the failure Envoy reports (one other than an unknown issuer
/// when there is one).
fn decide(
    compiled: &Compiled,
    mut found: Vec<Found>,
    keys: &[KeyState],
    now: u64,
    parts: &mut Parts,
) -> Result<Option<RequestAuth>, JwtFailure> {
    let mut failure = None;
    let mut accepted = None;
    for (i, f) in found.iter().enumerate() {
        let p = &compiled.providers[f.provider];
        match p.verify(f, now, keys[i].keys()) {
            Ok(()) => {
                accepted = Some(i);
                break;
            }
            Err(e) => {
                tracing::debug!(
                    target: "mesh::jwt",
                    policy = %p.policy,
                    issuer = %p.issuer,
                    "token refused: {e}"
                );
                if e != JwtFailure::UnknownIssuer || failure.is_none() {
                    failure = Some(e);
                }
            }
        }
    }
    match accepted {
        Some(i) => {
            let f = found.swap_remove(i);
            Ok(compiled.providers[f.provider].accept(f, parts))
        }
        None => Err(failure.unwrap_or(JwtFailure::UnknownIssuer)),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
fn is_cors_preflight(parts: &Parts) -> bool {
    parts.method == Method::OPTIONS
        && parts.headers.contains_key(header::ORIGIN)
        && parts
            .headers
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The longest path Envoy puts in the realm.
const MAX_REALM_PATH: usize = 256;

/// Envoy's `www-authenticate` realm: the request's URL (scheme, host, path and query, the
/// path cut at 256 bytes).
fn realm(parts: &Parts) -> String {
    let scheme = parts
        .uri
        .scheme_str()
        .or_else(|| {
            parts
                .headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
        })
        .unwrap_or("http");
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
        })
        .unwrap_or("");
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let path = &path[..path.len().min(MAX_REALM_PATH)];
    format!("{scheme}://{host}{path}")
}

fn jwt_invalid(failure: JwtFailure, parts: &Parts) -> BoxError {
    MeshError::JwtInvalid {
        failure,
        realm: realm(parts),
    }
    .into()
}

/// Waiting for a first key fetch, then deciding: the request head to send on, or the refusal.
type WaitFuture = Pin<Box<dyn Future<Output = Result<Parts, BoxError>> + Send>>;
/// Sends the request head (and the body it holds) to the inner service.
type CallInner<F> = Box<dyn FnOnce(Parts) -> F + Send>;

pin_project_lite::pin_project! {
    /// The inner service's response, the refusal, or both after the first key fetch.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner { #[pin] fut: F },
        Failed { #[pin] fut: Ready<Result<Response<MeshBody>, BoxError>> },
        Waiting { wait: WaitFuture, call: Option<CallInner<F>> },
    }
}

impl<F> ResponseFuture<F> {
    fn inner(fut: F) -> Self {
        ResponseFuture {
            state: State::Inner { fut },
        }
    }

    fn failed(failure: JwtFailure, parts: &Parts) -> Self {
        ResponseFuture {
            state: State::Failed {
                fut: ready(Err(jwt_invalid(failure, parts))),
            },
        }
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
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Inner { fut } => return fut.poll(cx),
                StateProj::Failed { fut } => return fut.poll(cx),
                StateProj::Waiting { wait, call } => {
                    let parts = match wait.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(parts)) => parts,
                    };
                    let Some(call) = call.take() else {
                        return Poll::Ready(Err(
                            "jwt: response future polled after completion".into()
                        ));
                    };
                    let fut = call(parts);
                    state.set(State::Inner { fut });
                }
            }
        }
    }
}

//! Local rate limiting: Envoy's
//! [`envoy.filters.http.local_ratelimit`](https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/local_rate_limit_filter),
//! as Istio configures it through an EnvoyFilter (compiled into
//! [`LocalRateLimit`](mesh_core::model::LocalRateLimit)).
//!
//! A [`LocalRateLimitLayer`] is built for one workload (namespace, labels) and one traffic
//! direction. The limits that apply to it are the snapshot's rate limits
//! - of the workload's namespace, or of the root namespace (mesh-wide);
//! - whose `workloadSelector` matches the workload's labels, or that have none;
//! - whose patch `context` is the layer's direction, or `ANY`.
//!
//! Each applicable limit has one token bucket ([`SharedTokenBucket`]) shared by every clone of
//! the layer, so all connections of the workload draw from it, as Envoy's bucket is "shared
//! across all workers". The set is rebuilt when the config version changes; a limit whose
//! EnvoyFilter and token bucket settings are unchanged keeps its bucket (and its tokens) across
//! the reload.
//!
//! Per request, for each applicable limit in config order:
//! - `filter_enabled` (a percentage, 0% when unset, as in Envoy) decides whether the bucket is
//!   consulted at all;
//! - when a token is missing, `filter_enforced` decides whether to answer at once with 429
//!   `local_rate_limited` ([`MeshError::RateLimited`]) or to let the request pass;
//! - with descriptors (a per-route patch's `route.rate_limits` actions and the filter's
//!   `descriptors`), the request draws from each descriptor bucket its generated descriptors
//!   match ([`mesh_core::rate_limit`]), then from the default bucket unless a descriptor matched
//!   and `always_consume_default_token_bucket` is false; an empty bucket limits it. The
//!   `remote_address` action reads the client address from [`ConnectionInfo`](crate::authz::ConnectionInfo);
//! - `response_headers_to_add` and `x-envoy-ratelimited: true` go on that 429 response only:
//!   Envoy's `response_headers_to_add` are "added to each response for requests that have been
//!   rate limited", and the filter "then sets the x-envoy-ratelimited response header".
//!
//! The layer never waits for a token. Time is `tokio::time::Instant` since the bucket was
//! created, so tests can pause time.
//!
//! Because the rate-limited response carries the limit's own headers, this layer answers the
//! 429 itself (with [`MeshError::to_response`], so the status, body and `x-mesh-error` are the
//! table's) instead of returning the error to the edge.
//!
//! ```
//! use mesh_tower::ratelimit::{LocalRateLimitLayer, TrafficDirection};
//! use tower::ServiceBuilder;
//! # let mesh = mesh_tower::MeshHandle::new(mesh_core::CompiledMesh::default());
//! # let app = tower::service_fn(|_req: http::Request<mesh_tower::body::MeshBody>| async {
//! #     Ok::<_, mesh_tower::body::BoxError>(http::Response::new(mesh_tower::body::empty()))
//! # });
//! let layer = LocalRateLimitLayer::new(&mesh, TrafficDirection::SidecarInbound)
//!     .namespace("default")
//!     .workload_labels([("app", "ratings")]);
//! let svc = ServiceBuilder::new().layer(layer).service(app);
//! # let _ = svc;
//! ```

#[cfg(test)]
mod tests;

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue, Request, Response};
use mesh_core::{
    CompiledMesh, Labels, model::LocalRateLimit as LocalRateLimitPolicy, rate_limit,
    token_bucket::SharedTokenBucket,
};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::{
    body::{BoxError, MeshBody},
    error::{MeshError, is_grpc},
    snapshot::MeshHandle,
};

/// Which listener a layer sits on: the EnvoyFilter patch `context` it answers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficDirection {
    /// `SIDECAR_INBOUND`: requests to the workload.
    SidecarInbound,
    /// `SIDECAR_OUTBOUND`: requests the workload sends.
    SidecarOutbound,
    /// `GATEWAY`: requests through a gateway.
    Gateway,
}

impl TrafficDirection {
    /// The EnvoyFilter `context` name.
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficDirection::SidecarInbound => "SIDECAR_INBOUND",
            TrafficDirection::SidecarOutbound => "SIDECAR_OUTBOUND",
            TrafficDirection::Gateway => "GATEWAY",
        }
    }

    /// Whether a patch with `context` applies to this direction (`ANY` applies to all).
    pub fn matches(self, context: &str) -> bool {
        context == "ANY" || context == self.as_str()
    }
}

/// Whether `limit` applies to a workload in `namespace` with `labels`, in `direction`.
pub fn applies(
    limit: &LocalRateLimitPolicy,
    root_namespace: &str,
    namespace: &str,
    labels: &Labels,
    direction: TrafficDirection,
) -> bool {
    (limit.namespace == namespace || limit.namespace == root_namespace)
        && limit.selector.as_ref().is_none_or(|s| s.matches(labels))
        && direction.matches(&limit.context)
}

/// What the filter does with one request, given two uniform draws in `[0, 1)` and whether the
/// bucket had a token (asked only when the filter is enabled for this request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not consulted (`filter_enabled` missed) or a token was taken.
    Pass,
    /// No token, but `filter_enforced` missed: the request passes.
    LimitedNotEnforced,
    /// No token and enforced: answer 429.
    Limited,
}

impl Verdict {
    /// The decision: pure apart from `try_acquire`, which is called only when enabled.
    pub fn decide(
        limit: &LocalRateLimitPolicy,
        enabled_draw: f64,
        enforced_draw: f64,
        try_acquire: impl FnOnce() -> bool,
    ) -> Verdict {
        if !limit.filter_enabled.hit(enabled_draw) || try_acquire() {
            Verdict::Pass
        } else if limit.filter_enforced.hit(enforced_draw) {
            Verdict::Limited
        } else {
            Verdict::LimitedNotEnforced
        }
    }
}

/// One applicable limit and its buckets.
struct Limit {
    policy: LocalRateLimitPolicy,
    /// The default bucket (`token_bucket`), if configured.
    bucket: Option<Arc<SharedTokenBucket>>,
    /// One bucket per configured descriptor, in the policy's order.
    descriptor_buckets: Vec<Arc<SharedTokenBucket>>,
    /// The buckets' epoch.
    start: Instant,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl fmt::Debug for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limit")
            .field("envoy_filter", &self.policy.envoy_filter)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl Limit {
    /// Takes a token from every bucket the request draws from: the descriptor buckets its
    /// descriptors match, and the default bucket unless a descriptor matched and
    /// `always_consume_default_token_bucket` is false. The request is limited when one of them
    /// is empty.
    fn try_acquire(&self, req: &Request<MeshBody>) -> bool {
        let now = Instant::now().saturating_duration_since(self.start);
        let matched = if self.policy.actions.is_empty() || self.descriptor_buckets.is_empty() {
            Vec::new()
        } else {
            let remote = req
                .extensions()
                .get::<crate::authz::ConnectionInfo>()
                .and_then(|c| c.peer_addr)
                .map(|a| a.ip());
            let view = mesh_core::matching::RequestView::from_request(req);
            let generated = rate_limit::generate(&self.policy.actions, &view, remote);
            rate_limit::matching(&self.policy.descriptors, &generated)
        };
        // As Envoy's limiter: the matched descriptor buckets first, stopping at an empty one;
        // then the default bucket.
        if !matched
            .iter()
            .all(|i| self.descriptor_buckets[*i].try_acquire(now))
        {
            return false;
        }
        if matched.is_empty() || self.policy.always_consume_default {
            return self.bucket.as_ref().is_none_or(|b| b.try_acquire(now));
        }
        true
    }

    /// Whether this limit can keep the buckets of `policy` across a reload: same EnvoyFilter,
    /// same bucket settings.
    fn same_buckets(&self, policy: &LocalRateLimitPolicy) -> bool {
        self.policy.envoy_filter == policy.envoy_filter
            && self.bucket.as_ref().map(|b| b.config()) == policy.bucket
            && self.policy.descriptors == policy.descriptors
    }
}

/// The limits of one config version.
#[derive(Debug)]
struct Limits {
    version: u64,
    limits: Vec<Limit>,
}

/// What every clone of a layer and its services shares.
#[derive(Debug)]
struct Shared {
    handle: MeshHandle,
    direction: TrafficDirection,
    namespace: String,
    labels: Labels,
    current: ArcSwap<Limits>,
    /// Held while rebuilding, so two requests that see a new version build it once.
    rebuild: Mutex<()>,
}

impl Shared {
    /// The limits for `mesh`, rebuilt if its version changed.
    fn limits(&self, mesh: &CompiledMesh) -> Arc<Limits> {
        let current = self.current.load_full();
        if current.version == mesh.version {
            return current;
        }
        let _guard = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.current.load_full();
        if current.version == mesh.version {
            return current;
        }
        let next = Arc::new(self.build(mesh, &current));
        self.current.store(Arc::clone(&next));
        next
    }

    fn build(&self, mesh: &CompiledMesh, previous: &Limits) -> Limits {
        let mut used = vec![false; previous.limits.len()];
        let limits = mesh
            .rate_limits
            .iter()
            .filter(|l| {
                applies(
                    l,
                    &mesh.root_namespace,
                    &self.namespace,
                    &self.labels,
                    self.direction,
                )
            })
            .map(|policy| {
                // Keep the bucket (and its tokens) of an unchanged limit.
                let kept = previous
                    .limits
                    .iter()
                    .enumerate()
                    .find(|(i, old)| !used[*i] && old.same_buckets(policy));
                let (bucket, descriptor_buckets, start) = match kept {
                    Some((i, old)) => {
                        used[i] = true;
                        (
                            old.bucket.clone(),
                            old.descriptor_buckets.clone(),
                            old.start,
                        )
                    }
                    None => (
                        policy.bucket.map(|b| Arc::new(SharedTokenBucket::new(b))),
                        policy
                            .descriptors
                            .iter()
                            .map(|d| Arc::new(SharedTokenBucket::new(d.bucket)))
                            .collect(),
                        Instant::now(),
                    ),
                };
                let headers = policy
                    .response_headers
                    .iter()
                    .filter_map(|(k, v)| {
                        let header = HeaderName::try_from(k.as_str())
                            .ok()
                            .zip(HeaderValue::try_from(v.as_str()).ok());
                        if header.is_none() {
                            tracing::warn!(
                                envoy_filter = %policy.envoy_filter,
                                header = %k,
                                "local rate limit: response header is not a valid HTTP header; skipped"
                            );
                        }
                        header
                    })
                    .collect();
                Limit {
                    policy: policy.clone(),
                    bucket,
                    descriptor_buckets,
                    start,
                    headers,
                }
            })
            .collect();
        Limits {
            version: mesh.version,
            limits,
        }
    }
}

/// Builds [`LocalRateLimit`] services for one workload and direction. Clones (and the services
/// they build) share the buckets.
#[derive(Debug, Clone)]
pub struct LocalRateLimitLayer {
    shared: Arc<Shared>,
}

impl LocalRateLimitLayer {
    /// The layer for a workload of namespace `default` with no labels; set them with
    /// [`namespace`](Self::namespace) and [`workload_labels`](Self::workload_labels) before
    /// building services.
    pub fn new(mesh: impl Into<MeshHandle>, direction: TrafficDirection) -> Self {
        Self::for_workload(mesh.into(), direction, "default".into(), Labels::new())
    }

    fn for_workload(
        handle: MeshHandle,
        direction: TrafficDirection,
        namespace: String,
        labels: Labels,
    ) -> Self {
        LocalRateLimitLayer {
            shared: Arc::new(Shared {
                handle,
                direction,
                namespace,
                labels,
                current: ArcSwap::from_pointee(Limits {
                    // No real config has this version: the first request builds the limits.
                    version: u64::MAX,
                    limits: Vec::new(),
                }),
                rebuild: Mutex::new(()),
            }),
        }
    }

    /// The workload's namespace. Starts a new set of buckets.
    pub fn namespace(self, namespace: impl Into<String>) -> Self {
        let s = &self.shared;
        Self::for_workload(
            s.handle.clone(),
            s.direction,
            namespace.into(),
            s.labels.clone(),
        )
    }

    /// The workload's labels. Starts a new set of buckets.
    pub fn workload_labels<K: Into<String>, V: Into<String>>(
        self,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let s = &self.shared;
        Self::for_workload(
            s.handle.clone(),
            s.direction,
            s.namespace.clone(),
            labels
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// The tokens left in each applicable bucket now, by EnvoyFilter (for tests and
    /// `/config_dump`).
    pub fn available(&self) -> Vec<(String, u32)> {
        let mesh = self.shared.handle.snapshot();
        self.shared
            .limits(&mesh)
            .limits
            .iter()
            .map(|l| {
                (
                    l.policy.envoy_filter.clone(),
                    l.bucket.as_ref().map_or(0, |b| {
                        b.available(Instant::now().saturating_duration_since(l.start))
                    }),
                )
            })
            .collect()
    }
}

impl<S> Layer<S> for LocalRateLimitLayer {
    type Service = LocalRateLimit<S>;

    fn layer(&self, inner: S) -> LocalRateLimit<S> {
        LocalRateLimit {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Answers 429 when a local rate limit of the workload has no token; see the
/// [module](self) docs.
#[derive(Debug, Clone)]
pub struct LocalRateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> LocalRateLimit<S> {
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

impl<S> Service<Request<MeshBody>> for LocalRateLimit<S>
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
        let mesh = self.shared.handle.snapshot();
        let limits = self.shared.limits(&mesh);
        for limit in &limits.limits {
            let verdict = Verdict::decide(&limit.policy, fastrand::f64(), fastrand::f64(), || {
                limit.try_acquire(&req)
            });
            match verdict {
                Verdict::Pass => {}
                Verdict::LimitedNotEnforced => {
                    tracing::debug!(
                        envoy_filter = %limit.policy.envoy_filter,
                        "local rate limit reached, not enforced: request passes"
                    );
                }
                Verdict::Limited => {
                    tracing::debug!(
                        envoy_filter = %limit.policy.envoy_filter,
                        "local rate limit reached: 429"
                    );
                    let mut res = MeshError::RateLimited.to_response(is_grpc(&req));
                    let headers = res.headers_mut();
                    headers.insert("x-envoy-ratelimited", HeaderValue::from_static("true"));
                    for (k, v) in &limit.headers {
                        headers.insert(k.clone(), v.clone());
                    }
                    return ResponseFuture {
                        state: State::Limited { res: Some(res) },
                    };
                }
            }
        }
        ResponseFuture {
            state: State::Inner {
                fut: self.inner.call(req),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's response, or the 429.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner { #[pin] fut: F },
        Limited { res: Option<Response<MeshBody>> },
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
            StateProj::Limited { res } => {
                Poll::Ready(Ok(res.take().expect("polled after completion")))
            }
        }
    }
}

//! The four Bookinfo services, faithful to Istio's
//! [samples/bookinfo/src](https://github.com/istio/istio/tree/master/samples/bookinfo/src):
//!
//! | service | answers | calls |
//! |---|---|---|
//! | [`productpage`] | `GET /productpage` (HTML), `/api/v1/products...` (JSON), sign-in | details, reviews |
//! | [`details`] | `GET /details/<id>` | nothing |
//! | [`reviews`] | `GET /reviews/<id>`: v1 no stars, v2 black, v3 red | ratings (v2, v3) |
//! | [`ratings`] | `GET /ratings/<id>`, `POST /ratings/<id>` | nothing |
//!
//! Each is a `tower::Service<http::Request<MeshBody>>` that never fails (errors are
//! responses), so it fits behind [`MeshStack::inbound`](mesh_tower::MeshStack::inbound).
//! The callers are handed a [`Client`], usually the mesh's outbound stack: they address their
//! dependencies by plain names (`http://reviews:9080/reviews/0`) and the mesh decides where the
//! request goes, as a sidecar does for Istio's services. They also pass on the trace and
//! user headers ([`FORWARDED_HEADERS`]), which Istio's routing (`end-user` matches) and
//! tracing need from applications.

pub mod details;
pub mod model;
pub mod productpage;
pub mod ratings;
pub mod reviews;
mod wire;

#[cfg(test)]
mod tests;

use std::{future::Future, pin::Pin};

use http::{Request, Response};
use mesh_tower::body::{BoxError, MeshBody};
use tower::{Service, ServiceExt, util::BoxCloneService};

pub(crate) use wire::call as call_client;
pub use wire::{CallError, FORWARDED_HEADERS, forward_headers};

/// The client a service calls its dependencies with: any cloneable tower service over the
/// mesh's body type. [`client`] boxes one.
pub type Client = BoxCloneService<Request<MeshBody>, Response<MeshBody>, BoxError>;

/// The response future of the services that call others or read a body.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<MeshBody>, BoxError>> + Send + 'static>>;

/// Boxes `svc` (the mesh's outbound stack, or any service: a test double, a plain hyper
/// client) as a [`Client`].
pub fn client<S>(svc: S) -> Client
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    BoxCloneService::new(svc.map_err(Into::into))
}

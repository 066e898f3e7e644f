//! Istio's traffic policies as tower layers, assembled by [`MeshStack`].
//!
//! Every layer reads the compiled config ([`mesh_core::CompiledMesh`]) from a live
//! [`MeshHandle`], once per request: a reload changes routing without rebuilding the stack, and
//! a request in flight finishes on the snapshot it started with. Failures become the responses
//! Envoy would give ([`error`]).
#![forbid(unsafe_code)]

pub mod access_log;
pub mod authz;
pub mod body;
pub mod cors;
pub mod endpoint;
pub mod error;
pub mod fault;
pub mod inbound;
pub mod jwt;
pub mod mirror;
pub mod ratelimit;
pub mod retry;
pub mod route;
pub mod snapshot;
mod stack;
pub mod tcp;
pub mod telemetry;
pub mod timeout;
pub mod tls;
pub mod trace;

pub use error::MeshError;
pub use snapshot::MeshHandle;
pub use stack::{InboundStack, MeshService, MeshStack};

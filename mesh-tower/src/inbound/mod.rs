//! The server side of a workload: Istio's
//! [PeerAuthentication](https://istio.io/latest/docs/reference/config/security/peer_authentication/)
//! applied to each connection, and what the connection proved handed to each request.
//!
//! ```text
//! TCP accept ─► InboundAcceptor (mode of the workload port: STRICT / PERMISSIVE / DISABLE;
//!                                 TLS or plain text by the first bytes; mTLS handshake with
//!                                 the workload's current certificate)
//!            ─► serve (HTTP/1.1 or HTTP/2; ConnectionInfo and MutualTls into every request)
//!            ─► MeshStack::inbound: x-forwarded-client-cert, rate limit, authorization, app
//! ```
//!
//! - [`InboundAcceptor`]: the per-connection decision and the handshake.
//! - [`serve`]: an accept loop over it that serves any tower service, so an in-process
//!   workload (and `mesh run --inbound`) gets the whole inbound side in one call.
//! - [`XfccLayer`]: `x-forwarded-client-cert` as Istio's sidecar sets it (SANITIZE_SET).
//! - [`MutualTls`]: the mTLS facts of a connection, a request extension.

mod acceptor;
mod serve;
mod stream;
mod xfcc;

#[cfg(test)]
mod tests;

pub use acceptor::{AcceptError, HANDSHAKE_TIMEOUT, InboundAcceptor, looks_like_tls, mode_name};
pub use serve::{DRAIN_TIMEOUT, serve};
pub use stream::{InboundStream, MutualTls};
pub use xfcc::{X_FORWARDED_CLIENT_CERT, Xfcc, XfccLayer, xfcc_value};

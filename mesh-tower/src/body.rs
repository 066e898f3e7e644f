//! The body type of the stack: any request or response body, boxed once at the edge.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};

/// The error type carried through the stack.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A boxed, streaming body. `Unsync` so that bodies which are `Send` but not `Sync` (hyper's
/// `Incoming` is both, user bodies may not be) fit; trailers pass through untouched.
pub type MeshBody = UnsyncBoxBody<Bytes, BoxError>;

/// Boxes any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> MeshBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A body of `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> MeshBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> MeshBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

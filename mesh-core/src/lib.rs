//! Domain types, the compiled mesh model and the pure decisions of mesh.
//!
//! Nothing here does I/O or knows about tokio, hyper or YAML: these are the functions that decide
//! (does this request match, which destination, which endpoint) and the types they decide on.
#![forbid(unsafe_code)]

pub mod authz;
pub mod balance;
pub mod duration;
pub mod gateway;
pub mod host;
pub mod identity;
pub mod labels;
pub mod matching;
pub mod model;
pub mod outlier;
pub mod peer_authentication;
pub mod percent;
pub mod rate_limit;
pub mod retry;
pub mod token_bucket;
pub mod weighted;

pub use host::Host;
pub use identity::Identity;
pub use labels::{Labels, Selector};
pub use model::CompiledMesh;
pub use percent::Percent;

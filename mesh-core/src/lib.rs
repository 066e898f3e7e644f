//! Domain types, the compiled mesh model and the pure decisions of mesh.
//!
//! Nothing here does I/O or knows about tokio, hyper or YAML: these are the functions that decide
//! (does this request match, which destination, which endpoint) and the types they decide on.
#![forbid(unsafe_code)]

pub mod duration;
pub mod matching;
pub mod weighted;

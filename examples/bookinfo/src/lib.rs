//! Istio's [Bookinfo](https://istio.io/latest/docs/examples/bookinfo/) application in Rust, on
//! the mesh.
//!
//! - [`services`]: `productpage`, `details`, `reviews` (v1 without stars, v2 with black stars,
//!   v3 with red ones) and `ratings`, as tower services that behave like Istio's. productpage
//!   and reviews call their dependencies by the names Istio's use (`http://reviews:9080/...`)
//!   through a client they are given: the mesh's outbound stack.
//! - [`scenarios`]: the YAML of Istio's traffic and security tasks, written for this project
//!   (canary splits, user-based routing, faults, timeouts, circuit breaking, mirroring, mTLS,
//!   authorization, rate limiting).
//! - [`Bookinfo::start`]: everything in one process. Each workload serves on its own loopback
//!   port behind the mesh's inbound side (PeerAuthentication, authorization, rate limits), calls
//!   out through the outbound stack with a workload identity from an in-memory CA (mTLS), and an
//!   ingress gateway serves `bookinfo-gateway`. The config is a folder the runner watches: copy
//!   a scenario into it and the next request follows it.
//! - [`standalone`]: one service as a plain HTTP server that knows nothing of the mesh, calling
//!   out through an HTTP proxy: what runs behind each `mesh run` sidecar in sidecar mode
//!   (`bookinfo serve`, `examples/bookinfo/sidecars.sh`).
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), bookinfo::StartError> {
//! let running = bookinfo::Bookinfo::start(bookinfo::Options {
//!     listen: "127.0.0.1:0".parse().unwrap(),
//!     scenario: Some("reviews-v3".into()),
//!     ..Default::default()
//! })
//! .await?;
//! println!("open {}", running.url());
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod runner;
pub mod scenarios;
pub mod services;
pub mod standalone;
pub mod workloads;

pub use runner::{Bookinfo, DEFAULT_LISTEN, Options, Running, SCENARIO_FILE, StartError};

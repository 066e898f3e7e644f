//! What the harness's own programs share: the gRPC benchmark service (issue 8's "gRPC unary:
//! a small tonic client of our own with an hdrhistogram, rate-scheduled"), its server (run by
//! `upstream --grpc`) and client, and the engine of `mesh-load`, the load generator for
//! fixed-rate latency over HTTP/1.1, h2c and gRPC. The driver (`src/main.rs`) only starts
//! those programs and reads their output.

pub mod grpc;
pub mod loadgen;

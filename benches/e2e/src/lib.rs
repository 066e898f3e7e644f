//! What the harness's own gRPC programs share (issue 8's "gRPC unary: a small tonic client of
//! our own with an hdrhistogram, rate-scheduled"): the benchmark service's messages, its server
//! (run by `upstream --grpc`), its client, and the load generator's engine (run by
//! `grpc-load`). The driver (`src/main.rs`) only starts those programs and reads their output.

pub mod grpc;

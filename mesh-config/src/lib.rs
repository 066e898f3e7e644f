//! Istio YAML to a validated, compiled mesh.
#![forbid(unsafe_code)]

pub mod kinds;

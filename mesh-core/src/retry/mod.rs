//! Retry decisions: which attempt outcomes a route retries, how long to back off, and whether
//! the retry budget has room.
//!
//! Istio's VirtualService
//! [`HTTPRetry`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPRetry)
//! (`attempts`, `perTryTimeout`, `retryOn`) becomes Envoy's route retry policy, whose `retryOn`
//! names are the conditions of Envoy's router:
//! [`x-envoy-retry-on`](https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/router_filter#x-envoy-retry-on)
//! and [`x-envoy-retry-grpc-on`](https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/router_filter#x-envoy-retry-grpc-on).
//! [`RetryConditions`] compiles a policy's names once into a bit set, and
//! [`RetryConditions::should_retry`] decides for one [`AttemptOutcome`]:
//!
//! | condition | retries |
//! |---|---|
//! | `5xx` | any 5xx response; and every attempt without a response: connect failure, reset, refused stream, per-try timeout |
//! | `gateway-error` | 502, 503 and 504 responses; and every attempt without a response (Envoy's router answers those with 503 or 504 itself) |
//! | `reset` | every attempt without a response (disconnect, reset, per-try timeout, and connection failures and refused streams, which are resets too) |
//! | `reset-before-request` | a connect failure, or a reset before the request was completely sent upstream (safe for non-idempotent requests) |
//! | `connect-failure` | a connection that could not be made (refused, connect timeout, TLS failure) |
//! | `refused-stream` | an HTTP/2 `REFUSED_STREAM` reset: the upstream did not process the request |
//! | `envoy-ratelimited` | a response carrying `x-envoy-ratelimited` |
//! | `retriable-4xx` | a 409 response (the only code in Envoy's category) |
//! | `retriable-status-codes` | a response whose status is in the policy's `retriable_status_codes` (the integers of Istio's `retryOn`) |
//! | `retriable-headers` | never: Envoy matches the headers of its `retriable_headers` setting, which Istio's API cannot set |
//! | `http3-post-connect-failure` | never: mesh does not speak HTTP/3 upstream |
//! | `cancelled`, `deadline-exceeded`, `internal`, `resource-exhausted`, `unavailable` | a response whose `grpc-status` *header* is 1, 4, 13, 8 or 14 |
//!
//! Further rules, as Envoy's router:
//! - A response with `x-envoy-ratelimited` is retried only under `envoy-ratelimited`, never by
//!   another condition (a 503 with that header is not retried under `5xx`).
//! - gRPC conditions see the `grpc-status` of the response headers only, that is a
//!   trailers-only response (gRPC's way of failing before any message). A status in trailers
//!   arrives after the body has been streamed to the client, too late to retry.
//! - The route's overall `timeout` is never retried: it bounds all attempts together. Only a
//!   per-try timeout is an attempt outcome.
//! - Istio's default policy (no `retries` field) retries `connect-failure`, `refused-stream`,
//!   `unavailable`, `cancelled` and `retriable-status-codes` with no status codes, so a plain
//!   503 response is not retried ([`RetryPolicy::istio_default`]).
//! - Unknown names never match: validation rejects them before a policy is compiled.
//!
//! The number of retries (`attempts`) is counted by the caller: retry while
//! `retries_done < policy.attempts` and [`RetryConditions::should_retry`] and
//! [`budget_allows`]; wait [`Backoff::delay`] before each retry.

use http::{HeaderMap, StatusCode};

use crate::model::RetryPolicy;

mod backoff;
#[cfg(test)]
mod tests;

pub use backoff::{
    Backoff, DEFAULT_BUDGET_PERCENT, DEFAULT_MIN_RETRY_CONCURRENCY, RetryBudget, budget_allows,
};

/// gRPC status codes named by Envoy's gRPC retry conditions.
pub mod grpc_status {
    pub const CANCELLED: u32 = 1;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
}

/// One of Envoy's `retry_on` conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryOn {
    FiveXx,
    GatewayError,
    Reset,
    ResetBeforeRequest,
    ConnectFailure,
    EnvoyRateLimited,
    Retriable4xx,
    RefusedStream,
    RetriableStatusCodes,
    RetriableHeaders,
    Http3PostConnectFailure,
    GrpcCancelled,
    GrpcDeadlineExceeded,
    GrpcInternal,
    GrpcResourceExhausted,
    GrpcUnavailable,
}

impl RetryOn {
    /// Every condition, in the order of Envoy's documentation.
    pub const ALL: [RetryOn; 16] = [
        RetryOn::FiveXx,
        RetryOn::GatewayError,
        RetryOn::Reset,
        RetryOn::ResetBeforeRequest,
        RetryOn::ConnectFailure,
        RetryOn::EnvoyRateLimited,
        RetryOn::Retriable4xx,
        RetryOn::RefusedStream,
        RetryOn::RetriableStatusCodes,
        RetryOn::RetriableHeaders,
        RetryOn::Http3PostConnectFailure,
        RetryOn::GrpcCancelled,
        RetryOn::GrpcDeadlineExceeded,
        RetryOn::GrpcInternal,
        RetryOn::GrpcResourceExhausted,
        RetryOn::GrpcUnavailable,
    ];

    /// The condition `name` stands for in Istio's `retryOn` (Envoy's spelling); `None` for an
    /// unknown name or a status code.
    pub fn parse(name: &str) -> Option<RetryOn> {
        RetryOn::ALL.into_iter().find(|c| c.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RetryOn::FiveXx => "5xx",
            RetryOn::GatewayError => "gateway-error",
            RetryOn::Reset => "reset",
            RetryOn::ResetBeforeRequest => "reset-before-request",
            RetryOn::ConnectFailure => "connect-failure",
            RetryOn::EnvoyRateLimited => "envoy-ratelimited",
            RetryOn::Retriable4xx => "retriable-4xx",
            RetryOn::RefusedStream => "refused-stream",
            RetryOn::RetriableStatusCodes => "retriable-status-codes",
            RetryOn::RetriableHeaders => "retriable-headers",
            RetryOn::Http3PostConnectFailure => "http3-post-connect-failure",
            RetryOn::GrpcCancelled => "cancelled",
            RetryOn::GrpcDeadlineExceeded => "deadline-exceeded",
            RetryOn::GrpcInternal => "internal",
            RetryOn::GrpcResourceExhausted => "resource-exhausted",
            RetryOn::GrpcUnavailable => "unavailable",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// What an upstream response says about retrying: its status and the headers Envoy's retry
/// conditions read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseInfo {
    pub status: StatusCode,
    /// The `grpc-status` response *header* (a trailers-only gRPC response), if any.
    pub grpc_status: Option<u32>,
    /// Whether the response carries `x-envoy-ratelimited`.
    pub envoy_ratelimited: bool,
}

impl ResponseInfo {
    /// A response without gRPC status or rate-limit header.
    pub fn status(status: StatusCode) -> Self {
        ResponseInfo {
            status,
            grpc_status: None,
            envoy_ratelimited: false,
        }
    }

    /// Reads `grpc-status` and `x-envoy-ratelimited` from the response headers. An unparsable
    /// `grpc-status` counts as absent.
    pub fn from_headers(status: StatusCode, headers: &HeaderMap) -> Self {
        ResponseInfo {
            status,
            grpc_status: headers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok()),
            envoy_ratelimited: headers.contains_key("x-envoy-ratelimited"),
        }
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The upstream sent response headers.
    Response(ResponseInfo),
    /// No connection could be made (refused, connect timeout, TLS handshake failure).
    ConnectFailure,
    /// The connection or stream was reset, or closed, before response headers.
    /// `request_sent`: whether the request had been sent completely upstream.
    Reset { request_sent: bool },
    /// The upstream reset the HTTP/2 stream with `REFUSED_STREAM`: it did not process it.
    RefusedStream,
    /// The route's `perTryTimeout` fired before response headers.
    PerTryTimeout,
}

impl AttemptOutcome {
    /// A response with only a status.
    pub fn status(status: StatusCode) -> Self {
        AttemptOutcome::Response(ResponseInfo::status(status))
    }
}

/// A policy's `retry_on` names, compiled once per route.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetryConditions {
    bits: u32,
    retriable_status_codes: Vec<u16>,
}

impl RetryConditions {
    /// Compiles `policy.retry_on` and `policy.retriable_status_codes`. Unknown names are
    /// ignored (validation already rejected them).
    pub fn new(policy: &RetryPolicy) -> Self {
        let bits = policy
            .retry_on
            .iter()
            .filter_map(|name| RetryOn::parse(name.trim()))
            .fold(0, |bits, c| bits | c.bit());
        RetryConditions {
            bits,
            retriable_status_codes: policy.retriable_status_codes.clone(),
        }
    }

    pub fn contains(&self, condition: RetryOn) -> bool {
        self.bits & condition.bit() != 0
    }

    /// Whether an attempt that ended with `outcome` should be retried (retries left and budget
    /// are the caller's to check).
    pub fn should_retry(&self, outcome: &AttemptOutcome) -> bool {
        use RetryOn::*;
        let on = |c: RetryOn| self.contains(c);
        match *outcome {
            AttemptOutcome::Response(r) => {
                if r.envoy_ratelimited {
                    return on(EnvoyRateLimited);
                }
                let code = r.status.as_u16();
                let grpc = |c: RetryOn, status: u32| on(c) && r.grpc_status == Some(status);
                (on(FiveXx) && r.status.is_server_error())
                    || (on(GatewayError) && matches!(code, 502..=504))
                    || (on(Retriable4xx) && code == 409)
                    || (on(RetriableStatusCodes) && self.retriable_status_codes.contains(&code))
                    || grpc(GrpcCancelled, grpc_status::CANCELLED)
                    || grpc(GrpcDeadlineExceeded, grpc_status::DEADLINE_EXCEEDED)
                    || grpc(GrpcInternal, grpc_status::INTERNAL)
                    || grpc(GrpcResourceExhausted, grpc_status::RESOURCE_EXHAUSTED)
                    || grpc(GrpcUnavailable, grpc_status::UNAVAILABLE)
            }
            AttemptOutcome::ConnectFailure => {
                on(FiveXx)
                    || on(GatewayError)
                    || on(Reset)
                    || on(ResetBeforeRequest)
                    || on(ConnectFailure)
            }
            AttemptOutcome::Reset { request_sent } => {
                on(FiveXx)
                    || on(GatewayError)
                    || on(Reset)
                    || (!request_sent && on(ResetBeforeRequest))
            }
            AttemptOutcome::RefusedStream => {
                on(FiveXx) || on(GatewayError) || on(Reset) || on(RefusedStream)
            }
            AttemptOutcome::PerTryTimeout => on(FiveXx) || on(GatewayError) || on(Reset),
        }
    }
}

/// Whether `policy` retries an attempt that ended with `outcome`. Compiles the conditions on
/// each call (no allocation beyond the status codes); layers should keep a [`RetryConditions`].
pub fn should_retry(policy: &RetryPolicy, outcome: &AttemptOutcome) -> bool {
    RetryConditions::new(policy).should_retry(outcome)
}

//! Envoy's response flags, the `response_flags` label of Istio's metrics.
//!
//! Istio copies Envoy's `%RESPONSE_FLAGS%` short string into the label
//! ([access log usage](https://www.envoyproxy.io/docs/envoy/latest/configuration/observability/access_log/usage#config-access-log-format-response-flags)):
//! `-` when no flag is set, else the set flags joined by `,` in Envoy's own order, so a
//! dashboard that filters on `response_flags="UH"` works on mesh's series too.

use std::fmt;

/// Envoy's short names, in the order Envoy prints them (`ResponseFlagUtils`); bit `i` of
/// [`ResponseFlags`] is `NAMES[i]`.
const NAMES: [&str; 16] = [
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC",
    "URX",
];

/// A set of Envoy response flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u16);

impl ResponseFlags {
    /// No flag: the label reads `-`.
    pub const NONE: Self = Self(0);
    /// `UH`: no healthy upstream host (503).
    pub const NO_HEALTHY_UPSTREAM: Self = Self(1 << 1);
    /// `UT`: upstream request timeout (504).
    pub const UPSTREAM_REQUEST_TIMEOUT: Self = Self(1 << 2);
    /// `UR`: the upstream reset the stream (here: the response body failed mid-way).
    pub const UPSTREAM_REMOTE_RESET: Self = Self(1 << 4);
    /// `UF`: upstream connection failure (503).
    pub const UPSTREAM_CONNECTION_FAILURE: Self = Self(1 << 5);
    /// `UC`: the upstream connection ended (TCP proxies).
    pub const UPSTREAM_CONNECTION_TERMINATION: Self = Self(1 << 6);
    /// `UO`: upstream overflow: a circuit breaker (503), or a retry refused by the retry
    /// budget or `maxRetries` (the previous attempt's answer stands, as Envoy's
    /// `upstream_rq_retry_overflow`).
    pub const UPSTREAM_OVERFLOW: Self = Self(1 << 7);
    /// `NR`: no route configured (404).
    pub const NO_ROUTE_FOUND: Self = Self(1 << 8);
    /// `DI`: the request was delayed by fault injection (set by the fault layer when the
    /// delay starts; with an abort after it, `DI,FI`).
    pub const DELAY_INJECTED: Self = Self(1 << 9);
    /// `FI`: the request was aborted by fault injection.
    pub const FAULT_INJECTED: Self = Self(1 << 10);
    /// `RL`: locally rate limited (429).
    pub const RATE_LIMITED: Self = Self(1 << 11);
    /// `UAEX`: denied by an external authorization service.
    pub const UNAUTHORIZED_EXTERNAL_SERVICE: Self = Self(1 << 12);
    /// `DC`: the downstream went away before the response was complete.
    pub const DOWNSTREAM_CONNECTION_TERMINATION: Self = Self(1 << 14);
    /// `URX`: the final attempt's outcome was one the route retries, but no retry was left
    /// (set by the retry layer; with a per-try timeout on the last attempt, `UT,URX`).
    pub const UPSTREAM_RETRY_LIMIT_EXCEEDED: Self = Self(1 << 15);

    /// The flags of a mesh local reply, from its `x-mesh-error` value (DESIGN.md's table).
    /// RBAC denials carry no flag in Envoy (its RBAC filter sets none), nor does Istio's
    /// `REGISTRY_ONLY` block (a direct response of the `block_all` route).
    pub fn from_mesh_error(code: &str) -> Self {
        match code {
            "no-route" => Self::NO_ROUTE_FOUND,
            "no-healthy-upstream" => Self::NO_HEALTHY_UPSTREAM,
            "upstream-connect-failure" => Self::UPSTREAM_CONNECTION_FAILURE,
            "upstream-timeout" => Self::UPSTREAM_REQUEST_TIMEOUT,
            "rate-limited" => Self::RATE_LIMITED,
            "fault-abort" => Self::FAULT_INJECTED,
            "overflow" => Self::UPSTREAM_OVERFLOW,
            _ => Self::NONE,
        }
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The set as bits (bit `i` is Envoy's `i`-th flag), for an atomic that gathers flags
    /// from several layers.
    pub(crate) const fn bits(self) -> u16 {
        self.0
    }

    pub(crate) const fn from_bits(bits: u16) -> Self {
        Self(bits)
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for ResponseFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

/// Envoy's short string: `-`, `UH`, `UT,DC`, ...
impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (i, name) in NAMES.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

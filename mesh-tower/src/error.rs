//! Failures of the stack, and the one place they become responses.
//!
//! Every layer fails with a [`MeshError`] (boxed, through the stack); [`MeshError::to_response`]
//! answers as Envoy does, so clients and dashboards see what they would see with Istio: the
//! status, Envoy's body text, the `x-mesh-error` header that names the cause, and, for gRPC
//! requests, `grpc-status` and `grpc-message` with Envoy's HTTP-to-gRPC mapping.

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{self, BoxError, MeshBody};

/// Why the mesh answered instead of the upstream.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// No VirtualService route matched the request.
    #[error("no route matched the request to {authority}")]
    NoRoute { authority: String },
    /// The request has no authority (no Host header, no absolute URI).
    #[error("the request has no authority: set the Host header or send an absolute URI")]
    NoAuthority,
    /// The destination has no endpoint to send to (none registered, or all ejected).
    #[error("no healthy upstream for {destination}")]
    NoHealthyUpstream { destination: String },
    /// Connecting to (or talking to) the endpoint failed.
    #[error("upstream connect error or disconnect/reset before headers: {endpoint}: {source}")]
    UpstreamConnect {
        endpoint: String,
        #[source]
        source: BoxError,
    },
    /// The route's timeout (or a per-try timeout) expired.
    #[error("upstream request timeout after {0:?}")]
    Timeout(std::time::Duration),
    /// A fault injection abort.
    #[error("fault filter abort")]
    FaultAbort {
        status: StatusCode,
        grpc_status: Option<u32>,
    },
    /// The connection pool limits are reached (circuit open).
    #[error("upstream overflow: connection pool limits of {destination} reached")]
    Overflow { destination: String },
    /// The local rate limit refused the request.
    #[error("local rate limit reached")]
    RateLimited,
    /// An AuthorizationPolicy denied the request.
    #[error("RBAC: access denied")]
    RbacDenied,
    /// A RequestAuthentication refused the request's JWT (bad signature, expired, unknown
    /// issuer, malformed, audience not allowed). `realm` is the request URL, for
    /// `www-authenticate`.
    #[error("JWT refused: {failure}; send a valid token of a configured issuer, or none")]
    JwtInvalid {
        failure: crate::jwt::JwtFailure,
        realm: String,
    },
    /// The Sidecar's outbound traffic policy (REGISTRY_ONLY) refused an unknown host.
    #[error("{host} is not in the mesh registry and the outbound traffic policy is REGISTRY_ONLY")]
    RegistryOnly { host: String },
}

impl MeshError {
    /// The value of `x-mesh-error`, a stable name for the cause.
    pub fn code(&self) -> &'static str {
        match self {
            MeshError::NoRoute { .. } | MeshError::NoAuthority => "no-route",
            MeshError::NoHealthyUpstream { .. } => "no-healthy-upstream",
            MeshError::UpstreamConnect { .. } => "upstream-connect-failure",
            MeshError::Timeout(_) => "upstream-timeout",
            MeshError::FaultAbort { .. } => "fault-abort",
            MeshError::Overflow { .. } => "overflow",
            MeshError::RateLimited => "rate-limited",
            MeshError::RbacDenied => "rbac-denied",
            MeshError::JwtInvalid { .. } => "jwt-invalid",
            MeshError::RegistryOnly { .. } => "registry-only",
        }
    }

    /// The HTTP status Envoy answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            MeshError::NoRoute { .. } => StatusCode::NOT_FOUND,
            MeshError::NoAuthority => StatusCode::BAD_REQUEST,
            MeshError::NoHealthyUpstream { .. }
            | MeshError::UpstreamConnect { .. }
            | MeshError::Overflow { .. } => StatusCode::SERVICE_UNAVAILABLE,
            MeshError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            MeshError::FaultAbort { status, .. } => *status,
            MeshError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            MeshError::RbacDenied => StatusCode::FORBIDDEN,
            MeshError::JwtInvalid { failure, .. } => failure.status(),
            MeshError::RegistryOnly { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// Envoy's body text for the local reply.
    fn body(&self) -> &'static str {
        match self {
            MeshError::NoRoute { .. } | MeshError::NoAuthority | MeshError::RegistryOnly { .. } => {
                ""
            }
            MeshError::NoHealthyUpstream { .. } => "no healthy upstream",
            MeshError::UpstreamConnect { .. } => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
            }
            MeshError::Timeout(_) => "upstream request timeout",
            MeshError::FaultAbort { .. } => "fault filter abort",
            MeshError::Overflow { .. } => {
                "upstream connect error or disconnect/reset before headers. reset reason: overflow"
            }
            MeshError::RateLimited => "local_rate_limited",
            MeshError::RbacDenied => "RBAC: access denied",
            MeshError::JwtInvalid { failure, .. } => failure.as_str(),
        }
    }

    /// The body: Envoy's text and, when TLS origination failed, Envoy's `transport failure
    /// reason` (untrusted or expired certificate, secure naming, a TLS setting that cannot work).
    fn body_text(&self) -> String {
        match self {
            MeshError::UpstreamConnect { source, .. } => {
                match crate::endpoint::transport_failure_reason(source.as_ref()) {
                    Some(reason) => format!("{}, transport failure reason: {reason}", self.body()),
                    None => self.body().to_owned(),
                }
            }
            _ => self.body().to_owned(),
        }
    }

    /// The response a client sees. For a gRPC request (`content-type: application/grpc...`) it
    /// is a trailers-only gRPC response (HTTP 200) with the status mapped as Envoy maps it.
    pub fn to_response(&self, grpc: bool) -> Response<MeshBody> {
        let mut res = Response::new(if grpc {
            body::empty()
        } else {
            body::full(self.body_text())
        });
        if !grpc {
            *res.status_mut() = self.status();
        }
        let headers = res.headers_mut();
        headers.insert("x-mesh-error", HeaderValue::from_static(self.code()));
        if let MeshError::JwtInvalid { realm, .. } = self {
            // Envoy's jwt_authn challenge; a realm that is not a valid header value is dropped.
            let challenge = format!("Bearer realm=\"{realm}\", error=\"invalid_token\"");
            let value = HeaderValue::try_from(challenge)
                .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\""));
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        if grpc {
            let code = match self {
                MeshError::FaultAbort {
                    grpc_status: Some(code),
                    ..
                } => *code,
                _ => grpc_status_for(self.status()),
            };
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert("grpc-status", HeaderValue::from(code));
            if let Ok(msg) = HeaderValue::from_str(&percent_encode(&self.to_string())) {
                headers.insert("grpc-message", msg);
            }
        } else if !self.body().is_empty() {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        res
    }

    /// Finds a `MeshError` in a boxed error (it may be wrapped by tower's layers).
    pub fn find(err: &BoxError) -> Option<&MeshError> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
        while let Some(e) = cur {
            if let Some(m) = e.downcast_ref::<MeshError>() {
                return Some(m);
            }
            cur = e.source();
        }
        None
    }
}

/// Envoy's mapping of a local reply's HTTP status to a gRPC status.
pub fn grpc_status_for(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => 2,                      // UNKNOWN
    }
}

/// Whether a request is gRPC (its content type).
pub fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// gRPC's percent-encoding of `grpc-message`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Turns any error of the stack into a response: a [`MeshError`] as the table says, anything
/// else as a 503 connect failure (an error we did not classify is an upstream problem).
pub fn error_to_response(err: BoxError, grpc: bool) -> Response<MeshBody> {
    match MeshError::find(&err) {
        Some(e) => e.to_response(grpc),
        None => MeshError::UpstreamConnect {
            endpoint: "upstream".into(),
            source: err,
        }
        .to_response(grpc),
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn text(res: Response<MeshBody>) -> String {
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn errors_answer_as_envoy_does() {
        let cases = [
            (
                MeshError::NoRoute {
                    authority: "a".into(),
                },
                404,
                "no-route",
                "",
            ),
            (
                MeshError::NoHealthyUpstream {
                    destination: "a".into(),
                },
                503,
                "no-healthy-upstream",
                "no healthy upstream",
            ),
            (
                MeshError::Timeout(std::time::Duration::from_secs(1)),
                504,
                "upstream-timeout",
                "upstream request timeout",
            ),
            (
                MeshError::RateLimited,
                429,
                "rate-limited",
                "local_rate_limited",
            ),
            (
                MeshError::RbacDenied,
                403,
                "rbac-denied",
                "RBAC: access denied",
            ),
            (
                MeshError::Overflow {
                    destination: "a".into(),
                },
                503,
                "overflow",
                "upstream connect error or disconnect/reset before headers. reset reason: overflow",
            ),
            (
                MeshError::FaultAbort {
                    status: StatusCode::IM_A_TEAPOT,
                    grpc_status: None,
                },
                418,
                "fault-abort",
                "fault filter abort",
            ),
        ];
        for (err, status, code, body) in cases {
            let res = err.to_response(false);
            assert_eq!(res.status(), status, "{err}");
            assert_eq!(res.headers()["x-mesh-error"], code);
            assert_eq!(text(res).await, body);
        }
    }

    #[test]
    fn grpc_requests_get_grpc_status() {
        let res = MeshError::NoHealthyUpstream {
            destination: "a".into(),
        }
        .to_response(true);
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["grpc-status"], "14");
        assert_eq!(res.headers()["content-type"], "application/grpc");
        let res = MeshError::FaultAbort {
            status: StatusCode::OK,
            grpc_status: Some(4),
        }
        .to_response(true);
        assert_eq!(res.headers()["grpc-status"], "4");
        let res = MeshError::RbacDenied.to_response(true);
        assert_eq!(res.headers()["grpc-status"], "7");
    }

    #[tokio::test]
    async fn jwt_refusals_carry_envoys_challenge() {
        let err = MeshError::JwtInvalid {
            failure: crate::jwt::JwtFailure::Expired,
            realm: "http://httpbin.foo:8000/headers".into(),
        };
        let res = err.to_response(false);
        assert_eq!(res.status(), 401);
        assert_eq!(res.headers()["x-mesh-error"], "jwt-invalid");
        assert_eq!(
            res.headers()["www-authenticate"],
            r#"Bearer realm="http://httpbin.foo:8000/headers", error="invalid_token""#
        );
        assert_eq!(text(res).await, "Jwt is expired");
        let res = err.to_response(true);
        assert_eq!(res.headers()["grpc-status"], "16");
        assert!(res.headers().contains_key("www-authenticate"));
    }

    #[test]
    fn wrapped_errors_are_found() {
        let inner: BoxError = Box::new(MeshError::RateLimited);
        let res = error_to_response(inner, false);
        assert_eq!(res.status(), 429);
        let other: BoxError = "something else".into();
        assert_eq!(error_to_response(other, false).status(), 503);
    }
}

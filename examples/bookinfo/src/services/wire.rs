//! What the services share on the wire: JSON and text responses, the headers they pass on,
//! and a JSON call with a timeout.

use std::{future::Future, pin::Pin, time::Duration};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use mesh_tower::body::{self, BoxError, MeshBody};
use serde::{Serialize, de::DeserializeOwned};
use tower::Service;

use super::Client;

/// The request headers each Bookinfo service passes on to the services it calls, as Istio's do
/// (their `headers_to_propagate` lists, kept in sync across the four services): the tracing
/// headers, which let the proxies' spans join into one trace, and the application's
/// (`end-user`, cookies, credentials), which routing rules may match.
/// See Istio's [trace context propagation](https://istio.io/latest/docs/tasks/observability/distributed-tracing/overview/#trace-context-propagation).
pub const FORWARDED_HEADERS: &[&str] = &[
    // Access logs, consistent sampling.
    "x-request-id",
    // Lightstep.
    "x-ot-span-context",
    // Datadog.
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    // W3C Trace Context.
    "traceparent",
    "tracestate",
    // Cloud Trace.
    "x-cloud-trace-context",
    "grpc-trace-bin",
    // Zipkin B3, multi-header and single-header forms.
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    // SkyWalking.
    "sw8",
    // The application's.
    "end-user",
    "user-agent",
    "cookie",
    "authorization",
    "jwt",
];

/// The headers of `incoming` named in [`FORWARDED_HEADERS`], except those in `except`.
pub fn forward_headers(incoming: &HeaderMap, except: &[&str]) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in FORWARDED_HEADERS.iter().filter(|n| !except.contains(n)) {
        let name = HeaderName::from_static(name);
        for value in incoming.get_all(&name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Why a call to another service gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{url} answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url} did not answer within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("calling {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: BoxError,
    },
    #[error("{url} answered 200 with a body that is not the JSON expected: {reason}")]
    Body { url: String, reason: String },
}

impl CallError {
    /// The status the caller reports for this failure, as Istio's services do: the status
    /// received, else 500.
    pub fn status(&self) -> StatusCode {
        match self {
            CallError::Status { status, .. } => *status,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Bodies read from other services are Bookinfo's small JSON documents.
const MAX_BODY: usize = 1 << 20;

/// `GET url` with `headers` through `client` (taken by value: the mesh's stack is `Send` but
/// not `Sync`, so a future that holds it must own it); the JSON of a 200 answer. The whole exchange,
/// body included, must end within `timeout` (the client-side timeout each of Istio's services
/// sets: productpage 3 s, reviews 10 s or 2.5 s).
pub fn get_json<T: DeserializeOwned + Send + 'static>(
    client: Client,
    url: String,
    headers: HeaderMap,
    timeout: Duration,
) -> Pin<Box<dyn Future<Output = Result<T, CallError>> + Send + 'static>> {
    Box::pin(async move {
        let exchange = async {
            let mut req = Request::get(url.as_str())
                .body(body::empty())
                .map_err(|e| CallError::Transport {
                    url: url.clone(),
                    source: Box::new(e),
                })?;
            *req.headers_mut() = headers;
            let res = call(client, req)
                .await
                .map_err(|source| CallError::Transport {
                    url: url.clone(),
                    source,
                })?;
            if res.status() != StatusCode::OK {
                return Err(CallError::Status {
                    url: url.clone(),
                    status: res.status(),
                });
            }
            let bytes = read_body(res.into_body(), MAX_BODY)
                .await
                .map_err(|source| CallError::Transport {
                    url: url.clone(),
                    source,
                })?;
            serde_json::from_slice(&bytes).map_err(|e| CallError::Body {
                url: url.clone(),
                reason: e.to_string(),
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Timeout {
                url: url.clone(),
                after: timeout,
            }),
        }
    })
}

/// `client.oneshot(req)`, spelled out.
///
/// A future that holds tower's `Oneshot` (or http-body-util's `Limited`) over [`MeshBody`]
/// fails the compiler's `Send` check ("implementation of `Service` is not general enough"):
/// their types name the body's boxed error, whose object lifetime the check erases. Waiting
/// for readiness with `poll_fn` and then holding only the call's future keeps that type out.
pub(crate) async fn call(
    mut client: Client,
    req: Request<MeshBody>,
) -> Result<Response<MeshBody>, BoxError> {
    std::future::poll_fn(|cx| client.poll_ready(cx)).await?;
    client.call(req).await
}

/// Reads a body of at most `max` bytes (see [`call`] for why not `Limited`).
pub(crate) async fn read_body(mut body: MeshBody, max: usize) -> Result<Bytes, BoxError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if buf.len() + data.len() > max {
                return Err(format!("the body is larger than {max} bytes").into());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: &impl Serialize) -> Response<MeshBody> {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|e| {
        // Only a map with non-string keys fails to serialise; none of the models has one.
        format!("{{\"error\":\"serialising the response: {e}\"}}").into_bytes()
    });
    respond(status, "application/json", bytes)
}

/// `{"error": message}` with `status`.
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response<MeshBody> {
    json(status, &super::model::ErrorBody::new(message))
}

/// A response with `content_type` and `body`.
pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<MeshBody> {
    let mut res = Response::new(body::full(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// 404 for a path the service does not serve.
pub(crate) fn not_found() -> Response<MeshBody> {
    respond(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "Not Found\n",
    )
}

/// 405 with the methods the path allows.
pub(crate) fn method_not_allowed(allow: &'static str) -> Response<MeshBody> {
    let mut res = respond(
        StatusCode::METHOD_NOT_ALLOWED,
        "text/plain; charset=utf-8",
        "Method Not Allowed\n",
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}

/// The product id at the end of `path` after `prefix` (`/details/0` → `Some(Ok(0))`): `None`
/// when the path is not under `prefix`, `Some(Err(()))` when the id is not a number (Istio's
/// services answer 400 then).
pub(crate) fn product_id(path: &str, prefix: &str) -> Option<Result<i64, ()>> {
    let rest = path.strip_prefix(prefix)?;
    if rest.contains('/') {
        return None;
    }
    Some(rest.parse().map_err(|_| ()))
}

//! Access logs: one line per request, in Envoy's default text format as Istio configures it,
//! or in Istio's JSON format (`accessLogEncoding: JSON`)
//! ([Envoy Access Logs](https://istio.io/latest/docs/tasks/observability/logs/access-log/)).
//!
//! The telemetry layer writes them: it already follows each request from its start to the end
//! of its response body, and knows what a line needs (status, Envoy's response flags, body
//! bytes, the duration, the route and the endpoint picked), so a second layer would only
//! repeat that bookkeeping. Give an [`AccessLog`] to the stack builders
//! ([`MeshStack::access_log`](crate::MeshStack::access_log)) or to
//! [`TelemetryLayer::access_log`](crate::telemetry::TelemetryLayer::access_log).
//!
//! A TCP proxy gets a line per connection, when it closes, through the telemetry layer's
//! [`tcp_connection`](crate::telemetry::TelemetryLayer::tcp_connection) (Envoy's TCP proxy
//! logs in the same format, `-` for the HTTP fields).
//!
//! Lines are written by a thread of their own through a buffer: a request hands its line over
//! a bounded channel ([`QUEUE_LINES`]) and never waits for the disk. When the channel is full
//! the line is dropped and counted ([`AccessLog::dropped`], and the
//! `mesh_access_log_dropped_total` counter), as Envoy's buffered log file does when it cannot
//! keep up, rather than queueing without bound or slowing requests down.
//!
//! ```
//! use mesh_tower::access_log::{AccessLog, LogFormat};
//! # use std::{io::Write, sync::{Arc, Mutex}};
//! # #[derive(Clone, Default)]
//! # struct Buf(Arc<Mutex<Vec<u8>>>);
//! # impl Write for Buf {
//! #     fn write(&mut self, b: &[u8]) -> std::io::Result<usize> { self.0.lock().unwrap().write(b) }
//! #     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! # let mesh = mesh_tower::MeshHandle::new(mesh_core::CompiledMesh::default());
//! # let buf = Buf::default();
//! // AccessLog::stdout(LogFormat::Text) as `mesh run --access-log -`.
//! let log = AccessLog::to_writer(buf.clone(), LogFormat::Json);
//! let app = tower::service_fn(|_req: http::Request<mesh_tower::body::MeshBody>| async {
//!     Ok::<_, mesh_tower::body::BoxError>(http::Response::new(mesh_tower::body::full("ok")))
//! });
//! let server = mesh_tower::MeshStack::inbound(&mesh, app).access_log(log.clone()).build();
//! # use tower::ServiceExt;
//! # use http_body_util::{BodyExt, Empty};
//! # let req = http::Request::get("/ratings/0").body(Empty::<bytes::Bytes>::new()).unwrap();
//! # server.oneshot(req).await.unwrap().into_body().collect().await.unwrap();
//! log.flush();
//! # let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
//! # assert!(text.contains(r#""path":"/ratings/0""#), "{text}");
//! # }
//! ```

mod format;
#[cfg(test)]
mod tests;
mod writer;

use std::{
    borrow::Cow,
    fs::OpenOptions,
    io::{self, Write},
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::SystemTime,
};

use http::{HeaderValue, Method, Request, Version};

use crate::{
    authz::ConnectionInfo,
    route::{RouteCtx, Target},
    telemetry::ResponseFlags,
};

pub use writer::QUEUE_LINES;

/// Which format lines are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Envoy's default format, as Istio sets it (`accessLogEncoding: TEXT`).
    Text,
    /// One JSON object per line with Istio's keys (`accessLogEncoding: JSON`).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" | "TEXT" => Ok(LogFormat::Text),
            "json" | "JSON" => Ok(LogFormat::Json),
            _ => Err(format!(
                "`{s}` is not an access log format: use text or json"
            )),
        }
    }
}

/// Where access log lines go, and in which format. Clones share the writer.
#[derive(Debug, Clone)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    format: LogFormat,
    writer: writer::Writer,
}

impl AccessLog {
    /// Lines on standard output (Istio's `accessLogFile: /dev/stdout`).
    pub fn stdout(format: LogFormat) -> Self {
        Self::to_writer(io::stdout(), format)
    }

    /// Lines appended to `path`, created if missing.
    pub fn file(path: &Path, format: LogFormat) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "access log: cannot open {} for appending: {e}; check that its folder \
                         exists and is writable",
                        path.display()
                    ),
                )
            })?;
        Ok(Self::to_writer(file, format))
    }

    /// Lines written to `out` (buffered, from a thread of its own).
    pub fn to_writer(out: impl Write + Send + 'static, format: LogFormat) -> Self {
        AccessLog {
            inner: Arc::new(Inner {
                format,
                writer: writer::Writer::spawn(Box::new(out)),
            }),
        }
    }

    pub fn format(&self) -> LogFormat {
        self.inner.format
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.inner.writer.dropped()
    }

    /// Blocks until every line logged so far is written and flushed (before exiting, or in
    /// tests). Call it off the async runtime's threads when requests are in flight.
    pub fn flush(&self) {
        self.inner.writer.flush();
    }

    pub(crate) fn log(&self, record: &Record<'_>) {
        let line = match self.inner.format {
            LogFormat::Text => format::text(record),
            LogFormat::Json => format::json(record),
        };
        self.inner.writer.send(line);
    }

    pub(crate) fn log_tcp(&self, record: &TcpRecord<'_>) {
        let line = match self.inner.format {
            LogFormat::Text => format::tcp_text(record),
            LogFormat::Json => format::tcp_json(record),
        };
        self.inner.writer.send(line);
    }
}

/// A proxied TCP connection, when it ends: its line has the request's fields unknown.
#[derive(Debug)]
pub(crate) struct TcpRecord<'a> {
    pub start: SystemTime,
    pub flags: ResponseFlags,
    /// From the client.
    pub bytes_received: u64,
    /// To the client.
    pub bytes_sent: u64,
    pub duration_ms: u64,
    pub upstream_host: Option<&'a str>,
    pub upstream_cluster: Option<&'a str>,
    pub downstream_local: Option<SocketAddr>,
    pub downstream_remote: Option<SocketAddr>,
    pub server_name: Option<&'a str>,
}

/// What a line needs from the request, taken when it starts.
#[derive(Debug)]
pub(crate) struct RequestInfo {
    pub start: SystemTime,
    pub method: Method,
    /// `x-envoy-original-path`, else the path and query.
    pub path: String,
    pub version: Version,
    pub forwarded_for: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    pub request_id: Option<HeaderValue>,
    pub authority: Option<String>,
    pub downstream_local: Option<SocketAddr>,
    pub downstream_remote: Option<SocketAddr>,
    pub server_name: Option<String>,
}

impl RequestInfo {
    pub(crate) fn capture<B>(req: &Request<B>) -> Box<Self> {
        let headers = req.headers();
        let path = match headers
            .get("x-envoy-original-path")
            .and_then(|v| v.to_str().ok())
        {
            Some(p) => p.to_owned(),
            None => req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()),
        };
        let authority = match req.uri().authority() {
            Some(a) => Some(a.as_str().to_owned()),
            None => headers
                .get(http::header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned()),
        };
        let conn = req.extensions().get::<ConnectionInfo>();
        Box::new(RequestInfo {
            start: SystemTime::now(),
            method: req.method().clone(),
            path,
            version: req.version(),
            forwarded_for: headers.get("x-forwarded-for").cloned(),
            user_agent: headers.get(http::header::USER_AGENT).cloned(),
            request_id: headers.get("x-request-id").cloned(),
            authority,
            downstream_local: conn.and_then(|c| c.local_addr),
            downstream_remote: conn.and_then(|c| c.peer_addr),
            server_name: conn.and_then(|c| c.sni.clone()),
        })
    }
}

/// One finished request, as a line shows it.
#[derive(Debug)]
pub(crate) struct Record<'a> {
    pub request: &'a RequestInfo,
    /// `0` when no response was sent.
    pub code: u16,
    pub flags: ResponseFlags,
    /// `%RESPONSE_CODE_DETAILS%`.
    pub details: &'static str,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: u64,
    pub upstream_host: Option<&'a str>,
    pub upstream_cluster: Option<&'a str>,
    pub route_name: Option<&'a str>,
}

/// Istio's name of the cluster a routed request goes to: `outbound|PORT|SUBSET|HOST`, or
/// `PassthroughCluster` for a host outside the registry.
pub(crate) fn upstream_cluster(ctx: &RouteCtx) -> Cow<'static, str> {
    match &ctx.target {
        Target::Destination(d) => Cow::Owned(format!(
            "outbound|{}|{}|{}",
            d.port.unwrap_or(ctx.port),
            d.subset.as_deref().unwrap_or(""),
            d.host
        )),
        Target::Passthrough { .. } => Cow::Borrowed("PassthroughCluster"),
    }
}

/// Istio's name of the route that matched: the VirtualService route's `name` (`-` without
/// one), `default` for a service without a VirtualService, `allow_any` for passthrough.
pub(crate) fn route_name(ctx: &RouteCtx) -> Cow<'static, str> {
    if matches!(ctx.target, Target::Passthrough { .. }) {
        return Cow::Borrowed("allow_any");
    }
    match ctx.route() {
        Some(r) if !r.name.is_empty() => Cow::Owned(r.name.clone()),
        Some(_) => Cow::Borrowed("-"),
        None => Cow::Borrowed("default"),
    }
}

/// Envoy's `%RESPONSE_CODE_DETAILS%` for a response, from its `x-mesh-error` code (a local
/// reply) or its absence (`via_upstream`).
pub(crate) fn response_code_details(mesh_error: Option<&str>) -> &'static str {
    match mesh_error {
        None => "via_upstream",
        Some("no-route") => "route_not_found",
        Some("no-healthy-upstream") => "no_healthy_upstream",
        Some("upstream-connect-failure") => {
            "upstream_reset_before_response_started{connection_failure}"
        }
        Some("upstream-timeout") => "response_timeout",
        Some("fault-abort") => "fault_filter_abort",
        Some("overflow") => "upstream_reset_before_response_started{overflow}",
        Some("rate-limited") => "local_rate_limited",
        Some("rbac-denied") => "rbac_access_denied_matched_policy[none]",
        Some("jwt-invalid") => "jwt_authn_access_denied{Jwt_verification_fails}",
        Some("registry-only") => "direct_response",
        Some(_) => "local_reply",
    }
}

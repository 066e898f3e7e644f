//! The two line formats.
//!
//! Text is Envoy's default as Istio sets it (`EnvoyTextLogFormat`):
//!
//! ```text
//! [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
//! %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
//! "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
//! %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
//! "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW%
//! %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%
//! %REQUESTED_SERVER_NAME% %ROUTE_NAME%
//! ```
//!
//! (one line), `-` for what is unknown. A TCP connection's line has the same fields, `-`
//! for the request's (`"- - -" 0`), as Envoy's TCP proxy writes it. JSON has Istio's keys (`EnvoyJSONLogFormatIstio`),
//! numbers for the code, bytes and duration, and `null` for what is unknown. Neither knows
//! the upstream connection's local address, the transport failure reason or the connection
//! termination details, nor Envoy's `x-envoy-upstream-service-time`: they are always unknown.

use std::{fmt::Write as _, net::SocketAddr};

use http::{HeaderValue, Version};

use super::{Record, TcpRecord};

/// `2020-11-25T21:26:18.409Z`: UTC, milliseconds, as Envoy's `%START_TIME%`.
pub(super) fn start_time(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// A header value as text, control characters replaced (a value cannot forge a second line).
fn header(v: &Option<HeaderValue>) -> Option<String> {
    v.as_ref()
        .map(|v| clean(&String::from_utf8_lossy(v.as_bytes())))
}

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn addr(a: Option<SocketAddr>) -> Option<String> {
    a.map(|a| a.to_string())
}

/// The values of a line, in the text format's order; `None` is unknown.
struct Fields {
    start_time: String,
    /// The three are unknown for a TCP connection.
    method: Option<String>,
    path: Option<String>,
    protocol: Option<&'static str>,
    code: u16,
    flags: String,
    details: &'static str,
    bytes_received: u64,
    bytes_sent: u64,
    duration: u64,
    forwarded_for: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    authority: Option<String>,
    upstream_host: Option<String>,
    upstream_cluster: Option<String>,
    downstream_local: Option<String>,
    downstream_remote: Option<String>,
    server_name: Option<String>,
    route_name: Option<String>,
}

impl Fields {
    fn of(r: &Record<'_>) -> Self {
        let req = r.request;
        Fields {
            start_time: start_time(req.start),
            method: Some(req.method.as_str().to_owned()),
            path: Some(clean(&req.path)),
            protocol: Some(protocol(req.version)),
            code: r.code,
            flags: r.flags.to_string(),
            details: r.details,
            bytes_received: r.bytes_received,
            bytes_sent: r.bytes_sent,
            duration: r.duration_ms,
            forwarded_for: header(&req.forwarded_for),
            user_agent: header(&req.user_agent),
            request_id: header(&req.request_id),
            authority: req.authority.as_deref().map(clean),
            upstream_host: r.upstream_host.map(clean),
            upstream_cluster: r.upstream_cluster.map(clean),
            downstream_local: addr(req.downstream_local),
            downstream_remote: addr(req.downstream_remote),
            server_name: req.server_name.as_deref().map(clean),
            route_name: r.route_name.map(clean),
        }
    }

    /// A TCP connection's: Envoy's TCP proxy logs it in the same format, `-` (JSON `null`)
    /// for what only HTTP has, and code `0`.
    fn of_tcp(r: &TcpRecord<'_>) -> Self {
        Fields {
            start_time: start_time(r.start),
            method: None,
            path: None,
            protocol: None,
            code: 0,
            flags: r.flags.to_string(),
            details: "-",
            bytes_received: r.bytes_received,
            bytes_sent: r.bytes_sent,
            duration: r.duration_ms,
            forwarded_for: None,
            user_agent: None,
            request_id: None,
            authority: None,
            upstream_host: r.upstream_host.map(clean),
            upstream_cluster: r.upstream_cluster.map(clean),
            downstream_local: addr(r.downstream_local),
            downstream_remote: addr(r.downstream_remote),
            server_name: r.server_name.map(clean),
            route_name: None,
        }
    }
}

/// Envoy's default text line (with its newline).
pub(super) fn text(r: &Record<'_>) -> String {
    render_text(&Fields::of(r))
}

/// A TCP connection's text line.
pub(super) fn tcp_text(r: &TcpRecord<'_>) -> String {
    render_text(&Fields::of_tcp(r))
}

fn render_text(f: &Fields) -> String {
    let d = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    format!(
        "[{}] \"{} {} {}\" {} {} {} - \"-\" {} {} {} - \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} - {} {} {} {}\n",
        f.start_time,
        d(&f.method),
        d(&f.path),
        f.protocol.unwrap_or("-"),
        f.code,
        f.flags,
        f.details,
        f.bytes_received,
        f.bytes_sent,
        f.duration,
        d(&f.forwarded_for),
        d(&f.user_agent),
        d(&f.request_id),
        d(&f.authority),
        d(&f.upstream_host),
        d(&f.upstream_cluster),
        d(&f.downstream_local),
        d(&f.downstream_remote),
        d(&f.server_name),
        d(&f.route_name),
    )
}

/// A JSON value of a line.
enum Json<'a> {
    Str(&'a str),
    Num(u64),
    Null,
}

fn opt(v: &Option<String>) -> Json<'_> {
    v.as_deref().map_or(Json::Null, Json::Str)
}

/// A JSON object with Istio's keys, in Istio's order (with its newline).
pub(super) fn json(r: &Record<'_>) -> String {
    render_json(&Fields::of(r))
}

/// A TCP connection's JSON line.
pub(super) fn tcp_json(r: &TcpRecord<'_>) -> String {
    render_json(&Fields::of_tcp(r))
}

fn render_json(f: &Fields) -> String {
    let flags = f.flags.as_str();
    let fields = [
        ("start_time", Json::Str(&f.start_time)),
        ("route_name", opt(&f.route_name)),
        ("method", opt(&f.method)),
        ("path", opt(&f.path)),
        ("protocol", f.protocol.map_or(Json::Null, Json::Str)),
        ("response_code", Json::Num(f.code.into())),
        ("response_flags", Json::Str(flags)),
        ("response_code_details", Json::Str(f.details)),
        ("connection_termination_details", Json::Null),
        ("bytes_received", Json::Num(f.bytes_received)),
        ("bytes_sent", Json::Num(f.bytes_sent)),
        ("duration", Json::Num(f.duration)),
        ("upstream_service_time", Json::Null),
        ("x_forwarded_for", opt(&f.forwarded_for)),
        ("user_agent", opt(&f.user_agent)),
        ("request_id", opt(&f.request_id)),
        ("authority", opt(&f.authority)),
        ("upstream_host", opt(&f.upstream_host)),
        ("upstream_cluster", opt(&f.upstream_cluster)),
        ("upstream_local_address", Json::Null),
        ("downstream_local_address", opt(&f.downstream_local)),
        ("downstream_remote_address", opt(&f.downstream_remote)),
        ("requested_server_name", opt(&f.server_name)),
        ("upstream_transport_failure_reason", Json::Null),
    ];
    let mut out = String::with_capacity(640);
    out.push('{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "\"{key}\":");
        match value {
            Json::Str(s) => out.push_str(&serde_json::to_string(s).expect("a string serializes")),
            Json::Num(n) => {
                let _ = write!(out, "{n}");
            }
            Json::Null => out.push_str("null"),
        }
    }
    out.push_str("}\n");
    out
}

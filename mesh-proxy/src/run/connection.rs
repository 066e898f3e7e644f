//! One downstream HTTP connection of any listener (outbound, inbound, gateway HTTP and HTTPS):
//! HTTP/1.1 or HTTP/2 under Envoy's default limits, upgrades, the idle timeout, and a graceful
//! close on stop.
//!
//! The limits are Envoy's defaults, which Istio keeps:
//! - [`MAX_REQUEST_HEADERS_BYTES`] (`max_request_headers_kb`, 60 KiB) of request headers,
//!   counted as Envoy counts its header map: names and values, the method and the path (the
//!   request line has no limit of its own in Envoy: the URL counts toward the headers). Over it
//!   the answer is `431 Request Header Fields Too Large` (HTTP/1.1 then closes the connection).
//!   The same size bounds what is buffered before that check: hyper's HTTP/1.1 read buffer (a
//!   head still incomplete when it is full gets hyper's own 431) and the HTTP/2 header list
//!   (`SETTINGS_MAX_HEADER_LIST_SIZE`).
//! - [`MAX_REQUEST_HEADERS`] (`max_headers_count`, 100) headers per request, else 431.
//! - The idle timeout (`--idle-timeout`, default [`DEFAULT_IDLE_TIMEOUT`]: the HTTP connection
//!   manager's `idle_timeout`, 1 h): a connection with no request in flight for that long is
//!   closed (HTTP/2 with a GOAWAY). The clock runs from the end of the last response, and also
//!   while a request head is still arriving, so it bounds a slow client's head as well (hyper's
//!   own 30 s header timeout is off: it would close idle keep-alive connections after 30 s).
//!   `0` turns it off, as in Envoy. There are no HTTP/2 keep-alive pings, as Envoy sends none by
//!   default.
//! - Connections per listener: see [`Limits::max_connections`]; the accept loops hold a slot per
//!   connection and stop accepting while none is free, so extra clients wait in the kernel's
//!   accept backlog, not in a queue of ours.
//!
//! Upstream connections have their own idle timeouts: DestinationRule
//! `connectionPool.http.idleTimeout` (default 1 h) outbound, hyper's pool default (90 s) to the
//! app.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use mesh_tower::body::{BoxError, MeshBody};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{OwnedSemaphorePermit, watch},
};

use super::upgrade;

/// Envoy's `max_request_headers_kb` default: 60 KiB of request line and headers.
pub(crate) const MAX_REQUEST_HEADERS_BYTES: usize = 60 * 1024;
/// Envoy's `common_http_protocol_options.max_headers_count` default.
pub(crate) const MAX_REQUEST_HEADERS: usize = 100;
/// Envoy's `common_http_protocol_options.idle_timeout` default, which Istio keeps.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Connections one listener serves at once by default (the gateway listeners' cap too).
pub(crate) const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;

/// The connection limits of this process (`mesh run`'s flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// `--idle-timeout`: close a connection with no request in flight for this long (zero:
    /// never).
    pub(crate) idle_timeout: Duration,
    /// `--max-connections`: connections one listener serves at once (an upgraded connection
    /// counts until it closes). Envoy's listeners have no cap by default (its overload manager
    /// sets a global one); an unbounded accept loop is a file-descriptor exhaustion waiting to
    /// happen, so this one has a generous cap.
    pub(crate) max_connections: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

static LIMITS: OnceLock<Limits> = OnceLock::new();

impl Limits {
    /// Makes these the limits of every listener of the process (once, at start).
    pub(crate) fn install(self) {
        let _ = LIMITS.set(self);
    }

    /// The limits [`install`](Self::install)ed, else the defaults.
    pub(crate) fn current() -> Limits {
        LIMITS.get().copied().unwrap_or_default()
    }
}

/// A listener's slot held by a connection, and by the tunnel of an upgraded one.
pub(crate) type Slot = Option<Arc<OwnedSemaphorePermit>>;

/// Resolves once `stop` is (or already was) set, or its sender is gone.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves HTTP/1.1 and HTTP/2 on `io`, each request answered by `handler`, until the client
/// closes, the connection has been idle for the idle timeout, or `stop` is set: then requests
/// under way finish (HTTP/1.1 closes after its response, HTTP/2 sends GOAWAY) and the
/// connection closes. `slot` goes to the tunnel of an upgraded connection.
pub(crate) async fn serve<I, H, F>(io: I, handler: H, slot: Slot, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + 'static,
    F: Future<Output = Response<MeshBody>> + Send + 'static,
{
    let limits = Limits::current();
    let activity = Arc::new(Activity::new());
    let idle = activity.clone();
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let busy = Busy::begin(&activity);
        let too_large = header_bytes(&req) > MAX_REQUEST_HEADERS_BYTES;
        let http1 = req.version() < http::Version::HTTP_2;
        let upgrade = upgrade::take(&mut req).filter(|_| !too_large);
        let answer = (!too_large).then(|| handler(req));
        let slot = slot.clone();
        async move {
            let res = match answer {
                None => headers_too_large(http1),
                Some(answer) => {
                    let res = answer.await;
                    match upgrade {
                        Some(upgrade) => upgrade.finish(res, slot),
                        None => res,
                    }
                }
            };
            // In flight until hyper is done with the response body.
            Ok::<_, Infallible>(res.map(|body| BusyBody {
                inner: body,
                _busy: busy,
            }))
        }
    });
    let builder = builder();
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = stopped(&mut stop) => {}
        () = idle_for(&idle, limits.idle_timeout) => {
            tracing::debug!(
                target: "mesh::listener",
                "closing a connection idle for {:?}", limits.idle_timeout
            );
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// The size of a request's headers as Envoy's `max_request_headers_kb` sees it: every name and
/// value, plus `:method` and `:path` (the request line of HTTP/1.1).
fn header_bytes<B>(req: &Request<B>) -> usize {
    let path = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    ":method".len() + req.method().as_str().len() + ":path".len() + path + headers
}

/// Envoy's answer to headers over the limit. HTTP/1.1 closes the connection after it, as
/// Envoy's codec error does.
fn headers_too_large(http1: bool) -> Response<MeshBody> {
    let mut res = Response::new(mesh_tower::body::empty());
    *res.status_mut() = http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    if http1 {
        res.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    res
}

/// hyper's server with Envoy's default limits.
fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(MAX_REQUEST_HEADERS_BYTES)
        .max_headers(MAX_REQUEST_HEADERS)
        // The idle clock covers heads too; hyper's header timer would also run between
        // keep-alive requests and close idle connections after 30 s.
        .header_read_timeout(None);
    builder
        .http2()
        .max_header_list_size(MAX_REQUEST_HEADERS_BYTES as u32);
    builder
}

/// What the idle clock of one connection reads: requests in flight, and when the last one
/// ended. Plain atomics, so that a request costs no wake-up of the connection's task (a
/// channel notified its watcher twice per request).
#[derive(Debug)]
struct Activity {
    /// When the connection was accepted; `last_end` counts from it.
    start: tokio::time::Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `start` to the end of the last request (0 before the first).
    last_end: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: tokio::time::Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_end: AtomicU64::new(0),
        }
    }

    /// When the connection turns idle for `timeout` if nothing else happens: `None` while a
    /// request is in flight.
    fn idle_at(&self, timeout: Duration) -> Option<tokio::time::Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_end.load(Ordering::Acquire));
        Some(self.start + last + timeout)
    }
}

/// Resolves once no request has been in flight for `timeout` (never for a zero timeout). It
/// sleeps until the connection could be idle and looks again, so requests never wake it.
async fn idle_for(activity: &Activity, timeout: Duration) {
    if timeout.is_zero() {
        return std::future::pending().await;
    }
    loop {
        let now = tokio::time::Instant::now();
        match activity.idle_at(timeout) {
            Some(at) if at <= now => return,
            Some(at) => tokio::time::sleep_until(at).await,
            // Busy: a request that ends now leaves the connection idle `timeout` later.
            None => tokio::time::sleep_until(now + timeout).await,
        }
    }
}

/// One request in flight on a connection, until dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: &Arc<Activity>) -> Busy {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        let ended = activity.start.elapsed().as_millis() as u64;
        activity.last_end.fetch_max(ended, Ordering::AcqRel);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight.
struct BusyBody {
    inner: MeshBody,
    _busy: Busy,
}

impl Body for BusyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes_count_names_values_method_and_path() {
        let req = Request::get("http://h/p?q=1")
            .header("ab", "cde")
            .header("x", "")
            .body(())
            .unwrap();
        // ":method" + "GET" + ":path" + "/p?q=1" + "ab" + "cde" + "x".
        assert_eq!(header_bytes(&req), 7 + 3 + 5 + 6 + 2 + 3 + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_clock_runs_only_while_nothing_is_in_flight() {
        let activity = Arc::new(Activity::new());
        let timeout = Duration::from_secs(10);
        let start = tokio::time::Instant::now();
        let busy = Busy::begin(&activity);
        let watched = activity.clone();
        let idle = tokio::spawn(async move {
            idle_for(&watched, timeout).await;
            tokio::time::Instant::now()
        });
        // A request in flight for 30 s: no idle time counted.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!idle.is_finished());
        drop(busy);
        // Idle from here: 10 s later it resolves.
        let at = idle.await.unwrap();
        assert_eq!(at - start, Duration::from_secs(40));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_restarts_the_clock_and_zero_means_never() {
        let activity = Arc::new(Activity::new());
        let start = tokio::time::Instant::now();
        let watched = activity.clone();
        let idle = tokio::spawn(async move {
            idle_for(&watched, Duration::from_secs(10)).await;
            tokio::time::Instant::now()
        });
        tokio::time::sleep(Duration::from_secs(6)).await;
        drop(Busy::begin(&activity)); // a quick request at 6 s
        assert_eq!(idle.await.unwrap() - start, Duration::from_secs(16));

        let fresh = Activity::new();
        let never = tokio::time::timeout(
            Duration::from_secs(365 * 24 * 3600),
            idle_for(&fresh, Duration::ZERO),
        );
        assert!(never.await.is_err());
    }
}

//! The client of a standalone service: every call goes to one HTTP proxy (its sidecar's
//! outbound listener), as an application configured with `HTTP_PROXY=http://ADDR` sends it.
//!
//! The request keeps its own URL (`http://reviews:9080/reviews/0`) and is written in absolute
//! form (`GET http://reviews:9080/reviews/0 HTTP/1.1`, `Host: reviews:9080`), which is what
//! HTTP/1.1 clients send to a forward proxy ([RFC 9112 §3.2.2]); the proxy routes by that
//! authority. hyper-util's client writes the absolute form when the connection says it is
//! [proxied](Connected::proxy), which is all [`Proxied`] adds to a TCP stream.
//!
//! [RFC 9112 §3.2.2]: https://www.rfc-editor.org/rfc/rfc9112#section-3.2.2

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::Uri;
use hyper_util::{
    client::legacy::{
        Client as HyperClient,
        connect::{Connected, Connection},
    },
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use mesh_tower::body::{self, MeshBody};
use tokio::net::TcpStream;
use tower::{Service, ServiceExt};

use crate::services::{self, Client};

/// Where the proxy is, from `--upstream-proxy`: `http://HOST:PORT` or `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamProxy {
    authority: Arc<str>,
}

impl UpstreamProxy {
    /// Parses `http://HOST:PORT` (a path of `/` is allowed, as `HTTP_PROXY` values often end
    /// with one) or `HOST:PORT`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let with_scheme = if s.contains("://") {
            s.to_owned()
        } else {
            format!("http://{s}")
        };
        let uri: Uri = with_scheme
            .parse()
            .map_err(|e| format!("`{s}` is not a proxy URL ({e}); write http://HOST:PORT"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "`{s}`: the proxy must be plain http:// (the sidecar's outbound listener)"
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "`{s}`: a proxy URL has no path; write http://HOST:PORT"
            ));
        }
        match uri.authority() {
            Some(a) if a.port_u16().is_some() && !a.as_str().contains('@') => Ok(UpstreamProxy {
                authority: a.as_str().into(),
            }),
            _ => Err(format!(
                "`{s}` has no port; write http://HOST:PORT (the sidecar's --outbound address)"
            )),
        }
    }

    /// `HOST:PORT`.
    pub fn authority(&self) -> &str {
        &self.authority
    }
}

impl std::fmt::Display for UpstreamProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}", self.authority)
    }
}

/// A plain HTTP/1.1 client whose every request goes to `proxy`, as a [`Client`] for the
/// services.
pub fn client(proxy: &UpstreamProxy) -> Client {
    let http = HyperClient::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build::<_, MeshBody>(ToProxy {
            authority: proxy.authority.clone(),
        });
    services::client(http.map_response(|res| res.map(body::boxed)))
}

/// A connector that opens a TCP connection to the proxy whatever the destination.
#[derive(Debug, Clone)]
struct ToProxy {
    authority: Arc<str>,
}

impl Service<Uri> for ToProxy {
    type Response = Proxied;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Proxied>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let authority = self.authority.clone();
        Box::pin(async move {
            if dst.scheme_str() != Some("http") {
                // A forward proxy takes https:// only through CONNECT, which this client does
                // not do; the Bookinfo services call plain http:// URLs only.
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("{dst}: only http:// URLs go through the upstream proxy"),
                ));
            }
            let tcp = TcpStream::connect(&*authority).await.map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "connecting to the upstream proxy {authority} for {dst}: {e} \
                         (is its sidecar's outbound listener running?)"
                    ),
                )
            })?;
            tcp.set_nodelay(true)?;
            Ok(Proxied(TokioIo::new(tcp)))
        })
    }
}

/// A connection to the proxy: requests on it are written in absolute form.
#[derive(Debug)]
struct Proxied(TokioIo<TcpStream>);

impl Connection for Proxied {
    fn connected(&self) -> Connected {
        self.0.connected().proxy(true)
    }
}

impl hyper::rt::Read for Proxied {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Proxied {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

//! The connector that originates TLS: another connector's connection, then (for a TLS
//! transport) a rustls handshake over it.

use std::{
    fmt,
    io::{self, IoSlice},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::{
    client::legacy::connect::{Connected, Connection},
    rt::TokioIo,
};
use rustls::{CertificateError, ClientConfig};
use rustls_pki_types::ServerName;
use tokio_rustls::{TlsConnector, client::TlsStream};
use tower::Service;

use crate::body::BoxError;

/// Connects with `inner`, then, when given a TLS config, makes a TLS client handshake over the
/// connection. One `Originate` serves one pooled client, so one TLS setting.
#[derive(Clone)]
pub struct Originate<C> {
    inner: C,
    tls: Option<TlsSetup>,
}

#[derive(Clone)]
struct TlsSetup {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl<C: fmt::Debug> fmt::Debug for Originate<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Originate")
            .field("inner", &self.inner)
            .field("sni", &self.tls.as_ref().map(|t| t.server_name.to_str()))
            .finish()
    }
}

impl<C> Originate<C> {
    /// Plain connections from `inner`.
    pub fn plain(inner: C) -> Self {
        Originate { inner, tls: None }
    }

    /// TLS over `inner`'s connections, sending `server_name` (SNI) and verifying the server as
    /// `config` says.
    pub fn tls(inner: C, config: Arc<ClientConfig>, server_name: ServerName<'static>) -> Self {
        Originate {
            inner,
            tls: Some(TlsSetup {
                connector: TlsConnector::from(config),
                server_name,
            }),
        }
    }
}

/// A TLS handshake with an endpoint failed: its certificate is not trusted, has expired, names
/// another workload than the destination's (secure naming), or the server refused ours.
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake with {endpoint} (SNI `{sni}`): {}", describe(source))]
pub struct TlsHandshakeError {
    /// `host:port` of the endpoint.
    pub endpoint: String,
    pub sni: String,
    /// rustls' reason (a [`rustls::Error`]), or the I/O error that ended the handshake.
    #[source]
    pub source: io::Error,
}

impl TlsHandshakeError {
    /// rustls' reason for the failure, when it was a TLS error (not a broken connection).
    pub fn rustls_error(&self) -> Option<&rustls::Error> {
        self.source
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
    }
}

/// rustls' error, with the reason of a custom verifier (secure naming, SAN mismatch) spelled
/// out instead of rustls' `Debug` of it.
fn describe(e: &io::Error) -> String {
    match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) => {
            format!("invalid peer certificate: {}", other.0)
        }
        Some(r) => r.to_string(),
        None => e.to_string(),
    }
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<C> Service<Uri> for Originate<C>
where
    C: Service<Uri> + Send + 'static,
    C::Response: Read + Write + Connection + Unpin + Send + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
{
    type Response = UpstreamStream<C::Response>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let endpoint = dst.authority().map(|a| a.to_string()).unwrap_or_default();
        let connecting = self.inner.call(dst);
        let tls = self.tls.clone();
        Box::pin(async move {
            let io = connecting.await.map_err(Into::into)?;
            let Some(tls) = tls else {
                return Ok(UpstreamStream::Plain(io));
            };
            let sni = tls.server_name.to_str().into_owned();
            match tls
                .connector
                .connect(tls.server_name, TokioIo::new(io))
                .await
            {
                Ok(stream) => Ok(UpstreamStream::Tls(Box::new(TokioIo::new(stream)))),
                Err(source) => {
                    let err = TlsHandshakeError {
                        endpoint,
                        sni,
                        source,
                    };
                    tracing::debug!(target: "mesh::tls", "{err}");
                    Err(err.into())
                }
            }
        })
    }
}

/// A connection to an endpoint: plain, or TLS over it.
pub enum UpstreamStream<T> {
    Plain(T),
    Tls(Box<TokioIo<TlsStream<TokioIo<T>>>>),
}

impl<T> fmt::Debug for UpstreamStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamStream::Plain(_) => f.write_str("UpstreamStream::Plain"),
            UpstreamStream::Tls(s) => f
                .debug_struct("UpstreamStream::Tls")
                .field("alpn", &s.inner().get_ref().1.alpn_protocol())
                .finish(),
        }
    }
}

impl<T: Connection + Read + Write + Unpin> Connection for UpstreamStream<T> {
    /// The inner connection's info; for TLS, HTTP/2 when ALPN chose `h2` (hyper then speaks
    /// HTTP/2 on it).
    fn connected(&self) -> Connected {
        match self {
            UpstreamStream::Plain(io) => io.connected(),
            UpstreamStream::Tls(s) => {
                let (io, session) = s.inner().get_ref();
                let connected = io.inner().connected();
                if session.alpn_protocol() == Some(b"h2") {
                    connected.negotiated_h2()
                } else {
                    connected
                }
            }
        }
    }
}

impl<T: Read + Write + Unpin> Read for UpstreamStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(io) => Pin::new(io).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl<T: Read + Write + Unpin> Write for UpstreamStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(io) => Pin::new(io).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(io) => Pin::new(io).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(io) => Pin::new(io).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(io) => io.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }
}

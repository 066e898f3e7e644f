//! An accepted inbound connection: plain text or mTLS, one type for the HTTP server.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use mesh_core::Identity;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::server::TlsStream;

/// What an mTLS connection proves, as a request extension of its own next to
/// [`ConnectionInfo`](crate::authz::ConnectionInfo) (which stays as it was, so code that builds
/// one keeps compiling). Present only on requests that arrived over mTLS: its absence means
/// plain text. The [`XfccLayer`](super::XfccLayer) writes `x-forwarded-client-cert` from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutualTls {
    /// This workload's identity, as its certificate said when the connection was accepted
    /// (XFCC `By`).
    pub local_identity: Identity,
    /// The peer's identity, from its certificate's URI SAN (XFCC `URI`).
    pub peer_identity: Identity,
    /// SHA-256 of the peer's leaf certificate, DER (XFCC `Hash`).
    pub peer_certificate_sha256: [u8; 32],
}

impl MutualTls {
    /// The peer certificate's SHA-256 as lowercase hex, as Envoy writes XFCC's `Hash`.
    pub fn peer_certificate_hash_hex(&self) -> String {
        use std::fmt::Write;
        self.peer_certificate_sha256
            .iter()
            .fold(String::with_capacity(64), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
    }
}

/// An accepted connection: the TCP stream itself (plain text) or the TLS session over it.
#[derive(Debug)]
pub struct InboundStream {
    inner: Inner,
    mtls: Option<MutualTls>,
}

#[derive(Debug)]
enum Inner {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl InboundStream {
    pub(super) fn plain(tcp: TcpStream) -> Self {
        InboundStream {
            inner: Inner::Plain(tcp),
            mtls: None,
        }
    }

    pub(super) fn tls(tls: TlsStream<TcpStream>, mtls: MutualTls) -> Self {
        InboundStream {
            inner: Inner::Tls(Box::new(tls)),
            mtls: Some(mtls),
        }
    }

    /// What the mTLS handshake proved; `None` for plain text.
    pub fn mutual_tls(&self) -> Option<&MutualTls> {
        self.mtls.as_ref()
    }

    /// Whether the connection is mTLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.inner, Inner::Tls(_))
    }

    /// The protocol ALPN settled on (`h2`, `http/1.1`), for TLS connections that negotiated one.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match &self.inner {
            Inner::Plain(_) => None,
            Inner::Tls(tls) => tls.get_ref().1.alpn_protocol(),
        }
    }

    /// The TCP stream underneath.
    pub fn tcp(&self) -> &TcpStream {
        match &self.inner {
            Inner::Plain(tcp) => tcp,
            Inner::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl AsyncRead for InboundStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for InboundStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Inner::Plain(s) => s.is_write_vectored(),
            Inner::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_flush(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

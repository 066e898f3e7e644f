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
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::{body::BoxError, tls::IdentitySource};

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
    local: LocalCertificate,
}

/// The certificate this side presents, whose URI SAN is [`UpstreamTls::local_principal`].
#[derive(Clone, Default)]
pub(crate) enum LocalCertificate {
    /// None (SIMPLE), or one without a URI SAN.
    #[default]
    None,
    /// A fixed certificate's first URI SAN (MUTUAL's `clientCertificate`).
    Fixed(Arc<str>),
    /// The workload's certificate (ISTIO_MUTUAL), as it is at each handshake.
    Workload(IdentitySource),
}

impl LocalCertificate {
    fn principal(&self) -> Option<Arc<str>> {
        match self {
            LocalCertificate::None => None,
            LocalCertificate::Fixed(p) => Some(p.clone()),
            LocalCertificate::Workload(source) => Some(source.identity().to_string().into()),
        }
    }
}

/// What a TLS connection to an endpoint says of the two ends: the first URI SAN of the
/// certificate this side presented and of the one the endpoint presented (verified), as
/// Envoy's upstream SSL connection info (`uriSanLocalCertificate`, `uriSanPeerCertificate`).
/// Over ISTIO_MUTUAL (and auto mTLS) both are SPIFFE IDs.
///
/// The pooled client puts it in the extensions of every response that came over such a
/// connection (hyper-util's [`Connected::extra`]), when one of the two is known: Istio's
/// client-side metrics read it for `source_principal` and `destination_principal`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTls(Arc<Principals>);

#[derive(Debug, PartialEq, Eq)]
struct Principals {
    local: Option<Arc<str>>,
    peer: Option<Arc<str>>,
}

impl UpstreamTls {
    pub fn new(local: Option<Arc<str>>, peer: Option<Arc<str>>) -> Self {
        UpstreamTls(Arc::new(Principals { local, peer }))
    }

    /// The URI SAN (a SPIFFE ID over mTLS) of the certificate this side presented.
    pub fn local_principal(&self) -> Option<&str> {
        self.0.local.as_deref()
    }

    /// The URI SAN (a SPIFFE ID over mTLS) of the endpoint's certificate.
    pub fn peer_principal(&self) -> Option<&str> {
        self.0.peer.as_deref()
    }
}

/// The first URI SAN of a DER certificate, as Envoy's `uriSan...Certificate()[0]`.
pub(crate) fn first_uri_san(cert: &[u8]) -> Option<Arc<str>> {
    let (_, x509) = X509Certificate::from_der(cert).ok()?;
    let san = x509.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::URI(uri) => Some(Arc::from(*uri)),
        _ => None,
    })
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
                local: LocalCertificate::None,
            }),
        }
    }

    /// The certificate `config` presents, for [`UpstreamTls::local_principal`].
    pub(crate) fn presenting(mut self, local: LocalCertificate) -> Self {
        if let Some(tls) = &mut self.tls {
            tls.local = local;
        }
        self
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
                Ok(stream) => {
                    // Once per connection: the client copies it into each response.
                    let peer = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(|leaf| first_uri_san(leaf.as_ref()));
                    let local = tls.local.principal();
                    let info =
                        (local.is_some() || peer.is_some()).then(|| UpstreamTls::new(local, peer));
                    Ok(UpstreamStream::Tls {
                        stream: Box::new(TokioIo::new(stream)),
                        info,
                    })
                }
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
    Tls {
        stream: Box<TokioIo<TlsStream<TokioIo<T>>>>,
        /// The principals of the two ends, when one is known.
        info: Option<UpstreamTls>,
    },
}

impl<T> fmt::Debug for UpstreamStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamStream::Plain(_) => f.write_str("UpstreamStream::Plain"),
            UpstreamStream::Tls { stream, info } => f
                .debug_struct("UpstreamStream::Tls")
                .field("alpn", &stream.inner().get_ref().1.alpn_protocol())
                .field("info", info)
                .finish(),
        }
    }
}

impl<T: Connection + Read + Write + Unpin> Connection for UpstreamStream<T> {
    /// The inner connection's info; for TLS, HTTP/2 when ALPN chose `h2` (hyper then speaks
    /// HTTP/2 on it), and the [`UpstreamTls`] principals for the responses' extensions.
    fn connected(&self) -> Connected {
        match self {
            UpstreamStream::Plain(io) => io.connected(),
            UpstreamStream::Tls { stream, info } => {
                let (io, session) = stream.inner().get_ref();
                let mut connected = io.inner().connected();
                if session.alpn_protocol() == Some(b"h2") {
                    connected = connected.negotiated_h2();
                }
                match info {
                    Some(info) => connected.extra(info.clone()),
                    None => connected,
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
            UpstreamStream::Tls { stream: s, .. } => Pin::new(&mut **s).poll_read(cx, buf),
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
            UpstreamStream::Tls { stream: s, .. } => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(io) => Pin::new(io).poll_flush(cx),
            UpstreamStream::Tls { stream: s, .. } => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(io) => Pin::new(io).poll_shutdown(cx),
            UpstreamStream::Tls { stream: s, .. } => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(io) => io.is_write_vectored(),
            UpstreamStream::Tls { stream: s, .. } => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls { stream: s, .. } => {
                Pin::new(&mut **s).poll_write_vectored(cx, bufs)
            }
        }
    }
}

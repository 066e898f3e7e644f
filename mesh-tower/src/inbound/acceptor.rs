//! The inbound acceptor: PeerAuthentication applied to each new connection.

use std::{
    fmt, io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use mesh_core::{Labels, model::MtlsMode};
use tokio::{net::TcpStream, time::Instant};
use tokio_rustls::TlsAcceptor;

use super::{InboundStream, MutualTls};
use crate::{
    authz::ConnectionInfo,
    snapshot::MeshHandle,
    tls::{ClientAuth, IdentitySource, TlsError, peer_identity, server_config},
};

/// How long a new connection may take to send its first bytes and finish the TLS handshake
/// (on STRICT and PERMISSIVE ports; DISABLE reads nothing before HTTP does). A client that
/// connects and stays silent is closed after it, so idle sockets cannot pile up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection was refused. [`InboundAcceptor::accept`] has already logged it (at debug
/// level, or once at error level for a missing identity), so callers need not log again.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// Plain text on a STRICT port.
    #[error(
        "plain text from {peer} refused on port {port}: PeerAuthentication {policy} is STRICT; \
         the client must use mTLS with a mesh certificate (set the mode to PERMISSIVE to \
         accept plain text while clients migrate)"
    )]
    PlainTextRefused {
        peer: SocketAddr,
        port: u16,
        policy: String,
    },
    /// A STRICT port, or a TLS client on a PERMISSIVE one, but this workload has no certificate.
    #[error(
        "mTLS from {peer} on port {port} (PeerAuthentication {mode}) cannot be accepted: this \
         workload has no identity; give it one (`mesh run --identity-dir DIR`, or \
         `InboundAcceptor::identity`)"
    )]
    NoIdentity {
        peer: SocketAddr,
        port: u16,
        mode: &'static str,
    },
    /// The TLS handshake failed: no client certificate, one the mesh's roots do not sign, an
    /// expired one, one without a SPIFFE ID.
    #[error("TLS handshake with {peer} failed: {source}")]
    Handshake {
        peer: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// Nothing arrived, or the handshake did not finish, in time.
    #[error("{peer} did not send a request or finish the TLS handshake within {after:?}")]
    Timeout { peer: SocketAddr, after: Duration },
    /// The client closed the connection before sending anything.
    #[error("{peer} closed the connection before sending anything")]
    Closed { peer: SocketAddr },
    /// The verified peer certificate carries no usable SPIFFE ID (the verifier checks this, so
    /// it means the roots sign certificates the mesh cannot use).
    #[error("the certificate of {peer}: {source}")]
    PeerCertificate {
        peer: SocketAddr,
        #[source]
        source: TlsError,
    },
    /// The socket failed.
    #[error("connection from {peer}: {source}")]
    Io {
        peer: String,
        #[source]
        source: io::Error,
    },
}

/// Accepts a workload's inbound connections as its PeerAuthentication says: per connection
/// it reads the current config (a reload applies to the next connection), resolves the mode of
/// the workload port ([`CompiledMesh::mtls_mode`](mesh_core::CompiledMesh::mtls_mode)), and
/// - **STRICT**: mTLS only. Plain text is refused (closed); so is a TLS client without a
///   valid mesh certificate.
/// - **PERMISSIVE**: mTLS or plain text on the same port, told apart by the first bytes (a TLS
///   record header, `0x16 0x03`), peeked without consuming them. TLS means mutual TLS: a client
///   without a mesh certificate is refused, as Istio's sidecars do (one-way TLS is not one of
///   PERMISSIVE's two options).
/// - **DISABLE**: plain text, untouched.
///
/// mTLS fills [`ConnectionInfo::peer_principal`] (the peer's SPIFFE ID) and `sni`, and the
/// stream carries a [`MutualTls`] for `x-forwarded-client-cert`. The handshake presents the
/// [`IdentitySource`]'s current certificate, so a rotation applies to new connections and
/// leaves established ones alone.
///
/// ```
/// # use std::time::Duration;
/// use mesh_tower::inbound::InboundAcceptor;
/// use mesh_tower::tls::{CertificateAuthority, Identity, IdentitySource};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let mesh = mesh_tower::MeshHandle::new(mesh_core::CompiledMesh::default());
/// let ca = CertificateAuthority::generate("example CA")?;
/// let me = Identity::new("cluster.local", "default", "reviews");
/// let cert = ca.issue(&me, Duration::from_secs(3600))?.workload_certificate()?;
/// let acceptor = InboundAcceptor::new(&mesh)
///     .namespace("default")
///     .workload_labels([("app", "reviews")])
///     .identity(IdentitySource::new(cert)?);
/// // let (stream, info) = acceptor.accept(tcp, 9080).await?;
/// # let _ = acceptor;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct InboundAcceptor {
    handle: MeshHandle,
    namespace: String,
    labels: Labels,
    identity: Option<(IdentitySource, TlsAcceptor)>,
    workload_port: Option<u16>,
    handshake_timeout: Duration,
    /// 1 + the config version whose missing-identity error was logged at error level.
    no_identity_logged: Arc<AtomicU64>,
}

impl fmt::Debug for InboundAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundAcceptor")
            .field("namespace", &self.namespace)
            .field("labels", &self.labels)
            .field(
                "identity",
                &self.identity.as_ref().map(|(s, _)| s.identity()),
            )
            .field("workload_port", &self.workload_port)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl InboundAcceptor {
    /// An acceptor for a workload of namespace `default` with no labels and no identity (plain
    /// text only: STRICT ports refuse everything); see the builder methods.
    pub fn new(mesh: impl Into<MeshHandle>) -> Self {
        InboundAcceptor {
            handle: mesh.into(),
            namespace: "default".into(),
            labels: Labels::new(),
            identity: None,
            workload_port: None,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            no_identity_logged: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The workload's namespace (which PeerAuthentications apply).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The workload's labels (PeerAuthentication `selector`).
    pub fn workload_labels<K: Into<String>, V: Into<String>>(
        mut self,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.labels = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self
    }

    /// The workload's certificate, presented to peers and used to verify theirs.
    pub fn identity(mut self, source: IdentitySource) -> Self {
        let acceptor = TlsAcceptor::from(server_config(&source, ClientAuth::Required));
        self.identity = Some((source, acceptor));
        self
    }

    /// The workload port `portLevelMtls` is matched against when [`serve`](super::serve)
    /// accepts: the app's own port (a sidecar listens on one port and forwards to the app's).
    /// Default: the port the connection arrived on.
    pub fn workload_port(mut self, port: u16) -> Self {
        self.workload_port = Some(port);
        self
    }

    /// How long the first bytes and the TLS handshake may take; [`HANDSHAKE_TIMEOUT`] by
    /// default.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    pub(super) fn configured_workload_port(&self) -> Option<u16> {
        self.workload_port
    }

    /// Accepts `tcp` for the workload port `workload_port`, as the current PeerAuthentication
    /// says (see the [type](Self) docs). Refusals are logged here, at debug level (a missing
    /// identity once per config version at error level); the caller just drops the error.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        workload_port: u16,
    ) -> Result<(InboundStream, ConnectionInfo), AcceptError> {
        let result = self.accept_inner(tcp, workload_port).await;
        if let Err(err) = &result {
            match err {
                AcceptError::NoIdentity { .. } => self.log_no_identity(err),
                _ => tracing::debug!(target: "mesh::inbound", "connection refused: {err}"),
            }
        }
        result
    }

    async fn accept_inner(
        &self,
        tcp: TcpStream,
        port: u16,
    ) -> Result<(InboundStream, ConnectionInfo), AcceptError> {
        let peer = tcp.peer_addr().map_err(|source| AcceptError::Io {
            peer: "a client".into(),
            source,
        })?;
        let mut info = ConnectionInfo {
            peer_addr: Some(peer),
            local_addr: tcp.local_addr().ok(),
            ..ConnectionInfo::default()
        };
        let effective = self
            .handle
            .snapshot()
            .peer_authentication(&self.namespace, &self.labels);
        let mode = effective.mode_for_port(port);
        if matches!(mode, MtlsMode::Disable | MtlsMode::Unset) {
            return Ok((InboundStream::plain(tcp), info));
        }
        if mode == MtlsMode::Strict && self.identity.is_none() {
            // Nothing can get in: say so (at error level) whatever the client sends.
            return Err(AcceptError::NoIdentity {
                peer,
                port,
                mode: mode_name(mode),
            });
        }

        let deadline = Instant::now() + self.handshake_timeout;
        let timeout = || AcceptError::Timeout {
            peer,
            after: self.handshake_timeout,
        };
        let tls = match tokio::time::timeout_at(deadline, first_bytes(&tcp)).await {
            Err(_) => return Err(timeout()),
            Ok(Err(source)) => {
                return Err(AcceptError::Io {
                    peer: peer.to_string(),
                    source,
                });
            }
            Ok(Ok(None)) => return Err(AcceptError::Closed { peer }),
            Ok(Ok(Some(first))) => looks_like_tls(&first),
        };
        if !tls {
            if mode == MtlsMode::Strict {
                return Err(AcceptError::PlainTextRefused {
                    peer,
                    port,
                    policy: effective.policy_for_port(port).unwrap_or("?").to_owned(),
                });
            }
            return Ok((InboundStream::plain(tcp), info));
        }
        let Some((source, acceptor)) = &self.identity else {
            return Err(AcceptError::NoIdentity {
                peer,
                port,
                mode: mode_name(mode),
            });
        };
        let stream = match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
            Err(_) => return Err(timeout()),
            Ok(Err(source)) => return Err(AcceptError::Handshake { peer, source }),
            Ok(Ok(stream)) => stream,
        };
        let conn = stream.get_ref().1;
        // ClientAuth::Required: a session without a client certificate fails the handshake.
        let leaf = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| AcceptError::PeerCertificate {
                peer,
                source: TlsError::NoSpiffeId("no client certificate".into()),
            })?;
        let peer_identity =
            peer_identity(leaf).map_err(|source| AcceptError::PeerCertificate { peer, source })?;
        let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(digest.as_ref());
        info.peer_principal = Some(peer_identity.to_string());
        info.sni = conn.server_name().map(str::to_owned);
        let mtls = MutualTls {
            local_identity: source.identity(),
            peer_identity,
            peer_certificate_sha256: sha256,
        };
        tracing::trace!(target: "mesh::inbound", %peer, peer_identity = %mtls.peer_identity, "mTLS accepted");
        Ok((InboundStream::tls(stream, mtls), info))
    }

    fn log_no_identity(&self, err: &AcceptError) {
        let version = self.handle.snapshot().version + 1;
        if self.no_identity_logged.swap(version, Ordering::Relaxed) != version {
            tracing::error!(target: "mesh::inbound", "{err}");
        } else {
            tracing::debug!(target: "mesh::inbound", "connection refused: {err}");
        }
    }
}

/// The first bytes the client sent, without consuming them; `None` if it closed first.
async fn first_bytes(tcp: &TcpStream) -> io::Result<Option<Vec<u8>>> {
    // Two bytes decide: a TLS record starts with content type 22 (handshake) and major
    // version 3. `peek` waits until at least one byte is there.
    let mut buf = [0u8; 2];
    let n = tcp.peek(&mut buf).await?;
    Ok((n > 0).then(|| buf[..n].to_vec()))
}

/// Whether a connection's first bytes open a TLS handshake: content type 0x16 and, when the
/// second byte has arrived, major version 0x03 (SSL 3.0 to TLS 1.3 all use it). No plain-text
/// HTTP request (a method token, or h2c's `PRI` preface) starts with 0x16.
pub fn looks_like_tls(first: &[u8]) -> bool {
    matches!(first, [0x16] | [0x16, 0x03, ..])
}

/// Istio's name of a mode, for messages.
pub fn mode_name(mode: MtlsMode) -> &'static str {
    match mode {
        MtlsMode::Unset => "UNSET",
        MtlsMode::Disable => "DISABLE",
        MtlsMode::Permissive => "PERMISSIVE",
        MtlsMode::Strict => "STRICT",
    }
}

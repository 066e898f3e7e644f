//! Mutual TLS between workloads, as Istio's sidecars do it: every workload holds a certificate
//! whose URI SAN is its SPIFFE identity (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`), peers
//! verify each other's chain against the mesh's roots, and then the identity, not a DNS name.
//!
//! - [`IdentitySource`]: the workload's current certificate, key and roots. Clones share it;
//!   [`IdentitySource::rotate`] swaps in a renewed certificate: handshakes from then on use it,
//!   connections already up keep theirs (TLS never re-keys an identity mid-connection).
//! - [`server_config`] and [`client_config`]: rustls configs (ring provider, set explicitly)
//!   that read the source at every handshake.
//! - [`SpiffeServerVerifier`] (client side: secure naming) and [`SpiffeClientVerifier`] (server
//!   side): webpki's chain checks, then the SPIFFE ID. rustls' stock server verifier cannot be
//!   used: it checks a DNS name, and workload certificates carry only a URI.
//! - [`peer_identity`]: the SPIFFE identity in a peer's certificate.

pub mod ca;
mod files;
mod identity;
mod issuer;
pub(crate) mod verify;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub use ca::{CertificateAuthority, IssuedCertificate};
pub use files::DirWatch;
pub use identity::{
    CERT_CHAIN_FILE, IdentitySource, KEY_FILE, ROOT_CERT_FILE, WorkloadCertificate,
};
pub use issuer::{InMemoryIssuer, RENEW_AT_FRACTION, Renewal};
pub use mesh_core::Identity;
pub use verify::{
    ExpectedPeer, SecureNamingError, SpiffeClientVerifier, SpiffeServerVerifier, peer_identity,
};

/// ALPN protocols offered on mesh connections: HTTP/2 first, as Envoy does between sidecars.
pub const ALPN_H2_HTTP11: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The one crypto provider mesh uses: ring (no aws-lc: it needs cmake and a C toolchain that
/// not every target has, and rustls' defaults would pull it in).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Certificates, keys and handshakes that went wrong, with what to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM input had no item of the kind wanted, or could not be read.
    #[error("{what}: {reason}")]
    Pem { what: String, reason: String },
    /// The certificate has no SPIFFE URI SAN (or more than one).
    #[error(
        "certificate has no SPIFFE identity (a URI SAN `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`): {0}"
    )]
    NoSpiffeId(String),
    /// The key does not fit the certificate, or the provider cannot use it.
    #[error("private key: {0}")]
    Key(String),
    /// Reading a file.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Whether a server asks for a client certificate and insists on one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// PeerAuthentication STRICT: a client without a valid mesh certificate fails the handshake.
    Required,
    /// A certificate is asked for and verified when sent; a client may also send none.
    Optional,
}

/// A server config that presents `source`'s current certificate and verifies clients against
/// its current roots. ALPN h2 and http/1.1.
pub fn server_config(
    source: &IdentitySource,
    client_auth: ClientAuth,
) -> Arc<rustls::ServerConfig> {
    let verifier = Arc::new(SpiffeClientVerifier::new(source.clone(), client_auth));
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(source.clone()));
    config.alpn_protocols = ALPN_H2_HTTP11.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A client config that presents `source`'s current certificate and accepts a server whose
/// chain leads to the current roots and whose identity is `expected` (secure naming). `alpn`:
/// the protocols to offer, most preferred first (e.g. [`ALPN_H2_HTTP11`]).
pub fn client_config(
    source: &IdentitySource,
    expected: ExpectedPeer,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let verifier = Arc::new(SpiffeServerVerifier::new(source.clone(), expected));
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(source.clone()));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Every new connection verifies the peer's current certificate: a resumed session would
    // carry the identity (and validity) checked when the ticket was issued, hiding a rotation
    // or an expiry. Connections are pooled, so full handshakes are rare.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

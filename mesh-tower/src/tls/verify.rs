//! Certificate verification for mesh peers: webpki's chain checks, then the SPIFFE identity.

use std::{fmt, sync::Arc, time::SystemTime};

use mesh_core::Identity;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor,
    },
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
    server::{
        ParsedCertificate,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::{ClientAuth, IdentitySource, TlsError, provider};

/// Which server identities a client accepts: Istio's secure naming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedPeer {
    /// Any workload of the mesh (a chain to the mesh's roots and a SPIFFE ID).
    AnyInMesh,
    /// One of these SPIFFE IDs (`spiffe://td/ns/NS/sa/SA`): the service accounts that run the
    /// destination service, or a DestinationRule's `tls.subjectAltNames`.
    OneOf(Vec<String>),
}

impl ExpectedPeer {
    fn accepts(&self, presented: &Identity) -> bool {
        match self {
            ExpectedPeer::AnyInMesh => true,
            ExpectedPeer::OneOf(ids) => ids.contains(&presented.to_string()),
        }
    }
}

/// The server's certificate is valid but names another workload than the destination's.
#[derive(Debug, thiserror::Error)]
#[error(
    "secure naming: the server presented {presented}, expected {}",
    expected.join(" or ")
)]
pub struct SecureNamingError {
    pub presented: String,
    pub expected: Vec<String>,
}

/// The SPIFFE identity a peer certificate carries in its URI SAN.
pub fn peer_identity(cert: &CertificateDer<'_>) -> Result<Identity, TlsError> {
    spiffe_id_and_validity(cert).map(|(id, ..)| id)
}

/// The certificate's one SPIFFE ID and its validity window.
pub(super) fn spiffe_id_and_validity(
    cert: &CertificateDer<'_>,
) -> Result<(Identity, SystemTime, SystemTime), TlsError> {
    let (_, x509) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| TlsError::NoSpiffeId(format!("not an X.509 certificate: {e}")))?;
    let san = x509
        .subject_alternative_name()
        .map_err(|e| TlsError::NoSpiffeId(format!("bad subjectAltName extension: {e}")))?;
    let mut ids = san
        .iter()
        .flat_map(|san| san.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
            _ => None,
        });
    let (first, second) = (ids.next(), ids.next());
    let uri = match (first, second) {
        (Some(uri), None) => uri,
        (None, _) => return Err(TlsError::NoSpiffeId("no spiffe:// URI SAN".into())),
        (Some(a), Some(b)) => {
            return Err(TlsError::NoSpiffeId(format!(
                "more than one spiffe:// URI SAN ({a}, {b}); SPIFFE allows one"
            )));
        }
    };
    let identity = Identity::parse_spiffe(uri).ok_or_else(|| {
        TlsError::NoSpiffeId(format!(
            "`{uri}` is not of the form spiffe://<trust-domain>/ns/<ns>/sa/<sa>"
        ))
    })?;
    let at = |t: i64| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64);
    let validity = x509.validity();
    Ok((
        identity,
        at(validity.not_before.timestamp()),
        at(validity.not_after.timestamp()),
    ))
}

/// A certificate refused for `e`: rustls' error carrying our reason.
pub(crate) fn invalid(e: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// The handshake-signature half of a `ServerCertVerifier`, the same for every server verifier
/// mesh has (they differ only in how they judge the certificate): the provider's algorithms.
#[derive(Debug, Clone)]
pub(crate) struct HandshakeSignatures(pub(crate) Arc<CryptoProvider>);

impl HandshakeSignatures {
    pub(crate) fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    pub(crate) fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    pub(crate) fn schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client's verifier of mesh servers: the chain must lead to the workload's current roots,
/// and the leaf's SPIFFE ID must be one the destination may present (secure naming). The TLS
/// server name is not checked: mesh certificates carry no DNS names.
pub struct SpiffeServerVerifier {
    source: IdentitySource,
    expected: ExpectedPeer,
    signatures: HandshakeSignatures,
}

impl SpiffeServerVerifier {
    pub fn new(source: IdentitySource, expected: ExpectedPeer) -> Self {
        SpiffeServerVerifier {
            source,
            expected,
            signatures: HandshakeSignatures(provider()),
        }
    }
}

impl fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerVerifier")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let loaded = self.source.loaded();
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &loaded.roots,
            intermediates,
            now,
            self.signatures.0.signature_verification_algorithms.all,
        )?;
        let presented = peer_identity(end_entity).map_err(invalid)?;
        if !self.expected.accepts(&presented) {
            let ExpectedPeer::OneOf(expected) = &self.expected else {
                unreachable!("AnyInMesh accepts every identity")
            };
            return Err(invalid(SecureNamingError {
                presented: presented.to_string(),
                expected: expected.clone(),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}

/// A server's verifier of mesh clients: webpki's client-certificate checks against the
/// workload's current roots, then a SPIFFE ID must be present. Which identities may call is
/// AuthorizationPolicy's business, not the handshake's.
pub struct SpiffeClientVerifier {
    source: IdentitySource,
    auth: ClientAuth,
}

impl SpiffeClientVerifier {
    pub fn new(source: IdentitySource, auth: ClientAuth) -> Self {
        SpiffeClientVerifier { source, auth }
    }
}

impl fmt::Debug for SpiffeClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeClientVerifier")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.auth == ClientAuth::Required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The roots rotate, and mesh clients send their one certificate regardless.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let loaded = self.source.loaded();
        let inner = match self.auth {
            ClientAuth::Required => &loaded.client_required,
            ClientAuth::Optional => &loaded.client_optional,
        };
        let verified = inner.verify_client_cert(end_entity, intermediates, now)?;
        peer_identity(end_entity).map_err(invalid)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.source
            .loaded()
            .client_required
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.source
            .loaded()
            .client_required
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.source
            .loaded()
            .client_required
            .supported_verify_schemes()
    }
}

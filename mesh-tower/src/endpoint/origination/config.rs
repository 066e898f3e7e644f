//! rustls client configurations for a [`TlsKey`]: built once per key, when its pooled client
//! is made. Files (SIMPLE and MUTUAL) are read then.

use std::{fmt, sync::Arc};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor,
    },
    server::ParsedCertificate,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::{
    OriginationError, OriginationMode, TlsKey,
    connector::{LocalCertificate, first_uri_san},
};
use crate::tls::{
    self, ExpectedPeer, IdentitySource, provider,
    verify::{HandshakeSignatures, invalid},
};

/// The client config for `key`; ISTIO_MUTUAL uses `identity` (rotations apply at the next
/// handshake).
pub(crate) fn client_config(
    key: &TlsKey,
    identity: Option<&IdentitySource>,
) -> Result<Arc<ClientConfig>, OriginationError> {
    let alpn: &[&[u8]] = if key.h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let config_err = |e: rustls::Error| OriginationError::Config {
        sni: key.sni.clone(),
        reason: e.to_string(),
    };
    if key.mode == OriginationMode::IstioMutual {
        let Some(source) = identity else {
            return Err(OriginationError::Config {
                sni: key.sni.clone(),
                reason: "ISTIO_MUTUAL needs a workload identity: configure one \
                         (MeshStack::outbound(..).identity(..))"
                    .into(),
            });
        };
        let expected = if key.subject_alt_names.is_empty() {
            ExpectedPeer::AnyInMesh
        } else {
            ExpectedPeer::OneOf(key.subject_alt_names.clone())
        };
        return Ok(tls::client_config(source, expected, alpn));
    }
    let verifier: Arc<dyn ServerCertVerifier> = if key.insecure_skip_verify {
        Arc::new(SkipVerification(HandshakeSignatures(provider())))
    } else {
        let roots = Arc::new(trust_roots(key.ca_certificates.as_deref())?);
        if key.subject_alt_names.is_empty() {
            WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| OriginationError::Config {
                    sni: key.sni.clone(),
                    reason: e.to_string(),
                })?
        } else {
            Arc::new(SanVerifier {
                roots,
                names: key.subject_alt_names.clone(),
                signatures: HandshakeSignatures(provider()),
            })
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (&key.client_certificate, &key.private_key) {
        (Some(cert), Some(private_key)) => {
            let chain = read_certs("clientCertificate", cert)?;
            let pem = read("privateKey", private_key)?;
            let key_der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                file_err(
                    "privateKey",
                    private_key,
                    format!("no PEM private key ({e})"),
                )
            })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| file_err("privateKey", private_key, e.to_string()))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The certificate a client made for `key` presents: the workload's (ISTIO_MUTUAL), the
/// `clientCertificate` file's (MUTUAL, read again here: once per pooled client), or none.
pub(crate) fn local_certificate(
    key: &TlsKey,
    identity: Option<&IdentitySource>,
) -> LocalCertificate {
    match (key.mode, identity, &key.client_certificate) {
        (OriginationMode::IstioMutual, Some(source), _) => {
            LocalCertificate::Workload(source.clone())
        }
        (OriginationMode::Mutual, _, Some(path)) => read_certs("clientCertificate", path)
            .ok()
            .and_then(|chain| first_uri_san(chain.first()?.as_ref()))
            .map_or(LocalCertificate::None, LocalCertificate::Fixed),
        _ => LocalCertificate::None,
    }
}

fn file_err(field: &'static str, path: &str, reason: String) -> OriginationError {
    OriginationError::File {
        field,
        path: path.to_owned(),
        reason,
    }
}

fn read(field: &'static str, path: &str) -> Result<Vec<u8>, OriginationError> {
    std::fs::read(path).map_err(|e| file_err(field, path, e.to_string()))
}

fn read_certs(
    field: &'static str,
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, OriginationError> {
    let pem = read(field, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(field, path, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err(
            field,
            path,
            "no PEM `CERTIFICATE` block found".into(),
        ));
    }
    Ok(certs)
}

/// `caCertificates`, or the Mozilla roots of webpki-roots without it.
fn trust_roots(ca_certificates: Option<&str>) -> Result<RootCertStore, OriginationError> {
    let Some(path) = ca_certificates else {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let mut roots = RootCertStore::empty();
    for cert in read_certs("caCertificates", path)? {
        roots.add(cert).map_err(|e| {
            file_err(
                "caCertificates",
                path,
                format!("not a usable trust anchor: {e}"),
            )
        })?;
    }
    Ok(roots)
}

/// The server's certificate names none of `subjectAltNames`.
#[derive(Debug, thiserror::Error)]
#[error(
    "the server certificate's SANs ({}) match none of the DestinationRule's subjectAltNames ({})",
    if presented.is_empty() { "none".to_owned() } else { presented.join(", ") },
    expected.join(", ")
)]
pub struct SanMismatch {
    pub presented: Vec<String>,
    pub expected: Vec<String>,
}

/// `subjectAltNames` for SIMPLE and MUTUAL: the chain must lead to the roots, and the leaf
/// must carry one of the names as a DNS SAN (a `*.` wildcard SAN covers one label) or a URI
/// SAN, as Envoy's `match_typed_subject_alt_names` with exact matchers. The SNI is not checked.
struct SanVerifier {
    roots: Arc<RootCertStore>,
    names: Vec<String>,
    signatures: HandshakeSignatures,
}

impl fmt::Debug for SanVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SanVerifier")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// The DNS and URI SANs of a certificate (DNS ones lower-cased).
pub(crate) fn dns_and_uri_sans(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, x509)) = X509Certificate::from_der(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = x509.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .collect()
}

/// Whether a presented SAN satisfies a wanted name.
pub(crate) fn san_matches(presented: &str, wanted: &str) -> bool {
    if presented.contains(':') {
        // A URI SAN: exact.
        return presented == wanted;
    }
    if presented.eq_ignore_ascii_case(wanted) {
        return true;
    }
    match presented.strip_prefix("*.") {
        Some(suffix) => wanted
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(suffix)),
        None => false,
    }
}

impl ServerCertVerifier for SanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.signatures.0.signature_verification_algorithms.all,
        )?;
        let presented = dns_and_uri_sans(end_entity);
        if self
            .names
            .iter()
            .any(|want| presented.iter().any(|p| san_matches(p, want)))
        {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(invalid(SanMismatch {
                presented,
                expected: self.names.clone(),
            }))
        }
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

/// `insecureSkipVerify: true`: any certificate is accepted (neither chain nor names are
/// checked); the handshake signature still proves the server holds the certificate's key.
#[derive(Debug)]
struct SkipVerification(HandshakeSignatures);

impl ServerCertVerifier for SkipVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.schemes()
    }
}

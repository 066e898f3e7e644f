//! TLS termination for gateway servers with `tls.mode` SIMPLE, MUTUAL or OPTIONAL_MUTUAL: the
//! server's certificate and key, and for mutual TLS the CA that client certificates must chain
//! to, read into a rustls `ServerConfig` (ring provider) at start, and again at each reload and
//! whenever the files change (see the `cert_watch` module).
//!
//! Where the files are, as Istio's
//! [`ServerTLSSettings`](https://istio.io/latest/docs/reference/config/networking/gateway/#ServerTLSSettings)
//! says:
//! - `credentialName: NAME`: the Kubernetes secret `NAME`, here the folder
//!   `--credentials-dir/NAME` with its keys as files: `tls.crt`, `tls.key` and, for mutual TLS,
//!   `ca.crt` (the generic-secret keys `cert`, `key`, `cacert` work too, and so does a separate
//!   `NAME-cacert` secret holding the CA, as Istio reads them);
//! - otherwise `serverCertificate`, `privateKey` and `caCertificates`, file paths.
//!
//! `subjectAltNames` (mutual TLS): the client certificate must carry one of them (DNS, URI, IP
//! or email SAN, compared exactly, as Envoy's `match_subject_alt_names` does with Istio's exact
//! matchers), checked during the handshake. `minProtocolVersion`/`maxProtocolVersion` choose
//! among TLS 1.2 and 1.3 (rustls has nothing older; Istio's gateway default is 1.2 to 1.3).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use mesh_core::model::{GatewayServer, ServerTls, ServerTlsMode};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedProtocolVersion,
    client::danger::HandshakeSignatureValid,
    pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject},
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};

use super::describe;

/// ALPN for HTTPS servers: HTTP/2 first, as Envoy's gateways offer it.
const ALPN_HTTP: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The rustls config for a terminating `server`, its files read now. `http` offers ALPN h2 and
/// http/1.1 (HTTPS servers); a TLS server proxying TCP offers none. The error names the
/// server and the file, and says what to do.
pub(crate) fn server_config(
    server: &GatewayServer,
    credentials_dir: Option<&Path>,
    http: bool,
) -> Result<Arc<ServerConfig>, String> {
    let fail = |msg: String| format!("{}: {msg}", describe(server));
    let tls = server
        .tls
        .as_ref()
        .ok_or_else(|| fail("no `tls` settings".into()))?;
    let files = files(tls, credentials_dir).map_err(fail)?;
    let chain = read_certs(&files.cert, "serverCertificate").map_err(fail)?;
    let key = read_key(&files.key).map_err(fail)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(tls).map_err(fail)?)
        .map_err(|e| fail(format!("TLS versions: {e}")))?;
    let builder = match tls.mode {
        ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            let ca_file = files.ca.as_ref().ok_or_else(|| {
                let mode = if tls.mode == ServerTlsMode::Mutual {
                    "MUTUAL"
                } else {
                    "OPTIONAL_MUTUAL"
                };
                fail(format!(
                    "tls.mode {mode} needs the CA that client certificates chain to: set caCertificates, or put ca.crt in the credentialName folder"
                ))
            })?;
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca_file, "caCertificates").map_err(fail)? {
                roots.add(cert).map_err(|e| {
                    fail(format!(
                        "{}: not a usable CA certificate: {e}",
                        ca_file.display()
                    ))
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if tls.mode == ServerTlsMode::OptionalMutual {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| fail(format!("{}: client verifier: {e}", ca_file.display())))?;
            let verifier: Arc<dyn ClientCertVerifier> = if tls.subject_alt_names.is_empty() {
                verifier
            } else {
                Arc::new(SanVerifier {
                    inner: verifier,
                    names: tls.subject_alt_names.clone(),
                })
            };
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        fail(format!(
            "{} and {} do not make a usable certificate: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    if http {
        config.alpn_protocols = ALPN_HTTP.iter().map(|p| p.to_vec()).collect();
    }
    Ok(Arc::new(config))
}

/// The certificate, key and CA files of a server.
#[derive(Debug, PartialEq)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    ca: Option<PathBuf>,
}

fn files(tls: &ServerTls, credentials_dir: Option<&Path>) -> Result<Files, String> {
    let Some(name) = &tls.credential_name else {
        return match (&tls.server_certificate, &tls.private_key) {
            (Some(cert), Some(key)) => Ok(Files {
                cert: cert.into(),
                key: key.into(),
                ca: tls.ca_certificates.as_ref().map(PathBuf::from),
            }),
            _ => Err(
                "no certificate: set credentialName (with --credentials-dir), or serverCertificate and privateKey"
                    .into(),
            ),
        };
    };
    let Some(dir) = credentials_dir else {
        return Err(format!(
            "credentialName {name} needs --credentials-dir DIR holding {name}/tls.crt and {name}/tls.key"
        ));
    };
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(format!(
            "credentialName {name:?} is not a secret name (a DNS name, no `/`)"
        ));
    }
    let secret = dir.join(name);
    // The first of the candidate files that exists, else the first (for the error).
    let pick = |candidates: &[PathBuf]| {
        candidates
            .iter()
            .find(|p| p.is_file())
            .unwrap_or(&candidates[0])
            .clone()
    };
    let ca_candidates = [
        secret.join("ca.crt"),
        secret.join("cacert"),
        dir.join(format!("{name}-cacert")).join("ca.crt"),
        dir.join(format!("{name}-cacert")).join("cacert"),
    ];
    Ok(Files {
        cert: pick(&[secret.join("tls.crt"), secret.join("cert")]),
        key: pick(&[secret.join("tls.key"), secret.join("key")]),
        ca: ca_candidates.iter().find(|p| p.is_file()).cloned(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn read_certs(path: &Path, field: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} ({field}): bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} ({field}): no PEM certificate (`-----BEGIN CERTIFICATE-----`) in it",
            path.display()
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        format!(
            "{} (privateKey): no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
            path.display()
        )
    })
}

/// TLS 1.2 and 1.3 within `minProtocolVersion`..`maxProtocolVersion`.
fn versions(tls: &ServerTls) -> Result<Vec<&'static SupportedProtocolVersion>, String> {
    let rank = |v: &Option<String>, default: u8| -> u8 {
        match v
            .as_deref()
            .map(|v| v.to_ascii_uppercase().replace('_', ""))
        {
            Some(v) if v == "TLSV10" => 0,
            Some(v) if v == "TLSV11" => 1,
            Some(v) if v == "TLSV12" => 2,
            Some(v) if v == "TLSV13" => 3,
            _ => default, // TLS_AUTO or unset
        }
    };
    let (min, max) = (
        rank(&tls.min_protocol_version, 2),
        rank(&tls.max_protocol_version, 3),
    );
    let all = [(2, &rustls::version::TLS12), (3, &rustls::version::TLS13)];
    let chosen: Vec<_> = all
        .iter()
        .filter(|(r, _)| (min..=max).contains(r))
        .map(|(_, v)| *v)
        .collect();
    if chosen.is_empty() {
        return Err(format!(
            "minProtocolVersion {:?} / maxProtocolVersion {:?} leave no TLS version mesh supports (TLSV1_2, TLSV1_3)",
            tls.min_protocol_version, tls.max_protocol_version
        ));
    }
    Ok(chosen)
}

/// webpki's client verification, then `subjectAltNames`.
#[derive(Debug)]
struct SanVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    names: Vec<String>,
}

/// The subject alternative names of a certificate, as text (`IP` as its usual notation).
pub(crate) fn subject_alt_names(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                Some((*s).to_owned())
            }
            GeneralName::IPAddress(b) => match b.len() {
                4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

impl ClientCertVerifier for SanVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if subject_alt_names(end_entity)
            .iter()
            .any(|san| self.names.contains(san))
        {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

//! A certificate authority for SPIFFE workload certificates: the in-memory CA of in-process
//! meshes and tests, and the engine behind `mesh ca init` / `mesh ca issue`.
//!
//! Keys are ECDSA P-256 (Istio defaults to RSA 2048 and uses P-256 with
//! `ECC_SIGNATURE_ALGORITHM=ECDSA`; rustls and Envoy accept both), made by rcgen over ring.

use std::{
    fmt,
    time::{Duration, SystemTime},
};

use mesh_core::Identity;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use super::{TlsError, WorkloadCertificate};

/// How long a generated CA certificate is valid: ten years, as Istio's self-signed root.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// Istio's default workload certificate lifetime (`DEFAULT_WORKLOAD_CERT_TTL`: 24 h).
pub const DEFAULT_WORKLOAD_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Slack for clocks a little behind ours.
const BACKDATE: Duration = Duration::from_secs(60);

/// A CA: its certificate and signing key.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    not_after: SystemTime,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn rcgen_err(what: &str) -> impl Fn(rcgen::Error) -> TlsError + '_ {
    move |e| TlsError::Key(format!("{what}: {e}"))
}

fn to_offset(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

impl CertificateAuthority {
    /// A new self-signed CA, valid from a minute ago for [`CA_VALIDITY`].
    pub fn generate(common_name: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(rcgen_err("generating the CA key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "mesh");
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        let not_after = now + CA_VALIDITY;
        params.not_before = to_offset(now - BACKDATE);
        params.not_after = to_offset(not_after);
        let cert = params
            .self_signed(&key)
            .map_err(rcgen_err("signing the CA certificate"))?;
        let cert_pem = cert.pem();
        let cert_der = cert.der().clone();
        let issuer = Issuer::new(params, key);
        Ok(CertificateAuthority {
            issuer,
            cert_pem,
            cert_der,
            not_after: SystemTime::from(to_offset(not_after)),
        })
    }

    /// A CA from its certificate and key (PEM), checked: a CA certificate, and the key its own.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let pem_err = |what: &str, reason: String| TlsError::Pem {
            what: what.into(),
            reason,
        };
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| pem_err("CA key", format!("not a PEM private key: {e}")))?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|e| pem_err("CA certificate", format!("not a PEM certificate: {e}")))?;
        let x509 = pem
            .parse_x509()
            .map_err(|e| pem_err("CA certificate", format!("not an X.509 certificate: {e}")))?;
        if !x509.is_ca() {
            return Err(pem_err(
                "CA certificate",
                "not a CA certificate (basicConstraints CA:true is missing)".into(),
            ));
        }
        if x509.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(pem_err(
                "CA key",
                "this key does not belong to the CA certificate".into(),
            ));
        }
        let not_after = SystemTime::from(x509.validity().not_after.to_datetime());
        let cert_der = CertificateDer::from(pem.contents.clone());
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| pem_err("CA certificate", format!("unusable as an issuer: {e}")))?;
        Ok(CertificateAuthority {
            issuer,
            cert_pem: cert_pem.to_owned(),
            cert_der,
            not_after,
        })
    }

    /// The CA certificate, PEM: the trust root (`root-cert.pem`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA key, PEM (PKCS#8).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// A workload certificate for `identity`, valid from a minute ago for `ttl` (capped at the
    /// CA's own expiry).
    pub fn issue(&self, identity: &Identity, ttl: Duration) -> Result<IssuedCertificate, TlsError> {
        let now = SystemTime::now();
        let not_after = (now + ttl).min(self.not_after);
        self.issue_valid(identity, now - BACKDATE, not_after)
    }

    /// A workload certificate for `identity` with an explicit validity window (tests make
    /// expired and not-yet-valid certificates with it).
    pub fn issue_valid(
        &self,
        identity: &Identity,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCertificate, TlsError> {
        let spiffe = identity.to_string();
        if Identity::parse_spiffe(&spiffe).as_ref() != Some(identity) || !spiffe.is_ascii() {
            return Err(TlsError::NoSpiffeId(format!(
                "{spiffe:?}: the trust domain, namespace and service account must be non-empty ASCII without '/'"
            )));
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(rcgen_err("generating the workload key"))?;
        let mut params = CertificateParams::default();
        // Istio's workload certificates carry no subject: the identity is the URI SAN alone
        // (which rcgen then marks critical, as RFC 5280 asks).
        params.distinguished_name = DistinguishedName::new();
        let uri = spiffe
            .clone()
            .try_into()
            .map_err(|e| TlsError::NoSpiffeId(format!("{spiffe:?}: {e}")))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = to_offset(not_before);
        params.not_after = to_offset(not_after);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(rcgen_err("signing the workload certificate"))?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
            ca_pem: self.cert_pem.clone(),
            ca_der: self.cert_der.clone(),
        })
    }
}

/// A signed workload certificate, in the forms its users want.
#[derive(Clone)]
pub struct IssuedCertificate {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: String,
    key_der: Vec<u8>,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
}

impl fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCertificate").finish_non_exhaustive()
    }
}

impl IssuedCertificate {
    /// Istio's `cert-chain.pem`: the workload certificate, then the CA's.
    pub fn chain_pem(&self) -> String {
        let mut s = self.cert_pem.clone();
        if !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str(&self.ca_pem);
        s
    }

    /// Istio's `key.pem` (PKCS#8).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Istio's `root-cert.pem`.
    pub fn root_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The leaf alone, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// As a [`WorkloadCertificate`] for an [`IdentitySource`](super::IdentitySource).
    pub fn workload_certificate(&self) -> Result<WorkloadCertificate, TlsError> {
        WorkloadCertificate::from_der(
            vec![self.cert_der.clone(), self.ca_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            vec![self.ca_der.clone()],
        )
    }
}

//! The workload's certificate, key and trust roots, swappable at run time.

use std::{
    fmt,
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use mesh_core::Identity;
use rustls::{
    RootCertStore,
    client::ResolvesClientCert,
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier, danger::ClientCertVerifier},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::{TlsError, provider, verify::spiffe_id_and_validity};

/// A workload certificate: the chain (leaf first), its key, the mesh's trust roots, and what
/// the leaf says (identity, validity).
pub struct WorkloadCertificate {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Vec<CertificateDer<'static>>,
    identity: Identity,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("identity", &self.identity)
            .field("chain", &self.chain.len())
            .field("roots", &self.roots.len())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Clone for WorkloadCertificate {
    fn clone(&self) -> Self {
        WorkloadCertificate {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            roots: self.roots.clone(),
            identity: self.identity.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
        }
    }
}

/// Istio's file names for a workload identity (what `mesh ca issue`, istio-agent, cert-manager's
/// istio-csr and SPIRE helpers write).
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";
pub const KEY_FILE: &str = "key.pem";
pub const ROOT_CERT_FILE: &str = "root-cert.pem";

impl WorkloadCertificate {
    /// From PEM text: the certificate chain (leaf first, intermediates after), the leaf's
    /// private key (PKCS#8, SEC1 or PKCS#1), and the trust roots (one or more CA certificates).
    pub fn from_pem(chain: &[u8], key: &[u8], roots: &[u8]) -> Result<Self, TlsError> {
        let chain = certs("certificate chain", chain)?;
        let roots = certs("root certificates", roots)?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Pem {
            what: "private key".into(),
            reason: format!("no PEM private key found ({e})"),
        })?;
        Self::from_der(chain, key, roots)
    }

    /// From DER: see [`from_pem`](Self::from_pem).
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, TlsError> {
        let leaf = chain.first().ok_or_else(|| TlsError::Pem {
            what: "certificate chain".into(),
            reason: "empty".into(),
        })?;
        let (identity, not_before, not_after) = spiffe_id_and_validity(leaf)?;
        let cert = WorkloadCertificate {
            chain,
            key,
            roots,
            identity,
            not_before,
            not_after,
        };
        // Fail now, not at the first handshake, if the key does not fit or cannot sign.
        cert.certified_key()?;
        Ok(cert)
    }

    /// Reads Istio's layout: `dir/cert-chain.pem`, `dir/key.pem`, `dir/root-cert.pem`.
    pub fn from_dir(dir: &Path) -> Result<Self, TlsError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| TlsError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        let (chain, key, roots) = (
            read(CERT_CHAIN_FILE)?,
            read(KEY_FILE)?,
            read(ROOT_CERT_FILE)?,
        );
        Self::from_pem(&chain, &key, &roots).map_err(|e| match e {
            TlsError::Io { .. } => e,
            other => TlsError::Pem {
                what: dir.display().to_string(),
                reason: other.to_string(),
            },
        })
    }

    /// The SPIFFE identity in the leaf's URI SAN.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// When Istio would renew it: at 80% of its lifetime (istio-agent's
    /// `SECRET_GRACE_PERIOD_RATIO` of 0.2 before expiry).
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO);
        self.not_before + life.mul_f64(0.8)
    }

    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    fn certified_key(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let signer = provider()
            .key_provider
            .load_private_key(self.key.clone_key())
            .map_err(|e| TlsError::Key(e.to_string()))?;
        let certified = CertifiedKey::new(self.chain.clone(), signer);
        certified
            .keys_match()
            .map_err(|e| TlsError::Key(format!("does not match the certificate: {e}")))?;
        Ok(Arc::new(certified))
    }
}

fn certs(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            what: what.into(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: what.into(),
            reason: "no PEM `CERTIFICATE` block found".into(),
        });
    }
    Ok(certs)
}

/// What handshakes read: the certificate, its rustls form, and verifiers over its roots.
pub(super) struct Loaded {
    pub(super) cert: WorkloadCertificate,
    pub(super) certified: Arc<CertifiedKey>,
    pub(super) roots: Arc<RootCertStore>,
    /// Client-certificate verifiers over `roots`: mandatory and optional.
    pub(super) client_required: Arc<dyn ClientCertVerifier>,
    pub(super) client_optional: Arc<dyn ClientCertVerifier>,
}

impl Loaded {
    fn new(cert: WorkloadCertificate) -> Result<Self, TlsError> {
        let certified = cert.certified_key()?;
        let mut roots = RootCertStore::empty();
        for root in &cert.roots {
            roots.add(root.clone()).map_err(|e| TlsError::Pem {
                what: "root certificates".into(),
                reason: format!("not a usable trust anchor: {e}"),
            })?;
        }
        let roots = Arc::new(roots);
        let verifier = |optional: bool| {
            let b = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
            let b = if optional {
                b.allow_unauthenticated()
            } else {
                b
            };
            b.build().map_err(|e| TlsError::Pem {
                what: "root certificates".into(),
                reason: e.to_string(),
            })
        };
        Ok(Loaded {
            client_required: verifier(false)?,
            client_optional: verifier(true)?,
            certified,
            roots,
            cert,
        })
    }
}

/// The workload's identity as handshakes see it: the current certificate, rotated in place.
///
/// Clones share one slot. It resolves the certificate for both sides of a handshake
/// ([`ResolvesServerCert`], [`ResolvesClientCert`]), and the mesh verifiers read its roots, so a
/// rotation (new certificate, new roots) takes effect at the next handshake without rebuilding
/// any config or dropping any connection.
#[derive(Clone)]
pub struct IdentitySource {
    current: Arc<ArcSwap<Loaded>>,
}

impl fmt::Debug for IdentitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentitySource")
            .field("certificate", &self.current.load().cert)
            .finish()
    }
}

impl IdentitySource {
    pub fn new(cert: WorkloadCertificate) -> Result<Self, TlsError> {
        Ok(IdentitySource {
            current: Arc::new(ArcSwap::from_pointee(Loaded::new(cert)?)),
        })
    }

    /// Reads Istio's file layout once (see [`WorkloadCertificate::from_dir`]).
    pub fn from_dir(dir: &Path) -> Result<Self, TlsError> {
        Self::new(WorkloadCertificate::from_dir(dir)?)
    }

    /// Swaps in a renewed certificate (and roots). A bad one is refused and the current one
    /// stays.
    pub fn rotate(&self, cert: WorkloadCertificate) -> Result<(), TlsError> {
        self.current.store(Arc::new(Loaded::new(cert)?));
        Ok(())
    }

    /// The current certificate.
    pub fn certificate(&self) -> WorkloadCertificate {
        self.current.load().cert.clone()
    }

    /// The current identity.
    pub fn identity(&self) -> Identity {
        self.current.load().cert.identity.clone()
    }

    pub(super) fn loaded(&self) -> Arc<Loaded> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for IdentitySource {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().certified.clone())
    }
}

impl ResolvesClientCert for IdentitySource {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

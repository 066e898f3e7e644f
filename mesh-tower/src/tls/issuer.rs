//! Short-lived workload certificates from an in-memory CA, renewed before they expire: what
//! istio-agent does for a sidecar, for meshes that run in one process (and for tests).

use std::{sync::Arc, time::Duration};

use mesh_core::Identity;
use tokio::task::JoinHandle;

use super::{CertificateAuthority, IdentitySource, TlsError};

/// When a certificate is renewed: at 80% of its lifetime, as the issue of record asks (Istio's
/// agent rotates at `1 - SECRET_GRACE_PERIOD_RATIO` of it).
pub const RENEW_AT_FRACTION: f64 = 0.8;

/// Issues identities from one CA and keeps them fresh.
#[derive(Clone, Debug)]
pub struct InMemoryIssuer {
    ca: Arc<CertificateAuthority>,
    ttl: Duration,
}

/// Keeps an identity renewed; renewal stops when this is dropped.
#[derive(Debug)]
pub struct Renewal {
    task: JoinHandle<()>,
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl InMemoryIssuer {
    /// A new self-signed CA issuing certificates that live `ttl` (Istio's default is 24 h,
    /// [`DEFAULT_WORKLOAD_TTL`](super::ca::DEFAULT_WORKLOAD_TTL)).
    pub fn generate(ttl: Duration) -> Result<Self, TlsError> {
        Ok(Self::new(
            Arc::new(CertificateAuthority::generate("mesh in-memory CA")?),
            ttl,
        ))
    }

    pub fn new(ca: Arc<CertificateAuthority>, ttl: Duration) -> Self {
        InMemoryIssuer {
            ca,
            ttl: ttl.max(Duration::from_secs(1)),
        }
    }

    pub fn ca(&self) -> &Arc<CertificateAuthority> {
        &self.ca
    }

    /// A source holding a fresh certificate for `identity`, not renewed.
    pub fn issue(&self, identity: &Identity) -> Result<IdentitySource, TlsError> {
        IdentitySource::new(self.ca.issue(identity, self.ttl)?.workload_certificate()?)
    }

    /// A source for `identity` that a background task (on the current tokio runtime) renews at
    /// 80% of each certificate's lifetime. A failed renewal is logged and retried in a second;
    /// the current certificate stays until a new one is in.
    pub fn issue_renewed(
        &self,
        identity: &Identity,
    ) -> Result<(IdentitySource, Renewal), TlsError> {
        let source = self.issue(identity)?;
        let (issuer, identity, renewed) = (self.clone(), identity.clone(), source.clone());
        let task = tokio::spawn(async move {
            let mut wait = issuer.ttl.mul_f64(RENEW_AT_FRACTION);
            loop {
                tokio::time::sleep(wait).await;
                let next = issuer
                    .ca
                    .issue(&identity, issuer.ttl)
                    .and_then(|c| c.workload_certificate())
                    .and_then(|c| renewed.rotate(c));
                wait = match next {
                    Ok(()) => {
                        tracing::debug!(target: "mesh::tls", %identity, "workload certificate renewed");
                        issuer.ttl.mul_f64(RENEW_AT_FRACTION)
                    }
                    Err(e) => {
                        tracing::warn!(target: "mesh::tls", %identity, "renewing the workload certificate: {e}");
                        Duration::from_secs(1)
                    }
                };
            }
        });
        Ok((source, Renewal { task }))
    }
}

//! TLS origination to endpoints: which transport a connection to the picked endpoint uses, as
//! Istio configures an Envoy cluster's upstream `transport_socket`.
//!
//! The decision ([`decide`]), per cluster (host, subset, port):
//! - A DestinationRule's [`trafficPolicy.tls`](https://istio.io/latest/docs/reference/config/networking/destination-rule/#ClientTLSSettings)
//!   (merged: subset port-level, subset, port-level, top-level) wins:
//!   - `DISABLE`: plain text.
//!   - `SIMPLE`: TLS. The server's chain must lead to `caCertificates` (a PEM file), or, without
//!     it, to the Mozilla roots of `webpki-roots` (no system trust store is read: Envoy, too,
//!     uses the roots it is configured with). SNI is `sni`, else the destination host (Envoy's
//!     `auto_sni` would send each request's Host; mesh keeps one SNI per cluster so that pools
//!     stay per cluster). The certificate must carry one of `subjectAltNames` as a DNS or URI
//!     SAN when they are given, else the SNI (hostname verification). `insecureSkipVerify`
//!     accepts any certificate.
//!   - `MUTUAL`: `SIMPLE` plus the client certificate `clientCertificate`/`privateKey` (files).
//!     `credentialName` is refused with a message: Istio reads it on gateways (and on sidecars
//!     only for a DestinationRule with a `workloadSelector`); mesh reads no secrets for
//!     DestinationRules.
//!   - `ISTIO_MUTUAL`: the workload's own certificate ([`IdentitySource`](crate::tls::IdentitySource)),
//!     the mesh roots, and secure naming: the server must present one of `subjectAltNames`, or
//!     else one of the identities of the destination service's endpoints (Istio puts every
//!     service account of the service in the cluster's SAN list; none known: any mesh
//!     identity). SNI `outbound_.<port>_.<subset>_.<host>`, Istio's.
//! - No `tls` in any DestinationRule: [auto mTLS](https://istio.io/latest/docs/concepts/security/#auto-mutual-tls).
//!   `ISTIO_MUTUAL` to endpoints labelled `security.istio.io/tlsMode: istio`, plain text to the
//!   others. Istio's sidecar injector puts that label on every pod it injects; with mesh, put it
//!   in the `labels` of the WorkloadEntry (or ServiceEntry endpoint) of each workload that runs
//!   a mesh inbound listener. Also as Istio: a mesh-wide or namespace-wide PeerAuthentication
//!   `DISABLE` for the service's namespace turns auto mTLS off (its `BestEffortInferServiceMTLSMode`;
//!   workload and port level policies are not looked at), and a stack without an identity
//!   sends plain text (with a debug log).
//!
//! ALPN: `h2` alone when the cluster speaks HTTP/2 (a gRPC or HTTP2 port, or `h2UpgradePolicy:
//! UPGRADE`), `http/1.1` alone otherwise, so mesh-to-mesh HTTP/1.1 stays HTTP/1.1 and hyper's
//! pooled client learns HTTP/2 from the handshake (Istio's in-mesh ALPN adds `istio` and
//! `istio-peer-exchange`, which only its own metadata exchange uses).
//!
//! Principals: a TLS connection's two URI SANs (this side's certificate and the endpoint's)
//! go into the extensions of every response over it as an [`UpstreamTls`], which Istio's
//! client-side metrics read (`source_principal`, `destination_principal`).
//!
//! Pools: the decision is part of the pooled client's key ([`ClientSettings`](super::ClientSettings)),
//! so a connection made with one TLS setting is never reused for another. Failures: a config
//! that cannot work (ISTIO_MUTUAL without an identity, an unreadable file) is an
//! [`OriginationError`]; a failed handshake (untrusted, expired, secure naming) is a
//! [`TlsHandshakeError`], a connect failure for outlier detection. Both answer 503
//! `upstream-connect-failure` with Envoy's `transport failure reason` in the body.

mod config;
mod connector;
#[cfg(test)]
mod tests;

use std::{fmt, sync::Arc};

use mesh_core::model::{
    ClientTls, ClientTlsMode, CompiledMesh, Endpoint, Location, MtlsMode, Service,
};
use rustls_pki_types::ServerName;

pub(crate) use config::{client_config, local_certificate};
pub use connector::{Originate, TlsHandshakeError, UpstreamStream, UpstreamTls};

/// How connections to an endpoint are made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Plain text (DestinationRule `tls.mode: DISABLE`, or auto mTLS to a non-mesh endpoint).
    #[default]
    Plain,
    /// TLS with these settings.
    Tls(Arc<TlsKey>),
}

/// The TLS modes that originate TLS (DestinationRule `tls.mode` other than DISABLE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OriginationMode {
    Simple,
    Mutual,
    IstioMutual,
}

/// Everything that makes one TLS client configuration: connections made with equal keys are
/// interchangeable, and only those share a pool.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TlsKey {
    pub mode: OriginationMode,
    /// The server name sent (SNI) and, for SIMPLE and MUTUAL without `subjectAltNames`, the
    /// name the certificate must be valid for.
    pub sni: String,
    /// SIMPLE/MUTUAL: the DNS or URI SANs one of which the server must present (empty: the
    /// SNI). ISTIO_MUTUAL: the SPIFFE IDs one of which the server must present (empty: any
    /// identity of the mesh).
    pub subject_alt_names: Vec<String>,
    /// `caCertificates` (SIMPLE/MUTUAL): a PEM file of trust roots; `None`: webpki-roots.
    pub ca_certificates: Option<String>,
    /// `clientCertificate` and `privateKey` (MUTUAL): PEM files.
    pub client_certificate: Option<String>,
    pub private_key: Option<String>,
    /// `insecureSkipVerify` (SIMPLE/MUTUAL).
    pub insecure_skip_verify: bool,
    /// ALPN `h2` (else `http/1.1`).
    pub h2: bool,
}

/// A TLS setting that cannot be used: the request fails with 503 before connecting.
#[derive(Clone, Debug, thiserror::Error)]
pub enum OriginationError {
    /// ISTIO_MUTUAL required but the stack has no workload certificate.
    #[error(
        "DestinationRule {rule} sets tls.mode ISTIO_MUTUAL for {host}, but this proxy has no \
         workload identity: configure one (MeshStack::outbound(..).identity(..), or \
         `mesh run --identity-dir DIR`), or set tls.mode to DISABLE"
    )]
    NoIdentity { rule: String, host: String },
    /// `credentialName` on a sidecar.
    #[error(
        "DestinationRule {rule}: tls.credentialName `{name}` is read by Istio's gateways, not by \
         sidecars, and mesh reads no secrets for DestinationRules: give the files instead \
         (tls.caCertificates, and for MUTUAL tls.clientCertificate and tls.privateKey)"
    )]
    CredentialName { rule: String, name: String },
    /// MUTUAL without the client certificate files.
    #[error(
        "DestinationRule {rule}: tls.mode MUTUAL needs tls.clientCertificate and tls.privateKey \
         (PEM file paths)"
    )]
    MissingClientCertificate { rule: String },
    /// `tls.sni` is neither a DNS name nor an IP address.
    #[error("DestinationRule {rule}: tls.sni `{sni}` is not a valid DNS name or IP address")]
    BadSni { rule: String, sni: String },
    /// A certificate or key file could not be read or used.
    #[error("DestinationRule tls.{field} `{path}`: {reason}")]
    File {
        field: &'static str,
        path: String,
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS client configuration for SNI `{sni}`: {reason}")]
    Config { sni: String, reason: String },
}

/// What the transport of a cluster depends on, gathered once per cluster and config version.
#[derive(Debug)]
pub(crate) struct ClusterFacts<'a> {
    /// The destination host (SNI and errors).
    pub host: &'a str,
    /// The service port number.
    pub port: u16,
    pub subset: Option<&'a str>,
    /// The cluster speaks HTTP/2 (ALPN `h2`).
    pub h2: bool,
    /// The merged `tls` of the DestinationRule, and the rule's `namespace/name`.
    pub tls: Option<&'a ClientTls>,
    pub rule: Option<&'a str>,
    /// The SPIFFE IDs of the service's endpoints (secure naming), sorted, deduplicated.
    pub identities: Vec<String>,
    /// A mesh or namespace PeerAuthentication disables mTLS for the service (auto mTLS off).
    pub mtls_disabled: bool,
    /// The stack has a workload certificate.
    pub has_identity: bool,
}

/// The transport to an endpoint of the cluster `c`; `mesh_workload`: the endpoint has Istio's
/// `security.istio.io/tlsMode: istio` label (what auto mTLS looks at).
pub(crate) fn decide(
    c: &ClusterFacts<'_>,
    mesh_workload: bool,
) -> Result<Transport, OriginationError> {
    let rule = || c.rule.unwrap_or("(none)").to_owned();
    let Some(tls) = c.tls else {
        if !mesh_workload || c.mtls_disabled {
            return Ok(Transport::Plain);
        }
        if !c.has_identity {
            tracing::debug!(
                target: "mesh::tls",
                host = c.host,
                "auto mTLS: the endpoint is a mesh workload but this proxy has no identity: plain text"
            );
            return Ok(Transport::Plain);
        }
        return Ok(istio_mutual(c, Vec::new(), None));
    };
    match tls.mode {
        ClientTlsMode::Disable => Ok(Transport::Plain),
        ClientTlsMode::IstioMutual => {
            if !c.has_identity {
                return Err(OriginationError::NoIdentity {
                    rule: rule(),
                    host: c.host.to_owned(),
                });
            }
            let sni = tls.sni.as_deref().map(|s| checked_sni(s, c)).transpose()?;
            Ok(istio_mutual(c, tls.subject_alt_names.clone(), sni))
        }
        ClientTlsMode::Simple | ClientTlsMode::Mutual => {
            if let Some(name) = &tls.credential_name {
                return Err(OriginationError::CredentialName {
                    rule: rule(),
                    name: name.clone(),
                });
            }
            let mutual = tls.mode == ClientTlsMode::Mutual;
            if mutual && (tls.client_certificate.is_none() || tls.private_key.is_none()) {
                return Err(OriginationError::MissingClientCertificate { rule: rule() });
            }
            let sni = checked_sni(tls.sni.as_deref().unwrap_or(c.host), c)?;
            Ok(Transport::Tls(Arc::new(TlsKey {
                mode: if mutual {
                    OriginationMode::Mutual
                } else {
                    OriginationMode::Simple
                },
                sni,
                subject_alt_names: if tls.insecure_skip_verify {
                    Vec::new()
                } else {
                    tls.subject_alt_names.clone()
                },
                ca_certificates: tls
                    .ca_certificates
                    .clone()
                    .filter(|_| !tls.insecure_skip_verify),
                client_certificate: tls.client_certificate.clone().filter(|_| mutual),
                private_key: tls.private_key.clone().filter(|_| mutual),
                insecure_skip_verify: tls.insecure_skip_verify,
                h2: c.h2,
            })))
        }
    }
}

/// ISTIO_MUTUAL to the cluster: secure naming against `subject_alt_names` if given, else the
/// service's identities.
fn istio_mutual(
    c: &ClusterFacts<'_>,
    subject_alt_names: Vec<String>,
    sni: Option<String>,
) -> Transport {
    let mut expected = if subject_alt_names.is_empty() {
        c.identities.clone()
    } else {
        subject_alt_names
    };
    expected.sort();
    expected.dedup();
    Transport::Tls(Arc::new(TlsKey {
        mode: OriginationMode::IstioMutual,
        sni: sni.unwrap_or_else(|| istio_sni(c.host, c.port, c.subset)),
        subject_alt_names: expected,
        ca_certificates: None,
        client_certificate: None,
        private_key: None,
        insecure_skip_verify: false,
        h2: c.h2,
    }))
}

/// Istio's SNI for ISTIO_MUTUAL (`model.BuildDNSSrvSubsetKey`):
/// `outbound_.9080_.v1_.reviews.default.svc.cluster.local`, `_` for no subset. rustls takes it
/// as a DNS name (it allows `_` in labels); a host that makes it invalid (a label over 63
/// bytes, a name over 253) falls back to the host itself.
pub(crate) fn istio_sni(host: &str, port: u16, subset: Option<&str>) -> String {
    let sni = format!("outbound_.{port}_.{}_.{host}", subset.unwrap_or(""));
    if ServerName::try_from(sni.as_str()).is_ok() {
        sni
    } else {
        host.to_owned()
    }
}

fn checked_sni(sni: &str, c: &ClusterFacts<'_>) -> Result<String, OriginationError> {
    match ServerName::try_from(sni) {
        Ok(_) => Ok(sni.to_owned()),
        Err(_) => Err(OriginationError::BadSni {
            rule: c.rule.unwrap_or("(none)").to_owned(),
            sni: sni.to_owned(),
        }),
    }
}

/// The SPIFFE IDs of `service`'s endpoints (all of them, whatever the subset, as Istio lists
/// every service account of a service), sorted and deduplicated.
pub(crate) fn service_identities(service: &Service) -> Vec<String> {
    let mut ids: Vec<String> = service
        .endpoints
        .iter()
        .filter_map(|e| e.identity.as_ref().map(|id| id.to_string()))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Whether a mesh-wide or namespace-wide PeerAuthentication (no selector) sets `DISABLE` for
/// `service`'s namespace, the namespace one winning: Istio's `BestEffortInferServiceMTLSMode`,
/// which makes auto mTLS send plain text. External services are never inferred.
pub(crate) fn mtls_disabled(mesh: &CompiledMesh, service: &Service) -> bool {
    if service.location == Location::MeshExternal {
        return false;
    }
    let mode_in = |namespace: &str| {
        mesh.peer_authentications
            .iter()
            .filter(|p| p.scope.selector.is_none() && p.scope.namespace == namespace)
            .map(|p| p.mode)
            .find(|m| *m != MtlsMode::Unset)
    };
    mode_in(&service.namespace).or_else(|| mode_in(&mesh.root_namespace)) == Some(MtlsMode::Disable)
}

/// One cluster's decisions for one config version: for mesh workloads and for the others.
pub(crate) struct Decided {
    version: u64,
    mesh_workload: Result<Transport, OriginationError>,
    other: Result<Transport, OriginationError>,
}

impl fmt::Debug for Decided {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decided")
            .field("version", &self.version)
            .field("mesh_workload", &self.mesh_workload)
            .field("other", &self.other)
            .finish()
    }
}

impl Decided {
    pub fn new(version: u64, facts: &ClusterFacts<'_>) -> Self {
        Decided {
            version,
            mesh_workload: decide(facts, true),
            other: decide(facts, false),
        }
    }

    /// The transport to `endpoint`.
    pub fn for_endpoint(&self, endpoint: &Endpoint) -> Result<Transport, OriginationError> {
        if endpoint.is_mesh_workload() {
            self.mesh_workload.clone()
        } else {
            self.other.clone()
        }
    }
}

/// The decisions of every cluster, remade when the config version changes.
pub(crate) type ClusterTransports = super::per_cluster::PerCluster<Decided>;

/// The reason a TLS origination failed, for Envoy's `transport failure reason` in a 503 body:
/// the first [`TlsHandshakeError`] or [`OriginationError`] in `err`'s chain.
pub(crate) fn transport_failure_reason(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(h) = e.downcast_ref::<TlsHandshakeError>() {
            return Some(h.to_string());
        }
        if let Some(o) = e.downcast_ref::<OriginationError>() {
            return Some(o.to_string());
        }
        cur = e.source();
    }
    None
}

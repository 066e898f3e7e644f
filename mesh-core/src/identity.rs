//! Workload identities as SPIFFE IDs.

use std::fmt;

/// The trust domain of a mesh without one configured, as in Istio.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// A workload identity: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl Identity {
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        Identity {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        }
    }

    /// Parses `spiffe://td/ns/NS/sa/SA`.
    pub fn parse_spiffe(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("spiffe://")?;
        let mut parts = rest.split('/');
        let td = parts.next()?;
        let (ns_kw, ns, sa_kw, sa) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || ns_kw != "ns"
            || sa_kw != "sa"
            || td.is_empty()
            || ns.is_empty()
            || sa.is_empty()
        {
            return None;
        }
        Some(Identity::new(td, ns, sa))
    }

    /// The principal as AuthorizationPolicy writes it: `td/ns/NS/sa/SA` (no scheme).
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let id = Identity::new("cluster.local", "default", "bookinfo-reviews");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
        );
        assert_eq!(Identity::parse_spiffe(&id.to_string()), Some(id.clone()));
        assert_eq!(
            id.principal(),
            "cluster.local/ns/default/sa/bookinfo-reviews"
        );
        assert_eq!(Identity::parse_spiffe("spiffe://td/ns/a"), None);
        assert_eq!(Identity::parse_spiffe("https://td/ns/a/sa/b"), None);
    }
}

//! Hostnames as Istio qualifies and matches them.

use std::{fmt, sync::Arc};

/// The DNS suffix of Kubernetes services (`svc.cluster.local`).
pub const DEFAULT_DOMAIN_SUFFIX: &str = "svc.cluster.local";

/// A fully qualified hostname (`reviews.default.svc.cluster.local`), a wildcard
/// (`*.example.com`), or `*`. Stored lowercase, shared: a clone (each routed request takes
/// one) costs a reference count, not an allocation.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Host(Arc<str>);

impl Host {
    /// Takes `name` as written, lowercased, without qualifying it.
    pub fn new(name: &str) -> Self {
        let name = name.trim_end_matches('.');
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Host(name.to_ascii_lowercase().into())
        } else {
            Host(name.into())
        }
    }

    /// Qualifies a host as Istio does for a resource in `namespace`: a name without a dot
    /// (`reviews`) becomes `reviews.<namespace>.svc.cluster.local`; anything with a dot, and
    /// wildcards, are taken as written. (Istio's docs advise writing FQDNs for that reason:
    /// `reviews.prod` is not `reviews.prod.svc.cluster.local`.)
    pub fn qualify(name: &str, namespace: &str) -> Self {
        let name = name.trim_end_matches('.');
        if name.contains('.') || name.starts_with('*') || name.is_empty() {
            Host::new(name)
        } else {
            Host(
                format!(
                    "{}.{}.{DEFAULT_DOMAIN_SUFFIX}",
                    name.to_ascii_lowercase(),
                    namespace.to_ascii_lowercase()
                )
                .into(),
            )
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with('*')
    }

    /// Whether this host, perhaps a wildcard, covers the concrete `name` (lowercase, no port).
    /// `*.example.com` covers `a.example.com` and `a.b.example.com` but not `example.com`;
    /// `*` covers everything.
    pub fn matches(&self, name: &str) -> bool {
        match self.0.strip_prefix('*') {
            Some("") => true,
            Some(suffix) => name.len() > suffix.len() && ends_with_ignore_case(name, suffix),
            None => self.0.eq_ignore_ascii_case(name),
        }
    }

    /// Whether the two (perhaps wildcard) hosts have a name in common: Istio's test for a
    /// VirtualService host against a Gateway or Sidecar host.
    pub fn overlaps(&self, other: &Host) -> bool {
        match (self.0.strip_prefix('*'), other.0.strip_prefix('*')) {
            (Some(a), Some(b)) => a.ends_with(b) || b.ends_with(a),
            (Some(_), None) => self.matches(&other.0),
            (None, Some(_)) => other.matches(&self.0),
            (None, None) => self.0 == other.0,
        }
    }

    /// How specific the host is, for "most specific match wins": exact names beat wildcards,
    /// longer wildcard suffixes beat shorter ones.
    pub fn specificity(&self) -> (bool, usize) {
        (!self.is_wildcard(), self.0.len())
    }

    /// The short service name and namespace of a Kubernetes service FQDN
    /// (`reviews.default.svc.cluster.local` gives `("reviews", "default")`).
    pub fn service_name_and_namespace(&self) -> Option<(&str, &str)> {
        let rest = self
            .0
            .strip_suffix(DEFAULT_DOMAIN_SUFFIX)?
            .strip_suffix('.')?;
        let (name, ns) = rest.split_once('.')?;
        (!ns.contains('.')).then_some((name, ns))
    }
}

fn ends_with_ignore_case(name: &str, suffix: &str) -> bool {
    name.len() >= suffix.len()
        && name.is_char_boundary(name.len() - suffix.len())
        && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Splits an HTTP authority into host and port (`reviews:9080`, `[::1]:80`).
pub fn split_authority(authority: &str) -> (&str, Option<u16>) {
    if let Some((host, tail)) = authority
        .strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
    {
        let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
        return (host, port);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(p) => (host, Some(p)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn qualifies_short_names_only() {
        assert_eq!(
            Host::qualify("reviews", "default").as_str(),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(
            Host::qualify("reviews.prod", "default").as_str(),
            "reviews.prod"
        );
        assert_eq!(
            Host::qualify("*.example.com", "x").as_str(),
            "*.example.com"
        );
        assert_eq!(Host::qualify("*", "x").as_str(), "*");
        assert_eq!(
            Host::qualify("Ratings", "NS").as_str(),
            "ratings.ns.svc.cluster.local"
        );
    }

    #[test]
    fn wildcards() {
        let w = Host::new("*.example.com");
        assert!(w.matches("a.example.com"));
        assert!(w.matches("a.b.example.com"));
        assert!(!w.matches("example.com"));
        assert!(Host::new("*").matches("anything"));
        assert!(w.overlaps(&Host::new("*.b.example.com")));
        assert!(!w.overlaps(&Host::new("*.example.org")));
    }

    #[test]
    fn authorities() {
        assert_eq!(split_authority("reviews:9080"), ("reviews", Some(9080)));
        assert_eq!(split_authority("reviews"), ("reviews", None));
        assert_eq!(split_authority("[::1]:80"), ("::1", Some(80)));
    }

    #[test]
    fn service_names() {
        let h = Host::qualify("reviews", "default");
        assert_eq!(h.service_name_and_namespace(), Some(("reviews", "default")));
        assert_eq!(Host::new("example.com").service_name_and_namespace(), None);
    }

    proptest! {
        #[test]
        fn wildcard_matches_every_subdomain(label in "[a-z0-9-]{1,20}", domain in "[a-z]{1,10}\\.[a-z]{2,5}") {
            let w = Host::new(&format!("*.{domain}"));
            let name = format!("{label}.{domain}");
            prop_assert!(w.matches(&name));
            prop_assert!(Host::new(&name).matches(&name));
            prop_assert!(!w.matches(&domain));
        }

        #[test]
        fn never_panics(a in "\\PC*", b in "\\PC*") {
            let _ = Host::new(&a).matches(&b);
            let _ = Host::new(&a).overlaps(&Host::new(&b));
            let _ = split_authority(&a);
        }
    }
}

//! The workloads of Bookinfo (one per service version, as the Deployments of Istio's
//! `bookinfo.yaml`) and the WorkloadEntries that put them in the registry.
//!
//! Workloads listen on ephemeral loopback ports, so their addresses are known only once they
//! are bound: the runner then renders [`workload_entries`] into its config folder
//! (`workloads.yaml`), next to the static Services whose selectors match them.

use std::{fmt::Write, net::SocketAddr};

/// The namespace Bookinfo runs in.
pub const NAMESPACE: &str = "default";
/// The mesh's trust domain (Istio's default).
pub const TRUST_DOMAIN: &str = "cluster.local";

/// One workload: an app at a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Workload {
    pub app: &'static str,
    pub version: &'static str,
}

/// Every Bookinfo workload.
pub const WORKLOADS: [Workload; 6] = [
    Workload::new("productpage", "v1"),
    Workload::new("details", "v1"),
    Workload::new("reviews", "v1"),
    Workload::new("reviews", "v2"),
    Workload::new("reviews", "v3"),
    Workload::new("ratings", "v1"),
];

impl Workload {
    pub const fn new(app: &'static str, version: &'static str) -> Self {
        Workload { app, version }
    }

    /// `reviews-v2`: the WorkloadEntry's name (a Deployment's in Istio's sample).
    pub fn name(&self) -> String {
        format!("{}-{}", self.app, self.version)
    }

    /// `bookinfo-reviews`: the service account of every version of an app, as in Istio's
    /// sample, so that a policy names the app's identity once.
    pub fn service_account(&self) -> String {
        format!("bookinfo-{}", self.app)
    }

    /// The SPIFFE identity of the workload's certificate.
    pub fn spiffe_id(&self) -> String {
        format!(
            "spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/{}",
            self.service_account()
        )
    }

    /// The labels the workload's policies select it by: `app` and `version`.
    pub fn labels(&self) -> [(&'static str, &'static str); 2] {
        [("app", self.app), ("version", self.version)]
    }

    /// The services the app calls: productpage calls details and reviews, reviews calls
    /// ratings (v1 never does, but it is the same service, configured the same way, as in
    /// Istio's sample), details and ratings call nobody. These are the workloads that need an
    /// outbound listener (a sidecar's, or the in-process outbound stack).
    pub fn calls(&self) -> &'static [&'static str] {
        match self.app {
            "productpage" => &["details", "reviews"],
            "reviews" => &["ratings"],
            _ => &[],
        }
    }
}

/// The workload of [`WORKLOADS`] that is `app` at `version`.
pub fn find(app: &str, version: &str) -> Option<Workload> {
    WORKLOADS
        .iter()
        .find(|w| w.app == app && w.version == version)
        .copied()
}

/// `productpage v1, details v1, ...`: the workloads, for error messages.
pub fn names() -> String {
    WORKLOADS
        .iter()
        .map(|w| format!("{} {}", w.app, w.version))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The WorkloadEntries of `bound` workloads, as YAML: address and `http` port, labels `app`,
/// `version` and `security.istio.io/tlsMode: istio` (the workload takes mTLS, so clients with
/// an identity use it: Istio's auto mTLS), and the service account.
pub fn workload_entries<'a>(bound: impl IntoIterator<Item = (&'a Workload, SocketAddr)>) -> String {
    let mut yaml = String::from(
        "# Rendered by the Bookinfo runner at start from the ports it bound; rewritten at every\n\
         # start, so edits here do not last. The Services in services.yaml select these.\n",
    );
    for (i, (w, addr)) in bound.into_iter().enumerate() {
        if i > 0 {
            yaml.push_str("---\n");
        }
        let _ = write!(
            yaml,
            "apiVersion: networking.istio.io/v1\n\
             kind: WorkloadEntry\n\
             metadata:\n  name: {name}\n  namespace: {NAMESPACE}\n\
             spec:\n  address: {ip}\n  ports:\n    http: {port}\n\
             \x20 labels:\n    app: {app}\n    version: {version}\n    security.istio.io/tlsMode: istio\n\
             \x20 serviceAccount: {sa}\n",
            name = w.name(),
            ip = addr.ip(),
            port = addr.port(),
            app = w.app,
            version = w.version,
            sa = w.service_account(),
        );
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_put_each_workload_at_its_address_with_its_labels_and_account() {
        let bound: Vec<_> = WORKLOADS
            .iter()
            .enumerate()
            .map(|(i, w)| (w, SocketAddr::from(([127, 0, 0, 1], 40000 + i as u16))))
            .collect();
        let yaml = format!(
            "{}\n---\n{}",
            include_str!("../config/services.yaml"),
            workload_entries(bound.iter().map(|(w, a)| (*w, *a)))
        );
        let mesh = mesh_config::Loader::new()
            .check_str("workloads.yaml", &yaml)
            .into_mesh()
            .unwrap();
        let reviews = mesh.service("reviews.default.svc.cluster.local").unwrap();
        let mut ports: Vec<(String, u16, String)> = reviews
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.labels["version"].clone(),
                    e.ports["http"],
                    e.service_account.clone().unwrap_or_default(),
                )
            })
            .collect();
        ports.sort();
        assert_eq!(
            ports,
            [
                ("v1".to_owned(), 40002, "bookinfo-reviews".to_owned()),
                ("v2".to_owned(), 40003, "bookinfo-reviews".to_owned()),
                ("v3".to_owned(), 40004, "bookinfo-reviews".to_owned()),
            ]
        );
        assert!(
            reviews
                .endpoints
                .iter()
                .all(|e| e.is_mesh_workload() && e.address.to_string() == "127.0.0.1")
        );
    }

    #[test]
    fn find_knows_every_workload_and_only_those() {
        for w in &WORKLOADS {
            assert_eq!(find(w.app, w.version), Some(*w));
        }
        assert_eq!(find("reviews", "v4"), None);
        assert_eq!(find("details", "v2"), None);
        assert!(names().contains("reviews v3"));
    }

    #[test]
    fn callers_are_productpage_and_reviews() {
        let callers: Vec<String> = WORKLOADS
            .iter()
            .filter(|w| !w.calls().is_empty())
            .map(Workload::name)
            .collect();
        assert_eq!(
            callers,
            ["productpage-v1", "reviews-v1", "reviews-v2", "reviews-v3"]
        );
    }

    #[test]
    fn identities_are_per_app() {
        let w = Workload::new("reviews", "v3");
        assert_eq!(w.name(), "reviews-v3");
        assert_eq!(
            w.spiffe_id(),
            "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
        );
    }
}

//! Serde models of the Istio kinds mesh reads, one module per kind, with Istio's field names and
//! enums, and each kind's admission validation (what the CRD schema, its CEL rules and istiod's
//! validating webhook reject).
//!
//! The rules several kinds share live once, in [`rules`] (names, addresses, labels, durations,
//! `exportTo`) and [`security`] (what the security kinds share); the tests of every kind walk
//! Istio's own YAML with one walker, `corpus`.
//!
//! Every struct denies unknown fields, so a typo is an error at its position. A spec type is named
//! as in Istio's API (`VirtualService` is the `spec` of a VirtualService object).

pub mod authorization_policy;
pub mod common;
#[cfg(test)]
pub(crate) mod corpus;
pub mod destination_rule;
pub mod envoy_filter;
pub mod gateway;
pub mod kube;
pub mod peer_authentication;
pub mod request_authentication;
pub(crate) mod rules;
pub(crate) mod security;
pub mod service_entry;
pub mod sidecar;
pub mod virtual_service;

pub use common::{Issue, Issues, ObjectMeta, Severity};

/// The object a spec belongs to, as validators need it.
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    pub name: &'a str,
    /// The object's namespace (`default` when the document has none).
    pub namespace: &'a str,
    pub metadata: &'a ObjectMeta,
}

/// Parses a YAML snippet into `T`; the error is serde-saphyr's one-line message. For tests of
/// the models.
#[cfg(test)]
pub(crate) fn from_yaml<T: serde::de::DeserializeOwned>(yaml: &str) -> Result<T, String> {
    serde_saphyr::from_str(yaml).map_err(|e| e.without_snippet().to_string())
}

/// Runs `validate` on a spec parsed from `yaml` and returns the issues. For tests of validators.
#[cfg(test)]
pub(crate) fn validate_yaml<T: serde::de::DeserializeOwned>(
    yaml: &str,
    validate: impl FnOnce(&T, &Meta<'_>, &mut Issues),
) -> Vec<Issue> {
    let spec: T = from_yaml(yaml).unwrap_or_else(|e| panic!("fixture does not parse: {e}"));
    let metadata = ObjectMeta::default();
    let meta = Meta {
        name: "test",
        namespace: "default",
        metadata: &metadata,
    };
    let mut out = Issues::default();
    validate(&spec, &meta, &mut out);
    out.items
}

/// The errors (not warnings) among `issues`. For tests of validators.
#[cfg(test)]
pub(crate) fn only_errors(issues: Vec<Issue>) -> Vec<Issue> {
    issues
        .into_iter()
        .filter(|i| i.severity == Severity::Error)
        .collect()
}

/// Asserts that `errors` has one at `path` whose message contains `needle`.
#[cfg(test)]
#[track_caller]
pub(crate) fn assert_has_error(errors: &[Issue], path: &str, needle: &str) {
    assert!(
        errors
            .iter()
            .any(|i| i.path == path && i.message.contains(needle)),
        "expected an error at {path} containing {needle:?}, got {errors:#?}"
    );
}

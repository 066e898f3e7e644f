//! `PeerAuthentication` (security.istio.io v1 and v1beta1): whether a workload accepts plain text,
//! mTLS, or both, for the whole workload and per port.
//!
//! The model is the union of both served versions (their schemas are the same). Validation
//! implements the CRD schema and CEL rules and istiod's webhook, with their wording.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use super::{
    Issues, Meta,
    common::WorkloadSelector,
    security::{deserialize_enum, enum_name, validate_annotations, validate_selector},
};

/// The `spec` of a PeerAuthentication.
///
/// <https://istio.io/latest/docs/reference/config/security/peer_authentication/#PeerAuthentication>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PeerAuthentication {
    /// The workloads the policy applies to; none means the namespace (or the mesh, in the root
    /// namespace).
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    /// The mTLS mode of the workload.
    #[serde(default)]
    pub mtls: Option<MutualTls>,
    /// Per-port modes, keyed by the workload's port number (as written: a key that is not a
    /// number is reported by validation, with Istio's message).
    #[serde(default)]
    pub port_level_mtls: Option<BTreeMap<String, MutualTls>>,
}

/// `PeerAuthentication.MutualTLS`.
///
/// <https://istio.io/latest/docs/reference/config/security/peer_authentication/#PeerAuthentication-MutualTLS>
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MutualTls {
    #[serde(default)]
    pub mode: MutualTlsMode,
}

/// `PeerAuthentication.MutualTLS.Mode`.
///
/// <https://istio.io/latest/docs/reference/config/security/peer_authentication/#PeerAuthentication-MutualTLS-Mode>
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MutualTlsMode {
    /// Inherit from the parent policy (namespace, then mesh); PERMISSIVE at the top.
    #[default]
    Unset,
    /// Plain text only.
    Disable,
    /// Both plain text and mTLS.
    Permissive,
    /// mTLS only.
    Strict,
}

impl MutualTlsMode {
    const ALL: &[(&str, MutualTlsMode)] = &[
        ("UNSET", MutualTlsMode::Unset),
        ("DISABLE", MutualTlsMode::Disable),
        ("PERMISSIVE", MutualTlsMode::Permissive),
        ("STRICT", MutualTlsMode::Strict),
    ];

    /// Istio's spelling (`STRICT`).
    pub fn as_str(self) -> &'static str {
        enum_name(Self::ALL, self)
    }
}

impl<'de> Deserialize<'de> for MutualTlsMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_enum(d, Self::ALL)
    }
}

// === impl PeerAuthentication: validation ===

impl PeerAuthentication {
    /// What the API server (schema and CEL rules) and istiod's webhook reject.
    pub fn validate(&self, meta: &Meta<'_>, out: &mut Issues) {
        validate_annotations(meta, None, out);
        validate_selector(self.selector.as_ref(), out);

        let Some(ports) = &self.port_level_mtls else {
            return;
        };
        let has_labels = self
            .selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty());
        if !has_labels {
            out.error(
                "spec.portLevelMtls",
                "portLevelMtls requires selector: a mesh or namespace policy cannot have port \
                 level mTLS; add `selector.matchLabels` for the workloads whose ports these are",
            );
        }
        if ports.is_empty() {
            out.error(
                "spec.portLevelMtls",
                "spec.portLevelMtls in body should have at least 1 properties: add a port, or \
                 remove `portLevelMtls`",
            );
        }
        for key in ports.keys() {
            let path = format!("spec.portLevelMtls.{key}");
            match key.parse::<i64>() {
                Err(_) => out.error(
                    path,
                    format!(
                        "portLevelMtls key {key:?} is not a port: type conversion error from \
                         string to int; key the map by port number (\"8080\")"
                    ),
                ),
                Ok(port) if !(1..=65535).contains(&port) => {
                    out.error(path, format!("port must be between 1-65535, found {port}"))
                }
                Ok(_) => {}
            }
        }
    }

    /// The port-level modes whose key is a valid port.
    pub fn port_modes(&self) -> impl Iterator<Item = (u16, MutualTlsMode)> + '_ {
        self.port_level_mtls
            .iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.parse::<u16>().ok().filter(|p| *p != 0)?, v.mode)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{Issue, Severity, corpus, from_yaml, validate_yaml};

    fn errors(yaml: &str) -> Vec<Issue> {
        crate::kinds::only_errors(validate_yaml::<PeerAuthentication>(
            yaml,
            PeerAuthentication::validate,
        ))
    }

    #[track_caller]
    fn assert_error(yaml: &str, path: &str, needle: &str) {
        crate::kinds::assert_has_error(&errors(yaml), path, needle);
    }

    #[track_caller]
    fn assert_clean(yaml: &str) {
        let errors = errors(yaml);
        assert!(errors.is_empty(), "expected no errors, got {errors:#?}");
    }

    const FULL: &str = r#"
selector:
  matchLabels:
    app: reviews
mtls:
  mode: STRICT
portLevelMtls:
  8080:
    mode: DISABLE
  "9090":
    mode: PERMISSIVE
  "9091": {}
"#;

    #[test]
    fn parses_every_field() {
        let p: PeerAuthentication = from_yaml(FULL).unwrap();
        assert_eq!(p.mtls.unwrap().mode, MutualTlsMode::Strict);
        assert_eq!(p.selector.as_ref().unwrap().match_labels["app"], "reviews");
        let ports: Vec<_> = p.port_modes().collect();
        assert_eq!(
            ports,
            [
                (8080, MutualTlsMode::Disable),
                (9090, MutualTlsMode::Permissive),
                (9091, MutualTlsMode::Unset)
            ]
        );
        assert_eq!(MutualTlsMode::Permissive.as_str(), "PERMISSIVE");
        assert_clean(FULL);
    }

    #[test]
    fn empty_spec_is_valid() {
        let p: PeerAuthentication = from_yaml("{}").unwrap();
        assert!(p.mtls.is_none() && p.port_level_mtls.is_none());
        assert_clean("{}");
        assert_clean("mtls: {}\n");
    }

    #[test]
    fn typo_is_an_unknown_field() {
        let err = from_yaml::<PeerAuthentication>("mTLS:\n  mode: STRICT\n").unwrap_err();
        assert!(err.contains("unknown field `mTLS`"), "{err}");
        let err = from_yaml::<PeerAuthentication>("mtls:\n  mod: STRICT\n").unwrap_err();
        assert!(err.contains("unknown field `mod`"), "{err}");
    }

    #[test]
    fn bad_mode_is_rejected() {
        let err = from_yaml::<PeerAuthentication>("mtls:\n  mode: strict\n").unwrap_err();
        assert!(err.contains(r#"Unsupported value: "strict""#), "{err}");
        assert!(
            err.contains(r#""UNSET", "DISABLE", "PERMISSIVE", "STRICT""#),
            "{err}"
        );
        let yaml = "selector:\n  matchLabels:\n    a: b\nportLevelMtls:\n  \"80\":\n    mode: ON\n";
        assert!(from_yaml::<PeerAuthentication>(yaml).is_err());
    }

    #[test]
    fn port_level_mtls_requires_a_selector_with_labels() {
        let ports = "portLevelMtls:\n  \"80\":\n    mode: STRICT\n";
        assert_error(
            ports,
            "spec.portLevelMtls",
            "portLevelMtls requires selector",
        );
        assert_error(
            &format!("selector: {{}}\n{ports}"),
            "spec.portLevelMtls",
            "portLevelMtls requires selector",
        );
        assert_clean(&format!("selector:\n  matchLabels:\n    app: a\n{ports}"));
    }

    #[test]
    fn port_level_mtls_keys() {
        let yaml = |key: &str| {
            format!(
                "selector:\n  matchLabels:\n    app: a\nportLevelMtls:\n  \"{key}\":\n    mode: STRICT\n"
            )
        };
        assert_error(
            &yaml("http"),
            "spec.portLevelMtls.http",
            "type conversion error from",
        );
        assert_error(
            &yaml("0"),
            "spec.portLevelMtls.0",
            "port must be between 1-65535",
        );
        assert_error(
            &yaml("65536"),
            "spec.portLevelMtls.65536",
            "port must be between 1-65535",
        );
        assert_error(
            &yaml("-1"),
            "spec.portLevelMtls.-1",
            "port must be between 1-65535",
        );
        assert_clean(&yaml("65535"));
        assert_clean(&yaml("1"));
    }

    #[test]
    fn port_level_mtls_must_not_be_empty() {
        assert_error(
            "selector:\n  matchLabels:\n    app: a\nportLevelMtls: {}\n",
            "spec.portLevelMtls",
            "spec.portLevelMtls in body should have at least 1 properties",
        );
    }

    #[test]
    fn selector_rules_are_shared() {
        assert_error(
            "selector:\n  matchLabels:\n    app: \"*\"\n",
            "spec.selector.matchLabels.app",
            "wildcard not allowed in label value match",
        );
        let warned =
            validate_yaml::<PeerAuthentication>("selector: {}\n", PeerAuthentication::validate);
        assert!(
            warned.iter().all(|i| i.severity == Severity::Warning),
            "{warned:#?}"
        );
        assert_eq!(warned.len(), 1);
    }

    #[test]
    fn dry_run_annotation_is_not_supported() {
        let metadata = crate::kinds::ObjectMeta {
            annotations: [("istio.io/dry-run".to_owned(), "true".to_owned())].into(),
            ..Default::default()
        };
        let meta = Meta {
            name: "pa",
            namespace: "ns",
            metadata: &metadata,
        };
        let mut out = Issues::default();
        PeerAuthentication::default().validate(&meta, &mut out);
        assert!(
            out.items.iter().any(|i| i.severity == Severity::Error
                && i.message.contains("ns/pa has unsupported annotation istio.io/dry-run, please remove the annotation")),
            "{:#?}",
            out.items
        );
    }

    #[test]
    fn istio_corpus() {
        let checked = corpus::check::<PeerAuthentication>(
            "PeerAuthentication",
            corpus::security_api,
            corpus::Spec::Optional,
            PeerAuthentication::validate,
            &[],
        );
        assert_ne!(checked, Some(0), "no PeerAuthentication document found");
    }
}

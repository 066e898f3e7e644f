//! Kubernetes labels (istiod's `labels.Instance.Validate`) and the two forms of workload
//! selector: the networking one (`labels`, of ServiceEntry, Sidecar and EnvoyFilter) and the
//! `matchLabels` one (of DestinationRule and the security kinds).

use std::{collections::BTreeMap, sync::LazyLock};

use regex::Regex;

use super::{too_long, too_many};
use crate::kinds::{Issues, common::NetworkingWorkloadSelector};

const DNS1123_LABEL: &str = "[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?";
const QUALIFIED_NAME: &str = "(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";

static LABEL_KEY_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"^({DNS1123_LABEL}(?:\.{DNS1123_LABEL})*/)?({QUALIFIED_NAME})$"
    ))
    .expect("valid regex")
});
static LABEL_VALUE_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!("^({QUALIFIED_NAME})?$")).expect("valid regex"));

/// Kubernetes label keys and values, as istiod's `labels.Instance.Validate`: one
/// `(key, message)` per bad key or value.
pub(crate) fn label_errors(labels: &BTreeMap<String, String>) -> Vec<(&str, String)> {
    let mut errs = Vec::new();
    for (k, v) in labels {
        match LABEL_KEY_RE.captures(k) {
            None => errs.push((k.as_str(), format!("invalid tag key: {k:?}"))),
            Some(c) => {
                if c.get(1).is_some_and(|p| p.as_str().len() - 1 > 253) {
                    errs.push((
                        k,
                        format!("invalid tag key: {k:?} (DNS prefix is too long)"),
                    ));
                } else if c.get(2).is_some_and(|n| n.as_str().len() > 63) {
                    errs.push((k, format!("invalid tag key: {k:?} (name is too long)")));
                }
            }
        }
        if !LABEL_VALUE_RE.is_match(v) {
            errs.push((k, format!("invalid tag value: {v:?}")));
        }
    }
    errs
}

/// [`label_errors`], each placed at `base.KEY`.
pub(crate) fn validate_labels(labels: &BTreeMap<String, String>, base: &str, out: &mut Issues) {
    for (k, e) in label_errors(labels) {
        out.error(format!("{base}.{k}"), e);
    }
}

/// The networking `workloadSelector` (`labels`) of ServiceEntry, Sidecar and EnvoyFilter: the
/// CRD's limits and CEL rule, and istiod's `ValidateAlphaWorkloadSelector`. Issues are placed
/// under `base.labels`. A selector without labels is warned about by
/// [`warn_selector_without_labels`].
pub(crate) fn validate_selector(sel: &NetworkingWorkloadSelector, base: &str, out: &mut Issues) {
    let base = format!("{base}.labels");
    if sel.labels.len() > 256 {
        too_many(out, &base, sel.labels.len(), 256);
    }
    for (k, v) in &sel.labels {
        let path = format!("{base}.{k}");
        if k.is_empty() {
            out.error(
                &base,
                format!("empty key is not supported in selector: \"{k}={v}\""),
            );
        }
        if v.contains('*') {
            out.error(
                &path,
                format!(
                    "Invalid value: \"string\": wildcard is not supported in selector: \
                     \"{k}={v}\" (select by exact label values)"
                ),
            );
        } else if k.contains('*') {
            out.error(
                &path,
                format!("wildcard is not supported in selector: \"{k}={v}\""),
            );
        }
        if v.len() > 63 {
            too_long(out, &path, v.len(), 63);
        }
    }
}

/// istiod's warning for a networking `workloadSelector` without labels, at `path`; `kind`
/// prefixes it (`service entry`, `Envoy filter`, `sidecar`).
pub(crate) fn warn_selector_without_labels(
    sel: &NetworkingWorkloadSelector,
    path: &str,
    kind: &str,
    out: &mut Issues,
) {
    if sel.labels.is_empty() {
        out.warn(
            path,
            format!(
                "{kind}: workload selector specified without labels, will be applied to all \
                 services in namespace"
            ),
        );
    }
}

/// The `matchLabels` of a `selector` (security kinds) or a DestinationRule's
/// `workloadSelector`: the CRD's CEL rules and limits, and istiod's warning for a selector
/// without labels. `base` is the path of `matchLabels`.
pub(crate) fn validate_match_labels(
    labels: &BTreeMap<String, String>,
    base: &str,
    out: &mut Issues,
) {
    if labels.len() > 4096 {
        too_many(out, base, labels.len(), 4096);
    }
    if labels.is_empty() {
        out.warn(
            base,
            "workload selector specified without labels: the rule applies to every workload in \
             the namespace",
        );
    }
    for (k, v) in labels {
        let path = format!("{base}.{k}");
        if k.is_empty() {
            out.error(base, "Invalid value: \"object\": key must not be empty");
        }
        if k.contains('*') {
            out.error(
                &path,
                "Invalid value: \"object\": wildcard not allowed in label key match",
            );
        }
        if v.contains('*') {
            out.error(
                &path,
                "Invalid value: \"string\": wildcard not allowed in label value match",
            );
        }
        if v.len() > 63 {
            out.error(
                &path,
                format!(
                    "Too long: may not be more than 63 bytes (the value has {})",
                    v.len()
                ),
            );
        }
    }
}

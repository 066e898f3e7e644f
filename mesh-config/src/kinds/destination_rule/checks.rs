//! Checks shared by the networking kinds: durations (CEL and webhook rules), host names
//! (istiod's `ValidateFQDN` / `ValidateWildcardDomain`), Kubernetes labels, and `exportTo`.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::LazyLock,
    time::Duration as StdDuration,
};

use regex::Regex;

use crate::kinds::{Issues, common::Duration};

// === durations ===

/// Which rules apply to a duration field: the CRD's CEL rule (`>= 1ms`), istiod's
/// `ValidateDuration` (`>= 1ms`, whole milliseconds), or both.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum DurationRule {
    Cel,
    Webhook,
    CelAndWebhook,
}

pub(crate) fn check_duration(
    out: &mut Issues,
    path: &str,
    d: Option<Duration>,
    rule: DurationRule,
) {
    let Some(d) = d else { return };
    let ms = StdDuration::from_millis(1);
    if d.get() < ms {
        let msg = match rule {
            DurationRule::Webhook => "duration must be greater than 1ms".to_owned(),
            _ => format!("Invalid value: \"{d:?}\": must be a valid duration greater than 1ms"),
        };
        out.error(path, msg);
    } else if rule != DurationRule::Cel && d.get().subsec_nanos() % 1_000_000 != 0 {
        out.error(
            path,
            format!("only durations to ms precision are supported (got {d:?})"),
        );
    }
}

// === hosts, labels, ports, exportTo (shared with the other networking kinds) ===

const DNS1123_LABEL: &str = "[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?";
const QUALIFIED_NAME: &str = "(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";

static DNS1123_LABEL_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!("^{DNS1123_LABEL}$")).expect("valid regex"));
static WILDCARD_LABEL_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(r"^(\*|(\*|\*-)?{DNS1123_LABEL})$")).expect("valid regex")
});
static LABEL_KEY_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"^({DNS1123_LABEL}(?:\.{DNS1123_LABEL})*/)?({QUALIFIED_NAME})$"
    ))
    .expect("valid regex")
});
static LABEL_VALUE_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!("^({QUALIFIED_NAME})?$")).expect("valid regex"));

/// A DNS-1123 label: letters, digits and `-`, at most 63 characters.
pub(crate) fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && DNS1123_LABEL_RE.is_match(s)
}

fn check_dns1123_preconditions(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    if name.is_empty() {
        return Err("empty domain name not allowed".to_owned());
    }
    Ok(())
}

fn validate_dns1123_labels(domain: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let tld = parts[parts.len() - 1];
    if !tld.is_empty() && tld.parse::<i64>().is_ok() {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {tld:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        // A trailing dot (`istio.io.`) is allowed.
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

/// A fully qualified domain name (no wildcard), as istiod's `ValidateFQDN`.
pub(crate) fn validate_fqdn(fqdn: &str) -> Result<(), String> {
    check_dns1123_preconditions(fqdn)?;
    validate_dns1123_labels(fqdn)
}

/// A domain name whose first label may be a wildcard (`*`, `*.example.com`, `*-foo.bar`), as
/// istiod's `ValidateWildcardDomain`.
pub(crate) fn validate_wildcard_domain(domain: &str) -> Result<(), String> {
    check_dns1123_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (domain, None),
    };
    if !(first.len() <= 63 && WILDCARD_LABEL_RE.is_match(first)) {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    match rest {
        Some(rest) => validate_dns1123_labels(rest),
        None => Ok(()),
    }
}

/// Kubernetes label keys and values, as istiod's `labels.Instance.Validate`. Issues are placed at
/// `base.KEY`.
pub(crate) fn validate_labels(labels: &BTreeMap<String, String>, base: &str, out: &mut Issues) {
    for (k, v) in labels {
        let path = format!("{base}.{k}");
        match LABEL_KEY_RE.captures(k) {
            None => out.error(&path, format!("invalid tag key: {k:?}")),
            Some(c) => {
                if c.get(1).is_some_and(|p| p.as_str().len() - 1 > 253) {
                    out.error(
                        &path,
                        format!("invalid tag key: {k:?} (DNS prefix is too long)"),
                    );
                } else if c.get(2).is_some_and(|n| n.as_str().len() > 63) {
                    out.error(&path, format!("invalid tag key: {k:?} (name is too long)"));
                }
            }
        }
        if !LABEL_VALUE_RE.is_match(v) {
            out.error(&path, format!("invalid tag value: {v:?}"));
        }
    }
}

/// The `matchLabels` of a DestinationRule's `workloadSelector` (CRD CEL rules and limits).
pub(crate) fn validate_match_labels(
    labels: &BTreeMap<String, String>,
    base: &str,
    out: &mut Issues,
) {
    if labels.len() > 4096 {
        out.error(
            base,
            format!("Too many: {}: must have at most 4096 items", labels.len()),
        );
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

/// istiod's message for a port outside 1..65535.
pub(crate) fn port_range_error(port: impl std::fmt::Display) -> String {
    format!("port number {port} must be in the range 1..65535")
}

/// Which kind an `exportTo` belongs to: ServiceEntry may use `~`, and a DestinationRule with a
/// workload selector may export only to its own namespace.
#[derive(Clone, Copy)]
pub(crate) enum ExportToOf {
    DestinationRule { with_selector: bool },
    ServiceEntry,
}

/// `exportTo` entries, as istiod's `validateExportTo`.
pub(crate) fn validate_export_to(
    namespace: &str,
    export_to: &[String],
    of: ExportToOf,
    out: &mut Issues,
) {
    if export_to.is_empty() {
        return;
    }
    let is_se = matches!(of, ExportToOf::ServiceEntry);
    let mut set: BTreeSet<&str> = BTreeSet::new();
    for (i, e) in export_to.iter().enumerate() {
        let path = format!("spec.exportTo[{i}]");
        let key = if e == "." { namespace } else { e.as_str() };
        if set.contains(key) {
            if key != e {
                out.error(
                    path,
                    format!("duplicate entries in exportTo: . and current namespace {namespace}"),
                );
            } else {
                out.error(path, format!("duplicate entries in exportTo for entry {e}"));
            }
            continue;
        }
        if is_se && key == "~" {
            set.insert(key);
            continue;
        }
        match key {
            "*" => {
                set.insert(key);
            }
            "~" => out.error(
                path,
                "exportTo ~ (none) is not allowed for Istio configuration objects",
            ),
            _ if e == "." || is_dns1123_label(key) => {
                set.insert(key);
            }
            _ => out.error(
                path,
                "only .,*,~, or a valid DNS 1123 label is allowed as exportTo entry",
            ),
        }
    }
    if let ExportToOf::DestinationRule {
        with_selector: true,
    } = of
        && !set.is_empty()
    {
        if set.contains(namespace) {
            if set.len() > 1 {
                out.error(
                    "spec.exportTo",
                    "destination rule with workload selector cannot have multiple entries \
                         in exportTo",
                );
            }
        } else {
            out.error(
                "spec.exportTo",
                "destination rule with workload selector cannot have exportTo beyond current \
                     namespace",
            );
        }
    }
    if set.contains("*") && export_to.len() > 1 {
        out.error(
            "spec.exportTo",
            "cannot have both public (*) and non-public exportTo values for a resource",
        );
    }
    if set.contains("~") && export_to.len() > 1 {
        out.error(
            "spec.exportTo",
            "cannot export service entry to no one (~) and someone",
        );
    }
}

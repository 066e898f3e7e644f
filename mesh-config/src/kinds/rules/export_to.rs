//! `exportTo`, as istiod's `validateExportTo`.

use std::collections::BTreeSet;

use super::hosts::is_dns1123_label;
use crate::kinds::Issues;

/// Which kind an `exportTo` belongs to: ServiceEntry may use `~`, a DestinationRule with a
/// workload selector may export only to its own namespace, the other kinds have neither rule.
#[derive(Clone, Copy)]
pub(crate) enum ExportToOf {
    DestinationRule { with_selector: bool },
    ServiceEntry,
    Other,
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

//! The validation rules several Istio kinds share, one copy each, with Istio's messages (istiod's
//! webhook, or the API server's wording for CRD schema and CEL rules), so that callers only add
//! the document path.
//!
//! - [`hosts`]: DNS labels, FQDNs, wildcard domains, `namespace/dnsName` hosts, host matching;
//! - [`addresses`]: ports, port names and protocols, IP addresses and CIDR blocks, Unix sockets;
//! - [`labels`]: Kubernetes label keys and values, and both forms of workload selector;
//! - [`durations`]: the CRD's and the webhook's rules on `google.protobuf.Duration` fields;
//! - [`export_to`]: the `exportTo` field of the networking kinds.
//!
//! This module holds the schema limits (`Too many`, `Too long`), the Kubernetes group and kind
//! patterns, and the `istio.io/dry-run` annotation check. The security kinds' own shared rules
//! (`targetRef`, annotations, enum parsing) are in [`super::security`].

use std::sync::LazyLock;

use regex::Regex;

use super::{Issues, Meta};

pub(crate) mod addresses;
pub(crate) mod durations;
pub(crate) mod export_to;
pub(crate) mod hosts;
pub(crate) mod labels;

pub(crate) use addresses::*;
pub(crate) use durations::*;
pub(crate) use export_to::*;
pub(crate) use hosts::*;
pub(crate) use labels::*;

/// The API server's message for a list or map over its CRD `maxItems`/`maxProperties`.
pub(crate) fn too_many(out: &mut Issues, path: &str, n: usize, max: usize) {
    out.error(
        path,
        format!("Too many: {n}: must have at most {max} items"),
    );
}

/// The API server's message for a string over its CRD `maxLength`.
pub(crate) fn too_long(out: &mut Issues, path: &str, n: usize, max: usize) {
    out.error(
        path,
        format!("Too long: may not be more than {max} bytes (it has {n})"),
    );
}

/// The CRD pattern of a `targetRef` `group`: a DNS subdomain, or empty for the core group.
pub(crate) const GROUP_PATTERN: &str =
    r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// The CRD pattern of a `targetRef` `kind`.
pub(crate) const KIND_PATTERN: &str = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$";
pub(crate) static GROUP_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(GROUP_PATTERN).expect("valid regex"));
pub(crate) static KIND_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(KIND_PATTERN).expect("valid regex"));

/// Rejects the `istio.io/dry-run` annotation, which only AuthorizationPolicy supports.
pub(crate) fn validate_dry_run_annotation(meta: &Meta<'_>, out: &mut Issues) {
    const DRY_RUN: &str = "istio.io/dry-run";
    if meta.metadata.annotations.contains_key(DRY_RUN) {
        out.error(
            format!("metadata.annotations.{DRY_RUN}"),
            format!(
                "{}/{} has unsupported annotation {DRY_RUN}, please remove the annotation",
                meta.namespace, meta.name
            ),
        );
    }
}

//! The typed objects a load produces, and the table of kinds mesh reads.

use std::{path::Path, sync::Arc};

use serde::{Deserialize, de::DeserializeOwned, de::IgnoredAny};

use super::{DocCtx, LoadOptions, errors, meta, report_issues, tree::Node};
use crate::{
    diag::Diagnostic,
    kinds::{
        Issues, Meta, ObjectMeta, Severity,
        authorization_policy::AuthorizationPolicy,
        destination_rule::DestinationRule,
        envoy_filter::EnvoyFilter,
        gateway::Gateway,
        kube,
        peer_authentication::PeerAuthentication,
        request_authentication::RequestAuthentication,
        service_entry::{ServiceEntry, WorkloadEntry},
        sidecar::Sidecar,
        virtual_service::VirtualService,
    },
};

/// Where an object was read from: its file and the positioned tree of its document, so that
/// findings made later (analysis, compilation) still point at a line.
#[derive(Debug, Clone)]
pub struct Origin {
    pub file: Arc<Path>,
    pub line_offset: usize,
    pub tree: Arc<Node>,
}

/// One Istio (or Kubernetes) object: its identity and its typed spec.
#[derive(Debug, Clone)]
pub struct Object<S> {
    pub name: String,
    /// `metadata.namespace`, or the load's default namespace.
    pub namespace: String,
    pub metadata: ObjectMeta,
    pub spec: S,
    pub origin: Origin,
}

impl<S> Object<S> {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Every object of a load, by kind, in file order.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub virtual_services: Vec<Object<VirtualService>>,
    pub destination_rules: Vec<Object<DestinationRule>>,
    pub gateways: Vec<Object<Gateway>>,
    pub service_entries: Vec<Object<ServiceEntry>>,
    pub workload_entries: Vec<Object<WorkloadEntry>>,
    pub sidecars: Vec<Object<Sidecar>>,
    pub envoy_filters: Vec<Object<EnvoyFilter>>,
    pub peer_authentications: Vec<Object<PeerAuthentication>>,
    pub authorization_policies: Vec<Object<AuthorizationPolicy>>,
    pub request_authentications: Vec<Object<RequestAuthentication>>,
    pub services: Vec<Object<kube::Service>>,
}

/// A document as Kubernetes stores it: the spec is the kind's own type.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Envelope<S> {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default = "Option::default")]
    spec: Option<S>,
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<IgnoredAny>,
}

pub(crate) type ReadFn = fn(&str, &DocCtx<'_>, &LoadOptions, &mut Config, &mut Vec<Diagnostic>);

pub(crate) struct Reader {
    pub versions: &'static [&'static str],
    pub read: ReadFn,
}

const NETWORKING: &[&str] = &["v1", "v1beta1", "v1alpha3"];
const SECURITY: &[&str] = &["v1", "v1beta1"];

macro_rules! reader {
    ($versions:expr, $ty:ty, $field:ident, spec_required: $required:expr, $validate:expr) => {
        Reader {
            versions: $versions,
            read: |text, ctx, _opts, config, diags| {
                let validate: fn(&$ty, &Meta<'_>, &mut Issues) = $validate;
                if let Some((metadata, spec)) = parse::<$ty>(text, ctx, $required, validate, diags)
                {
                    config.$field.push(object(ctx, metadata, spec));
                }
            },
        }
    };
}

/// The kinds mesh reads: `(API group, kind)`.
pub(crate) fn reader_for(group: &str, kind: &str) -> Option<Reader> {
    Some(match (group, kind) {
        ("networking.istio.io", "VirtualService") => {
            reader!(NETWORKING, VirtualService, virtual_services, spec_required: false, VirtualService::validate)
        }
        ("networking.istio.io", "DestinationRule") => {
            reader!(NETWORKING, DestinationRule, destination_rules, spec_required: false, DestinationRule::validate)
        }
        ("networking.istio.io", "Gateway") => {
            reader!(NETWORKING, Gateway, gateways, spec_required: false, Gateway::validate)
        }
        ("networking.istio.io", "ServiceEntry") => {
            reader!(NETWORKING, ServiceEntry, service_entries, spec_required: true, ServiceEntry::validate)
        }
        ("networking.istio.io", "WorkloadEntry") => {
            reader!(NETWORKING, WorkloadEntry, workload_entries, spec_required: true, WorkloadEntry::validate)
        }
        ("networking.istio.io", "Sidecar") => {
            reader!(NETWORKING, Sidecar, sidecars, spec_required: false, Sidecar::validate)
        }
        ("networking.istio.io", "EnvoyFilter") => {
            reader!(&["v1alpha3"], EnvoyFilter, envoy_filters, spec_required: false, EnvoyFilter::validate)
        }
        ("security.istio.io", "PeerAuthentication") => {
            reader!(SECURITY, PeerAuthentication, peer_authentications, spec_required: false, PeerAuthentication::validate)
        }
        ("security.istio.io", "AuthorizationPolicy") => {
            reader!(SECURITY, AuthorizationPolicy, authorization_policies, spec_required: false, AuthorizationPolicy::validate)
        }
        ("security.istio.io", "RequestAuthentication") => {
            reader!(SECURITY, RequestAuthentication, request_authentications, spec_required: false, RequestAuthentication::validate)
        }
        ("", "Service") => {
            reader!(&["v1"], kube::Service, services, spec_required: false, kube::Service::validate)
        }
        _ => return None,
    })
}

/// What to say about a document of a kind mesh does not read.
pub(crate) fn unread_kind_note(group: &str, kind: &str) -> (Severity, String) {
    if group.ends_with("istio.io") {
        (
            Severity::Warning,
            format!("{kind} ({group}) is not supported by mesh; the document is ignored"),
        )
    } else {
        let group = if group.is_empty() { "core" } else { group };
        (
            Severity::Note,
            format!("skipped: {kind} ({group}) is not an Istio kind mesh reads"),
        )
    }
}

fn object<S>(ctx: &DocCtx<'_>, metadata: ObjectMeta, spec: S) -> Object<S> {
    Object {
        name: ctx.name.to_owned(),
        namespace: ctx.namespace.to_owned(),
        metadata,
        spec,
        origin: Origin {
            file: ctx.file.clone(),
            line_offset: ctx.line_offset,
            tree: ctx.tree.clone(),
        },
    }
}

/// Parses a document into `Envelope<S>` and validates its spec. `None` when it has errors.
fn parse<S: DeserializeOwned + Default>(
    text: &str,
    ctx: &DocCtx<'_>,
    spec_required: bool,
    validate: fn(&S, &Meta<'_>, &mut Issues),
    diags: &mut Vec<Diagnostic>,
) -> Option<(ObjectMeta, S)> {
    let envelope: Envelope<S> = match serde_saphyr::from_str(text) {
        Ok(e) => e,
        Err(e) => {
            diags.push(errors::parse_error(ctx, &e));
            return None;
        }
    };
    let spec = match envelope.spec {
        Some(spec) => spec,
        None if spec_required && ctx.tree.get("status").is_some() => {
            // A stored object (it carries `status`, as `kubectl get -o yaml` prints it) that
            // defines nothing: say so, and read on.
            diags.push(ctx.diag_path(
                "status",
                Severity::Warning,
                format!("a {} without spec defines nothing; it is ignored", ctx.kind),
            ));
            return None;
        }
        None if spec_required => {
            diags.push(ctx.diag_path(
                "spec",
                Severity::Error,
                format!("spec: Required value: a {} needs a spec", ctx.kind),
            ));
            return None;
        }
        None => S::default(),
    };
    let mut issues = Issues::default();
    validate(&spec, &meta(ctx, &envelope.metadata), &mut issues);
    super::lenient::soften(ctx.kind, &mut issues.items);
    let failed = issues.has_errors();
    report_issues(ctx, issues, diags);
    (!failed).then_some((envelope.metadata, spec))
}

impl<S> Object<S> {
    /// A diagnostic about this object at the field `path` names.
    pub fn diagnostic(&self, path: &str, severity: Severity, message: String) -> Diagnostic {
        self.diagnostic_at(self.origin.tree.locate(path), severity, message)
    }

    /// A diagnostic about this object at a position of its document.
    pub fn diagnostic_at(
        &self,
        pos: super::tree::Pos,
        severity: Severity,
        message: String,
    ) -> Diagnostic {
        let kind = self
            .origin
            .tree
            .get("kind")
            .and_then(Node::as_str)
            .unwrap_or_default()
            .to_owned();
        Diagnostic {
            file: self.origin.file.to_path_buf(),
            line: pos.line + self.origin.line_offset,
            column: pos.column,
            severity,
            kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            message,
        }
    }
}

//! Security policies, indexed by the workloads they select.

use crate::labels::{Labels, Selector};

/// Where a policy applies: the mesh (root namespace, no selector), a namespace, or the
/// workloads a selector picks in a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyScope {
    pub namespace: String,
    pub selector: Option<Selector>,
}

impl PolicyScope {
    /// Whether the policy applies to a workload in `namespace` with `labels`, given the mesh's
    /// root namespace.
    pub fn applies_to(&self, root_namespace: &str, namespace: &str, labels: &Labels) -> bool {
        let ns_ok = self.namespace == namespace
            || (self.namespace == root_namespace && self.selector.is_none());
        ns_ok && self.selector.as_ref().is_none_or(|s| s.matches(labels))
    }

    /// Whether an AuthorizationPolicy with this scope applies to a workload in `namespace` with
    /// `labels`. Unlike [`applies_to`](Self::applies_to), a selector in the root namespace
    /// selects workloads in every namespace, as the AuthorizationPolicy reference says of
    /// `selector`: "If the authorization policy is in the root namespace, the selector will
    /// additionally match with workloads in all namespaces."
    pub fn applies_to_authorization(
        &self,
        root_namespace: &str,
        namespace: &str,
        labels: &Labels,
    ) -> bool {
        (self.namespace == namespace || self.namespace == root_namespace)
            && self.selector.as_ref().is_none_or(|s| s.matches(labels))
    }

    /// Istio's precedence: workload selector beats namespace beats mesh-wide.
    pub fn precedence(&self, root_namespace: &str) -> u8 {
        match (&self.selector, self.namespace == root_namespace) {
            (Some(_), _) => 2,
            (None, false) => 1,
            (None, true) => 0,
        }
    }
}

/// PeerAuthentication's mTLS mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtlsMode {
    /// Inherit from the parent scope (PERMISSIVE at the top).
    Unset,
    Disable,
    Permissive,
    Strict,
}

#[derive(Debug, Clone)]
pub struct PeerAuthenticationPolicy {
    pub name: String,
    pub scope: PolicyScope,
    pub mode: MtlsMode,
    pub port_modes: Vec<(u16, MtlsMode)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationAction {
    Allow,
    Deny,
    Audit,
    Custom,
}

/// An AuthorizationPolicy; rules keep Istio's string values (principals, paths with `*`
/// prefix/suffix forms) for the evaluator to match.
#[derive(Debug, Clone)]
pub struct AuthorizationPolicy {
    pub name: String,
    pub scope: PolicyScope,
    pub action: AuthorizationAction,
    pub provider: Option<String>,
    /// `istio.io/dry-run: "true"`: evaluated and logged, never enforced.
    pub dry_run: bool,
    /// `None`: the policy has no `rules` field (ALLOW matches nothing, DENY nothing);
    /// `Some(vec![])` is the same. A rule with no `from`/`to`/`when` matches everything.
    pub rules: Vec<AuthorizationRule>,
}

#[derive(Debug, Clone, Default)]
pub struct AuthorizationRule {
    pub from: Vec<Source>,
    pub to: Vec<Operation>,
    pub when: Vec<Condition>,
}

#[derive(Debug, Clone, Default)]
pub struct Source {
    pub principals: Vec<String>,
    pub not_principals: Vec<String>,
    pub request_principals: Vec<String>,
    pub not_request_principals: Vec<String>,
    pub namespaces: Vec<String>,
    pub not_namespaces: Vec<String>,
    pub ip_blocks: Vec<ipnet::IpNet>,
    pub not_ip_blocks: Vec<ipnet::IpNet>,
    pub remote_ip_blocks: Vec<ipnet::IpNet>,
    pub not_remote_ip_blocks: Vec<ipnet::IpNet>,
    pub service_accounts: Vec<String>,
    pub not_service_accounts: Vec<String>,
    /// `trustDomains`: the peer certificate's trust domain (exact, prefix, suffix, presence).
    pub trust_domains: Vec<String>,
    pub not_trust_domains: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Operation {
    pub hosts: Vec<String>,
    pub not_hosts: Vec<String>,
    pub ports: Vec<u16>,
    pub not_ports: Vec<u16>,
    pub methods: Vec<String>,
    pub not_methods: Vec<String>,
    pub paths: Vec<String>,
    pub not_paths: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Condition {
    pub key: String,
    pub values: Vec<String>,
    pub not_values: Vec<String>,
}

/// A RequestAuthentication: which JWT issuers a workload accepts.
#[derive(Debug, Clone)]
pub struct RequestAuthenticationPolicy {
    pub name: String,
    pub scope: PolicyScope,
    pub jwt_rules: Vec<JwtRule>,
}

#[derive(Debug, Clone, Default)]
pub struct JwtRule {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks_uri: Option<String>,
    pub jwks: Option<String>,
    /// `(header, prefix)`; empty means `Authorization: Bearer`.
    pub from_headers: Vec<(String, String)>,
    pub from_params: Vec<String>,
    pub from_cookies: Vec<String>,
    pub output_payload_to_header: Option<String>,
    /// `(header, claim)`.
    pub output_claim_to_headers: Vec<(String, String)>,
    pub forward_original_token: bool,
}

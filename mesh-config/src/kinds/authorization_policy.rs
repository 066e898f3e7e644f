//! `AuthorizationPolicy` (security.istio.io v1 and v1beta1): who may call a workload, and how.
//!
//! The model is the union of both served versions (their schemas are the same). Validation
//! implements what an apply of the object is rejected for: the CRD schema constraints serde cannot
//! express, the CRD's CEL rules, and istiod's validating webhook. Messages keep the wording
//! `kubectl apply` or istiod would print, so they can be searched for, and add what to do.
//!
//! The checks the three security kinds share (workload selector, `targetRef`/`targetRefs`, the
//! annotations istiod looks at, enum parsing) are in [`super::security`].

use std::{net::IpAddr, str::FromStr};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use super::{
    Issues, Meta,
    common::{PolicyTargetReference, WorkloadSelector},
    security::{
        deserialize_enum, enum_name, objects_fn, validate_annotations, validate_policy_attachment,
    },
};

objects_fn!(opt rules_list, "spec.rules");
objects_fn!(opt from_list, "from");
objects_fn!(opt to_list, "to");
objects_fn!(when_list, "when");
objects_fn!(opt target_refs_list, "spec.targetRefs");

/// The `spec` of an AuthorizationPolicy.
///
/// <https://istio.io/latest/docs/reference/config/security/authorization-policy/#AuthorizationPolicy>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicy {
    /// The workloads the policy applies to; none means every workload in the namespace (or the
    /// mesh, in the root namespace).
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    /// A single resource the policy attaches to (a Gateway, a Service, ...). Mutually exclusive
    /// with `selector` and `targetRefs`.
    #[serde(default)]
    pub target_ref: Option<PolicyTargetReference>,
    /// The resources the policy attaches to. Mutually exclusive with `selector` and `targetRef`.
    #[serde(default, deserialize_with = "target_refs_list")]
    pub target_refs: Option<Vec<PolicyTargetReference>>,
    /// The rules; a request matching any rule triggers the action. Absent and empty differ:
    /// an ALLOW policy with `rules: []` (or absent) allows nothing.
    #[serde(default, deserialize_with = "rules_list")]
    pub rules: Option<Vec<Rule>>,
    /// What to do with a request that matches. Defaults to ALLOW.
    #[serde(default)]
    pub action: Action,
    /// The extension provider of a CUSTOM action.
    #[serde(default)]
    pub provider: Option<ExtensionProvider>,
}

/// `AuthorizationPolicy.Action`.
///
/// <https://istio.io/latest/docs/reference/config/security/authorization-policy/#AuthorizationPolicy-Action>
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Action {
    #[default]
    Allow,
    Deny,
    Audit,
    Custom,
}

impl Action {
    const ALL: &[(&str, Action)] = &[
        ("ALLOW", Action::Allow),
        ("DENY", Action::Deny),
        ("AUDIT", Action::Audit),
        ("CUSTOM", Action::Custom),
    ];

    /// Istio's spelling (`ALLOW`).
    pub fn as_str(self) -> &'static str {
        enum_name(Self::ALL, self)
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_enum(d, Self::ALL)
    }
}

/// `AuthorizationPolicy.ExtensionProvider`: the external authorizer of a CUSTOM policy, by the
/// name it has in mesh config's `extensionProviders`.
///
/// <https://istio.io/latest/docs/reference/config/security/authorization-policy/#AuthorizationPolicy-ExtensionProvider>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtensionProvider {
    #[serde(default)]
    pub name: Option<String>,
}

/// `Rule`: a request matches when it matches any `from`, any `to` and every `when`.
///
/// <https://istio.io/latest/docs/reference/config/security/authorization-policy/#Rule>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    #[serde(default, deserialize_with = "from_list")]
    pub from: Option<Vec<RuleFrom>>,
    #[serde(default, deserialize_with = "to_list")]
    pub to: Option<Vec<RuleTo>>,
    #[serde(default, deserialize_with = "when_list")]
    pub when: Vec<Condition>,
}

/// `Rule.From`.
///
/// <https://istio.io/latest/docs/reference/config/security/authorization-policy/#Rule-From>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleFrom {
    #[serde(default)]
    pub source: Option<Source>,
}

/// `Rule.To`.
///
/// <https://istio.io/latest/docs/reference/config/security/authorization-policy/#Rule-To>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleTo {
    #[serde(default)]
    pub operation: Option<Operation>,
}

/// `Source`: the peer and request identity of a request. Values support a `*` prefix or suffix.
///
/// <https://istio.io/latest/docs/reference/config/security/authorization-policy/#Source>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Source {
    /// Peer identities (`cluster.local/ns/default/sa/productpage`), from mTLS.
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub not_principals: Vec<String>,
    /// Request identities (`iss/sub` of the JWT).
    #[serde(default)]
    pub request_principals: Vec<String>,
    #[serde(default)]
    pub not_request_principals: Vec<String>,
    /// Peer namespaces, from mTLS.
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    /// Peer service accounts, `sa` or `namespace/sa` (no wildcards).
    #[serde(default)]
    pub service_accounts: Vec<String>,
    #[serde(default)]
    pub not_service_accounts: Vec<String>,
    /// Peer addresses (IP or CIDR) of the connection.
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_ip_blocks: Vec<String>,
    /// Original client addresses (X-Forwarded-For or proxy protocol).
    #[serde(default)]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_remote_ip_blocks: Vec<String>,
    /// Trust domains of the peer identity.
    #[serde(default)]
    pub trust_domains: Vec<String>,
    #[serde(default)]
    pub not_trust_domains: Vec<String>,
}

/// `Operation`: what the request does. Values support a `*` prefix or suffix; `paths` also
/// `{*}` and `{**}` templates.
///
/// <https://istio.io/latest/docs/reference/config/security/authorization-policy/#Operation>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Operation {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub not_hosts: Vec<String>,
    /// Destination ports, as strings (`"8080"`).
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub not_ports: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub not_methods: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub not_paths: Vec<String>,
}

/// `Condition`: an Istio attribute (`request.headers[x-token]`, `source.ip`, ...) and the values
/// it must (`values`) or must not (`notValues`) have.
///
/// <https://istio.io/latest/docs/reference/config/security/authorization-policy/#Condition>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Condition {
    /// Required by the schema; `None` is reported by validation with its path.
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub not_values: Vec<String>,
}

// === impl AuthorizationPolicy: validation ===

/// The CRD's `maxItems` for `rules` and `rules[].from`.
const MAX_RULES: usize = 512;
/// The CRD's `maxItems` (and istiod's limit) for `serviceAccounts`, and `maxLength` of a value.
const MAX_SERVICE_ACCOUNTS: usize = 16;
const MAX_SERVICE_ACCOUNT_LEN: usize = 320;

impl AuthorizationPolicy {
    /// What the API server (schema and CEL rules) and istiod's webhook reject; istiod's warnings
    /// are warnings.
    pub fn validate(&self, meta: &Meta<'_>, out: &mut Issues) {
        validate_annotations(meta, Some(self.action), out);
        validate_policy_attachment(
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            self.target_refs.as_deref(),
            out,
        );
        self.validate_action(out);

        let Some(rules) = &self.rules else { return };
        if rules.len() > MAX_RULES {
            out.error(
                "spec.rules",
                format!(
                    "spec.rules: Too many: {}: must have at most {MAX_RULES} items; split the policy",
                    rules.len()
                ),
            );
        }
        for (i, rule) in rules.iter().enumerate() {
            validate_rule(rule, &format!("spec.rules[{i}]"), self.action, out);
        }
    }

    fn validate_action(&self, out: &mut Issues) {
        match self.action {
            Action::Custom => match &self.rules {
                None => out.error(
                    "spec.action",
                    "CUSTOM action without `rules` is meaningless as it will never be triggered, \
                     add an empty rule `{}` if you want it be triggered for every request",
                ),
                Some(_) => {
                    if self
                        .provider
                        .as_ref()
                        .and_then(|p| p.name.as_deref())
                        .is_none_or(str::is_empty)
                    {
                        out.error(
                            "spec.provider.name",
                            "`provider.name` must not be empty: name the extension provider (from \
                             mesh config `extensionProviders`) that authorizes CUSTOM requests",
                        );
                    }
                }
            },
            Action::Deny if self.rules.is_none() => out.error(
                "spec.action",
                "DENY action without `rules` is meaningless as it will never be triggered, add an \
                 empty rule `{}` if you want it be triggered for every request",
            ),
            _ => {}
        }
        if self.provider.is_some() && self.action != Action::Custom {
            out.error(
                "spec.provider",
                format!(
                    "`provider` must not be with non CUSTOM action, found {}: set `action: CUSTOM` \
                     or remove `provider`",
                    self.action.as_str()
                ),
            );
        }
    }
}

fn validate_rule(rule: &Rule, path: &str, action: Action, out: &mut Issues) {
    // Whether the rule has attributes that also apply to TCP traffic (istiod's DENY warning).
    let mut from_exists = false;
    let mut to_exists = false;
    let mut tcp_in_from = false;
    let mut tcp_in_to = false;

    if let Some(from) = &rule.from {
        if from.is_empty() {
            out.error(
                format!("{path}.from"),
                "`from` must not be empty: add a `source`, or remove `from` to match any source",
            );
        }
        if from.len() > MAX_RULES {
            out.error(
                format!("{path}.from"),
                format!(
                    "{path}.from: Too many: {}: must have at most {MAX_RULES} items",
                    from.len()
                ),
            );
        }
        for (j, f) in from.iter().enumerate() {
            let path = format!("{path}.from[{j}].source");
            match &f.source {
                None => out.error(
                    path,
                    "`from.source` must not be nil: write the source's fields under `source:`",
                ),
                Some(src) => {
                    from_exists = true;
                    tcp_in_from |= src.has_tcp_attributes();
                    validate_source(src, &path, action, out);
                }
            }
        }
    }

    if let Some(to) = &rule.to {
        if to.is_empty() {
            out.error(
                format!("{path}.to"),
                "`to` must not be empty: add an `operation`, or remove `to` to match any operation",
            );
        }
        for (j, t) in to.iter().enumerate() {
            let path = format!("{path}.to[{j}].operation");
            match &t.operation {
                None => out.error(
                    path,
                    "`to.operation` must not be nil: write the operation's fields under \
                     `operation:`",
                ),
                Some(op) => {
                    to_exists = true;
                    tcp_in_to |= !op.ports.is_empty() || !op.not_ports.is_empty();
                    validate_operation(op, &path, out);
                }
            }
        }
    }

    for (j, condition) in rule.when.iter().enumerate() {
        validate_condition(condition, &format!("{path}.when[{j}]"), action, out);
    }

    if action == Action::Deny
        && ((from_exists && !to_exists && !tcp_in_from) || (to_exists && !tcp_in_to))
    {
        out.warn(
            path,
            "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due \
             to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly \
             specify the port",
        );
    }
}

impl Source {
    /// The fields of a source, with the names istiod's messages use.
    fn lists(&self) -> [(&'static str, &'static str, &[String]); 14] {
        [
            ("principals", "Principals", &self.principals),
            ("notPrincipals", "NotPrincipals", &self.not_principals),
            (
                "requestPrincipals",
                "RequestPrincipals",
                &self.request_principals,
            ),
            (
                "notRequestPrincipals",
                "NotRequestPrincipals",
                &self.not_request_principals,
            ),
            ("namespaces", "Namespaces", &self.namespaces),
            ("notNamespaces", "NotNamespaces", &self.not_namespaces),
            ("serviceAccounts", "ServiceAccounts", &self.service_accounts),
            (
                "notServiceAccounts",
                "NotServiceAccounts",
                &self.not_service_accounts,
            ),
            ("ipBlocks", "IpBlocks", &self.ip_blocks),
            ("notIpBlocks", "NotIpBlocks", &self.not_ip_blocks),
            ("remoteIpBlocks", "RemoteIpBlocks", &self.remote_ip_blocks),
            (
                "notRemoteIpBlocks",
                "NotRemoteIpBlocks",
                &self.not_remote_ip_blocks,
            ),
            ("trustDomains", "TrustDomains", &self.trust_domains),
            (
                "notTrustDomains",
                "NotTrustDomains",
                &self.not_trust_domains,
            ),
        ]
    }

    /// Attributes that a TCP (non-HTTP) connection has: all but request principals.
    fn has_tcp_attributes(&self) -> bool {
        [
            &self.principals,
            &self.not_principals,
            &self.namespaces,
            &self.not_namespaces,
            &self.ip_blocks,
            &self.not_ip_blocks,
            &self.remote_ip_blocks,
            &self.not_remote_ip_blocks,
            &self.service_accounts,
            &self.not_service_accounts,
            &self.trust_domains,
            &self.not_trust_domains,
        ]
        .iter()
        .any(|v| !v.is_empty())
    }
}

fn validate_source(src: &Source, path: &str, action: Action, out: &mut Issues) {
    let has_accounts = !src.service_accounts.is_empty() || !src.not_service_accounts.is_empty();
    let has_identities = !src.principals.is_empty()
        || !src.not_principals.is_empty()
        || !src.namespaces.is_empty()
        || !src.not_namespaces.is_empty();
    if has_accounts && has_identities {
        out.error(
            path,
            "Cannot set serviceAccounts with namespaces or principals: put them in separate \
             `from` entries (a request matches if any entry matches)",
        );
    }

    let lists = src.lists();
    if lists.iter().all(|(_, _, v)| v.is_empty()) {
        out.error(
            path,
            "`from.source` must not be empty: set at least one of principals, requestPrincipals, \
             namespaces, serviceAccounts, ipBlocks, remoteIpBlocks, trustDomains or their `not` \
             forms",
        );
    }

    for (field, go_name, values) in lists {
        let field_path = format!("{path}.{field}");
        for (k, value) in values.iter().enumerate() {
            let value_path = format!("{field_path}[{k}]");
            if value.is_empty() {
                out.error(
                    value_path,
                    format!("empty value not allowed, found in {go_name}: remove the empty entry"),
                );
                continue;
            }
            match field {
                "ipBlocks" | "notIpBlocks" | "remoteIpBlocks" | "notRemoteIpBlocks" => {
                    if let Err(e) = check_ip(value) {
                        out.error(value_path, e);
                    }
                }
                "serviceAccounts" | "notServiceAccounts" => {
                    if let Err(e) = check_service_account(value, go_name) {
                        out.error(value_path, e);
                    }
                }
                _ => {}
            }
        }
        if matches!(field, "serviceAccounts" | "notServiceAccounts")
            && values.len() > MAX_SERVICE_ACCOUNTS
        {
            out.error(
                field_path.clone(),
                format!(
                    "{field_path}: Too many: {}: must have at most {MAX_SERVICE_ACCOUNTS} items \
                     (may not have more than 16 values)",
                    values.len()
                ),
            );
        }
        if action == Action::Custom
            && !values.is_empty()
            && !matches!(
                field,
                "ipBlocks" | "notIpBlocks" | "remoteIpBlocks" | "notRemoteIpBlocks"
            )
            && !matches!(field, "trustDomains" | "notTrustDomains")
        {
            out.error(
                field_path,
                format!(
                    "From.{go_name} is currently not supported with CUSTOM action: match on \
                     ipBlocks, remoteIpBlocks or `to` operations instead"
                ),
            );
        }
    }
}

fn validate_operation(op: &Operation, path: &str, out: &mut Issues) {
    let lists: [(&str, &str, &[String]); 8] = [
        ("ports", "Ports", &op.ports),
        ("methods", "Methods", &op.methods),
        ("paths", "Paths", &op.paths),
        ("hosts", "Hosts", &op.hosts),
        ("notPorts", "NotPorts", &op.not_ports),
        ("notMethods", "NotMethods", &op.not_methods),
        ("notPaths", "NotPaths", &op.not_paths),
        ("notHosts", "NotHosts", &op.not_hosts),
    ];
    if lists.iter().all(|(_, _, v)| v.is_empty()) {
        out.error(
            path,
            "`to.operation` must not be empty: set at least one of hosts, ports, methods, paths \
             or their `not` forms",
        );
    }
    for (field, go_name, values) in lists {
        for (k, value) in values.iter().enumerate() {
            let value_path = format!("{path}.{field}[{k}]");
            if value.is_empty() {
                out.error(
                    value_path,
                    format!("empty value not allowed, found in {go_name}: remove the empty entry"),
                );
                continue;
            }
            let checked = match field {
                "ports" | "notPorts" => check_port(value),
                "paths" | "notPaths" => check_path_template(value, go_name),
                _ => Ok(()),
            };
            if let Err(e) = checked {
                out.error(value_path, e);
            }
        }
    }
}

fn validate_condition(condition: &Condition, path: &str, action: Action, out: &mut Issues) {
    let key = match condition.key.as_deref() {
        None => {
            out.error(
                format!("{path}.key"),
                format!("{path}.key: Required value: name an Istio attribute, e.g. `source.ip`"),
            );
            return;
        }
        Some("") => {
            out.error(
                format!("{path}.key"),
                "`key` must not be empty: name an Istio attribute, e.g. `source.ip`",
            );
            return;
        }
        Some(key) => key,
    };
    if condition.values.is_empty() && condition.not_values.is_empty() {
        out.error(
            path,
            format!("at least one of `values` or `notValues` must be set for key {key}"),
        );
    } else {
        for (field, word, values) in [
            ("values", "value", &condition.values),
            ("notValues", "notValue", &condition.not_values),
        ] {
            if let Err((k, e)) = check_attribute(key, values) {
                let at = k.map_or(format!("{path}.key"), |k| format!("{path}.{field}[{k}]"));
                out.error(at, format!("invalid `{word}` for `key` {key}: {e}"));
            }
        }
    }
    if action == Action::Custom
        && (matches!(
            key,
            "source.namespace" | "source.serviceAccount" | "source.principal"
        ) || key.starts_with("request.auth."))
    {
        out.error(
            format!("{path}.key"),
            format!("{key} is currently not supported with CUSTOM action"),
        );
    }
}

/// istiod's check of a condition's values against its key. The error names the offending
/// value's index, or none when the key itself is wrong.
fn check_attribute(key: &str, values: &[String]) -> Result<(), (Option<usize>, String)> {
    if let Some(k) = values.iter().position(String::is_empty) {
        return Err((Some(k), format!("empty value not allowed, found in {key}")));
    }
    let each = |check: &dyn Fn(&str) -> Result<(), String>| {
        values
            .iter()
            .enumerate()
            .try_for_each(|(k, v)| check(v).map_err(|e| (Some(k), e)))
    };
    let map_key = || check_map_key(key).map_err(|e| (None, e));
    match key {
        "source.ip" | "remote.ip" | "destination.ip" => each(&|v| check_ip(v)),
        "destination.port" => each(&|v| check_port(v)),
        "source.serviceAccount" => each(&|v| check_service_account(v, key)),
        "source.namespace"
        | "source.principal"
        | "source.trustDomain"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni" => Ok(()),
        "destination.namespace" => Err((
            None,
            format!("attribute {key} is replaced by the metadata.namespace"),
        )),
        "destination.name" | "destination.user" => Err((
            None,
            format!("deprecated attribute {key}: only supported in v1alpha1"),
        )),
        _ if key.starts_with("request.headers")
            || key.starts_with("request.experimental.inline.headers")
            || key.starts_with("request.auth.claims")
            || key.starts_with("experimental.envoy.filters.") =>
        {
            map_key()
        }
        _ if key.starts_with("destination.labels") => Err((
            None,
            format!("attribute {key} is replaced by the workload selector"),
        )),
        _ => Err((
            None,
            format!(
                "unknown attribute: {key} (see \
                 https://istio.io/latest/docs/reference/config/security/conditions/)"
            ),
        )),
    }
}

/// `a[b]`: a name, then a non-empty key in brackets at the end.
fn check_map_key(key: &str) -> Result<(), String> {
    match key.find('[') {
        Some(open) if open > 0 && key.ends_with(']') && open + 2 < key.len() => Ok(()),
        _ => Err(format!("bad key ({key}): should have format a[b]")),
    }
}

/// An IP address or a CIDR range, as istiod's `ValidateIPs` accepts them.
fn check_ip(value: &str) -> Result<(), String> {
    if value.contains('/') {
        IpNet::from_str(value)
            .map(|_| ())
            .map_err(|e| format!("bad CIDR range ({value}): {e}"))
    } else {
        IpAddr::from_str(value)
            .map(|_| ())
            .map_err(|_| format!("bad IP address ({value}): write an IP address or a CIDR range"))
    }
}

/// A port of `ports`, `notPorts` or `destination.port`: a decimal number up to 65535.
fn check_port(value: &str) -> Result<(), String> {
    match value.parse::<u32>() {
        Ok(p) if p <= 65535 => Ok(()),
        _ => Err(format!("bad port ({value}): must be a port number 0-65535")),
    }
}

/// A value of `serviceAccounts`: `sa` or `namespace/sa`, no wildcard, at most 320 characters.
fn check_service_account(value: &str, key: &str) -> Result<(), String> {
    const FORMAT: &str = "expected format 'serviceAccount' or 'namespace/serviceAccount'";
    if value.is_empty() {
        return Err(format!("empty value not allowed, found in {key}"));
    }
    if value.contains('*') {
        return Err(format!(
            "wildcard not allowed, found in {key}: list the service accounts (use principals for \
             wildcard matches)"
        ));
    }
    if value.matches('/').count() > 1 {
        return Err(format!("{FORMAT}, found {value:?} in {key}"));
    }
    if value.len() > MAX_SERVICE_ACCOUNT_LEN {
        return Err(format!(
            "value cannot exceed {MAX_SERVICE_ACCOUNT_LEN} characters, found {value:?} in {key}"
        ));
    }
    match value.split_once('/') {
        Some(("", _)) => Err(format!(
            "{FORMAT}, found empty namespace {value:?} in {key}"
        )),
        Some((_, "")) => Err(format!(
            "{FORMAT}, found empty serviceAccount {value:?} in {key}"
        )),
        _ => Ok(()),
    }
}

/// Path templates (`/{*}/x`, `/a/{**}`): only whole-segment `{*}` and `{**}` operators, `{**}`
/// last, and the other segments plain characters.
fn check_path_template(path: &str, key: &str) -> Result<(), String> {
    const ONE: &str = "{*}";
    const ANY: &str = "{**}";
    let is_template = path.contains(ONE) || path.contains(ANY);
    let trimmed = path.trim_matches('/');
    let mut seen_any = false;
    for segment in trimmed.split('/') {
        if segment == ONE || segment == ANY {
            if seen_any {
                return Err(format!(
                    "invalid or unsupported path {trimmed}, found in {key}. {{**}} is not the \
                     last operator"
                ));
            }
            seen_any = segment == ANY;
            continue;
        }
        if segment.contains(['{', '}']) {
            return Err(format!(
                "invalid or unsupported path {trimmed}, found in {key}. Contains '{{' or '}}' \
                 beyond a supported path template"
            ));
        }
        let literal = !segment.is_empty()
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&b));
        if is_template && !literal {
            return Err(format!(
                "invalid or unsupported path {trimmed}, found in {key}. Contains segment \
                 {segment} with invalid string literal"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::kinds::{Issue, ObjectMeta, Severity, corpus, from_yaml, validate_yaml};

    fn issues(yaml: &str) -> Vec<Issue> {
        validate_yaml::<AuthorizationPolicy>(yaml, AuthorizationPolicy::validate)
    }

    fn errors(yaml: &str) -> Vec<Issue> {
        crate::kinds::only_errors(issues(yaml))
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
    app: httpbin
action: DENY
rules:
- from:
  - source:
      principals: ["cluster.local/ns/a/sa/b", "*-suffix"]
      notPrincipals: ["x"]
      requestPrincipals: ["iss/sub"]
      notRequestPrincipals: ["iss/bad"]
      namespaces: ["a"]
      notNamespaces: ["b"]
      ipBlocks: ["10.0.0.1", "10.1.0.0/16"]
      notIpBlocks: ["10.2.0.0/16"]
      remoteIpBlocks: ["192.168.0.0/24"]
      notRemoteIpBlocks: ["2001:db8::/32"]
      trustDomains: ["cluster.local"]
      notTrustDomains: ["other.local"]
  - source:
      serviceAccounts: ["a/b", "c"]
      notServiceAccounts: ["d/e"]
  to:
  - operation:
      hosts: ["example.com"]
      notHosts: ["*.internal"]
      ports: ["8080"]
      notPorts: ["9090"]
      methods: ["GET"]
      notMethods: ["DELETE"]
      paths: ["/api/{*}/items", "/static/*"]
      notPaths: ["/admin/{**}"]
  when:
  - key: request.headers[x-version]
    values: ["v1"]
    notValues: ["v0"]
  - key: source.ip
    values: ["10.0.0.0/8"]
"#;

    #[test]
    fn parses_every_field() {
        let p: AuthorizationPolicy = from_yaml(FULL).unwrap();
        assert_eq!(p.action, Action::Deny);
        assert_eq!(p.selector.unwrap().match_labels["app"], "httpbin");
        let rules = p.rules.unwrap();
        let from = rules[0].from.as_ref().unwrap();
        let src = from[0].source.as_ref().unwrap();
        assert_eq!(src.principals.len(), 2);
        assert_eq!(src.not_remote_ip_blocks, ["2001:db8::/32"]);
        assert_eq!(src.not_trust_domains, ["other.local"]);
        assert_eq!(
            from[1].source.as_ref().unwrap().service_accounts,
            ["a/b", "c"]
        );
        let op = rules[0].to.as_ref().unwrap()[0].operation.as_ref().unwrap();
        assert_eq!(op.not_paths, ["/admin/{**}"]);
        assert_eq!(op.ports, ["8080"]);
        assert_eq!(
            rules[0].when[0].key.as_deref(),
            Some("request.headers[x-version]")
        );
        assert_eq!(rules[0].when[0].not_values, ["v0"]);
        assert_clean(FULL);
    }

    #[test]
    fn parses_custom_with_provider_and_target_refs() {
        let yaml = r#"
targetRefs:
- kind: Gateway
  group: gateway.networking.k8s.io
  name: ingress
action: CUSTOM
provider:
  name: ext-authz
rules:
- to:
  - operation:
      paths: ["/admin"]
"#;
        let p: AuthorizationPolicy = from_yaml(yaml).unwrap();
        assert_eq!(p.action, Action::Custom);
        assert_eq!(p.provider.unwrap().name.as_deref(), Some("ext-authz"));
        assert_eq!(p.target_refs.unwrap()[0].name.as_deref(), Some("ingress"));
        assert_clean(yaml);
    }

    #[test]
    fn empty_spec_allows_nothing_and_is_valid() {
        let p: AuthorizationPolicy = from_yaml("{}").unwrap();
        assert_eq!(p.action, Action::Allow);
        assert!(p.rules.is_none());
        assert_clean("{}");
    }

    #[test]
    fn typo_is_an_unknown_field() {
        let err = from_yaml::<AuthorizationPolicy>("rules:\n- form: []\n").unwrap_err();
        assert!(err.contains("unknown field `form`"), "{err}");
        let err = from_yaml::<AuthorizationPolicy>(
            "rules:\n- from:\n  - source:\n      principal: [a]\n",
        )
        .unwrap_err();
        assert!(err.contains("unknown field `principal`"), "{err}");
    }

    #[test]
    fn bad_action_is_rejected_with_the_api_server_wording() {
        let err = from_yaml::<AuthorizationPolicy>("action: PERMIT\n").unwrap_err();
        assert!(err.contains(r#"Unsupported value: "PERMIT""#), "{err}");
        assert!(err.contains(r#""CUSTOM""#), "{err}");
        let err = from_yaml::<AuthorizationPolicy>("action: allow\n").unwrap_err();
        assert!(err.contains("Unsupported value"), "{err}");
    }

    #[test]
    fn service_accounts_exclude_principals_and_namespaces() {
        let bad =
            "rules:\n- from:\n  - source:\n      serviceAccounts: [a/b]\n      namespaces: [a]\n";
        assert_error(
            bad,
            "spec.rules[0].from[0].source",
            "Cannot set serviceAccounts with namespaces or principals",
        );
        let bad =
            "rules:\n- from:\n  - source:\n      notServiceAccounts: [b]\n      principals: [x]\n";
        assert_error(
            bad,
            "spec.rules[0].from[0].source",
            "Cannot set serviceAccounts",
        );
        assert_clean(
            "rules:\n- from:\n  - source:\n      serviceAccounts: [a/b]\n  - source:\n      namespaces: [a]\n",
        );
    }

    #[test]
    fn service_account_values() {
        let yaml =
            |v: &str| format!("rules:\n- from:\n  - source:\n      serviceAccounts: [\"{v}\"]\n");
        let at = "spec.rules[0].from[0].source.serviceAccounts[0]";
        assert_error(&yaml("a/*"), at, "wildcard not allowed");
        assert_error(
            &yaml("a/b/c"),
            at,
            "expected format 'serviceAccount' or 'namespace/serviceAccount'",
        );
        assert_error(&yaml("/b"), at, "found empty namespace");
        assert_error(&yaml("a/"), at, "found empty serviceAccount");
        assert_error(
            &yaml(""),
            at,
            "empty value not allowed, found in ServiceAccounts",
        );
        assert_error(
            &yaml(&"x".repeat(321)),
            at,
            "value cannot exceed 320 characters",
        );
        assert_clean(&yaml("ns/sa"));
        let many: Vec<String> = (0..17).map(|i| format!("sa{i}")).collect();
        let yaml = format!(
            "rules:\n- from:\n  - source:\n      serviceAccounts: [{}]\n",
            many.join(", ")
        );
        assert_error(
            &yaml,
            "spec.rules[0].from[0].source.serviceAccounts",
            "must have at most 16 items",
        );
    }

    #[test]
    fn source_values() {
        let at = |f: &str| format!("spec.rules[0].from[0].source.{f}[1]");
        let yaml = |f: &str, v: &str| {
            format!("rules:\n- from:\n  - source:\n      {f}: [\"ok\", \"{v}\"]\n")
        };
        assert_error(
            &yaml("principals", ""),
            &at("principals"),
            "empty value not allowed, found in Principals",
        );
        assert_error(
            &yaml("notNamespaces", ""),
            &at("notNamespaces"),
            "found in NotNamespaces",
        );
        assert_clean(&yaml("principals", "*"));
        let ip = |v: &str| {
            format!("rules:\n- from:\n  - source:\n      ipBlocks: [\"1.2.3.4\", \"{v}\"]\n")
        };
        assert_error(&ip("1.2.3"), &at("ipBlocks"), "bad IP address (1.2.3)");
        assert_error(
            &ip("10.0.0.0/33"),
            &at("ipBlocks"),
            "bad CIDR range (10.0.0.0/33)",
        );
        assert_clean(&ip("fd00::/8"));
    }

    #[test]
    fn empty_and_missing_parts() {
        assert_error(
            "rules:\n- from: []\n",
            "spec.rules[0].from",
            "`from` must not be empty",
        );
        assert_error(
            "rules:\n- to: []\n",
            "spec.rules[0].to",
            "`to` must not be empty",
        );
        assert_error(
            "rules:\n- from:\n  - {}\n",
            "spec.rules[0].from[0].source",
            "`from.source` must not be nil",
        );
        assert_error(
            "rules:\n- to:\n  - {}\n",
            "spec.rules[0].to[0].operation",
            "`to.operation` must not be nil",
        );
        assert_error(
            "rules:\n- from:\n  - source: {}\n",
            "spec.rules[0].from[0].source",
            "`from.source` must not be empty",
        );
        assert_error(
            "rules:\n- to:\n  - operation: {}\n",
            "spec.rules[0].to[0].operation",
            "`to.operation` must not be empty",
        );
        // An empty rule matches every request: valid.
        assert_clean("rules:\n- {}\n");
    }

    #[test]
    fn operation_values() {
        let yaml =
            |f: &str, v: &str| format!("rules:\n- to:\n  - operation:\n      {f}: [\"{v}\"]\n");
        let at = |f: &str| format!("spec.rules[0].to[0].operation.{f}[0]");
        assert_error(&yaml("ports", "http"), &at("ports"), "bad port (http)");
        assert_error(
            &yaml("notPorts", "70000"),
            &at("notPorts"),
            "bad port (70000)",
        );
        assert_error(
            &yaml("methods", ""),
            &at("methods"),
            "empty value not allowed, found in Methods",
        );
        assert_error(
            &yaml("paths", "/{**}/a/{*}"),
            &at("paths"),
            "{**} is not the last operator",
        );
        assert_error(
            &yaml("paths", "/a/{id}"),
            &at("paths"),
            "Contains '{' or '}' beyond a supported path template",
        );
        assert_error(
            &yaml("notPaths", "/a/{*}/b c"),
            &at("notPaths"),
            "with invalid string literal",
        );
        assert_clean(&yaml("paths", "/a/{*}/b/{**}"));
        assert_clean(&yaml("paths", "/a/*"));
        assert_clean(&yaml("ports", "443"));
        assert_clean(&yaml("methods", "POST"));
    }

    #[test]
    fn conditions() {
        let yaml = |k: &str, v: &str| {
            format!("rules:\n- when:\n  - key: \"{k}\"\n    values: [\"{v}\"]\n")
        };
        assert_error(
            "rules:\n- when:\n  - values: [a]\n",
            "spec.rules[0].when[0].key",
            "Required value",
        );
        assert_error(
            &yaml("", "a"),
            "spec.rules[0].when[0].key",
            "`key` must not be empty",
        );
        assert_error(
            "rules:\n- when:\n  - key: source.ip\n",
            "spec.rules[0].when[0]",
            "at least one of `values` or `notValues` must be set for key source.ip",
        );
        assert_error(
            &yaml("source.ip", "x"),
            "spec.rules[0].when[0].values[0]",
            "invalid `value` for `key` source.ip: bad IP address (x)",
        );
        assert_error(
            &yaml("destination.port", "x"),
            "spec.rules[0].when[0].values[0]",
            "bad port (x)",
        );
        assert_error(
            &yaml("request.headers", "a"),
            "spec.rules[0].when[0].key",
            "bad key (request.headers): should have format a[b]",
        );
        assert_error(
            &yaml("request.auth.claims[]", "a"),
            "spec.rules[0].when[0].key",
            "should have format a[b]",
        );
        assert_error(
            &yaml("destination.labels[app]", "a"),
            "spec.rules[0].when[0].key",
            "is replaced by the workload selector",
        );
        assert_error(
            &yaml("destination.namespace", "a"),
            "spec.rules[0].when[0].key",
            "replaced by the metadata.namespace",
        );
        assert_error(
            &yaml("destination.user", "a"),
            "spec.rules[0].when[0].key",
            "only supported in v1alpha1",
        );
        assert_error(
            &yaml("source.magic", "a"),
            "spec.rules[0].when[0].key",
            "unknown attribute: source.magic",
        );
        assert_error(
            &yaml("source.serviceAccount", "a/b/c"),
            "spec.rules[0].when[0].values[0]",
            "expected format",
        );
        let not = "rules:\n- when:\n  - key: remote.ip\n    notValues: [\"300.1.1.1\"]\n";
        assert_error(
            not,
            "spec.rules[0].when[0].notValues[0]",
            "invalid `notValue` for `key` remote.ip",
        );
        for key in [
            "request.headers[x-a]",
            "request.auth.claims[groups]",
            "request.auth.claims[a][b]",
            "experimental.envoy.filters.network.mysql_proxy[db.table]",
            "source.namespace",
            "connection.sni",
            "request.auth.audiences",
        ] {
            assert_clean(&yaml(key, "v"));
        }
        assert_clean(&yaml("source.serviceAccount", "ns/sa"));
        assert_clean(&yaml("destination.port", "8080"));
    }

    #[test]
    fn custom_action_rules() {
        assert_error(
            "action: CUSTOM\nprovider:\n  name: x\n",
            "spec.action",
            "CUSTOM action without `rules` is meaningless",
        );
        assert_error(
            "action: CUSTOM\nrules:\n- {}\n",
            "spec.provider.name",
            "`provider.name` must not be empty",
        );
        assert_error(
            "action: CUSTOM\nprovider: {}\nrules:\n- {}\n",
            "spec.provider.name",
            "`provider.name` must not be empty",
        );
        let bad = "action: CUSTOM\nprovider:\n  name: x\nrules:\n- from:\n  - source:\n      principals: [a]\n";
        assert_error(
            bad,
            "spec.rules[0].from[0].source.principals",
            "From.Principals is currently not supported with CUSTOM action",
        );
        let bad = "action: CUSTOM\nprovider:\n  name: x\nrules:\n- when:\n  - key: request.auth.claims[iss]\n    values: [a]\n";
        assert_error(
            bad,
            "spec.rules[0].when[0].key",
            "request.auth.claims[iss] is currently not supported with CUSTOM action",
        );
        assert_clean(
            "action: CUSTOM\nprovider:\n  name: x\nrules:\n- from:\n  - source:\n      ipBlocks: [1.2.3.4]\n",
        );
        assert_error(
            "action: DENY\nprovider:\n  name: x\nrules:\n- {}\n",
            "spec.provider",
            "`provider` must not be with non CUSTOM action, found DENY",
        );
        assert_error("provider:\n  name: x\n", "spec.provider", "found ALLOW");
    }

    #[test]
    fn deny_needs_rules_and_warns_for_http_only_rules() {
        assert_error(
            "action: DENY\n",
            "spec.action",
            "DENY action without `rules` is meaningless",
        );
        assert_clean("action: DENY\nrules:\n- {}\n");
        let http_only = "action: DENY\nrules:\n- to:\n  - operation:\n      methods: [POST]\n";
        let found = issues(http_only);
        assert!(
            found.iter().any(|i| i.severity == Severity::Warning
                && i.message.contains("will deny all traffic to TCP ports")),
            "{found:#?}"
        );
        assert_clean(http_only);
        let with_port = "action: DENY\nrules:\n- to:\n  - operation:\n      methods: [POST]\n      ports: [\"80\"]\n";
        assert!(issues(with_port).is_empty());
    }

    #[test]
    fn selector_rules() {
        assert_error(
            "selector:\n  matchLabels:\n    app: \"web*\"\n",
            "spec.selector.matchLabels.app",
            "wildcard not allowed in label value match",
        );
        assert_error(
            "selector:\n  matchLabels:\n    \"a*\": web\n",
            "spec.selector.matchLabels.a*",
            "wildcard not allowed in label key match",
        );
        assert_error(
            "selector:\n  matchLabels:\n    \"\": web\n",
            "spec.selector.matchLabels",
            "key must not be empty",
        );
        let long = format!("selector:\n  matchLabels:\n    app: {}\n", "a".repeat(64));
        assert_error(
            &long,
            "spec.selector.matchLabels.app",
            "Too long: may not be more than 63 bytes",
        );
        let empty = issues("selector: {}\n");
        assert_eq!(empty.len(), 1, "{empty:#?}");
        assert_eq!(empty[0].severity, Severity::Warning);
        assert!(
            empty[0]
                .message
                .contains("workload selector specified without labels")
        );
        assert_clean("selector:\n  matchLabels:\n    app: web\n");
    }

    #[test]
    fn target_refs() {
        assert_error(
            "selector:\n  matchLabels:\n    a: b\ntargetRefs:\n- kind: Service\n  name: a\n",
            "spec",
            "only one of targetRefs or selector can be set",
        );
        assert_error(
            "targetRef:\n  kind: Service\n  name: a\ntargetRefs:\n- kind: Service\n  name: a\n",
            "spec",
            "only one of targetRefs or selector can be set",
        );
        assert_error(
            "targetRef:\n  kind: Service\n",
            "spec.targetRef.name",
            "spec.targetRef.name: Required value",
        );
        assert_error(
            "targetRef:\n  name: a\n",
            "spec.targetRef.kind",
            "spec.targetRef.kind: Required value",
        );
        assert_error(
            "targetRef:\n  kind: Service\n  name: \"\"\n",
            "spec.targetRef.name",
            "should be at least 1 chars long",
        );
        assert_error(
            "targetRefs:\n- kind: Service\n  name: a\n  namespace: other\n",
            "spec.targetRefs[0].namespace",
            "cross namespace referencing is not currently supported",
        );
        assert_error(
            "targetRef:\n  group: A_B\n  kind: Service\n  name: a\n",
            "spec.targetRef.group",
            "spec.targetRef.group in body should match",
        );
        assert_error(
            "targetRef:\n  kind: \"Ser vice\"\n  name: a\n",
            "spec.targetRef.kind",
            "spec.targetRef.kind in body should match",
        );
        assert_error(
            "targetRef:\n  kind: Deployment\n  group: apps\n  name: a\n",
            "spec.targetRef.kind",
            "targetRef must be to one of",
        );
        assert_error(
            "targetRef:\n  kind: Gateway\n  name: a\n",
            "spec.targetRef.kind",
            "but was /Gateway",
        );
        let many: String = (0..17)
            .map(|i| format!("- kind: Service\n  name: s{i}\n"))
            .collect();
        assert_error(
            &format!("targetRefs:\n{many}"),
            "spec.targetRefs",
            "must have at most 16 items",
        );
        assert_clean("targetRef:\n  kind: Service\n  group: \"\"\n  name: a\n  namespace: \"\"\n");
        assert_clean(
            "targetRefs:\n- kind: ServiceEntry\n  group: networking.istio.io\n  name: a\n- kind: GatewayClass\n  group: gateway.networking.k8s.io\n  name: b\n",
        );
    }

    fn with_annotations(yaml: &str, annotations: &[(&str, &str)]) -> Vec<Issue> {
        let spec: AuthorizationPolicy = from_yaml(yaml).unwrap();
        let metadata = ObjectMeta {
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            ..ObjectMeta::default()
        };
        let meta = Meta {
            name: "p",
            namespace: "ns",
            metadata: &metadata,
        };
        let mut out = Issues::default();
        spec.validate(&meta, &mut out);
        out.items
    }

    #[test]
    fn dry_run_annotation() {
        let path = "metadata.annotations.istio.io/dry-run";
        assert!(
            with_annotations(
                "action: DENY\nrules:\n- {}\n",
                &[("istio.io/dry-run", "true")]
            )
            .is_empty()
        );
        assert!(with_annotations("{}", &[("istio.io/dry-run", "False")]).is_empty());
        let found = with_annotations("{}", &[("istio.io/dry-run", "yes")]);
        assert!(
            found.iter().any(|i| i.path == path
                && i.message
                    .contains("ns/p has annotation istio.io/dry-run with invalid value (yes)")),
            "{found:#?}"
        );
        let found = with_annotations("action: AUDIT\n", &[("istio.io/dry-run", "true")]);
        assert!(
            found.iter().any(|i| i
                .message
                .contains("currently only supports action ALLOW/DENY, found action AUDIT in ns/p")),
            "{found:#?}"
        );
        let found = with_annotations("{}", &[("internal.istio.io/webhook-always-reject", "")]);
        assert!(
            found
                .iter()
                .any(|i| i.message.contains("annotation found, rejecting")),
            "{found:#?}"
        );
        let found = with_annotations("{}", &[("internal.istio.io/parents", "HTTPRoute/a.b")]);
        assert!(
            found
                .iter()
                .any(|i| i.message.contains("this may not be set by users")),
            "{found:#?}"
        );
    }

    #[test]
    fn null_list_items_are_rejected_in_the_api_server_words() {
        let err = from_yaml::<AuthorizationPolicy>("rules:\n- ~\n").unwrap_err();
        assert!(
            err.contains("spec.rules[0] in body must be of type object"),
            "{err}"
        );
        let err =
            from_yaml::<AuthorizationPolicy>("rules:\n- from:\n  - source: {}\n  -\n").unwrap_err();
        assert!(
            err.contains("from[1] in body must be of type object"),
            "{err}"
        );
        let p: AuthorizationPolicy = from_yaml("rules: ~\ntargetRefs: null\n").unwrap();
        assert!(p.rules.is_none() && p.target_refs.is_none());
    }

    #[test]
    fn too_many_rules() {
        let rules: String = (0..513).map(|_| "- {}\n").collect();
        assert_error(
            &format!("rules:\n{rules}"),
            "spec.rules",
            "must have at most 512 items",
        );
    }

    #[test]
    fn istio_corpus() {
        let checked = corpus::check::<AuthorizationPolicy>(
            "AuthorizationPolicy",
            corpus::security_api,
            corpus::Spec::Optional,
            AuthorizationPolicy::validate,
            &[],
        );
        assert_ne!(checked, Some(0), "no AuthorizationPolicy document found");
    }
}

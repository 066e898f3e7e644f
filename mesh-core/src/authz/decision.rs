//! The decision for one request to one workload: which policies apply, in Istio's order
//! CUSTOM, DENY, ALLOW, plus AUDIT and dry-run results that never change it.

use std::{
    collections::HashMap,
    fmt,
    sync::atomic::{AtomicU64, Ordering},
};

use super::{request::AuthzRequest, rule::CompiledRule};
use crate::{
    Labels,
    model::{AuthorizationAction, AuthorizationPolicy, CompiledMesh, PolicyScope},
};

/// The body Envoy's RBAC filter answers a denied request with (status 403).
pub const DENIED_BODY: &str = "RBAC: access denied";

static NEXT_ENGINE_ID: AtomicU64 = AtomicU64::new(0);

/// The AuthorizationPolicies of a mesh, compiled for evaluation: values parsed into matchers,
/// policies indexed by namespace. Built once per config version ([`new`](Self::new)); the
/// inbound layer selects a workload's policies once ([`workload`](Self::workload)) and evaluates
/// each request against them ([`evaluate`](Self::evaluate)).
#[derive(Debug)]
pub struct AuthzEngine {
    id: u64,
    root_namespace: String,
    policies: Vec<Policy>,
    /// Policy indexes by the policy's namespace, in config order.
    by_namespace: HashMap<String, Vec<u32>>,
    warnings: Vec<String>,
}

#[derive(Debug)]
struct Policy {
    name: String,
    scope: PolicyScope,
    action: AuthorizationAction,
    dry_run: bool,
    rules: Vec<CompiledRule>,
}

impl Policy {
    /// The index of the first rule that matches.
    fn first_match(&self, req: &AuthzRequest<'_>) -> Option<usize> {
        self.rules.iter().position(|r| r.matches(req))
    }
}

/// The policies that apply to one workload, split by what they do, as indexes into the engine
/// that selected them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadPolicies {
    engine: u64,
    custom: Vec<u32>,
    deny: Vec<u32>,
    allow: Vec<u32>,
    audit: Vec<u32>,
    dry_run_deny: Vec<u32>,
    dry_run_allow: Vec<u32>,
}

impl WorkloadPolicies {
    /// Whether no policy applies (every request is allowed, nothing is audited).
    pub fn is_empty(&self) -> bool {
        self.custom.is_empty()
            && self.deny.is_empty()
            && self.allow.is_empty()
            && self.audit.is_empty()
            && self.dry_run_deny.is_empty()
            && self.dry_run_allow.is_empty()
    }

    /// How many policies apply (enforced, audit, custom and dry-run).
    pub fn len(&self) -> usize {
        self.custom.len()
            + self.deny.len()
            + self.allow.len()
            + self.audit.len()
            + self.dry_run_deny.len()
            + self.dry_run_allow.len()
    }
}

/// A policy and the index of its rule that matched the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyMatch<'e> {
    /// `namespace/name`.
    pub policy: &'e str,
    pub rule: usize,
}

/// Why a request was allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No DENY policy matched and no ALLOW policy applies to the workload.
    NoAllowPolicy,
    /// An ALLOW policy matched (and no DENY policy did).
    AllowPolicyMatched,
    /// A DENY policy matched.
    DenyPolicyMatched,
    /// ALLOW policies apply to the workload and none matched.
    NoAllowPolicyMatched,
}

/// What the dry-run policies of one action would have decided had they been enforced (Istio's
/// shadow rules: the dry-run policies of an action are evaluated on their own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DryRunResult<'e> {
    /// [`AuthorizationAction::Deny`] or [`AuthorizationAction::Allow`].
    pub action: AuthorizationAction,
    /// DENY: no dry-run DENY policy matched; ALLOW: a dry-run ALLOW policy matched.
    pub allowed: bool,
    /// The dry-run policy that matched.
    pub matched: Option<PolicyMatch<'e>>,
}

/// The authorization decision for one request: what a layer enforces (`allowed`, answering
/// [`DENIED_BODY`] with 403 otherwise) and what it logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'e> {
    pub allowed: bool,
    pub reason: Reason,
    /// The DENY policy that denied, or the ALLOW policy that allowed.
    pub matched: Option<PolicyMatch<'e>>,
    /// CUSTOM policies whose rules match the request: mesh has no external authorizer, so they
    /// are **not** applied; a layer should warn that they were skipped.
    pub custom: Vec<PolicyMatch<'e>>,
    /// AUDIT policies that match: the request should be audited. Never changes `allowed`.
    pub audit: Vec<PolicyMatch<'e>>,
    /// Shadow results of dry-run policies, one per action that has any. Never change `allowed`.
    pub dry_run: Vec<DryRunResult<'e>>,
}

impl fmt::Display for Decision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed { "allowed" } else { "denied" };
        match (self.reason, self.matched) {
            (Reason::NoAllowPolicy, _) => write!(f, "{verdict}: no ALLOW policy applies")?,
            (Reason::NoAllowPolicyMatched, _) => write!(f, "{verdict}: no ALLOW policy matched")?,
            (Reason::AllowPolicyMatched | Reason::DenyPolicyMatched, m) => {
                let action = if self.reason == Reason::DenyPolicyMatched {
                    "DENY"
                } else {
                    "ALLOW"
                };
                match m {
                    Some(m) => write!(
                        f,
                        "{verdict} by {action} policy {} rules[{}]",
                        m.policy, m.rule
                    )?,
                    None => write!(f, "{verdict} by an {action} policy")?,
                }
            }
        }
        for m in &self.custom {
            write!(f, "; CUSTOM policy {} not applied", m.policy)?;
        }
        for m in &self.audit {
            write!(f, "; audited by {}", m.policy)?;
        }
        for d in &self.dry_run {
            let shadow = if d.allowed { "allow" } else { "deny" };
            match d.matched {
                Some(m) => write!(f, "; dry-run {shadow} ({})", m.policy)?,
                None => write!(f, "; dry-run {shadow}")?,
            }
        }
        Ok(())
    }
}

// === impl AuthzEngine ===

impl AuthzEngine {
    /// Compiles the mesh's AuthorizationPolicies.
    pub fn new(mesh: &CompiledMesh) -> Self {
        Self::from_policies(&mesh.root_namespace, &mesh.authorization_policies)
    }

    /// Compiles `policies`, with `root_namespace` the namespace whose policies apply mesh-wide.
    pub fn from_policies(root_namespace: &str, policies: &[AuthorizationPolicy]) -> Self {
        let mut warnings = Vec::new();
        let mut by_namespace: HashMap<String, Vec<u32>> = HashMap::new();
        let mut compiled = Vec::with_capacity(policies.len());
        for (i, p) in policies.iter().enumerate() {
            let mut rule_warnings = Vec::new();
            let rules = p
                .rules
                .iter()
                .enumerate()
                .map(|(r, rule)| {
                    let mut w = Vec::new();
                    let compiled =
                        CompiledRule::compile(rule, p.action, &p.scope.namespace, &mut w);
                    rule_warnings.extend(w.into_iter().map(|w| format!("rules[{r}].{w}")));
                    compiled
                })
                .collect();
            warnings.extend(
                rule_warnings
                    .into_iter()
                    .map(|w| format!("AuthorizationPolicy {}: {w}", p.name)),
            );
            if p.action == AuthorizationAction::Custom {
                warnings.push(format!(
                    "AuthorizationPolicy {}: CUSTOM action (provider {}) is not applied: mesh has \
                     no external authorizer; requests it matches are reported, not checked",
                    p.name,
                    p.provider.as_deref().unwrap_or("<none>")
                ));
            }
            by_namespace
                .entry(p.scope.namespace.clone())
                .or_default()
                .push(u32::try_from(i).expect("fewer than 2^32 policies"));
            compiled.push(Policy {
                name: p.name.clone(),
                scope: p.scope.clone(),
                action: p.action,
                dry_run: p.dry_run,
                rules,
            });
        }
        AuthzEngine {
            id: NEXT_ENGINE_ID.fetch_add(1, Ordering::Relaxed),
            root_namespace: root_namespace.to_owned(),
            policies: compiled,
            by_namespace,
            warnings,
        }
    }

    /// What the engine could not compile as written (unknown condition keys, values that do not
    /// parse, CUSTOM policies), one line each, to log when the config loads.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The policies that apply to a workload in `namespace` with `labels`: those of its
    /// namespace and of the root namespace whose selector (if any) matches its labels
    /// ([`PolicyScope::applies_to_authorization`]).
    pub fn workload(&self, namespace: &str, labels: &Labels) -> WorkloadPolicies {
        let none = Vec::new();
        let own = self.by_namespace.get(namespace).unwrap_or(&none);
        let root = if namespace == self.root_namespace {
            &none
        } else {
            self.by_namespace.get(&self.root_namespace).unwrap_or(&none)
        };
        let mut ids: Vec<u32> = own
            .iter()
            .chain(root)
            .copied()
            .filter(|&i| {
                self.policies[i as usize].scope.applies_to_authorization(
                    &self.root_namespace,
                    namespace,
                    labels,
                )
            })
            .collect();
        ids.sort_unstable();
        let mut w = WorkloadPolicies {
            engine: self.id,
            ..WorkloadPolicies::default()
        };
        for i in ids {
            let p = &self.policies[i as usize];
            let list = match (p.action, p.dry_run) {
                (AuthorizationAction::Custom, _) => &mut w.custom,
                (AuthorizationAction::Audit, _) => &mut w.audit,
                (AuthorizationAction::Deny, false) => &mut w.deny,
                (AuthorizationAction::Allow, false) => &mut w.allow,
                (AuthorizationAction::Deny, true) => &mut w.dry_run_deny,
                (AuthorizationAction::Allow, true) => &mut w.dry_run_allow,
            };
            list.push(i);
        }
        w
    }

    /// Istio's decision for `req` under the policies of one workload:
    ///
    /// 1. CUSTOM policies are matched and reported in [`Decision::custom`], never applied.
    /// 2. "If there are any DENY policies that match the request, deny the request."
    /// 3. "If there are no ALLOW policies for the workload, allow the request."
    /// 4. "If any of the ALLOW policies match the request, allow the request."
    /// 5. "Deny the request."
    ///
    /// AUDIT policies and dry-run (`istio.io/dry-run: "true"`) policies are evaluated and
    /// reported but never change the decision.
    ///
    /// # Panics
    /// When `policies` was selected by another engine.
    pub fn evaluate<'e>(
        &'e self,
        policies: &WorkloadPolicies,
        req: &AuthzRequest<'_>,
    ) -> Decision<'e> {
        assert_eq!(
            policies.engine, self.id,
            "WorkloadPolicies must come from the AuthzEngine that evaluates them; select them \
             again after a reload"
        );
        let first = |ids: &[u32]| {
            ids.iter().find_map(|&i| {
                let p = &self.policies[i as usize];
                p.first_match(req).map(|rule| PolicyMatch {
                    policy: &p.name,
                    rule,
                })
            })
        };
        let all = |ids: &[u32]| -> Vec<PolicyMatch<'e>> {
            ids.iter()
                .filter_map(|&i| {
                    let p = &self.policies[i as usize];
                    p.first_match(req).map(|rule| PolicyMatch {
                        policy: &p.name,
                        rule,
                    })
                })
                .collect()
        };

        let (allowed, reason, matched) = if let Some(m) = first(&policies.deny) {
            (false, Reason::DenyPolicyMatched, Some(m))
        } else if policies.allow.is_empty() {
            (true, Reason::NoAllowPolicy, None)
        } else if let Some(m) = first(&policies.allow) {
            (true, Reason::AllowPolicyMatched, Some(m))
        } else {
            (false, Reason::NoAllowPolicyMatched, None)
        };

        let mut dry_run = Vec::new();
        if !policies.dry_run_deny.is_empty() {
            let m = first(&policies.dry_run_deny);
            dry_run.push(DryRunResult {
                action: AuthorizationAction::Deny,
                allowed: m.is_none(),
                matched: m,
            });
        }
        if !policies.dry_run_allow.is_empty() {
            let m = first(&policies.dry_run_allow);
            dry_run.push(DryRunResult {
                action: AuthorizationAction::Allow,
                allowed: m.is_some(),
                matched: m,
            });
        }

        Decision {
            allowed,
            reason,
            matched,
            custom: all(&policies.custom),
            audit: all(&policies.audit),
            dry_run,
        }
    }

    /// [`workload`](Self::workload) then [`evaluate`](Self::evaluate): for one-off decisions
    /// (`mesh route`, tests). A layer selects the workload's policies once instead.
    pub fn decide(&self, namespace: &str, labels: &Labels, req: &AuthzRequest<'_>) -> Decision<'_> {
        self.evaluate(&self.workload(namespace, labels), req)
    }
}

//! Authorization: Istio's
//! [AuthorizationPolicy](https://istio.io/latest/docs/reference/config/security/authorization-policy/)
//! decision, pure.
//!
//! - [`AuthzEngine::new`] compiles the mesh's policies once per config version: string values
//!   into exact/prefix/suffix/presence matchers, `{*}`/`{**}` path templates, CIDR blocks,
//!   ports, header names and claim paths; policies indexed by namespace.
//! - [`AuthzEngine::workload`] selects the policies of one workload (its namespace, its labels,
//!   and the root namespace), once per workload.
//! - [`AuthzEngine::evaluate`] decides one request, described by a borrowed [`AuthzRequest`],
//!   and returns a [`Decision`] to enforce (403 [`DENIED_BODY`]) and log.
//!
//! ```
//! use mesh_core::authz::{AuthzEngine, AuthzRequest, Reason};
//! use mesh_core::model::{
//!     AuthorizationAction, AuthorizationPolicy, AuthorizationRule, Operation, PolicyScope, Source,
//! };
//!
//! // Allow GET /info* from the sleep service account, in namespace foo.
//! let policy = AuthorizationPolicy {
//!     name: "foo/httpbin".into(),
//!     scope: PolicyScope { namespace: "foo".into(), selector: None },
//!     action: AuthorizationAction::Allow,
//!     provider: None,
//!     dry_run: false,
//!     rules: vec![AuthorizationRule {
//!         from: vec![Source {
//!             principals: vec!["cluster.local/ns/default/sa/sleep".into()],
//!             ..Source::default()
//!         }],
//!         to: vec![Operation {
//!             methods: vec!["GET".into()],
//!             paths: vec!["/info*".into()],
//!             ..Operation::default()
//!         }],
//!         when: vec![],
//!     }],
//! };
//! let engine = AuthzEngine::from_policies("istio-system", &[policy]);
//! let httpbin = engine.workload("foo", &Default::default());
//!
//! let req = http::Request::get("http://httpbin.foo:8000/info?x=1").body(()).unwrap();
//! let sleep = AuthzRequest::from_request(&req)
//!     .with_peer_principal("spiffe://cluster.local/ns/default/sa/sleep");
//! let decision = engine.evaluate(&httpbin, &sleep);
//! assert!(decision.allowed);
//! assert_eq!(decision.reason, Reason::AllowPolicyMatched);
//!
//! let anonymous = AuthzRequest::from_request(&req);
//! let decision = engine.evaluate(&httpbin, &anonymous);
//! assert!(!decision.allowed);
//! assert_eq!(decision.to_string(), "denied: no ALLOW policy matched");
//! ```
//!
//! What is not evaluated, and how it fails: CUSTOM policies are matched and reported, never
//! applied (there is no external authorizer); `experimental.envoy.filters.*` and unknown
//! condition keys cannot be evaluated: such a condition is left out of a DENY rule and makes any
//! other rule match nothing (both fail closed), with a line in [`AuthzEngine::warnings`].

mod decision;
mod request;
mod rule;
mod value;

#[cfg(test)]
mod tests;

pub use decision::{
    AuthzEngine, DENIED_BODY, Decision, DryRunResult, PolicyMatch, Reason, WorkloadPolicies,
};
pub use request::{AuthzRequest, Claim, Claims};

//! Peer authentication: which mTLS mode a workload's inbound port runs in, decided from Istio's
//! [PeerAuthentication](https://istio.io/latest/docs/reference/config/security/peer_authentication/)
//! policies, pure.
//!
//! Istio's rules, as `ComposePeerAuthentication` in istiod applies them:
//! - three levels, each chosen once: **mesh-wide** (a policy in the root namespace, usually
//!   `istio-system`, without a selector), **namespace** (a policy in the workload's namespace
//!   without a selector) and **workload** (a policy in the workload's namespace whose
//!   `selector.matchLabels` match its labels). A policy with a selector in the root namespace is
//!   ignored ("Policy in root namespace with selector will be ignored").
//! - several candidates at one level: Istio takes the oldest (creation time). We have no
//!   creation time; the first in load order wins (files in the order given, documents in file
//!   order), which is what a `kubectl apply` of the same files in that order would produce.
//! - `mtls.mode: UNSET` (or no `mtls`) inherits the level above; above the mesh level the mode
//!   is PERMISSIVE.
//! - [`portLevelMtls`](https://istio.io/latest/docs/reference/config/security/peer_authentication/#PeerAuthentication-port_level_mtls)
//!   counts only in the workload-level policy ("only takes effect with a workload selector");
//!   its keys are the workload's (container) ports, not Service ports; UNSET there inherits the
//!   workload's resolved mode.
//!
//! ```
//! use mesh_core::CompiledMesh;
//! use mesh_core::model::{MtlsMode, PeerAuthenticationPolicy, PolicyScope};
//!
//! let mut mesh = CompiledMesh { root_namespace: "istio-system".into(), ..Default::default() };
//! mesh.peer_authentications.push(PeerAuthenticationPolicy {
//!     name: "istio-system/default".into(),
//!     scope: PolicyScope { namespace: "istio-system".into(), selector: None },
//!     mode: MtlsMode::Strict,
//!     port_modes: vec![],
//! });
//! let labels = [("app".to_owned(), "ratings".to_owned())].into();
//! assert_eq!(mesh.mtls_mode("bookinfo", &labels, 9080), MtlsMode::Strict);
//! ```

#[cfg(test)]
mod tests;

use crate::{
    CompiledMesh, Labels,
    model::{MtlsMode, PeerAuthenticationPolicy},
};

/// The mTLS modes in effect for one workload: its workload-wide mode and per-port exceptions,
/// with the names of the policies that set them (for logs and `mesh route`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectivePeerAuthentication {
    /// The workload-wide mode: never [`MtlsMode::Unset`].
    pub mode: MtlsMode,
    /// The policy that set `mode` (`namespace/name`); `None`: Istio's default, PERMISSIVE.
    pub policy: Option<String>,
    /// The workload policy's `portLevelMtls`, resolved (never [`MtlsMode::Unset`]).
    pub port_modes: Vec<(u16, MtlsMode)>,
    /// The workload policy, when it has `portLevelMtls`.
    pub port_policy: Option<String>,
}

impl Default for EffectivePeerAuthentication {
    fn default() -> Self {
        EffectivePeerAuthentication {
            mode: MtlsMode::Permissive,
            policy: None,
            port_modes: Vec::new(),
            port_policy: None,
        }
    }
}

impl EffectivePeerAuthentication {
    /// The mode of the workload's port `port` (a container port: the one the app listens on).
    pub fn mode_for_port(&self, port: u16) -> MtlsMode {
        self.port_modes
            .iter()
            .find(|(p, _)| *p == port)
            .map_or(self.mode, |(_, m)| *m)
    }

    /// The policy that decided [`mode_for_port`](Self::mode_for_port), if any.
    pub fn policy_for_port(&self, port: u16) -> Option<&str> {
        if self.port_modes.iter().any(|(p, _)| *p == port) {
            self.port_policy.as_deref()
        } else {
            self.policy.as_deref()
        }
    }
}

impl CompiledMesh {
    /// The PeerAuthentication in effect for a workload in `namespace` with `labels`; see the
    /// [module](crate::peer_authentication) docs for Istio's precedence and inheritance.
    pub fn peer_authentication(
        &self,
        namespace: &str,
        labels: &Labels,
    ) -> EffectivePeerAuthentication {
        let root = self.root_namespace.as_str();
        // The first in load order wins at each level (Istio: the oldest).
        let first = |pred: &dyn Fn(&PeerAuthenticationPolicy) -> bool| {
            self.peer_authentications.iter().find(|p| pred(p))
        };
        let mesh = first(&|p| p.scope.selector.is_none() && p.scope.namespace == root);
        let ns = (namespace != root)
            .then(|| first(&|p| p.scope.selector.is_none() && p.scope.namespace == namespace))
            .flatten();
        let workload = (namespace != root)
            .then(|| {
                first(&|p| {
                    p.scope.namespace == namespace
                        && p.scope.selector.as_ref().is_some_and(|s| s.matches(labels))
                })
            })
            .flatten();

        let mut out = EffectivePeerAuthentication::default();
        for policy in [mesh, ns, workload].into_iter().flatten() {
            if policy.mode != MtlsMode::Unset {
                out.mode = policy.mode;
                out.policy = Some(policy.name.clone());
            }
        }
        if let Some(w) = workload.filter(|w| !w.port_modes.is_empty()) {
            out.port_modes = w
                .port_modes
                .iter()
                .map(|&(port, m)| (port, if m == MtlsMode::Unset { out.mode } else { m }))
                .collect();
            out.port_policy = Some(w.name.clone());
        }
        out
    }

    /// The mTLS mode of a workload's port: STRICT (mTLS only), PERMISSIVE (mTLS or plain text)
    /// or DISABLE (plain text); never [`MtlsMode::Unset`]. `port` is the workload's own port
    /// (the container port the app listens on), as `portLevelMtls` keys are.
    pub fn mtls_mode(&self, namespace: &str, labels: &Labels, port: u16) -> MtlsMode {
        self.peer_authentication(namespace, labels)
            .mode_for_port(port)
    }
}

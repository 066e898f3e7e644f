//! Validated objects to the immutable [`CompiledMesh`] the layers read.
//!
//! Validation already rejected what Istio rejects, so compilation is mostly resolution:
//! qualifying hosts in their namespaces, building the service registry, resolving subsets to
//! selectors, merging policies, compiling regexes once. What can still fail here (a header value
//! `http` refuses, say) is reported against its field like any other error.

mod policies;
mod registry;
pub(crate) mod routes;
mod scopes;
mod security;
#[cfg(test)]
mod tests;

use mesh_core::CompiledMesh;

use crate::{
    diag::Diagnostic,
    kinds::Severity,
    load::{Config, LoadOptions, Object},
};

/// Where compilation reports what it could not compile.
pub(crate) struct Sink<'a> {
    diags: &'a mut Vec<Diagnostic>,
}

impl Sink<'_> {
    pub fn error<S>(&mut self, obj: &Object<S>, path: &str, message: String) {
        self.diags
            .push(obj.diagnostic(path, Severity::Error, message));
    }

    pub fn warn<S>(&mut self, obj: &Object<S>, path: &str, message: String) {
        self.diags
            .push(obj.diagnostic(path, Severity::Warning, message));
    }
}

/// Compiles every object of `config` (objects with errors were already left out by the loader).
pub fn compile(config: &Config, opts: &LoadOptions, diags: &mut Vec<Diagnostic>) -> CompiledMesh {
    let mut sink = Sink { diags };
    let mut mesh = CompiledMesh {
        root_namespace: opts.root_namespace.clone(),
        ..CompiledMesh::default()
    };
    mesh.services = registry::services(config, &mut sink);
    for vs in &config.virtual_services {
        for vh in routes::compile_virtual_service(vs, &mut sink) {
            routes::add_virtual_host(&mut mesh.virtual_hosts, vh);
        }
    }
    mesh.destination_policies =
        policies::destination_policies(&config.destination_rules, &mut sink);
    mesh.gateways = config
        .gateways
        .iter()
        .flat_map(scopes::gateway_servers)
        .collect();
    mesh.sidecars = config.sidecars.iter().map(scopes::sidecar_scope).collect();
    mesh.rate_limits = config
        .envoy_filters
        .iter()
        .flat_map(|ef| scopes::rate_limits(ef, &mut sink))
        .collect();
    mesh.peer_authentications = config
        .peer_authentications
        .iter()
        .map(security::peer_authentication)
        .collect();
    mesh.authorization_policies = config
        .authorization_policies
        .iter()
        .map(|ap| security::authorization_policy(ap, &mut sink))
        .collect();
    mesh.request_authentications = config
        .request_authentications
        .iter()
        .map(security::request_authentication)
        .collect();
    // The per-request host lookups hash instead of scanning the whole mesh.
    mesh.build_index();
    mesh
}

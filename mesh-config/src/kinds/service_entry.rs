//! `ServiceEntry` and `WorkloadEntry` (networking.istio.io v1, v1beta1, v1alpha3): services and
//! endpoints that are not Kubernetes Services, e.g. external APIs and VMs.
//!
//! A WorkloadEntry's `spec` is the same message as a ServiceEntry's inline `endpoints[]` item, so
//! one type, [`WorkloadEntry`], serves both. Both kinds require `spec` in their CRD; the loader
//! reports a document without one.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::{
    Issues, Meta,
    common::NetworkingWorkloadSelector,
    rules::{
        ExportToOf, Protocol, is_dns1123_label, is_ip_address, too_long, too_many,
        validate_export_to, validate_fqdn, validate_ip_subnet, validate_labels, validate_port_name,
        validate_protocol, validate_selector, validate_wildcard_domain,
        warn_selector_without_labels,
    },
};

/// The `spec` of a ServiceEntry.
///
/// <https://istio.io/latest/docs/reference/config/networking/service-entry/#ServiceEntry>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceEntry {
    /// Required, 1 to 256 entries; `*` alone is not allowed.
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDR blocks of the service (at most 256).
    #[serde(deserialize_with = "super::common::go_yaml_strings")]
    pub addresses: Vec<String>,
    pub ports: Vec<ServicePort>,
    pub location: Location,
    pub resolution: Resolution,
    /// Inline endpoints (at most 4096); exclusive with `workloadSelector`.
    pub endpoints: Vec<WorkloadEntry>,
    /// Selects WorkloadEntries (and pods) by labels; exclusive with `endpoints`.
    pub workload_selector: Option<NetworkingWorkloadSelector>,
    pub export_to: Vec<String>,
    pub subject_alt_names: Vec<String>,
}

/// A port of a ServiceEntry.
///
/// <https://istio.io/latest/docs/reference/config/networking/service-entry/#ServicePort>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    /// Required, 1 to 65535, unique within the entry.
    pub number: u32,
    /// `HTTP`, `HTTPS`, `HTTP2`, `GRPC`, `GRPC-WEB`, `TCP`, `TLS`, `MONGO`, `MYSQL`, `REDIS`,
    /// `UDP`, `HTTP_PROXY`; empty means protocol sniffing.
    pub protocol: String,
    /// Required, unique within the entry.
    pub name: String,
    pub target_port: Option<u32>,
}

/// <https://istio.io/latest/docs/reference/config/networking/service-entry/#ServiceEntry-Location>
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    #[default]
    MeshExternal,
    MeshInternal,
}

/// <https://istio.io/latest/docs/reference/config/networking/service-entry/#ServiceEntry-Resolution>
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    #[default]
    None,
    Static,
    Dns,
    DnsRoundRobin,
    DynamicDns,
}

/// The `spec` of a WorkloadEntry, and an inline endpoint of a ServiceEntry.
///
/// <https://istio.io/latest/docs/reference/config/networking/workload-entry/#WorkloadEntry>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadEntry {
    /// An IP, a host name (DNS resolution), or `unix:///path` / `unix://@abstract`.
    pub address: String,
    /// Port name (of the ServiceEntry's ports) to the endpoint's port number.
    pub ports: BTreeMap<String, u32>,
    pub labels: BTreeMap<String, String>,
    pub network: String,
    pub locality: String,
    pub weight: Option<u32>,
    pub service_account: String,
}

// === impl ServiceEntry ===

impl ServiceEntry {
    /// Checks what Istio rejects when the object is applied (the CRD schema, its CEL rules and
    /// istiod's webhook), and warns where istiod warns.
    pub fn validate(&self, meta: &Meta<'_>, out: &mut Issues) {
        if let Some(sel) = &self.workload_selector {
            validate_selector(sel, "spec.workloadSelector", out);
            warn_selector_without_labels(sel, "spec.workloadSelector.labels", "service entry", out);
            if !self.endpoints.is_empty() {
                out.error(
                    "spec",
                    "Invalid value: \"object\": only one of WorkloadSelector or Endpoints can be \
                     set (list endpoints inline, or select WorkloadEntries with labels)",
                );
            }
        }

        self.validate_hosts(out);
        self.validate_addresses(out);
        let service_ports = self.validate_ports(meta, out);

        if self.endpoints.len() > 4096 {
            too_many(out, "spec.endpoints", self.endpoints.len(), 4096);
        }
        for (i, ep) in self.endpoints.iter().enumerate() {
            ep.validate_schema(&format!("spec.endpoints[{i}]"), out);
        }
        match self.resolution {
            Resolution::None => {
                if !self.endpoints.is_empty() {
                    out.error(
                        "spec.endpoints",
                        "Invalid value: \"object\": NONE mode cannot set endpoints (set \
                         resolution: STATIC or DNS, or remove the endpoints)",
                    );
                }
                if self.workload_selector.is_some() {
                    out.warn(
                        "spec.workloadSelector",
                        "workloadSelector should not be set when resolution mode is NONE",
                    );
                }
            }
            Resolution::Static => {
                for (i, ep) in self.endpoints.iter().enumerate() {
                    ep.validate_semantics(
                        &format!("spec.endpoints[{i}]"),
                        EndpointRules::Static(&service_ports),
                        out,
                    );
                }
            }
            Resolution::Dns | Resolution::DnsRoundRobin | Resolution::DynamicDns => {
                let mode = resolution_name(self.resolution);
                if self.endpoints.is_empty() && self.resolution != Resolution::DynamicDns {
                    for (i, h) in self.hosts.iter().enumerate() {
                        if h != "*" && validate_fqdn(h).is_err() {
                            out.error(
                                format!("spec.hosts[{i}]"),
                                format!(
                                    "hosts must be FQDN if no endpoints are provided for \
                                     resolution mode {mode}"
                                ),
                            );
                        }
                    }
                }
                if self.resolution == Resolution::DnsRoundRobin && self.endpoints.len() > 1 {
                    out.error(
                        "spec.endpoints",
                        "Invalid value: \"object\": DNS_ROUND_ROBIN mode cannot have multiple \
                         endpoints (there must only be 0 or 1 endpoint; use DNS to resolve \
                         several)",
                    );
                }
                for (i, ep) in self.endpoints.iter().enumerate() {
                    ep.validate_semantics(
                        &format!("spec.endpoints[{i}]"),
                        EndpointRules::Dns(&service_ports),
                        out,
                    );
                }
                if !self.addresses.is_empty()
                    && self.hosts.len() > 1
                    && let Some(i) = self
                        .ports
                        .iter()
                        .position(|p| Protocol::parse(&p.protocol).is_tcp())
                {
                    out.warn(
                        format!("spec.ports[{i}]"),
                        "service entry can not have more than one host specified \
                             simultaneously with address and tcp port",
                    );
                }
            }
        }

        if self.resolution != Resolution::None
            && self.hosts.len() > 1
            && let Some(i) = self.ports.iter().position(|p| {
                let p = Protocol::parse(&p.protocol);
                !(p.is_http() || p.is_tls())
            })
        {
            out.error(
                format!("spec.ports[{i}].protocol"),
                "multiple hosts provided with non-HTTP, non-TLS ports (use one host per \
                     ServiceEntry for TCP ports, or resolution: NONE)",
            );
        }

        validate_export_to(
            meta.namespace,
            &self.export_to,
            ExportToOf::ServiceEntry,
            out,
        );
    }

    fn validate_hosts(&self, out: &mut Issues) {
        if self.hosts.is_empty() {
            out.error(
                "spec.hosts",
                "Required value: a ServiceEntry needs at least one host (service entry must have \
                 at least one host)",
            );
        }
        if self.hosts.len() > 256 {
            too_many(out, "spec.hosts", self.hosts.len(), 256);
        }
        for (i, h) in self.hosts.iter().enumerate() {
            let path = format!("spec.hosts[{i}]");
            if h == "*" {
                out.error(
                    path,
                    "Invalid value: \"string\": hostname cannot be wildcard (name the external \
                     hosts, e.g. `*.example.com`)",
                );
                continue;
            }
            if let Err(e) = validate_wildcard_domain(h) {
                out.error(&path, e);
            }
            if h.contains('*') && !h.starts_with("*.") {
                out.warn(path, format!("partial wildcard {h:?} not allowed"));
            }
        }
    }

    fn validate_addresses(&self, out: &mut Issues) {
        if self.addresses.len() > 256 {
            too_many(out, "spec.addresses", self.addresses.len(), 256);
        }
        let mut cidr = None;
        for (i, a) in self.addresses.iter().enumerate() {
            let path = format!("spec.addresses[{i}]");
            if a.len() > 64 {
                too_long(out, &path, a.len(), 64);
            }
            if a.contains('/') {
                cidr.get_or_insert(i);
            }
            if let Err(e) = validate_ip_subnet(a) {
                out.error(&path, e);
            }
        }
        if let Some(i) = cidr
            && !matches!(self.resolution, Resolution::None | Resolution::Static)
        {
            out.error(
                format!("spec.addresses[{i}]"),
                "Invalid value: \"object\": CIDR addresses are allowed only for NONE/STATIC \
                     resolution types",
            );
        }
    }

    /// Checks the ports and returns their names, which endpoints' `ports` must use.
    fn validate_ports(&self, meta: &Meta<'_>, out: &mut Issues) -> BTreeSet<&str> {
        if self.ports.len() > 256 {
            too_many(out, "spec.ports", self.ports.len(), 256);
        }
        let no_auto_allocation = meta
            .metadata
            .labels
            .get("networking.istio.io/enable-autoallocate-ip")
            .is_some_and(|v| v == "false");
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut numbers: BTreeMap<u32, usize> = BTreeMap::new();
        for (i, p) in self.ports.iter().enumerate() {
            let base = format!("spec.ports[{i}]");
            if p.name.is_empty() {
                out.error(
                    format!("{base}.name"),
                    "Required value: every port needs a name (e.g. `http`)",
                );
            } else if let Some(first) = names.insert(&p.name, i) {
                names.insert(&p.name, first);
                out.error(
                    format!("{base}.name"),
                    format!(
                        "Duplicate value: service entry port name {:?} already defined by \
                         spec.ports[{first}]",
                        p.name
                    ),
                );
            } else if p.name.len() > 256 {
                too_long(out, &format!("{base}.name"), p.name.len(), 256);
            } else if let Err(e) = validate_port_name(&p.name) {
                out.error(format!("{base}.name"), e);
            }
            if !(1..=65535).contains(&p.number) {
                out.error(
                    format!("{base}.number"),
                    format!("Invalid value: {}: port must be between 1-65535", p.number),
                );
            } else if let Some(first) = numbers.insert(p.number, i) {
                numbers.insert(p.number, first);
                out.error(
                    format!("{base}.number"),
                    format!(
                        "Invalid value: \"array\": port number cannot be duplicated ({} is \
                         already used by spec.ports[{first}])",
                        p.number
                    ),
                );
            }
            if let Some(t) = p.target_port
                && !(1..=65535).contains(&t)
            {
                out.error(
                    format!("{base}.targetPort"),
                    format!("Invalid value: {t}: port must be between 1-65535"),
                );
            }
            if p.protocol.len() > 256 {
                too_long(out, &format!("{base}.protocol"), p.protocol.len(), 256);
            } else if let Err(e) = validate_protocol(&p.protocol) {
                out.error(format!("{base}.protocol"), e);
            }
            if no_auto_allocation
                && self.addresses.is_empty()
                && (p.protocol.is_empty() || p.protocol == "TCP")
            {
                out.warn(
                    format!("{base}.protocol"),
                    "addresses are required for ports serving TCP (or unset) protocol when IP \
                     Autoallocation is not enabled",
                );
            }
        }
        names.into_keys().collect()
    }
}

fn resolution_name(r: Resolution) -> &'static str {
    match r {
        Resolution::None => "NONE",
        Resolution::Static => "STATIC",
        Resolution::Dns => "DNS",
        Resolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
        Resolution::DynamicDns => "DYNAMIC_DNS",
    }
}

// === impl WorkloadEntry ===

/// How an endpoint's address and ports are checked, by where it appears.
#[derive(Clone, Copy)]
enum EndpointRules<'a> {
    /// A WorkloadEntry object: IP, host name or unix socket; any port names.
    Standalone,
    /// A STATIC ServiceEntry's endpoint: IP or unix socket; the entry's port names.
    Static(&'a BTreeSet<&'a str>),
    /// A DNS ServiceEntry's endpoint: IP or host name; the entry's port names.
    Dns(&'a BTreeSet<&'a str>),
}

impl WorkloadEntry {
    /// Checks what Istio rejects when a WorkloadEntry is applied, and warns where istiod warns.
    pub fn validate(&self, _meta: &Meta<'_>, out: &mut Issues) {
        self.validate_schema("spec", out);
        self.validate_semantics("spec", EndpointRules::Standalone, out);
    }

    fn is_unix(&self) -> bool {
        self.address.starts_with("unix://")
    }

    /// The CRD's limits and CEL rules, the same for a WorkloadEntry and an inline endpoint.
    fn validate_schema(&self, base: &str, out: &mut Issues) {
        if self.address.is_empty() && self.network.is_empty() {
            out.error(
                base,
                "Invalid value: \"object\": Address is required (set address, or network for an \
                 endpoint reached through a network gateway)",
            );
        }
        let addr_path = format!("{base}.address");
        if self.address.len() > 256 {
            too_long(out, &addr_path, self.address.len(), 256);
        }
        if let Some(path) = self.address.strip_prefix("unix://") {
            if !self.ports.is_empty() {
                out.error(
                    format!("{base}.ports"),
                    format!(
                        "Invalid value: \"object\": UDS may not include ports (unix endpoint {} \
                         must not include ports)",
                        self.address
                    ),
                );
            }
            if !(path.starts_with('/') || path.starts_with('@')) {
                out.error(
                    &addr_path,
                    "Invalid value: \"string\": UDS must be an absolute path or abstract socket \
                     (write unix:///path/to/socket or unix://@name)",
                );
            } else if path.ends_with('/') {
                out.error(
                    &addr_path,
                    "Invalid value: \"string\": UDS may not be a dir",
                );
            }
        }
        if self.labels.len() > 256 {
            too_many(out, &format!("{base}.labels"), self.labels.len(), 256);
        }
        for (field, value, max) in [
            ("locality", &self.locality, 2048),
            ("network", &self.network, 2048),
            ("serviceAccount", &self.service_account, 253),
        ] {
            if value.len() > max {
                too_long(out, &format!("{base}.{field}"), value.len(), max);
            }
        }
        if self.ports.len() > 128 {
            too_many(out, &format!("{base}.ports"), self.ports.len(), 128);
        }
        for (name, port) in &self.ports {
            let path = format!("{base}.ports.{name}");
            if !(name.len() < 63 && is_dns1123_label(name)) {
                out.error(
                    &path,
                    format!(
                        "Invalid value: \"object\": port name must be valid ({name:?} is not a \
                         DNS-1123 label)"
                    ),
                );
            }
            if !(1..=65535).contains(port) {
                out.error(
                    &path,
                    format!("Invalid value: {port}: port must be between 1-65535"),
                );
            }
        }
    }

    /// istiod's rules that the CRD does not already enforce.
    fn validate_semantics(&self, base: &str, rules: EndpointRules<'_>, out: &mut Issues) {
        let addr = self.address.as_str();
        let addr_path = format!("{base}.address");
        if addr.is_empty() && !self.network.is_empty() {
            out.warn(
                &addr_path,
                format!("address is unset with network {:?}", self.network),
            );
        }
        let is_ip = is_ip_address(addr);
        if !addr.is_empty() && !is_ip {
            match rules {
                EndpointRules::Standalone | EndpointRules::Static(_) if self.is_unix() => {}
                EndpointRules::Static(_) => out.error(
                    &addr_path,
                    format!(
                        "endpoint address {addr:?} is not a valid IP address (STATIC resolution \
                         needs IPs or unix sockets; use resolution: DNS for host names)"
                    ),
                ),
                EndpointRules::Standalone | EndpointRules::Dns(_) => {
                    if validate_fqdn(addr).is_err() {
                        out.error(
                            &addr_path,
                            format!(
                                "endpoint address {addr:?} is not a valid FQDN or an IP address"
                            ),
                        );
                    }
                }
            }
        }
        let service_ports = match rules {
            EndpointRules::Standalone => None,
            EndpointRules::Static(p) | EndpointRules::Dns(p) => Some(p),
        };
        if let Some(service_ports) = service_ports {
            for (name, port) in &self.ports {
                if !service_ports.contains(name.as_str()) {
                    out.error(
                        format!("{base}.ports.{name}"),
                        format!(
                            "endpoint port {port} is not defined by the service entry (no port \
                             named {name:?} in spec.ports)"
                        ),
                    );
                }
            }
            if self.is_unix()
                && matches!(rules, EndpointRules::Static(_))
                && service_ports.len() != 1
            {
                out.error(
                    &addr_path,
                    "exactly 1 service port required for unix endpoints",
                );
            }
        }
        validate_labels(&self.labels, &format!("{base}.labels"), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::corpus;
    use crate::kinds::{Issue, ObjectMeta, Severity, from_yaml, validate_yaml};

    fn se_errors(yaml: &str) -> Vec<Issue> {
        validate_yaml::<ServiceEntry>(yaml, ServiceEntry::validate)
            .into_iter()
            .filter(|i| i.severity == Severity::Error)
            .collect()
    }

    #[track_caller]
    fn assert_se_error(yaml: &str, path: &str, needle: &str) {
        let errs = se_errors(yaml);
        assert!(
            errs.iter()
                .any(|i| i.path == path && i.message.contains(needle)),
            "expected an error at {path} containing {needle:?}, got {errs:#?}"
        );
    }

    #[track_caller]
    fn assert_se_clean(yaml: &str) {
        let errs = se_errors(yaml);
        assert!(errs.is_empty(), "expected no errors, got {errs:#?}");
    }

    #[track_caller]
    fn assert_se_warning(yaml: &str, path: &str, needle: &str) {
        let all = validate_yaml::<ServiceEntry>(yaml, ServiceEntry::validate);
        assert!(
            all.iter().any(|i| i.severity == Severity::Warning
                && i.path == path
                && i.message.contains(needle)),
            "expected a warning at {path} containing {needle:?}, got {all:#?}"
        );
    }

    fn we_errors(yaml: &str) -> Vec<Issue> {
        validate_yaml::<WorkloadEntry>(yaml, WorkloadEntry::validate)
            .into_iter()
            .filter(|i| i.severity == Severity::Error)
            .collect()
    }

    #[track_caller]
    fn assert_we_error(yaml: &str, path: &str, needle: &str) {
        let errs = we_errors(yaml);
        assert!(
            errs.iter()
                .any(|i| i.path == path && i.message.contains(needle)),
            "expected an error at {path} containing {needle:?}, got {errs:#?}"
        );
    }

    const FULL: &str = r#"
hosts: [api.payments.example, "*.cdn.payments.example"]
addresses: [240.0.0.10, "2001:db8::10"]
ports:
- number: 443
  name: https
  protocol: TLS
- number: 8080
  name: http-alt
  protocol: HTTP
  targetPort: 18080
location: MESH_INTERNAL
resolution: STATIC
endpoints:
- address: 10.1.2.3
  ports: {https: 8443}
  labels: {zone: a, version: v2}
  network: net-1
  locality: eu-west1/zone-a
  weight: 3
  serviceAccount: payments
- address: unix:///var/run/payments.sock
exportTo: ["*"]
subjectAltNames: ["spiffe://cluster.local/ns/pay/sa/payments"]
"#;

    #[test]
    fn parses_every_major_field() {
        let se: ServiceEntry = from_yaml(FULL).unwrap();
        assert_eq!(se.hosts.len(), 2);
        assert_eq!(se.addresses[1], "2001:db8::10");
        assert_eq!(se.ports[1].target_port, Some(18080));
        assert_eq!(se.ports[0].protocol, "TLS");
        assert_eq!(se.location, Location::MeshInternal);
        assert_eq!(se.resolution, Resolution::Static);
        let ep = &se.endpoints[0];
        assert_eq!(ep.ports["https"], 8443);
        assert_eq!(ep.labels["version"], "v2");
        assert_eq!(
            (ep.network.as_str(), ep.locality.as_str(), ep.weight),
            ("net-1", "eu-west1/zone-a", Some(3))
        );
        assert_eq!(ep.service_account, "payments");
        assert_eq!(se.export_to, ["*"]);
        assert_eq!(se.subject_alt_names.len(), 1);
        // Two hosts with TLS and HTTP ports, STATIC: fine; the unix endpoint has no port
        // because the entry has two ports (istiod wants exactly one for unix endpoints).
        let errs = se_errors(FULL);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(errs[0].path, "spec.endpoints[1].address");
        assert!(errs[0].message.contains("exactly 1 service port"));
    }

    #[test]
    fn defaults_and_selector() {
        let se: ServiceEntry =
            from_yaml("hosts: [a.example]\nworkloadSelector:\n  labels: {app: vm}\n").unwrap();
        assert_eq!(se.location, Location::MeshExternal);
        assert_eq!(se.resolution, Resolution::None);
        assert_eq!(se.workload_selector.unwrap().labels["app"], "vm");
    }

    #[test]
    fn workload_entry_parses() {
        let we: WorkloadEntry = from_yaml(
            "address: vm-1.example.internal\nports: {http: 8080}\nlabels: {app: ratings}\nserviceAccount: ratings\nweight: 2\n",
        )
        .unwrap();
        assert_eq!(we.address, "vm-1.example.internal");
        assert_eq!(we.ports["http"], 8080);
        assert!(we_errors("address: vm-1.example.internal\nports: {http: 8080}\n").is_empty());
    }

    #[test]
    fn a_typo_is_an_unknown_field() {
        let e = from_yaml::<ServiceEntry>("hosts: [a.example]\nresolutoin: DNS\n").unwrap_err();
        assert!(e.contains("resolutoin"), "{e}");
        let e =
            from_yaml::<ServiceEntry>("hosts: [a.example]\nports:\n- number: 80\n  nmae: http\n")
                .unwrap_err();
        assert!(e.contains("nmae"), "{e}");
        let e = from_yaml::<WorkloadEntry>("adress: 1.2.3.4\n").unwrap_err();
        assert!(e.contains("adress"), "{e}");
    }

    #[test]
    fn a_bad_enum_is_rejected() {
        assert!(from_yaml::<ServiceEntry>("hosts: [a]\nresolution: ROUND_ROBIN\n").is_err());
        assert!(from_yaml::<ServiceEntry>("hosts: [a]\nlocation: EXTERNAL\n").is_err());
        assert!(
            from_yaml::<ServiceEntry>("hosts: [a]\nports:\n- number: -1\n  name: a\n").is_err()
        );
    }

    #[test]
    fn hosts_rules() {
        assert_se_error("{}", "spec.hosts", "Required value");
        assert_se_error(
            "hosts: ['*']\n",
            "spec.hosts[0]",
            "hostname cannot be wildcard",
        );
        assert_se_error("hosts: ['a..b']\n", "spec.hosts[0]", "invalid");
        assert_se_warning("hosts: ['*x']\n", "spec.hosts[0]", "partial wildcard");
        assert_se_error(
            "hosts: ['*.example.com']\nresolution: DNS\n",
            "spec.hosts[0]",
            "hosts must be FQDN if no endpoints are provided for resolution mode DNS",
        );
        assert_se_clean("hosts: ['*x', '*.example.com']\n");
        assert_se_clean("hosts: [example.com]\nresolution: DNS\n");
    }

    #[test]
    fn addresses_rules() {
        assert_se_error(
            "hosts: [a.example]\naddresses: [1.2.3.4/16]\nresolution: DNS\n",
            "spec.addresses[0]",
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        );
        assert_se_error(
            "hosts: [a.example]\naddresses: [1.2.3.4/99]\n",
            "spec.addresses[0]",
            "is not a valid CIDR block",
        );
        assert_se_error(
            "hosts: [a.example]\naddresses: [1.2.3]\n",
            "spec.addresses[0]",
            "is not a valid IP",
        );
        assert_se_clean(
            "hosts: [a.example]\naddresses: [1.2.3.4/16, '001:db8::']\nresolution: STATIC\n",
        );
    }

    #[test]
    fn ports_rules() {
        let se = |ports: &str| format!("hosts: [a.example]\nports:\n{ports}");
        assert_se_error(
            &se("- {name: a, number: 1}\n- {name: a, number: 2}\n"),
            "spec.ports[1].name",
            "Duplicate value",
        );
        assert_se_error(
            &se("- {name: a, number: 1}\n- {name: b, number: 1}\n"),
            "spec.ports[1].number",
            "port number cannot be duplicated",
        );
        assert_se_error(
            &se("- {name: a, number: 99999}\n"),
            "spec.ports[0].number",
            "port must be between 1-65535",
        );
        assert_se_error(
            &se("- {name: a, number: 80, targetPort: 0}\n"),
            "spec.ports[0].targetPort",
            "port must be between 1-65535",
        );
        assert_se_error(
            &se("- {number: 80}\n"),
            "spec.ports[0].name",
            "Required value",
        );
        assert_se_error(
            &se("- {name: http_1, number: 80}\n"),
            "spec.ports[0].name",
            "invalid port name",
        );
        assert_se_error(
            &se("- {name: a, number: 80, protocol: QUIC}\n"),
            "spec.ports[0].protocol",
            "unsupported protocol: QUIC",
        );
        assert_se_clean(&se(
            "- {name: a, number: 80, protocol: http}\n- {name: b, number: 81, protocol: GRPC-WEB}\n",
        ));
    }

    #[test]
    fn multiple_hosts_need_http_or_tls_ports() {
        assert_se_error(
            "hosts: [a.example, b.example]\nresolution: DNS\nports:\n- {name: t, number: 9000, protocol: TCP}\n",
            "spec.ports[0].protocol",
            "multiple hosts provided with non-HTTP, non-TLS ports",
        );
        assert_se_clean(
            "hosts: [a.example, b.example]\nresolution: NONE\nports:\n- {name: t, number: 9000, protocol: TCP}\n",
        );
    }

    #[test]
    fn selector_and_endpoints_are_exclusive() {
        assert_se_error(
            "hosts: [a.example]\nresolution: STATIC\nworkloadSelector: {}\nendpoints:\n- address: 1.2.3.4\n",
            "spec",
            "only one of WorkloadSelector or Endpoints can be set",
        );
        assert_se_error(
            "hosts: [a.example]\nworkloadSelector:\n  labels: {app: '*'}\n",
            "spec.workloadSelector.labels.app",
            "wildcard is not supported in selector",
        );
        assert_se_warning(
            "hosts: [a.example]\nworkloadSelector: {}\n",
            "spec.workloadSelector.labels",
            "without labels",
        );
        assert_se_clean(
            "hosts: [a.example]\nresolution: STATIC\nworkloadSelector:\n  labels: {app: vm}\n",
        );
    }

    #[test]
    fn resolution_rules() {
        assert_se_error(
            "hosts: [a.example]\nendpoints:\n- address: 1.2.3.4\n",
            "spec.endpoints",
            "NONE mode cannot set endpoints",
        );
        assert_se_error(
            "hosts: [a.example]\nresolution: DNS_ROUND_ROBIN\nendpoints:\n- address: a.example\n- address: b.example\n",
            "spec.endpoints",
            "DNS_ROUND_ROBIN mode cannot have multiple endpoints",
        );
        assert_se_clean(
            "hosts: [a.example]\nresolution: DNS_ROUND_ROBIN\nendpoints:\n- address: a.example\n",
        );
        assert_se_error(
            "hosts: [a.example]\nresolution: STATIC\nendpoints:\n- address: db.internal\n",
            "spec.endpoints[0].address",
            "is not a valid IP address",
        );
        assert_se_error(
            "hosts: [a.example]\nresolution: DNS\nendpoints:\n- address: 'not a host'\n",
            "spec.endpoints[0].address",
            "is not a valid FQDN or an IP address",
        );
        assert_se_clean(
            "hosts: [a.example]\nresolution: DNS\nendpoints:\n- address: db.internal\n- address: 10.0.0.1\n",
        );
        assert_se_error(
            "hosts: [a.example]\nresolution: STATIC\nports:\n- {name: http, number: 80}\nendpoints:\n- address: 10.0.0.1\n  ports: {grpc: 9090}\n",
            "spec.endpoints[0].ports.grpc",
            "endpoint port 9090 is not defined by the service entry",
        );
        assert_se_clean(
            "hosts: [a.example]\nresolution: STATIC\nports:\n- {name: http, number: 80}\nendpoints:\n- address: 10.0.0.1\n  ports: {http: 8080}\n- address: unix:///run/a.sock\n",
        );
    }

    #[test]
    fn endpoint_schema_rules() {
        let se = |ep: &str| format!("hosts: [a.example]\nresolution: STATIC\nendpoints:\n- {ep}\n");
        assert_se_error(
            &se("labels: {a: b}"),
            "spec.endpoints[0]",
            "Address is required",
        );
        assert_se_error(
            &se("address: unix://relative.sock"),
            "spec.endpoints[0].address",
            "UDS must be an absolute path or abstract socket",
        );
        assert_se_error(
            &se("address: unix:///run/dir/"),
            "spec.endpoints[0].address",
            "UDS may not be a dir",
        );
        assert_se_error(
            &se("address: 'unix://@abstract'\n  ports: {http: 80}"),
            "spec.endpoints[0].ports",
            "UDS may not include ports",
        );
        assert_se_error(
            &se("address: 10.0.0.1\n  ports: {http: 70000}"),
            "spec.endpoints[0].ports.http",
            "port must be between 1-65535",
        );
        assert_se_error(
            &se("address: 10.0.0.1\n  ports: {'Http_1': 80}"),
            "spec.endpoints[0].ports.Http_1",
            "port name must be valid",
        );
        assert_se_clean(&format!(
            "{}ports:\n- {{name: http, number: 80}}\n",
            se("address: 'unix://@abstract'")
        ));
    }

    #[test]
    fn export_to_may_be_none_for_service_entries() {
        assert_se_clean("hosts: [a.example]\nexportTo: ['~']\n");
        assert_se_error(
            "hosts: [a.example]\nexportTo: ['~', other]\n",
            "spec.exportTo",
            "cannot export service entry to no one (~) and someone",
        );
    }

    #[test]
    fn autoallocation_opt_out_warns_about_tcp_ports_without_addresses() {
        let se: ServiceEntry =
            from_yaml("hosts: [a.example]\nports:\n- {name: tcp, number: 5432}\n").unwrap();
        let metadata = ObjectMeta {
            labels: [(
                "networking.istio.io/enable-autoallocate-ip".to_owned(),
                "false".to_owned(),
            )]
            .into(),
            ..ObjectMeta::default()
        };
        let meta = Meta {
            name: "db",
            namespace: "default",
            metadata: &metadata,
        };
        let mut out = Issues::default();
        se.validate(&meta, &mut out);
        assert!(
            out.items
                .iter()
                .any(|i| i.severity == Severity::Warning
                    && i.message.contains("addresses are required")),
            "{:#?}",
            out.items
        );
    }

    #[test]
    fn workload_entry_rules() {
        assert_we_error("labels: {a: b}\n", "spec", "Address is required");
        assert_we_error(
            "address: 'bad host!'\n",
            "spec.address",
            "not a valid FQDN or an IP address",
        );
        assert_we_error(
            "address: unix:///run/a.sock\nports: {http: 80}\n",
            "spec.ports",
            "UDS may not include ports",
        );
        assert_we_error(
            "address: 10.0.0.1\nports: {http: 0}\n",
            "spec.ports.http",
            "port must be between 1-65535",
        );
        assert_we_error(
            "address: 10.0.0.1\nlabels: {'a/b/c': x}\n",
            "spec.labels.a/b/c",
            "invalid tag key",
        );
        assert!(we_errors("network: remote\n").is_empty());
        assert!(we_errors("address: unix:///run/a.sock\n").is_empty());
        assert!(we_errors("address: 10.0.0.1\nports: {http: 80}\nlabels: {app: a}\n").is_empty());
    }

    /// ServiceEntries outside `*-invalid.yaml` files that mesh rejects, as Istio would.
    const SERVICE_ENTRY_EXCEPTIONS: &[corpus::Exception] = &[
        (
            "analyzers/testdata/authorizationpolicies.yaml",
            3,
            "analyzer test data, never admitted: resolution DNS with the wildcard host `*.kiali.io` \
             and no endpoints; istiod's webhook rejects it (hosts must be FQDN ...)",
        ),
        (
            "analyzers/testdata/condition-analyzer.yaml",
            1,
            "analyzer test data, never admitted: a ServiceEntry with `status` and no `spec`; the \
             CRD requires spec",
        ),
        (
            "analyzers/testdata/virtualservice_destinationhosts.yaml",
            4,
            "analyzer test data, never admitted: `hosts: [\"*\"]`; the CRD rejects it (hostname \
             cannot be wildcard)",
        ),
    ];

    #[test]
    fn istio_corpus_service_entries() {
        corpus::check::<ServiceEntry>(
            "ServiceEntry",
            corpus::networking_api,
            corpus::Spec::Required,
            ServiceEntry::validate,
            SERVICE_ENTRY_EXCEPTIONS,
        );
    }

    #[test]
    fn istio_corpus_workload_entries() {
        corpus::check::<WorkloadEntry>(
            "WorkloadEntry",
            corpus::networking_api,
            corpus::Spec::Required,
            WorkloadEntry::validate,
            &[],
        );
    }
}

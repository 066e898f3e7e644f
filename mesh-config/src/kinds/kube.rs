//! The Kubernetes v1 `Service`, as far as mesh uses it: its ports and selector describe a service
//! of the registry (Istio's Bookinfo manifests declare their services this way).
//!
//! The fields mesh does not use are accepted and ignored, so that real manifests (and `kubectl get
//! -o yaml` dumps) load; a field Kubernetes does not have is still an error.

use std::{collections::BTreeMap, fmt};

use serde::{
    Deserialize, Deserializer,
    de::{IgnoredAny, Visitor},
};

use super::{
    Issues, Meta,
    security::{deserialize_enum, enum_name, objects_fn},
};

/// The `spec` of a v1 Service (`ServiceSpec`).
///
/// <https://kubernetes.io/docs/reference/kubernetes-api/service-resources/service-v1/#ServiceSpec>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Service {
    /// The labels of the pods (for mesh: of the WorkloadEntries) behind the service.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "ports_list")]
    pub ports: Vec<ServicePort>,
    /// `type`; ClusterIP when absent.
    #[serde(default, rename = "type")]
    pub service_type: Option<ServiceType>,
    /// `None` (headless) is written `clusterIP: None`, as Kubernetes does.
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(default, rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
    /// The DNS name an ExternalName service aliases.
    #[serde(default)]
    pub external_name: Option<String>,
    #[serde(default, rename = "externalIPs")]
    pub external_ips: Vec<String>,
    #[serde(default)]
    pub ip_families: Vec<String>,
    #[serde(default)]
    pub ip_family_policy: Option<String>,
    #[serde(default)]
    pub session_affinity: Option<IgnoredAny>,
    #[serde(default)]
    pub session_affinity_config: Option<IgnoredAny>,
    #[serde(default, rename = "loadBalancerIP")]
    pub load_balancer_ip: Option<IgnoredAny>,
    #[serde(default)]
    pub load_balancer_source_ranges: Option<IgnoredAny>,
    #[serde(default)]
    pub load_balancer_class: Option<IgnoredAny>,
    #[serde(default)]
    pub allocate_load_balancer_node_ports: Option<IgnoredAny>,
    #[serde(default)]
    pub external_traffic_policy: Option<IgnoredAny>,
    #[serde(default)]
    pub internal_traffic_policy: Option<IgnoredAny>,
    #[serde(default)]
    pub health_check_node_port: Option<IgnoredAny>,
    #[serde(default)]
    pub publish_not_ready_addresses: Option<IgnoredAny>,
    #[serde(default)]
    pub traffic_distribution: Option<IgnoredAny>,
}

objects_fn!(ports_list, "spec.ports");

/// `ServicePort`.
///
/// <https://kubernetes.io/docs/reference/kubernetes-api/service-resources/service-v1/#ServiceSpec>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    /// Required when the service has more than one port; Istio reads the protocol from it
    /// (`http-web`) when `appProtocol` is absent.
    #[serde(default)]
    pub name: Option<String>,
    /// The service port (validated to 1-65535).
    pub port: i64,
    /// The port of the pods; the service port when absent.
    #[serde(default)]
    pub target_port: Option<IntOrString>,
    #[serde(default)]
    pub protocol: Option<String>,
    /// The application protocol (`http`, `grpc`, `kubernetes.io/h2c`, ...).
    #[serde(default)]
    pub app_protocol: Option<String>,
    #[serde(default)]
    pub node_port: Option<i64>,
}

impl ServicePort {
    /// The port traffic is forwarded to: `targetPort` when it is a number, else `port`.
    pub fn target_port_number(&self) -> i64 {
        match &self.target_port {
            Some(IntOrString::Int(p)) => *p,
            _ => self.port,
        }
    }
}

/// A Kubernetes `IntOrString` (`targetPort: 9080` or `targetPort: http`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrString;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or a port name")
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IntOrString, E> {
                Ok(IntOrString::Int(v))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i64::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom(format!("port {v} is out of range")))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `ServiceSpec.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ServiceType {
    #[default]
    ClusterIp,
    NodePort,
    LoadBalancer,
    ExternalName,
}

impl ServiceType {
    const ALL: &[(&str, ServiceType)] = &[
        ("ClusterIP", ServiceType::ClusterIp),
        ("NodePort", ServiceType::NodePort),
        ("LoadBalancer", ServiceType::LoadBalancer),
        ("ExternalName", ServiceType::ExternalName),
    ];

    /// Kubernetes' spelling (`ClusterIP`).
    pub fn as_str(self) -> &'static str {
        enum_name(Self::ALL, self)
    }
}

impl<'de> Deserialize<'de> for ServiceType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_enum(d, Self::ALL)
    }
}

/// `ServicePort.protocol` (the transport; the application protocol is `appProtocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    const ALL: &[(&str, Protocol)] = &[
        ("TCP", Protocol::Tcp),
        ("UDP", Protocol::Udp),
        ("SCTP", Protocol::Sctp),
    ];

    /// Kubernetes' spelling (`TCP`).
    pub fn as_str(self) -> &'static str {
        enum_name(Self::ALL, self)
    }
}

impl Protocol {
    /// `TCP`, `UDP` or `SCTP`, exactly as Kubernetes spells them.
    pub fn parse(s: &str) -> Option<Protocol> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, p)| *p)
    }
}

// === impl Service: validation ===

impl Service {
    /// The port checks of the Kubernetes API server that matter to mesh: port numbers in range,
    /// port names unique (and present when there are several ports).
    pub fn validate(&self, _meta: &Meta<'_>, out: &mut Issues) {
        let mut names = BTreeMap::new();
        for (i, p) in self.ports.iter().enumerate() {
            let path = format!("spec.ports[{i}]");
            check_port_number(p.port, &format!("{path}.port"), out);
            if let Some(IntOrString::Int(target)) = p.target_port {
                check_port_number(target, &format!("{path}.targetPort"), out);
            }
            if let Some(proto) = p
                .protocol
                .as_deref()
                .filter(|v| Protocol::parse(v).is_none())
            {
                // The API server refuses this; istioctl analyze (and its test data) does not, and
                // the intent is clear, so mesh reads it as the application protocol and warns.
                out.warn(
                    format!("{path}.protocol"),
                    format!(
                        "Unsupported value: {proto:?}: supported values: \"TCP\", \"UDP\", \"SCTP\"; \
                         Kubernetes rejects this, mesh reads it as `appProtocol: {}` (write it there)",
                        proto.to_ascii_lowercase()
                    ),
                );
            }
            if let Some(node_port) = p.node_port.filter(|p| *p != 0) {
                check_port_number(node_port, &format!("{path}.nodePort"), out);
            }
            match p.name.as_deref() {
                Some(name) if !name.is_empty() => {
                    if let Some(first) = names.insert(name, i) {
                        out.error(
                            format!("{path}.name"),
                            format!(
                                "{path}.name: Duplicate value: {name:?} (also spec.ports[{first}]): \
                                 give every port its own name"
                            ),
                        );
                    }
                }
                _ if self.ports.len() > 1 => out.error(
                    format!("{path}.name"),
                    format!(
                        "{path}.name: Required value: a service with several ports names each \
                         (e.g. `http`, `grpc-api`)"
                    ),
                ),
                _ => {}
            }
        }
    }
}

fn check_port_number(port: i64, path: &str, out: &mut Issues) {
    if !(1..=65535).contains(&port) {
        out.error(
            path,
            format!("{path}: Invalid value: {port}: must be between 1 and 65535, inclusive"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{Issue, corpus, from_yaml, validate_yaml};

    fn errors(yaml: &str) -> Vec<Issue> {
        crate::kinds::only_errors(validate_yaml::<Service>(yaml, Service::validate))
    }

    #[track_caller]
    fn assert_error(yaml: &str, path: &str, needle: &str) {
        crate::kinds::assert_has_error(&errors(yaml), path, needle);
    }

    const FULL: &str = r#"
type: NodePort
selector:
  app: reviews
ports:
- name: http
  port: 9080
  targetPort: 8080
  protocol: TCP
  appProtocol: http
  nodePort: 30080
- name: grpc
  port: 9090
  targetPort: grpc-port
clusterIP: 10.0.0.10
clusterIPs: [10.0.0.10]
externalIPs: [192.0.2.1]
ipFamilies: [IPv4]
ipFamilyPolicy: SingleStack
sessionAffinity: ClientIP
sessionAffinityConfig:
  clientIP:
    timeoutSeconds: 10
externalTrafficPolicy: Local
internalTrafficPolicy: Cluster
publishNotReadyAddresses: false
"#;

    #[test]
    fn parses_a_real_manifest() {
        let s: Service = from_yaml(FULL).unwrap();
        assert_eq!(s.service_type, Some(ServiceType::NodePort));
        assert_eq!(s.selector["app"], "reviews");
        assert_eq!(s.ports[0].port, 9080);
        assert_eq!(s.ports[0].target_port, Some(IntOrString::Int(8080)));
        assert_eq!(s.ports[0].target_port_number(), 8080);
        assert_eq!(s.ports[0].protocol.as_deref(), Some("TCP"));
        assert_eq!(s.ports[0].app_protocol.as_deref(), Some("http"));
        assert_eq!(s.ports[0].node_port, Some(30080));
        assert_eq!(
            s.ports[1].target_port,
            Some(IntOrString::String("grpc-port".into()))
        );
        assert_eq!(s.ports[1].target_port_number(), 9090);
        assert_eq!(s.cluster_ip.as_deref(), Some("10.0.0.10"));
        assert_eq!(s.cluster_ips, ["10.0.0.10"]);
        assert_eq!(s.ip_families, ["IPv4"]);
        assert!(errors(FULL).is_empty());
    }

    #[test]
    fn parses_an_external_name_service() {
        let s: Service = from_yaml("type: ExternalName\nexternalName: db.example.com\n").unwrap();
        assert_eq!(
            s.service_type.map(ServiceType::as_str),
            Some("ExternalName")
        );
        assert_eq!(s.external_name.as_deref(), Some("db.example.com"));
    }

    #[test]
    fn typo_is_an_unknown_field() {
        let err = from_yaml::<Service>("selectr:\n  app: a\n").unwrap_err();
        assert!(err.contains("unknown field `selectr`"), "{err}");
        let err = from_yaml::<Service>("ports:\n- port: 80\n  target: 8080\n").unwrap_err();
        assert!(err.contains("unknown field `target`"), "{err}");
    }

    #[test]
    fn bad_enums_are_rejected() {
        let err = from_yaml::<Service>("type: Headless\n").unwrap_err();
        assert!(err.contains(r#"Unsupported value: "Headless""#), "{err}");
        let issues = crate::kinds::validate_yaml::<Service>(
            "ports:\n- port: 80\n  protocol: HTTP\n",
            Service::validate,
        );
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].severity, crate::kinds::Severity::Warning);
        assert!(
            issues[0].message.contains(r#"Unsupported value: "HTTP""#),
            "{issues:?}"
        );
    }

    #[test]
    fn port_numbers() {
        assert_error(
            "ports:\n- port: 0\n",
            "spec.ports[0].port",
            "must be between 1 and 65535, inclusive",
        );
        assert_error(
            "ports:\n- port: 65536\n",
            "spec.ports[0].port",
            "Invalid value: 65536",
        );
        assert_error(
            "ports:\n- port: 80\n  targetPort: 70000\n",
            "spec.ports[0].targetPort",
            "must be between 1 and 65535",
        );
        assert_error(
            "ports:\n- port: 80\n  nodePort: 99999\n",
            "spec.ports[0].nodePort",
            "must be between 1 and 65535",
        );
        assert!(errors("ports:\n- port: 65535\n  targetPort: 1\n").is_empty());
    }

    #[test]
    fn port_names() {
        let dup = "ports:\n- name: http\n  port: 80\n- name: http\n  port: 81\n";
        assert_error(dup, "spec.ports[1].name", r#"Duplicate value: "http""#);
        let unnamed = "ports:\n- name: http\n  port: 80\n- port: 81\n";
        assert_error(unnamed, "spec.ports[1].name", "Required value");
        assert!(errors("ports:\n- port: 80\n").is_empty());
        assert!(errors("ports:\n- name: http\n  port: 80\n- name: grpc\n  port: 81\n").is_empty());
    }

    #[test]
    fn istio_corpus() {
        let checked = corpus::check::<Service>(
            "Service",
            |v| v == "v1",
            corpus::Spec::Optional,
            Service::validate,
            &[],
        );
        assert_ne!(checked, Some(0), "no Service document found");
    }
}

//! `Sidecar` (networking.istio.io v1, v1beta1 and v1alpha3): the inbound and outbound listeners
//! of a workload's proxy, and which services it can reach. The three served versions share one
//! schema, so one model parses them all.
//!
//! Reference: <https://istio.io/latest/docs/reference/config/networking/sidecar/>

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{
    Issues, Meta,
    common::NetworkingWorkloadSelector,
    destination_rule::{ConnectionPoolSettings, validate_connection_pool},
    gateway::{ServerTlsSettings, TlsMode, validate_server_tls},
    rules::{
        Protocol, UNIX_ADDRESS_PREFIX, validate_dry_run_annotation, validate_fqdn,
        validate_ip_address, validate_namespace_slash_wildcard_hostname, validate_port,
        validate_port_name, validate_protocol, validate_selector, validate_unix_address,
        warn_selector_without_labels,
    },
    virtual_service::{Destination, rules::validate_destination},
};

/// The `spec` of a Sidecar.
///
/// <https://istio.io/latest/docs/reference/config/networking/sidecar/#Sidecar>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Sidecar {
    #[serde(default)]
    pub workload_selector: Option<NetworkingWorkloadSelector>,
    #[serde(default)]
    pub ingress: Vec<IstioIngressListener>,
    #[serde(default)]
    pub egress: Vec<IstioEgressListener>,
    #[serde(default)]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default)]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// An inbound listener of the workload's proxy.
///
/// <https://istio.io/latest/docs/reference/config/networking/sidecar/#IstioIngressListener>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IstioIngressListener {
    pub port: SidecarPort,
    #[serde(default)]
    pub bind: Option<String>,
    #[serde(default)]
    pub capture_mode: Option<CaptureMode>,
    /// Where traffic is forwarded: `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT`, `[::]:PORT`
    /// or `unix:///path`.
    #[serde(default)]
    pub default_endpoint: Option<String>,
    #[serde(default)]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default)]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// An outbound listener, and the services (`namespace/dnsName`) reachable through it.
///
/// <https://istio.io/latest/docs/reference/config/networking/sidecar/#IstioEgressListener>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IstioEgressListener {
    /// No port makes this the catch-all listener, which must be the last.
    #[serde(default)]
    pub port: Option<SidecarPort>,
    #[serde(default)]
    pub bind: Option<String>,
    #[serde(default)]
    pub capture_mode: Option<CaptureMode>,
    pub hosts: Vec<String>,
}

/// A listener port of a sidecar.
///
/// <https://istio.io/latest/docs/reference/config/networking/sidecar/#SidecarPort>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SidecarPort {
    #[serde(default)]
    pub number: u32,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub name: String,
    /// Deprecated: has no effect on sidecars.
    #[serde(default)]
    pub target_port: Option<u32>,
}

/// `CaptureMode`: how traffic reaches a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    Default,
    Iptables,
    None,
}

/// What the proxy does with traffic to unknown destinations.
///
/// <https://istio.io/latest/docs/reference/config/networking/sidecar/#OutboundTrafficPolicy>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutboundTrafficPolicy {
    /// Absent means `REGISTRY_ONLY`, the proto's zero value.
    #[serde(default)]
    pub mode: Option<OutboundTrafficPolicyMode>,
    #[serde(default)]
    pub egress_proxy: Option<Destination>,
}

/// `OutboundTrafficPolicy.Mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficPolicyMode {
    RegistryOnly,
    AllowAny,
}

// === impl Sidecar ===

impl Sidecar {
    /// What Istio rejects (errors) or warns about when this Sidecar is applied.
    pub fn validate(&self, meta: &Meta<'_>, out: &mut Issues) {
        validate_dry_run_annotation(meta, out);
        if let Some(selector) = &self.workload_selector {
            validate_selector(selector, "spec.workloadSelector", out);
            warn_selector_without_labels(selector, "spec.workloadSelector", "sidecar", out);
        }
        if self.egress.is_empty()
            && self.ingress.is_empty()
            && self.outbound_traffic_policy.is_none()
            && self.inbound_connection_pool.is_none()
        {
            out.error(
                "spec",
                "sidecar: empty configuration provided; add ingress, egress, outboundTrafficPolicy or inboundConnectionPool",
            );
            return;
        }

        let mut ports: Vec<u32> = Vec::new();
        for (i, listener) in self.ingress.iter().enumerate() {
            validate_ingress(out, &format!("spec.ingress[{i}]"), listener, &mut ports);
        }
        if let Some(pool) = &self.inbound_connection_pool {
            validate_connection_pool(pool, "spec.inboundConnectionPool", out);
        }

        let mut ports: Vec<u32> = Vec::new();
        let mut sockets: Vec<&str> = Vec::new();
        let mut catch_all = false;
        for (i, egress) in self.egress.iter().enumerate() {
            let p = format!("spec.egress[{i}]");
            match &egress.port {
                None if catch_all => {
                    out.error(&p, "sidecar: egress can have only one listener with empty port");
                    continue;
                }
                None if i == self.egress.len() - 1 => catch_all = true,
                None => out.error(
                    &p,
                    "sidecar: the egress listener with empty port should be the last listener in the list",
                ),
                Some(port) => {
                    let bind = egress.bind.as_deref().unwrap_or("");
                    if port.target_port.is_some_and(|t| t > 0) {
                        out.error(format!("{p}.port.targetPort"), "targetPort has no impact on Sidecars; remove it");
                    }
                    validate_egress_port_bind_and_capture_mode(out, &p, port, bind, egress.capture_mode);
                    if port.number == 0 {
                        if sockets.contains(&bind) {
                            out.error(format!("{p}.bind"), "sidecar: unix domain socket values for listeners must be unique");
                        }
                        sockets.push(bind);
                    } else {
                        if ports.contains(&port.number) {
                            out.error(format!("{p}.port.number"), "sidecar: ports on IP bound listeners must be unique");
                        }
                        ports.push(port.number);
                    }
                }
            }
            validate_egress_hosts(out, &p, &egress.hosts, meta.namespace);
        }

        if let Some(policy) = &self.outbound_traffic_policy {
            validate_outbound_traffic_policy(out, policy);
        }
    }
}

fn validate_ingress(
    out: &mut Issues,
    p: &str,
    listener: &IstioIngressListener,
    ports: &mut Vec<u32>,
) {
    let port = &listener.port;
    if port.target_port.is_some_and(|t| t > 0) {
        out.error(
            format!("{p}.port.targetPort"),
            "targetPort has no impact on Sidecars; remove it",
        );
    }
    if !port.name.is_empty()
        && let Err(e) = validate_port_name(&port.name)
    {
        out.error(format!("{p}.port.name"), e);
    }
    if let Err(e) = validate_protocol(&port.protocol) {
        out.error(format!("{p}.port.protocol"), e);
    }
    if let Err(e) = validate_port(port.number.into()) {
        out.error(format!("{p}.port.number"), e);
    }
    if let Some(bind) = listener.bind.as_deref().filter(|b| !b.is_empty())
        && let Err(e) = validate_ip_address(bind)
    {
        out.error(format!("{p}.bind"), e);
    }
    if ports.contains(&port.number) {
        out.error(
            format!("{p}.port.number"),
            "sidecar: ports on IP bound listeners must be unique",
        );
    }
    ports.push(port.number);

    if let Some(endpoint) = listener
        .default_endpoint
        .as_deref()
        .filter(|e| !e.is_empty())
    {
        validate_default_endpoint(out, &format!("{p}.defaultEndpoint"), endpoint);
    }

    if let Some(tls) = &listener.tls {
        let tp = format!("{p}.tls");
        if !tls.subject_alt_names.is_empty() {
            out.error(
                format!("{tp}.subjectAltNames"),
                "sidecar: subjectAltNames is not supported in ingress tls",
            );
        }
        if tls.https_redirect == Some(true) {
            out.error(
                format!("{tp}.httpsRedirect"),
                "sidecar: httpsRedirect is not supported",
            );
        }
        if tls
            .credential_name
            .as_deref()
            .is_some_and(|c| !c.is_empty())
        {
            out.error(
                format!("{tp}.credentialName"),
                "sidecar: credentialName is not currently supported",
            );
        }
        if tls.credential_names.as_ref().is_some_and(|c| !c.is_empty()) {
            out.error(
                format!("{tp}.credentialNames"),
                "sidecar: credentialNames is not currently supported",
            );
        }
        if tls.tls_certificates.as_ref().is_some_and(|c| !c.is_empty()) {
            out.error(
                format!("{tp}.tlsCertificates"),
                "sidecar: tls_certificates is not currently supported",
            );
        }
        let mode = tls.effective_mode();
        if matches!(mode, TlsMode::IstioMutual | TlsMode::AutoPassthrough) {
            out.error(
                format!("{tp}.mode"),
                format!(
                    "configuration is invalid: cannot set mode to {} in sidecar ingress tls",
                    mode.as_str()
                ),
            );
        }
        if !Protocol::parse(&port.protocol).is_tls() {
            out.error(
                &tp,
                "server cannot have TLS settings for non HTTPS/TLS ports",
            );
        }
        validate_server_tls(out, &tp, tls);
    }

    if let Some(pool) = &listener.connection_pool {
        validate_connection_pool(pool, &format!("{p}.connectionPool"), out);
        if pool.http.is_some() && !Protocol::parse(&port.protocol).is_http() {
            out.warn(
                format!("{p}.connectionPool.http"),
                format!(
                    "sidecar: HTTP connection pool settings are configured for port {} ({:?}) but its protocol is not HTTP ({}); only TCP settings will apply",
                    port.number, port.name, port.protocol
                ),
            );
        }
    }
}

/// `defaultEndpoint`: `unix:///path`, or a loopback/any address with a port.
fn validate_default_endpoint(out: &mut Issues, p: &str, endpoint: &str) {
    if let Some(path) = endpoint.strip_prefix(UNIX_ADDRESS_PREFIX) {
        if let Err(e) = validate_unix_address(path) {
            out.error(p, e);
        }
        return;
    }
    let (host, port) = match split_host_port(endpoint) {
        Ok(hp) => hp,
        Err(e) => {
            out.error(p, e);
            ("", "")
        }
    };
    if !host.is_empty() && !matches!(host, "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
        out.error(
            p,
            "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset",
        );
    }
    match port.parse::<i64>() {
        Ok(n) => {
            if let Err(e) = validate_port(n) {
                out.error(p, e);
            }
        }
        Err(_) => out.error(
            p,
            format!("sidecar: defaultEndpoint port ({port}) is not a number"),
        ),
    }
}

/// `host:port` or `[v6]:port`, as Go's `net.SplitHostPort`.
fn split_host_port(s: &str) -> Result<(&str, &str), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!("address {s}: missing ']' in address"));
        };
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, port)),
            None => Err(format!("address {s}: missing port in address")),
        };
    }
    match s.rsplit_once(':') {
        None => Err(format!("address {s}: missing port in address")),
        Some((host, _)) if host.contains(':') => {
            Err(format!("address {s}: too many colons in address"))
        }
        Some((host, port)) => Ok((host, port)),
    }
}

fn validate_egress_port_bind_and_capture_mode(
    out: &mut Issues,
    p: &str,
    port: &SidecarPort,
    bind: &str,
    capture_mode: Option<CaptureMode>,
) {
    if !port.name.is_empty()
        && let Err(e) = validate_port_name(&port.name)
    {
        out.error(format!("{p}.port.name"), e);
    }
    if let Err(e) = validate_protocol(&port.protocol) {
        out.error(format!("{p}.port.protocol"), e);
    }
    if port.number == 0 {
        // Port 0 means a Unix domain socket listener.
        match bind.strip_prefix(UNIX_ADDRESS_PREFIX) {
            None => out.error(
                format!("{p}.bind"),
                "sidecar: ports with 0 value must have a unix domain socket bind address",
            ),
            Some(path) => {
                if let Err(e) = validate_unix_address(path) {
                    out.error(format!("{p}.bind"), e);
                }
            }
        }
        if capture_mode.is_some_and(|m| m == CaptureMode::Iptables) {
            out.error(
                format!("{p}.captureMode"),
                "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
            );
        }
    } else {
        if let Err(e) = validate_port(port.number.into()) {
            out.error(format!("{p}.port.number"), e);
        }
        if !bind.is_empty()
            && let Err(e) = validate_ip_address(bind)
        {
            out.error(format!("{p}.bind"), e);
        }
    }
}

fn validate_egress_hosts(out: &mut Issues, p: &str, hosts: &[String], namespace: &str) {
    if hosts.is_empty() {
        out.error(
            format!("{p}.hosts"),
            "sidecar: egress listener must contain at least one host",
        );
        return;
    }
    // Namespace -> services named so far, to warn about duplicates.
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, hostname) in hosts.iter().enumerate() {
        let hp = format!("{p}.hosts[{i}]");
        if let Some((ns, svc)) = hostname.split_once('/') {
            let ns = if ns == "." { namespace } else { ns };
            let services = seen.entry(ns.to_string()).or_default();
            let duplicate = if svc != "*" {
                services.iter().any(|s| s == svc || s == "*")
            } else {
                !services.is_empty()
            };
            if duplicate {
                out.warn(&hp, format!("duplicated egress host: {hostname}"));
            }
            services.push(svc.to_string());
        }
        for e in validate_namespace_slash_wildcard_hostname(hostname, false, false) {
            out.error(&hp, e);
        }
    }
    if seen.get("*").is_some_and(|s| s.iter().any(|s| s == "*")) && seen.len() != 1 {
        out.warn(
            format!("{p}.hosts"),
            "`*/*` host select all resources, no other hosts can be added",
        );
    }
}

fn validate_outbound_traffic_policy(out: &mut Issues, policy: &OutboundTrafficPolicy) {
    let p = "spec.outboundTrafficPolicy";
    let Some(proxy) = &policy.egress_proxy else {
        return;
    };
    if policy.mode != Some(OutboundTrafficPolicyMode::AllowAny) {
        out.error(
            format!("{p}.egressProxy"),
            "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
        );
        return;
    }
    if let Err(e) = validate_fqdn(&proxy.host) {
        out.error(format!("{p}.egressProxy.host"), e);
    }
    if proxy.port.is_none() {
        out.error(
            format!("{p}.egressProxy.port"),
            "sidecar: egress_proxy port must be non-nil",
        );
        return;
    }
    validate_destination(out, &format!("{p}.egressProxy"), proxy);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{
        Issue,
        corpus::{self, Exception},
        destination_rule::H2UpgradePolicy,
        from_yaml,
        virtual_service::tests::{assert_error, assert_no_errors, assert_warning, issues},
    };

    fn sc(yaml: &str) -> Vec<Issue> {
        issues::<Sidecar>(yaml, |s, m, o| s.validate(m, o))
    }

    const FULL: &str = r#"
workloadSelector:
  labels: {app: ratings}
ingress:
- port: {number: 9080, protocol: HTTPS, name: somename}
  bind: 172.16.1.32
  captureMode: IPTABLES
  defaultEndpoint: 127.0.0.1:8080
  tls:
    mode: SIMPLE
    serverCertificate: /etc/certs/cert.pem
    privateKey: /etc/certs/key.pem
  connectionPool:
    tcp: {maxConnections: 100, connectTimeout: 30ms, idleTimeout: 0s, tcpKeepalive: {time: 7200s, interval: 75s, probes: 9}}
    http: {http1MaxPendingRequests: 10, maxRequestsPerConnection: 5, idleTimeout: 30s, h2UpgradePolicy: DO_NOT_UPGRADE}
- port: {number: 9090, protocol: TCP, name: tcp}
  defaultEndpoint: unix:///var/run/app.sock
egress:
- port: {number: 3306, protocol: MYSQL, name: egressmysql}
  bind: 127.0.0.1
  captureMode: NONE
  hosts: ["*/mysql.foo.com"]
- port: {number: 0, protocol: HTTP, name: uds}
  bind: unix:///var/run/egress.sock
  hosts: ["./*"]
- hosts: ["istio-system/*", "~/*", "./reviews.default.svc.cluster.local"]
inboundConnectionPool:
  http: {http2MaxRequests: 100, maxConcurrentStreams: 10, maxRetries: 3, useClientProtocol: true, http2KeepAlive: {interval: 10s, timeout: 2s}}
  tcp: {maxConnectionDuration: 1h}
outboundTrafficPolicy:
  mode: ALLOW_ANY
  egressProxy: {host: egress.example.com, subset: v1, port: {number: 3128}}
"#;

    #[test]
    fn sidecar_parses_every_major_field() {
        let spec: Sidecar = from_yaml(FULL).unwrap();
        assert_eq!(
            spec.workload_selector.as_ref().unwrap().labels["app"],
            "ratings"
        );
        let i = &spec.ingress[0];
        assert_eq!(i.port.number, 9080);
        assert_eq!(i.capture_mode, Some(CaptureMode::Iptables));
        assert_eq!(i.tls.as_ref().unwrap().mode, Some(TlsMode::Simple));
        let pool = i.connection_pool.as_ref().unwrap();
        assert_eq!(
            pool.tcp
                .as_ref()
                .unwrap()
                .tcp_keepalive
                .as_ref()
                .unwrap()
                .probes,
            Some(9)
        );
        assert_eq!(
            pool.http.as_ref().unwrap().h2_upgrade_policy,
            H2UpgradePolicy::DoNotUpgrade
        );
        assert_eq!(spec.egress[2].port.as_ref().map(|p| p.number), None);
        let policy = spec.outbound_traffic_policy.as_ref().unwrap();
        assert_eq!(policy.mode, Some(OutboundTrafficPolicyMode::AllowAny));
        assert_eq!(
            policy.egress_proxy.as_ref().unwrap().host,
            "egress.example.com"
        );
        assert_no_errors(&sc(FULL));
    }

    #[test]
    fn sidecar_typo_and_bad_enum_are_rejected() {
        let err = from_yaml::<Sidecar>("egress: [{host: ['*/*']}]").unwrap_err();
        assert!(err.contains("host"), "{err}");
        let err =
            from_yaml::<Sidecar>("egress: [{hosts: ['*/*'], captureMode: ALWAYS}]").unwrap_err();
        assert!(err.contains("ALWAYS"), "{err}");
        let err = from_yaml::<Sidecar>("outboundTrafficPolicy: {mode: allow_any}").unwrap_err();
        assert!(err.contains("allow_any"), "{err}");
        let err = from_yaml::<Sidecar>("ingress: [{defaultEndpoint: '127.0.0.1:80'}]").unwrap_err();
        assert!(err.contains("port"), "{err}");
    }

    #[test]
    fn sidecar_negative_limits_parse_and_are_rejected() {
        let issues = sc(
            "inboundConnectionPool: {tcp: {maxConnections: -1}, http: {http1MaxPendingRequests: -2, maxRetries: -3}}",
        );
        assert_error(
            &issues,
            "spec.inboundConnectionPool.tcp.maxConnections",
            "max connections must be non-negative",
        );
        assert_error(
            &issues,
            "spec.inboundConnectionPool.http.http1MaxPendingRequests",
            "http1 max pending requests must be non-negative",
        );
        assert_error(
            &issues,
            "spec.inboundConnectionPool.http.maxRetries",
            "max retries must be non-negative",
        );
        assert_no_errors(&sc("inboundConnectionPool: {tcp: {maxConnections: 0}}"));
    }

    struct Case {
        bad: &'static str,
        path: &'static str,
        msg: &'static str,
        good: &'static str,
    }

    #[track_caller]
    fn run(cases: &[Case]) {
        for c in cases {
            assert_error(&sc(c.bad), c.path, c.msg);
            assert_no_errors(&sc(c.good));
        }
    }

    #[test]
    fn sidecar_top_level_rules() {
        run(&[
            Case {
                bad: "workloadSelector: {labels: {app: '*'}}\negress: [{hosts: ['*/*']}]",
                path: "spec.workloadSelector.labels.app",
                msg: "wildcard is not supported in selector: \"app=*\"",
                good: "workloadSelector: {labels: {app: web}}\negress: [{hosts: ['*/*']}]",
            },
            Case {
                bad: "workloadSelector: {labels: {app: web}}",
                path: "spec",
                msg: "sidecar: empty configuration provided",
                good: "workloadSelector: {labels: {app: web}}\noutboundTrafficPolicy: {mode: REGISTRY_ONLY}",
            },
            Case {
                bad: "outboundTrafficPolicy: {egressProxy: {host: proxy.example.com, port: {number: 3128}}}",
                path: "spec.outboundTrafficPolicy.egressProxy",
                msg: "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
                good: "outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: proxy.example.com, port: {number: 3128}}}",
            },
            Case {
                bad: "outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: proxy.example.com}}",
                path: "spec.outboundTrafficPolicy.egressProxy.port",
                msg: "sidecar: egress_proxy port must be non-nil",
                good: "outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: proxy.example.com, port: {number: 80}}}",
            },
            Case {
                bad: "outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: '*.example.com', port: {number: 80}}}",
                path: "spec.outboundTrafficPolicy.egressProxy.host",
                msg: "domain name \"*.example.com\" invalid",
                good: "outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: proxy.example.com, port: {number: 80}}}",
            },
            Case {
                bad: "inboundConnectionPool: {}",
                path: "spec.inboundConnectionPool",
                msg: "connection pool must have at least one field",
                good: "inboundConnectionPool: {tcp: {connectTimeout: 1s}}",
            },
            Case {
                bad: "inboundConnectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}",
                path: "spec.inboundConnectionPool.http.useClientProtocol",
                msg: "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
                good: "inboundConnectionPool: {http: {h2UpgradePolicy: UPGRADE}}",
            },
            Case {
                bad: "inboundConnectionPool: {tcp: {connectTimeout: 0s}}",
                path: "spec.inboundConnectionPool.tcp.connectTimeout",
                msg: "must be a valid duration greater than 1ms",
                good: "inboundConnectionPool: {tcp: {idleTimeout: 0s}}",
            },
            Case {
                bad: "inboundConnectionPool: {tcp: {idleTimeout: 1.5ms}}",
                path: "spec.inboundConnectionPool.tcp.idleTimeout",
                msg: "only durations to ms precision are supported",
                good: "inboundConnectionPool: {tcp: {idleTimeout: 2ms}}",
            },
        ]);
        let issues = sc("workloadSelector: {}\negress: [{hosts: ['*/*']}]");
        assert_warning(
            &issues,
            "spec.workloadSelector",
            "will be applied to all services in namespace",
        );
    }

    #[test]
    fn sidecar_ingress_rules() {
        run(&[
            Case {
                bad: "ingress: [{port: {number: 0, protocol: HTTP}}]",
                path: "spec.ingress[0].port.number",
                msg: "port number 0 must be in the range 1..65535",
                good: "ingress: [{port: {number: 80, protocol: HTTP}}]",
            },
            Case {
                bad: "ingress: [{port: {number: 80, protocol: QUIC}}]",
                path: "spec.ingress[0].port.protocol",
                msg: "unsupported protocol: QUIC",
                good: "ingress: [{port: {number: 80}}]",
            },
            Case {
                bad: "ingress: [{port: {number: 80, name: Bad_Name}}]",
                path: "spec.ingress[0].port.name",
                msg: "invalid port name: Bad_Name",
                good: "ingress: [{port: {number: 80, name: http-web}}]",
            },
            Case {
                bad: "ingress: [{port: {number: 80, targetPort: 8080}}]",
                path: "spec.ingress[0].port.targetPort",
                msg: "targetPort has no impact on Sidecars",
                good: "ingress: [{port: {number: 80}}]",
            },
            Case {
                bad: "ingress: [{port: {number: 80}}, {port: {number: 80}}]",
                path: "spec.ingress[1].port.number",
                msg: "sidecar: ports on IP bound listeners must be unique",
                good: "ingress: [{port: {number: 80}}, {port: {number: 81}}]",
            },
            Case {
                bad: "ingress: [{port: {number: 80}, bind: my-host}]",
                path: "spec.ingress[0].bind",
                msg: "my-host is not a valid IP",
                good: "ingress: [{port: {number: 80}, bind: '::'}]",
            },
            Case {
                bad: "ingress: [{port: {number: 80}, defaultEndpoint: '10.0.0.1:8080'}]",
                path: "spec.ingress[0].defaultEndpoint",
                msg: "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>",
                good: "ingress: [{port: {number: 80}, defaultEndpoint: '[::1]:8080'}]",
            },
            Case {
                bad: "ingress: [{port: {number: 80}, defaultEndpoint: '0.0.0.0:http'}]",
                path: "spec.ingress[0].defaultEndpoint",
                msg: "sidecar: defaultEndpoint port (http) is not a number",
                good: "ingress: [{port: {number: 80}, defaultEndpoint: ':8080'}]",
            },
            Case {
                bad: "ingress: [{port: {number: 80}, defaultEndpoint: 'unix://sock'}]",
                path: "spec.ingress[0].defaultEndpoint",
                msg: "sock is not an absolute path to a file",
                good: "ingress: [{port: {number: 80}, defaultEndpoint: 'unix:///sock'}]",
            },
            Case {
                bad: "ingress: [{port: {number: 443, protocol: HTTPS}, tls: {mode: ISTIO_MUTUAL}}]",
                path: "spec.ingress[0].tls.mode",
                msg: "configuration is invalid: cannot set mode to ISTIO_MUTUAL in sidecar ingress tls",
                good: "ingress: [{port: {number: 443, protocol: HTTPS}, tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k}}]",
            },
            Case {
                bad: "ingress: [{port: {number: 443, protocol: HTTPS}, tls: {mode: SIMPLE, credentialName: cert}}]",
                path: "spec.ingress[0].tls.credentialName",
                msg: "sidecar: credentialName is not currently supported",
                good: "ingress: [{port: {number: 443, protocol: TLS}, tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k}}]",
            },
            Case {
                bad: "ingress: [{port: {number: 443, protocol: HTTPS}, tls: {mode: MUTUAL, serverCertificate: /c, privateKey: /k, caCertificates: /ca, subjectAltNames: [a]}}]",
                path: "spec.ingress[0].tls.subjectAltNames",
                msg: "sidecar: subjectAltNames is not supported in ingress tls",
                good: "ingress: [{port: {number: 443, protocol: HTTPS}, tls: {mode: MUTUAL, serverCertificate: /c, privateKey: /k, caCertificates: /ca}}]",
            },
            Case {
                bad: "ingress: [{port: {number: 80, protocol: HTTP}, tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k}}]",
                path: "spec.ingress[0].tls",
                msg: "server cannot have TLS settings for non HTTPS/TLS ports",
                good: "ingress: [{port: {number: 80, protocol: HTTP}}]",
            },
            Case {
                bad: "ingress: [{port: {number: 443, protocol: HTTPS}, tls: {mode: SIMPLE, privateKey: /k}}]",
                path: "spec.ingress[0].tls.serverCertificate",
                msg: "SIMPLE TLS requires a server certificate",
                good: "ingress: [{port: {number: 443, protocol: HTTPS}, tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k}}]",
            },
        ]);
        let issues = sc(
            "ingress: [{port: {number: 5432, protocol: TCP, name: pg}, connectionPool: {http: {maxRetries: 1}}}]",
        );
        assert_warning(
            &issues,
            "spec.ingress[0].connectionPool.http",
            "sidecar: HTTP connection pool settings are configured for port 5432 (\"pg\") but its protocol is not HTTP (TCP)",
        );
        assert_no_errors(&issues);
    }

    #[test]
    fn sidecar_egress_rules() {
        run(&[
            Case {
                bad: "egress: [{hosts: ['*/*']}, {port: {number: 80}, hosts: ['*/*']}]",
                path: "spec.egress[0]",
                msg: "sidecar: the egress listener with empty port should be the last listener in the list",
                good: "egress: [{port: {number: 80}, hosts: ['*/*']}, {hosts: ['*/*']}]",
            },
            Case {
                bad: "egress: [{hosts: []}]",
                path: "spec.egress[0].hosts",
                msg: "sidecar: egress listener must contain at least one host",
                good: "egress: [{hosts: ['./*']}]",
            },
            Case {
                bad: "egress: [{hosts: [reviews.default.svc.cluster.local]}]",
                path: "spec.egress[0].hosts[0]",
                msg: "host must be of form namespace/dnsName",
                good: "egress: [{hosts: [default/reviews.default.svc.cluster.local]}]",
            },
            Case {
                bad: "egress: [{hosts: [Bad_NS/a.example.com]}]",
                path: "spec.egress[0].hosts[0]",
                msg: "invalid namespace value \"Bad_NS\" in sidecar",
                good: "egress: [{hosts: ['~/*', 'ns-1/*.example.com']}]",
            },
            Case {
                bad: "egress: [{hosts: [ns/reviews]}]",
                path: "spec.egress[0].hosts[0]",
                msg: "short names (non FQDN) are not allowed",
                good: "egress: [{hosts: [ns/reviews.ns.svc.cluster.local]}]",
            },
            Case {
                bad: "egress: [{hosts: [ns/10.0.0.1]}]",
                path: "spec.egress[0].hosts[0]",
                msg: "top level domain \"1\" cannot be all-numeric",
                good: "egress: [{hosts: [ns/ten.example.com]}]",
            },
            Case {
                bad: "egress: [{port: {number: 80}, hosts: ['*/*']}, {port: {number: 80}, hosts: ['*/*']}]",
                path: "spec.egress[1].port.number",
                msg: "sidecar: ports on IP bound listeners must be unique",
                good: "egress: [{port: {number: 80}, hosts: ['*/*']}, {port: {number: 81}, hosts: ['*/*']}]",
            },
            Case {
                bad: "egress: [{port: {number: 0}, hosts: ['*/*']}]",
                path: "spec.egress[0].bind",
                msg: "sidecar: ports with 0 value must have a unix domain socket bind address",
                good: "egress: [{port: {number: 0}, bind: 'unix:///var/run/a.sock', hosts: ['*/*']}]",
            },
            Case {
                bad: "egress: [{port: {number: 0}, bind: 'unix:///a.sock', captureMode: IPTABLES, hosts: ['*/*']}]",
                path: "spec.egress[0].captureMode",
                msg: "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
                good: "egress: [{port: {number: 0}, bind: 'unix:///a.sock', captureMode: NONE, hosts: ['*/*']}]",
            },
            Case {
                bad: "egress: [{port: {number: 0}, bind: 'unix:///a.sock', hosts: ['*/*']}, {port: {number: 0}, bind: 'unix:///a.sock', hosts: ['*/*']}]",
                path: "spec.egress[1].bind",
                msg: "sidecar: unix domain socket values for listeners must be unique",
                good: "egress: [{port: {number: 0}, bind: 'unix:///a.sock', hosts: ['*/*']}, {port: {number: 0}, bind: 'unix:///b.sock', hosts: ['*/*']}]",
            },
            Case {
                bad: "egress: [{port: {number: 80}, bind: not-ip, hosts: ['*/*']}]",
                path: "spec.egress[0].bind",
                msg: "not-ip is not a valid IP",
                good: "egress: [{port: {number: 80}, bind: 127.0.0.1, hosts: ['*/*']}]",
            },
        ]);
        // Two catch-all listeners: the second is the error.
        let issues = sc("egress: [{hosts: ['a/*']}, {hosts: ['b/*']}]");
        assert_error(&issues, "spec.egress[0]", "should be the last listener");
        let issues = sc(
            "egress: [{port: {number: 80}, hosts: ['*/*', 'ns/a.example.com', 'ns/a.example.com']}]",
        );
        assert_warning(
            &issues,
            "spec.egress[0].hosts[2]",
            "duplicated egress host: ns/a.example.com",
        );
        assert_warning(
            &issues,
            "spec.egress[0].hosts",
            "`*/*` host select all resources, no other hosts can be added",
        );
        assert_no_errors(&issues);
    }

    /// Sidecars in Istio's test data that Istio itself rejects.
    const SIDECAR_KNOWN_INVALID: &[Exception] = &[];

    #[test]
    fn sidecar_istio_corpus_parses_and_validates() {
        if let Some(checked) = corpus::check::<Sidecar>(
            "Sidecar",
            corpus::networking_api,
            corpus::Spec::Optional,
            Sidecar::validate,
            SIDECAR_KNOWN_INVALID,
        ) {
            assert!(checked > 5, "only {checked} documents found");
        }
    }
}

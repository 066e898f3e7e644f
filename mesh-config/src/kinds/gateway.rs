//! `Gateway` (networking.istio.io v1, v1beta1 and v1alpha3): the listeners of an edge proxy.
//! The three served versions share one schema, so one model parses them all.
//!
//! Reference: <https://istio.io/latest/docs/reference/config/networking/gateway/>

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{
    Issues, Meta,
    rules::{
        Protocol, UNIX_ADDRESS_PREFIX, is_dns1123_label, validate_dry_run_annotation,
        validate_ip_address, validate_namespace_slash_wildcard_hostname, validate_port,
        validate_unix_address,
    },
};

/// The `spec` of a Gateway.
///
/// <https://istio.io/latest/docs/reference/config/networking/gateway/#Gateway>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Gateway {
    #[serde(default)]
    pub servers: Vec<Server>,
    /// Labels of the gateway workloads this configuration applies to.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
}

/// One listener: a port, the hosts it serves, and its TLS settings.
///
/// <https://istio.io/latest/docs/reference/config/networking/gateway/#Server>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Server {
    pub port: Port,
    #[serde(default)]
    pub bind: Option<String>,
    pub hosts: Vec<String>,
    #[serde(default)]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default)]
    pub default_endpoint: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// A gateway port. `number`, `protocol` and `name` are required by the CRD.
///
/// <https://istio.io/latest/docs/reference/config/networking/gateway/#Port>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Port {
    pub number: u32,
    pub protocol: String,
    pub name: String,
    /// Deprecated: has no effect on gateways.
    #[serde(default)]
    pub target_port: Option<u32>,
}

/// TLS settings of a gateway server or a sidecar ingress listener.
///
/// <https://istio.io/latest/docs/reference/config/networking/gateway/#ServerTLSSettings>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerTlsSettings {
    #[serde(default)]
    pub https_redirect: Option<bool>,
    /// Absent means `PASSTHROUGH`; see [`ServerTlsSettings::effective_mode`].
    #[serde(default)]
    pub mode: Option<TlsMode>,
    #[serde(default)]
    pub server_certificate: Option<String>,
    #[serde(default)]
    pub private_key: Option<String>,
    #[serde(default)]
    pub ca_certificates: Option<String>,
    #[serde(default)]
    pub ca_crl: Option<String>,
    #[serde(default)]
    pub credential_name: Option<String>,
    /// At most two names (an RSA and an ECDSA certificate).
    #[serde(default)]
    pub credential_names: Option<Vec<String>>,
    /// At most two inline certificate pairs.
    #[serde(default)]
    pub tls_certificates: Option<Vec<TlsCertificate>>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    #[serde(default)]
    pub verify_certificate_spki: Vec<String>,
    #[serde(default)]
    pub verify_certificate_hash: Vec<String>,
    #[serde(default)]
    pub min_protocol_version: Option<TlsProtocol>,
    #[serde(default)]
    pub max_protocol_version: Option<TlsProtocol>,
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    #[serde(default)]
    pub insecure_skip_verify: Option<bool>,
    #[serde(default)]
    pub ca_cert_credential_name: Option<String>,
}

impl ServerTlsSettings {
    /// The effective mode: `PASSTHROUGH` when unset, as in Istio.
    pub fn effective_mode(&self) -> TlsMode {
        self.mode.unwrap_or(TlsMode::Passthrough)
    }
}

/// `ServerTLSSettings.TLSCertificate`: one server certificate pair (file paths).
///
/// <https://istio.io/latest/docs/reference/config/networking/gateway/#ServerTLSSettings-TLSCertificate>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsCertificate {
    #[serde(default)]
    pub server_certificate: Option<String>,
    #[serde(default)]
    pub private_key: Option<String>,
    #[serde(default)]
    pub ca_certificates: Option<String>,
}

/// `ServerTLSSettings.TLSmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    Passthrough,
    Simple,
    Mutual,
    AutoPassthrough,
    IstioMutual,
    OptionalMutual,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Passthrough => "PASSTHROUGH",
            TlsMode::Simple => "SIMPLE",
            TlsMode::Mutual => "MUTUAL",
            TlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
            TlsMode::IstioMutual => "ISTIO_MUTUAL",
            TlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
        }
    }
}

/// `ServerTLSSettings.TLSProtocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TlsProtocol {
    #[serde(rename = "TLS_AUTO")]
    TlsAuto,
    #[serde(rename = "TLSV1_0")]
    Tlsv1_0,
    #[serde(rename = "TLSV1_1")]
    Tlsv1_1,
    #[serde(rename = "TLSV1_2")]
    Tlsv1_2,
    #[serde(rename = "TLSV1_3")]
    Tlsv1_3,
}

// === impl Gateway ===

impl Gateway {
    /// What Istio rejects (errors) or warns about when this Gateway is applied.
    pub fn validate(&self, meta: &Meta<'_>, out: &mut Issues) {
        validate_dry_run_annotation(meta, out);
        // Objects istiod generates from Gateway API resources relax a few name rules.
        let gateway_semantics = meta
            .metadata
            .annotations
            .get("internal.istio.io/gateway-semantics")
            .is_some_and(|v| v == "gateway");
        if !gateway_semantics && !is_dns1123_label(meta.name) {
            out.error(
                "metadata.name",
                format!(
                    "invalid gateway name: {:?}; a Gateway name must be a DNS label (lowercase letters, digits and '-', no dots)",
                    meta.name
                ),
            );
        }
        if self.servers.is_empty() {
            out.error("spec.servers", "gateway must have at least one server");
        }
        let mut port_names: Vec<&str> = Vec::new();
        for (i, server) in self.servers.iter().enumerate() {
            let p = format!("spec.servers[{i}]");
            validate_server(out, &p, server, gateway_semantics);
            let name = server.port.name.as_str();
            if port_names.contains(&name) {
                out.error(
                    format!("{p}.port.name"),
                    format!("port names in servers must be unique: duplicate name {name}"),
                );
            }
            port_names.push(name);
            let redirect = server
                .tls
                .as_ref()
                .and_then(|t| t.https_redirect)
                .unwrap_or(false);
            if redirect && !Protocol::parse(&server.port.protocol).is_http() {
                out.warn(
                    format!("{p}.tls.httpsRedirect"),
                    "tls.httpsRedirect should only be used with http servers",
                );
            }
        }
    }
}

fn validate_server(out: &mut Issues, p: &str, server: &Server, gateway_semantics: bool) {
    if server.hosts.is_empty() {
        out.error(
            format!("{p}.hosts"),
            "server config must contain at least one host",
        );
    }
    for (i, host) in server.hosts.iter().enumerate() {
        for e in validate_namespace_slash_wildcard_hostname(host, true, gateway_semantics) {
            out.error(format!("{p}.hosts[{i}]"), e);
        }
    }
    let bind = server.bind.as_deref().unwrap_or("");
    let port = &server.port;
    let mut port_ok = true;
    let protocol = Protocol::parse(&port.protocol);
    if protocol == Protocol::Unsupported {
        out.error(
            format!("{p}.port.protocol"),
            format!(
                "invalid protocol {:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP",
                port.protocol
            ),
        );
        port_ok = false;
    }
    if (port.number > 0 || !bind.starts_with(UNIX_ADDRESS_PREFIX))
        && let Err(e) = validate_port(port.number.into())
    {
        out.error(format!("{p}.port.number"), e);
        port_ok = false;
    }
    if port.target_port.is_some_and(|t| t > 0) {
        out.error(
            format!("{p}.port.targetPort"),
            "targetPort has no impact on Gateways; remove it",
        );
        port_ok = false;
    }
    if port.name.is_empty() {
        out.error(format!("{p}.port.name"), "port name must be set");
        port_ok = false;
    }
    if let Some(path) = bind.strip_prefix(UNIX_ADDRESS_PREFIX) {
        if let Err(e) = validate_unix_address(path) {
            out.error(format!("{p}.bind"), e);
        }
        if port.number != 0 {
            out.error(
                format!("{p}.port.number"),
                format!(
                    "port number must be 0 for unix domain socket: {}",
                    port.number
                ),
            );
        }
    } else if !bind.is_empty()
        && let Err(e) = validate_ip_address(bind)
    {
        out.error(format!("{p}.bind"), e);
    }
    if let Some(tls) = &server.tls {
        validate_server_tls(out, &format!("{p}.tls"), tls);
    }
    if port_ok {
        match &server.tls {
            None if protocol.is_tls() => out.error(
                format!("{p}.tls"),
                "server must have TLS settings for HTTPS/TLS protocols",
            ),
            Some(tls) if !protocol.is_tls() => {
                if protocol.is_http() {
                    let passthrough = matches!(
                        tls.effective_mode(),
                        TlsMode::Passthrough | TlsMode::AutoPassthrough
                    );
                    let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
                    if !passthrough
                        || set(&tls.ca_certificates)
                        || set(&tls.private_key)
                        || set(&tls.server_certificate)
                    {
                        out.error(
                            format!("{p}.tls"),
                            "server cannot have TLS settings for plain text HTTP ports",
                        );
                    }
                } else {
                    out.error(
                        format!("{p}.tls"),
                        "server cannot have TLS settings for non HTTPS/TLS ports",
                    );
                }
            }
            _ => {}
        }
    }
}

/// Cipher suite names Envoy (BoringSSL) accepts in `cipherSuites`.
const VALID_CIPHER_SUITES: [&str; 15] = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
];

fn is_valid_cipher_suite(cs: &str) -> bool {
    // Expressions starting with an operator (`-`, `+`, `!`, `[`) are passed to Envoy as is.
    cs.is_empty()
        || cs == "ALL"
        || !cs.starts_with(|c: char| c.is_alphanumeric())
        || VALID_CIPHER_SUITES.contains(&cs)
}

/// `ServerTLSSettings` rules shared by gateway servers and sidecar ingress listeners: the CRD's
/// CEL and list-size rules, and istiod's mode and certificate rules.
pub(crate) fn validate_server_tls(out: &mut Issues, p: &str, tls: &ServerTlsSettings) {
    let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    // CRD schema: minItems 1, maxItems 2, and the CEL exclusivity rules.
    for (field, len) in [
        (
            "credentialNames",
            tls.credential_names.as_ref().map(Vec::len),
        ),
        (
            "tlsCertificates",
            tls.tls_certificates.as_ref().map(Vec::len),
        ),
    ] {
        match len {
            Some(0) => out.error(format!("{p}.{field}"), "should have at least 1 items"),
            Some(n) if n > 2 => out.error(
                format!("{p}.{field}"),
                format!("must have at most 2 items (it has {n})"),
            ),
            _ => {}
        }
    }
    if tls.tls_certificates.is_some() && tls.credential_names.is_some() {
        out.error(
            p,
            "only one of credentialNames or tlsCertificates can be set",
        );
    }
    if tls.credential_name.is_some() && tls.credential_names.is_some() {
        out.error(
            p,
            "only one of credentialName or credentialNames can be set",
        );
    }

    let mode = tls.effective_mode();
    if matches!(
        tls.min_protocol_version,
        Some(TlsProtocol::Tlsv1_0 | TlsProtocol::Tlsv1_1)
    ) && tls.cipher_suites.is_empty()
    {
        out.warn(
            format!("{p}.minProtocolVersion"),
            "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers.",
        );
    }
    let mut invalid: Vec<&str> = Vec::new();
    let mut valid: Vec<&str> = Vec::new();
    let mut duplicate: Vec<&str> = Vec::new();
    for cs in &tls.cipher_suites {
        if !is_valid_cipher_suite(cs) {
            invalid.push(cs);
        } else if valid.contains(&cs.as_str()) {
            duplicate.push(cs);
        } else {
            valid.push(cs);
        }
    }
    for (list, what) in [(&mut invalid, "invalid"), (&mut duplicate, "duplicate")] {
        if !list.is_empty() {
            list.sort_unstable();
            list.dedup();
            out.warn(
                format!("{p}.cipherSuites"),
                format!("ignoring {what} cipher suites: [{}]", list.join(" ")),
            );
        }
    }

    let has_tls_certs = tls.tls_certificates.as_ref().is_some_and(|c| !c.is_empty());
    let has_cred_names = tls.credential_names.as_ref().is_some_and(|c| !c.is_empty());
    if mode == TlsMode::IstioMutual {
        // ISTIO_MUTUAL uses the workload's own certificates: nothing else may be given.
        let checks = [
            (
                set(&tls.server_certificate),
                "serverCertificate",
                "server certificate",
            ),
            (set(&tls.private_key), "privateKey", "private key"),
            (set(&tls.ca_certificates), "caCertificates", "CA bundle"),
            (has_tls_certs, "tlsCertificates", "tlsCertificates"),
            (
                set(&tls.credential_name),
                "credentialName",
                "credentialName",
            ),
            (has_cred_names, "credentialNames", "credentialNames"),
        ];
        for (present, field, what) in checks {
            if present {
                out.error(
                    format!("{p}.{field}"),
                    format!("ISTIO_MUTUAL TLS cannot have associated {what}"),
                );
            }
        }
        return;
    }
    if matches!(mode, TlsMode::Passthrough | TlsMode::AutoPassthrough)
        && (set(&tls.ca_crl)
            || set(&tls.server_certificate)
            || set(&tls.private_key)
            || set(&tls.ca_certificates)
            || has_tls_certs
            || set(&tls.credential_name)
            || has_cred_names)
    {
        out.warn(
            p,
            format!(
                "{} mode does not use certificates, they will be ignored",
                mode.as_str()
            ),
        );
    }
    let sources = [
        set(&tls.server_certificate) && set(&tls.private_key),
        set(&tls.credential_name),
        has_cred_names,
        has_tls_certs,
    ];
    if sources.iter().filter(|s| **s).count() > 1 {
        out.error(
            p,
            "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified",
        );
    }
    let terminating = matches!(
        mode,
        TlsMode::Simple | TlsMode::Mutual | TlsMode::OptionalMutual
    );
    if terminating && (set(&tls.credential_name) || has_cred_names) {
        // Credentials come from the named secret(s): no certificate files are needed.
        return;
    }
    if terminating {
        let prefix = if mode == TlsMode::Simple {
            "SIMPLE TLS"
        } else {
            "MUTUAL TLS"
        };
        if mode != TlsMode::Simple && !set(&tls.ca_certificates) {
            out.error(
                format!("{p}.caCertificates"),
                format!("{prefix} requires a client CA bundle; set caCertificates, or use credentialName"),
            );
        }
        let pairs: Vec<(String, bool, bool)> = match tls.tls_certificates.as_deref() {
            Some(certs) if !certs.is_empty() => certs
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    (
                        format!("{p}.tlsCertificates[{i}]"),
                        set(&c.server_certificate),
                        set(&c.private_key),
                    )
                })
                .collect(),
            _ => vec![(
                p.to_string(),
                set(&tls.server_certificate),
                set(&tls.private_key),
            )],
        };
        for (cp, cert, key) in pairs {
            if !cert {
                out.error(
                    format!("{cp}.serverCertificate"),
                    format!("{prefix} requires a server certificate; set serverCertificate, or use credentialName"),
                );
            }
            if !key {
                out.error(
                    format!("{cp}.privateKey"),
                    format!(
                        "{prefix} requires a private key; set privateKey, or use credentialName"
                    ),
                );
            }
        }
    }
    if set(&tls.ca_crl) {
        if set(&tls.credential_name) {
            out.error(
                format!("{p}.caCrl"),
                "CRL is not supported with credentialName. CRL has to be specified in the credential",
            );
        }
        if mode == TlsMode::Simple {
            out.error(format!("{p}.caCrl"), "CRL is not supported with SIMPLE TLS");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{
        Issue, ObjectMeta,
        corpus::{self, Exception},
        from_yaml,
        virtual_service::tests::{assert_error, assert_no_errors, assert_warning, issues},
    };

    fn gw(yaml: &str) -> Vec<Issue> {
        issues::<Gateway>(yaml, |s, m, o| s.validate(m, o))
    }

    const FULL: &str = r#"
selector: {istio: ingressgateway}
servers:
- name: https-bookinfo
  port: {number: 443, name: https, protocol: HTTPS, targetPort: 0}
  hosts: [bookinfo/bookinfo.example.com, "*.example.org"]
  bind: 0.0.0.0
  defaultEndpoint: 127.0.0.1:8080
  tls:
    mode: MUTUAL
    serverCertificate: /etc/certs/server.pem
    privateKey: /etc/certs/key.pem
    caCertificates: /etc/certs/ca.pem
    caCrl: /etc/certs/crl.pem
    subjectAltNames: [client.example.com]
    verifyCertificateSpki: [abc]
    verifyCertificateHash: [def]
    minProtocolVersion: TLSV1_2
    maxProtocolVersion: TLSV1_3
    cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256]
    insecureSkipVerify: false
    caCertCredentialName: ca-cert
- port: {number: 80, name: http, protocol: HTTP}
  hosts: ["*"]
  tls: {httpsRedirect: true}
- port: {number: 8443, name: https-creds, protocol: HTTPS}
  hosts: ["*"]
  tls: {mode: SIMPLE, credentialNames: [rsa-cert, ecdsa-cert]}
- port: {number: 9443, name: https-files, protocol: HTTPS}
  hosts: ["*"]
  tls:
    mode: SIMPLE
    tlsCertificates:
    - {serverCertificate: /a.pem, privateKey: /a.key}
    - {serverCertificate: /b.pem, privateKey: /b.key, caCertificates: /ca.pem}
- port: {number: 15443, name: tls, protocol: TLS}
  hosts: ["*.local"]
  tls: {mode: AUTO_PASSTHROUGH}
- port: {number: 31400, name: tcp, protocol: TCP}
  hosts: ["*"]
"#;

    #[test]
    fn gateway_parses_every_major_field() {
        let spec: Gateway = from_yaml(FULL).unwrap();
        assert_eq!(spec.selector["istio"], "ingressgateway");
        let s = &spec.servers[0];
        assert_eq!(s.port.number, 443);
        assert_eq!(s.port.target_port, Some(0));
        let tls = s.tls.as_ref().unwrap();
        assert_eq!(tls.effective_mode(), TlsMode::Mutual);
        assert_eq!(tls.min_protocol_version, Some(TlsProtocol::Tlsv1_2));
        assert_eq!(
            spec.servers[1].tls.as_ref().unwrap().effective_mode(),
            TlsMode::Passthrough
        );
        assert_eq!(
            spec.servers[2]
                .tls
                .as_ref()
                .unwrap()
                .credential_names
                .as_ref()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            spec.servers[3]
                .tls
                .as_ref()
                .unwrap()
                .tls_certificates
                .as_ref()
                .unwrap()
                .len(),
            2
        );
        assert_no_errors(&gw(FULL));
    }

    #[test]
    fn gateway_typo_bad_enum_and_missing_port_fields_are_rejected() {
        let err = from_yaml::<Gateway>(
            "servers: [{port: {number: 80, name: h, protocol: HTTP}, host: [a]}]",
        )
        .unwrap_err();
        assert!(err.contains("host"), "{err}");
        let err = from_yaml::<Gateway>(
            "servers: [{port: {number: 80, name: h, protocol: HTTP}, hosts: [a], tls: {mode: STRICT}}]",
        )
        .unwrap_err();
        assert!(err.contains("STRICT"), "{err}");
        let err = from_yaml::<Gateway>(
            "servers: [{port: {number: 443, name: h, protocol: HTTPS}, hosts: [a], tls: {minProtocolVersion: TLSv1_2}}]",
        )
        .unwrap_err();
        assert!(err.contains("TLSv1_2"), "{err}");
        let err =
            from_yaml::<Gateway>("servers: [{port: {number: 80, protocol: HTTP}, hosts: [a]}]")
                .unwrap_err();
        assert!(err.contains("name"), "{err}");
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
            assert_error(&gw(c.bad), c.path, c.msg);
            assert_no_errors(&gw(c.good));
        }
    }

    #[test]
    fn gateway_servers_ports_and_hosts() {
        run(&[
            Case {
                bad: "servers: []",
                path: "spec.servers",
                msg: "gateway must have at least one server",
                good: "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]",
            },
            Case {
                bad: "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: []}]",
                path: "spec.servers[0].hosts",
                msg: "server config must contain at least one host",
                good: "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [ns/a.example.com]}]",
            },
            Case {
                bad: "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [bad_ns/a.example.com]}]",
                path: "spec.servers[0].hosts[0]",
                msg: "invalid namespace value \"bad_ns\" in gateway",
                good: "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['./a.example.com', '*/*']}]",
            },
            Case {
                bad: "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [reviews]}]",
                path: "spec.servers[0].hosts[0]",
                msg: "short names (non FQDN) are not allowed",
                good: "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [reviews.default.svc.cluster.local, 10.1.2.3]}]",
            },
            Case {
                bad: "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['foo*.example.com']}]",
                path: "spec.servers[0].hosts[0]",
                msg: "partial wildcard \"foo*.example.com\" not allowed",
                good: "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*.example.com']}]",
            },
            Case {
                bad: "servers: [{port: {number: 80, name: http, protocol: HTTPX}, hosts: ['*']}]",
                path: "spec.servers[0].port.protocol",
                msg: "invalid protocol \"HTTPX\", supported protocols are",
                good: "servers: [{port: {number: 80, name: http, protocol: http2}, hosts: ['*']}]",
            },
            Case {
                bad: "servers: [{port: {number: 0, name: http, protocol: HTTP}, hosts: ['*']}]",
                path: "spec.servers[0].port.number",
                msg: "port number 0 must be in the range 1..65535",
                good: "servers: [{port: {number: 0, name: http, protocol: HTTP}, bind: 'unix:///var/run/gw.sock', hosts: ['*']}]",
            },
            Case {
                bad: "servers: [{port: {number: 80, name: '', protocol: HTTP}, hosts: ['*']}]",
                path: "spec.servers[0].port.name",
                msg: "port name must be set",
                good: "servers: [{port: {number: 80, name: x, protocol: HTTP}, hosts: ['*']}]",
            },
            Case {
                bad: "servers: [{port: {number: 80, name: http, protocol: HTTP, targetPort: 8080}, hosts: ['*']}]",
                path: "spec.servers[0].port.targetPort",
                msg: "targetPort has no impact on Gateways",
                good: "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]",
            },
            Case {
                bad: "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}, {port: {number: 81, name: http, protocol: HTTP}, hosts: ['*']}]",
                path: "spec.servers[1].port.name",
                msg: "port names in servers must be unique: duplicate name http",
                good: "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}, {port: {number: 81, name: http-2, protocol: HTTP}, hosts: ['*']}]",
            },
            Case {
                bad: "servers: [{port: {number: 80, name: http, protocol: HTTP}, bind: 'unix://relative', hosts: ['*']}]",
                path: "spec.servers[0].bind",
                msg: "relative is not an absolute path to a file",
                good: "servers: [{port: {number: 80, name: http, protocol: HTTP}, bind: '::1', hosts: ['*']}]",
            },
            Case {
                bad: "servers: [{port: {number: 80, name: http, protocol: HTTP}, bind: 'unix:///gw.sock', hosts: ['*']}]",
                path: "spec.servers[0].port.number",
                msg: "port number must be 0 for unix domain socket",
                good: "servers: [{port: {number: 0, name: http, protocol: HTTP}, bind: 'unix://@abstract', hosts: ['*']}]",
            },
            Case {
                bad: "servers: [{port: {number: 80, name: http, protocol: HTTP}, bind: localhost, hosts: ['*']}]",
                path: "spec.servers[0].bind",
                msg: "localhost is not a valid IP",
                good: "servers: [{port: {number: 80, name: http, protocol: HTTP}, bind: 127.0.0.1, hosts: ['*']}]",
            },
        ]);
    }

    #[test]
    fn gateway_tls_settings() {
        let srv = |proto: &str, tls: &str| -> String {
            format!(
                "servers: [{{port: {{number: 443, name: p, protocol: {proto}}}, hosts: ['*'], tls: {tls}}}]"
            )
        };
        let cases: Vec<(String, &str, &str, String)> = vec![
            (
                "servers: [{port: {number: 443, name: p, protocol: HTTPS}, hosts: ['*']}]".into(),
                "spec.servers[0].tls",
                "server must have TLS settings for HTTPS/TLS protocols",
                srv("HTTPS", "{mode: SIMPLE, credentialName: cert}"),
            ),
            (
                srv("HTTP", "{mode: SIMPLE, credentialName: cert}"),
                "spec.servers[0].tls",
                "server cannot have TLS settings for plain text HTTP ports",
                srv("HTTP", "{httpsRedirect: true}"),
            ),
            (
                srv("TCP", "{mode: SIMPLE, credentialName: cert}"),
                "spec.servers[0].tls",
                "server cannot have TLS settings for non HTTPS/TLS ports",
                srv("TLS", "{mode: SIMPLE, credentialName: cert}"),
            ),
            (
                srv("HTTPS", "{mode: SIMPLE}"),
                "spec.servers[0].tls.serverCertificate",
                "SIMPLE TLS requires a server certificate",
                srv(
                    "HTTPS",
                    "{mode: SIMPLE, serverCertificate: /c, privateKey: /k}",
                ),
            ),
            (
                srv("HTTPS", "{mode: SIMPLE, serverCertificate: /c}"),
                "spec.servers[0].tls.privateKey",
                "SIMPLE TLS requires a private key",
                srv(
                    "HTTPS",
                    "{mode: SIMPLE, serverCertificate: /c, privateKey: /k}",
                ),
            ),
            (
                srv(
                    "HTTPS",
                    "{mode: MUTUAL, serverCertificate: /c, privateKey: /k}",
                ),
                "spec.servers[0].tls.caCertificates",
                "MUTUAL TLS requires a client CA bundle",
                srv(
                    "HTTPS",
                    "{mode: OPTIONAL_MUTUAL, serverCertificate: /c, privateKey: /k, caCertificates: /ca}",
                ),
            ),
            (
                srv(
                    "HTTPS",
                    "{mode: SIMPLE, tlsCertificates: [{serverCertificate: /c}]}",
                ),
                "spec.servers[0].tls.tlsCertificates[0].privateKey",
                "SIMPLE TLS requires a private key",
                srv(
                    "HTTPS",
                    "{mode: SIMPLE, tlsCertificates: [{serverCertificate: /c, privateKey: /k}]}",
                ),
            ),
            (
                srv("HTTPS", "{mode: ISTIO_MUTUAL, credentialName: cert}"),
                "spec.servers[0].tls.credentialName",
                "ISTIO_MUTUAL TLS cannot have associated credentialName",
                srv("HTTPS", "{mode: ISTIO_MUTUAL}"),
            ),
            (
                srv("HTTPS", "{mode: ISTIO_MUTUAL, serverCertificate: /c}"),
                "spec.servers[0].tls.serverCertificate",
                "ISTIO_MUTUAL TLS cannot have associated server certificate",
                srv("HTTPS", "{mode: ISTIO_MUTUAL, subjectAltNames: [a]}"),
            ),
            (
                srv(
                    "HTTPS",
                    "{mode: SIMPLE, credentialName: a, credentialNames: [b]}",
                ),
                "spec.servers[0].tls",
                "only one of credentialName or credentialNames can be set",
                srv("HTTPS", "{mode: SIMPLE, credentialNames: [a, b]}"),
            ),
            (
                srv(
                    "HTTPS",
                    "{mode: SIMPLE, credentialNames: [a], tlsCertificates: [{serverCertificate: /c, privateKey: /k}]}",
                ),
                "spec.servers[0].tls",
                "only one of credentialNames or tlsCertificates can be set",
                srv(
                    "HTTPS",
                    "{mode: SIMPLE, tlsCertificates: [{serverCertificate: /c, privateKey: /k}]}",
                ),
            ),
            (
                srv("HTTPS", "{mode: SIMPLE, credentialNames: [a, b, c]}"),
                "spec.servers[0].tls.credentialNames",
                "must have at most 2 items",
                srv("HTTPS", "{mode: SIMPLE, credentialNames: [a]}"),
            ),
            (
                srv("HTTPS", "{mode: SIMPLE, credentialNames: []}"),
                "spec.servers[0].tls.credentialNames",
                "should have at least 1 items",
                srv("HTTPS", "{mode: SIMPLE, credentialNames: [a]}"),
            ),
            (
                srv(
                    "HTTPS",
                    "{mode: SIMPLE, credentialName: a, serverCertificate: /c, privateKey: /k}",
                ),
                "spec.servers[0].tls",
                "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified",
                srv("HTTPS", "{mode: SIMPLE, credentialName: a}"),
            ),
            (
                srv(
                    "HTTPS",
                    "{mode: SIMPLE, serverCertificate: /c, privateKey: /k, caCrl: /crl}",
                ),
                "spec.servers[0].tls.caCrl",
                "CRL is not supported with SIMPLE TLS",
                srv(
                    "HTTPS",
                    "{mode: MUTUAL, serverCertificate: /c, privateKey: /k, caCertificates: /ca, caCrl: /crl}",
                ),
            ),
            (
                srv("TLS", "{mode: PASSTHROUGH, credentialName: a, caCrl: /crl}"),
                "spec.servers[0].tls.caCrl",
                "CRL is not supported with credentialName",
                srv("TLS", "{mode: PASSTHROUGH}"),
            ),
        ];
        for (bad, path, msg, good) in &cases {
            assert_error(&gw(bad), path, msg);
            assert_no_errors(&gw(good));
        }
        // Warnings, as istiod gives them.
        let issues = gw(&srv("TLS", "{mode: PASSTHROUGH, credentialName: a}"));
        assert_warning(
            &issues,
            "spec.servers[0].tls",
            "PASSTHROUGH mode does not use certificates, they will be ignored",
        );
        assert_no_errors(&issues);
        let issues = gw(&srv(
            "HTTPS",
            "{mode: SIMPLE, credentialName: a, cipherSuites: [NOT-A-CIPHER, AES128-SHA, AES128-SHA]}",
        ));
        assert_warning(
            &issues,
            "spec.servers[0].tls.cipherSuites",
            "ignoring invalid cipher suites: [NOT-A-CIPHER]",
        );
        assert_warning(
            &issues,
            "spec.servers[0].tls.cipherSuites",
            "ignoring duplicate cipher suites: [AES128-SHA]",
        );
        let issues = gw(&srv(
            "HTTPS",
            "{mode: SIMPLE, credentialName: a, minProtocolVersion: TLSV1_0}",
        ));
        assert_warning(
            &issues,
            "spec.servers[0].tls.minProtocolVersion",
            "TLS version below TLSV1_2 require setting compatible ciphers",
        );
        let issues = gw(&srv("TCP", "{httpsRedirect: true}"));
        assert_warning(
            &issues,
            "spec.servers[0].tls.httpsRedirect",
            "tls.httpsRedirect should only be used with http servers",
        );
    }

    #[test]
    fn gateway_name_must_be_a_dns_label() {
        let spec: Gateway =
            from_yaml("servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]")
                .unwrap();
        let mut metadata = ObjectMeta::default();
        let check = |name: &str, metadata: &ObjectMeta| {
            let mut out = Issues::default();
            spec.validate(
                &Meta {
                    name,
                    namespace: "ns",
                    metadata,
                },
                &mut out,
            );
            out.items
        };
        assert_error(
            &check("my.gateway", &metadata),
            "metadata.name",
            "invalid gateway name: \"my.gateway\"",
        );
        assert_no_errors(&check("my-gateway", &metadata));
        metadata.annotations.insert(
            "internal.istio.io/gateway-semantics".into(),
            "gateway".into(),
        );
        assert_no_errors(&check(
            "gw~istio-autogenerated-k8s-gateway~default",
            &metadata,
        ));
    }

    /// Gateways in Istio's test data that Istio itself rejects.
    const GATEWAY_KNOWN_INVALID: &[Exception] = &[
        (
            "analyzers/testdata/virtualservice_gateways.yaml",
            0,
            "analyzer fixture without servers",
        ),
        (
            "analyzers/testdata/virtualservice_gateways.yaml",
            1,
            "analyzer fixture without servers",
        ),
        (
            "analyzers/testdata/gateway-secrets.yaml",
            6,
            "analyzer fixture: SIMPLE TLS with neither credentialName nor certificate files, which the webhook rejects",
        ),
        (
            "analyzers/testdata/virtualservice_host_not_found_gateway.yaml",
            11,
            "analyzer fixture: two servers share the port name http, which the webhook rejects",
        ),
    ];

    #[test]
    fn gateway_istio_corpus_parses_and_validates() {
        if let Some(checked) = corpus::check::<Gateway>(
            "Gateway",
            corpus::networking_api,
            corpus::Spec::Optional,
            Gateway::validate,
            GATEWAY_KNOWN_INVALID,
        ) {
            assert!(checked > 30, "only {checked} documents found");
        }
    }
}

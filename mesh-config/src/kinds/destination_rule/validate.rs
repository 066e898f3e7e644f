//! Admission validation of DestinationRule: the CRD schema's constraints and CEL rules that serde
//! cannot express, and the rules of istiod's validating webhook. Where both reject the same thing
//! one issue is reported, in the wording `kubectl apply` shows first (the CRD's).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use super::{
    ClientTlsSettings, ConnectionPoolSettings, DestinationRule, H2UpgradePolicy,
    LoadBalancerSettings, LocalityLoadBalancerSetting, OutlierDetection, PortTrafficPolicy,
    TlsMode, TrafficPolicy, TunnelSettings,
};
use crate::kinds::{
    Issues, Meta,
    rules::{
        DurationRule, ExportToOf, check_duration, is_dns1123_label, port_range_error,
        validate_export_to, validate_fqdn, validate_labels, validate_match_labels,
        validate_wildcard_domain,
    },
};

impl DestinationRule {
    /// Checks what Istio rejects when the object is applied (the CRD schema, its CEL rules and
    /// istiod's webhook), and warns where istiod warns.
    pub fn validate(&self, meta: &Meta<'_>, out: &mut Issues) {
        if self.host.is_empty() {
            out.error(
                "spec.host",
                "Required value: set the service this rule applies to, e.g. `reviews` or \
                 `reviews.prod.svc.cluster.local`",
            );
        } else if let Err(e) = validate_wildcard_domain(&self.host) {
            out.error("spec.host", e);
        }
        if let Some(tp) = &self.traffic_policy {
            validate_traffic_policy(tp, "spec.trafficPolicy", meta.namespace, out);
        }
        let mut names = BTreeSet::new();
        for (i, subset) in self.subsets.iter().enumerate() {
            let base = format!("spec.subsets[{i}]");
            if subset.name.is_empty() {
                out.error(
                    format!("{base}.name"),
                    "Required value: subset name cannot be empty",
                );
            } else if !names.insert(subset.name.as_str()) {
                out.error(
                    format!("{base}.name"),
                    format!(
                        "duplicate subset names: {} (each subset needs its own name)",
                        subset.name
                    ),
                );
            } else if !is_dns1123_label(&subset.name) {
                out.error(
                    format!("{base}.name"),
                    format!(
                        "subset name is invalid: {} (use lower-case letters, digits and `-`, at \
                         most 63 characters)",
                        subset.name
                    ),
                );
            }
            validate_labels(&subset.labels, &format!("{base}.labels"), out);
            if let Some(tp) = &subset.traffic_policy {
                validate_traffic_policy(tp, &format!("{base}.trafficPolicy"), meta.namespace, out);
            }
        }
        validate_export_to(
            meta.namespace,
            &self.export_to,
            ExportToOf::DestinationRule {
                with_selector: self.workload_selector.is_some(),
            },
            out,
        );
        if let Some(sel) = &self.workload_selector {
            validate_match_labels(&sel.match_labels, "spec.workloadSelector.matchLabels", out);
        }
    }
}

// === traffic policy ===

fn validate_traffic_policy(tp: &TrafficPolicy, base: &str, namespace: &str, out: &mut Issues) {
    if tp.load_balancer.is_none()
        && tp.connection_pool.is_none()
        && tp.outlier_detection.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none()
    {
        out.error(
            base,
            "traffic policy must have at least one field (remove the empty trafficPolicy, or \
             set loadBalancer, connectionPool, outlierDetection, tls or portLevelSettings)",
        );
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        out.error(base, "tunnel and proxyProtocol must not be set together");
    }
    if let Some(od) = &tp.outlier_detection {
        validate_outlier_detection(od, &format!("{base}.outlierDetection"), out);
    }
    if let Some(cp) = &tp.connection_pool {
        validate_connection_pool(cp, &format!("{base}.connectionPool"), out);
    }
    if let Some(lb) = &tp.load_balancer {
        validate_load_balancer(
            lb,
            tp.outlier_detection.is_some(),
            &format!("{base}.loadBalancer"),
            out,
        );
    }
    if let Some(tls) = &tp.tls {
        validate_tls(tls, &format!("{base}.tls"), namespace, out);
    }
    if tp.port_level_settings.len() > 4096 {
        out.error(
            format!("{base}.portLevelSettings"),
            format!(
                "Too many: {}: must have at most 4096 items",
                tp.port_level_settings.len()
            ),
        );
    }
    for (i, pls) in tp.port_level_settings.iter().enumerate() {
        validate_port_traffic_policy(
            pls,
            &format!("{base}.portLevelSettings[{i}]"),
            namespace,
            out,
        );
    }
    if let Some(tunnel) = &tp.tunnel {
        validate_tunnel(tunnel, &format!("{base}.tunnel"), out);
    }
    if let Some(rb) = &tp.retry_budget
        && let Some(p) = rb.percent
        && !(0.0..=100.0).contains(&p)
    {
        out.error(
            format!("{base}.retryBudget.percent"),
            format!("Invalid value: {p}: percent must be between 0 and 100"),
        );
    }
}

fn validate_port_traffic_policy(
    pls: &PortTrafficPolicy,
    base: &str,
    namespace: &str,
    out: &mut Issues,
) {
    if pls.port.is_none() {
        out.error(
            format!("{base}.port"),
            "portTrafficPolicy must have valid port (set `port: {number: N}`)",
        );
    }
    if pls.load_balancer.is_none()
        && pls.connection_pool.is_none()
        && pls.outlier_detection.is_none()
        && pls.tls.is_none()
    {
        out.error(
            base,
            "port traffic policy must have at least one field (loadBalancer, connectionPool, \
             outlierDetection or tls)",
        );
        return;
    }
    if let Some(od) = &pls.outlier_detection {
        validate_outlier_detection(od, &format!("{base}.outlierDetection"), out);
    }
    if let Some(cp) = &pls.connection_pool {
        validate_connection_pool(cp, &format!("{base}.connectionPool"), out);
    }
    if let Some(lb) = &pls.load_balancer {
        validate_load_balancer(
            lb,
            pls.outlier_detection.is_some(),
            &format!("{base}.loadBalancer"),
            out,
        );
    }
    if let Some(tls) = &pls.tls {
        validate_tls(tls, &format!("{base}.tls"), namespace, out);
    }
}

fn validate_tunnel(t: &TunnelSettings, base: &str, out: &mut Issues) {
    if !t.protocol.is_empty() && t.protocol != "CONNECT" && t.protocol != "POST" {
        out.error(
            format!("{base}.protocol"),
            "tunnel protocol must be \"CONNECT\" or \"POST\"",
        );
    }
    if t.target_host.is_empty() {
        out.error(
            format!("{base}.targetHost"),
            "Required value: set the host the connection is tunneled to",
        );
    } else if let (Err(fqdn), false) = (
        validate_fqdn(&t.target_host),
        t.target_host.parse::<IpAddr>().is_ok(),
    ) {
        out.error(
            format!("{base}.targetHost"),
            format!(
                "tunnel target host must be valid FQDN or IP address: {fqdn}; {} is not a valid IP",
                t.target_host
            ),
        );
    }
    match t.target_port {
        None => out.error(
            format!("{base}.targetPort"),
            "Required value: set the port the connection is tunneled to",
        ),
        Some(p) if !(1..=65535).contains(&p) => out.error(
            format!("{base}.targetPort"),
            format!("tunnel target port is invalid: {}", port_range_error(p)),
        ),
        Some(_) => {}
    }
}

fn validate_outlier_detection(od: &OutlierDetection, base: &str, out: &mut Issues) {
    check_duration(
        out,
        &format!("{base}.baseEjectionTime"),
        od.base_ejection_time,
        DurationRule::CelAndWebhook,
    );
    check_duration(
        out,
        &format!("{base}.interval"),
        od.interval,
        DurationRule::CelAndWebhook,
    );
    if od.consecutive_errors.is_some_and(|n| n != 0) {
        out.warn(
            format!("{base}.consecutiveErrors"),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or \
             consecutive5xxErrors instead",
        );
    }
    if !od.split_external_local_origin_errors
        && od.consecutive_local_origin_failures.is_some_and(|n| n > 0)
    {
        out.error(
            format!("{base}.consecutiveLocalOriginFailures"),
            "outlier detection consecutive local origin failures is specified, but split \
             external local origin errors is set to false (set splitExternalLocalOriginErrors: \
             true)",
        );
    }
    for (field, value) in [
        ("maxEjectionPercent", od.max_ejection_percent),
        ("minHealthPercent", od.min_health_percent),
    ] {
        if let Some(v) = value
            && !(0..=100).contains(&v)
        {
            out.error(
                format!("{base}.{field}"),
                format!("percentage {v} is not in range 0..100"),
            );
        }
    }
    for (i, code) in od.outlier_detection_http_error_codes.iter().enumerate() {
        if !(100..=599).contains(code) {
            out.error(
                format!("{base}.outlierDetectionHttpErrorCodes[{i}]"),
                format!("Invalid value: {code}: an HTTP status code must be between 100 and 599"),
            );
        }
    }
}

/// istiod's connection pool rules (DestinationRule's `connectionPool`, and Sidecar's
/// `inboundConnectionPool` and ingress `connectionPool`): at least one of `tcp` and `http`, no
/// negative limits, durations of at least 1ms.
pub(crate) fn validate_connection_pool(cp: &ConnectionPoolSettings, base: &str, out: &mut Issues) {
    if cp.http.is_none() && cp.tcp.is_none() {
        out.error(
            base,
            "connection pool must have at least one field (tcp or http)",
        );
        return;
    }
    if let Some(http) = &cp.http {
        let b = format!("{base}.http");
        for (field, value, what) in [
            (
                "http1MaxPendingRequests",
                http.http1_max_pending_requests,
                "http1 max pending requests",
            ),
            (
                "http2MaxRequests",
                http.http2_max_requests,
                "http2 max requests",
            ),
            (
                "maxRequestsPerConnection",
                http.max_requests_per_connection,
                "max requests per connection",
            ),
            ("maxRetries", http.max_retries, "max retries"),
            (
                "maxConcurrentStreams",
                http.max_concurrent_streams,
                "max concurrent streams",
            ),
        ] {
            if value.is_some_and(|v| v < 0) {
                out.error(
                    format!("{b}.{field}"),
                    format!("{what} must be non-negative"),
                );
            }
        }
        check_duration(
            out,
            &format!("{b}.idleTimeout"),
            http.idle_timeout,
            DurationRule::CelAndWebhook,
        );
        if http.h2_upgrade_policy == H2UpgradePolicy::Upgrade && http.use_client_protocol {
            out.error(
                format!("{b}.useClientProtocol"),
                "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
            );
        }
        if let Some(ka) = &http.http2_keep_alive {
            check_duration(
                out,
                &format!("{b}.http2KeepAlive.interval"),
                ka.interval,
                DurationRule::Cel,
            );
            check_duration(
                out,
                &format!("{b}.http2KeepAlive.timeout"),
                ka.timeout,
                DurationRule::Cel,
            );
        }
    }
    if let Some(tcp) = &cp.tcp {
        let b = format!("{base}.tcp");
        if tcp.max_connections.is_some_and(|v| v < 0) {
            out.error(
                format!("{b}.maxConnections"),
                "max connections must be non-negative",
            );
        }
        check_duration(
            out,
            &format!("{b}.connectTimeout"),
            tcp.connect_timeout,
            DurationRule::CelAndWebhook,
        );
        check_duration(
            out,
            &format!("{b}.maxConnectionDuration"),
            tcp.max_connection_duration,
            DurationRule::CelAndWebhook,
        );
        // `0s` disables the idle timeout.
        if tcp.idle_timeout.is_some_and(|d| d.get().as_millis() != 0) {
            check_duration(
                out,
                &format!("{b}.idleTimeout"),
                tcp.idle_timeout,
                DurationRule::Webhook,
            );
        }
        if let Some(ka) = &tcp.tcp_keepalive {
            check_duration(
                out,
                &format!("{b}.tcpKeepalive.time"),
                ka.time,
                DurationRule::CelAndWebhook,
            );
            check_duration(
                out,
                &format!("{b}.tcpKeepalive.interval"),
                ka.interval,
                DurationRule::CelAndWebhook,
            );
        }
    }
}

fn validate_load_balancer(
    lb: &LoadBalancerSettings,
    has_outlier_detection: bool,
    base: &str,
    out: &mut Issues,
) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        out.error(
            base,
            "Invalid value: \"object\": must validate one and only one schema (oneOf): set \
             either simple or consistentHash, not both",
        );
    }
    if let Some(ch) = &lb.consistent_hash {
        let b = format!("{base}.consistentHash");
        let keys: Vec<&str> = [
            ("httpHeaderName", ch.http_header_name.is_some()),
            ("httpCookie", ch.http_cookie.is_some()),
            ("useSourceIp", ch.use_source_ip.is_some()),
            (
                "httpQueryParameterName",
                ch.http_query_parameter_name.is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        if keys.len() > 1 {
            out.error(
                &b,
                format!(
                    "Invalid value: \"object\": must validate one and only one schema (oneOf): \
                     a consistent hash takes one key, found {}",
                    keys.join(", ")
                ),
            );
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            out.error(
                &b,
                "Invalid value: \"object\": must validate one and only one schema (oneOf): set \
                 either ringHash or maglev, not both",
            );
        }
        if let Some(cookie) = &ch.http_cookie {
            if cookie.name.is_empty() {
                out.error(
                    format!("{b}.httpCookie.name"),
                    "Required value: name required for HttpCookie",
                );
            }
            for (i, attr) in cookie.attributes.iter().enumerate() {
                if attr.name.is_empty() {
                    out.error(
                        format!("{b}.httpCookie.attributes[{i}].name"),
                        "Required value: a cookie attribute needs a name",
                    );
                }
            }
        }
        if ch.minimum_ring_size.is_some_and(|n| n != 0) {
            out.warn(
                format!("{b}.minimumRingSize"),
                "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash \
                 configuration instead",
            );
            if ch.ring_hash.is_some() || ch.maglev.is_some() {
                out.error(
                    format!("{b}.minimumRingSize"),
                    "only one of MinimumRingSize or Maglev/Ringhash can be specified",
                );
            }
        }
        if let Some(ml) = &ch.maglev {
            let size = ml.table_size.unwrap_or(0);
            let path = format!("{b}.maglev.tableSize");
            if size == 0 {
                out.error(
                    &path,
                    "tableSize must be set for maglev (a prime number, e.g. 65537)",
                );
            } else {
                if size >= 5_000_011 {
                    out.error(&path, "tableSize must be less than 5000011 for maglev");
                }
                if !is_prime(size) {
                    out.error(&path, "tableSize must be a prime number for maglev");
                }
            }
        }
    }
    if let Some(loc) = &lb.locality_lb_setting {
        validate_locality_lb_setting(
            loc,
            has_outlier_detection,
            &format!("{base}.localityLbSetting"),
            out,
        );
    }
    check_duration(
        out,
        &format!("{base}.warmupDurationSecs"),
        lb.warmup_duration_secs,
        DurationRule::Cel,
    );
    if let Some(w) = &lb.warmup {
        let b = format!("{base}.warmup");
        match w.duration {
            None => out.error(
                format!("{b}.duration"),
                "Required value: warmup needs a duration (e.g. `duration: 60s`)",
            ),
            d => check_duration(
                out,
                &format!("{b}.duration"),
                d,
                DurationRule::CelAndWebhook,
            ),
        }
        if let Some(p) = w.minimum_percent
            && !(0.0..=100.0).contains(&p)
        {
            out.error(
                format!("{b}.minimumPercent"),
                format!("Invalid value: {p}: minimumPercent value should be between 0 and 100"),
            );
        }
        if let Some(a) = w.aggression
            && a < 1.0
        {
            out.error(
                format!("{b}.aggression"),
                format!("Invalid value: {a}: aggression should be greater than or equal to 1"),
            );
        }
    }
    if let Some(za) = &lb.zone_aware_lb_setting
        && za.min_cluster_size == Some(0)
    {
        out.error(
            format!("{base}.zoneAwareLbSetting.minClusterSize"),
            "Invalid value: 0: minClusterSize should be greater than or equal to 1",
        );
    }
}

/// Envoy's primality test, which Istio copies so that it agrees with Envoy on `tableSize`.
fn is_prime(x: u64) -> bool {
    if x != 0 && x < 4 {
        return true;
    }
    if x & 1 == 0 {
        return false;
    }
    let mut f = 3u64;
    while f * f <= x {
        if x.is_multiple_of(f) {
            return false;
        }
        f += 2;
    }
    true
}

fn validate_locality_lb_setting(
    loc: &LocalityLoadBalancerSetting,
    has_outlier_detection: bool,
    base: &str,
    out: &mut Issues,
) {
    if !loc.distribute.is_empty() && !loc.failover.is_empty() {
        out.error(
            base,
            "can not simultaneously specify 'distribute' and 'failover'",
        );
        return;
    }
    if !loc.failover.is_empty() {
        for (i, label) in loc.failover_priority.iter().enumerate() {
            if matches!(
                label.as_str(),
                "topology.kubernetes.io/region"
                    | "topology.kubernetes.io/zone"
                    | "topology.istio.io/subzone"
            ) {
                out.error(
                    format!("{base}.failoverPriority[{i}]"),
                    format!(
                        "can not simultaneously set 'failover' and topology label '{label}' in \
                         'failover_priority'"
                    ),
                );
                return;
            }
        }
    }
    let mut sources = Vec::new();
    for (i, d) in loc.distribute.iter().enumerate() {
        let b = format!("{base}.distribute[{i}]");
        sources.push(d.from.as_str());
        let mut total: u64 = 0;
        for (to, weight) in &d.to {
            if !(1..=100).contains(weight) {
                out.error(
                    format!("{b}.to.{to}"),
                    "locality weight must be in range [1, 100]",
                );
                return;
            }
            total += u64::from(*weight);
        }
        if total != 100 {
            out.error(
                format!("{b}.to"),
                format!("total locality weight {total} != 100"),
            );
            return;
        }
        if let Err(e) = validate_localities(d.to.keys().map(String::as_str)) {
            out.error(format!("{b}.to"), e);
        }
    }
    if let Err(e) = validate_localities(sources.into_iter()) {
        out.error(format!("{base}.distribute"), e);
    }
    if (!loc.failover.is_empty() || !loc.failover_priority.is_empty()) && !has_outlier_detection {
        out.warn(
            base,
            "outlier detection policy must be provided for failover",
        );
    }
    for (i, f) in loc.failover.iter().enumerate() {
        let b = format!("{base}.failover[{i}]");
        if f.from == f.to {
            out.error(
                &b,
                "locality lb failover settings must specify different regions",
            );
        }
        if f.from.contains('/') || f.to.contains('/') {
            out.error(&b, "locality lb failover only specify region");
        }
        if f.from.contains('*') || f.to.contains('*') {
            out.error(
                &b,
                "locality lb failover region should not contain '*' wildcard",
            );
        }
    }
}

/// Localities (`region/zone/subzone`, a trailing `*` allowed) must not overlap.
fn validate_localities<'a>(localities: impl Iterator<Item = &'a str>) -> Result<(), String> {
    // region -> zone -> subzones; "*" marks "everything below".
    let mut seen: BTreeMap<&str, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
    let overlap = |l: &str| format!("locality {l} overlap with previous specified ones");
    for l in localities {
        let stars = l.matches('*').count();
        if stars > 1 || (stars == 1 && !l.ends_with('*')) {
            return Err(format!(
                "locality {l} wildcard '*' number can not exceed 1 and must be in the end"
            ));
        }
        if seen.contains_key("*") {
            return Err(overlap(l));
        }
        let items: Vec<&str> = l.splitn(3, '/').collect();
        if items.iter().any(|s| s.is_empty()) {
            return Err(format!(
                "locality {l} must not contain empty region/zone/subzone info"
            ));
        }
        match items.as_slice() {
            [region] => {
                if seen.contains_key(region) {
                    return Err(overlap(l));
                }
                seen.insert(region, BTreeMap::from([("*", BTreeSet::from(["*"]))]));
            }
            [region, zone] => {
                let zones = seen.entry(region).or_default();
                if zones.contains_key("*") || zones.contains_key(zone) {
                    return Err(overlap(l));
                }
                zones.insert(zone, BTreeSet::from(["*"]));
            }
            [region, zone, subzone] => {
                let zones = seen.entry(region).or_default();
                if zones.contains_key("*") {
                    return Err(overlap(l));
                }
                let subzones = zones.entry(zone).or_default();
                if subzones.contains("*") || !subzones.insert(subzone) {
                    return Err(overlap(l));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn validate_tls(tls: &ClientTlsSettings, base: &str, namespace: &str, out: &mut Issues) {
    if let Some(rest) = tls.credential_name.strip_prefix("configmap://") {
        let ns = rest.split_once('/').map(|(ns, _)| ns).unwrap_or(namespace);
        if rest.is_empty() || rest.ends_with('/') {
            out.error(
                format!("{base}.credentialName"),
                "invalid configmap:// credentialName: write configmap://NAME or \
                 configmap://NAMESPACE/NAME",
            );
        } else if ns != namespace {
            out.error(
                format!("{base}.credentialName"),
                format!(
                    "invalid configmap:// credentialName: namespace must match the configuration \
                     namespace \"{namespace}\""
                ),
            );
        }
    }
    if tls.insecure_skip_verify == Some(true) {
        if tls.mode == TlsMode::Simple
            && (!tls.ca_certificates.is_empty()
                || !tls.credential_name.is_empty()
                || !tls.subject_alt_names.is_empty())
        {
            out.error(
                format!("{base}.insecureSkipVerify"),
                "cannot specify CaCertificates or CredentialName or SubjectAltNames when \
                 InsecureSkipVerify is set true",
            );
        }
        if tls.mode == TlsMode::Mutual
            && (!tls.ca_certificates.is_empty() || !tls.subject_alt_names.is_empty())
        {
            out.error(
                format!("{base}.insecureSkipVerify"),
                "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set \
                 true",
            );
        }
    }
    let simple_or_mutual = matches!(tls.mode, TlsMode::Simple | TlsMode::Mutual);
    if simple_or_mutual && !tls.credential_name.is_empty() {
        if !tls.client_certificate.is_empty()
            || !tls.ca_certificates.is_empty()
            || !tls.private_key.is_empty()
            || !tls.ca_crl.is_empty()
        {
            out.error(
                format!("{base}.credentialName"),
                "cannot specify client certificates or CA certificate or CA CRL If credentialName \
                 is set",
            );
        }
        return;
    }
    if tls.mode == TlsMode::Mutual {
        if tls.client_certificate.is_empty() {
            out.error(
                format!("{base}.clientCertificate"),
                "client certificate required for mutual tls (or set credentialName)",
            );
        }
        if tls.private_key.is_empty() {
            out.error(
                format!("{base}.privateKey"),
                "private key required for mutual tls (or set credentialName)",
            );
        }
    }
}

use std::time::Duration as StdDuration;

use super::*;
use crate::kinds::{Issue, Severity, corpus, from_yaml, validate_yaml};

fn issues(yaml: &str) -> Vec<Issue> {
    validate_yaml::<DestinationRule>(yaml, DestinationRule::validate)
}

fn errors(yaml: &str) -> Vec<Issue> {
    crate::kinds::only_errors(issues(yaml))
}

#[track_caller]
fn assert_error(yaml: &str, path: &str, needle: &str) {
    crate::kinds::assert_has_error(&errors(yaml), path, needle);
}

#[track_caller]
fn assert_warning(yaml: &str, path: &str, needle: &str) {
    let all = issues(yaml);
    assert!(
        all.iter().any(|i| i.severity == Severity::Warning
            && i.path == path
            && i.message.contains(needle)),
        "expected a warning at {path} containing {needle:?}, got {all:#?}"
    );
}

#[track_caller]
fn assert_clean(yaml: &str) {
    let errs = errors(yaml);
    assert!(errs.is_empty(), "expected no errors, got {errs:#?}");
}

const FULL: &str = r#"
host: ratings.shop.svc.cluster.local
exportTo: [".", "shop-frontend"]
trafficPolicy:
  loadBalancer:
    consistentHash:
      httpCookie:
        name: session
        path: /
        ttl: 30m
        attributes:
        - name: SameSite
          value: Lax
      ringHash:
        minimumRingSize: 2048
    localityLbSetting:
      enabled: true
      failover:
      - from: eu-west
        to: eu-north
      failoverPriority: ["topology.istio.io/network"]
    warmup:
      duration: 45s
      minimumPercent: 10
      aggression: 1.5
  connectionPool:
    tcp:
      maxConnections: 64
      connectTimeout: 250ms
      tcpKeepalive:
        probes: 4
        time: 2h
        interval: 30s
      maxConnectionDuration: 10m
      idleTimeout: 0s
    http:
      http1MaxPendingRequests: 16
      http2MaxRequests: 512
      maxRequestsPerConnection: 20
      maxRetries: 2
      idleTimeout: 90s
      h2UpgradePolicy: DO_NOT_UPGRADE
      useClientProtocol: true
      maxConcurrentStreams: 128
      http2KeepAlive:
        interval: 20s
        timeout: 4s
  outlierDetection:
    consecutive5xxErrors: 7
    consecutiveGatewayErrors: 3
    splitExternalLocalOriginErrors: true
    consecutiveLocalOriginFailures: 2
    interval: 15s
    baseEjectionTime: 1m
    maxEjectionPercent: 40
    minHealthPercent: 25
    outlierDetectionHttpErrorCodes: [502, 503]
  tls:
    mode: MUTUAL
    clientCertificate: /certs/client.pem
    privateKey: /certs/client.key
    caCertificates: /certs/ca.pem
    caCrl: /certs/crl.pem
    subjectAltNames: ["spiffe://shop/ratings"]
    sni: ratings.shop
    insecureSkipVerify: false
  portLevelSettings:
  - port:
      number: 9080
    loadBalancer:
      simple: LEAST_REQUEST
    tls:
      mode: ISTIO_MUTUAL
  proxyProtocol:
    version: V2
  retryBudget:
    percent: 20
    minRetryConcurrency: 3
    budgetInterval: 10s
subsets:
- name: stable
  labels:
    version: v3
    app.kubernetes.io/part-of: shop
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      zoneAwareLbSetting:
        enabled: true
        minClusterSize: 3
    tunnel:
      protocol: POST
      targetHost: egress.shop.svc.cluster.local
      targetPort: 8443
- name: canary
  labels:
    version: v4
    track: canary
"#;

#[test]
fn parses_every_major_field() {
    let dr: DestinationRule = from_yaml(FULL).unwrap();
    assert_eq!(dr.host, "ratings.shop.svc.cluster.local");
    assert_eq!(dr.export_to, [".", "shop-frontend"]);
    let tp = dr.traffic_policy.as_ref().unwrap();
    let lb = tp.load_balancer.as_ref().unwrap();
    let ch = lb.consistent_hash.as_ref().unwrap();
    let cookie = ch.http_cookie.as_ref().unwrap();
    assert_eq!(cookie.name, "session");
    assert_eq!(cookie.ttl.unwrap().get(), StdDuration::from_secs(1800));
    assert_eq!(cookie.attributes[0].value, "Lax");
    assert_eq!(ch.ring_hash.as_ref().unwrap().minimum_ring_size, Some(2048));
    let loc = lb.locality_lb_setting.as_ref().unwrap();
    assert_eq!(loc.failover[0].to, "eu-north");
    let warm = lb.warmup.as_ref().unwrap();
    assert_eq!(warm.duration.unwrap().get(), StdDuration::from_secs(45));
    assert_eq!(warm.minimum_percent, Some(10.0));
    let cp = tp.connection_pool.as_ref().unwrap();
    let tcp = cp.tcp.as_ref().unwrap();
    assert_eq!(tcp.max_connections, Some(64));
    assert_eq!(tcp.tcp_keepalive.as_ref().unwrap().probes, Some(4));
    let http = cp.http.as_ref().unwrap();
    assert_eq!(http.h2_upgrade_policy, H2UpgradePolicy::DoNotUpgrade);
    assert_eq!(http.max_concurrent_streams, Some(128));
    assert!(http.use_client_protocol);
    assert_eq!(
        http.http2_keep_alive
            .as_ref()
            .unwrap()
            .timeout
            .unwrap()
            .get(),
        StdDuration::from_secs(4)
    );
    let od = tp.outlier_detection.as_ref().unwrap();
    assert_eq!(od.consecutive_5xx_errors, Some(7));
    assert_eq!(od.outlier_detection_http_error_codes, [502, 503]);
    let tls = tp.tls.as_ref().unwrap();
    assert_eq!(tls.mode, TlsMode::Mutual);
    assert_eq!(tls.insecure_skip_verify, Some(false));
    assert_eq!(tp.port_level_settings[0].port.unwrap().number, Some(9080));
    assert_eq!(
        tp.port_level_settings[0]
            .load_balancer
            .as_ref()
            .unwrap()
            .simple,
        Some(SimpleLb::LeastRequest)
    );
    assert_eq!(
        tp.proxy_protocol.as_ref().unwrap().version,
        ProxyProtocolVersion::V2
    );
    assert_eq!(tp.retry_budget.as_ref().unwrap().percent, Some(20.0));
    assert_eq!(dr.subsets.len(), 2);
    assert_eq!(dr.subsets[0].labels["version"], "v3");
    let sub_tp = dr.subsets[0].traffic_policy.as_ref().unwrap();
    let tunnel = sub_tp.tunnel.as_ref().unwrap();
    assert_eq!(
        (tunnel.protocol.as_str(), tunnel.target_port),
        ("POST", Some(8443))
    );
    assert_eq!(
        sub_tp
            .load_balancer
            .as_ref()
            .unwrap()
            .zone_aware_lb_setting
            .as_ref()
            .unwrap()
            .min_cluster_size,
        Some(3)
    );
    assert_clean(FULL);
}

#[test]
fn parses_the_other_hash_keys_and_workload_selector() {
    let dr: DestinationRule = from_yaml(
        "host: a\nworkloadSelector:\n  matchLabels:\n    app: web\ntrafficPolicy:\n  loadBalancer:\n    consistentHash:\n      useSourceIp: true\n      maglev:\n        tableSize: 65537\n",
    )
    .unwrap();
    let ch = dr
        .traffic_policy
        .unwrap()
        .load_balancer
        .unwrap()
        .consistent_hash
        .unwrap();
    assert_eq!(ch.use_source_ip, Some(true));
    assert_eq!(ch.maglev.unwrap().table_size, Some(65537));
    assert_eq!(dr.workload_selector.unwrap().match_labels["app"], "web");
}

#[test]
fn a_typo_is_an_unknown_field() {
    let e = from_yaml::<DestinationRule>(
        "host: a\ntrafficPolicy:\n  loadBalancr:\n    simple: RANDOM\n",
    )
    .unwrap_err();
    assert!(e.contains("loadBalancr"), "{e}");
    let e = from_yaml::<DestinationRule>("host: a\nsubsets:\n- name: v1\n  label:\n    v: a\n")
        .unwrap_err();
    assert!(e.contains("label"), "{e}");
}

#[test]
fn a_bad_enum_is_rejected() {
    for yaml in [
        "host: a\ntrafficPolicy:\n  loadBalancer:\n    simple: FASTEST\n",
        "host: a\ntrafficPolicy:\n  tls:\n    mode: STRICT\n",
        "host: a\ntrafficPolicy:\n  connectionPool:\n    http:\n      h2UpgradePolicy: ALWAYS\n",
        "host: a\ntrafficPolicy:\n  proxyProtocol:\n    version: V3\n",
    ] {
        assert!(from_yaml::<DestinationRule>(yaml).is_err(), "{yaml}");
    }
}

#[test]
fn bad_durations_and_negative_unsigned_values_are_parse_errors() {
    assert!(
        from_yaml::<DestinationRule>(
            "host: a\ntrafficPolicy:\n  outlierDetection:\n    interval: soon\n"
        )
        .is_err()
    );
    assert!(
        from_yaml::<DestinationRule>(
            "host: a\ntrafficPolicy:\n  outlierDetection:\n    consecutive5xxErrors: -1\n"
        )
        .is_err()
    );
}

#[test]
fn host_is_required_and_must_be_a_domain() {
    assert_error("subsets: []\n", "spec.host", "Required value");
    assert_error("host: bad..host\n", "spec.host", "invalid");
    assert_error("host: a.b.123\n", "spec.host", "all-numeric");
    assert_clean("host: reviews\n");
    assert_clean("host: '*.example.com'\n");
}

#[test]
fn subsets_need_unique_valid_names() {
    assert_error(
        "host: a\nsubsets:\n- name: v1\n- name: v1\n",
        "spec.subsets[1].name",
        "duplicate subset names: v1",
    );
    assert_error(
        "host: a\nsubsets:\n- name: v1\n- name: V_2\n",
        "spec.subsets[1].name",
        "subset name is invalid",
    );
    assert_error(
        "host: a\nsubsets:\n- labels: {a: b}\n",
        "spec.subsets[0].name",
        "Required value",
    );
    assert_error(
        "host: a\nsubsets:\n- name: v1\n  labels:\n    'bad key!': x\n",
        "spec.subsets[0].labels.bad key!",
        "invalid tag key",
    );
    assert_error(
        "host: a\nsubsets:\n- name: v1\n  labels:\n    version: 'v 1'\n",
        "spec.subsets[0].labels.version",
        "invalid tag value",
    );
    assert_clean("host: a\nsubsets:\n- name: v1\n  labels: {version: v1}\n- name: v2\n");
}

#[test]
fn traffic_policies_must_not_be_empty() {
    assert_error(
        "host: a\ntrafficPolicy: {}\n",
        "spec.trafficPolicy",
        "traffic policy must have at least one field",
    );
    assert_error(
        "host: a\nsubsets:\n- name: v1\n  trafficPolicy: {}\n",
        "spec.subsets[0].trafficPolicy",
        "at least one field",
    );
    assert_error(
        "host: a\ntrafficPolicy:\n  portLevelSettings:\n  - port: {number: 80}\n",
        "spec.trafficPolicy.portLevelSettings[0]",
        "port traffic policy must have at least one field",
    );
    assert_error(
        "host: a\ntrafficPolicy:\n  portLevelSettings:\n  - tls: {mode: SIMPLE}\n",
        "spec.trafficPolicy.portLevelSettings[0].port",
        "portTrafficPolicy must have valid port",
    );
    assert_error(
        "host: a\ntrafficPolicy:\n  connectionPool: {}\n",
        "spec.trafficPolicy.connectionPool",
        "connection pool must have at least one field",
    );
    assert_clean(
        "host: a\ntrafficPolicy:\n  portLevelSettings:\n  - port: {number: 80}\n    tls: {mode: SIMPLE}\n",
    );
}

#[test]
fn tunnel_rules() {
    assert_error(
        "host: a\ntrafficPolicy:\n  tunnel: {targetHost: b.c, targetPort: 80}\n  proxyProtocol: {version: V1}\n",
        "spec.trafficPolicy",
        "tunnel and proxyProtocol must not be set together",
    );
    assert_error(
        "host: a\ntrafficPolicy:\n  tunnel: {protocol: GET, targetHost: b.c, targetPort: 80}\n",
        "spec.trafficPolicy.tunnel.protocol",
        "CONNECT",
    );
    assert_error(
        "host: a\ntrafficPolicy:\n  tunnel: {targetHost: b.c, targetPort: 70000}\n",
        "spec.trafficPolicy.tunnel.targetPort",
        "tunnel target port is invalid",
    );
    assert_error(
        "host: a\ntrafficPolicy:\n  tunnel: {targetPort: 80}\n",
        "spec.trafficPolicy.tunnel.targetHost",
        "Required value",
    );
    assert_error(
        "host: a\ntrafficPolicy:\n  tunnel: {targetHost: 'not a host', targetPort: 80}\n",
        "spec.trafficPolicy.tunnel.targetHost",
        "must be valid FQDN or IP address",
    );
    assert_clean("host: a\ntrafficPolicy:\n  tunnel: {targetHost: 10.0.0.1, targetPort: 80}\n");
}

#[test]
fn load_balancer_oneofs() {
    assert_error(
        "host: a\ntrafficPolicy:\n  loadBalancer:\n    simple: RANDOM\n    consistentHash: {useSourceIp: true}\n",
        "spec.trafficPolicy.loadBalancer",
        "one and only one",
    );
    assert_error(
        "host: a\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {useSourceIp: true, httpHeaderName: x-user}\n",
        "spec.trafficPolicy.loadBalancer.consistentHash",
        "httpHeaderName, useSourceIp",
    );
    assert_error(
        "host: a\ntrafficPolicy:\n  loadBalancer:\n    consistentHash:\n      httpHeaderName: x\n      ringHash: {}\n      maglev: {tableSize: 7}\n",
        "spec.trafficPolicy.loadBalancer.consistentHash",
        "either ringHash or maglev",
    );
    assert_clean(
        "host: a\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {httpQueryParameterName: user}\n",
    );
}

#[test]
fn consistent_hash_details() {
    assert_error(
        "host: a\ntrafficPolicy:\n  loadBalancer:\n    consistentHash:\n      httpCookie: {ttl: 1s}\n",
        "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
        "name required for HttpCookie",
    );
    let yaml = "host: a\ntrafficPolicy:\n  loadBalancer:\n    consistentHash:\n      httpHeaderName: x\n      minimumRingSize: 1024\n";
    assert_warning(
        yaml,
        "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize",
        "deprecated",
    );
    assert_clean(yaml);
    assert_error(
        "host: a\ntrafficPolicy:\n  loadBalancer:\n    consistentHash:\n      httpHeaderName: x\n      minimumRingSize: 1024\n      ringHash: {minimumRingSize: 10}\n",
        "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize",
        "only one of MinimumRingSize or Maglev/Ringhash",
    );
    let maglev = |size: &str| {
        format!(
            "host: a\ntrafficPolicy:\n  loadBalancer:\n    consistentHash:\n      useSourceIp: true\n      maglev: {{{size}}}\n"
        )
    };
    let path = "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize";
    assert_error(&maglev(""), path, "tableSize must be set for maglev");
    assert_error(&maglev("tableSize: 1000"), path, "prime");
    assert_error(&maglev("tableSize: 5000011"), path, "less than 5000011");
    assert_clean(&maglev("tableSize: 65537"));
}

#[test]
fn warmup_rules() {
    let base = "host: a\ntrafficPolicy:\n  loadBalancer:\n    warmup:\n";
    assert_error(
        &format!("{base}      minimumPercent: 5\n"),
        "spec.trafficPolicy.loadBalancer.warmup.duration",
        "Required value",
    );
    assert_error(
        &format!("{base}      duration: 1s\n      minimumPercent: 101\n"),
        "spec.trafficPolicy.loadBalancer.warmup.minimumPercent",
        "Invalid value",
    );
    assert_error(
        &format!("{base}      duration: 1s\n      aggression: 0.5\n"),
        "spec.trafficPolicy.loadBalancer.warmup.aggression",
        "greater than or equal to 1",
    );
    assert_error(
        &format!("{base}      duration: 1500us\n"),
        "spec.trafficPolicy.loadBalancer.warmup.duration",
        "ms precision",
    );
    assert_clean(&format!(
        "{base}      duration: 2m\n      minimumPercent: 0\n      aggression: 1\n"
    ));
}

#[test]
fn outlier_detection_rules() {
    let base = "host: a\ntrafficPolicy:\n  outlierDetection:\n";
    let p = "spec.trafficPolicy.outlierDetection";
    assert_error(
        &format!("{base}    maxEjectionPercent: 101\n"),
        &format!("{p}.maxEjectionPercent"),
        "not in range 0..100",
    );
    assert_error(
        &format!("{base}    minHealthPercent: -1\n"),
        &format!("{p}.minHealthPercent"),
        "not in range 0..100",
    );
    assert_error(
        &format!("{base}    consecutiveLocalOriginFailures: 3\n"),
        &format!("{p}.consecutiveLocalOriginFailures"),
        "split external local origin errors is set to false",
    );
    assert_error(
        &format!("{base}    outlierDetectionHttpErrorCodes: [600]\n"),
        &format!("{p}.outlierDetectionHttpErrorCodes[0]"),
        "between 100 and 599",
    );
    assert_error(
        &format!("{base}    baseEjectionTime: 0s\n"),
        &format!("{p}.baseEjectionTime"),
        "greater than 1ms",
    );
    assert_warning(
        &format!("{base}    consecutiveErrors: 5\n"),
        &format!("{p}.consecutiveErrors"),
        "deprecated",
    );
    assert_clean(&format!(
        "{base}    maxEjectionPercent: 100\n    minHealthPercent: 0\n    consecutiveErrors: 5\n"
    ));
}

#[test]
fn connection_pool_rules() {
    let base = "host: a\ntrafficPolicy:\n  connectionPool:\n";
    let p = "spec.trafficPolicy.connectionPool";
    for (field, what) in [
        ("http1MaxPendingRequests", "http1 max pending requests"),
        ("http2MaxRequests", "http2 max requests"),
        ("maxRequestsPerConnection", "max requests per connection"),
        ("maxRetries", "max retries"),
        ("maxConcurrentStreams", "max concurrent streams"),
    ] {
        assert_error(
            &format!("{base}    http:\n      {field}: -1\n"),
            &format!("{p}.http.{field}"),
            &format!("{what} must be non-negative"),
        );
    }
    assert_error(
        &format!("{base}    tcp:\n      maxConnections: -5\n"),
        &format!("{p}.tcp.maxConnections"),
        "max connections must be non-negative",
    );
    assert_error(
        &format!(
            "{base}    http:\n      h2UpgradePolicy: UPGRADE\n      useClientProtocol: true\n"
        ),
        &format!("{p}.http.useClientProtocol"),
        "must not be true when H2UpgradePolicy is UPGRADE",
    );
    assert_error(
        &format!("{base}    tcp:\n      connectTimeout: 500us\n"),
        &format!("{p}.tcp.connectTimeout"),
        "must be a valid duration greater than 1ms",
    );
    assert_error(
        &format!("{base}    tcp:\n      idleTimeout: 1500us\n"),
        &format!("{p}.tcp.idleTimeout"),
        "only durations to ms precision are supported",
    );
    assert_error(
        &format!("{base}    http:\n      http2KeepAlive: {{interval: 0s}}\n"),
        &format!("{p}.http.http2KeepAlive.interval"),
        "greater than 1ms",
    );
    assert_clean(&format!(
        "{base}    tcp:\n      maxConnections: 0\n      idleTimeout: 0s\n    http:\n      h2UpgradePolicy: UPGRADE\n      maxRetries: 0\n"
    ));
}

#[test]
fn tls_rules() {
    let base = "host: a\ntrafficPolicy:\n  tls:\n";
    let p = "spec.trafficPolicy.tls";
    assert_error(
        &format!("{base}    mode: MUTUAL\n"),
        &format!("{p}.clientCertificate"),
        "client certificate required for mutual tls",
    );
    assert_error(
        &format!("{base}    mode: MUTUAL\n    clientCertificate: /c\n"),
        &format!("{p}.privateKey"),
        "private key required for mutual tls",
    );
    assert_error(
        &format!("{base}    mode: SIMPLE\n    credentialName: cred\n    caCertificates: /ca\n"),
        &format!("{p}.credentialName"),
        "cannot specify client certificates or CA certificate",
    );
    assert_error(
        &format!(
            "{base}    mode: SIMPLE\n    insecureSkipVerify: true\n    subjectAltNames: [a]\n"
        ),
        &format!("{p}.insecureSkipVerify"),
        "InsecureSkipVerify is set true",
    );
    assert_error(
        &format!("{base}    mode: SIMPLE\n    credentialName: configmap://other/ca\n"),
        &format!("{p}.credentialName"),
        "namespace must match",
    );
    assert_clean(&format!(
        "{base}    mode: MUTUAL\n    credentialName: client-cred\n"
    ));
    assert_clean(&format!(
        "{base}    mode: SIMPLE\n    insecureSkipVerify: true\n    sni: a.example\n"
    ));
}

#[test]
fn locality_rules() {
    let base = "host: a\ntrafficPolicy:\n  outlierDetection: {consecutive5xxErrors: 1}\n  loadBalancer:\n    localityLbSetting:\n";
    let p = "spec.trafficPolicy.loadBalancer.localityLbSetting";
    assert_error(
        &format!(
            "{base}      distribute:\n      - from: a/*\n        to: {{b/*: 100}}\n      failover:\n      - from: a\n        to: b\n"
        ),
        p,
        "can not simultaneously specify 'distribute' and 'failover'",
    );
    assert_error(
        &format!("{base}      distribute:\n      - from: a/*\n        to: {{b/*: 60, c/*: 30}}\n"),
        &format!("{p}.distribute[0].to"),
        "total locality weight 90 != 100",
    );
    assert_error(
        &format!("{base}      distribute:\n      - from: '*/a'\n        to: {{b: 100}}\n"),
        &format!("{p}.distribute"),
        "wildcard '*' number can not exceed 1 and must be in the end",
    );
    assert_error(
        &format!("{base}      failover:\n      - from: eu\n        to: eu\n"),
        &format!("{p}.failover[0]"),
        "must specify different regions",
    );
    assert_error(
        &format!(
            "{base}      failover:\n      - from: eu\n        to: us\n      failoverPriority: [topology.kubernetes.io/zone]\n"
        ),
        &format!("{p}.failoverPriority[0]"),
        "can not simultaneously set 'failover'",
    );
    assert_warning(
        "host: a\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n      failover:\n      - from: eu\n        to: us\n",
        p,
        "outlier detection policy must be provided for failover",
    );
    assert_clean(&format!(
        "{base}      distribute:\n      - from: eu/zone1/*\n        to: {{eu/zone1/*: 80, eu/zone2/*: 20}}\n"
    ));
}

#[test]
fn export_to_rules() {
    assert_error(
        "host: a\nexportTo: [a, a]\n",
        "spec.exportTo[1]",
        "duplicate entries in exportTo for entry a",
    );
    assert_error(
        "host: a\nexportTo: [default, '.']\n",
        "spec.exportTo[1]",
        "duplicate entries in exportTo: . and current namespace default",
    );
    assert_error(
        "host: a\nexportTo: ['*', b]\n",
        "spec.exportTo",
        "cannot have both public (*) and non-public",
    );
    assert_error(
        "host: a\nexportTo: ['~']\n",
        "spec.exportTo[0]",
        "exportTo ~ (none) is not allowed",
    );
    assert_error(
        "host: a\nexportTo: [Not_A_Namespace]\n",
        "spec.exportTo[0]",
        "valid DNS 1123 label",
    );
    assert_error(
        "host: a\nworkloadSelector:\n  matchLabels: {app: a}\nexportTo: [other]\n",
        "spec.exportTo",
        "cannot have exportTo beyond current namespace",
    );
    assert_clean("host: a\nworkloadSelector:\n  matchLabels: {app: a}\nexportTo: ['.']\n");
    assert_clean("host: a\nexportTo: ['*']\n");
}

#[test]
fn workload_selector_rules() {
    assert_error(
        "host: a\nworkloadSelector:\n  matchLabels: {app: 'web*'}\n",
        "spec.workloadSelector.matchLabels.app",
        "wildcard not allowed in label value match",
    );
    assert_error(
        "host: a\nworkloadSelector:\n  matchLabels: {'ap*': web}\n",
        "spec.workloadSelector.matchLabels.ap*",
        "wildcard not allowed in label key match",
    );
    assert_warning(
        "host: a\nworkloadSelector:\n  matchLabels: {}\n",
        "spec.workloadSelector.matchLabels",
        "without labels",
    );
}

#[test]
fn retry_budget_percent_is_a_percentage() {
    assert_error(
        "host: a\ntrafficPolicy:\n  retryBudget: {percent: 120}\n",
        "spec.trafficPolicy.retryBudget.percent",
        "between 0 and 100",
    );
    assert_clean("host: a\ntrafficPolicy:\n  retryBudget: {percent: 100}\n");
}

#[test]
fn istio_corpus_destination_rules() {
    corpus::check::<DestinationRule>(
        "DestinationRule",
        corpus::networking_api,
        corpus::Spec::Optional,
        DestinationRule::validate,
        &[],
    );
}

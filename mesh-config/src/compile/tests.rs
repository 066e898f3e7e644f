//! Compilation, checked on the compiled model: YAML in, `CompiledMesh` out.

use std::time::Duration;

use mesh_core::{
    CompiledMesh, Labels,
    matching::RequestView,
    model::{
        AbortStatus, AuthorizationAction, ClientTlsMode, EndpointAddress, HashKey, LoadBalancer,
        MtlsMode, OutboundTrafficPolicy, Protocol, RedirectPort, Resolution, RouteAction,
    },
};

use crate::Loader;

fn compile(yaml: &str) -> CompiledMesh {
    let report = Loader::new().check_str("test.yaml", yaml);
    assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
    report.mesh
}

const REGISTRY: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports:
  - {name: http, port: 9080, targetPort: 8080}
  - {name: grpc-api, port: 9090}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: shop}
spec: {address: 10.0.0.1, labels: {app: reviews, version: v1}, serviceAccount: reviews}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2, namespace: shop}
spec: {address: 10.0.0.2, labels: {app: reviews, version: v2}, ports: {http: 18080}, weight: 3}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: elsewhere, namespace: other}
spec: {address: 10.9.9.9, labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: shop}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: TLS}]
  resolution: DNS
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vms, namespace: shop}
spec:
  hosts: [vm.shop.internal]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  location: MESH_INTERNAL
  endpoints:
  - {address: 192.168.1.10, ports: {http: 8080}, labels: {version: a}}
  - {address: "unix:///var/run/app.sock", labels: {version: b}}
"#;

#[test]
fn kubernetes_services_take_the_workload_entries_their_selector_matches() {
    let mesh = compile(REGISTRY);
    let svc = mesh
        .service("reviews.shop.svc.cluster.local")
        .expect("service");
    assert_eq!(svc.source, "Service shop/reviews");
    assert_eq!(svc.ports.len(), 2);
    assert_eq!(svc.ports[0].protocol, Protocol::Http);
    assert_eq!(svc.ports[0].target_port, Some(8080));
    assert_eq!(
        svc.ports[1].protocol,
        Protocol::Grpc,
        "from the port name's prefix"
    );
    // Only the entries of the Service's namespace.
    let addrs: Vec<String> = svc
        .endpoints
        .iter()
        .map(|e| e.address.to_string())
        .collect();
    assert_eq!(addrs, ["10.0.0.1", "10.0.0.2"]);
    let v1 = &svc.endpoints[0];
    assert_eq!(
        v1.identity.as_ref().unwrap().to_string(),
        "spiffe://cluster.local/ns/shop/sa/reviews"
    );
    assert_eq!(v1.port_for(&svc.ports[0]), 8080, "targetPort");
    let v2 = &svc.endpoints[1];
    assert_eq!(
        v2.port_for(&svc.ports[0]),
        18080,
        "the endpoint's own port for `http`"
    );
    assert_eq!(v2.weight, 3);
    assert!(v2.identity.is_none());
}

#[test]
fn service_entries_resolve_static_and_dns_endpoints() {
    let mesh = compile(REGISTRY);
    let ext = mesh.service("api.example.com").unwrap();
    assert_eq!(ext.resolution, Resolution::Dns);
    assert_eq!(
        ext.endpoints.len(),
        1,
        "DNS without endpoints resolves the host itself"
    );
    assert_eq!(
        ext.endpoints[0].address,
        EndpointAddress::Dns("api.example.com".into())
    );
    let vms = mesh.service("vm.shop.internal").unwrap();
    assert_eq!(vms.endpoints[0].address.to_string(), "192.168.1.10");
    assert_eq!(vms.endpoints[0].port_for(&vms.ports[0]), 8080);
    assert_eq!(
        vms.endpoints[1].address,
        EndpointAddress::Unix("/var/run/app.sock".into())
    );
}

const ROUTING: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool: {http: {http1MaxPendingRequests: 5}}
    portLevelSettings:
    - port: {number: 9090}
      loadBalancer: {simple: RANDOM}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer:
        consistentHash: {httpCookie: {name: user, ttl: 60s}}
      tls: {mode: ISTIO_MUTUAL}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  gateways: [mesh, edge]
  http:
  - name: canary
    match:
    - headers: {end-user: {exact: jason}}
    - uri: {prefix: /beta}
      gateways: [edge]
    route:
    - destination: {host: reviews, subset: v2}
    retries: {attempts: 0}
  - name: split
    route:
    - destination: {host: reviews, subset: v1}
      weight: 90
      headers: {request: {set: {x-canary: "no"}}}
    - destination: {host: reviews, subset: v2, port: {number: 9080}}
      weight: 10
    timeout: 2s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,503,retriable-4xx"}
    fault:
      delay: {fixedDelay: 1s, percentage: {value: 0.5}}
      abort: {grpcStatus: UNAVAILABLE}
    mirror: {host: reviews, subset: v1}
    mirrorPercentage: {value: 25}
    headers:
      response: {add: {x-served-by: mesh}, remove: [server]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: legacy, namespace: shop}
spec:
  hosts: [legacy.example.com]
  http:
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, authority: new.example.com, derivePort: FROM_REQUEST_PORT, redirectCode: 308}
  - match: [{uri: {prefix: /health}}]
    directResponse: {status: 200, body: {string: ok}}
  - rewrite: {uriRegexRewrite: {match: "^/v1/(.*)$", rewrite: "/v2/\\1"}}
    route: [{destination: {host: legacy.example.com}}]
"#;

fn request(path: &str, headers: &[(&str, &str)]) -> http::Request<()> {
    let mut b = http::Request::get(format!("http://reviews{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

#[test]
fn virtual_services_compile_per_gateway_with_match_level_gateways() {
    let mesh = compile(ROUTING);
    let mesh_vh = mesh
        .virtual_host("mesh", "reviews.shop.svc.cluster.local")
        .expect("mesh routes");
    let edge_vh = mesh
        .virtual_host("shop/edge", "reviews.shop.svc.cluster.local")
        .expect("gateway routes");
    // The `uri: /beta` match names only the edge gateway.
    assert_eq!(mesh_vh.http[0].matches.len(), 1);
    assert_eq!(edge_vh.http[0].matches.len(), 2);
    let beta = request("/beta/x", &[]);
    assert_eq!(
        mesh_vh
            .route(&RequestView::from_request(&beta))
            .unwrap()
            .name,
        "split"
    );
    assert_eq!(
        edge_vh
            .route(&RequestView::from_request(&beta))
            .unwrap()
            .name,
        "canary"
    );
    let jason = request("/", &[("end-user", "jason")]);
    assert_eq!(
        mesh_vh
            .route(&RequestView::from_request(&jason))
            .unwrap()
            .name,
        "canary"
    );
}

#[test]
fn route_policies_are_typed_with_istios_defaults() {
    let mesh = compile(ROUTING);
    let vh = mesh
        .virtual_host("mesh", "reviews.shop.svc.cluster.local")
        .unwrap();
    let (canary, split) = (&vh.http[0], &vh.http[1]);
    assert_eq!(canary.retries.attempts, 0, "attempts: 0 turns retries off");
    assert_eq!(canary.timeout, None);

    assert_eq!(split.timeout, Some(Duration::from_secs(2)));
    let r = &split.retries;
    assert_eq!(
        (r.attempts, r.per_try_timeout),
        (3, Some(Duration::from_millis(500)))
    );
    assert_eq!(
        r.retry_on,
        ["5xx", "retriable-4xx", "retriable-status-codes"]
    );
    assert_eq!(r.retriable_status_codes, [503]);
    let fault = split.fault.as_ref().unwrap();
    let delay = fault.delay.as_ref().unwrap();
    assert_eq!(
        (delay.delay, delay.percentage.value()),
        (Duration::from_secs(1), 0.5)
    );
    let abort = fault.abort.as_ref().unwrap();
    assert_eq!(abort.status, AbortStatus::Grpc(14));
    assert_eq!(
        abort.percentage.value(),
        100.0,
        "absent percentage means every request"
    );
    assert_eq!(split.mirrors.len(), 1);
    assert_eq!(split.mirrors[0].percentage.value(), 25.0);
    assert_eq!(split.mirrors[0].destination.subset.as_deref(), Some("v1"));
    assert_eq!(split.headers.response.add[0].0, "x-served-by");
    assert_eq!(split.headers.response.remove[0], "server");
    let RouteAction::Forward(w) = &split.action else {
        panic!("forward")
    };
    assert_eq!(w.destinations[0].headers.request.set[0].1, "no");
    assert_eq!(w.destinations[1].destination.port, Some(9080));
    let picks_v2 = (0..1000u64)
        .filter(|i| w.choice.pick_point(i % w.choice.total_weight()) == 1)
        .count();
    assert_eq!(picks_v2, 100, "a 90/10 split is 90/10");
}

#[test]
fn routes_without_retries_get_istios_default_policy() {
    let mesh = compile(ROUTING);
    let vh = mesh.virtual_host("mesh", "legacy.example.com").unwrap();
    let r = &vh.http[2].retries;
    assert!(r.is_default);
    assert_eq!(r.attempts, 2);
    assert_eq!(
        r.retry_on,
        [
            "connect-failure",
            "refused-stream",
            "unavailable",
            "cancelled",
            "retriable-status-codes"
        ]
    );
    assert!(
        r.retriable_status_codes.is_empty(),
        "a plain 503 answer is not retried"
    );
}

#[test]
fn redirects_direct_responses_and_rewrites() {
    let mesh = compile(ROUTING);
    let vh = mesh.virtual_host("mesh", "legacy.example.com").unwrap();
    let RouteAction::Redirect(r) = &vh.http[0].action else {
        panic!("redirect")
    };
    assert_eq!(r.status.as_u16(), 308);
    assert_eq!(r.port, Some(RedirectPort::FromRequestPort));
    assert_eq!(r.authority.as_deref(), Some("new.example.com"));
    let RouteAction::DirectResponse(d) = &vh.http[1].action else {
        panic!("direct response")
    };
    assert_eq!(
        (d.status.as_u16(), d.body.as_deref()),
        (200, Some(&b"ok"[..]))
    );
    let (re, with) = vh.http[2]
        .rewrite
        .as_ref()
        .unwrap()
        .uri_regex
        .as_ref()
        .unwrap();
    assert_eq!(re.replace("/v1/items", with.as_str()), "/v2/items");
}

#[test]
fn destination_policies_merge_subset_and_port_levels() {
    let mesh = compile(ROUTING);
    let dp = mesh
        .destination_policy("reviews.shop.svc.cluster.local", "shop")
        .unwrap();
    assert_eq!(
        dp.policy_for(None, None).load_balancer,
        Some(LoadBalancer::RoundRobin)
    );
    assert_eq!(
        dp.policy_for(None, Some(9090)).load_balancer,
        Some(LoadBalancer::Random)
    );
    let v2 = dp.policy_for(Some("v2"), Some(9090));
    let Some(LoadBalancer::ConsistentHash(ch)) = &v2.load_balancer else {
        panic!("{v2:?}")
    };
    assert_eq!(
        ch.key,
        HashKey::Cookie {
            name: "user".into(),
            path: None,
            ttl: Some(Duration::from_secs(60))
        }
    );
    assert_eq!(v2.tls.as_ref().unwrap().mode, ClientTlsMode::IstioMutual);
    assert_eq!(
        v2.connection_pool
            .as_ref()
            .unwrap()
            .http1_max_pending_requests,
        Some(5),
        "parts the subset does not set come from the top level"
    );
    assert!(dp.policy_for(Some("v1"), None).tls.is_none());
    let v2 = dp.subset("v2").unwrap();
    let labels: Labels = [("version".to_owned(), "v2".to_owned())].into();
    assert!(v2.selector.matches(&labels));
}

#[test]
fn destination_rules_are_looked_up_in_the_clients_namespace_first() {
    let mesh = compile(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: root, namespace: istio-system}
spec: {host: "*.local", trafficPolicy: {loadBalancer: {simple: RANDOM}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: mine, namespace: client}
spec: {host: ratings.shop.svc.cluster.local, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}
"#,
    );
    let host = "ratings.shop.svc.cluster.local";
    assert_eq!(
        mesh.destination_policy(host, "client")
            .unwrap()
            .destination_rule,
        "client/mine"
    );
    assert_eq!(
        mesh.destination_policy(host, "other")
            .unwrap()
            .destination_rule,
        "istio-system/root"
    );
}

#[test]
fn security_policies_are_scoped() {
    let mesh = compile(
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh-wide, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ratings, namespace: shop}
spec:
  selector: {matchLabels: {app: ratings}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls: {"9090": {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-admin
  namespace: shop
  annotations: {istio.io/dry-run: "true"}
spec:
  action: DENY
  rules:
  - from: [{source: {notNamespaces: [shop], ipBlocks: [10.0.0.0/8, 192.168.0.1]}}]
    to: [{operation: {paths: [/admin*], ports: ["8080"]}}]
    when: [{key: "request.headers[x-debug]", values: ["1"]}]
"#,
    );
    let labels: Labels = [("app".to_owned(), "ratings".to_owned())].into();
    let root = "istio-system";
    let applying: Vec<_> = mesh
        .peer_authentications
        .iter()
        .filter(|p| p.scope.applies_to(root, "shop", &labels))
        .collect();
    assert_eq!(applying.len(), 2);
    let most_specific = applying
        .iter()
        .max_by_key(|p| p.scope.precedence(root))
        .unwrap();
    assert_eq!(most_specific.mode, MtlsMode::Permissive);
    assert_eq!(most_specific.port_modes, [(9090, MtlsMode::Disable)]);
    let ap = &mesh.authorization_policies[0];
    assert_eq!(ap.action, AuthorizationAction::Deny);
    assert!(ap.dry_run);
    let rule = &ap.rules[0];
    assert_eq!(rule.from[0].ip_blocks.len(), 2);
    assert_eq!(rule.to[0].ports, [8080]);
    assert_eq!(rule.when[0].key, "request.headers[x-debug]");
}

#[test]
fn sidecars_and_local_rate_limits() {
    let mesh = compile(
        r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress:
  - hosts: ["./*", "istio-system/*"]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ratelimit, namespace: shop}
spec:
  workloadSelector: {labels: {app: ratings}}
  configPatches:
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_INBOUND}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: http_local_rate_limiter
            token_bucket: {max_tokens: 10, tokens_per_fill: 10, fill_interval: 60s}
            filter_enabled: {runtime_key: e, default_value: {numerator: 100, denominator: HUNDRED}}
            filter_enforced: {runtime_key: f, default_value: {numerator: 50, denominator: HUNDRED}}
"#,
    );
    let labels = Labels::new();
    let sc = mesh
        .sidecar_for("shop", &labels)
        .expect("namespace-wide sidecar");
    assert_eq!(sc.outbound_policy, OutboundTrafficPolicy::RegistryOnly);
    let own = mesh_core::Host::new("ratings.shop.svc.cluster.local");
    assert!(sc.allows(&own, "shop", Some(9080)));
    assert!(!sc.allows(&own, "billing", Some(9080)));
    let rl = &mesh.rate_limits[0];
    assert_eq!(rl.context, "SIDECAR_INBOUND");
    let bucket = rl.bucket.expect("the default bucket");
    assert_eq!((bucket.max_tokens, bucket.tokens_per_fill), (10, 10));
    assert_eq!(bucket.fill_interval, Duration::from_secs(60));
    assert_eq!(
        (rl.filter_enabled.value(), rl.filter_enforced.value()),
        (100.0, 50.0)
    );
}

#[test]
fn inert_parts_are_left_out() {
    let report = Loader::new().check_str(
        "t.yaml",
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: all}
spec:
  hosts: ["*"]
  http:
  - route: [{destination: {host: a}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: empty}
spec: {selector: {istio: ingress}}
"#,
    );
    assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
    let warnings: Vec<String> = report
        .diagnostics
        .warnings()
        .map(|d| d.message.clone())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("mesh accepts it: the `*` host is ignored for sidecars")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("mesh accepts it: the Gateway serves nothing")),
        "{warnings:?}"
    );
    let vh = &report.mesh.virtual_hosts[0];
    assert!(vh.hosts.is_empty(), "`*` does not capture sidecar traffic");
    assert!(report.mesh.gateways.is_empty());
}

#[test]
fn gateways_merge_virtual_services_for_one_host_sidecars_do_not() {
    let vs = |name: &str, prefix: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: [shop.example.com]\n  gateways: [edge, mesh]\n  http:\n  - match: [{{uri: {{prefix: {prefix}}}}}]\n    route: [{{destination: {{host: {name}}}}}]\n---\n"
        )
    };
    let report = Loader::new().check_str(
        "t.yaml",
        &format!("{}{}", vs("cart", "/cart"), vs("search", "/search")),
    );
    let mesh = report.mesh;
    let edge = mesh
        .virtual_host("default/edge", "shop.example.com")
        .unwrap();
    assert_eq!(edge.http.len(), 2, "merged on the gateway");
    assert_eq!(edge.virtual_service, "default/cart,default/search");
    let sidecar = mesh.virtual_host("mesh", "shop.example.com").unwrap();
    assert_eq!(
        sidecar.virtual_service, "default/cart",
        "the first one wins for sidecars"
    );
    let ist0109: Vec<_> = report
        .diagnostics
        .warnings()
        .filter(|d| d.message.starts_with("IST0109"))
        .collect();
    assert_eq!(ist0109.len(), 1, "{ist0109:?}");
}

#[test]
fn destination_rules_for_one_host_merge_as_istiod_merges_them() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews-a, namespace: shop}\nspec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews-b, namespace: shop}\nspec:\n  host: reviews.shop.svc.cluster.local\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n  subsets:\n  - {name: v1, labels: {version: other}}\n  - {name: v2, labels: {version: v2}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews-c, namespace: shop}\nspec:\n  host: reviews\n  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}\n";
    let report = crate::Loader::new().check_str("dr.yaml", yaml);
    let warnings: Vec<String> = report.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        warnings.iter().any(|w| w.contains("shop/reviews-b")
            && w.contains("subset `v1`")
            && w.contains("already defined by DestinationRule shop/reviews-a")),
        "{warnings:#?}"
    );
    let mesh = report.mesh;
    let policies: Vec<_> = mesh
        .destination_policies
        .iter()
        .filter(|p| p.host.as_str() == "reviews.shop.svc.cluster.local")
        .collect();
    assert_eq!(policies.len(), 1, "one merged policy");
    let dp = policies[0];
    // The first rule's v1 stays; v2 comes from the second rule.
    let names: Vec<&str> = dp.subsets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["v1", "v2"]);
    let v1_labels: Labels = [("version".to_owned(), "v1".to_owned())].into();
    assert!(dp.subset("v1").unwrap().selector.matches(&v1_labels));
    // The first rule has no top-level policy: the second's fills it, the third's does not.
    assert_eq!(
        dp.policy_for(None, None).load_balancer,
        Some(LoadBalancer::Random)
    );
    assert_eq!(
        dp.destination_rule,
        "shop/reviews-a+shop/reviews-b+shop/reviews-c"
    );
}

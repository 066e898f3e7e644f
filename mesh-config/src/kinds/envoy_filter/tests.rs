use std::time::Duration;

use super::*;
use crate::kinds::corpus;
use crate::kinds::{Issue, Severity, from_yaml, validate_yaml};

fn issues(yaml: &str) -> Vec<Issue> {
    validate_yaml::<EnvoyFilter>(yaml, EnvoyFilter::validate)
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

/// A local rate limit inserted as an HTTP filter, configured through a TypedStruct.
const FILTER_TYPED_STRUCT: &str = r#"
workloadSelector:
  labels:
    app: checkout
priority: -5
configPatches:
- applyTo: HTTP_FILTER
  match:
    context: SIDECAR_INBOUND
    proxy:
      proxyVersion: '^1\.2[0-9].*'
      metadata: {REGION: eu}
    listener:
      portNumber: 8080
      filterChain:
        filter:
          name: envoy.filters.network.http_connection_manager
          subFilter:
            name: envoy.filters.http.router
  patch:
    operation: INSERT_BEFORE
    filterClass: STATS
    value:
      name: envoy.filters.http.local_ratelimit
      typed_config:
        "@type": type.googleapis.com/udpa.type.v1.TypedStruct
        type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
        value:
          stat_prefix: checkout_limiter
          token_bucket:
            max_tokens: 50
            tokens_per_fill: 10
            fill_interval: 2s
          filter_enabled:
            runtime_key: checkout_rl_enabled
            default_value: {numerator: 100, denominator: HUNDRED}
          filter_enforced:
            runtime_key: checkout_rl_enforced
            default_value: {numerator: 5000, denominator: TEN_THOUSAND}
          response_headers_to_add:
          - append_action: OVERWRITE_IF_EXISTS_OR_ADD
            header: {key: x-checkout-limited, value: "yes"}
"#;

/// A per-route local rate limit with descriptors, `@type` directly LocalRateLimit.
const PER_ROUTE_DIRECT: &str = r#"
configPatches:
- applyTo: HTTP_ROUTE
  match:
    context: SIDECAR_INBOUND
    routeConfiguration:
      portNumber: 9080
      vhost:
        name: "inbound|http|9080"
        domainName: catalog
        route:
          name: default
          action: ROUTE
  patch:
    operation: MERGE
    value:
      route:
        rate_limits:
        - actions:
          - request_headers: {header_name: x-tenant, descriptor_key: tenant}
      typed_per_filter_config:
        envoy.filters.http.local_ratelimit:
          "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          statPrefix: catalog_route
          tokenBucket: {maxTokens: 200, fillInterval: 60s}
          filter_enabled:
            default_value: {numerator: 1}
          response_headers_to_add:
          - append: false
            header: {key: x-rate-limited, value: "1"}
          enable_x_ratelimit_headers: DRAFT_VERSION_03
          descriptors:
          - entries:
            - {key: tenant, value: free}
            token_bucket: {max_tokens: 5, tokens_per_fill: 5, fill_interval: 60s}
"#;

#[test]
fn parses_every_major_field() {
    let ef: EnvoyFilter = from_yaml(FILTER_TYPED_STRUCT).unwrap();
    assert_eq!(ef.priority, -5);
    assert_eq!(
        ef.workload_selector.as_ref().unwrap().labels["app"],
        "checkout"
    );
    let cp = &ef.config_patches[0];
    assert_eq!(cp.apply_to, ApplyTo::HttpFilter);
    let m = cp.r#match.as_ref().unwrap();
    assert_eq!(m.context, PatchContext::SidecarInbound);
    assert_eq!(m.proxy.as_ref().unwrap().metadata["REGION"], "eu");
    let listener = m.listener.as_ref().unwrap();
    assert_eq!(listener.port_number, Some(8080));
    let filter = listener
        .filter_chain
        .as_ref()
        .unwrap()
        .filter
        .as_ref()
        .unwrap();
    assert_eq!(
        filter.sub_filter.as_ref().unwrap().name,
        "envoy.filters.http.router"
    );
    let patch = cp.patch.as_ref().unwrap();
    assert_eq!(patch.operation, Operation::InsertBefore);
    assert_eq!(patch.filter_class, FilterClass::Stats);
    assert!(patch.value.as_ref().unwrap().is_object());

    let ef: EnvoyFilter = from_yaml(PER_ROUTE_DIRECT).unwrap();
    let rc = ef.config_patches[0]
        .r#match
        .as_ref()
        .unwrap()
        .route_configuration
        .as_ref()
        .unwrap();
    let vhost = rc.vhost.as_ref().unwrap();
    assert_eq!(vhost.domain_name, "catalog");
    assert_eq!(vhost.route.as_ref().unwrap().action, RouteAction::Route);

    let ef: EnvoyFilter = from_yaml(
        "targetRefs:\n- kind: Gateway\n  group: gateway.networking.k8s.io\n  name: edge\nconfigPatches:\n- applyTo: CLUSTER\n  match:\n    cluster: {service: a.b.svc.cluster.local, portNumber: 80, subset: v1}\n  patch: {operation: REMOVE}\n- applyTo: HTTP_FILTER\n  match:\n    context: WAYPOINT\n    waypoint:\n      portNumber: 15008\n      route: {name: default}\n      filter: {name: envoy.filters.network.http_connection_manager}\n  patch: {operation: REMOVE}\n",
    )
    .unwrap();
    assert_eq!(ef.target_refs[0].name.as_deref(), Some("edge"));
    let cluster = ef.config_patches[0]
        .r#match
        .as_ref()
        .unwrap()
        .cluster
        .as_ref()
        .unwrap();
    assert_eq!(cluster.subset, "v1");
    let wp = ef.config_patches[1]
        .r#match
        .as_ref()
        .unwrap()
        .waypoint
        .as_ref()
        .unwrap();
    assert_eq!(wp.port_number, Some(15008));
    assert_clean(
        "targetRefs:\n- kind: Gateway\n  group: gateway.networking.k8s.io\n  name: edge\nconfigPatches:\n- applyTo: HTTP_FILTER\n  match:\n    context: WAYPOINT\n    waypoint: {portNumber: 15008}\n  patch: {operation: REMOVE}\n",
    );
}

#[test]
fn a_typo_is_an_unknown_field() {
    let e = from_yaml::<EnvoyFilter>(
        "configPatches:\n- applyTo: CLUSTER\n  pacth: {operation: REMOVE}\n",
    )
    .unwrap_err();
    assert!(e.contains("pacth"), "{e}");
    // Unknown keys in a match parse (they are collected) and validation rejects them.
    let ef =
        from_yaml::<EnvoyFilter>("configPatches:\n- applyTo: CLUSTER\n  match:\n    contxt: ANY\n")
            .unwrap();
    let mut out = crate::kinds::Issues::default();
    let metadata = crate::kinds::ObjectMeta::default();
    ef.validate(
        &crate::kinds::Meta {
            name: "t",
            namespace: "default",
            metadata: &metadata,
        },
        &mut out,
    );
    assert!(
        out.items
            .iter()
            .any(|i| i.message.contains("unknown field `contxt`")),
        "{out:?}"
    );
}

#[test]
fn a_bad_enum_is_rejected() {
    for yaml in [
        "configPatches:\n- applyTo: HTTP_FILTERS\n",
        "configPatches:\n- applyTo: CLUSTER\n  patch: {operation: DELETE}\n",
        "configPatches:\n- applyTo: CLUSTER\n  match: {context: SIDECAR}\n",
    ] {
        assert!(from_yaml::<EnvoyFilter>(yaml).is_err(), "{yaml}");
    }
}

#[test]
fn every_envoy_filter_gets_istiods_warning() {
    assert_warning(
        FILTER_TYPED_STRUCT,
        "spec",
        "EnvoyFilter exposes internal implementation details",
    );
    assert_clean(FILTER_TYPED_STRUCT);
    assert_clean(PER_ROUTE_DIRECT);
}

#[test]
fn waypoint_match_rules() {
    assert_error(
        "configPatches:\n- applyTo: HTTP_FILTER\n  match:\n    context: SIDECAR_INBOUND\n    waypoint: {}\n  patch: {operation: REMOVE}\n",
        "spec.configPatches[0].match",
        "only support waypointMatch when context is WAYPOINT",
    );
    assert_error(
        "configPatches:\n- applyTo: HTTP_FILTER\n  match:\n    context: WAYPOINT\n    listener: {}\n  patch: {operation: REMOVE}\n",
        "spec.configPatches[0].match",
        "only support waypointMatch when context is WAYPOINT",
    );
    assert_error(
        "configPatches:\n- applyTo: HTTP_FILTER\n  match:\n    context: WAYPOINT\n    waypoint: {portNumber: 0}\n  patch: {operation: REMOVE}\n",
        "spec.configPatches[0].match.waypoint.portNumber",
        "port must be between 1-65535",
    );
    assert_error(
        "configPatches:\n- applyTo: CLUSTER\n  match:\n    cluster: {}\n    listener: {}\n  patch: {operation: REMOVE}\n",
        "spec.configPatches[0].match",
        "one and only one",
    );
}

#[test]
fn patch_rules() {
    assert_error(
        "configPatches:\n- patch: {operation: REMOVE}\n",
        "spec.configPatches[0].applyTo",
        "Envoy filter: missing applyTo",
    );
    assert_error(
        "configPatches:\n- applyTo: CLUSTER\n",
        "spec.configPatches[0]",
        "Envoy filter: missing patch",
    );
    assert_error(
        "configPatches:\n- applyTo: CLUSTER\n  patch: {value: {name: a}}\n",
        "spec.configPatches[0].patch.operation",
        "missing patch operation",
    );
    assert_error(
        "configPatches:\n- applyTo: CLUSTER\n  patch: {operation: ADD}\n",
        "spec.configPatches[0].patch",
        "missing patch value for non-remove operation",
    );
    assert_error(
        "configPatches:\n- applyTo: CLUSTER\n  patch: {operation: ADD, value: just-a-string}\n",
        "spec.configPatches[0].patch.value",
        "must be of type object",
    );
    assert_error(
        "configPatches:\n- applyTo: CLUSTER\n  match:\n    proxy: {proxyVersion: '1.2('}\n  patch: {operation: REMOVE}\n",
        "spec.configPatches[0].match.proxy.proxyVersion",
        "invalid regex for proxy version",
    );
    assert_clean(
        "configPatches:\n- applyTo: CLUSTER\n  patch: {operation: ADD, value: {name: extra}}\n",
    );
}

#[test]
fn apply_to_and_match_must_line_up() {
    assert_error(
        "configPatches:\n- applyTo: HTTP_FILTER\n  match:\n    cluster: {}\n  patch: {operation: REMOVE}\n",
        "spec.configPatches[0].match",
        "applyTo for listener class objects cannot have non listener match",
    );
    assert_error(
        "configPatches:\n- applyTo: HTTP_ROUTE\n  match:\n    listener: {}\n  patch: {operation: REMOVE}\n",
        "spec.configPatches[0].match",
        "applyTo for http route class objects cannot have non route configuration match",
    );
    assert_error(
        "configPatches:\n- applyTo: CLUSTER\n  match:\n    routeConfiguration: {}\n  patch: {operation: REMOVE}\n",
        "spec.configPatches[0].match",
        "applyTo for cluster class objects cannot have non cluster match",
    );
    let listener = |apply_to: &str, filter: &str| {
        format!(
            "configPatches:\n- applyTo: {apply_to}\n  match:\n    listener:\n      filterChain:\n        filter: {filter}\n  patch: {{operation: REMOVE}}\n"
        )
    };
    let fpath = "spec.configPatches[0].match.listener.filterChain.filter";
    assert_error(
        &listener("NETWORK_FILTER", "{subFilter: {name: a}}"),
        &format!("{fpath}.name"),
        "filter match has no name to match on",
    );
    assert_error(
        &listener(
            "NETWORK_FILTER",
            "{name: envoy.filters.network.http_connection_manager, subFilter: {name: a}}",
        ),
        &format!("{fpath}.subFilter"),
        "subfilter match can be used with applyTo HTTP_FILTER only",
    );
    assert_error(
        &listener(
            "HTTP_FILTER",
            "{name: envoy.filters.network.tcp_proxy, subFilter: {name: a}}",
        ),
        &format!("{fpath}.name"),
        "subfilter match requires filter match with envoy.filters.network.http_connection_manager",
    );
    assert_error(
        &listener(
            "HTTP_FILTER",
            "{name: envoy.filters.network.http_connection_manager, subFilter: {}}",
        ),
        &format!("{fpath}.subFilter.name"),
        "subfilter match has no name to match on",
    );
    assert_warning(
        &listener(
            "LISTENER",
            "{name: envoy.filters.network.http_connection_manager}",
        ),
        fpath,
        "filter match has no effect when used with LISTENER",
    );
    assert_warning(
        &listener("HTTP_FILTER", "{name: envoy.http_connection_manager}"),
        &format!("{fpath}.name"),
        "deprecated filter name",
    );
    assert_clean(&listener(
        "HTTP_FILTER",
        "{name: envoy.filters.network.http_connection_manager, subFilter: {name: envoy.filters.http.router}}",
    ));
}

#[test]
fn selector_and_target_refs() {
    assert_error(
        "workloadSelector: {labels: {app: a}}\ntargetRefs:\n- {kind: Service, name: a}\n",
        "spec",
        "only one of targetRefs or workloadSelector can be set",
    );
    assert_error(
        "targetRefs:\n- {kind: Service, name: a, namespace: other}\n",
        "spec.targetRefs[0].namespace",
        "cross namespace referencing is not currently supported",
    );
    assert_error(
        "targetRefs:\n- {name: a}\n",
        "spec.targetRefs[0].kind",
        "Required value",
    );
    assert_error(
        "workloadSelector: {labels: {app: 'a*'}}\n",
        "spec.workloadSelector.labels.app",
        "wildcard is not supported in selector",
    );
    assert_warning(
        "workloadSelector: {}\n",
        "spec.workloadSelector.labels",
        "Envoy filter: workload selector specified without labels",
    );
    assert_clean("targetRefs:\n- {kind: Service, name: a}\n");
}

#[test]
fn extracts_a_local_rate_limit_filter_from_a_typed_struct() {
    let ef: EnvoyFilter = from_yaml(FILTER_TYPED_STRUCT).unwrap();
    let rl = ef.config_patches[0].local_rate_limit().unwrap().unwrap();
    assert_eq!(rl.placement, RateLimitPlacement::HttpFilter);
    let c = &rl.config;
    assert_eq!(c.stat_prefix, "checkout_limiter");
    assert_eq!(
        c.token_bucket,
        Some(TokenBucket {
            max_tokens: 50,
            tokens_per_fill: 10,
            fill_interval: Duration::from_secs(2),
        })
    );
    let enabled = c.filter_enabled.as_ref().unwrap();
    assert_eq!(enabled.runtime_key, "checkout_rl_enabled");
    assert_eq!(enabled.fraction(), 1.0);
    let enforced = c.filter_enforced.as_ref().unwrap();
    assert_eq!(enforced.denominator, FractionDenominator::TenThousand);
    assert_eq!(enforced.fraction(), 0.5);
    assert_eq!(
        c.response_headers_to_add,
        [HeaderValueOption {
            key: "x-checkout-limited".into(),
            value: "yes".into(),
            append: None,
            append_action: Some("OVERWRITE_IF_EXISTS_OR_ADD".into()),
        }]
    );
    assert!(c.descriptors.is_empty() && c.other_fields.is_empty());
}

#[test]
fn extracts_a_per_route_local_rate_limit_with_descriptors() {
    let ef: EnvoyFilter = from_yaml(PER_ROUTE_DIRECT).unwrap();
    let rl = ef.config_patches[0].local_rate_limit().unwrap().unwrap();
    assert_eq!(rl.placement, RateLimitPlacement::PerRoute);
    assert_eq!(rl.route_rate_limits.len(), 1);
    let c = &rl.config;
    assert_eq!(c.stat_prefix, "catalog_route");
    assert_eq!(
        c.token_bucket,
        Some(TokenBucket {
            max_tokens: 200,
            tokens_per_fill: 1,
            fill_interval: Duration::from_secs(60),
        })
    );
    let enabled = c.filter_enabled.as_ref().unwrap();
    assert_eq!((enabled.numerator, enabled.fraction()), (1, 0.01));
    assert!(c.filter_enforced.is_none());
    assert_eq!(c.response_headers_to_add[0].append, Some(false));
    assert_eq!(
        c.descriptors,
        [LocalRateLimitDescriptor {
            entries: vec![DescriptorEntry {
                key: "tenant".into(),
                value: "free".into(),
            }],
            token_bucket: TokenBucket {
                max_tokens: 5,
                tokens_per_fill: 5,
                fill_interval: Duration::from_secs(60),
            },
        }]
    );
    assert_eq!(c.other_fields, ["enable_x_ratelimit_headers"]);
    assert_eq!(c.unknown_fields().count(), 0);
}

#[test]
fn other_patches_are_not_rate_limits() {
    let ef: EnvoyFilter = from_yaml(
        "configPatches:\n- applyTo: HTTP_FILTER\n  patch:\n    operation: INSERT_FIRST\n    value:\n      name: envoy.filters.http.lua\n      typed_config:\n        '@type': type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua\n- applyTo: CLUSTER\n  patch: {operation: REMOVE}\n",
    )
    .unwrap();
    assert!(
        ef.config_patches
            .iter()
            .all(|cp| cp.local_rate_limit().is_none())
    );
}

#[test]
fn malformed_local_rate_limits_are_errors() {
    let filter = |config: &str| {
        format!(
            "configPatches:\n- applyTo: HTTP_FILTER\n  patch:\n    operation: INSERT_BEFORE\n    value:\n      name: envoy.filters.http.local_ratelimit\n      typed_config:\n        '@type': type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit\n{config}"
        )
    };
    let path = "spec.configPatches[0].patch.value";
    assert_error(
        &filter("        token_bucket: {max_tokens: 0, fill_interval: 1s}\n"),
        path,
        "token_bucket.max_tokens must be greater than 0",
    );
    assert_error(
        &filter("        token_bucket: {max_tokens: 10}\n"),
        path,
        "token_bucket.fill_interval is required",
    );
    assert_error(
        &filter("        token_bucket: {max_tokens: 10, fill_interval: soon}\n"),
        path,
        "fill_interval",
    );
    assert_error(
        &filter("        filter_enabled: {default_value: {numerator: 1, denominator: THOUSAND}}\n"),
        path,
        "denominator",
    );
    assert_error(
        &filter("        descriptors:\n        - entries: [{key: a, value: b}]\n"),
        path,
        "descriptors[0].token_bucket is required",
    );
    assert_warning(
        &filter("        stat_prefix: a\n        token_bukket: {}\n"),
        path,
        "unknown field \"token_bukket\"",
    );
    assert_error(
        "configPatches:\n- applyTo: HTTP_FILTER\n  patch:\n    operation: INSERT_BEFORE\n    value:\n      name: envoy.filters.http.local_ratelimit\n      typed_config:\n        '@type': type.googleapis.com/udpa.type.v1.TypedStruct\n        type_url: type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit\n",
        path,
        "type_url",
    );
    assert_clean(&filter("        stat_prefix: only_the_name\n"));
}

/// EnvoyFilters outside `*-invalid.yaml` files that mesh rejects, as Istio would.
const ENVOY_FILTER_EXCEPTIONS: &[corpus::Exception] = &[
    (
        "input-extra-resources/envoyfilter.yaml",
        0,
        "operator test input, never admitted: three configPatches without `patch`; istiod's \
         webhook rejects them (Envoy filter: missing patch)",
    ),
    (
        "analyzers/testdata/envoy-filter-add-operation.yaml",
        3,
        "analyzer test data: `match.app` is not a field of EnvoyConfigObjectMatch",
    ),
    (
        "analyzers/testdata/envoy-filter-add-operation.yaml",
        4,
        "analyzer test data: `match.app` is not a field of EnvoyConfigObjectMatch",
    ),
    (
        "analyzers/testdata/envoy-filter-remove-operation.yaml",
        1,
        "analyzer test data: applyTo ROUTE_CONFIGURATION with a listener match; istiod's webhook \
         rejects it",
    ),
    (
        "analyzers/testdata/envoy-filter-remove-operation.yaml",
        2,
        "analyzer test data: applyTo ROUTE_CONFIGURATION with a listener match; istiod's webhook \
         rejects it",
    ),
    (
        "analyzers/testdata/envoy-filter-remove-operation.yaml",
        3,
        "analyzer test data: `patch:` is null; istiod's webhook rejects it (missing patch)",
    ),
    (
        "analyzers/testdata/relative-envoy-filter-operation.yaml",
        2,
        "analyzer test data: applyTo CLUSTER with a listener match; istiod's webhook rejects it",
    ),
];

#[test]
fn istio_corpus_envoy_filters() {
    corpus::check::<EnvoyFilter>(
        "EnvoyFilter",
        corpus::networking_api,
        corpus::Spec::Optional,
        EnvoyFilter::validate,
        ENVOY_FILTER_EXCEPTIONS,
    );
}

#[test]
fn istio_samples_local_rate_limits_are_extracted() {
    let path = "/work/shared/istio/corpus/samples/ratelimit/local-rate-limit-service.yaml";
    let Ok(text) = std::fs::read_to_string(path) else {
        println!("note: {path} is absent; skipping");
        return;
    };
    let spec = text.split("\nspec:\n").nth(1).expect("a spec");
    let spec: String = spec
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let ef: EnvoyFilter = from_yaml(&spec).unwrap();
    let found: Vec<_> = ef
        .config_patches
        .iter()
        .filter_map(|cp| cp.local_rate_limit())
        .map(Result::unwrap)
        .collect();
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].placement, RateLimitPlacement::HttpFilter);
    assert_eq!(found[1].placement, RateLimitPlacement::PerRoute);
    assert_eq!(found[1].config.descriptors[0].token_bucket.max_tokens, 10);
}

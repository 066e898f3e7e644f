//! Tests of the VirtualService model and validation, and the assertions the Gateway and Sidecar
//! tests share.

use serde::de::DeserializeOwned;

use super::*;
use crate::kinds::{
    Issue, Issues, Meta, ObjectMeta, Severity,
    corpus::{self, Exception},
    from_yaml, validate_yaml,
};

// === helpers (shared with gateway and sidecar tests) ===

/// Issues of a spec parsed from `yaml` and validated.
pub(crate) fn issues<T: DeserializeOwned>(
    yaml: &str,
    validate: impl FnOnce(&T, &Meta<'_>, &mut Issues),
) -> Vec<Issue> {
    validate_yaml::<T>(yaml, validate)
}

/// Asserts that `issues` has an error at `path` whose message contains `msg`.
#[track_caller]
pub(crate) fn assert_error(issues: &[Issue], path: &str, msg: &str) {
    assert!(
        issues
            .iter()
            .any(|i| i.severity == Severity::Error && i.path == path && i.message.contains(msg)),
        "expected an error at {path} containing {msg:?}, got {issues:#?}"
    );
}

/// Asserts that `issues` has a warning at `path` whose message contains `msg`.
#[track_caller]
pub(crate) fn assert_warning(issues: &[Issue], path: &str, msg: &str) {
    assert!(
        issues
            .iter()
            .any(|i| i.severity == Severity::Warning && i.path == path && i.message.contains(msg)),
        "expected a warning at {path} containing {msg:?}, got {issues:#?}"
    );
}

/// Asserts that `issues` has no error.
#[track_caller]
pub(crate) fn assert_no_errors(issues: &[Issue]) {
    let errors: Vec<_> = issues
        .iter()
        .filter(|i| i.severity == Severity::Error)
        .collect();
    assert!(errors.is_empty(), "expected no errors, got {errors:#?}");
}

// === VirtualService ===

fn vs(yaml: &str) -> Vec<Issue> {
    issues::<VirtualService>(yaml, |s, m, o| s.validate(m, o))
}

const FULL: &str = r#"
hosts: [reviews.prod.svc.cluster.local, "*.example.com"]
gateways: [istio-system/ingress, mesh]
exportTo: [".", istio-system]
http:
- name: reviews-v2
  match:
  - name: jason
    uri: {prefix: /api}
    scheme: {exact: https}
    method: {exact: GET}
    authority: {regex: "rev.*"}
    headers:
      end-user: {exact: jason}
      x-present: {}
    queryParams:
      debug: {exact: "1"}
    withoutHeaders:
      x-canary: {regex: "*"}
    port: 9080
    sourceLabels: {app: productpage}
    gateways: [mesh]
    ignoreUriCase: true
    sourceNamespace: default
    statPrefix: jason
  route:
  - destination: {host: reviews, subset: v2, port: {number: 9080}}
    weight: 75
    headers:
      request: {set: {x-route: v2}, add: {x-extra: "1"}, remove: [x-debug]}
      response: {set: {x-served-by: "%HOSTNAME%"}}
  - destination: {host: reviews, subset: v3}
    weight: 25
  rewrite: {uri: /v2/api, authority: reviews.internal}
  timeout: 10s
  retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,connect-failure,503", retryRemoteLocalities: true, retryIgnorePreviousHosts: false, backoff: 25ms}
  fault:
    delay: {fixedDelay: 5s, percentage: {value: 0.1}}
    abort: {httpStatus: 503, percentage: {value: 10}}
  mirrors:
  - destination: {host: reviews, subset: shadow}
    percentage: {value: 5.5}
  corsPolicy:
    allowOrigins: [{exact: "https://example.com"}, {regex: "https://.*\\.example\\.com"}]
    allowMethods: [GET, POST]
    allowHeaders: [x-custom, "*"]
    exposeHeaders: [x-served-by]
    maxAge: 24h
    allowCredentials: true
    unmatchedPreflights: IGNORE
  headers:
    request: {set: {x-vs: reviews}}
- name: legacy
  match: [{uri: {exact: /legacy}}]
  redirect: {uri: /new, authority: new.example.com, port: 8443, scheme: https, redirectCode: 308}
- name: gone
  match: [{uri: {exact: /gone}}]
  directResponse: {status: 410, body: {string: "gone"}}
- name: mirrored
  match: [{uri: {prefix: /mirror}}]
  route: [{destination: {host: reviews}}]
  mirror: {host: reviews, subset: shadow}
  mirrorPercentage: {value: 50}
- name: regex-rewrite
  match: [{uri: {regex: "^/v1/(.*)$"}}]
  route: [{destination: {host: reviews}}]
  rewrite: {uriRegexRewrite: {match: "^/v1/(.*)$", rewrite: "/v2/\\1"}}
- name: derived
  match: [{uri: {prefix: /derive}}]
  redirect: {derivePort: FROM_REQUEST_PORT, prefixRewrite: /new}
tls:
- match:
  - sniHosts: [api.example.com]
    port: 443
    destinationSubnets: [10.0.0.0/8]
    sourceLabels: {app: web}
    gateways: [istio-system/ingress]
    sourceNamespace: web
  route:
  - destination: {host: api.default.svc.cluster.local, port: {number: 443}}
tcp:
- match:
  - port: 27017
    destinationSubnets: [192.168.0.1]
    sourceSubnet: 10.1.0.0/16
  route:
  - destination: {host: mongo.backup.svc.cluster.local, port: {number: 5555}}
    weight: 100
"#;

#[test]
fn virtual_service_parses_every_major_field() {
    let spec: VirtualService = from_yaml(FULL).unwrap();
    assert_eq!(spec.hosts.len(), 2);
    assert_eq!(spec.export_to, [".", "istio-system"]);
    let r = &spec.http[0];
    assert_eq!(r.name.as_deref(), Some("reviews-v2"));
    let m = &r.r#match[0];
    assert_eq!(m.uri, Some(StringMatch::Prefix("/api".into())));
    assert_eq!(m.headers["x-present"], StringMatch::Empty);
    assert_eq!(m.port, Some(9080));
    assert_eq!(r.route[0].weight, Some(75));
    assert_eq!(
        r.route[0].destination.port.and_then(|p| p.number),
        Some(9080)
    );
    assert_eq!(r.timeout.map(|d| d.get().as_secs()), Some(10));
    let retries = r.retries.as_ref().unwrap();
    assert_eq!(retries.attempts, Some(3));
    assert_eq!(retries.backoff.map(|d| d.get().as_millis()), Some(25));
    let fault = r.fault.as_ref().unwrap();
    assert_eq!(fault.abort.as_ref().unwrap().http_status, Some(503));
    assert_eq!(
        fault.delay.as_ref().unwrap().percentage,
        Some(Percent { value: 0.1 })
    );
    let cors = r.cors_policy.as_ref().unwrap();
    assert_eq!(cors.unmatched_preflights, Some(UnmatchedPreflights::Ignore));
    assert_eq!(
        spec.http[1].redirect.as_ref().unwrap().redirect_code,
        Some(308)
    );
    assert_eq!(spec.http[2].direct_response.as_ref().unwrap().status, 410);
    assert_eq!(
        spec.http[5].redirect.as_ref().unwrap().derive_port,
        Some(RedirectPortSelection::FromRequestPort)
    );
    assert_eq!(spec.tls[0].r#match[0].sni_hosts, ["api.example.com"]);
    assert_eq!(
        spec.tcp[0].r#match[0].source_subnet.as_deref(),
        Some("10.1.0.0/16")
    );
    assert_no_errors(&vs(FULL));
}

#[test]
fn virtual_service_deprecated_fields_parse() {
    let spec: VirtualService = from_yaml(
        "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  mirror: {host: b}\n  mirror_percent: 5\n  mirrorPercent: 6\n  fault: {delay: {fixedDelay: 1s, percent: 10}}\n  corsPolicy: {allowOrigin: ['*']}\n",
    )
    .unwrap();
    assert_eq!(spec.http[0].mirror_percent_snake, Some(5));
    assert_eq!(spec.http[0].mirror_percent, Some(6));
}

#[test]
fn virtual_service_typo_is_an_unknown_field() {
    let err = from_yaml::<VirtualService>("hosts: [a]\nhttp:\n- rout: []\n").unwrap_err();
    assert!(err.contains("rout"), "{err}");
    let err = from_yaml::<VirtualService>("host: [a]\n").unwrap_err();
    assert!(err.contains("host"), "{err}");
}

#[test]
fn virtual_service_bad_enum_and_bad_duration_are_rejected() {
    let err =
        from_yaml::<VirtualService>("hosts: [a]\nhttp:\n- redirect: {derivePort: FROM_NOWHERE}\n")
            .unwrap_err();
    assert!(err.contains("FROM_NOWHERE"), "{err}");
    let err = from_yaml::<VirtualService>(
        "hosts: [a]\nhttp:\n- corsPolicy: {unmatchedPreflights: forward}\n  route: [{destination: {host: a}}]\n",
    )
    .unwrap_err();
    assert!(err.contains("forward"), "{err}");
    assert!(from_yaml::<VirtualService>("hosts: [a]\nhttp:\n- timeout: 10 seconds\n").is_err());
}

#[test]
fn virtual_service_negative_int32_fields_parse() {
    let spec: VirtualService = from_yaml(
        "hosts: [a]\nhttp:\n- route: [{destination: {host: a}, weight: -1}]\n  retries: {attempts: -2}\n",
    )
    .unwrap();
    assert_eq!(spec.http[0].route[0].weight, Some(-1));
    assert_eq!(spec.http[0].retries.as_ref().unwrap().attempts, Some(-2));
}

/// One validation rule: a failing spec (error at `path` containing `msg`) and a passing one.
struct Case {
    bad: &'static str,
    path: &'static str,
    msg: &'static str,
    good: &'static str,
}

#[track_caller]
fn run(cases: &[Case]) {
    for c in cases {
        assert_error(&vs(c.bad), c.path, c.msg);
        assert_no_errors(&vs(c.good));
    }
}

const R: &str = "route: [{destination: {host: a}}]";

#[test]
fn virtual_service_hosts() {
    run(&[
        Case {
            bad: "hosts: ['*']\nhttp: [{route: [{destination: {host: a}}]}]",
            path: "spec.hosts[0]",
            msg: "wildcard host * is not allowed for virtual services bound to the mesh gateway",
            good: "hosts: ['*']\ngateways: [ns/gw]\nhttp: [{route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: [bad_host]\nhttp: [{route: [{destination: {host: a}}]}]",
            path: "spec.hosts[0]",
            msg: "domain name \"bad_host\" invalid",
            good: "hosts: [10.0.0.1, good-host.example.com]\nhttp: [{route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: ['*.foo.com', '*.com']\nhttp: [{route: [{destination: {host: a}}]}]",
            path: "spec.hosts[1]",
            msg: "duplicate hosts in virtual service: *.foo.com & *.com",
            good: "hosts: ['*.foo.com', bar.com]\nhttp: [{route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: [a]",
            path: "spec",
            msg: "http, tcp or tls must be provided in virtual service",
            good: "hosts: [a]\ntcp: [{route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: [a]\nexportTo: ['*', ns]\nhttp: [{route: [{destination: {host: a}}]}]",
            path: "spec.exportTo",
            msg: "cannot have both public (*) and non-public exportTo values",
            good: "hosts: [a]\nexportTo: ['*']\nhttp: [{route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: [a]\nexportTo: [default, '.']\nhttp: [{route: [{destination: {host: a}}]}]",
            path: "spec.exportTo[1]",
            msg: "duplicate entries in exportTo: . and current namespace default",
            good: "hosts: [a]\nexportTo: ['.', other]\nhttp: [{route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: [a]\nexportTo: ['~']\nhttp: [{route: [{destination: {host: a}}]}]",
            path: "spec.exportTo[0]",
            msg: "exportTo ~ (none) is not allowed",
            good: "hosts: [a]\nexportTo: [ns-1]\nhttp: [{route: [{destination: {host: a}}]}]",
        },
    ]);
}

#[test]
fn virtual_service_gateways_and_delegates() {
    run(&[
        Case {
            bad: "hosts: [a]\ngateways: [ns/bad_name]\nhttp: [{route: [{destination: {host: a}}]}]",
            path: "spec.gateways[0]",
            msg: "invalid value for gateway name: \"bad_name\"",
            good: "hosts: [a]\ngateways: [ns/good-name, mesh]\nhttp: [{route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: [a]\ngateways: [/gw]\nhttp: [{route: [{destination: {host: a}}]}]",
            path: "spec.gateways[0]",
            msg: "config namespace and gateway name cannot be empty",
            good: "hosts: [a]\ngateways: [ns/gw]\nhttp: [{route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "gateways: [ns/gw]\nhttp: [{route: [{destination: {host: a}}]}]",
            path: "spec.gateways",
            msg: "delegate virtual service must have no gateways specified",
            good: "http: [{route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "tcp: [{route: [{destination: {host: a}}]}]",
            path: "spec.tcp",
            msg: "delegate virtual service must have no tcp route specified",
            good: "http: [{route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "http: [{delegate: {name: b}, route: [{destination: {host: a}}]}]",
            path: "spec.http[0].delegate",
            msg: "delegate HTTP route cannot contain delegate",
            good: "http: [{route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{name: root, delegate: {name: b}, route: [{destination: {host: a}}]}]",
            path: "spec.http[0].route",
            msg: "root HTTP route root must not specify route",
            good: "hosts: [a]\nhttp: [{delegate: {name: b, namespace: ns}}]",
        },
    ]);
    // A legacy `name.namespace` gateway name only warns.
    let issues = vs("hosts: [a]\ngateways: [gw.ns]\nhttp: [{route: [{destination: {host: a}}]}]");
    assert_warning(
        &issues,
        "spec.gateways[0]",
        "prefer the <namespace>/<name> format: \"ns/gw\"",
    );
    assert_no_errors(&issues);
}

#[test]
fn virtual_service_route_conflicts() {
    run(&[
        Case {
            bad: "hosts: [a]\nhttp: [{redirect: {uri: /b}, route: [{destination: {host: a}}]}]",
            path: "spec.http[0].redirect",
            msg: "HTTP route cannot contain both route and redirect",
            good: "hosts: [a]\nhttp: [{redirect: {uri: /b}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{redirect: {uri: /b}, rewrite: {uri: /c}}]",
            path: "spec.http[0].redirect",
            msg: "HTTP route rule cannot contain both rewrite and redirect",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], rewrite: {uri: /c}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{redirect: {uri: /b}, directResponse: {status: 200}}]",
            path: "spec.http[0].redirect",
            msg: "HTTP route rule cannot contain both direct_response and redirect",
            good: "hosts: [a]\nhttp: [{directResponse: {status: 200}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{directResponse: {status: 200}, route: [{destination: {host: a}}]}]",
            path: "spec.http[0].directResponse",
            msg: "HTTP route cannot contain both route and direct_response",
            good: "hosts: [a]\nhttp: [{directResponse: {status: 503, body: {bytes: aGVsbG8=}}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{redirect: {uri: /b}, fault: {abort: {httpStatus: 500}}}]",
            path: "spec.http[0].redirect",
            msg: "HTTP route cannot contain both fault and redirect",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], fault: {abort: {httpStatus: 500}}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{name: x}]",
            path: "spec.http[0]",
            msg: "HTTP route, redirect or direct_response is required",
            good: "hosts: [a]\nhttp: [{name: x, route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], mirror: {host: b}, mirrors: [{destination: {host: c}}]}]",
            path: "spec.http[0].mirrors",
            msg: "HTTP route cannot contain both mirror and mirrors",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], mirrors: [{destination: {host: c}}, {destination: {host: d}}]}]",
        },
    ]);
}

#[test]
fn virtual_service_destinations_and_weights() {
    run(&[
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}, weight: -1}]}]",
            path: "spec.http[0].route[0].weight",
            msg: "weight -1 < 0",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}, weight: 0}]}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}, weight: 0}, {destination: {host: b}}]}]",
            path: "spec.http[0].route",
            msg: "total destination weight = 0",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}, weight: 1}, {destination: {host: b}}]}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: '*'}}]}]",
            path: "spec.http[0].route[0].destination.host",
            msg: "invalid destination host *",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: '*.example.com'}}]}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a, subset: v1.0}}]}]",
            path: "spec.http[0].route[0].destination.subset",
            msg: "subset name is invalid: v1.0",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a, subset: v1-0}}]}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a, port: {number: 70000}}}]}]",
            path: "spec.http[0].route[0].destination.port.number",
            msg: "port number 70000 must be in the range 1..65535",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a, port: {number: 8080}}}]}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {subset: v1}}]}]",
            path: "spec.http[0].route[0].destination.host",
            msg: "empty domain name not allowed",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a, subset: v1}}]}]",
        },
        Case {
            bad: "hosts: [a]\ntcp: [{route: [{destination: {host: a}, weight: -5}]}]",
            path: "spec.tcp[0].route[0].weight",
            msg: "weight -5 < 0",
            good: "hosts: [a]\ntcp: [{route: [{destination: {host: a}, weight: 5}]}]",
        },
    ]);
}

#[test]
fn virtual_service_timeouts_retries_and_percentages() {
    run(&[
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], timeout: 0s}]",
            path: "spec.http[0].timeout",
            msg: "must be a valid duration greater than 1ms",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], timeout: 1ms}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], timeout: 1500us}]",
            path: "spec.http[0].timeout",
            msg: "only durations to ms precision are supported",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], timeout: 1.5s}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], retries: {attempts: -1}}]",
            path: "spec.http[0].retries.attempts",
            msg: "attempts cannot be negative",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], retries: {attempts: 0}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], retries: {perTryTimeout: 1s}}]",
            path: "spec.http[0].retries",
            msg: "http retry policy configured when attempts are set to 0 (disabled)",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], retries: {attempts: 2, perTryTimeout: 1s}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], retries: {attempts: 2, perTryTimeout: 0.5ms}}]",
            path: "spec.http[0].retries.perTryTimeout",
            msg: "must be a valid duration greater than 1ms",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], retries: {attempts: 2, perTryTimeout: 1ms}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], retries: {attempts: 2, retryOn: '5xx,teapot,599'}}]",
            path: "spec.http[0].retries.retryOn",
            msg: "\"teapot\" is not a valid retryOn policy",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], retries: {attempts: 2, retryOn: 'gateway-error,reset,429,unavailable'}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], mirror: {host: b}, mirrorPercentage: {value: 101}}]",
            path: "spec.http[0].mirrorPercentage.value",
            msg: "mirror_percentage must have a max value of 100",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], mirror: {host: b}, mirrorPercentage: {value: 100}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], mirrors: [{destination: {host: b}, percentage: {value: -1}}]}]",
            path: "spec.http[0].mirrors[0].percentage.value",
            msg: "mirror percentage must have a min value of 0",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], mirrors: [{destination: {host: b}, percentage: {value: 0}}]}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], mirror: {host: b}, mirrorPercent: 101}]",
            path: "spec.http[0].mirrorPercent",
            msg: "mirror_percent must have a max value of 100 (it has 101)",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], mirror: {host: b}, mirrorPercent: 100}]",
        },
    ]);
    let issues = vs(
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], mirror: {host: b}, mirror_percent: 5}]",
    );
    assert_warning(
        &issues,
        "spec.http[0].mirror_percent",
        "using deprecated setting \"mirrorPercent\"",
    );
}

#[test]
fn virtual_service_faults() {
    run(&[
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], fault: {}}]",
            path: "spec.http[0].fault",
            msg: "HTTP fault injection must have an abort and/or a delay",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], fault: {delay: {fixedDelay: 1s}}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], fault: {abort: {httpStatus: 700}}}]",
            path: "spec.http[0].fault.abort.httpStatus",
            msg: "HTTP status 700 is not in range 200-599",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], fault: {abort: {httpStatus: 599}}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], fault: {abort: {grpcStatus: NOPE}}}]",
            path: "spec.http[0].fault.abort.grpcStatus",
            msg: "gRPC status \"NOPE\" is not supported",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], fault: {abort: {grpcStatus: UNAVAILABLE}}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], fault: {abort: {httpStatus: 500, grpcStatus: UNAVAILABLE}}}]",
            path: "spec.http[0].fault.abort",
            msg: "only one of httpStatus, grpcStatus or http2Error can be set",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], fault: {abort: {httpStatus: 500}}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], fault: {abort: {http2Error: REFUSED}}}]",
            path: "spec.http[0].fault.abort.http2Error",
            msg: "HTTP/2 abort fault injection not supported yet",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], fault: {abort: {httpStatus: 503}}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], fault: {delay: {fixedDelay: 1s, percentage: {value: 150}}}}]",
            path: "spec.http[0].fault.delay.percentage.value",
            msg: "percentage 150 is neither 0.0, nor in range [0.0001, 100.0]",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], fault: {delay: {fixedDelay: 1s, percentage: {value: 0.0001}}}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], fault: {delay: {exponentialDelay: 1s}}}]",
            path: "spec.http[0].fault.delay.exponentialDelay",
            msg: "exponentialDelay not supported yet",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], fault: {delay: {fixedDelay: 1s}}}]",
        },
    ]);
    let issues = vs(
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], fault: {abort: {percentage: {value: 1}}}}]",
    );
    assert_warning(
        &issues,
        "spec.http[0].fault.abort",
        "abort configured, but error type not set",
    );
}

#[test]
fn virtual_service_redirects_rewrites_and_direct_responses() {
    run(&[
        Case {
            bad: "hosts: [a]\nhttp: [{redirect: {redirectCode: 301}}]",
            path: "spec.http[0].redirect",
            msg: "redirect must specify URI, authority, scheme, or port",
            good: "hosts: [a]\nhttp: [{redirect: {scheme: https, redirectCode: 301}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{redirect: {uri: /b, redirectCode: 200}}]",
            path: "spec.http[0].redirect.redirectCode",
            msg: "200 is not a valid redirect code, must be 3xx",
            good: "hosts: [a]\nhttp: [{redirect: {uri: /b, redirectCode: 302}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{redirect: {scheme: ftp}}]",
            path: "spec.http[0].redirect.scheme",
            msg: "invalid redirect scheme, must be \"http\" or \"https\"",
            good: "hosts: [a]\nhttp: [{redirect: {scheme: http}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{redirect: {port: 8080, derivePort: FROM_PROTOCOL_DEFAULT}}]",
            path: "spec.http[0].redirect",
            msg: "only one of port or derivePort can be set",
            good: "hosts: [a]\nhttp: [{redirect: {derivePort: FROM_PROTOCOL_DEFAULT}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{redirect: {port: 70000}}]",
            path: "spec.http[0].redirect.port",
            msg: "port number 70000 must be in the range 1..65535",
            good: "hosts: [a]\nhttp: [{redirect: {port: 8443}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], rewrite: {}}]",
            path: "spec.http[0].rewrite",
            msg: "rewrite must specify at least one of URI, UriRegexRewrite, or authority",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], rewrite: {authority: b}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], rewrite: {uri: /x, uriRegexRewrite: {match: a, rewrite: b}}}]",
            path: "spec.http[0].rewrite",
            msg: "rewrite may only contain one of URI or UriRegexRewrite",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], rewrite: {uriRegexRewrite: {match: a, rewrite: b}}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], rewrite: {uriRegexRewrite: {match: '(a'}}}]",
            path: "spec.http[0].rewrite.uriRegexRewrite",
            msg: "UriRegexRewrite requires both Rewrite and Match fields to be specified",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], rewrite: {uriRegexRewrite: {match: '(a)', rewrite: '\\1'}}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], rewrite: {uriRegexRewrite: {match: '(a', rewrite: b}}}]",
            path: "spec.http[0].rewrite.uriRegexRewrite.match",
            msg: "Istio uses RE2 style regex-based match",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], rewrite: {uriRegexRewrite: {match: '^/(a)$', rewrite: b}}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], rewrite: {authority: b}, headers: {request: {set: {':authority': c}}}}]",
            path: "spec.http[0].headers.request.set.:authority",
            msg: "authority header cannot be set multiple times: have \"b\", attempting to set \"c\"",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], headers: {request: {set: {':authority': c}}}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{directResponse: {status: 100}}]",
            path: "spec.http[0].directResponse.status",
            msg: "HTTP status 100 is not in range 200-599",
            good: "hosts: [a]\nhttp: [{directResponse: {status: 204}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{directResponse: {status: 200, body: {string: a, bytes: YQ==}}}]",
            path: "spec.http[0].directResponse.body",
            msg: "only one of string or bytes can be set",
            good: "hosts: [a]\nhttp: [{directResponse: {status: 200, body: {bytes: YQ==}}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{directResponse: {status: 200, body: {bytes: 'not base64!'}}}]",
            path: "spec.http[0].directResponse.body.bytes",
            msg: "must be base64 encoded",
            good: "hosts: [a]\nhttp: [{directResponse: {status: 200, body: {string: 'not base64!'}}}]",
        },
    ]);
    let big = format!(
        "hosts: [a]\nhttp: [{{directResponse: {{status: 200, body: {{string: {}}}}}}}]",
        "x".repeat(200 * 1024)
    );
    assert_warning(
        &vs(&big),
        "spec.http[0].directResponse.body",
        "large direct_responses may impact control plane performance",
    );
    let huge = format!(
        "hosts: [a]\nhttp: [{{directResponse: {{status: 200, body: {{string: {}}}}}}}]",
        "x".repeat(1024 * 1024 + 1)
    );
    assert_error(
        &vs(&huge),
        "spec.http[0].directResponse.body",
        "must be less than 1MB",
    );
}

#[test]
fn virtual_service_matches() {
    run(&[
        Case {
            bad: "hosts: [a]\nhttp: [{match: [{uri: {regex: '(unclosed'}}], route: [{destination: {host: a}}]}]",
            path: "spec.http[0].match[0].uri",
            msg: "\"uri\": error parsing regexp",
            good: "hosts: [a]\nhttp: [{match: [{uri: {regex: '/(closed)'}}], route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{match: [{uri: {regex: ''}}], route: [{destination: {host: a}}]}]",
            path: "spec.http[0].match[0].uri",
            msg: "\"uri\": regex string match should not be empty",
            good: "hosts: [a]\nhttp: [{match: [{uri: {prefix: ''}}], route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{match: [{method: {prefix: ''}}], route: [{destination: {host: a}}]}]",
            path: "spec.http[0].match[0].method",
            msg: "\"method\": prefix string match should not be empty",
            good: "hosts: [a]\nhttp: [{match: [{method: {prefix: P}}], route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{match: [{headers: {'bad header': {exact: x}}}], route: [{destination: {host: a}}]}]",
            path: "spec.http[0].match[0].headers.bad header",
            msg: "header name bad header is not a valid header name",
            good: "hosts: [a]\nhttp: [{match: [{headers: {':authority': {exact: x}, x-ok: {exact: y}}}], route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{match: [{withoutHeaders: {x: {regex: '[' }}}], route: [{destination: {host: a}}]}]",
            path: "spec.http[0].match[0].withoutHeaders.x",
            msg: "\"withoutHeaders\": error parsing regexp",
            good: "hosts: [a]\nhttp: [{match: [{withoutHeaders: {x: {regex: '*'}}}], route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{match: [{headers: {'@request.auth.claims.group': {exact: x}}}], route: [{destination: {host: a}}]}]",
            path: "spec.http[0].match[0].headers.@request.auth.claims.group",
            msg: "JWT claim based routing (key: @request.auth.claims.group) is only supported for gateway",
            good: "hosts: [a]\ngateways: [ns/gw]\nhttp: [{match: [{headers: {'@request.auth.claims.group': {exact: x}}}], route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{match: [{port: 0, sourceNamespace: Bad_NS}], route: [{destination: {host: a}}]}]",
            path: "spec.http[0].match[0].sourceNamespace",
            msg: "sourceNamespace match Bad_NS is invalid",
            good: "hosts: [a]\nhttp: [{match: [{sourceNamespace: good}], route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{match: [{port: 65536}], route: [{destination: {host: a}}]}]",
            path: "spec.http[0].match[0].port",
            msg: "port number 65536 must be in the range 1..65535",
            good: "hosts: [a]\nhttp: [{match: [{port: 65535}], route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{match: [{sourceLabels: {'-bad': x}}], route: [{destination: {host: a}}]}]",
            path: "spec.http[0].match[0].sourceLabels",
            msg: "invalid tag key: \"-bad\"",
            good: "hosts: [a]\nhttp: [{match: [{sourceLabels: {app.kubernetes.io/name: x}}], route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{match: [{gateways: [ns/Bad_Gw]}], route: [{destination: {host: a}}]}]",
            path: "spec.http[0].match[0].gateways[0]",
            msg: "invalid value for gateway name",
            good: "hosts: [a]\nhttp: [{match: [{gateways: [ns/gw]}], route: [{destination: {host: a}}]}]",
        },
    ]);
}

#[test]
fn virtual_service_headers_and_cors() {
    run(&[
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], headers: {request: {set: {':path': /x}}}}]",
            path: "spec.http[0].headers.request.set.:path",
            msg: "invalid header \":path\": header cannot have \":\" prefix",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], headers: {request: {set: {x-path: /x}}}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], headers: {response: {set: {host: x}}}}]",
            path: "spec.http[0].headers.response.set.host",
            msg: "invalid header \"host\": cannot set Host header",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], headers: {request: {set: {host: x}}}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], headers: {request: {remove: [':authority']}}}]",
            path: "spec.http[0].headers.request.remove[0]",
            msg: "header cannot have \":\" prefix",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], headers: {request: {remove: [x-a]}}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}, headers: {request: {add: {x: '50%'}}}}]}]",
            path: "spec.http[0].route[0].headers.request.add.x",
            msg: "header value configuration: invalid header configuration. Un-escaped %",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}, headers: {request: {add: {x: '50%% %DOWNSTREAM_REMOTE_ADDRESS%'}}}}]}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], corsPolicy: {allowMethods: [get]}}]",
            path: "spec.http[0].corsPolicy.allowMethods[0]",
            msg: "\"get\" is not a supported HTTP method",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], corsPolicy: {allowMethods: [GET, '*']}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], corsPolicy: {allowOrigins: [{exact: ''}]}}]",
            path: "spec.http[0].corsPolicy.allowOrigins[0]",
            msg: "'' is not a valid match type for CORS allow origins",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], corsPolicy: {allowOrigins: [{prefix: 'https://'}]}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], corsPolicy: {allowHeaders: ['a b']}}]",
            path: "spec.http[0].corsPolicy.allowHeaders[0]",
            msg: "header name a b is not a valid header name",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], corsPolicy: {allowHeaders: ['*', x-a]}}]",
        },
        Case {
            bad: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], corsPolicy: {maxAge: 1500ms}}]",
            path: "spec.http[0].corsPolicy.maxAge",
            msg: "max_age duration is accurate only to seconds precision",
            good: "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], corsPolicy: {maxAge: 2s}}]",
        },
    ]);
}

#[test]
fn virtual_service_tls_and_tcp_routes() {
    run(&[
        Case {
            bad: "hosts: ['*.example.com']\ngateways: [ns/gw]\ntls: [{match: [{sniHosts: [other.org]}], route: [{destination: {host: a}}]}]",
            path: "spec.tls[0].match[0].sniHosts[0]",
            msg: "SNI host \"other.org\" is not a compatible subset of any of the virtual service hosts: [*.example.com]",
            good: "hosts: ['*.example.com']\ngateways: [ns/gw]\ntls: [{match: [{sniHosts: [a.example.com]}], route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: [a.com]\ntls: [{match: [{sniHosts: []}], route: [{destination: {host: a}}]}]",
            path: "spec.tls[0].match[0].sniHosts",
            msg: "TLS match must have at least one SNI host",
            good: "hosts: [a.com]\ntls: [{match: [{sniHosts: [a.com]}], route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: [a.com]\ntls: [{match: [], route: [{destination: {host: a}}]}]",
            path: "spec.tls[0].match",
            msg: "TLS route must have at least one match condition",
            good: "hosts: [a.com]\ntls: [{match: [{sniHosts: [a.com]}], route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: [a.com]\ntls: [{match: [{sniHosts: [a.com]}]}]",
            path: "spec.tls[0].route",
            msg: "TLS route is required",
            good: "hosts: [a.com]\ntls: [{match: [{sniHosts: [a.com]}], route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: [a]\ntcp: [{match: [{port: 80}]}]",
            path: "spec.tcp[0].route",
            msg: "TCP route is required",
            good: "hosts: [a]\ntcp: [{match: [{port: 80}], route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: [a]\ntcp: [{match: [{destinationSubnets: [10.0.0.0/33]}], route: [{destination: {host: a}}]}]",
            path: "spec.tcp[0].match[0].destinationSubnets[0]",
            msg: "10.0.0.0/33 is not a valid CIDR block",
            good: "hosts: [a]\ntcp: [{match: [{destinationSubnets: ['2001:db8::/32']}], route: [{destination: {host: a}}]}]",
        },
        Case {
            bad: "hosts: [a]\ntcp: [{match: [{destinationSubnets: [not-an-ip]}], route: [{destination: {host: a}}]}]",
            path: "spec.tcp[0].match[0].destinationSubnets[0]",
            msg: "not-an-ip is not a valid IP",
            good: "hosts: [a]\ntcp: [{match: [{destinationSubnets: [10.1.2.3]}], route: [{destination: {host: a}}]}]",
        },
    ]);
    // Auto-generated AUTO_PASSTHROUGH SNI names are accepted on gateways.
    assert_no_errors(&vs(
        "hosts: ['*.global']\ngateways: [ns/gw]\ntls: [{match: [{sniHosts: [outbound_.80_._.a.global]}], route: [{destination: {host: a}}]}]",
    ));
    let issues = vs(
        "hosts: ['*']\ngateways: [ns/gw]\ntls: [{match: [{sniHosts: [10.0.0.1]}], route: [{destination: {host: a}}]}]",
    );
    assert_warning(
        &issues,
        "spec.tls[0].match[0].sniHosts[0]",
        "goes against SNI spec",
    );
}

#[test]
fn virtual_service_unreachable_rules_warn() {
    let issues = vs(&format!(
        "hosts: [a]\nhttp:\n- {{name: first, match: [{{uri: {{exact: /x}}}}], {R}}}\n- {{name: dup, match: [{{name: m, uri: {{exact: /x}}}}], {R}}}\n- {{{R}}}\n- {{name: late, {R}}}\n"
    ));
    assert_warning(
        &issues,
        "spec.http[1].match[0]",
        "virtualService rule \"dup\" match \"m\" is not used (duplicate/overlapping match in rule \"first\")",
    );
    assert_warning(
        &issues,
        "spec.http[1]",
        "virtualService rule \"dup\" not used (all matches used by prior rules)",
    );
    assert_warning(
        &issues,
        "spec.http[3]",
        "virtualService rule \"late\" not used (only the last rule can have no matches)",
    );
    assert_no_errors(&issues);
}

#[test]
fn virtual_service_dry_run_annotation_is_rejected() {
    let spec: VirtualService =
        from_yaml("hosts: [a]\nhttp: [{route: [{destination: {host: a}}]}]").unwrap();
    let mut metadata = ObjectMeta::default();
    metadata
        .annotations
        .insert("istio.io/dry-run".into(), "true".into());
    let meta = Meta {
        name: "vs",
        namespace: "ns",
        metadata: &metadata,
    };
    let mut out = Issues::default();
    spec.validate(&meta, &mut out);
    assert_error(
        &out.items,
        "metadata.annotations.istio.io/dry-run",
        "ns/vs has unsupported annotation istio.io/dry-run",
    );
}

#[test]
fn virtual_service_gateway_semantics_relax_destinations() {
    let spec: VirtualService =
        from_yaml("hosts: [a]\ngateways: [ns/gw~x]\nhttp: [{route: [{destination: {}}]}]").unwrap();
    let mut metadata = ObjectMeta::default();
    metadata
        .annotations
        .insert("internal.istio.io/route-semantics".into(), "gateway".into());
    let meta = Meta {
        name: "vs",
        namespace: "ns",
        metadata: &metadata,
    };
    let mut out = Issues::default();
    spec.validate(&meta, &mut out);
    assert_no_errors(&out.items);
}

/// VirtualServices in Istio's test data that Istio itself rejects (analyzer fixtures that are
/// broken on purpose, objects istiod generates internally, fields removed from the API).
const VS_KNOWN_INVALID: &[Exception] = &[
    (
        "kube/gateway/testdata/mesh.yaml.golden",
        10,
        "generated by istiod from a Gateway API TLSRoute, never admitted by the webhook: its SNI host *.example.com is not within its host echo-1.default.svc.domain.suffix",
    ),
    (
        "analyzers/testdata/deprecation.yaml",
        1,
        "deprecation analyzer fixture: a rule with neither route, redirect nor directResponse",
    ),
    (
        "analyzers/testdata/virtualservice_destinationhosts.yaml",
        8,
        "analyzer fixture, commented 'test destination null': a route entry without destination",
    ),
    (
        "analyzers/testdata/virtualservice_gateways.yaml",
        2,
        "analyzer fixture without http, tcp or tls routes",
    ),
    (
        "analyzers/testdata/virtualservice_gateways.yaml",
        3,
        "analyzer fixture without http, tcp or tls routes",
    ),
    (
        "analyzers/testdata/virtualservice_gateways.yaml",
        4,
        "analyzer fixture: host * bound to mesh, and no routes",
    ),
    (
        "analyzers/testdata/virtualservice_gateways.yaml",
        5,
        "analyzer fixture without http, tcp or tls routes",
    ),
    (
        "analyzers/testdata/virtualservice_internal_gateway_ref.yaml",
        0,
        "analyzer fixture referencing an internal gateway name with '~', which the webhook rejects",
    ),
];

#[test]
fn virtual_service_istio_corpus_parses_and_validates() {
    if let Some(checked) = corpus::check::<VirtualService>(
        "VirtualService",
        corpus::networking_api,
        corpus::Spec::Optional,
        VirtualService::validate,
        VS_KNOWN_INVALID,
    ) {
        assert!(checked > 100, "only {checked} documents found");
    }
}

//! Scenarios after the ones Istio's authz builder is tested with (allow/deny/audit/custom,
//! principals, not-values, path templates, ports, hosts, methods, conditions, JWT claims,
//! dry-run), written as our own fixtures: policies in Rust, and for each the requests that must
//! be allowed and those that must be denied.

use std::net::IpAddr;

use proptest::prelude::*;

use super::{
    AuthzEngine, AuthzRequest, Claim, Claims, DryRunResult, PolicyMatch, Reason,
    value::{PathMatch, StrMatch},
};
use crate::{
    Labels, Selector,
    model::{
        AuthorizationAction::{self, Allow, Audit, Custom, Deny},
        AuthorizationPolicy, AuthorizationRule, Condition, Operation, PolicyScope, Source,
    },
};

const ROOT: &str = "istio-system";

// === fixtures ===

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn policy(
    ns_name: &str,
    selector: &[(&str, &str)],
    action: AuthorizationAction,
    rules: Vec<AuthorizationRule>,
) -> AuthorizationPolicy {
    let (ns, _) = ns_name.split_once('/').expect("namespace/name");
    AuthorizationPolicy {
        name: ns_name.into(),
        scope: PolicyScope {
            namespace: ns.into(),
            selector: (!selector.is_empty())
                .then(|| selector.iter().copied().collect::<Selector>()),
        },
        action,
        provider: (action == Custom).then(|| "ext-authz".into()),
        dry_run: false,
        rules,
    }
}

fn dry_run(mut p: AuthorizationPolicy) -> AuthorizationPolicy {
    p.dry_run = true;
    p
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn nets(v: &[&str]) -> Vec<ipnet::IpNet> {
    v.iter()
        .map(|s| super::value::parse_ip_block(s).expect("test CIDR"))
        .collect()
}

fn empty_rule() -> AuthorizationRule {
    AuthorizationRule::default()
}

fn from(sources: Vec<Source>) -> AuthorizationRule {
    AuthorizationRule {
        from: sources,
        ..AuthorizationRule::default()
    }
}

fn to(operations: Vec<Operation>) -> AuthorizationRule {
    AuthorizationRule {
        to: operations,
        ..AuthorizationRule::default()
    }
}

fn when(conditions: Vec<Condition>) -> AuthorizationRule {
    AuthorizationRule {
        when: conditions,
        ..AuthorizationRule::default()
    }
}

fn cond(key: &str, values: &[&str], not_values: &[&str]) -> Condition {
    Condition {
        key: key.into(),
        values: strings(values),
        not_values: strings(not_values),
    }
}

fn principals(p: &[&str]) -> Source {
    Source {
        principals: strings(p),
        ..Source::default()
    }
}

/// A request as a test writes it; [`Req::check`] turns it into an [`AuthzRequest`].
#[derive(Debug, Clone)]
struct Req {
    method: String,
    url: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    principal: Option<&'static str>,
    source_ip: Option<&'static str>,
    remote_ip: Option<&'static str>,
    jwt: Option<(&'static str, Claims)>,
    destination: Option<(&'static str, u16)>,
    sni: Option<&'static str>,
}

fn req(method: &'static str, url: &'static str) -> Req {
    Req {
        method: method.to_owned(),
        url,
        headers: vec![],
        principal: None,
        source_ip: None,
        remote_ip: None,
        jwt: None,
        destination: None,
        sni: None,
    }
}

fn get(url: &'static str) -> Req {
    req("GET", url)
}

fn claims(pairs: Vec<(&str, Claim)>) -> Claims {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn list(items: &[&str]) -> Claim {
    Claim::List(items.iter().map(|s| Claim::from(*s)).collect())
}

impl Req {
    fn principal(mut self, p: &'static str) -> Self {
        self.principal = Some(p);
        self
    }
    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }
    fn source_ip(mut self, ip: &'static str) -> Self {
        self.source_ip = Some(ip);
        self
    }
    fn remote_ip(mut self, ip: &'static str) -> Self {
        self.remote_ip = Some(ip);
        self
    }
    fn jwt(mut self, principal: &'static str, c: Claims) -> Self {
        self.jwt = Some((principal, c));
        self
    }
    fn port(mut self, port: u16) -> Self {
        self.destination = Some(("10.10.10.10", port));
        self
    }
    fn destination(mut self, ip: &'static str, port: u16) -> Self {
        self.destination = Some((ip, port));
        self
    }
    fn sni(mut self, sni: &'static str) -> Self {
        self.sni = Some(sni);
        self
    }

    /// Runs `f` on the [`AuthzRequest`] view of this request.
    fn with_view<T>(&self, f: impl FnOnce(&AuthzRequest<'_>) -> T) -> T {
        let mut b = http::Request::builder()
            .method(self.method.as_str())
            .uri(self.url);
        for (k, v) in &self.headers {
            b = b.header(*k, *v);
        }
        let http_req = b.body(()).expect("test request");
        let mut view = AuthzRequest::from_request(&http_req);
        if let Some(p) = self.principal {
            view = view.with_peer_principal(p);
        }
        let ip = |s: &str| s.parse::<IpAddr>().expect("test IP");
        if let Some(s) = self.source_ip {
            view = view.with_source_ip(ip(s));
        }
        if let Some(s) = self.remote_ip {
            view = view.with_remote_ip(ip(s));
        }
        if let Some((p, c)) = &self.jwt {
            view = view.with_request_auth(p, c);
        }
        if let Some((d, port)) = self.destination {
            view = view.with_destination(ip(d), port);
        }
        if let Some(s) = self.sni {
            view = view.with_sni(s);
        }
        f(&view)
    }
}

/// One scenario: policies, the workload they are evaluated for, and requests with their
/// expected outcome.
struct Case {
    name: &'static str,
    policies: Vec<AuthorizationPolicy>,
    namespace: &'static str,
    labels: &'static [(&'static str, &'static str)],
    allowed: Vec<Req>,
    denied: Vec<Req>,
}

const HTTPBIN: &[(&str, &str)] = &[("app", "httpbin"), ("version", "v1")];
const SLEEP: &str = "spiffe://cluster.local/ns/default/sa/sleep";

fn run(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for case in cases {
        let engine = AuthzEngine::from_policies(ROOT, &case.policies);
        let workload = engine.workload(case.namespace, &labels(case.labels));
        for (expected, reqs) in [(true, &case.allowed), (false, &case.denied)] {
            for r in reqs {
                let decision = r.with_view(|v| engine.evaluate(&workload, v));
                if decision.allowed != expected {
                    failures.push(format!(
                        "{}: {} {} {:?}: expected {}, got `{decision}`",
                        case.name,
                        r.method,
                        r.url,
                        (r.principal, &r.headers, r.destination),
                        if expected { "allowed" } else { "denied" },
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

// === actions and edge cases ===

#[test]
fn actions_and_empty_policies() {
    run(vec![
        Case {
            name: "allow-all: an ALLOW policy with an empty rule allows everything",
            policies: vec![policy("foo/allow-all", HTTPBIN, Allow, vec![empty_rule()])],
            namespace: "foo",
            labels: HTTPBIN,
            allowed: vec![
                get("http://httpbin/"),
                req("DELETE", "http://x/admin").principal(SLEEP),
            ],
            denied: vec![],
        },
        Case {
            name: "allow-nothing: an ALLOW policy without rules denies everything",
            policies: vec![policy("foo/allow-nothing", HTTPBIN, Allow, vec![])],
            namespace: "foo",
            labels: HTTPBIN,
            allowed: vec![],
            denied: vec![
                get("http://httpbin/"),
                get("http://httpbin/").principal(SLEEP),
            ],
        },
        Case {
            name: "allow-nothing selects by labels: another workload is not affected",
            policies: vec![policy("foo/allow-nothing", HTTPBIN, Allow, vec![])],
            namespace: "foo",
            labels: &[("app", "httpbin"), ("version", "v2")],
            allowed: vec![get("http://httpbin/")],
            denied: vec![],
        },
        Case {
            name: "namespace-wide allow-nothing (`spec: {}`) applies to every workload",
            policies: vec![policy("foo/allow-nothing", &[], Allow, vec![])],
            namespace: "foo",
            labels: &[("app", "anything")],
            allowed: vec![],
            denied: vec![get("http://x/")],
        },
        Case {
            name: "deny-all: a DENY policy with an empty rule beats an allow-all policy",
            policies: vec![
                policy("foo/allow-all", &[], Allow, vec![empty_rule()]),
                policy("foo/deny-all", HTTPBIN, Deny, vec![empty_rule()]),
            ],
            namespace: "foo",
            labels: HTTPBIN,
            allowed: vec![],
            denied: vec![
                get("http://httpbin/"),
                get("http://httpbin/").principal(SLEEP),
            ],
        },
        Case {
            name: "a DENY policy without rules denies nothing",
            policies: vec![policy("foo/deny-none", &[], Deny, vec![])],
            namespace: "foo",
            labels: HTTPBIN,
            allowed: vec![get("http://httpbin/")],
            denied: vec![],
        },
        Case {
            name: "deny-and-allow: DENY first, then ALLOW, else deny",
            policies: vec![
                policy(
                    "foo/httpbin-deny",
                    &[],
                    Deny,
                    vec![from(vec![principals(&["cluster.local/ns/foo/sa/deny"])])],
                ),
                policy(
                    "foo/httpbin-allow",
                    &[],
                    Allow,
                    vec![from(vec![principals(&["cluster.local/ns/foo/sa/allow"])])],
                ),
            ],
            namespace: "foo",
            labels: HTTPBIN,
            allowed: vec![get("http://h/").principal("spiffe://cluster.local/ns/foo/sa/allow")],
            denied: vec![
                get("http://h/").principal("spiffe://cluster.local/ns/foo/sa/deny"),
                get("http://h/").principal("spiffe://cluster.local/ns/foo/sa/other"),
                get("http://h/"),
            ],
        },
        Case {
            name: "no policy: everything is allowed",
            policies: vec![policy("bar/deny-all", &[], Deny, vec![empty_rule()])],
            namespace: "foo",
            labels: HTTPBIN,
            allowed: vec![get("http://h/")],
            denied: vec![],
        },
        Case {
            name: "AUDIT and CUSTOM never change the decision",
            policies: vec![
                policy("foo/audit-all", &[], Audit, vec![empty_rule()]),
                policy("foo/ext", HTTPBIN, Custom, vec![empty_rule()]),
            ],
            namespace: "foo",
            labels: HTTPBIN,
            allowed: vec![get("http://h/")],
            denied: vec![],
        },
    ]);
}

#[test]
fn root_namespace_policies() {
    let root_selected = policy(
        &format!("{ROOT}/v1-nothing"),
        &[("version", "v1")],
        Allow,
        vec![],
    );
    let mesh_wide_deny = policy(
        &format!("{ROOT}/deny-admin"),
        &[],
        Deny,
        vec![to(vec![Operation {
            paths: strings(&["/admin*"]),
            ..Operation::default()
        }])],
    );
    run(vec![
        Case {
            name: "a root-namespace selector selects workloads in all namespaces",
            policies: vec![root_selected.clone()],
            namespace: "foo",
            labels: HTTPBIN,
            allowed: vec![],
            denied: vec![get("http://h/")],
        },
        Case {
            name: "a root-namespace selector still needs matching labels",
            policies: vec![root_selected],
            namespace: "foo",
            labels: &[("version", "v2")],
            allowed: vec![get("http://h/")],
            denied: vec![],
        },
        Case {
            name: "a root-namespace policy without selector applies mesh-wide",
            policies: vec![mesh_wide_deny.clone()],
            namespace: "bar",
            labels: &[],
            allowed: vec![get("http://h/public")],
            denied: vec![get("http://h/admin/users")],
        },
        Case {
            name: "and to the root namespace's own workloads",
            policies: vec![mesh_wide_deny],
            namespace: ROOT,
            labels: &[],
            allowed: vec![get("http://h/public")],
            denied: vec![get("http://h/admin")],
        },
        Case {
            name: "a selector outside the root namespace stays in its namespace",
            policies: vec![policy("foo/nothing", HTTPBIN, Allow, vec![])],
            namespace: "bar",
            labels: HTTPBIN,
            allowed: vec![get("http://h/")],
            denied: vec![],
        },
    ]);
}

// === sources ===

#[test]
fn sources() {
    let full = Source {
        principals: strings(&["cluster.local/ns/prod/*", "*/sa/admin"]),
        not_principals: strings(&["cluster.local/ns/prod/sa/intruder"]),
        namespaces: strings(&["prod", "stage-*", "admin-ns"]),
        not_namespaces: strings(&["stage-old"]),
        ip_blocks: nets(&["10.0.0.0/8", "192.168.1.7"]),
        not_ip_blocks: nets(&["10.9.0.0/16"]),
        remote_ip_blocks: nets(&["203.0.113.0/24", "10.0.0.0/8", "192.168.1.7"]),
        not_remote_ip_blocks: nets(&["203.0.113.66"]),
        ..Source::default()
    };
    let ok = || get("http://h/").source_ip("10.1.2.3");
    run(vec![
        Case {
            name: "source fields are ANDed, values within a field ORed, not-values exclude",
            policies: vec![policy("foo/full", &[], Allow, vec![from(vec![full])])],
            namespace: "foo",
            labels: &[],
            allowed: vec![
                ok().principal("spiffe://cluster.local/ns/prod/sa/web"),
                ok().principal("cluster.local/ns/prod/sa/web"),
                ok().principal("other.td/ns/stage-2/sa/admin"),
                ok().principal("cluster.local/ns/admin-ns/sa/admin"),
                get("http://h/")
                    .principal("cluster.local/ns/prod/sa/web")
                    .source_ip("192.168.1.7"),
                ok().principal("cluster.local/ns/prod/sa/web")
                    .remote_ip("203.0.113.5"),
                // An IPv4 client seen by a dual-stack listener.
                get("http://h/")
                    .principal("cluster.local/ns/prod/sa/web")
                    .source_ip("::ffff:10.1.2.3"),
            ],
            denied: vec![
                // notPrincipals
                ok().principal("cluster.local/ns/prod/sa/intruder"),
                // principal ok, namespace not listed
                ok().principal("cluster.local/ns/dev/sa/admin"),
                // notNamespaces
                ok().principal("cluster.local/ns/stage-old/sa/admin"),
                // plain text: no principal, no namespace
                ok(),
                // ipBlocks / notIpBlocks
                get("http://h/")
                    .principal("cluster.local/ns/prod/sa/web")
                    .source_ip("11.0.0.1"),
                get("http://h/")
                    .principal("cluster.local/ns/prod/sa/web")
                    .source_ip("10.9.1.1"),
                // no source IP at all
                get("http://h/").principal("cluster.local/ns/prod/sa/web"),
                // remoteIpBlocks / notRemoteIpBlocks
                ok().principal("cluster.local/ns/prod/sa/web")
                    .remote_ip("198.51.100.1"),
                ok().principal("cluster.local/ns/prod/sa/web")
                    .remote_ip("203.0.113.66"),
            ],
        },
        Case {
            name: "from items are ORed",
            policies: vec![policy(
                "foo/two-sources",
                &[],
                Allow,
                vec![from(vec![
                    principals(&["cluster.local/ns/a/sa/one"]),
                    Source {
                        namespaces: strings(&["b"]),
                        ..Source::default()
                    },
                ])],
            )],
            namespace: "foo",
            labels: &[],
            allowed: vec![
                get("http://h/").principal("cluster.local/ns/a/sa/one"),
                get("http://h/").principal("cluster.local/ns/b/sa/anyone"),
            ],
            denied: vec![get("http://h/").principal("cluster.local/ns/a/sa/two")],
        },
        Case {
            name: "principal wildcards: `*` needs mTLS, `*/ns/foo/sa/x` any trust domain",
            policies: vec![policy(
                "foo/any-mtls",
                &[],
                Allow,
                vec![from(vec![principals(&["*"])])],
            )],
            namespace: "foo",
            labels: &[],
            allowed: vec![get("http://h/").principal("td/ns/x/sa/y")],
            denied: vec![get("http://h/")],
        },
        Case {
            name: "principal suffix across trust domains",
            policies: vec![policy(
                "foo/suffix",
                &[],
                Allow,
                vec![from(vec![principals(&[
                    "*/ns/foo/sa/reader",
                    "*bar/ns/foo/sa/writer",
                ])])],
            )],
            namespace: "foo",
            labels: &[],
            allowed: vec![
                get("http://h/").principal("cluster.local/ns/foo/sa/reader"),
                get("http://h/").principal("other.td/ns/foo/sa/reader"),
                get("http://h/").principal("foobar/ns/foo/sa/writer"),
            ],
            denied: vec![
                get("http://h/").principal("cluster.local/ns/foo/sa/writer"),
                get("http://h/").principal("cluster.local/ns/foo/sa/reader2"),
            ],
        },
        Case {
            name: "serviceAccounts: ns/sa, or sa in the policy's namespace; notServiceAccounts",
            policies: vec![policy(
                "foo/sa",
                &[],
                Allow,
                vec![
                    from(vec![Source {
                        service_accounts: strings(&["my-ns/my-sa", "sa-only"]),
                        ..Source::default()
                    }]),
                    from(vec![Source {
                        namespaces: strings(&["open"]),
                        not_service_accounts: strings(&["open/blocked", "local-blocked"]),
                        ..Source::default()
                    }]),
                ],
            )],
            namespace: "foo",
            labels: &[],
            allowed: vec![
                get("http://h/").principal("cluster.local/ns/my-ns/sa/my-sa"),
                get("http://h/").principal("any.td/ns/my-ns/sa/my-sa"),
                get("http://h/").principal("cluster.local/ns/foo/sa/sa-only"),
                get("http://h/").principal("cluster.local/ns/open/sa/fine"),
                get("http://h/").principal("cluster.local/ns/open/sa/local-blocked"),
            ],
            denied: vec![
                get("http://h/").principal("cluster.local/ns/my-ns/sa/my-sa2"),
                get("http://h/").principal("cluster.local/ns/other/sa/sa-only"),
                get("http://h/").principal("cluster.local/ns/open/sa/blocked"),
                get("http://h/"),
            ],
        },
        Case {
            name: "trustDomains and notTrustDomains",
            policies: vec![policy(
                "foo/td",
                &[],
                Allow,
                vec![from(vec![
                    Source {
                        trust_domains: strings(&["cluster.local", "another.local"]),
                        ..Source::default()
                    },
                    Source {
                        not_trust_domains: strings(&[
                            "bad*",
                            "untrusted",
                            "cluster.local",
                            "another.local",
                        ]),
                        principals: strings(&["*"]),
                        ..Source::default()
                    },
                ])],
            )],
            namespace: "foo",
            labels: &[],
            allowed: vec![
                get("http://h/").principal("cluster.local/ns/a/sa/b"),
                get("http://h/").principal("another.local/ns/a/sa/b"),
                get("http://h/").principal("partner.io/ns/a/sa/b"),
            ],
            denied: vec![
                get("http://h/").principal("badland/ns/a/sa/b"),
                get("http://h/").principal("untrusted/ns/a/sa/b"),
                get("http://h/"),
            ],
        },
        Case {
            name: "requestPrincipals: `*` needs a JWT; notRequestPrincipals",
            policies: vec![policy(
                "foo/jwt",
                &[],
                Allow,
                vec![from(vec![Source {
                    request_principals: strings(&["*"]),
                    not_request_principals: strings(&["https://evil.example/*"]),
                    ..Source::default()
                }])],
            )],
            namespace: "foo",
            labels: &[],
            allowed: vec![get("http://h/").jwt("https://accounts.example/alice", Claims::new())],
            denied: vec![
                get("http://h/"),
                get("http://h/").principal(SLEEP),
                get("http://h/").jwt("https://evil.example/mallory", Claims::new()),
            ],
        },
    ]);
}

// === operations ===

#[test]
fn operations() {
    let paths = Operation {
        paths: strings(&[
            "/exact",
            "/prefix/*",
            "*/suffix",
            "/path/template/{*}",
            "/{**}/path/template",
            "/files/{*}/raw/{**}",
        ]),
        not_paths: strings(&["/prefix/secret*", "/path/template/admin"]),
        ..Operation::default()
    };
    let hosts = Operation {
        hosts: strings(&[
            "example.com",
            "*.example.com",
            "prefix.example.*",
            "ported.com:*",
        ]),
        not_hosts: strings(&["admin.example.com"]),
        ..Operation::default()
    };
    run(vec![
        Case {
            name: "paths: exact, prefix, suffix, {*} and {**} templates; notPaths",
            policies: vec![policy("foo/paths", HTTPBIN, Allow, vec![to(vec![paths])])],
            namespace: "foo",
            labels: HTTPBIN,
            allowed: vec![
                get("http://h/exact"),
                get("http://h/exact?query=is&stripped=1"),
                get("http://h/prefix/"),
                get("http://h/prefix/a/b"),
                get("http://h/a/b/suffix"),
                get("http://h/suffix"),
                get("http://h/path/template/x"),
                get("http://h/path/template/x.y~z"),
                get("http://h/a/path/template"),
                get("http://h/a/b/c/path/template"),
                get("http://h//path/template"),
                get("http://h/files/f1/raw/"),
                get("http://h/files/f1/raw/a/b.txt"),
            ],
            denied: vec![
                get("http://h/exact/"),
                get("http://h/Exact"),
                get("http://h/prefix"),
                get("http://h/prefix/secret/key"),
                get("http://h/suffix/no"),
                get("http://h/path/template/"),
                get("http://h/path/template/x/y"),
                get("http://h/path/template/admin"),
                get("http://h/path/template"),
                get("http://h/files//raw/a"),
                get("http://h/files/f1/raw"),
            ],
        },
        Case {
            name: "hosts: case-insensitive, exact strings do not match a port",
            policies: vec![policy("foo/hosts", &[], Allow, vec![to(vec![hosts])])],
            namespace: "foo",
            labels: &[],
            allowed: vec![
                get("http://example.com/"),
                get("http://EXAMPLE.com/"),
                get("http://www.Example.COM/"),
                get("http://prefix.example.org/"),
                get("http://ported.com:8080/"),
                get("/").header("host", "example.com"),
            ],
            denied: vec![
                get("http://example.com:8080/"),
                get("http://ported.com/"),
                get("http://admin.example.com/"),
                get("http://ADMIN.EXAMPLE.COM/"),
                get("http://example.org/"),
                get("/"),
            ],
        },
        Case {
            name: "methods and ports, with their negations",
            policies: vec![policy(
                "foo/methods-ports",
                &[],
                Allow,
                vec![to(vec![Operation {
                    methods: strings(&["GET", "HEAD", "PO*"]),
                    not_methods: strings(&["POST"]),
                    ports: vec![80, 9080],
                    not_ports: vec![9080],
                    ..Operation::default()
                }])],
            )],
            namespace: "foo",
            labels: &[],
            allowed: vec![get("http://h/").port(80), req("HEAD", "http://h/").port(80)],
            denied: vec![
                req("POST", "http://h/").port(80),
                req("get", "http://h/").port(80),
                req("DELETE", "http://h/").port(80),
                get("http://h/").port(9080),
                get("http://h/").port(8080),
                // The destination port is the connection's, not the authority's.
                get("http://h:80/"),
            ],
        },
        Case {
            name: "multiple ALLOW policies are ORed, each selecting its workloads",
            policies: multiple_policies(),
            namespace: "foo",
            labels: HTTPBIN,
            allowed: vec![
                get("http://x/z").port(8080),
                req("PUT", "http://x/v1").port(8080),
                req("PUT", "http://httpbin.org/z").port(8080),
                req("PUT", "http://x/z").port(90),
                req("PUT", "http://x/z")
                    .port(8080)
                    .principal("td/ns/n/sa/principals2"),
                req("PUT", "http://x/z")
                    .port(8080)
                    .jwt("requestPrincipals1", Claims::new()),
                req("PUT", "http://x/z")
                    .port(8080)
                    .principal("td/ns/namespaces1/sa/s"),
                req("PUT", "http://x/z").port(8080).source_ip("5.6.7.8"),
                req("PUT", "http://x/z").port(8080).header("x-abc", "abc2"),
            ],
            denied: vec![
                req("PUT", "http://x/z").port(8080),
                req("PUT", "http://x/z").port(8080).header("x-abc", "abc3"),
                req("PUT", "http://x/z").port(8080).source_ip("5.6.8.1"),
            ],
        },
        Case {
            name: "multiple policies: a workload without version v1 misses httpbin-1 and -3",
            policies: multiple_policies(),
            namespace: "foo",
            labels: &[("app", "httpbin")],
            allowed: vec![req("PUT", "http://x/v2").port(8080)],
            denied: vec![
                get("http://x/z").port(8080),
                req("PUT", "http://google.com/z").port(8080),
            ],
        },
    ]);
}

/// Nine ALLOW policies in one namespace, each with one kind of constraint, some selecting.
fn multiple_policies() -> Vec<AuthorizationPolicy> {
    vec![
        policy(
            "foo/httpbin-1",
            HTTPBIN,
            Allow,
            vec![to(vec![Operation {
                methods: strings(&["GET", "POST"]),
                ..Operation::default()
            }])],
        ),
        policy(
            "foo/httpbin-2",
            &[("app", "httpbin")],
            Allow,
            vec![to(vec![Operation {
                paths: strings(&["/v1", "/v2"]),
                ..Operation::default()
            }])],
        ),
        policy(
            "foo/httpbin-3",
            &[("version", "v1")],
            Allow,
            vec![to(vec![Operation {
                hosts: strings(&["google.com", "httpbin.org"]),
                ..Operation::default()
            }])],
        ),
        policy(
            "foo/httpbin-4",
            &[],
            Allow,
            vec![to(vec![Operation {
                ports: vec![80, 90],
                ..Operation::default()
            }])],
        ),
        policy(
            "foo/httpbin-5",
            &[],
            Allow,
            vec![from(vec![principals(&["*/principals1", "*/principals2"])])],
        ),
        policy(
            "foo/httpbin-6",
            &[],
            Allow,
            vec![from(vec![Source {
                request_principals: strings(&["requestPrincipals1", "requestPrincipals2"]),
                ..Source::default()
            }])],
        ),
        policy(
            "foo/httpbin-7",
            &[],
            Allow,
            vec![from(vec![Source {
                namespaces: strings(&["namespaces1", "namespaces2"]),
                ..Source::default()
            }])],
        ),
        policy(
            "foo/httpbin-8",
            &[],
            Allow,
            vec![from(vec![Source {
                ip_blocks: nets(&["1.2.3.4", "5.6.7.0/24"]),
                ..Source::default()
            }])],
        ),
        policy(
            "foo/httpbin-9",
            &[],
            Allow,
            vec![when(vec![cond(
                "request.headers[X-abc]",
                &["abc1", "abc2"],
                &[],
            )])],
        ),
    ]
}

#[test]
fn rules_are_ored_and_from_to_when_anded() {
    let rule0 = AuthorizationRule {
        from: vec![principals(&["*/sa/r0-a"]), principals(&["*/sa/r0-b"])],
        to: vec![
            Operation {
                methods: strings(&["GET"]),
                ..Operation::default()
            },
            Operation {
                paths: strings(&["/r0"]),
                ..Operation::default()
            },
        ],
        when: vec![
            cond("request.headers[x-r0]", &["yes"], &[]),
            cond("destination.port", &["9001"], &[]),
        ],
    };
    let rule1 = AuthorizationRule {
        from: vec![principals(&["*/sa/r1"])],
        to: vec![Operation {
            methods: strings(&["POST"]),
            ..Operation::default()
        }],
        when: vec![],
    };
    let r0 = |m: &'static str, url: &'static str| {
        req(m, url)
            .principal("td/ns/n/sa/r0-b")
            .header("x-r0", "yes")
            .port(9001)
    };
    run(vec![Case {
        name: "two rules",
        policies: vec![policy("foo/rules", &[], Allow, vec![rule0, rule1])],
        namespace: "foo",
        labels: &[],
        allowed: vec![
            r0("GET", "http://h/x"),
            r0("PUT", "http://h/r0"),
            req("POST", "http://h/").principal("td/ns/n/sa/r1"),
        ],
        denied: vec![
            // to: neither operation
            r0("PUT", "http://h/x"),
            // when: one condition fails
            r0("GET", "http://h/x").port(9002),
            req("GET", "http://h/x")
                .principal("td/ns/n/sa/r0-a")
                .port(9001),
            // from: no source
            req("POST", "http://h/").principal("td/ns/n/sa/r0-c"),
            // rule 1 source with rule 0 operation: rules do not mix
            req("GET", "http://h/").principal("td/ns/n/sa/r1"),
        ],
    }]);
}

// === conditions ===

#[test]
fn conditions() {
    let nested = claims(vec![
        ("iss", Claim::from("https://issuer.example")),
        ("aud", list(&["svc-a", "svc-b"])),
        ("azp", Claim::from("frontend")),
        ("groups", list(&["dev", "ops"])),
        (
            "nested1",
            Claim::Map(claims(vec![("nested2", Claim::from("nested-value"))])),
        ),
    ]);
    let jwt = |r: Req| r.jwt("https://issuer.example/alice", nested.clone());
    let c = |key: &'static str, values: &'static [&'static str], not: &'static [&'static str]| {
        policy(
            "foo/when",
            &[],
            Allow,
            vec![when(vec![cond(key, values, not)])],
        )
    };
    let case = |name, policy, allowed, denied| Case {
        name,
        policies: vec![policy],
        namespace: "foo",
        labels: &[],
        allowed,
        denied,
    };
    run(vec![
        case(
            "request.headers: prefix, suffix, presence and notValues",
            c(
                "request.headers[X-Header]",
                &["header", "header-prefix-*", "*-suffix-header"],
                &["header-prefix-bad"],
            ),
            vec![
                get("http://h/").header("x-header", "header"),
                get("http://h/").header("x-header", "header-prefix-1"),
                get("http://h/").header("x-header", "a-suffix-header"),
            ],
            vec![
                get("http://h/"),
                get("http://h/").header("x-header", "Header"),
                get("http://h/").header("x-header", "header-prefix-bad"),
                // Two fields are matched joined: `header,header`.
                get("http://h/")
                    .header("x-header", "header")
                    .header("x-header", "header"),
            ],
        ),
        case(
            "request.headers presence: `*` needs a non-empty value",
            c("request.headers[x-token]", &["*"], &[]),
            vec![get("http://h/").header("x-token", "t")],
            vec![get("http://h/"), get("http://h/").header("x-token", "")],
        ),
        case(
            "request.headers notValues only: an absent header passes",
            c("request.headers[x-env]", &[], &["prod*"]),
            vec![get("http://h/"), get("http://h/").header("x-env", "dev")],
            vec![get("http://h/").header("x-env", "production")],
        ),
        case(
            "source.ip",
            c(
                "source.ip",
                &["10.10.10.10", "192.168.10.0/24"],
                &["192.168.10.66"],
            ),
            vec![
                get("http://h/").source_ip("10.10.10.10"),
                get("http://h/").source_ip("192.168.10.1"),
            ],
            vec![
                get("http://h/").source_ip("10.10.10.11"),
                get("http://h/").source_ip("192.168.10.66"),
                get("http://h/"),
            ],
        ),
        case(
            "remote.ip defaults to source.ip",
            c("remote.ip", &["10.80.64.0/18"], &[]),
            vec![
                get("http://h/")
                    .remote_ip("10.80.65.1")
                    .source_ip("1.1.1.1"),
                get("http://h/").source_ip("10.80.64.2"),
            ],
            vec![
                get("http://h/")
                    .remote_ip("10.80.128.1")
                    .source_ip("10.80.64.2"),
            ],
        ),
        case(
            "source.namespace",
            c(
                "source.namespace",
                &["ns", "ns-prefix-*"],
                &["ns-prefix-bad"],
            ),
            vec![
                get("http://h/").principal("td/ns/ns/sa/a"),
                get("http://h/").principal("td/ns/ns-prefix-1/sa/a"),
            ],
            vec![
                get("http://h/").principal("td/ns/ns-prefix-bad/sa/a"),
                get("http://h/").principal("td/ns/other/sa/a"),
                get("http://h/"),
            ],
        ),
        case(
            "source.principal",
            c(
                "source.principal",
                &["cluster.local/ns/default/sa/*"],
                &["*/sa/bad"],
            ),
            vec![get("http://h/").principal(SLEEP)],
            vec![
                get("http://h/").principal("cluster.local/ns/default/sa/bad"),
                get("http://h/").principal("cluster.local/ns/other/sa/sleep"),
            ],
        ),
        case(
            "request.auth.principal",
            c(
                "request.auth.principal",
                &["https://issuer.example/*"],
                &["*/mallory"],
            ),
            vec![jwt(get("http://h/"))],
            vec![
                get("http://h/"),
                get("http://h/").jwt("https://issuer.example/mallory", Claims::new()),
            ],
        ),
        case(
            "request.auth.audiences: any audience of the list",
            c("request.auth.audiences", &["svc-b"], &[]),
            vec![jwt(get("http://h/"))],
            vec![get("http://h/").jwt("https://issuer.example/alice", Claims::new())],
        ),
        case(
            "request.auth.audiences notValues: no audience may match",
            c("request.auth.audiences", &[], &["svc-a"]),
            vec![get("http://h/").jwt("i/s", claims(vec![("aud", Claim::from("svc-c"))]))],
            vec![jwt(get("http://h/"))],
        ),
        case(
            "request.auth.presenter",
            c("request.auth.presenter", &["front*"], &[]),
            vec![jwt(get("http://h/"))],
            vec![get("http://h/").jwt("i/s", claims(vec![("azp", Claim::from("backend"))]))],
        ),
        case(
            "request.auth.claims[iss]",
            c(
                "request.auth.claims[iss]",
                &["*.example"],
                &["*evil.example"],
            ),
            vec![jwt(get("http://h/"))],
            vec![
                get("http://h/"),
                get("http://h/").jwt(
                    "i/s",
                    claims(vec![("iss", Claim::from("https://evil.example"))]),
                ),
            ],
        ),
        case(
            "request.auth.claims[groups]: a list claim matches by item",
            c("request.auth.claims[groups]", &["ops"], &[]),
            vec![jwt(get("http://h/"))],
            vec![get("http://h/").jwt("i/s", claims(vec![("groups", list(&["dev"]))]))],
        ),
        case(
            "request.auth.claims[nested1][nested2]",
            c("request.auth.claims[nested1][nested2]", &["nested-*"], &[]),
            vec![jwt(get("http://h/"))],
            vec![
                get("http://h/").jwt(
                    "i/s",
                    claims(vec![("nested1", Claim::from("nested-value"))]),
                ),
                get("http://h/").jwt(
                    "i/s",
                    claims(vec![("nested2", Claim::from("nested-value"))]),
                ),
            ],
        ),
        case(
            "destination.ip and destination.port",
            policy(
                "foo/dest",
                &[],
                Allow,
                vec![when(vec![
                    cond("destination.ip", &["10.10.10.10", "192.168.10.0/24"], &[]),
                    cond("destination.port", &["91", "92"], &["92"]),
                ])],
            ),
            vec![
                get("http://h/").destination("10.10.10.10", 91),
                get("http://h/").destination("192.168.10.9", 91),
            ],
            vec![
                get("http://h/").destination("10.10.10.10", 92),
                get("http://h/").destination("10.10.10.11", 91),
                get("http://h/"),
            ],
        ),
        case(
            "connection.sni",
            c(
                "connection.sni",
                &["exact.com", "*.suffix.com", "prefix.*"],
                &["bad.suffix.com"],
            ),
            vec![
                get("http://h/").sni("exact.com"),
                get("http://h/").sni("a.suffix.com"),
                get("http://h/").sni("prefix.org"),
            ],
            vec![
                get("http://h/").sni("bad.suffix.com"),
                get("http://h/").sni("other.com"),
                get("http://h/"),
            ],
        ),
    ]);
}

#[test]
fn unsupported_conditions_fail_closed() {
    let filters = || cond("experimental.envoy.filters.a.b[c]", &["exact"], &[]);
    let allow = policy(
        "foo/allow-experimental",
        &[],
        Allow,
        vec![
            when(vec![filters()]),
            to(vec![Operation {
                paths: strings(&["/open"]),
                ..Operation::default()
            }]),
        ],
    );
    let deny = policy(
        "foo/deny-experimental",
        &[],
        Deny,
        vec![AuthorizationRule {
            to: vec![Operation {
                paths: strings(&["/admin"]),
                ..Operation::default()
            }],
            when: vec![filters(), cond("no.such.key", &["x"], &[])],
            ..AuthorizationRule::default()
        }],
    );
    let engine = AuthzEngine::from_policies(ROOT, &[allow.clone(), deny.clone()]);
    assert_eq!(engine.warnings().len(), 3, "{:#?}", engine.warnings());
    assert!(engine.warnings()[0].contains("foo/allow-experimental: rules[0].when[0]"));
    assert!(engine.warnings()[0].contains("the rule matches nothing"));
    assert!(engine.warnings()[1].contains("left out of this DENY rule"));
    run(vec![Case {
        name: "an ALLOW rule with an unsupported condition matches nothing; a DENY rule ignores it",
        policies: vec![allow, deny],
        namespace: "foo",
        labels: &[],
        allowed: vec![get("http://h/open")],
        denied: vec![get("http://h/other"), get("http://h/admin")],
    }]);
}

// === what the decision reports ===

#[test]
fn decision_reports_matched_policy_audit_custom() {
    let policies = vec![
        policy(
            "foo/audit-get",
            &[],
            Audit,
            vec![to(vec![Operation {
                methods: strings(&["GET"]),
                ..Operation::default()
            }])],
        ),
        policy(
            "foo/ext",
            &[],
            Custom,
            vec![to(vec![Operation {
                paths: strings(&["/httpbin1"]),
                ..Operation::default()
            }])],
        ),
        policy(
            "foo/ext2",
            &[],
            Custom,
            vec![to(vec![Operation {
                paths: strings(&["/httpbin2"]),
                ..Operation::default()
            }])],
        ),
        policy(
            "foo/deny-post",
            &[],
            Deny,
            vec![
                empty_rule_with_method("PUT"),
                empty_rule_with_method("POST"),
            ],
        ),
        policy("foo/allow-all", &[], Allow, vec![empty_rule()]),
    ];
    let engine = AuthzEngine::from_policies(ROOT, &policies);
    assert!(
        engine
            .warnings()
            .iter()
            .any(|w| w.contains("foo/ext: CUSTOM action"))
    );
    let w = engine.workload("foo", &Labels::new());
    assert_eq!(w.len(), 5);

    let d = get("http://h/httpbin1").with_view(|v| {
        let d = engine.evaluate(&w, v);
        (
            d.allowed,
            d.reason,
            d.matched.map(|m| m.policy.to_owned()),
            d.audit.len(),
            d.custom
                .clone()
                .into_iter()
                .map(|m| m.policy.to_owned())
                .collect::<Vec<_>>(),
            d.to_string(),
        )
    });
    assert_eq!(
        d,
        (
            true,
            Reason::AllowPolicyMatched,
            Some("foo/allow-all".to_owned()),
            1,
            vec!["foo/ext".to_owned()],
            "allowed by ALLOW policy foo/allow-all rules[0]; CUSTOM policy foo/ext not applied; \
             audited by foo/audit-get"
                .to_owned()
        )
    );

    req("POST", "http://h/httpbin2").with_view(|v| {
        let d = engine.evaluate(&w, v);
        assert!(!d.allowed);
        assert_eq!(d.reason, Reason::DenyPolicyMatched);
        assert_eq!(
            d.matched,
            Some(PolicyMatch {
                policy: "foo/deny-post",
                rule: 1
            })
        );
        assert!(d.audit.is_empty());
        assert_eq!(d.custom.len(), 1);
        assert_eq!(
            d.to_string(),
            "denied by DENY policy foo/deny-post rules[1]; CUSTOM policy foo/ext2 not applied"
        );
    });
}

fn empty_rule_with_method(m: &str) -> AuthorizationRule {
    to(vec![Operation {
        methods: strings(&[m]),
        ..Operation::default()
    }])
}

#[test]
fn dry_run_is_reported_never_enforced() {
    let allow_path = |name: &str, path: &str| {
        policy(
            name,
            HTTPBIN,
            Allow,
            vec![to(vec![Operation {
                paths: strings(&[path]),
                ..Operation::default()
            }])],
        )
    };
    let deny_path = |name: &str, path: &str| {
        policy(
            name,
            HTTPBIN,
            Deny,
            vec![to(vec![Operation {
                paths: strings(&[path]),
                ..Operation::default()
            }])],
        )
    };

    // dry-run ALLOW and dry-run DENY only: nothing is enforced.
    let engine = AuthzEngine::from_policies(
        ROOT,
        &[
            dry_run(allow_path("foo/httpbin-1", "/allow")),
            dry_run(deny_path("foo/httpbin-2", "/deny")),
        ],
    );
    let w = engine.workload("foo", &labels(HTTPBIN));
    let shadow = |url: &'static str| {
        get(url).with_view(|v| {
            let d = engine.evaluate(&w, v);
            assert!(
                d.allowed,
                "{url}: dry-run policies must not be enforced: {d}"
            );
            assert_eq!(d.reason, Reason::NoAllowPolicy);
            d.dry_run
                .iter()
                .map(|r| (r.action, r.allowed, r.matched.map(|m| m.policy.to_owned())))
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(
        shadow("http://h/deny"),
        vec![
            (Deny, false, Some("foo/httpbin-2".to_owned())),
            (Allow, false, None),
        ]
    );
    assert_eq!(
        shadow("http://h/allow"),
        vec![
            (Deny, true, None),
            (Allow, true, Some("foo/httpbin-1".to_owned())),
        ]
    );

    // dry-run ALLOW beside an enforced ALLOW: only the enforced one decides.
    run(vec![Case {
        name: "dry-run mix",
        policies: vec![
            dry_run(allow_path("foo/httpbin-1", "/allow")),
            allow_path("foo/httpbin-2", "/another"),
        ],
        namespace: "foo",
        labels: HTTPBIN,
        allowed: vec![get("http://h/another")],
        denied: vec![get("http://h/allow"), get("http://h/other")],
    }]);

    let engine = AuthzEngine::from_policies(ROOT, &[dry_run(allow_path("foo/only", "/x"))]);
    let w = engine.workload("foo", &labels(HTTPBIN));
    get("http://h/y").with_view(|v| {
        let d = engine.evaluate(&w, v);
        assert!(d.allowed);
        assert_eq!(
            d.dry_run,
            vec![DryRunResult {
                action: Allow,
                allowed: false,
                matched: None
            }]
        );
        assert_eq!(
            d.to_string(),
            "allowed: no ALLOW policy applies; dry-run deny"
        );
    });
}

#[test]
#[should_panic(expected = "must come from the AuthzEngine")]
fn workload_policies_are_tied_to_their_engine() {
    let a = AuthzEngine::from_policies(ROOT, &[]);
    let b = AuthzEngine::from_policies(ROOT, &[]);
    let w = a.workload("foo", &Labels::new());
    get("http://h/").with_view(|v| b.evaluate(&w, v));
}

#[test]
fn peer_principal_parsing() {
    get("http://h/").principal(SLEEP).with_view(|v| {
        assert_eq!(
            v.source_principal(),
            Some("cluster.local/ns/default/sa/sleep")
        );
        assert_eq!(v.source_namespace(), Some("default"));
    });
    get("http://h/")
        .principal("spiffe://example.org/workload/x")
        .with_view(|v| {
            assert_eq!(v.source_principal(), Some("example.org/workload/x"));
            assert_eq!(v.source_namespace(), None);
        });
}

// === value matching ===

#[test]
fn string_forms() {
    let cases: &[(&str, &str, bool)] = &[
        ("abc", "abc", true),
        ("abc", "abcd", false),
        ("abc*", "abc", true),
        ("abc*", "abcd", true),
        ("abc*", "ab", false),
        ("*abc", "abc", true),
        ("*abc", "xabc", true),
        ("*abc", "abcx", false),
        ("*", "x", true),
        ("*", "", false),
        ("*abc*", "xabc*", true),
        ("*abc*", "xabcx", false),
    ];
    for &(pattern, value, expected) in cases {
        assert_eq!(
            StrMatch::parse(pattern).matches(value),
            expected,
            "{pattern:?} on {value:?}"
        );
    }
    assert!(StrMatch::parse("*.Example.com").matches_ignore_case("a.example.COM"));
    assert!(StrMatch::parse("Prefix.*").matches_ignore_case("prefix.x"));
    assert!(!StrMatch::parse("*.example.com").matches_ignore_case("com"));
}

#[test]
fn path_templates() {
    let cases: &[(&str, &str, bool)] = &[
        ("/foo/{*}", "/foo/bar", true),
        ("/foo/{*}", "/foo/bar/baz", false),
        ("/foo/{*}", "/foo/", false),
        ("/foo/{**}/", "/foo/bar/", true),
        ("/foo/{**}/", "/foo//", true),
        ("/foo/{**}/", "/foo/bar", false),
        ("/foo/{*}/bar/{**}", "/foo/buzz/bar/", true),
        ("/foo/{*}/bar/{**}", "/foo/buzz/bar/baz", true),
        ("/foo/{*}/bar/{**}", "/foo/buzz/bar", false),
        ("/{**}", "/", true),
        ("/{**}", "/a b", false),
        ("/{*}/x", "/a%20b/x", true),
    ];
    for &(template, path, expected) in cases {
        let m = PathMatch::parse(template).expect("valid template");
        assert!(matches!(m, PathMatch::Template(_)), "{template}");
        assert_eq!(m.matches(path), expected, "{template:?} on {path:?}");
    }
    for bad in [
        "/*/baz/{*}",
        "/{**}/foo/{*}",
        "/foo/{*}.txt",
        "/a/{**}/{**}",
    ] {
        assert!(PathMatch::parse(bad).is_err(), "{bad} must be rejected");
    }
}

// === properties ===

fn method_policy(negated: bool, method: &str) -> AuthorizationPolicy {
    let op = if negated {
        Operation {
            not_methods: strings(&[method]),
            ..Operation::default()
        }
    } else {
        Operation {
            methods: strings(&[method]),
            ..Operation::default()
        }
    };
    policy("foo/m", &[], Allow, vec![to(vec![op])])
}

proptest! {
    #[test]
    fn a_prefix_value_matches_exactly_the_strings_with_that_prefix(
        prefix in "[a-z/.]{1,6}",
        tail in "[a-z/.]{0,6}",
        other in "[a-z/.]{0,10}",
    ) {
        let m = StrMatch::parse(&format!("{prefix}*"));
        let with = format!("{prefix}{tail}");
        prop_assert!(m.matches(&with));
        prop_assert_eq!(m.matches(&other), other.starts_with(&prefix));
        let s = StrMatch::parse(&format!("*{prefix}"));
        prop_assert_eq!(s.matches(&other), other.ends_with(&prefix));
    }

    #[test]
    fn a_not_field_negates_its_field(pattern in "[A-Z]{1,3}\\*?", method in "[A-Z]{1,4}") {
        let plain = AuthzEngine::from_policies(ROOT, &[method_policy(false, &pattern)]);
        let negated = AuthzEngine::from_policies(ROOT, &[method_policy(true, &pattern)]);
        let r = Req { method, ..get("http://h/") };
        let (a, b) = r.with_view(|v| {
            (
                plain.decide("foo", &Labels::new(), v).allowed,
                negated.decide("foo", &Labels::new(), v).allowed,
            )
        });
        prop_assert_ne!(a, b);
    }

    #[test]
    fn deny_wins_over_allow_whatever_the_order(
        order in Just((0..6usize).collect::<Vec<_>>()).prop_shuffle(),
        root_deny in any::<bool>(),
    ) {
        let deny_ns = if root_deny { ROOT } else { "foo" };
        let all: Vec<AuthorizationPolicy> = vec![
            policy("foo/allow-all", &[], Allow, vec![empty_rule()]),
            policy(&format!("{deny_ns}/deny-admin"), &[], Deny, vec![to(vec![Operation {
                paths: strings(&["/admin*"]),
                ..Operation::default()
            }])]),
            policy("foo/allow-admin", HTTPBIN, Allow, vec![to(vec![Operation {
                paths: strings(&["/admin"]),
                ..Operation::default()
            }])]),
            policy("foo/audit", &[], Audit, vec![empty_rule()]),
            dry_run(policy("foo/dry-deny-all", &[], Deny, vec![empty_rule()])),
            policy("foo/custom", &[], Custom, vec![empty_rule()]),
        ];
        let ordered: Vec<_> = order.iter().map(|&i| all[i].clone()).collect();
        let engine = AuthzEngine::from_policies(ROOT, &ordered);
        let w = engine.workload("foo", &labels(HTTPBIN));
        let admin = get("http://h/admin").with_view(|v| engine.evaluate(&w, v).allowed);
        let other = get("http://h/other").with_view(|v| engine.evaluate(&w, v).allowed);
        prop_assert!(!admin);
        prop_assert!(other);
    }

    #[test]
    fn a_segment_template_matches_one_segment(
        seg in "[a-zA-Z0-9._~-]{1,8}",
        extra in "[a-z]{1,4}",
    ) {
        let m = PathMatch::parse("/api/{*}/items").expect("valid");
        let one_segment = format!("/api/{seg}/items");
        let two_segments = format!("/api/{seg}/{extra}/items");
        prop_assert!(m.matches(&one_segment));
        prop_assert!(!m.matches(&two_segments));
    }
}

//! AuthorizationPolicy evaluation: the per-request decision of the inbound authz layer.
//!
//! `cargo bench -p mesh-benches --bench authz` (add `-- --quick` for a fast pass).

use std::{hint::black_box, net::IpAddr};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mesh_core::{
    Labels, Selector,
    authz::{AuthzEngine, AuthzRequest, Reason},
    model::{
        AuthorizationAction, AuthorizationPolicy, AuthorizationRule, Condition, Operation,
        PolicyScope, Source,
    },
};

const ROOT: &str = "istio-system";
const NS: &str = "bench";

fn strings(v: &[String]) -> Vec<String> {
    v.to_vec()
}

/// Policy `i` for the workload `app: api` in [`NS`]: every tenth a DENY policy, the others ALLOW,
/// each with three rules that mix the fields real policies use (principals and namespaces,
/// methods, templated and prefix paths, ports, a header condition, a JWT claim, IP blocks).
/// Only [`allowed_request`]`(i)` matches ALLOW policy `i`; no benchmark request matches a DENY
/// policy, so every DENY policy is evaluated in full.
fn policy(i: usize) -> AuthorizationPolicy {
    let action = if i % 10 == 9 {
        AuthorizationAction::Deny
    } else {
        AuthorizationAction::Allow
    };
    let rules = vec![
        AuthorizationRule {
            from: vec![Source {
                principals: strings(&[format!("cluster.local/ns/client-{i}/sa/*")]),
                not_principals: strings(&[format!("*/sa/blocked-{i}")]),
                ..Source::default()
            }],
            to: vec![Operation {
                methods: strings(&["GET".into(), "HEAD".into()]),
                paths: strings(&[format!("/api/v{i}/{{*}}/items"), format!("/static/{i}/*")]),
                ports: vec![8080],
                ..Operation::default()
            }],
            when: vec![Condition {
                key: "request.headers[x-tenant]".into(),
                values: strings(&[format!("tenant-{i}")]),
                not_values: vec![],
            }],
        },
        AuthorizationRule {
            from: vec![Source {
                request_principals: strings(&[format!("https://issuer-{i}.example/*")]),
                ..Source::default()
            }],
            when: vec![Condition {
                key: "request.auth.claims[groups]".into(),
                values: strings(&[format!("group-{i}")]),
                not_values: vec![],
            }],
            ..AuthorizationRule::default()
        },
        AuthorizationRule {
            from: vec![Source {
                ip_blocks: vec![format!("10.{}.0.0/16", i % 250).parse().expect("CIDR")],
                namespaces: strings(&[format!("internal-{i}")]),
                ..Source::default()
            }],
            to: vec![Operation {
                not_paths: strings(&["/admin*".into()]),
                ..Operation::default()
            }],
            ..AuthorizationRule::default()
        },
    ];
    AuthorizationPolicy {
        name: format!("{NS}/policy-{i}"),
        scope: PolicyScope {
            namespace: NS.into(),
            selector: i
                .is_multiple_of(2)
                .then(|| [("app", "api")].into_iter().collect::<Selector>()),
        },
        action,
        provider: None,
        dry_run: false,
        rules,
    }
}

/// `n` applicable policies, plus 500 in other namespaces that the index must skip.
fn policies(n: usize) -> Vec<AuthorizationPolicy> {
    let mut all: Vec<_> = (0..n).map(policy).collect();
    all.extend((0..500).map(|i| {
        let mut p = policy(i);
        p.scope.namespace = format!("other-{}", i % 50);
        p.name = format!("other-{}/policy-{i}", i % 50);
        p
    }));
    all
}

/// The index of the last ALLOW policy among the first `n`: the allowed request matches it, so
/// every policy before it is evaluated too.
fn last_allow(n: usize) -> usize {
    (0..n).rev().find(|i| i % 10 != 9).expect("an ALLOW policy")
}

struct Fixture {
    request: http::Request<()>,
    principal: String,
}

fn allowed_request(i: usize) -> Fixture {
    Fixture {
        request: http::Request::get(format!("http://api.bench:8080/api/v{i}/abc/items?page=2"))
            .header("x-tenant", format!("tenant-{i}"))
            .header("user-agent", "bench")
            .body(())
            .expect("request"),
        principal: format!("spiffe://cluster.local/ns/client-{i}/sa/reader"),
    }
}

fn denied_request() -> Fixture {
    Fixture {
        request: http::Request::post("http://api.bench:8080/api/v1/abc/items")
            .header("x-tenant", "nobody")
            .body(())
            .expect("request"),
        principal: "spiffe://cluster.local/ns/stranger/sa/default".into(),
    }
}

fn evaluate(c: &mut Criterion) {
    let labels: Labels = [("app".to_owned(), "api".to_owned())].into_iter().collect();
    let source_ip: IpAddr = "192.168.0.7".parse().expect("IP");
    let destination_ip: IpAddr = "10.0.0.1".parse().expect("IP");
    let mut group = c.benchmark_group("authz/evaluate");
    for n in [1usize, 10, 100] {
        let engine = AuthzEngine::from_policies(ROOT, &policies(n));
        let workload = engine.workload(NS, &labels);
        assert_eq!(workload.len(), n, "every policy of {NS} applies");
        for (name, fixture, allowed) in [
            ("allowed", allowed_request(last_allow(n)), true),
            ("denied", denied_request(), false),
        ] {
            // Built per request in the layer: include it in the measurement.
            let view = || {
                AuthzRequest::from_request(&fixture.request)
                    .with_peer_principal(&fixture.principal)
                    .with_source_ip(source_ip)
                    .with_destination(destination_ip, 8080)
            };
            let decision = engine.evaluate(&workload, &view());
            assert_eq!(
                decision.allowed, allowed,
                "{name} with {n} policies: {decision}"
            );
            if !allowed {
                assert_eq!(decision.reason, Reason::NoAllowPolicyMatched);
            }
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| black_box(engine.evaluate(black_box(&workload), &view())).allowed)
            });
        }
    }
    group.finish();
}

/// Selecting a workload's policies (once per workload in a layer, per call in `decide`).
fn select(c: &mut Criterion) {
    let labels: Labels = [("app".to_owned(), "api".to_owned())].into_iter().collect();
    let mut group = c.benchmark_group("authz/workload");
    for n in [10usize, 100] {
        let engine = AuthzEngine::from_policies(ROOT, &policies(n));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| engine.workload(black_box(NS), black_box(&labels)).len())
        });
    }
    group.finish();
}

criterion_group!(benches, evaluate, select);
criterion_main!(benches);

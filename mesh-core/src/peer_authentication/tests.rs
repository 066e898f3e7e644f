use super::*;
use crate::{Selector, model::PolicyScope};

use MtlsMode::{Disable, Permissive, Strict, Unset};

/// A policy: `ns/name`, an optional `app` selector, a mode and port modes.
fn pa(
    ns: &str,
    name: &str,
    app: Option<&str>,
    mode: MtlsMode,
    ports: &[(u16, MtlsMode)],
) -> PeerAuthenticationPolicy {
    PeerAuthenticationPolicy {
        name: format!("{ns}/{name}"),
        scope: PolicyScope {
            namespace: ns.into(),
            selector: app.map(|a| Selector::from_iter([("app", a)])),
        },
        mode,
        port_modes: ports.to_vec(),
    }
}

fn mesh(policies: Vec<PeerAuthenticationPolicy>) -> CompiledMesh {
    CompiledMesh {
        root_namespace: "istio-system".into(),
        peer_authentications: policies,
        ..Default::default()
    }
}

fn labels(app: &str) -> Labels {
    [("app".to_owned(), app.to_owned())].into()
}

#[test]
fn precedence_and_inheritance_follow_istio() {
    struct Case {
        what: &'static str,
        policies: Vec<PeerAuthenticationPolicy>,
        /// (namespace, app, port) -> expected mode, deciding policy.
        expect: Vec<(
            &'static str,
            &'static str,
            u16,
            MtlsMode,
            Option<&'static str>,
        )>,
    }
    let cases = vec![
        Case {
            what: "no policy: PERMISSIVE",
            policies: vec![],
            expect: vec![("default", "ratings", 9080, Permissive, None)],
        },
        Case {
            what: "mesh-wide STRICT applies to every namespace",
            policies: vec![pa("istio-system", "default", None, Strict, &[])],
            expect: vec![
                (
                    "default",
                    "ratings",
                    9080,
                    Strict,
                    Some("istio-system/default"),
                ),
                ("foo", "x", 1, Strict, Some("istio-system/default")),
                ("istio-system", "x", 1, Strict, Some("istio-system/default")),
            ],
        },
        Case {
            what: "namespace beats mesh-wide, only in its namespace",
            policies: vec![
                pa("istio-system", "default", None, Strict, &[]),
                pa("legacy", "default", None, Permissive, &[]),
            ],
            expect: vec![
                (
                    "legacy",
                    "ratings",
                    9080,
                    Permissive,
                    Some("legacy/default"),
                ),
                (
                    "default",
                    "ratings",
                    9080,
                    Strict,
                    Some("istio-system/default"),
                ),
            ],
        },
        Case {
            what: "workload beats namespace, only for the workloads it selects",
            policies: vec![
                pa("foo", "ns", None, Strict, &[]),
                pa("foo", "httpbin", Some("httpbin"), Disable, &[]),
            ],
            expect: vec![
                ("foo", "httpbin", 8000, Disable, Some("foo/httpbin")),
                ("foo", "sleep", 8000, Strict, Some("foo/ns")),
                ("bar", "httpbin", 8000, Permissive, None),
            ],
        },
        Case {
            what: "UNSET inherits the level above, up to PERMISSIVE",
            policies: vec![
                pa("istio-system", "default", None, Strict, &[]),
                pa("foo", "ns", None, Unset, &[]),
                pa("foo", "w", Some("httpbin"), Unset, &[]),
                pa("bar", "w", Some("httpbin"), Unset, &[]),
            ],
            expect: vec![
                ("foo", "httpbin", 80, Strict, Some("istio-system/default")),
                ("bar", "httpbin", 80, Strict, Some("istio-system/default")),
            ],
        },
        Case {
            what: "UNSET everywhere is PERMISSIVE",
            policies: vec![
                pa("istio-system", "default", None, Unset, &[]),
                pa("foo", "ns", None, Unset, &[]),
            ],
            expect: vec![("foo", "httpbin", 80, Permissive, None)],
        },
        Case {
            what: "a selector in the root namespace is ignored, even for its own workloads",
            policies: vec![pa("istio-system", "sel", Some("httpbin"), Strict, &[])],
            expect: vec![
                ("foo", "httpbin", 80, Permissive, None),
                ("istio-system", "httpbin", 80, Permissive, None),
            ],
        },
        Case {
            what: "in the root namespace, its selector-less policy is the mesh's",
            policies: vec![
                pa("istio-system", "a", None, Disable, &[]),
                pa("foo", "ns", None, Strict, &[]),
            ],
            expect: vec![("istio-system", "gw", 80, Disable, Some("istio-system/a"))],
        },
        Case {
            what: "among equals the first loaded wins (Istio: the oldest)",
            policies: vec![
                pa("foo", "first", None, Disable, &[]),
                pa("foo", "second", None, Strict, &[]),
                pa("foo", "w1", Some("httpbin"), Permissive, &[]),
                pa("foo", "w2", Some("httpbin"), Strict, &[]),
            ],
            expect: vec![
                ("foo", "sleep", 80, Disable, Some("foo/first")),
                ("foo", "httpbin", 80, Permissive, Some("foo/w1")),
            ],
        },
        Case {
            what: "portLevelMtls: per port, UNSET inherits the workload's mode",
            policies: vec![
                pa("istio-system", "default", None, Strict, &[]),
                pa(
                    "foo",
                    "w",
                    Some("httpbin"),
                    Unset,
                    &[(8080, Disable), (9000, Permissive), (9090, Unset)],
                ),
            ],
            expect: vec![
                ("foo", "httpbin", 8080, Disable, Some("foo/w")),
                ("foo", "httpbin", 9000, Permissive, Some("foo/w")),
                ("foo", "httpbin", 9090, Strict, Some("foo/w")),
                ("foo", "httpbin", 80, Strict, Some("istio-system/default")),
                ("foo", "sleep", 8080, Strict, Some("istio-system/default")),
            ],
        },
        Case {
            what: "portLevelMtls counts only with a selector",
            policies: vec![
                pa(
                    "istio-system",
                    "default",
                    None,
                    Permissive,
                    &[(8080, Strict)],
                ),
                pa("foo", "ns", None, Unset, &[(8080, Strict)]),
            ],
            expect: vec![(
                "foo",
                "httpbin",
                8080,
                Permissive,
                Some("istio-system/default"),
            )],
        },
    ];
    for case in cases {
        let mesh = mesh(case.policies);
        for (ns, app, port, mode, policy) in case.expect {
            let effective = mesh.peer_authentication(ns, &labels(app));
            assert_eq!(
                (
                    effective.mode_for_port(port),
                    effective.policy_for_port(port)
                ),
                (mode, policy),
                "{}: {ns}/{app}:{port}",
                case.what
            );
            assert_eq!(
                mesh.mtls_mode(ns, &labels(app), port),
                mode,
                "{}",
                case.what
            );
        }
    }
}

#[test]
fn the_effective_mode_is_never_unset() {
    let mesh = mesh(vec![pa("foo", "w", Some("a"), Unset, &[(1, Unset)])]);
    let effective = mesh.peer_authentication("foo", &labels("a"));
    assert_eq!(effective.mode, Permissive);
    assert_eq!(effective.port_modes, [(1, Permissive)]);
}

//! The loader never panics, whatever it is given: arbitrary text, and YAML that looks like Istio
//! config with random values in random places.

use mesh_config::Loader;
use proptest::prelude::*;

const KINDS: &[&str] = &[
    "apiVersion: networking.istio.io/v1\nkind: VirtualService",
    "apiVersion: networking.istio.io/v1\nkind: DestinationRule",
    "apiVersion: networking.istio.io/v1\nkind: Gateway",
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry",
    "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry",
    "apiVersion: networking.istio.io/v1\nkind: Sidecar",
    "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter",
    "apiVersion: security.istio.io/v1\nkind: PeerAuthentication",
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy",
    "apiVersion: security.istio.io/v1\nkind: RequestAuthentication",
    "apiVersion: v1\nkind: Service",
];

const KEYS: &[&str] = &[
    "hosts",
    "http",
    "route",
    "destination",
    "host",
    "subset",
    "weight",
    "match",
    "uri",
    "prefix",
    "exact",
    "regex",
    "headers",
    "timeout",
    "retries",
    "attempts",
    "fault",
    "delay",
    "abort",
    "percentage",
    "value",
    "subsets",
    "name",
    "labels",
    "trafficPolicy",
    "loadBalancer",
    "simple",
    "servers",
    "port",
    "number",
    "protocol",
    "tls",
    "mode",
    "endpoints",
    "address",
    "ports",
    "resolution",
    "selector",
    "matchLabels",
    "rules",
    "from",
    "source",
    "principals",
    "to",
    "operation",
    "paths",
    "mtls",
    "portLevelMtls",
    "jwtRules",
    "issuer",
    "configPatches",
    "applyTo",
    "patch",
    "gateways",
    "egress",
    "mirror",
];

const SCALARS: &[&str] = &[
    "1",
    "-1",
    "0",
    "99999999999",
    "1.5",
    "true",
    "null",
    "~",
    "\"\"",
    "'*'",
    "5s",
    "-3s",
    "1h",
    "reviews",
    "*.example.com",
    "STRICT",
    "ROUND_ROBIN",
    "[",
    "{}",
    "[]",
    "(",
    "\"a\\x\"",
    "&a x",
    "*a",
    "|\n  text",
    "!!binary x",
    "1.2.3.4",
    "::1",
];

fn yamlish() -> impl Strategy<Value = String> {
    let leaf = (0..SCALARS.len()).prop_map(|i| SCALARS[i].to_owned());
    let tree = leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec((0..KEYS.len(), inner.clone()), 0..5).prop_map(|kv| {
                let body: Vec<String> = kv
                    .into_iter()
                    .map(|(k, v)| format!("{}: {}", KEYS[k], v))
                    .collect();
                format!("{{{}}}", body.join(", "))
            }),
            prop::collection::vec(inner, 0..4).prop_map(|items| format!("[{}]", items.join(", "))),
        ]
    });
    (0..KINDS.len(), tree, any::<bool>()).prop_map(|(k, spec, second)| {
        let doc = format!("{}\nmetadata:\n  name: x\nspec: {spec}\n", KINDS[k]);
        if second {
            format!("{doc}---\n{doc}")
        } else {
            doc
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = Loader::new().check_str("fuzz.yaml", &text);
    }

    #[test]
    fn istio_shaped_yaml_never_panics(text in yamlish()) {
        let report = Loader::new().check_str("fuzz.yaml", &text);
        // Every diagnostic points into the text.
        let lines = text.lines().count().max(1);
        for d in report.diagnostics.iter() {
            prop_assert!(d.line >= 1 && d.line <= lines + 1, "{d} is outside the {lines}-line input");
        }
    }
}

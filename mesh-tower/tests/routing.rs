//! The outbound stack end to end: real hyper upstreams on 127.0.0.1, the config as YAML, and
//! what a client observes.

mod support;

use bytes::Bytes;
use http_body_util::Full;
use support::*;

const SUBSETS: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews.example.internal\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n---\n";

async fn reviews() -> String {
    let (v1, v2) = (upstream("v1").await, upstream("v2").await);
    format!(
        "{}{SUBSETS}",
        service_entry("reviews.example.internal", 9080, &[(v1, "v1"), (v2, "v2")])
    )
}

fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

#[tokio::test]
async fn header_matches_pick_the_subset() {
    let yaml = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews.example.internal]\n  http:\n  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]\n    route: [{{destination: {{host: reviews.example.internal, subset: v2}}}}]\n  - route: [{{destination: {{host: reviews.example.internal, subset: v1}}}}]\n",
        reviews().await
    );
    let svc = stack(&yaml);
    for _ in 0..5 {
        let (status, headers, body) = send(
            &svc,
            get("http://reviews.example.internal:9080/r")
                .header("end-user", "jason")
                .body(empty())
                .unwrap(),
        )
        .await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "v2"));
        assert_eq!(
            headers["x-host"], "reviews.example.internal:9080",
            "Host keeps the authority the client used"
        );
        let (_, _, body) = send(
            &svc,
            get("http://reviews.example.internal:9080/r")
                .body(empty())
                .unwrap(),
        )
        .await;
        assert_eq!(body, "v1");
    }
}

#[tokio::test]
async fn a_weighted_split_holds() {
    let yaml = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews.example.internal]\n  http:\n  - route:\n    - {{destination: {{host: reviews.example.internal, subset: v1}}, weight: 80}}\n    - {{destination: {{host: reviews.example.internal, subset: v2}}, weight: 20}}\n",
        reviews().await
    );
    let svc = stack(&yaml);
    let n = 400;
    let mut v2 = 0;
    for _ in 0..n {
        let (_, _, body) = send(
            &svc,
            get("http://reviews.example.internal:9080/")
                .body(empty())
                .unwrap(),
        )
        .await;
        v2 += usize::from(body == "v2");
    }
    // 20% of 400 = 80, sd = sqrt(400*.2*.8) = 8: five sigma is 40..120.
    assert!((40..=120).contains(&v2), "v2 got {v2} of {n}");
}

#[tokio::test]
async fn without_a_virtual_service_all_endpoints_serve() {
    let svc = stack(&reviews().await);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let (status, _, body) = send(
            &svc,
            get("http://reviews.example.internal:9080/")
                .body(empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200);
        seen.insert(body);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["v1", "v2"]);
}

#[tokio::test]
async fn redirects_direct_responses_rewrites_and_headers() {
    let yaml = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews.example.internal]\n  http:\n  - match: [{{uri: {{exact: /old}}}}]\n    redirect: {{uri: /new, authority: other.example.internal}}\n  - match: [{{uri: {{prefix: /health}}}}]\n    directResponse: {{status: 503, body: {{string: down for maintenance}}}}\n  - match: [{{uri: {{prefix: /api/v1/}}}}]\n    rewrite: {{uri: /v2/, authority: internal.example}}\n    headers:\n      request: {{set: {{x-route: api}}, remove: [x-secret]}}\n      response: {{add: {{x-served-by: mesh}}}}\n    route:\n    - destination: {{host: reviews.example.internal, subset: v1}}\n      headers: {{request: {{set: {{x-route: destination, x-dest: v1}}}}}}\n  - match: [{{uri: {{prefix: /items}}}}]\n    rewrite: {{uriRegexRewrite: {{match: \"^/items/([0-9]+)$\", rewrite: \"/item?id=\\\\1\"}}}}\n    route: [{{destination: {{host: reviews.example.internal, subset: v2}}}}]\n",
        reviews().await
    );
    let svc = stack(&yaml);
    let (status, headers, _) = send(
        &svc,
        get("http://reviews.example.internal:9080/old?q=1")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, 301);
    assert_eq!(headers["location"], "http://other.example.internal/new?q=1");

    let (status, _, body) = send(
        &svc,
        get("http://reviews.example.internal:9080/health")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (503, "down for maintenance")
    );

    let req = get("http://reviews.example.internal:9080/api/v1/books?x=1")
        .header("x-secret", "s")
        .body(empty())
        .unwrap();
    let (status, headers, body) = send(&svc, req).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "v1"));
    assert_eq!(
        headers["x-path"], "/v2/books?x=1",
        "the matched prefix is replaced"
    );
    assert_eq!(headers["x-host"], "internal.example");
    assert_eq!(
        headers["x-echo-x-route"], "api",
        "route-level set wins over destination-level"
    );
    assert_eq!(headers["x-echo-x-dest"], "v1");
    assert!(!headers.contains_key("x-echo-x-secret"));
    assert_eq!(headers["x-served-by"], "mesh");

    let (_, headers, body) = send(
        &svc,
        get("http://reviews.example.internal:9080/items/42")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(body, "v2");
    assert_eq!(headers["x-path"], "/item?id=42");
}

#[tokio::test]
async fn failures_answer_as_envoy_does() {
    let dead = closed_port().await;
    let yaml = format!(
        "{}{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews.example.internal]\n  http:\n  - match: [{{uri: {{prefix: /ghost}}}}]\n    route: [{{destination: {{host: reviews.example.internal, subset: v9}}}}]\n  - match: [{{uri: {{prefix: /dead}}}}]\n    route: [{{destination: {{host: dead.example.internal}}}}]\n    retries: {{attempts: 0}}\n",
        reviews().await,
        service_entry("dead.example.internal", 9080, &[(dead, "v1")])
    );
    let svc = stack(&yaml);
    let (status, headers, body) = send(
        &svc,
        get("http://reviews.example.internal:9080/nothing")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!((status.as_u16(), body.as_str()), (404, ""));
    assert_eq!(headers["x-mesh-error"], "no-route");

    let (status, headers, body) = send(
        &svc,
        get("http://reviews.example.internal:9080/ghost")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (503, "no healthy upstream")
    );
    assert_eq!(headers["x-mesh-error"], "no-healthy-upstream");

    let (status, headers, _) = send(
        &svc,
        get("http://reviews.example.internal:9080/dead")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(headers["x-mesh-error"], "upstream-connect-failure");

    let grpc = get("http://reviews.example.internal:9080/pkg.Svc/Missing")
        .header("content-type", "application/grpc")
        .body(empty())
        .unwrap();
    let (status, headers, _) = send(&svc, grpc).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["grpc-status"], "12",
        "a gRPC client sees UNIMPLEMENTED for no route"
    );
}

#[tokio::test]
async fn unknown_hosts_pass_through_unless_registry_only() {
    let up = upstream("outside").await;
    let svc = stack(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: other, namespace: elsewhere}\nspec:\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
    );
    let (status, _, body) = send(&svc, get(&format!("http://{up}/")).body(empty()).unwrap()).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "outside"));

    let locked = stack(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default}\nspec:\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
    );
    let (status, headers, _) = send(
        &locked,
        get(&format!("http://{up}/")).body(empty()).unwrap(),
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(headers["x-mesh-error"], "registry-only");
}

#[tokio::test]
async fn a_reload_changes_routing_without_a_rebuild() {
    let base = reviews().await;
    let route_to = |subset: &str| {
        format!(
            "{base}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews.example.internal]\n  http: [{{route: [{{destination: {{host: reviews.example.internal, subset: {subset}}}}}]}}]\n"
        )
    };
    let load = |yaml: &str| {
        mesh_config::Loader::new()
            .check_str("t.yaml", yaml)
            .into_mesh()
            .unwrap()
    };
    let handle = mesh_tower::MeshHandle::from(&load(&route_to("v1")));
    let svc: mesh_tower::MeshService<Full<Bytes>> =
        mesh_tower::MeshStack::outbound(&handle).build();
    let (_, _, body) = send(
        &svc,
        get("http://reviews.example.internal:9080/")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(body, "v1");
    handle.store(load(&route_to("v2")).compiled().clone());
    let (_, _, body) = send(
        &svc,
        get("http://reviews.example.internal:9080/")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(body, "v2");
}

#[tokio::test]
async fn port_and_subset_level_policies_override_the_rule() {
    let (a, b, c, d) = (
        upstream("a").await,
        upstream("b").await,
        upstream("c").await,
        upstream("d").await,
    );
    let yaml = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews}}\nspec:\n  host: reviews.example.internal\n  trafficPolicy:\n    loadBalancer: {{simple: RANDOM}}\n    portLevelSettings:\n    - port: {{number: 9080}}\n      loadBalancer: {{simple: ROUND_ROBIN}}\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - name: v2\n    labels: {{version: v2}}\n    trafficPolicy:\n      loadBalancer: {{consistentHash: {{httpHeaderName: x-user}}}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews.example.internal]\n  http:\n  - match: [{{headers: {{x-user: {{}}}}}}]\n    route: [{{destination: {{host: reviews.example.internal, subset: v2}}}}]\n  - route: [{{destination: {{host: reviews.example.internal, subset: v1}}}}]\n",
        service_entry(
            "reviews.example.internal",
            9080,
            &[(a, "v1"), (b, "v1"), (c, "v2"), (d, "v2")]
        )
    );
    let svc = stack(&yaml);
    // v1 on port 9080: the port-level ROUND_ROBIN beats the rule's RANDOM: strict alternation.
    let mut seen = Vec::new();
    for _ in 0..6 {
        let (_, _, body) = send(
            &svc,
            get("http://reviews.example.internal:9080/")
                .body(empty())
                .unwrap(),
        )
        .await;
        seen.push(body);
    }
    assert!(
        seen.windows(2).all(|w| w[0] != w[1]),
        "round robin alternates: {seen:?}"
    );
    // v2: the subset's consistent hash beats both: one user, one endpoint.
    let mut users = std::collections::BTreeMap::new();
    for user in ["ann", "bob", "cy", "dee", "eve"] {
        let mut bodies = std::collections::BTreeSet::new();
        for _ in 0..5 {
            let req = get("http://reviews.example.internal:9080/")
                .header("x-user", user)
                .body(empty())
                .unwrap();
            let (_, _, body) = send(&svc, req).await;
            bodies.insert(body);
        }
        assert_eq!(
            bodies.len(),
            1,
            "{user} always reaches the same endpoint: {bodies:?}"
        );
        users.insert(user, bodies.into_iter().next().unwrap());
    }
    assert!(users.values().all(|b| b == "c" || b == "d"), "{users:?}");
}

#[tokio::test]
async fn services_without_a_virtual_service_get_istios_default_retries() {
    let (live, dead) = (upstream("live").await, closed_port().await);
    let svc = stack(&service_entry(
        "reviews.example.internal",
        9080,
        &[(live, "v1"), (dead, "v1")],
    ));
    for _ in 0..20 {
        let (status, _, body) = send(
            &svc,
            get("http://reviews.example.internal:9080/")
                .body(empty())
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status.as_u16(), body.as_str()),
            (200, "live"),
            "a refused connection is retried on the other endpoint"
        );
    }
}

#[tokio::test]
async fn the_upstream_sees_an_x_request_id_generated_or_kept() {
    let svc = stack(&reviews().await);
    let (_, headers, _) = send(
        &svc,
        get("http://reviews.example.internal:9080/")
            .body(empty())
            .unwrap(),
    )
    .await;
    let id = headers["x-echo-x-request-id"].to_str().unwrap().to_owned();
    // A version-4 UUID: 8-4-4-4-12 hex digits, version 4, variant 10xx.
    let parts: Vec<&str> = id.split('-').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12],
        "{id}"
    );
    assert!(
        id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
        "{id}"
    );
    assert!(parts[2].starts_with('4'), "{id}");
    assert!("89ab".contains(&parts[3][..1]), "{id}");
    let (_, again, _) = send(
        &svc,
        get("http://reviews.example.internal:9080/")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_ne!(again["x-echo-x-request-id"], id.as_str(), "ids must differ");

    let (_, kept, _) = send(
        &svc,
        get("http://reviews.example.internal:9080/")
            .header("x-request-id", "from-the-client")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(kept["x-echo-x-request-id"], "from-the-client");
}

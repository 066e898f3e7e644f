//! The Sidecar resource through `mesh run --outbound`: `egress` hosts limit what the workload
//! reaches through the registry, and `outboundTrafficPolicy` decides what happens to every other
//! host: ALLOW_ANY (Istio's default) passes the request through to the authority as the client
//! wrote it (resolved by DNS), REGISTRY_ONLY answers 502.
//!
//! The "external" host is `localhost:<port>` of a local upstream: `localhost` is qualified in
//! the client's namespace as Istio qualifies short names, so a ServiceEntry for
//! `localhost.default.svc.cluster.local` on that port claims the same requests for another
//! upstream. Which of the two answers shows whether the registry (through `egress`) or the
//! passthrough served the request, with no DNS beyond `localhost`.

mod harness;

use std::net::SocketAddr;

use harness::{Mesh, config, free_port, get, named, temp_dir};
use http::StatusCode;

/// Three upstreams: `shop` (a registry service), `direct` (what `localhost:<port>` is) and
/// `registry` (the ServiceEntry's endpoint for that same authority); two Sidecars in
/// `default`: the namespace's (imports `shop` only, ALLOW_ANY by default) and one for
/// `app=strict` (imports `shop` only, REGISTRY_ONLY); and one in `istio-system` for `app=all`,
/// the mesh-wide root, which does not apply to `default` workloads (theirs wins).
async fn setup() -> (String, SocketAddr) {
    let shop = named("shop").await;
    let direct = named("direct").await;
    let registry = named("registry").await;
    let yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: shop, namespace: default}}
spec:
  hosts: [shop.example.internal]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {shop}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: local, namespace: default}}
spec:
  hosts: [localhost.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {direct}, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {registry}}}}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: default}}
spec:
  egress:
  - hosts: [./shop.example.internal]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: strict, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: strict}}}}
  egress:
  - hosts: [./shop.example.internal]
  outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: everything, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: all}}}}
  egress:
  - hosts: ["*/*"]
  outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}
"#,
        shop = shop.port(),
        direct = direct.port(),
        registry = registry.port(),
    );
    (yaml, direct)
}

/// `mesh run --outbound` for a workload labelled `app=<app>`; its outbound address.
async fn sidecar(file: &std::path::Path, app: &str) -> (Mesh, SocketAddr) {
    let outbound = free_port();
    let mesh = Mesh::start(
        file,
        &[
            "--outbound".into(),
            outbound.to_string(),
            "--workload-labels".into(),
            format!("app={app}"),
        ],
    )
    .await;
    (mesh, outbound)
}

/// Status, `x-mesh-error` (or "") and body of `GET http://<outbound>/` with `Host: host`.
async fn through(outbound: SocketAddr, host: &str) -> (StatusCode, String, String) {
    let (status, headers, body) = get(&format!("http://{outbound}/"), &[("host", host)])
        .await
        .unwrap();
    let error = headers
        .get("x-mesh-error")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, error, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_egress_and_outbound_traffic_policy() {
    let dir = temp_dir("egress");
    let (yaml, direct) = setup().await;
    let file = config(&dir, &yaml);
    let local = format!("localhost:{}", direct.port());
    // No entry has it (REGISTRY_ONLY answers before any DNS lookup).
    let nowhere = "nowhere.example.internal";
    let ok = |body: &str| (StatusCode::OK, String::new(), body.to_owned());
    let registry_only = (StatusCode::BAD_GATEWAY, "registry-only".to_owned());

    // Imports everything: the ServiceEntry claims localhost:<port>; REGISTRY_ONLY refuses a
    // host no entry has.
    let (_all, all) = sidecar(&file, "all").await;
    assert_eq!(through(all, "shop.example.internal").await, ok("shop"));
    assert_eq!(through(all, &local).await, ok("registry"));
    let (status, error, _) = through(all, nowhere).await;
    assert_eq!((status, error), registry_only);

    // The namespace's Sidecar imports only shop: the ServiceEntry for localhost is not seen,
    // and ALLOW_ANY (the default) sends the request to localhost itself.
    let (_open, open) = sidecar(&file, "open").await;
    assert_eq!(through(open, "shop.example.internal").await, ok("shop"));
    assert_eq!(through(open, &local).await, ok("direct"));

    // REGISTRY_ONLY with the same egress: what is not imported is a 502, like any unknown host.
    let (_strict, strict) = sidecar(&file, "strict").await;
    assert_eq!(through(strict, "shop.example.internal").await, ok("shop"));
    let (status, error, _) = through(strict, &local).await;
    assert_eq!((status, error), registry_only.clone());
    let (status, error, _) = through(strict, nowhere).await;
    assert_eq!((status, error), registry_only);
}

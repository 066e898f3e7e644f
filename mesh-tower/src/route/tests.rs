//! The router on its own, over a `tower_test` mock: what it forwards, and what it answers.

use http::{Request, Response, StatusCode};
use tower::{Service, ServiceExt};
use tower_test::mock;

use super::*;
use crate::body;

type Mock = mock::Mock<Request<MeshBody>, Response<MeshBody>>;
type MockHandle = mock::Handle<Request<MeshBody>, Response<MeshBody>>;

fn router(yaml: &str) -> (Route<Mock>, MockHandle) {
    let report = mesh_config::Loader::new().check_str("t.yaml", yaml);
    assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
    let handle = MeshHandle::new(report.mesh);
    let (svc, h) = mock::pair();
    (
        RouteLayer::new(handle, ClientIdentity::default()).layer(svc),
        h,
    )
}

const YAML: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: r}\nspec:\n  hosts: [r.example]\n  ports: [{number: 80, name: http}]\n  resolution: STATIC\n  endpoints: [{address: 10.0.0.1, labels: {version: v1}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [r.example]\n  http:\n  - match: [{uri: {exact: /moved}}]\n    redirect: {uri: /here, redirectCode: 302}\n  - route: [{destination: {host: r.example, subset: v1}, headers: {response: {set: {x-dest: v1}}}}]\n    headers: {response: {set: {x-route: main}}}\n    timeout: 3s\n";

#[tokio::test]
async fn forwards_with_the_decision_in_the_extensions() {
    let (mut svc, mut handle) = router(YAML);
    let req = Request::get("http://r.example/x")
        .body(body::empty())
        .unwrap();
    let fut = svc.ready().await.unwrap().call(req);
    let (sent, reply) = handle.next_request().await.unwrap();
    let ctx = sent.extensions().get::<RouteCtx>().expect("RouteCtx");
    assert_eq!(
        ctx.target,
        Target::Destination(Destination {
            host: Host::new("r.example"),
            subset: Some("v1".into()),
            port: None,
        })
    );
    assert_eq!(ctx.port, 80);
    assert!(!ctx.is_default_route());
    assert_eq!(
        ctx.route().unwrap().timeout,
        Some(std::time::Duration::from_secs(3))
    );
    reply.send_response(Response::new(body::empty()));
    let res = fut.await.unwrap();
    assert_eq!(res.headers()["x-route"], "main");
    assert_eq!(res.headers()["x-dest"], "v1");
}

#[tokio::test]
async fn answers_redirects_without_calling_the_inner_service() {
    let (mut svc, _handle) = router(YAML);
    let req = Request::get("http://r.example/moved")
        .body(body::empty())
        .unwrap();
    // Nobody answers for the mock: had the router forwarded, this would time out.
    let call = svc.ready().await.unwrap().call(req);
    let res = tokio::time::timeout(std::time::Duration::from_secs(5), call)
        .await
        .expect("answered by the router itself")
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(res.headers()["location"], "http://r.example/here");
}

#[tokio::test]
async fn marks_the_default_route() {
    let (mut svc, mut handle) = router(YAML.split("---").next().unwrap());
    let fut = svc.ready().await.unwrap().call(
        Request::get("http://r.example/")
            .body(body::empty())
            .unwrap(),
    );
    let (sent, reply) = handle.next_request().await.unwrap();
    let ctx = sent.extensions().get::<RouteCtx>().unwrap();
    assert!(ctx.is_default_route());
    assert!(ctx.route().is_none());
    reply.send_response(Response::new(body::empty()));
    fut.await.unwrap();
}

#[tokio::test]
async fn a_request_without_authority_is_an_error() {
    let (mut svc, _handle) = router(YAML);
    let req = Request::get("/no-host").body(body::empty()).unwrap();
    let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
    assert!(matches!(
        MeshError::find(&err),
        Some(MeshError::NoAuthority)
    ));
}

const GATEWAY_YAML: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: r}\nspec:\n  hosts: [r.example, other.example]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 10.0.0.1}]\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ['*']}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [r.example]\n  gateways: [gw]\n  http:\n  - match: [{port: 8080}]\n    route: [{destination: {host: r.example}}]\n";

fn gateway_router() -> (Route<Mock>, MockHandle) {
    let report = mesh_config::Loader::new().check_str("t.yaml", GATEWAY_YAML);
    assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
    let handle = MeshHandle::new(report.mesh);
    let client = ClientIdentity {
        gateway: "default/gw".into(),
        ..ClientIdentity::default()
    };
    let (svc, h) = mock::pair();
    (RouteLayer::new(handle, client).layer(svc), h)
}

#[tokio::test]
async fn a_gateway_matches_port_against_its_listener_and_has_no_default_route() {
    let (mut svc, mut handle) = gateway_router();
    // The Host carries no port: `match.port: 8080` is the listener's port.
    let mut req = Request::get("http://r.example/")
        .body(body::empty())
        .unwrap();
    req.extensions_mut().insert(ListenerPort(8080));
    let fut = svc.ready().await.unwrap().call(req);
    let (sent, reply) = handle.next_request().await.unwrap();
    assert!(
        !sent
            .extensions()
            .get::<RouteCtx>()
            .unwrap()
            .is_default_route()
    );
    reply.send_response(Response::new(body::empty()));
    fut.await.unwrap();

    // Without the listener port, port 80 does not match: no route.
    let req = Request::get("http://r.example/")
        .body(body::empty())
        .unwrap();
    let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
    assert!(matches!(
        MeshError::find(&err),
        Some(MeshError::NoRoute { .. })
    ));

    // A host in the registry but bound to no VirtualService of the gateway: 404, not the
    // sidecar's default route.
    let mut req = Request::get("http://other.example/")
        .body(body::empty())
        .unwrap();
    req.extensions_mut().insert(ListenerPort(8080));
    let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
    assert!(matches!(
        MeshError::find(&err),
        Some(MeshError::NoRoute { .. })
    ));
}

#[tokio::test]
async fn sidecar_egress_hides_what_it_does_not_import() {
    // The namespace's Sidecar imports `other.example` only, REGISTRY_ONLY: `r.example` (its
    // ServiceEntry and its VirtualService) is unknown to this workload.
    let sidecar = |hosts: &str| {
        format!(
            "{YAML}---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: default}}\nspec:\n  egress: [{{hosts: [{hosts}]}}]\n  outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}\n"
        )
    };
    let (mut svc, _handle) = router(&sidecar("./other.example"));
    let req = Request::get("http://r.example/x")
        .body(body::empty())
        .unwrap();
    let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
    assert!(matches!(
        MeshError::find(&err),
        Some(MeshError::RegistryOnly { .. })
    ));

    // Imported: the VirtualService routes it again.
    let (mut svc, mut handle) = router(&sidecar("./r.example"));
    let req = Request::get("http://r.example/x")
        .body(body::empty())
        .unwrap();
    let fut = svc.ready().await.unwrap().call(req);
    let (sent, reply) = handle.next_request().await.unwrap();
    assert!(
        sent.extensions()
            .get::<RouteCtx>()
            .unwrap()
            .route()
            .is_some()
    );
    reply.send_response(Response::new(body::empty()));
    fut.await.unwrap();
}

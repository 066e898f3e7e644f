use http::{Method, Request, Response};
use http_body_util::BodyExt;
use mesh_core::{
    CompiledMesh, Selector,
    model::{
        AuthorizationAction, AuthorizationPolicy, AuthorizationRule, Operation, PolicyScope, Source,
    },
};
use tower::{Service, ServiceExt, util::BoxCloneService};

use super::*;
use crate::{body, error::error_to_response};

type App = BoxCloneService<Request<MeshBody>, Response<MeshBody>, BoxError>;

fn app() -> App {
    BoxCloneService::new(tower::service_fn(|_req: Request<MeshBody>| async {
        Ok::<_, BoxError>(Response::new(body::full("ok")))
    }))
}

fn policy(
    name: &str,
    selector: Option<&str>,
    action: AuthorizationAction,
    rule: AuthorizationRule,
) -> AuthorizationPolicy {
    AuthorizationPolicy {
        name: format!("default/{name}"),
        scope: PolicyScope {
            namespace: "default".into(),
            selector: selector.map(|app| Selector::from_iter([("app", app)])),
        },
        action,
        provider: None,
        dry_run: false,
        rules: vec![rule],
    }
}

fn to(methods: &[&str], paths: &[&str]) -> AuthorizationRule {
    AuthorizationRule {
        from: vec![],
        to: vec![Operation {
            methods: methods.iter().map(|m| m.to_string()).collect(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            ..Operation::default()
        }],
        when: vec![],
    }
}

/// `GET /public*`, from requests without a source namespace (plain text).
fn public_get() -> AuthorizationRule {
    AuthorizationRule {
        from: vec![Source {
            not_namespaces: vec!["*".into()],
            ..Source::default()
        }],
        ..to(&["GET"], &["/public*"])
    }
}

fn ratings(policies: Vec<AuthorizationPolicy>) -> Authorization<App> {
    let mesh = CompiledMesh {
        version: 1,
        root_namespace: "istio-system".into(),
        authorization_policies: policies,
        ..CompiledMesh::default()
    };
    AuthorizationLayer::new(MeshHandle::new(mesh))
        .namespace("default")
        .workload_labels([("app", "ratings")])
        .layer(app())
}

/// Status and body as the client sees them (errors turned into responses, as the edge does).
async fn send(svc: &mut Authorization<App>, req: Request<MeshBody>) -> (u16, String) {
    let res = match svc.ready().await.unwrap().call(req).await {
        Ok(res) => res,
        Err(err) => error_to_response(err, false),
    };
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn req(method: Method, path: &str) -> Request<MeshBody> {
    Request::builder()
        .method(method)
        .uri(path)
        .body(body::empty())
        .unwrap()
}

#[tokio::test]
async fn allow_policy_allows_what_it_matches_and_denies_the_rest() {
    let mut svc = ratings(vec![policy(
        "public",
        Some("ratings"),
        AuthorizationAction::Allow,
        public_get(),
    )]);
    assert_eq!(
        send(&mut svc, req(Method::GET, "/public/x")).await,
        (200, "ok".into())
    );
    assert_eq!(
        send(&mut svc, req(Method::POST, "/admin")).await,
        (403, "RBAC: access denied".into())
    );
    assert_eq!(send(&mut svc, req(Method::GET, "/admin")).await.0, 403);
}

#[tokio::test]
async fn deny_beats_allow() {
    let mut svc = ratings(vec![
        policy("public", None, AuthorizationAction::Allow, public_get()),
        policy(
            "no-secrets",
            None,
            AuthorizationAction::Deny,
            to(&[], &["/public/secret"]),
        ),
    ]);
    assert_eq!(send(&mut svc, req(Method::GET, "/public/x")).await.0, 200);
    assert_eq!(
        send(&mut svc, req(Method::GET, "/public/secret")).await,
        (403, "RBAC: access denied".into())
    );
}

#[tokio::test]
async fn no_policy_allows_all() {
    let mut svc = ratings(vec![]);
    for m in [Method::GET, Method::POST, Method::DELETE] {
        assert_eq!(send(&mut svc, req(m, "/admin")).await.0, 200);
    }
}

#[tokio::test]
async fn a_policy_for_another_workload_does_not_apply() {
    let mut svc = ratings(vec![policy(
        "reviews-only",
        Some("reviews"),
        AuthorizationAction::Deny,
        to(&["GET"], &[]),
    )]);
    assert_eq!(send(&mut svc, req(Method::GET, "/")).await.0, 200);
}

#[tokio::test]
async fn peer_principal_from_connection_info_matches_principals() {
    let rule = AuthorizationRule {
        from: vec![Source {
            principals: vec!["cluster.local/ns/default/sa/productpage".into()],
            ..Source::default()
        }],
        to: vec![],
        when: vec![],
    };
    let mut svc = ratings(vec![policy(
        "from-productpage",
        None,
        AuthorizationAction::Allow,
        rule,
    )]);
    assert_eq!(send(&mut svc, req(Method::GET, "/")).await.0, 403);

    let with_peer = |principal: &str| {
        let mut r = req(Method::GET, "/");
        r.extensions_mut().insert(ConnectionInfo {
            peer_principal: Some(principal.into()),
            peer_addr: Some(([127, 0, 0, 1], 40000).into()),
            local_addr: Some(([127, 0, 0, 1], 9080).into()),
            sni: None,
        });
        r
    };
    let productpage = "spiffe://cluster.local/ns/default/sa/productpage";
    assert_eq!(send(&mut svc, with_peer(productpage)).await.0, 200);
    let sleep = "spiffe://cluster.local/ns/default/sa/sleep";
    assert_eq!(send(&mut svc, with_peer(sleep)).await.0, 403);
}

#[tokio::test]
async fn custom_and_dry_run_policies_do_not_change_the_decision() {
    let mut custom = policy("ext", None, AuthorizationAction::Custom, to(&["GET"], &[]));
    custom.provider = Some("opa".into());
    let mut dry = policy("dry", None, AuthorizationAction::Deny, to(&["GET"], &[]));
    dry.dry_run = true;
    let audit = policy("audit", None, AuthorizationAction::Audit, to(&["GET"], &[]));
    let mut svc = ratings(vec![custom, dry, audit]);
    assert_eq!(send(&mut svc, req(Method::GET, "/")).await.0, 200);
}

//! RequestAuthentication end to end: `MeshStack::inbound` over YAML, served by hyper on
//! 127.0.0.1, JWTs signed with keys generated here, and what a client and the app observe.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mesh_tower::{
    MeshService, MeshStack,
    body::{self, BoxError, MeshBody},
};
use rsa::{RsaPrivateKey, pkcs1::EncodeRsaPrivateKey, traits::PublicKeyParts};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::ServiceExt;

const ISS: &str = "testing@secure.istio.io";

// === keys and tokens ===

struct Signer {
    alg: Algorithm,
    key: EncodingKey,
    kid: &'static str,
    jwk: Value,
}

impl Signer {
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.into());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Two RSA keys, generated once per test binary.
fn rsa_keys() -> &'static [RsaPrivateKey; 2] {
    static KEYS: OnceLock<[RsaPrivateKey; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = rsa::rand_core::OsRng;
        [
            RsaPrivateKey::new(&mut rng, 2048).unwrap(),
            RsaPrivateKey::new(&mut rng, 2048).unwrap(),
        ]
    })
}

/// RS256 with RSA key `which`, named `kid`.
fn rs256(which: usize, kid: &'static str) -> Signer {
    let key = &rsa_keys()[which];
    Signer {
        alg: Algorithm::RS256,
        key: EncodingKey::from_rsa_der(key.to_pkcs1_der().unwrap().as_bytes()),
        kid,
        jwk: json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
                    "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be())}),
    }
}

/// ES256 with a fresh P-256 key.
fn es256(kid: &'static str) -> Signer {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = pair.public_key_raw();
    Signer {
        alg: Algorithm::ES256,
        key: EncodingKey::from_ec_der(&pair.serialize_der()),
        kid,
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid,
                    "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
    }
}

fn jwks(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str, groups: &[&str]) -> Value {
    json!({"iss": ISS, "sub": sub, "exp": now() + 3600, "groups": groups})
}

// === config ===

/// A RequestAuthentication for `app: httpbin` in `foo`, with `rule` (YAML lines of one
/// `jwtRules` item, indented by 4) after `issuer`.
fn request_authentication(rule: &str) -> String {
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt-example
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  jwtRules:
  - issuer: "{ISS}"
{rule}
---
"#
    )
}

fn inline_jwks(signers: &[&Signer]) -> String {
    format!("    jwks: '{}'", jwks(signers))
}

/// Istio's "require a JWT with `groups: admin`" policy.
const REQUIRE_ADMIN: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: require-admin
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
        requestPrincipals: ["testing@secure.istio.io/alice"]
    when:
    - key: request.auth.claims[groups]
      values: ["admin"]
"#;

/// Istio's "deny requests without a request principal" policy.
const REQUIRE_JWT: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: require-jwt
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
        requestPrincipals: ["*"]
"#;

// === server and client ===

/// Serves `MeshStack::inbound` for `app: httpbin` in `foo` over `yaml` on a loopback port. The
/// app answers `httpbin` with `x-uri` (the path and query it got) and `x-echo-<h>` for every
/// request header.
async fn serve(yaml: &str) -> SocketAddr {
    let report = mesh_config::Loader::new().check_str("test.yaml", yaml);
    assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
    let mesh = report.into_mesh().unwrap();
    let app = tower::service_fn(|req: Request<MeshBody>| async move {
        let mut res = Response::new(body::full("httpbin"));
        let h = res.headers_mut();
        h.insert(
            "x-uri",
            HeaderValue::try_from(req.uri().to_string()).unwrap(),
        );
        for (k, v) in req.headers() {
            h.append(
                http::HeaderName::try_from(format!("x-echo-{k}")).unwrap(),
                v.clone(),
            );
        }
        Ok::<_, BoxError>(res)
    });
    let svc: MeshService<hyper::body::Incoming> = MeshStack::inbound(&mesh, app)
        .namespace("foo")
        .workload_labels([("app", "httpbin")])
        .build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = svc.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| svc.clone().oneshot(req));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `GET http://addr<path>` with `headers`.
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut req = Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get_with_token(addr: SocketAddr, token: &str) -> Reply {
    get(
        addr,
        "/headers",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

// === tests ===

#[tokio::test]
async fn authorization_sees_the_principal_and_claims_of_a_valid_token() {
    let rsa = rs256(0, "rsa");
    let ec = es256("ec");
    let yaml = request_authentication(&inline_jwks(&[&rsa, &ec])) + REQUIRE_ADMIN;
    let addr = serve(&yaml).await;

    let res = get_with_token(addr, &rsa.sign(&claims("alice", &["dev", "admin"]))).await;
    assert_eq!((res.status, res.body.as_str()), (200, "httpbin"));
    let res = get_with_token(addr, &ec.sign(&claims("alice", &["admin"]))).await;
    assert_eq!(res.status, 200, "ES256: {}", res.body);

    // Valid tokens, but not alice, or not in group admin.
    let res = get_with_token(addr, &rsa.sign(&claims("bob", &["admin"]))).await;
    assert_eq!(
        (res.status, res.body.as_str()),
        (403, "RBAC: access denied")
    );
    let res = get_with_token(addr, &rsa.sign(&claims("alice", &["dev"]))).await;
    assert_eq!(res.status, 403);
}

#[tokio::test]
async fn without_a_token_authorization_decides() {
    let rsa = rs256(0, "rsa");
    let only_authn = serve(&request_authentication(&inline_jwks(&[&rsa]))).await;
    let res = get(only_authn, "/headers", &[]).await;
    assert_eq!((res.status, res.body.as_str()), (200, "httpbin"));

    let yaml = request_authentication(&inline_jwks(&[&rsa])) + REQUIRE_JWT;
    let required = serve(&yaml).await;
    let res = get(required, "/headers", &[]).await;
    assert_eq!(
        (res.status, res.body.as_str()),
        (403, "RBAC: access denied")
    );
    assert_eq!(res.headers["x-mesh-error"], "rbac-denied");
    let res = get_with_token(required, &rsa.sign(&claims("carol", &[]))).await;
    assert_eq!(res.status, 200);
}

#[tokio::test]
async fn invalid_tokens_are_refused_with_401_as_envoy_answers() {
    let rsa = rs256(0, "rsa");
    let addr = serve(&request_authentication(&inline_jwks(&[&rsa]))).await;

    let expired = json!({"iss": ISS, "sub": "alice", "exp": now() - 3600});
    let other_issuer = json!({"iss": "https://evil.example", "sub": "alice", "exp": now() + 60});
    // Signed by the other key under the trusted key's kid.
    let forged = rs256(1, "rsa").sign(&claims("alice", &[]));
    let cases = [
        (rsa.sign(&expired), "Jwt is expired"),
        (rsa.sign(&other_issuer), "Jwt issuer is not configured"),
        (forged, "Jwt verification fails"),
        (
            "deadbeef".to_owned(),
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
        ),
    ];
    for (token, reason) in cases {
        let res = get(
            addr,
            "/headers?x=1",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!((res.status, res.body.as_str()), (401, reason));
        assert_eq!(res.headers["x-mesh-error"], "jwt-invalid");
        assert_eq!(
            res.headers["www-authenticate"],
            format!(r#"Bearer realm="http://{addr}/headers?x=1", error="invalid_token""#).as_str()
        );
    }
}

#[tokio::test]
async fn tokens_are_read_from_headers_params_and_cookies() {
    let rsa = rs256(0, "rsa");
    let rule = format!(
        "{}\n    fromHeaders:\n    - name: x-jwt-assertion\n      prefix: \"Token \"\n    \
         fromParams: [my_token]\n    fromCookies: [session]\n    outputClaimToHeaders:\n    \
         - header: x-jwt-sub\n      claim: sub",
        inline_jwks(&[&rsa])
    );
    let addr = serve(&request_authentication(&rule)).await;
    let token = rsa.sign(&claims("dora", &[]));

    let res = get(
        addr,
        "/h",
        &[("x-jwt-assertion", &format!("Token {token}"))],
    )
    .await;
    assert_eq!(
        (res.status, res.header("x-echo-x-jwt-sub")),
        (200, Some("dora"))
    );
    let res = get(addr, &format!("/h?a=1&my_token={token}"), &[]).await;
    assert_eq!(
        (res.status, res.header("x-echo-x-jwt-sub")),
        (200, Some("dora"))
    );
    // The parameter is taken off; the others stay.
    assert_eq!(res.headers["x-uri"], "/h?a=1");
    let res = get(
        addr,
        "/h",
        &[("cookie", &format!("theme=dark; session={token}"))],
    )
    .await;
    assert_eq!(
        (res.status, res.header("x-echo-x-jwt-sub")),
        (200, Some("dora"))
    );

    // With fromHeaders set, `Authorization: Bearer` is not a location: its token is not read.
    let res = get_with_token(addr, &token).await;
    assert_eq!(res.status, 200);
    assert!(!res.headers.contains_key("x-echo-x-jwt-sub"));
    // Nor is the default `access_token` parameter.
    let res = get(addr, &format!("/h?access_token={token}"), &[]).await;
    assert_eq!(res.status, 200);
    assert!(!res.headers.contains_key("x-echo-x-jwt-sub"));
}

#[tokio::test]
async fn verified_tokens_write_the_payload_and_claim_headers() {
    let rsa = rs256(0, "rsa");
    let rule = format!(
        "{}\n    outputPayloadToHeader: x-jwt-payload\n    outputClaimToHeaders:\n    \
         - header: x-jwt-sub\n      claim: sub\n    - header: x-jwt-groups\n      claim: groups",
        inline_jwks(&[&rsa])
    );
    let addr = serve(&request_authentication(&rule)).await;
    let token = rsa.sign(&claims("erin", &["admin"]));

    let res = get(
        addr,
        "/h",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-jwt-sub", "forged"),
        ],
    )
    .await;
    assert_eq!(res.status, 200);
    let payload = res.headers["x-echo-x-jwt-payload"].to_str().unwrap();
    assert_eq!(payload, token.split('.').nth(1).unwrap());
    let decoded: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(decoded["sub"], "erin");
    // The client's own value is replaced; a list claim writes nothing.
    let subs: Vec<_> = res.headers.get_all("x-echo-x-jwt-sub").iter().collect();
    assert_eq!(subs, ["erin"]);
    assert!(!res.headers.contains_key("x-echo-x-jwt-groups"));

    // Without a token the output headers are still removed.
    let res = get(addr, "/h", &[("x-jwt-payload", "forged")]).await;
    assert_eq!(res.status, 200);
    assert!(!res.headers.contains_key("x-echo-x-jwt-payload"));
}

#[tokio::test]
async fn the_token_is_removed_unless_forward_original_token() {
    let rsa = rs256(0, "rsa");
    let token = rsa.sign(&claims("finn", &[]));
    let removed = serve(&request_authentication(&inline_jwks(&[&rsa]))).await;
    let res = get_with_token(removed, &token).await;
    assert_eq!(res.status, 200);
    assert!(!res.headers.contains_key("x-echo-authorization"));

    let rule = format!("{}\n    forwardOriginalToken: true", inline_jwks(&[&rsa]));
    let kept = serve(&request_authentication(&rule)).await;
    let res = get_with_token(kept, &token).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.headers["x-echo-authorization"],
        format!("Bearer {token}").as_str()
    );
}

/// A JWKS endpoint on a loopback port that counts its requests.
async fn jwks_server(body: String) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (body, counter) = (body.clone(), Arc::clone(&counter));
            let svc = hyper::service::service_fn(move |_req| {
                counter.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn a_jwks_uri_is_fetched_once_across_many_requests() {
    let rsa = rs256(0, "rsa");
    let (jwks_addr, hits) = jwks_server(jwks(&[&rsa])).await;
    let rule = format!("    jwksUri: http://{jwks_addr}/.well-known/jwks.json");
    let yaml = request_authentication(&rule) + REQUIRE_JWT;
    let addr = serve(&yaml).await;
    for i in 0..20 {
        let token = rsa.sign(&claims(&format!("user{i}"), &[]));
        let res = get_with_token(addr, &token).await;
        assert_eq!(res.status, 200, "request {i}: {}", res.body);
    }
    let res = get_with_token(addr, &rs256(1, "rsa").sign(&claims("mallory", &[]))).await;
    assert_eq!(
        (res.status, res.body.as_str()),
        (401, "Jwt verification fails")
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

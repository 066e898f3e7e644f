use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mesh_core::{
    CompiledMesh,
    authz::Claim,
    model::{JwtRule, PolicyScope, RequestAuthenticationPolicy},
};
use rsa::{RsaPrivateKey, pkcs1::EncodeRsaPrivateKey, traits::PublicKeyParts};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::Notify};
use tower::util::BoxCloneService;

use super::{
    jwks::{JwksSource, KeySet},
    location::Location,
    token::{BASE64URL, Jwt},
    *,
};
use crate::{body, error::error_to_response};

// === keys and tokens ===

const ISS: &str = "https://issuer.example";

/// A private key, the algorithm it signs with, and its public JWK.
struct Signer {
    alg: Algorithm,
    key: EncodingKey,
    kid: Option<String>,
    jwk: Value,
}

impl Signer {
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }

    fn with_kid(mut self, kid: Option<&str>) -> Self {
        self.kid = kid.map(str::to_owned);
        match kid {
            Some(k) => self.jwk["kid"] = json!(k),
            None => {
                self.jwk.as_object_mut().unwrap().remove("kid");
            }
        }
        self
    }
}

fn b64(bytes: &[u8]) -> String {
    BASE64URL.encode(bytes)
}

/// Two RSA keys, generated once per test binary (key generation is the slow part).
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

fn rsa(which: usize, alg: Algorithm, kid: &str) -> Signer {
    let key = &rsa_keys()[which];
    Signer {
        alg,
        key: EncodingKey::from_rsa_der(key.to_pkcs1_der().unwrap().as_bytes()),
        kid: Some(kid.into()),
        jwk: json!({"kty": "RSA", "kid": kid, "n": b64(&key.n().to_bytes_be()),
                    "e": b64(&key.e().to_bytes_be())}),
    }
}

fn es256(kid: &str) -> Signer {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = pair.public_key_raw();
    Signer {
        alg: Algorithm::ES256,
        key: EncodingKey::from_ec_der(&pair.serialize_der()),
        kid: Some(kid.into()),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid,
                    "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
    }
}

fn ed25519(kid: &str) -> Signer {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    Signer {
        alg: Algorithm::EdDSA,
        key: EncodingKey::from_ed_der(&pair.serialize_der()),
        kid: Some(kid.into()),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(pair.public_key_raw())}),
    }
}

fn hs256(kid: &str, secret: &[u8]) -> Signer {
    Signer {
        alg: Algorithm::HS256,
        key: EncodingKey::from_secret(secret),
        kid: Some(kid.into()),
        jwk: json!({"kty": "oct", "kid": kid, "k": b64(secret)}),
    }
}

fn jwks(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

fn now() -> u64 {
    unix_now()
}

fn claims(sub: &str) -> Value {
    json!({"iss": ISS, "sub": sub, "exp": now() + 3600})
}

fn unsigned(header: &Value, payload: &Value) -> String {
    format!(
        "{}.{}.c2ln",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    )
}

// === token parsing and checks ===

#[test]
fn malformed_tokens_fail_with_envoys_reasons() {
    let ok_header = json!({"alg": "RS256"});
    let cases = [
        ("a.b".to_owned(), JwtFailure::BadFormat),
        ("a.b.c.d".to_owned(), JwtFailure::BadFormat),
        ("!!.e30.c2ln".to_owned(), JwtFailure::HeaderBadBase64),
        (
            format!("{}.e30.c2ln", b64(b"[1")),
            JwtFailure::HeaderBadJson,
        ),
        (
            unsigned(&json!({"typ": "JWT"}), &json!({})),
            JwtFailure::HeaderBadAlg,
        ),
        (
            unsigned(&json!({"alg": "ES512"}), &json!({})),
            JwtFailure::HeaderNotImplementedAlg,
        ),
        (
            unsigned(&json!({"alg": "none"}), &json!({})),
            JwtFailure::HeaderNotImplementedAlg,
        ),
        (
            unsigned(&json!({"alg": "RS256", "kid": 1}), &json!({})),
            JwtFailure::HeaderBadKid,
        ),
        (
            format!("{}.!!.c2ln", b64(ok_header.to_string().as_bytes())),
            JwtFailure::PayloadBadBase64,
        ),
        (
            unsigned(&ok_header, &json!([1])),
            JwtFailure::PayloadBadJson,
        ),
        (
            unsigned(&ok_header, &json!({"iss": 1})),
            JwtFailure::IssNotString,
        ),
        (
            unsigned(&ok_header, &json!({"sub": true})),
            JwtFailure::SubNotString,
        ),
        (
            unsigned(&ok_header, &json!({"exp": "soon"})),
            JwtFailure::ExpNotInteger,
        ),
        (
            unsigned(&ok_header, &json!({"exp": -5})),
            JwtFailure::ExpOutOfRange,
        ),
        (
            unsigned(&ok_header, &json!({"nbf": "x"})),
            JwtFailure::NbfNotInteger,
        ),
        (
            unsigned(&ok_header, &json!({"aud": ["a", 2]})),
            JwtFailure::AudNotString,
        ),
        (
            unsigned(&ok_header, &json!({"aud": {"a": 1}})),
            JwtFailure::AudNotString,
        ),
    ];
    for (token, want) in cases {
        assert_eq!(Jwt::parse(&token).unwrap_err(), want, "{token}");
    }
    let bad_sig = format!("{}.e30.***", b64(ok_header.to_string().as_bytes()));
    assert_eq!(
        Jwt::parse(&bad_sig).unwrap_err(),
        JwtFailure::SignatureBadBase64
    );

    let jwt = Jwt::parse(&unsigned(
        &json!({"alg": "ES256", "kid": "k1"}),
        &json!({"iss": ISS, "sub": "bob", "aud": "a", "exp": 10, "nbf": 5}),
    ))
    .unwrap();
    assert_eq!(
        (
            jwt.alg,
            jwt.kid.as_deref(),
            jwt.iss.as_str(),
            jwt.sub.as_str()
        ),
        (Algorithm::ES256, Some("k1"), ISS, "bob")
    );
    assert_eq!(
        (jwt.audiences, jwt.exp, jwt.nbf),
        (vec!["a".to_owned()], 10, 5)
    );
}

#[test]
fn time_window_allows_sixty_seconds_of_skew() {
    let at = |exp: u64, nbf: u64| {
        Jwt::parse(&unsigned(
            &json!({"alg": "RS256"}),
            &json!({"exp": exp, "nbf": nbf}),
        ))
        .unwrap()
    };
    let now = 1_000_000;
    assert_eq!(at(now - 60, 0).check_time(now, 60), Ok(()));
    assert_eq!(
        at(now - 61, 0).check_time(now, 60),
        Err(JwtFailure::Expired)
    );
    assert_eq!(at(0, now + 60).check_time(now, 60), Ok(()));
    assert_eq!(
        at(0, now + 61).check_time(now, 60),
        Err(JwtFailure::NotYetValid)
    );
    // No `exp`: the token does not expire.
    assert_eq!(at(0, 0).check_time(now, 60), Ok(()));
}

#[test]
fn failures_answer_as_envoy() {
    assert_eq!(JwtFailure::Expired.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        JwtFailure::AudienceNotAllowed.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        JwtFailure::VerificationFail.to_string(),
        "Jwt verification fails"
    );
}

// === key sets and signatures ===

#[test]
fn key_sets_parse_as_istiod_accepts_them() {
    let rs = rsa(0, Algorithm::RS256, "r");
    assert!(KeySet::parse(&jwks(&[&rs])).is_ok());
    // A single key without `keys`.
    assert!(KeySet::parse(&rs.jwk.to_string()).is_ok());
    // Unusable keys are skipped when another one is usable.
    let mixed = json!({"keys": [{"kty": "XYZ"}, {"kty": "RSA", "n": "%%"}, rs.jwk]});
    assert!(KeySet::parse(&mixed.to_string()).is_ok());
    for (bad, why) in [
        ("{", "invalid JSON"),
        (r#"{"keys": {}}"#, "not an array"),
        (r#"{"other": 1}"#, "does not have [keys]"),
        (r#"{"keys": []}"#, "the set is empty"),
        (
            r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "AA"}]}"#,
            "[y] field is missing",
        ),
        (
            r#"{"keys": [{"kty": "RSA", "alg": "ES256", "n": "AQ", "e": "AQ"}]}"#,
            "[RS] or [PS]",
        ),
        (
            r#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AQ"}]}"#,
            "wrong length",
        ),
    ] {
        let err = KeySet::parse(bad).unwrap_err();
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn signatures_verify_with_the_key_of_the_tokens_kid() {
    let r0 = rsa(0, Algorithm::RS256, "r0");
    let r1 = rsa(1, Algorithm::RS256, "r1");
    let keys = KeySet::parse(&jwks(&[&r0, &r1])).unwrap();
    let verify = |token: String| keys.verify(&Jwt::parse(&token).unwrap());
    assert_eq!(verify(r0.sign(&claims("a"))), Ok(()));
    assert_eq!(verify(r1.sign(&claims("a"))), Ok(()));
    // Signed by key 1 but naming key 0: the signature does not verify.
    let forged = rsa(1, Algorithm::RS256, "r0");
    assert_eq!(
        verify(forged.sign(&claims("a"))),
        Err(JwtFailure::VerificationFail)
    );
    // A kid the set does not have.
    let unknown = rsa(0, Algorithm::RS256, "other");
    assert_eq!(
        verify(unknown.sign(&claims("a"))),
        Err(JwtFailure::KidAlgMismatch)
    );
    // No kid: every key is tried.
    let no_kid = rsa(1, Algorithm::RS256, "x").with_kid(None);
    assert_eq!(verify(no_kid.sign(&claims("a"))), Ok(()));
    // A key that names its alg only verifies that alg.
    let mut pinned = rsa(0, Algorithm::RS256, "p");
    pinned.jwk["alg"] = json!("RS384");
    let keys = KeySet::parse(&jwks(&[&pinned])).unwrap();
    let token = pinned.sign(&claims("a"));
    assert_eq!(
        keys.verify(&Jwt::parse(&token).unwrap()),
        Err(JwtFailure::KidAlgMismatch)
    );
}

#[test]
fn every_supported_algorithm_verifies() {
    let signers = [
        rsa(0, Algorithm::RS384, "rs384"),
        rsa(0, Algorithm::RS512, "rs512"),
        rsa(1, Algorithm::PS256, "ps256"),
        rsa(1, Algorithm::PS512, "ps512"),
        es256("es256"),
        ed25519("ed"),
        hs256("hs", b"a shared secret of enough length!"),
    ];
    let keys = KeySet::parse(&jwks(&signers.iter().collect::<Vec<_>>())).unwrap();
    for s in &signers {
        let token = s.sign(&claims("a"));
        assert_eq!(
            keys.verify(&Jwt::parse(&token).unwrap()),
            Ok(()),
            "{:?}",
            s.alg
        );
        // The same claims with another signature fail.
        let mut parts: Vec<&str> = token.split('.').collect();
        let other = signers
            .iter()
            .find(|o| o.alg != s.alg)
            .unwrap()
            .sign(&claims("b"));
        parts[2] = other.rsplit('.').next().unwrap();
        let tampered = Jwt::parse(&parts.join(".")).unwrap();
        assert_eq!(
            keys.verify(&tampered),
            Err(JwtFailure::VerificationFail),
            "{:?}",
            s.alg
        );
    }
}

// === where tokens are ===

fn parts(req: Request<()>) -> http::request::Parts {
    req.into_parts().0
}

fn extract(location: &Location, req: Request<()>) -> Vec<String> {
    let mut out = Vec::new();
    location.extract(&parts(req), &mut out);
    out
}

#[test]
fn tokens_are_found_where_the_rule_says() {
    let bearer = &super::location::default_locations()[0];
    let req = Request::get("/")
        .header("authorization", "Bearer  a.b.c")
        .body(())
        .unwrap();
    assert_eq!(extract(bearer, req), ["a.b.c"]);
    let req = Request::get("/")
        .header("authorization", "Basic dXNlcg==")
        .body(())
        .unwrap();
    assert!(extract(bearer, req).is_empty());

    let custom = Location::Header {
        name: http::HeaderName::from_static("x-jwt"),
        prefix: String::new(),
    };
    let req = Request::get("/")
        .header("x-jwt", "t1")
        .header("x-jwt", "t2")
        .body(())
        .unwrap();
    assert_eq!(extract(&custom, req), ["t1", "t2"]);

    let param = Location::Param("token".into());
    let req = Request::get("/p?a=1&token=x%2Ey.z&token=second")
        .body(())
        .unwrap();
    assert_eq!(extract(&param, req), ["x.y.z"]);

    let cookie = Location::Cookie("session".into());
    let req = Request::get("/")
        .header("cookie", "a=1; session=\"q.r.s\"")
        .header("cookie", "session=later")
        .body(())
        .unwrap();
    assert_eq!(extract(&cookie, req), ["q.r.s"]);
}

#[test]
fn removing_a_parameter_keeps_the_rest_of_the_query() {
    let param = Location::Param("access_token".into());
    let mut p = parts(
        Request::get("http://h/a/b?x=%20&access_token=t&y=2&access_token=u")
            .body(())
            .unwrap(),
    );
    param.remove(&mut p);
    assert_eq!(p.uri, "http://h/a/b?x=%20&y=2");
    let mut p = parts(Request::get("/a?access_token=t").body(()).unwrap());
    param.remove(&mut p);
    assert_eq!(p.uri, "/a");
}

// === claims ===

#[test]
fn authorization_sees_claims_as_istio_normalises_them() {
    let signer = hs256("k", b"another shared secret, long enough");
    let token = signer.sign(&json!({
        "iss": ISS, "sub": "alice", "aud": ["web", "api"], "azp": "cli",
        "groups": ["admin", "dev"], "scope": "read write", "n": 42, "ok": true,
        "nested": {"team": {"name": "core"}}, "nothing": null,
    }));
    let jwt = Jwt::parse(&token).unwrap();
    let auth = super::provider::request_auth(&jwt);
    assert_eq!(auth.principal, format!("{ISS}/alice"));
    assert_eq!(auth.audiences, ["web", "api"]);
    assert_eq!(auth.presenter.as_deref(), Some("cli"));
    let c = &auth.claims;
    assert_eq!(c["groups"], Claim::List(vec!["admin".into(), "dev".into()]));
    assert_eq!(c["scope"], Claim::List(vec!["read".into(), "write".into()]));
    assert_eq!(
        (&c["n"], &c["ok"]),
        (&Claim::from("42"), &Claim::from("true"))
    );
    let Claim::Map(nested) = &c["nested"] else {
        panic!("{c:?}")
    };
    assert!(matches!(&nested["team"], Claim::Map(m) if m["name"] == Claim::from("core")));
    assert!(!c.contains_key("nothing"));
}

// === the layer ===

type App = BoxCloneService<Request<MeshBody>, Response<MeshBody>, BoxError>;

/// Answers 200 with `x-principal` (the RequestAuth it got), `x-uri`, and `x-echo-<h>` for
/// every request header.
fn app() -> App {
    BoxCloneService::new(tower::service_fn(|req: Request<MeshBody>| async move {
        let mut res = Response::new(body::empty());
        let h = res.headers_mut();
        if let Some(auth) = req.extensions().get::<RequestAuth>() {
            h.insert(
                "x-principal",
                HeaderValue::try_from(auth.principal.as_str()).unwrap(),
            );
        }
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
    }))
}

fn mesh_with(rules: Vec<JwtRule>) -> MeshHandle {
    MeshHandle::new(CompiledMesh {
        version: 1,
        root_namespace: "istio-system".into(),
        request_authentications: vec![RequestAuthenticationPolicy {
            name: "default/jwt".into(),
            scope: PolicyScope {
                namespace: "default".into(),
                selector: None,
            },
            jwt_rules: rules,
        }],
        ..CompiledMesh::default()
    })
}

fn inline(issuer: &str, jwks: String) -> JwtRule {
    JwtRule {
        issuer: issuer.into(),
        jwks: Some(jwks),
        ..JwtRule::default()
    }
}

/// Sends `req` through the layer over [`app`]; errors as the edge answers them. Boxed as a
/// `Send` future that does not name the service: an `async` block holding it cannot be
/// spawned (rustc #64552).
fn send(
    layer: &RequestAuthenticationLayer,
    req: Request<MeshBody>,
) -> Pin<Box<dyn Future<Output = Response<MeshBody>> + Send + 'static>> {
    let mut svc = layer.layer(app());
    // The layer over `service_fn` is always ready.
    let ready = svc.poll_ready(&mut Context::from_waker(std::task::Waker::noop()));
    assert!(matches!(ready, Poll::Ready(Ok(()))));
    let fut = svc.call(req);
    Box::pin(async move {
        match fut.await {
            Ok(res) => res,
            Err(e) => error_to_response(e, false),
        }
    })
}

async fn text(res: Response<MeshBody>) -> String {
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

fn get(uri: &str, token: Option<&str>) -> Request<MeshBody> {
    let mut req = Request::get(uri).body(body::empty()).unwrap();
    if let Some(t) = token {
        req.headers_mut().insert(
            "authorization",
            HeaderValue::try_from(format!("Bearer {t}")).unwrap(),
        );
    }
    req
}

#[tokio::test]
async fn without_a_policy_requests_pass_and_forged_auth_is_dropped() {
    let layer = RequestAuthenticationLayer::new(MeshHandle::new(CompiledMesh::default()));
    let mut req = get("/", Some("not.a.token"));
    req.extensions_mut().insert(RequestAuth {
        principal: "forged/me".into(),
        issuer: "forged".into(),
        subject: "me".into(),
        audiences: vec![],
        presenter: None,
        claims: Default::default(),
    });
    let res = send(&layer, req).await;
    assert_eq!(res.status(), 200);
    assert!(!res.headers().contains_key("x-principal"));
}

#[tokio::test]
async fn output_headers_are_removed_from_incoming_requests() {
    let rs = rsa(0, Algorithm::RS256, "r");
    let rule = JwtRule {
        output_payload_to_header: Some("x-jwt-payload".into()),
        output_claim_to_headers: vec![("x-sub".into(), "sub".into())],
        ..inline(ISS, jwks(&[&rs]))
    };
    let layer = RequestAuthenticationLayer::new(mesh_with(vec![rule]));
    let mut req = get("/", None);
    req.headers_mut()
        .insert("x-jwt-payload", HeaderValue::from_static("forged"));
    req.headers_mut()
        .insert("x-sub", HeaderValue::from_static("root"));
    let res = send(&layer, req).await;
    assert_eq!(res.status(), 200);
    assert!(!res.headers().contains_key("x-echo-x-jwt-payload"));
    assert!(!res.headers().contains_key("x-echo-x-sub"));
}

#[tokio::test]
async fn refusals_carry_the_reason_and_the_challenge() {
    let rs = rsa(0, Algorithm::RS256, "r");
    let rule = JwtRule {
        audiences: vec!["https://api.example/".into()],
        ..inline(ISS, jwks(&[&rs]))
    };
    let layer = RequestAuthenticationLayer::new(mesh_with(vec![rule]));
    let aud = |aud: &str| json!({"iss": ISS, "sub": "a", "aud": aud, "exp": now() + 60});

    // The audience compares without scheme and trailing slash.
    let res = send(
        &layer,
        get("http://h.example/x", Some(&rs.sign(&aud("api.example")))),
    )
    .await;
    assert_eq!(res.status(), 200);

    let res = send(
        &layer,
        get("http://h.example/x?y=1", Some(&rs.sign(&aud("other")))),
    )
    .await;
    assert_eq!(res.status(), 403);
    assert_eq!(res.headers()["x-mesh-error"], "jwt-invalid");
    assert_eq!(
        res.headers()["www-authenticate"],
        r#"Bearer realm="http://h.example/x?y=1", error="invalid_token""#
    );
    assert_eq!(text(res).await, "Audiences in Jwt are not allowed");

    let expired = json!({"iss": ISS, "sub": "a", "aud": "api.example", "exp": now() - 120});
    let res = send(&layer, get("/x", Some(&rs.sign(&expired)))).await;
    assert_eq!(res.status(), 401);
    assert_eq!(text(res).await, "Jwt is expired");
}

#[tokio::test]
async fn an_unknown_issuer_is_reported_only_when_nothing_else_failed() {
    let a = rsa(0, Algorithm::RS256, "a");
    let b = rsa(1, Algorithm::RS256, "b");
    let rule_b = JwtRule {
        from_headers: vec![("x-b".into(), String::new())],
        ..inline("https://b.example", jwks(&[&b]))
    };
    let layer = RequestAuthenticationLayer::new(mesh_with(vec![inline(ISS, jwks(&[&a])), rule_b]));
    let b_claims = json!({"iss": "https://b.example", "sub": "s", "exp": now() + 60});

    // B's token where only A looks: A does not know its issuer.
    let res = send(&layer, get("/", Some(&b.sign(&b_claims)))).await;
    assert_eq!(
        (res.status().as_u16(), text(res).await.as_str()),
        (401, "Jwt issuer is not configured")
    );

    // B's token where B looks passes; principal is B's.
    let mut req = get("/", None);
    req.headers_mut()
        .insert("x-b", HeaderValue::try_from(b.sign(&b_claims)).unwrap());
    let res = send(&layer, req).await;
    assert_eq!(res.headers()["x-principal"], "https://b.example/s");

    // An expired A token (A's reason) next to an unknown-issuer one in B's header.
    let mut req = get(
        "/",
        Some(&a.sign(&json!({"iss": ISS, "sub": "s", "exp": 1}))),
    );
    req.headers_mut()
        .insert("x-b", HeaderValue::try_from(a.sign(&claims("s"))).unwrap());
    let res = send(&layer, req).await;
    assert_eq!(
        (res.status().as_u16(), text(res).await.as_str()),
        (401, "Jwt is expired")
    );
}

#[tokio::test]
async fn every_token_a_rule_finds_must_verify() {
    let rs = rsa(0, Algorithm::RS256, "r");
    let layer = RequestAuthenticationLayer::new(mesh_with(vec![inline(ISS, jwks(&[&rs]))]));
    let good = rs.sign(&claims("a"));
    let res = send(&layer, get(&format!("/?access_token={good}"), Some(&good))).await;
    assert_eq!(res.status(), 200);
    // Both locations are cleared (forwardOriginalToken: false).
    assert!(!res.headers().contains_key("x-echo-authorization"));
    assert_eq!(res.headers()["x-uri"], "/");

    let res = send(&layer, get("/?access_token=bad", Some(&good))).await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        text(res).await,
        "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
    );
}

#[tokio::test]
async fn cors_preflights_pass_without_a_check() {
    let rs = rsa(0, Algorithm::RS256, "r");
    let layer = RequestAuthenticationLayer::new(mesh_with(vec![inline(ISS, jwks(&[&rs]))]));
    let mut req = get("/", Some("garbage"));
    *req.method_mut() = http::Method::OPTIONS;
    req.headers_mut()
        .insert("origin", HeaderValue::from_static("https://web.example"));
    req.headers_mut().insert(
        "access-control-request-method",
        HeaderValue::from_static("POST"),
    );
    assert_eq!(send(&layer, req).await.status(), 200);
}

#[tokio::test]
async fn a_bad_inline_key_set_refuses_its_issuers_tokens() {
    let rs = rsa(0, Algorithm::RS256, "r");
    let layer =
        RequestAuthenticationLayer::new(mesh_with(vec![inline(ISS, r#"{"keys":[]}"#.into())]));
    let res = send(&layer, get("/", Some(&rs.sign(&claims("a"))))).await;
    assert_eq!(res.status(), 401);
    assert_eq!(text(res).await, "Jwks doesn't have any valid public key");
    // Requests without a token still pass.
    assert_eq!(send(&layer, get("/", None)).await.status(), 200);
}

// === fetching key sets ===

/// A loopback server for `/.well-known/openid-configuration` (pointing at `/keys`) and
/// `/keys`, whose answer to `/keys` a test can change; counts the `/keys` requests and can
/// hold them until released.
/// Permits of the server's gate: a test that takes them all holds every `/keys` answer.
const HELD_PERMITS: u32 = 1 << 16;

struct KeyServer {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    hit: Arc<Notify>,
    reply: Arc<Mutex<(u16, String)>>,
    held: Arc<tokio::sync::Semaphore>,
}

impl KeyServer {
    async fn start(body: String) -> KeyServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = KeyServer {
            addr,
            hits: Arc::default(),
            hit: Arc::default(),
            reply: Arc::new(Mutex::new((200, body))),
            held: Arc::new(tokio::sync::Semaphore::new(HELD_PERMITS as usize)),
        };
        let (hits, hit, reply, held) = (
            server.hits.clone(),
            server.hit.clone(),
            server.reply.clone(),
            server.held.clone(),
        );
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (hits, hit, reply, held) =
                    (hits.clone(), hit.clone(), reply.clone(), held.clone());
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (hits, hit, reply, held) =
                        (hits.clone(), hit.clone(), reply.clone(), held.clone());
                    async move {
                        let (status, body) = if req.uri().path() == "/keys" {
                            hits.fetch_add(1, Ordering::SeqCst);
                            hit.notify_one();
                            drop(held.acquire().await.unwrap());
                            reply.lock().unwrap().clone()
                        } else {
                            (
                                200,
                                json!({"jwks_uri": format!("http://{addr}/keys")}).to_string(),
                            )
                        };
                        let mut res = Response::new(Full::new(Bytes::from(body)));
                        *res.status_mut() = StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(res)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
                );
            }
        });
        server
    }

    fn uri(&self) -> String {
        format!("http://{}/keys", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn set(&self, status: u16, body: String) {
        *self.reply.lock().unwrap() = (status, body);
    }
}

fn remote(uri: &str) -> JwtRule {
    JwtRule {
        issuer: ISS.into(),
        jwks_uri: Some(uri.into()),
        ..JwtRule::default()
    }
}

#[tokio::test]
async fn concurrent_first_requests_share_one_fetch() {
    let rs = rsa(0, Algorithm::RS256, "r");
    let server = KeyServer::start(jwks(&[&rs])).await;
    let hold = server.held.acquire_many(HELD_PERMITS).await.unwrap();
    let layer = RequestAuthenticationLayer::new(mesh_with(vec![remote(&server.uri())]));
    let token = rs.sign(&claims("a"));
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let (layer, token) = (layer.clone(), token.clone());
            tokio::spawn(async move { send(&layer, get("/", Some(&token))).await.status() })
        })
        .collect();
    // The fetch is in flight (held by the server) while the requests wait for it.
    server.hit.notified().await;
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
    drop(hold);
    for r in requests {
        assert_eq!(r.await.unwrap(), 200);
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn key_sets_refresh_after_the_interval_while_old_keys_serve() {
    let old = rsa(0, Algorithm::RS256, "old");
    let new = rsa(1, Algorithm::RS256, "new");
    let server = KeyServer::start(jwks(&[&old])).await;
    let layer = RequestAuthenticationLayer::new(mesh_with(vec![remote(&server.uri())]));
    for _ in 0..5 {
        assert_eq!(
            send(&layer, get("/", Some(&old.sign(&claims("a")))))
                .await
                .status(),
            200
        );
    }
    assert_eq!(server.hits(), 1);

    // Twenty minutes later the issuer has rotated its key.
    server.set(200, jwks(&[&new]));
    tokio::time::pause();
    tokio::time::advance(jwks::DEFAULT_REFRESH_INTERVAL).await;
    tokio::time::resume();
    // The stale keys answer at once; the refresh runs behind.
    assert_eq!(
        send(&layer, get("/", Some(&old.sign(&claims("a")))))
            .await
            .status(),
        200
    );
    let entry = layer.shared.jwks.entry(&JwksSource::Uri(server.uri()));
    entry.wait().await;
    assert_eq!(server.hits(), 2);
    assert_eq!(
        send(&layer, get("/", Some(&new.sign(&claims("a")))))
            .await
            .status(),
        200
    );
    assert_eq!(
        send(&layer, get("/", Some(&old.sign(&claims("a")))))
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn a_failed_fetch_refuses_tokens_until_a_retry_succeeds() {
    let rs = rsa(0, Algorithm::RS256, "r");
    let server = KeyServer::start(String::new()).await;
    server.set(503, "down".into());
    let layer = RequestAuthenticationLayer::new(mesh_with(vec![remote(&server.uri())]));
    let token = rs.sign(&claims("a"));
    let res = send(&layer, get("/", Some(&token))).await;
    assert_eq!(res.status(), 401);
    assert_eq!(text(res).await, "Jwt verification fails");
    // Within the back-off no new fetch is made; requests without a token pass.
    assert_eq!(send(&layer, get("/", Some(&token))).await.status(), 401);
    assert_eq!(send(&layer, get("/", None)).await.status(), 200);
    assert_eq!(server.hits(), 1);

    // A body over the cap is a failed fetch too.
    server.set(200, " ".repeat(jwks::MAX_JWKS_BYTES + 1));
    tokio::time::pause();
    tokio::time::advance(std::time::Duration::from_secs(2)).await;
    tokio::time::resume();
    assert_eq!(send(&layer, get("/", Some(&token))).await.status(), 401);
    assert_eq!(server.hits(), 2);

    server.set(200, jwks(&[&rs]));
    tokio::time::pause();
    tokio::time::advance(std::time::Duration::from_secs(3)).await;
    tokio::time::resume();
    assert_eq!(send(&layer, get("/", Some(&token))).await.status(), 200);
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn without_jwks_the_issuers_discovery_document_is_used() {
    let rs = rsa(0, Algorithm::RS256, "r");
    let server = KeyServer::start(jwks(&[&rs])).await;
    let issuer = format!("http://{}", server.addr);
    let layer = RequestAuthenticationLayer::new(mesh_with(vec![JwtRule {
        issuer: issuer.clone(),
        ..JwtRule::default()
    }]));
    let token = rs.sign(&json!({"iss": issuer, "sub": "d", "exp": now() + 60}));
    let res = send(&layer, get("/", Some(&token))).await;
    assert_eq!(res.headers()["x-principal"], format!("{issuer}/d").as_str());
    assert_eq!(server.hits(), 1);
}

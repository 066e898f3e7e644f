//! JSON Web Key Sets: the keys of an issuer, from the rule's inline
//! [`jwks`](https://istio.io/latest/docs/reference/config/security/request_authentication/#JWTRule-jwks)
//! or fetched from its
//! [`jwksUri`](https://istio.io/latest/docs/reference/config/security/request_authentication/#JWTRule-jwks_uri)
//! (or, with neither, from the issuer's OpenID discovery document, as istiod does).
//!
//! Fetching is istiod's model, not Envoy's per-request one: the keys are fetched once, kept, and
//! refreshed every [`DEFAULT_REFRESH_INTERVAL`] (`PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`) while the
//! old keys keep serving. One fetch per URI is in flight at a time; requests that need keys
//! that were never fetched wait for it (bounded by the fetch timeout), the others never wait.
//! A failed first fetch makes the issuer's tokens fail (istiod's fallback key does the same),
//! and is retried with back-off from 1 s up to the refresh interval.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, crypto};
use serde_json::{Map, Value};
use tokio::{net::TcpStream, sync::watch, time::Instant};

use super::token::{BASE64URL, Jwt, JwtFailure};
use base64::Engine;

/// istiod's `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL` default.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(20 * 60);
/// The JWT rule's `timeout` default: how long one fetch may take.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest key set body read; a larger one is a failed fetch.
pub const MAX_JWKS_BYTES: usize = 1 << 20;
/// The first retry delay after a failed fetch; it doubles up to the refresh interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

// === KeySet ===

/// What a JWK can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    P521,
    Oct,
    Ed25519,
}

impl KeyKind {
    /// Whether a key of this kind verifies `alg` signatures.
    fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        matches!(
            (self, alg),
            (KeyKind::Rsa, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
                | (KeyKind::P256, ES256)
                | (KeyKind::P384, ES384)
                | (KeyKind::Oct, HS256 | HS384 | HS512)
                | (KeyKind::Ed25519, EdDSA)
        )
    }
}

struct Key {
    kid: Option<String>,
    alg: Option<String>,
    kind: KeyKind,
    decoding: DecodingKey,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The usable keys of a JWKS.
#[derive(Debug)]
pub(super) struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// Parses a key set (`{"keys": [...]}`) or a single key (`{"kty": ...}`), as istiod accepts
    /// them. Keys that cannot be used (unknown `kty`, bad fields) are skipped, as Envoy does;
    /// a set without any usable key is an error that says why the keys were refused.
    pub(super) fn parse(json: &str) -> Result<KeySet, String> {
        let value: Value =
            serde_json::from_str(json).map_err(|e| format!("Jwks is an invalid JSON: {e}"))?;
        let object = value.as_object().ok_or("Jwks is not a JSON object")?;
        let keys: Vec<&Value> = match object.get("keys") {
            Some(Value::Array(keys)) => keys.iter().collect(),
            Some(_) => return Err("[keys] in Jwks is not an array".into()),
            None if object.contains_key("kty") => vec![&value],
            None => return Err("Jwks does not have [keys] field".into()),
        };
        let mut usable = Vec::new();
        let mut refused = Vec::new();
        for (i, key) in keys.into_iter().enumerate() {
            match parse_key(key) {
                Ok(k) => usable.push(k),
                Err(e) => refused.push(format!("key {i}: {e}")),
            }
        }
        if usable.is_empty() {
            let why = if refused.is_empty() {
                "the set is empty".to_owned()
            } else {
                refused.join("; ")
            };
            return Err(format!("Jwks doesn't have any valid public key ({why})"));
        }
        if !refused.is_empty() {
            tracing::debug!("JWKS: skipped keys: {}", refused.join("; "));
        }
        Ok(KeySet { keys: usable })
    }

    /// Verifies the token's signature as jwt_verify_lib does: a key is tried when its `kid`
    /// (if both have one) and its `alg` (if it has one) match the token's; the token passes
    /// when one such key of the right type verifies it.
    pub(super) fn verify(&self, jwt: &Jwt) -> Result<(), JwtFailure> {
        let mut matched = false;
        for key in &self.keys {
            if let (Some(want), Some(have)) = (&jwt.kid, &key.kid)
                && want != have
            {
                continue;
            }
            if key.alg.as_ref().is_some_and(|a| *a != jwt.alg_name) {
                continue;
            }
            matched = true;
            if key.kind.fits(jwt.alg)
                && crypto::verify(
                    &jwt.signature_b64,
                    jwt.signed.as_bytes(),
                    &key.decoding,
                    jwt.alg,
                )
                .unwrap_or(false)
            {
                return Ok(());
            }
        }
        Err(if matched {
            JwtFailure::VerificationFail
        } else {
            JwtFailure::KidAlgMismatch
        })
    }
}

fn parse_key(value: &Value) -> Result<Key, String> {
    let obj = value.as_object().ok_or("not a JSON object")?;
    let opt = |f: &str| -> Result<Option<String>, String> {
        match obj.get(f) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("[{f}] is not a string")),
        }
    };
    let kty = opt("kty")?.ok_or("[kty] is missing")?;
    let kid = opt("kid")?;
    let alg = opt("alg")?;
    let field = |f: &str| -> Result<Vec<u8>, String> {
        let s = opt(f)?.ok_or_else(|| format!("[{f}] field is missing for a {kty} key"))?;
        BASE64URL
            .decode(s)
            .map_err(|_| format!("[{f}] of a {kty} key is not base64url"))
    };
    let alg_starts = |prefixes: &[&str]| {
        alg.as_deref()
            .is_none_or(|a| prefixes.iter().any(|p| a.starts_with(p)))
    };
    let (kind, decoding) = match kty.as_str() {
        "RSA" => {
            if !alg_starts(&["RS", "PS"]) {
                return Err("[alg] is not started with [RS] or [PS] for an RSA key".into());
            }
            let (n, e) = (field("n")?, field("e")?);
            (KeyKind::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        "EC" => {
            if !alg_starts(&["ES"]) {
                return Err("[alg] is not started with [ES] for an EC key".into());
            }
            let kind = match opt("crv")?.as_deref() {
                Some("P-256") => KeyKind::P256,
                Some("P-384") => KeyKind::P384,
                Some("P-521") => KeyKind::P521,
                other => return Err(format!("[crv] {other:?} is not supported for an EC key")),
            };
            let mut point = vec![0x04];
            point.extend(field("x")?);
            point.extend(field("y")?);
            (kind, DecodingKey::from_ec_der(&point))
        }
        "oct" => {
            if !alg_starts(&["HS"]) {
                return Err("[alg] does not start with [HS] for an HMAC key".into());
            }
            (KeyKind::Oct, DecodingKey::from_secret(&field("k")?))
        }
        "OKP" => {
            if alg.as_deref().is_some_and(|a| a != "EdDSA") {
                return Err("[alg] is not [EdDSA] for an OKP key".into());
            }
            if opt("crv")?.as_deref() != Some("Ed25519") {
                return Err("[crv] field is not supported for an OKP key".into());
            }
            let x = field("x")?;
            if x.len() != 32 {
                return Err("Jwks OKP [x] field is wrong length.".into());
            }
            (KeyKind::Ed25519, DecodingKey::from_ed_der(&x))
        }
        other => return Err(format!("[kty] {other:?} is not supported")),
    };
    Ok(Key {
        kid,
        alg,
        kind,
        decoding,
    })
}

// === the fetch cache ===

/// Where a remote key set comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum JwksSource {
    /// `jwksUri`.
    Uri(String),
    /// No `jwks` nor `jwksUri`: the `jwks_uri` of `<issuer>/.well-known/openid-configuration`.
    Discovery(String),
}

impl fmt::Display for JwksSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwksSource::Uri(u) => f.write_str(u),
            JwksSource::Discovery(iss) => write!(f, "{} (OpenID discovery)", discovery_uri(iss)),
        }
    }
}

/// Fetch settings shared by the entries of a cache.
#[derive(Debug, Clone, Copy)]
pub(super) struct FetchSettings {
    pub(super) refresh: Duration,
    pub(super) timeout: Duration,
}

/// The remote key sets of one layer, by source; kept across config versions so that a reload
/// does not refetch.
#[derive(Debug)]
pub(super) struct JwksCache {
    settings: FetchSettings,
    entries: Mutex<HashMap<JwksSource, Arc<JwksEntry>>>,
}

impl JwksCache {
    pub(super) fn new(settings: FetchSettings) -> Self {
        JwksCache {
            settings,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn settings(&self) -> FetchSettings {
        self.settings
    }

    /// The entry of `source`, created on first use.
    pub(super) fn entry(&self, source: &JwksSource) -> Arc<JwksEntry> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(entries.entry(source.clone()).or_insert_with(|| {
            Arc::new(JwksEntry {
                source: source.clone(),
                settings: self.settings,
                state: Mutex::new(State::default()),
                done: watch::Sender::new(0),
            })
        }))
    }

    /// Forgets the sources a new config no longer uses.
    pub(super) fn retain(&self, used: &HashSet<JwksSource>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|source, _| used.contains(source));
    }
}

#[derive(Debug, Default)]
struct State {
    keys: Option<Arc<KeySet>>,
    fetched_at: Option<Instant>,
    in_flight: bool,
    /// No new fetch before this instant (after a failure).
    retry_at: Option<Instant>,
    backoff: Duration,
}

/// One remote key set: the keys last fetched, and the fetch in flight.
#[derive(Debug)]
pub(super) struct JwksEntry {
    source: JwksSource,
    settings: FetchSettings,
    state: Mutex<State>,
    /// Bumped when a fetch completes.
    done: watch::Sender<u64>,
}

/// What a request can use now.
#[derive(Debug)]
pub(super) enum Keys {
    Ready(Arc<KeySet>),
    /// A fetch is in flight and there are no keys yet: [`JwksEntry::wait`], then
    /// [`JwksEntry::settled`].
    Pending,
    /// The keys could not be fetched (the warning was logged).
    Failed,
}

impl JwksEntry {
    /// The keys to verify with; starts a fetch when the keys are missing or older than the
    /// refresh interval and none is in flight (stale keys keep serving meanwhile).
    pub(super) fn keys(self: &Arc<Self>) -> Keys {
        let now = Instant::now();
        let mut st = self.lock();
        let may_start = !st.in_flight && st.retry_at.is_none_or(|t| now >= t);
        match st.keys.clone() {
            Some(keys) => {
                let stale = st
                    .fetched_at
                    .is_none_or(|t| now.duration_since(t) >= self.settings.refresh);
                if stale && may_start {
                    self.start(&mut st);
                }
                Keys::Ready(keys)
            }
            None if st.in_flight => Keys::Pending,
            None if may_start && self.start(&mut st) => Keys::Pending,
            None => Keys::Failed,
        }
    }

    pub(super) fn source(&self) -> &JwksSource {
        &self.source
    }

    /// Starts the first fetch ahead of the first request (when a config version is compiled).
    pub(super) fn prefetch(self: &Arc<Self>) {
        let mut st = self.lock();
        if st.keys.is_none() && !st.in_flight {
            self.start(&mut st);
        }
    }

    /// Waits until no fetch is in flight.
    pub(super) async fn wait(&self) {
        let mut rx = self.done.subscribe();
        while self.lock().in_flight {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// The keys after [`wait`](Self::wait): never starts a fetch.
    pub(super) fn settled(&self) -> Option<Arc<KeySet>> {
        self.lock().keys.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawns the fetch; false without a tokio runtime to run it on.
    fn start(self: &Arc<Self>, st: &mut State) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        st.in_flight = true;
        let entry = Arc::clone(self);
        runtime.spawn(async move {
            let result = fetch_keys(&entry.source, entry.settings.timeout).await;
            entry.complete(result);
        });
        true
    }

    fn complete(&self, result: Result<KeySet, String>) {
        let now = Instant::now();
        let mut st = self.lock();
        st.in_flight = false;
        match result {
            Ok(keys) => {
                tracing::debug!(source = %self.source, keys = keys.keys.len(), "JWKS fetched");
                st.keys = Some(Arc::new(keys));
                st.fetched_at = Some(now);
                st.retry_at = None;
                st.backoff = Duration::ZERO;
            }
            Err(e) => {
                st.backoff = (st.backoff * 2).clamp(FIRST_RETRY, self.settings.refresh);
                st.retry_at = Some(now + st.backoff);
                if st.keys.is_some() {
                    tracing::warn!(
                        "RequestAuthentication: refreshing the JWKS of {} failed: {e}; the keys \
                         fetched before keep serving, retrying in {:?}",
                        self.source,
                        st.backoff
                    );
                } else {
                    tracing::warn!(
                        "RequestAuthentication: fetching the JWKS of {} failed: {e}; tokens of \
                         this issuer are refused (401) until a fetch succeeds, retrying in {:?}; \
                         check that the URI answers 200 with a JSON Web Key Set",
                        self.source,
                        st.backoff
                    );
                }
            }
        }
        drop(st);
        self.done.send_modify(|n| *n += 1);
    }
}

// === fetching ===

fn discovery_uri(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

async fn fetch_keys(source: &JwksSource, timeout: Duration) -> Result<KeySet, String> {
    let fetch = async {
        let uri = match source {
            JwksSource::Uri(u) => u.clone(),
            JwksSource::Discovery(issuer) => {
                let doc_uri = discovery_uri(issuer);
                let doc = http_get(&doc_uri).await?;
                let doc: Map<String, Value> = serde_json::from_slice(&doc)
                    .map_err(|e| format!("{doc_uri}: not a JSON object: {e}"))?;
                doc.get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{doc_uri} has no `jwks_uri`"))?
                    .to_owned()
            }
        };
        let body = http_get(&uri).await?;
        let text =
            std::str::from_utf8(&body).map_err(|_| format!("{uri}: the body is not UTF-8"))?;
        KeySet::parse(text).map_err(|e| format!("{uri}: {e}"))
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

/// `GET uri` over HTTP/1.1 (plain, or TLS verified against the webpki roots); the body of a
/// 200, up to [`MAX_JWKS_BYTES`].
async fn http_get(uri: &str) -> Result<Bytes, String> {
    let parsed: Uri = uri
        .parse()
        .map_err(|e| format!("{uri} is not a URI: {e}"))?;
    let https = match parsed.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(format!(
                "{uri}: only http:// and https:// URIs can be fetched"
            ));
        }
    };
    let host = parsed
        .host()
        .ok_or_else(|| format!("{uri} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = match parsed.port_u16() {
        Some(p) if parsed.host().is_some_and(|h| h.starts_with('[')) => format!("[{host}]:{p}"),
        Some(p) => format!("{host}:{p}"),
        None if host.contains(':') => format!("[{host}]"),
        None => host.clone(),
    };
    let req = Request::get(parsed.path_and_query().map_or("/", |p| p.as_str()))
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "mesh")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("{uri}: {e}"))?;
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    if https {
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("{uri}: {host} is not a server name: {e}"))?;
        let tls = tls_connector()?
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {host}:{port}: {e}"))?;
        send(TokioIo::new(tls), req, uri).await
    } else {
        send(TokioIo::new(tcp), req, uri).await
    }
}

async fn send<T>(io: T, req: Request<Empty<Bytes>>, uri: &str) -> Result<Bytes, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("{uri}: {e}"))?;
    // Ends when the response is read and `sender` is dropped.
    tokio::spawn(conn);
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{uri}: {e}"))?;
    if res.status() != StatusCode::OK {
        return Err(format!("{uri} answered {}", res.status()));
    }
    Limited::new(res.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| format!("reading {uri} (at most {MAX_JWKS_BYTES} bytes): {e}"))
}

/// rustls with the ring provider and the webpki (Mozilla) roots, built once.
fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS client configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
        .map(tokio_rustls::TlsConnector::from)
}

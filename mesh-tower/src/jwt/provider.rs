//! One [JWTRule](https://istio.io/latest/docs/reference/config/security/request_authentication/#JWTRule)
//! compiled for the request path (Envoy's `JwtProvider`): where its tokens are, the checks a
//! token must pass, its keys, and what a verified token adds to the request.

use std::{collections::BTreeMap, sync::Arc};

use http::{HeaderName, HeaderValue, request::Parts};
use mesh_core::{
    authz::{Claim, Claims},
    model::JwtRule,
};
use serde_json::{Map, Value};

use super::{
    RequestAuth,
    jwks::{JwksCache, JwksEntry, JwksSource, KeySet, Keys},
    location::{Location, default_locations},
    token::{Jwt, JwtFailure},
};

/// Envoy's default clock skew for `exp` and `nbf`, in seconds.
pub(super) const CLOCK_SKEW_SECS: u64 = 60;

/// Claims whose string value is a space-separated list, split before authorization sees them
/// (Istio's default `spaceDelimitedClaims`).
const SPACE_DELIMITED_CLAIMS: [&str; 2] = ["scope", "permission"];

/// Where a rule's keys come from.
#[derive(Debug)]
pub(super) enum KeySource {
    /// Inline `jwks`, parsed when the config version was compiled; `Err` when it has no
    /// usable key (logged then).
    Inline(Result<Arc<KeySet>, String>),
    /// `jwksUri` (or OpenID discovery), fetched and cached.
    Remote(Arc<JwksEntry>),
}

/// A JWT rule, ready for requests.
#[derive(Debug)]
pub(super) struct Provider {
    /// `namespace/name` of the RequestAuthentication, for logs.
    pub(super) policy: String,
    pub(super) issuer: String,
    /// `audiences`, normalised as jwt_verify_lib compares them; empty accepts any `aud`.
    audiences: Vec<String>,
    locations: Vec<Location>,
    pub(super) keys: KeySource,
    output_payload: Option<HeaderName>,
    output_claims: Vec<(HeaderName, String)>,
    forward: bool,
}

/// The tokens a provider found in a request, parsed.
#[derive(Debug)]
pub(super) struct Found {
    pub(super) provider: usize,
    /// `(location index, parse result)` per token.
    pub(super) tokens: Vec<(usize, Result<Jwt, JwtFailure>)>,
}

impl Provider {
    /// Compiles `rule` of `policy`; problems (a bad header name, a bad inline JWKS) are pushed
    /// to `warnings` and make the part they concern inert or failing, never the whole rule.
    pub(super) fn compile(
        policy: &str,
        rule: &JwtRule,
        cache: &JwksCache,
        warnings: &mut Vec<String>,
    ) -> Provider {
        let mut header = |name: &str, what: &str| match HeaderName::try_from(name) {
            Ok(h) => Some(h),
            Err(_) => {
                warnings.push(format!(
                    "{policy}: issuer {}: {what} {name:?} is not a valid header name; it is \
                     ignored",
                    rule.issuer
                ));
                None
            }
        };
        let mut locations = Vec::new();
        for (name, prefix) in &rule.from_headers {
            if let Some(name) = header(name, "fromHeaders") {
                locations.push(Location::Header {
                    name,
                    prefix: prefix.clone(),
                });
            }
        }
        locations.extend(rule.from_params.iter().cloned().map(Location::Param));
        locations.extend(rule.from_cookies.iter().cloned().map(Location::Cookie));
        if rule.from_headers.is_empty()
            && rule.from_params.is_empty()
            && rule.from_cookies.is_empty()
        {
            locations = default_locations();
        }
        let output_payload = rule
            .output_payload_to_header
            .as_deref()
            .filter(|h| !h.is_empty())
            .and_then(|h| header(h, "outputPayloadToHeader"));
        let output_claims = rule
            .output_claim_to_headers
            .iter()
            .filter_map(|(h, claim)| Some((header(h, "outputClaimToHeaders")?, claim.clone())))
            .collect();
        let keys = match (&rule.jwks, &rule.jwks_uri) {
            (Some(jwks), _) if !jwks.is_empty() => {
                let parsed = KeySet::parse(jwks).map(Arc::new);
                if let Err(e) = &parsed {
                    warnings.push(format!(
                        "{policy}: issuer {}: the inline jwks cannot be used ({e}); every token \
                         of this issuer is refused with 401",
                        rule.issuer
                    ));
                }
                KeySource::Inline(parsed)
            }
            (_, Some(uri)) if !uri.is_empty() => {
                KeySource::Remote(cache.entry(&JwksSource::Uri(uri.clone())))
            }
            _ => KeySource::Remote(cache.entry(&JwksSource::Discovery(rule.issuer.clone()))),
        };
        Provider {
            policy: policy.to_owned(),
            issuer: rule.issuer.clone(),
            audiences: rule.audiences.iter().map(|a| normalize_aud(a)).collect(),
            locations,
            keys,
            output_payload,
            output_claims,
            forward: rule.forward_original_token,
        }
    }

    /// Removes the headers this rule writes, so that a client cannot forge them (Envoy's
    /// `sanitizePayloadHeaders`).
    pub(super) fn sanitize(&self, parts: &mut Parts) {
        if let Some(h) = &self.output_payload {
            parts.headers.remove(h);
        }
        for (h, _) in &self.output_claims {
            parts.headers.remove(h);
        }
    }

    /// The tokens in this rule's locations, parsed; `None` when there are none.
    pub(super) fn find(&self, index: usize, parts: &Parts) -> Option<Found> {
        let mut tokens = Vec::new();
        let mut raw = Vec::new();
        for (i, location) in self.locations.iter().enumerate() {
            raw.clear();
            location.extract(parts, &mut raw);
            tokens.extend(raw.drain(..).map(|t| (i, Jwt::parse(&t))));
        }
        (!tokens.is_empty()).then_some(Found {
            provider: index,
            tokens,
        })
    }

    /// What Envoy checks before looking at keys, in its order: the token parsed, its issuer
    /// is this rule's (an empty rule issuer accepts any), its time window, its audience.
    pub(super) fn precheck(
        &self,
        jwt: &Result<Jwt, JwtFailure>,
        now: u64,
    ) -> Result<(), JwtFailure> {
        let jwt = jwt.as_ref().map_err(|f| *f)?;
        if !self.issuer.is_empty() && jwt.iss != self.issuer {
            return Err(JwtFailure::UnknownIssuer);
        }
        jwt.check_time(now, CLOCK_SKEW_SECS)?;
        if !self.audiences.is_empty()
            && !jwt
                .audiences
                .iter()
                .any(|a| self.audiences.contains(&normalize_aud(a)))
        {
            return Err(JwtFailure::AudienceNotAllowed);
        }
        Ok(())
    }

    /// The keys now, without waiting.
    pub(super) fn keys_now(&self) -> Keys {
        match &self.keys {
            KeySource::Inline(Ok(keys)) => Keys::Ready(Arc::clone(keys)),
            KeySource::Inline(Err(_)) => Keys::Failed,
            KeySource::Remote(entry) => entry.keys(),
        }
    }

    /// Verifies every token found (all must pass, as Envoy requires of one provider; Envoy
    /// takes them last first). `keys` is looked at only when every token passed
    /// [`precheck`](Self::precheck).
    pub(super) fn verify(
        &self,
        found: &Found,
        now: u64,
        keys: Option<&KeySet>,
    ) -> Result<(), JwtFailure> {
        for (_, jwt) in found.tokens.iter().rev() {
            self.precheck(jwt, now)?;
        }
        for (_, jwt) in found.tokens.iter().rev() {
            let jwt = jwt.as_ref().map_err(|f| *f)?;
            match (keys, &self.keys) {
                (Some(keys), _) => keys.verify(jwt)?,
                (None, KeySource::Inline(_)) => return Err(JwtFailure::JwksNoValidKeys),
                // istiod's fallback key for an issuer whose keys could not be fetched.
                (None, KeySource::Remote(_)) => return Err(JwtFailure::VerificationFail),
            }
        }
        Ok(())
    }

    /// Applies a verified token to the request: the payload and claim headers, the token taken
    /// off unless `forwardOriginalToken`; returns what authorization sees.
    pub(super) fn accept(&self, found: Found, parts: &mut Parts) -> Option<RequestAuth> {
        let mut auth = None;
        for (location, jwt) in found.tokens {
            let Ok(jwt) = jwt else { continue };
            if let Some(h) = &self.output_payload
                && let Ok(v) = HeaderValue::try_from(jwt.payload_b64.as_str())
            {
                parts.headers.append(h.clone(), v);
            }
            for (h, claim) in &self.output_claims {
                if let Some(v) = claim_header_value(&jwt.payload, claim) {
                    parts.headers.append(h.clone(), v);
                }
            }
            if !self.forward {
                self.locations[location].remove(parts);
            }
            auth.get_or_insert_with(|| request_auth(&jwt));
        }
        auth
    }
}

/// jwt_verify_lib's audience comparison ignores an `http://`/`https://` scheme and a trailing
/// slash.
fn normalize_aud(aud: &str) -> String {
    let a = aud
        .strip_prefix("http://")
        .or_else(|| aud.strip_prefix("https://"))
        .unwrap_or(aud);
    a.strip_suffix('/').unwrap_or(a).to_owned()
}

/// A claim (`a.b` looks into nested objects) as Envoy's `claim_to_headers` writes it: strings
/// as they are, integers in decimal, other numbers with six decimals, booleans as
/// `true`/`false`; other types and empty values write nothing.
fn claim_header_value(payload: &Map<String, Value>, claim: &str) -> Option<HeaderValue> {
    let mut parts = claim.split('.');
    let mut value = payload.get(parts.next()?)?;
    for key in parts {
        value = value.as_object()?.get(key)?;
    }
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => u.to_string(),
            (None, Some(f)) => format!("{f:.6}"),
            (None, None) => n.to_string(),
        },
        _ => return None,
    };
    if text.is_empty() {
        return None;
    }
    HeaderValue::try_from(text).ok()
}

/// What authorization reads from a verified token.
pub(super) fn request_auth(jwt: &Jwt) -> RequestAuth {
    let mut claims: Claims = BTreeMap::new();
    for (name, value) in &jwt.payload {
        let claim = match value {
            Value::String(s) if SPACE_DELIMITED_CLAIMS.contains(&name.as_str()) => {
                Some(Claim::List(s.split_whitespace().map(Claim::from).collect()))
            }
            other => to_claim(other),
        };
        if let Some(c) = claim {
            claims.insert(name.clone(), c);
        }
    }
    RequestAuth {
        principal: format!("{}/{}", jwt.iss, jwt.sub),
        issuer: jwt.iss.clone(),
        subject: jwt.sub.clone(),
        audiences: jwt.audiences.clone(),
        presenter: jwt
            .payload
            .get("azp")
            .and_then(Value::as_str)
            .map(str::to_owned),
        claims,
    }
}

/// A JSON value as `request.auth.claims[...]` sees it: numbers and booleans as their text,
/// `null` left out.
fn to_claim(value: &Value) -> Option<Claim> {
    Some(match value {
        Value::String(s) => Claim::String(s.clone()),
        Value::Number(n) => Claim::String(n.to_string()),
        Value::Bool(b) => Claim::String(b.to_string()),
        Value::Array(items) => Claim::List(items.iter().filter_map(to_claim).collect()),
        Value::Object(map) => Claim::Map(
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), to_claim(v)?)))
                .collect(),
        ),
        Value::Null => return None,
    })
}

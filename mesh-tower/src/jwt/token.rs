//! A JWT as Envoy's `jwt_authn` filter reads it (jwt_verify_lib's `Jwt::parseFromString`), and
//! the failures it reports, with Envoy's words: they are the body of the 401 a client sees.

use std::fmt;

use base64::{
    Engine,
    alphabet::URL_SAFE,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use http::StatusCode;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

/// base64url as JWTs use it: no padding written, padding accepted when present.
pub(super) const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a token was refused: Envoy's `jwt_authn` status. [`as_str`](Self::as_str) is the body
/// of the local reply, [`status`](Self::status) its code (401, or 403 for audiences, as Envoy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JwtFailure {
    BadFormat,
    HeaderBadBase64,
    HeaderBadJson,
    HeaderBadAlg,
    HeaderNotImplementedAlg,
    HeaderBadKid,
    PayloadBadBase64,
    PayloadBadJson,
    IssNotString,
    SubNotString,
    IatNotInteger,
    IatOutOfRange,
    NbfNotInteger,
    NbfOutOfRange,
    ExpNotInteger,
    ExpOutOfRange,
    JtiNotString,
    AudNotString,
    SignatureBadBase64,
    /// `nbf` is later than now plus the clock skew.
    NotYetValid,
    /// `exp` is earlier than now minus the clock skew.
    Expired,
    /// The token's `iss` is not the issuer of a rule that looks where the token was found.
    UnknownIssuer,
    /// The rule lists `audiences` and the token's `aud` has none of them (403).
    AudienceNotAllowed,
    /// No key of the issuer's JWKS verifies the signature (also: the JWKS could not be
    /// fetched, as istiod's fallback key answers).
    VerificationFail,
    /// No key of the JWKS has the token's `kid` (and `alg`, when the key names one).
    KidAlgMismatch,
    /// The issuer's inline `jwks` has no usable key.
    JwksNoValidKeys,
}

impl JwtFailure {
    /// Envoy's text for the failure (jwt_verify_lib's `getStatusString`).
    pub fn as_str(self) -> &'static str {
        use JwtFailure::*;
        match self {
            BadFormat => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            HeaderBadBase64 => "Jwt header is an invalid Base64url encoded",
            HeaderBadJson => "Jwt header is an invalid JSON",
            HeaderBadAlg => "Jwt header [alg] field is required and must be a string",
            HeaderNotImplementedAlg => "Jwt header [alg] is not supported",
            HeaderBadKid => "Jwt header [kid] field is not a string",
            PayloadBadBase64 => "Jwt payload is an invalid Base64url encoded",
            PayloadBadJson => "Jwt payload is an invalid JSON",
            IssNotString => "Jwt payload [iss] field is not a string",
            SubNotString => "Jwt payload [sub] field is not a string",
            IatNotInteger => "Jwt payload [iat] field is not an integer",
            IatOutOfRange => "Jwt payload [iat] field is not a positive 64 bit integer",
            NbfNotInteger => "Jwt payload [nbf] field is not an integer",
            NbfOutOfRange => "Jwt payload [nbf] field is not a positive 64 bit integer",
            ExpNotInteger => "Jwt payload [exp] field is not an integer",
            ExpOutOfRange => "Jwt payload [exp] field is not a positive 64 bit integer",
            JtiNotString => "Jwt payload [jti] field is not a string",
            AudNotString => "Jwt payload [aud] field is not a string or string list",
            SignatureBadBase64 => "Jwt signature is an invalid Base64url encoded",
            NotYetValid => "Jwt not yet valid",
            Expired => "Jwt is expired",
            UnknownIssuer => "Jwt issuer is not configured",
            AudienceNotAllowed => "Audiences in Jwt are not allowed",
            VerificationFail => "Jwt verification fails",
            KidAlgMismatch => "Jwks doesn't have key to match kid or alg from Jwt",
            JwksNoValidKeys => "Jwks doesn't have any valid public key",
        }
    }

    /// The status Envoy answers with: 403 when only the audience is wrong, else 401.
    pub fn status(self) -> StatusCode {
        match self {
            JwtFailure::AudienceNotAllowed => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

impl fmt::Display for JwtFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed, not yet verified, token.
#[derive(Debug, Clone)]
pub(super) struct Jwt {
    pub(super) alg: Algorithm,
    /// The header's `alg` as written, compared with a JWK's `alg`.
    pub(super) alg_name: String,
    pub(super) kid: Option<String>,
    /// `iss`, empty when absent (as Envoy).
    pub(super) iss: String,
    pub(super) sub: String,
    pub(super) audiences: Vec<String>,
    /// Seconds since the epoch; 0 when absent.
    pub(super) nbf: u64,
    pub(super) exp: u64,
    pub(super) payload: Map<String, Value>,
    /// The payload segment as received: `outputPayloadToHeader` forwards it.
    pub(super) payload_b64: String,
    /// `header.payload`, the signed bytes.
    pub(super) signed: String,
    /// The signature segment without padding.
    pub(super) signature_b64: String,
}

impl Jwt {
    /// Parses a compact JWS, checking what jwt_verify_lib checks before any key is looked at.
    pub(super) fn parse(token: &str) -> Result<Jwt, JwtFailure> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtFailure::BadFormat);
        };
        let header_json = BASE64URL
            .decode(header)
            .map_err(|_| JwtFailure::HeaderBadBase64)?;
        let header_json: Map<String, Value> =
            serde_json::from_slice(&header_json).map_err(|_| JwtFailure::HeaderBadJson)?;
        let alg_name = match header_json.get("alg") {
            Some(Value::String(a)) => a.clone(),
            _ => return Err(JwtFailure::HeaderBadAlg),
        };
        let alg = algorithm(&alg_name).ok_or(JwtFailure::HeaderNotImplementedAlg)?;
        let kid = match header_json.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => return Err(JwtFailure::HeaderBadKid),
        };

        let payload_json = BASE64URL
            .decode(payload)
            .map_err(|_| JwtFailure::PayloadBadBase64)?;
        let claims: Map<String, Value> =
            serde_json::from_slice(&payload_json).map_err(|_| JwtFailure::PayloadBadJson)?;
        let iss = string_claim(&claims, "iss", JwtFailure::IssNotString)?;
        let sub = string_claim(&claims, "sub", JwtFailure::SubNotString)?;
        string_claim(&claims, "jti", JwtFailure::JtiNotString)?;
        use JwtFailure::*;
        time_claim(&claims, "iat", IatNotInteger, IatOutOfRange)?;
        let nbf = time_claim(&claims, "nbf", NbfNotInteger, NbfOutOfRange)?;
        let exp = time_claim(&claims, "exp", ExpNotInteger, ExpOutOfRange)?;
        let audiences = match claims.get("aud") {
            None => vec![],
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or(AudNotString))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(AudNotString),
        };

        BASE64URL
            .decode(signature)
            .map_err(|_| JwtFailure::SignatureBadBase64)?;
        Ok(Jwt {
            alg,
            alg_name,
            kid,
            iss,
            sub,
            audiences,
            nbf,
            exp,
            payload: claims,
            payload_b64: payload.to_owned(),
            signed: format!("{header}.{payload}"),
            signature_b64: signature.trim_end_matches('=').to_owned(),
        })
    }

    /// Envoy's time check: `nbf` may be up to `skew` seconds in the future, `exp` up to `skew`
    /// seconds in the past. A token without `exp` never expires (Istio does not set
    /// `require_expiration`).
    pub(super) fn check_time(&self, now: u64, skew: u64) -> Result<(), JwtFailure> {
        if self.nbf > now.saturating_add(skew) {
            return Err(JwtFailure::NotYetValid);
        }
        if self.exp != 0 && self.exp < now.saturating_sub(skew) {
            return Err(JwtFailure::Expired);
        }
        Ok(())
    }
}

/// The algorithms jwt_verify_lib accepts that the `jsonwebtoken` crate implements. `ES512` is
/// accepted by Envoy but not by `jsonwebtoken`: such tokens fail as "not supported".
fn algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

fn string_claim(
    claims: &Map<String, Value>,
    name: &str,
    wrong: JwtFailure,
) -> Result<String, JwtFailure> {
    match claims.get(name) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(wrong),
    }
}

fn time_claim(
    claims: &Map<String, Value>,
    name: &str,
    not_integer: JwtFailure,
    out_of_range: JwtFailure,
) -> Result<u64, JwtFailure> {
    match claims.get(name) {
        None => Ok(0),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(v), _) => Ok(v),
            (None, Some(f)) if f >= 0.0 && f < u64::MAX as f64 => Ok(f as u64),
            _ => Err(out_of_range),
        },
        Some(_) => Err(not_integer),
    }
}

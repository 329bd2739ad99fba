//! JWT signature and claim checks, with jsonwebtoken doing the cryptography and the
//! registered-claim validation. Knows nothing of sessions, caches or HTTP.
//!
//! Before any key is touched the header is read here: an `alg` that is not on the allow-list
//! (`none` never is) is refused as `algorithm_not_allowed`, and the payload is checked for
//! nesting depth, so that hostile JSON never reaches a deeper parser.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::header::HeaderValue;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::ClaimRules;
use crate::error::Reason;
use crate::keys::KeySet;

/// Longest `sid` or `jti` accepted.
const MAX_ID_BYTES: usize = 256;

/// The parts of the JOSE header that select the key.
#[derive(Debug)]
pub struct JoseHeader {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

/// The claims of a token whose signature and registered claims were verified: what the
/// sidecar needs of them, and the payload itself once, as it came.
#[derive(Debug, Clone)]
pub struct VerifiedClaims {
    /// `sub`, kept as the `X-Auth-Subject` header value it becomes.
    pub subject: HeaderValue,
    /// `sid`, kept as the `X-Auth-Session-Id` header value it becomes.
    pub session_id: Option<HeaderValue>,
    pub jti: Option<Box<str>>,
    pub exp: u64,
    /// The payload segment as it came: base64url, no padding, of the payload JSON. It is the
    /// `X-Auth-Claims` header value as it is, and introspection decodes it again.
    pub payload: HeaderValue,
}

impl VerifiedClaims {
    /// The `sub` claim.
    pub fn sub(&self) -> &str {
        std::str::from_utf8(self.subject.as_bytes()).unwrap_or_default()
    }

    /// The `sid` claim, for session-bound tokens.
    pub fn sid(&self) -> Option<&str> {
        self.session_id
            .as_ref()
            .map(|sid| std::str::from_utf8(sid.as_bytes()).unwrap_or_default())
    }

    /// Binds the token to a session (per-session keys: the `kid`), when it names none itself.
    pub fn set_sid(&mut self, sid: &str) -> Result<(), Reason> {
        self.session_id = Some(HeaderValue::from_str(sid).map_err(|_| Reason::Malformed)?);
        Ok(())
    }

    /// The payload as JSON (for introspection; the hot path never parses it).
    pub fn payload_json(&self) -> Value {
        URL_SAFE_NO_PAD
            .decode(self.payload.as_bytes())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(Value::Null)
    }
}

/// Verifies tokens against a [`KeySet`] and the claim rules.
pub struct JwtVerifier {
    keys: KeySet,
    validations: HashMap<Algorithm, Validation>,
    max_json_depth: usize,
}

impl JwtVerifier {
    /// Prepares one jsonwebtoken `Validation` per allowed algorithm.
    pub fn new(keys: KeySet, rules: &ClaimRules, max_json_depth: usize) -> Self {
        let validations = keys
            .allowed()
            .iter()
            .map(|alg| (*alg, validation_for(*alg, rules)))
            .collect();
        JwtVerifier {
            keys,
            validations,
            max_json_depth,
        }
    }

    /// The key set.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// Reads the JOSE header without verifying anything.
    pub fn header(&self, token: &str) -> Result<JoseHeader, Reason> {
        #[derive(Deserialize)]
        struct RawHeader {
            alg: Option<Value>,
            kid: Option<Value>,
        }
        let segment = token.split('.').next().ok_or(Reason::Malformed)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(segment)
            .map_err(|_| Reason::Malformed)?;
        if json_too_deep(&bytes, self.max_json_depth) {
            return Err(Reason::Malformed);
        }
        let raw: RawHeader = serde_json::from_slice(&bytes).map_err(|_| Reason::Malformed)?;
        let alg = match raw.alg {
            Some(Value::String(name)) => name
                .parse::<Algorithm>()
                .map_err(|_| Reason::AlgorithmNotAllowed)?,
            Some(_) => return Err(Reason::Malformed),
            None => return Err(Reason::Malformed),
        };
        if !self.keys.allows(alg) {
            return Err(Reason::AlgorithmNotAllowed);
        }
        let kid = match raw.kid {
            Some(Value::String(kid)) => Some(kid),
            Some(_) => return Err(Reason::Malformed),
            None => None,
        };
        Ok(JoseHeader { alg, kid })
    }

    /// Verifies the signature with the configured keys, then the claims.
    pub fn verify(&self, token: &str, header: &JoseHeader) -> Result<VerifiedClaims, Reason> {
        let keys = self.keys.candidates(header.alg, header.kid.as_deref())?;
        let mut last = Reason::UnknownKey;
        for key in keys {
            match self.verify_with(token, header.alg, key) {
                Ok(claims) => return Ok(claims),
                // Another candidate key may still match; anything else is final.
                Err(Reason::BadSignature) => last = Reason::BadSignature,
                Err(other) => return Err(other),
            }
        }
        Err(last)
    }

    /// Verifies with a session's own HMAC secret (per-session keys, `kid` = session id).
    pub fn verify_with_session_secret(
        &self,
        token: &str,
        header: &JoseHeader,
        secret: &[u8],
    ) -> Result<VerifiedClaims, Reason> {
        if header.alg.family() != AlgorithmFamily::Hmac {
            return Err(Reason::AlgorithmNotAllowed);
        }
        self.verify_with(token, header.alg, &DecodingKey::from_secret(secret))
    }

    fn verify_with(
        &self,
        token: &str,
        alg: Algorithm,
        key: &DecodingKey,
    ) -> Result<VerifiedClaims, Reason> {
        let validation = self
            .validations
            .get(&alg)
            .ok_or(Reason::AlgorithmNotAllowed)?;
        let payload_segment = token.split('.').nth(1).ok_or(Reason::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload_segment)
            .map_err(|_| Reason::Malformed)?;
        if json_too_deep(&payload, self.max_json_depth) {
            return Err(Reason::Malformed);
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
            .map_err(|e| Reason::from(&e))?;
        claims_from(data.claims, payload_segment)
    }

    /// The `jti` of a token, read WITHOUT verification: only to ask the store for the deny-list
    /// entry in the same round trip as the session, before the session's key is known.
    pub fn unverified_jti(&self, token: &str) -> Option<String> {
        let segment = token.split('.').nth(1)?;
        let payload = URL_SAFE_NO_PAD.decode(segment).ok()?;
        if json_too_deep(&payload, self.max_json_depth) {
            return None;
        }
        #[derive(Deserialize)]
        struct JtiOnly {
            jti: Option<String>,
        }
        serde_json::from_slice::<JtiOnly>(&payload).ok()?.jti
    }
}

fn validation_for(alg: Algorithm, rules: &ClaimRules) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = rules.leeway;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    if let Some(issuer) = &rules.issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    if rules.audience.is_empty() {
        // No --audience: this sidecar has no identity to check `aud` against, so it does not.
        validation.validate_aud = false;
    } else {
        validation.set_audience(&rules.audience);
        required.push("aud");
    }
    validation.set_required_spec_claims(&required);
    validation
}

fn claims_from(
    claims: Map<String, Value>,
    payload_segment: &str,
) -> Result<VerifiedClaims, Reason> {
    let sub = match claims.get("sub") {
        Some(Value::String(sub)) if header_safe(sub) => {
            HeaderValue::from_str(sub).map_err(|_| Reason::Malformed)?
        }
        Some(Value::String(_)) => return Err(Reason::Malformed),
        _ => return Err(Reason::MissingClaim),
    };
    let exp = claims
        .get("exp")
        .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)))
        .ok_or(Reason::MissingClaim)?;
    let session_id = match optional_id(&claims, "sid")? {
        Some(sid) => Some(HeaderValue::from_str(&sid).map_err(|_| Reason::Malformed)?),
        None => None,
    };
    Ok(VerifiedClaims {
        subject: sub,
        session_id,
        jti: optional_id(&claims, "jti")?,
        exp,
        payload: HeaderValue::from_str(payload_segment).map_err(|_| Reason::Malformed)?,
    })
}

fn optional_id(claims: &Map<String, Value>, name: &str) -> Result<Option<Box<str>>, Reason> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) if valid_id(id) => Ok(Some(id.as_str().into())),
        Some(_) => Err(Reason::Malformed),
    }
}

/// Whether a session or token id may be used as one: printable ASCII without spaces, braces
/// (Redis hash-tag syntax) or quotes, at most 256 bytes.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'{' | b'}' | b'"' | b'\\'))
}

/// Whether a value can be sent as an HTTP header value as it is (no control characters).
pub fn header_safe(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b >= 0x20 && b != 0x7f)
}

/// Whether JSON text nests arrays and objects deeper than `max`. Strings are skipped, so
/// brackets inside them do not count. Malformed JSON is left to the parser.
pub fn json_too_deep(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::{json_too_deep, valid_id};

    #[test]
    fn depth_counts_nesting_but_not_brackets_in_strings() {
        assert!(!json_too_deep(br#"{"a":[[1]]}"#, 3));
        assert!(json_too_deep(br#"{"a":[[[1]]]}"#, 3));
        assert!(!json_too_deep(br#"{"a":"[[[[[[\"{{{{"}"#, 1));
    }

    #[test]
    fn ids_refuse_braces_controls_and_spaces() {
        assert!(valid_id("abc-DEF_123.~"));
        assert!(!valid_id("a{b}"));
        assert!(!valid_id("a\r\nb"));
        assert!(!valid_id("a b"));
        assert!(!valid_id(""));
        assert!(!valid_id(&"x".repeat(257)));
    }
}

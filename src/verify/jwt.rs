//! JWT signature and claim checks, with jsonwebtoken doing the cryptography and the
//! registered-claim validation. Knows nothing of sessions, caches or HTTP.
//!
//! Before any key is touched the header is read here: an `alg` that is not on the allow-list
//! (`none` never is) is refused as `algorithm_not_allowed`, and the payload is checked for
//! nesting depth, so that hostile JSON never reaches a deeper parser.
//!
//! Key sets from URLs ([`JwksSource`]) join the static keys: a token whose `iss` names an issuer
//! bound with `--jwks-url ISS=URL` is checked only against that issuer's key sets (and must
//! carry that `iss`); every other token against the static keys and the unbound key sets,
//! under `--issuer`. An unknown `kid` asks those key sets for one refresh
//! ([`JwksSource::refresh_for_unknown_kid`]).

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::header::HeaderValue;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::Reason;
use crate::keys::KeySet;
use crate::keys::jwks::{FETCH_TIMEOUT, JwksSource, Refresh};
use crate::store::MAX_UNIX_TIME;

/// Longest `sid` or `jti` accepted.
const MAX_ID_BYTES: usize = 256;

/// The parts of the JOSE header that select the key.
#[derive(Debug)]
pub struct JoseHeader {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

/// Claim checks applied to every token.
#[derive(Debug, Clone)]
pub struct ClaimRules {
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub leeway: u64,
}

/// The claims of a token whose signature and registered claims were verified: what the
/// sidecar needs of them, as the header values they become. The payload itself is not kept:
/// it is the token's own second segment, re-sliced from the token whenever it is needed
/// ([`payload_segment`]), which is the same text on every cache hit (the cache key is a digest
/// of the whole token).
#[derive(Debug, Clone)]
pub struct VerifiedClaims {
    /// `sub`, kept as the `X-Auth-Subject` header value it becomes.
    pub subject: HeaderValue,
    /// `sid`, kept as the `X-Auth-Session-Id` header value it becomes.
    pub session_id: Option<HeaderValue>,
    /// `jti` (a valid id: visible ASCII, so a header value too).
    pub jti: Option<HeaderValue>,
    pub exp: u64,
    /// Whether the payload is an issuer's word, passed on as `X-Auth-Claims` and mapped to
    /// `--claim-header`s. `false` for a token signed with a per-session key (SPEC §3.3).
    pub issuer_claims: bool,
}

impl VerifiedClaims {
    /// The `sub` claim.
    pub fn sub(&self) -> &str {
        text(&self.subject)
    }

    /// The `sid` claim, for session-bound tokens.
    pub fn sid(&self) -> Option<&str> {
        self.session_id.as_ref().map(text)
    }

    /// The `jti` claim, when the token has one.
    pub fn jti(&self) -> Option<&str> {
        self.jti.as_ref().map(text)
    }

    /// Binds the token to a session (per-session keys: the `kid`), when it names none itself.
    pub fn set_sid(&mut self, sid: &str) -> Result<(), Reason> {
        self.session_id = Some(HeaderValue::from_str(sid).map_err(|_| Reason::Malformed)?);
        Ok(())
    }

    /// Keeps the payload from being passed on as claims (a per-session key signed it).
    pub fn withhold_payload(&mut self) {
        self.issuer_claims = false;
    }

    /// The payload segment of `token` (the token these claims were verified from) when it is
    /// passed on as the issuer's claims: the `X-Auth-Claims` value.
    pub fn passed_payload<'t>(&self, token: &'t str) -> Option<&'t str> {
        self.issuer_claims.then(|| payload_segment(token)).flatten()
    }

    /// The payload of `token` as JSON (for introspection and route rules; the hot path never
    /// parses it): `{}` when it is withheld.
    pub fn payload_json(&self, token: &str) -> Value {
        let Some(payload) = self.passed_payload(token) else {
            return Value::Object(Map::new());
        };
        URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(Value::Null)
    }
}

/// The payload segment of a compact JWT: what lies between its first and second dot.
pub fn payload_segment(token: &str) -> Option<&str> {
    token.split('.').nth(1)
}

/// A header value the sidecar made from a checked string, as that string.
fn text(value: &HeaderValue) -> &str {
    std::str::from_utf8(value.as_bytes()).unwrap_or_default()
}

/// Why a token was not verified by [`JwtVerifier::verify_token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unverified {
    /// Refused, for this reason.
    Denied(Reason),
    /// Its `kid` is unknown and the refresh it asked for was refused by the once-a-second
    /// limit: `unknown_key` now, but the same token may verify a moment later (not to be
    /// remembered as a rejection).
    UnknownKeyForNow,
    /// A key set the token may need was never loaded: no decision (`503 keys_unavailable`).
    KeysUnavailable,
}

/// The key sets of one issuer bound with `--jwks-url ISS=URL`, and its claim checks.
struct BoundIssuer {
    issuer: String,
    sources: Vec<JwksSource>,
    validations: HashMap<Algorithm, Validation>,
}

/// Verifies tokens against a [`KeySet`], the key sets from URLs and the claim rules.
pub struct JwtVerifier {
    keys: KeySet,
    rules: ClaimRules,
    validations: HashMap<Algorithm, Validation>,
    /// Key sets from URLs without `ISS=`: they verify what the static keys verify.
    unbound: Vec<JwksSource>,
    bound: Vec<BoundIssuer>,
    max_json_depth: usize,
}

impl JwtVerifier {
    /// Prepares one jsonwebtoken `Validation` per allowed algorithm.
    pub fn new(keys: KeySet, rules: &ClaimRules, max_json_depth: usize) -> Self {
        let validations = validations_for(&keys, rules);
        JwtVerifier {
            keys,
            rules: rules.clone(),
            validations,
            unbound: Vec::new(),
            bound: Vec::new(),
            max_json_depth,
        }
    }

    /// Adds key sets from URLs. One bound to the issuer `--issuer` names joins the static keys.
    pub fn with_key_sources(mut self, sources: Vec<JwksSource>) -> Self {
        for source in sources {
            let issuer = match source.issuer() {
                Some(issuer) if Some(issuer) != self.rules.issuer.as_deref() => issuer.to_owned(),
                _ => {
                    self.unbound.push(source);
                    continue;
                }
            };
            match self.bound.iter_mut().find(|b| b.issuer == issuer) {
                Some(bound) => bound.sources.push(source),
                None => {
                    let rules = ClaimRules {
                        issuer: Some(issuer.clone()),
                        ..self.rules.clone()
                    };
                    self.bound.push(BoundIssuer {
                        validations: validations_for(&self.keys, &rules),
                        issuer,
                        sources: vec![source],
                    });
                }
            }
        }
        self
    }

    /// The key set.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// Every key set that comes from a URL.
    pub fn key_sources(&self) -> impl Iterator<Item = &JwksSource> {
        self.unbound
            .iter()
            .chain(self.bound.iter().flat_map(|b| b.sources.iter()))
    }

    /// Whether every key set from a URL has loaded once (readiness).
    pub fn key_sources_loaded(&self) -> bool {
        self.key_sources().all(JwksSource::loaded)
    }

    /// Verifies the signature with the keys the token's issuer may use (static keys and key
    /// sets from URLs), then the claims. An unknown `kid` asks the key sets from URLs for one
    /// refresh and waits for it (at most [`FETCH_TIMEOUT`]).
    pub async fn verify_token(
        &self,
        token: &str,
        header: &JoseHeader,
    ) -> Result<VerifiedClaims, Unverified> {
        if self.unbound.is_empty() && self.bound.is_empty() {
            return self.verify(token, header).map_err(Unverified::Denied);
        }
        let (sources, validations, with_static) = match self.bound_issuer_of(token)? {
            Some(bound) => (&bound.sources, &bound.validations, false),
            None => (&self.unbound, &self.validations, true),
        };
        let kid = header.kid.as_deref();
        let mut refreshed = false;
        loop {
            let mut last = None;
            if with_static {
                match self.keys.candidates(header.alg, kid) {
                    Ok(keys) => {
                        for key in keys {
                            match self.verify_with(token, header.alg, key, validations) {
                                Ok(claims) => return Ok(claims),
                                Err(Reason::BadSignature) => last = Some(Reason::BadSignature),
                                Err(other) => return Err(Unverified::Denied(other)),
                            }
                        }
                    }
                    Err(Reason::UnknownKey) => {}
                    Err(other) => return Err(Unverified::Denied(other)),
                }
            }
            let mut unloaded = false;
            for source in sources {
                let Some(set) = source.keys() else {
                    unloaded = true;
                    continue;
                };
                for key in set.candidates(header.alg, kid) {
                    match self.verify_with(token, header.alg, key, validations) {
                        Ok(claims) => return Ok(claims),
                        Err(Reason::BadSignature) => last = Some(Reason::BadSignature),
                        Err(other) => return Err(Unverified::Denied(other)),
                    }
                }
            }
            if let Some(reason) = last {
                return Err(Unverified::Denied(reason));
            }
            if unloaded {
                // The key may be in a set not loaded yet: no decision. Its task is already
                // retrying; this only hurries it (at most once a second).
                for source in sources.iter().filter(|s| !s.loaded()) {
                    source.request_fetch();
                }
                return Err(Unverified::KeysUnavailable);
            }
            let Some(kid) = kid else {
                return Err(Unverified::Denied(Reason::UnknownKey));
            };
            if refreshed {
                for source in sources {
                    source.remember_missing(kid);
                }
                return Err(Unverified::Denied(Reason::UnknownKey));
            }
            // A kid a refresh just did not find is not worth another one yet.
            if sources.is_empty() || sources.iter().all(|s| s.recently_missing(kid)) {
                return Err(Unverified::Denied(Reason::UnknownKey));
            }
            let outcomes = futures_util::future::join_all(
                sources
                    .iter()
                    .map(|source| source.refresh_for_unknown_kid(FETCH_TIMEOUT)),
            )
            .await;
            if outcomes.iter().all(|outcome| *outcome != Refresh::Done) {
                return Err(Unverified::UnknownKeyForNow);
            }
            refreshed = true;
        }
    }

    /// The bound issuer a token's (unverified) `iss` names, if any: its keys are the only ones
    /// that may verify it. A token whose `iss` is not a string is malformed.
    fn bound_issuer_of(&self, token: &str) -> Result<Option<&BoundIssuer>, Unverified> {
        if self.bound.is_empty() {
            return Ok(None);
        }
        let segment = token
            .split('.')
            .nth(1)
            .ok_or(Unverified::Denied(Reason::Malformed))?;
        let claims = decode_object(segment, self.max_json_depth).map_err(Unverified::Denied)?;
        match claims.get("iss") {
            None => Ok(None),
            Some(Value::String(iss)) => Ok(self.bound.iter().find(|b| b.issuer == *iss)),
            Some(_) => Err(Unverified::Denied(Reason::Malformed)),
        }
    }

    /// Reads the JOSE header without verifying anything. Refused as `malformed`: a header
    /// that is not one JSON object with unique member names, a `crit` member (no extension is
    /// understood, RFC 7515 §4.1.11), `b64` other than `true` (RFC 7797), a `kid` that is not a
    /// string.
    pub fn header(&self, token: &str) -> Result<JoseHeader, Reason> {
        let segment = token.split('.').next().ok_or(Reason::Malformed)?;
        let mut header = decode_object(segment, self.max_json_depth)?;
        if header.contains_key("crit") {
            return Err(Reason::Malformed);
        }
        if header
            .get("b64")
            .is_some_and(|b64| *b64 != Value::Bool(true))
        {
            return Err(Reason::Malformed);
        }
        let alg = match header.remove("alg") {
            Some(Value::String(name)) => name
                .parse::<Algorithm>()
                .map_err(|_| Reason::AlgorithmNotAllowed)?,
            Some(_) | None => return Err(Reason::Malformed),
        };
        if !self.keys.allows(alg) {
            return Err(Reason::AlgorithmNotAllowed);
        }
        let kid = match header.remove("kid") {
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
            match self.verify_with(token, header.alg, key, &self.validations) {
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
        self.verify_with(
            token,
            header.alg,
            &DecodingKey::from_secret(secret),
            &self.validations,
        )
    }

    fn verify_with(
        &self,
        token: &str,
        alg: Algorithm,
        key: &DecodingKey,
        validations: &HashMap<Algorithm, Validation>,
    ) -> Result<VerifiedClaims, Reason> {
        let validation = validations.get(&alg).ok_or(Reason::AlgorithmNotAllowed)?;
        let payload_segment = payload_segment(token).ok_or(Reason::Malformed)?;
        // Parsed here first, strictly (depth, unique member names), so that jsonwebtoken's
        // own parse, which keeps the last of duplicate members, cannot see other claims.
        let claims = decode_object(payload_segment, self.max_json_depth)?;
        // A string claim of another JSON type is malformed, whatever jsonwebtoken would make
        // of it (it reads a numeric `sub` as no `sub`, an object as a parse error).
        if STRING_CLAIMS
            .iter()
            .any(|name| claims.get(*name).is_some_and(|value| !value.is_string()))
        {
            return Err(Reason::Malformed);
        }
        jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
            .map_err(|e| Reason::from(&e))?;
        claims_from(claims)
    }

    /// The `jti` of a token, read WITHOUT verification: only to ask the store for the deny-list
    /// entry in the same round trip as the session, before the session's key is known. An
    /// unreadable payload or a `jti` that is not a valid id is `malformed`, before the store
    /// is asked anything.
    pub fn unverified_jti(&self, token: &str) -> Result<Option<Box<str>>, Reason> {
        let segment = payload_segment(token).ok_or(Reason::Malformed)?;
        let claims = decode_object(segment, self.max_json_depth)?;
        optional_id(&claims, "jti")
    }
}

/// Registered (and session) claims that are strings when present.
const STRING_CLAIMS: [&str; 4] = ["sub", "iss", "jti", "sid"];

/// Decodes a base64url JWT segment into one JSON object: at most `max_depth` deep, every
/// member name unique at every level. Anything else is `malformed`.
pub fn decode_object(segment: &str, max_depth: usize) -> Result<Map<String, Value>, Reason> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| Reason::Malformed)?;
    if json_too_deep(&bytes, max_depth) {
        return Err(Reason::Malformed);
    }
    match serde_json::from_slice::<UniqueMembers>(&bytes) {
        Ok(UniqueMembers(Value::Object(map))) => Ok(map),
        _ => Err(Reason::Malformed),
    }
}

/// A JSON value whose objects have unique member names (a duplicate is a parse error).
struct UniqueMembers(Value);

impl<'de> Deserialize<'de> for UniqueMembers {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(UniqueMembersVisitor)
            .map(UniqueMembers)
    }
}

struct UniqueMembersVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueMembersVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON without duplicate member names")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueMembers(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            let UniqueMembers(value) = map.next_value()?;
            if members.insert(name, value).is_some() {
                return Err(serde::de::Error::custom("duplicate member name"));
            }
        }
        Ok(Value::Object(members))
    }
}

/// A NumericDate claim (RFC 7519 §2) as whole seconds: an integer, or a non-negative finite
/// number with a fraction (rounded down), at most [`MAX_UNIX_TIME`]. `None` for anything else,
/// also for a time no clock can hold (`exp: 1e19`, SPEC §7): such a token is malformed.
pub fn numeric_date(value: &Value) -> Option<u64> {
    whole_seconds(value).filter(|&seconds| seconds <= MAX_UNIX_TIME)
}

/// Like [`numeric_date`], but a time beyond [`MAX_UNIX_TIME`] is read as that: for a deny-list
/// entry, "until the end of any clock" is a sound reading of a huge `exp`.
pub fn numeric_date_saturating(value: &Value) -> Option<u64> {
    whole_seconds(value).map(|seconds| seconds.min(MAX_UNIX_TIME))
}

/// A non-negative JSON number as whole seconds, rounded down, saturating at `u64::MAX`.
fn whole_seconds(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => match n.as_u64() {
            Some(whole) => Some(whole),
            None => {
                let f = n.as_f64()?;
                if !f.is_finite() || f < 0.0 {
                    return None;
                }
                // `as` saturates: 1e300 becomes u64::MAX.
                Some(f as u64)
            }
        },
        _ => None,
    }
}

/// One jsonwebtoken `Validation` per algorithm the key set allows.
fn validations_for(keys: &KeySet, rules: &ClaimRules) -> HashMap<Algorithm, Validation> {
    keys.allowed()
        .iter()
        .map(|alg| (*alg, validation_for(*alg, rules)))
        .collect()
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

fn claims_from(claims: Map<String, Value>) -> Result<VerifiedClaims, Reason> {
    let sub = match claims.get("sub") {
        Some(Value::String(sub)) if valid_subject(sub) => {
            HeaderValue::from_str(sub).map_err(|_| Reason::Malformed)?
        }
        None => return Err(Reason::MissingClaim),
        Some(_) => return Err(Reason::Malformed),
    };
    if claims.get("iss").is_some_and(|iss| !iss.is_string()) {
        return Err(Reason::Malformed);
    }
    let exp = match claims.get("exp") {
        None => return Err(Reason::MissingClaim),
        Some(exp) => numeric_date(exp).ok_or(Reason::Malformed)?,
    };
    let id_header = |name: &str| -> Result<Option<HeaderValue>, Reason> {
        optional_id(&claims, name)?
            .map(|id| HeaderValue::from_str(&id).map_err(|_| Reason::Malformed))
            .transpose()
    };
    Ok(VerifiedClaims {
        subject: sub,
        session_id: id_header("sid")?,
        jti: id_header("jti")?,
        exp,
        issuer_claims: true,
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

/// Whether a subject may be one: a header-safe string without leading or trailing whitespace
/// (a proxy that trims `" admin"` would see another subject), at most 1024 bytes.
pub fn valid_subject(sub: &str) -> bool {
    header_safe(sub) && sub.len() <= 1024 && sub.trim() == sub
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

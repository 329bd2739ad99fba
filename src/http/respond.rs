//! Every response the API sends is built here: the forward-auth grant and rejection, the
//! introspection answers, JSON bodies and the rendering of [`ApiError`]s. Rejection headers and
//! bodies are rendered once per reason at start-up, so a cached rejection allocates nothing
//! but the response itself.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use serde_json::Value;

use crate::decision::Grant;
use crate::error::{ApiError, Reason};
use crate::store::Replication;
use crate::verify::claim_headers::ClaimHeaders;

/// The response type of every handler.
pub type HttpResponse = Response<Full<Bytes>>;

// Header names built once, at compile time (a `&str` name is parsed again at every insert).
pub const X_AUTH_SUBJECT: HeaderName = HeaderName::from_static("x-auth-subject");
pub const X_AUTH_SESSION_ID: HeaderName = HeaderName::from_static("x-auth-session-id");
pub const X_AUTH_CLAIMS: HeaderName = HeaderName::from_static("x-auth-claims");
pub const X_AUTH_SESSION: HeaderName = HeaderName::from_static("x-auth-session");

const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const UNAVAILABLE_BODY: &[u8] = br#"{"active":false,"reason":"store_unavailable"}"#;
const KEYS_UNAVAILABLE_BODY: &[u8] = br#"{"active":false,"reason":"keys_unavailable"}"#;

/// Pre-rendered rejections, one per reason.
pub struct Rejections {
    challenge: Vec<HeaderValue>,
    body: Vec<Bytes>,
}

impl Rejections {
    pub fn new() -> Self {
        let challenge = Reason::ALL
            .iter()
            .map(|reason| {
                let value = match reason {
                    // RFC 6750 §3: no error attribute when the request had no token.
                    Reason::MissingToken => r#"Bearer realm="session-sidecar""#.to_owned(),
                    _ => format!(
                        r#"Bearer realm="session-sidecar", error="invalid_token", error_description="{}""#,
                        reason.as_str()
                    ),
                };
                HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("Bearer"))
            })
            .collect();
        let body = Reason::ALL
            .iter()
            .map(|reason| {
                Bytes::from(format!(
                    r#"{{"active":false,"reason":"{}"}}"#,
                    reason.as_str()
                ))
            })
            .collect();
        Rejections { challenge, body }
    }

    /// `401` with the RFC 6750 challenge and `{"active":false,"reason":...}`.
    pub fn reject(&self, reason: Reason) -> HttpResponse {
        let mut response = Response::new(Full::new(self.body[reason.index()].clone()));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        let headers = response.headers_mut();
        headers.insert(WWW_AUTHENTICATE, self.challenge[reason.index()].clone());
        headers.insert(CONTENT_TYPE, JSON);
        headers.insert(CACHE_CONTROL, NO_STORE);
        response
    }
}

impl Default for Rejections {
    fn default() -> Self {
        Self::new()
    }
}

/// `200` with the forward-auth headers of a grant and an empty body; `token` is the token the
/// grant was decided on (its payload segment is `X-Auth-Claims`).
pub fn forward_auth_grant(grant: &Grant, token: &str) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::new()));
    let headers = response.headers_mut();
    // One allocation for the headers, instead of growing the map as they are added.
    headers.reserve(6 + grant.claim_headers.len());
    headers.insert(X_AUTH_SUBJECT, grant.claims.subject.clone());
    if let Some(sid) = &grant.claims.session_id {
        headers.insert(X_AUTH_SESSION_ID, sid.clone());
    }
    // Copied from the request (the one allocation a hit makes beside the response itself): a
    // cached grant does not keep it (README, "Memory"). Base64url always is a header value.
    if let Some(payload) = grant.claims.passed_payload(token)
        && let Ok(payload) = HeaderValue::from_str(payload)
    {
        headers.insert(X_AUTH_CLAIMS, payload);
    }
    if let Some(session) = &grant.session_header {
        headers.insert(X_AUTH_SESSION, session.clone());
    }
    for (name, value) in &grant.claim_headers {
        headers.insert(name.clone(), value.clone());
    }
    if let Some(unset) = &grant.headers_to_remove {
        headers.insert(ENVOY_AUTH_HEADERS_TO_REMOVE, unset.clone());
    }
    headers.insert(CACHE_CONTROL, NO_STORE);
    response
}

/// Envoy `ext_authz` (HTTP service) removes the request headers this names before the request
/// goes upstream. Envoy only overwrites the headers an answer sets, so without it a client's own
/// `X-Auth-Session-Id` would reach the app beside a stateless token's `X-Auth-Subject`: every
/// forward-auth `200` names each `X-Auth-*` header it does not set. Other proxies ignore it.
pub const ENVOY_AUTH_HEADERS_TO_REMOVE: HeaderName =
    HeaderName::from_static("x-envoy-auth-headers-to-remove");

/// `200` for a `public` route (`--rules-file`): no token was looked at, so no `X-Auth-*` (nor
/// `--claim-header`) header is set, and Envoy is told to remove any a client sent.
pub fn public_route(configured: &ClaimHeaders) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(
        ENVOY_AUTH_HEADERS_TO_REMOVE,
        configured.all_auth_headers().clone(),
    );
    headers.insert(CACHE_CONTROL, NO_STORE);
    response
}

const FORBIDDEN_CHALLENGE: HeaderValue = HeaderValue::from_static(
    r#"Bearer realm="session-sidecar", error="insufficient_scope", error_description="forbidden""#,
);
const FORBIDDEN_BODY: &[u8] = br#"{"active":false,"reason":"forbidden"}"#;

/// `403` (RFC 6750 §3.1 `insufficient_scope`) with `{"active":false,"reason":"forbidden"}`: a
/// valid token that the route's rule does not allow, or a route that cannot be read safely.
pub fn forbidden() -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from_static(FORBIDDEN_BODY)));
    *response.status_mut() = StatusCode::FORBIDDEN;
    let headers = response.headers_mut();
    headers.insert(WWW_AUTHENTICATE, FORBIDDEN_CHALLENGE);
    headers.insert(CONTENT_TYPE, JSON);
    headers.insert(CACHE_CONTROL, NO_STORE);
    response
}

/// `200` with the introspection body of a grant on `token` (SPEC §3.2).
pub fn introspection_grant(grant: &Grant, token: &str) -> HttpResponse {
    json(StatusCode::OK, &introspection_body(grant, token))
}

/// The introspection body of a grant on `token` (SPEC §3.2).
pub fn introspection_body(grant: &Grant, token: &str) -> Value {
    let mut body = serde_json::json!({
        "active": true,
        "sub": grant.claims.sub(),
        "exp": grant.claims.exp,
        "claims": grant.claims.payload_json(token),
    });
    if let (Some(sid), Some(session), Value::Object(map)) =
        (grant.sid(), &grant.session_header, &mut body)
    {
        let data = URL_SAFE_NO_PAD
            .decode(session.as_bytes())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(Value::Null);
        map.insert("sid".into(), Value::String(sid.to_owned()));
        map.insert("session".into(), data);
    }
    body
}

/// `503 {"active":false,"reason":"store_unavailable"}`: the decision is impossible.
pub fn unavailable() -> HttpResponse {
    service_unavailable(UNAVAILABLE_BODY)
}

/// `503 {"active":false,"reason":"keys_unavailable"}`: the key set the token needs was never
/// loaded (its identity provider has not answered since start-up).
pub fn keys_unavailable() -> HttpResponse {
    service_unavailable(KEYS_UNAVAILABLE_BODY)
}

fn service_unavailable(body: &'static [u8]) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from_static(body)));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(CONTENT_TYPE, JSON);
    response.headers_mut().insert(CACHE_CONTROL, NO_STORE);
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    response
}

/// A JSON body with a status.
pub fn json(status: StatusCode, body: &Value) -> HttpResponse {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, JSON);
    response.headers_mut().insert(CACHE_CONTROL, NO_STORE);
    response
}

/// An empty response with a status.
/// `X-Replication` on an answered revocation: `confirmed` when a replica holds it (a failover
/// cannot undo it), `unconfirmed` when none acknowledged it within the wait (it stands on the
/// primary only); absent where there is no replica to ask (the embedded store).
pub const X_REPLICATION: HeaderName = HeaderName::from_static("x-replication");

/// Adds `X-Replication` to a revocation's answer.
pub fn with_replication(mut response: HttpResponse, replication: Replication) -> HttpResponse {
    let value = match replication {
        Replication::Confirmed => HeaderValue::from_static("confirmed"),
        Replication::Unconfirmed => HeaderValue::from_static("unconfirmed"),
        Replication::NotApplicable => return response,
    };
    response.headers_mut().insert(X_REPLICATION, value);
    response
}

pub fn empty(status: StatusCode) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response.headers_mut().insert(CACHE_CONTROL, NO_STORE);
    response
}

/// Plain text (admin endpoints).
pub fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> HttpResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The one rendering of an [`ApiError`]: its status and `{"reason":...,"message":...}`.
pub fn api_error(error: &ApiError) -> HttpResponse {
    let (status, reason) = error.status_and_reason();
    let mut response = json(
        status,
        &serde_json::json!({ "reason": reason, "message": error.to_string() }),
    );
    if matches!(error, ApiError::Unauthorized) {
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="session-sidecar-admin""#),
        );
    }
    response
}

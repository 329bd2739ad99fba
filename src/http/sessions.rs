//! The session and revocation API (SPEC §3.3): create, read, merge-patch, delete, log out
//! everywhere, revoke by `jti`. Every change is applied to this sidecar's cache before the call
//! answers; the store has published it to the other sidecars with the write itself.

use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::forward_auth::read_limited;
use super::respond::{self, HttpResponse};
use crate::error::ApiError;
use crate::mint::random_id;
use crate::store::{NewSession, PatchLimits, PatchOutcome, Session, unix_now};
use crate::verify::jwt::{
    decode_object, header_safe, json_too_deep, numeric_date_saturating, valid_id, valid_subject,
};
use crate::{AdminAccess, App};

/// Random bytes in a session id (144 bits, 24 base64url characters).
const SID_BYTES: usize = 18;
/// Random bytes in a token id.
const JTI_BYTES: usize = 16;
/// Random bytes in a per-session secret.
const SESSION_SECRET_BYTES: usize = 32;
/// Longest session lifetime a caller may ask for (30 days).
const MAX_SESSION_TTL: Duration = Duration::from_secs(30 * 86_400);

type ApiResult = Result<HttpResponse, ApiError>;

/// `POST /v1/sessions {"sub":..., "data":{...}, "ttl":3600}` → `201 {"sid","token","expires_at"}`.
pub async fn create(app: &App, request: Request<Incoming>) -> ApiResult {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct CreateSession {
        sub: String,
        #[serde(default)]
        data: Option<Value>,
        ttl: Option<u64>,
    }
    authorize(app, &request)?;
    let signer = app.signer.as_ref().ok_or(ApiError::NoSigningKey)?;
    let body: CreateSession = read_json(app, request).await?;
    if !valid_subject(&body.sub) {
        return Err(ApiError::MalformedBody(
            "`sub` must be 1 to 1024 characters without control characters or leading or trailing whitespace".into(),
        ));
    }
    let data = body.data.unwrap_or_else(|| json!({}));
    check_session_size(app, &data)?;
    let ttl = match body.ttl {
        Some(0) => return Err(ApiError::MalformedBody("`ttl` must be at least 1".into())),
        Some(seconds) => Duration::from_secs(seconds).min(MAX_SESSION_TTL),
        None => app.session_ttl,
    };
    let sid = random_id(SID_BYTES);
    // `<sid>.<random>`: the id names its session, so its revocation is also kept in the
    // session's hash and a miss reads both with one command (store::session_named_by_jti).
    let jti = format!("{sid}.{}", random_id(JTI_BYTES));
    let expires_at = unix_now() + ttl.as_secs();
    let secret = app
        .sessions
        .issue_session_secrets()
        .then(|| random_id(SESSION_SECRET_BYTES));
    let token = signer
        .sign(&body.sub, Some(&sid), Some(&jti), expires_at, &[])
        .map_err(|_| ApiError::NoSigningKey)?;
    app.sessions
        .create(NewSession {
            sid: sid.clone(),
            sub: body.sub,
            data,
            expires_at,
            secret: secret.clone(),
        })
        .await?;
    let mut answer = json!({ "sid": sid, "token": token, "expires_at": expires_at });
    if let (Some(secret), Value::Object(map)) = (secret, &mut answer) {
        map.insert("session_secret".into(), Value::String(secret));
    }
    Ok(respond::json(StatusCode::CREATED, &answer))
}

/// `GET /v1/sessions/{sid}` → `200 {"sid","sub","data","expires_at"}` or `404`.
pub async fn get(app: &App, request: &Request<Incoming>, sid: &str) -> ApiResult {
    authorize(app, request)?;
    let sid = &path_id(sid)?;
    match app.sessions.get(sid).await? {
        Some(session) => Ok(respond::json(StatusCode::OK, &session_body(&session))),
        None => Err(ApiError::NotFound),
    }
}

/// `PATCH /v1/sessions/{sid}` with an RFC 7396 merge patch of `data`, applied atomically.
pub async fn patch(app: &App, request: Request<Incoming>, sid: &str) -> ApiResult {
    authorize(app, &request)?;
    let sid = &path_id(sid)?;
    let patch: Value = read_json(app, request).await?;
    let limits = PatchLimits {
        max_session_bytes: app.limits.max_session_bytes,
    };
    match app.sessions.patch(sid, &patch, limits).await? {
        PatchOutcome::Patched(session) => {
            Ok(respond::json(StatusCode::OK, &session_body(&session)))
        }
        PatchOutcome::NotFound => Err(ApiError::NotFound),
        PatchOutcome::TooLarge => Err(ApiError::SessionTooLarge(app.limits.max_session_bytes)),
    }
}

/// `DELETE /v1/sessions/{sid}` → `204`; every sidecar rejects its tokens from then on.
pub async fn delete(app: &App, request: &Request<Incoming>, sid: &str) -> ApiResult {
    authorize(app, request)?;
    let sid = &path_id(sid)?;
    let replication = app.sessions.delete(sid).await?;
    Ok(respond::with_replication(
        respond::empty(StatusCode::NO_CONTENT),
        replication,
    ))
}

/// `DELETE /v1/users/{sub}/sessions` → `200 {"revoked":N}`.
pub async fn delete_subject(app: &App, request: &Request<Incoming>, sub: &str) -> ApiResult {
    authorize(app, request)?;
    let sub = percent_decode(sub)
        .filter(|s| header_safe(s))
        .ok_or_else(|| ApiError::MalformedBody("the subject in the path is not readable".into()))?;
    let (sids, replication) = app.sessions.delete_subject(&sub).await?;
    Ok(respond::with_replication(
        respond::json(StatusCode::OK, &json!({ "revoked": sids.len() })),
        replication,
    ))
}

/// `POST /v1/revoke {"token":...}` or `{"jti":...,"exp":...}` → `204`.
pub async fn revoke(app: &App, request: Request<Incoming>) -> ApiResult {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RevokeBody {
        token: Option<String>,
        jti: Option<Value>,
        exp: Option<Value>,
        sid: Option<String>,
    }
    authorize(app, &request)?;
    let body: RevokeBody = read_json(app, request).await?;
    let (jti, exp, sid) = match body.token {
        Some(token) => {
            // The token is read, not verified: revoking must work for any token that names
            // a jti, also one that is already invalid for another reason. It is read as
            // strictly as the verifier reads it (unique member names, the same NumericDate).
            let claims = decode_object(
                token.split('.').nth(1).unwrap_or_default(),
                app.limits.max_json_depth,
            )
            .map_err(|_| ApiError::MalformedBody("`token` is not a readable JWT".into()))?;
            let exp = match claims.get("exp") {
                None => None,
                Some(exp) => Some(numeric_date_saturating(exp).ok_or_else(|| {
                    ApiError::MalformedBody("the token's `exp` is not a NumericDate".into())
                })?),
            };
            let sid = claims.get("sid").and_then(Value::as_str).map(str::to_owned);
            (claims.get("jti").cloned(), exp, sid)
        }
        None => {
            let exp =
                match &body.exp {
                    None => None,
                    Some(exp) => Some(numeric_date_saturating(exp).ok_or_else(|| {
                        ApiError::MalformedBody("`exp` must be unix seconds".into())
                    })?),
                };
            (body.jti, exp, body.sid)
        }
    };
    let jti = match jti {
        Some(Value::String(jti)) if valid_id(&jti) => jti,
        Some(_) => return Err(ApiError::MalformedBody("`jti` is not a valid id".into())),
        None => return Err(ApiError::MissingJti),
    };
    // The session is not needed to find the entry (a token id is deny-listed in one place,
    // which every verification of a token with that jti reads), but a malformed one is an
    // error in the request.
    if let Some(sid) = &sid {
        checked_id(sid)?;
    }
    let exp =
        exp.ok_or_else(|| ApiError::MalformedBody("`exp` (unix seconds) is required".into()))?;
    let replication = app.sessions.revoke(jti, exp).await?;
    Ok(respond::with_replication(
        respond::empty(StatusCode::NO_CONTENT),
        replication,
    ))
}

/// Checks the admin credential in constant time. Without `--admin-token-file` the session API
/// is off (SPEC §3.3), except in `--dev`, where it is open.
fn authorize(app: &App, request: &Request<Incoming>) -> Result<(), ApiError> {
    let credential = match &app.admin_access {
        AdminAccess::Open => return Ok(()),
        AdminAccess::Disabled => return Err(ApiError::SessionApiDisabled),
        AdminAccess::Credential(credential) => credential,
    };
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, credential)| credential.trim())
        .ok_or(ApiError::Unauthorized)?;
    if credential.accepts(presented.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

async fn read_json<T: DeserializeOwned>(
    app: &App,
    request: Request<Incoming>,
) -> Result<T, ApiError> {
    let body = read_limited(request.into_body(), app.limits.max_body_bytes).await?;
    if json_too_deep(&body, app.limits.max_json_depth) {
        return Err(ApiError::TooDeep(app.limits.max_json_depth));
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::MalformedBody(e.to_string()))
}

fn check_session_size(app: &App, data: &Value) -> Result<(), ApiError> {
    let size = serde_json::to_vec(data)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > app.limits.max_session_bytes {
        return Err(ApiError::SessionTooLarge(app.limits.max_session_bytes));
    }
    Ok(())
}

fn checked_id(id: &str) -> Result<&str, ApiError> {
    if valid_id(id) {
        Ok(id)
    } else {
        Err(ApiError::MalformedBody(
            "the session id is not valid".into(),
        ))
    }
}

/// A session id from a path segment: percent-decoded, then checked.
fn path_id(segment: &str) -> Result<String, ApiError> {
    let id = percent_decode(segment)
        .ok_or_else(|| ApiError::MalformedBody("the session id is not valid".into()))?;
    checked_id(&id)?;
    Ok(id)
}

fn session_body(session: &Session) -> Value {
    json!({
        "sid": session.sid,
        "sub": session.sub,
        "data": session.data,
        "expires_at": session.expires_at,
    })
}

/// Decodes `%XX` escapes of a path segment; `None` when they do not make UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

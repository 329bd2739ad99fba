//! `/verify` (forward-auth, SPEC §3.1) and `POST /v1/verify` (introspection, SPEC §3.2).
//! This is the hot path: on a cache hit it copies pre-rendered headers and allocates only
//! the response.

use http_body_util::BodyExt;
use hyper::Request;
use hyper::body::Incoming;
use serde::Deserialize;

use super::respond::{self, HttpResponse};
use crate::App;
use crate::error::{ApiError, Reason};
use crate::rules::{Access, Route};
use crate::verify::jwt::json_too_deep;
use crate::verify::{Verdict, extract};

/// `GET|HEAD|POST /verify[/...]`: headers for a proxy, or a `401`/`403`/`503`.
pub async fn forward_auth(app: &App, request: &Request<Incoming>) -> HttpResponse {
    // Route rules first: a public route looks at no token; the requirements of another are
    // checked on the grant, after the (cached) decision, which they never change.
    let requirements = match &app.rules {
        None => None,
        Some(rules) => match Route::of(request.method(), request.uri(), request.headers()) {
            Err(error) => {
                tracing::debug!(%error, "forward-auth route refused");
                return respond::forbidden();
            }
            Ok(route) => match route.as_ref().map(|route| rules.access(route)) {
                Some(Access::Public) => {
                    return respond::public_route(app.verifier.claim_headers());
                }
                Some(Access::Require(requirements)) => Some(requirements),
                Some(Access::Authenticated) | None => None,
            },
        },
    };
    let token = match extract::token_from_headers(
        request.headers(),
        app.token_cookie.as_deref(),
        app.limits.max_token_bytes,
    ) {
        Ok(token) => token,
        Err(reason) => {
            app.metrics.verification_refused_early(reason);
            return app.rejections.reject(reason);
        }
    };
    match app.verifier.verify(token).await {
        Verdict::Granted(grant) => match requirements {
            Some(requirements) if !requirements.allow(&grant, token) => respond::forbidden(),
            _ => respond::forward_auth_grant(&grant, token),
        },
        Verdict::Denied(reason) => app.rejections.reject(reason),
        Verdict::Unavailable => respond::unavailable(),
        Verdict::KeysUnavailable => respond::keys_unavailable(),
    }
}

/// `POST /v1/verify` with `{"token": "..."}` or the Authorization header.
pub async fn introspect(app: &App, request: Request<Incoming>) -> HttpResponse {
    #[derive(Deserialize)]
    struct Body {
        token: Option<String>,
    }
    let from_header = extract::token_from_headers(
        request.headers(),
        app.token_cookie.as_deref(),
        app.limits.max_token_bytes,
    )
    .map(str::to_owned);
    let body = match read_limited(request.into_body(), app.limits.max_body_bytes).await {
        Ok(body) => body,
        Err(error) => return respond::api_error(&error),
    };
    let from_body = if body.is_empty() {
        None
    } else if json_too_deep(&body, app.limits.max_json_depth) {
        app.metrics.verification_refused_early(Reason::Malformed);
        return app.rejections.reject(Reason::Malformed);
    } else {
        match serde_json::from_slice::<Body>(&body) {
            Ok(parsed) => parsed.token,
            Err(_) => {
                app.metrics.verification_refused_early(Reason::Malformed);
                return app.rejections.reject(Reason::Malformed);
            }
        }
    };
    let token = match (from_body, from_header) {
        (Some(token), _) => match extract::checked(&token, app.limits.max_token_bytes) {
            Ok(_) => token,
            Err(reason) => {
                app.metrics.verification_refused_early(reason);
                return app.rejections.reject(reason);
            }
        },
        (None, Ok(token)) => token,
        (None, Err(reason)) => {
            app.metrics.verification_refused_early(reason);
            return app.rejections.reject(reason);
        }
    };
    match app.verifier.verify(&token).await {
        Verdict::Granted(grant) => respond::introspection_grant(&grant, &token),
        Verdict::Denied(reason) => app.rejections.reject(reason),
        Verdict::Unavailable => respond::unavailable(),
        Verdict::KeysUnavailable => respond::keys_unavailable(),
    }
}

/// How much of an oversized body is read and thrown away before answering `413`, so that the
/// client, still sending, reads the answer instead of a connection reset.
const OVERSIZED_DRAIN_BYTES: usize = 1024 * 1024;

/// Reads a request body of at most `limit` bytes.
pub async fn read_limited(mut body: Incoming, limit: usize) -> Result<bytes::Bytes, ApiError> {
    let mut collected = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ApiError::MalformedBody("the body was cut off".into()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        seen = seen.saturating_add(data.len());
        if seen <= limit {
            collected.extend_from_slice(&data);
        } else if seen > limit.saturating_add(OVERSIZED_DRAIN_BYTES) {
            break;
        }
    }
    if seen > limit {
        return Err(ApiError::BodyTooLarge(limit));
    }
    Ok(collected.freeze())
}

//! Whole requests through the API router (`http::route`: forward-auth, introspection, the
//! session and revocation API) over an in-memory connection, served by the sidecar's own
//! connection builder, with the embedded store holding one session and `--session-keys` on.
//! The fuzzer picks the method, the route and its ids, headers (Authorization, cookies, any
//! other) and the body (bytes or JSON); a valid token for the session is one of its choices.
//! Every request gets an answer below 500 (the embedded store never fails): no panic, no
//! dropped connection.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use session_sidecar_fuzz::{
    ArbJson, SECRET, SESSION_ID, SESSION_SECRET, SESSION_SUB, app, exchange, hmac_token, now,
    runtime,
};

#[derive(Arbitrary, Debug)]
enum Method {
    Get,
    Head,
    Post,
    Patch,
    Delete,
    Put,
    Options,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Route {
    Verify,
    VerifyTail(String),
    Introspect,
    Sessions,
    Session(String),
    TheSession,
    Subject(String),
    Revoke,
    Raw(String),
}

/// A token: raw text, or HS256-signed over a chosen payload (for the session, or with claims
/// of the fuzzer's choice, or signed with the session's own secret and `kid`).
#[derive(Arbitrary, Debug)]
enum Token {
    Raw(String),
    ForSession { extra: Option<ArbJson> },
    Claims(ArbJson),
    Payload(Vec<u8>),
    SessionKey(ArbJson),
}

impl Token {
    fn text(&self) -> String {
        let header = br#"{"alg":"HS256","typ":"JWT"}"#;
        match self {
            Token::Raw(text) => text.clone(),
            Token::ForSession { extra } => {
                let mut claims = serde_json::json!({
                    "sub": SESSION_SUB, "sid": SESSION_ID, "exp": now() + 600, "jti": "j-1",
                });
                if let Some(extra) = extra {
                    claims["extra"] = extra.0.clone();
                }
                hmac_token(
                    Algorithm::HS256,
                    header,
                    claims.to_string().as_bytes(),
                    SECRET,
                )
            }
            Token::Claims(claims) => hmac_token(
                Algorithm::HS256,
                header,
                claims.0.to_string().as_bytes(),
                SECRET,
            ),
            Token::Payload(payload) => hmac_token(Algorithm::HS256, header, payload, SECRET),
            Token::SessionKey(claims) => hmac_token(
                Algorithm::HS256,
                format!(r#"{{"alg":"HS256","kid":"{SESSION_ID}"}}"#).as_bytes(),
                claims.0.to_string().as_bytes(),
                SESSION_SECRET,
            ),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Header {
    Bearer(Token),
    Authorization(Vec<u8>),
    Cookie(Token),
    RawCookie(Vec<u8>),
    ContentType(Vec<u8>),
    /// Any other header (framing and connection headers are left out).
    Other(String, Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Body {
    Empty,
    Raw(Vec<u8>),
    Json(ArbJson),
    /// `{"token": ...}` (introspection, revocation).
    Token(Token),
    /// `{"sub": ..., "data": ..., "ttl": ...}` (session creation).
    Create {
        sub: String,
        data: Option<ArbJson>,
        ttl: Option<u64>,
    },
    /// `{"jti": ..., "exp": ..., "sid": ...}` (revocation by id).
    Revoke {
        jti: ArbJson,
        exp: Option<u64>,
        sid: Option<String>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    method: Method,
    route: Route,
    headers: Vec<Header>,
    body: Body,
}

/// Text that cannot break the request line or a header line.
fn inline(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .map(|b| if matches!(b, b'\r' | b'\n') { b' ' } else { *b })
        .collect()
}

const FRAMING: [&str; 9] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "expect",
    "te",
    "host",
    "trailer",
];

fuzz_target!(|input: Input| {
    let method = match &input.method {
        Method::Get => "GET".to_owned(),
        Method::Head => "HEAD".to_owned(),
        Method::Post => "POST".to_owned(),
        Method::Patch => "PATCH".to_owned(),
        Method::Delete => "DELETE".to_owned(),
        Method::Put => "PUT".to_owned(),
        Method::Options => "OPTIONS".to_owned(),
        Method::Other(text) => {
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_alphabetic()) {
                return;
            }
            text.clone()
        }
    };
    let path = match &input.route {
        Route::Verify => "/verify".to_owned(),
        Route::VerifyTail(tail) => format!("/verify/{tail}"),
        Route::Introspect => "/v1/verify".to_owned(),
        Route::Sessions => "/v1/sessions".to_owned(),
        Route::Session(sid) => format!("/v1/sessions/{sid}"),
        Route::TheSession => format!("/v1/sessions/{SESSION_ID}"),
        Route::Subject(sub) => format!("/v1/users/{sub}/sessions"),
        Route::Revoke => "/v1/revoke".to_owned(),
        Route::Raw(path) => path.clone(),
    };
    if path
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return;
    }
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: sidecar\r\n").into_bytes();
    for header in &input.headers {
        let (name, value): (&str, Vec<u8>) = match header {
            Header::Bearer(token) => ("Authorization", format!("Bearer {}", token.text()).into()),
            Header::Authorization(value) => ("Authorization", value.clone()),
            Header::Cookie(token) => ("Cookie", format!("sc_token={}", token.text()).into()),
            Header::RawCookie(value) => ("Cookie", value.clone()),
            Header::ContentType(value) => ("Content-Type", value.clone()),
            Header::Other(name, value) => {
                let lower = name.to_ascii_lowercase();
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    || FRAMING.contains(&lower.as_str())
                    || lower.starts_with("proxy-")
                {
                    continue;
                }
                (name.as_str(), value.clone())
            }
        };
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(&inline(&value));
        head.extend_from_slice(b"\r\n");
    }
    let body: Vec<u8> = match &input.body {
        Body::Empty => Vec::new(),
        Body::Raw(bytes) => bytes.clone(),
        Body::Json(value) => value.0.to_string().into_bytes(),
        Body::Token(token) => serde_json::json!({ "token": token.text() })
            .to_string()
            .into_bytes(),
        Body::Create { sub, data, ttl } => {
            let mut body = serde_json::json!({ "sub": sub });
            if let Some(data) = data {
                body["data"] = data.0.clone();
            }
            if let Some(ttl) = ttl {
                body["ttl"] = (*ttl).into();
            }
            body.to_string().into_bytes()
        }
        Body::Revoke { jti, exp, sid } => {
            let mut body = serde_json::json!({ "jti": jti.0 });
            if let Some(exp) = exp {
                body["exp"] = (*exp).into();
            }
            if let Some(sid) = sid {
                body["sid"] = sid.clone().into();
            }
            body.to_string().into_bytes()
        }
    };
    head.extend_from_slice(
        format!(
            "Connection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    head.extend_from_slice(&body);
    let app = runtime().block_on(app(Duration::from_secs(60), true));
    let (status, answer) = exchange(&app, &head);
    assert!(
        status != 0 && status < 500,
        "{status} {:?} for {:?}",
        String::from_utf8_lossy(&answer),
        String::from_utf8_lossy(&head)
    );
});

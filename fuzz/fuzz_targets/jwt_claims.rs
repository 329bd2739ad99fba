//! Claims of validly signed tokens through the whole verification (`Verifier::verify`: the
//! JWT checks of `verify::jwt`, the store lookup, the decision and its cache deadline), with
//! the embedded store holding one session. The fuzzer picks the payload (raw bytes, or claims
//! with numbers of any size and type) and the header (HS256/384/512, `kid` = the session with
//! its own secret, or raw JSON); the token is signed here, so every input reaches the claims.
//! Never panics; the store never fails; a grant has a readable subject, an `exp` not in the
//! past, an `nbf` not in the future, and a session that is the token's; introspection and the
//! forward-auth headers of a grant can be rendered.
//!
//! `SIDECAR_FUZZ_SKIP_KNOWN=1` skips payloads whose `exp` is at least 2^63, as an integer or a
//! float (the known panic in `verify::until_unix`), so that a long run can look for anything
//! else.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arbitrary::Arbitrary;
use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use session_sidecar::App;
use session_sidecar::http::respond::forward_auth_grant;
use session_sidecar::http::respond::introspection_body;
use session_sidecar::verify::Verdict;
use session_sidecar::verify::jwt::header_safe;
use session_sidecar_fuzz::{
    ArbJson, LEEWAY, SECRET, SESSION_ID, SESSION_SECRET, SESSION_SUB, app, hmac_token, now, runtime,
};

#[derive(Arbitrary, Debug)]
enum Header {
    Hs256,
    Hs384,
    Hs512,
    /// `kid` = the store's session, signed with that session's own secret.
    SessionKid,
    /// Raw header JSON, signed HS256 with the secret.
    Raw(Vec<u8>),
}

/// A number as JSON text: any integer or float, a boundary value, or a time near now.
#[derive(Arbitrary, Debug)]
enum Number {
    U64(u64),
    I64(i64),
    F64(f64),
    Boundary(u8),
    FromNow(i32),
    Digits(Vec<u8>),
    Json(ArbJson),
}

const BOUNDARIES: [&str; 16] = [
    "0",
    "-1",
    "1e19",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "253402300799",
    "1e308",
    "-0",
    "0.5",
    "4294967296",
    "123456789012345678901234567890",
    "1E400",
    "2e9",
];

impl Number {
    fn text(&self) -> String {
        match self {
            Number::U64(n) => n.to_string(),
            Number::I64(n) => n.to_string(),
            Number::F64(f) if f.is_finite() => format!("{f:?}"),
            Number::F64(_) => "null".into(),
            Number::Boundary(i) => BOUNDARIES[usize::from(*i) % BOUNDARIES.len()].into(),
            Number::FromNow(offset) => {
                (i64::try_from(now()).unwrap_or(0) + i64::from(*offset)).to_string()
            }
            Number::Digits(digits) => {
                let text: String = digits.iter().map(|d| char::from(b'0' + d % 10)).collect();
                if text.is_empty() { "0".into() } else { text }
            }
            Number::Json(value) => value.0.to_string(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Sub {
    Alice,
    Other(String),
    Json(ArbJson),
}

#[derive(Arbitrary, Debug)]
enum Id {
    Session,
    Other(String),
    Json(ArbJson),
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Raw(Vec<u8>),
    Claims {
        sub: Option<Sub>,
        exp: Option<Number>,
        nbf: Option<Number>,
        iat: Option<Number>,
        sid: Option<Id>,
        jti: Option<Id>,
        extra: Option<ArbJson>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    header: Header,
    payload: Payload,
}

fn json_string(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

impl Payload {
    fn bytes(&self) -> Vec<u8> {
        let (sub, exp, nbf, iat, sid, jti, extra) = match self {
            Payload::Raw(bytes) => return bytes.clone(),
            Payload::Claims {
                sub,
                exp,
                nbf,
                iat,
                sid,
                jti,
                extra,
            } => (sub, exp, nbf, iat, sid, jti, extra),
        };
        let mut members = Vec::new();
        if let Some(sub) = sub {
            let text = match sub {
                Sub::Alice => json_string(SESSION_SUB),
                Sub::Other(text) => json_string(text),
                Sub::Json(value) => value.0.to_string(),
            };
            members.push(format!(r#""sub":{text}"#));
        }
        for (name, number) in [("exp", exp), ("nbf", nbf), ("iat", iat)] {
            if let Some(number) = number {
                members.push(format!(r#""{name}":{}"#, number.text()));
            }
        }
        for (name, id) in [("sid", sid), ("jti", jti)] {
            if let Some(id) = id {
                let text = match id {
                    Id::Session => json_string(SESSION_ID),
                    Id::Other(text) => json_string(text),
                    Id::Json(value) => value.0.to_string(),
                };
                members.push(format!(r#""{name}":{text}"#));
            }
        }
        if let Some(ArbJson(extra)) = extra {
            members.push(format!(r#""extra":{extra}"#));
        }
        format!("{{{}}}", members.join(",")).into_bytes()
    }
}

fn shared() -> &'static Arc<App> {
    static APP: OnceLock<Arc<App>> = OnceLock::new();
    APP.get_or_init(|| runtime().block_on(app(Duration::from_secs(60), true)))
}

fn skip_known() -> bool {
    static SKIP: OnceLock<bool> = OnceLock::new();
    *SKIP.get_or_init(|| std::env::var_os("SIDECAR_FUZZ_SKIP_KNOWN").is_some_and(|v| v == "1"))
}

fuzz_target!(|input: Input| {
    let payload = input.payload.bytes();
    let claims: Option<Map<String, Value>> = serde_json::from_slice(&payload).ok();
    if skip_known()
        && claims
            .as_ref()
            .and_then(|c| c.get("exp"))
            .is_some_and(|exp| {
                exp.as_u64().is_some_and(|exp| exp >= 1 << 63)
                    || exp
                        .as_f64()
                        .is_some_and(|exp| exp >= 9_223_372_036_854_775_808.0)
            })
    {
        return;
    }
    let standard = br#"{"alg":"HS256","typ":"JWT"}"#.to_vec();
    let (alg, header, secret) = match &input.header {
        Header::Hs256 => (Algorithm::HS256, standard, SECRET),
        Header::Hs384 => (Algorithm::HS384, br#"{"alg":"HS384"}"#.to_vec(), SECRET),
        Header::Hs512 => (Algorithm::HS512, br#"{"alg":"HS512"}"#.to_vec(), SECRET),
        Header::SessionKid => (
            Algorithm::HS256,
            format!(r#"{{"alg":"HS256","kid":"{SESSION_ID}"}}"#).into_bytes(),
            SESSION_SECRET,
        ),
        Header::Raw(bytes) => (Algorithm::HS256, bytes.clone(), SECRET),
    };
    let token = hmac_token(alg, &header, &payload, secret);
    let app = shared();
    let started = now();
    let verdict = runtime().block_on(app.verifier().verify(&token));
    let grant = match verdict {
        Verdict::Granted(grant) => grant,
        Verdict::Denied(_) => return,
        Verdict::Unavailable | Verdict::KeysUnavailable => {
            panic!("the embedded store never fails and the keys are static")
        }
    };
    let claims = claims.expect("a granted payload is a JSON object");
    assert!(header_safe(grant.claims.sub()), "{:?}", grant.claims.sub());
    assert_eq!(
        claims.get("sub").and_then(Value::as_str),
        Some(grant.claims.sub())
    );
    if let Some(exp) = claims.get("exp").and_then(Value::as_u64) {
        assert!(
            exp.saturating_add(LEEWAY) >= started,
            "expired exp {exp} granted"
        );
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_u64) {
        assert!(
            nbf <= now().saturating_add(LEEWAY),
            "future nbf {nbf} granted"
        );
    }
    if let Some(sid) = grant.sid() {
        assert_eq!(sid, SESSION_ID);
        assert_eq!(grant.claims.sub(), SESSION_SUB);
        assert!(grant.session_header.is_some());
    }
    let body = introspection_body(&grant, &token);
    assert_eq!(body["active"], Value::Bool(true));
    let response = forward_auth_grant(&grant, &token);
    assert_eq!(response.status(), 200);
    // X-Auth-Claims is the token's own payload segment, copied from it on each answer.
    let claims_header = response.headers().get("x-auth-claims");
    assert_eq!(
        claims_header.map(|value| value.as_bytes()),
        grant.claims.passed_payload(&token).map(str::as_bytes),
    );
    if grant.claims.issuer_claims {
        assert_eq!(
            claims_header.map(|value| value.as_bytes()),
            token.split('.').nth(1).map(str::as_bytes)
        );
    }
});

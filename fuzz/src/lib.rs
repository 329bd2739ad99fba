//! What the fuzz targets share: a sidecar [`App`] in this process (embedded store holding one
//! live session), one request through the real router over an in-memory connection, HS256
//! signing of arbitrary payloads, arbitrary JSON values, and reference implementations the
//! targets compare the sidecar against.
//!
//! Everything here uses the sidecar's public API only; no function of the sidecar is copied.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Map, Value};
use session_sidecar::cache::DecisionCache;
use session_sidecar::http::Limits;
use session_sidecar::keys::{KeySet, PublicKeySpec};
use session_sidecar::metrics::Metrics;
use session_sidecar::mint::TokenSigner;
use session_sidecar::sessions::Sessions;
use session_sidecar::store::memory::MemoryStore;
use session_sidecar::store::{NewSession, SessionStore};
use session_sidecar::verify::Verifier;
use session_sidecar::verify::jwt::ClaimRules;
use session_sidecar::verify::jwt::JwtVerifier;
use session_sidecar::verify::session_keys::SessionKeyGate;
use session_sidecar::{AdminAccess, App, AppParts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

/// The HMAC secret of the fuzzed sidecar (`--jwt-secret-file`).
pub const SECRET: &[u8] = b"fuzz-secret-of-enough-length-for-hs512-0123456789abcdef";
/// The one session the embedded store holds (live for a day from start-up).
pub const SESSION_ID: &str = "fuzzSession0123456789abc";
pub const SESSION_SUB: &str = "alice";
/// That session's own secret (`--session-keys`), raw bytes.
pub const SESSION_SECRET: &[u8] = b"per-session-secret-0123456789abcdef0123";
/// `--max-json-depth` of the fuzzed sidecar (its default).
pub const MAX_JSON_DEPTH: usize = 32;
/// `--leeway` (its default).
pub const LEEWAY: u64 = 30;

/// The sidecar's default request limits.
pub fn limits() -> Limits {
    Limits {
        max_token_bytes: 8 * 1024,
        max_header_bytes: 16 * 1024,
        max_body_bytes: 64 * 1024,
        max_session_bytes: 16 * 1024,
        max_json_depth: MAX_JSON_DEPTH,
    }
}

/// One single-threaded runtime per fuzz process: a panic anywhere aborts the input at once.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The secret and the public keys of tests/fixtures: every algorithm family is allowed, so the
/// header checks see RSA, EC and EdDSA tokens too. The EC key only matches `kid` "ec".
pub fn key_set() -> KeySet {
    let public = vec![
        PublicKeySpec {
            kid: None,
            pem: include_bytes!("../../tests/fixtures/rsa.pub").to_vec(),
            path: "rsa.pub".into(),
        },
        PublicKeySpec {
            kid: Some("ec".into()),
            pem: include_bytes!("../../tests/fixtures/ec256.pub").to_vec(),
            path: "ec256.pub".into(),
        },
        PublicKeySpec {
            kid: None,
            pem: include_bytes!("../../tests/fixtures/ed25519.pub").to_vec(),
            path: "ed25519.pub".into(),
        },
    ];
    KeySet::new(Some(SECRET.to_vec()), public, None).expect("fixture keys load")
}

/// Only the HMAC secret (what a sidecar started with `--jwt-secret-file` alone has): cheap to
/// build, for the targets that make a sidecar per input.
pub fn secret_key_set() -> KeySet {
    KeySet::new(Some(SECRET.to_vec()), Vec::new(), None).expect("the secret loads")
}

/// The claim rules of a sidecar started without `--issuer`/`--audience`.
pub fn claim_rules() -> ClaimRules {
    ClaimRules {
        issuer: None,
        audience: Vec::new(),
        leeway: LEEWAY,
    }
}

/// The JWT verifier of the fuzzed sidecar.
pub fn jwt_verifier() -> JwtVerifier {
    JwtVerifier::new(key_set(), &claim_rules(), MAX_JSON_DEPTH)
}

/// A sidecar's shared state (HMAC secret only) with the embedded store holding
/// [`SESSION_ID`]. `cache_ttl` zero disables the decision cache. The session API is open (as in `--dev`), so that fuzzed
/// requests reach the handlers instead of the credential check.
pub async fn app(cache_ttl: Duration, session_keys: bool) -> Arc<App> {
    let metrics = Arc::new(Metrics::new());
    let cache = DecisionCache::new(cache_ttl, 10_000, Arc::clone(&metrics));
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    store
        .create(NewSession {
            sid: SESSION_ID.into(),
            sub: SESSION_SUB.into(),
            data: serde_json::json!({"role": "admin", "prefs": {"theme": "dark"}}),
            expires_at: now() + 86_400,
            secret: Some(URL_SAFE_NO_PAD.encode(SESSION_SECRET)),
        })
        .await
        .expect("embedded store accepts the session");
    let verifier = Verifier::new(
        JwtVerifier::new(secret_key_set(), &claim_rules(), MAX_JSON_DEPTH),
        cache.clone(),
        Arc::clone(&store),
        Arc::clone(&metrics),
        session_keys.then(|| SessionKeyGate::new(1_000_000)),
    );
    Arc::new(App::new(AppParts {
        verifier,
        sessions: Sessions::new(store, cache, session_keys),
        metrics,
        signer: Some(TokenSigner::new(SECRET, None, None)),
        token_cookie: Some("sc_token".into()),
        admin_access: AdminAccess::Open,
        limits: limits(),
        session_ttl: Duration::from_secs(3600),
    }))
}

/// Signs `header.payload` (both raw JSON bytes, base64url-encoded here) with an HMAC `alg`.
pub fn hmac_token(alg: Algorithm, header: &[u8], payload: &[u8], secret: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &EncodingKey::from_secret(secret), alg)
            .expect("HMAC signing cannot fail");
    format!("{message}.{signature}")
}

/// One HTTP/1.1 exchange with the sidecar's API router (`http::route`) over an in-memory
/// connection, served by the sidecar's own connection builder (its head limits included).
/// Returns the status (0: the connection closed without an answer) and the body. The request
/// must be complete and say `Connection: close`.
pub fn exchange(app: &Arc<App>, request: &[u8]) -> (u16, Vec<u8>) {
    runtime().block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 17);
        let handler_app = Arc::clone(app);
        let service = service_fn(move |request| {
            let app = Arc::clone(&handler_app);
            async move { Ok::<_, Infallible>(session_sidecar::http::route(&app, request).await) }
        });
        let builder = session_sidecar::http::connection_builder(limits().max_header_bytes);
        let connection = async move {
            let _ = builder
                .serve_connection(TokioIo::new(server), service)
                .await;
        };
        let talk = async move {
            let _ = client.write_all(request).await;
            let mut answer = Vec::new();
            let _ = client.read_to_end(&mut answer).await;
            answer
        };
        // Every request the targets send is complete and says `Connection: close`: an
        // exchange that does not end is a hang, and a finding.
        let both = async { tokio::join!(connection, talk).1 };
        let answer = tokio::time::timeout(Duration::from_secs(5), both)
            .await
            .expect("the sidecar answered and closed within 5 s");
        parse_answer(&answer)
    })
}

/// Status and body of an HTTP/1.1 answer (0 and nothing when there is none).
pub fn parse_answer(answer: &[u8]) -> (u16, Vec<u8>) {
    let status = answer
        .get(9..12)
        .filter(|_| answer.starts_with(b"HTTP/1.1 "))
        .and_then(|digits| std::str::from_utf8(digits).ok())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0);
    let body = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| answer[at + 4..].to_vec())
        .unwrap_or_default();
    (status, body)
}

/// The `reason` of a JSON error body, if it is one.
pub fn reason(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get("reason")?.as_str().map(str::to_owned)
}

/// Nesting depth of a JSON value: scalars 0, a container one more than its deepest member.
pub fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// RFC 7396 §2, written as the RFC's pseudo-code reads (a pure function, unlike the sidecar's
/// in-place version).
pub fn reference_merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(patch) = patch else {
        return patch.clone();
    };
    let mut result = match target {
        Value::Object(target) => target.clone(),
        _ => Map::new(),
    };
    for (name, value) in patch {
        if value.is_null() {
            result.remove(name);
        } else {
            let current = result.get(name).cloned().unwrap_or(Value::Null);
            result.insert(name.clone(), reference_merge_patch(&current, value));
        }
    }
    Value::Object(result)
}

/// RFC 3986 percent-decoding: `%` and exactly two hex digits; `None` for a broken escape or
/// for bytes that are not UTF-8.
pub fn reference_percent_decode(segment: &[u8]) -> Option<String> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(segment.len());
    let mut i = 0;
    while i < segment.len() {
        if segment[i] == b'%' {
            let high = hex(*segment.get(i + 1)?)?;
            let low = hex(*segment.get(i + 2)?)?;
            out.push(high << 4 | low);
            i += 3;
        } else {
            out.push(segment[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A JSON value built from fuzz input: small key and string alphabets (so that targets and
/// patches name the same members), every JSON type, nesting at most [`ArbJson::MAX_DEPTH`].
#[derive(Debug, Clone)]
pub struct ArbJson(pub Value);

impl ArbJson {
    pub const MAX_DEPTH: usize = 8;
}

impl<'a> Arbitrary<'a> for ArbJson {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        arbitrary_value(u, 0).map(ArbJson)
    }
}

const KEYS: [&str; 6] = ["a", "b", "c", "sub", "exp", ""];

fn arbitrary_value(u: &mut Unstructured<'_>, depth: usize) -> arbitrary::Result<Value> {
    let kinds = if depth >= ArbJson::MAX_DEPTH { 4 } else { 6 };
    Ok(match u.int_in_range(0..=kinds)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => match u.int_in_range(0..=2)? {
            0 => Value::from(u.arbitrary::<i64>()?),
            1 => Value::from(u.arbitrary::<u64>()?),
            _ => serde_json::Number::from_f64(u.arbitrary()?)
                .map(Value::Number)
                .unwrap_or(Value::Null),
        },
        3 => Value::String(u.choose(&KEYS)?.to_string()),
        4 => Value::String(u.arbitrary()?),
        5 => {
            let len = u.int_in_range(0..=4)?;
            let mut items = Vec::with_capacity(len);
            for _ in 0..len {
                items.push(arbitrary_value(u, depth + 1)?);
            }
            Value::Array(items)
        }
        _ => {
            let len = u.int_in_range(0..=5)?;
            let mut map = Map::new();
            for _ in 0..len {
                let key = if u.ratio(7, 8)? {
                    u.choose(&KEYS)?.to_string()
                } else {
                    u.arbitrary()?
                };
                map.insert(key, arbitrary_value(u, depth + 1)?);
            }
            Value::Object(map)
        }
    })
}

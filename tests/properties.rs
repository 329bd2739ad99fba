//! Property tests of hostile input (issue 7, SPEC §7): no header, token or body makes
//! `/verify`, `POST /v1/verify` or the session API answer a 5xx or drop the connection (a panic
//! in the sidecar ends the connection without an answer), and no numeric claim of any size or
//! type in a validly signed token does either.
//!
//! One sidecar serves the whole file: it runs on a runtime of its own that every test shares,
//! and each property runs 256 cases (failures are not persisted; the inputs that failed once
//! are kept below as plain regression tests). Requests go out as raw bytes, so that headers
//! may carry any byte but CR and LF.

mod support;

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Number, Value, json};
use support::*;

/// The sidecar all properties share, and the sessions they use.
struct Shared {
    runtime: tokio::runtime::Runtime,
    sidecar: TestSidecar,
    /// A session whose own secret signs `kid`-bound tokens (`--session-keys`); its subject is
    /// [`KEYED_SUB`]. Nothing here deletes it.
    keyed_sid: String,
    keyed_secret: Vec<u8>,
    /// A session the session-API property patches with arbitrary merge patches.
    patched_sid: String,
}

const KEYED_SUB: &str = "numeric-claims-subject";

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (sidecar, keyed_sid, keyed_secret, patched_sid) = runtime.block_on(async {
            let sidecar =
                TestSidecar::start(&["--token-cookie", "sc_token", "--session-keys"]).await;
            let (keyed_sid, keyed_secret) = sidecar.create_keyed_session(KEYED_SUB).await;
            let (patched_sid, _) = sidecar
                .create_session("merge-patch-subject", json!({"a": {"b": 1}, "c": [1, 2]}))
                .await;
            (sidecar, keyed_sid, keyed_secret, patched_sid)
        });
        Shared {
            runtime,
            sidecar,
            keyed_sid,
            keyed_secret,
            patched_sid,
        }
    })
}

impl Shared {
    /// Sends one request (raw bytes) and returns the status (0: no answer) and the answer.
    fn send(&self, request: &[u8]) -> (u16, String) {
        self.runtime
            .block_on(raw_request(self.sidecar.api, request))
    }

    /// Whether the sidecar still answers health checks and verifies a good token.
    fn assert_alive(&self) {
        let token = hs256(&claims("alive"));
        let status = self.runtime.block_on(async {
            let health = self
                .sidecar
                .http
                .get(format!("http://{}/healthz", self.sidecar.admin))
                .send()
                .await
                .expect("admin answers")
                .status();
            assert_eq!(health, 200);
            self.sidecar.verify(&token).await.status()
        });
        assert_eq!(status, 200, "the sidecar stopped granting good tokens");
    }
}

/// One HTTP/1.1 request that closes the connection after the answer.
fn request(method: &str, path: &str, headers: &[(&str, Vec<u8>)], body: &[u8]) -> Vec<u8> {
    let mut bytes = format!("{method} {path} HTTP/1.1\r\nHost: sidecar\r\n").into_bytes();
    for (name, value) in headers {
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(b": ");
        bytes.extend_from_slice(value);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(
        format!(
            "Connection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    bytes.extend_from_slice(body);
    bytes
}

/// The property every request here must have: an answer, and not a 5xx.
fn answered(status: u16, answer: &str, request: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(
        status != 0,
        "no answer (the connection was dropped: a panic in the sidecar?) to {:?}",
        String::from_utf8_lossy(request)
    );
    prop_assert!(
        status < 500,
        "{status} to {:?}: {answer}",
        String::from_utf8_lossy(request)
    );
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        max_shrink_iters: 1024,
        ..ProptestConfig::default()
    }
}

/// A header value: mostly bytes HTTP allows in one (tab, visible ASCII, obs-text), sometimes
/// any bytes but CR and LF (which would end the header line).
fn header_bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        8 => prop::collection::vec(prop_oneof![Just(b'\t'), 0x20u8..=0x7e, 0x80u8..=0xff], 0..160),
        1 => prop::collection::vec(
            any::<u8>().prop_map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
            0..160,
        ),
    ]
    .boxed()
}

/// JSON values of every type, nested up to 6 deep, with keys the sidecar reads among others.
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    "[a-c]{0,2}|sub|exp|nbf|iat|jti|sid|data|token|ttl|alg|kid",
                    inner
                ),
                0..6
            )
            .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
        ]
    })
    .boxed()
}

/// JSON text: values, nesting past the depth limit, broken text.
fn json_text() -> BoxedStrategy<String> {
    prop_oneof![
        json_value().prop_map(|v| v.to_string()),
        (1usize..200).prop_map(|n| format!("{}1{}", "[".repeat(n), "]".repeat(n))),
        (1usize..200).prop_map(|n| format!(r#"{}"x":1{}"#, "{\"a\":".repeat(n), "}".repeat(n))),
        "[\\[\\]{}\",:0-9a-z\\\\ ]{0,64}",
    ]
    .boxed()
}

/// Token text: well formed or not, validly signed (any payload) or not.
fn token() -> BoxedStrategy<String> {
    prop_oneof![
        "[A-Za-z0-9_.-]{0,80}",
        "[ -~]{0,40}",
        ".{0,40}",
        (header_bytes(), header_bytes(), header_bytes()).prop_map(|(h, p, s)| format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(h),
            URL_SAFE_NO_PAD.encode(p),
            URL_SAFE_NO_PAD.encode(s)
        )),
        (json_text(), json_text()).prop_map(|(h, p)| raw_token(&h, &p, "c2ln")),
        json_text().prop_map(|payload| hs256_raw(&payload)),
        json_value().prop_map(|extra| hs256(&json!({"sub": "p", "exp": now() + 60, "x": extra}))),
        Just(hs256(&claims("good"))),
    ]
    .boxed()
}

/// An `Authorization` value: a bearer token in any spelling, or any bytes.
fn authorization() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        ("[Bb][Ee][Aa][Rr][Ee][Rr]|Basic|bearer|", " {0,3}", token())
            .prop_map(|(scheme, space, token)| format!("{scheme}{space}{token}").into_bytes()),
        header_bytes(),
    ]
    .boxed()
}

/// A `Cookie` value: the token cookie among others, or any bytes.
fn cookie() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        (
            "[a-z_]{0,8}=[ -:<-~]{0,12}; ",
            token(),
            "(; [a-z]{1,4}=[ -:<-~]{0,8})?"
        )
            .prop_map(
                |(before, token, after)| format!("{before}sc_token={token}{after}").into_bytes()
            ),
        (token(), "\"?")
            .prop_map(|(token, quote)| format!("sc_token={quote}{token}{quote}").into_bytes()),
        header_bytes(),
    ]
    .boxed()
}

fn other_header() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
    (
        prop::sample::select(vec![
            "Authorization",
            "Cookie",
            "Accept",
            "Content-Type",
            "X-Forwarded-Uri",
            "X-Forwarded-Method",
            "X-Auth-Subject",
            "User-Agent",
        ]),
        header_bytes(),
    )
}

/// A numeric claim as JSON text: boundaries, integers and floats of any size and sign, times
/// near now.
fn number() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "0",
            "-1",
            "1e19",
            "18446744073709551615",
            "9223372036854775808",
            "9223372036854775807",
            "18446744073709551616",
            "-9223372036854775808",
            "1e308",
            "-0",
            "0.5",
            "1.5e9",
            "123456789012345678901234567890",
            "253402300800",
        ])
        .prop_map(str::to_owned),
        2 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}")),
        2 => (-100_000i64..100_000).prop_map(|offset| (now() as i64 + offset).to_string()),
        1 => "[1-9][0-9]{17,24}",
    ]
    .boxed()
}

/// A path segment: id characters, escapes (valid, broken, of control characters, of UTF-8
/// sequences) and characters ids may not hold.
fn segment() -> BoxedStrategy<String> {
    "([A-Za-z0-9._~{}\"!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2}|%[0-9A-Za-z+-]{0,2}|%[cCdDeEfF][0-9a-fA-F]%[0-9a-fA-F]{2}){0,12}"
    .boxed()
}

/// Where a session API call goes; [`Route::Patched`] is a live session (never deleted here).
#[derive(Debug, Clone)]
enum Route {
    Sessions,
    Session(String),
    Patched,
    Subject(String),
    Revoke,
    Other(String),
}

/// `{"sub":..., "data":..., "ttl":...}` with members of any type and value.
fn create_body() -> BoxedStrategy<Vec<u8>> {
    (
        prop_oneof![
            3 => "[ -~]{1,16}".prop_map(Value::from),
            1 => ".{0,16}".prop_map(Value::from),
            1 => json_value()
        ],
        prop::option::of(json_value()),
        prop::option::of(prop_oneof![
            3 => (1u64..100_000).prop_map(|n| n.to_string()),
            1 => number()
        ]),
    )
        .prop_map(|(sub, data, ttl)| {
            let mut members = vec![format!(r#""sub":{sub}"#)];
            if let Some(data) = data {
                members.push(format!(r#""data":{data}"#));
            }
            if let Some(ttl) = ttl {
                members.push(format!(r#""ttl":{ttl}"#));
            }
            format!("{{{}}}", members.join(",")).into_bytes()
        })
        .boxed()
}

/// `{"jti":..., "exp":..., "sid":...}` or `{"token":...}`.
fn revoke_body() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        (
            prop_oneof![3 => "[A-Za-z0-9_-]{1,12}".prop_map(Value::from), 1 => json_value()],
            prop::option::weighted(
                0.9,
                prop_oneof![
                    3 => (1u64..100_000).prop_map(|n| (now() + n).to_string()),
                    1 => number()
                ]
            ),
            prop::option::weighted(
                0.3,
                prop_oneof![
                    "[A-Za-z0-9_-]{1,24}".prop_map(Value::from),
                    segment().prop_map(Value::from),
                    json_value()
                ]
            ),
        )
            .prop_map(|(jti, exp, sid)| {
                let mut members = vec![format!(r#""jti":{jti}"#)];
                if let Some(exp) = exp {
                    members.push(format!(r#""exp":{exp}"#));
                }
                if let Some(sid) = sid {
                    members.push(format!(r#""sid":{sid}"#));
                }
                format!("{{{}}}", members.join(",")).into_bytes()
            }),
        token().prop_map(|t| json!({ "token": t }).to_string().into_bytes()),
    ]
    .boxed()
}

/// Any body: JSON of any shape, broken or too deep JSON, bytes.
fn any_body() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        json_text().prop_map(String::into_bytes),
        create_body(),
        revoke_body(),
        prop::collection::vec(any::<u8>(), 0..128),
    ]
    .boxed()
}

/// One session API call: method, route and body.
fn session_call() -> BoxedStrategy<(&'static str, Route, Vec<u8>)> {
    let methods = vec!["GET", "POST", "PATCH", "DELETE", "PUT"];
    prop_oneof![
        2 => create_body().prop_map(|body| ("POST", Route::Sessions, body)),
        3 => json_value().prop_map(|patch| ("PATCH", Route::Patched, patch.to_string().into_bytes())),
        1 => json_text().prop_map(|patch| ("PATCH", Route::Patched, patch.into_bytes())),
        1 => Just(("GET", Route::Patched, Vec::new())),
        2 => (
            prop::sample::select(vec!["GET", "PATCH", "DELETE"]),
            segment(),
            json_text()
        )
            .prop_map(|(method, segment, body)| (method, Route::Session(segment), body.into_bytes())),
        1 => segment().prop_map(|segment| ("DELETE", Route::Subject(segment), Vec::new())),
        2 => revoke_body().prop_map(|body| ("POST", Route::Revoke, body)),
        2 => (
            prop::sample::select(methods),
            prop_oneof![
                Just(Route::Sessions),
                segment().prop_map(Route::Session),
                segment().prop_map(Route::Subject),
                Just(Route::Revoke),
                segment().prop_map(Route::Other),
            ],
            any_body(),
        )
            .prop_map(|(method, route, body)| {
                // Deleting the live session would leave nothing to patch.
                let route = match route {
                    Route::Subject(s) if s == "merge-patch-subject" => Route::Other(s),
                    other => other,
                };
                (method, route, body)
            }),
    ]
    .boxed()
}

/// How a numeric-claims token is bound: not at all, by `sid`, or by `kid` (the session's own
/// secret signs it).
#[derive(Debug, Clone, Copy)]
enum Binding {
    Unbound,
    Sid,
    Kid,
}

/// A validly signed token with `exp`, `nbf` and `iat` as given (absent when `None`).
fn numeric_token(
    shared: &Shared,
    binding: Binding,
    exp: Option<&str>,
    nbf: Option<&str>,
    iat: Option<&str>,
) -> String {
    let mut members = Vec::new();
    match binding {
        Binding::Unbound => members.push(r#""sub":"numbers""#.to_owned()),
        Binding::Sid => {
            members.push(format!(r#""sub":"{KEYED_SUB}""#));
            members.push(format!(r#""sid":"{}""#, shared.keyed_sid));
        }
        Binding::Kid => members.push(format!(r#""sub":"{KEYED_SUB}""#)),
    }
    for (name, value) in [("exp", exp), ("nbf", nbf), ("iat", iat)] {
        if let Some(value) = value {
            members.push(format!(r#""{name}":{value}"#));
        }
    }
    let payload = format!("{{{}}}", members.join(","));
    match binding {
        Binding::Kid => {
            let header = format!(
                r#"{{"alg":"HS256","typ":"JWT","kid":"{}"}}"#,
                shared.keyed_sid
            );
            let message = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(payload)
            );
            let signature = jsonwebtoken::crypto::sign(
                message.as_bytes(),
                &EncodingKey::from_secret(&shared.keyed_secret),
                Algorithm::HS256,
            )
            .expect("sign");
            format!("{message}.{signature}")
        }
        _ => hs256_raw(&payload),
    }
}

/// `GET /verify` and `POST /v1/verify` with a validly signed token: 200 or a 4xx, never a
/// dropped connection or a 5xx.
fn check_numeric_token(shared: &Shared, token: &str) -> Result<(), TestCaseError> {
    let forward_auth = request(
        "GET",
        "/verify",
        &[("Authorization", format!("Bearer {token}").into_bytes())],
        b"",
    );
    let introspection = request(
        "POST",
        "/v1/verify",
        &[("Content-Type", b"application/json".to_vec())],
        json!({ "token": token }).to_string().as_bytes(),
    );
    for bytes in [forward_auth, introspection] {
        let (status, answer) = shared.send(&bytes);
        answered(status, &answer, &bytes)?;
        prop_assert!(
            status == 200 || (400..500).contains(&status),
            "{status}: {answer}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Forward-auth (`/verify`, any method, any suffix) with any `Authorization`, cookies and
    /// other headers.
    #[test]
    fn verify_answers_any_headers_without_5xx(
        method in prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]),
        suffix in prop_oneof![Just(String::new()), "/[a-z0-9%._~-]{0,16}"],
        auth in prop::option::of(authorization()),
        cookies in prop::collection::vec(cookie(), 0..3),
        others in prop::collection::vec(other_header(), 0..3),
    ) {
        let shared = shared();
        let mut headers: Vec<(&str, Vec<u8>)> = Vec::new();
        if let Some(auth) = auth {
            headers.push(("Authorization", auth));
        }
        headers.extend(cookies.into_iter().map(|c| ("Cookie", c)));
        headers.extend(others);
        let bytes = request(method, &format!("/verify{suffix}"), &headers, b"");
        let (status, answer) = shared.send(&bytes);
        answered(status, &answer, &bytes)?;
    }

    /// Introspection (`POST /v1/verify`) with any body and any `Authorization`.
    #[test]
    fn introspection_answers_any_body_without_5xx(
        body in prop_oneof![
            token().prop_map(|t| json!({ "token": t }).to_string().into_bytes()),
            json_value().prop_map(|v| json!({ "token": v }).to_string().into_bytes()),
            json_text().prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..256),
        ],
        auth in prop::option::of(authorization()),
        content_type in prop::option::of(header_bytes()),
    ) {
        let shared = shared();
        let mut headers: Vec<(&str, Vec<u8>)> = Vec::new();
        if let Some(auth) = auth {
            headers.push(("Authorization", auth));
        }
        if let Some(content_type) = content_type {
            headers.push(("Content-Type", content_type));
        }
        let bytes = request("POST", "/v1/verify", &headers, &body);
        let (status, answer) = shared.send(&bytes);
        answered(status, &answer, &bytes)?;
    }

    /// The session and revocation API: creations, reads, merge patches of a live session,
    /// deletions, logouts and revocations with hostile bodies and path ids (any escapes), and
    /// any method on any route with any body; with the admin credential or without.
    #[test]
    fn session_api_answers_anything_without_5xx(
        (method, route, body) in session_call(),
        credential in prop_oneof![
            8 => Just(Some(format!("Bearer {ADMIN}").into_bytes())),
            1 => Just(None),
            1 => authorization().prop_map(Some),
        ],
    ) {
        let shared = shared();
        let path = match route {
            Route::Sessions => "/v1/sessions".to_owned(),
            Route::Session(segment) => format!("/v1/sessions/{segment}"),
            Route::Patched => format!("/v1/sessions/{}", shared.patched_sid),
            Route::Subject(segment) => format!("/v1/users/{segment}/sessions"),
            Route::Revoke => "/v1/revoke".to_owned(),
            Route::Other(segment) => format!("/v1/{segment}"),
        };
        let mut headers = vec![("Content-Type", b"application/json".to_vec())];
        if let Some(credential) = credential {
            headers.push(("Authorization", credential));
        }
        let bytes = request(method, &path, &headers, &body);
        let (status, answer) = shared.send(&bytes);
        answered(status, &answer, &bytes)?;
    }

    /// `exp`, `nbf` and `iat` of any size and type in a validly signed token (unbound, bound
    /// to a session by `sid`, or by `kid` with the session's own secret): 200 or a 4xx.
    #[test]
    fn numeric_claims_of_any_size_are_answered(
        binding in prop::sample::select(vec![Binding::Unbound, Binding::Sid, Binding::Kid]),
        exp in prop::option::weighted(0.9, number()),
        nbf in prop::option::of(number()),
        iat in prop::option::of(number()),
    ) {
        let shared = shared();
        let token = numeric_token(shared, binding, exp.as_deref(), nbf.as_deref(), iat.as_deref());
        check_numeric_token(shared, &token)?;
    }

    /// Revocation by token (`POST /v1/revoke {"token":...}`) works for every token that
    /// `/verify` grants and that carries a `jti`, whatever JSON form its `exp` has (jsonwebtoken
    /// accepts a float `exp`): `204`, and `/verify` answers `revoked` from then on.
    #[test]
    fn granted_tokens_with_a_jti_can_be_revoked_by_token(
        exp in prop_oneof![
            (60u64..100_000).prop_map(|ahead| (now() + ahead).to_string()),
            (60u64..100_000).prop_map(|ahead| format!("{}.0", now() + ahead)),
            (60u64..100_000, 1u8..10).prop_map(|(ahead, tenth)| format!("{}.{tenth}", now() + ahead)),
            (60u64..100_000).prop_map(|ahead| format!("{:e}", (now() + ahead) as f64)),
        ],
        bound in any::<bool>(),
    ) {
        let shared = shared();
        let jti = format!("revocable-{}", rand::random::<u64>());
        let mut payload = format!(r#"{{"sub":"{KEYED_SUB}","exp":{exp},"jti":"{jti}""#);
        if bound {
            payload.push_str(&format!(r#","sid":"{}""#, shared.keyed_sid));
        }
        payload.push('}');
        let token = hs256_raw(&payload);
        let verify = request(
            "GET",
            "/verify",
            &[("Authorization", format!("Bearer {token}").into_bytes())],
            b"",
        );
        let (status, answer) = shared.send(&verify);
        answered(status, &answer, &verify)?;
        prop_assume!(status == 200, "not granted: {}", answer);
        let revoke = request(
            "POST",
            "/v1/revoke",
            &[
                ("Content-Type", b"application/json".to_vec()),
                ("Authorization", format!("Bearer {ADMIN}").into_bytes()),
            ],
            json!({ "token": token }).to_string().as_bytes(),
        );
        let (status, answer) = shared.send(&revoke);
        answered(status, &answer, &revoke)?;
        prop_assert_eq!(status, 204, "revoking {} (payload {}): {}", token, payload, answer);
        let (status, answer) = shared.send(&verify);
        prop_assert!(
            status == 401 && answer.contains(r#""reason":"revoked""#),
            "after revocation: {status} {answer}"
        );
    }
}

/// Runs a property check outside proptest (for the regression cases below).
fn check(result: Result<(), TestCaseError>) {
    if let Err(error) = result {
        panic!("{error}");
    }
}

/// Regression (issue 7): an `exp` of 2^63 or more, as an integer or as a float (jsonwebtoken
/// rounds a float `exp` to an integer and accepts it), overflows `SystemTime` in
/// `verify::until_unix` once the token is verified, and the panic drops the connection.
/// Found by `numeric_claims_of_any_size_are_answered` (minimal inputs `exp` =
/// 9223372036854775808 and `exp` = 1e19, no `nbf`) and by the `jwt_claims` fuzz target.
#[test]
fn exp_of_2_pow_63_and_more_is_answered() {
    let shared = shared();
    for exp in [
        "9223372036854775808",
        "18446744073709551615",
        "1e19",
        "9.3e18",
        "1.8e19",
    ] {
        for binding in [Binding::Unbound, Binding::Sid, Binding::Kid] {
            let token = numeric_token(shared, binding, Some(exp), None, None);
            check(check_numeric_token(shared, &token));
        }
    }
    shared.assert_alive();
}

/// The numbers the issue names, in `nbf` and `iat` of a token that is otherwise valid, and in
/// `exp` where they are below 2^63 (the others are `exp_of_2_pow_63_and_more_is_answered`).
#[test]
fn named_numeric_claims_are_answered() {
    let shared = shared();
    let current = now().to_string();
    let future = (now() + 600).to_string();
    let named = [
        "1e19",
        "18446744073709551615",
        "9223372036854775808",
        "9223372036854775807",
        "-1",
        "-9223372036854775808",
        "0.5",
        "-0.5",
        "1e308",
        "123456789012345678901234567890",
    ];
    for value in named {
        let mut cases = vec![
            (future.as_str(), Some(value), Some(current.as_str())),
            (future.as_str(), Some(current.as_str()), Some(value)),
            (future.as_str(), Some(value), Some(value)),
        ];
        if value.parse::<f64>().is_ok_and(|v| v < 9.2e18) {
            cases.push((value, None, None));
            cases.push((value, Some(current.as_str()), Some(current.as_str())));
        }
        for (exp, nbf, iat) in cases {
            for binding in [Binding::Unbound, Binding::Sid, Binding::Kid] {
                let token = numeric_token(shared, binding, Some(exp), nbf, iat);
                check(check_numeric_token(shared, &token));
            }
        }
    }
    shared.assert_alive();
}

/// An `exp` serde_json cannot read as a number, or of the wrong type, is refused.
#[test]
fn unreadable_exp_is_refused() {
    let shared = shared();
    for payload in [r#"{"sub":"x","exp":1e400}"#, r#"{"sub":"x","exp":"1"}"#] {
        check(check_numeric_token(shared, &hs256_raw(payload)));
    }
    shared.assert_alive();
}

/// Regression (issue 7): jsonwebtoken accepts a float `exp`, so `/verify` grants such a token,
/// but `POST /v1/revoke {"token":...}` read `exp` as an integer only and refused it (`400`,
/// "`exp` (unix seconds) is required"): the token could not be revoked by token. Found by
/// `granted_tokens_with_a_jti_can_be_revoked_by_token` (minimal input `exp` = `<now + 60>.0`).
#[test]
fn float_exp_token_can_be_revoked_by_token() {
    let shared = shared();
    let token = hs256_raw(&format!(
        r#"{{"sub":"float-exp","exp":{}.0,"jti":"float-exp-{}"}}"#,
        now() + 600,
        rand::random::<u64>()
    ));
    let (status, _) = shared
        .runtime
        .block_on(async { shared.sidecar.verify_status(&token).await });
    assert_eq!(status, 200, "a float exp in the future is granted");
    let status = shared.runtime.block_on(async {
        shared
            .sidecar
            .session_api(reqwest::Method::POST, "/v1/revoke")
            .json(&json!({ "token": token }))
            .send()
            .await
            .expect("revoke")
            .status()
            .as_u16()
    });
    assert_eq!(status, 204, "revocation by token");
    let (status, reason) = shared
        .runtime
        .block_on(async { shared.sidecar.verify_status(&token).await });
    assert_eq!((status, reason.as_deref()), (401, Some("revoked")));
}

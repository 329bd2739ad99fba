//! Hostile input (SPEC §7): every one gets a clear 4xx with a reason, never a panic, a 5xx
//! or a 200, and the sidecar goes on answering.

mod support;

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use support::*;

async fn assert_alive(sidecar: &TestSidecar) {
    let health = sidecar
        .http
        .get(format!("http://{}/healthz", sidecar.admin))
        .send()
        .await
        .expect("admin answers");
    assert_eq!(health.status(), 200);
    assert_eq!(sidecar.verify(&hs256(&claims("alive"))).await.status(), 200);
}

async fn reason_of(sidecar: &TestSidecar, token: &str) -> (u16, String) {
    let (status, reason) = sidecar.verify_status(token).await;
    (status, reason.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn alg_none_is_never_accepted() {
    let sidecar = TestSidecar::start(&[]).await;
    let payload = claims("mallory").to_string();
    for alg in ["none", "None", "NONE", "nOnE"] {
        for signature in ["", "e30"] {
            let token = raw_token(
                &format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#),
                &payload,
                signature,
            );
            let (status, reason) = reason_of(&sidecar, &token).await;
            assert_eq!(status, 401, "alg {alg}");
            assert!(
                reason == "algorithm_not_allowed" || reason == "malformed",
                "alg {alg}: {reason}"
            );
        }
    }
    // A non-string alg is malformed.
    let token = raw_token(r#"{"alg":null}"#, &payload, "");
    assert_eq!(reason_of(&sidecar, &token).await, (401, "malformed".into()));
    assert_alive(&sidecar).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rsa_public_key_used_as_hmac_secret_is_refused() {
    let public_pem = std::fs::read(fixture("rsa.pub")).unwrap();
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&public_pem),
        None,
        &claims("mallory"),
    );
    let rsa_flag = fixture("rsa.pub").display().to_string();

    // Only an RSA key configured: no HMAC algorithm is allowed at all.
    let rsa_only = TestSidecar::start_with(false, &["--jwt-public-key-file", &rsa_flag]).await;
    assert_eq!(
        reason_of(&rsa_only, &forged).await,
        (401, "algorithm_not_allowed".into())
    );
    let genuine = sign(
        Algorithm::RS256,
        &private_key(Algorithm::RS256, "rsa.key"),
        None,
        &claims("rita"),
    );
    assert_eq!(rsa_only.verify(&genuine).await.status(), 200);

    // Secret and RSA key both configured: HMAC verification only ever uses the secret.
    let both = TestSidecar::start(&["--jwt-public-key-file", &rsa_flag]).await;
    assert_eq!(
        reason_of(&both, &forged).await,
        (401, "bad_signature".into())
    );
    assert_alive(&both).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_headers_get_431() {
    let sidecar = TestSidecar::start(&[]).await;
    let big = "a".repeat(20 * 1024);
    let request =
        format!("GET /verify HTTP/1.1\r\nHost: x\r\nX-Padding: {big}\r\nConnection: close\r\n\r\n");
    let (status, _) = raw_request(sidecar.api, request.as_bytes()).await;
    assert_eq!(status, 431);
    // A token past --max-token-bytes (8 KiB) but within the header limit is malformed.
    let long = format!("{}.{}.{}", "a".repeat(5000), "b".repeat(5000), "c");
    assert_eq!(reason_of(&sidecar, &long).await, (401, "malformed".into()));
    assert_alive(&sidecar).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn non_utf8_authorization_header_is_malformed() {
    let sidecar = TestSidecar::start(&[]).await;
    let mut request = b"GET /verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\xc3(\r\nConnection: close\r\n\r\n".to_vec();
    let (status, text) = raw_request(sidecar.api, &request).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains(r#""reason":"malformed""#), "{text}");
    // Non-UTF-8 in a cookie when no Authorization header is present: no token found.
    request =
        b"GET /verify HTTP/1.1\r\nHost: x\r\nCookie: a=\xff\r\nConnection: close\r\n\r\n".to_vec();
    let (status, _) = raw_request(sidecar.api, &request).await;
    assert_eq!(status, 401);
    assert_alive(&sidecar).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_claims_are_rejected_not_crashed_on() {
    let sidecar = TestSidecar::start(&[]).await;
    let exp = now() + 600;
    let deep = format!(
        r#"{{"sub":"x","exp":{exp},"deep":{}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let cases = [
        (deep, "malformed"),
        (r#"{"sub":"x","exp":1e400}"#.to_string(), "malformed"),
        // A wrongly typed exp is no exp at all (CVE-2026-25537 was the opposite).
        (format!(r#"{{"sub":"x","exp":"{exp}"}}"#), "missing_claim"),
        (
            format!(r#"{{"sub":"x","exp":{exp},"n":123456789012345678901234567890}}"#),
            "ok",
        ),
        (format!(r#"{{"sub":"a\r\nb","exp":{exp}}}"#), "malformed"),
        (
            format!(r#"{{"sub":"x","exp":{exp},"sid":"a\r\nb"}}"#),
            "malformed",
        ),
        (
            format!(r#"{{"sub":"x","exp":{exp},"sid":"{{tag}}"}}"#),
            "malformed",
        ),
        (format!(r#"{{"sub":"x","exp":{exp},"jti":7}}"#), "malformed"),
        (format!(r#"{{"sub":"x","exp":{exp}"#), "malformed"),
        (r#"[1,2,3]"#.to_string(), "malformed"),
    ];
    for (payload, expected) in cases {
        let (status, reason) = reason_of(&sidecar, &hs256_raw(&payload)).await;
        if expected == "ok" {
            assert_eq!(status, 200, "{payload}");
        } else {
            assert_eq!((status, reason.as_str()), (401, expected), "{payload}");
        }
    }
    // Not base64, not three segments, empty segments.
    for token in ["a.b", "a.b.c.d", "..", "!!!.@@@.###", "eyJ.eyJ.sig"] {
        let (status, _) = reason_of(&sidecar, token).await;
        assert_eq!(status, 401, "{token}");
    }
    assert_alive(&sidecar).await;
}

/// SPEC §7, the header and claim shapes an adversarial review tried: each validly signed, each
/// refused with `malformed` (none of them is a token any issuer means). Before the hardening,
/// `crit`, `b64: false`, duplicate members, a non-string `iss`, a padded `sub` and an `exp`
/// no clock can hold were all answered `200` (or dropped the connection).
#[tokio::test(flavor = "multi_thread")]
async fn validly_signed_but_hostile_shapes_are_malformed() {
    let sidecar = TestSidecar::start(&[]).await;
    let exp = now() + 600;
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let payload = format!(r#"{{"sub":"x","exp":{exp}}}"#);
    let cases: Vec<(&str, String, String)> = vec![
        (
            "crit naming an extension",
            r#"{"alg":"HS256","typ":"JWT","crit":["exp"],"exp":1}"#.into(),
            payload.clone(),
        ),
        (
            "empty crit",
            r#"{"alg":"HS256","crit":[]}"#.into(),
            payload.clone(),
        ),
        (
            "b64 false",
            r#"{"alg":"HS256","b64":false}"#.into(),
            payload.clone(),
        ),
        (
            "b64 not a boolean",
            r#"{"alg":"HS256","b64":"true"}"#.into(),
            payload.clone(),
        ),
        (
            "duplicate alg",
            r#"{"alg":"HS256","alg":"none"}"#.into(),
            payload.clone(),
        ),
        (
            "duplicate kid",
            r#"{"alg":"HS256","kid":"a","kid":"b"}"#.into(),
            payload.clone(),
        ),
        (
            "kid not a string",
            r#"{"alg":"HS256","kid":7}"#.into(),
            payload.clone(),
        ),
        (
            "duplicate sub",
            header.into(),
            format!(r#"{{"sub":"x","sub":"admin","exp":{exp}}}"#),
        ),
        (
            "duplicate exp",
            header.into(),
            format!(r#"{{"sub":"x","exp":{exp},"exp":1}}"#),
        ),
        (
            "duplicate member in a nested object",
            header.into(),
            format!(r#"{{"sub":"x","exp":{exp},"r":{{"role":"u","role":"admin"}}}}"#),
        ),
        (
            "iss an array",
            header.into(),
            format!(r#"{{"sub":"x","exp":{exp},"iss":["a","b"]}}"#),
        ),
        (
            "iss a number",
            header.into(),
            format!(r#"{{"sub":"x","exp":{exp},"iss":1}}"#),
        ),
        (
            "sub a number",
            header.into(),
            format!(r#"{{"sub":7,"exp":{exp}}}"#),
        ),
        (
            "sub an object",
            header.into(),
            format!(r#"{{"sub":{{}},"exp":{exp}}}"#),
        ),
        (
            "sub with a leading space",
            header.into(),
            format!(r#"{{"sub":" x","exp":{exp}}}"#),
        ),
        (
            "sub with a trailing tab",
            header.into(),
            format!(r#"{{"sub":"x\t","exp":{exp}}}"#),
        ),
        (
            "sub empty",
            header.into(),
            format!(r#"{{"sub":"","exp":{exp}}}"#),
        ),
        (
            "a 6 KB jti (it would become a Redis key)",
            header.into(),
            format!(r#"{{"sub":"x","exp":{exp},"jti":"{}"}}"#, "j".repeat(6000)),
        ),
        (
            "a jti with a hash tag",
            header.into(),
            format!(r#"{{"sub":"x","exp":{exp},"jti":"{{other}}"}}"#),
        ),
        (
            "exp 1e19",
            header.into(),
            r#"{"sub":"x","exp":1e19}"#.into(),
        ),
        (
            "exp 2^63",
            header.into(),
            r#"{"sub":"x","exp":9223372036854775808}"#.into(),
        ),
        (
            "exp u64::MAX",
            header.into(),
            r#"{"sub":"x","exp":18446744073709551615}"#.into(),
        ),
        (
            "exp after year 9999",
            header.into(),
            r#"{"sub":"x","exp":253402300800}"#.into(),
        ),
    ];
    let mut wrong = Vec::new();
    for (name, header, payload) in &cases {
        let token = hs256_raw_with_header(header, payload);
        let (status, reason) = reason_of(&sidecar, &token).await;
        let expected = "malformed";
        if (status, reason.as_str()) != (401, expected) {
            wrong.push(format!(
                "{name}: {status} {reason} (expected 401 {expected})"
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // The last second any clock here holds is still a time.
    let (status, _) = reason_of(&sidecar, &hs256_raw(r#"{"sub":"x","exp":253402300799}"#)).await;
    assert_eq!(status, 200, "exp at the end of year 9999");
    let (status, _) = reason_of(
        &sidecar,
        &hs256_raw(&format!(r#"{{"sub":"x","exp":{exp}.5}}"#)),
    )
    .await;
    assert_eq!(status, 200, "a NumericDate with a fraction");
    assert_alive(&sidecar).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_bodies_and_ids_get_clear_4xx() {
    let sidecar = TestSidecar::start(&[]).await;
    let post = |path: &str, body: String| {
        sidecar
            .session_api(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let big = format!(
        r#"{{"sub":"x","data":{{"blob":"{}"}}}}"#,
        "a".repeat(100 * 1024)
    );
    assert_eq!(post("/v1/sessions", big).await.unwrap().status(), 413);
    let session_too_big = format!(
        r#"{{"sub":"x","data":{{"blob":"{}"}}}}"#,
        "a".repeat(20 * 1024)
    );
    let response = post("/v1/sessions", session_too_big).await.unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["reason"], "session_too_large");
    let deep = format!(
        r#"{{"sub":"x","data":{}1{}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    let response = post("/v1/sessions", deep).await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["reason"], "nesting_too_deep");
    for junk in [
        "{",
        "null",
        "[]",
        r#"{"sub":5}"#,
        "\u{0}",
        r#"{"sub":"x","ttl":-1}"#,
    ] {
        let status = post("/v1/sessions", junk.to_string())
            .await
            .unwrap()
            .status();
        assert_eq!(status, 400, "{junk:?}");
    }
    let response = post("/v1/verify", "{not json".into()).await.unwrap();
    assert_eq!(response.status(), 401);
    for path in [
        "/v1/sessions/a%0D%0Ab",
        "/v1/sessions/%7Babc%7D",
        "/v1/sessions/a%ZZ",
    ] {
        let status = sidecar
            .session_api(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 400, "{path}");
    }
    let status = sidecar
        .session_api(reqwest::Method::DELETE, "/v1/users/a%0D%0Ab/sessions")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 400);
    let status = post(
        "/v1/revoke",
        json!({"jti": "a\r\nb", "exp": now() + 60}).to_string(),
    )
    .await
    .unwrap()
    .status();
    assert_eq!(status, 400);
    let status = sidecar
        .http
        .get(sidecar.url("/nope"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    let status = sidecar
        .session_api(reqwest::Method::PUT, "/v1/sessions")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 405);
    assert_alive(&sidecar).await;
}

/// SPEC §3: a request with two `Authorization` headers, or two cookies of `--token-cookie`, is
/// ambiguous (a proxy may check one and the sidecar another): `401 malformed`, never the first.
#[tokio::test(flavor = "multi_thread")]
async fn ambiguous_token_sources_are_malformed() {
    let sidecar = TestSidecar::start(&["--token-cookie", "sc_token"]).await;
    let good = hs256(&claims("eve"));
    let other = hs256(&claims("mallory"));
    let requests = [
        format!("Authorization: Bearer {good}\r\nAuthorization: Bearer {other}\r\n"),
        format!("Authorization: Bearer {good}\r\nAuthorization: Bearer {good}\r\n"),
        format!("Cookie: sc_token={good}; sc_token={other}\r\n"),
        format!("Cookie: sc_token={good}\r\nCookie: a=b; sc_token={good}\r\n"),
    ];
    for headers in &requests {
        let request =
            format!("GET /verify HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n");
        let (status, text) = raw_request(sidecar.api, request.as_bytes()).await;
        assert_eq!(status, 401, "{headers}: {text}");
        assert!(
            text.contains(r#""reason":"malformed""#),
            "{headers}: {text}"
        );
    }
    // One of each is no ambiguity: the Authorization header wins (SPEC §3 order).
    let request = format!(
        "GET /verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {good}\r\nCookie: sc_token={other}\r\nConnection: close\r\n\r\n"
    );
    let (status, text) = raw_request(sidecar.api, request.as_bytes()).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("x-auth-subject: eve"),
        "{text}"
    );
    assert_alive(&sidecar).await;
}

/// SPEC §3: paths are matched exactly as sent. A rule in front that guards `/v1/sessions/`
/// by prefix must not be walked around with `//v1/sessions/...`.
#[tokio::test(flavor = "multi_thread")]
async fn paths_are_matched_exactly() {
    let sidecar = TestSidecar::start(&[]).await;
    let (sid, _) = sidecar.create_session("pat", json!({})).await;
    let get = |path: String| {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nConnection: close\r\n\r\n"
        );
        async move { raw_request(sidecar.api, request.as_bytes()).await }
    };
    assert_eq!(get(format!("/v1/sessions/{sid}")).await.0, 200);
    for path in [
        format!("//v1/sessions/{sid}"),
        format!("/v1//sessions/{sid}"),
        format!("/v1/sessions//{sid}"),
        format!("/v1/./sessions/{sid}"),
        "//verify".to_string(),
        "//v1/verify".to_string(),
    ] {
        assert_eq!(get(path.clone()).await.0, 404, "{path}");
    }
}

/// The `/v1/verify` body is JSON from anyone on the pod: its depth is checked like every other
/// body's (`--max-json-depth`, default 32), before it is parsed; too deep is a malformed
/// request, as any unreadable body there is.
#[tokio::test(flavor = "multi_thread")]
async fn introspection_bodies_are_depth_checked() {
    let sidecar = TestSidecar::start(&[]).await;
    let deep = format!(
        r#"{{"token":"{}","x":{}1{}}}"#,
        hs256(&claims("deep")),
        "[".repeat(100),
        "]".repeat(100)
    );
    let response = sidecar
        .http
        .post(sidecar.url("/v1/verify"))
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"active": false, "reason": "malformed"}));
    assert_alive(&sidecar).await;
}

/// `--max-header-bytes` holds for every request of a keep-alive connection, not only the
/// first: proxies reuse connections, so a limit that holds only on a fresh one does not hold.
#[tokio::test(flavor = "multi_thread")]
async fn the_header_limit_holds_on_every_request_of_a_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sidecar = TestSidecar::start(&[]).await;
    let token = hs256(&claims("kay"));
    let small = format!("GET /verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    let cookie = "c".repeat(17 * 1024);
    let big = format!(
        "GET /verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nCookie: a={cookie}\r\nConnection: close\r\n\r\n"
    );
    let mut stream = tokio::net::TcpStream::connect(sidecar.api).await.unwrap();
    stream.write_all(small.as_bytes()).await.unwrap();
    let mut first = vec![0u8; 4096];
    let n = stream.read(&mut first).await.unwrap();
    let first = String::from_utf8_lossy(&first[..n]).to_string();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // Within the limit (16 KiB by default) on the same connection: answered.
    let fits = format!(
        "GET /verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nCookie: a={}\r\n\r\n",
        "c".repeat(14 * 1024)
    );
    stream.write_all(fits.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = stream.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    stream.write_all(big.as_bytes()).await.unwrap();
    let mut second = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut second),
    )
    .await;
    let second = String::from_utf8_lossy(&second).to_string();
    assert!(second.starts_with("HTTP/1.1 431"), "{second}");
    assert_alive(&sidecar).await;
}

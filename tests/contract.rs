//! The verification contract of SPEC §3.1–3.2 over real HTTP: headers, reasons, algorithms.

mod support;

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use support::*;

fn public_key_flags() -> Vec<String> {
    vec![
        "--jwt-public-key-file".into(),
        format!("rsa-1={}", fixture("rsa.pub").display()),
        "--jwt-public-key-file".into(),
        format!("ec256-1={}", fixture("ec256.pub").display()),
        "--jwt-public-key-file".into(),
        format!("{}", fixture("ec384.pub").display()),
        "--jwt-public-key-file".into(),
        format!("ed-1={}", fixture("ed25519.pub").display()),
    ]
}

async fn sidecar_with_all_keys(extra: &[&str]) -> TestSidecar {
    let keys = public_key_flags();
    let mut flags: Vec<&str> = keys.iter().map(String::as_str).collect();
    flags.extend_from_slice(extra);
    TestSidecar::start(&flags).await
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_token_gets_the_forward_auth_headers() {
    let sidecar = TestSidecar::start(&[]).await;
    let claims = json!({"sub": "alice", "exp": now() + 600, "role": "admin", "n": 7});
    let response = sidecar.verify(&hs256(&claims)).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["x-auth-subject"], "alice");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(
        headers.get("x-auth-session-id").is_none(),
        "stateless token"
    );
    assert!(headers.get("x-auth-session").is_none(), "stateless token");
    let decoded = decode_b64_json(headers["x-auth-claims"].to_str().unwrap());
    assert_eq!(decoded, claims);
}

#[tokio::test(flavor = "multi_thread")]
async fn session_bound_token_carries_session_headers() {
    let sidecar = TestSidecar::start(&[]).await;
    let (sid, token) = sidecar
        .create_session("bob", json!({"cart": [1, 2], "tier": "gold"}))
        .await;
    let response = sidecar.verify(&token).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["x-auth-subject"], "bob");
    assert_eq!(headers["x-auth-session-id"], sid.as_str());
    let session = decode_b64_json(headers["x-auth-session"].to_str().unwrap());
    assert_eq!(session, json!({"cart": [1, 2], "tier": "gold"}));
    let claims = decode_b64_json(headers["x-auth-claims"].to_str().unwrap());
    for claim in ["sub", "sid", "jti", "iat", "exp"] {
        assert!(claims.get(claim).is_some(), "issued token has {claim}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_accepts_get_head_post_and_any_subpath() {
    let sidecar = TestSidecar::start(&[]).await;
    let token = hs256(&claims("carol"));
    for (method, path) in [
        (reqwest::Method::GET, "/verify"),
        (reqwest::Method::HEAD, "/verify"),
        (reqwest::Method::POST, "/verify"),
        (reqwest::Method::GET, "/verify/some/original/path?x=1"),
    ] {
        let response = sidecar
            .http
            .request(method.clone(), sidecar.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{method} {path}");
        assert_eq!(response.headers()["x-auth-subject"], "carol");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_token_is_401_without_error_attribute() {
    let sidecar = TestSidecar::start(&[]).await;
    let response = sidecar
        .http
        .get(sidecar.url("/verify"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="session-sidecar""#
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"active": false, "reason": "missing_token"}));
}

/// Asserts the full 401 contract for one reason.
async fn assert_rejected(sidecar: &TestSidecar, token: &str, reason: &str) {
    let response = sidecar.verify(token).await;
    assert_eq!(response.status(), 401, "expected 401 {reason}");
    assert_eq!(
        response.headers()["www-authenticate"].to_str().unwrap(),
        format!(
            r#"Bearer realm="session-sidecar", error="invalid_token", error_description="{reason}""#
        )
    );
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"active": false, "reason": reason}));
}

/// A sidecar with every key, an issuer, an audience and no leeway: the one the reason tests use.
async fn strict_sidecar() -> TestSidecar {
    sidecar_with_all_keys(&[
        "--issuer",
        "https://issuer.test",
        "--audience",
        "api",
        "--leeway",
        "0",
    ])
    .await
}

/// Claims that [`strict_sidecar`] accepts, changed by `changes` (a `null` removes a claim).
fn strict_claims(changes: Value) -> Value {
    let mut claims =
        json!({"sub": "dave", "exp": now() + 600, "iss": "https://issuer.test", "aud": "api"});
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

#[tokio::test(flavor = "multi_thread")]
async fn reason_none_for_a_valid_token() {
    let sidecar = strict_sidecar().await;
    assert_eq!(
        sidecar
            .verify(&hs256(&strict_claims(json!({}))))
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reason_malformed() {
    let sidecar = strict_sidecar().await;
    assert_rejected(&sidecar, "not-a-jwt", "malformed").await;
    assert_rejected(&sidecar, "a.b.c", "malformed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reason_bad_signature() {
    let sidecar = strict_sidecar().await;
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another secret"),
        None,
        &strict_claims(json!({})),
    );
    assert_rejected(&sidecar, &forged, "bad_signature").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reason_unknown_key() {
    let sidecar = strict_sidecar().await;
    let token = sign(
        Algorithm::RS256,
        &private_key(Algorithm::RS256, "rsa.key"),
        Some("no-such-kid"),
        &strict_claims(json!({})),
    );
    assert_rejected(&sidecar, &token, "unknown_key").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reason_algorithm_not_allowed() {
    let sidecar = strict_sidecar().await;
    let none = raw_token(
        r#"{"alg":"none","typ":"JWT"}"#,
        &strict_claims(json!({})).to_string(),
        "",
    );
    assert_rejected(&sidecar, &none, "algorithm_not_allowed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reason_expired() {
    let sidecar = strict_sidecar().await;
    let token = hs256(&strict_claims(json!({"exp": now() - 5})));
    assert_rejected(&sidecar, &token, "expired").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reason_not_yet_valid() {
    let sidecar = strict_sidecar().await;
    let token = hs256(&strict_claims(json!({"nbf": now() + 300})));
    assert_rejected(&sidecar, &token, "not_yet_valid").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reason_invalid_issuer() {
    let sidecar = strict_sidecar().await;
    let token = hs256(&strict_claims(json!({"iss": "https://evil.test"})));
    assert_rejected(&sidecar, &token, "invalid_issuer").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reason_invalid_audience() {
    let sidecar = strict_sidecar().await;
    let token = hs256(&strict_claims(json!({"aud": "other"})));
    assert_rejected(&sidecar, &token, "invalid_audience").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reason_missing_claim() {
    let sidecar = strict_sidecar().await;
    for claim in ["exp", "sub", "iss", "aud"] {
        let token = hs256(&strict_claims(json!({ claim: null })));
        assert_rejected(&sidecar, &token, "missing_claim").await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reason_session_inactive() {
    let sidecar = strict_sidecar().await;
    let token = hs256(&strict_claims(json!({"sid": "no-such-session"})));
    assert_rejected(&sidecar, &token, "session_inactive").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reason_revoked() {
    let sidecar = strict_sidecar().await;
    let revocable = hs256(&strict_claims(json!({"jti": "jti-contract-1"})));
    assert_eq!(sidecar.verify(&revocable).await.status(), 200);
    let revoke = sidecar
        .session_api(reqwest::Method::POST, "/v1/revoke")
        .json(&json!({"token": revocable}))
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 204);
    assert_rejected(&sidecar, &revocable, "revoked").await;
}

/// Signs `claims("user-<alg>")` with `alg` and asserts the sidecar accepts it.
async fn assert_verifies(sidecar: &TestSidecar, alg: Algorithm, file: &str, kid: Option<&str>) {
    let key = if file.is_empty() {
        EncodingKey::from_secret(SECRET)
    } else {
        private_key(alg, file)
    };
    let token = sign(alg, &key, kid, &claims(&format!("user-{alg:?}")));
    let response = sidecar.verify(&token).await;
    assert_eq!(response.status(), 200, "{alg:?}");
    assert_eq!(
        response.headers()["x-auth-subject"].to_str().unwrap(),
        format!("user-{alg:?}")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn family_hmac_hs256_hs384_hs512() {
    let sidecar = sidecar_with_all_keys(&[]).await;
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        assert_verifies(&sidecar, alg, "", None).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn family_rsa_pkcs1_rs256_rs384_rs512() {
    let sidecar = sidecar_with_all_keys(&[]).await;
    for alg in [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512] {
        assert_verifies(&sidecar, alg, "rsa.key", Some("rsa-1")).await;
    }
    // A key of the right family but another key pair fails the signature.
    let other = sign(
        Algorithm::RS256,
        &private_key(Algorithm::RS256, "rsa2.key"),
        Some("rsa-1"),
        &claims("mallory"),
    );
    assert_rejected(&sidecar, &other, "bad_signature").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn family_rsa_pss_ps256_ps384_ps512() {
    let sidecar = sidecar_with_all_keys(&[]).await;
    for alg in [Algorithm::PS256, Algorithm::PS384, Algorithm::PS512] {
        assert_verifies(&sidecar, alg, "rsa.key", Some("rsa-1")).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn family_ecdsa_es256_and_es384() {
    let sidecar = sidecar_with_all_keys(&[]).await;
    assert_verifies(&sidecar, Algorithm::ES256, "ec256.key", Some("ec256-1")).await;
    // The P-384 key was configured without a KID: it matches any kid.
    assert_verifies(&sidecar, Algorithm::ES384, "ec384.key", None).await;
    assert_verifies(&sidecar, Algorithm::ES384, "ec384.key", Some("whatever")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn family_eddsa_ed25519() {
    let sidecar = sidecar_with_all_keys(&[]).await;
    assert_verifies(&sidecar, Algorithm::EdDSA, "ed25519.key", Some("ed-1")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn algorithm_allow_list_is_enforced() {
    let sidecar = TestSidecar::start(&["--algorithms", "HS512"]).await;
    assert_eq!(
        sidecar
            .verify(&sign(
                Algorithm::HS512,
                &EncodingKey::from_secret(SECRET),
                None,
                &claims("erin")
            ))
            .await
            .status(),
        200
    );
    assert_rejected(&sidecar, &hs256(&claims("erin")), "algorithm_not_allowed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_is_also_read_from_the_configured_cookie() {
    let sidecar = TestSidecar::start(&["--token-cookie", "auth"]).await;
    let token = hs256(&claims("frank"));
    let response = sidecar
        .http
        .get(sidecar.url("/verify"))
        .header("cookie", format!("theme=dark; auth={token}; other=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-auth-subject"], "frank");
    // The Authorization header wins over the cookie.
    let response = sidecar
        .http
        .get(sidecar.url("/verify"))
        .header("cookie", format!("auth={token}"))
        .bearer_auth("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn introspection_answers_rfc7662_shape() {
    let sidecar = TestSidecar::start(&[]).await;
    let (sid, token) = sidecar.create_session("grace", json!({"k": "v"})).await;
    let response = sidecar
        .http
        .post(sidecar.url("/v1/verify"))
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["active"], true);
    assert_eq!(body["sub"], "grace");
    assert_eq!(body["sid"], sid.as_str());
    assert_eq!(body["session"], json!({"k": "v"}));
    assert_eq!(body["claims"]["sub"], "grace");
    assert!(body["exp"].as_u64().unwrap() > now());

    // The Authorization header works too; a stateless token has no sid/session.
    let stateless = hs256(&claims("heidi"));
    let body: Value = sidecar
        .http
        .post(sidecar.url("/v1/verify"))
        .bearer_auth(&stateless)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["active"], true);
    assert!(body.get("sid").is_none() && body.get("session").is_none());

    let response = sidecar
        .http
        .post(sidecar.url("/v1/verify"))
        .json(&json!({"token": hs256(&json!({"sub": "x", "exp": now() - 100}))}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"active": false, "reason": "expired"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn unix_socket_serves_the_same_api() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sidecar.sock");
    let socket_arg = socket.display().to_string();
    let sidecar = TestSidecar::start(&["--listen-unix", &socket_arg]).await;
    let token = hs256(&claims("ivan"));
    let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(
            format!("GET /verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("x-auth-subject: ivan"));
    sidecar.stop().await;
}

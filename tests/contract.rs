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

#[tokio::test(flavor = "multi_thread")]
async fn each_reason_is_reported() {
    let sidecar = sidecar_with_all_keys(&[
        "--issuer",
        "https://issuer.test",
        "--audience",
        "api",
        "--leeway",
        "0",
    ])
    .await;
    let good = |extra: Value| {
        let mut claims =
            json!({"sub": "dave", "exp": now() + 600, "iss": "https://issuer.test", "aud": "api"});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    };
    assert_eq!(sidecar.verify(&hs256(&good(json!({})))).await.status(), 200);

    assert_rejected(&sidecar, "not-a-jwt", "malformed").await;
    assert_rejected(&sidecar, "a.b.c", "malformed").await;
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another secret"),
        None,
        &good(json!({})),
    );
    assert_rejected(&sidecar, &forged, "bad_signature").await;
    let rsa_unknown_kid = sign(
        Algorithm::RS256,
        &private_key(Algorithm::RS256, "rsa.key"),
        Some("no-such-kid"),
        &good(json!({})),
    );
    assert_rejected(&sidecar, &rsa_unknown_kid, "unknown_key").await;
    let none = raw_token(
        r#"{"alg":"none","typ":"JWT"}"#,
        &good(json!({})).to_string(),
        "",
    );
    assert_rejected(&sidecar, &none, "algorithm_not_allowed").await;
    assert_rejected(
        &sidecar,
        &hs256(&good(json!({"exp": now() - 5}))),
        "expired",
    )
    .await;
    assert_rejected(
        &sidecar,
        &hs256(&good(json!({"nbf": now() + 300}))),
        "not_yet_valid",
    )
    .await;
    assert_rejected(
        &sidecar,
        &hs256(&good(json!({"iss": "https://evil.test"}))),
        "invalid_issuer",
    )
    .await;
    assert_rejected(
        &sidecar,
        &hs256(&good(json!({"aud": "other"}))),
        "invalid_audience",
    )
    .await;
    assert_rejected(
        &sidecar,
        &hs256(&good(json!({"exp": null}))),
        "missing_claim",
    )
    .await;
    assert_rejected(
        &sidecar,
        &hs256(&good(json!({"sub": null}))),
        "missing_claim",
    )
    .await;
    assert_rejected(
        &sidecar,
        &hs256(&good(json!({"sid": "no-such-session"}))),
        "session_inactive",
    )
    .await;
    // revoked: deny-list a stateless token's jti, then present it.
    let revocable = hs256(&good(json!({"jti": "jti-contract-1"})));
    assert_eq!(sidecar.verify(&revocable).await.status(), 200);
    let revoke = sidecar
        .http
        .post(sidecar.url("/v1/revoke"))
        .json(&json!({"token": revocable}))
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 204);
    assert_rejected(&sidecar, &revocable, "revoked").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_algorithm_family_verifies() {
    let sidecar = sidecar_with_all_keys(&[]).await;
    let cases: [(Algorithm, &str, Option<&str>); 12] = [
        (Algorithm::HS256, "", None),
        (Algorithm::HS384, "", None),
        (Algorithm::HS512, "", None),
        (Algorithm::RS256, "rsa.key", Some("rsa-1")),
        (Algorithm::RS384, "rsa.key", Some("rsa-1")),
        (Algorithm::RS512, "rsa.key", Some("rsa-1")),
        (Algorithm::PS256, "rsa.key", Some("rsa-1")),
        (Algorithm::PS384, "rsa.key", Some("rsa-1")),
        (Algorithm::PS512, "rsa.key", Some("rsa-1")),
        (Algorithm::ES256, "ec256.key", Some("ec256-1")),
        // The P-384 key was configured without a KID: it matches any kid.
        (Algorithm::ES384, "ec384.key", None),
        (Algorithm::EdDSA, "ed25519.key", Some("ed-1")),
    ];
    for (alg, file, kid) in cases {
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

//! The session API (SPEC §3.3) on the embedded store: create, read, merge-patch, delete,
//! log out everywhere, revoke by jti, per-session keys and the admin credential.

mod support;

use serde_json::{Value, json};
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn create_then_get_returns_the_session() {
    let sidecar = TestSidecar::start(&[]).await;
    let response = sidecar
        .session_api(reqwest::Method::POST, "/v1/sessions")
        .json(&json!({"sub": "alice", "data": {"a": 1}, "ttl": 120}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let sid = created["sid"].as_str().unwrap();
    assert!(sid.len() >= 22, "128 bits or more of base64url");
    assert!(
        sid.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    let expires_at = created["expires_at"].as_u64().unwrap();
    assert!(expires_at >= now() + 119 && expires_at <= now() + 121);
    let got: Value = sidecar
        .session_api(reqwest::Method::GET, &format!("/v1/sessions/{sid}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        got,
        json!({"sid": sid, "sub": "alice", "data": {"a": 1}, "expires_at": expires_at})
    );
    let missing = sidecar
        .session_api(reqwest::Method::GET, "/v1/sessions/does-not-exist")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_merges_and_the_next_verification_sees_it() {
    let sidecar = TestSidecar::start(&[]).await;
    let (sid, token) = sidecar
        .create_session("bob", json!({"keep": 1, "drop": 2, "nested": {"x": 1}}))
        .await;
    assert_eq!(sidecar.verify(&token).await.status(), 200);
    let patched = sidecar
        .session_api(reqwest::Method::PATCH, &format!("/v1/sessions/{sid}"))
        .json(&json!({"drop": null, "add": [1], "nested": {"y": 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let body: Value = patched.json().await.unwrap();
    let expected = json!({"keep": 1, "add": [1], "nested": {"x": 1, "y": 2}});
    assert_eq!(body["data"], expected);
    let response = sidecar.verify(&token).await;
    let session = decode_b64_json(response.headers()["x-auth-session"].to_str().unwrap());
    assert_eq!(session, expected, "cached session data was refreshed");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_patches_lose_nothing() {
    let sidecar = TestSidecar::start(&[]).await;
    let (sid, _) = sidecar.create_session("carol", json!({})).await;
    let patches = (0..50).map(|i| sidecar.patch_session(&sid, json!({ format!("k{i}"): i })));
    for (status, _) in futures_util::future::join_all(patches).await {
        assert_eq!(status, 200);
    }
    let (_, got) = sidecar.get_session(&sid).await;
    for i in 0..50 {
        assert_eq!(got["data"][format!("k{i}")], i, "k{i} present");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_everywhere_ends_every_session_of_the_subject() {
    let sidecar = TestSidecar::start(&[]).await;
    let (_, first) = sidecar.create_session("dave", json!({})).await;
    let (_, second) = sidecar.create_session("dave", json!({})).await;
    let (_, other) = sidecar.create_session("erin", json!({})).await;
    for token in [&first, &second, &other] {
        assert_eq!(sidecar.verify(token).await.status(), 200);
    }
    assert_eq!(
        sidecar.logout_everywhere("dave").await,
        (200, json!({"revoked": 2}))
    );
    for token in [&first, &second] {
        assert_eq!(
            sidecar.verify_status(token).await,
            (401, Some("session_inactive".into()))
        );
    }
    assert_eq!(sidecar.verify(&other).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_by_jti_and_by_token() {
    let sidecar = TestSidecar::start(&[]).await;
    let exp = now() + 600;
    let by_jti = hs256(&json!({"sub": "f", "exp": exp, "jti": "jti-a"}));
    let by_token = hs256(&json!({"sub": "f", "exp": exp, "jti": "jti-b"}));
    let (_, session_token) = sidecar.create_session("f", json!({})).await;
    for token in [&by_jti, &by_token, &session_token] {
        assert_eq!(sidecar.verify(token).await.status(), 200);
    }
    let revoke = |body: Value| {
        sidecar
            .session_api(reqwest::Method::POST, "/v1/revoke")
            .json(&body)
            .send()
    };
    assert_eq!(
        revoke(json!({"jti": "jti-a", "exp": exp}))
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        revoke(json!({"token": by_token})).await.unwrap().status(),
        204
    );
    assert_eq!(
        revoke(json!({"token": session_token}))
            .await
            .unwrap()
            .status(),
        204
    );
    for token in [&by_jti, &by_token, &session_token] {
        assert_eq!(
            sidecar.verify_status(token).await,
            (401, Some("revoked".into()))
        );
    }
    // A token without jti cannot be revoked by jti.
    let no_jti = hs256(&claims("g"));
    let response = revoke(json!({"token": no_jti})).await.unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(
        response.json::<Value>().await.unwrap()["reason"],
        "missing_jti"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn issued_tokens_carry_issuer_and_audience() {
    let sidecar = TestSidecar::start(&["--issuer", "https://me.test", "--audience", "svc"]).await;
    let (_, token) = sidecar.create_session("h", json!({})).await;
    let response = sidecar.verify(&token).await;
    assert_eq!(
        response.status(),
        200,
        "a token the sidecar issues verifies at it"
    );
    let claims = decode_b64_json(response.headers()["x-auth-claims"].to_str().unwrap());
    assert_eq!(claims["iss"], "https://me.test");
    assert_eq!(claims["aud"], "svc");
}

#[tokio::test(flavor = "multi_thread")]
async fn per_session_keys_verify_tokens_signed_with_the_session_secret() {
    let sidecar = TestSidecar::start(&["--session-keys"]).await;
    let (sid, secret) = sidecar.create_keyed_session("ivan").await;
    let token = session_keyed_token(&sid, &secret, "ivan", Some("per-session-1"));
    let response = sidecar.verify(&token).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-auth-session-id"], sid.as_str());
    // Signed with another secret: bad signature.
    let forged = session_keyed_token(&sid, b"not the session secret", "ivan", None);
    assert_eq!(
        sidecar.verify_status(&forged).await,
        (401, Some("bad_signature".into()))
    );
    // The session ends: its key goes with it.
    assert_eq!(sidecar.delete_session(&sid).await, 204);
    assert_eq!(
        sidecar.verify_status(&token).await,
        (401, Some("session_inactive".into()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_credential_guards_the_session_api() {
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin");
    std::fs::write(&admin, "s3cret-admin\n").unwrap();
    let admin_arg = admin.display().to_string();
    let sidecar = TestSidecar::start(&["--admin-token-file", &admin_arg]).await;
    let create = |credential: Option<&'static str>| {
        let mut request = sidecar
            .http
            .post(sidecar.url("/v1/sessions"))
            .json(&json!({"sub": "j"}));
        if let Some(credential) = credential {
            request = request.bearer_auth(credential);
        }
        request.send()
    };
    assert_eq!(create(None).await.unwrap().status(), 401);
    assert_eq!(create(Some("wrong")).await.unwrap().status(), 401);
    assert_eq!(create(Some("s3cret-admin")).await.unwrap().status(), 201);
    // Verification never needs it.
    assert_eq!(sidecar.verify(&hs256(&claims("j"))).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_secret_the_session_api_cannot_issue_tokens() {
    let key = fixture("ed25519.pub").display().to_string();
    let sidecar = TestSidecar::start_with(false, &["--jwt-public-key-file", &key]).await;
    let response = sidecar
        .session_api(reqwest::Method::POST, "/v1/sessions")
        .json(&json!({"sub": "k"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.json::<Value>().await.unwrap()["reason"],
        "session_issuing_disabled"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_admin_credential_the_session_api_is_off() {
    // Not --dev, no --admin-token-file: nobody on the pod's loopback can mint a token.
    let sidecar = TestSidecar::start_without_admin(&[]).await;
    for (method, path) in [
        (reqwest::Method::POST, "/v1/sessions"),
        (reqwest::Method::GET, "/v1/sessions/abc"),
        (reqwest::Method::DELETE, "/v1/sessions/abc"),
        (reqwest::Method::DELETE, "/v1/users/alice/sessions"),
        (reqwest::Method::POST, "/v1/revoke"),
    ] {
        let response = sidecar
            .http
            .request(method.clone(), sidecar.url(path))
            .json(&json!({"sub": "mallory"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{method} {path}");
        assert_eq!(
            response.json::<Value>().await.unwrap()["reason"],
            "session_api_disabled",
            "{method} {path}"
        );
    }
    // Verification does not need it.
    assert_eq!(sidecar.verify(&hs256(&claims("j"))).await.status(), 200);
}

async fn response_of(sidecar: &TestSidecar, token: &str) -> reqwest::Response {
    let response = sidecar.verify(token).await;
    assert_eq!(response.status(), 200);
    response
}

/// SPEC §3.3: whoever holds a session's own secret can sign any claims, so a per-session-key
/// token's payload is not an issuer's word: its subject is the session's, a payload `sub`
/// that differs is `malformed`, and its payload is never sent as `X-Auth-Claims`.
#[tokio::test(flavor = "multi_thread")]
async fn per_session_key_tokens_speak_for_their_session_only() {
    let sidecar = TestSidecar::start(&["--session-keys", "--claim-header", "role=X-Role"]).await;
    let (sid, secret) = sidecar.create_keyed_session("ivan").await;
    let mut self_signed = json!({"sub": "ivan", "role": "admin", "exp": support::now() + 60});
    let token = support::sign(
        jsonwebtoken::Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(&secret),
        Some(&sid),
        &self_signed,
    );
    let response = sidecar.verify(&token).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-auth-subject"], "ivan");
    assert!(
        response.headers().get("x-auth-claims").is_none(),
        "a self-signed payload was passed on as claims"
    );
    assert!(
        response.headers().get("x-role").is_none(),
        "a self-signed claim was mapped by --claim-header"
    );
    // The same mapping holds for the issuer's tokens.
    self_signed["role"] = json!("reader");
    let issued = response_of(&sidecar, &hs256(&self_signed)).await;
    assert_eq!(issued.headers()["x-role"], "reader");
    let introspected: Value = sidecar
        .http
        .post(sidecar.url("/v1/verify"))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(introspected["sub"], "ivan");
    assert_eq!(introspected["claims"], json!({}), "{introspected}");
    // The client signs itself another subject: refused, not believed.
    let impostor = session_keyed_token(&sid, &secret, "admin", None);
    assert_eq!(
        sidecar.verify_status(&impostor).await,
        (401, Some("malformed".into()))
    );
}

/// The admin credential rotates without a restart: the file of `--admin-token-file` is read
/// again every second (a Kubernetes Secret update replaces it); the old credential stops
/// working, and a file mid-rotation that holds nothing usable keeps the current one.
#[tokio::test(flavor = "multi_thread")]
async fn the_admin_credential_rotates_with_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin");
    std::fs::write(&admin, "first-credential\n").unwrap();
    let admin_arg = admin.display().to_string();
    let sidecar = TestSidecar::start(&["--admin-token-file", &admin_arg]).await;
    let create = |credential: &'static str| {
        sidecar
            .http
            .post(sidecar.url("/v1/sessions"))
            .bearer_auth(credential)
            .json(&json!({"sub": "rot"}))
            .send()
    };
    assert_eq!(create("first-credential").await.unwrap().status(), 201);
    // Replaced as Kubernetes does: a new file renamed over the old one.
    let next = dir.path().join("admin.next");
    std::fs::write(&next, "second-credential\n").unwrap();
    std::fs::rename(&next, &admin).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while create("second-credential").await.unwrap().status() != 201 {
        assert!(
            std::time::Instant::now() < deadline,
            "the new credential never took effect"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(create("first-credential").await.unwrap().status(), 401);
    // An unusable file (empty, mid-rotation) keeps the current credential.
    std::fs::write(&admin, "").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(create("second-credential").await.unwrap().status(), 201);
}

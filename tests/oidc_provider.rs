//! Tokens from a real OpenID provider: panva's certified `oidc-provider` (npm, run by Node from
//! `tests/fixtures/oidc/provider.mjs`), which issues RFC 9068 JWT access tokens (`typ: at+jwt`)
//! through `client_credentials`. The sidecar finds its keys with `--oidc-issuer` (discovery →
//! `jwks_uri`). `scripts/oidc-provider` installs the package into a cache and the test command
//! passes its `node_modules` in `SIDECAR_TEST_OIDC_MODULES`; without Node or the package each
//! test says why and is skipped.
//!
//! Timings are generous bounds on hangs, except the flood test's count of fetches, which is
//! the once-a-second limit itself.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::TestSidecar;

const HANG: Duration = Duration::from_secs(30);
const AUDIENCE: &str = "sidecar-api";

/// Where the `oidc-provider` package is, or why the tests cannot run.
fn modules() -> Result<PathBuf, String> {
    let modules = std::env::var_os("SIDECAR_TEST_OIDC_MODULES")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/session-sidecar-oidc/node_modules"))
        })
        .ok_or("no SIDECAR_TEST_OIDC_MODULES and no HOME")?;
    if !modules.join("oidc-provider/package.json").is_file() {
        return Err(format!(
            "oidc-provider is not installed under {} (run scripts/oidc-provider)",
            modules.display()
        ));
    }
    match Command::new("node").arg("--version").output() {
        Ok(output) if output.status.success() => Ok(modules),
        _ => Err("node cannot be run".into()),
    }
}

/// Skips the calling test, saying why, when the provider cannot run here.
macro_rules! provider_or_skip {
    () => {
        match modules() {
            Ok(modules) => modules,
            Err(why) => {
                eprintln!("SKIPPED: a real OpenID provider cannot run here: {why}");
                return;
            }
        }
    };
}

/// One `oidc-provider` process; its keys are kept in a state file so that a restart on the
/// same port serves the same keys.
struct OpenIdProvider {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    http: reqwest::Client,
}

impl OpenIdProvider {
    async fn start(modules: &Path) -> OpenIdProvider {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::copy(
            support::fixture("oidc/provider.mjs"),
            dir.path().join("provider.mjs"),
        )
        .expect("copy the provider script");
        // ES modules resolve packages next to the script, not through NODE_PATH.
        std::os::unix::fs::symlink(modules, dir.path().join("node_modules"))
            .expect("link node_modules");
        let port = free_port();
        let mut provider = OpenIdProvider {
            port,
            dir,
            child: None,
            http: reqwest::Client::new(),
        };
        provider.run().await;
        provider
    }

    /// Starts (or starts again) the process and waits until it answers.
    async fn run(&mut self) {
        let child = Command::new("node")
            .arg(self.dir.path().join("provider.mjs"))
            .arg(self.port.to_string())
            .arg(self.dir.path().join("state.json"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            let answered = self
                .http
                .get(format!(
                    "{}/.well-known/openid-configuration",
                    self.issuer()
                ))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if answered {
                return;
            }
            assert!(
                started.elapsed() < HANG,
                "the OpenID provider never answered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An access token for the resource whose tokens are signed with `alg`.
    async fn access_token(&self, alg: &str) -> String {
        let response: Value = self
            .http
            .post(format!("{}/token", self.issuer()))
            .basic_auth("sidecar-test", Some("sidecar-test-secret"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", &format!("urn:sidecar:{alg}")),
                ("scope", "read"),
            ])
            .send()
            .await
            .expect("token request")
            .json()
            .await
            .expect("token response");
        response["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access token: {response}"))
            .to_owned()
    }

    async fn control(&self, what: &str) -> String {
        self.http
            .post(format!("{}/__test/{what}", self.issuer()))
            .send()
            .await
            .expect("control request")
            .text()
            .await
            .expect("control answer")
    }

    /// Signs any payload with the provider's newest RS256 key.
    async fn sign(&self, payload: &Value) -> String {
        self.http
            .post(format!("{}/__test/sign", self.issuer()))
            .body(payload.to_string())
            .send()
            .await
            .expect("sign request")
            .text()
            .await
            .expect("signed token")
    }

    async fn jwks_requests(&self) -> u64 {
        self.http
            .get(format!("{}/__test/jwks-requests", self.issuer()))
            .send()
            .await
            .expect("count request")
            .text()
            .await
            .expect("count")
            .trim()
            .parse()
            .expect("a number")
    }
}

impl Drop for OpenIdProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    probe
        .local_addr()
        .map(|a: SocketAddr| a.port())
        .expect("port")
}

async fn sidecar_for(issuers: &[&str], extra: &[&str]) -> TestSidecar {
    let mut flags: Vec<&str> = vec!["--audience", AUDIENCE];
    for issuer in issuers {
        flags.extend(["--oidc-issuer", issuer]);
    }
    flags.extend(extra);
    TestSidecar::start(&flags).await
}

fn key_set_age(metrics: &str, issuer: &str) -> f64 {
    support::metric_value(
        metrics,
        &format!(
            "session_sidecar_key_set_age_seconds{{issuer=\"{issuer}\",url=\"{issuer}/.well-known/openid-configuration\"}}"
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_tokens_signed_with_rsa_ec_and_ed25519_verify_and_map_claims() {
    let modules = provider_or_skip!();
    let provider = OpenIdProvider::start(&modules).await;
    let issuer = provider.issuer();
    let sidecar = sidecar_for(
        &[&issuer],
        &[
            "--claim-header",
            "scope=X-Scope",
            "--claim-header",
            "client_id=X-Client-Id",
        ],
    )
    .await;
    sidecar.wait_ready(HANG).await;
    for alg in ["RS256", "ES256", "EdDSA"] {
        let token = provider.access_token(alg).await;
        let response = sidecar.verify(&token).await;
        assert_eq!(response.status(), 200, "{alg}");
        let headers = response.headers();
        assert_eq!(headers["x-auth-subject"], "sidecar-test", "{alg}");
        assert_eq!(headers["x-scope"], "read", "{alg}");
        assert_eq!(headers["x-client-id"], "sidecar-test", "{alg}");
        assert!(headers.get("x-auth-session-id").is_none());
    }
    // A provider token is stateless: it is revoked by its jti.
    let token = provider.access_token("ES256").await;
    assert_eq!(sidecar.verify_status(&token).await.0, 200);
    let revoked = sidecar
        .session_api(reqwest::Method::POST, "/v1/revoke")
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    assert_eq!(
        sidecar.verify_status(&token).await,
        (401, Some("revoked".into()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_verifies_at_once_and_the_old_one_while_it_is_listed() {
    let modules = provider_or_skip!();
    let provider = OpenIdProvider::start(&modules).await;
    let issuer = provider.issuer();
    let sidecar = sidecar_for(&[&issuer], &[]).await;
    sidecar.wait_ready(HANG).await;
    assert_eq!(
        sidecar
            .verify_status(&provider.access_token("RS256").await)
            .await
            .0,
        200
    );
    // Issued before the rotation, first shown after it.
    let old = provider.access_token("RS256").await;
    // Past the once-a-second limit on fetches since the first load (a kid seen within a second
    // of the last fetch is `unknown_key` for that moment, and not remembered).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let fetches = provider.jwks_requests().await;
    provider.control("rotate").await;
    let new = provider.access_token("RS256").await;
    assert_ne!(
        support::decode_b64_json(new.split('.').next().unwrap())["kid"],
        support::decode_b64_json(old.split('.').next().unwrap())["kid"],
        "the provider did not rotate"
    );
    // Its first request waits for the one refresh it triggered, and passes.
    assert_eq!(sidecar.verify_status(&new).await.0, 200);
    assert_eq!(provider.jwks_requests().await, fetches + 1);
    assert_eq!(sidecar.verify_status(&old).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_made_up_kids_costs_the_provider_at_most_one_fetch_a_second() {
    let modules = provider_or_skip!();
    let provider = OpenIdProvider::start(&modules).await;
    let issuer = provider.issuer();
    let sidecar = sidecar_for(&[&issuer], &[]).await;
    sidecar.wait_ready(HANG).await;
    let genuine = provider.access_token("RS256").await;
    let payload = genuine.split('.').nth(1).unwrap().to_owned();
    let before = provider.jwks_requests().await;
    let started = Instant::now();
    let mut answers = Vec::new();
    for round in 0..4 {
        let requests = (0..50).map(|i| {
            let header = json!({
                "alg": "RS256",
                "typ": "at+jwt",
                "kid": format!("made-up-{round}-{i}"),
            });
            let mut token = support::raw_token(&header.to_string(), "", "c2lnbmF0dXJl");
            // The provider's own payload, between the made-up header and signature.
            token = token.replacen("..", &format!(".{payload}."), 1);
            let sidecar = &sidecar;
            async move { sidecar.verify_status(&token).await }
        });
        answers.extend(futures_util::future::join_all(requests).await);
        // 400 ms: the last round comes more than a second after the first, so at least one
        // of them is past the refresh limit however soon after the start-up fetch they began
        // (with 300 ms all four could fall within that second, and none asked).
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let fetches = provider.jwks_requests().await - before;
    assert!(
        answers
            .iter()
            .all(|(status, reason)| *status == 401 && reason.as_deref() == Some("unknown_key")),
        "{answers:?}"
    );
    // One per started second, and one that may already have been due.
    let bound = elapsed.ceil() as u64 + 1;
    assert!(
        fetches <= bound,
        "{fetches} JWKS fetches in {elapsed:.1} s for 200 made-up kids"
    );
    assert!(fetches >= 1, "an unknown kid never asked for a refresh");
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_down_last_keys_keep_working_and_a_new_sidecar_waits_for_it() {
    let modules = provider_or_skip!();
    let mut provider = OpenIdProvider::start(&modules).await;
    let issuer = provider.issuer();
    let sidecar = sidecar_for(&[&issuer], &[]).await;
    sidecar.wait_ready(HANG).await;
    let minted = provider.access_token("ES256").await;
    provider.stop();

    assert_eq!(sidecar.verify_status(&minted).await.0, 200);
    assert_eq!(
        sidecar.readyz().await,
        200,
        "a provider outage made it unready"
    );
    let age = key_set_age(&sidecar.metrics().await, &issuer);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = key_set_age(&sidecar.metrics().await, &issuer);
    assert!(later > age, "key set age did not grow: {age} then {later}");

    // A sidecar started now cannot know the keys: unready, and no decision (not a 401).
    let newcomer = sidecar_for(&[&issuer], &[]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(newcomer.readyz().await, 503);
    assert_eq!(
        newcomer.verify_status(&minted).await,
        (503, Some("keys_unavailable".into()))
    );
    provider.run().await;
    newcomer.wait_ready(HANG).await;
    assert_eq!(newcomer.verify_status(&minted).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_issuers_each_verify_their_own_tokens_and_never_each_others() {
    let modules = provider_or_skip!();
    let (a, b) = tokio::join!(
        OpenIdProvider::start(&modules),
        OpenIdProvider::start(&modules)
    );
    let (issuer_a, issuer_b) = (a.issuer(), b.issuer());
    let sidecar = sidecar_for(&[&issuer_a, &issuer_b], &[]).await;
    sidecar.wait_ready(HANG).await;
    assert_eq!(
        sidecar
            .verify_status(&a.access_token("RS256").await)
            .await
            .0,
        200
    );
    assert_eq!(
        sidecar
            .verify_status(&b.access_token("RS256").await)
            .await
            .0,
        200
    );
    // Both providers name their first RS256 key `rs256-0`: a token that claims issuer B but is
    // signed by A's key must be checked against B's keys only.
    let now = support::now();
    let forged = a
        .sign(&json!({
            "iss": issuer_b,
            "sub": "mallory",
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 300,
            "jti": "forged-by-a",
        }))
        .await;
    assert_eq!(
        sidecar.verify_status(&forged).await,
        (401, Some("bad_signature".into()))
    );
    // The same payload under A's own name verifies: the refusal is the binding, not the token.
    let genuine = a
        .sign(&json!({
            "iss": issuer_a,
            "sub": "mallory",
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 300,
            "jti": "signed-by-a",
        }))
        .await;
    assert_eq!(sidecar.verify_status(&genuine).await.0, 200);
}

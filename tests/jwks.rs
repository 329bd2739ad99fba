//! `--jwks-url [ISS=]URL`: key sets from a URL, against a small JWKS server in this test that
//! serves what each test says (rotate keys, fail, answer garbage) and counts its requests.
//! Timings here are generous bounds on hangs, never what a test measures, except where the
//! once-a-second refresh limit itself is the point.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use parking_lot::Mutex;
use serde_json::{Value, json};
use support::{TestSidecar, claims, now, private_key, sign};
use tokio::net::TcpListener;

/// Longer than the sidecar's minimum interval between two fetches of one key set (1 s), so
/// that an unknown kid's refresh is not refused by that limit.
const PAST_FETCH_INTERVAL: Duration = Duration::from_millis(1200);
/// Bound on anything that should happen "soon" (a key set loading, readiness).
const HANG: Duration = Duration::from_secs(20);

/// What the JWKS server answers.
#[derive(Clone)]
enum Answer {
    Jwks(Value),
    Status(u16),
    Garbage,
    /// The JWKS, after this delay.
    Slow(Duration, Value),
    /// A body larger than any JWKS the sidecar accepts (256 KiB).
    Oversized,
}

/// The path of the discovery document the server answers when it plays an OpenID issuer.
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

struct JwksServer {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    /// The `issuer` its discovery document names (`None`: no discovery document, 404).
    discovery_issuer: Arc<Mutex<Option<String>>>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(jwks: Value) -> JwksServer {
        Self::start_on("127.0.0.1:0".parse().unwrap(), jwks).await
    }

    async fn start_on(addr: SocketAddr, jwks: Value) -> JwksServer {
        let listener = TcpListener::bind(addr).await.expect("bind JWKS server");
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(Answer::Jwks(jwks)));
        let discovery_issuer = Arc::new(Mutex::new(None::<String>));
        let requests = Arc::new(AtomicUsize::new(0));
        let (a, d, r) = (
            Arc::clone(&answer),
            Arc::clone(&discovery_issuer),
            Arc::clone(&requests),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (answer, discovery, requests) =
                    (Arc::clone(&a), Arc::clone(&d), Arc::clone(&r));
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            requests.fetch_add(1, Ordering::SeqCst);
                            let answer = if request.uri().path() == DISCOVERY_PATH {
                                match discovery.lock().clone() {
                                    Some(issuer) => Answer::Jwks(json!({
                                        "issuer": issuer,
                                        "jwks_uri": format!("http://{addr}/jwks"),
                                    })),
                                    None => Answer::Status(404),
                                }
                            } else {
                                answer.lock().clone()
                            };
                            async move {
                                let (status, body) = match answer {
                                    Answer::Jwks(jwks) => (200, jwks.to_string()),
                                    Answer::Status(status) => (status, String::new()),
                                    Answer::Garbage => (200, "{\"keys\": [oops".to_owned()),
                                    Answer::Slow(delay, jwks) => {
                                        tokio::time::sleep(delay).await;
                                        (200, jwks.to_string())
                                    }
                                    Answer::Oversized => (
                                        200,
                                        format!(
                                            "{{\"keys\": [], \"pad\": \"{}\"}}",
                                            "x".repeat(300 * 1024)
                                        ),
                                    ),
                                };
                                let mut response =
                                    hyper::Response::new(Full::new(Bytes::from(body)));
                                *response.status_mut() =
                                    hyper::StatusCode::from_u16(status).unwrap();
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        JwksServer {
            addr,
            answer,
            discovery_issuer,
            requests,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    /// Plays an OpenID issuer: its discovery document names `issuer` and this server's JWKS.
    fn discovery(&self, issuer: &str) {
        *self.discovery_issuer.lock() = Some(issuer.to_owned());
    }

    /// The issuer URL this server stands for (`http://127.0.0.1:PORT`).
    fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn answer(&self, answer: Answer) {
        *self.answer.lock() = answer;
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The public JWK of a fixture private key, with a kid (and the `alg` jsonwebtoken puts in).
fn jwk(alg: Algorithm, file: &str, kid: &str) -> Value {
    let jwk = Jwk::from_encoding_key(&private_key(alg, file), alg).expect("jwk");
    let mut value = serde_json::to_value(jwk).unwrap();
    value["kid"] = json!(kid);
    value
}

fn without_alg(mut jwk: Value) -> Value {
    jwk.as_object_mut().unwrap().remove("alg");
    jwk
}

fn jwks(keys: &[Value]) -> Value {
    json!({ "keys": keys })
}

fn token(alg: Algorithm, file: &str, kid: &str, payload: &Value) -> String {
    sign(alg, &private_key(alg, file), Some(kid), payload)
}

/// Claims of a fresh token (a new `jti` each time, so no cached decision answers for it).
fn fresh_claims(sub: &str) -> Value {
    let mut value = claims(sub);
    value["jti"] = json!(format!("{sub}-{}", rand_suffix()));
    value
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst) ^ (now() << 20)
}

fn with_iss(mut value: Value, iss: &str) -> Value {
    value["iss"] = json!(iss);
    value
}

#[tokio::test]
async fn tokens_signed_by_rsa_ec_and_ed25519_keys_of_the_jwks_verify() {
    let server = JwksServer::start(jwks(&[
        jwk(Algorithm::RS256, "rsa.key", "rsa-1"),
        jwk(Algorithm::ES256, "ec256.key", "ec-1"),
        jwk(Algorithm::ES384, "ec384.key", "ec384-1"),
        // No `alg` (optional in RFC 7517; how Entra ID publishes keys): its key type decides.
        without_alg(jwk(Algorithm::EdDSA, "ed25519.key", "ed-1")),
    ]))
    .await;
    let sidecar = TestSidecar::start(&["--jwks-url", &server.url()]).await;
    sidecar.wait_ready(HANG).await;
    for (alg, file, kid) in [
        (Algorithm::RS256, "rsa.key", "rsa-1"),
        (Algorithm::ES256, "ec256.key", "ec-1"),
        (Algorithm::ES384, "ec384.key", "ec384-1"),
        (Algorithm::EdDSA, "ed25519.key", "ed-1"),
    ] {
        let response = sidecar
            .verify(&token(alg, file, kid, &fresh_claims("alice")))
            .await;
        assert_eq!(response.status(), 200, "{alg:?}");
        assert_eq!(response.headers()["x-auth-subject"], "alice");
    }
    let metrics = sidecar.metrics().await;
    assert!(
        support::metric_value(
            &metrics,
            r#"session_sidecar_key_refreshes_total{issuer="*",outcome="ok"}"#
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        metrics.contains("session_sidecar_key_set_age_seconds{"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_jwk_with_an_alg_refuses_tokens_of_another_alg() {
    let server = JwksServer::start(jwks(&[jwk(Algorithm::RS256, "rsa.key", "rsa-1")])).await;
    let sidecar = TestSidecar::start(&["--jwks-url", &server.url()]).await;
    sidecar.wait_ready(HANG).await;
    let (status, reason) = sidecar
        .verify_status(&token(
            Algorithm::PS256,
            "rsa.key",
            "rsa-1",
            &fresh_claims("alice"),
        ))
        .await;
    assert_eq!((status, reason.as_deref()), (401, Some("unknown_key")));
    let (status, _) = sidecar
        .verify_status(&token(
            Algorithm::RS256,
            "rsa.key",
            "rsa-1",
            &fresh_claims("alice"),
        ))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_rotated_key_verifies_on_its_first_request_after_one_refresh() {
    let server = JwksServer::start(jwks(&[jwk(Algorithm::RS256, "rsa.key", "old")])).await;
    let sidecar = TestSidecar::start(&["--jwks-url", &server.url()]).await;
    sidecar.wait_ready(HANG).await;
    let old = token(Algorithm::RS256, "rsa.key", "old", &fresh_claims("alice"));
    assert_eq!(sidecar.verify_status(&old).await.0, 200);

    // The provider rotates: a new key, the old one still listed.
    server.answer(Answer::Jwks(jwks(&[
        jwk(Algorithm::RS256, "rsa.key", "old"),
        jwk(Algorithm::RS256, "rsa2.key", "new"),
    ])));
    tokio::time::sleep(PAST_FETCH_INTERVAL).await;
    let before = server.requests();
    let new = token(Algorithm::RS256, "rsa2.key", "new", &fresh_claims("bob"));
    let response = sidecar.verify(&new).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-auth-subject"], "bob");
    assert_eq!(
        server.requests() - before,
        1,
        "one refresh, triggered by the new kid"
    );
    let old_again = token(Algorithm::RS256, "rsa.key", "old", &fresh_claims("carol"));
    assert_eq!(sidecar.verify_status(&old_again).await.0, 200);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_costs_at_most_one_fetch_a_second() {
    let server = JwksServer::start(jwks(&[jwk(Algorithm::RS256, "rsa.key", "rsa-1")])).await;
    let sidecar = TestSidecar::start(&["--jwks-url", &server.url()]).await;
    sidecar.wait_ready(HANG).await;
    tokio::time::sleep(PAST_FETCH_INTERVAL).await;
    let before = server.requests();
    let started = Instant::now();
    let requests = (0..200).map(|i| {
        let sidecar = &sidecar;
        async move {
            let kid = format!("made-up-{i}-{}", rand_suffix());
            let forged = token(Algorithm::RS256, "rsa.key", &kid, &fresh_claims("mallory"));
            sidecar.verify_status(&forged).await
        }
    });
    let answers = futures_util::future::join_all(requests).await;
    let elapsed = started.elapsed();
    for answer in &answers {
        assert_eq!((answer.0, answer.1.as_deref()), (401, Some("unknown_key")));
    }
    let fetches = server.requests() - before;
    // At most one fetch a second, the first at once.
    let bound = elapsed.as_secs() as usize + 1;
    assert!(
        (1..=bound).contains(&fetches),
        "{fetches} fetches for 200 unknown kids in {elapsed:?}"
    );
    assert!(
        sidecar
            .metric(r#"session_sidecar_key_refreshes_suppressed_total{issuer="*"}"#)
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_provider_down_at_start_leaves_the_sidecar_unready_until_it_answers() {
    // A free port nobody listens on yet.
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let url = format!("http://{addr}/jwks");
    let sidecar = TestSidecar::start(&["--jwks-url", &url]).await;
    assert_eq!(sidecar.readyz().await, 503);
    let rsa = token(Algorithm::RS256, "rsa.key", "rsa-1", &fresh_claims("alice"));
    let (status, reason) = sidecar.verify_status(&rsa).await;
    assert_eq!((status, reason.as_deref()), (503, Some("keys_unavailable")));
    // The static secret still verifies its own tokens meanwhile.
    assert_eq!(
        sidecar
            .verify_status(&support::hs256(&fresh_claims("alice")))
            .await
            .0,
        200
    );

    let _server =
        JwksServer::start_on(addr, jwks(&[jwk(Algorithm::RS256, "rsa.key", "rsa-1")])).await;
    sidecar.wait_ready(HANG).await;
    assert_eq!(sidecar.verify_status(&rsa).await.0, 200);
    assert!(
        sidecar
            .metric(r#"session_sidecar_key_refreshes_total{issuer="*",outcome="error"}"#)
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_failing_refresh_keeps_the_last_good_keys() {
    let server = JwksServer::start(jwks(&[jwk(Algorithm::ES256, "ec256.key", "ec-1")])).await;
    let sidecar = TestSidecar::start(&["--jwks-url", &server.url()]).await;
    sidecar.wait_ready(HANG).await;
    for answer in [Answer::Status(500), Answer::Garbage] {
        server.answer(answer);
        tokio::time::sleep(PAST_FETCH_INTERVAL).await;
        let before = server.requests();
        // An unknown kid makes the sidecar fetch (and fail); after a failure it also retries by
        // itself, so the fetch may come from either.
        let unknown = token(Algorithm::ES256, "ec256.key", "gone", &fresh_claims("x"));
        assert_eq!(sidecar.verify_status(&unknown).await.0, 401);
        let started = Instant::now();
        while server.requests() == before {
            assert!(started.elapsed() < HANG, "no fetch after an unknown kid");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The keys loaded before still verify, and the sidecar stays ready.
        let known = token(
            Algorithm::ES256,
            "ec256.key",
            "ec-1",
            &fresh_claims("alice"),
        );
        assert_eq!(sidecar.verify_status(&known).await.0, 200);
        assert_eq!(sidecar.readyz().await, 200);
    }
    assert!(
        sidecar
            .metric(r#"session_sidecar_key_refreshes_total{issuer="*",outcome="error"}"#)
            .await
            >= 2.0
    );
}

#[tokio::test]
async fn encryption_oct_and_broken_keys_are_not_used() {
    let other_secret = b"another-secret-of-enough-length-0123456789abcdef";
    let mut enc = jwk(Algorithm::RS256, "rsa.key", "enc");
    enc["use"] = json!("enc");
    enc.as_object_mut().unwrap().remove("alg");
    let mut oct = serde_json::to_value(
        Jwk::from_encoding_key(&EncodingKey::from_secret(other_secret), Algorithm::HS256).unwrap(),
    )
    .unwrap();
    oct["kid"] = json!("oct");
    // An EC P-256 key that names an RSA algorithm: broken, skipped.
    let mut mismatched = jwk(Algorithm::ES256, "ec256.key", "mismatched");
    mismatched["alg"] = json!("RS256");
    let broken = json!({"kty": "RSA", "kid": "broken", "n": "!!!", "e": "AQAB"});
    let mut sig = jwk(Algorithm::RS256, "rsa.key", "sig");
    sig["use"] = json!("sig");
    let server = JwksServer::start(jwks(&[enc, oct, mismatched, broken, sig])).await;
    let sidecar = TestSidecar::start(&["--jwks-url", &server.url()]).await;
    sidecar.wait_ready(HANG).await;

    // The same RSA key, listed for signing, verifies: the others are refused for what they are.
    let good = token(Algorithm::RS256, "rsa.key", "sig", &fresh_claims("alice"));
    assert_eq!(sidecar.verify_status(&good).await.0, 200);
    let by_enc = token(Algorithm::RS256, "rsa.key", "enc", &fresh_claims("alice"));
    assert_eq!(sidecar.verify_status(&by_enc).await.0, 401);
    let by_mismatched = token(
        Algorithm::ES256,
        "ec256.key",
        "mismatched",
        &fresh_claims("a"),
    );
    assert_eq!(sidecar.verify_status(&by_mismatched).await.0, 401);
    // An HMAC secret published at a URL would let anyone sign: never used.
    let by_oct = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(other_secret),
        Some("oct"),
        &fresh_claims("alice"),
    );
    assert_eq!(sidecar.verify_status(&by_oct).await.0, 401);
    assert!(
        sidecar
            .metric(r#"session_sidecar_jwks_keys_skipped_total{issuer="*"}"#)
            .await
            >= 2.0
    );
}

#[tokio::test]
async fn a_key_set_bound_to_an_issuer_verifies_only_that_issuers_tokens() {
    let a = JwksServer::start(jwks(&[jwk(Algorithm::RS256, "rsa.key", "a-key")])).await;
    let b = JwksServer::start(jwks(&[jwk(Algorithm::ES256, "ec256.key", "b-key")])).await;
    let (iss_a, iss_b) = ("https://a.example/realms/x", "https://b.example/");
    let sidecar = TestSidecar::start(&[
        "--jwks-url",
        &format!("{iss_a}={}", a.url()),
        "--jwks-url",
        &format!("{iss_b}={}", b.url()),
    ])
    .await;
    sidecar.wait_ready(HANG).await;
    let of_a = token(
        Algorithm::RS256,
        "rsa.key",
        "a-key",
        &with_iss(fresh_claims("alice"), iss_a),
    );
    assert_eq!(sidecar.verify_status(&of_a).await.0, 200);
    let of_b = token(
        Algorithm::ES256,
        "ec256.key",
        "b-key",
        &with_iss(fresh_claims("bob"), iss_b),
    );
    assert_eq!(sidecar.verify_status(&of_b).await.0, 200);
    // A's key never verifies a token that claims issuer B, nor one of an issuer not configured.
    let forged = token(
        Algorithm::RS256,
        "rsa.key",
        "a-key",
        &with_iss(fresh_claims("eve"), iss_b),
    );
    assert_eq!(sidecar.verify_status(&forged).await.0, 401);
    let other = token(
        Algorithm::RS256,
        "rsa.key",
        "a-key",
        &with_iss(fresh_claims("eve"), "https://c.example/"),
    );
    assert_eq!(sidecar.verify_status(&other).await.0, 401);
    let no_iss = token(Algorithm::RS256, "rsa.key", "a-key", &fresh_claims("eve"));
    assert_eq!(sidecar.verify_status(&no_iss).await.0, 401);
    assert!(
        sidecar
            .metric(&format!(
                r#"session_sidecar_key_refreshes_total{{issuer="{iss_a}",outcome="ok"}}"#
            ))
            .await
            >= 1.0
    );
}

/// `serve --jwks-url VALUE`'s configuration, or its problems.
fn config_with_jwks_url(
    value: &str,
) -> Result<session_sidecar::config::Config, Vec<session_sidecar::error::ConfigError>> {
    config_with(&["--jwks-url", value])
}

fn config_with(
    flags: &[&str],
) -> Result<session_sidecar::config::Config, Vec<session_sidecar::error::ConfigError>> {
    use clap::Parser;
    let argv = ["session-sidecar", "serve"].iter().chain(flags);
    let cli = session_sidecar::config::Cli::try_parse_from(argv).unwrap();
    let session_sidecar::config::Command::Serve(args) = cli.command else {
        panic!("not serve")
    };
    session_sidecar::config::Config::from_args(&args, None)
}

#[test]
fn a_jwks_url_is_the_only_key_needed_and_a_bad_one_is_refused() {
    // Accepted alone (no other key), also when its provider cannot be reached: nothing is
    // fetched before the sidecar runs.
    let config = config_with_jwks_url("https://issuer.example/=http://127.0.0.1:1/jwks").unwrap();
    assert_eq!(config.jwks.len(), 1);
    assert_eq!(
        config.jwks[0].issuer.as_deref(),
        Some("https://issuer.example/")
    );
    for bad in [
        "ftp://idp.example/jwks",
        "=https://idp.example/jwks",
        "not a url",
    ] {
        let problems = config_with_jwks_url(bad).unwrap_err();
        assert!(
            problems.iter().any(|p| p.flag == "--jwks-url"),
            "{bad}: {problems:?}"
        );
    }
}

#[test]
fn an_oidc_issuer_is_the_only_key_needed_and_bad_issuers_and_claim_headers_are_refused() {
    let config = config_with(&["--oidc-issuer", "https://tenant.example.auth0.com/"]).unwrap();
    assert_eq!(
        config.jwks[0].url,
        "https://tenant.example.auth0.com/.well-known/openid-configuration"
    );
    assert_eq!(
        config.jwks[0].issuer.as_deref(),
        Some("https://tenant.example.auth0.com/")
    );
    for bad in ["ftp://idp.example", "https://idp.example/?tenant=a", "idp"] {
        let problems = config_with(&["--oidc-issuer", bad]).unwrap_err();
        assert!(
            problems.iter().any(|p| p.flag == "--oidc-issuer"),
            "{bad}: {problems:?}"
        );
    }
    // Every bad mapping is reported, each under its flag.
    let problems = config_with(&[
        "--oidc-issuer",
        "https://idp.example",
        "--claim-header",
        "roles=X Roles",
        "--claim-header",
        "sub=X-Auth-Subject",
        "--claim-header",
        "a..b=X-A",
    ])
    .unwrap_err();
    assert_eq!(
        problems
            .iter()
            .filter(|p| p.flag == "--claim-header")
            .count(),
        3,
        "{problems:?}"
    );
}

#[tokio::test]
async fn an_oidc_issuer_is_found_by_discovery_and_only_its_keys_verify_its_tokens() {
    let server = JwksServer::start(jwks(&[jwk(Algorithm::RS256, "rsa.key", "rsa-1")])).await;
    let issuer = server.issuer();
    server.discovery(&issuer);
    let sidecar = TestSidecar::start(&["--oidc-issuer", &issuer]).await;
    sidecar.wait_ready(HANG).await;

    let provider = token(
        Algorithm::RS256,
        "rsa.key",
        "rsa-1",
        &with_iss(fresh_claims("alice"), &issuer),
    );
    let response = sidecar.verify(&provider).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-auth-subject"], "alice");

    // The sidecar's own secret (another issuer's key) cannot speak for the OIDC issuer.
    let forged = support::hs256(&with_iss(fresh_claims("mallory"), &issuer));
    let (status, reason) = sidecar.verify_status(&forged).await;
    assert_eq!((status, reason.as_deref()), (401, Some("unknown_key")));
    // Nor do the issuer's keys verify a token that names no issuer or another one.
    let unbound = token(Algorithm::RS256, "rsa.key", "rsa-1", &fresh_claims("bob"));
    assert_eq!(sidecar.verify_status(&unbound).await.0, 401);
    let other = token(
        Algorithm::RS256,
        "rsa.key",
        "rsa-1",
        &with_iss(fresh_claims("bob"), "https://other.example"),
    );
    assert_eq!(sidecar.verify_status(&other).await.0, 401);

    let metrics = sidecar.metrics().await;
    let keys_sample = format!(
        "session_sidecar_key_set_keys{{issuer=\"{issuer}\",url=\"{issuer}{DISCOVERY_PATH}\"}}"
    );
    assert_eq!(
        support::metric_value(&metrics, &keys_sample),
        1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_discovery_document_naming_another_issuer_is_refused() {
    let server = JwksServer::start(jwks(&[jwk(Algorithm::RS256, "rsa.key", "rsa-1")])).await;
    let issuer = server.issuer();
    // An issuer whose document says it is someone else (a mix-up, OpenID Discovery §4.3).
    server.discovery("https://someone-else.example");
    let sidecar = TestSidecar::start(&["--oidc-issuer", &issuer]).await;
    let provider = token(
        Algorithm::RS256,
        "rsa.key",
        "rsa-1",
        &with_iss(fresh_claims("alice"), &issuer),
    );
    let started = Instant::now();
    while sidecar
        .metric(&format!(
            "session_sidecar_key_refreshes_total{{issuer=\"{issuer}\",outcome=\"error\"}}"
        ))
        .await
        < 1.0
    {
        assert!(started.elapsed() < HANG, "no failed discovery counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sidecar.readyz().await, 503);
    let (status, reason) = sidecar.verify_status(&provider).await;
    assert_eq!((status, reason.as_deref()), (503, Some("keys_unavailable")));

    // Once the document names the issuer, its keys load without a restart.
    server.discovery(&issuer);
    sidecar.wait_ready(HANG).await;
    assert_eq!(sidecar.verify_status(&provider).await.0, 200);
}

#[tokio::test]
async fn oversized_and_slow_jwks_answers_are_failed_fetches() {
    let server = JwksServer::start(jwks(&[])).await;
    server.answer(Answer::Oversized);
    let sidecar = TestSidecar::start(&["--jwks-url", &server.url()]).await;
    let errors = r#"session_sidecar_key_refreshes_total{issuer="*",outcome="error"}"#;
    let started = Instant::now();
    while sidecar.metric(errors).await < 1.0 {
        assert!(
            started.elapsed() < HANG,
            "an oversized JWKS was not a failed fetch"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sidecar.readyz().await, 503);

    // Slower than the fetch bound (3 s): failed too, and the sidecar stays unready.
    let failed = sidecar.metric(errors).await;
    server.answer(Answer::Slow(
        Duration::from_secs(10),
        jwks(&[jwk(Algorithm::RS256, "rsa.key", "rsa-1")]),
    ));
    let started = Instant::now();
    while sidecar.metric(errors).await < failed + 1.0 {
        assert!(
            started.elapsed() < HANG,
            "a slow JWKS was not a failed fetch"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sidecar.readyz().await, 503);

    server.answer(Answer::Jwks(jwks(&[jwk(
        Algorithm::RS256,
        "rsa.key",
        "rsa-1",
    )])));
    sidecar.wait_ready(HANG).await;
    let rsa = token(Algorithm::RS256, "rsa.key", "rsa-1", &fresh_claims("alice"));
    assert_eq!(sidecar.verify_status(&rsa).await.0, 200);
}

#[tokio::test]
async fn claims_become_headers_nested_arrays_as_json_and_crlf_dropped() {
    let server = JwksServer::start(jwks(&[jwk(Algorithm::RS256, "rsa.key", "rsa-1")])).await;
    let sidecar = TestSidecar::start(&[
        "--jwks-url",
        &server.url(),
        "--claim-header",
        "realm_access.roles=X-Roles",
        "--claim-header",
        "email=X-Email",
        "--claim-header",
        "org.id=X-Org",
        "--claim-header",
        "note=X-Note",
        "--claim-header",
        "absent=X-Absent",
    ])
    .await;
    sidecar.wait_ready(HANG).await;
    let mut payload = fresh_claims("alice");
    payload["realm_access"] = json!({"roles": ["admin", "viewer"]});
    payload["email"] = json!("alice@example.com");
    payload["org"] = json!({"id": 42});
    payload["note"] = json!("hi\r\nX-Auth-Subject: root");
    let signed = token(Algorithm::RS256, "rsa.key", "rsa-1", &payload);
    // Twice: the headers are rendered when the decision is made and served from the cache.
    for _ in 0..2 {
        let response = sidecar.verify(&signed).await;
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(headers["x-roles"], r#"["admin","viewer"]"#);
        assert_eq!(headers["x-email"], "alice@example.com");
        assert_eq!(headers["x-org"], "42");
        assert!(headers.get("x-note").is_none());
        assert!(headers.get("x-absent").is_none());
        assert_eq!(headers.get_all("x-auth-subject").iter().count(), 1);
        assert_eq!(headers["x-auth-subject"], "alice");
    }
    assert_eq!(
        sidecar
            .metric("session_sidecar_claim_headers_dropped_total")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_kid_a_refresh_did_not_find_is_not_fetched_for_again_at_once() {
    let server = JwksServer::start(jwks(&[jwk(Algorithm::RS256, "rsa.key", "rsa-1")])).await;
    let sidecar = TestSidecar::start(&["--jwks-url", &server.url()]).await;
    sidecar.wait_ready(HANG).await;
    let ghost = |kid: &str| token(Algorithm::RS256, "rsa.key", kid, &fresh_claims("g"));

    tokio::time::sleep(PAST_FETCH_INTERVAL).await;
    let fetches = server.requests();
    let (status, reason) = sidecar.verify_status(&ghost("ghost")).await;
    assert_eq!((status, reason.as_deref()), (401, Some("unknown_key")));
    assert_eq!(
        server.requests(),
        fetches + 1,
        "an unknown kid asked for no refresh"
    );

    // Past the once-a-second limit, the same kid in another token: answered from memory.
    tokio::time::sleep(PAST_FETCH_INTERVAL).await;
    let (status, reason) = sidecar.verify_status(&ghost("ghost")).await;
    assert_eq!((status, reason.as_deref()), (401, Some("unknown_key")));
    assert_eq!(
        server.requests(),
        fetches + 1,
        "a kid just not found was fetched again"
    );

    // Another kid still asks.
    let (status, _) = sidecar.verify_status(&ghost("ghost-2")).await;
    assert_eq!(status, 401);
    assert_eq!(server.requests(), fetches + 2);
}

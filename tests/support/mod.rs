//! Test support: a real sidecar on free loopback ports (in this process), tokens signed with
//! the fixture keys, and small HTTP helpers. `cluster` spawns a real Redis Cluster.
#![allow(dead_code)]

pub mod cluster;
pub mod fault_proxy;
pub mod scripted;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use session_sidecar::Sidecar;
use session_sidecar::config::{Cli, Command, Config};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The HMAC secret every test sidecar is started with (unless a test says otherwise).
pub const SECRET: &[u8] = b"test-secret-of-enough-length-for-hs512-0123456789abcdef";

/// The session API credential every test sidecar is started with (`--admin-token-file`),
/// unless a test passes its own.
pub const ADMIN: &str = "test-admin-credential-0123456789";

/// Path of a file in tests/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A sidecar running inside the test process.
pub struct TestSidecar {
    pub api: SocketAddr,
    pub admin: SocketAddr,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
    pub dir: PathBuf,
}

impl TestSidecar {
    /// Starts a sidecar with `--jwt-secret-file` (the [`SECRET`]) and the given extra flags.
    pub async fn start(extra: &[&str]) -> TestSidecar {
        Self::start_with(true, extra).await
    }

    /// Starts a sidecar; `with_secret` adds `--jwt-secret-file`.
    pub async fn start_with(with_secret: bool, extra: &[&str]) -> TestSidecar {
        Self::start_full(with_secret, true, extra).await
    }

    /// Starts a sidecar with the secret but no `--admin-token-file` (the session API is off).
    pub async fn start_without_admin(extra: &[&str]) -> TestSidecar {
        Self::start_full(true, false, extra).await
    }

    async fn start_full(with_secret: bool, with_admin: bool, extra: &[&str]) -> TestSidecar {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret_path = dir.path().join("secret");
        std::fs::write(&secret_path, SECRET).expect("write secret");
        let mut argv: Vec<String> = vec![
            "session-sidecar".into(),
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
        ];
        if with_secret {
            argv.push("--jwt-secret-file".into());
            argv.push(secret_path.display().to_string());
        }
        if with_admin && !extra.contains(&"--admin-token-file") {
            let admin_path = dir.path().join("admin");
            std::fs::write(&admin_path, format!("{ADMIN}\n")).expect("write admin credential");
            argv.push("--admin-token-file".into());
            argv.push(admin_path.display().to_string());
        }
        argv.extend(extra.iter().map(|s| s.to_string()));
        let cli = Cli::try_parse_from(&argv).expect("flags parse");
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        let config = match Config::from_args(&args, None) {
            Ok(config) => config,
            Err(problems) => panic!("bad config: {problems:?}"),
        };
        let sidecar = Sidecar::bind(config).await.expect("sidecar binds");
        let api = sidecar.api_addr();
        let admin = sidecar.admin_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(sidecar.run(async move {
            let _ = stopped.await;
        }));
        TestSidecar {
            api,
            admin,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .expect("client"),
            stop: Some(stop),
            task: Some(task),
            dir: dir.path().to_path_buf(),
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT` + path, on the API listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.api, path)
    }

    /// A session API request (SPEC §3.3) carrying the [`ADMIN`] credential.
    pub fn session_api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(ADMIN)
    }

    /// `GET /verify` with a bearer token.
    pub async fn verify(&self, token: &str) -> reqwest::Response {
        self.http
            .get(self.url("/verify"))
            .bearer_auth(token)
            .send()
            .await
            .expect("verify request")
    }

    /// Status and `reason` of `GET /verify` with a bearer token.
    pub async fn verify_status(&self, token: &str) -> (u16, Option<String>) {
        let response = self.verify(token).await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        (status, body["reason"].as_str().map(str::to_owned))
    }

    /// `POST /v1/sessions` → (sid, token).
    pub async fn create_session(&self, sub: &str, data: Value) -> (String, String) {
        let response = self
            .session_api(reqwest::Method::POST, "/v1/sessions")
            .json(&json!({"sub": sub, "data": data, "ttl": 600}))
            .send()
            .await
            .expect("create session");
        assert_eq!(response.status(), 201, "create session");
        let body: Value = response.json().await.expect("json");
        (
            body["sid"].as_str().expect("sid").to_owned(),
            body["token"].as_str().expect("token").to_owned(),
        )
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of one sample of `/metrics` (`name{labels}` exactly as rendered), 0 if absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.metrics().await, sample)
    }

    /// Stops the sidecar and waits for it to drain.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
    }
}

impl Drop for TestSidecar {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Reads one sample from Prometheus text.
pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// Signs `claims` with HS256 and [`SECRET`].
pub fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET),
        None,
        claims,
    )
}

/// Signs `claims` with `alg`, `key` and an optional `kid`.
pub fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

/// Claims valid for ten minutes for `sub`.
pub fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 600, "iat": now()})
}

/// The encoding key of a fixture private key.
pub fn private_key(alg: Algorithm, file: &str) -> EncodingKey {
    let pem = std::fs::read(fixture(file)).expect("fixture key");
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => Ok(EncodingKey::from_secret(&pem)),
    }
    .expect("key parses")
}

/// Builds a token from raw header and payload JSON and a signature segment, for hostile tests.
pub fn raw_token(header: &str, payload: &str, signature: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.{}",
        b64.encode(header),
        b64.encode(payload),
        signature
    )
}

/// base64url (no padding) decoding of a header value, as JSON.
pub fn decode_b64_json(value: &str) -> Value {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .expect("base64url without padding");
    serde_json::from_slice(&bytes).expect("json")
}

/// An HS256 token (signed with [`SECRET`]) over raw payload JSON text, so tests can send JSON
/// that no serializer would produce (huge numbers, deep nesting, odd types).
pub fn hs256_raw(payload: &str) -> String {
    hs256_raw_with_header(r#"{"alg":"HS256","typ":"JWT"}"#, payload)
}

/// An HS256 token (signed with [`SECRET`]) over raw header and payload JSON text: a valid
/// signature over whatever the header says (`crit`, `b64`, duplicate members, ...).
pub fn hs256_raw_with_header(header: &str, payload: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let message = format!("{}.{}", b64.encode(header), b64.encode(payload));
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(SECRET),
        Algorithm::HS256,
    )
    .expect("sign");
    format!("{message}.{signature}")
}

/// Sends raw bytes as one HTTP/1.1 request and returns the status code of the answer
/// (0 when the connection closed without one).
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A key prefix no other test uses, so tests sharing one cluster do not see each other.
pub fn unique_prefix(test: &str) -> String {
    format!("t{}-{test}", rand::random::<u32>())
}

/// Flags that point a sidecar at `cluster` under `prefix`.
pub fn redis_flags(cluster: &cluster::RedisCluster, prefix: &str) -> Vec<String> {
    vec![
        "--redis-nodes".into(),
        cluster.seed_urls().join(","),
        "--redis-key-prefix".into(),
        prefix.into(),
    ]
}

impl TestSidecar {
    /// Starts a sidecar on a Redis Cluster under `prefix`, with extra flags.
    pub async fn start_on_cluster(
        cluster: &cluster::RedisCluster,
        prefix: &str,
        extra: &[&str],
    ) -> TestSidecar {
        let flags = redis_flags(cluster, prefix);
        let mut all: Vec<&str> = flags.iter().map(String::as_str).collect();
        all.extend_from_slice(extra);
        TestSidecar::start(&all).await
    }

    /// Polls `GET /verify` until it answers `status`, for at most `bound` (a hang guard, not
    /// a timing assertion). Returns how long it took.
    pub async fn wait_for_status(&self, token: &str, status: u16, bound: Duration) -> Duration {
        let started = std::time::Instant::now();
        loop {
            let (got, _) = self.verify_status(token).await;
            if got == status {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < bound,
                "still {got} after {bound:?}, expected {status}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until the invalidation subscription gauge reads `connected`.
    pub async fn wait_for_subscription(&self, connected: bool, bound: Duration) {
        let started = std::time::Instant::now();
        let want = if connected { 1.0 } else { 0.0 };
        while self
            .metric("session_sidecar_invalidation_subscription_connected")
            .await
            != want
        {
            assert!(
                started.elapsed() < bound,
                "subscription never became {connected}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl TestSidecar {
    /// `DELETE /v1/sessions/{sid}` → status.
    pub async fn delete_session(&self, sid: &str) -> u16 {
        self.session_api(reqwest::Method::DELETE, &format!("/v1/sessions/{sid}"))
            .send()
            .await
            .expect("delete session")
            .status()
            .as_u16()
    }

    /// `POST /v1/sessions` on a sidecar with `--session-keys` → (sid, per-session secret).
    pub async fn create_keyed_session(&self, sub: &str) -> (String, Vec<u8>) {
        use base64::Engine;
        let created: Value = self
            .session_api(reqwest::Method::POST, "/v1/sessions")
            .json(&json!({"sub": sub, "data": {}}))
            .send()
            .await
            .expect("create session")
            .json()
            .await
            .expect("json");
        let secret = created["session_secret"]
            .as_str()
            .expect("session_secret returned with --session-keys");
        (
            created["sid"].as_str().expect("sid").to_owned(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(secret)
                .expect("base64url secret"),
        )
    }
}

/// An HS256 token for `sub` whose `kid` is `sid`, signed with the session's own secret.
pub fn session_keyed_token(sid: &str, secret: &[u8], sub: &str, jti: Option<&str>) -> String {
    let mut claims = json!({"sub": sub, "exp": now() + 60});
    if let Some(jti) = jti {
        claims["jti"] = json!(jti);
    }
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret),
        Some(sid),
        &claims,
    )
}

impl TestSidecar {
    /// The status of `/readyz` (0 when it does not answer).
    pub async fn readyz(&self) -> u16 {
        self.http
            .get(format!("http://{}/readyz", self.admin))
            .send()
            .await
            .map_or(0, |r| r.status().as_u16())
    }

    /// Waits until `/readyz` answers 200 (keys loaded, store reachable), at most `bound`.
    pub async fn wait_ready(&self, bound: Duration) {
        let started = std::time::Instant::now();
        loop {
            if self.readyz().await == 200 {
                return;
            }
            assert!(started.elapsed() < bound, "not ready within {bound:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `DELETE /v1/users/{sub}/sessions` → (status, body).
    pub async fn logout_everywhere(&self, sub: &str) -> (u16, Value) {
        let response = self
            .session_api(
                reqwest::Method::DELETE,
                &format!("/v1/users/{sub}/sessions"),
            )
            .send()
            .await
            .expect("log out everywhere");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

impl TestSidecar {
    /// `PATCH /v1/sessions/{sid}` with a merge patch → (status, body).
    pub async fn patch_session(&self, sid: &str, patch: Value) -> (u16, Value) {
        let response = self
            .session_api(reqwest::Method::PATCH, &format!("/v1/sessions/{sid}"))
            .json(&patch)
            .send()
            .await
            .expect("patch session");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `GET /v1/sessions/{sid}` → (status, body).
    pub async fn get_session(&self, sid: &str) -> (u16, Value) {
        let response = self
            .session_api(reqwest::Method::GET, &format!("/v1/sessions/{sid}"))
            .send()
            .await
            .expect("get session");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// A JWKS server that answers one fixed document on every path (for tests where the key set
/// from a URL is a fixture, not the subject: `tests/jwks.rs` has one that fails on cue).
pub struct StaticJwksServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl StaticJwksServer {
    /// Serves the public keys of fixture private keys, as `(alg, file, kid)`.
    pub async fn start(keys: &[(Algorithm, &str, &str)]) -> StaticJwksServer {
        let keys: Vec<Value> = keys
            .iter()
            .map(|&(alg, file, kid)| {
                let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&private_key(alg, file), alg)
                    .expect("jwk");
                let mut jwk = serde_json::to_value(jwk).expect("jwk json");
                jwk["kid"] = json!(kid);
                jwk
            })
            .collect();
        let body = bytes::Bytes::from(json!({ "keys": keys }).to_string());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind JWKS server");
        let addr = listener.local_addr().expect("JWKS server address");
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let body = body.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_request| {
                        let body = body.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(body),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        StaticJwksServer { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }
}

impl Drop for StaticJwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

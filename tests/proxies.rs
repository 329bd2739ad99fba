//! The proxy examples of `examples/proxies/` with the real binaries (README "Behind a proxy"):
//! nginx `auth_request`, Envoy `ext_authz`, Traefik `ForwardAuth` and Caddy `forward_auth`,
//! each started with its shipped configuration (only its three loopback addresses changed) in
//! front of the demo upstream (`examples/proxies/upstream.py`) and a sidecar binary with the
//! example rules (`examples/proxies/rules.json`).
//!
//! For each proxy: no token → 401 with the sidecar's challenge and reason; a session token →
//! 200 and the app sees `X-Auth-Subject` and `X-Auth-Session`; a stateless token with forged
//! `X-Auth-*` headers → the app sees none of the forged values; a public route → 200 without
//! a token; a route needing a scope the token lacks → 403; a path that walks out of a public
//! prefix does not reach the app; a deleted session → 401; then the sidecar stopped, the
//! sidecar answering 503, and the sidecar hung: the proxy answers 503 and never reaches the app.
//!
//! The binaries: `SIDECAR_TEST_NGINX`, `SIDECAR_TEST_ENVOY`, `SIDECAR_TEST_TRAEFIK`,
//! `SIDECAR_TEST_CADDY` (set by `scripts/test`, which installs them); a binary named there
//! that does not run is a failure. When one could not be installed, `scripts/test` sets
//! `SIDECAR_TEST_<PROXY>_SKIP` to the reason instead, and the test prints it and does nothing
//! else (`scripts/test` repeats every skip at the end of its output).

mod support;

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{ADMIN, SECRET, decode_b64_json, hs256, now};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_session-sidecar");

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/proxies")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proxy {
    Nginx,
    Envoy,
    Traefik,
    Caddy,
}

/// How a proxy's `503` looks when the sidecar is stopped or hung, as chosen (and documented)
/// in its example.
struct Failures {
    /// It carries `Retry-After: 1`.
    retry_after: bool,
}

impl Proxy {
    fn name(self) -> &'static str {
        match self {
            Proxy::Nginx => "nginx",
            Proxy::Envoy => "envoy",
            Proxy::Traefik => "traefik",
            Proxy::Caddy => "caddy",
        }
    }

    fn failures(self) -> Failures {
        Failures {
            // Traefik's ForwardAuth answers 500, after a fixed 30 s when the sidecar hangs;
            // the example's errors middleware rewrites it to an empty 503 (no Retry-After).
            retry_after: self != Proxy::Traefik,
        }
    }

    /// The binary to run, or why there is none.
    fn binary(self) -> Result<PathBuf, String> {
        let var = format!("SIDECAR_TEST_{}", self.name().to_uppercase());
        if let Ok(path) = std::env::var(&var)
            && !path.is_empty()
        {
            return Ok(PathBuf::from(path));
        }
        if let Ok(reason) = std::env::var(format!("{var}_SKIP")) {
            return Err(reason);
        }
        // Without scripts/test: the places it installs to.
        let home = std::env::var("HOME").unwrap_or_default();
        let venv = Path::new(&home).join(".cache/session-sidecar-proxies/venv");
        let candidates: Vec<PathBuf> = match self {
            Proxy::Nginx => vec!["/usr/sbin/nginx".into(), "/usr/bin/nginx".into()],
            Proxy::Envoy => vec![venv.join("lib/python3.11/site-packages/envoy/_bin/envoy")],
            Proxy::Traefik => vec![venv.join("bin/traefik")],
            Proxy::Caddy => vec![venv.join("bin/caddy")],
        };
        candidates
            .into_iter()
            .find(|path| path.exists())
            .ok_or_else(|| {
                format!(
                    "{} is not installed: run scripts/test (it installs it) or set {var}",
                    self.name()
                )
            })
    }
}

/// A child process killed when dropped, and also when this test process dies: it runs under a
/// `sh` wrapper whose stdin is a pipe held here; when the pipe closes (dropped, or the test
/// killed) the wrapper SIGKILLs it (as `tests/support/cluster.rs` does for Redis nodes).
struct Process {
    child: Child,
    pipe: Option<std::process::ChildStdin>,
}

const WRAPPER: &str = r#"exec 3<&0 </dev/null
"$@" 3<&- &
pid=$!
{ trap '' INT HUP; read _ignored <&3; kill -9 "$pid" 2>/dev/null; } &
exec 3<&-
wait "$pid"
"#;

impl Process {
    /// Spawns `command` (program, arguments, environment, directory) under the wrapper, with
    /// `out` as its stdout and stderr.
    fn spawn(command: &Command, out: Stdio, err: Stdio) -> std::io::Result<Process> {
        let mut wrapper = Command::new("sh");
        wrapper
            .arg("-c")
            .arg(WRAPPER)
            .arg("proxy-test")
            .arg(command.get_program())
            .args(command.get_args())
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err);
        for (key, value) in command.get_envs() {
            if let Some(value) = value {
                wrapper.env(key, value);
            }
        }
        if let Some(dir) = command.get_current_dir() {
            wrapper.current_dir(dir);
        }
        let mut child = wrapper.spawn()?;
        let pipe = child.stdin.take();
        Ok(Process { child, pipe })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        drop(self.pipe.take());
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// Waits until something accepts connections on `port` (a hang guard, not a timing check).
async fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status} before listening on {port}");
        }
        assert!(Instant::now() < deadline, "{what} never listened on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A sidecar, the demo upstream and one proxy, on free loopback ports.
struct Stack {
    proxy: Proxy,
    dir: tempfile::TempDir,
    sidecar_port: u16,
    proxy_port: u16,
    sidecar: Option<Process>,
    _upstream: Process,
    _proxy: Process,
    http: reqwest::Client,
}

impl Stack {
    async fn start(proxy: Proxy, binary: &Path, strip: bool) -> Stack {
        let dir = tempfile::tempdir().expect("temp dir");
        let (sidecar_port, upstream_port, proxy_port) = (free_port(), free_port(), free_port());
        std::fs::write(dir.path().join("secret"), SECRET).unwrap();
        std::fs::write(dir.path().join("admin"), format!("{ADMIN}\n")).unwrap();
        let mut sidecar = Command::new(BIN);
        sidecar
            .args(["serve", "--metrics-listen", "127.0.0.1:0", "--listen"])
            .arg(format!("127.0.0.1:{sidecar_port}"))
            .arg("--jwt-secret-file")
            .arg(dir.path().join("secret"))
            .arg("--admin-token-file")
            .arg(dir.path().join("admin"))
            .arg("--rules-file")
            .arg(examples().join("rules.json"));
        let mut sidecar =
            Process::spawn(&sidecar, Stdio::null(), Stdio::null()).expect("sidecar starts");
        wait_for_port(sidecar_port, "the sidecar", &mut sidecar.child).await;
        let mut upstream = Command::new("python3");
        upstream
            .arg(examples().join("upstream.py"))
            .arg(upstream_port.to_string());
        let mut upstream = Process::spawn(&upstream, Stdio::null(), Stdio::null())
            .expect("python3 runs the demo upstream");
        wait_for_port(upstream_port, "the demo upstream", &mut upstream.child).await;

        let template = |file: &str| -> String {
            let text = std::fs::read_to_string(examples().join(file)).expect("example config");
            let text = text
                .replace("127.0.0.1:8000", &format!("127.0.0.1:{proxy_port}"))
                .replace("127.0.0.1:8080", &format!("127.0.0.1:{sidecar_port}"))
                .replace("127.0.0.1:3000", &format!("127.0.0.1:{upstream_port}"))
                .replace("port_value: 8000", &format!("port_value: {proxy_port}"))
                .replace("port_value: 8080", &format!("port_value: {sidecar_port}"))
                .replace("port_value: 3000", &format!("port_value: {upstream_port}"));
            assert!(
                text.contains(&proxy_port.to_string()) || text.contains(&sidecar_port.to_string()),
                "{file}: the addresses were found and replaced"
            );
            text
        };
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let mut command = Command::new(binary);
        match proxy {
            Proxy::Nginx => {
                let conf = write("nginx.conf", template("nginx.conf"));
                command
                    .arg("-p")
                    .arg(dir.path())
                    .args(["-e", "stderr", "-c"])
                    .arg(conf)
                    .args(["-g", "daemon off; master_process off;"]);
            }
            Proxy::Envoy => {
                let mut text = template("envoy.yaml");
                if !strip {
                    text = without_header_mutation(&text);
                }
                let conf = write("envoy.yaml", text);
                command
                    .arg("-c")
                    .arg(conf)
                    .args(["--disable-hot-restart", "--log-level", "error"]);
            }
            Proxy::Traefik => {
                write("traefik-dynamic.yml", template("traefik-dynamic.yml"));
                let conf = write("traefik.yml", template("traefik.yml"));
                command.arg(format!("--configFile={}", conf.display()));
            }
            Proxy::Caddy => {
                let conf = write("Caddyfile", template("Caddyfile"));
                command
                    .args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(conf)
                    .env("XDG_DATA_HOME", dir.path())
                    .env("XDG_CONFIG_HOME", dir.path());
            }
        }
        let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
        command.current_dir(dir.path());
        let mut child = Process::spawn(&command, log.try_clone().unwrap().into(), log.into())
            .unwrap_or_else(|e| panic!("{} does not start: {e}", proxy.name()));
        wait_for_port(proxy_port, proxy.name(), &mut child.child).await;
        let stack = Stack {
            proxy,
            dir,
            sidecar_port,
            proxy_port,
            sidecar: Some(sidecar),
            _upstream: upstream,
            _proxy: child,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        };
        // Listening is not always routing yet (Traefik loads its file provider after).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = stack.http.get(stack.url("/healthz")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} never routed /healthz to the app: {}",
                proxy.name(),
                stack.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stack
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.proxy_port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    /// A request through the proxy → (status, headers, body).
    async fn get(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let mut request = self.http.request(method, self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {path}: {e}", self.proxy.name()));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap_or_default())
    }

    /// A session created on the sidecar (directly: the session API is not behind the proxy).
    async fn create_session(&self, sub: &str, data: Value) -> (String, String) {
        let created: Value = self
            .http
            .post(format!(
                "http://127.0.0.1:{}/v1/sessions",
                self.sidecar_port
            ))
            .bearer_auth(ADMIN)
            .json(&json!({"sub": sub, "data": data}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            created["sid"].as_str().unwrap().to_owned(),
            created["token"].as_str().unwrap().to_owned(),
        )
    }

    async fn delete_session(&self, sid: &str) {
        let status = self
            .http
            .delete(format!(
                "http://127.0.0.1:{}/v1/sessions/{sid}",
                self.sidecar_port
            ))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 204);
    }
}

/// The Envoy example without its header_mutation filter: only the sidecar's
/// `x-envoy-auth-headers-to-remove` stands between a forged header and the app.
fn without_header_mutation(text: &str) -> String {
    let start = text
        .find("                  - name: envoy.filters.http.header_mutation")
        .expect("the Envoy example has a header_mutation filter");
    let end = text
        .find("                  - name: envoy.filters.http.ext_authz")
        .expect("the Envoy example has an ext_authz filter");
    format!("{}{}", &text[..start], &text[end..])
}

/// The demo upstream's answer: the `X-Auth-*` headers it received.
fn seen(body: &str) -> Value {
    serde_json::from_str::<Value>(body).unwrap_or_else(|_| panic!("not the app's answer: {body}"))
        ["x-auth"]
        .clone()
}

/// The binary for `proxy`, or `None` after printing why the test is skipped.
fn binary_or_skip(proxy: Proxy) -> Option<PathBuf> {
    match proxy.binary() {
        Ok(path) => Some(path),
        Err(reason) => {
            println!("SKIPPED {} proxy test: {reason}", proxy.name());
            eprintln!("SKIPPED {} proxy test: {reason}", proxy.name());
            None
        }
    }
}

async fn the_example_protects_the_app(proxy: Proxy) {
    let Some(binary) = binary_or_skip(proxy) else {
        return;
    };
    let stack = Stack::start(proxy, &binary, true).await;
    let name = proxy.name();
    let get = reqwest::Method::GET;

    // No token: the sidecar's 401, challenge and reason.
    let (status, headers, body) = stack.get(get.clone(), "/account", &[]).await;
    assert_eq!(status, 401, "{name}: no token: {body}");
    let challenges: Vec<_> = headers.get_all("www-authenticate").iter().collect();
    assert_eq!(
        challenges,
        [r#"Bearer realm="session-sidecar""#],
        "{name}: the sidecar's challenge, once"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).ok(),
        Some(json!({"active": false, "reason": "missing_token"})),
        "{name}: the sidecar's body"
    );
    let (status, headers, _) = stack
        .get(
            get.clone(),
            "/account",
            &[("authorization", "Bearer x.y.z")],
        )
        .await;
    assert_eq!(status, 401, "{name}");
    assert_eq!(
        headers["www-authenticate"],
        r#"Bearer realm="session-sidecar", error="invalid_token", error_description="malformed""#,
        "{name}"
    );

    // A session token: the app sees who and which session.
    let (sid, token) = stack.create_session("alice", json!({"plan": "gold"})).await;
    let bearer = format!("Bearer {token}");
    let (status, _, body) = stack
        .get(get.clone(), "/account", &[("authorization", &bearer)])
        .await;
    assert_eq!(status, 200, "{name}: session token: {body}");
    let x_auth = seen(&body);
    assert_eq!(x_auth["x-auth-subject"], json!(["alice"]), "{name}: {body}");
    assert_eq!(x_auth["x-auth-session-id"], json!([sid]), "{name}: {body}");
    let session = x_auth["x-auth-session"][0]
        .as_str()
        .expect("X-Auth-Session");
    assert_eq!(decode_b64_json(session), json!({"plan": "gold"}), "{name}");

    // A stateless token with forged X-Auth-* headers: none of the forged values get through.
    let stateless = hs256(&json!({"sub": "bob", "exp": now() + 600}));
    let forged = [
        ("authorization", format!("Bearer {stateless}")),
        ("x-auth-subject", "forged-subject".to_owned()),
        ("x-auth-session-id", "forged-sid".to_owned()),
        ("x-auth-session", "Zm9yZ2VkLXNlc3Npb24".to_owned()),
        ("x-auth-claims", "Zm9yZ2VkLWNsYWltcw".to_owned()),
    ];
    let forged: Vec<(&str, &str)> = forged.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (status, _, body) = stack.get(get.clone(), "/account", &forged).await;
    assert_eq!(status, 200, "{name}: stateless token: {body}");
    let x_auth = seen(&body);
    assert_eq!(x_auth["x-auth-subject"], json!(["bob"]), "{name}: {body}");
    for header in ["x-auth-session-id", "x-auth-session"] {
        assert!(
            x_auth.get(header).is_none() || x_auth[header] == json!([""]),
            "{name}: the app got a forged {header}: {body}"
        );
    }
    assert!(
        !body.contains("forged") && !body.contains("Zm9yZ2Vk"),
        "{name}: {body}"
    );
    assert_ne!(
        x_auth["x-auth-claims"],
        json!(["Zm9yZ2VkLWNsYWltcw"]),
        "{name}: {body}"
    );

    // A public route: no token needed, and no forged header gets through either.
    let (status, _, body) = stack.get(get.clone(), "/public/page", &forged[1..]).await;
    assert_eq!(status, 200, "{name}: public route: {body}");
    assert!(
        !body.contains("forged") && !body.contains("Zm9yZ2Vk"),
        "{name}: {body}"
    );

    // A route needing a scope the token lacks: 403 with the sidecar's challenge.
    let (status, headers, body) = stack
        .get(
            reqwest::Method::POST,
            "/orders",
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(status, 403, "{name}: missing scope: {body}");
    assert_eq!(
        headers["www-authenticate"],
        r#"Bearer realm="session-sidecar", error="insufficient_scope", error_description="forbidden""#,
        "{name}"
    );
    let writer = hs256(&json!({"sub": "carol", "exp": now() + 600, "scope": "orders:write"}));
    let (status, _, body) = stack
        .get(
            reqwest::Method::POST,
            "/orders",
            &[("authorization", &format!("Bearer {writer}"))],
        )
        .await;
    assert_eq!(status, 200, "{name}: with the scope: {body}");

    // A path that walks out of the public prefix never reaches the app unauthenticated.
    for path in [
        "/public/../admin/x",
        "/public/%2e%2e/admin/x",
        "/public/..%2fadmin/x",
    ] {
        let raw = raw_get(stack.proxy_port, path).await;
        let status = status_of(&raw);
        assert!(
            status != 200 && status != 0,
            "{name}: {path} without a token answered {status}: {raw}"
        );
    }

    // A deleted session: 401 at once.
    stack.delete_session(&sid).await;
    let (status, headers, _) = stack
        .get(get.clone(), "/account", &[("authorization", &bearer)])
        .await;
    assert_eq!(status, 401, "{name}: deleted session");
    assert_eq!(
        headers["www-authenticate"],
        r#"Bearer realm="session-sidecar", error="invalid_token", error_description="session_inactive""#,
        "{name}"
    );

    the_proxy_fails_closed(stack).await;
}

/// Sends `GET path` exactly as written (no client-side normalisation) → the raw answer.
async fn raw_get(port: u16, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_of(raw: &str) -> u16 {
    raw.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// What the proxy answers with the sidecar stopped, answering `503`, and hung.
async fn the_proxy_fails_closed(mut stack: Stack) {
    let name = stack.proxy.name();
    let failures = stack.proxy.failures();
    let token = hs256(&json!({"sub": "dave", "exp": now() + 600}));
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];

    drop(stack.sidecar.take());
    let (status, headers, body) = stack.get(reqwest::Method::GET, "/account", &auth).await;
    println!("{name}: sidecar stopped -> {status} {body}");
    assert_eq!(status, 503, "{name}: sidecar stopped: {body}");
    if failures.retry_after {
        assert_eq!(headers["retry-after"], "1", "{name}: sidecar stopped");
    }

    // A stand-in on the sidecar's port, answering 503 store_unavailable, then never answering.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", stack.sidecar_port))
        .await
        .expect("the sidecar's port is free again");
    let (mode_tx, mode_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(stand_in(listener, mode_rx));
    let (status, headers, body) = stack.get(reqwest::Method::GET, "/account", &auth).await;
    println!("{name}: sidecar answers 503 -> {status} {headers:?} {body}");
    assert_eq!(status, 503, "{name}: sidecar 503: {body}");
    assert_eq!(headers["retry-after"], "1", "{name}: sidecar 503");
    assert!(body.contains("unavailable"), "{name}: sidecar 503: {body}");
    assert!(
        !body.contains("x-auth"),
        "{name}: the app was not reached: {body}"
    );

    let _ = mode_tx.send(true);
    let started = Instant::now();
    let (status, _, body) = stack.get(reqwest::Method::GET, "/account", &auth).await;
    println!(
        "{name}: sidecar hung -> {status} after {:?} {body}",
        started.elapsed()
    );
    assert_eq!(status, 503, "{name}: sidecar hung: {body}");
    assert!(
        !body.contains("x-auth"),
        "{name}: the app was not reached: {body}"
    );
}

/// Accepts connections on the sidecar's port: answers each request `503 store_unavailable`
/// while `hang` is false, else reads it and never answers.
async fn stand_in(listener: tokio::net::TcpListener, hang: tokio::sync::watch::Receiver<bool>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let hang = hang.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 16384];
            let mut held = Vec::new();
            loop {
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                if *hang.borrow() {
                    held.push(stream);
                    tokio::time::sleep(Duration::from_secs(120)).await;
                    return;
                }
                let body = r#"{"active":false,"reason":"store_unavailable"}"#;
                let answer = format!(
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\ncache-control: no-store\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_auth_request_example() {
    the_example_protects_the_app(Proxy::Nginx).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn envoy_ext_authz_example() {
    the_example_protects_the_app(Proxy::Envoy).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn traefik_forward_auth_example() {
    the_example_protects_the_app(Proxy::Traefik).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn caddy_forward_auth_example() {
    the_example_protects_the_app(Proxy::Caddy).await;
}

/// The sidecar alone closes the Envoy hole: with the example's header_mutation filter taken
/// out, a forged `X-Auth-Session-Id`/`X-Auth-Session` beside a valid stateless token still
/// never reaches the app (the sidecar's `x-envoy-auth-headers-to-remove`).
#[tokio::test(flavor = "multi_thread")]
async fn envoy_drops_forged_session_headers_on_the_sidecars_word_alone() {
    let Some(binary) = binary_or_skip(Proxy::Envoy) else {
        return;
    };
    let stack = Stack::start(Proxy::Envoy, &binary, false).await;
    let stateless = hs256(&json!({"sub": "erin", "exp": now() + 600}));
    let bearer = format!("Bearer {stateless}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("x-auth-session-id", "forged-sid"),
        ("x-auth-session", "Zm9yZ2VkLXNlc3Npb24"),
    ];
    let (status, _, body) = stack.get(reqwest::Method::GET, "/account", &headers).await;
    assert_eq!(status, 200, "{body}");
    let x_auth = seen(&body);
    assert_eq!(x_auth["x-auth-subject"], json!(["erin"]), "{body}");
    assert!(x_auth.get("x-auth-session-id").is_none(), "{body}");
    assert!(x_auth.get("x-auth-session").is_none(), "{body}");
    // A public route: the sidecar names every X-Auth-* header for removal.
    let (status, _, body) = stack
        .get(
            reqwest::Method::GET,
            "/public/x",
            &[("x-auth-subject", "forged"), ("x-auth-session", "forged")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(seen(&body), json!({}), "{body}");
}

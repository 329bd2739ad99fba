//! The binary: `serve` refuses bad configuration with one line naming the flag, `token` mints
//! tokens the sidecar accepts, `serve --dev` prints a working token, SIGTERM drains and exits 0.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_session-sidecar");

fn run(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run binary");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn secret_file(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("secret");
    std::fs::write(&path, SECRET).unwrap();
    path.display().to_string()
}

#[test]
fn bad_configuration_is_refused_with_one_line_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(&dir);
    let short_secret = dir.path().join("short");
    std::fs::write(&short_secret, "x").unwrap();
    let short_secret = short_secret.display().to_string();
    let spaced_admin = dir.path().join("spaced-admin");
    std::fs::write(&spaced_admin, "two words\n").unwrap();
    let spaced_admin = spaced_admin.display().to_string();
    let blank_admin = dir.path().join("blank-admin");
    std::fs::write(&blank_admin, "   \n").unwrap();
    let blank_admin = blank_admin.display().to_string();
    let listen = ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "--jwt-secret-file"),
        // RFC 7518 §3.2: an HS256 key has at least 32 bytes.
        (
            vec!["--jwt-secret-file", &short_secret],
            "--jwt-secret-file",
        ),
        // A credential that cannot be sent as one bearer token locks everyone out.
        (
            vec![
                "--jwt-secret-file",
                &secret,
                "--admin-token-file",
                &spaced_admin,
            ],
            "--admin-token-file",
        ),
        (
            vec![
                "--jwt-secret-file",
                &secret,
                "--admin-token-file",
                &blank_admin,
            ],
            "--admin-token-file",
        ),
        (
            vec!["--jwt-secret-file", "/nonexistent/secret"],
            "--jwt-secret-file",
        ),
        (
            vec!["--jwt-public-key-file", "/nonexistent/key.pem"],
            "--jwt-public-key-file",
        ),
        (
            vec!["--jwt-secret-file", &secret, "--algorithms", "none"],
            "--algorithms",
        ),
        (
            vec!["--jwt-secret-file", &secret, "--algorithms", "RS256"],
            "--algorithms",
        ),
        (
            vec![
                "--jwt-secret-file",
                &secret,
                "--redis-nodes",
                "http://127.0.0.1:1",
            ],
            "--redis-nodes",
        ),
        (
            vec!["--jwt-secret-file", &secret, "--listen", "0.0.0.0:0"],
            "--admin-token-file",
        ),
    ];
    for (flags, flag) in cases {
        let mut args = vec!["serve"];
        if !flags.contains(&"--listen") {
            args.extend_from_slice(&listen[..2]);
        }
        args.extend_from_slice(&listen[2..]);
        args.extend_from_slice(&flags);
        let (code, _, stderr) = run(&args);
        assert_eq!(code, 64, "{flags:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line for {flags:?}: {stderr}");
        assert!(lines[0].contains(flag), "{flags:?} names {flag}: {stderr}");
    }
    // A private key where a public key belongs is refused, and the secret is never echoed.
    let key = fixture("rsa.key").display().to_string();
    let (code, _, stderr) = run(&["serve", "--jwt-public-key-file", &key]);
    assert_eq!(code, 64);
    assert!(!stderr.contains("PRIVATE KEY-----\nMII"), "{stderr}");
    // Env variables are read like flags.
    let output = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .env("SIDECAR_JWT_SECRET_FILE", &secret)
        .env("SIDECAR_ALGORITHMS", "none")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--algorithms"));
}

#[tokio::test(flavor = "multi_thread")]
async fn token_command_mints_tokens_the_sidecar_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(&dir);
    let (code, stdout, stderr) = run(&[
        "token",
        "--jwt-secret-file",
        &secret,
        "--sub",
        "alice",
        "--ttl",
        "15m",
        "--claim",
        "role=admin",
        "--claim",
        "level=3",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let token = stdout.trim();
    let sidecar = TestSidecar::start(&[]).await;
    let response = sidecar.verify(token).await;
    assert_eq!(response.status(), 200);
    let claims = decode_b64_json(response.headers()["x-auth-claims"].to_str().unwrap());
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["role"], "admin");
    assert_eq!(claims["level"], 3);
    assert!(claims["jti"].is_string());
    let exp = claims["exp"].as_u64().unwrap();
    assert!(exp >= now() + 14 * 60 && exp <= now() + 15 * 60 + 1);

    // With --sid the token is session-bound: no such session here.
    let (_, stdout, _) = run(&[
        "token",
        "--jwt-secret-file",
        &secret,
        "--sub",
        "a",
        "--sid",
        "nope",
    ]);
    assert_eq!(
        sidecar.verify_status(stdout.trim()).await,
        (401, Some("session_inactive".into()))
    );
}

struct Served {
    child: Child,
}

/// Sends SIGTERM to a sidecar started with a piped stderr and reads what it wrote there until
/// it exits.
fn terminate_and_read_stderr(served: &mut Served) -> String {
    let pid = served.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut stderr = String::new();
    use std::io::Read;
    served
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    stderr
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `serve` with the secret on a free loopback port (and an ephemeral admin port);
/// `log_level` sets `RUST_LOG`. Returns the process and its `--listen` address.
fn serve_on_free_port(
    secret: &str,
    extra: &[&str],
    log_level: Option<&str>,
    stderr: Stdio,
) -> (Served, String) {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--jwt-secret-file", secret, "--listen", &listen])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(extra)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(stderr);
    if let Some(level) = log_level {
        command.env("RUST_LOG", level);
    }
    let child = command.spawn().unwrap();
    (Served { child }, listen)
}

/// A connection to `listen`, once the sidecar accepts them (at most 10 s).
async fn connect_when_listening(listen: &str) -> tokio::net::TcpStream {
    let started = Instant::now();
    loop {
        match tokio::net::TcpStream::connect(listen).await {
            Ok(stream) => return stream,
            Err(_) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("sidecar did not start: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_mode_prints_a_token_and_curl_line_that_work() {
    let mut served = Served {
        child: Command::new(BIN)
            .args([
                "serve",
                "--dev",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    };
    let stdout = served.child.stdout.take().unwrap();
    let curl_line = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.trim_start().starts_with("curl -i"))
    })
    .await
    .unwrap()
    .expect("a curl line is printed");
    let token = curl_line
        .split("Bearer ")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("token in the curl line");
    let url = curl_line.split_whitespace().last().unwrap();
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-auth-session"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(&dir);
    let (mut served, listen) = serve_on_free_port(&secret, &[], None, Stdio::null());
    let mut stream = connect_when_listening(&listen).await;
    // An introspection request whose body is still being sent when SIGTERM arrives.
    let token = hs256(&claims("zoe"));
    let body = format!(r#"{{"token":"{token}"}}"#);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = format!(
        "POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = served.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    // For a moment (the drain grace) a new connection is still answered, and told to close.
    let mut late = tokio::net::TcpStream::connect(&listen).await.unwrap();
    late.write_all(
        format!("GET /verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut late_answer = String::new();
    late.read_to_string(&mut late_answer).await.unwrap();
    assert!(late_answer.starts_with("HTTP/1.1 200"), "{late_answer}");
    assert!(
        late_answer
            .to_ascii_lowercase()
            .contains("connection: close"),
        "{late_answer}"
    );
    // Then new connections are refused.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        tokio::net::TcpStream::connect(&listen).await.is_err(),
        "no longer accepting"
    );
    stream.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "in-flight request finished: {answer}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = served.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "exited within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_never_contain_a_token_or_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(&dir);
    let admin = dir.path().join("admin");
    std::fs::write(&admin, "admin-credential-never-logged\n").unwrap();
    let admin = admin.display().to_string();
    let (mut served, listen) = serve_on_free_port(
        &secret,
        &["--log-format", "json", "--admin-token-file", &admin],
        Some("debug"),
        Stdio::piped(),
    );
    drop(connect_when_listening(&listen).await);
    let http = reqwest::Client::new();
    let base = format!("http://{listen}");
    let created: serde_json::Value = http
        .post(format!("{base}/v1/sessions"))
        .bearer_auth("admin-credential-never-logged")
        .json(&serde_json::json!({"sub": "logged", "data": {"k": "v"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let forged = format!("{}x", &token[..token.len() - 1]);
    for t in [&token, &forged] {
        http.get(format!("{base}/verify"))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
    }
    let stderr = terminate_and_read_stderr(&mut served);
    assert!(
        stderr.lines().count() >= 2,
        "something was logged: {stderr}"
    );
    for line in stderr.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }
    let secret_text = String::from_utf8_lossy(SECRET);
    for needle in [
        token.as_str(),
        forged.as_str(),
        secret_text.as_ref(),
        "admin-credential-never-logged",
    ] {
        assert!(
            !stderr.contains(needle),
            "the logs contain a token, the secret or the admin credential"
        );
    }
    // Nor any JWT-looking text at all (a header segment always starts with eyJ).
    assert!(
        !stderr.contains("eyJ"),
        "the logs contain something JWT-like"
    );
}

/// Text logs written to a file or a pipe carry no ANSI colour codes (they would garble every
/// log collector); colour is for a terminal only.
#[tokio::test(flavor = "multi_thread")]
async fn text_logs_into_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(&dir);
    let (mut served, listen) = serve_on_free_port(&secret, &[], Some("debug"), Stdio::piped());
    drop(connect_when_listening(&listen).await);
    let stderr = terminate_and_read_stderr(&mut served);
    assert!(stderr.lines().count() >= 1, "something was logged");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr:?}"
    );
}

/// One HTTP/1.1 keep-alive client of the rolling-restart test: sends `GET /verify` in a loop,
/// reconnecting when an answer says `Connection: close`, until it cannot connect any more.
/// Returns (answers, failures): a failure is a request written on a connection that had already
/// been answered on (kept alive) and that got no answer.
async fn keep_alive_client(listen: String, token: String) -> (u32, u32) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request =
        format!("GET /verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    let (mut answers, mut failures) = (0u32, 0u32);
    'connections: loop {
        let Ok(mut stream) = tokio::net::TcpStream::connect(&listen).await else {
            return (answers, failures);
        };
        let mut reused = false;
        loop {
            if stream.write_all(request.as_bytes()).await.is_err() {
                failures += u32::from(reused);
                continue 'connections;
            }
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte).await {
                    Ok(1) => head.push(byte[0]),
                    _ => {
                        // No answer: the server is gone (fresh connection) or closed a
                        // kept-alive connection under a request (a failure).
                        failures += u32::from(reused || !head.is_empty());
                        if reused || !head.is_empty() {
                            eprintln!("no answer on a kept-alive connection");
                        }
                        continue 'connections;
                    }
                }
            }
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            answers += 1;
            if head.contains("connection: close") {
                continue 'connections;
            }
            reused = true;
        }
    }
}

/// SIGTERM under load (a rolling restart): `/readyz` says 503 at once, kept-alive connections
/// are closed after an answer (`Connection: close`), never under a request, and the process
/// exits 0 within 10 s. (Before: with 32 kept-alive connections, 5 to 28 requests got EOF.)
#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_under_load_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(&dir);
    let free_port = || {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let mut served = Served {
        child: Command::new(BIN)
            .args(["serve", "--jwt-secret-file", &secret, "--listen", &listen])
            .args(["--metrics-listen", &admin])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    };
    drop(connect_when_listening(&listen).await);
    drop(connect_when_listening(&admin).await);
    let token = hs256(&claims("rolling"));
    let clients: Vec<_> = (0..32)
        .map(|_| tokio::spawn(keep_alive_client(listen.clone(), token.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = served.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // /readyz turns 503 before the process goes.
    let http = reqwest::Client::new();
    let mut unready = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match http.get(format!("http://{admin}/readyz")).send().await {
            Ok(response) if response.status() == 503 => {
                unready = true;
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(_) => break,
        }
    }
    assert!(unready, "/readyz never said 503 before the process went");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = served.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "exited within 10 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0));
    let (mut answers, mut failures) = (0, 0);
    for client in clients {
        let (a, f) = client.await.unwrap();
        answers += a;
        failures += f;
    }
    assert!(answers > 100, "the load ran: {answers} answers");
    assert_eq!(
        failures, 0,
        "{failures} requests got no answer ({answers} answered)"
    );
}

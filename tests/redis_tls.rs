//! `rediss://`: the sidecar against a TLS-only Redis Cluster (3 masters; client, bus and
//! replication links all TLS) whose certificates a private CA signs, trusted through
//! `--redis-ca-file`. Sessions, verification and the invalidation feed all go over TLS.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

/// Three TLS-only masters, killed when this value is dropped or the test process ends (each
/// node runs under a shell that kills it when its stdin, a pipe held here, closes).
struct TlsCluster {
    dir: tempfile::TempDir,
    ports: Vec<u16>,
    nodes: Vec<(Child, Option<ChildStdin>)>,
}

impl TlsCluster {
    fn start() -> TlsCluster {
        let dir = tempfile::tempdir().unwrap();
        make_certificates(dir.path());
        let mut cluster = TlsCluster {
            ports: Vec::new(),
            nodes: Vec::new(),
            dir,
        };
        for _ in 0..3 {
            let port = free_port_pair();
            let node_dir = cluster.dir.path().join(format!("n{port}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let args = format!(
                "redis-server --port 0 --tls-port {port} --bind 127.0.0.1 \
                 --tls-cert-file {d}/server.crt --tls-key-file {d}/server.key \
                 --tls-ca-cert-file {d}/ca.crt --tls-auth-clients no \
                 --tls-cluster yes --tls-replication yes --cluster-enabled yes \
                 --cluster-node-timeout 1000 --save '' --appendonly no \
                 --dir {n} --logfile {n}/log",
                d = cluster.dir.path().display(),
                n = node_dir.display(),
            );
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(format!("{args} & pid=$!; read _ignored; kill -9 $pid"))
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let stdin = child.stdin.take();
            cluster.nodes.push((child, stdin));
            cluster.ports.push(port);
        }
        for port in &cluster.ports {
            cluster.wait(|| cluster.cli(*port, &["PING"]).contains("PONG"), "node up");
        }
        let mut create = Command::new("redis-cli");
        create.args(["--tls", "--cacert"]).arg(cluster.ca());
        create.args(["--cluster", "create"]);
        create.args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")));
        create.arg("--cluster-yes");
        let output = create.output().expect("redis-cli --cluster create");
        assert!(
            output.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        for port in cluster.ports.clone() {
            cluster.wait(
                || {
                    cluster
                        .cli(port, &["CLUSTER", "INFO"])
                        .contains("cluster_state:ok")
                },
                "cluster_state:ok",
            );
        }
        cluster
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn cli(&self, port: u16, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["--tls", "--cacert"])
            .arg(self.ca())
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn wait(&self, mut ready: impl FnMut() -> bool, what: &str) {
        let started = Instant::now();
        while !ready() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "TLS cluster: no {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn seeds(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("rediss://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        for (child, stdin) in &mut self.nodes {
            drop(stdin.take());
            let _ = child.wait();
        }
    }
}

/// A private CA and a server certificate for 127.0.0.1, made with openssl.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=session-sidecar test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

/// A free port whose cluster bus port (+10000) is free too.
fn free_port_pair() -> u16 {
    loop {
        let port = 20000 + rand::random::<u16>() % 25000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok()
        {
            return port;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_and_revocations_work_over_tls() {
    let cluster = TlsCluster::start();
    let seeds = cluster.seeds();
    let ca = cluster.ca().display().to_string();
    let flags = [
        "--redis-nodes",
        &seeds,
        "--redis-ca-file",
        &ca,
        "--cache-ttl",
        "600",
    ];
    let a = TestSidecar::start(&flags).await;
    let b = TestSidecar::start(&flags).await;
    b.wait_for_subscription(true, Duration::from_secs(10)).await;
    let (sid, token) = a.create_session("tls-user", json!({"over": "tls"})).await;
    let response = b.verify(&token).await;
    assert_eq!(response.status(), 200);
    let session = decode_b64_json(response.headers()["x-auth-session"].to_str().unwrap());
    assert_eq!(session, json!({"over": "tls"}));
    assert_eq!(a.delete_session(&sid).await, 204);
    b.wait_for_status(&token, 401, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_certificate_is_refused() {
    let cluster = TlsCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    // No --redis-ca-file: the system roots do not know the test CA.
    let output = Command::new(env!("CARGO_BIN_EXE_session-sidecar"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--redis-connect-timeout-ms",
            "200",
            "--redis-nodes",
            &cluster.seeds(),
        ])
        .arg("--jwt-secret-file")
        .arg(&secret)
        .output()
        .unwrap();
    assert!(!output.status.success(), "refused to start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot connect"), "{stderr}");
    assert!(
        !stderr.contains("panicked"),
        "a clean refusal, not a crash: {stderr}"
    );
}

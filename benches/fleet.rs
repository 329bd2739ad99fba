//! A fleet on one cluster (issue 9, "scale on paper and in simulation"): every sidecar receives
//! every invalidation, so what one costs each sidecar and the cluster decides how far the design
//! goes. Starts a real 3+3 Redis Cluster and `FLEET` sidecar processes (the release binary, each
//! subscribed), publishes invalidations at a few rates for a few seconds each, and reports per
//! rate: messages each sidecar applied per second, each sidecar's CPU per message, and the
//! Redis nodes' CPU per published message. Run with `cargo bench --bench fleet` (builds the
//! release binary first if needed: `cargo build --release`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::cluster::RedisCluster;

const FLEET: usize = 30;
const RATES: [u64; 3] = [1_000, 5_000, 10_000];
const SECONDS: u64 = 5;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    ticks / 100.0
}

fn redis_cpu_seconds(cluster: &RedisCluster) -> f64 {
    cluster
        .live_ports()
        .into_iter()
        .map(|port| {
            let info = cluster.redis_cli(port, &["INFO", "cpu"]);
            info.lines()
                .filter_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    matches!(key, "used_cpu_sys" | "used_cpu_user")
                        .then(|| value.trim().parse::<f64>().ok())
                        .flatten()
                })
                .sum::<f64>()
        })
        .sum()
}

fn received(metrics_port: u16) -> f64 {
    let text = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{metrics_port}/metrics")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    support::metric_value(
        &text,
        r#"session_sidecar_invalidations_received_total{kind="token_revoked"}"#,
    )
}

fn subscribed(metrics_port: u16) -> bool {
    let text = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{metrics_port}/metrics")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    support::metric_value(&text, "session_sidecar_invalidation_subscription_connected") == 1.0
}

/// The sidecar processes, killed however the bench ends (a panic included).
struct Fleet(Vec<(Child, u16)>);

impl Drop for Fleet {
    fn drop(&mut self) {
        for (child, _) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn main() {
    let binary = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/release/session-sidecar"
    );
    assert!(
        std::path::Path::new(binary).exists(),
        "build it first: cargo build --release"
    );
    let cluster = RedisCluster::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "fleet-benchmark-secret-of-enough-bytes-0123456789").unwrap();
    let seeds = cluster.seed_urls().join(",");
    let mut fleet = Fleet(
        (0..FLEET)
            .map(|_| {
                let metrics_port = free_port();
                let child = Command::new(binary)
                    .args(["serve", "--jwt-secret-file"])
                    .arg(&secret)
                    .args(["--redis-nodes", &seeds, "--redis-key-prefix", "fleet"])
                    .args(["--listen", "127.0.0.1:0"])
                    .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
                    .stdout(Stdio::null())
                    .stderr(
                        std::fs::File::create(
                            dir.path().join(format!("sidecar-{metrics_port}.log")),
                        )
                        .map(Stdio::from)
                        .unwrap_or_else(|_| Stdio::null()),
                    )
                    .spawn()
                    .expect("start a sidecar");
                (child, metrics_port)
            })
            .collect(),
    );
    let fleet = &mut fleet.0;
    let started = Instant::now();
    while !fleet.iter().all(|(_, port)| subscribed(*port)) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "fleet not subscribed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "{FLEET} sidecars subscribed on a 3+3 cluster; each rate for {SECONDS} s (2-core machine: the sidecars, Redis and the publisher share it)"
    );
    println!(
        "{:>10} {:>22} {:>26} {:>28}",
        "published/s",
        "applied/s per sidecar",
        "CPU µs per message, sidecar",
        "Redis CPU µs per published"
    );

    let client = redis::Client::open(cluster.seed_urls()[0].as_str()).expect("client");
    let mut publisher = client.get_connection().expect("publisher");
    let mut sequence = 0u64;
    for rate in RATES {
        let before_received: Vec<f64> = fleet.iter().map(|(_, port)| received(*port)).collect();
        let before_cpu: Vec<f64> = fleet.iter().map(|(c, _)| cpu_seconds(c.id())).collect();
        let before_redis = redis_cpu_seconds(&cluster);
        let batch = rate / 100; // every 10 ms
        let began = Instant::now();
        let mut published = 0u64;
        while began.elapsed() < Duration::from_secs(SECONDS) {
            let tick = Instant::now();
            let mut pipe = redis::pipe();
            for _ in 0..batch {
                sequence += 1;
                let message = session_sidecar::store::redis::feed::encode_at(
                    &session_sidecar::store::Invalidation::TokenRevoked(format!(
                        "fleet-{sequence}"
                    )),
                    session_sidecar::store::now_micros(),
                );
                pipe.cmd("PUBLISH")
                    .arg("fleet:invalidations")
                    .arg(message)
                    .ignore();
            }
            let () = pipe.query(&mut publisher).expect("publish");
            published += batch;
            std::thread::sleep(Duration::from_millis(10).saturating_sub(tick.elapsed()));
        }
        let elapsed = began.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(500)); // let the last ones arrive
        let redis_cpu = redis_cpu_seconds(&cluster) - before_redis;
        let mut applied: Vec<f64> = fleet
            .iter()
            .zip(&before_received)
            .map(|((_, port), before)| (received(*port) - before) / elapsed)
            .collect();
        let mut per_message: Vec<f64> = fleet
            .iter()
            .zip(&before_cpu)
            .zip(&before_received)
            .map(|(((child, port), cpu), got)| {
                let messages = (received(*port) - got).max(1.0);
                (cpu_seconds(child.id()) - cpu) * 1e6 / messages
            })
            .collect();
        println!(
            "{:>10.0} {:>22.0} {:>26.1} {:>28.1}",
            published as f64 / elapsed,
            median(&mut applied),
            median(&mut per_message),
            redis_cpu * 1e6 / published as f64
        );
    }
}

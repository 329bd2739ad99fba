//! Revocation visibility benchmark (SPEC §8: p99 under 10 ms): on a real Redis Cluster, two
//! sidecars; B has the session cached; A deletes it; how long until B answers 401? Repeated for
//! many sessions, reported as percentiles. Run with `cargo bench --bench revocation`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::cluster::RedisCluster;
use support::*;

const SAMPLES: usize = 200;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let cluster = RedisCluster::start();
    let prefix = unique_prefix("bench");
    let a = TestSidecar::start_on_cluster(&cluster, &prefix, &["--cache-ttl", "600"]).await;
    let b = TestSidecar::start_on_cluster(&cluster, &prefix, &["--cache-ttl", "600"]).await;
    b.wait_for_subscription(true, Duration::from_secs(10)).await;
    let mut latencies = Vec::with_capacity(SAMPLES);
    // How long the DELETE itself took (it waits for a replica: WAIT 1).
    let mut answers = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let (sid, token) = a.create_session(&format!("user{i}"), json!({"i": i})).await;
        assert_eq!(b.verify(&token).await.status(), 200);
        assert_eq!(b.verify(&token).await.status(), 200);
        let started = Instant::now();
        let deleted = a
            .session_api(reqwest::Method::DELETE, &format!("/v1/sessions/{sid}"))
            .send()
            .await
            .expect("delete");
        assert_eq!(deleted.status(), 204);
        answers.push(started.elapsed());
        loop {
            if b.verify(&token).await.status() == 401 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "never revoked");
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    answers.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let answer_pct = |p: f64| answers[((answers.len() as f64 * p) as usize).min(answers.len() - 1)];
    println!(
        "revocation visible at another sidecar over {SAMPLES} sessions (from the DELETE call to B's first 401):"
    );
    println!(
        "  p50 {:?}  p90 {:?}  p99 {:?}  max {:?}  (target p99 < 10 ms)",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        latencies[latencies.len() - 1]
    );
    println!(
        "  of which the DELETE answer (the write, its publication and WAIT 1): p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        answer_pct(0.50),
        answer_pct(0.90),
        answer_pct(0.99),
        answers[answers.len() - 1]
    );
    // B's own view: publication (A's clock) to applied (B's clock), as the metric buckets it.
    let metrics = b.metrics().await;
    println!("  session_sidecar_invalidation_lag_seconds at B (cumulative buckets):");
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("session_sidecar_invalidation_lag_seconds_bucket"))
    {
        println!("    {line}");
    }
}

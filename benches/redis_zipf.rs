//! Redis commands per verification on a Zipf mix (SPEC §8: at most 0.02 with 98 % cache hits),
//! on a real 3 + 3 Redis Cluster: a sidecar creates 100,000 sessions through its API, then
//! verifies their tokens over HTTP, every token once and a Zipf (s = 1) pass to warm its cache,
//! then another Zipf pass for the measurement; the servers' own `INFO commandstats` count the
//! commands. The cache is made
//! smaller than the token set (`--cache-max-entries`) so that about 2 % of the verifications
//! miss; the hit ratio reported is the sidecar's own (`/metrics`).
//!
//! `cargo bench --bench redis_zipf [-- --sessions N] [--draws N] [--cache-max-entries N]
//! [--json PATH]`.

#[path = "../tests/support/mod.rs"]
mod support;

use futures_util::StreamExt;
use rand::SeedableRng;
use rand::distr::{Distribution, Uniform};
use serde_json::json;
use support::cluster::{self, RedisCluster};
use support::*;

fn option(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `draws` indices into `n` items, Zipf-distributed (s = 1), by inverting the CDF.
fn zipf_sequence(n: usize, draws: usize, seed: u64) -> Vec<usize> {
    let mut cumulative = Vec::with_capacity(n);
    let mut total = 0.0;
    for rank in 1..=n {
        total += 1.0 / rank as f64;
        cumulative.push(total);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let uniform = Uniform::new(0.0, total).expect("range");
    (0..draws)
        .map(|_| {
            let u = uniform.sample(&mut rng);
            cumulative.partition_point(|&c| c < u).min(n - 1)
        })
        .collect()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

const CONCURRENCY: usize = 32;

async fn verify_all(sidecar: &TestSidecar, tokens: &[String], sequence: &[usize]) {
    let mut statuses = futures_util::stream::iter(sequence)
        .map(|&i| sidecar.verify(&tokens[i]))
        .buffer_unordered(CONCURRENCY);
    while let Some(response) = statuses.next().await {
        assert_eq!(response.status(), 200, "a session token did not verify");
    }
}

async fn run() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sessions = option(&args, "--sessions", 100_000);
    let draws = option(&args, "--draws", 500_000);
    let cache_entries = option(&args, "--cache-max-entries", 70_000);
    let json_path = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let cluster = RedisCluster::start();
    let prefix = unique_prefix("zipf");
    let entries = cache_entries.to_string();
    // The entry bound is the one that counts (the default 64 MiB would hold about 60,000).
    let bytes = (cache_entries * 4096).to_string();
    let sidecar = TestSidecar::start_on_cluster(
        &cluster,
        &prefix,
        &[
            "--cache-ttl",
            "600",
            "--cache-max-entries",
            &entries,
            "--cache-max-bytes",
            &bytes,
        ],
    )
    .await;
    let mut tokens: Vec<String> = futures_util::stream::iter(0..sessions)
        .map(|i| {
            let sidecar = &sidecar;
            async move {
                let data = json!({"role": "user", "tenant": "acme"});
                sidecar.create_session(&format!("user-{i}"), data).await.1
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    tokens.sort_unstable();
    // Every token once (so that the misses measured are the cache's, not first sightings),
    // then a Zipf pass.
    let mut warm: Vec<usize> = (0..sessions).collect();
    warm.extend(zipf_sequence(sessions, draws, 1));
    let measured = zipf_sequence(sessions, draws, 2);
    verify_all(&sidecar, &tokens, &warm).await;
    let hits_before = sidecar.metric("session_sidecar_cache_hits_total").await;
    let misses_before = sidecar.metric("session_sidecar_cache_misses_total").await;
    cluster.reset_commandstats();
    verify_all(&sidecar, &tokens, &measured).await;
    let stats = cluster.commandstats();
    let commands = cluster::data_commands(&stats);
    let hits = sidecar.metric("session_sidecar_cache_hits_total").await - hits_before;
    let misses = sidecar.metric("session_sidecar_cache_misses_total").await - misses_before;
    let hit_ratio = hits / (hits + misses).max(1.0);
    let per_verification = commands as f64 / draws as f64;
    let per_miss = commands as f64 / misses.max(1.0);
    println!(
        "{draws} verifications (Zipf over {sessions} session tokens, cache of {cache_entries} \
         entries): {:.2} % hits, {commands} Redis commands: {per_verification:.4} per \
         verification (target ≤ 0.02), {per_miss:.2} per miss; by command: {:?}",
        hit_ratio * 100.0,
        stats
            .iter()
            .filter(|(name, calls)| **calls > 0 && matches!(name.as_str(), "hmget" | "exists"))
            .collect::<Vec<_>>(),
    );
    if let Some(path) = json_path {
        let report = json!({
            "sessions": sessions,
            "draws": draws,
            "cache_max_entries": cache_entries,
            "hit_ratio": hit_ratio,
            "commands": commands,
            "commands_per_verification": per_verification,
            "commands_per_miss": per_miss,
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&report).expect("json"))
            .expect("write the report");
    }
    sidecar.stop().await;
}

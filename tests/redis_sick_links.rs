//! Sick links: one master of a real 3+3 cluster is reached through a TCP fault proxy
//! (`support::fault_proxy`: the node announces the proxy's port, so every client, the sidecar
//! included, talks to it through the proxy; the cluster bus is not proxied, so the cluster
//! does not fail it over). For each fault (latency beyond the command timeout, a stall, resets,
//! replies cut in the middle): cache hits are unaffected, misses on the sick shard answer `200`
//! from its replica, misses on other shards are unaffected, and where a fault makes lookups
//! wait (latency, stall) the node's breaker opens (later misses skip it) and closes again once
//! the link heals. The test prints a table per fault;
//! timings are reported there, and asserted only as generous bounds on hangs.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use support::cluster::RedisCluster;
use support::fault_proxy::{Fault, FaultProxy};
use support::*;

/// A miss that takes longer than this has hung (the call bound is 4 × 250 ms, plus the
/// replica read).
const HANG: Duration = Duration::from_secs(5);

fn slots_list(cluster: &RedisCluster, port: u16) -> Vec<String> {
    cluster
        .redis_cli(port, &["CLUSTER", "SLOTS"])
        .lines()
        .map(|line| line.trim().to_owned())
        .collect()
}

/// Waits until every live node's `CLUSTER SLOTS` lists `present` and none lists `absent`.
fn wait_for_slots_view(cluster: &RedisCluster, present: u16, absent: u16) {
    let started = Instant::now();
    loop {
        let settled = cluster.live_ports().into_iter().all(|port| {
            let lines = slots_list(cluster, port);
            lines.contains(&present.to_string()) && !lines.contains(&absent.to_string())
        });
        if settled {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the cluster never announced port {present} instead of {absent}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sick_link_to_one_master_costs_only_its_own_misses_and_opens_its_breaker() {
    let own = RedisCluster::start();
    let cluster = &own;
    cluster.wait_for_replication(Duration::from_secs(20));
    let sick = cluster.master_ports()[0];
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], sick))).await;
    let proxy_port = proxy.addr.port().to_string();
    cluster.redis_cli(
        sick,
        &["CONFIG", "SET", "cluster-announce-port", &proxy_port],
    );
    wait_for_slots_view(cluster, proxy.addr.port(), sick);
    // Every node lists every node (replicas included) before the sidecars learn the map.
    let started = Instant::now();
    let expected: Vec<String> = cluster
        .live_ports()
        .into_iter()
        .map(|port| {
            if port == sick {
                proxy.addr.port()
            } else {
                port
            }
            .to_string()
        })
        .collect();
    while !cluster.live_ports().into_iter().all(|port| {
        let lines = slots_list(cluster, port);
        expected.iter().all(|p| lines.contains(p))
    }) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "replicas never listed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Seeds without the sick node: the sidecars learn its (proxied) address from the slot map.
    let seeds: Vec<String> = cluster
        .live_ports()
        .into_iter()
        .filter(|port| *port != sick)
        .map(|port| format!("redis://127.0.0.1:{port}"))
        .collect();
    let seeds = seeds.join(",");
    let prefix = unique_prefix("sick");
    let flags = |cache_ttl: &'static str| {
        vec![
            "--redis-nodes".to_owned(),
            seeds.clone(),
            "--redis-key-prefix".to_owned(),
            prefix.clone(),
            "--cache-ttl".to_owned(),
            cache_ttl.to_owned(),
        ]
    };
    let start = |flags: Vec<String>| async move {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        TestSidecar::start(&flags).await
    };
    // `hits` keeps what it verified; `misses` has no cache, so every verification reads Redis.
    let hits = start(flags("600")).await;
    let misses = start(flags("0")).await;

    // Tokens whose session lives on the sick shard, and tokens of the other shards.
    let (mut on_sick, mut elsewhere) = (Vec::new(), Vec::new());
    let mut i = 0;
    while on_sick.len() < 3 || elsewhere.len() < 3 {
        let (sid, token) = hits.create_session(&format!("s{i}"), json!({})).await;
        i += 1;
        let key = format!("{prefix}:{{{sid}}}:s");
        // The cluster's own view names the sick master by the port it announces.
        if cluster.master_for_slot(RedisCluster::key_slot(&key)) == proxy.addr.port() {
            on_sick.push(token);
        } else {
            elsewhere.push(token);
        }
    }
    let warm = on_sick[0].clone();
    assert_eq!(hits.verify(&warm).await.status(), 200);
    cluster.wait_for_replication(Duration::from_secs(20));

    let opened = r#"session_sidecar_redis_breaker_transitions_total{to="open"}"#;
    let closed = r#"session_sidecar_redis_breaker_transitions_total{to="closed"}"#;
    let skips = "session_sidecar_redis_breaker_skips_total";
    let mut table = vec![format!(
        "{:<22} {:>8} {:>14} {:>14} {:>8} {:>6}",
        "fault", "answers", "first 3 max", "then max", "skipped", "opened"
    )];
    for fault in [
        Fault::Latency(Duration::from_secs(1)),
        Fault::Stall,
        Fault::Reset,
        Fault::DropMidReply,
    ] {
        let (opened_before, skips_before) =
            (misses.metric(opened).await, misses.metric(skips).await);
        proxy.set(fault);

        // A cache hit never touches Redis.
        assert_eq!(hits.verify(&warm).await.status(), 200, "{fault:?}: hit");
        let mut latencies = Vec::new();
        for _ in 0..4 {
            for token in &on_sick {
                let started = Instant::now();
                let (status, reason) = misses.verify_status(token).await;
                let took = started.elapsed();
                assert_eq!(
                    (status, reason.as_deref()),
                    (200, None),
                    "{fault:?}: a miss on the sick shard"
                );
                assert!(took < HANG, "{fault:?}: a miss took {took:?}");
                latencies.push(took);
            }
            for token in &elsewhere {
                assert_eq!(
                    misses.verify_status(token).await.0,
                    200,
                    "{fault:?}: a miss on a healthy shard"
                );
            }
        }
        let opened_now = misses.metric(opened).await - opened_before;
        let skipped = misses.metric(skips).await - skips_before;
        let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
        let first = latencies[..3].iter().map(ms).fold(0.0, f64::max);
        let then = latencies[3..].iter().map(ms).fold(0.0, f64::max);
        table.push(format!(
            "{:<22} {:>8} {:>11.1} ms {:>11.1} ms {:>8} {:>6}",
            format!("{fault:?}"),
            latencies.len(),
            first,
            then,
            skipped,
            opened_now
        ));
        // Faults that make a lookup wait (latency beyond the timeout, a stall) must open the
        // breaker. Faults that fail at once (resets, cut replies) may not: the client then
        // sends the read to a node it still reaches (often the replica), so nothing waits.
        if matches!(fault, Fault::Latency(_) | Fault::Stall) {
            assert!(opened_now >= 1.0, "{fault:?}: the breaker never opened");
            assert!(skipped >= 1.0, "{fault:?}: no miss skipped the sick node");
        }
        if opened_now < 1.0 {
            proxy.set(Fault::Healthy);
            continue;
        }
        // The link heals: a probe reaches the node and the breaker closes.
        let closed_before = misses.metric(closed).await;
        proxy.set(Fault::Healthy);
        let started = Instant::now();
        while misses.metric(closed).await <= closed_before {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{fault:?}: the breaker never closed"
            );
            for token in &on_sick {
                assert_eq!(misses.verify_status(token).await.0, 200);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!("{}", table.join("\n"));
}

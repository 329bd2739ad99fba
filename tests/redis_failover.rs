//! Killing a Redis master under load (SPEC §4, §8): cached decisions go on answering, misses are
//! answered from the replica within a second of the kill (before and after its promotion), and
//! a revoked session is never granted.
//! This binary has the cluster to itself, since it kills a node.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use support::cluster::RedisCluster;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn killing_a_master_keeps_hits_and_misses_answering() {
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix("failover");
    let sidecar = TestSidecar::start_on_cluster(cluster, &prefix, &["--cache-ttl", "600"]).await;
    let creator = TestSidecar::start_on_cluster(cluster, &prefix, &[]).await;
    // No cache: every verification it makes is a miss.
    let misser = TestSidecar::start_on_cluster(cluster, &prefix, &["--cache-ttl", "0"]).await;
    sidecar
        .wait_for_subscription(true, Duration::from_secs(10))
        .await;

    // Sessions on every shard: some cached at the sidecar, some never seen by it.
    let mut cached: Vec<(String, String)> = Vec::new();
    let mut unseen: Vec<(String, String)> = Vec::new();
    for i in 0..30 {
        let session = creator
            .create_session(&format!("u{i}"), json!({"i": i}))
            .await;
        if i % 2 == 0 {
            assert_eq!(sidecar.verify(&session.1).await.status(), 200);
            cached.push(session);
        } else {
            unseen.push(session);
        }
    }
    let master_of = |sid: &str| {
        cluster.master_for_slot(RedisCluster::key_slot(&format!("{prefix}:{{{sid}}}:s")))
    };
    let mut by_master: HashMap<u16, usize> = HashMap::new();
    for (sid, _) in &cached {
        *by_master.entry(master_of(sid)).or_default() += 1;
    }
    let victim = *by_master
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(port, _)| port)
        .unwrap();
    let on_victim: Vec<&(String, String)> = unseen
        .iter()
        .filter(|(sid, _)| master_of(sid) == victim)
        .collect();
    assert!(
        !on_victim.is_empty(),
        "some uncached session lives on the victim"
    );
    // A session on a surviving shard, to revoke while the victim is down.
    let revoked = cached
        .iter()
        .find(|(sid, _)| master_of(sid) != victim)
        .cloned()
        .unwrap();

    cluster.kill_node(victim);
    let killed_at = Instant::now();

    // Cached decisions keep answering while the shard is down.
    for (_, token) in &cached {
        let (status, _) = sidecar.verify_status(token).await;
        assert_eq!(status, 200, "cached decision answered during the outage");
    }
    // Revoke a session on a live shard while the victim is down: rejected, and stays so.
    assert_eq!(creator.delete_session(&revoked.0).await, 204);
    sidecar
        .wait_for_status(&revoked.1, 401, Duration::from_secs(10))
        .await;

    // Misses for the dead shard are answered from its replica (SPEC §8: within a second of the
    // kill, never 503 after that), before and after the promotion; a revoked session is never
    // granted. A per-100 ms table of what misses got is printed.
    let mut table: Vec<(u128, Vec<u16>)> = Vec::new();
    let mut late_unavailable = Vec::new();
    let watch_until = Instant::now() + Duration::from_secs(3);
    let mut probes = on_victim.iter().cycle();
    while Instant::now() < watch_until {
        let (_, probe) = probes.next().expect("cycle");
        let (status, _) = misser.verify_status(probe).await;
        let since = killed_at.elapsed();
        let bucket = since.as_millis() / 100;
        match table.last_mut() {
            Some((b, statuses)) if *b == bucket => statuses.push(status),
            _ => table.push((bucket, vec![status])),
        }
        assert_ne!(
            status, 401,
            "a live session on a dead shard is not session_inactive"
        );
        if status == 503 && since > Duration::from_secs(1) {
            late_unavailable.push(since);
        }
        assert_eq!(
            misser.verify_status(&revoked.1).await.0,
            401,
            "revoked stays revoked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (bucket, statuses) in &table {
        println!("{:>5} ms after the kill: {statuses:?}", bucket * 100);
    }
    assert!(
        late_unavailable.is_empty(),
        "misses answered 503 more than 1 s after the kill: {late_unavailable:?}"
    );
    cluster.wait_for_failover(victim, Duration::from_secs(30));
    for (_, token) in &on_victim {
        assert_eq!(sidecar.verify(token).await.status(), 200);
    }
    for (sid, token) in &cached {
        let expected = if *sid == revoked.0 { 401 } else { 200 };
        assert_eq!(sidecar.verify(token).await.status(), expected);
    }
    // The session API works again on the promoted replica.
    let (_, fresh) = creator.create_session("after", json!({})).await;
    assert_eq!(sidecar.verify(&fresh).await.status(), 200);
}

//! Killing a Redis master under load (SPEC §4, §8): cached decisions go on answering, misses
//! recover by themselves once a replica is promoted, and a revoked session is never granted.
//! This binary has the cluster to itself, since it kills a node.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use support::cluster::RedisCluster;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn killing_a_master_keeps_hits_answering_and_misses_recover() {
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix("failover");
    let sidecar = TestSidecar::start_on_cluster(cluster, &prefix, &["--cache-ttl", "600"]).await;
    let creator = TestSidecar::start_on_cluster(cluster, &prefix, &[]).await;
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

    // Misses for the dead shard fail closed (503, never 200) until a replica is promoted,
    // then recover without any intervention.
    let (_, probe) = on_victim[0];
    let mut saw = Vec::new();
    loop {
        let (status, _) = sidecar.verify_status(probe).await;
        saw.push(status);
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "a miss on a dead shard is a 503, not a 401");
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "misses did not recover after the failover: {saw:?}"
        );
        assert_eq!(
            sidecar.verify_status(&revoked.1).await.0,
            401,
            "revoked stays revoked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

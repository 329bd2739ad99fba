//! An answered revocation is held by a replica (SPEC §4): the sidecar waits (`WAIT 1`,
//! bounded) until a replica of the shard's primary has the write, says so in `X-Replication`,
//! and counts it. Against a real 3+3 cluster of this binary's own, since it stops and kills
//! nodes.

mod support;

use std::time::Duration;

use serde_json::json;
use support::cluster::RedisCluster;
use support::*;

/// The replica of the primary that owns `key`'s slot.
fn replica_for(cluster: &RedisCluster, key: &str) -> u16 {
    let master = cluster.master_for_slot(RedisCluster::key_slot(key));
    let nodes = cluster.nodes();
    let master_id = nodes
        .iter()
        .find(|n| n.port == master)
        .map(|n| n.id.clone())
        .expect("the master is in the view");
    nodes
        .iter()
        .find(|n| n.master_id.as_deref() == Some(master_id.as_str()) && !n.is_failed())
        .map(|n| n.port)
        .expect("the master has a replica")
}

/// Whether the replica on `port` holds `key` (read on the replica itself, `READONLY`).
fn replica_has(port: u16, key: &str) -> bool {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
    let mut conn = client.get_connection().expect("connect to the replica");
    let _: () = redis::cmd("READONLY").query(&mut conn).expect("READONLY");
    let exists: i64 = redis::cmd("EXISTS")
        .arg(key)
        .query(&mut conn)
        .expect("EXISTS");
    exists == 1
}

/// The process id of the node on `port`.
fn pid_of(cluster: &RedisCluster, port: u16) -> String {
    let info = cluster.redis_cli(port, &["INFO", "server"]);
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .map(|pid| pid.trim().to_owned())
        .expect("process_id in INFO server")
}

fn signal(pid: &str, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, pid])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

async fn revoke(sidecar: &TestSidecar, jti: &str) -> (u16, Option<String>) {
    let response = sidecar
        .session_api(reqwest::Method::POST, "/v1/revoke")
        .json(&json!({"jti": jti, "exp": now() + 600}))
        .send()
        .await
        .expect("revoke");
    let replication = response
        .headers()
        .get("x-replication")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (response.status().as_u16(), replication)
}

#[tokio::test(flavor = "multi_thread")]
async fn answered_revocations_are_held_by_a_replica_and_survive_a_failover() {
    let cluster = RedisCluster::shared();
    cluster.wait_for_replication(Duration::from_secs(30));
    let prefix = unique_prefix("replication");
    let a = TestSidecar::start_on_cluster(cluster, &prefix, &[]).await;

    // Healthy: confirmed, and the replica has the entry when the answer arrives.
    let jti = format!("{prefix}-held");
    let key = format!("{prefix}:{{{jti}}}:deny");
    assert_eq!(revoke(&a, &jti).await, (204, Some("confirmed".into())));
    assert!(replica_has(replica_for(cluster, &key), &key));

    // A session deletion and a log-out-everywhere say the same.
    let (sid, _) = a.create_session("rosa", json!({})).await;
    let deleted = a
        .session_api(reqwest::Method::DELETE, &format!("/v1/sessions/{sid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(deleted.headers()["x-replication"], "confirmed");
    a.create_session("rosa", json!({})).await;
    let logout = a
        .session_api(reqwest::Method::DELETE, "/v1/users/rosa/sessions")
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 200);
    assert_eq!(logout.headers()["x-replication"], "confirmed");

    // The replica does not answer (stopped): the revocation stands on the primary, is still
    // answered (the sidecar does not fail closed on a write it made), and says it is
    // unconfirmed, within the wait.
    let jti = format!("{prefix}-lagging");
    let key = format!("{prefix}:{{{jti}}}:deny");
    let replica = pid_of(cluster, replica_for(cluster, &key));
    signal(&replica, "-STOP");
    let answered = revoke(&a, &jti).await;
    signal(&replica, "-CONT");
    assert_eq!(answered, (204, Some("unconfirmed".into())));
    let token = hs256(&json!({"sub": "sam", "exp": now() + 600, "jti": jti}));
    assert_eq!(a.verify_status(&token).await, (401, Some("revoked".into())));
    let metrics = a.metrics().await;
    assert!(
        metric_value(
            &metrics,
            r#"session_sidecar_revocation_replication_total{outcome="unconfirmed"}"#
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        metric_value(
            &metrics,
            r#"session_sidecar_revocation_replication_total{outcome="confirmed"}"#
        ) >= 3.0
    );

    // A confirmed revocation survives its primary's failover: the primary dies right after the
    // answer, the replica takes over, and a sidecar started after that still refuses the token.
    let jti = format!("{prefix}-survives");
    let key = format!("{prefix}:{{{jti}}}:deny");
    let token = hs256(&json!({"sub": "sue", "exp": now() + 600, "jti": jti}));
    assert_eq!(revoke(&a, &jti).await, (204, Some("confirmed".into())));
    let primary = cluster.master_for_slot(RedisCluster::key_slot(&key));
    cluster.kill_node(primary);
    cluster.wait_for_failover(primary, Duration::from_secs(60));
    let c = TestSidecar::start_on_cluster(cluster, &prefix, &[]).await;
    assert_eq!(c.verify_status(&token).await, (401, Some("revoked".into())));
}

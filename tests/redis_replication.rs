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

/// Every kind of revoking write, answered, then its shard's primary killed at once, while
/// replication is slowed (every master is reached, by clients and by its replica, through a
/// fault proxy that holds each chunk 300 ms and loses what it holds when the master dies): a
/// write nobody waited for is lost — the test shows it with a plain `SET` — but every answered
/// revocation is held by the promoted replica and refused by every sidecar, one started after
/// the failovers included.
#[tokio::test(flavor = "multi_thread")]
async fn every_answered_revocation_survives_its_primary_killed_right_after_the_answer() {
    use std::net::SocketAddr;
    use support::fault_proxy::{Fault, FaultProxy};

    let own = RedisCluster::start();
    let cluster = &own;
    cluster.wait_for_replication(Duration::from_secs(30));
    let masters = cluster.master_ports();
    let mut proxies = Vec::new();
    for &master in &masters {
        let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], master))).await;
        let port = proxy.addr.port().to_string();
        cluster.redis_cli(master, &["CONFIG", "SET", "cluster-announce-port", &port]);
        proxies.push(proxy);
    }
    // Every node names every master by its proxy, and each replica replicates through it.
    let started = std::time::Instant::now();
    while !cluster.live_ports().into_iter().all(|port| {
        let slots = cluster.redis_cli(port, &["CLUSTER", "SLOTS"]);
        proxies
            .iter()
            .all(|p| slots.lines().any(|l| l.trim() == p.addr.port().to_string()))
            && !masters
                .iter()
                .any(|m| slots.lines().any(|l| l.trim() == m.to_string()))
    }) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "announce never settled"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.wait_for_replication(Duration::from_secs(30));
    for proxy in &proxies {
        proxy.set(Fault::Latency(Duration::from_millis(300)));
    }
    // The real port of the master a key's slot lives on (the view names it by its proxy).
    let master_of = |key: &str| {
        let announced = cluster.master_for_slot(RedisCluster::key_slot(key));
        proxies
            .iter()
            .zip(&masters)
            .find(|(p, _)| p.addr.port() == announced)
            .map(|(_, m)| *m)
    };

    let prefix = unique_prefix("kill-after");
    let seeds: Vec<String> = cluster
        .live_ports()
        .into_iter()
        .filter(|p| !masters.contains(p))
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    let seeds = seeds.join(",");
    let flags = [
        "--redis-nodes",
        seeds.as_str(),
        "--redis-key-prefix",
        prefix.as_str(),
        "--redis-command-timeout-ms",
        "2000",
        "--redis-replication-wait-ms",
        "1000",
    ];
    let a = TestSidecar::start(&flags).await;
    let b = TestSidecar::start(&flags).await;

    // One revocation of each kind on each master: a session deleted on the first, a subject
    // logged out on the second, a token revoked by jti and another by itself on the third.
    let session_on = |master: u16, sub: &'static str| {
        let (a, prefix) = (&a, &prefix);
        async move {
            loop {
                let (sid, token) = a.create_session(sub, json!({})).await;
                if master_of(&format!("{prefix}:{{{sid}}}:s")) == Some(master) {
                    return (sid, token);
                }
                a.session_api(reqwest::Method::DELETE, &format!("/v1/sessions/{sid}"))
                    .send()
                    .await
                    .unwrap();
            }
        }
    };
    let jti_on = |master: u16, tag: &str| {
        (0..)
            .map(|i| format!("{prefix}-{tag}-{i}"))
            .find(|jti| master_of(&format!("{prefix}:{{{jti}}}:deny")) == Some(master))
            .unwrap()
    };
    let (deleted_sid, deleted) = session_on(masters[0], "del").await;
    let (_, logged_out) = session_on(masters[1], "out").await;
    let by_jti = jti_on(masters[2], "jti");
    let by_token = jti_on(masters[2], "tok");
    let jti_token = hs256(&json!({"sub": "j", "exp": now() + 600, "jti": by_jti}));
    let token_token = hs256(&json!({"sub": "t", "exp": now() + 600, "jti": by_token}));
    for token in [&deleted, &logged_out, &jti_token, &token_token] {
        assert_eq!(b.verify_status(token).await.0, 200);
    }
    cluster.wait_for_replication(Duration::from_secs(30));

    // What these conditions do to a write nobody waited for: a plain SET on the first
    // primary, answered, just before it is killed (printed at the end).
    let canary = (0..)
        .map(|i| format!("{prefix}:{{canary-{i}}}"))
        .find(|key| master_of(key) == Some(masters[0]))
        .unwrap();

    let answer = |response: reqwest::Response| {
        let replication = response
            .headers()
            .get("x-replication")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (response.status().as_u16(), replication)
    };
    // 1. Session delete, then its primary killed at once.
    let response = a
        .session_api(
            reqwest::Method::DELETE,
            &format!("/v1/sessions/{deleted_sid}"),
        )
        .send()
        .await
        .unwrap();
    let answered = answer(response);
    cluster.redis_cli(masters[0], &["SET", &canary, "1"]);
    cluster.kill_node(masters[0]);
    assert_eq!(answered, (204, Some("confirmed".into())), "session delete");
    cluster.wait_for_failover(masters[0], Duration::from_secs(60));
    // 2. Log out everywhere (each failover needs a majority of live masters: one at a time).
    let response = a
        .session_api(reqwest::Method::DELETE, "/v1/users/out/sessions")
        .send()
        .await
        .unwrap();
    let answered = answer(response);
    cluster.kill_node(masters[1]);
    assert_eq!(answered.0, 200, "log out everywhere");
    assert_eq!(
        answered.1.as_deref(),
        Some("confirmed"),
        "log out everywhere"
    );
    cluster.wait_for_failover(masters[1], Duration::from_secs(60));
    // 3. Revoke by jti and by token.
    let by_jti_answer = answer(
        a.session_api(reqwest::Method::POST, "/v1/revoke")
            .json(&json!({"jti": by_jti, "exp": now() + 600}))
            .send()
            .await
            .unwrap(),
    );
    let by_token_answer = answer(
        a.session_api(reqwest::Method::POST, "/v1/revoke")
            .json(&json!({"token": token_token}))
            .send()
            .await
            .unwrap(),
    );
    cluster.kill_node(masters[2]);
    assert_eq!(
        by_jti_answer,
        (204, Some("confirmed".into())),
        "revoke by jti"
    );
    assert_eq!(
        by_token_answer,
        (204, Some("confirmed".into())),
        "revoke by token"
    );
    cluster.wait_for_failover(masters[2], Duration::from_secs(60));

    // Every sidecar refuses every revoked token, one started now too (cold cache).
    let c = TestSidecar::start(&flags).await;
    for (name, token) in [
        ("session delete", &deleted),
        ("log out everywhere", &logged_out),
        ("revoke by jti", &jti_token),
        ("revoke by token", &token_token),
    ] {
        for (sidecar, label) in [(&a, "A"), (&b, "B"), (&c, "C")] {
            let (status, reason) = sidecar.verify_status(token).await;
            assert_eq!(status, 401, "{name} at {label}: {reason:?}");
        }
    }
    // The canary, answered by its primary and not waited for, did not survive.
    let after = cluster.master_for_slot(RedisCluster::key_slot(&canary));
    let canary_now = cluster.redis_cli(after, &["EXISTS", &canary]);
    assert_eq!(
        canary_now.trim(),
        "0",
        "a write answered just before its primary died survived: these conditions would not lose a revocation"
    );
}

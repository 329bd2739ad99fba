//! Redis commands per verification, read from the servers' own `INFO commandstats`: a warm
//! cache makes almost none, and concurrent misses for one token make one. The tests in this
//! file share a cluster of their own and run one at a time, so the counts are theirs alone.

mod support;

use std::collections::HashMap;

use serde_json::json;
use support::cluster::RedisCluster;
use support::*;
use tokio::sync::Mutex;

/// Serializes the tests of this binary: command counts are cluster-wide.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

#[tokio::test(flavor = "multi_thread")]
async fn a_warm_cache_makes_almost_no_redis_commands() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix("warm");
    let sidecar = TestSidecar::start_on_cluster(cluster, &prefix, &[]).await;
    let mut tokens = Vec::new();
    for i in 0..10 {
        tokens.push(
            sidecar
                .create_session(&format!("u{i}"), json!({"i": i}))
                .await
                .1,
        );
    }
    cluster.reset_commandstats();
    let verifications = 1000;
    for round in 0..verifications / tokens.len() {
        for token in &tokens {
            assert_eq!(sidecar.verify(token).await.status(), 200, "round {round}");
        }
    }
    let commands = cluster::data_commands(&cluster.commandstats());
    // On the first, cold verification of each token: one HMGET of its session, which also
    // reads its revocation mark (the token id names the session); nothing after.
    assert!(
        commands <= tokens.len() as u64,
        "{commands} Redis commands for {verifications} verifications: {:?}",
        cluster.commandstats()
    );
    let per_verification = commands as f64 / verifications as f64;
    assert!(
        per_verification <= 0.02,
        "{per_verification} commands per verification"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_misses_for_one_token_make_one_lookup() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix("coalesce");
    let sidecar = TestSidecar::start_on_cluster(cluster, &prefix, &[]).await;
    let (_, token) = sidecar.create_session("zed", json!({})).await;
    cluster.reset_commandstats();
    let requests = (0..64).map(|_| sidecar.verify(&token));
    for response in futures_util::future::join_all(requests).await {
        assert_eq!(response.status(), 200);
    }
    let stats = cluster.commandstats();
    // One lookup, not 64: one HMGET of the session, which reads the revocation mark of a
    // token id that names its session too (SPEC §5: one slot, one round trip).
    assert_eq!(stats.get("hmget").copied().unwrap_or(0), 1, "{stats:?}");
    assert_eq!(stats.get("exists").copied().unwrap_or(0), 0, "{stats:?}");
    assert_eq!(cluster::data_commands(&stats), 1, "{stats:?}");
}

/// A session-bound token whose id does not name its session (an identity provider's or an
/// app's id, or one naming another session) is checked where every revocation of an id is
/// written: its session and its deny key, two commands.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_whose_id_names_no_session_of_its_own_also_reads_the_deny_key() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix("foreign-jti");
    let sidecar = TestSidecar::start_on_cluster(cluster, &prefix, &[]).await;
    let (sid, _) = sidecar.create_session("yan", json!({})).await;
    let (other, _) = sidecar.create_session("yan", json!({})).await;
    let exp = now() + 600;
    let tokens = [
        hs256(&json!({"sub": "yan", "sid": sid, "jti": "plain-id", "exp": exp})),
        hs256(&json!({"sub": "yan", "sid": sid, "jti": format!("{other}.x"), "exp": exp})),
    ];
    cluster.reset_commandstats();
    for token in &tokens {
        assert_eq!(sidecar.verify(token).await.status(), 200);
    }
    let stats = cluster.commandstats();
    assert_eq!(stats.get("hmget").copied().unwrap_or(0), 2, "{stats:?}");
    assert_eq!(stats.get("exists").copied().unwrap_or(0), 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stateless_tokens_without_jti_never_touch_redis() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix("stateless");
    let sidecar = TestSidecar::start_on_cluster(cluster, &prefix, &[]).await;
    cluster.reset_commandstats();
    for i in 0..20 {
        assert_eq!(
            sidecar
                .verify(&hs256(&claims(&format!("s{i}"))))
                .await
                .status(),
            200
        );
    }
    let stats = cluster.commandstats();
    assert_eq!(cluster::data_commands(&stats), 0, "{stats:?}");
    // With a jti: one EXISTS per token on the miss.
    let with_jti = hs256(&json!({"sub": "s", "exp": now() + 60, "jti": format!("{prefix}-1")}));
    for _ in 0..5 {
        assert_eq!(sidecar.verify(&with_jti).await.status(), 200);
    }
    let stats = cluster.commandstats();
    assert_eq!(stats.get("exists").copied().unwrap_or(0), 1, "{stats:?}");
}

/// Waits until every node's CLUSTER SLOTS lists every node (masters and their replicas). The
/// cluster client learns the topology once, when it connects (and again only on MOVED/ASK or
/// a connection error): a client that connected before the replicas showed up would never read
/// from them.
fn wait_for_replicas_in_topology(cluster: &RedisCluster) {
    let started = std::time::Instant::now();
    let ports = cluster.live_ports();
    while !ports.iter().all(|port| {
        let slots = cluster.redis_cli(*port, &["CLUSTER", "SLOTS"]);
        ports
            .iter()
            .all(|p| slots.lines().any(|line| line.trim() == p.to_string()))
    }) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "replicas never listed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `calls` of one command on one node.
fn calls_on(cluster: &RedisCluster, port: u16, command: &str) -> u64 {
    let info = cluster.redis_cli(port, &["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.trim().strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn read_from_replicas_sends_session_reads_to_replicas() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = RedisCluster::shared();
    wait_for_replicas_in_topology(cluster);
    let prefix = unique_prefix("replicas");
    let writer = TestSidecar::start_on_cluster(cluster, &prefix, &[]).await;
    let reader = TestSidecar::start_on_cluster(
        cluster,
        &prefix,
        &["--redis-read-from-replicas", "--cache-ttl", "0"],
    )
    .await;
    let mut tokens = Vec::new();
    for i in 0..12 {
        tokens.push(writer.create_session(&format!("r{i}"), json!({})).await.1);
    }
    cluster.wait_for_replication(std::time::Duration::from_secs(10));
    cluster.reset_commandstats();
    for token in &tokens {
        assert_eq!(reader.verify(token).await.status(), 200);
    }
    let nodes = cluster.nodes();
    let on_replicas: u64 = nodes
        .iter()
        .filter(|n| !n.is_master)
        .map(|n| calls_on(cluster, n.port, "hmget"))
        .sum();
    let on_masters: u64 = nodes
        .iter()
        .filter(|n| n.is_master)
        .map(|n| calls_on(cluster, n.port, "hmget"))
        .sum();
    assert_eq!(
        on_replicas,
        tokens.len() as u64,
        "every lookup went to a replica"
    );
    assert_eq!(on_masters, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_the_replica_has_not_seen_yet_is_confirmed_on_the_primary() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = RedisCluster::shared();
    wait_for_replicas_in_topology(cluster);
    let prefix = unique_prefix("lag");
    let reader = TestSidecar::start_on_cluster(
        cluster,
        &prefix,
        &["--redis-read-from-replicas", "--cache-ttl", "0"],
    )
    .await;
    // A session written on its primary without replication: exactly what a replica that lags
    // behind looks like, without depending on timing.
    let sid = "lagging-session-0001";
    let key = format!("{prefix}:{{{sid}}}:s");
    let exp = (now() + 600).to_string();
    let primary = cluster.master_for_slot(RedisCluster::key_slot(&key));
    let script = "redis.set_repl(redis.REPL_NONE) \
                  redis.call('HSET', KEYS[1], 'sub', ARGV[1], 'data', '{}', 'exp', ARGV[2], 'v', '0') \
                  return 1";
    cluster.redis_cli(primary, &["EVAL", script, "1", &key, "lagger", &exp]);
    let token = hs256(&json!({"sub": "lagger", "sid": sid, "exp": now() + 600}));
    cluster.reset_commandstats();
    assert_eq!(reader.verify(&token).await.status(), 200);
    // The replica was asked first, then the primary.
    let nodes = cluster.nodes();
    let replica_reads: u64 = nodes
        .iter()
        .filter(|n| !n.is_master)
        .map(|n| calls_on(cluster, n.port, "hmget"))
        .sum();
    assert_eq!(replica_reads, 1);
    assert_eq!(calls_on(cluster, primary, "hmget"), 1);
    // A session that exists nowhere is still inactive.
    let gone =
        hs256(&json!({"sub": "lagger", "sid": "no-such-session-anywhere", "exp": now() + 600}));
    assert_eq!(
        reader.verify_status(&gone).await,
        (401, Some("session_inactive".into()))
    );
}

/// SPEC §4: a healthy, idle invalidation feed stays connected; its keep-alive is never a loss.
/// A feed that counted its own ping replies as losses would distrust the cache every second,
/// and every warm token would go back to Redis.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_feed_stays_subscribed_and_the_warm_cache_stays_warm() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix("idle");
    let sidecar = TestSidecar::start_on_cluster(cluster, &prefix, &["--cache-ttl", "600"]).await;
    sidecar
        .wait_for_subscription(true, std::time::Duration::from_secs(10))
        .await;
    let (_, token) = sidecar.create_session("ida", json!({})).await;
    assert_eq!(sidecar.verify(&token).await.status(), 200);
    cluster.reset_commandstats();
    // Several keep-alive intervals of an idle feed (it pings after 1 s of silence).
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let metrics = sidecar.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|line| line == "session_sidecar_invalidation_subscription_losses_total 0"),
        "an idle feed was counted as lost (or the counter is missing)"
    );
    assert_eq!(
        sidecar
            .metric("session_sidecar_invalidation_subscription_connected")
            .await,
        1.0
    );
    assert_eq!(sidecar.verify(&token).await.status(), 200);
    let stats = cluster.commandstats();
    assert_eq!(
        cluster::data_commands(&stats),
        0,
        "the warm token went back to Redis: {stats:?}"
    );
}

/// SPEC §7: no unauthenticated input makes the sidecar call Redis more than a bounded number of
/// times per second. A per-session-key token must be looked up before its signature can be
/// checked, so made-up `kid`s draw from `--session-key-lookups-per-second`; a `kid` seen absent
/// is not asked again; a `kid` seen naming a live session is never refused for the budget.
/// (No cache, so the last check goes through the gate and not through a cached grant.)
#[tokio::test(flavor = "multi_thread")]
async fn made_up_session_kids_cost_a_bounded_number_of_lookups() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix("kids");
    let budget = 5;
    let sidecar = TestSidecar::start_on_cluster(
        cluster,
        &prefix,
        &[
            "--cache-ttl",
            "0",
            "--session-keys",
            "--session-key-lookups-per-second",
            &budget.to_string(),
        ],
    )
    .await;
    let (sid, secret) = sidecar.create_keyed_session("kim").await;
    let genuine = session_keyed_token(&sid, &secret, "kim", None);
    assert_eq!(sidecar.verify(&genuine).await.status(), 200);
    cluster.reset_commandstats();
    let started = std::time::Instant::now();
    let attempts = 300;
    let mut refusals = HashMap::new();
    for i in 0..attempts {
        let kid = format!("madeup{i:04}{}", rand::random::<u64>());
        let forged = session_keyed_token(&kid, b"any secret at all, 32 bytes long", "kim", None);
        let (status, reason) = sidecar.verify_status(&forged).await;
        assert_eq!(status, 401, "{kid}");
        *refusals.entry(reason.unwrap_or_default()).or_insert(0u32) += 1;
        // The same made-up kid again: remembered as absent (or still over budget).
        let (status, _) = sidecar.verify_status(&forged).await;
        assert_eq!(status, 401);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let lookups = cluster.commandstats().get("hmget").copied().unwrap_or(0) as f64;
    // The burst (one second's budget) plus the budget for the time it took.
    let bound = f64::from(budget) * (1.0 + elapsed.ceil());
    assert!(
        lookups <= bound,
        "{lookups} lookups for {attempts} made-up kids in {elapsed:.1} s (bound {bound}): {refusals:?}"
    );
    assert!(refusals.contains_key("unknown_key"), "{refusals:?}");
    // The budget is spent, yet the live session's token (seen before) is answered.
    assert_eq!(sidecar.verify(&genuine).await.status(), 200);
}

/// A replica that joins after the sidecar connected is read from: the sidecar checks the slot
/// map every 5 s and learns it again when it changed (redis-rs alone learns it only on a
/// redirect or a connection error, so it would never use the new replica).
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_that_joins_later_is_read_from() {
    // A cluster of its own: a seventh node would change the shared one for the other tests.
    let own = RedisCluster::start();
    let cluster = &own;
    wait_for_replicas_in_topology(cluster);
    let prefix = unique_prefix("joined");
    let writer = TestSidecar::start_on_cluster(cluster, &prefix, &[]).await;
    let reader = TestSidecar::start_on_cluster(
        cluster,
        &prefix,
        &["--redis-read-from-replicas", "--cache-ttl", "0"],
    )
    .await;
    let master = cluster.master_ports()[0];
    let joined = cluster.add_replica(master);

    let changes = "session_sidecar_redis_topology_changes_total";
    let started = std::time::Instant::now();
    while reader.metric(changes).await < 1.0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the sidecar never saw the new replica"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // Sessions on that master's slots; read 40 times through two replicas chosen at random.
    let mut tokens = Vec::new();
    let mut i = 0;
    while tokens.len() < 10 {
        let (sid, token) = writer.create_session(&format!("j{i}"), json!({})).await;
        i += 1;
        let key = format!("{prefix}:{{{sid}}}:s");
        if cluster.master_for_slot(RedisCluster::key_slot(&key)) == master {
            tokens.push(token);
        }
    }
    cluster.wait_for_replication(std::time::Duration::from_secs(10));
    let before = calls_on(cluster, joined.port(), "hmget");
    for _ in 0..4 {
        for token in &tokens {
            assert_eq!(reader.verify(token).await.status(), 200);
        }
    }
    let on_joined = calls_on(cluster, joined.port(), "hmget") - before;
    assert!(on_joined > 0, "no lookup reached the replica that joined");
}

//! The Redis Cluster store against a real 3-master + 3-replica cluster: slot-aware placement,
//! the session API, and changes made at one sidecar reaching another sidecar's warm cache.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use support::cluster::RedisCluster;
use support::*;

/// Verifications of some tokens, in a loop, while the cluster changes under them: how many
/// answered `200`, and what every other answer was.
struct VerifyLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(u32, Vec<String>)>,
}

impl VerifyLoad {
    fn start(sidecar: &TestSidecar, tokens: Vec<String>) -> VerifyLoad {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (http, url, running) = (sidecar.http.clone(), sidecar.url("/verify"), stop.clone());
        let task = tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !running.load(std::sync::atomic::Ordering::Relaxed) {
                for token in &tokens {
                    let response = http.get(&url).bearer_auth(token).send().await;
                    match response.map(|r| r.status().as_u16()) {
                        Ok(200) => ok += 1,
                        other => failed.push(format!("{other:?}")),
                    }
                }
            }
            (ok, failed)
        });
        VerifyLoad { stop, task }
    }

    async fn stop(self) -> (u32, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("the load task")
    }
}

/// A hang guard for propagation: far above the 100 ms target, which the benchmark measures.
const PROPAGATION_BOUND: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread")]
async fn sessions_are_spread_over_all_three_masters() {
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix("spread");
    let sidecar = TestSidecar::start_on_cluster(cluster, &prefix, &[]).await;
    let mut sids = Vec::new();
    for i in 0..30 {
        let (sid, token) = sidecar
            .create_session(&format!("user{i}"), json!({"i": i}))
            .await;
        assert_eq!(sidecar.verify(&token).await.status(), 200);
        sids.push(sid);
    }
    let mut holders = HashSet::new();
    for sid in &sids {
        let key = format!("{prefix}:{{{sid}}}:s");
        let master = cluster.master_for_slot(RedisCluster::key_slot(&key));
        let exists = cluster.redis_cli(master, &["EXISTS", &key]);
        assert_eq!(
            exists.trim(),
            "1",
            "{key} lives on the master that owns its slot"
        );
        let ttl: i64 = cluster
            .redis_cli(master, &["TTL", &key])
            .trim()
            .parse()
            .unwrap();
        assert!(
            ttl > 0 && ttl <= 600,
            "session key expires with the session: {ttl}"
        );
        holders.insert(master);
    }
    assert_eq!(holders.len(), 3, "sessions land on all three masters");
}

#[tokio::test(flavor = "multi_thread")]
async fn session_created_on_one_sidecar_verifies_on_another_and_deletion_reaches_it() {
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix("delete");
    let a = TestSidecar::start_on_cluster(cluster, &prefix, &["--cache-ttl", "600"]).await;
    let b = TestSidecar::start_on_cluster(cluster, &prefix, &["--cache-ttl", "600"]).await;
    b.wait_for_subscription(true, Duration::from_secs(10)).await;
    let (sid, token) = a.create_session("alice", json!({"plan": "pro"})).await;
    let response = b.verify(&token).await;
    assert_eq!(response.status(), 200);
    let session = decode_b64_json(response.headers()["x-auth-session"].to_str().unwrap());
    assert_eq!(session, json!({"plan": "pro"}));
    assert_eq!(b.verify(&token).await.status(), 200);
    assert!(
        b.metric("session_sidecar_cache_hits_total").await >= 1.0,
        "B's cache is warm"
    );

    assert_eq!(a.delete_session(&sid).await, 204);
    b.wait_for_status(&token, 401, PROPAGATION_BOUND).await;
    assert_eq!(
        b.verify_status(&token).await,
        (401, Some("session_inactive".into()))
    );
    assert!(
        b.metric(r#"session_sidecar_invalidations_received_total{kind="session_deleted"}"#)
            .await
            >= 1.0
    );
    // The message carried its publication time: B recorded the propagation lag.
    assert!(
        b.metric("session_sidecar_invalidation_lag_seconds_count")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_everywhere_reaches_another_sidecar() {
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix("logout");
    let a = TestSidecar::start_on_cluster(cluster, &prefix, &["--cache-ttl", "600"]).await;
    let b = TestSidecar::start_on_cluster(cluster, &prefix, &["--cache-ttl", "600"]).await;
    b.wait_for_subscription(true, Duration::from_secs(10)).await;
    let mut tokens = Vec::new();
    for _ in 0..5 {
        let (_, token) = a.create_session("bob", json!({})).await;
        assert_eq!(b.verify(&token).await.status(), 200);
        tokens.push(token);
    }
    let (_, other) = a.create_session("carol", json!({})).await;
    assert_eq!(b.verify(&other).await.status(), 200);
    assert_eq!(
        a.logout_everywhere("bob").await,
        (200, json!({"revoked": 5}))
    );
    for token in &tokens {
        b.wait_for_status(token, 401, PROPAGATION_BOUND).await;
    }
    assert_eq!(
        b.verify(&other).await.status(),
        200,
        "another subject is untouched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn jti_revocation_reaches_another_sidecar() {
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix("jti");
    let a = TestSidecar::start_on_cluster(cluster, &prefix, &["--cache-ttl", "600"]).await;
    let b = TestSidecar::start_on_cluster(cluster, &prefix, &["--cache-ttl", "600"]).await;
    b.wait_for_subscription(true, Duration::from_secs(10)).await;
    let exp = now() + 600;
    let stateless = hs256(&json!({"sub": "dave", "exp": exp, "jti": format!("{prefix}-j1")}));
    let (_, bound) = a.create_session("dave", json!({})).await;
    for token in [&stateless, &bound] {
        assert_eq!(b.verify(token).await.status(), 200);
        assert_eq!(b.verify(token).await.status(), 200);
    }
    let revoke = |body: Value| {
        a.session_api(reqwest::Method::POST, "/v1/revoke")
            .json(&body)
            .send()
    };
    assert_eq!(
        revoke(json!({"jti": format!("{prefix}-j1"), "exp": exp}))
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(revoke(json!({"token": bound})).await.unwrap().status(), 204);
    for token in [&stateless, &bound] {
        b.wait_for_status(token, 401, PROPAGATION_BOUND).await;
        assert_eq!(b.verify_status(token).await, (401, Some("revoked".into())));
    }
    // A third sidecar that never saw the tokens reads the deny-list from Redis.
    let c = TestSidecar::start_on_cluster(cluster, &prefix, &[]).await;
    for token in [&stateless, &bound] {
        assert_eq!(c.verify_status(token).await, (401, Some("revoked".into())));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_patches_through_two_sidecars_lose_nothing() {
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix("patch");
    let a = TestSidecar::start_on_cluster(cluster, &prefix, &[]).await;
    let b = TestSidecar::start_on_cluster(cluster, &prefix, &[]).await;
    let (sid, token) = a.create_session("erin", json!({"start": true})).await;
    let patches = (0..50).map(|i| {
        let sidecar = if i % 2 == 0 { &a } else { &b };
        sidecar.patch_session(&sid, json!({ format!("k{i}"): i }))
    });
    for (status, _) in futures_util::future::join_all(patches).await {
        assert_eq!(status, 200);
    }
    let (_, got) = b.get_session(&sid).await;
    assert_eq!(got["data"]["start"], true);
    for i in 0..50 {
        assert_eq!(got["data"][format!("k{i}")], i, "k{i} survived");
    }
    // And both sidecars' verifications carry the final data.
    for sidecar in [&a, &b] {
        let response = sidecar.verify(&token).await;
        let session = decode_b64_json(response.headers()["x-auth-session"].to_str().unwrap());
        assert_eq!(session, got["data"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missed_revocation_is_not_trusted_past_cache_ttl() {
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix("ttl");
    let sidecar = TestSidecar::start_on_cluster(cluster, &prefix, &["--cache-ttl", "2"]).await;
    let (sid, token) = sidecar.create_session("frank", json!({})).await;
    assert_eq!(sidecar.verify(&token).await.status(), 200);
    // Delete behind the sidecar's back: nothing is published.
    let key = format!("{prefix}:{{{sid}}}:s");
    let master = cluster.master_for_slot(RedisCluster::key_slot(&key));
    cluster.redis_cli(master, &["DEL", &key]);
    assert_eq!(sidecar.verify(&token).await.status(), 200, "still cached");
    let waited = sidecar
        .wait_for_status(&token, 401, Duration::from_secs(10))
        .await;
    assert!(
        waited <= Duration::from_secs(3),
        "trusted at most --cache-ttl: {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_the_subscription_makes_cached_sessions_recheck() {
    // A cluster of its own: cutting every pub/sub client would disturb the other tests.
    let own = RedisCluster::start();
    let cluster = &own;
    let prefix = unique_prefix("resub");
    let sidecar = TestSidecar::start_on_cluster(cluster, &prefix, &["--cache-ttl", "600"]).await;
    sidecar
        .wait_for_subscription(true, Duration::from_secs(10))
        .await;
    let (sid, token) = sidecar.create_session("gina", json!({})).await;
    let (_, survivor) = sidecar.create_session("gina2", json!({})).await;
    assert_eq!(sidecar.verify(&token).await.status(), 200);
    assert_eq!(sidecar.verify(&survivor).await.status(), 200);
    // A change the sidecar cannot hear about (no publication) ...
    let key = format!("{prefix}:{{{sid}}}:s");
    let master = cluster.master_for_slot(RedisCluster::key_slot(&key));
    cluster.redis_cli(master, &["DEL", &key]);
    assert_eq!(
        sidecar.verify(&token).await.status(),
        200,
        "cached, feed is up"
    );
    // ... then the feed drops: every node closes its pub/sub clients.
    for port in cluster.live_ports() {
        cluster.redis_cli(port, &["CLIENT", "KILL", "TYPE", "pubsub"]);
    }
    // The sidecar resubscribes by itself and re-checks what it had cached.
    sidecar
        .wait_for_status(&token, 401, Duration::from_secs(10))
        .await;
    assert_eq!(
        sidecar.verify_status(&token).await,
        (401, Some("session_inactive".into()))
    );
    assert_eq!(sidecar.verify(&survivor).await.status(), 200);
    sidecar
        .wait_for_subscription(true, Duration::from_secs(10))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn per_session_keys_work_on_the_cluster() {
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix("pskeys");
    let a = TestSidecar::start_on_cluster(cluster, &prefix, &["--session-keys"]).await;
    let b = TestSidecar::start_on_cluster(cluster, &prefix, &["--session-keys"]).await;
    let (sid, secret) = a.create_keyed_session("hank").await;
    let token = session_keyed_token(&sid, &secret, "hank", None);
    assert_eq!(b.verify(&token).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slot_migrating_under_load_fails_no_verification() {
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix("migrate");
    // No cache: every verification reads Redis, so redirects are really followed.
    let sidecar = TestSidecar::start_on_cluster(cluster, &prefix, &["--cache-ttl", "0"]).await;
    let (sid, token) = sidecar.create_session("ivy", json!({"x": 1})).await;
    let revocable = hs256(&json!({"sub": "ivy", "exp": now() + 600, "sid": sid, "jti": "m-1"}));
    let key = format!("{prefix}:{{{sid}}}:s");
    let slot = RedisCluster::key_slot(&key);
    let from = cluster.master_for_slot(slot);
    let to = *cluster
        .master_ports()
        .iter()
        .find(|p| **p != from)
        .expect("another master");

    let load = VerifyLoad::start(&sidecar, vec![token.clone(), revocable.clone()]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.begin_slot_migration(slot, to);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Keys move one by one: the source now answers ASK for them.
    cluster.migrate_keys_in_slot(slot, to, 1000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.finish_slot_migration(slot, to);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failed) = load.stop().await;
    assert!(
        failed.is_empty(),
        "{} failed verifications: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 20, "the load really ran: {ok}");
    assert_eq!(cluster.master_for_slot(slot), to);
    let exists = cluster.redis_cli(to, &["EXISTS", &key]);
    assert_eq!(exists.trim(), "1", "the session moved with its slot");
}

#[tokio::test(flavor = "multi_thread")]
async fn acl_credentials_are_used_for_commands_and_the_subscription() {
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix("acl");
    // ACL users are per node: create the user on every node.
    let password = format!("pw-{prefix}");
    let user = format!("u-{prefix}");
    for port in cluster.live_ports() {
        cluster.redis_cli(
            port,
            &[
                "ACL",
                "SETUSER",
                &user,
                "on",
                &format!(">{password}"),
                "~*",
                "&*",
                "+@all",
            ],
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("redis-password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let password_arg = password_file.display().to_string();
    let a = TestSidecar::start_on_cluster(
        cluster,
        &prefix,
        &[
            "--redis-username",
            &user,
            "--redis-password-file",
            &password_arg,
        ],
    )
    .await;
    a.wait_for_subscription(true, Duration::from_secs(10)).await;
    let (sid, token) = a.create_session("acl-user", json!({})).await;
    assert_eq!(a.verify(&token).await.status(), 200);
    // The commands really ran as that user.
    let clients: String = cluster
        .live_ports()
        .iter()
        .map(|port| cluster.redis_cli(*port, &["CLIENT", "LIST"]))
        .collect();
    assert!(
        clients.contains(&format!("user={user}")),
        "connections authenticate as {user}"
    );
    assert_eq!(a.delete_session(&sid).await, 204);

    // A wrong password: the sidecar refuses to start.
    std::fs::write(&password_file, "wrong").unwrap();
    let flags = redis_flags(cluster, &prefix);
    let mut argv: Vec<&str> = vec!["session-sidecar", "serve", "--jwt-secret-file"];
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let secret_arg = secret.display().to_string();
    argv.push(&secret_arg);
    argv.extend(flags.iter().map(String::as_str));
    argv.extend([
        "--redis-username",
        &user,
        "--redis-password-file",
        &password_arg,
    ]);
    argv.extend(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]);
    argv.extend(["--redis-connect-timeout-ms", "200"]);
    use clap::Parser;
    let cli = session_sidecar::config::Cli::try_parse_from(&argv).unwrap();
    let session_sidecar::config::Command::Serve(args) = cli.command else {
        panic!("serve")
    };
    let config = session_sidecar::config::Config::from_args(&args, None).unwrap();
    let started = std::time::Instant::now();
    let result = session_sidecar::Sidecar::bind(config).await;
    assert!(result.is_err(), "a wrong password is refused at start-up");
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// The subject index (log out everywhere) keeps only sessions that are alive: an id whose
/// session has ended is dropped when the next session of that subject is created, so a subject
/// who logs in every day does not grow an index without end.
#[tokio::test(flavor = "multi_thread")]
async fn the_subject_index_forgets_ended_sessions() {
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix("index");
    let sidecar = TestSidecar::start_on_cluster(cluster, &prefix, &[]).await;
    let create = |ttl: u64| {
        sidecar
            .session_api(reqwest::Method::POST, "/v1/sessions")
            .json(&json!({"sub": "ivo", "ttl": ttl}))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(create(1).await.unwrap().status(), 201);
    }
    let index = format!("{prefix}:{{u:ivo}}:sessions");
    let port = cluster.master_for_slot(RedisCluster::key_slot(&index));
    let members = || {
        cluster
            .redis_cli(port, &["ZCARD", &index])
            .trim()
            .to_owned()
    };
    assert_eq!(members(), "3");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(create(600).await.unwrap().status(), 201);
    assert_eq!(members(), "1", "ended sessions were kept in the index");
    assert_eq!(
        sidecar.logout_everywhere("ivo").await,
        (200, json!({"revoked": 1}))
    );
}

/// An `exp` far beyond any clock (2^62, 1e19) in a revocation is read as the end of the clock,
/// not handed to Redis as an `EXAT` it refuses (`503` before): the token is revoked.
#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_with_a_huge_exp_is_stored() {
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix("hugeexp");
    let sidecar = TestSidecar::start_on_cluster(cluster, &prefix, &[]).await;
    for (i, exp) in [
        json!(4_611_686_018_427_387_904u64),
        json!(1e19),
        json!(u64::MAX),
    ]
    .into_iter()
    .enumerate()
    {
        let jti = format!("{prefix}-huge-{i}");
        let token = hs256(&json!({"sub": "hal", "exp": now() + 600, "jti": jti}));
        assert_eq!(sidecar.verify(&token).await.status(), 200);
        let status = sidecar
            .session_api(reqwest::Method::POST, "/v1/revoke")
            .json(&json!({"jti": jti, "exp": exp}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 204, "exp {exp}");
        assert_eq!(
            sidecar.verify_status(&token).await,
            (401, Some("revoked".into()))
        );
        let key = format!("{prefix}:{{{jti}}}:deny");
        let port = cluster.master_for_slot(RedisCluster::key_slot(&key));
        assert_eq!(
            cluster.redis_cli(port, &["EXPIRETIME", &key]).trim(),
            "253402300799",
            "denied until the end of the clock"
        );
    }
}

/// `--redis-password-file` is read again when it changes (a Kubernetes Secret update replaces
/// it): after the password is rotated on the cluster and every connection of the old one is
/// killed, the sidecar reconnects and resubscribes with the new one, without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_redis_password_is_used_without_a_restart() {
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix("rotate");
    let user = format!("u-{prefix}");
    let set_password = |password: &str| {
        for port in cluster.live_ports() {
            cluster.redis_cli(
                port,
                &[
                    "ACL",
                    "SETUSER",
                    &user,
                    "on",
                    "resetpass",
                    &format!(">{password}"),
                    "~*",
                    "&*",
                    "+@all",
                ],
            );
        }
    };
    set_password("first-password");
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("redis-password");
    std::fs::write(&password_file, "first-password\n").unwrap();
    let password_arg = password_file.display().to_string();
    let a = TestSidecar::start_on_cluster(
        cluster,
        &prefix,
        &[
            "--redis-username",
            &user,
            "--redis-password-file",
            &password_arg,
            "--cache-ttl",
            "0",
        ],
    )
    .await;
    a.wait_for_subscription(true, Duration::from_secs(10)).await;
    let (_, token) = a.create_session("rota", json!({})).await;
    assert_eq!(a.verify(&token).await.status(), 200);

    // Rotate: the cluster first, then the file (as a Secret update does), then every
    // connection of that user is dropped.
    set_password("second-password");
    let next = dir.path().join("redis-password.next");
    std::fs::write(&next, "second-password\n").unwrap();
    std::fs::rename(&next, &password_file).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for port in cluster.live_ports() {
        cluster.redis_cli(port, &["CLIENT", "KILL", "USER", &user]);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = a.verify(&token).await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "never a 401 for a live session");
        assert!(
            std::time::Instant::now() < deadline,
            "the sidecar never reconnected with the rotated password"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.wait_for_subscription(true, Duration::from_secs(15)).await;
    let (_, fresh) = a.create_session("rota", json!({})).await;
    assert_eq!(a.verify(&fresh).await.status(), 200);
}

/// A flood of invalidations (200,000 as fast as one pipelined client can publish them) is
/// either heard in full or, if the sidecar falls too far behind, counted as a lost feed (and
/// every cached session decision re-checked): never dropped in silence. Afterwards the feed
/// still carries a deletion from another sidecar.
#[tokio::test(flavor = "multi_thread")]
async fn an_invalidation_flood_is_heard_in_full_or_counted_as_a_loss() {
    const FLOOD: usize = 200_000;
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix("flood");
    let a = TestSidecar::start_on_cluster(cluster, &prefix, &[]).await;
    let b = TestSidecar::start_on_cluster(cluster, &prefix, &[]).await;
    a.wait_for_subscription(true, Duration::from_secs(10)).await;
    b.wait_for_subscription(true, Duration::from_secs(10)).await;

    let client = redis::Client::open(cluster.seed_urls()[0].as_str()).unwrap();
    let mut publisher = client.get_multiplexed_async_connection().await.unwrap();
    let channel = format!("{prefix}:invalidations");
    for batch in 0..FLOOD / 1000 {
        let mut pipe = redis::pipe();
        for i in 0..1000 {
            pipe.cmd("PUBLISH")
                .arg(&channel)
                .arg(format!("d flood-{batch}-{i}"))
                .ignore();
        }
        let () = pipe.query_async(&mut publisher).await.unwrap();
    }

    let received = r#"session_sidecar_invalidations_received_total{kind="session_deleted"}"#;
    let overflows = "session_sidecar_invalidation_feed_overflows_total";
    let started = std::time::Instant::now();
    let (heard, fell_behind) = loop {
        let metrics = b.metrics().await;
        let (heard, fell_behind) = (
            metric_value(&metrics, received),
            metric_value(&metrics, overflows),
        );
        if heard >= FLOOD as f64 || fell_behind >= 1.0 {
            break (heard, fell_behind);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{heard} of {FLOOD} invalidations heard and no loss counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("flood: {heard} of {FLOOD} heard, {fell_behind} overflows");
    if fell_behind >= 1.0 {
        assert!(
            b.metric("session_sidecar_invalidation_subscription_losses_total")
                .await
                >= 1.0
        );
    }

    // The feed works after the flood.
    b.wait_for_subscription(true, Duration::from_secs(10)).await;
    let (sid, token) = a.create_session("after-flood", json!({})).await;
    assert_eq!(b.verify(&token).await.status(), 200);
    assert_eq!(a.delete_session(&sid).await, 204);
    b.wait_for_status(&token, 401, PROPAGATION_BOUND).await;
}

/// A master added to the cluster and a slot resharded to it while verifications run: the
/// client follows ASK and MOVED to a node it did not know, and no verification fails.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_added_and_resharded_to_under_load_fails_no_verification() {
    let own = RedisCluster::start();
    let cluster = &own;
    let prefix = unique_prefix("grow");
    let sidecar = TestSidecar::start_on_cluster(cluster, &prefix, &["--cache-ttl", "0"]).await;
    let (sid, token) = sidecar.create_session("newnode", json!({})).await;
    let key = format!("{prefix}:{{{sid}}}:s");
    let slot = RedisCluster::key_slot(&key);
    let added = cluster.add_master();

    let load = VerifyLoad::start(&sidecar, vec![token]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.begin_slot_migration(slot, added.port());
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.migrate_keys_in_slot(slot, added.port(), 1000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.finish_slot_migration(slot, added.port());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failed) = load.stop().await;
    assert!(
        failed.is_empty(),
        "{} failed verifications: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 20, "the load really ran: {ok}");
    assert_eq!(cluster.master_for_slot(slot), added.port());
    let exists = cluster.redis_cli(added.port(), &["EXISTS", &key]);
    assert_eq!(exists.trim(), "1", "the session moved to the new node");
}

/// Each sidecar's feed subscribes through a random seed (its authority) and to every primary
/// (accelerators: a message comes straight from the primary whose script published it, not
/// over the cluster bus), and hands out each message once however many copies arrive.
#[tokio::test(flavor = "multi_thread")]
async fn the_feed_subscribes_to_every_primary_and_hands_out_each_change_once() {
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix("accel");
    let channel = format!("{prefix}:invalidations");
    let mut fleet = Vec::new();
    for _ in 0..4 {
        let sidecar = TestSidecar::start_on_cluster(cluster, &prefix, &[]).await;
        sidecar
            .wait_for_subscription(true, Duration::from_secs(10))
            .await;
        fleet.push(sidecar);
    }
    let numsub = |port: u16| -> u64 {
        cluster
            .redis_cli(port, &["PUBSUB", "NUMSUB", &channel])
            .lines()
            .nth(1)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    // Every primary: one accelerator per sidecar (and maybe authorities).
    let started = std::time::Instant::now();
    while !cluster
        .master_ports()
        .into_iter()
        .all(|port| numsub(port) >= 4)
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "accelerators never subscribed to every primary"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total: u64 = cluster.live_ports().into_iter().map(numsub).sum();
    assert_eq!(total, 4 * (1 + cluster.master_ports().len() as u64));
    // Without accelerators (--redis-feed-per-primary false): its one subscription only.
    let lone =
        TestSidecar::start_on_cluster(cluster, &prefix, &["--redis-feed-per-primary", "false"])
            .await;
    lone.wait_for_subscription(true, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_lone: u64 = cluster.live_ports().into_iter().map(numsub).sum();
    assert_eq!(with_lone, total + 1);

    // 30 changes, each arriving four times or more: each is applied once.
    let a = &fleet[0];
    for i in 0..30 {
        let (sid, _) = a.create_session(&format!("once{i}"), json!({})).await;
        assert_eq!(a.delete_session(&sid).await, 204);
    }
    let received = r#"session_sidecar_invalidations_received_total{kind="session_deleted"}"#;
    for sidecar in &fleet {
        let started = std::time::Instant::now();
        while sidecar.metric(received).await < 30.0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "changes missing"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Copies still on their way over the bus are dropped too.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            sidecar.metric(received).await,
            30.0,
            "a change applied twice"
        );
    }
}

//! The whole Redis Cluster restarted under a running sidecar (every node `SHUTDOWN SAVE`, then
//! started again on its port from its files): while it is down, cached decisions keep
//! answering, new tokens are `503 store_unavailable` (never `200`, never a hang) and `/readyz`
//! says not ready; once it is back the sidecar heals by itself, without a restart: new tokens
//! verify, the feed is subscribed again and carries changes, `/readyz` is ready. Timings are
//! printed, and asserted only as bounds on hangs.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::cluster::RedisCluster;
use support::*;

const HANG: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn the_sidecar_rides_out_a_whole_cluster_restart_and_heals_by_itself() {
    let own = RedisCluster::start();
    let cluster = &own;
    let prefix = unique_prefix("restart");
    let a = TestSidecar::start_on_cluster(cluster, &prefix, &["--cache-ttl", "600"]).await;
    let b = TestSidecar::start_on_cluster(cluster, &prefix, &["--cache-ttl", "600"]).await;
    a.wait_for_subscription(true, Duration::from_secs(10)).await;
    b.wait_for_subscription(true, Duration::from_secs(10)).await;
    let (_, cached) = a.create_session("before", json!({})).await;
    let (_, unseen) = a.create_session("unseen", json!({})).await;
    assert_eq!(b.verify(&cached).await.status(), 200);

    cluster.shutdown_all();

    // A decision cached before stands; a token never seen cannot be decided: 503, at once.
    assert_eq!(b.verify(&cached).await.status(), 200, "a cached decision");
    let asked = Instant::now();
    let (status, reason) = b.verify_status(&unseen).await;
    let answered_in = asked.elapsed();
    assert_eq!(
        (status, reason.as_deref()),
        (503, Some("store_unavailable"))
    );
    assert!(answered_in < HANG, "a miss hung for {answered_in:?}");
    let started = Instant::now();
    while b.readyz().await != 503 {
        assert!(
            started.elapsed() < HANG,
            "/readyz stayed ready without Redis"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let unready_after = started.elapsed();

    cluster.restart_all();
    let restarted = Instant::now();
    b.wait_for_status(&unseen, 200, HANG).await;
    let healed_in = restarted.elapsed();
    while b.readyz().await != 200 {
        assert!(restarted.elapsed() < HANG, "/readyz never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.wait_for_subscription(true, HANG).await;
    a.wait_for_subscription(true, HANG).await;
    eprintln!(
        "cluster down: a new token answered 503 in {answered_in:?}, /readyz 503 after {unready_after:?}; \
         back: a new token verified {healed_in:?} after the restart"
    );

    // The data survived (SHUTDOWN SAVE), and changes flow again through the feed.
    let (sid, fresh) = a.create_session("after", json!({})).await;
    assert_eq!(b.verify(&fresh).await.status(), 200);
    assert_eq!(a.delete_session(&sid).await, 204);
    b.wait_for_status(&fresh, 401, Duration::from_secs(5)).await;
}

//! Self-test of the Redis Cluster harness in `tests/support/cluster.rs`: a real 3+3 cluster,
//! driven through redis' async `ClusterClient` (routing, ASK/MOVED, failover) and `redis-cli`.

#[path = "support/cluster.rs"]
mod cluster;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cluster::RedisCluster;
use redis::AsyncCommands;

/// Hash tag used only by the migration test, so the routing test never picks its slot.
const MIGRATION_TAG: &str = "{harness-migration}";
/// Set in the child process of `nodes_die_when_the_test_process_is_killed`.
const ORPHAN_ENV: &str = "REDIS_HARNESS_ORPHAN_CHILD";

async fn cluster_connection(c: &RedisCluster) -> redis::cluster_async::ClusterConnection {
    redis::cluster::ClusterClient::new(c.seed_urls())
        .expect("cluster client")
        .get_async_connection()
        .await
        .expect("connect to the cluster")
}

fn count_keys_in_slot(c: &RedisCluster, port: u16, slot: u16) -> u64 {
    let out = c.redis_cli(port, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("COUNTKEYSINSLOT on {port}: {out:?}"))
}

fn port_is_closed(port: u16) -> bool {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
}

#[test]
fn cluster_is_healthy_with_three_masters_and_three_synced_replicas() {
    let c = RedisCluster::shared();
    let ports = c.ports();
    assert_eq!(ports.len(), 6);
    assert_eq!(
        ports.iter().collect::<HashSet<_>>().len(),
        6,
        "ports must be distinct"
    );
    assert!(
        ports.iter().all(|&p| p <= 55535),
        "bus port would overflow: {ports:?}"
    );
    assert_eq!(c.seed_urls().len(), 6);
    assert!(
        c.seed_urls()
            .iter()
            .all(|u| u.starts_with("redis://127.0.0.1:"))
    );

    for &p in &ports {
        let info = c.redis_cli(p, &["CLUSTER", "INFO"]);
        assert!(info.contains("cluster_state:ok"), "{p}: {info}");
        assert!(info.contains("cluster_slots_ok:16384"), "{p}: {info}");
    }

    let nodes = c.nodes();
    assert_eq!(nodes.len(), 6, "{nodes:#?}");
    let masters: Vec<_> = nodes.iter().filter(|n| n.is_master).collect();
    let replicas: Vec<_> = nodes.iter().filter(|n| !n.is_master).collect();
    assert_eq!((masters.len(), replicas.len()), (3, 3), "{nodes:#?}");

    let mut owned = vec![0u8; 16384];
    for m in &masters {
        assert!(!m.slots.is_empty(), "master without slots: {m:?}");
        for &(a, b) in &m.slots {
            for s in a..=b {
                owned[s as usize] += 1;
            }
        }
    }
    assert!(
        owned.iter().all(|&n| n == 1),
        "every slot must have exactly one owner"
    );
    assert_eq!(c.master_ports().len(), 3);

    let master_ids: HashSet<_> = masters.iter().map(|m| m.id.as_str()).collect();
    let followed: HashSet<_> = replicas
        .iter()
        .filter_map(|r| r.master_id.as_deref())
        .collect();
    assert_eq!(followed, master_ids, "each master has its own replica");
    for r in &replicas {
        let repl = c.redis_cli(r.port, &["INFO", "replication"]);
        assert!(repl.contains("role:slave"), "{}: {repl}", r.port);
        assert!(repl.contains("master_link_status:up"), "{}: {repl}", r.port);
    }
}

#[test]
fn key_slot_matches_cluster_keyslot() {
    // CRC16/XMODEM check value: crc("123456789") = 0x31C3.
    assert_eq!(RedisCluster::key_slot("123456789"), 0x31C3);
    assert_eq!(
        RedisCluster::key_slot("{user1000}.following"),
        RedisCluster::key_slot("user1000")
    );
    let c = RedisCluster::shared();
    let port = c.ports()[0];
    for key in [
        "foo",
        "bar",
        "",
        "{user1000}.following",
        "{user1000}.followers",
        "foo{}{bar}",
        "foo{{bar}}zap",
        "foo{bar}{zap}",
        "{",
        "}{a}",
        "{a",
        "sess:7f3a",
        "tok:{abc}:x",
    ] {
        let server: u16 = c
            .redis_cli(port, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap();
        assert_eq!(RedisCluster::key_slot(key), server, "key {key:?}");
    }
}

#[tokio::test]
async fn hash_tags_route_to_different_masters_through_the_cluster_client() {
    let c = RedisCluster::shared();
    let avoid = RedisCluster::key_slot(MIGRATION_TAG);
    let view = c.nodes();
    let owner = |slot: u16| {
        view.iter()
            .find(|n| n.is_master && n.owns_slot(slot))
            .unwrap()
            .port
    };

    // One key per master, each with a different hash tag.
    let mut chosen: Vec<(String, u16)> = Vec::new();
    for i in 0.. {
        let key = format!("{{route-{i}}}:session");
        let slot = RedisCluster::key_slot(&key);
        if slot != avoid && !chosen.iter().any(|(_, port)| *port == owner(slot)) {
            chosen.push((key, owner(slot)));
        }
        if chosen.len() == 3 {
            break;
        }
    }

    let mut con = cluster_connection(c).await;
    for (key, _) in &chosen {
        let () = con.set(key, format!("value of {key}")).await.unwrap();
    }
    for (key, port) in &chosen {
        let got: String = con.get(key).await.unwrap();
        assert_eq!(got, format!("value of {key}"));
        // Without -c redis-cli does not follow MOVED: only the owner answers with the value.
        assert_eq!(
            c.redis_cli(*port, &["GET", key]).trim(),
            format!("value of {key}"),
            "{key} on {port}"
        );
        assert_eq!(*port, c.master_for_slot(RedisCluster::key_slot(key)));
    }
    let distinct: HashSet<u16> = chosen.iter().map(|(_, p)| *p).collect();
    assert_eq!(distinct.len(), 3);
}

#[tokio::test]
async fn slot_migration_moves_keys_and_the_client_follows_ask_and_moved() {
    let c = RedisCluster::shared();
    let k1 = format!("{MIGRATION_TAG}:before");
    let k2 = format!("{MIGRATION_TAG}:during");
    let slot = RedisCluster::key_slot(&k1);
    let src = c.master_for_slot(slot);
    let dst = *c.master_ports().iter().find(|&&p| p != src).unwrap();

    let mut con = cluster_connection(c).await;
    let () = con.set(&k1, "v1").await.unwrap();
    assert_eq!(count_keys_in_slot(c, src, slot), 1);

    // Half-migrated: the old owner still serves k1; a new key is redirected with -ASK.
    c.begin_slot_migration(slot, dst);
    let got: String = con.get(&k1).await.unwrap();
    assert_eq!(got, "v1");
    let () = con.set(&k2, "v2").await.unwrap();
    assert_eq!(
        count_keys_in_slot(c, dst, slot),
        1,
        "k2 must have followed the ASK to {dst}"
    );
    assert_eq!(count_keys_in_slot(c, src, slot), 1);
    let got: String = con.get(&k2).await.unwrap();
    assert_eq!(got, "v2");
    assert_eq!(
        c.master_for_slot(slot),
        src,
        "the slot is not reassigned before finish"
    );

    c.finish_slot_migration(slot, dst);
    assert_eq!(c.master_for_slot(slot), dst);
    assert_eq!(count_keys_in_slot(c, src, slot), 0);
    assert_eq!(count_keys_in_slot(c, dst, slot), 2);
    // The client still has the old slot map: it must follow -MOVED.
    let got: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&k1)
        .arg(&k2)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(got, vec![Some("v1".to_string()), Some("v2".to_string())]);

    // And back in one step.
    c.migrate_slot(slot, src);
    assert_eq!(c.master_for_slot(slot), src);
    assert_eq!(count_keys_in_slot(c, src, slot), 2);
    let got: String = con.get(&k1).await.unwrap();
    assert_eq!(got, "v1");
}

#[tokio::test]
async fn killing_a_master_promotes_its_replica_and_keeps_replicated_data() {
    let c = RedisCluster::start(); // private: this test kills a node
    eprintln!("private cluster healthy after {:?}", c.startup_time());
    let key = "{failover}:session";
    let slot = RedisCluster::key_slot(key);
    let master = c.master_for_slot(slot);
    let master_id = c.nodes().into_iter().find(|n| n.port == master).unwrap().id;
    let replica = c
        .nodes()
        .into_iter()
        .find(|n| n.master_id.as_deref() == Some(master_id.as_str()))
        .expect("the master has a replica")
        .port;

    let mut con = cluster_connection(&c).await;
    let () = con.set(key, "survives").await.unwrap();
    // Not `WAIT` via redis-cli: a fresh connection has written nothing, so it returns at once.
    c.wait_for_replication(Duration::from_secs(10));

    // commandstats: GETs are counted once, on the master that served them.
    c.reset_commandstats();
    for _ in 0..5 {
        let got: String = con.get(key).await.unwrap();
        assert_eq!(got, "survives");
    }
    assert_eq!(c.commandstats().get("get").copied(), Some(5));

    let t = Instant::now();
    c.kill_node(master);
    assert!(port_is_closed(master));
    c.wait_for_failover(master, Duration::from_secs(20));
    eprintln!("failover completed {:?} after the kill", t.elapsed());
    assert_eq!(
        c.master_for_slot(slot),
        replica,
        "the dead master's replica took over"
    );
    assert!(!c.master_ports().contains(&master));
    assert_eq!(c.master_ports().len(), 3);
    assert!(
        !c.seed_urls()
            .iter()
            .any(|u| u.ends_with(&format!(":{master}")))
    );

    assert_eq!(
        c.redis_cli(replica, &["GET", key]).trim(),
        "survives",
        "the promoted replica {replica} lost the replicated write\n{}",
        c.diagnostics()
    );
    // Same connection: it must discover the new topology by itself.
    let got: Option<String> = con.get(key).await.unwrap();
    assert_eq!(
        got.as_deref(),
        Some("survives"),
        "GET through the cluster client after failover; nodes: {:#?}",
        c.nodes()
    );

    c.flushall();
    let got: Option<String> = con.get(key).await.unwrap();
    assert_eq!(got, None);

    drop(con);
    let ports = c.live_ports();
    drop(c);
    assert!(
        ports.iter().all(|&p| port_is_closed(p)),
        "Drop must kill every node"
    );
}

#[test]
fn nodes_die_when_the_test_process_is_killed() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "orphan_helper",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ORPHAN_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let ports: Vec<u16> = loop {
        match rx.recv_timeout(Duration::from_secs(90)) {
            Ok(line) => {
                // libtest prints "test orphan_helper ... " on the same line first.
                if let Some((_, list)) = line.split_once("HARNESS-PORTS ") {
                    break list.trim().split(',').map(|p| p.parse().unwrap()).collect();
                }
            }
            Err(e) => {
                let _ = child.kill();
                panic!("the helper process never reported its cluster: {e:?}");
            }
        }
    };
    assert_eq!(ports.len(), 6);
    assert!(
        ports.iter().all(|&p| !port_is_closed(p)),
        "helper cluster is up"
    );

    child.kill().unwrap(); // SIGKILL: no destructors, no atexit
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ports.iter().all(|&p| port_is_closed(p)) {
        assert!(
            Instant::now() < deadline,
            "nodes outlived the SIGKILLed test process: {ports:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Child half of `nodes_die_when_the_test_process_is_killed`: starts the static shared cluster,
/// reports its ports and waits to be SIGKILLed. A no-op unless started by that test.
#[test]
#[ignore = "helper process for nodes_die_when_the_test_process_is_killed"]
fn orphan_helper() {
    if std::env::var_os(ORPHAN_ENV).is_none() {
        return;
    }
    let c = RedisCluster::shared();
    let ports: Vec<String> = c.ports().iter().map(u16::to_string).collect();
    println!("HARNESS-PORTS {}", ports.join(","));
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

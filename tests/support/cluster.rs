//! Test support: owns a real 6-node Redis Cluster (3 masters + 3 replicas) built from
//! `redis-server` processes on random loopback ports, and the admin helpers tests use
//! against it (topology views, failover, slot migration, command statistics).
//!
//! Every node runs under a tiny `sh` wrapper whose stdin is a pipe held by this process:
//! when the test process ends for any reason (normal exit, panic, SIGKILL) the pipe
//! closes and the wrapper SIGKILLs its `redis-server`, so nodes never outlive the test
//! binary, even for the `static` cluster returned by [`RedisCluster::shared`].
//!
//! `REDIS_SERVER_BIN` and `REDIS_CLI_BIN` override the binaries (default: from `PATH`).
//! Include it with `#[path = "support/cluster.rs"] mod cluster;` or from a `support` module.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use redis::IntoConnectionInfo;

/// Number of nodes: 3 masters + 3 replicas.
const NODES: usize = 6;
const MASTERS: usize = 3;
const SLOTS: usize = 16384;
/// Overall bound for spawning, creating and reaching a healthy cluster.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound for `redis-cli --cluster create` itself (inside `START_TIMEOUT`).
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll interval for every "wait until" loop.
const POLL: Duration = Duration::from_millis(50);
/// Attempts to bring up one node on a fresh port after it failed (e.g. a port race).
const SPAWN_ATTEMPTS: usize = 5;
/// Lines of each node log included in failure reports.
const LOG_TAIL_LINES: usize = 40;
/// Node port range; the cluster bus port is `port + 10000` (so at most 55000).
const PORT_RANGE: std::ops::Range<u16> = 20000..45000;
const BUS_OFFSET: u16 = 10000;

/// Runs `"$@"` (redis-server and its arguments) in the background and SIGKILLs it as soon as
/// our stdin reaches EOF, i.e. when the owning test process closes the pipe or dies; then it
/// removes the node's temp dir `$REDIS_NODE_DIR` (the static cluster's `TempDir`s are never
/// dropped). If redis stops on its own, the wrapper exits with its status and keeps the dir,
/// so the log can still be reported. Background lists get /dev/null as stdin, hence fd 3; the
/// watcher ignores SIGINT/SIGHUP so a Ctrl-C of `cargo test` still ends in the cleanup. Its
/// wait for redis to vanish is bounded: an orphaned zombie is never reaped without an init.
const WRAPPER: &str = r#"exec 3<&0 </dev/null
"$@" 3<&- &
pid=$!
{
  trap '' INT HUP
  read _ignored <&3
  kill -9 "$pid" 2>/dev/null
  i=0
  while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.02; i=$((i + 1)); done
  rm -rf "$REDIS_NODE_DIR"
} &
watcher=$!
exec 3<&-
wait "$pid"
status=$?
[ "$status" -eq 137 ] || kill "$watcher" 2>/dev/null
exit "$status"
"#;

/// One node as seen in a `CLUSTER NODES` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub port: u16,
    pub id: String,
    pub is_master: bool,
    pub master_id: Option<String>,
    /// Inclusive slot ranges owned (importing/migrating markers are not included).
    pub slots: Vec<(u16, u16)>,
    /// Raw flags, e.g. `["myself", "master"]`, `["slave"]`, `["master", "fail"]`.
    pub flags: Vec<String>,
}

impl NodeInfo {
    /// True when the cluster has flagged this node as failing (`fail` or `fail?`).
    pub fn is_failed(&self) -> bool {
        self.flags.iter().any(|f| f == "fail" || f == "fail?")
    }

    /// True when this node owns `slot`.
    pub fn owns_slot(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
    }
}

/// A running cluster; dropping it kills every node (the static one dies with the process).
pub struct RedisCluster {
    nodes: Vec<Node>,
    create_output: String,
    startup_time: Duration,
}

/// A node started after the cluster (see [`RedisCluster::add_replica`]).
pub struct ExtraNode {
    node: Node,
}

impl ExtraNode {
    pub fn port(&self) -> u16 {
        self.node.port
    }
}

/// One `redis-server` process under its `sh` wrapper.
struct Node {
    port: u16,
    dir: tempfile::TempDir,
    /// The `sh` wrapper (its child is the redis-server).
    child: Mutex<Child>,
    /// Write end of the wrapper's stdin; closing it makes the wrapper SIGKILL redis.
    stdin: Mutex<Option<ChildStdin>>,
    /// PID of redis-server itself (from INFO server), a fallback for killing it.
    redis_pid: std::sync::atomic::AtomicU32,
    /// Cluster node id (from CLUSTER MYID).
    id: String,
    alive: AtomicBool,
}

impl Node {
    /// Asks the wrapper to SIGKILL redis by closing its stdin (does not wait).
    fn signal_kill(&self) {
        self.alive.store(false, Ordering::SeqCst);
        drop(lock(&self.stdin).take());
    }

    /// Waits until the wrapper (and so redis, which it reaps first) has exited; if that
    /// takes longer than `timeout`, SIGKILLs both directly.
    fn reap(&self, timeout: Duration) {
        let mut child = lock(&self.child);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => break,
            }
        }
        let redis_pid = self.redis_pid.load(Ordering::SeqCst);
        if redis_pid != 0 {
            let _ = Command::new("kill")
                .args(["-9", &redis_pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.signal_kill();
        self.reap(Duration::from_secs(5));
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        // Signal all first so the six nodes die in parallel, then reap.
        for n in &self.nodes {
            n.signal_kill();
        }
        for n in &self.nodes {
            n.reap(Duration::from_secs(5));
        }
    }
}

impl RedisCluster {
    /// Spawns 6 nodes, creates the cluster and waits until it is healthy.
    ///
    /// Panics with the `redis-cli --cluster create` output and node log tails on failure.
    pub fn start() -> RedisCluster {
        match Self::try_start() {
            Ok(c) => c,
            Err(report) => panic!("{report}"),
        }
    }

    /// The cluster shared by every test of this binary, started on first use (never dropped).
    pub fn shared() -> &'static RedisCluster {
        static SHARED: OnceLock<Result<RedisCluster, String>> = OnceLock::new();
        match SHARED.get_or_init(Self::try_start) {
            Ok(c) => c,
            Err(report) => panic!("the shared Redis Cluster failed to start:\n{report}"),
        }
    }

    /// How long `start()` took from spawning the first process to a healthy cluster.
    pub fn startup_time(&self) -> Duration {
        self.startup_time
    }

    /// `redis://127.0.0.1:PORT` of every live node (killed nodes are left out).
    pub fn seed_urls(&self) -> Vec<String> {
        self.live_ports()
            .into_iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// Ports of all 6 nodes, including killed ones, in spawn order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Ports of the nodes that have not been killed through `kill_node`.
    pub fn live_ports(&self) -> Vec<u16> {
        self.live().map(|n| n.port).collect()
    }

    /// A fresh `CLUSTER NODES` view, asked from the first live node that answers.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let mut errors = Vec::new();
        for n in self.live() {
            match query::<String>(n.port, &["CLUSTER", "NODES"]).and_then(|raw| parse_nodes(&raw)) {
                Ok(view) => return view.into_iter().map(|(info, _)| info).collect(),
                Err(e) => errors.push(e),
            }
        }
        panic!("no live node answered CLUSTER NODES: {errors:?}");
    }

    /// Ports of the current masters that own slots and are not flagged failed, sorted.
    pub fn master_ports(&self) -> Vec<u16> {
        let live: HashSet<u16> = self.live_ports().into_iter().collect();
        let mut ports: Vec<u16> = self
            .nodes()
            .into_iter()
            .filter(|n| {
                n.is_master && !n.slots.is_empty() && !n.is_failed() && live.contains(&n.port)
            })
            .map(|n| n.port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// Port of the master that currently owns `slot` (fresh view).
    pub fn master_for_slot(&self, slot: u16) -> u16 {
        let view = self.nodes();
        view.iter()
            .find(|n| n.is_master && !n.is_failed() && n.owns_slot(slot))
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("no healthy master owns slot {slot}; view: {view:#?}"))
    }

    /// Cluster hash slot of `key`: CRC16 (XMODEM) of the key or of its `{hash tag}`, mod 16384.
    pub fn key_slot(key: &str) -> u16 {
        session_sidecar::store::redis::breaker::key_slot(key.as_bytes())
    }

    /// Runs `redis-cli -h 127.0.0.1 -p PORT ARGS...` and returns its stdout.
    ///
    /// Panics if redis-cli exits non-zero (e.g. cannot connect). Each call is a new connection.
    pub fn redis_cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new(cli_bin())
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", cli_bin()));
        if !out.status.success() {
            panic!(
                "redis-cli -p {port} {args:?} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGKILLs one node and waits until its process is gone (never do this on `shared()`).
    pub fn kill_node(&self, port: u16) {
        let node = self.node(port);
        node.signal_kill();
        node.reap(Duration::from_secs(5));
    }

    /// Waits until a replica of the killed master took over and the cluster is ok again.
    ///
    /// Precisely: the dead node is flagged `fail` and owns nothing, live masters cover all
    /// slots, and every live node reports `cluster_state:ok` with identical views. Panics with
    /// node logs on timeout.
    pub fn wait_for_failover(&self, dead_port: u16, timeout: Duration) {
        let dead = self.node(dead_port);
        assert!(
            !dead.alive.load(Ordering::SeqCst),
            "wait_for_failover({dead_port}): kill_node({dead_port}) first"
        );
        let deadline = Instant::now() + timeout;
        if let Err(e) = wait_until(deadline, || check_topology(&self.nodes, false)) {
            panic!(
                "{}",
                report(
                    &format!("failover after killing {dead_port} not done in {timeout:?}: {e}"),
                    &self.nodes,
                    &self.create_output
                )
            );
        }
    }

    /// Waits until every live replica has applied what its master had written when called.
    ///
    /// Use it before `kill_node` on a master. (`WAIT` through `redis_cli` would not do: it
    /// only waits for the writes of its own connection, and a new one has written nothing.)
    pub fn wait_for_replication(&self, timeout: Duration) {
        let view = self.nodes();
        let live: HashSet<u16> = self.live_ports().into_iter().collect();
        let healthy = |n: &&NodeInfo| !n.is_failed() && live.contains(&n.port);
        let mut targets = Vec::new();
        for m in view.iter().filter(|n| n.is_master).filter(healthy) {
            let repl: String = must(query(m.port, &["INFO", "replication"]));
            let offset: i64 = info_field(&repl, "master_repl_offset")
                .and_then(|o| o.parse().ok())
                .unwrap_or_else(|| panic!("{}: no master_repl_offset in {repl}", m.port));
            for r in view.iter().filter(healthy) {
                if r.master_id.as_deref() == Some(m.id.as_str()) {
                    targets.push((r.port, m.port, offset));
                }
            }
        }
        let deadline = Instant::now() + timeout;
        let synced = wait_until(deadline, || {
            for &(replica, master, offset) in &targets {
                let repl: String = query(replica, &["INFO", "replication"])?;
                let applied: i64 = info_field(&repl, "slave_repl_offset")
                    .and_then(|o| o.parse().ok())
                    .unwrap_or(-1);
                if applied < offset || info_field(&repl, "master_link_status") != Some("up") {
                    return Err(format!(
                        "replica {replica} applied offset {applied} of master {master}'s {offset}"
                    ));
                }
            }
            Ok(())
        });
        if let Err(e) = synced {
            panic!(
                "{}",
                report(
                    &format!("replication did not catch up within {timeout:?}: {e}"),
                    &self.nodes,
                    &self.create_output
                )
            );
        }
    }

    /// Moves `slot` with all its keys to the master on `to_port` (no-op if it is already there).
    pub fn migrate_slot(&self, slot: u16, to_port: u16) {
        if self.master_for_slot(slot) == to_port {
            return;
        }
        self.begin_slot_migration(slot, to_port);
        self.finish_slot_migration(slot, to_port);
    }

    /// First half of a migration: SETSLOT IMPORTING on the target, MIGRATING on the owner.
    ///
    /// Keys stay on the owner; requests for keys it lacks get `-ASK` to the target.
    pub fn begin_slot_migration(&self, slot: u16, to_port: u16) {
        let view = self.nodes();
        let (src, dst) = migration_ends(&view, slot, to_port);
        assert_ne!(
            src.port, dst.port,
            "slot {slot} is already owned by {to_port}"
        );
        let s = slot.to_string();
        must(query::<()>(
            dst.port,
            &["CLUSTER", "SETSLOT", &s, "IMPORTING", &src.id],
        ));
        must(query::<()>(
            src.port,
            &["CLUSTER", "SETSLOT", &s, "MIGRATING", &dst.id],
        ));
    }

    /// MIGRATEs up to `max_keys` keys of a half-migrated slot to the target; returns the count.
    ///
    /// Call after `begin_slot_migration`: the moved keys then get `-ASK` on the old owner.
    pub fn migrate_keys_in_slot(&self, slot: u16, to_port: u16, max_keys: usize) -> usize {
        let view = self.nodes();
        let (src, dst) = migration_ends(&view, slot, to_port);
        if src.port == dst.port {
            return 0;
        }
        let mut con = must(connect(src.port));
        let mut moved = 0;
        while moved < max_keys {
            let batch = (max_keys - moved).min(100);
            let keys: Vec<Vec<u8>> = must(
                redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(slot)
                    .arg(batch)
                    .query(&mut con)
                    .map_err(|e| format!("CLUSTER GETKEYSINSLOT {slot} on {}: {e}", src.port)),
            );
            if keys.is_empty() {
                break;
            }
            let reply: redis::Value = must(
                redis::cmd("MIGRATE")
                    .arg("127.0.0.1")
                    .arg(dst.port)
                    .arg("")
                    .arg(0)
                    .arg(10_000)
                    .arg("REPLACE")
                    .arg("KEYS")
                    .arg(&keys)
                    .query(&mut con)
                    .map_err(|e| {
                        format!(
                            "MIGRATE of slot {slot} from {} to {}: {e}",
                            src.port, dst.port
                        )
                    }),
            );
            let _ = reply; // "OK", or "NOKEY" if they vanished meanwhile
            moved += keys.len();
        }
        moved
    }

    /// Second half of a migration: MIGRATE the remaining keys, then SETSLOT NODE everywhere.
    ///
    /// SETSLOT NODE goes to the target, the old owner and every other master; then it waits
    /// until every live node agrees on the new owner.
    pub fn finish_slot_migration(&self, slot: u16, to_port: u16) {
        let view = self.nodes();
        let (src, dst) = migration_ends(&view, slot, to_port);
        if src.port != dst.port {
            self.migrate_keys_in_slot(slot, to_port, usize::MAX);
        }
        let s = slot.to_string();
        let mut order = vec![dst.port, src.port];
        for m in view.iter().filter(|n| n.is_master && !n.is_failed()) {
            if !order.contains(&m.port) && self.is_live(m.port) {
                order.push(m.port);
            }
        }
        for port in order {
            must(query::<()>(
                port,
                &["CLUSTER", "SETSLOT", &s, "NODE", &dst.id],
            ));
        }
        let marker = format!("[{slot}-");
        let deadline = Instant::now() + Duration::from_secs(15);
        let agreed = wait_until(deadline, || {
            for n in self.live() {
                let raw: String = query(n.port, &["CLUSTER", "NODES"])?;
                if raw.contains(&marker) {
                    return Err(format!(
                        "{} still shows a migration marker for slot {slot}",
                        n.port
                    ));
                }
                let owner = parse_nodes(&raw)?
                    .into_iter()
                    .find(|(i, _)| i.is_master && i.owns_slot(slot))
                    .map(|(i, _)| i.port);
                if owner != Some(dst.port) {
                    return Err(format!(
                        "{} thinks slot {slot} is owned by {owner:?}",
                        n.port
                    ));
                }
            }
            Ok(())
        });
        if let Err(e) = agreed {
            panic!(
                "{}",
                report(
                    &format!("slot {slot} migration to {to_port}: {e}"),
                    &self.nodes,
                    &self.create_output
                )
            );
        }
    }

    /// Sum of INFO commandstats `calls` per command ("get", "cluster|slots"...) over live nodes.
    ///
    /// Replicas count the writes they apply from their master (one SET shows as 2, plus a
    /// "select"), and the harness's own admin commands (info, cluster|*, config|*) count too.
    pub fn commandstats(&self) -> HashMap<String, u64> {
        let mut totals = HashMap::new();
        for n in self.live() {
            let info: String = must(query(n.port, &["INFO", "commandstats"]));
            for (cmd, calls) in parse_commandstats(&info) {
                *totals.entry(cmd).or_insert(0) += calls;
            }
        }
        totals
    }

    /// CONFIG RESETSTAT on every live node.
    pub fn reset_commandstats(&self) {
        for n in self.live() {
            must(query::<()>(n.port, &["CONFIG", "RESETSTAT"]));
        }
    }

    /// FLUSHALL on every live master, then WAIT until its connected replicas applied it.
    pub fn flushall(&self) {
        for port in self.master_ports() {
            let mut con = must(connect(port));
            must(run::<()>(&mut con, &["FLUSHALL"]));
            let repl: String = must(run(&mut con, &["INFO", "replication"]));
            let replicas = info_field(&repl, "connected_slaves")
                .unwrap_or("0")
                .to_string();
            if replicas != "0" {
                must(run::<i64>(&mut con, &["WAIT", &replicas, "5000"]));
            }
        }
    }

    /// A failure report: `redis-cli --cluster create` output, each node's view and log tail.
    pub fn diagnostics(&self) -> String {
        report("diagnostics", &self.nodes, &self.create_output)
    }

    /// Stops every node as an operator would before maintenance: `SHUTDOWN SAVE` (each writes
    /// its data and keeps its cluster config), waiting until each process has exited.
    pub fn shutdown_all(&self) {
        for n in self.live() {
            // The connection closes as the server exits: that is the answer.
            let _ = query::<String>(n.port, &["SHUTDOWN", "SAVE"]);
        }
        for n in &self.nodes {
            n.alive.store(false, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = lock(&n.child).try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Starts every node again on its port from its files (after [`Self::shutdown_all`]) and
    /// waits until the cluster is healthy again.
    pub fn restart_all(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        for n in &self.nodes {
            let mut child = must(node_command(n.port, n.dir.path()))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot restart node {}: {e}", n.port));
            *lock(&n.stdin) = child.stdin.take();
            *lock(&n.child) = child;
            n.alive.store(true, Ordering::SeqCst);
        }
        for n in &self.nodes {
            must(wait_until(deadline, || {
                let pid = info_field(&query::<String>(n.port, &["INFO", "server"])?, "process_id")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                n.redis_pid.store(pid, Ordering::SeqCst);
                let state = query::<String>(n.port, &["CLUSTER", "INFO"])?;
                if info_field(&state, "cluster_state") == Some("ok") {
                    Ok(())
                } else {
                    Err(format!("node {} does not see the cluster ok yet", n.port))
                }
            }));
        }
    }

    /// Starts a seventh node and makes it a replica of the master on `master_port`; returns
    /// once its link to the master is up and every live node lists it. The node is not one of
    /// this cluster's own (ports(), kill_node() do not know it); dropping it kills it.
    pub fn add_replica(&self, master_port: u16) -> ExtraNode {
        let deadline = Instant::now() + START_TIMEOUT;
        let node = self.add_node(deadline);
        let master_id = self.node(master_port).id.clone();
        self.redis_cli(node.port(), &["CLUSTER", "REPLICATE", &master_id]);
        let port = node.port();
        must(wait_until(deadline, || {
            let info = query::<String>(port, &["INFO", "replication"])?;
            if info_field(&info, "master_link_status") == Some("up") {
                Ok(())
            } else {
                Err(format!("replica {port}: master link not up"))
            }
        }));
        node
    }

    /// Starts a seventh node and joins it as a master without slots (migrate some to it);
    /// returns once every live node lists it. Dropping it kills it.
    pub fn add_master(&self) -> ExtraNode {
        self.add_node(Instant::now() + START_TIMEOUT)
    }

    /// A new node, met by the cluster and listed by every live node.
    fn add_node(&self, deadline: Instant) -> ExtraNode {
        let mut node = must(spawn_node(pick_port()));
        must(wait_node_up(&mut node, deadline));
        let port = node.port;
        let seed = self.live_ports()[0];
        self.redis_cli(port, &["CLUSTER", "MEET", "127.0.0.1", &seed.to_string()]);
        must(wait_until(deadline, || {
            let state = query::<String>(port, &["CLUSTER", "INFO"])?;
            if info_field(&state, "cluster_state") != Some("ok") {
                return Err(format!("{port} does not see the cluster ok yet"));
            }
            let mine = query::<String>(port, &["CLUSTER", "NODES"])?;
            for n in self.live() {
                if !mine.contains(&n.id) {
                    return Err(format!("{port} does not know {} yet", n.port));
                }
                let theirs = query::<String>(n.port, &["CLUSTER", "NODES"])?;
                if !theirs.contains(&format!(":{port}@")) {
                    return Err(format!("node {} does not list {port} yet", n.port));
                }
            }
            Ok(())
        }));
        ExtraNode { node }
    }

    fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.alive.load(Ordering::SeqCst))
    }

    fn is_live(&self, port: u16) -> bool {
        self.live().any(|n| n.port == port)
    }

    fn node(&self, port: u16) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| {
                panic!(
                    "port {port} is not a node of this cluster ({:?})",
                    self.ports()
                )
            })
    }

    fn try_start() -> Result<RedisCluster, String> {
        let t0 = Instant::now();
        let deadline = t0 + START_TIMEOUT;

        // Spawn all six first so they boot in parallel, then wait for each (retrying on a new
        // port if a node dies, e.g. because another process grabbed its port meanwhile).
        let mut nodes = Vec::with_capacity(NODES);
        for _ in 0..NODES {
            nodes.push(spawn_node(pick_port())?);
        }
        let mut earlier_failures = String::new();
        for i in 0..NODES {
            let mut attempt = 1;
            loop {
                match wait_node_up(&mut nodes[i], deadline) {
                    Ok(()) => break,
                    Err(e) if attempt < SPAWN_ATTEMPTS && Instant::now() < deadline => {
                        earlier_failures += &format!(
                            "--- earlier attempt on port {}: {e}; its redis.log:\n{}\n",
                            nodes[i].port,
                            tail(&nodes[i].log_path(), LOG_TAIL_LINES)
                        );
                        attempt += 1;
                        nodes[i] = spawn_node(pick_port())?;
                    }
                    Err(e) => {
                        let msg = format!(
                            "node on port {} did not start (attempt {attempt}): {e}",
                            nodes[i].port
                        );
                        return Err(report(&msg, &nodes, "") + &earlier_failures);
                    }
                }
            }
        }

        let create_log = nodes[0].dir.path().join("cluster-create.log");
        let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        let created = cluster_create(
            &ports,
            &create_log,
            deadline.min(Instant::now() + CREATE_TIMEOUT),
        );
        let create_output = fs::read_to_string(&create_log).unwrap_or_default();
        if let Err(e) = created {
            return Err(report(
                &format!("redis-cli --cluster create failed: {e}"),
                &nodes,
                &create_output,
            ));
        }

        if let Err(e) = wait_until(deadline, || check_topology(&nodes, true)) {
            return Err(report(
                &format!("cluster not healthy within {START_TIMEOUT:?}: {e}"),
                &nodes,
                &create_output,
            ));
        }

        Ok(RedisCluster {
            nodes,
            create_output,
            startup_time: t0.elapsed(),
        })
    }
}

fn server_bin() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_string())
}

fn cli_bin() -> String {
    std::env::var("REDIS_CLI_BIN").unwrap_or_else(|_| "redis-cli".to_string())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn must<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `check` every `POLL` until it succeeds or `deadline` passes (then returns its last error).
fn wait_until(
    deadline: Instant,
    mut check: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    loop {
        match check() {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Ports and processes

fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(d) = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.finish()
}

/// The kernel's ephemeral port range, avoided when enough other ports remain.
fn ephemeral_range() -> Option<(u16, u16)> {
    let s = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<u16>().ok());
    Some((it.next()??, it.next()??))
}

/// True if nothing at all holds 127.0.0.1:`port`: bound *without* SO_REUSEADDR (unlike
/// `std::net::TcpListener`), so ports with TIME_WAIT/FIN_WAIT leftovers count as taken.
/// That keeps a node killed in another test process from having its port reused while its
/// cluster still gossips about it: the newcomer would answer with another node id, the old
/// node would be marked `noaddr` and never `fail`, and its failover would never happen.
fn port_is_unused(port: u16) -> bool {
    tokio::net::TcpSocket::new_v4()
        .and_then(|s| s.bind(([127, 0, 0, 1], port).into()))
        .is_ok()
}

/// Picks a node port whose bus port (`+10000`) is unused too, never handing out a port twice
/// in this process (nodes of another cluster may not have bound theirs yet).
fn pick_port() -> u16 {
    static RESERVED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let reserved = RESERVED.get_or_init(|| Mutex::new(HashSet::new()));
    let ephemeral = ephemeral_range();
    let in_ephemeral = |p: u16| matches!(ephemeral, Some((lo, hi)) if lo <= p && p <= hi);
    let candidates: Vec<u16> = {
        let outside: Vec<u16> = PORT_RANGE
            .filter(|&p| !in_ephemeral(p) && !in_ephemeral(p + BUS_OFFSET))
            .collect();
        if outside.len() >= 1000 {
            outside
        } else {
            PORT_RANGE.collect()
        }
    };
    for _ in 0..10_000 {
        let port = candidates[(random_u64() % candidates.len() as u64) as usize];
        let bus = port + BUS_OFFSET;
        let mut reserved = lock(reserved);
        if reserved.contains(&port) || reserved.contains(&bus) {
            continue;
        }
        if port_is_unused(port) && port_is_unused(bus) {
            reserved.insert(port);
            reserved.insert(bus);
            return port;
        }
    }
    panic!("could not find a free loopback port pair (port, port+10000) in {PORT_RANGE:?}");
}

fn spawn_node(port: u16) -> Result<Node, String> {
    let dir = tempfile::Builder::new()
        .prefix("redis-cluster-node-")
        .tempdir()
        .map_err(|e| format!("cannot create temp dir: {e}"))?;
    let mut child = node_command(port, dir.path())?
        .spawn()
        .map_err(|e| format!("cannot spawn sh/{}: {e}", server_bin()))?;
    let stdin = child.stdin.take();
    Ok(Node {
        port,
        dir,
        child: Mutex::new(child),
        stdin: Mutex::new(stdin),
        redis_pid: std::sync::atomic::AtomicU32::new(0),
        id: String::new(),
        alive: AtomicBool::new(true),
    })
}

/// The wrapper running redis-server for a node on `port` with its files in `dir` (its
/// `nodes.conf`, its log, and the `dump.rdb` a `SHUTDOWN SAVE` writes and a restart loads).
fn node_command(port: u16, dir: &Path) -> Result<Command, String> {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stdout.log"))
        .map_err(|e| format!("stdout.log: {e}"))?;
    let err = out.try_clone().map_err(|e| format!("stdout.log: {e}"))?;
    let dir_s = dir.to_string_lossy().into_owned();
    let log_s = dir.join("redis.log").to_string_lossy().into_owned();
    let port_s = port.to_string();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(WRAPPER)
        .env("REDIS_NODE_DIR", dir)
        .arg("redis-cluster-node") // $0
        .arg(server_bin())
        .args(["--port", &port_s, "--bind", "127.0.0.1"])
        .args([
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ])
        .args([
            "--cluster-node-timeout",
            "1000",
            "--cluster-replica-validity-factor",
            "0",
        ])
        // As the README tells operators: a replica keeps answering reads for its slots after
        // its primary is flagged failed and before it is promoted (SPEC §8, misses through a
        // failover); Redis' default answers CLUSTERDOWN then.
        .args(["--cluster-allow-reads-when-down", "yes"])
        .args([
            "--repl-diskless-sync",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
        ])
        .args(["--appendonly", "no", "--save", ""])
        .args(["--daemonize", "no", "--protected-mode", "no"])
        .args(["--dir", &dir_s, "--logfile", &log_s])
        .stdin(Stdio::piped())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    Ok(command)
}

/// Waits until *our* redis answers on its port (checked through its `dir`, so another process
/// that grabbed the port is not mistaken for it), then records its pid and node id.
fn wait_node_up(node: &mut Node, deadline: Instant) -> Result<(), String> {
    let want_dir =
        fs::canonicalize(node.dir.path()).unwrap_or_else(|_| node.dir.path().to_path_buf());
    loop {
        if let Ok(Some(status)) = lock(&node.child).try_wait() {
            return Err(format!("redis-server exited early ({status})"));
        }
        let probe = connect(node.port).and_then(|mut con| {
            let dir: Vec<String> = run(&mut con, &["CONFIG", "GET", "dir"])?;
            if dir.get(1).map(Path::new) != Some(want_dir.as_path()) {
                return Err(format!(
                    "port {} is served by another redis ({dir:?})",
                    node.port
                ));
            }
            let info: String = run(&mut con, &["INFO", "server"])?;
            let pid = info_field(&info, "process_id")
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let id: String = run(&mut con, &["CLUSTER", "MYID"])?;
            Ok((pid, id))
        });
        match probe {
            Ok((pid, id)) => {
                node.redis_pid.store(pid, Ordering::SeqCst);
                node.id = id;
                return Ok(());
            }
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn cluster_create(ports: &[u16], log: &Path, deadline: Instant) -> Result<(), String> {
    let out = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = Command::new(cli_bin())
        .args(["--cluster", "create"])
        .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(|e| format!("cannot spawn {}: {e}", cli_bin()))?;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("exited with {status}")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("timed out".to_string());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Talking to nodes (synchronous client; no CLIENT SETINFO so commandstats stay clean)

fn connect(port: u16) -> Result<redis::Connection, String> {
    let info = redis::ConnectionAddr::Tcp("127.0.0.1".to_string(), port)
        .into_connection_info()
        .map_err(|e| e.to_string())?
        .set_redis_settings(redis::RedisConnectionInfo::default().set_skip_set_lib_name());
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    let con = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(|e| format!("connect to 127.0.0.1:{port}: {e}"))?;
    let io = Some(Duration::from_secs(15));
    con.set_read_timeout(io).map_err(|e| e.to_string())?;
    con.set_write_timeout(io).map_err(|e| e.to_string())?;
    Ok(con)
}

fn run<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> Result<T, String> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(con)
        .map_err(|e| format!("{}: {e}", args.join(" ")))
}

fn query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Result<T, String> {
    let mut con = connect(port)?;
    run(&mut con, args).map_err(|e| format!("127.0.0.1:{port}: {e}"))
}

fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|l| {
        let (k, v) = l.trim_end().split_once(':')?;
        (k == key).then_some(v)
    })
}

fn parse_commandstats(info: &str) -> Vec<(String, u64)> {
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.trim_end().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .collect()
}

/// Parses a CLUSTER NODES reply into (node, link connected) pairs.
fn parse_nodes(raw: &str) -> Result<Vec<(NodeInfo, bool)>, String> {
    let mut out = Vec::new();
    for line in raw.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            return Err(format!("malformed CLUSTER NODES line: {line:?}"));
        }
        let addr = f[1].split(['@', ',']).next().unwrap_or("");
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let flags: Vec<String> = f[2].split(',').map(str::to_string).collect();
        let mut slots = Vec::new();
        for s in f[8..].iter().filter(|s| !s.starts_with('[')) {
            let range = match s.split_once('-') {
                Some((a, b)) => (a.parse(), b.parse()),
                None => (s.parse(), s.parse()),
            };
            match range {
                (Ok(a), Ok(b)) => slots.push((a, b)),
                _ => return Err(format!("bad slot range {s:?} in {line:?}")),
            }
        }
        slots.sort_unstable();
        let info = NodeInfo {
            port,
            id: f[0].to_string(),
            is_master: flags.iter().any(|x| x == "master"),
            master_id: (f[3] != "-").then(|| f[3].to_string()),
            slots,
            flags,
        };
        out.push((info, f[7] == "connected"));
    }
    Ok(out)
}

/// The (owner, target) ends of a migration of `slot` to `to_port` in `view`.
fn migration_ends(view: &[NodeInfo], slot: u16, to_port: u16) -> (NodeInfo, NodeInfo) {
    let src = view
        .iter()
        .find(|n| n.is_master && n.owns_slot(slot))
        .unwrap_or_else(|| panic!("no master owns slot {slot}"));
    let dst = view
        .iter()
        .find(|n| n.port == to_port)
        .unwrap_or_else(|| panic!("port {to_port} is not in the cluster view"));
    assert!(
        dst.is_master && !dst.is_failed(),
        "migration target {to_port} is not a healthy master: {dst:?}"
    );
    (src.clone(), dst.clone())
}

/// One pass of the health check over every live node. `fresh`: expect exactly 3 masters each
/// with one replica (right after create); otherwise (after a failover) killed nodes must be
/// flagged `fail` and own nothing. Always: `cluster_state:ok`, all slots covered once by live
/// masters, all live nodes connected and agreeing, replicas' links up.
fn check_topology(nodes: &[Node], fresh: bool) -> Result<(), String> {
    let all_ids: HashSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    let dead_ids: HashSet<&str> = nodes
        .iter()
        .filter(|n| !n.alive.load(Ordering::SeqCst))
        .map(|n| n.id.as_str())
        .collect();
    type Signature = BTreeMap<String, (bool, Option<String>, Vec<(u16, u16)>)>;
    let mut reference: Option<(u16, Signature)> = None;

    for node in nodes.iter().filter(|n| n.alive.load(Ordering::SeqCst)) {
        let p = node.port;
        let mut con = connect(p)?;
        let info: String = run(&mut con, &["CLUSTER", "INFO"])?;
        for (key, want) in [
            ("cluster_state", "ok"),
            ("cluster_slots_assigned", "16384"),
            ("cluster_slots_ok", "16384"),
        ] {
            let got = info_field(&info, key);
            if got != Some(want) {
                return Err(format!("{p}: {key}={got:?}, want {want}"));
            }
        }
        let view = parse_nodes(&run::<String>(&mut con, &["CLUSTER", "NODES"])?)?;
        let view_ids: HashSet<&str> = view.iter().map(|(n, _)| n.id.as_str()).collect();
        if view_ids != all_ids {
            return Err(format!("{p} knows nodes {view_ids:?}, want {all_ids:?}"));
        }
        for (n, connected) in &view {
            if dead_ids.contains(n.id.as_str()) {
                if n.flags.iter().any(|f| f == "noaddr") && !n.flags.iter().any(|f| f == "fail") {
                    return Err(format!(
                        "{p}: dead node {} ({}) lost its address before being flagged fail: \
                         another process probably reused its port, so it will never fail over",
                        n.id, n.port
                    ));
                }
                if !n.flags.iter().any(|f| f == "fail") {
                    return Err(format!(
                        "{p}: dead node {} not flagged fail yet ({:?})",
                        n.port, n.flags
                    ));
                }
                if n.is_master && !n.slots.is_empty() {
                    return Err(format!("{p}: dead master {} still owns slots", n.port));
                }
            } else {
                let bad = ["fail", "fail?", "handshake", "noaddr"];
                if n.flags.iter().any(|f| bad.contains(&f.as_str())) || !connected {
                    return Err(format!(
                        "{p}: node {} is {:?} connected={connected}",
                        n.port, n.flags
                    ));
                }
            }
        }
        let live: Vec<&NodeInfo> = view
            .iter()
            .map(|(n, _)| n)
            .filter(|n| !dead_ids.contains(n.id.as_str()))
            .collect();
        let masters: Vec<&NodeInfo> = live.iter().copied().filter(|n| n.is_master).collect();
        let replicas: Vec<&NodeInfo> = live.iter().copied().filter(|n| !n.is_master).collect();
        let mut covered = vec![false; SLOTS];
        for m in &masters {
            if m.slots.is_empty() {
                return Err(format!("{p}: master {} owns no slots", m.port));
            }
            for &(a, b) in &m.slots {
                for s in a..=b {
                    let seen = covered
                        .get_mut(s as usize)
                        .ok_or_else(|| format!("{p}: slot {s} out of range"))?;
                    if *seen {
                        return Err(format!("{p}: slot {s} owned twice"));
                    }
                    *seen = true;
                }
            }
        }
        if let Some(s) = covered.iter().position(|c| !c) {
            return Err(format!("{p}: slot {s} is not owned by a live master"));
        }
        let master_ids: HashSet<&str> = masters.iter().map(|m| m.id.as_str()).collect();
        for r in &replicas {
            if !r
                .master_id
                .as_deref()
                .is_some_and(|m| master_ids.contains(m))
            {
                return Err(format!(
                    "{p}: replica {} follows {:?}, not a live master",
                    r.port, r.master_id
                ));
            }
        }
        if fresh {
            if masters.len() != MASTERS || replicas.len() != NODES - MASTERS {
                return Err(format!(
                    "{p}: {} masters / {} replicas",
                    masters.len(),
                    replicas.len()
                ));
            }
            let followed: HashSet<&str> = replicas
                .iter()
                .filter_map(|r| r.master_id.as_deref())
                .collect();
            if followed.len() != MASTERS {
                return Err(format!(
                    "{p}: replicas follow only {} distinct masters",
                    followed.len()
                ));
            }
        }
        let signature: Signature = live
            .iter()
            .map(|n| {
                (
                    n.id.clone(),
                    (n.is_master, n.master_id.clone(), n.slots.clone()),
                )
            })
            .collect();
        match &reference {
            None => reference = Some((p, signature)),
            Some((rp, r)) if *r != signature => {
                return Err(format!("{p} and {rp} disagree on the topology"));
            }
            Some(_) => {}
        }
        let me = view
            .iter()
            .find(|(n, _)| n.flags.iter().any(|f| f == "myself"))
            .ok_or_else(|| format!("{p}: no 'myself' line"))?;
        if !me.0.is_master {
            let repl: String = run(&mut con, &["INFO", "replication"])?;
            let link = info_field(&repl, "master_link_status");
            let syncing = info_field(&repl, "master_sync_in_progress");
            if link != Some("up") || syncing != Some("0") {
                return Err(format!(
                    "{p}: replica link {link:?}, sync in progress {syncing:?}"
                ));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Failure reports

fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// `msg` plus the `--cluster create` output, each node's CLUSTER NODES view and log tail.
fn report(msg: &str, nodes: &[Node], create_output: &str) -> String {
    let mut s = format!("Redis Cluster harness: {msg}\n");
    if !create_output.is_empty() {
        s += &format!(
            "--- redis-cli --cluster create output ---\n{}\n",
            create_output.trim_end()
        );
    }
    for n in nodes {
        let alive = n.alive.load(Ordering::SeqCst);
        s += &format!(
            "--- node 127.0.0.1:{} id={} pid={} alive={alive} dir={} ---\n",
            n.port,
            n.id,
            n.redis_pid.load(Ordering::SeqCst),
            n.dir.path().display()
        );
        if alive {
            match query::<String>(n.port, &["CLUSTER", "NODES"]) {
                Ok(v) => s += &format!("CLUSTER NODES:\n{}\n", v.trim_end()),
                Err(e) => s += &format!("CLUSTER NODES failed: {e}\n"),
            }
        }
        if !alive && !n.log_path().exists() {
            s += "(killed by the harness; its wrapper removed the dir)\n";
            continue;
        }
        let stdout = tail(&n.dir.path().join("stdout.log"), LOG_TAIL_LINES);
        if !stdout.trim().is_empty() {
            s += &format!("stdout/stderr:\n{stdout}\n");
        }
        s += &format!(
            "redis.log (last {LOG_TAIL_LINES} lines):\n{}\n",
            tail(&n.log_path(), LOG_TAIL_LINES)
        );
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Hash slots

/// Commands that verification could cost (everything but cluster housekeeping and pub/sub).
pub fn data_commands(stats: &HashMap<String, u64>) -> u64 {
    stats
        .iter()
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "cluster|slots"
                    | "cluster|nodes"
                    | "cluster|shards"
                    | "cluster|info"
                    | "info"
                    | "ping"
                    | "subscribe"
                    | "client|setinfo"
                    | "client|setname"
                    | "hello"
                    | "config|resetstat"
                    | "command"
                    | "command|docs"
                    | "readonly"
                    | "replconf"
                    | "psync"
                    | "sync"
            )
        })
        .map(|(_, calls)| calls)
        .sum()
}

//! The cluster connection every Redis call clones, kept up to date with the cluster's topology.
//!
//! redis-rs 1.8 learns the slot map when it connects, and again only after a `MOVED` or a
//! connection error: a replica that joins later is never read from, and a node that took over
//! slots without a redirect reaching this client is not known. So a task owned by the store asks
//! one node for `CLUSTER SLOTS` every [`TOPOLOGY_CHECK_INTERVAL`] (one command, nothing else),
//! and when the answer differs from the last one, makes a new cluster connection (which learns
//! the new map) and puts it in place for every call after it. Calls in flight finish on the old
//! one, which closes when its last clone is dropped.

use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::RwLock;
use redis::Value;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use crate::metrics::Metrics;

/// How often the slot map is compared with the cluster's.
pub const TOPOLOGY_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// One slot range of `CLUSTER SLOTS`: its bounds, its primary and its replicas (sorted), by
/// address. Node ids are left out: an address is what a connection needs.
type Range = (i64, i64, String, Vec<String>);

/// Which primary owns which slots: `(first slot, last slot, primary address)`.
type SlotOwners = Arc<[(u16, u16, Arc<str>)]>;

/// The connection calls use, replaced when the topology changes, and which primary owns
/// which slots as last seen (for the breakers).
pub struct SharedConnection {
    current: RwLock<ClusterConnection>,
    owners: RwLock<SlotOwners>,
}

impl SharedConnection {
    pub fn new(connection: ClusterConnection) -> Arc<SharedConnection> {
        Arc::new(SharedConnection {
            current: RwLock::new(connection),
            owners: RwLock::new(Arc::new([])),
        })
    }

    /// The address of the primary of a slot, as the last `CLUSTER SLOTS` said (`None` before
    /// the first answer).
    pub fn primary_of(&self, slot: u16) -> Option<Arc<str>> {
        let owners = Arc::clone(&self.owners.read());
        owners
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, primary)| Arc::clone(primary))
    }

    /// Every primary's address, as the last `CLUSTER SLOTS` said.
    pub fn primaries(&self) -> Vec<Arc<str>> {
        let owners = Arc::clone(&self.owners.read());
        let mut primaries: Vec<Arc<str>> = Vec::new();
        for (_, _, primary) in owners.iter() {
            if !primaries.contains(primary) {
                primaries.push(Arc::clone(primary));
            }
        }
        primaries
    }

    fn learn_owners(&self, ranges: &[Range]) {
        let owners: SlotOwners = ranges
            .iter()
            .filter_map(|(start, end, primary, _)| {
                Some((
                    u16::try_from(*start).ok()?,
                    u16::try_from(*end).ok()?,
                    Arc::from(primary.as_str()),
                ))
            })
            .collect();
        *self.owners.write() = owners;
    }

    /// A handle on the current connection (a clone: cheap, and it outlives a replacement).
    pub fn get(&self) -> ClusterConnection {
        self.current.read().clone()
    }

    fn replace(&self, connection: ClusterConnection) {
        *self.current.write() = connection;
    }
}

/// Starts the task that keeps `shared` up to date; it ends with the store (the last strong
/// reference to `shared`).
pub fn spawn_watch(
    client: ClusterClient,
    shared: &Arc<SharedConnection>,
    connect_timeout: Duration,
    metrics: Arc<Metrics>,
) {
    let shared = Arc::downgrade(shared);
    tokio::spawn(watch(client, shared, connect_timeout, metrics));
}

async fn watch(
    client: ClusterClient,
    shared: Weak<SharedConnection>,
    connect_timeout: Duration,
    metrics: Arc<Metrics>,
) {
    // The map the connection learnt when it was made, near enough: asked at once (a change in
    // the moment between is caught by the client's redirects, or by the next change).
    let mut known: Option<Vec<Range>> = match shared.upgrade() {
        Some(shared) => {
            let map = slots(shared.get(), connect_timeout).await;
            if let Some(map) = &map {
                shared.learn_owners(map);
            }
            map
        }
        None => return,
    };
    loop {
        tokio::time::sleep(TOPOLOGY_CHECK_INTERVAL).await;
        let Some(connection) = shared.upgrade().map(|s| s.get()) else {
            return;
        };
        let Some(now) = slots(connection, connect_timeout).await else {
            // No answer: the client's own recovery deals with a cluster that does not answer.
            continue;
        };
        if let Some(shared) = shared.upgrade() {
            shared.learn_owners(&now);
        }
        let Some(before) = known.replace(now.clone()) else {
            continue;
        };
        if before == now {
            continue;
        }
        let connect = tokio::time::timeout(connect_timeout * 4, client.get_async_connection());
        match connect.await {
            Ok(Ok(fresh)) => {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                shared.replace(fresh);
                metrics.topology_change();
                tracing::info!(
                    ranges = now.len(),
                    "Redis Cluster topology changed: the slot map was learnt again"
                );
            }
            Ok(Err(error)) => {
                // Try again at the next check.
                known = Some(before);
                tracing::warn!(%error, "Redis Cluster topology changed, reconnecting failed");
            }
            Err(_) => {
                known = Some(before);
                tracing::warn!("Redis Cluster topology changed, reconnecting timed out");
            }
        }
    }
}

/// The cluster's slot map as one node sees it, in a canonical order.
async fn slots(mut connection: ClusterConnection, timeout: Duration) -> Option<Vec<Range>> {
    let command = redis::cmd("CLUSTER").arg("SLOTS").clone();
    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
    let answer = tokio::time::timeout(timeout * 2, connection.route_command(command, route))
        .await
        .ok()?
        .ok()?;
    parse_slots(&answer)
}

/// Parses a `CLUSTER SLOTS` reply; `None` when it is not one.
pub fn parse_slots(answer: &Value) -> Option<Vec<Range>> {
    let Value::Array(entries) = answer else {
        return None;
    };
    let mut ranges = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(fields) = entry else {
            return None;
        };
        let [Value::Int(start), Value::Int(end), primary, replicas @ ..] = fields.as_slice() else {
            return None;
        };
        let mut replicas: Vec<String> = replicas.iter().filter_map(address).collect();
        replicas.sort_unstable();
        ranges.push((*start, *end, address(primary)?, replicas));
    }
    ranges.sort_unstable();
    Some(ranges)
}

/// `ip:port` of a node entry (`[ip, port, id, ...]`).
fn address(node: &Value) -> Option<String> {
    let Value::Array(fields) = node else {
        return None;
    };
    match fields.as_slice() {
        [Value::BulkString(ip), Value::Int(port), ..] => {
            Some(format!("{}:{port}", String::from_utf8_lossy(ip)))
        }
        [Value::SimpleString(ip), Value::Int(port), ..] => Some(format!("{ip}:{port}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_slots;
    use redis::Value;

    fn node(ip: &str, port: i64, id: &str) -> Value {
        Value::Array(vec![
            Value::BulkString(ip.into()),
            Value::Int(port),
            Value::BulkString(id.into()),
        ])
    }

    #[test]
    fn a_slot_map_is_compared_by_address_whatever_the_order() {
        let range = |start, end, nodes: Vec<Value>| {
            let mut fields = vec![Value::Int(start), Value::Int(end)];
            fields.extend(nodes);
            Value::Array(fields)
        };
        let one = Value::Array(vec![
            range(
                0,
                8191,
                vec![node("10.0.0.1", 7000, "a"), node("10.0.0.2", 7001, "b")],
            ),
            range(8192, 16383, vec![node("10.0.0.3", 7002, "c")]),
        ]);
        // Same map, listed in another order, node ids changed (a restarted node keeps its
        // address): the same topology.
        let same = Value::Array(vec![
            range(8192, 16383, vec![node("10.0.0.3", 7002, "x")]),
            range(
                0,
                8191,
                vec![node("10.0.0.1", 7000, "y"), node("10.0.0.2", 7001, "z")],
            ),
        ]);
        assert_eq!(parse_slots(&one), parse_slots(&same));
        // A replica joined.
        let joined = Value::Array(vec![
            range(
                0,
                8191,
                vec![node("10.0.0.1", 7000, "a"), node("10.0.0.2", 7001, "b")],
            ),
            range(
                8192,
                16383,
                vec![node("10.0.0.3", 7002, "c"), node("10.0.0.4", 7003, "d")],
            ),
        ]);
        assert_ne!(parse_slots(&one), parse_slots(&joined));
        assert_eq!(parse_slots(&Value::Int(1)), None);
    }
}

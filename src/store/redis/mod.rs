//! The Redis Cluster store: the key schema, the Lua scripts, and the timing of every call.
//!
//! Routing (slots, MOVED/ASK, topology refresh, replica reads, TLS, ACL) is the `redis` crate's
//! async cluster client; this module only decides *what* is stored *where*:
//!
//! | key | type | holds | expires |
//! | --- | --- | --- | --- |
//! | `P:{<sid>}:s` | hash | `sub`, `data` (JSON), `exp`, `v` (version), `secret` (per-session key), `deny:<jti>` (a revoked token id that names this session) | with the session |
//! | `P:{<jti>}:deny` | string | deny-list entry of a token id, whatever kind of token carries it | with the token |
//! | `P:{u:<sub>}:sessions` | sorted set | ids of the subject's sessions, scored by their end; ended ones dropped at each new session (log out everywhere) | with its longest session |
//!
//! `P` is `--redis-key-prefix`. Every token id is deny-listed under its own key, so a
//! revocation never depends on knowing what kind of token carries the id (a request
//! `{"jti","exp"}` cannot know whether its token is bound to a session). An id that names a
//! session (`<sid>.<random>`, as the sidecar mints them: [`super::session_named_by_jti`]) is
//! *also* marked in that session's hash, first. So a verification miss of a token bound to the
//! session its id names is one `HMGET` of the session with its `deny:<jti>` field: one command,
//! one slot (SPEC §5). Any other token with a `jti` reads its session and its deny key, two
//! single-key commands sent at once (one round trip of latency), each routed and redirected
//! (MOVED/ASK) by the client on its own. (A pipeline cannot do it: the keys sit in different
//! slots, and redis-rs 1.8 does not follow ASK for pipelines anyway.) Revocations are always
//! read on the primary, also with `--redis-read-from-replicas` (which therefore reads the deny
//! key, not the session's copy): a replica that lags must not un-revoke a token.
//! Every write that other sidecars must hear about (patch, delete, revoke) is a Lua script
//! that also PUBLISHes the change on `P:invalidations`, so a write that succeeded was always
//! announced. A Redis Cluster broadcasts a plain PUBLISH to every node; [`feed`] subscribes.

pub mod breaker;
pub mod feed;
pub mod topology;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use breaker::{Admission, Breakers, key_slot};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::io::tcp::TcpSettings;
use redis::{ConnectionInfo, IntoConnectionInfo, RedisError, Script, TlsCertificates};
use serde_json::Value;
use topology::SharedConnection;

use super::{
    FeedEvents, Invalidation, Lookup, LookupQuery, MAX_UNIX_TIME, NewSession, PatchLimits,
    PatchOutcome, Replication, Session, SessionStore, merge_patch, session_named_by_jti, unix_now,
};
use crate::error::StoreError;
use crate::metrics::Metrics;
use feed::{FeedSource, encode_at, now_micros};
use futures_util::StreamExt;

/// Connection settings of the Redis Cluster store.
#[derive(Clone)]
pub struct RedisConfig {
    pub nodes: Vec<String>,
    pub key_prefix: String,
    /// PEM roots for `rediss://` (None: the system's roots).
    pub ca_pem: Option<Vec<u8>>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub read_from_replicas: bool,
    /// The feed also subscribes to every primary (`--redis-feed-per-primary`).
    pub feed_per_primary: bool,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// Longest wait for a replica to acknowledge a revocation (`WAIT 1 <ms>`).
    pub replication_wait: Duration,
    /// Where the password is read again from when it rotates.
    pub password_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("nodes", &self.nodes)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("read_from_replicas", &self.read_from_replicas)
            .field("feed_per_primary", &self.feed_per_primary)
            .finish()
    }
}

/// What is wrong with a Redis configuration (the caller names the flag).
#[derive(Debug, thiserror::Error)]
pub enum RedisConfigError {
    #[error("{0}")]
    BadNode(String),
    #[error("mixes redis:// and rediss:// nodes: a cluster is either TLS or not")]
    MixedTls,
    #[error("must be printable ASCII without spaces or braces")]
    BadKeyPrefix,
    #[error("a CA is given but no node URL is rediss://")]
    CaWithoutTls,
    #[error("the CA file holds no PEM certificate")]
    CaNotPem,
}

impl RedisConfig {
    /// This configuration, or everything that is wrong with it.
    pub fn checked(self) -> Result<RedisConfig, Vec<RedisConfigError>> {
        let mut problems: Vec<RedisConfigError> = self
            .nodes
            .iter()
            .filter_map(|node| validate_redis_url(node).err())
            .map(RedisConfigError::BadNode)
            .collect();
        if self.key_prefix.is_empty()
            || !self
                .key_prefix
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
        {
            problems.push(RedisConfigError::BadKeyPrefix);
        }
        let tls = self
            .nodes
            .iter()
            .filter(|n| n.starts_with("rediss://"))
            .count();
        if tls != 0 && tls != self.nodes.len() {
            problems.push(RedisConfigError::MixedTls);
        }
        match &self.ca_pem {
            Some(_) if tls == 0 => problems.push(RedisConfigError::CaWithoutTls),
            Some(pem) if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => {
                problems.push(RedisConfigError::CaNotPem)
            }
            _ => {}
        }
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(problems)
        }
    }
}

fn validate_redis_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
        .ok_or_else(|| format!("`{url}` is not a redis:// or rediss:// URL"))?;
    let host_port = rest.rsplit('@').next().unwrap_or(rest);
    let host_port = host_port.split('/').next().unwrap_or(host_port);
    let (host, port) = host_port
        .rsplit_once(':')
        .ok_or_else(|| format!("`{url}` has no port"))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("`{url}` is not host:port"));
    }
    redis::IntoConnectionInfo::into_connection_info(url)
        .map(|_| ())
        .map_err(|e| format!("`{url}`: {e}"))
}

/// The hash fields of a session that a verification reads, in this order.
const SESSION_FIELDS: [&str; 4] = ["sub", "data", "exp", "secret"];

/// Most attempts at a compare-and-set patch before answering `409 contended`.
const MAX_PATCH_ATTEMPTS: u32 = 200;

/// Session deletions of one log-out-everywhere in flight at once.
const SUBJECT_DELETIONS_IN_FLIGHT: usize = 16;

/// Writes a new session and its expiry atomically.
const CREATE_SESSION: &str = r#"
redis.call('HSET', KEYS[1], 'sub', ARGV[1], 'data', ARGV[2], 'exp', ARGV[3], 'v', '0')
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'secret', ARGV[4]) end
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return 1
"#;

/// Adds a session id to its subject's index, scored by the session's end, drops the ids of
/// sessions that have ended (by the server's clock), and makes the index live as long as its
/// longest session. The index of a subject who logs in every day stays as small as the
/// sessions that are alive.
const INDEX_SESSION: &str = r#"
local now = redis.call('TIME')[1]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local longest = redis.call('ZRANGE', KEYS[1], 0, 0, 'REV', 'WITHSCORES')
redis.call('EXPIREAT', KEYS[1], longest[2])
return 1
"#;

/// Replaces a session's data if its version is still the one read (compare-and-set), and
/// publishes the update. Returns 1 when written, 0 when another write came first, -1 when the
/// session is gone.
const COMPARE_AND_SET_DATA: &str = r#"
local version = redis.call('HGET', KEYS[1], 'v')
if not version then return -1 end
if version ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'v', tostring(tonumber(version) + 1))
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"#;

/// Deny-lists a token id until its `exp` (never shortening an entry already there) and
/// publishes the revocation.
const REVOKE_TOKEN: &str = r#"
local deny_until = tonumber(ARGV[1])
local current = redis.call('EXPIRETIME', KEYS[1])
if current < deny_until then
  redis.call('SET', KEYS[1], '1', 'EXAT', deny_until)
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"#;

/// Marks a token id revoked in the hash of the session the id names (`deny:<jti>`), when that
/// session lives: it goes with the session, which a token bound to it cannot outlive.
const REVOKE_IN_SESSION: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], '1')
  return 1
end
return 0
"#;

/// Deletes a session, publishes its end, and returns its subject (nil when there was none).
const DELETE_SESSION: &str = r#"
local sub = redis.call('HGET', KEYS[1], 'sub')
if not sub then return false end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return sub
"#;

/// Key names under one prefix.
#[derive(Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn session(&self, sid: &str) -> String {
        format!("{}:{{{sid}}}:s", self.prefix)
    }
    fn deny(&self, jti: &str) -> String {
        format!("{}:{{{jti}}}:deny", self.prefix)
    }
    fn subject(&self, sub: &str) -> String {
        format!("{}:{{u:{sub}}}:sessions", self.prefix)
    }
    fn channel(&self) -> String {
        format!("{}:invalidations", self.prefix)
    }
}

/// Sessions in a Redis Cluster.
pub struct RedisStore {
    /// The cluster connection, replaced when the topology changes (`topology.rs`).
    connection: Arc<SharedConnection>,
    /// Per primary: lookups skip a node that keeps failing (`breaker.rs`).
    breakers: Breakers,
    keys: Keys,
    metrics: Arc<Metrics>,
    /// Outer bound on one call, retries and redirects included: a guard against client hangs.
    call_timeout: Duration,
    /// Session reads go to replicas; a missing session is confirmed on the primary.
    read_from_replicas: bool,
    /// Longest `WAIT` for a replica after a revocation, below the command timeout (a longer
    /// one would only time out the command).
    replication_wait: Duration,
    feed_source: FeedSource,
    create_session: Script,
    index_session: Script,
    compare_and_set: Script,
    delete_session: Script,
    revoke_token: Script,
    revoke_in_session: Script,
}

impl RedisStore {
    /// Connects to the cluster (bounded by the connect timeout, a few attempts).
    pub async fn connect(config: &RedisConfig, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
        let nodes = config
            .nodes
            .iter()
            .map(|url| node_info(url, config))
            .collect::<Result<Vec<_>, _>>()?;
        let mut builder = ClusterClientBuilder::new(nodes.clone())
            .connection_timeout(config.connect_timeout)
            .response_timeout(config.command_timeout)
            // Fail fast: a miss that cannot be answered soon is better answered 503 than late.
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(100)
            .tcp_settings(TcpSettings::default().set_nodelay(true));
        if let Some(user) = &config.username {
            builder = builder.username(user);
        }
        // The password as it is now, and as it rotates (`--redis-password-file` is read again
        // every second): connections re-authenticate when it changes, and new ones (after a
        // reconnect) use the current one.
        let password = config.password.clone().map(|password| {
            let (current, updates) = tokio::sync::watch::channel(password);
            if let Some(path) = config.password_file.clone() {
                tokio::spawn(crate::credentials::follow_password_file(current, path));
            }
            updates
        });
        if let Some(updates) = &password {
            builder = builder.set_credentials_provider(RotatingPassword {
                username: config.username.clone().unwrap_or_else(|| "default".into()),
                current: updates.clone(),
            });
        }
        if let Some(ca) = &config.ca_pem {
            builder = builder.certs(TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            });
        }
        // A read routing strategy is what makes redis-rs send READONLY to replicas (without
        // one, a read routed to a replica gets MOVED). Without --redis-read-from-replicas the
        // strategy keeps every read on the primary, so that a replica is read only when the
        // primary does not answer (a failover).
        builder = if config.read_from_replicas {
            builder.read_routing_strategy(redis::cluster_read_routing::RandomReplicaStrategy)
        } else {
            builder.read_routing_strategy(PrimaryFirst)
        };
        let client = builder
            .build()
            .map_err(|e| StoreError::Unavailable(format!("--redis-nodes: {e}")))?;
        let attempt_timeout = config.connect_timeout * 4;
        let mut last_error = String::from("no attempt made");
        let mut connection = None;
        for attempt in 0..3u32 {
            match tokio::time::timeout(attempt_timeout, client.get_async_connection()).await {
                Ok(Ok(conn)) => {
                    connection = Some(conn);
                    break;
                }
                Ok(Err(e)) => last_error = e.to_string(),
                Err(_) => last_error = "timed out".into(),
            }
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
        }
        let connection = connection.ok_or_else(|| {
            StoreError::Unavailable(format!("cannot connect to the cluster: {last_error}"))
        })?;
        let connection = SharedConnection::new(connection);
        topology::spawn_watch(
            client,
            &connection,
            config.connect_timeout,
            Arc::clone(&metrics),
        );
        let keys = Keys {
            prefix: config.key_prefix.clone(),
        };
        let feed_source = FeedSource {
            password,
            nodes,
            ca_pem: config.ca_pem.clone(),
            channel: keys.channel(),
            connect_timeout: config.connect_timeout,
            primaries: config.feed_per_primary.then(|| Arc::clone(&connection)),
        };
        Ok(RedisStore {
            breakers: Breakers::new(Arc::clone(&metrics)),
            connection,
            keys,
            metrics,
            call_timeout: config.command_timeout * 4,
            read_from_replicas: config.read_from_replicas,
            replication_wait: config
                .replication_wait
                .min(config.command_timeout.mul_f64(0.75)),
            feed_source,
            create_session: Script::new(CREATE_SESSION),
            index_session: Script::new(INDEX_SESSION),
            compare_and_set: Script::new(COMPARE_AND_SET_DATA),
            delete_session: Script::new(DELETE_SESSION),
            revoke_token: Script::new(REVOKE_TOKEN),
            revoke_in_session: Script::new(REVOKE_IN_SESSION),
        })
    }

    /// Runs one Redis call with the outer timeout, and counts it.
    async fn call<T, F>(&self, command: &'static str, call: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, RedisError>>,
    {
        let started = Instant::now();
        let result = tokio::time::timeout(self.call_timeout, call).await;
        self.finish(command, started, result)
    }

    /// Runs a call that may run twice (every write of this store is: a create with a fresh id,
    /// a compare-and-set merge patch, a delete, an extend-only deny entry, an index update),
    /// again once on a fresh connection when the connection it went out on was found dropped
    /// before an answer came. A connection the cluster closed while idle (a node restarted) is
    /// only found dead by the next command on it; the client cannot tell whether that command
    /// ran, so it does not retry it itself.
    async fn call_idempotent<T, F, M>(
        &self,
        command: &'static str,
        make: M,
    ) -> Result<T, StoreError>
    where
        M: Fn(ClusterConnection) -> F,
        F: Future<Output = Result<T, RedisError>>,
    {
        let started = Instant::now();
        let first = tokio::time::timeout(self.call_timeout, make(self.connection.get())).await;
        match first {
            Ok(Err(error)) if error.is_connection_dropped() => {
                tracing::debug!(command, %error, "connection found dropped: the call runs once more");
                let again = Instant::now();
                let second =
                    tokio::time::timeout(self.call_timeout, make(self.connection.get())).await;
                self.metrics
                    .redis_command(command, "error", again.duration_since(started));
                self.finish(command, again, second)
            }
            first => self.finish(command, started, first),
        }
    }

    /// Classifies and counts the result of one call.
    fn finish<T>(
        &self,
        command: &'static str,
        started: Instant,
        result: Result<Result<T, RedisError>, tokio::time::error::Elapsed>,
    ) -> Result<T, StoreError> {
        let (outcome, result) = match result {
            Ok(Ok(value)) => ("ok", Ok(value)),
            Ok(Err(error)) if error.is_timeout() => ("timeout", Err(StoreError::Timeout)),
            Ok(Err(error)) => ("error", Err(classify(&error))),
            Err(_) => ("timeout", Err(StoreError::Timeout)),
        };
        self.metrics
            .redis_command(command, outcome, started.elapsed());
        if let Err(error) = &result {
            tracing::debug!(command, %error, "redis call failed");
        }
        result
    }

    /// Deletes one session (publishing its end); its subject when it existed, and whether a
    /// replica holds the deletion.
    async fn delete_one(&self, sid: &str) -> Result<(Option<String>, Replication), StoreError> {
        let key = self.keys.session(sid);
        let message = encode_at(&Invalidation::SessionDeleted(sid.to_owned()), now_micros());
        let (key_ref, message) = (key.as_str(), message.as_str());
        let sub: Option<String> = self
            .call_idempotent("session_delete", move |mut conn| async move {
                self.delete_session
                    .key(key_ref)
                    .arg(&self.feed_source.channel)
                    .arg(message)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let replication = match sub {
            Some(_) => self.await_replica(&key).await,
            None => Replication::NotApplicable,
        };
        Ok((sub, replication))
    }

    /// Waits (at most `--redis-replication-wait-ms`) until a replica of `key`'s primary holds
    /// every write this client made there: `WAIT 1 <ms>` on the same node and connection as
    /// the write. Replication is asynchronous, so without it a primary that fails right after
    /// acknowledging a revocation can take the revocation with it. An error or a timeout is
    /// `Unconfirmed`: the write stands on the primary, and the caller says so.
    async fn await_replica(&self, key: &str) -> Replication {
        let replication = self.replica_ack(key).await;
        self.record_replication(replication);
        replication
    }

    /// Counts an acknowledged change by whether a replica holds it.
    fn record_replication(&self, replication: Replication) {
        self.metrics.revocation_replication(match replication {
            Replication::Confirmed => "confirmed",
            _ => "unconfirmed",
        });
    }

    /// [`Self::await_replica`] without counting it (for a change made of several writes).
    async fn replica_ack(&self, key: &str) -> Replication {
        let mut conn = self.connection.get();
        let wait_ms = u64::try_from(self.replication_wait.as_millis()).unwrap_or(u64::MAX);
        let acknowledged: Result<redis::Value, StoreError> = self
            .call("replication_wait", async {
                let mut command = redis::cmd("WAIT");
                command.arg(1).arg(wait_ms);
                conn.route_command(command, on_primary(key)).await
            })
            .await;
        match acknowledged {
            Ok(redis::Value::Int(replicas)) if replicas >= 1 => Replication::Confirmed,
            _ => Replication::Unconfirmed,
        }
    }

    /// Removes ended sessions from a subject's index. Best effort: a stale id in the index
    /// costs one DEL of nothing at the next log-out-everywhere, so a failure here must not
    /// fail the deletion that already happened.
    async fn unindex(&self, sub: &str, sids: &[String]) {
        let key = self.keys.subject(sub);
        let key = key.as_str();
        let removed: Result<i64, _> = self
            .call_idempotent("subject_index", move |mut conn| async move {
                redis::cmd("ZREM")
                    .arg(key)
                    .arg(sids)
                    .query_async(&mut conn)
                    .await
            })
            .await;
        if let Err(error) = removed {
            tracing::debug!(%error, "could not update a subject's session index");
        }
    }

    /// The session a verification needs, from a replica when configured (a session the replica
    /// lacks is confirmed on the primary: only the primary may say it does not exist). When the
    /// node asked first does not answer (a primary that died, before its replica is promoted),
    /// the other side of the shard is asked ([`Self::read_elsewhere`]).
    ///
    /// With `revocation_of` (a token id that names this session, never with replica reads) the
    /// same command also reads that id's revocation mark in the session's hash: the answer says
    /// whether it is there.
    async fn read_session_for_lookup(
        &self,
        sid: &str,
        revocation_of: Option<&str>,
    ) -> Result<(Option<Session>, bool), StoreError> {
        let mut conn = self.connection.get();
        let key = self.keys.session(sid);
        let mut command = redis::cmd("HMGET");
        command.arg(&key).arg(&SESSION_FIELDS);
        if let Some(jti) = revocation_of {
            command.arg(deny_field(jti));
        }
        // The first read goes to the primary (unless replicas are read): past its breaker.
        let first: Result<Vec<Option<String>>, StoreError> = if self.read_from_replicas {
            self.call("lookup", async { command.query_async(&mut conn).await })
                .await
        } else {
            self.past_breaker(&key, async { command.query_async(&mut conn).await })
                .await
        };
        let mut fields: Vec<Option<String>> = match first {
            Ok(fields) => fields,
            Err(error) => self.read_elsewhere(&command, &key, error).await?,
        };
        if self.read_from_replicas && fields.first().is_some_and(Option::is_none) {
            let reply = self
                .call("lookup_primary", async {
                    conn.route_command(command.clone(), on_primary(&key)).await
                })
                .await?;
            fields =
                redis::from_redis_value(reply).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        }
        let revoked = revocation_of.is_some()
            && fields
                .get(SESSION_FIELDS.len())
                .is_some_and(Option::is_some);
        Ok((session_from_fields(sid, fields)?, revoked))
    }

    /// Whether a token id is deny-listed, asked of the primary of its slot; of its replica
    /// only when the primary does not answer (an answered revocation is held by a replica:
    /// `WAIT` after every revoking write, README "Consistency guarantees").
    async fn is_denied(&self, jti: &str) -> Result<bool, StoreError> {
        let mut conn = self.connection.get();
        let key = self.keys.deny(jti);
        let mut command = redis::cmd("EXISTS");
        command.arg(&key);
        let first: Result<redis::Value, StoreError> = self
            .past_breaker(&key, async {
                conn.route_command(command.clone(), on_primary(&key)).await
            })
            .await;
        let exists: i64 = match first {
            Ok(reply) => {
                redis::from_redis_value(reply).map_err(|e| StoreError::Corrupt(e.to_string()))?
            }
            Err(error @ StoreError::Corrupt(_)) => return Err(error),
            Err(_) => {
                let reply = self
                    .call("lookup_replica", async {
                        conn.route_command(command, on_replica(&key)).await
                    })
                    .await?;
                redis::from_redis_value(reply).map_err(|e| StoreError::Corrupt(e.to_string()))?
            }
        };
        Ok(exists > 0)
    }

    /// A lookup read on the primary of `key`'s slot, unless that node's breaker is open (then
    /// it fails at once, and the caller reads the replica).
    async fn past_breaker<T, F>(&self, key: &str, call: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, RedisError>>,
    {
        let Some(node) = self.connection.primary_of(key_slot(key.as_bytes())) else {
            return self.call("lookup", call).await;
        };
        let admission = self.breakers.admit(&node);
        if admission == Admission::Skip {
            return Err(StoreError::Unavailable("breaker open".into()));
        }
        let result = self.call("lookup", call).await;
        let answered = !matches!(
            result,
            Err(StoreError::Timeout | StoreError::Unavailable(_))
        );
        self.breakers.record(&node, admission, answered);
        result
    }

    /// A lookup read whose first node did not answer, asked of the other side of its shard:
    /// the replica when the primary was asked, the primary when a replica was. A reply the
    /// store could not read is not retried.
    async fn read_elsewhere<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
        key: &str,
        first_error: StoreError,
    ) -> Result<T, StoreError> {
        if matches!(first_error, StoreError::Corrupt(_)) {
            return Err(first_error);
        }
        let mut conn = self.connection.get();
        let (label, route) = if self.read_from_replicas {
            ("lookup_primary", on_primary(key))
        } else {
            ("lookup_replica", on_replica(key))
        };
        let reply = self
            .call(label, async {
                conn.route_command(command.clone(), route).await
            })
            .await?;
        redis::from_redis_value(reply).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    async fn read_session(&self, sid: &str) -> Result<Option<(Session, String)>, StoreError> {
        let key = self.keys.session(sid);
        let key = key.as_str();
        let fields: Vec<Option<String>> = self
            .call_idempotent("session_read", move |mut conn| async move {
                redis::cmd("HMGET")
                    .arg(key)
                    .arg(&SESSION_FIELDS)
                    .arg("v")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let version = fields
            .get(4)
            .cloned()
            .flatten()
            .unwrap_or_else(|| "0".into());
        Ok(session_from_fields(sid, fields)?.map(|session| (session, version)))
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn lookup(&self, query: LookupQuery<'_>) -> Result<Lookup, StoreError> {
        // A token bound to the session its id names: one command reads both (its revocation
        // is written there too). Not with replica reads: a revocation is read on the primary.
        if !self.read_from_replicas
            && let Some(sid) = query.session_holding_revocation()
        {
            let (session, revoked) = self.read_session_for_lookup(sid, query.jti).await?;
            return Ok(Lookup { session, revoked });
        }
        let session = async {
            match query.sid {
                Some(sid) => Ok(self.read_session_for_lookup(sid, None).await?.0),
                None => Ok(None),
            }
        };
        let revoked = async {
            match query.jti {
                Some(jti) => self.is_denied(jti).await,
                None => Ok(false),
            }
        };
        let (session, revoked) = tokio::join!(session, revoked);
        Ok(Lookup {
            session: session?,
            revoked: revoked?,
        })
    }

    async fn create(&self, session: NewSession) -> Result<(), StoreError> {
        let data =
            serde_json::to_string(&session.data).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let key = self.keys.session(&session.sid);
        let secret = session.secret.clone().unwrap_or_default();
        let (key, secret, data, session) = (key.as_str(), secret.as_str(), data.as_str(), &session);
        let _: i64 = self
            .call_idempotent("session_create", move |mut conn| async move {
                self.create_session
                    .key(key)
                    .arg(&session.sub)
                    .arg(data)
                    .arg(session.expires_at)
                    .arg(secret)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let subject_key = self.keys.subject(&session.sub);
        let subject_key = subject_key.as_str();
        let _: i64 = self
            .call_idempotent("subject_index", move |mut conn| async move {
                self.index_session
                    .key(subject_key)
                    .arg(&session.sid)
                    .arg(session.expires_at)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(())
    }

    async fn get(&self, sid: &str) -> Result<Option<Session>, StoreError> {
        Ok(self.read_session(sid).await?.map(|(session, _)| session))
    }

    async fn patch(
        &self,
        sid: &str,
        patch: &Value,
        limits: PatchLimits,
    ) -> Result<PatchOutcome, StoreError> {
        let key = self.keys.session(sid);
        let message = encode_at(&Invalidation::SessionUpdated(sid.to_owned()), now_micros());
        for attempt in 0..MAX_PATCH_ATTEMPTS {
            let Some((mut session, version)) = self.read_session(sid).await? else {
                return Ok(PatchOutcome::NotFound);
            };
            merge_patch(&mut session.data, patch);
            let data = serde_json::to_string(&session.data)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if data.len() > limits.max_session_bytes {
                return Ok(PatchOutcome::TooLarge);
            }
            let (key, version, data, message) = (
                key.as_str(),
                version.as_str(),
                data.as_str(),
                message.as_str(),
            );
            let written: i64 = self
                .call_idempotent("session_patch", move |mut conn| async move {
                    self.compare_and_set
                        .key(key)
                        .arg(version)
                        .arg(data)
                        .arg(&self.feed_source.channel)
                        .arg(message)
                        .invoke_async(&mut conn)
                        .await
                })
                .await?;
            match written {
                1 => return Ok(PatchOutcome::Patched(session)),
                -1 => return Ok(PatchOutcome::NotFound),
                _ => {
                    // Another patch won the race: read again, after a short random pause so
                    // that the losers do not collide again in lockstep.
                    let pause = rand::random_range(0..=(attempt.min(20) as u64 * 200 + 100));
                    tokio::time::sleep(Duration::from_micros(pause)).await;
                }
            }
        }
        Err(StoreError::Contended)
    }

    async fn delete(&self, sid: &str) -> Result<(bool, Replication), StoreError> {
        let (Some(sub), replication) = self.delete_one(sid).await? else {
            return Ok((false, Replication::NotApplicable));
        };
        self.unindex(&sub, &[sid.to_owned()]).await;
        Ok((true, replication))
    }

    async fn delete_subject(&self, sub: &str) -> Result<(Vec<String>, Replication), StoreError> {
        let subject_key = self.keys.subject(sub);
        let subject_key = subject_key.as_str();
        let sids: Vec<String> = self
            .call_idempotent("subject_index", move |mut conn| async move {
                redis::cmd("ZRANGE")
                    .arg(subject_key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        if sids.is_empty() {
            return Ok((Vec::new(), Replication::NotApplicable));
        }
        // Each session sits in its own slot: one call per session, a bounded number in flight
        // (a subject with thousands of sessions must not open thousands of requests at once).
        let deletions = sids.clone().into_iter().map(|sid| async move {
            let ended = self.delete_one(&sid).await;
            ended.map(|(sub, replication)| (sid, sub.is_some(), replication))
        });
        let results: Vec<_> = futures_util::stream::iter(deletions)
            .buffer_unordered(SUBJECT_DELETIONS_IN_FLIGHT)
            .collect()
            .await;
        let mut deleted = Vec::with_capacity(sids.len());
        let mut first_error = None;
        let mut replication = Replication::NotApplicable;
        for result in results {
            match result {
                Ok((sid, true, held)) => {
                    deleted.push(sid);
                    replication = replication.and(held);
                }
                Ok((_, false, _)) => {}
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        // Ids of sessions that are gone, whether just deleted or already expired.
        let gone: Vec<String> = match first_error {
            Some(_) => deleted.clone(),
            None => sids,
        };
        self.unindex(sub, &gone).await;
        match first_error {
            // Some shards could not be reached: report it, so the caller retries; what was
            // deleted stays deleted (and was published).
            Some(error) => Err(error),
            None => Ok((deleted, replication)),
        }
    }

    async fn revoke(&self, jti: &str, until: u64) -> Result<Replication, StoreError> {
        // First in the hash of the session the id names, if it does (where a miss of a token
        // bound to that session reads it), then under the id, with the publication: when other
        // sidecars hear of it, both are written.
        let mut in_session = Replication::NotApplicable;
        if let Some(sid) = session_named_by_jti(jti) {
            let key = self.keys.session(sid);
            let field = deny_field(jti);
            let (key_ref, field) = (key.as_str(), field.as_str());
            let written: i64 = self
                .call_idempotent("revoke", move |mut conn| async move {
                    self.revoke_in_session
                        .key(key_ref)
                        .arg(field)
                        .invoke_async(&mut conn)
                        .await
                })
                .await?;
            if written == 1 {
                in_session = self.replica_ack(&key).await;
            }
        }
        let key = self.keys.deny(jti);
        let message = encode_at(&Invalidation::TokenRevoked(jti.to_owned()), now_micros());
        let until = until.min(MAX_UNIX_TIME);
        let (key_ref, message) = (key.as_str(), message.as_str());
        let _: i64 = self
            .call_idempotent("revoke", move |mut conn| async move {
                self.revoke_token
                    .key(key_ref)
                    .arg(until)
                    .arg(&self.feed_source.channel)
                    .arg(message)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let replication = self.replica_ack(&key).await.and(in_session);
        self.record_replication(replication);
        Ok(replication)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self
            .call_idempotent("ping", |mut conn| async move {
                redis::cmd("PING").query_async(&mut conn).await
            })
            .await?;
        Ok(())
    }

    fn feed(&self) -> FeedEvents {
        feed::start(self.feed_source.clone())
    }
}

/// The Redis password as it rotates, for the cluster client: the current one first (to
/// authenticate a new connection), then each new one (to re-authenticate open connections).
struct RotatingPassword {
    username: String,
    current: tokio::sync::watch::Receiver<String>,
}

impl redis::StreamingCredentialsProvider for RotatingPassword {
    fn subscribe(
        &self,
    ) -> std::pin::Pin<
        Box<dyn futures_util::Stream<Item = redis::RedisResult<redis::BasicAuth>> + Send + 'static>,
    > {
        let username = self.username.clone();
        let mut current = self.current.clone();
        current.mark_changed();
        Box::pin(futures_util::stream::unfold(
            (username, current),
            |(username, mut current)| async move {
                current.changed().await.ok()?;
                let password = current.borrow_and_update().clone();
                let auth = redis::BasicAuth::new(username.clone(), password);
                Some((Ok(auth), (username, current)))
            },
        ))
    }
}

/// Reads on the primary, with READONLY sent to replica connections so that a read can be
/// routed to a replica explicitly ([`on_replica`]) when the primary does not answer.
#[derive(Debug, Default)]
struct PrimaryFirst;

impl redis::cluster_read_routing::ReadRoutingStrategy for PrimaryFirst {
    fn route_read<'a>(
        &self,
        candidates: &redis::cluster_read_routing::ReadCandidates<'a>,
    ) -> &'a redis::cluster::NodeAddress {
        use redis::cluster_read_routing::ReadCandidates;
        match candidates {
            ReadCandidates::AnyNode(candidates) => candidates.primary(),
            ReadCandidates::ReplicasOnly(candidates) => candidates.replicas().choose_random(),
        }
    }
}

/// Routes a command to a replica of `key`'s slot.
fn on_replica(key: &str) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
        key,
        SlotAddr::ReplicaRequired,
    )))
}

/// Routes a command to the primary of `key`'s slot.
fn on_primary(key: &str) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
        key,
        SlotAddr::Master,
    )))
}

fn node_info(url: &str, config: &RedisConfig) -> Result<ConnectionInfo, StoreError> {
    let info = url
        .into_connection_info()
        .map_err(|e| StoreError::Unavailable(format!("--redis-nodes: {e}")))?;
    let mut redis = info.redis_settings().clone();
    if let Some(user) = &config.username {
        redis = redis.set_username(user);
    }
    if let Some(password) = &config.password {
        redis = redis.set_password(password);
    }
    Ok(info
        .set_redis_settings(redis)
        .set_tcp_settings(TcpSettings::default().set_nodelay(true)))
}

/// The field of a session's hash that marks a token id revoked ([`REVOKE_IN_SESSION`]).
fn deny_field(jti: &str) -> String {
    format!("deny:{jti}")
}

/// Reads the HMGET reply for [`SESSION_FIELDS`] (extra fields after them are ignored).
fn session_from_fields(
    sid: &str,
    fields: Vec<Option<String>>,
) -> Result<Option<Session>, StoreError> {
    let mut fields = fields.into_iter();
    let (Some(Some(sub)), Some(Some(data)), Some(Some(exp)), secret) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next().flatten(),
    ) else {
        return Ok(None);
    };
    let exp: u64 = exp
        .parse()
        .map_err(|_| StoreError::Corrupt("session exp is not a number".into()))?;
    if exp <= unix_now() {
        return Ok(None);
    }
    let data = serde_json::from_str(&data).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(Some(Session {
        sid: sid.to_owned(),
        sub,
        data,
        expires_at: exp,
        secret,
    }))
}

fn classify(error: &RedisError) -> StoreError {
    if error.is_timeout() {
        StoreError::Timeout
    } else {
        StoreError::Unavailable(format!("{:?}", error.kind()))
    }
}

#[cfg(test)]
mod config_tests {
    use std::time::Duration;

    use super::{RedisConfig, RedisConfigError};

    fn config(nodes: &[&str], prefix: &str, ca_pem: Option<&[u8]>) -> RedisConfig {
        RedisConfig {
            nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
            key_prefix: prefix.into(),
            ca_pem: ca_pem.map(<[u8]>::to_vec),
            username: None,
            password: None,
            read_from_replicas: false,
            feed_per_primary: true,
            connect_timeout: Duration::from_millis(500),
            command_timeout: Duration::from_millis(250),
            replication_wait: Duration::from_millis(100),
            password_file: None,
        }
    }

    #[test]
    fn a_redis_configuration_reports_everything_wrong_with_it() {
        assert!(
            config(&["redis://127.0.0.1:7000"], "sidecar", None)
                .checked()
                .is_ok()
        );
        let errors = config(
            &["redis://127.0.0.1:7000", "rediss://h:7001", "http://x:1"],
            "a{b}",
            Some(b"not a certificate"),
        )
        .checked()
        .err()
        .unwrap_or_default();
        assert!(
            matches!(errors[0], RedisConfigError::BadNode(_)),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| matches!(e, RedisConfigError::BadKeyPrefix))
        );
        assert!(
            errors
                .iter()
                .any(|e| matches!(e, RedisConfigError::MixedTls))
        );
        assert!(
            errors
                .iter()
                .any(|e| matches!(e, RedisConfigError::CaNotPem))
        );
        let errors = config(&["redis://127.0.0.1:7000"], "p", Some(b"x"))
            .checked()
            .err()
            .unwrap_or_default();
        assert!(
            matches!(errors[..], [RedisConfigError::CaWithoutTls]),
            "{errors:?}"
        );
    }
}

//! The session store: what a verification miss and the session API need from wherever sessions
//! live, and the types they exchange.
//!
//! [`SessionStore::lookup`] is the only call on the verification path and must cost one round
//! trip: the session (with its per-session secret) and the `jti` deny-list entry, asked at
//! once. A token id is deny-listed in exactly one place, whatever kind of token carries it, and
//! every verification of a token with a `jti` reads that place: a revocation cannot be written
//! where the verifier does not look (SPEC §4, "A revocation is final").
//! Implementations: [`memory::MemoryStore`] (embedded, one process) and [`redis::RedisStore`]
//! (Redis Cluster). Stores never touch the cache. A store shared by several sidecars publishes
//! every change as an [`Invalidation`] *atomically with the write itself*, so that a write that
//! succeeded was always announced; the caller applies the change to its own cache.

pub mod memory;
pub mod redis;

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::StoreError;

/// A live session: who it belongs to, its data, and when it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub sid: String,
    pub sub: String,
    pub data: Value,
    pub expires_at: u64,
    /// Per-session HMAC secret (base64url), for tokens whose `kid` is this session's id.
    #[serde(skip_serializing)]
    pub secret: Option<String>,
}

/// What a session is created with.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub sid: String,
    pub sub: String,
    pub data: Value,
    pub expires_at: u64,
    pub secret: Option<String>,
}

/// Whether a revocation the store acknowledged is held by a replica too, so that a failover of
/// its shard cannot undo it (SPEC §4). Redis replication is asynchronous: the store asks the
/// primary to wait (bounded) until a replica has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// Nothing to wait for: the embedded store, or nothing was written.
    NotApplicable,
    /// A replica acknowledged the write.
    Confirmed,
    /// No replica acknowledged it in time: the write stands on the primary only.
    Unconfirmed,
}

impl Replication {
    /// The weaker of two (for a change made of several writes).
    pub fn and(self, other: Replication) -> Replication {
        use Replication::*;
        match (self, other) {
            (Unconfirmed, _) | (_, Unconfirmed) => Unconfirmed,
            (Confirmed, _) | (_, Confirmed) => Confirmed,
            (NotApplicable, NotApplicable) => NotApplicable,
        }
    }
}

/// The session a token id names, for the ids the sidecar mints (`<sid>.<random>`, see
/// `POST /v1/sessions`): a revocation of such an id is written into that session's hash as well
/// as under the id itself, so that a verification miss of a token bound to that very session
/// reads its session and its revocation with one command (SPEC §5). Any id may look like this
/// (an identity provider's, a per-session key's): the rule is only where a revocation is also
/// written, and a verification reads the session's copy only when the token is bound to the
/// session its id names; every other token's id is read where every revocation writes it.
pub fn session_named_by_jti(jti: &str) -> Option<&str> {
    let (sid, rest) = jti.split_once('.')?;
    (!sid.is_empty() && !rest.is_empty()).then_some(sid)
}

/// What one verification miss needs from the store.
#[derive(Debug, Clone, Copy)]
pub struct LookupQuery<'a> {
    /// The session the token is bound to (`sid`, or `kid` with per-session keys).
    pub sid: Option<&'a str>,
    /// The token's `jti`, to check against the deny-list.
    pub jti: Option<&'a str>,
}

impl<'a> LookupQuery<'a> {
    /// The session the token is bound to, when its id names that very session
    /// ([`session_named_by_jti`]): the id's revocation, if any, is in that session's hash too.
    pub fn session_holding_revocation(&self) -> Option<&'a str> {
        let sid = self.sid?;
        (session_named_by_jti(self.jti?) == Some(sid)).then_some(sid)
    }
}

/// The store's answer to a [`LookupQuery`].
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// The session, when `sid` was asked and it lives.
    pub session: Option<Session>,
    /// Whether `jti` is deny-listed.
    pub revoked: bool,
}

/// A change that other sidecars must apply to their caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// The session ended (deleted, logged out everywhere): its tokens are `session_inactive`.
    SessionDeleted(String),
    /// The session's data changed: cached copies must be read again.
    SessionUpdated(String),
    /// A token id was deny-listed: tokens carrying it are `revoked`.
    TokenRevoked(String),
}

/// Now, in µs since the Unix epoch (0 for a clock before it): the time stamped on a published
/// change.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

/// What the invalidation feed of a store tells its listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// The feed is (again) connected: from now on every change is heard.
    Subscribed,
    /// A change made somewhere (possibly by this sidecar itself), and when it was published
    /// (µs since the Unix epoch, by the publisher's clock), when the message says.
    Change(Invalidation, Option<u64>),
    /// The feed was cut: changes may have been missed until the next [`FeedEvent::Subscribed`].
    Lost(FeedLoss),
}

/// Why a feed was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedLoss {
    /// The connection ended or stopped answering.
    Disconnected,
    /// The listener fell behind and the feed's bounded buffer filled: rather than drop changes
    /// silently (or buffer without bound), the feed let go of its connection.
    FellBehind,
}

/// The stream of a store's feed events. It ends when the store will say nothing more.
pub type FeedEvents = tokio::sync::mpsc::Receiver<FeedEvent>;

/// How a merge patch is applied.
#[derive(Debug, Clone, Copy)]
pub struct PatchLimits {
    pub max_session_bytes: usize,
}

/// Result of a patch.
#[derive(Debug)]
pub enum PatchOutcome {
    Patched(Session),
    NotFound,
    TooLarge,
}

/// Where sessions and the deny-list live.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// The session and the deny-list entry one verification needs, in one round trip.
    async fn lookup(&self, query: LookupQuery<'_>) -> Result<Lookup, StoreError>;
    /// Stores a new session (and indexes it under its subject).
    async fn create(&self, session: NewSession) -> Result<(), StoreError>;
    /// Reads a session.
    async fn get(&self, sid: &str) -> Result<Option<Session>, StoreError>;
    /// Applies an RFC 7396 merge patch to a session's data atomically: concurrent patches
    /// never lose an update.
    async fn patch(
        &self,
        sid: &str,
        patch: &Value,
        limits: PatchLimits,
    ) -> Result<PatchOutcome, StoreError>;
    /// Deletes a session; `false` when there was none.
    async fn delete(&self, sid: &str) -> Result<(bool, Replication), StoreError>;
    /// Deletes every session of a subject; returns the ids deleted.
    async fn delete_subject(&self, sub: &str) -> Result<(Vec<String>, Replication), StoreError>;
    /// Deny-lists a token id until `until` (unix seconds, at most [`MAX_UNIX_TIME`]), in the
    /// one place every verification of a token with that `jti` reads, and publishes it.
    async fn revoke(&self, jti: &str, until: u64) -> Result<Replication, StoreError>;
    /// Whether the store answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Starts the store's invalidation feed: the changes every sidecar sharing this store
    /// makes, and whether the feed is connected. Its background work stops when the returned
    /// receiver is dropped.
    fn feed(&self) -> FeedEvents;
}

/// The latest time the sidecar stores or computes with: 9999-12-31T23:59:59Z. A claim beyond it
/// (`exp: 1e19`) is treated as this, so no clock arithmetic on input can overflow, and Redis
/// accepts it as an `EXAT`.
pub const MAX_UNIX_TIME: u64 = 253_402_300_799;

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 7396 JSON merge patch of `target` by `patch`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(target_map) = target {
        for (key, value) in patch_map {
            if value.is_null() {
                target_map.remove(key);
            } else {
                merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Where sessions live.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// Embedded in-memory store (one process).
    Memory,
    /// Redis Cluster.
    Redis(redis::RedisConfig),
}

#[cfg(test)]
mod tests {
    use super::merge_patch;
    use serde_json::json;

    /// The examples of RFC 7396 appendix A.
    #[test]
    fn merge_patch_follows_rfc_7396_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (mut target, patch, expected) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, expected, "patch {patch}");
        }
    }
}

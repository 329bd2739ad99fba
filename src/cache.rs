//! The decision cache: verified tokens and the session data they carry, keyed by a keyed
//! digest of the token text, in a bounded moka cache with per-entry expiry.
//!
//! What it guarantees (README, "Consistency"):
//! - an entry never outlives its deadline (the token's `exp`, the session's end and
//!   `--cache-ttl`, whichever is first);
//! - concurrent misses for one token run the computation once ([`DecisionCache::get_or_compute`]);
//! - an [`Invalidation`] reaches every cached entry of the session or token id it names, also
//!   one whose computation was still in flight when the invalidation arrived: entries are
//!   registered in an index (id → entries) *before* they are returned, and invalidations leave a
//!   tombstone *before* they walk the index, so one of the two always sees the other;
//! - after the invalidation feed was lost ([`DecisionCache::distrust_all`]), every entry that
//!   depends on the store is re-checked on its next use.
//!
//! The hit path is one digest, one moka lookup and two atomic loads: no allocation, no lock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use moka::notification::RemovalCause;

use crate::decision::{ALLOCATION_BYTES, Decision, Dependency};
use crate::error::{Reason, Undecidable};
use crate::metrics::Metrics;
use crate::store::Invalidation;

/// A token's cache key: 128 bits of a keyed BLAKE3 digest of its text. The key is random per
/// process, so nobody can craft two tokens that share a cache entry.
pub type TokenKey = u128;

/// How long an invalidation is remembered, to catch a computation that read the store just
/// before the change and finishes just after it. Longer than any store call can take.
pub const TOMBSTONE_LIFETIME: Duration = Duration::from_secs(30);

/// What moka itself holds per entry beyond key and value (hash table slot, access- and
/// write-order deque nodes, timer wheel node, entry info), measured with a weigher and
/// per-entry expiry: a bare moka cache of small values grew by about 340 bytes per entry
/// (README, Memory).
const MOKA_ENTRY_BYTES: usize = 340;
/// One dependency's place in the dependency index: a B-tree slot is 24 bytes (hashed id,
/// `Dependents`), in nodes of 11 that are two thirds full or more, with the node's header and
/// its allocation. A B-tree grows and shrinks a node at a time. (A hash table did not: through
/// churn, hashbrown doubles once more than 7/16 of it is live instead of cleaning in place, and
/// the table it leaves stays resident: a 64 MiB cache's index doubled to 12.5 MiB after about
/// 1,000,000 admissions, and the cache's resident set went from 0.92 to 1.11 × its budget;
/// README, Memory. The index is not on the hit path.)
const INDEX_ENTRY_BYTES: usize = 48;

/// After a failed re-check, how long a stale entry is served before the store is asked again.
const RECHECK_BACKOFF: Duration = Duration::from_secs(1);

const FRESH: u8 = 0;
const CHANGED: u8 = 1;
const SESSION_ENDED: u8 = 2;
const TOKEN_REVOKED: u8 = 3;

/// One cached decision and what the cache needs to keep it honest.
pub struct CachedDecision {
    pub decision: Decision,
    key: TokenKey,
    deadline: Instant,
    /// The trust epoch when the store was read for this decision.
    epoch: u64,
    /// FRESH, CHANGED (session data changed), SESSION_ENDED, TOKEN_REVOKED.
    state: AtomicU8,
    /// Milliseconds since the cache's start before which no re-check is tried again.
    recheck_not_before_ms: AtomicU64,
}

impl CachedDecision {
    /// Wraps a decision that is trusted until `deadline`; `epoch` is the cache's trust epoch
    /// read before the store was asked (see [`DecisionCache::trust_epoch`]).
    pub fn new(decision: Decision, key: TokenKey, deadline: Instant, epoch: u64) -> Self {
        CachedDecision {
            decision,
            key,
            deadline,
            epoch,
            state: AtomicU8::new(FRESH),
            recheck_not_before_ms: AtomicU64::new(0),
        }
    }

    /// Bytes of memory this entry costs the cache: moka's own per-entry cost, the key, the
    /// entry and what its decision holds, and its places in the dependency index.
    pub fn weight(&self) -> usize {
        let dependencies = self.decision.dependencies().iter().flatten().count();
        MOKA_ENTRY_BYTES
            + std::mem::size_of::<TokenKey>()
            + std::mem::size_of::<Arc<CachedDecision>>()
            + ALLOCATION_BYTES
            + 2 * std::mem::size_of::<usize>()
            + std::mem::size_of::<CachedDecision>()
            - std::mem::size_of::<Decision>()
            + self.decision.weight()
            + dependencies * INDEX_ENTRY_BYTES
    }

    /// The cache key this decision is stored under.
    pub fn key(&self) -> TokenKey {
        self.key
    }

    /// The ids this decision depends on.
    fn dependencies(&self) -> [Option<Dependency<'_>>; 2] {
        self.decision.dependencies()
    }

    fn depends_on_store(&self) -> bool {
        self.decision.depends_on_store()
    }

    fn mark(&self, kind: ChangeKind) {
        let state = match kind {
            ChangeKind::Updated => CHANGED,
            ChangeKind::Ended => SESSION_ENDED,
            ChangeKind::Revoked => TOKEN_REVOKED,
        };
        // A stronger state never goes back to a weaker one.
        self.state.fetch_max(state, Ordering::AcqRel);
    }
}

/// What a cache hit tells the caller to do.
pub enum Freshness {
    /// Use the cached decision as it is.
    Trusted,
    /// Rejected since it was cached (session ended or token revoked): answer with this reason.
    Rejected(Reason),
    /// The store must be asked again; the cached decision may be served if it cannot answer.
    Recheck,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChangeKind {
    Updated,
    Ended,
    Revoked,
}

/// The owned form of a dependency, for tombstones: (is a session id, the id).
fn owned(id: Dependency<'_>) -> (bool, Box<str>) {
    match id {
        Dependency::Session(sid) => (true, sid.into()),
        Dependency::Token(jti) => (false, jti.into()),
    }
}

/// The entries that depend on one id. Nearly always exactly one, kept without a map. Many are
/// keyed by the entry's address (unique while the index holds it), so removing one costs the
/// same however many tokens a session has; two entries of one token (a re-check racing a hit)
/// are both kept, so an invalidation marks both.
enum Dependents {
    One(Arc<CachedDecision>),
    /// Boxed so that a slot of the index costs a pointer and a tag, not a whole map (48
    /// bytes): the extra allocation is paid by the rare id with several entries.
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<usize, Arc<CachedDecision>>>),
}

/// An entry's identity in [`Dependents::Many`].
fn address(entry: &Arc<CachedDecision>) -> usize {
    Arc::as_ptr(entry) as usize
}

/// Which cached entries depend on which session or token id, in a B-tree (see
/// [`INDEX_ENTRY_BYTES`] for why not a hash table). Keyed by a 64-bit keyed hash of
/// the id rather than the id itself (one entry costs a few dozen bytes, not a copy of the id);
/// a collision only puts two ids in one bucket, and [`DependencyIndex::take`] compares the real
/// ids before touching an entry.
/// The hasher is a parameter so that tests can force collisions.
struct DependencyIndex<S = RandomState> {
    hasher: S,
    buckets: BTreeMap<u64, Dependents>,
}

impl DependencyIndex {
    fn new() -> Self {
        DependencyIndex::with_hasher(RandomState::new())
    }
}

impl<S: BuildHasher> DependencyIndex<S> {
    fn with_hasher(hasher: S) -> Self {
        DependencyIndex {
            hasher,
            buckets: BTreeMap::new(),
        }
    }

    fn bucket_of(&self, id: Dependency<'_>) -> u64 {
        self.hasher.hash_one(id)
    }

    fn register(&mut self, entry: &Arc<CachedDecision>) {
        for id in entry.dependencies().into_iter().flatten() {
            let bucket = self.bucket_of(id);
            self.register_in(bucket, entry);
        }
    }

    fn unregister(&mut self, entry: &Arc<CachedDecision>) {
        for id in entry.dependencies().into_iter().flatten() {
            let bucket = self.bucket_of(id);
            match self.buckets.get_mut(&bucket) {
                Some(Dependents::One(other)) if Arc::ptr_eq(other, entry) => {
                    self.buckets.remove(&bucket);
                }
                Some(Dependents::Many(entries)) => {
                    entries.remove(&address(entry));
                    if entries.is_empty() {
                        self.buckets.remove(&bucket);
                    }
                }
                _ => {}
            }
        }
    }

    /// Removes and returns the entries that depend on `id` (exactly that id).
    fn take(&mut self, id: Dependency<'_>) -> Vec<Arc<CachedDecision>> {
        let bucket = self.bucket_of(id);
        let all = match self.buckets.remove(&bucket) {
            None => return Vec::new(),
            Some(Dependents::One(entry)) => vec![entry],
            Some(Dependents::Many(entries)) => entries.into_values().collect(),
        };
        let (matching, others): (Vec<_>, Vec<_>) = all
            .into_iter()
            .partition(|entry| entry.dependencies().contains(&Some(id)));
        for other in others {
            // A hash collision: the other ids' entries stay indexed.
            for other_id in other.dependencies().into_iter().flatten() {
                if self.bucket_of(other_id) == bucket {
                    self.register_in(bucket, &other);
                    break;
                }
            }
        }
        matching
    }

    fn register_in(&mut self, bucket: u64, entry: &Arc<CachedDecision>) {
        match self.buckets.remove(&bucket) {
            None => {
                self.buckets
                    .insert(bucket, Dependents::One(Arc::clone(entry)));
            }
            Some(Dependents::One(other)) => {
                let entries = Box::new(HashMap::from([
                    (address(&other), other),
                    (address(entry), Arc::clone(entry)),
                ]));
                self.buckets.insert(bucket, Dependents::Many(entries));
            }
            Some(Dependents::Many(mut entries)) => {
                entries.insert(address(entry), Arc::clone(entry));
                self.buckets.insert(bucket, Dependents::Many(entries));
            }
        }
    }
}

struct DeadlineExpiry;

impl Expiry<TokenKey, Arc<CachedDecision>> for DeadlineExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenKey,
        value: &Arc<CachedDecision>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.deadline.saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _key: &TokenKey,
        value: &Arc<CachedDecision>,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.deadline.saturating_duration_since(updated_at))
    }
}

/// Recent invalidations, by (is a session id, the id): when, and what changed. Forgotten after
/// [`TOMBSTONE_LIFETIME`] from the front of a time-ordered queue (as mini-redis keeps its
/// expirations), so recording one costs the same however many are remembered.
#[derive(Default)]
struct Tombstones {
    by_id: HashMap<(bool, Box<str>), (Instant, ChangeKind)>,
    /// Every recording, oldest first (an id recorded again appears again).
    order: VecDeque<(Instant, (bool, Box<str>))>,
}

impl Tombstones {
    fn get(&self, id: &(bool, Box<str>)) -> Option<&(Instant, ChangeKind)> {
        self.by_id.get(id)
    }

    fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Records a change to `id` at `now`, keeping the strongest change (an update after a
    /// delete does not revive a session), and forgets what is older than the lifetime.
    fn record(&mut self, id: (bool, Box<str>), kind: ChangeKind, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < TOMBSTONE_LIFETIME {
                break;
            }
            if let Some((at, old)) = self.order.pop_front()
                && self
                    .by_id
                    .get(&old)
                    .is_some_and(|(latest, _)| *latest == at)
            {
                self.by_id.remove(&old);
            }
        }
        match self.by_id.get_mut(&id) {
            Some((_, ChangeKind::Ended | ChangeKind::Revoked)) if kind == ChangeKind::Updated => {}
            Some(slot) => *slot = (now, kind),
            None => {
                self.by_id.insert(id.clone(), (now, kind));
            }
        }
        if self.by_id.get(&id).is_some_and(|(at, _)| *at == now) {
            self.order.push_back((now, id));
        }
    }
}

/// Shared, cheap-to-clone handle on the cache.
#[derive(Clone)]
pub struct DecisionCache {
    inner: Arc<Inner>,
}

struct Inner {
    entries: Option<Cache<TokenKey, Arc<CachedDecision>>>,
    index: Arc<Mutex<DependencyIndex>>,
    tombstones: Mutex<Tombstones>,
    trust_epoch: AtomicU64,
    digest_key: [u8; 32],
    ttl: Duration,
    started: Instant,
}

impl DecisionCache {
    /// A cache of at most `max_entries` decisions, none trusted longer than `ttl`.
    /// A `ttl` of zero disables caching: every lookup computes.
    pub fn new(ttl: Duration, max_entries: u64, metrics: Arc<Metrics>) -> Self {
        Self::with_budget(ttl, max_entries, u64::MAX, metrics)
    }

    /// A cache of at most `max_entries` decisions and about `max_bytes` of memory (entries,
    /// their data, moka's own per-entry cost and the dependency index: [`CachedDecision::weight`]).
    /// Both bounds are one moka weight: every entry weighs at least `max_bytes / max_entries`,
    /// so the byte bound also holds the entry count.
    pub fn with_budget(
        ttl: Duration,
        max_entries: u64,
        max_bytes: u64,
        metrics: Arc<Metrics>,
    ) -> Self {
        let index = Arc::new(Mutex::new(DependencyIndex::new()));
        let listener_index = Arc::clone(&index);
        let max_entries = max_entries.max(1);
        let (capacity, least_weight) = if max_bytes == u64::MAX {
            (max_entries, None)
        } else {
            (max_bytes, Some((max_bytes / max_entries).max(1)))
        };
        let entries = (!ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(capacity)
                .weigher(move |_key, value: &Arc<CachedDecision>| -> u32 {
                    let weight = match least_weight {
                        None => 1,
                        Some(least) => (value.weight() as u64).max(least),
                    };
                    u32::try_from(weight).unwrap_or(u32::MAX)
                })
                .expire_after(DeadlineExpiry)
                .eviction_listener(move |_key, value: Arc<CachedDecision>, cause| {
                    metrics.cache_eviction(cause_label(cause));
                    listener_index.lock().unregister(&value);
                })
                .build()
        });
        DecisionCache {
            inner: Arc::new(Inner {
                entries,
                index,
                tombstones: Mutex::default(),
                trust_epoch: AtomicU64::new(0),
                digest_key: rand::random(),
                ttl,
                started: Instant::now(),
            }),
        }
    }

    /// The cache key of a token.
    pub fn key(&self, token: &str) -> TokenKey {
        let digest = blake3::keyed_hash(&self.inner.digest_key, token.as_bytes());
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest.as_bytes()[..16]);
        u128::from_le_bytes(first)
    }

    /// The longest time any decision is trusted.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The current trust epoch: read it before asking the store, and give it to
    /// [`CachedDecision::new`].
    pub fn trust_epoch(&self) -> u64 {
        self.inner.trust_epoch.load(Ordering::Acquire)
    }

    /// Number of cached decisions (approximate, as moka counts).
    /// What the cache holds as weighed against its byte budget ([`Self::with_budget`]); the
    /// entry count when it has none.
    pub fn weighted_bytes(&self) -> u64 {
        self.inner.entries.as_ref().map_or(0, |c| c.weighted_size())
    }

    pub fn entry_count(&self) -> u64 {
        self.inner.entries.as_ref().map_or(0, |c| c.entry_count())
    }

    /// The cached decision for `key`, if any, with what to do with it.
    pub async fn get(&self, key: TokenKey) -> Option<(Arc<CachedDecision>, Freshness)> {
        let entry = self.inner.entries.as_ref()?.get(&key).await?;
        if let Some(reason) = self.rejection(&entry) {
            return Some((entry, Freshness::Rejected(reason)));
        }
        let freshness = match entry.state.load(Ordering::Acquire) {
            CHANGED => self.recheck_unless_backing_off(&entry),
            _ if entry.depends_on_store() && entry.epoch < self.trust_epoch() => {
                self.recheck_unless_backing_off(&entry)
            }
            _ => Freshness::Trusted,
        };
        Some((entry, freshness))
    }

    /// Why a decision was rejected since it was made (its session ended or its token was
    /// revoked), if it was: for an entry just computed, which an invalidation that arrived
    /// during the computation marked when it was admitted.
    pub fn rejection(&self, entry: &CachedDecision) -> Option<Reason> {
        match entry.state.load(Ordering::Acquire) {
            SESSION_ENDED => Some(Reason::SessionInactive),
            TOKEN_REVOKED => Some(Reason::Revoked),
            _ => None,
        }
    }

    fn recheck_unless_backing_off(&self, entry: &CachedDecision) -> Freshness {
        let now_ms = self.millis_since_start();
        if now_ms < entry.recheck_not_before_ms.load(Ordering::Relaxed) {
            Freshness::Trusted
        } else {
            Freshness::Recheck
        }
    }

    /// Records that a re-check of `entry` failed: it is served as it is for a while.
    pub fn recheck_failed(&self, entry: &CachedDecision) {
        let until = self.millis_since_start() + RECHECK_BACKOFF.as_millis() as u64;
        entry.recheck_not_before_ms.store(until, Ordering::Relaxed);
    }

    fn millis_since_start(&self) -> u64 {
        self.inner.started.elapsed().as_millis() as u64
    }

    /// The cached decision for `key`, or the result of `compute`, which runs once however many
    /// callers miss on the same key at the same time. Errors are not cached.
    pub async fn get_or_compute<F>(
        &self,
        key: TokenKey,
        compute: F,
    ) -> Result<Arc<CachedDecision>, Arc<Undecidable>>
    where
        F: Future<Output = Result<CachedDecision, Undecidable>>,
    {
        let admitted = async {
            let started = Instant::now();
            compute.await.map(|entry| self.admit(entry, started))
        };
        match &self.inner.entries {
            Some(entries) => entries.try_get_with(key, admitted).await,
            None => admitted.await.map_err(Arc::new),
        }
    }

    /// Replaces the cached decision for its key (after a successful re-check).
    pub async fn replace(&self, entry: CachedDecision, started: Instant) -> Arc<CachedDecision> {
        let entry = self.admit(entry, started);
        if let Some(entries) = &self.inner.entries {
            entries.insert(entry.key, Arc::clone(&entry)).await;
        }
        entry
    }

    /// Registers a freshly computed entry in the index, then applies any invalidation that
    /// arrived since `started` (the moment before the store was read).
    fn admit(&self, entry: CachedDecision, started: Instant) -> Arc<CachedDecision> {
        let entry = Arc::new(entry);
        let ids = entry.dependencies();
        if ids.iter().all(Option::is_none) {
            return entry;
        }
        // Nothing to index when nothing is cached (the eviction listener would never clean
        // it); the tombstones are read all the same, so that a miss that read the store just
        // before a revocation is not answered after it, with or without a cache.
        if self.inner.entries.is_some() {
            self.inner.index.lock().register(&entry);
        }
        let tombstones = self.inner.tombstones.lock();
        if !tombstones.is_empty() {
            for id in ids.iter().flatten() {
                if let Some((at, kind)) = tombstones.get(&owned(*id))
                    && (*kind != ChangeKind::Updated || *at >= started)
                {
                    entry.mark(*kind);
                }
            }
        }
        entry
    }

    /// Applies a change made anywhere: every cached decision it affects is marked (so a hit
    /// sees it at once) and dropped from the cache.
    pub async fn apply(&self, change: &Invalidation) {
        let (id, kind) = match change {
            Invalidation::SessionDeleted(sid) => (Dependency::Session(sid), ChangeKind::Ended),
            Invalidation::SessionUpdated(sid) => (Dependency::Session(sid), ChangeKind::Updated),
            Invalidation::TokenRevoked(jti) => (Dependency::Token(jti), ChangeKind::Revoked),
        };
        let now = Instant::now();
        self.inner.tombstones.lock().record(owned(id), kind, now);
        let affected = self.inner.index.lock().take(id);
        for entry in &affected {
            entry.mark(kind);
        }
        if let Some(entries) = &self.inner.entries {
            for entry in affected {
                entries.invalidate(&entry.key).await;
            }
        }
    }

    /// The invalidation feed was lost: from now on, every decision that depends on the store
    /// is re-checked on its next use.
    pub fn distrust_all(&self) {
        self.inner.trust_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Runs moka's pending maintenance (tests and metrics scrapes).
    pub async fn run_pending_tasks(&self) {
        if let Some(entries) = &self.inner.entries {
            entries.run_pending_tasks().await;
        }
    }
}

fn cause_label(cause: RemovalCause) -> &'static str {
    match cause {
        RemovalCause::Expired => "expired",
        RemovalCause::Explicit => "invalidated",
        RemovalCause::Replaced => "replaced",
        RemovalCause::Size => "size",
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use hyper::header::HeaderValue;

    use super::{CachedDecision, ChangeKind, DependencyIndex, TOMBSTONE_LIFETIME, Tombstones};
    use crate::decision::{Decision, Dependency, Grant};
    use crate::verify::jwt::VerifiedClaims;

    /// Every id in one bucket.
    #[derive(Clone, Copy)]
    struct Colliding;
    struct Zero;
    impl Hasher for Zero {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, _: &[u8]) {}
    }
    impl BuildHasher for Colliding {
        type Hasher = Zero;
        fn build_hasher(&self) -> Zero {
            Zero
        }
    }

    fn grant(key: u128, sid: &'static str, jti: Option<&str>) -> Arc<CachedDecision> {
        let claims = VerifiedClaims {
            subject: HeaderValue::from_static("u"),
            session_id: Some(HeaderValue::from_static(sid)),
            jti: jti.and_then(|jti| HeaderValue::from_str(jti).ok()),
            exp: 0,
            issuer_claims: false,
        };
        let decision = Decision::Grant(Arc::new(Grant::new(claims, None).expect("grant")));
        Arc::new(CachedDecision::new(decision, key, Instant::now(), 0))
    }

    fn keys(entries: &[Arc<CachedDecision>]) -> Vec<u128> {
        let mut keys: Vec<u128> = entries.iter().map(|entry| entry.key()).collect();
        keys.sort_unstable();
        keys
    }

    /// With every id in one bucket, an invalidation takes exactly the entries of its id, an
    /// eviction removes exactly its entry, and the others stay indexed.
    #[test]
    fn a_bucket_collision_takes_and_evicts_only_the_right_entries() {
        let mut index = DependencyIndex::with_hasher(Colliding);
        let a1 = grant(1, "a", Some("j1"));
        let a2 = grant(2, "a", None);
        let b = grant(3, "b", Some("j3"));
        let c = grant(4, "c", None);
        for entry in [&a1, &a2, &b, &c] {
            index.register(entry);
        }
        index.unregister(&c);
        assert_eq!(keys(&index.take(Dependency::Session("a"))), vec![1, 2]);
        assert!(index.take(Dependency::Session("a")).is_empty());
        assert!(index.take(Dependency::Session("c")).is_empty(), "evicted");
        assert_eq!(keys(&index.take(Dependency::Session("b"))), vec![3]);
        // Its other id shared the bucket: the entry went with the first take (and was marked
        // and dropped from the cache then), so nothing is left under it.
        assert!(index.take(Dependency::Token("j3")).is_empty());
        assert!(index.buckets.is_empty());
    }

    fn id(name: &str) -> (bool, Box<str>) {
        (true, name.into())
    }

    #[test]
    fn tombstones_are_forgotten_from_the_front_after_their_lifetime() {
        let mut tombstones = Tombstones::default();
        let start = Instant::now();
        for i in 0..1000u64 {
            let at = start + Duration::from_millis(i);
            tombstones.record(id(&format!("s{i}")), ChangeKind::Ended, at);
        }
        assert_eq!(tombstones.by_id.len(), 1000);
        // One lifetime after the 500th: the first 501 are gone, the rest remain.
        let later = start + TOMBSTONE_LIFETIME + Duration::from_millis(500);
        tombstones.record(id("new"), ChangeKind::Revoked, later);
        assert_eq!(tombstones.by_id.len(), 500);
        assert_eq!(tombstones.order.len(), 500);
        assert!(tombstones.get(&id("s500")).is_none());
        assert!(tombstones.get(&id("s501")).is_some());
    }

    #[test]
    fn the_strongest_change_is_kept_and_a_refreshed_id_outlives_its_first_record() {
        let mut tombstones = Tombstones::default();
        let start = Instant::now();
        tombstones.record(id("s"), ChangeKind::Ended, start);
        let update = start + Duration::from_secs(1);
        tombstones.record(id("s"), ChangeKind::Updated, update);
        assert_eq!(
            tombstones.get(&id("s")),
            Some(&(start, ChangeKind::Ended)),
            "an update after a delete does not revive the session"
        );
        tombstones.record(id("u"), ChangeKind::Updated, start);
        tombstones.record(id("u"), ChangeKind::Ended, update);
        // The first record of "u" expires; its later, stronger one is kept.
        let after_first = start + TOMBSTONE_LIFETIME + Duration::from_millis(500);
        tombstones.record(id("x"), ChangeKind::Updated, after_first);
        assert!(tombstones.get(&id("s")).is_none());
        assert_eq!(tombstones.get(&id("u")), Some(&(update, ChangeKind::Ended)));
    }
}

//! A scripted session store for in-process tests: the embedded store answers, and a script
//! decides per lookup whether that answer arrives as it is, fails, or is held back until the
//! test releases it (after the read: a read made just before a change, answered just after).
//! For faults a real server cannot be made to produce on cue; the Redis tests use a real
//! cluster.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use session_sidecar::cache::DecisionCache;
use session_sidecar::error::{Reason, StoreError};
use session_sidecar::keys::KeySet;
use session_sidecar::metrics::Metrics;
use session_sidecar::store::memory::MemoryStore;
use session_sidecar::store::{
    FeedEvents, Lookup, LookupQuery, NewSession, PatchLimits, PatchOutcome, Replication, Session,
    SessionStore, unix_now,
};
use session_sidecar::verify::jwt::ClaimRules;
use session_sidecar::verify::jwt::JwtVerifier;
use session_sidecar::verify::{Verdict, Verifier};
use tokio::sync::{Mutex, Notify, oneshot};

/// What one lookup does.
pub enum Step {
    /// Answers from the embedded store.
    Answer,
    /// Fails as an unreachable store does.
    Fail,
    /// Reads the embedded store, tells [`ScriptedStore::read_done`], and hands the answer over
    /// only once the sender of this receiver is used (or dropped).
    HoldAfterRead(oneshot::Receiver<()>),
    /// Answers after this long.
    Delay(Duration),
}

/// The embedded store behind a script of lookup steps (an empty script answers).
pub struct ScriptedStore {
    pub inner: MemoryStore,
    script: Mutex<VecDeque<Step>>,
    /// Lookups asked for, whatever their step.
    pub lookups: AtomicUsize,
    /// Told when a held lookup has read the store.
    pub read_done: Notify,
}

impl ScriptedStore {
    pub fn new() -> Self {
        ScriptedStore {
            inner: MemoryStore::new(),
            script: Mutex::new(VecDeque::new()),
            lookups: AtomicUsize::new(0),
            read_done: Notify::new(),
        }
    }

    /// Appends steps for the next lookups.
    pub async fn then(&self, steps: impl IntoIterator<Item = Step>) {
        self.script.lock().await.extend(steps);
    }

    pub fn lookup_count(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }

    /// Creates a live session of `sub` for ten minutes.
    pub async fn session(&self, sid: &str, sub: &str) {
        self.inner
            .create(NewSession {
                sid: sid.into(),
                sub: sub.into(),
                data: json!({}),
                expires_at: unix_now() + 600,
                secret: None,
            })
            .await
            .expect("create");
    }
}

#[async_trait]
impl SessionStore for ScriptedStore {
    async fn lookup(&self, query: LookupQuery<'_>) -> Result<Lookup, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let step = self.script.lock().await.pop_front().unwrap_or(Step::Answer);
        match step {
            Step::Answer => self.inner.lookup(query).await,
            Step::Fail => Err(StoreError::Unavailable("scripted failure".into())),
            Step::HoldAfterRead(release) => {
                let answer = self.inner.lookup(query).await;
                self.read_done.notify_one();
                let _ = release.await;
                answer
            }
            Step::Delay(delay) => {
                tokio::time::sleep(delay).await;
                self.inner.lookup(query).await
            }
        }
    }
    async fn create(&self, session: NewSession) -> Result<(), StoreError> {
        self.inner.create(session).await
    }
    async fn get(&self, sid: &str) -> Result<Option<Session>, StoreError> {
        self.inner.get(sid).await
    }
    async fn patch(
        &self,
        sid: &str,
        patch: &Value,
        limits: PatchLimits,
    ) -> Result<PatchOutcome, StoreError> {
        self.inner.patch(sid, patch, limits).await
    }
    async fn delete(&self, sid: &str) -> Result<(bool, Replication), StoreError> {
        self.inner.delete(sid).await
    }
    async fn delete_subject(&self, sub: &str) -> Result<(Vec<String>, Replication), StoreError> {
        self.inner.delete_subject(sub).await
    }
    async fn revoke(&self, jti: &str, until: u64) -> Result<Replication, StoreError> {
        self.inner.revoke(jti, until).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    fn feed(&self) -> FeedEvents {
        self.inner.feed()
    }
}

/// The HMAC secret of [`Rig`] tokens.
pub const RIG_SECRET: &[u8] = b"in-process-secret-in-process-secret";

/// A verifier and its cache over a [`ScriptedStore`], as `serve` builds them.
pub struct Rig {
    pub store: Arc<ScriptedStore>,
    pub verifier: Arc<Verifier>,
    pub cache: DecisionCache,
}

impl Rig {
    pub fn new(cache_ttl: Duration) -> Rig {
        let store = Arc::new(ScriptedStore::new());
        let keys = KeySet::new(Some(RIG_SECRET.to_vec()), Vec::new(), None).expect("keys");
        let rules = ClaimRules {
            issuer: None,
            audience: Vec::new(),
            leeway: 30,
        };
        let metrics = Arc::new(Metrics::new());
        let cache = DecisionCache::new(cache_ttl, 10_000, Arc::clone(&metrics));
        let verifier = Verifier::new(
            JwtVerifier::new(keys, &rules, 32),
            cache.clone(),
            Arc::clone(&store) as Arc<dyn SessionStore>,
            metrics,
            None,
        );
        Rig {
            store,
            verifier: Arc::new(verifier),
            cache,
        }
    }

    /// An HS256 token over `claims`, signed with [`RIG_SECRET`].
    pub fn token(claims: &Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(RIG_SECRET),
        )
        .expect("sign")
    }

    pub async fn verify(&self, token: &str) -> Verdict {
        self.verifier.verify(token).await
    }
}

/// Whether a verdict grants.
pub fn granted(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Granted(_))
}

/// The reason a verdict rejects with (`None`: granted or unavailable).
pub fn reason(verdict: &Verdict) -> Option<Reason> {
    match verdict {
        Verdict::Denied(reason) => Some(*reason),
        Verdict::Granted(_) | Verdict::Unavailable | Verdict::KeysUnavailable => None,
    }
}

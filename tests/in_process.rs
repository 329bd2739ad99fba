//! Races a real server cannot be made to produce on cue, played in process with a scripted
//! store: the store read of a verification miss is held back while a revocation happens.
//!
//! The embedded store answers; the script only decides *when* its answer reaches the verifier.
//! A miss that read the session (or the deny-list) just before a revocation and finishes just
//! after it must not be answered `200`: the revocation has answered, so SPEC §4 says that the
//! sidecar never grants the token again, not even once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use session_sidecar::cache::DecisionCache;
use session_sidecar::config::ClaimRules;
use session_sidecar::error::{Reason, StoreError};
use session_sidecar::keys::KeySet;
use session_sidecar::metrics::Metrics;
use session_sidecar::store::memory::MemoryStore;
use session_sidecar::store::{
    FeedEvents, Invalidation, Lookup, LookupQuery, NewSession, PatchLimits, PatchOutcome, Session,
    SessionStore, unix_now,
};
use session_sidecar::verify::jwt::JwtVerifier;
use session_sidecar::verify::{Decision, Verdict, Verifier};
use tokio::sync::{Mutex, Notify, oneshot};

const SECRET: &[u8] = b"in-process-secret-in-process-secret";

/// The embedded store, whose next lookup reads at once but hands its answer over only when
/// the test says so.
struct ScriptedStore {
    inner: MemoryStore,
    /// Set by the test: the next lookup waits for it after reading.
    hold: Mutex<Option<oneshot::Receiver<()>>>,
    /// Told when a held lookup has read the store.
    read_done: Notify,
}

#[async_trait]
impl SessionStore for ScriptedStore {
    async fn lookup(&self, query: LookupQuery<'_>) -> Result<Lookup, StoreError> {
        let answer = self.inner.lookup(query).await;
        let hold = self.hold.lock().await.take();
        if let Some(release) = hold {
            self.read_done.notify_one();
            let _ = release.await;
        }
        answer
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
    async fn delete(&self, sid: &str) -> Result<bool, StoreError> {
        self.inner.delete(sid).await
    }
    async fn delete_subject(&self, sub: &str) -> Result<Vec<String>, StoreError> {
        self.inner.delete_subject(sub).await
    }
    async fn revoke(&self, jti: &str, until: u64) -> Result<(), StoreError> {
        self.inner.revoke(jti, until).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    fn feed(&self) -> FeedEvents {
        self.inner.feed()
    }
}

struct Rig {
    store: Arc<ScriptedStore>,
    verifier: Arc<Verifier>,
    cache: DecisionCache,
}

fn rig() -> Rig {
    rig_with_cache_ttl(Duration::from_secs(600))
}

fn rig_with_cache_ttl(cache_ttl: Duration) -> Rig {
    let store = Arc::new(ScriptedStore {
        inner: MemoryStore::new(),
        hold: Mutex::new(None),
        read_done: Notify::new(),
    });
    let keys = KeySet::new(Some(SECRET.to_vec()), Vec::new(), None).expect("keys");
    let rules = ClaimRules {
        issuer: None,
        audience: Vec::new(),
        leeway: 30,
    };
    let metrics = Arc::new(Metrics::new());
    let cache = DecisionCache::new(cache_ttl, 1000, Arc::clone(&metrics));
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

fn token(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("sign")
}

fn granted(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Decided(entry) if matches!(entry.decision, Decision::Grant(_)))
}

fn reason(verdict: &Verdict) -> Option<Reason> {
    match verdict {
        Verdict::Rejected(reason) => Some(*reason),
        Verdict::Decided(entry) => match &entry.decision {
            Decision::Deny(reason) => Some(*reason),
            Decision::Grant(_) => None,
        },
        Verdict::Unavailable => None,
    }
}

/// Runs one verification of `token` whose store read happens before `revoke` and whose answer
/// arrives after it; returns that verification's verdict and the next one's.
async fn verify_across(
    rig: &Rig,
    token: &str,
    revoke: impl AsyncFnOnce(&Rig),
) -> (Verdict, Verdict) {
    let (release, held) = oneshot::channel();
    *rig.store.hold.lock().await = Some(held);
    let verifier = Arc::clone(&rig.verifier);
    let owned = token.to_owned();
    let miss = tokio::spawn(async move { verifier.verify(&owned).await });
    tokio::time::timeout(Duration::from_secs(10), rig.store.read_done.notified())
        .await
        .expect("the miss reads the store");
    revoke(rig).await;
    release.send(()).expect("the miss is waiting");
    let first = tokio::time::timeout(Duration::from_secs(10), miss)
        .await
        .expect("no hang")
        .expect("no panic");
    let next = rig.verifier.verify(token).await;
    (first, next)
}

#[tokio::test]
async fn a_miss_that_read_the_session_before_its_deletion_is_not_granted() {
    miss_across_a_session_deletion(rig()).await;
}

/// `--cache-ttl 0`: nothing is cached, and yet a miss in flight across a deletion must see it.
#[tokio::test]
async fn without_a_cache_a_miss_across_a_deletion_is_not_granted() {
    miss_across_a_session_deletion(rig_with_cache_ttl(Duration::ZERO)).await;
}

async fn miss_across_a_session_deletion(rig: Rig) {
    let sid = "race-session-0000000001";
    rig.store
        .create(NewSession {
            sid: sid.into(),
            sub: "ann".into(),
            data: json!({}),
            expires_at: unix_now() + 600,
            secret: None,
        })
        .await
        .expect("create");
    let bound = token(&json!({"sub": "ann", "sid": sid, "exp": unix_now() + 600}));
    let (first, next) = verify_across(&rig, &bound, async |rig: &Rig| {
        // What DELETE /v1/sessions/{sid} does: the write, then this sidecar's own cache.
        assert!(rig.store.delete(sid).await.expect("delete"));
        rig.cache
            .apply(&Invalidation::SessionDeleted(sid.into()))
            .await;
    })
    .await;
    assert!(!granted(&first), "granted after the deletion answered");
    assert_eq!(reason(&first), Some(Reason::SessionInactive));
    assert_eq!(reason(&next), Some(Reason::SessionInactive));
}

#[tokio::test]
async fn a_miss_that_read_the_deny_list_before_a_revocation_is_not_granted() {
    let rig = rig();
    let stateless = token(&json!({"sub": "bo", "jti": "race-jti-1", "exp": unix_now() + 600}));
    let (first, next) = verify_across(&rig, &stateless, async |rig: &Rig| {
        rig.store
            .revoke("race-jti-1", unix_now() + 600)
            .await
            .expect("revoke");
        rig.cache
            .apply(&Invalidation::TokenRevoked("race-jti-1".into()))
            .await;
    })
    .await;
    assert!(!granted(&first), "granted after the revocation answered");
    assert_eq!(reason(&first), Some(Reason::Revoked));
    assert_eq!(reason(&next), Some(Reason::Revoked));
}

/// Many tokens of one session, more than the cache holds (so entries are evicted and leave the
/// dependency index while others join it): a deletion still reaches every cached one.
#[tokio::test]
async fn a_deletion_reaches_every_token_of_a_session_through_evictions() {
    let rig = rig();
    let sid = "many-tokens-session-0001";
    rig.store
        .create(NewSession {
            sid: sid.into(),
            sub: "cy".into(),
            data: json!({}),
            expires_at: unix_now() + 600,
            secret: None,
        })
        .await
        .expect("create");
    let tokens: Vec<String> = (0..2500)
        .map(|i| token(&json!({"sub": "cy", "sid": sid, "n": i, "exp": unix_now() + 600})))
        .collect();
    for token in &tokens {
        assert!(granted(&rig.verifier.verify(token).await));
    }
    rig.cache.run_pending_tasks().await;
    assert!(rig.store.delete(sid).await.expect("delete"));
    rig.cache
        .apply(&Invalidation::SessionDeleted(sid.into()))
        .await;
    for token in &tokens {
        assert_eq!(
            reason(&rig.verifier.verify(token).await),
            Some(Reason::SessionInactive)
        );
    }
}

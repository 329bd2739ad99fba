//! Races and faults a real server cannot be made to produce on cue, played in process with a
//! scripted store (`tests/support/scripted.rs`): the embedded store answers, and the script
//! decides per lookup whether that answer arrives, fails, or is held back while a revocation
//! happens.
//!
//! A miss that read the session (or the deny-list) just before a revocation and finishes just
//! after it must not be answered `200`: the revocation has answered, so SPEC §4 says that the
//! sidecar never grants the token again, not even once.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use session_sidecar::error::Reason;
use session_sidecar::store::{Invalidation, SessionStore, unix_now};
use session_sidecar::verify::Verdict;
use support::scripted::{Rig, Step, granted, reason};
use tokio::sync::oneshot;

fn rig() -> Rig {
    Rig::new(Duration::from_secs(600))
}

/// Runs one verification of `token` whose store read happens before `revoke` and whose answer
/// arrives after it; returns that verification's verdict and the next one's.
async fn verify_across(
    rig: &Rig,
    token: &str,
    revoke: impl AsyncFnOnce(&Rig),
) -> (Verdict, Verdict) {
    let (release, held) = oneshot::channel();
    rig.store.then([Step::HoldAfterRead(held)]).await;
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
    let next = rig.verify(token).await;
    (first, next)
}

#[tokio::test]
async fn a_miss_that_read_the_session_before_its_deletion_is_not_granted() {
    miss_across_a_session_deletion(rig()).await;
}

/// `--cache-ttl 0`: nothing is cached, and yet a miss in flight across a deletion must see it.
#[tokio::test]
async fn without_a_cache_a_miss_across_a_deletion_is_not_granted() {
    miss_across_a_session_deletion(Rig::new(Duration::ZERO)).await;
}

async fn miss_across_a_session_deletion(rig: Rig) {
    let sid = "race-session-0000000001";
    rig.store.session(sid, "ann").await;
    let bound = Rig::token(&json!({"sub": "ann", "sid": sid, "exp": unix_now() + 600}));
    let (first, next) = verify_across(&rig, &bound, async |rig: &Rig| {
        // What DELETE /v1/sessions/{sid} does: the write, then this sidecar's own cache.
        assert!(rig.store.delete(sid).await.expect("delete").0);
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
    let stateless = Rig::token(&json!({"sub": "bo", "jti": "race-jti-1", "exp": unix_now() + 600}));
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

/// Many tokens of one session (so entries leave the dependency index while others join it): a
/// deletion still reaches every cached one.
#[tokio::test]
async fn a_deletion_reaches_every_token_of_a_session_through_evictions() {
    let rig = rig();
    let sid = "many-tokens-session-0001";
    rig.store.session(sid, "cy").await;
    let tokens: Vec<String> = (0..2500)
        .map(|i| Rig::token(&json!({"sub": "cy", "sid": sid, "n": i, "exp": unix_now() + 600})))
        .collect();
    for token in &tokens {
        assert!(granted(&rig.verify(token).await));
    }
    rig.cache.run_pending_tasks().await;
    assert!(rig.store.delete(sid).await.expect("delete").0);
    rig.cache
        .apply(&Invalidation::SessionDeleted(sid.into()))
        .await;
    for token in &tokens {
        assert_eq!(
            reason(&rig.verify(token).await),
            Some(Reason::SessionInactive)
        );
    }
}

/// A miss the store cannot answer is `503` (fail closed), and the failure is not cached: the
/// next request asks again and is answered.
#[tokio::test]
async fn a_failed_lookup_is_unavailable_and_not_cached() {
    let rig = rig();
    let sid = "failing-lookup-session-01";
    rig.store.session(sid, "di").await;
    let bound = Rig::token(&json!({"sub": "di", "sid": sid, "exp": unix_now() + 600}));
    rig.store.then([Step::Fail]).await;
    assert!(matches!(rig.verify(&bound).await, Verdict::Unavailable));
    assert!(granted(&rig.verify(&bound).await), "the failure was cached");
    assert_eq!(rig.store.lookup_count(), 2);
    assert!(granted(&rig.verify(&bound).await));
    assert_eq!(rig.store.lookup_count(), 2, "a grant is cached");
}

/// SPEC §4: after the feed was lost, a cached session decision is re-checked on its next use;
/// while the store cannot answer, the stale decision is served, and the store is not asked
/// again on every request but after a backoff.
#[tokio::test]
async fn a_stale_entry_is_served_during_the_recheck_backoff() {
    let rig = rig();
    let sid = "stale-entry-session-0001";
    rig.store.session(sid, "ed").await;
    let bound = Rig::token(&json!({"sub": "ed", "sid": sid, "exp": unix_now() + 600}));
    assert!(granted(&rig.verify(&bound).await));
    assert_eq!(rig.store.lookup_count(), 1);
    rig.cache.distrust_all();
    rig.store.then([Step::Fail, Step::Fail]).await;
    for _ in 0..5 {
        assert!(
            granted(&rig.verify(&bound).await),
            "a stale grant is served while the store cannot re-check it"
        );
    }
    assert_eq!(
        rig.store.lookup_count(),
        2,
        "one failed re-check, then the backoff"
    );
    // Once the store answers again, the re-check happens and what it says holds.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(rig.store.delete(sid).await.expect("delete").0);
    rig.store.then([Step::Answer]).await;
    // The second scripted failure is still queued: the re-check after the backoff fails once
    // more, then the next one reads the deletion.
    assert!(granted(&rig.verify(&bound).await));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        reason(&rig.verify(&bound).await),
        Some(Reason::SessionInactive)
    );
}

//! The decision cache: hits are visible in /metrics, misses coalesce, entries never outlive the
//! token, the bound holds, and `--cache-ttl 0` turns it off.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

const HITS: &str = "session_sidecar_cache_hits_total";
const MISSES: &str = "session_sidecar_cache_misses_total";
const CHECKS: &str = "session_sidecar_signature_checks_total";

#[tokio::test(flavor = "multi_thread")]
async fn repeated_verification_is_a_cache_hit() {
    let sidecar = TestSidecar::start(&[]).await;
    let token = hs256(&claims("alice"));
    for _ in 0..3 {
        assert_eq!(sidecar.verify(&token).await.status(), 200);
    }
    assert_eq!(sidecar.metric(MISSES).await, 1.0);
    assert_eq!(sidecar.metric(HITS).await, 2.0);
    assert_eq!(sidecar.metric(CHECKS).await, 1.0);
    assert_eq!(
        sidecar
            .metric(r#"session_sidecar_verifications_total{reason="none",result="valid"}"#)
            .await,
        3.0
    );
    assert!(
        sidecar
            .metric(r#"session_sidecar_verification_duration_seconds_count{cache="hit"}"#)
            .await
            >= 2.0
    );
    assert_eq!(sidecar.metric("session_sidecar_cache_entries").await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_misses_for_one_token_verify_once() {
    let sidecar = TestSidecar::start(&[]).await;
    let token = hs256(&claims("bob"));
    let requests = (0..64).map(|_| sidecar.verify(&token));
    for response in futures_util::future::join_all(requests).await {
        assert_eq!(response.status(), 200);
    }
    assert_eq!(sidecar.metric(CHECKS).await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_one_bad_token_costs_one_verification() {
    let sidecar = TestSidecar::start(&[]).await;
    let forged = sign(
        jsonwebtoken::Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(b"wrong"),
        None,
        &claims("mallory"),
    );
    for _ in 0..20 {
        assert_eq!(
            sidecar.verify_status(&forged).await,
            (401, Some("bad_signature".into()))
        );
    }
    assert_eq!(sidecar.metric(CHECKS).await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_grant_never_outlives_the_token_exp() {
    let sidecar = TestSidecar::start(&["--leeway", "0", "--cache-ttl", "600"]).await;
    let exp = now() + 2;
    let token = hs256(&json!({"sub": "carol", "exp": exp}));
    assert_eq!(sidecar.verify(&token).await.status(), 200);
    assert_eq!(sidecar.verify(&token).await.status(), 200);
    assert_eq!(sidecar.metric(HITS).await, 1.0, "second call was a hit");
    while now() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        sidecar.verify_status(&token).await,
        (401, Some("expired".into()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_ttl_zero_disables_the_cache() {
    let sidecar = TestSidecar::start(&["--cache-ttl", "0"]).await;
    let token = hs256(&claims("dave"));
    for _ in 0..3 {
        assert_eq!(sidecar.verify(&token).await.status(), 200);
    }
    assert_eq!(sidecar.metric(CHECKS).await, 3.0);
    assert_eq!(sidecar.metric(HITS).await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_max_entries_bounds_the_cache() {
    let sidecar = TestSidecar::start(&["--cache-max-entries", "10"]).await;
    for i in 0..200 {
        let token = hs256(&claims(&format!("user-{i}")));
        assert_eq!(sidecar.verify(&token).await.status(), 200);
    }
    let metrics = sidecar.metrics().await;
    let entries = metric_value(&metrics, "session_sidecar_cache_entries");
    assert!(entries <= 10.0, "entries {entries}");
    assert!(
        metric_value(
            &metrics,
            r#"session_sidecar_cache_evictions_total{cause="size"}"#
        ) > 0.0,
        "size evictions counted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_session_evicts_its_cached_grant_at_once() {
    let sidecar = TestSidecar::start(&["--cache-ttl", "600"]).await;
    let (sid, token) = sidecar.create_session("erin", json!({})).await;
    assert_eq!(sidecar.verify(&token).await.status(), 200);
    assert_eq!(sidecar.verify(&token).await.status(), 200);
    assert_eq!(sidecar.delete_session(&sid).await, 204);
    assert_eq!(
        sidecar.verify_status(&token).await,
        (401, Some("session_inactive".into()))
    );
}

/// `--cache-max-bytes` bounds what the cache holds, weighed honestly: each entry weighs at
/// least the session data it keeps (here 2 KB each), and the cache stays within the budget
/// however many distinct tokens arrive.
#[tokio::test(flavor = "multi_thread")]
async fn cache_max_bytes_bounds_the_cache() {
    let budget: u64 = 1024 * 1024;
    let sidecar = TestSidecar::start(&["--cache-max-bytes", &budget.to_string()]).await;
    let filler = "x".repeat(2048);
    let tokens = 1000;
    for i in 0..tokens {
        let (_, token) = sidecar
            .create_session(&format!("b{i}"), json!({ "pad": filler }))
            .await;
        assert_eq!(sidecar.verify(&token).await.status(), 200);
    }
    let bytes = sidecar.metric("session_sidecar_cache_bytes").await;
    let entries = sidecar.metric("session_sidecar_cache_entries").await;
    assert!(
        bytes <= budget as f64,
        "{bytes} bytes held, budget {budget}"
    );
    assert!(
        entries > 0.0 && entries < f64::from(tokens),
        "{entries} entries"
    );
    assert!(
        bytes / entries >= 2048.0,
        "an entry that keeps 2 KB of session data weighs {} bytes",
        bytes / entries
    );
}

/// The payload is not kept in the cache: a hit copies `X-Auth-Claims` from the request's own
/// token (the same text, since the cache key is a digest of all of it), so 2 KB of claims do
/// not make an entry weigh 2 KB, and the answer of a hit still carries them exactly.
#[tokio::test(flavor = "multi_thread")]
async fn a_cached_grant_does_not_keep_the_payload_and_a_hit_still_sends_it() {
    let sidecar = TestSidecar::start(&[]).await;
    let filler = "x".repeat(2048);
    for i in 0..20 {
        let token = hs256(&json!({"sub": format!("p{i}"), "exp": now() + 600, "pad": filler}));
        let payload = token.split('.').nth(1).expect("payload").to_owned();
        for _ in 0..2 {
            let response = sidecar.verify(&token).await;
            assert_eq!(response.status(), 200);
            assert_eq!(
                response.headers()["x-auth-claims"].to_str().ok(),
                Some(payload.as_str())
            );
        }
    }
    assert!(sidecar.metric("session_sidecar_cache_hits_total").await >= 20.0);
    let bytes = sidecar.metric("session_sidecar_cache_bytes").await;
    let entries = sidecar.metric("session_sidecar_cache_entries").await;
    assert!(
        entries > 0.0 && bytes / entries < 2048.0,
        "an entry weighs {} bytes: the 2 KB payload was kept",
        bytes / entries
    );
}

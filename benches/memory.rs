//! Memory of the decision cache (SPEC §8: 1,000,000 cached sessions under 512 MiB RSS): fills the
//! cache with N session-bound grants, in process, and reports the growth of the resident set
//! that filling it caused (sessions and tokens are made first, so they are not counted).
//! Run with `cargo bench --bench memory [-- N]` (default 1,000,000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::SECRET;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use session_sidecar::store::memory::MemoryStore;
use session_sidecar::store::{NewSession, SessionStore, unix_now};
use session_sidecar::verify::Verdict;

mod common;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let store = Arc::new(MemoryStore::new());
        let key = EncodingKey::from_secret(SECRET);
        let exp = unix_now() + 3600;
        let mut tokens = Vec::with_capacity(n);
        for i in 0..n {
            let sid = format!("sid-{i:012}-abcdefghij");
            let sub = format!("user-{i}");
            store
                .create(NewSession {
                    sid: sid.clone(),
                    sub: sub.clone(),
                    data: json!({"role": "user", "tenant": "acme"}),
                    expires_at: exp,
                    secret: None,
                })
                .await
                .expect("create");
            let claims = json!({"sub": sub, "sid": sid, "jti": format!("jti-{i}"), "iat": unix_now(), "exp": exp});
            tokens.push(
                jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("sign"),
            );
        }
        let (verifier, cache) = common::verifier(Duration::from_secs(600), n as u64 * 2, store);
        cache.run_pending_tasks().await;
        let before = rss_mib();
        let started = Instant::now();
        for token in &tokens {
            match verifier.verify(token).await {
                Verdict::Granted(_) => {}
                _ => panic!("a token did not verify"),
            }
        }
        cache.run_pending_tasks().await;
        let after = rss_mib();
        println!(
            "{} cached session grants (filled in {:?}): RSS {before:.0} MiB -> {after:.0} MiB, \
             the cache took {:.0} MiB ({:.0} bytes per entry; target: 1,000,000 under 512 MiB)",
            cache.entry_count(),
            started.elapsed(),
            after - before,
            (after - before) * 1024.0 * 1024.0 / n as f64
        );
    });
}

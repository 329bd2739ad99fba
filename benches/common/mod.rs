//! What the in-process benchmarks share: a verifier over the embedded store with an HS256
//! secret, as `serve` would build it.

use std::sync::Arc;
use std::time::Duration;

use session_sidecar::cache::DecisionCache;
use session_sidecar::keys::KeySet;
use session_sidecar::metrics::Metrics;
use session_sidecar::store::SessionStore;
use session_sidecar::verify::Verifier;
use session_sidecar::verify::jwt::ClaimRules;
use session_sidecar::verify::jwt::JwtVerifier;

pub const SECRET: &[u8] = b"benchmark-secret-benchmark-secret";

/// A verifier with its cache (`cache_ttl`, `max_entries`) over `store`.
#[allow(dead_code)] // not every bench uses every helper
pub fn verifier(
    cache_ttl: Duration,
    max_entries: u64,
    store: Arc<dyn SessionStore>,
) -> (Verifier, DecisionCache) {
    verifier_with_budget(cache_ttl, max_entries, u64::MAX, store)
}

/// A verifier whose cache also has a byte budget (`--cache-max-bytes`; `u64::MAX`: none).
pub fn verifier_with_budget(
    cache_ttl: Duration,
    max_entries: u64,
    max_bytes: u64,
    store: Arc<dyn SessionStore>,
) -> (Verifier, DecisionCache) {
    let keys = KeySet::new(Some(SECRET.to_vec()), Vec::new(), None).expect("keys");
    let rules = ClaimRules {
        issuer: None,
        audience: Vec::new(),
        leeway: 30,
    };
    let metrics = Arc::new(Metrics::new());
    let cache = DecisionCache::with_budget(cache_ttl, max_entries, max_bytes, Arc::clone(&metrics));
    let verifier = Verifier::new(
        JwtVerifier::new(keys, &rules, 32),
        cache.clone(),
        store,
        metrics,
        None,
    );
    (verifier, cache)
}

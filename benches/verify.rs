//! Micro-benchmarks of the verification path (criterion): a cache hit (digest + moka lookup +
//! freshness check) against a full verification (signature + claims), in process, no HTTP.
//! Run with `cargo bench --bench verify`.

use std::sync::Arc;
use std::time::Duration;

use common::SECRET;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use session_sidecar::cache::DecisionCache;
use session_sidecar::metrics::Metrics;
use session_sidecar::store::memory::MemoryStore;
use session_sidecar::store::unix_now;
use session_sidecar::verify::{Verdict, Verifier};

mod common;

fn verifier(cache_ttl: Duration) -> Verifier {
    common::verifier(cache_ttl, 100_000, Arc::new(MemoryStore::new())).0
}

fn token() -> String {
    let claims =
        json!({"sub": "bench-user", "exp": unix_now() + 3600, "iat": unix_now(), "role": "admin"});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .expect("sign")
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let token = token();

    let cached = verifier(Duration::from_secs(600));
    runtime.block_on(async {
        assert!(matches!(cached.verify(&token).await, Verdict::Granted(_)));
    });
    c.bench_function("verify: cache hit", |b| {
        b.to_async(&runtime).iter(|| cached.verify(&token))
    });

    let uncached = verifier(Duration::ZERO);
    c.bench_function("verify: full HS256 verification (no cache)", |b| {
        b.to_async(&runtime).iter(|| uncached.verify(&token))
    });

    let cache = DecisionCache::new(Duration::from_secs(60), 10, Arc::new(Metrics::new()));
    c.bench_function("cache key: keyed BLAKE3 of the token", |b| {
        b.iter(|| cache.key(std::hint::black_box(&token)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

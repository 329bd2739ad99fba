//! Memory of the decision cache (SPEC §8: 1,000,000 cached sessions under 512 MiB RSS, and
//! `--cache-max-bytes` holding the cache within 10 %): fills the cache with N session-bound
//! grants, in process, answering each one's forward-auth response once (as a server does: the
//! first answer is what makes a grant's header values shared), and reports the growth of the
//! resident set that filling it caused (sessions and tokens are made first, so they are not
//! counted), at ten checkpoints.
//!
//! `cargo bench --bench memory [-- N] [--budget-mib M] [--json PATH]`: N defaults to 1,000,000;
//! without `--budget-mib` the cache is unbounded and weighs every entry (so the RSS growth can be
//! compared with what the cache believes it holds); with it, the cache has that byte budget
//! (and the default 1,000,000 entries), as `--cache-max-bytes` gives it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::SECRET;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use session_sidecar::http::respond;
use session_sidecar::store::memory::MemoryStore;
use session_sidecar::store::{NewSession, SessionStore, unix_now};
use session_sidecar::verify::Verdict;

mod common;

/// The system allocator, counting the bytes the program holds (what it asked for, without the
/// allocator's own overhead and retention), to tell the cache's memory from the allocator's.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(new_size, Ordering::Relaxed);
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn held() -> f64 {
    HELD.load(Ordering::Relaxed) as f64
}

fn rss_bytes() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb * 1024.0)
}

const MIB: f64 = 1024.0 * 1024.0;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let option = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let budget_mib: Option<u64> = option("--budget-mib").and_then(|v| v.parse().ok());
    let json_path = option("--json");
    // The first argument that is not an option's value (cargo bench adds `--bench`).
    let n: usize = (0..args.len())
        .filter(|&i| i == 0 || !matches!(args[i - 1].as_str(), "--budget-mib" | "--json"))
        .find_map(|i| args[i].parse().ok())
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
        let (max_entries, max_bytes) = match budget_mib {
            // As `serve` builds it: the byte budget and the default entry bound.
            Some(mib) => (1_000_000, mib * 1024 * 1024),
            // Unbounded, every entry weighed by its own weight (the least weight is 1).
            None => (1 << 50, 1 << 50),
        };
        let (verifier, cache) = common::verifier_with_budget(
            Duration::from_secs(600),
            max_entries,
            max_bytes,
            store,
        );
        cache.run_pending_tasks().await;
        let before = rss_bytes();
        let held_before = held();
        let started = Instant::now();
        let mut points = Vec::new();
        for (i, token) in tokens.iter().enumerate() {
            match verifier.verify(token).await {
                Verdict::Granted(grant) => drop(respond::forward_auth_grant(&grant, token)),
                _ => panic!("a token did not verify"),
            }
            if (i + 1) % (n / 10).max(1) == 0 || i + 1 == n {
                cache.run_pending_tasks().await;
                let grown = rss_bytes() - before;
                let held = held() - held_before;
                let entries = cache.entry_count();
                let weighed = cache.weighted_bytes() as f64;
                println!(
                    "{:>9} verified, {entries:>9} cached: RSS +{:.1} MiB ({:.0} bytes per cached \
                     entry; heap held +{:.1} MiB), the cache weighs {:.1} MiB (RSS growth / \
                     weight {:.3})",
                    i + 1,
                    grown / MIB,
                    grown / entries.max(1) as f64,
                    held / MIB,
                    weighed / MIB,
                    grown / weighed.max(1.0),
                );
                points.push(json!({
                    "verified": i + 1,
                    "entries": entries,
                    "rss_growth_bytes": grown,
                    "heap_held_bytes": held,
                    "weighted_bytes": weighed,
                }));
            }
        }
        println!(
            "filled in {:?}; target: 1,000,000 entries under 512 MiB{}",
            started.elapsed(),
            budget_mib.map_or(String::new(), |mib| format!(
                "; budget {mib} MiB: RSS growth is {:.2} of it",
                (rss_bytes() - before) / (mib as f64 * MIB)
            )),
        );
        if let Some(path) = json_path {
            let report = json!({
                "budget_mib": budget_mib,
                "tokens": n,
                "points": points,
            });
            std::fs::write(&path, serde_json::to_vec_pretty(&report).expect("json"))
                .expect("write the report");
        }
    });
}

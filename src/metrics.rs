//! Every Prometheus metric of the sidecar, defined once, in one registry per sidecar (so that
//! two sidecars in one test process do not share counters).
//!
//! Label values are closed sets (reasons, cache outcome, command names, causes), never ids.
//! The hit path uses pre-resolved children: no label hashing per request.

use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::error::Reason;

/// Latency buckets from 5 µs (a cache hit) to 1 s (a struggling store).
const LATENCY_BUCKETS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// How a verification ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Valid,
    Invalid(Reason),
    /// The store could not answer.
    Unavailable,
    /// The key set a token needs was never loaded.
    KeysUnavailable,
}

/// The sidecar's metrics.
pub struct Metrics {
    registry: Registry,
    valid: IntCounter,
    invalid: Vec<IntCounter>,
    unavailable: IntCounter,
    keys_unavailable: IntCounter,
    duration_hit: Histogram,
    duration_miss: Histogram,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    signature_checks: IntCounter,
    cache_entries: IntGauge,
    cache_bytes: IntGauge,
    cache_evictions: IntCounterVec,
    redis_commands: IntCounterVec,
    redis_duration: HistogramVec,
    invalidations_received: IntCounterVec,
    subscription_connected: IntGauge,
    subscription_losses: IntCounter,
    revocation_replication: IntCounterVec,
    key_refreshes: IntCounterVec,
    key_refreshes_suppressed: IntCounterVec,
    jwks_keys_skipped: IntCounterVec,
    key_set_age: GaugeVec,
    key_set_keys: IntGaugeVec,
    claim_headers_dropped: IntCounter,
    feed_overflows: IntCounter,
    topology_changes: IntCounter,
    breaker_transitions: IntCounterVec,
    breaker_skips: IntCounter,
}

fn registered<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: T,
) -> T {
    // Registration only fails on a duplicate name, which the names below rule out.
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let verifications = registered(
            r,
            IntCounterVec::new(
                Opts::new(
                    "session_sidecar_verifications_total",
                    "Token verifications, by result and reason.",
                ),
                &["result", "reason"],
            )
            .expect("valid metric"),
        );
        let durations = registered(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "session_sidecar_verification_duration_seconds",
                    "Time to decide on a token, by cache outcome.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["cache"],
            )
            .expect("valid metric"),
        );
        Metrics {
            valid: verifications.with_label_values(&["valid", "none"]),
            invalid: Reason::ALL
                .iter()
                .map(|reason| verifications.with_label_values(&["invalid", reason.as_str()]))
                .collect(),
            unavailable: verifications.with_label_values(&["unavailable", "store_unavailable"]),
            keys_unavailable: verifications
                .with_label_values(&["unavailable", "keys_unavailable"]),
            duration_hit: durations.with_label_values(&["hit"]),
            duration_miss: durations.with_label_values(&["miss"]),
            cache_hits: registered(
                r,
                IntCounter::new(
                    "session_sidecar_cache_hits_total",
                    "Verifications answered from the cache.",
                )
                .expect("valid metric"),
            ),
            cache_misses: registered(
                r,
                IntCounter::new(
                    "session_sidecar_cache_misses_total",
                    "Verifications that were not in the cache.",
                )
                .expect("valid metric"),
            ),
            signature_checks: registered(
                r,
                IntCounter::new(
                    "session_sidecar_signature_checks_total",
                    "Tokens whose signature was checked (cache fills; coalesced misses count once).",
                )
                .expect("valid metric"),
            ),
            cache_entries: registered(
                r,
                IntGauge::new(
                    "session_sidecar_cache_entries",
                    "Decisions in the cache (at the last scrape).",
                )
                .expect("valid metric"),
            ),
            cache_bytes: registered(
                r,
                IntGauge::new(
                    "session_sidecar_cache_bytes",
                    "Bytes of memory the cache holds as weighed against --cache-max-bytes (at the last scrape).",
                )
                .expect("valid metric"),
            ),
            cache_evictions: registered(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "session_sidecar_cache_evictions_total",
                        "Decisions removed from the cache, by cause (expired, size, invalidated, replaced).",
                    ),
                    &["cause"],
                )
                .expect("valid metric"),
            ),
            redis_commands: registered(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "session_sidecar_redis_commands_total",
                        "Redis calls, by operation and outcome (ok, error, timeout).",
                    ),
                    &["command", "outcome"],
                )
                .expect("valid metric"),
            ),
            redis_duration: registered(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "session_sidecar_redis_command_duration_seconds",
                        "Redis call latency, by operation.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["command"],
                )
                .expect("valid metric"),
            ),
            invalidations_received: registered(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "session_sidecar_invalidations_received_total",
                        "Invalidation messages received from other sidecars, by kind.",
                    ),
                    &["kind"],
                )
                .expect("valid metric"),
            ),
            subscription_connected: registered(
                r,
                IntGauge::new(
                    "session_sidecar_invalidation_subscription_connected",
                    "1 while the invalidation subscription is up (always 1 with the embedded store).",
                )
                .expect("valid metric"),
            ),
            subscription_losses: registered(
                r,
                IntCounter::new(
                    "session_sidecar_invalidation_subscription_losses_total",
                    "Invalidation subscriptions lost (each makes every cached session decision stale).",
                )
                .expect("valid metric"),
            ),
            revocation_replication: registered(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "session_sidecar_revocation_replication_total",
                        "Revocations written to Redis, by whether a replica acknowledged them in time.",
                    ),
                    &["outcome"],
                )
                .expect("valid metric"),
            ),
            key_refreshes: registered(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "session_sidecar_key_refreshes_total",
                        "Fetches of a key set from a URL (--jwks-url), by issuer and outcome (ok, error).",
                    ),
                    &["issuer", "outcome"],
                )
                .expect("valid metric"),
            ),
            key_refreshes_suppressed: registered(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "session_sidecar_key_refreshes_suppressed_total",
                        "Refreshes an unknown kid asked for but the once-a-second limit refused, by issuer.",
                    ),
                    &["issuer"],
                )
                .expect("valid metric"),
            ),
            jwks_keys_skipped: registered(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "session_sidecar_jwks_keys_skipped_total",
                        "JWKS keys that could not be used (bad material, alg of another key type), by issuer; the rest of the set stands.",
                    ),
                    &["issuer"],
                )
                .expect("valid metric"),
            ),
            key_set_age: registered(
                r,
                GaugeVec::new(
                    Opts::new(
                        "session_sidecar_key_set_age_seconds",
                        "Seconds since each key set from a URL was last fetched successfully (absent until its first load).",
                    ),
                    &["issuer", "url"],
                )
                .expect("valid metric"),
            ),
            key_set_keys: registered(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "session_sidecar_key_set_keys",
                        "Usable keys in each key set from a URL, as last loaded (absent until its first load).",
                    ),
                    &["issuer", "url"],
                )
                .expect("valid metric"),
            ),
            breaker_transitions: registered(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "session_sidecar_redis_breaker_transitions_total",
                        "A primary's lookup breaker opening (it failed lookups in a row: they go to its replica) or closing (a probe was answered).",
                    ),
                    &["to"],
                )
                .expect("valid metric"),
            ),
            breaker_skips: registered(
                r,
                IntCounter::new(
                    "session_sidecar_redis_breaker_skips_total",
                    "Lookups sent straight to the replica because the primary's breaker was open.",
                )
                .expect("valid metric"),
            ),
            topology_changes: registered(
                r,
                IntCounter::new(
                    "session_sidecar_redis_topology_changes_total",
                    "Times the periodic CLUSTER SLOTS check found another slot map and the cluster connection was made again.",
                )
                .expect("valid metric"),
            ),
            feed_overflows: registered(
                r,
                IntCounter::new(
                    "session_sidecar_invalidation_feed_overflows_total",
                    "Subscriptions let go because the cache fell too far behind the feed (each is also a loss: every cached session decision is re-checked).",
                )
                .expect("valid metric"),
            ),
            claim_headers_dropped: registered(
                r,
                IntCounter::new(
                    "session_sidecar_claim_headers_dropped_total",
                    "Claim values of --claim-header that could not be a header value (a control character, whitespace at an end) and were not sent.",
                )
                .expect("valid metric"),
            ),
            registry,
        }
    }

    /// Counts one verification and its latency.
    pub fn verification(&self, outcome: Outcome, cache_hit: bool, elapsed: Duration) {
        match outcome {
            Outcome::Valid => self.valid.inc(),
            Outcome::Invalid(reason) => self.invalid[reason.index()].inc(),
            Outcome::Unavailable => self.unavailable.inc(),
            Outcome::KeysUnavailable => self.keys_unavailable.inc(),
        }
        let seconds = elapsed.as_secs_f64();
        if cache_hit {
            self.cache_hits.inc();
            self.duration_hit.observe(seconds);
        } else {
            self.cache_misses.inc();
            self.duration_miss.observe(seconds);
        }
    }

    /// Counts one signature check.
    pub fn signature_check(&self) {
        self.signature_checks.inc();
    }

    /// Counts a verification refused before the cache was asked (no token, unreadable header).
    pub fn verification_refused_early(&self, reason: Reason) {
        self.invalid[reason.index()].inc();
    }

    /// Counts a cache eviction.
    pub fn cache_eviction(&self, cause: &'static str) {
        self.cache_evictions.with_label_values(&[cause]).inc();
    }

    /// Counts one Redis call.
    pub fn redis_command(&self, command: &'static str, outcome: &'static str, elapsed: Duration) {
        self.redis_commands
            .with_label_values(&[command, outcome])
            .inc();
        self.redis_duration
            .with_label_values(&[command])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a received invalidation.
    pub fn invalidation_received(&self, kind: &'static str) {
        self.invalidations_received.with_label_values(&[kind]).inc();
    }

    /// Sets the subscription gauge.
    pub fn set_subscription_connected(&self, connected: bool) {
        self.subscription_connected.set(i64::from(connected));
    }

    /// Counts a revocation by whether a replica acknowledged it (`confirmed`, `unconfirmed`).
    pub fn revocation_replication(&self, outcome: &'static str) {
        self.revocation_replication
            .with_label_values(&[outcome])
            .inc();
    }

    /// Counts a lost invalidation subscription.
    /// Counts a lost subscription; `fell_behind`: the feed let go of it because its listener
    /// could not keep up.
    pub fn subscription_lost(&self, fell_behind: bool) {
        self.subscription_losses.inc();
        if fell_behind {
            self.feed_overflows.inc();
        }
    }

    /// Counts a fetch of a key set (`issuer`: a configured issuer, or `*`; `outcome`: `ok`,
    /// `error`).
    pub fn key_refresh(&self, issuer: &str, outcome: &'static str) {
        self.key_refreshes
            .with_label_values(&[issuer, outcome])
            .inc();
    }

    /// Counts an unknown-kid refresh refused by the once-a-second limit.
    pub fn key_refresh_suppressed(&self, issuer: &str) {
        self.key_refreshes_suppressed
            .with_label_values(&[issuer])
            .inc();
    }

    /// Counts JWKS keys skipped as unusable.
    pub fn jwks_keys_skipped(&self, issuer: &str, count: usize) {
        self.jwks_keys_skipped
            .with_label_values(&[issuer])
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }

    /// Sets the age and the number of usable keys of a key set (at each scrape).
    pub fn set_key_set(&self, issuer: &str, url: &str, age: Duration, keys: usize) {
        self.key_set_age
            .with_label_values(&[issuer, url])
            .set(age.as_secs_f64());
        self.key_set_keys
            .with_label_values(&[issuer, url])
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
    }

    /// Counts a breaker opening or closing (`to`: `open`, `closed`).
    pub fn breaker_transition(&self, to: &str) {
        self.breaker_transitions.with_label_values(&[to]).inc();
    }

    /// Counts a lookup that skipped an open breaker's node.
    pub fn breaker_skip(&self) {
        self.breaker_skips.inc();
    }

    /// Counts a change of the Redis Cluster's slot map that made the connection be made again.
    pub fn topology_change(&self) {
        self.topology_changes.inc();
    }

    /// Counts claim values dropped because they cannot be a header value.
    pub fn claim_headers_dropped(&self, count: u64) {
        self.claim_headers_dropped.inc_by(count);
    }

    /// Renders the registry in the Prometheus text format, after setting the cache gauges.
    pub fn render(&self, cache_entries: u64, cache_bytes: u64) -> Vec<u8> {
        self.cache_entries
            .set(i64::try_from(cache_entries).unwrap_or(i64::MAX));
        self.cache_bytes
            .set(i64::try_from(cache_bytes).unwrap_or(i64::MAX));
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

//! What a per-session-key token (header `kid` = session id) may cost before its signature can be
//! checked: its key lives in the store, so the store must be asked first, and an attacker can
//! make up any number of `kid`s. This gate bounds that (SPEC §7): a `kid` found to name no
//! session is remembered as such, and lookups for `kid`s not seen alive lately draw from a
//! budget per second. A `kid` seen alive never waits for the budget.

use std::time::{Duration, Instant};

use moka::sync::Cache;
use parking_lot::Mutex;

/// How long a `kid` is remembered as naming no session. Session ids are random (144 bits) and
/// the store is the primary's word on absence, so a `kid` found absent does not come alive.
const ABSENT_FOR: Duration = Duration::from_secs(60);
/// How long a `kid` is remembered as naming a live session (spares it the budget).
const ALIVE_FOR: Duration = Duration::from_secs(300);
/// Most `kid`s remembered, each way.
const REMEMBERED: u64 = 100_000;

/// What the gate says about asking the store for a `kid`'s session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Ask the store.
    Ask,
    /// The `kid` was found to name no session a moment ago.
    KnownAbsent,
    /// The budget for `kid`s not seen alive is spent for now.
    OverBudget,
}

/// The gate in front of per-session-key store lookups.
pub struct SessionKeyGate {
    absent: Cache<Box<str>, ()>,
    alive: Cache<Box<str>, ()>,
    budget: Mutex<TokenBucket>,
}

impl SessionKeyGate {
    /// A gate that lets `per_second` lookups for unseen `kid`s through (with a burst of as
    /// many).
    pub fn new(per_second: u32) -> Self {
        let remembered = |ttl| {
            Cache::builder()
                .max_capacity(REMEMBERED)
                .time_to_live(ttl)
                .build()
        };
        SessionKeyGate {
            absent: remembered(ABSENT_FOR),
            alive: remembered(ALIVE_FOR),
            budget: Mutex::new(TokenBucket::new(per_second)),
        }
    }

    /// Whether the store may be asked for `kid`'s session now.
    pub fn admit(&self, kid: &str) -> Admission {
        if self.alive.contains_key(kid) {
            return Admission::Ask;
        }
        if self.absent.contains_key(kid) {
            return Admission::KnownAbsent;
        }
        if self.budget.lock().take(Instant::now()) {
            Admission::Ask
        } else {
            Admission::OverBudget
        }
    }

    /// Records what the store said about `kid`.
    pub fn record(&self, kid: &str, alive: bool) {
        if alive {
            self.alive.insert(kid.into(), ());
        } else {
            self.absent.insert(kid.into(), ());
        }
    }
}

/// A token bucket refilled continuously at `rate` per second, holding at most `rate`.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second);
        TokenBucket {
            rate,
            tokens: rate,
            refilled: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unseen_kids_draw_from_a_budget_that_refills() {
        let gate = SessionKeyGate::new(3);
        let admitted = (0..10)
            .filter(|i| gate.admit(&format!("kid-{i}")) == Admission::Ask)
            .count();
        assert_eq!(admitted, 3, "the burst is the rate");
        let mut bucket = TokenBucket::new(10);
        let start = Instant::now();
        for _ in 0..10 {
            assert!(bucket.take(start));
        }
        assert!(!bucket.take(start));
        assert!(bucket.take(start + Duration::from_millis(150)), "refilled");
    }

    #[test]
    fn kids_seen_alive_skip_the_budget_and_absent_ones_are_remembered() {
        let gate = SessionKeyGate::new(1);
        gate.record("live", true);
        gate.record("gone", false);
        assert_eq!(gate.admit("spend-it"), Admission::Ask);
        assert_eq!(gate.admit("another"), Admission::OverBudget);
        assert_eq!(gate.admit("live"), Admission::Ask);
        assert_eq!(gate.admit("gone"), Admission::KnownAbsent);
    }
}

//! A breaker per primary node, for verification lookups: a node that has failed
//! [`FAILURES_TO_OPEN`] lookups within [`FAILURE_WINDOW`] is not asked again for [`OPEN_FOR`];
//! lookups on its
//! slots go straight to its replica meanwhile (the fallback every lookup already has), so a
//! dead or sick node does not make every miss wait for its timeout. After [`OPEN_FOR`] one
//! lookup at a time is let through as a probe: its success closes the breaker, its failure
//! opens it again. Successes in between do not reset the count: the client sends a read
//! whose node it cannot reach to any node it can (a replica may answer it), so a success is
//! not proof that the node answered, while a failure is proof that it did not. Which node owns a slot comes from the store's periodic `CLUSTER SLOTS`
//! (`topology.rs`); the slot of a key is computed here ([`key_slot`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::metrics::Metrics;

/// Failed lookups within [`FAILURE_WINDOW`] that open a node's breaker.
pub const FAILURES_TO_OPEN: u32 = 3;
/// The window in which failures are counted (it starts at the first failure).
pub const FAILURE_WINDOW: Duration = Duration::from_secs(2);
/// How long an open breaker sends lookups straight to the replica before a probe.
pub const OPEN_FOR: Duration = Duration::from_secs(1);

/// What a lookup may do with a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The breaker is closed: ask the node.
    Ask,
    /// The breaker was open long enough: ask the node, as the one probe.
    Probe,
    /// The breaker is open: do not ask the node.
    Skip,
}

struct NodeState {
    failures: u32,
    first_failure: Instant,
    open_until: Option<Instant>,
    probing: bool,
}

/// The breakers of every primary, by address.
pub struct Breakers {
    nodes: Mutex<HashMap<Arc<str>, NodeState>>,
    metrics: Arc<Metrics>,
}

impl Breakers {
    pub fn new(metrics: Arc<Metrics>) -> Breakers {
        Breakers {
            nodes: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Whether a lookup may ask `node` now.
    pub fn admit(&self, node: &Arc<str>) -> Admission {
        let mut nodes = self.nodes.lock();
        let Some(state) = nodes.get_mut(node) else {
            return Admission::Ask;
        };
        match state.open_until {
            None => Admission::Ask,
            Some(until) if Instant::now() < until || state.probing => {
                self.metrics.breaker_skip();
                Admission::Skip
            }
            Some(_) => {
                state.probing = true;
                Admission::Probe
            }
        }
    }

    /// Records what came of asking `node` (`answered`: an answer came, whatever it was).
    pub fn record(&self, node: &Arc<str>, admission: Admission, answered: bool) {
        let mut nodes = self.nodes.lock();
        match (admission, answered) {
            (Admission::Skip, _) | (Admission::Ask, true) => return,
            (Admission::Probe, true) => {
                if nodes.remove(node).is_some() {
                    self.metrics.breaker_transition("closed");
                    tracing::info!(node = %node, "Redis node answers again: its breaker is closed");
                }
                return;
            }
            (Admission::Probe, false) => {
                if let Some(state) = nodes.get_mut(node) {
                    state.probing = false;
                    state.open_until = Some(Instant::now() + OPEN_FOR);
                }
                return;
            }
            (Admission::Ask, false) => {}
        }
        let now = Instant::now();
        let state = nodes.entry(Arc::clone(node)).or_insert(NodeState {
            failures: 0,
            first_failure: now,
            open_until: None,
            probing: false,
        });
        if now.duration_since(state.first_failure) > FAILURE_WINDOW {
            state.failures = 0;
            state.first_failure = now;
        }
        state.failures = state.failures.saturating_add(1);
        if state.open_until.is_none() && state.failures >= FAILURES_TO_OPEN {
            state.open_until = Some(Instant::now() + OPEN_FOR);
            self.metrics.breaker_transition("open");
            tracing::warn!(
                node = %node,
                failures = state.failures,
                "Redis node failed lookups: its breaker is open, lookups go to its replica"
            );
        }
    }
}

/// The cluster hash slot of a key: CRC16 (XMODEM) of the key, or of its `{hash tag}` when it
/// has a non-empty one, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16_xmodem(tagged) % 16384
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // An empty tag is no tag: the whole key counts.
        assert_eq!(key_slot(b"foo{}{bar}"), crc16_xmodem(b"foo{}{bar}") % 16384);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    #[test]
    fn a_breaker_opens_after_failures_in_a_row_probes_and_closes() {
        let breakers = Breakers::new(Arc::new(Metrics::new()));
        let node: Arc<str> = "127.0.0.1:7000".into();
        for _ in 0..FAILURES_TO_OPEN {
            assert_eq!(breakers.admit(&node), Admission::Ask);
            breakers.record(&node, Admission::Ask, false);
        }
        assert_eq!(
            breakers.admit(&node),
            Admission::Skip,
            "open after failures"
        );
        // Open: skipped until OPEN_FOR has passed, then one probe at a time.
        breakers.nodes.lock().get_mut(&node).unwrap().open_until = Some(Instant::now());
        assert_eq!(breakers.admit(&node), Admission::Probe);
        assert_eq!(
            breakers.admit(&node),
            Admission::Skip,
            "one probe at a time"
        );
        breakers.record(&node, Admission::Probe, false);
        assert_eq!(
            breakers.admit(&node),
            Admission::Skip,
            "a failed probe reopens"
        );
        breakers.nodes.lock().get_mut(&node).unwrap().open_until = Some(Instant::now());
        assert_eq!(breakers.admit(&node), Admission::Probe);
        breakers.record(&node, Admission::Probe, true);
        assert_eq!(
            breakers.admit(&node),
            Admission::Ask,
            "a probe that answers closes"
        );
        // Successes in between do not hide failures (another node may have answered).
        for _ in 0..FAILURES_TO_OPEN {
            breakers.record(&node, Admission::Ask, false);
            breakers.record(&node, Admission::Ask, true);
        }
        assert_eq!(breakers.admit(&node), Admission::Skip);
        // Failures further apart than the window do not add up.
        let other: Arc<str> = "127.0.0.1:7001".into();
        for _ in 0..FAILURES_TO_OPEN {
            breakers.record(&other, Admission::Ask, false);
            breakers.nodes.lock().get_mut(&other).unwrap().first_failure -= FAILURE_WINDOW * 2;
        }
        assert_eq!(breakers.admit(&other), Admission::Ask);
    }
}

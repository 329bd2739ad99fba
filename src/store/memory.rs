//! The embedded in-memory store: sessions, the subject index and the deny-list in one
//! process, behind one mutex. Used by `--dev` and single-process deployments; it publishes
//! nothing, since there is no other sidecar to tell.
//!
//! Expired sessions and deny-list entries are invisible at once and swept on writes.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::Value;

use super::{
    FeedEvent, FeedEvents, Lookup, LookupQuery, NewSession, PatchLimits, PatchOutcome, Replication,
    Session, SessionStore, merge_patch, unix_now,
};
use crate::error::StoreError;

/// How often (seconds) writes sweep out expired entries.
const SWEEP_INTERVAL_SECS: u64 = 30;

#[derive(Default)]
struct Tables {
    sessions: HashMap<String, Session>,
    by_subject: HashMap<String, HashSet<String>>,
    denied: HashMap<String, u64>,
    next_sweep: u64,
}

impl Tables {
    fn live_session(&self, sid: &str, now: u64) -> Option<&Session> {
        self.sessions.get(sid).filter(|s| s.expires_at > now)
    }

    fn remove_session(&mut self, sid: &str) -> Option<Session> {
        let session = self.sessions.remove(sid)?;
        if let Some(sids) = self.by_subject.get_mut(&session.sub) {
            sids.remove(sid);
            if sids.is_empty() {
                self.by_subject.remove(&session.sub);
            }
        }
        Some(session)
    }

    fn sweep(&mut self, now: u64) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP_INTERVAL_SECS;
        let expired: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.expires_at <= now)
            .map(|s| s.sid.clone())
            .collect();
        for sid in expired {
            self.remove_session(&sid);
        }
        self.denied.retain(|_, exp| *exp > now);
    }
}

/// Sessions kept in this process's memory.
#[derive(Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn tables(&self) -> Result<std::sync::MutexGuard<'_, Tables>, StoreError> {
        self.tables
            .lock()
            .map_err(|_| StoreError::Unavailable("embedded store lock poisoned".into()))
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn lookup(&self, query: LookupQuery<'_>) -> Result<Lookup, StoreError> {
        let now = unix_now();
        let tables = self.tables()?;
        Ok(Lookup {
            session: query
                .sid
                .and_then(|sid| tables.live_session(sid, now))
                .cloned(),
            revoked: query
                .jti
                .is_some_and(|jti| tables.denied.get(jti).is_some_and(|exp| *exp > now)),
        })
    }

    async fn create(&self, new: NewSession) -> Result<(), StoreError> {
        let now = unix_now();
        let mut tables = self.tables()?;
        tables.sweep(now);
        tables
            .by_subject
            .entry(new.sub.clone())
            .or_default()
            .insert(new.sid.clone());
        tables.sessions.insert(
            new.sid.clone(),
            Session {
                sid: new.sid,
                sub: new.sub,
                data: new.data,
                expires_at: new.expires_at,
                secret: new.secret,
            },
        );
        Ok(())
    }

    async fn get(&self, sid: &str) -> Result<Option<Session>, StoreError> {
        Ok(self.tables()?.live_session(sid, unix_now()).cloned())
    }

    async fn patch(
        &self,
        sid: &str,
        patch: &Value,
        limits: PatchLimits,
    ) -> Result<PatchOutcome, StoreError> {
        let now = unix_now();
        let mut tables = self.tables()?;
        let Some(session) = tables.sessions.get_mut(sid).filter(|s| s.expires_at > now) else {
            return Ok(PatchOutcome::NotFound);
        };
        let mut data = session.data.clone();
        merge_patch(&mut data, patch);
        let size = serde_json::to_vec(&data)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > limits.max_session_bytes {
            return Ok(PatchOutcome::TooLarge);
        }
        session.data = data;
        Ok(PatchOutcome::Patched(session.clone()))
    }

    async fn delete(&self, sid: &str) -> Result<(bool, Replication), StoreError> {
        let now = unix_now();
        let mut tables = self.tables()?;
        let existed = tables
            .remove_session(sid)
            .is_some_and(|s| s.expires_at > now);
        Ok((existed, Replication::NotApplicable))
    }

    async fn delete_subject(&self, sub: &str) -> Result<(Vec<String>, Replication), StoreError> {
        let now = unix_now();
        let mut tables = self.tables()?;
        let sids: Vec<String> = tables
            .by_subject
            .get(sub)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let deleted = sids
            .into_iter()
            .filter(|sid| {
                tables
                    .remove_session(sid)
                    .is_some_and(|s| s.expires_at > now)
            })
            .collect();
        Ok((deleted, Replication::NotApplicable))
    }

    async fn revoke(&self, jti: &str, exp: u64) -> Result<Replication, StoreError> {
        let now = unix_now();
        let mut tables = self.tables()?;
        tables.sweep(now);
        let entry = tables.denied.entry(jti.to_owned()).or_insert(exp);
        *entry = (*entry).max(exp);
        Ok(Replication::NotApplicable)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.tables().map(|_| ())
    }

    /// No other sidecar shares this store: the feed is connected from the start and never
    /// says anything else (this sidecar applies its own changes as it makes them).
    fn feed(&self) -> FeedEvents {
        let (events, receiver) = tokio::sync::mpsc::channel(1);
        let _ = events.try_send(FeedEvent::Subscribed);
        receiver
    }
}

//! Session writes through one handle: [`Sessions`] owns the store and this sidecar's cache, and
//! every write that changes what a token is worth (patch, delete, log out everywhere, revoke)
//! is made in the store and then applied to this sidecar's own cache, once, here, before the
//! caller answers. The other sidecars hear of it from the store, which publishes every such
//! write atomically with it (mini-redis `Db::set` notifies its own task the same way).

use std::sync::Arc;

use serde_json::Value;

use crate::cache::DecisionCache;
use crate::error::StoreError;
use crate::store::{
    Invalidation, NewSession, PatchLimits, PatchOutcome, Replication, Session, SessionStore,
    unix_now,
};

/// The session store and this sidecar's cache, written together.
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    cache: DecisionCache,
    /// `--session-keys`: new sessions get a secret of their own.
    issue_session_secrets: bool,
}

impl Sessions {
    pub fn new(
        store: Arc<dyn SessionStore>,
        cache: DecisionCache,
        issue_session_secrets: bool,
    ) -> Self {
        Sessions {
            store,
            cache,
            issue_session_secrets,
        }
    }

    /// Whether new sessions get a secret of their own (per-session keys).
    pub fn issue_session_secrets(&self) -> bool {
        self.issue_session_secrets
    }

    /// Stores a new session (no token can depend on it yet: nothing to invalidate).
    pub async fn create(&self, session: NewSession) -> Result<(), StoreError> {
        self.store.create(session).await
    }

    pub async fn get(&self, sid: &str) -> Result<Option<Session>, StoreError> {
        self.store.get(sid).await
    }

    /// Applies a merge patch atomically; a patched session's cached tokens are read again.
    pub async fn patch(
        &self,
        sid: &str,
        patch: &Value,
        limits: PatchLimits,
    ) -> Result<PatchOutcome, StoreError> {
        let outcome = self.store.patch(sid, patch, limits).await?;
        if matches!(outcome, PatchOutcome::Patched(_)) {
            self.apply_locally(Invalidation::SessionUpdated(sid.to_owned()))
                .await;
        }
        Ok(outcome)
    }

    /// Deletes a session (whether or not it existed, its tokens are rejected from now on);
    /// whether a replica holds the deletion.
    pub async fn delete(&self, sid: &str) -> Result<Replication, StoreError> {
        let (_, replication) = self.store.delete(sid).await?;
        self.apply_locally(Invalidation::SessionDeleted(sid.to_owned()))
            .await;
        Ok(replication)
    }

    /// Deletes every session of a subject; the ids deleted, and whether replicas hold every
    /// deletion.
    pub async fn delete_subject(
        &self,
        sub: &str,
    ) -> Result<(Vec<String>, Replication), StoreError> {
        let (sids, replication) = self.store.delete_subject(sub).await?;
        for sid in &sids {
            self.apply_locally(Invalidation::SessionDeleted(sid.clone()))
                .await;
        }
        Ok((sids, replication))
    }

    /// Deny-lists a token id until `until` (nothing to store once it has passed: the token is
    /// expired anyway), and rejects it here at once; whether a replica holds the entry.
    pub async fn revoke(&self, jti: String, until: u64) -> Result<Replication, StoreError> {
        let replication = if until > unix_now() {
            self.store.revoke(&jti, until).await?
        } else {
            Replication::NotApplicable
        };
        self.apply_locally(Invalidation::TokenRevoked(jti)).await;
        Ok(replication)
    }

    /// Whether the store answers (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    /// A change made through this sidecar, applied to its own cache before the caller
    /// answers.
    async fn apply_locally(&self, change: Invalidation) {
        self.cache.apply(&change).await;
    }
}

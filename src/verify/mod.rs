//! Deciding on a token: the [`Verifier`], which asks the cache first
//! and, on a miss, verifies the signature and claims ([`jwt`]) and asks the session store once.
//!
//! Fail closed: when the store cannot answer and nothing usable is cached, the verdict is
//! [`Verdict::Unavailable`], never a grant. The one exception is the one SPEC §4 makes: a
//! decision cached before the invalidation feed was lost may be served, until its deadline,
//! while the store cannot re-check it.

pub mod claim_headers;
pub mod extract;
pub mod jwt;
pub mod session_keys;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::AlgorithmFamily;

use crate::cache::{CachedDecision, DecisionCache, Freshness, TokenKey};
pub use crate::decision::{Decision, Grant};
use crate::error::{Reason, StoreError, Undecidable};
use crate::metrics::{Metrics, Outcome};
use crate::store::{Lookup, LookupQuery, Session, SessionStore};
use claim_headers::ClaimHeaders;
use jwt::{JwtVerifier, Unverified, VerifiedClaims};
use session_keys::{Admission, SessionKeyGate};

/// The answer for one request, the one type the handlers see: whether it came from the cache,
/// a fresh verification or an invalidation is the verifier's business.
pub enum Verdict {
    /// Valid: the grant, with its pre-rendered headers.
    Granted(Arc<Grant>),
    /// Invalid, with the reason (a rejection cached or computed, or an invalidation since).
    Denied(Reason),
    /// Undecidable: the store could not answer and nothing usable was cached.
    Unavailable,
    /// Undecidable: the key set the token needs was never loaded (`503 keys_unavailable`).
    KeysUnavailable,
}

impl Verdict {
    /// The answer a decision gives.
    fn of(entry: &CachedDecision) -> Verdict {
        match &entry.decision {
            Decision::Grant(grant) => Verdict::Granted(Arc::clone(grant)),
            Decision::Deny(reason) => Verdict::Denied(*reason),
        }
    }

    fn outcome(&self) -> Outcome {
        match self {
            Verdict::Granted(_) => Outcome::Valid,
            Verdict::Denied(reason) => Outcome::Invalid(*reason),
            Verdict::Unavailable => Outcome::Unavailable,
            Verdict::KeysUnavailable => Outcome::KeysUnavailable,
        }
    }
}

/// Decides on tokens: cache, then signature and claims, then the store.
pub struct Verifier {
    jwt: JwtVerifier,
    cache: DecisionCache,
    store: Arc<dyn SessionStore>,
    metrics: Arc<Metrics>,
    /// With `--session-keys`: what unknown `kid`s may cost the store.
    session_keys: Option<SessionKeyGate>,
    /// `--claim-header`: claims rendered as headers of their own when a grant is made.
    claim_headers: ClaimHeaders,
}

impl Verifier {
    pub fn new(
        jwt: JwtVerifier,
        cache: DecisionCache,
        store: Arc<dyn SessionStore>,
        metrics: Arc<Metrics>,
        session_keys: Option<SessionKeyGate>,
    ) -> Self {
        Verifier {
            jwt,
            cache,
            store,
            metrics,
            session_keys,
            claim_headers: ClaimHeaders::default(),
        }
    }

    /// The `--claim-header` mappings.
    pub fn claim_headers(&self) -> &ClaimHeaders {
        &self.claim_headers
    }

    /// Renders these claims as headers of every grant whose claims are an issuer's word.
    pub fn with_claim_headers(mut self, claim_headers: ClaimHeaders) -> Self {
        self.claim_headers = claim_headers;
        self
    }

    /// The decision cache (for its size in `/metrics`).
    pub fn cache(&self) -> &DecisionCache {
        &self.cache
    }

    /// The JWT verifier (for the session API, which reads tokens it is asked to revoke).
    pub fn jwt(&self) -> &JwtVerifier {
        &self.jwt
    }

    /// Decides on a token, and counts the verification.
    pub async fn verify(&self, token: &str) -> Verdict {
        let started = Instant::now();
        let key = self.cache.key(token);
        let (verdict, hit) = match self.cache.get(key).await {
            Some((entry, Freshness::Trusted)) => (Verdict::of(&entry), true),
            Some((_, Freshness::Rejected(reason))) => (Verdict::Denied(reason), true),
            Some((entry, Freshness::Recheck)) => (self.recheck(entry, token).await, false),
            None => {
                let computed = self
                    .cache
                    .get_or_compute(key, self.compute(token, key))
                    .await;
                match computed {
                    // An invalidation that arrived while the store was being read has marked
                    // the entry as it was admitted: it is answered now, not at the next hit.
                    Ok(entry) => match self.cache.rejection(&entry) {
                        Some(reason) => (Verdict::Denied(reason), false),
                        None => (Verdict::of(&entry), false),
                    },
                    Err(undecidable) => match *undecidable {
                        Undecidable::KeysUnavailable => (Verdict::KeysUnavailable, false),
                        Undecidable::Store(_) => (Verdict::Unavailable, false),
                    },
                }
            }
        };
        self.metrics
            .verification(verdict.outcome(), hit, started.elapsed());
        verdict
    }

    /// Verifies a token from scratch: signature, claims, then (when it depends on the store)
    /// one store lookup.
    async fn compute(&self, token: &str, key: TokenKey) -> Result<CachedDecision, Undecidable> {
        let epoch = self.cache.trust_epoch();
        let header = match self.jwt.header(token) {
            Ok(header) => header,
            Err(reason) => return Ok(self.deny(reason, key, epoch)),
        };
        self.metrics.signature_check();
        if let Some(gate) = &self.session_keys
            && header.alg.family() == AlgorithmFamily::Hmac
            && let Some(kid) = header.kid.as_deref()
        {
            return Ok(self
                .compute_session_keyed(token, &header, kid, gate, key, epoch)
                .await?);
        }
        let claims = match self.jwt.verify_token(token, &header).await {
            Ok(claims) => claims,
            Err(Unverified::Denied(reason)) => return Ok(self.deny(reason, key, epoch)),
            // Not cached: a refresh a moment later may find the key.
            Err(Unverified::UnknownKeyForNow) => {
                return Ok(self.deny_uncached(Reason::UnknownKey, key, epoch));
            }
            Err(Unverified::KeysUnavailable) => return Err(Undecidable::KeysUnavailable),
        };
        let lookup = self.lookup_for(&claims).await?;
        Ok(self.decide(claims, token, lookup, key, epoch))
    }

    /// A token whose `kid` is a session id, signed with that session's own secret: the store is
    /// asked first (the key lives there), but only for well-formed ids and within the gate's
    /// bounds. Whoever holds the secret can sign any claims, so the subject is the session's
    /// and the payload is never passed on as the issuer's claims (SPEC §3.3).
    async fn compute_session_keyed(
        &self,
        token: &str,
        header: &jwt::JoseHeader,
        kid: &str,
        gate: &SessionKeyGate,
        key: TokenKey,
        epoch: u64,
    ) -> Result<CachedDecision, StoreError> {
        if !jwt::valid_id(kid) {
            return Ok(self.deny(Reason::Malformed, key, epoch));
        }
        let jti = match self.jwt.unverified_jti(token) {
            Ok(jti) => jti,
            Err(reason) => return Ok(self.deny(reason, key, epoch)),
        };
        match gate.admit(kid) {
            Admission::Ask => {}
            Admission::KnownAbsent => return Ok(self.deny(Reason::SessionInactive, key, epoch)),
            // Not cached: the same token may pass once the budget refills.
            Admission::OverBudget => return Ok(self.deny_uncached(Reason::UnknownKey, key, epoch)),
        }
        let query = LookupQuery {
            sid: Some(kid),
            jti: jti.as_deref(),
        };
        let lookup = self.store.lookup(query).await?;
        gate.record(kid, lookup.session.is_some());
        let Some(session) = lookup.session.as_ref() else {
            return Ok(self.deny(Reason::SessionInactive, key, epoch));
        };
        let Some(secret) = session.secret.as_deref() else {
            return Ok(self.deny(Reason::UnknownKey, key, epoch));
        };
        let Ok(secret) = URL_SAFE_NO_PAD.decode(secret) else {
            return Ok(self.deny(Reason::UnknownKey, key, epoch));
        };
        let mut claims = match self.jwt.verify_with_session_secret(token, header, &secret) {
            Ok(claims) => claims,
            Err(reason) => return Ok(self.deny(reason, key, epoch)),
        };
        if claims.sub() != session.sub {
            return Ok(self.deny(Reason::Malformed, key, epoch));
        }
        match claims.sid() {
            Some(sid) if sid != kid => return Ok(self.deny(Reason::Malformed, key, epoch)),
            Some(_) => {}
            None => {
                if let Err(reason) = claims.set_sid(kid) {
                    return Ok(self.deny(reason, key, epoch));
                }
            }
        }
        if claims.jti() != jti.as_deref() {
            return Ok(self.deny(Reason::Malformed, key, epoch));
        }
        claims.withhold_payload();
        Ok(self.decide(claims, token, lookup, key, epoch))
    }

    /// Asks the store again about a cached grant whose session changed or whose feed was lost.
    async fn recheck(&self, entry: Arc<CachedDecision>, token: &str) -> Verdict {
        let Decision::Grant(grant) = &entry.decision else {
            return Verdict::of(&entry);
        };
        let started = Instant::now();
        let epoch = self.cache.trust_epoch();
        match self.lookup_for(&grant.claims).await {
            Ok(lookup) => {
                let key = entry.key();
                let fresh = self.decide(grant.claims.clone(), token, lookup, key, epoch);
                Verdict::of(&*self.cache.replace(fresh, started).await)
            }
            Err(_) => {
                // The store cannot answer for this session: what was cached stands until its
                // deadline (SPEC §4; no revocation can be written to a shard that is down).
                self.cache.recheck_failed(&entry);
                Verdict::of(&entry)
            }
        }
    }

    async fn lookup_for(&self, claims: &VerifiedClaims) -> Result<Lookup, StoreError> {
        if claims.sid().is_none() && claims.jti().is_none() {
            return Ok(Lookup::default());
        }
        let query = LookupQuery {
            sid: claims.sid(),
            jti: claims.jti(),
        };
        self.store.lookup(query).await
    }

    /// The decision on `token`, whose `claims` were verified, given what the store said.
    fn decide(
        &self,
        claims: VerifiedClaims,
        token: &str,
        lookup: Lookup,
        key: TokenKey,
        epoch: u64,
    ) -> CachedDecision {
        if lookup.revoked {
            return self.deny(Reason::Revoked, key, epoch);
        }
        let session = match claims.sid() {
            Some(_) => match lookup.session {
                Some(session) if session.sub == claims.sub() => Some(session),
                _ => return self.deny(Reason::SessionInactive, key, epoch),
            },
            None => None,
        };
        let Some(mut grant) = grant(claims, session.as_ref()) else {
            return self.deny(Reason::Malformed, key, epoch);
        };
        // Only an issuer's claims are mapped: a per-session key's payload is withheld.
        if !self.claim_headers.is_empty() && grant.claims.issuer_claims {
            let rendered = self.claim_headers.render(&grant.claims.payload_json(token));
            if rendered.dropped > 0 {
                self.metrics.claim_headers_dropped(rendered.dropped);
            }
            grant.claim_headers = rendered.headers;
        }
        grant.headers_to_remove = grant.unset_headers(self.claim_headers.names());
        let mut until = until_unix(grant.claims.exp);
        if let Some(session) = &session {
            until = until.min(until_unix(session.expires_at));
        }
        let now = Instant::now();
        let deadline = now.checked_add(until.min(self.cache.ttl())).unwrap_or(now);
        CachedDecision::new(Decision::Grant(Arc::new(grant)), key, deadline, epoch)
    }

    /// A rejection that is answered but not kept: it expires as it is made.
    fn deny_uncached(&self, reason: Reason, key: TokenKey, epoch: u64) -> CachedDecision {
        CachedDecision::new(Decision::Deny(reason), key, Instant::now(), epoch)
    }

    fn deny(&self, reason: Reason, key: TokenKey, epoch: u64) -> CachedDecision {
        let now = Instant::now();
        let decision = Decision::Deny(reason);
        let trust = decision
            .longest_trust()
            .map_or(self.cache.ttl(), |longest| longest.min(self.cache.ttl()));
        let deadline = now.checked_add(trust).unwrap_or(now);
        CachedDecision::new(decision, key, deadline, epoch)
    }
}

/// Time from now until a Unix timestamp (zero when it has passed). Never overflows: a time
/// beyond what the clock can hold is as far as it can hold ([`crate::store::MAX_UNIX_TIME`]).
fn until_unix(at: u64) -> Duration {
    let at = at.min(crate::store::MAX_UNIX_TIME);
    UNIX_EPOCH
        .checked_add(Duration::from_secs(at))
        .and_then(|when| when.duration_since(SystemTime::now()).ok())
        .unwrap_or(Duration::ZERO)
}

/// Builds a grant, rendering its headers; `None` when a value cannot be a header.
fn grant(claims: VerifiedClaims, session: Option<&Session>) -> Option<Grant> {
    let session_header = match session {
        Some(session) => Some(URL_SAFE_NO_PAD.encode(serde_json::to_vec(&session.data).ok()?)),
        None => None,
    };
    Grant::new(claims, session_header.as_deref())
}

//! What is decided about one token: [`Decision`] (grant or deny) and the [`Grant`] it carries,
//! with what a cache needs to know about them: the ids a decision depends on
//! ([`Decision::dependencies`]), its weight in bytes ([`Decision::weight`]), and how long a
//! rejection may be kept ([`NEGATIVE_TTL`], the one negative-caching policy).
//!
//! A leaf: it imports nothing of the cache, the verifier or the store, so both the cache and
//! the verifier build on it without importing each other.

use std::mem::size_of;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};

use crate::error::Reason;
use crate::verify::jwt::VerifiedClaims;

/// Longest time a rejected token's decision is cached: a flood of one bad token costs one
/// verification, and a key rotation is picked up quickly.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// The decision on one token.
pub enum Decision {
    /// Shared: most cached rejections are small, grants are not, and a verdict hands the grant
    /// to the handler without copying it.
    Grant(Arc<Grant>),
    Deny(Reason),
}

/// A valid token and, when it is bound to one, its session's data, kept once each in the form
/// the forward-auth response sends them (rendered when the decision was made). What
/// introspection needs beyond that is decoded from these on demand.
pub struct Grant {
    /// `sub`, `sid` (as their header values), `jti`, `exp` and the payload segment.
    pub claims: VerifiedClaims,
    /// `X-Auth-Session`: base64url of the session data JSON, for session-bound tokens.
    pub session_header: Option<HeaderValue>,
    /// The `--claim-header` headers of this token's claims (empty, without allocation, when
    /// none is configured or its claims are not an issuer's word).
    pub claim_headers: Box<[(HeaderName, HeaderValue)]>,
    /// `x-envoy-auth-headers-to-remove`: the headers the sidecar owns that this grant does not
    /// set (rendered with the grant, see [`Grant::unset_headers`]); `None` when it sets all.
    pub headers_to_remove: Option<HeaderValue>,
}

impl Grant {
    /// The headers the forward-auth answer owns (`X-Auth-*` and the `--claim-header` names
    /// given) that this grant does not set, as one header value: Envoy removes them from the
    /// request, so a client's own value of one never reaches the app.
    pub fn unset_headers<'a>(
        &self,
        claim_header_names: impl Iterator<Item = &'a HeaderName>,
    ) -> Option<HeaderValue> {
        let owned = [
            ("x-auth-session-id", self.claims.session_id.is_some()),
            ("x-auth-claims", self.claims.payload.is_some()),
            ("x-auth-session", self.session_header.is_some()),
        ];
        let unset_owned = owned.iter().filter(|(_, set)| !set).map(|(name, _)| *name);
        let unset_claims = claim_header_names
            .filter(|name| !self.claim_headers.iter().any(|(set, _)| set == *name))
            .map(HeaderName::as_str);
        let list: Vec<&str> = unset_owned.chain(unset_claims).collect();
        if list.is_empty() {
            return None;
        }
        HeaderValue::from_str(&list.join(", ")).ok()
    }

    /// Session id, for session-bound tokens.
    pub fn sid(&self) -> Option<&str> {
        self.claims.sid()
    }

    /// Token id, when the token has one.
    pub fn jti(&self) -> Option<&str> {
        self.claims.jti.as_deref()
    }
}

/// An id that a decision depends on: a change to it (a session deleted or updated, a token
/// revoked) changes the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dependency<'a> {
    Session(&'a str),
    Token(&'a str),
}

impl Decision {
    /// The ids this decision depends on: a grant's session and token id; nothing for a
    /// rejection (a rejection never becomes a grant by a change elsewhere).
    pub fn dependencies(&self) -> [Option<Dependency<'_>>; 2] {
        match self {
            Decision::Grant(grant) => [
                grant.sid().map(Dependency::Session),
                grant.jti().map(Dependency::Token),
            ],
            Decision::Deny(_) => [None, None],
        }
    }

    /// Whether the store had a say in this decision (so a lost invalidation feed makes it
    /// stale).
    pub fn depends_on_store(&self) -> bool {
        self.dependencies().iter().any(Option::is_some)
    }

    /// Bytes of memory this decision holds: its own size and what it points to (for a byte
    /// budget of the cache). An estimate that never under-counts what it names.
    pub fn weight(&self) -> usize {
        let header = |value: &HeaderValue| size_of::<HeaderValue>() + value.len();
        let optional = |value: &Option<HeaderValue>| value.as_ref().map_or(0, header);
        size_of::<Decision>()
            + match self {
                Decision::Deny(_) => 0,
                Decision::Grant(grant) => {
                    // The Arc's two reference counts, then the grant.
                    2 * size_of::<usize>()
                        + size_of::<Grant>()
                        + grant.claims.subject.len()
                        + optional(&grant.claims.session_id)
                        + grant.claims.jti.as_ref().map_or(0, |jti| jti.len())
                        + optional(&grant.claims.payload)
                        + optional(&grant.session_header)
                        + optional(&grant.headers_to_remove)
                        + grant
                            .claim_headers
                            .iter()
                            .map(|(name, value)| {
                                size_of::<HeaderName>() + name.as_str().len() + header(value)
                            })
                            .sum::<usize>()
                }
            }
    }

    /// How long this decision may be cached at most, before the token's own limits: a
    /// rejection [`NEGATIVE_TTL`], a grant as long as the cache trusts anything (`None`).
    pub fn longest_trust(&self) -> Option<Duration> {
        match self {
            Decision::Deny(_) => Some(NEGATIVE_TTL),
            Decision::Grant(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Decision, NEGATIVE_TTL};
    use crate::error::Reason;

    #[test]
    fn a_rejection_depends_on_nothing_and_is_kept_briefly() {
        let deny = Decision::Deny(Reason::BadSignature);
        assert_eq!(deny.dependencies(), [None, None]);
        assert!(!deny.depends_on_store());
        assert_eq!(deny.longest_trust(), Some(NEGATIVE_TTL));
        assert!(deny.weight() >= std::mem::size_of::<Decision>());
    }
}

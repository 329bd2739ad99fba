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

use bytes::BytesMut;
use hyper::header::{HeaderName, HeaderValue};

use crate::error::Reason;
use crate::verify::jwt::VerifiedClaims;

/// What the allocator adds to each heap block: its header and the rounding up to 16 bytes
/// (glibc: 8 bytes of header, blocks in steps of 16; on average 16 in all).
pub const ALLOCATION_BYTES: usize = 16;

/// The shared header a `Bytes` buffer gets once it has two owners (`bytes`' `Shared`: buffer,
/// capacity, reference count), with its allocation.
const SHARED_BUFFER_BYTES: usize = 3 * size_of::<usize>() + ALLOCATION_BYTES;

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
/// introspection needs beyond that is decoded from these, or from the token, on demand.
///
/// Memory (README, "Memory"): the subject, session id, token id and session header values are
/// slices of one shared buffer (one allocation, and one reference count, for all of them); the
/// payload (`X-Auth-Claims`), the largest value, is not kept at all but re-sliced from the
/// token of each request ([`VerifiedClaims::passed_payload`]).
pub struct Grant {
    /// `sub`, `sid` (as their header values), `jti`, `exp`, and whether the payload is passed on.
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
    /// A grant of `claims` and, for a session-bound token, its session data as the
    /// `X-Auth-Session` value (`session_header`), with the header values packed into one
    /// buffer; no claim headers yet. `None` when a value cannot be a header.
    pub fn new(claims: VerifiedClaims, session_header: Option<&str>) -> Option<Grant> {
        let parts = [
            Some(claims.subject.as_bytes()),
            claims.session_id.as_ref().map(HeaderValue::as_bytes),
            claims.jti.as_ref().map(HeaderValue::as_bytes),
            session_header.map(str::as_bytes),
        ];
        let mut buffer = BytesMut::with_capacity(parts.iter().flatten().map(|p| p.len()).sum());
        for part in parts.iter().flatten() {
            buffer.extend_from_slice(part);
        }
        let buffer = buffer.freeze();
        let mut start = 0;
        let [subject, session_id, jti, session_header] = parts.map(|part| {
            part.map(|part| {
                let end = start + part.len();
                let value = HeaderValue::from_maybe_shared(buffer.slice(start..end));
                start = end;
                value
            })
            .transpose()
        });
        Some(Grant {
            claims: VerifiedClaims {
                subject: subject.ok()??,
                session_id: session_id.ok()?,
                jti: jti.ok()?,
                ..claims
            },
            session_header: session_header.ok()?,
            claim_headers: Box::default(),
            headers_to_remove: None,
        })
    }

    /// The headers the forward-auth answer owns (`X-Auth-*` and the `--claim-header` names
    /// given) that this grant does not set, as one header value: Envoy removes them from the
    /// request, so a client's own value of one never reaches the app.
    pub fn unset_headers<'a>(
        &self,
        claim_header_names: impl Iterator<Item = &'a HeaderName>,
    ) -> Option<HeaderValue> {
        let owned = [
            ("x-auth-session-id", self.claims.session_id.is_some()),
            ("x-auth-claims", self.claims.issuer_claims),
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
        self.claims.jti()
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
    /// budget of the cache). An estimate that never under-counts what it names: every heap
    /// block is counted with the allocator's overhead ([`ALLOCATION_BYTES`]).
    pub fn weight(&self) -> usize {
        size_of::<Decision>()
            + match self {
                Decision::Deny(_) => 0,
                Decision::Grant(grant) => {
                    let header = |value: &HeaderValue| size_of::<HeaderValue>() + value.len();
                    let owned = |value: &Option<HeaderValue>| {
                        value.as_ref().map_or(0, |v| v.len() + ALLOCATION_BYTES)
                    };
                    let packed = grant.claims.subject.len()
                        + [
                            &grant.claims.session_id,
                            &grant.claims.jti,
                            &grant.session_header,
                        ]
                        .into_iter()
                        .flatten()
                        .map(HeaderValue::len)
                        .sum::<usize>();
                    // The Arc's block (two counts and the grant), the packed buffer and its
                    // shared header (`bytes`' reference count), the claim headers.
                    ALLOCATION_BYTES
                        + 2 * size_of::<usize>()
                        + size_of::<Grant>()
                        + packed
                        + ALLOCATION_BYTES
                        + SHARED_BUFFER_BYTES
                        + owned(&grant.headers_to_remove)
                        + grant
                            .claim_headers
                            .iter()
                            .map(|(name, value)| {
                                size_of::<HeaderName>()
                                    + name.as_str().len()
                                    + header(value)
                                    + 2 * ALLOCATION_BYTES
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
    use hyper::header::HeaderValue;

    use super::{Decision, Grant, NEGATIVE_TTL};
    use crate::error::Reason;
    use crate::verify::jwt::VerifiedClaims;

    /// Where a header value's bytes live.
    fn span(value: &HeaderValue) -> std::ops::Range<usize> {
        let start = value.as_bytes().as_ptr() as usize;
        start..start + value.len()
    }

    #[test]
    fn a_grant_keeps_its_header_values_in_one_buffer_and_not_the_payload() {
        let claims = VerifiedClaims {
            subject: HeaderValue::from_static("alice"),
            session_id: Some(HeaderValue::from_static("sid-1")),
            jti: Some(HeaderValue::from_static("jti-1")),
            exp: 1,
            issuer_claims: true,
        };
        let grant = Grant::new(claims, Some("eyJyb2xlIjoidXNlciJ9")).expect("grant");
        let values = [
            &grant.claims.subject,
            grant.claims.session_id.as_ref().expect("sid"),
            grant.claims.jti.as_ref().expect("jti"),
            grant.session_header.as_ref().expect("session"),
        ];
        // Back to back: one allocation for all four.
        for pair in values.windows(2) {
            assert_eq!(span(pair[0]).end, span(pair[1]).start);
        }
        assert_eq!(grant.claims.sub(), "alice");
        assert_eq!(grant.sid(), Some("sid-1"));
        assert_eq!(grant.jti(), Some("jti-1"));
        // The payload comes from the token each time.
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln";
        assert_eq!(
            grant.claims.passed_payload(token),
            Some("eyJzdWIiOiJhbGljZSJ9")
        );
        assert_eq!(grant.claims.payload_json(token)["sub"], "alice");
        assert_eq!(grant.unset_headers(std::iter::empty()), None);
    }

    #[test]
    fn a_withheld_payload_is_neither_passed_on_nor_decoded() {
        let mut claims = VerifiedClaims {
            subject: HeaderValue::from_static("alice"),
            session_id: None,
            jti: None,
            exp: 1,
            issuer_claims: true,
        };
        claims.withhold_payload();
        let grant = Grant::new(claims, None).expect("grant");
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln";
        assert_eq!(grant.claims.passed_payload(token), None);
        assert_eq!(grant.claims.payload_json(token), serde_json::json!({}));
        let unset = grant.unset_headers(std::iter::empty()).expect("unset");
        assert_eq!(
            unset.to_str().ok(),
            Some("x-auth-session-id, x-auth-claims, x-auth-session")
        );
    }

    #[test]
    fn a_rejection_depends_on_nothing_and_is_kept_briefly() {
        let deny = Decision::Deny(Reason::BadSignature);
        assert_eq!(deny.dependencies(), [None, None]);
        assert!(!deny.depends_on_store());
        assert_eq!(deny.longest_trust(), Some(NEGATIVE_TTL));
        assert!(deny.weight() >= std::mem::size_of::<Decision>());
    }
}

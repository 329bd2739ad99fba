//! Typed errors and the one place where they become SPEC reasons and HTTP statuses.
//!
//! Every rejection a caller can see is a [`Reason`] (the closed list of SPEC §3.1) or an
//! [`ApiError`] (the session API). Handlers never pick a status code themselves: they return
//! one of these, and [`crate::http::respond`] renders it. Nothing here ever holds a token or
//! a secret, so errors are safe to log.

use hyper::StatusCode;
use thiserror::Error;

/// Why a token was not accepted: exactly the `reason` values of SPEC §3.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    MissingToken,
    Malformed,
    BadSignature,
    UnknownKey,
    AlgorithmNotAllowed,
    Expired,
    NotYetValid,
    InvalidIssuer,
    InvalidAudience,
    MissingClaim,
    SessionInactive,
    Revoked,
}

impl Reason {
    /// Every reason, in SPEC order (used to pre-register metric label values).
    pub const ALL: [Reason; 12] = [
        Reason::MissingToken,
        Reason::Malformed,
        Reason::BadSignature,
        Reason::UnknownKey,
        Reason::AlgorithmNotAllowed,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::InvalidIssuer,
        Reason::InvalidAudience,
        Reason::MissingClaim,
        Reason::SessionInactive,
        Reason::Revoked,
    ];

    /// The wire name of the reason (`reason` in JSON bodies, `error_description` in headers).
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::MissingToken => "missing_token",
            Reason::Malformed => "malformed",
            Reason::BadSignature => "bad_signature",
            Reason::UnknownKey => "unknown_key",
            Reason::AlgorithmNotAllowed => "algorithm_not_allowed",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::InvalidIssuer => "invalid_issuer",
            Reason::InvalidAudience => "invalid_audience",
            Reason::MissingClaim => "missing_claim",
            Reason::SessionInactive => "session_inactive",
            Reason::Revoked => "revoked",
        }
    }

    /// Position in [`Reason::ALL`], for metric lookups without hashing.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Maps jsonwebtoken's error kinds onto the SPEC reasons.
impl From<&jsonwebtoken::errors::Error> for Reason {
    fn from(err: &jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind as K;
        match err.kind() {
            K::InvalidSignature => Reason::BadSignature,
            K::ExpiredSignature => Reason::Expired,
            K::ImmatureSignature => Reason::NotYetValid,
            K::InvalidIssuer => Reason::InvalidIssuer,
            K::InvalidAudience => Reason::InvalidAudience,
            K::MissingRequiredClaim(_) => Reason::MissingClaim,
            K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => {
                Reason::AlgorithmNotAllowed
            }
            // A key that cannot be used for the token's algorithm (wrong curve, broken
            // key material) is the same, for the caller, as no key for it.
            K::InvalidEcdsaKey | K::InvalidEddsaKey | K::InvalidRsaKey(_) | K::InvalidKeyFormat => {
                Reason::UnknownKey
            }
            _ => Reason::Malformed,
        }
    }
}

/// The session store could not answer. Never cached; a verification that needs the store
/// and gets this answers `503 store_unavailable` (fail closed).
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store unreachable: {0}")]
    Unavailable(String),
    #[error("store timed out")]
    Timeout,
    #[error("store returned data it cannot read: {0}")]
    Corrupt(String),
    #[error("too many concurrent updates of one session")]
    Contended,
}

/// Why no decision could be made about a token (`503`, never cached, fail closed): the store
/// could not answer, or the key set the token needs was never loaded (SPEC §3.1
/// `keys_unavailable`).
#[derive(Debug, Error)]
pub enum Undecidable {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the key set this token needs has not been loaded yet")]
    KeysUnavailable,
}

/// Failures of the session and revocation API (SPEC §3.3), each with its status.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body is not valid JSON of the expected shape: {0}")]
    MalformedBody(String),
    #[error("request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("request line and headers are larger than {0} bytes")]
    HeadersTooLarge(usize),
    #[error("session data is larger than {0} bytes")]
    SessionTooLarge(usize),
    #[error("JSON is nested deeper than {0}")]
    TooDeep(usize),
    #[error("the token has no jti: revoke its session or its subject instead")]
    MissingJti,
    #[error("an admin bearer credential is required for this call")]
    Unauthorized,
    #[error("the session API is off: start the sidecar with --admin-token-file")]
    SessionApiDisabled,
    #[error("this sidecar has no --jwt-secret-file to sign session tokens with")]
    NoSigningKey,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    /// The HTTP status and the short machine-readable reason of this error.
    pub fn status_and_reason(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::MalformedBody(_) => (StatusCode::BAD_REQUEST, "malformed_body"),
            ApiError::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            ApiError::SessionTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "session_too_large"),
            ApiError::TooDeep(_) => (StatusCode::BAD_REQUEST, "nesting_too_deep"),
            ApiError::MissingJti => (StatusCode::UNPROCESSABLE_ENTITY, "missing_jti"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "admin_credential_required"),
            ApiError::SessionApiDisabled => (StatusCode::FORBIDDEN, "session_api_disabled"),
            ApiError::NoSigningKey => (StatusCode::FORBIDDEN, "session_issuing_disabled"),
            ApiError::Store(StoreError::Contended) => (StatusCode::CONFLICT, "contended"),
            ApiError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        }
    }
}

/// A configuration that `serve` refuses to start with. The message names the flag.
#[derive(Debug, Error)]
#[error("{flag}: {message}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub message: String,
}

impl ConfigError {
    pub fn new(flag: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            flag,
            message: message.into(),
        }
    }
}

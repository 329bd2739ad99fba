//! Where a request's token comes from: `Authorization: Bearer <jwt>`, then the configured
//! cookie. Borrows from the request headers; allocates nothing.

use hyper::HeaderMap;
use hyper::header::{AUTHORIZATION, COOKIE};

use crate::error::Reason;

/// Finds the token of a request. `Err(MissingToken)` when there is none, `Err(Malformed)`
/// when what is there cannot be a token (not UTF-8, another scheme's syntax, too long).
pub fn token_from_headers<'h>(
    headers: &'h HeaderMap,
    cookie_name: Option<&str>,
    max_token_bytes: usize,
) -> Result<&'h str, Reason> {
    let mut authorization = headers.get_all(AUTHORIZATION).iter();
    if let Some(value) = authorization.next() {
        // Two Authorization headers are ambiguous: a proxy may have checked the other one.
        if authorization.next().is_some() {
            return Err(Reason::Malformed);
        }
        let value = value.to_str().map_err(|_| Reason::Malformed)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(Reason::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Reason::Malformed);
        }
        return checked(token.trim_start(), max_token_bytes);
    }
    if let Some(name) = cookie_name {
        let mut found = None;
        for header in headers.get_all(COOKIE) {
            let Ok(text) = header.to_str() else { continue };
            for pair in text.split(';') {
                if let Some((key, value)) = pair.trim().split_once('=')
                    && key == name
                {
                    // Two cookies of that name, in one header or in several: ambiguous.
                    if found.replace(value).is_some() {
                        return Err(Reason::Malformed);
                    }
                }
            }
        }
        if let Some(value) = found {
            return checked(value.trim_matches('"'), max_token_bytes);
        }
    }
    Err(Reason::MissingToken)
}

/// A token is three base64url segments joined by dots, within the size limit.
pub fn checked(token: &str, max_token_bytes: usize) -> Result<&str, Reason> {
    if token.is_empty() {
        return Err(Reason::MissingToken);
    }
    if token.len() > max_token_bytes
        || token.bytes().filter(|b| *b == b'.').count() != 2
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(Reason::Malformed);
    }
    Ok(token)
}

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
        // On the bytes: one pass over the token (this runs on every request, hits included).
        let value = value.as_bytes().trim_ascii();
        let space = value
            .iter()
            .position(|&b| b == b' ')
            .ok_or(Reason::Malformed)?;
        let (scheme, token) = value.split_at(space);
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return Err(Reason::Malformed);
        }
        let token = checked_bytes(token.trim_ascii_start(), max_token_bytes)?;
        return std::str::from_utf8(token).map_err(|_| Reason::Malformed);
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
    checked_bytes(token.as_bytes(), max_token_bytes)?;
    Ok(token)
}

/// The bytes a token may hold: base64url and the dots between segments.
const TOKEN_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
        byte += 1;
    }
    table
};

/// [`checked`] on bytes, in one branch-free pass (the compiler vectorizes it).
fn checked_bytes(token: &[u8], max_token_bytes: usize) -> Result<&[u8], Reason> {
    if token.is_empty() {
        return Err(Reason::MissingToken);
    }
    if token.len() > max_token_bytes {
        return Err(Reason::Malformed);
    }
    let (mut all_allowed, mut dots) = (true, 0usize);
    for &b in token {
        all_allowed &= TOKEN_BYTES[usize::from(b)];
        dots += usize::from(b == b'.');
    }
    if !all_allowed || dots != 2 {
        return Err(Reason::Malformed);
    }
    Ok(token)
}

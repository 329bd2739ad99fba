//! Token extraction from request headers (`verify::extract`): `Authorization: Bearer`, then the
//! token cookie. Never panics; whatever it returns as a token is one (`checked` accepts it,
//! it is a substring of a header the request carried, within the size limit); a well-formed
//! bearer header or cookie is always found, unless a second cookie of that name makes the
//! request ambiguous (`malformed`).
#![no_main]

use arbitrary::Arbitrary;
use hyper::HeaderMap;
use hyper::header::{AUTHORIZATION, COOKIE, HeaderValue};
use libfuzzer_sys::fuzz_target;
use session_sidecar::error::Reason;
use session_sidecar::verify::extract::{checked, token_from_headers};

const COOKIE_NAMES: [Option<&str>; 4] = [None, Some("sc_token"), Some("a"), Some("__Host-t")];
const TOKEN_BYTES: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";

#[derive(Arbitrary, Debug)]
enum Authorization {
    None,
    Raw(Vec<u8>),
    /// `<scheme> <token>` with the scheme in any case and spaces around.
    Bearer {
        scheme_case: u8,
        spaces_before: u8,
        spaces_between: u8,
        spaces_after: u8,
        token: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    authorization: Authorization,
    cookies: Vec<Vec<u8>>,
    /// Prepended as `<cookie name>=<well-formed token>` to the first cookie header.
    well_formed_cookie: Option<Vec<u8>>,
    cookie_name: u8,
    max_token_bytes: u16,
    raw_checked: String,
}

/// Three non-empty base64url segments made of the input's bytes.
fn well_formed(bytes: &[u8]) -> String {
    let mut segments: Vec<String> = bytes
        .chunks(bytes.len().div_ceil(3).max(1))
        .map(|chunk| {
            chunk
                .iter()
                .map(|b| TOKEN_BYTES[usize::from(*b) % TOKEN_BYTES.len()] as char)
                .collect()
        })
        .collect();
    segments.resize(3, "x".into());
    segments.join(".")
}

fn is_token(token: &str, max: usize) -> bool {
    !token.is_empty()
        && token.len() <= max
        && token.bytes().filter(|b| *b == b'.').count() == 2
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fuzz_target!(|input: Input| {
    let max = usize::from(input.max_token_bytes);
    let cookie_name = COOKIE_NAMES[usize::from(input.cookie_name) % COOKIE_NAMES.len()];

    // `checked` alone, on any text.
    if let Ok(token) = checked(&input.raw_checked, max) {
        assert!(is_token(token, max), "checked accepted {token:?}");
        assert_eq!(token, input.raw_checked);
    }

    let mut headers = HeaderMap::new();
    let mut expected_bearer = None;
    let mut auth_text = None;
    match &input.authorization {
        Authorization::None => {}
        Authorization::Raw(bytes) => {
            if let Ok(value) = HeaderValue::from_bytes(bytes) {
                auth_text = value.to_str().ok().map(str::to_owned);
                headers.insert(AUTHORIZATION, value);
            }
        }
        Authorization::Bearer {
            scheme_case,
            spaces_before,
            spaces_between,
            spaces_after,
            token,
        } => {
            let scheme: String = "bearer"
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if scheme_case >> (i % 8) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            let token = well_formed(token);
            let text = format!(
                "{}{scheme}{}{token}{}",
                " ".repeat(usize::from(spaces_before % 4)),
                " ".repeat(usize::from(spaces_between % 4) + 1),
                " ".repeat(usize::from(spaces_after % 4)),
            );
            let value = HeaderValue::from_str(&text).expect("ASCII header value");
            headers.insert(AUTHORIZATION, value);
            auth_text = Some(text);
            expected_bearer = Some(token);
        }
    }
    let has_authorization = headers.contains_key(AUTHORIZATION);

    let mut expected_cookie = None;
    for (i, bytes) in input.cookies.iter().enumerate() {
        let mut bytes = bytes.clone();
        if i == 0
            && let (Some(name), Some(token)) = (cookie_name, &input.well_formed_cookie)
        {
            let token = well_formed(token);
            let mut pair = format!("{name}={token}; ").into_bytes();
            pair.extend_from_slice(&bytes);
            bytes = pair;
            expected_cookie = Some(token);
        }
        match HeaderValue::from_bytes(&bytes) {
            Ok(value) => {
                // A cookie header that is not visible ASCII is skipped as a whole.
                if i == 0 && value.to_str().is_err() {
                    expected_cookie = None;
                }
                headers.append(COOKIE, value);
            }
            Err(_) if i == 0 => expected_cookie = None,
            Err(_) => {}
        }
    }

    let result = token_from_headers(&headers, cookie_name, max);
    if let Ok(token) = result {
        assert!(is_token(token, max), "extracted {token:?}");
        assert_eq!(checked(token, max), Ok(token));
        if has_authorization {
            let text = auth_text.as_deref().expect("a token from a UTF-8 header");
            assert!(text.contains(token), "{token:?} is not in {text:?}");
        } else {
            assert!(cookie_name.is_some(), "a cookie read without a cookie name");
        }
    }
    if let Some(token) = expected_bearer {
        let expected = if token.len() <= max {
            Ok(token.as_str())
        } else {
            Err(Reason::Malformed)
        };
        assert_eq!(result, expected, "bearer header {auth_text:?}");
    } else if !has_authorization && let Some(token) = expected_cookie {
        // Two cookies of the name anywhere in the request are ambiguous (SPEC §3).
        let pairs_of_name = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|text| text.split(';'))
            .filter(|pair| {
                pair.trim()
                    .split_once('=')
                    .is_some_and(|(key, _)| Some(key) == cookie_name)
            })
            .count();
        let expected = if pairs_of_name > 1 {
            Err(Reason::Malformed)
        } else if token.len() <= max {
            Ok(token.as_str())
        } else {
            Err(Reason::Malformed)
        };
        assert_eq!(result, expected, "cookie {headers:?}");
    }
    if !has_authorization && cookie_name.is_none() {
        assert_eq!(result, Err(Reason::MissingToken));
    }
});

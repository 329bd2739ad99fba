//! Claims to headers (`--claim-header CLAIM=HEADER`): which claims of a verified payload become
//! headers of their own on a forward-auth `200`, checked once at start-up, and their rendering,
//! done once when a grant is made (a cache hit only clones the rendered values).
//!
//! A claim is a dotted path into the payload (`realm_access.roles`); a string is sent as it is,
//! any other JSON value as compact JSON. A value that cannot be a header value (a control
//! character such as CR or LF, or whitespace at either end that HTTP would strip) is dropped and
//! counted, never a 5xx. Header names are checked at start-up: they cannot be one the sidecar
//! owns or one that frames or routes a message.

use hyper::header::{HeaderName, HeaderValue};
use serde_json::Value;

/// Header names a claim may not take: the ones the forward-auth answer owns, and ones that
/// frame, route or authenticate a message.
const RESERVED: &[&str] = &[
    "x-auth-subject",
    "x-auth-session-id",
    "x-auth-claims",
    "x-auth-session",
    "authorization",
    "cache-control",
    "connection",
    "content-length",
    "content-type",
    "cookie",
    "host",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "retry-after",
    "set-cookie",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "www-authenticate",
];

/// Longest claim path, in segments (a payload is at most `--max-json-depth` deep anyway).
const MAX_PATH_SEGMENTS: usize = 32;

/// One `--claim-header`: a path into the payload and the header it becomes.
#[derive(Debug, Clone)]
struct ClaimHeader {
    path: Vec<String>,
    header: HeaderName,
}

/// Every `X-Auth-*` header the forward-auth answer owns.
const AUTH_HEADERS: &str = "x-auth-subject, x-auth-session-id, x-auth-claims, x-auth-session";

/// The `--claim-header` mappings, in the order given.
#[derive(Debug, Clone)]
pub struct ClaimHeaders {
    mappings: Vec<ClaimHeader>,
    /// Every header the forward-auth answer owns, `X-Auth-*` and these (for the
    /// `x-envoy-auth-headers-to-remove` of an answer that sets none), rendered once.
    all_auth_headers: HeaderValue,
}

impl Default for ClaimHeaders {
    fn default() -> Self {
        ClaimHeaders {
            mappings: Vec::new(),
            all_auth_headers: HeaderValue::from_static(AUTH_HEADERS),
        }
    }
}

/// Headers rendered from a payload, and how many values were dropped.
#[derive(Debug, Default)]
pub struct Rendered {
    pub headers: Box<[(HeaderName, HeaderValue)]>,
    pub dropped: u64,
}

impl ClaimHeaders {
    /// Parses every `CLAIM=HEADER`; returns one message per bad one.
    pub fn parse(specs: &[String]) -> Result<ClaimHeaders, Vec<String>> {
        let mut mappings: Vec<ClaimHeader> = Vec::with_capacity(specs.len());
        let mut problems = Vec::new();
        for spec in specs {
            match parse_one(spec) {
                Ok(mapping) if mappings.iter().any(|m| m.header == mapping.header) => problems
                    .push(format!(
                        "`{spec}`: the header {} is already given to another claim",
                        mapping.header
                    )),
                Ok(mapping) => mappings.push(mapping),
                Err(problem) => problems.push(problem),
            }
        }
        if problems.is_empty() {
            let mut all = AUTH_HEADERS.to_owned();
            for mapping in &mappings {
                all.push_str(", ");
                all.push_str(mapping.header.as_str());
            }
            // Header names are tokens: the list is always a valid value.
            let all_auth_headers = HeaderValue::from_str(&all)
                .unwrap_or_else(|_| HeaderValue::from_static(AUTH_HEADERS));
            Ok(ClaimHeaders {
                mappings,
                all_auth_headers,
            })
        } else {
            Err(problems)
        }
    }

    /// The header names, in the order given (for the ones a grant did not set, which an
    /// Envoy answer names for removal).
    pub fn names(&self) -> impl Iterator<Item = &HeaderName> {
        self.mappings.iter().map(|mapping| &mapping.header)
    }

    /// Every header the forward-auth answer owns, as one header value.
    pub fn all_auth_headers(&self) -> &HeaderValue {
        &self.all_auth_headers
    }

    /// Whether no claim is mapped (then nothing is rendered and the payload is not decoded).
    pub fn is_empty(&self) -> bool {
        self.mappings.is_empty()
    }

    /// The headers of the claims a payload holds (claims it lacks give no header).
    pub fn render(&self, payload: &Value) -> Rendered {
        let mut headers = Vec::new();
        let mut dropped = 0;
        for mapping in &self.mappings {
            let Some(value) = lookup(payload, &mapping.path) else {
                continue;
            };
            match header_value(value) {
                Some(value) => headers.push((mapping.header.clone(), value)),
                None => dropped += 1,
            }
        }
        Rendered {
            headers: headers.into_boxed_slice(),
            dropped,
        }
    }
}

fn parse_one(spec: &str) -> Result<ClaimHeader, String> {
    let (claim, header) = spec
        .split_once('=')
        .ok_or_else(|| format!("`{spec}` is not CLAIM=HEADER"))?;
    let path: Vec<String> = claim.split('.').map(str::to_owned).collect();
    if path.iter().any(String::is_empty) {
        return Err(format!(
            "`{spec}`: the claim path `{claim}` has an empty segment"
        ));
    }
    if path.len() > MAX_PATH_SEGMENTS {
        return Err(format!(
            "`{spec}`: the claim path is deeper than {MAX_PATH_SEGMENTS}"
        ));
    }
    let header = HeaderName::from_bytes(header.as_bytes())
        .map_err(|_| format!("`{spec}`: `{header}` is not a header name"))?;
    if RESERVED.contains(&header.as_str()) {
        return Err(format!(
            "`{spec}`: the header {header} is the sidecar's own or frames the message"
        ));
    }
    Ok(ClaimHeader { path, header })
}

/// The value at a dotted path: object members only (an array is a value, not a step).
fn lookup<'a>(payload: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(payload, |value, segment| value.as_object()?.get(segment))
}

/// A claim value as a header value: a string as it is, anything else as compact JSON. `None`
/// when it cannot be one unchanged (a control character, or whitespace at either end).
fn header_value(value: &Value) -> Option<HeaderValue> {
    let text = match value {
        Value::String(text) => std::borrow::Cow::Borrowed(text.as_str()),
        other => std::borrow::Cow::Owned(serde_json::to_string(other).ok()?),
    };
    if text.trim_matches([' ', '\t']).len() != text.len() {
        return None;
    }
    // Bytes of non-ASCII text go as they are (obs-text); control characters are refused.
    HeaderValue::from_bytes(text.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mappings(specs: &[&str]) -> ClaimHeaders {
        let specs: Vec<String> = specs.iter().map(|s| (*s).to_owned()).collect();
        ClaimHeaders::parse(&specs).expect("valid mappings")
    }

    #[test]
    fn nested_claims_strings_and_json_values_render() {
        let headers = mappings(&[
            "realm_access.roles=X-Roles",
            "email=X-Email",
            "tenant.id=X-Tenant",
            "n=X-N",
            "missing.path=X-Missing",
        ]);
        let payload = json!({
            "realm_access": {"roles": ["admin", "user"]},
            "email": "a@example.com",
            "tenant": {"id": 7},
            "n": null,
        });
        let rendered = headers.render(&payload);
        let got: Vec<(&str, &[u8])> = rendered
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
            .collect();
        assert_eq!(
            got,
            [
                ("x-roles", &br#"["admin","user"]"#[..]),
                ("x-email", b"a@example.com"),
                ("x-tenant", b"7"),
                ("x-n", b"null"),
            ]
        );
        assert_eq!(rendered.dropped, 0);
    }

    #[test]
    fn values_that_cannot_be_headers_are_dropped_and_counted() {
        let headers = mappings(&["a=X-A", "b=X-B", "c=X-C", "d=X-D"]);
        let payload =
            json!({"a": "x\r\nX-Auth-Subject: root", "b": " padded", "c": "ok", "d": "tab\u{7f}"});
        let rendered = headers.render(&payload);
        assert_eq!(rendered.headers.len(), 1);
        assert_eq!(rendered.headers[0].0, "x-c");
        assert_eq!(rendered.dropped, 3);
    }

    #[test]
    fn bad_mappings_are_refused_each_with_its_reason() {
        let specs: Vec<String> = [
            "roles",
            "roles=X Roles",
            "a..b=X-A",
            "sub=X-Auth-Subject",
            "x=Content-Length",
            "ok=X-Ok",
            "other=x-ok",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let problems = ClaimHeaders::parse(&specs).unwrap_err();
        assert_eq!(problems.len(), 6, "{problems:?}");
    }
}

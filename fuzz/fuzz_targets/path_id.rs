//! Percent-decoding of the ids in session API paths (`http::sessions`: `path_id` and
//! `percent_decode` are private, so they are reached through the router, `http::route`, over an
//! in-memory connection). `GET`/`PATCH`/`DELETE /v1/sessions/{sid}` and
//! `DELETE /v1/users/{sub}/sessions` answer `400 malformed_body` exactly when the segment
//! does not decode (RFC 3986 escapes, UTF-8) to a valid session id (or a header-safe subject),
//! and otherwise what the embedded store says (200/204/404); never a 5xx or no answer.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use session_sidecar::verify::jwt::{header_safe, valid_id};
use session_sidecar_fuzz::{SESSION_ID, app, exchange, reason, reference_percent_decode, runtime};

#[derive(Arbitrary, Debug)]
enum Call {
    Get,
    Patch,
    Delete,
    DeleteSubject,
}

#[derive(Arbitrary, Debug)]
struct Input {
    call: Call,
    segment: Vec<u8>,
}

fuzz_target!(|input: Input| {
    // Bytes that end a path segment or the request line are the router's and hyper's business.
    if input
        .segment
        .iter()
        .any(|b| b.is_ascii_control() || b" /?#".contains(b))
    {
        return;
    }
    let segment = String::from_utf8_lossy(&input.segment).into_owned();
    if segment.as_bytes() != input.segment.as_slice() {
        return;
    }
    let (method, path, body) = match input.call {
        Call::Get => ("GET", format!("/v1/sessions/{segment}"), ""),
        Call::Patch => (
            "PATCH",
            format!("/v1/sessions/{segment}"),
            r#"{"seen":true}"#,
        ),
        Call::Delete => ("DELETE", format!("/v1/sessions/{segment}"), ""),
        Call::DeleteSubject => ("DELETE", format!("/v1/users/{segment}/sessions"), ""),
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let app = runtime().block_on(app(std::time::Duration::from_secs(60), false));
    let (status, answer) = exchange(&app, request.as_bytes());
    assert!(status != 0 && status < 500, "{status} for {request:?}");
    let reason = reason(&answer);
    if status == 400 && reason.is_none() {
        return; // hyper refused the request line: the router never saw it
    }
    let decoded = reference_percent_decode(&input.segment);
    let readable = match input.call {
        Call::DeleteSubject => decoded.clone().filter(|sub| header_safe(sub)),
        _ => decoded.clone().filter(|sid| valid_id(sid)),
    };
    let Some(id) = readable else {
        assert_eq!(
            (status, reason.as_deref()),
            (400, Some("malformed_body")),
            "{request:?} (decodes to {decoded:?})"
        );
        return;
    };
    let known = id == SESSION_ID;
    let expected = match input.call {
        Call::Get | Call::Patch if known => 200,
        Call::Get | Call::Patch => 404,
        Call::Delete => 204,
        Call::DeleteSubject => 200,
    };
    assert_eq!(status, expected, "{request:?} (decodes to {id:?})");
});

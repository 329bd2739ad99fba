//! Route rules (`rules`): `Rules::parse` on any text never panics; `Route::of` on any route
//! headers never panics, and a route it reads is always a plain path (no `.`/`..` segment, no
//! `//`, no escaped `.`, `/`, `\` or unreserved character: `rules::plain_path`), so the example
//! rules (`examples/proxies/rules.json`) are only ever matched against one spelling of a path;
//! matching any such route against them never panics.
#![no_main]

use arbitrary::Arbitrary;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Uri};
use libfuzzer_sys::fuzz_target;
use session_sidecar::rules::{Route, Rules, plain_path};

const EXAMPLE_RULES: &str = include_str!("../../examples/proxies/rules.json");

#[derive(Arbitrary, Debug)]
struct Input {
    rules_text: String,
    method: Vec<u8>,
    forwarded_uri: Option<Vec<u8>>,
    forwarded_method: Option<Vec<u8>>,
    original_uri: Option<Vec<u8>>,
    suffix: Option<String>,
}

fuzz_target!(|input: Input| {
    let _ = Rules::parse(&input.rules_text);
    let Ok(rules) = Rules::parse(EXAMPLE_RULES) else {
        panic!("the example rules parse");
    };
    let Ok(method) = Method::from_bytes(&input.method) else {
        return;
    };
    let uri = match &input.suffix {
        Some(suffix) => format!("/verify{suffix}"),
        None => "/verify".to_owned(),
    };
    let Ok(uri) = uri.parse::<Uri>() else {
        return;
    };
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("x-forwarded-uri", &input.forwarded_uri),
        ("x-forwarded-method", &input.forwarded_method),
        ("x-original-uri", &input.original_uri),
    ] {
        if let Some(Ok(value)) = value.as_deref().map(HeaderValue::from_bytes) {
            headers.insert(name, value);
        }
    }
    if let Ok(Some(route)) = Route::of(&method, &uri, &headers) {
        assert_eq!(plain_path(&route.path), Ok(()), "{route:?}");
        assert!(!route.path.contains('?'), "{route:?}");
        let _ = rules.access(&route);
    }
});

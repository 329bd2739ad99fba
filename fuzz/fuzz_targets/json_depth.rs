//! The JSON nesting-depth check (`verify::jwt::json_too_deep`), which guards every JSON parser
//! the sidecar runs on hostile input (token segments, request bodies). Compared with the depth
//! serde_json sees: for every JSON text serde_json can read, the check says "too deep"
//! exactly when the text nests deeper than the limit. On any bytes it never panics and is
//! monotonic in the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use session_sidecar::verify::jwt::json_too_deep;
use session_sidecar_fuzz::depth;

fuzz_target!(|input: (u8, &[u8])| {
    let (max, bytes) = input;
    // The sidecar refuses --max-json-depth 0 and above 128 (serde_json's own limit).
    let max = usize::from(max % 128) + 1;
    let too_deep = json_too_deep(bytes, max);
    if too_deep {
        assert!(json_too_deep(bytes, max - 1), "not monotonic at {max}");
    } else {
        assert!(!json_too_deep(bytes, max + 1), "not monotonic at {max}");
    }
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        let real = depth(&value);
        assert_eq!(
            too_deep,
            real > max,
            "depth {real}, limit {max}: {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
});

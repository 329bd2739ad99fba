//! RFC 7396 JSON merge patch (`store::merge_patch`, the session API's `PATCH`). Compared with
//! the RFC's pseudo-code; also: a patch is idempotent, and a patched document is never nested
//! deeper than the document or the patch (so the body depth limit bounds session data too).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use session_sidecar::store::merge_patch;
use session_sidecar_fuzz::{ArbJson, depth, reference_merge_patch};

#[derive(Arbitrary, Debug)]
enum Input {
    /// Values built from the input (small key alphabet: the patch meets the target's members).
    Built(ArbJson, ArbJson),
    /// Two JSON texts, for what the builder does not make (duplicate keys, odd numbers).
    Texts(String, String),
}

fuzz_target!(|input: Input| {
    let (target, patch) = match input {
        Input::Built(target, patch) => (target.0, patch.0),
        Input::Texts(target, patch) => {
            let (Ok(target), Ok(patch)) = (
                serde_json::from_str::<Value>(&target),
                serde_json::from_str::<Value>(&patch),
            ) else {
                return;
            };
            (target, patch)
        }
    };
    let mut patched = target.clone();
    merge_patch(&mut patched, &patch);
    assert_eq!(
        patched,
        reference_merge_patch(&target, &patch),
        "target {target}, patch {patch}"
    );
    let mut twice = patched.clone();
    merge_patch(&mut twice, &patch);
    assert_eq!(
        twice, patched,
        "not idempotent: target {target}, patch {patch}"
    );
    assert!(
        depth(&patched) <= depth(&target).max(depth(&patch)),
        "target {target}, patch {patch} -> {patched}"
    );
});

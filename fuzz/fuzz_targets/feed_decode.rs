//! The invalidation message decoder (`store::redis::feed::decode`), which reads what any
//! client of the Redis Cluster may PUBLISH on the channel. Never panics; what it accepts is
//! exactly what `encode` writes for that change (`<d|u|r> <id>`, id non-empty), and every
//! change `encode` writes decodes to itself.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use session_sidecar::store::Invalidation;
use session_sidecar::store::redis::feed::{decode, encode};

#[derive(Arbitrary, Debug)]
struct Input {
    message: String,
    kind: u8,
    id: String,
}

fuzz_target!(|input: Input| {
    if let Some(change) = decode(&input.message) {
        assert_eq!(encode(&change), input.message);
        let (Invalidation::SessionDeleted(id)
        | Invalidation::SessionUpdated(id)
        | Invalidation::TokenRevoked(id)) = &change;
        assert!(!id.is_empty());
    } else if let Some((kind, id)) = input.message.split_once(' ') {
        assert!(
            !matches!(kind, "d" | "u" | "r") || id.is_empty(),
            "{:?} refused",
            input.message
        );
    }
    let change = match input.kind % 3 {
        0 => Invalidation::SessionDeleted(input.id.clone()),
        1 => Invalidation::SessionUpdated(input.id.clone()),
        _ => Invalidation::TokenRevoked(input.id.clone()),
    };
    let decoded = decode(&encode(&change));
    if input.id.is_empty() {
        assert_eq!(decoded, None);
    } else {
        assert_eq!(decoded, Some(change));
    }
});

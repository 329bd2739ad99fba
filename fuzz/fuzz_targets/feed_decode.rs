//! The invalidation message decoder (`store::redis::feed::decode_message`), which reads what
//! any client of the Redis Cluster may PUBLISH on the channel. Never panics; what it accepts
//! is `<d|u|r>[@<µs>] <id>` with a non-empty id, and what it read encodes back to a message
//! that reads the same; every change `encode`/`encode_at` writes decodes to itself.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use session_sidecar::store::Invalidation;
use session_sidecar::store::redis::feed::{decode, decode_message, encode, encode_at};

#[derive(Arbitrary, Debug)]
struct Input {
    message: String,
    kind: u8,
    id: String,
}

fuzz_target!(|input: Input| {
    if let Some((change, published_at)) = decode_message(&input.message) {
        let again = match published_at {
            Some(at) => encode_at(&change, at),
            None => encode(&change),
        };
        assert_eq!(decode_message(&again), Some((change.clone(), published_at)));
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
    let timed = decode_message(&encode_at(&change, u64::from(input.kind)));
    if input.id.is_empty() {
        assert_eq!(decoded, None);
        assert_eq!(timed, None);
    } else {
        assert_eq!(timed, Some((change.clone(), Some(u64::from(input.kind)))));
        assert_eq!(decoded, Some(change));
    }
});

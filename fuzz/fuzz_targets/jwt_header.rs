//! JWT header and payload checks before and around any key (`verify::jwt`): reading the JOSE
//! header, the algorithm allow-list, the nesting-depth check of both segments, the unverified
//! `jti`, and verification against the secret and the RSA, EC and Ed25519 fixture keys.
//! Never panics; `none` is never an algorithm; a header nested deeper than the limit is
//! malformed; and since the fuzzer knows no key, no token it makes is ever verified.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use session_sidecar::error::Reason;
use session_sidecar::verify::jwt::{JwtVerifier, json_too_deep};
use session_sidecar_fuzz::{MAX_JSON_DEPTH, jwt_verifier};

#[derive(Arbitrary, Debug)]
enum Input {
    /// The token text as it is.
    Raw(String),
    /// Three segments, each base64url-encoded here (so that the JSON parsers are reached).
    Segments {
        header: Vec<u8>,
        payload: Vec<u8>,
        signature: Vec<u8>,
    },
    /// A JOSE header built from a chosen `alg` and `kid`, over any payload.
    Chosen {
        alg: u8,
        kid: Option<String>,
        payload: Vec<u8>,
        signature: Vec<u8>,
    },
}

const ALGS: [&str; 16] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA", "none", "None", "hs256", "",
];

fn verifier() -> &'static JwtVerifier {
    static VERIFIER: OnceLock<JwtVerifier> = OnceLock::new();
    VERIFIER.get_or_init(jwt_verifier)
}

fuzz_target!(|input: Input| {
    let token = match input {
        Input::Raw(token) => token,
        Input::Segments {
            header,
            payload,
            signature,
        } => format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(signature)
        ),
        Input::Chosen {
            alg,
            kid,
            payload,
            signature,
        } => {
            let mut header = serde_json::json!({
                "alg": ALGS[usize::from(alg) % ALGS.len()],
                "typ": "JWT",
            });
            if let Some(kid) = kid {
                header["kid"] = kid.into();
            }
            format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(payload),
                URL_SAFE_NO_PAD.encode(signature)
            )
        }
    };
    let verifier = verifier();
    let _ = verifier.unverified_jti(&token);
    let header = verifier.header(&token);
    let header_json = token
        .split('.')
        .next()
        .and_then(|segment| URL_SAFE_NO_PAD.decode(segment).ok());
    if let Some(json) = &header_json
        && json_too_deep(json, MAX_JSON_DEPTH)
    {
        assert_eq!(header.as_ref().err(), Some(&Reason::Malformed));
    }
    if let Ok(header) = header {
        assert!(
            verifier.keys().allows(header.alg),
            "{:?} passed",
            header.alg
        );
        match verifier.verify(&token, &header) {
            Ok(claims) => panic!("a token no key signed was verified: {claims:?}"),
            Err(reason) => assert_ne!(reason, Reason::MissingToken),
        }
        assert!(
            verifier
                .verify_with_session_secret(&token, &header, b"a session secret")
                .is_err()
        );
    }
});

//! Verification keys: the HMAC secret and the PEM public keys, which algorithms each may
//! verify, and which key a token's `alg` + `kid` selects. Key sets that come from a URL
//! (`--jwks-url`) and their refresh live in [`jwks`].
//!
//! The algorithm family is bound to the key when it is loaded, so an HMAC verification can only
//! ever use the configured secret: a public key can never be turned into an HMAC secret
//! (algorithm confusion). `none` does not exist here at all.

pub mod jwks;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

use crate::error::{ConfigError, Reason};

/// A `--jwt-public-key-file` value: `[KID=]PATH`.
#[derive(Debug, Clone)]
pub struct PublicKeySpec {
    pub kid: Option<String>,
    pub pem: Vec<u8>,
    pub path: String,
}

impl PublicKeySpec {
    /// Parses `[KID=]PATH` and reads the file.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (kid, path) = match spec.split_once('=') {
            Some((kid, path)) if !kid.is_empty() && !kid.contains('/') => {
                (Some(kid.to_owned()), path)
            }
            _ => (None, spec),
        };
        let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        Ok(PublicKeySpec {
            kid,
            pem,
            path: path.to_owned(),
        })
    }
}

/// One loaded public key.
struct PublicKey {
    kid: Option<String>,
    key: DecodingKey,
    algorithms: &'static [Algorithm],
}

/// Every key this sidecar verifies with, and the algorithm allow-list.
pub struct KeySet {
    secret: Option<DecodingKey>,
    public: Vec<PublicKey>,
    allowed: Vec<Algorithm>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("public_keys", &self.public.len())
            .field("allowed", &self.allowed)
            .finish()
    }
}

impl KeySet {
    /// Loads the keys. `allowed` is the `--algorithms` allow-list; `None` allows what the keys
    /// can verify.
    pub fn new(
        secret: Option<Vec<u8>>,
        public: Vec<PublicKeySpec>,
        allowed: Option<Vec<Algorithm>>,
    ) -> Result<KeySet, ConfigError> {
        Self::with_remote_keys(secret, public, allowed, false)
    }

    /// Like [`KeySet::new`], and with `remote` (key sets from a URL will join, whose keys are
    /// not known yet) every asymmetric algorithm counts as one a key may verify: the default
    /// allow-list then holds RS*, PS*, ES256, ES384 and EdDSA (each remote key is still bound
    /// to its own key type's algorithms when it is loaded).
    pub fn with_remote_keys(
        secret: Option<Vec<u8>>,
        public: Vec<PublicKeySpec>,
        allowed: Option<Vec<Algorithm>>,
        remote: bool,
    ) -> Result<KeySet, ConfigError> {
        let mut loaded = Vec::with_capacity(public.len());
        for spec in public {
            let (key, algorithms) = load_public_pem(&spec.pem).ok_or_else(|| {
                ConfigError::new(
                    "--jwt-public-key-file",
                    format!(
                        "{} is not a PEM public key (RSA, EC P-256/P-384 or Ed25519)",
                        spec.path
                    ),
                )
            })?;
            loaded.push(PublicKey {
                kid: spec.kid,
                key,
                algorithms,
            });
        }
        let secret = secret.map(|s| DecodingKey::from_secret(&s));
        let mut keyable: Vec<Algorithm> = Vec::new();
        if secret.is_some() {
            keyable.extend_from_slice(AlgorithmFamily::Hmac.algorithms());
        }
        let remote_algorithms: &[Algorithm] = if remote {
            &[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
                Algorithm::ES256,
                Algorithm::ES384,
                Algorithm::EdDSA,
            ]
        } else {
            &[]
        };
        for algorithms in loaded
            .iter()
            .map(|key| key.algorithms)
            .chain(std::iter::once(remote_algorithms))
        {
            for alg in algorithms {
                if !keyable.contains(alg) {
                    keyable.push(*alg);
                }
            }
        }
        let allowed = match allowed {
            Some(list) => {
                if let Some(alg) = list.iter().find(|a| !keyable.contains(a)) {
                    return Err(ConfigError::new(
                        "--algorithms",
                        format!("{alg:?} is allowed but no configured key can verify it"),
                    ));
                }
                list
            }
            None => keyable,
        };
        Ok(KeySet {
            secret,
            public: loaded,
            allowed,
        })
    }

    /// The algorithms tokens may use.
    pub fn allowed(&self) -> &[Algorithm] {
        &self.allowed
    }

    /// Whether `alg` is on the allow-list.
    pub fn allows(&self, alg: Algorithm) -> bool {
        self.allowed.contains(&alg)
    }

    /// Whether an HMAC secret is configured.
    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// The keys that may verify a token with this `alg` and `kid`, best match first.
    /// A key configured with a KID only matches that `kid`; one without matches any.
    pub fn candidates(
        &self,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<impl Iterator<Item = &DecodingKey>, Reason> {
        if !self.allows(alg) {
            return Err(Reason::AlgorithmNotAllowed);
        }
        let secret = (alg.family() == AlgorithmFamily::Hmac)
            .then_some(self.secret.as_ref())
            .flatten();
        let exact = self.public.iter().filter(move |k| {
            k.algorithms.contains(&alg) && kid.is_some() && k.kid.as_deref() == kid
        });
        let any = self
            .public
            .iter()
            .filter(move |k| k.algorithms.contains(&alg) && k.kid.is_none());
        let mut keys = secret
            .into_iter()
            .chain(exact.chain(any).map(|k| &k.key))
            .peekable();
        if keys.peek().is_none() {
            return Err(Reason::UnknownKey);
        }
        Ok(keys)
    }
}

/// Object identifiers (DER-encoded) that tell the key type and the curve of an SPKI PEM.
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// Loads an RSA, EC or Ed25519 public key and says which algorithms it may verify.
fn load_public_pem(pem: &[u8]) -> Option<(DecodingKey, &'static [Algorithm])> {
    // jsonwebtoken would accept an RSA private key where a public one is asked for; a private
    // key has no business on a verifier, so it is refused.
    if contains(pem, b"PRIVATE KEY") {
        return None;
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Some((key, AlgorithmFamily::Rsa.algorithms()));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return Some((key, AlgorithmFamily::Ed.algorithms()));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        let der = pem_body(pem)?;
        let algorithms: &'static [Algorithm] = if contains(&der, OID_P256) {
            &[Algorithm::ES256]
        } else if contains(&der, OID_P384) {
            &[Algorithm::ES384]
        } else {
            return None;
        };
        return Some((key, algorithms));
    }
    None
}

/// The DER bytes inside a PEM block.
fn pem_body(pem: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let text = std::str::from_utf8(pem).ok()?;
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.trim().chars())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

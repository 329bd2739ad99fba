//! Signing tokens: the `token` command, `--dev`, and the tokens that `POST /v1/sessions` issues.
//! HS256 with the configured secret; the secret never leaves this type.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

use crate::store::unix_now;

/// Signs HS256 tokens with one secret, adding `iss`/`aud` when configured.
pub struct TokenSigner {
    key: EncodingKey,
    issuer: Option<String>,
    audience: Option<String>,
}

impl TokenSigner {
    pub fn new(secret: &[u8], issuer: Option<String>, audience: Option<String>) -> Self {
        TokenSigner {
            key: EncodingKey::from_secret(secret),
            issuer,
            audience,
        }
    }

    /// Signs a token for `sub`, valid until `exp`, with `iat`, an optional `sid` and `jti`,
    /// and any extra claims (which never override the ones set here).
    pub fn sign(
        &self,
        sub: &str,
        sid: Option<&str>,
        jti: Option<&str>,
        exp: u64,
        extra: &[(String, Value)],
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut claims = Map::new();
        for (key, value) in extra {
            claims.insert(key.clone(), value.clone());
        }
        claims.insert("sub".into(), Value::from(sub));
        if let Some(sid) = sid {
            claims.insert("sid".into(), Value::from(sid));
        }
        if let Some(jti) = jti {
            claims.insert("jti".into(), Value::from(jti));
        }
        claims.insert("iat".into(), Value::from(unix_now()));
        claims.insert("exp".into(), Value::from(exp));
        if let Some(iss) = &self.issuer {
            claims.insert("iss".into(), Value::from(iss.as_str()));
        }
        if let Some(aud) = &self.audience {
            claims.insert("aud".into(), Value::from(aud.as_str()));
        }
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
    }
}

/// A random URL-safe id of `bytes` random bytes (base64url, no padding).
pub fn random_id(bytes: usize) -> String {
    use base64::Engine;
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

//! The authorization server's signing keys and the JWT access tokens they sign with
//! `--jwt-access-tokens` (RFC 9068): ES256 keys made at start and on rotation, whose
//! public halves the jwks endpoint publishes.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{SystemTime, UNIX_EPOCH},
};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::db::{AccessToken, random_token};

/// The JOSE `typ` of a JWT access token (RFC 9068 §2.1).
pub(crate) const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Why a key could not be made or a token signed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigningError {
    /// The system's random source or the crypto library failed.
    #[error("cannot generate a P-256 key pair")]
    Generate,
    #[error("the generated public key is not an uncompressed P-256 point")]
    PublicKey,
    #[error("cannot sign a JWT access token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// One ES256 key pair. `Debug` shows only its `kid`.
struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    /// The public key as a JWK (RFC 7518 §6.2), with `kid`, `alg` and `use`.
    jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new key pair. It signs once here, so a key that is handed out is known to
    /// sign.
    fn generate() -> Result<Self, SigningError> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| SigningError::Generate)?;
        let pkcs8 = pair.to_pkcs8v1().map_err(|_| SigningError::Generate)?;
        // An uncompressed P-256 point: 0x04, then x and y, 32 bytes each.
        let point = pair.public_key().as_ref();
        if point.len() != 65 || point[0] != 4 {
            return Err(SigningError::PublicKey);
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
        // The kid is the key's JWK thumbprint (RFC 7638): the required members in
        // lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        let key = Self {
            jwk: json!({
                "kty": "EC",
                "crv": "P-256",
                "x": x,
                "y": y,
                "kid": kid,
                "alg": "ES256",
                "use": "sig",
            }),
            kid,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        };
        key.sign(&json!({}))?;
        Ok(key)
    }

    fn sign(&self, claims: &impl Serialize) -> Result<String, SigningError> {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(SigningError::Sign)
    }
}

/// The authorization server's keys: the one that signs now, and the older ones
/// still published.
#[derive(Debug)]
pub(crate) struct SigningKeys {
    keys: Mutex<Keys>,
}

#[derive(Debug)]
struct Keys {
    current: Arc<SigningKey>,
    /// Newest first.
    older: Vec<Arc<SigningKey>>,
}

impl SigningKeys {
    /// One new key.
    pub fn generate() -> Result<Self, SigningError> {
        Ok(Self {
            keys: Mutex::new(Keys {
                current: Arc::new(SigningKey::generate()?),
                older: Vec::new(),
            }),
        })
    }

    /// A poisoned lock means a panic mid-rotation; the keys are whole either way.
    fn keys(&self) -> MutexGuard<'_, Keys> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new key signs from now on; `keep_old` keeps publishing the keys published
    /// until now (after the new one), else they are dropped.
    pub fn rotate(&self, keep_old: bool) -> Result<(), SigningError> {
        let new = Arc::new(SigningKey::generate()?);
        let mut keys = self.keys();
        let old = std::mem::replace(&mut keys.current, new);
        if keep_old {
            keys.older.insert(0, old);
        } else {
            keys.older.clear();
        }
        Ok(())
    }

    /// The JWK Set of the published keys, the signing one first.
    pub fn jwks(&self) -> Value {
        let keys = self.keys();
        let jwks: Vec<&Value> = std::iter::once(&keys.current)
            .chain(&keys.older)
            .map(|k| &k.jwk)
            .collect();
        json!({ "keys": jwks })
    }

    /// The `kid` of the key that signs now.
    pub fn current_kid(&self) -> String {
        self.keys().current.kid.clone()
    }

    /// The JWT access token (RFC 9068) for `at`, issued by `issuer`.
    pub fn sign_access(&self, issuer: &str, at: &AccessToken) -> Result<String, SigningError> {
        let key = self.keys().current.clone();
        key.sign(&AccessClaims::of(issuer, at))
    }
}

/// The claims of a JWT access token (RFC 9068 §2.2).
#[derive(Debug, Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    iat: u64,
    exp: u64,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<Confirmation<'a>>,
}

/// RFC 9449 §6.1: the DPoP key a token is bound to.
#[derive(Debug, Serialize)]
struct Confirmation<'a> {
    jkt: &'a str,
}

impl<'a> AccessClaims<'a> {
    fn of(issuer: &'a str, at: &'a AccessToken) -> Self {
        Self {
            iss: issuer,
            sub: &at.subject,
            aud: at.resource.as_deref().unwrap_or(&at.client_id),
            client_id: &at.client_id,
            scope: (!at.scope.is_empty()).then(|| at.scope.join(" ")),
            iat: unix_secs(at.issued_at),
            exp: unix_secs(at.expires_at),
            jti: random_token(""),
            cnf: at.jkt.as_deref().map(|jkt| Confirmation { jkt }),
        }
    }
}

/// Seconds since the Unix epoch (0 before it).
fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};

    use super::*;
    use crate::db::NewAccess;

    fn token(resource: Option<&str>, jkt: Option<&str>) -> AccessToken {
        let scope = ["a".to_owned(), "b".to_owned()];
        AccessToken::new(
            &NewAccess {
                client_id: "client",
                subject: "alice",
                scope: &scope,
                resource,
                family: None,
                jkt,
            },
            UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            Duration::from_secs(60),
        )
    }

    fn verify(keys: &SigningKeys, jwt: &str) -> (Header, Value) {
        let header = jsonwebtoken::decode_header(jwt).unwrap();
        let set: JwkSet = serde_json::from_value(keys.jwks()).unwrap();
        let jwk = set.find(header.kid.as_deref().unwrap()).unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.validate_exp = false;
        v.validate_aud = false;
        let data =
            jsonwebtoken::decode::<Value>(jwt, &DecodingKey::from_jwk(jwk).unwrap(), &v).unwrap();
        (data.header, data.claims)
    }

    #[test]
    fn an_access_token_carries_rfc_9068_claims_and_verifies_with_the_jwks() {
        let keys = SigningKeys::generate().unwrap();
        let at = token(Some("https://mcp.example/mcp"), Some("thumb"));
        let jwt = keys.sign_access("https://as.example", &at).unwrap();
        let (header, claims) = verify(&keys, &jwt);
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid, Some(keys.current_kid()));
        assert_eq!(claims["iss"], "https://as.example");
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["aud"], "https://mcp.example/mcp");
        assert_eq!(claims["client_id"], "client");
        assert_eq!(claims["scope"], "a b");
        assert_eq!(claims["iat"], 1_800_000_000);
        assert_eq!(claims["exp"], 1_800_000_060);
        assert_eq!(claims["cnf"]["jkt"], "thumb");
        assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));

        // Without a resource the audience is the client; unbound, no cnf.
        let (_, claims) = verify(&keys, &keys.sign_access("i", &token(None, None)).unwrap());
        assert_eq!(claims["aud"], "client");
        assert!(claims.get("cnf").is_none());
    }

    #[test]
    fn rotation_keeps_or_drops_the_old_keys() {
        let keys = SigningKeys::generate().unwrap();
        let first = keys.current_kid();
        keys.rotate(true).unwrap();
        let second = keys.current_kid();
        assert_ne!(first, second);
        let kids = |k: &SigningKeys| -> Vec<Value> {
            k.jwks()["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["kid"].clone())
                .collect()
        };
        assert_eq!(kids(&keys), [json!(second), json!(first)]);
        keys.rotate(true).unwrap();
        let third = keys.current_kid();
        assert_eq!(
            kids(&keys),
            [json!(third), json!(second), json!(first)],
            "keep_old keeps every key published"
        );
        keys.rotate(false).unwrap();
        let fourth = keys.current_kid();
        assert!(![&first, &second, &third].contains(&&fourth));
        assert_eq!(kids(&keys), [json!(fourth)]);
    }
}

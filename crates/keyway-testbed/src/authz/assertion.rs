//! private_key_jwt (RFC 7523 §2.2, §3; OpenID Connect Core §9): a client proves who
//! it is with a JWT signed by its private key, checked here with the public key it was
//! registered with. [`verify`] is the pure part (the time passed in); the `jti`s
//! already taken are in the AS memory ([`crate::db::SeenJtis`]).

use std::time::SystemTime;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

/// `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// What `token_endpoint_auth_signing_alg_values_supported` lists: every algorithm the
/// key types below verify.
pub(crate) const SIGNING_ALGS: [&str; 9] = [
    "ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA",
];

/// The key in a PEM public key: EC (P-256, P-384), RSA or Ed25519.
pub(crate) fn assertion_key(pem: &str) -> Result<DecodingKey, String> {
    let pem = pem.as_bytes();
    DecodingKey::from_ec_pem(pem)
        .or_else(|_| DecodingKey::from_rsa_pem(pem))
        .or_else(|_| DecodingKey::from_ed_pem(pem))
        .map_err(|e| format!("not an EC, RSA or Ed25519 public key in PEM: {e}"))
}

/// Why an assertion was refused; every one is answered 401 `invalid_client`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum AssertionError {
    #[error("client_assertion_type must be {JWT_BEARER}")]
    Type,
    #[error("client_assertion is missing")]
    Missing,
    #[error("client_assertion is not a compact JWS")]
    NotJws,
    #[error("client_assertion has no iss naming the client")]
    NoIssuer,
    #[error("client_id differs from the assertion's iss")]
    ClientIdMismatch,
    #[error("client is registered for {0}, not private_key_jwt")]
    NotJwtClient(&'static str),
    #[error("the assertion's signature or algorithm does not match the client's key: {0}")]
    Signature(String),
    #[error("the assertion's {0} must be {1}")]
    Claim(&'static str, &'static str),
    #[error("the assertion's iss and sub must both be the client_id")]
    Subject,
    #[error("the assertion's aud names neither the issuer nor the token endpoint")]
    Audience,
    #[error("the assertion has expired")]
    Expired,
    #[error("the assertion is not valid yet (nbf)")]
    NotYetValid,
    #[error("the assertion's jti was used before")]
    Replayed,
}

/// An assertion that checked out: what the replay cache needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verified {
    pub jti: String,
    /// `exp`, in seconds since the Unix epoch.
    pub exp: u64,
}

/// The `iss` of an assertion, unverified: which client's key to check it with.
pub(crate) fn claimed_issuer(jwt: &str) -> Result<String, AssertionError> {
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(AssertionError::NotJws);
    }
    let claims: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(parts[1])
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(AssertionError::NotJws)?;
    match claims.get("iss") {
        Some(Value::String(iss)) if !iss.is_empty() => Ok(iss.clone()),
        _ => Err(AssertionError::NoIssuer),
    }
}

/// Check an assertion of `client_id`, signed by `key`, for one of `audiences`, at
/// `now`: everything but replays.
pub(crate) fn verify(
    jwt: &str,
    key: &DecodingKey,
    client_id: &str,
    audiences: &[&str],
    now: SystemTime,
) -> Result<Verified, AssertionError> {
    // The algorithms of the key's family (an HMAC `alg` is never one); the claims are
    // checked below, on the testbed's clock.
    let mut validation = Validation::new_for_family(key.family());
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Map<String, Value>>(jwt, key, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) => {
                AssertionError::NotJws
            }
            _ => AssertionError::Signature(e.to_string()),
        })?
        .claims;

    let string = |name: &'static str| match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.as_str()),
        _ => Err(AssertionError::Claim(name, "a string")),
    };
    if string("iss")? != client_id || string("sub")? != client_id {
        return Err(AssertionError::Subject);
    }
    let named = |a: &Value| a.as_str().is_some_and(|a| audiences.contains(&a));
    let aud_ok = match claims.get("aud") {
        Some(a @ Value::String(_)) => named(a),
        Some(Value::Array(list)) => list.iter().any(named),
        _ => return Err(AssertionError::Claim("aud", "a string or an array")),
    };
    if !aud_ok {
        return Err(AssertionError::Audience);
    }
    let jti = string("jti")?.to_owned();
    // Compared in seconds: a SystemTime far enough out would overflow.
    let time = |name: &'static str| match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or(AssertionError::Claim(name, "a number of seconds")),
    };
    let now = unix_secs(now);
    let exp = time("exp")?.ok_or(AssertionError::Claim("exp", "present"))?;
    if exp <= now {
        return Err(AssertionError::Expired);
    }
    if time("nbf")?.is_some_and(|nbf| nbf > now) {
        return Err(AssertionError::NotYetValid);
    }
    Ok(Verified { jti, exp })
}

/// Seconds since the Unix epoch (0 before it).
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::{
        encoding::AsDer,
        signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _},
    };
    use base64::engine::general_purpose::STANDARD;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const ISSUER: &str = "http://127.0.0.1:9";
    const TOKEN: &str = "http://127.0.0.1:9/token";

    /// A P-256 key pair: the signing key and the public key as PEM.
    fn key_pair() -> (EncodingKey, String) {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let spki = pair.public_key().as_der().unwrap();
        let b64 = STANDARD.encode(spki.as_ref());
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        );
        let signing = EncodingKey::from_ec_der(pair.to_pkcs8v1().unwrap().as_ref());
        (signing, pem)
    }

    fn sign(key: &EncodingKey, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, key).unwrap()
    }

    fn claims(now: SystemTime) -> Value {
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        json!({"iss": "c", "sub": "c", "aud": TOKEN, "jti": "j1", "exp": secs + 60, "iat": secs})
    }

    #[test]
    fn a_signed_assertion_checks_out_and_each_claim_is_checked() {
        let (signing, pem) = key_pair();
        let key = assertion_key(&pem).unwrap();
        let now = SystemTime::now();
        let check = |c: &Value| verify(&sign(&signing, c), &key, "c", &[ISSUER, TOKEN], now);
        let good = claims(now);
        let v = check(&good).unwrap();
        assert_eq!(v.jti, "j1");
        assert_eq!(claimed_issuer(&sign(&signing, &good)).unwrap(), "c");

        let with = |field: &str, value: Value| {
            let mut c = good.clone();
            c[field] = value;
            check(&c)
        };
        assert!(with("aud", json!([ISSUER, "x"])).is_ok());
        assert_eq!(with("aud", json!("x")), Err(AssertionError::Audience));
        assert_eq!(with("sub", json!("d")), Err(AssertionError::Subject));
        assert_eq!(with("iss", json!("d")), Err(AssertionError::Subject));
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(with("exp", json!(secs)), Err(AssertionError::Expired));
        assert_eq!(with("exp", json!(u64::MAX)).unwrap().exp, u64::MAX);
        assert_eq!(
            with("nbf", json!(u64::MAX)),
            Err(AssertionError::NotYetValid)
        );
        assert_eq!(
            with("exp", json!(-5)),
            Err(AssertionError::Claim("exp", "a number of seconds"))
        );
        assert_eq!(
            with("nbf", json!(secs + 30)),
            Err(AssertionError::NotYetValid)
        );
        let mut no_exp = good.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_eq!(check(&no_exp), Err(AssertionError::Claim("exp", "present")));

        let (other, _) = key_pair();
        assert!(matches!(
            verify(&sign(&other, &good), &key, "c", &[TOKEN], now),
            Err(AssertionError::Signature(_))
        ));
        let hmac = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &good,
            &EncodingKey::from_secret(pem.as_bytes()),
        )
        .unwrap();
        assert!(matches!(
            verify(&hmac, &key, "c", &[TOKEN], now),
            Err(AssertionError::Signature(_))
        ));
        assert_eq!(claimed_issuer("a.b"), Err(AssertionError::NotJws));
        assert!(assertion_key("not a key").is_err());
    }
}

//! Access tokens as JWTs (RFC 9068), verified against the authorization server's
//! published keys (its `jwks_uri`, RFC 7517). The keys are cached; a token that names
//! a key not seen yet (the server rotated) makes the gateway fetch them again, at
//! most once per cooldown, and keys older than their maximum age are fetched again
//! before use. Signatures are jsonwebtoken's; the claims are checked by
//! [`super::claims`].

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey, Validation,
    jwk::{Jwk, KeyAlgorithm},
};
use serde_json::{Map, Value};
use tokio::time::Instant;
use url::Url;

use super::Rejection;
use crate::auth::{
    fetch::{Fetched, get_json},
    urls::UrlPolicy,
};

/// The most keys kept from one key set.
const MAX_KEYS: usize = 64;

/// The authorization server's signing keys, cached.
#[derive(Debug)]
pub struct KeySet {
    http: reqwest::Client,
    url: Url,
    policy: UrlPolicy,
    cooldown: Duration,
    max_age: Duration,
    cached: std::sync::RwLock<Cached>,
    /// One fetch at a time: the callers who find a key missing meanwhile wait for
    /// it rather than fetching too.
    fetching: tokio::sync::Mutex<()>,
    fetches: AtomicU64,
}

#[derive(Debug)]
struct Cached {
    keys: Vec<Key>,
    /// When the keys were last read.
    fetched: Instant,
    /// When they were last asked for, read or not: the cooldown counts from here,
    /// so a server that does not answer is not asked on every request.
    attempted: Instant,
}

/// A published key, ready to verify with.
#[derive(Clone)]
struct Key {
    jwk: Jwk,
    decoding: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.jwk.common.key_id)
            .finish_non_exhaustive()
    }
}

/// Why the key set could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the authorization server's keys ({url}) could not be read: {detail}")]
pub struct KeysUnavailable {
    /// The `jwks_uri`.
    pub url: String,
    /// What went wrong.
    pub detail: String,
}

impl KeySet {
    /// The keys at `url`, fetched now (a gateway that cannot read them does not
    /// start). Fetched again when a token names an unknown key, at most once per
    /// `cooldown`, and when older than `max_age`.
    pub async fn fetch(
        http: reqwest::Client,
        url: Url,
        policy: UrlPolicy,
        cooldown: Duration,
        max_age: Duration,
    ) -> Result<Self, KeysUnavailable> {
        let keys = read(&http, &url, &policy).await?;
        let now = Instant::now();
        Ok(Self {
            http,
            url,
            policy,
            cooldown,
            max_age,
            cached: std::sync::RwLock::new(Cached {
                keys,
                fetched: now,
                attempted: now,
            }),
            fetching: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(1),
        })
    }

    /// How many times the keys were fetched (the first included).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The claims of `token`, once its signature verifies with one of the keys.
    /// Nothing about the claims is checked here but their shape.
    pub async fn verify(&self, token: &str) -> Result<Map<String, Value>, Rejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        // Asymmetric algorithms only: a shared secret would let anyone who verifies
        // sign too (and `none`, which signs nothing, does not parse as an algorithm).
        if header.alg.family() == AlgorithmFamily::Hmac {
            return Err(Rejection::Algorithm(format!("{:?}", header.alg)));
        }
        // RFC 9068 §4 names `at+jwt`; many providers write `JWT` or nothing. A
        // token typed as something else (a DPoP proof, a logout token) is not an
        // access token. An ID token passes here and fails the audience check.
        if let Some(typ) = &header.typ
            && !matches!(
                typ.to_ascii_lowercase().as_str(),
                "at+jwt" | "application/at+jwt" | "jwt"
            )
        {
            return Err(Rejection::NotAccessToken);
        }
        let key = self.key(header.kid.as_deref(), header.alg).await?;
        let mut validation = Validation::new(header.alg);
        // Every claim is checked by `claims::check`, on the injected clock.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature
                | jsonwebtoken::errors::ErrorKind::InvalidAlgorithm
                | jsonwebtoken::errors::ErrorKind::InvalidKeyFormat
                | jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey
                | jsonwebtoken::errors::ErrorKind::InvalidRsaKey(_) => Rejection::Signature,
                _ => Rejection::Malformed,
            })?;
        if looks_like_id_token(header.typ.as_deref(), &claims) {
            return Err(Rejection::NotAccessToken);
        }
        Ok(claims)
    }

    /// The key a token names (`kid`; without one, the only key that fits `alg`).
    /// The keys are read again when none fits (the server rotated) or they are older
    /// than the maximum age, at most once per cooldown counted from the last attempt,
    /// one read at a time. A stale key still serves while the read is under way or
    /// the server does not answer: it is the server's until it says otherwise.
    async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<Key, Rejection> {
        let (found, stale, tried_lately) = self.look(kid, alg);
        match &found {
            Some(k) if !stale => return Ok(k.clone()),
            _ if tried_lately => return found.ok_or(Rejection::UnknownKey),
            _ => {}
        }
        // A caller with a key in hand does not wait for the read; one without waits
        // for the read under way rather than starting another.
        let _one = match &found {
            Some(k) => match self.fetching.try_lock() {
                Ok(guard) => guard,
                Err(_) => return Ok(k.clone()),
            },
            None => self.fetching.lock().await,
        };
        let (again, stale, tried_lately) = self.look(kid, alg);
        if tried_lately {
            return again.or(found).ok_or(Rejection::UnknownKey);
        }
        if let Some(k) = &again
            && !stale
        {
            return Ok(k.clone());
        }
        let read = read(&self.http, &self.url, &self.policy).await;
        let mut c = self.cached.write().unwrap_or_else(|p| p.into_inner());
        c.attempted = Instant::now();
        match read {
            Ok(keys) => {
                self.fetches.fetch_add(1, Ordering::Relaxed);
                c.keys = keys;
                c.fetched = c.attempted;
                pick(&c.keys, kid, alg).ok_or(Rejection::UnknownKey)
            }
            Err(e) => {
                tracing::warn!("{e}");
                found.ok_or(Rejection::Unavailable(e.to_string()))
            }
        }
    }

    /// The key that fits, whether the set is stale, and whether it was asked for
    /// within the cooldown.
    fn look(&self, kid: Option<&str>, alg: Algorithm) -> (Option<Key>, bool, bool) {
        let c = self.cached.read().unwrap_or_else(|p| p.into_inner());
        (
            pick(&c.keys, kid, alg),
            c.fetched.elapsed() >= self.max_age,
            c.attempted.elapsed() < self.cooldown,
        )
    }
}

/// Whether a JWT that is not typed `at+jwt` (RFC 9068 §2.1; many providers write
/// `JWT` or nothing) is an ID token: it carries claims only ID tokens carry (`nonce`,
/// `at_hash`, `c_hash`), or says so (`token_use`, as Cognito writes it). Its audience
/// would usually refuse it; this keeps one whose audience happens to fit out too.
fn looks_like_id_token(typ: Option<&str>, claims: &Map<String, Value>) -> bool {
    let typed = typ.is_some_and(|t| {
        matches!(
            t.to_ascii_lowercase().as_str(),
            "at+jwt" | "application/at+jwt"
        )
    });
    let id_claims = ["nonce", "at_hash", "c_hash"]
        .iter()
        .any(|c| claims.contains_key(*c));
    let said = claims
        .get("token_use")
        .is_some_and(|u| u.as_str() != Some("access"));
    !typed && (id_claims || said)
}

/// The key for `kid` and `alg`: by id when the token names one; else the one key
/// whose type fits the algorithm. A key that says which algorithm it is for must
/// say `alg`, and a key meant for encryption (`use: enc`) never verifies.
fn pick(keys: &[Key], kid: Option<&str>, alg: Algorithm) -> Option<Key> {
    let fits = |k: &&Key| {
        let k = &k.jwk;
        let alg_ok = match &k.common.key_algorithm {
            None => key_family(k) == Some(alg.family()),
            Some(named) => *named == KeyAlgorithm::from(alg),
        };
        let use_ok = !matches!(
            k.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
        );
        alg_ok && use_ok
    };
    match kid {
        Some(kid) => keys
            .iter()
            .filter(|k| k.jwk.common.key_id.as_deref() == Some(kid))
            .find(fits)
            .cloned(),
        None => {
            let mut fitting = keys.iter().filter(fits);
            match (fitting.next(), fitting.next()) {
                (Some(k), None) => Some(k.clone()),
                _ => None,
            }
        }
    }
}

/// The family of algorithms a key of this type verifies.
fn key_family(k: &Jwk) -> Option<AlgorithmFamily> {
    use jsonwebtoken::jwk::AlgorithmParameters as P;
    match &k.algorithm {
        P::RSA(_) => Some(AlgorithmFamily::Rsa),
        P::EllipticCurve(_) => Some(AlgorithmFamily::Ec),
        P::OctetKeyPair(_) => Some(AlgorithmFamily::Ed),
        _ => None,
    }
}

/// The key set at `url`: each key that parses (one of a type this build cannot
/// read does not spoil the others), at most [`MAX_KEYS`].
async fn read(
    http: &reqwest::Client,
    url: &Url,
    policy: &UrlPolicy,
) -> Result<Vec<Key>, KeysUnavailable> {
    let unavailable = |detail: String| KeysUnavailable {
        url: url.to_string(),
        detail,
    };
    let body = match get_json(http, url, policy).await {
        Fetched::Json { body, .. } => body,
        Fetched::Status { status, detail } => {
            return Err(unavailable(format!("HTTP {status}: {detail}")));
        }
        Fetched::Failed { detail } => return Err(unavailable(detail)),
    };
    let Some(keys) = body.get("keys").and_then(Value::as_array) else {
        return Err(unavailable(
            "the answer has no \"keys\" list (RFC 7517 §5)".into(),
        ));
    };
    Ok(keys
        .iter()
        .filter_map(|k| {
            let jwk = serde_json::from_value::<Jwk>(k.clone()).ok()?;
            let decoding = DecodingKey::from_jwk(&jwk).ok()?;
            Some(Key { jwk, decoding })
        })
        .take(MAX_KEYS)
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn id_tokens_are_told_from_access_tokens() {
        let claims = |v: Value| v.as_object().unwrap().clone();
        let at = claims(json!({"sub": "a", "auth_time": 1}));
        let id = claims(json!({"sub": "a", "nonce": "n"}));
        let cognito_id = claims(json!({"sub": "a", "token_use": "id"}));
        let cognito_at = claims(json!({"sub": "a", "token_use": "access"}));
        assert!(!looks_like_id_token(None, &at));
        assert!(!looks_like_id_token(Some("JWT"), &at));
        assert!(looks_like_id_token(Some("JWT"), &id));
        assert!(looks_like_id_token(None, &cognito_id));
        assert!(!looks_like_id_token(None, &cognito_at));
        // Typed as an access token, it is one.
        assert!(!looks_like_id_token(Some("at+jwt"), &id));
    }
}

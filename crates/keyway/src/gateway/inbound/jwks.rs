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
    Algorithm, DecodingKey, Validation,
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
    keys: Vec<Jwk>,
    fetched: Instant,
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
        Ok(Self {
            http,
            url,
            policy,
            cooldown,
            max_age,
            cached: std::sync::RwLock::new(Cached {
                keys,
                fetched: Instant::now(),
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
        if !ACCEPTED.contains(&header.alg) {
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
            return Err(Rejection::Malformed);
        }
        let jwk = self.key(header.kid.as_deref(), header.alg).await?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| Rejection::UnknownKey)?;
        let mut validation = Validation::new(header.alg);
        // Every claim is checked by `claims::check`, on the injected clock.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature
                | jsonwebtoken::errors::ErrorKind::InvalidAlgorithm
                | jsonwebtoken::errors::ErrorKind::InvalidKeyFormat
                | jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey
                | jsonwebtoken::errors::ErrorKind::InvalidRsaKey(_) => Rejection::Signature,
                _ => Rejection::Malformed,
            })
    }

    /// The key a token names (`kid`; without one, the only key that fits `alg`),
    /// fetching the set again when it is missing or the set is stale.
    async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<Jwk, Rejection> {
        let (found, stale, recent) = {
            let c = self.cached.read().unwrap_or_else(|p| p.into_inner());
            let age = c.fetched.elapsed();
            (
                pick(&c.keys, kid, alg),
                age >= self.max_age,
                age < self.cooldown,
            )
        };
        match found {
            Some(k) if !stale => return Ok(k),
            None if recent && !stale => return Err(Rejection::UnknownKey),
            _ => {}
        }
        let _one = self.fetching.lock().await;
        // Another caller may have fetched while this one waited.
        {
            let c = self.cached.read().unwrap_or_else(|p| p.into_inner());
            if c.fetched.elapsed() < self.cooldown.min(self.max_age) {
                return pick(&c.keys, kid, alg).ok_or(Rejection::UnknownKey);
            }
        }
        match read(&self.http, &self.url, &self.policy).await {
            Ok(keys) => {
                self.fetches.fetch_add(1, Ordering::Relaxed);
                let mut c = self.cached.write().unwrap_or_else(|p| p.into_inner());
                c.keys = keys;
                c.fetched = Instant::now();
                pick(&c.keys, kid, alg).ok_or(Rejection::UnknownKey)
            }
            // A stale set still serves while the server cannot be reached: a key
            // it held is the server's until it says otherwise.
            Err(e) => found.ok_or(Rejection::Unavailable(e.to_string())),
        }
    }
}

/// The signing algorithms taken: asymmetric ones only (a shared secret would let
/// anyone who verifies sign too, and `none` signs nothing).
const ACCEPTED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The key for `kid` and `alg`: by id when the token names one; else the one key
/// whose type fits the algorithm. A key that says which algorithm it is for must
/// say `alg`, and a key meant for encryption (`use: enc`) never verifies.
fn pick(keys: &[Jwk], kid: Option<&str>, alg: Algorithm) -> Option<Jwk> {
    let fits = |k: &&Jwk| {
        let alg_ok = match &k.common.key_algorithm {
            None => family_fits(k, alg),
            Some(named) => key_algorithm(*named) == Some(alg),
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
            .filter(|k| k.common.key_id.as_deref() == Some(kid))
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

fn family_fits(k: &Jwk, alg: Algorithm) -> bool {
    use jsonwebtoken::jwk::AlgorithmParameters as P;
    matches!(
        (&k.algorithm, alg),
        (
            P::RSA(_),
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ) | (P::EllipticCurve(_), Algorithm::ES256 | Algorithm::ES384)
            | (P::OctetKeyPair(_), Algorithm::EdDSA)
    )
}

fn key_algorithm(k: KeyAlgorithm) -> Option<Algorithm> {
    Some(match k {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The key set at `url`: each key that parses (one of a type this build cannot
/// read does not spoil the others), at most [`MAX_KEYS`].
async fn read(
    http: &reqwest::Client,
    url: &Url,
    policy: &UrlPolicy,
) -> Result<Vec<Jwk>, KeysUnavailable> {
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
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .take(MAX_KEYS)
        .collect())
}

//! DPoP (RFC 9449) on the server side: checking a proof (signature by the key in its
//! own header, `typ`, `alg`, `htm`, `htu`, `iat`, `ath`), the key binding of a token,
//! the server nonce and the replay cache. The token endpoint and the MCP endpoint
//! both come through [`check`]; what they answer on a refusal is theirs.
//!
//! [`verify`] is the pure part (no state, the time passed in); [`DpopState`] holds the
//! nonce, the `jti`s already seen and the spurious replays still to fake.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Mutex, MutexGuard},
    time::SystemTime,
};

use axum::{
    http::{HeaderMap, HeaderValue},
    response::Response,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, ThumbprintHash},
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::{db::random_token, knobs::Knobs, shared::Shared};

/// The only proof algorithm the testbed takes (and advertises).
pub(crate) const ALG: &str = "ES256";
/// The request header that carries a proof.
pub(crate) const PROOF_HEADER: &str = "dpop";
/// The response header that carries the server's nonce.
pub(crate) const NONCE_HEADER: &str = "dpop-nonce";
/// How far a proof's `iat` may be from the testbed's clock, either way.
const IAT_WINDOW_SECS: u64 = 300;
/// How many `jti`s the replay cache remembers (the oldest are forgotten first).
const REPLAY_CACHE_LEN: usize = 10_000;
/// JWK members that only a private (or symmetric) key has.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why a proof was refused. Every one is answered `invalid_dpop_proof` except
/// [`ProofError::UseNonce`] (`use_dpop_nonce`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ProofError {
    #[error("send exactly one DPoP header")]
    HeaderCount,
    #[error("a DPoP proof is required: the {0} is DPoP-bound")]
    Missing(&'static str),
    #[error("the DPoP proof is not a compact JWS")]
    NotJws,
    #[error("the proof's typ must be dpop+jwt")]
    Typ,
    #[error("alg {0} is not accepted; use ES256")]
    Alg(String),
    #[error("the proof's header has no jwk")]
    NoJwk,
    #[error("the proof's jwk holds a private key")]
    PrivateJwk,
    #[error("the proof's jwk is not a P-256 public key")]
    BadJwk,
    #[error("the proof's signature does not verify with its jwk")]
    Signature,
    #[error("the proof does not decode: {0}")]
    Undecodable(String),
    #[error("the proof's claim {0} is missing or not a {1}")]
    Claim(&'static str, &'static str),
    #[error("htm {found} does not match the request method {expected}")]
    Htm { found: String, expected: String },
    #[error("htu {found} does not match the request URL {expected}")]
    Htu { found: String, expected: String },
    #[error("iat is more than 300 s away from the server's clock")]
    Iat,
    #[error("ath does not match the access token")]
    Ath,
    #[error("the proof's key does not match the key the {0} is bound to")]
    KeyMismatch(&'static str),
    #[error("proof replayed")]
    Replayed,
    #[error("the testbed refuses every DPoP proof (--dpop-refuse-proofs)")]
    Refused,
    #[error("a DPoP nonce is required: use the one in the DPoP-Nonce header")]
    UseNonce,
}

impl ProofError {
    /// The OAuth / RFC 6750 error code to answer with.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::UseNonce => "use_dpop_nonce",
            _ => "invalid_dpop_proof",
        }
    }
}

/// What a request's proof must match.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expect<'a> {
    /// The request method.
    pub htm: &'a str,
    /// The request URL (query and fragment are ignored, and a trailing slash).
    pub htu: &'a str,
    /// The access token presented with the proof, whose hash `ath` must be.
    pub access_token: Option<&'a str>,
    /// The key thumbprint the token, code or refresh token is bound to.
    pub jkt: Option<&'a str>,
    /// What is bound, for the error message: "access token", "refresh token", ...
    pub bound: &'static str,
}

/// A proof whose signature and claims are right; not yet checked against the nonce
/// and the replay cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verified {
    /// RFC 7638 SHA-256 thumbprint of the proof's key.
    pub jkt: String,
    pub jti: String,
    pub nonce: Option<String>,
}

/// The `DPoP` header of a request: `None` without one; refused when it is given
/// more than once (or as a list).
pub(crate) fn proof_header(headers: &HeaderMap) -> Result<Option<&str>, ProofError> {
    let mut values = headers.get_all(PROOF_HEADER).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ProofError::HeaderCount);
    }
    match first.to_str() {
        Ok(v) if !v.contains(',') => Ok(Some(v.trim())),
        _ => Err(ProofError::HeaderCount),
    }
}

/// Check one proof against `expect` at `now`: everything but the nonce and replays.
pub(crate) fn verify(jws: &str, expect: &Expect, now: SystemTime) -> Result<Verified, ProofError> {
    let parts: Vec<&str> = jws.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(ProofError::NotJws);
    }
    let header: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(parts[0])
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(ProofError::NotJws)?;
    if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err(ProofError::Typ);
    }
    match header.get("alg").and_then(Value::as_str) {
        Some(ALG) => {}
        other => return Err(ProofError::Alg(other.unwrap_or("(none)").to_owned())),
    }
    let jwk_value = header.get("jwk").ok_or(ProofError::NoJwk)?;
    let Value::Object(members) = jwk_value else {
        return Err(ProofError::BadJwk);
    };
    if PRIVATE_MEMBERS.iter().any(|m| members.contains_key(*m)) {
        return Err(ProofError::PrivateJwk);
    }
    let jwk: Jwk = serde_json::from_value(jwk_value.clone()).map_err(|_| ProofError::BadJwk)?;
    let p256 = matches!(
        &jwk.algorithm,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256
    );
    if !p256 {
        return Err(ProofError::BadJwk);
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| ProofError::BadJwk)?;
    let jkt = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|_| ProofError::BadJwk)?;

    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Map<String, Value>>(jws, &key, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey => ProofError::Signature,
            _ => ProofError::Undecodable(e.to_string()),
        })?
        .claims;

    let string = |name: &'static str| match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(ProofError::Claim(name, "string")),
    };
    let jti = string("jti")?;
    let htm = string("htm")?;
    let htu = string("htu")?;
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(ProofError::Claim("iat", "number of seconds"))?;
    let nonce = match claims.get("nonce") {
        None => None,
        Some(Value::String(n)) => Some(n.clone()),
        Some(_) => return Err(ProofError::Claim("nonce", "string")),
    };

    if htm != expect.htm {
        return Err(ProofError::Htm {
            found: htm,
            expected: expect.htm.to_owned(),
        });
    }
    if comparable_url(&htu).is_none() || comparable_url(&htu) != comparable_url(expect.htu) {
        return Err(ProofError::Htu {
            found: htu,
            expected: expect.htu.to_owned(),
        });
    }
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if now_secs.abs_diff(iat) > IAT_WINDOW_SECS {
        return Err(ProofError::Iat);
    }
    if let Some(token) = expect.access_token {
        match claims.get("ath") {
            Some(Value::String(ath)) if *ath == access_token_hash(token) => {}
            _ => return Err(ProofError::Ath),
        }
    }
    if let Some(bound) = expect.jkt
        && bound != jkt
    {
        return Err(ProofError::KeyMismatch(expect.bound));
    }
    Ok(Verified { jkt, jti, nonce })
}

/// `ath`: base64url of the SHA-256 of the access token (RFC 9449 §4.2).
pub(crate) fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// A URL as `htu` is compared: without query, fragment and a trailing slash.
fn comparable_url(raw: &str) -> Option<String> {
    let mut url = url::Url::parse(raw).ok()?;
    url.set_query(None);
    url.set_fragment(None);
    Some(url.as_str().trim_end_matches('/').to_owned())
}

/// The nonce, the replay cache and the spurious replays of one testbed.
#[derive(Debug)]
pub(crate) struct DpopState {
    nonce_required: bool,
    /// `--dpop-nonce-loop`: every proof gets a new nonce to use instead.
    nonce_loop: bool,
    rotate_every: u64,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    seen: HashSet<String>,
    order: VecDeque<String>,
    nonce: String,
    previous_nonce: Option<String>,
    accepted_since_rotation: u64,
    spurious_left: u64,
}

impl DpopState {
    pub(crate) fn new(knobs: &Knobs) -> Self {
        Self {
            nonce_required: knobs.dpop_nonce || knobs.dpop_nonce_loop,
            nonce_loop: knobs.dpop_nonce_loop,
            rotate_every: knobs.dpop_nonce_rotate,
            inner: Mutex::new(Inner {
                seen: HashSet::new(),
                order: VecDeque::new(),
                nonce: random_token("n_"),
                previous_nonce: None,
                accepted_since_rotation: 0,
                spurious_left: knobs.dpop_spurious_replays,
            }),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The nonce proofs must carry now, with `--dpop-nonce`.
    pub(crate) fn nonce(&self) -> Option<String> {
        self.nonce_required.then(|| self.inner().nonce.clone())
    }

    /// A new nonce; the current one stays good until the next rotation.
    pub(crate) fn rotate_nonce(&self) {
        let mut inner = self.inner();
        inner.rotate();
    }

    /// Take a verified proof, or refuse it as replayed (really, or as
    /// `--dpop-spurious-replays` fakes it when `spurious` applies) or for want of the
    /// nonce. A proof answered `use_dpop_nonce` is not remembered.
    fn admit(&self, proof: &Verified, spurious: bool) -> Result<(), ProofError> {
        let mut inner = self.inner();
        if inner.seen.contains(&proof.jti) {
            return Err(ProofError::Replayed);
        }
        if self.nonce_loop {
            inner.nonce = random_token("n_");
            inner.previous_nonce = None;
            return Err(ProofError::UseNonce);
        }
        if self.nonce_required {
            let fresh = proof
                .nonce
                .as_deref()
                .is_some_and(|n| n == inner.nonce || inner.previous_nonce.as_deref() == Some(n));
            if !fresh {
                return Err(ProofError::UseNonce);
            }
        }
        inner.remember(&proof.jti);
        if spurious && inner.spurious_left > 0 {
            inner.spurious_left -= 1;
            return Err(ProofError::Replayed);
        }
        inner.accepted_since_rotation += 1;
        if self.rotate_every > 0 && inner.accepted_since_rotation >= self.rotate_every {
            inner.rotate();
        }
        Ok(())
    }
}

impl Inner {
    fn remember(&mut self, jti: &str) {
        if self.order.len() == REPLAY_CACHE_LEN
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(jti.to_owned());
        self.order.push_back(jti.to_owned());
    }

    fn rotate(&mut self) {
        let old = std::mem::replace(&mut self.nonce, random_token("n_"));
        self.previous_nonce = Some(old);
        self.accepted_since_rotation = 0;
    }
}

/// Where a proof is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum At {
    TokenEndpoint,
    Resource,
}

/// Check the proof of a request (`proof` is its `DPoP` header, if any) and count the
/// outcome. `Ok(None)`: no proof, and none was needed. `Ok(Some(jkt))`: a proof by
/// the key `jkt` was accepted.
pub(crate) fn check(
    shared: &Shared,
    at: At,
    proof: Result<Option<&str>, ProofError>,
    expect: &Expect,
) -> Result<Option<String>, ProofError> {
    let outcome = (|| {
        let Some(jws) = proof? else {
            return match expect.jkt {
                Some(_) => Err(ProofError::Missing(expect.bound)),
                None => Ok(None),
            };
        };
        if at == At::TokenEndpoint && shared.knobs.dpop_refuse_proofs {
            return Err(ProofError::Refused);
        }
        let verified = verify(jws, expect, shared.now())?;
        shared.dpop.admit(&verified, at == At::Resource)?;
        Ok(Some(verified.jkt))
    })();
    let mut stats = shared.stats();
    match &outcome {
        Ok(Some(_)) => stats.dpop_proofs_accepted += 1,
        Ok(None) => {}
        Err(ProofError::UseNonce) => stats.dpop_nonce_challenges += 1,
        Err(e) => {
            stats.dpop_proofs_refused += 1;
            stats.dpop_replays_refused += u64::from(*e == ProofError::Replayed);
        }
    }
    outcome
}

/// With `--dpop-nonce`, put the current nonce on an answer.
pub(crate) fn add_nonce(shared: &Shared, resp: &mut Response) {
    if let Some(value) = shared
        .dpop
        .nonce()
        .and_then(|n| HeaderValue::from_str(&n).ok())
    {
        resp.headers_mut().insert(NONCE_HEADER, value);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    struct Key {
        signing: EncodingKey,
        jwk: Value,
    }

    fn key() -> Key {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let pkcs8 = pair.to_pkcs8v1().unwrap();
        let point = pair.public_key().as_ref();
        Key {
            signing: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({
                "kty": "EC", "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            }),
        }
    }

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn sign(k: &Key, header_jwk: Value, claims: Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(serde_json::from_value(header_jwk).unwrap());
        jsonwebtoken::encode(&header, &claims, &k.signing).unwrap()
    }

    fn claims(extra: Value) -> Value {
        let mut c = json!({"jti": "j1", "htm": "POST", "htu": "http://127.0.0.1:9/token", "iat": 1_800_000_000u64});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    const EXPECT: Expect<'static> = Expect {
        htm: "POST",
        htu: "http://127.0.0.1:9/token",
        access_token: None,
        jkt: None,
        bound: "code",
    };

    /// A header and claims segment joined with a signature, unsigned by anyone.
    fn forged(header: Value, claims: Value) -> String {
        let enc = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        format!("{}.{}.AAAA", enc(&header), enc(&claims))
    }

    #[test]
    fn a_good_proof_gives_its_keys_thumbprint() {
        let k = key();
        let proof = sign(
            &k,
            k.jwk.clone(),
            claims(json!({"htu": "http://127.0.0.1:9/token/?x=1"})),
        );
        let v = verify(&proof, &EXPECT, t0()).unwrap();
        let jwk: Jwk = serde_json::from_value(k.jwk.clone()).unwrap();
        assert_eq!(v.jkt, jwk.thumbprint(ThumbprintHash::SHA256).unwrap());
        assert_eq!(v.jti, "j1");
        let bound = Expect {
            jkt: Some("another"),
            ..EXPECT
        };
        assert_eq!(
            verify(&proof, &bound, t0()),
            Err(ProofError::KeyMismatch("code"))
        );
    }

    #[test]
    fn claims_are_checked() {
        let k = key();
        let check = |extra: Value| verify(&sign(&k, k.jwk.clone(), claims(extra)), &EXPECT, t0());
        assert!(matches!(
            check(json!({"htm": "GET"})),
            Err(ProofError::Htm { .. })
        ));
        assert!(matches!(
            check(json!({"htu": "http://127.0.0.1:9/other"})),
            Err(ProofError::Htu { .. })
        ));
        assert_eq!(
            check(json!({"iat": 1_800_000_301u64})),
            Err(ProofError::Iat)
        );
        assert_eq!(
            check(json!({"iat": 1_799_999_699u64})),
            Err(ProofError::Iat)
        );
        assert!(check(json!({"iat": 1_800_000_300u64})).is_ok());
        assert_eq!(
            check(json!({"jti": 5})),
            Err(ProofError::Claim("jti", "string"))
        );
        let with_token = Expect {
            access_token: Some("at"),
            ..EXPECT
        };
        let ok = sign(
            &k,
            k.jwk.clone(),
            claims(json!({"ath": access_token_hash("at")})),
        );
        assert!(verify(&ok, &with_token, t0()).is_ok());
        let bad = sign(
            &k,
            k.jwk.clone(),
            claims(json!({"ath": access_token_hash("other")})),
        );
        assert_eq!(verify(&bad, &with_token, t0()), Err(ProofError::Ath));
    }

    #[test]
    fn headers_and_keys_are_checked() {
        let k = key();
        let other = key();
        let c = claims(json!({}));
        // Signed by another key than the one in the header.
        let wrong = sign(&other, k.jwk.clone(), c.clone());
        assert_eq!(verify(&wrong, &EXPECT, t0()), Err(ProofError::Signature));
        let mut private = k.jwk.clone();
        private["d"] = json!("AAAA");
        assert_eq!(
            verify(
                &forged(
                    json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": private}),
                    c.clone()
                ),
                &EXPECT,
                t0()
            ),
            Err(ProofError::PrivateJwk)
        );
        for alg in ["none", "HS256", "RS256"] {
            let p = forged(
                json!({"typ": "dpop+jwt", "alg": alg, "jwk": k.jwk}),
                c.clone(),
            );
            assert_eq!(verify(&p, &EXPECT, t0()), Err(ProofError::Alg(alg.into())));
        }
        let p = forged(
            json!({"typ": "JWT", "alg": "ES256", "jwk": k.jwk}),
            c.clone(),
        );
        assert_eq!(verify(&p, &EXPECT, t0()), Err(ProofError::Typ));
        let p = forged(json!({"typ": "dpop+jwt", "alg": "ES256"}), c.clone());
        assert_eq!(verify(&p, &EXPECT, t0()), Err(ProofError::NoJwk));
        let oct = json!({"kty": "oct", "k": "c2VjcmV0"});
        let p = forged(json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": oct}), c);
        assert_eq!(verify(&p, &EXPECT, t0()), Err(ProofError::PrivateJwk));
        assert_eq!(verify("a.b", &EXPECT, t0()), Err(ProofError::NotJws));
        assert_eq!(verify("a..c", &EXPECT, t0()), Err(ProofError::NotJws));
    }

    #[test]
    fn the_replay_cache_forgets_the_oldest_and_the_nonce_rotates_with_a_grace() {
        let knobs = Knobs {
            dpop_nonce: true,
            dpop_nonce_rotate: 2,
            ..Knobs::default()
        };
        let state = DpopState::new(&knobs);
        let proof = |jti: &str, nonce: Option<String>| Verified {
            jkt: "k".into(),
            jti: jti.into(),
            nonce,
        };
        assert_eq!(
            state.admit(&proof("a", None), false),
            Err(ProofError::UseNonce)
        );
        let n1 = state.nonce().unwrap();
        assert_eq!(state.admit(&proof("a", Some(n1.clone())), false), Ok(()));
        assert_eq!(
            state.admit(&proof("a", Some(n1.clone())), false),
            Err(ProofError::Replayed)
        );
        assert_eq!(state.admit(&proof("b", Some(n1.clone())), false), Ok(()));
        let n2 = state.nonce().unwrap();
        assert_ne!(n1, n2, "rotated after two accepted proofs");
        assert_eq!(
            state.admit(&proof("c", Some(n1.clone())), false),
            Ok(()),
            "grace"
        );
        state.rotate_nonce();
        assert_eq!(
            state.admit(&proof("d", Some(n1)), false),
            Err(ProofError::UseNonce)
        );

        let mut inner = state.inner();
        for i in 0..REPLAY_CACHE_LEN {
            inner.remember(&format!("x{i}"));
        }
        assert!(!inner.seen.contains("a") && inner.seen.contains("x0"));
        assert_eq!(inner.seen.len(), REPLAY_CACHE_LEN);
    }

    #[test]
    fn spurious_replays_are_remembered_so_the_same_proof_stays_refused() {
        let knobs = Knobs {
            dpop_spurious_replays: 1,
            ..Knobs::default()
        };
        let state = DpopState::new(&knobs);
        let p = Verified {
            jkt: "k".into(),
            jti: "a".into(),
            nonce: None,
        };
        assert_eq!(state.admit(&p, false), Ok(()), "not at the token endpoint");
        let q = Verified {
            jti: "b".into(),
            ..p.clone()
        };
        assert_eq!(state.admit(&q, true), Err(ProofError::Replayed));
        assert_eq!(state.admit(&q, true), Err(ProofError::Replayed));
        let r = Verified {
            jti: "c".into(),
            ..p
        };
        assert_eq!(state.admit(&r, true), Ok(()));
    }

    #[test]
    fn one_proof_header_only() {
        let mut h = HeaderMap::new();
        assert_eq!(proof_header(&h), Ok(None));
        h.append(PROOF_HEADER, HeaderValue::from_static("a.b.c"));
        assert_eq!(proof_header(&h), Ok(Some("a.b.c")));
        h.append(PROOF_HEADER, HeaderValue::from_static("d.e.f"));
        assert_eq!(proof_header(&h), Err(ProofError::HeaderCount));
        let mut h = HeaderMap::new();
        h.insert(PROOF_HEADER, HeaderValue::from_static("a.b.c, d.e.f"));
        assert_eq!(proof_header(&h), Err(ProofError::HeaderCount));
    }
}

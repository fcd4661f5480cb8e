//! The authorization server's memory: clients, codes, tokens and grant families.
//! Plain data and the rules that change it; no I/O, no locking (the caller holds
//! one lock around a whole operation, so every grant is atomic).

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, SystemTime},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::DecodingKey;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::knobs::{ClientSpec, TokenAuthMethod};

/// How long an authorization code stays valid.
pub(crate) const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// How long a device code stays valid.
pub(crate) const DEVICE_CODE_LIFETIME: Duration = Duration::from_secs(600);

#[derive(Clone, Debug)]
pub(crate) struct Client {
    pub id: String,
    pub secret: Option<String>,
    pub auth: TokenAuthMethod,
    pub redirect_uris: Vec<String>,
    /// Grants the client may use (RFC 7591 `grant_types`).
    pub grant_types: Vec<String>,
    /// The key that checks the client's private_key_jwt assertions (RFC 7523).
    pub assertion_key: Option<DecodingKey>,
    /// RFC 7592 management of a dynamic registration; pre-registered clients have none.
    pub registration: Option<Registration>,
}

/// A dynamic registration, as RFC 7592 reads and deletes it. `Debug` shows neither
/// the token nor the answer (which holds the client secret).
#[derive(Clone)]
pub(crate) struct Registration {
    /// `registration_access_token`: the Bearer token of the management endpoint.
    pub access_token: String,
    /// The client information response (RFC 7591 §3.2.1), as registration gave it.
    pub answer: serde_json::Value,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").finish_non_exhaustive()
    }
}

impl Client {
    pub fn from_spec(spec: &ClientSpec) -> Self {
        Self {
            id: spec.id.clone(),
            secret: spec.secret.clone(),
            auth: spec.auth,
            redirect_uris: spec.redirect_uris.clone(),
            grant_types: vec![
                "authorization_code".into(),
                "refresh_token".into(),
                "client_credentials".into(),
                DEVICE_CODE_GRANT.into(),
            ],
            // `validate` refused the testbed's start if the PEM does not parse.
            assertion_key: spec
                .public_key_pem
                .as_deref()
                .and_then(|pem| crate::authz::assertion_key(pem).ok()),
            registration: None,
        }
    }

    pub fn may_use(&self, grant_type: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant_type)
    }

    /// Whether `uri` is one of the client's redirect URIs. Loopback IP redirects match
    /// on any port (RFC 8252 §7.3); everything else matches exactly.
    pub fn allows_redirect(&self, uri: &str) -> bool {
        self.redirect_uris
            .iter()
            .any(|registered| redirect_matches(registered, uri))
    }
}

pub(crate) const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

pub(crate) fn redirect_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let (Ok(r), Ok(q)) = (url::Url::parse(registered), url::Url::parse(requested)) else {
        return false;
    };
    let loopback_ip = matches!(r.host_str(), Some("127.0.0.1" | "[::1]"));
    loopback_ip
        && r.scheme() == "http"
        && q.scheme() == "http"
        && r.host_str() == q.host_str()
        && r.path() == q.path()
        && r.query() == q.query()
}

#[derive(Clone, Debug)]
pub(crate) struct Code {
    pub client_id: String,
    /// The person who authorized (`login_hint`, else `--subject`).
    pub subject: String,
    pub redirect_uri: String,
    pub challenge: String,
    pub method: String,
    pub scope: Vec<String>,
    pub resource: Option<String>,
    pub expires_at: SystemTime,
    /// Set once exchanged; a second exchange revokes what the first one issued.
    pub issued_family: Option<u64>,
    /// `dpop_jkt` of the authorization request (RFC 9449 §10): the exchange needs a
    /// proof by this key.
    pub dpop_jkt: Option<String>,
    /// What `--idp-quirks` decided when the authorization was asked for.
    pub quirks: QuirkGrant,
}

/// What the identity-provider quirks decided for one authorization; without quirks,
/// [`QuirkGrant::default`] (the other knobs decide).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct QuirkGrant {
    /// Whether the provider would issue a refresh token for this grant.
    pub refresh_allowed: bool,
    /// The scope the token response names, when it is not what tokens carry
    /// (Entra: the qualified forms, as requested).
    pub scope_shown: Option<Vec<String>>,
}

impl Default for QuirkGrant {
    fn default() -> Self {
        Self {
            refresh_allowed: true,
            scope_shown: None,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct AccessToken {
    pub client_id: String,
    /// The person the token is for (`sub`); the client's id for client_credentials.
    pub subject: String,
    pub scope: Vec<String>,
    pub resource: Option<String>,
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
    pub family: Option<u64>,
    pub revoked: bool,
    /// The DPoP key thumbprint the token is bound to (RFC 9449 §6: `cnf.jkt`).
    pub jkt: Option<String>,
}

/// What a new access token is for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NewAccess<'a> {
    pub client_id: &'a str,
    pub subject: &'a str,
    pub scope: &'a [String],
    pub resource: Option<&'a str>,
    pub family: Option<u64>,
    /// The DPoP key thumbprint to bind the token to.
    pub jkt: Option<&'a str>,
}

impl AccessToken {
    /// A live token for `new`, issued at `now`.
    pub fn new(new: &NewAccess<'_>, now: SystemTime, lifetime: Duration) -> Self {
        Self {
            client_id: new.client_id.to_owned(),
            subject: new.subject.to_owned(),
            scope: new.scope.to_vec(),
            resource: new.resource.map(str::to_owned),
            issued_at: now,
            expires_at: now + lifetime,
            family: new.family,
            revoked: false,
            jkt: new.jkt.map(str::to_owned),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct RefreshToken {
    pub family: u64,
    /// Rotated out: presenting it again is reuse.
    pub used: bool,
    /// The DPoP key thumbprint the token is bound to: refreshing needs a proof by it.
    pub jkt: Option<String>,
}

/// One grant: the access and refresh tokens descending from one authorization.
#[derive(Clone, Debug)]
pub(crate) struct Family {
    pub client_id: String,
    /// The person of the original authorization: every refresh keeps it.
    pub subject: String,
    pub scope: Vec<String>,
    pub resource: Option<String>,
    pub revoked: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct DeviceGrant {
    pub client_id: String,
    /// The person who approves (`--subject`).
    pub subject: String,
    pub user_code: String,
    pub scope: Vec<String>,
    pub resource: Option<String>,
    pub expires_at: SystemTime,
    pub polls: u32,
    pub approved: bool,
    pub denied: bool,
    /// What `--idp-quirks` decided when the grant was asked for.
    pub quirks: QuirkGrant,
}

#[derive(Debug, Default)]
pub(crate) struct Db {
    pub clients: HashMap<String, Client>,
    pub codes: HashMap<String, Code>,
    pub access: HashMap<String, AccessToken>,
    pub refresh: HashMap<String, RefreshToken>,
    pub families: HashMap<u64, Family>,
    pub devices: HashMap<String, DeviceGrant>,
    /// The private_key_jwt assertions already taken (RFC 7523 §3: `jti`).
    pub assertion_jtis: SeenJtis,
    /// Every secret value the testbed issued or received (tokens, codes, client
    /// secrets, PKCE verifiers), so tests can check that none leaked anywhere.
    pub secrets: Vec<String>,
    next_family: u64,
}

/// Tokens a grant hands out.
#[derive(Debug)]
pub(crate) struct Issued {
    pub access_token: String,
    /// The person the tokens are for.
    pub subject: String,
    pub refresh_token: Option<String>,
    pub scope: Vec<String>,
}

impl Db {
    pub fn new(clients: &[ClientSpec]) -> Self {
        let mut db = Self::default();
        for spec in clients {
            db.clients.insert(spec.id.clone(), Client::from_spec(spec));
        }
        db
    }

    pub fn new_family(
        &mut self,
        client_id: &str,
        subject: &str,
        scope: &[String],
        resource: Option<&str>,
    ) -> u64 {
        self.next_family += 1;
        let id = self.next_family;
        self.families.insert(
            id,
            Family {
                client_id: client_id.to_owned(),
                subject: subject.to_owned(),
                scope: scope.to_vec(),
                resource: resource.map(str::to_owned),
                revoked: false,
            },
        );
        id
    }

    /// Record an access token issued as `token` (an opaque string or a JWT).
    pub fn insert_access(&mut self, token: String, at: AccessToken) -> String {
        self.secrets.push(token.clone());
        self.access.insert(token.clone(), at);
        token
    }

    pub fn mint_refresh(&mut self, family: u64, jkt: Option<&str>) -> String {
        let token = random_token("tb_rt_");
        self.secrets.push(token.clone());
        self.refresh.insert(
            token.clone(),
            RefreshToken {
                family,
                used: false,
                jkt: jkt.map(str::to_owned),
            },
        );
        token
    }

    /// Revoke a grant: its family, every refresh token and every access token of it.
    pub fn revoke_family(&mut self, family: u64) {
        if let Some(f) = self.families.get_mut(&family) {
            f.revoked = true;
        }
        for at in self.access.values_mut() {
            if at.family == Some(family) {
                at.revoked = true;
            }
        }
        self.refresh.retain(|_, rt| rt.family != family);
    }

    /// Forget a client (RFC 7592 §2.3): its registration, codes and device grants,
    /// and every grant and token issued to it. Whether it was there.
    pub fn remove_client(&mut self, client_id: &str) -> bool {
        if self.clients.remove(client_id).is_none() {
            return false;
        }
        self.codes.retain(|_, c| c.client_id != client_id);
        self.devices.retain(|_, d| d.client_id != client_id);
        let families: Vec<u64> = self
            .families
            .iter()
            .filter(|(_, f)| f.client_id == client_id)
            .map(|(id, _)| *id)
            .collect();
        for family in families {
            self.revoke_family(family);
        }
        for at in self.access.values_mut() {
            if at.client_id == client_id {
                at.revoked = true;
            }
        }
        true
    }

    /// Forget expired codes, device grants and access tokens (long benchmark runs).
    pub fn sweep(&mut self, now: SystemTime) {
        self.codes
            .retain(|_, c| c.expires_at > now || c.issued_family.is_some());
        self.devices.retain(|_, d| d.expires_at > now);
        self.access
            .retain(|_, t| t.expires_at + Duration::from_secs(3600) > now);
    }
}

/// How many assertion `jti`s are remembered; past it, the expired ones are forgotten,
/// then the oldest.
const JTI_CACHE_LEN: usize = 10_000;

/// `jti`s already used, per client, with the `exp` of their assertion (seconds since
/// the Unix epoch): an assertion whose `exp` passed is refused anyway, so its `jti`
/// may be forgotten.
#[derive(Debug, Default)]
pub(crate) struct SeenJtis {
    seen: HashMap<(String, String), u64>,
    order: VecDeque<(String, String)>,
}

impl SeenJtis {
    /// Remember `jti` of `client_id` until `exp`; false when it was already used.
    /// Times in seconds since the Unix epoch.
    pub fn take(&mut self, client_id: &str, jti: &str, exp: u64, now: u64) -> bool {
        let key = (client_id.to_owned(), jti.to_owned());
        if self.seen.get(&key).is_some_and(|e| *e > now) {
            return false;
        }
        if self.order.len() >= JTI_CACHE_LEN {
            self.seen.retain(|_, e| *e > now);
            let seen = &self.seen;
            self.order.retain(|k| seen.contains_key(k));
        }
        while self.order.len() >= JTI_CACHE_LEN {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        if self.seen.insert(key.clone(), exp).is_none() {
            self.order.push_back(key);
        }
        true
    }
}

/// A random URL-safe token with a readable prefix.
pub(crate) fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A user code for the device grant: 8 letters without look-alikes, as `ABCD-EFGH`.
pub(crate) fn user_code() -> String {
    const ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
    let mut bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut bytes);
    let letters: String = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    format!("{}-{}", &letters[..4], &letters[4..])
}

/// RFC 7636 §4.6: does `verifier` answer `challenge` under `method`?
pub(crate) fn pkce_matches(method: &str, challenge: &str, verifier: &str) -> bool {
    let valid_verifier = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !valid_verifier {
        return false;
    }
    match method {
        "S256" => URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == challenge,
        "plain" => verifier == challenge,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches("S256", challenge, verifier));
        assert!(!pkce_matches(
            "S256",
            challenge,
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX"
        ));
        assert!(!pkce_matches("plain", challenge, verifier));
        assert!(!pkce_matches("S256", challenge, "short"));
    }

    #[test]
    fn loopback_redirects_match_any_port_only_for_ip_literals() {
        let reg = "http://127.0.0.1/callback";
        assert!(redirect_matches(reg, "http://127.0.0.1:4711/callback"));
        assert!(!redirect_matches(reg, "http://127.0.0.1:4711/other"));
        assert!(!redirect_matches(reg, "http://evil.example:4711/callback"));
        assert!(!redirect_matches(
            "http://localhost/cb",
            "http://localhost:9/cb"
        ));
        assert!(redirect_matches(
            "https://app.example/cb",
            "https://app.example/cb"
        ));
    }

    #[test]
    fn a_jti_is_taken_once_until_its_assertion_expires() {
        let mut seen = SeenJtis::default();
        let now = 1_800_000_000;
        let exp = now + 60;
        assert!(seen.take("c", "j", exp, now));
        assert!(!seen.take("c", "j", exp, now));
        assert!(seen.take("other", "j", exp, now));
        assert!(seen.take("c", "j", exp, exp + 1));
        for i in 0..JTI_CACHE_LEN + 5 {
            assert!(seen.take("c", &format!("x{i}"), exp, now));
        }
        assert_eq!(seen.order.len(), JTI_CACHE_LEN);
        assert_eq!(seen.seen.len(), JTI_CACHE_LEN);
        assert!(!seen.take("c", &format!("x{JTI_CACHE_LEN}"), exp, now));
    }

    fn mint(db: &mut Db, client_id: &str, family: Option<u64>) -> String {
        let new = NewAccess {
            client_id,
            subject: "someone",
            scope: &[],
            resource: None,
            family,
            jkt: None,
        };
        let at = AccessToken::new(&new, SystemTime::now(), Duration::from_secs(9));
        db.insert_access(random_token("tb_at_"), at)
    }

    #[test]
    fn removing_a_client_revokes_what_it_holds() {
        let mut db = Db::new(&[ClientSpec::public("gone"), ClientSpec::public("kept")]);
        let f1 = db.new_family("gone", "s", &[], None);
        let f2 = db.new_family("kept", "s", &[], None);
        let a1 = mint(&mut db, "gone", Some(f1));
        let a2 = mint(&mut db, "kept", Some(f2));
        let loose = mint(&mut db, "gone", None);
        let r1 = db.mint_refresh(f1, None);
        let r2 = db.mint_refresh(f2, None);
        assert!(db.remove_client("gone"));
        assert!(!db.remove_client("gone"));
        assert!(db.access[&a1].revoked && db.access[&loose].revoked && !db.access[&a2].revoked);
        assert!(!db.refresh.contains_key(&r1) && db.refresh.contains_key(&r2));
        assert!(db.clients.contains_key("kept") && !db.clients.contains_key("gone"));
    }

    #[test]
    fn revoking_a_family_revokes_its_tokens_only() {
        let mut db = Db::default();
        let f1 = db.new_family("c", "s", &[], None);
        let f2 = db.new_family("c", "s", &[], None);
        let a1 = mint(&mut db, "c", Some(f1));
        let a2 = mint(&mut db, "c", Some(f2));
        let r1 = db.mint_refresh(f1, None);
        let r2 = db.mint_refresh(f2, Some("jkt"));
        db.revoke_family(f1);
        assert!(db.access[&a1].revoked && !db.access[&a2].revoked);
        assert!(!db.refresh.contains_key(&r1) && db.refresh.contains_key(&r2));
    }
}

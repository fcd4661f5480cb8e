//! What every handler of one testbed sees: the knobs, the clock, the addresses, the
//! authorization server's memory and the counters.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::SystemTime,
};

use clap::ValueEnum;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;

use crate::{
    clock::Clock,
    db::{AccessToken, Db, NewAccess, random_token},
    knobs::{Endpoint, EndpointFaults, IdpQuirks, Knobs, MetadataDoc, PrmLocation},
    signing::{SigningError, SigningKeys},
    stats::Stats,
};

pub(crate) struct Shared {
    pub knobs: Knobs,
    pub clock: Arc<dyn Clock>,
    pub urls: Urls,
    pub db: Mutex<Db>,
    pub stats: Mutex<Stats>,
    pub sessions: Arc<LocalSessionManager>,
    /// For introspection at an external authorization server.
    pub http: reqwest::Client,
    /// Set at run time: MCP requests never get an answer (a hung server).
    pub hung: std::sync::atomic::AtomicBool,
    /// Set at run time: the jwks endpoint answers 503 (a key server that is down).
    pub keys_down: std::sync::atomic::AtomicBool,
    /// Set at run time: the next MCP request's connection is dropped, once.
    pub drop_next: std::sync::atomic::AtomicBool,
    /// `slow` calls their client cancelled (the tools bump it; [`Shared::snapshot`]
    /// reports it).
    pub tools: Arc<ToolCounters>,
    /// What the interactive tools remember between rounds.
    pub(crate) rounds: Arc<crate::interactive::Rounds>,
    /// DPoP nonce, replay cache and spurious replays (`--dpop*`).
    pub(crate) dpop: crate::dpop::DpopState,
    /// Endless answers (`--hostile ENDPOINT:endless`) that stopped; a test waits on it
    /// to see one stop when its client hangs up.
    pub endless_stopped: Arc<Counter>,
    /// The keys JWT access tokens are signed with (`--jwt-access-tokens`).
    pub(crate) signing: SigningKeys,
    faults: HashMap<Endpoint, EndpointFaults>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub fn new(knobs: Knobs, clock: Arc<dyn Clock>, urls: Urls, signing: SigningKeys) -> Self {
        let faults = Endpoint::value_variants()
            .iter()
            .map(|e| (*e, knobs.faults_for(*e)))
            .collect();
        Self {
            db: Mutex::new(Db::new(&knobs.clients)),
            stats: Mutex::new(Stats::default()),
            sessions: Arc::new(LocalSessionManager::default()),
            hung: Default::default(),
            keys_down: Default::default(),
            drop_next: Default::default(),
            tools: Default::default(),
            endless_stopped: Default::default(),
            rounds: Arc::new(crate::interactive::Rounds::new(
                knobs.request_state_bytes,
                knobs.input_required_forever,
            )),
            dpop: crate::dpop::DpopState::new(&knobs),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            knobs,
            clock,
            urls,
            signing,
            faults,
        }
    }

    /// The `issuer` of the AS metadata (`--issuer-override`, else the real one).
    pub fn advertised_issuer(&self) -> &str {
        self.knobs
            .issuer_override
            .as_deref()
            .unwrap_or(&self.urls.issuer)
    }

    /// Issue an access token for `new` into `db`, now: an opaque random string, or
    /// with `--jwt-access-tokens` a JWT (RFC 9068) signed by the current key.
    pub fn mint_access(&self, db: &mut Db, new: &NewAccess<'_>) -> Result<String, SigningError> {
        let at = AccessToken::new(new, self.now(), self.knobs.access_token_lifetime());
        let token = if self.knobs.jwt_access_tokens {
            self.signing.sign_access(self.advertised_issuer(), &at)?
        } else {
            random_token("tb_at_")
        };
        Ok(db.insert_access(token, at))
    }

    /// The counters as they are now.
    pub fn snapshot(&self) -> Stats {
        let mut stats = self.stats().clone();
        stats.cancelled_calls = self.tools.cancelled.get();
        stats.most_slow_calls_at_once = self.tools.most_slow_at_once();
        stats.resource_subscribes = self.tools.subscribes.get();
        stats.resource_unsubscribes = self.tools.unsubscribes.get();
        stats.endless_answers_stopped = self.endless_stopped.get();
        stats
    }

    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// The AS memory. A poisoned lock means a handler panicked mid-update; the testbed
    /// is a test tool, so it carries on with what is there.
    pub fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn faults(&self, endpoint: Endpoint) -> &EndpointFaults {
        // `new` puts every variant of `Endpoint` in the map.
        &self.faults[&endpoint]
    }

    /// Drop every MCP session, as a server restart would.
    pub async fn drop_sessions(&self) {
        let handles: Vec<_> = self.sessions.sessions.write().await.drain().collect();
        for (_, handle) in handles {
            let _ = handle.close().await;
        }
    }
}

/// Every address the testbed serves, derived once from the knobs and the bound ports.
#[derive(Clone, Debug)]
pub(crate) struct Urls {
    /// `http://127.0.0.1:PORT` of the MCP listener.
    pub rs_origin: String,
    /// `http://127.0.0.1:PORT` of the AS listener (the same as rs_origin when shared).
    pub as_origin: String,
    pub mcp_path: String,
    /// The MCP endpoint URL.
    pub mcp_url: String,
    /// The resource identifier this server really is (what tokens must be bound to).
    pub resource: String,
    /// Where the protected resource metadata is served, if anywhere.
    pub prm_path: Option<String>,
    pub issuer_path: String,
    pub issuer: String,
    /// Endpoints where Keycloak has them (`--idp-quirks keycloak`).
    keycloak_layout: bool,
}

impl Urls {
    pub fn new(knobs: &Knobs, rs: SocketAddr, as_: SocketAddr) -> Self {
        let scheme = if knobs.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let rs_origin = format!("{scheme}://{rs}");
        let as_origin = if knobs.shared_origin {
            rs_origin.clone()
        } else {
            format!("http://{as_}")
        };
        let mcp_path = normalize_path(&knobs.mcp_path);
        let mcp_url = format!("{rs_origin}{mcp_path}");
        let resource = match knobs.prm {
            PrmLocation::Root => rs_origin.clone(),
            _ => mcp_url.clone(),
        };
        let prm_path = match knobs.prm {
            PrmLocation::Header | PrmLocation::Path => {
                Some(format!("/.well-known/oauth-protected-resource{mcp_path}"))
            }
            PrmLocation::Root => Some("/.well-known/oauth-protected-resource".to_owned()),
            PrmLocation::Custom => Some(normalize_path(&knobs.prm_custom_path)),
            PrmLocation::Absent => None,
        };
        let issuer_path = normalize_path(knobs.effective_issuer_path());
        let issuer_path = if issuer_path == "/" {
            String::new()
        } else {
            issuer_path
        };
        let issuer = format!("{as_origin}{issuer_path}");
        Self {
            rs_origin,
            as_origin,
            mcp_path,
            mcp_url,
            resource,
            prm_path,
            issuer_path,
            issuer,
            keycloak_layout: knobs.idp_quirks == Some(IdpQuirks::Keycloak),
        }
    }

    pub fn prm_url(&self) -> Option<String> {
        self.prm_path
            .as_ref()
            .map(|p| format!("{}{p}", self.rs_origin))
    }

    /// Path (on the AS origin) of an AS endpoint, e.g. `endpoint_path("token")`.
    pub fn endpoint_path(&self, name: &str) -> String {
        let name = if self.keycloak_layout {
            keycloak_endpoint(name)
        } else {
            name
        };
        format!("{}/{name}", self.issuer_path)
    }

    pub fn endpoint_url(&self, name: &str) -> String {
        format!("{}{}", self.as_origin, self.endpoint_path(name))
    }

    /// Path of one AS metadata document (RFC 8414 §3.1; OpenID Discovery §4).
    pub fn metadata_path(&self, doc: MetadataDoc) -> Option<String> {
        let p = &self.issuer_path;
        match doc {
            MetadataDoc::Oauth => Some(format!("/.well-known/oauth-authorization-server{p}")),
            MetadataDoc::OidcInsert => Some(format!("/.well-known/openid-configuration{p}")),
            MetadataDoc::OidcAppend => Some(format!("{p}/.well-known/openid-configuration")),
            MetadataDoc::None => None,
        }
    }
}

/// Where Keycloak serves an endpoint, under its realm path.
fn keycloak_endpoint(name: &str) -> &str {
    match name {
        "authorize" => "protocol/openid-connect/auth",
        "token" => "protocol/openid-connect/token",
        "revoke" => "protocol/openid-connect/revoke",
        "introspect" => "protocol/openid-connect/token/introspect",
        "device_authorization" => "protocol/openid-connect/auth/device",
        "jwks" => "protocol/openid-connect/certs",
        "register" => "clients-registrations/openid-connect",
        other => other,
    }
}

/// `x/y/` -> `/x/y`; "" stays "".
fn normalize_path(p: &str) -> String {
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        if p.is_empty() {
            String::new()
        } else {
            "/".to_owned()
        }
    } else if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(k: &Knobs) -> Urls {
        Urls::new(
            k,
            "127.0.0.1:1000".parse().unwrap(),
            "127.0.0.1:2000".parse().unwrap(),
        )
    }

    #[test]
    fn metadata_paths_follow_rfc8414_and_oidc() {
        let k = Knobs {
            issuer_path: "tenant1/".into(),
            ..Knobs::default()
        };
        let u = urls(&k);
        assert_eq!(u.issuer, "http://127.0.0.1:2000/tenant1");
        assert_eq!(
            u.metadata_path(MetadataDoc::Oauth).unwrap(),
            "/.well-known/oauth-authorization-server/tenant1"
        );
        assert_eq!(
            u.metadata_path(MetadataDoc::OidcAppend).unwrap(),
            "/tenant1/.well-known/openid-configuration"
        );
        assert_eq!(
            u.endpoint_url("token"),
            "http://127.0.0.1:2000/tenant1/token"
        );
    }

    #[test]
    fn keycloak_puts_the_issuer_and_endpoints_under_its_realm() {
        let k = Knobs {
            idp_quirks: Some(IdpQuirks::Keycloak),
            issuer_path: "/ignored".into(),
            ..Knobs::default()
        };
        let u = urls(&k);
        assert_eq!(u.issuer, "http://127.0.0.1:2000/realms/keyway");
        assert_eq!(
            u.endpoint_url("authorize"),
            "http://127.0.0.1:2000/realms/keyway/protocol/openid-connect/auth"
        );
        assert_eq!(
            u.endpoint_path("token"),
            "/realms/keyway/protocol/openid-connect/token"
        );
        assert_eq!(
            u.metadata_path(MetadataDoc::OidcAppend).unwrap(),
            "/realms/keyway/.well-known/openid-configuration"
        );
        assert_eq!(k.metadata_docs(), [MetadataDoc::OidcAppend]);
    }

    #[test]
    fn prm_location_decides_resource_and_path() {
        let mut k = Knobs::default();
        let u = urls(&k);
        assert_eq!(u.resource, "http://127.0.0.1:1000/mcp");
        assert_eq!(
            u.prm_path.as_deref(),
            Some("/.well-known/oauth-protected-resource/mcp")
        );
        k.prm = PrmLocation::Root;
        let u = urls(&k);
        assert_eq!(u.resource, "http://127.0.0.1:1000");
        k.prm = PrmLocation::Absent;
        assert_eq!(urls(&k).prm_url(), None);
    }
}

/// A count a test can wait for, with no polling.
#[derive(Debug, Default)]
pub struct Counter {
    n: std::sync::atomic::AtomicU64,
    changed: tokio::sync::Notify,
}

impl Counter {
    pub fn bump(&self) {
        self.n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub fn get(&self) -> u64 {
        self.n.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Returns once the count is at least `n`.
    pub async fn reach(&self, n: u64) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a bump in between is not missed.
            changed.as_mut().enable();
            if self.get() >= n {
                return;
            }
            changed.await;
        }
    }
}

/// What the tools count, across every session.
#[derive(Debug, Default)]
pub struct ToolCounters {
    /// `slow` calls stopped by their client's `notifications/cancelled`.
    pub cancelled: Counter,
    /// `slow` calls started.
    pub started: Counter,
    /// `resources/subscribe` requests served.
    pub subscribes: Counter,
    /// `resources/unsubscribe` requests served.
    pub unsubscribes: Counter,
    running_slow: std::sync::atomic::AtomicU64,
    most_slow: std::sync::atomic::AtomicU64,
}

impl ToolCounters {
    /// A `slow` call starts; it counts as running until the guard is dropped.
    pub fn slow_started(self: &Arc<Self>) -> SlowRunning {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.running_slow.fetch_add(1, SeqCst) + 1;
        self.most_slow.fetch_max(now, SeqCst);
        self.started.bump();
        SlowRunning(self.clone())
    }

    /// The most `slow` calls that ran at the same time.
    pub fn most_slow_at_once(&self) -> u64 {
        self.most_slow.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A running `slow` call.
#[derive(Debug)]
pub struct SlowRunning(Arc<ToolCounters>);

impl Drop for SlowRunning {
    fn drop(&mut self) {
        self.0
            .running_slow
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

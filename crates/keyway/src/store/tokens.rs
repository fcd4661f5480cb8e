//! Tokens of a stored server, refreshed before they expire, once across every thread
//! and process: a lease in the store decides who refreshes; the others wait for the new
//! version instead of spending a refresh token that is about to be rotated.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use futures::future::BoxFuture;
use oauth2::AccessToken;
use rmcp::transport::auth::AuthError as RmcpAuthError;

use super::{Credential, LastStatus, OAuthCredential, Person, Store, StoreError, StoredCredential};
use crate::{
    auth::{
        ClientAuth, Grant, OAuthClient, RefreshError, RegistrationKind, refresh, token::TokenType,
    },
    mcp::{Presented, TokenSource},
};

/// The client `o` was issued to: the stored registration for its issuer when it is
/// that client, else a public client of that id (no secret to authenticate with).
pub fn client_of(
    o: &OAuthCredential,
    registration: Option<crate::auth::StoredRegistration>,
) -> OAuthClient {
    match registration {
        Some(r) if r.client_id == o.client_id => r.client(),
        _ => OAuthClient {
            client_id: o.client_id.clone(),
            auth: ClientAuth::None,
            kind: RegistrationKind::Dynamic,
            issuer: o.issuer.clone(),
            redirect_uris: Vec::new(),
        },
    }
}

/// How long a refresh lease lasts (longer than a token request may take).
const LEASE_TTL: Duration = Duration::from_secs(35);
/// How long a process waits for another's refresh before giving up.
const WAIT_LIMIT: Duration = Duration::from_secs(40);
/// How long a credential read from the store is used without reading it again (unless
/// it falls due for a refresh first). Every request used to read and decrypt it; now a
/// busy bridge reads it at most once a second, and still sees another process's
/// refresh, `keyway logout` or a new token within a second.
const REUSE_FOR: Duration = Duration::from_secs(1);

/// What using a stored credential can end in.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenFailure {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The refresh failed (no refresh token, refused, or the token endpoint failed).
    #[error("refreshing the token failed: {0}")]
    Refresh(RefreshError),
    /// Another process held the refresh lease longer than this process waits.
    #[error("another keyway process held the refresh for more than {} s", WAIT_LIMIT.as_secs())]
    Stuck,
}

enum Outcome {
    Use(Credential, u64),
    Unusable,
    Changed,
}

/// The credential last handed out (`None`: there was none, as for an open server).
#[derive(Debug)]
struct Recent {
    credential: Option<Arc<Credential>>,
    version: Option<u64>,
    read_at: tokio::time::Instant,
    /// [`super::credential_writes`] before it was read.
    writes: u64,
    /// When it falls due for a refresh (`None`: never).
    due: Option<SystemTime>,
}

/// What time it is, for deciding when a token falls due. [`StoredTokens::new`] reads
/// the system clock; a test or the demo injects its own with
/// [`StoredTokens::with_clock`], so a refresh happens when they say, not when a loaded
/// machine happens to get there.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// A [`TokenSource`] over a stored server's credential.
pub struct StoredTokens {
    clock: Clock,
    store: Arc<dyn Store>,
    server_id: String,
    /// Whose tokens these are: a person's own for a per-person server behind a team
    /// gateway ([`StoredTokens::for_person`]), else the server's.
    person: Option<Person>,
    /// Where the client the tokens were issued to is registered: the store's own
    /// registrations, or the gateway's ([`StoredTokens::for_person`]).
    registrations: Option<Arc<dyn crate::auth::RegistrationStore>>,
    holder: String,
    local: tokio::sync::Mutex<()>,
    refreshes: AtomicU64,
    store_reads: AtomicU64,
    /// The server's name in the metrics ([`StoredTokens::counted_as`]).
    metrics_name: std::sync::OnceLock<String>,
    recent: std::sync::Mutex<Option<Recent>>,
    /// The last (resource, URI) checked and the verdict: a connection asks for the same
    /// URI on every request.
    checked: std::sync::Mutex<Option<(String, String, bool)>>,
}

impl std::fmt::Debug for StoredTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredTokens")
            .field("server_id", &self.server_id)
            .field("holder", &self.holder)
            .field("refreshes", &self.refreshes)
            .finish_non_exhaustive()
    }
}

impl StoredTokens {
    /// The tokens of the stored server `server_id`, on the system clock.
    pub fn new(store: Arc<dyn Store>, server_id: &str) -> Arc<Self> {
        Self::with_clock(store, server_id, Arc::new(SystemTime::now))
    }

    /// [`StoredTokens::new`] deciding expiry by `clock`. Refreshed tokens are dated by
    /// it too, so a clock moved past one token's refresh time refreshes exactly once.
    pub fn with_clock(store: Arc<dyn Store>, server_id: &str, clock: Clock) -> Arc<Self> {
        Self::build(store, server_id, None, clock)
    }

    /// `person`'s own tokens for the per-person server `server_id`
    /// ([`Store::person_credential`]), refreshed once across every process as the
    /// server's own are, on `clock`, with the client `registrations` holds (the
    /// gateway's). A refresh token the server refuses is forgotten: the person
    /// authorizes again.
    pub fn for_person(
        store: Arc<dyn Store>,
        server_id: &str,
        person: Person,
        registrations: Arc<dyn crate::auth::RegistrationStore>,
        clock: Clock,
    ) -> Arc<Self> {
        Self::build(store, server_id, Some((person, registrations)), clock)
    }

    fn build(
        store: Arc<dyn Store>,
        server_id: &str,
        person: Option<(Person, Arc<dyn crate::auth::RegistrationStore>)>,
        clock: Clock,
    ) -> Arc<Self> {
        let (person, registrations) = match person {
            Some((p, r)) => (Some(p), Some(r)),
            None => (None, None),
        };
        let holder = super::lease_holder("tokens");
        Arc::new(Self {
            clock,
            store,
            person,
            registrations,
            server_id: server_id.to_owned(),
            holder,
            local: tokio::sync::Mutex::new(()),
            refreshes: AtomicU64::new(0),
            metrics_name: std::sync::OnceLock::new(),
            store_reads: AtomicU64::new(0),
            recent: std::sync::Mutex::new(None),
            checked: std::sync::Mutex::new(None),
        })
    }

    /// Count this source's refreshes in the process's metrics
    /// (`keyway_token_refreshes_total`) under the server name `name`; the first name
    /// given sticks.
    pub fn counted_as(&self, name: &str) {
        let _ = self.metrics_name.set(name.to_owned());
    }

    fn count(&self, outcome: crate::gateway::metrics::RefreshOutcome) {
        if let Some(name) = self.metrics_name.get() {
            crate::gateway::metrics::record_refresh(name, outcome);
        }
    }

    /// Refreshes this source made.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// Times this source read the credential from the store.
    pub fn store_reads(&self) -> u64 {
        self.store_reads.load(Ordering::Relaxed)
    }

    /// The token to use now, refreshing first when it is about to expire. `None`: no
    /// usable credential (authorization is needed; what is stored is left as it is).
    pub async fn current(&self) -> Result<Option<Credential>, TokenFailure> {
        if let Some(c) = self.reusable() {
            return Ok(c.map(|c| (*c).clone()));
        }
        self.current_with(false).await
    }

    /// Refresh now (after the server refused a token that looked valid), unless another
    /// task or process already replaced the token last handed out.
    pub async fn force_refresh(&self) -> Result<Option<Credential>, TokenFailure> {
        self.current_with(true).await
    }

    /// After the server refused the token last handed out: `true` once a different
    /// one is in place (another process's, or one this call refreshed).
    pub async fn renew(&self) -> Result<bool, TokenFailure> {
        let Some(refused) = self.recent_version() else {
            // No token was handed out: whatever the store holds now is new.
            self.forget();
            return Ok(self.current().await?.is_some());
        };
        let fresh = self.force_refresh().await?.is_some();
        Ok(fresh && self.recent_version() != Some(refused))
    }

    /// Read the store again on the next use: another process changed the credential
    /// (this process's own writes are noticed without being told).
    pub fn forget(&self) {
        *self.recent() = None;
    }

    /// Whether a token issued for `resource` may be sent to `uri` (invariant 1).
    fn sendable(&self, resource: &str, uri: &str) -> bool {
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((r, u, ok)) = checked.as_ref()
            && r == resource
            && u == uri
        {
            return *ok;
        }
        let ok =
            url::Url::parse(uri).is_ok_and(|u| crate::auth::urls::resource_matches(resource, &u));
        *checked = Some((resource.to_owned(), uri.to_owned(), ok));
        ok
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Option<Recent>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn recent_version(&self) -> Option<u64> {
        self.recent().as_ref().and_then(|r| r.version)
    }

    /// What the last request was given, as a stored version: `Some(None)` when there
    /// was no credential to give, `None` when nothing is known (nothing was handed out
    /// yet, or it was forgotten since).
    pub fn handed_out(&self) -> Option<Option<u64>> {
        self.recent().as_ref().map(|r| r.version)
    }

    /// The credential last handed out, while it may be used without reading the store.
    fn reusable(&self) -> Option<Option<Arc<Credential>>> {
        let recent = self.recent();
        let r = recent.as_ref()?;
        // A person with no token yet may have just authorized through another
        // replica (whose write this process does not count): that is read again.
        let fresh = r.read_at.elapsed() < REUSE_FOR
            && r.writes == super::credential_writes()
            && r.due.is_none_or(|due| (self.clock)() < due)
            && (r.credential.is_some() || self.person.is_none());
        fresh.then(|| r.credential.clone())
    }

    fn remember(&self, credential: Option<&Credential>, version: Option<u64>, writes: u64) {
        let due = match credential {
            Some(Credential::OAuth(o)) => crate::auth::refresh_due(o.expires_at, o.issued_at),
            _ => None,
        };
        *self.recent() = Some(Recent {
            credential: credential.map(|c| Arc::new(c.clone())),
            version,
            read_at: tokio::time::Instant::now(),
            writes,
            due,
        });
    }

    async fn current_with(&self, force: bool) -> Result<Option<Credential>, TokenFailure> {
        let mut force = force;
        // A forced refresh is for the version that was refused: the one handed out.
        let mut first_seen = if force { self.recent_version() } else { None };
        // One refresh per process at a time; the lease makes it one across processes.
        let _local = self.local.lock().await;
        // Whoever held the lock before us may have done the work.
        if !force && let Some(c) = self.reusable() {
            return Ok(c.map(|c| (*c).clone()));
        }
        let started = tokio::time::Instant::now();
        let mut wait = Duration::from_millis(20);
        loop {
            self.store_reads.fetch_add(1, Ordering::Relaxed);
            let writes = super::credential_writes();
            let Some(stored) = self.read().await? else {
                self.remember(None, None, writes);
                return Ok(None);
            };
            // A forced refresh is satisfied by anyone's newer version.
            if *first_seen.get_or_insert(stored.version) != stored.version {
                force = false;
            }
            let oauth = match &stored.credential {
                Credential::Bearer { .. } => {
                    self.remember(Some(&stored.credential), Some(stored.version), writes);
                    return Ok(Some(stored.credential));
                }
                Credential::OAuth(o) => o.clone(),
            };
            let now = (self.clock)();
            // Whether it is due needs no client: the registration is read only for
            // a refresh (a read per use would double the store's work on a gateway).
            let due = crate::auth::refresh_due(oauth.expires_at, oauth.issued_at)
                .is_some_and(|due| due <= now);
            if !force && !due {
                self.remember(Some(&stored.credential), Some(stored.version), writes);
                return Ok(Some(stored.credential));
            }
            if oauth.refresh_token.is_none() {
                let expired = oauth.expires_at.is_some_and(|at| at <= now);
                return Ok(if expired {
                    None
                } else {
                    Some(stored.credential)
                });
            }
            let grant_view = self.grant(&oauth).await?;
            let lease = match &self.person {
                None => format!("refresh:{}", self.server_id),
                Some(p) => format!("refresh:{}:{}", self.server_id, p.tag()),
            };
            if self
                .store
                .try_lease(&lease, &self.holder, LEASE_TTL)
                .await?
            {
                let outcome = self.refresh_under_lease(&stored, grant_view, now).await;
                self.store.release_lease(&lease, &self.holder).await?;
                match outcome? {
                    Outcome::Use(c, version) => {
                        if version != stored.version {
                            self.remember(Some(&c), Some(version), super::credential_writes());
                        }
                        return Ok(Some(c));
                    }
                    Outcome::Unusable => return Ok(None),
                    // Someone refreshed between our read and our lease: read again,
                    // and take theirs.
                    Outcome::Changed => {
                        force = false;
                        continue;
                    }
                }
            }
            // Another process is refreshing: wait for its new version, not our own request.
            if started.elapsed() > WAIT_LIMIT {
                return Err(TokenFailure::Stuck);
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(200));
        }
    }

    /// Holding the lease: refresh if the stored version is still the one we saw, and
    /// save with a compare-and-swap on that version.
    async fn refresh_under_lease(
        &self,
        seen: &StoredCredential,
        grant: Grant,
        now: SystemTime,
    ) -> Result<Outcome, TokenFailure> {
        match self.read().await? {
            Some(cur) if cur.version == seen.version => {}
            _ => return Ok(Outcome::Changed),
        }
        match refresh(&grant, now).await {
            Ok(fresh) => {
                let c = Credential::OAuth(Box::new(credential_from_grant(&fresh)));
                match self.write(&c, seen.version).await {
                    Ok(version) => {
                        self.refreshes.fetch_add(1, Ordering::Relaxed);
                        self.count(crate::gateway::metrics::RefreshOutcome::Ok);
                        Ok(Outcome::Use(c, version))
                    }
                    Err(StoreError::Conflict) => Ok(Outcome::Changed),
                    Err(e) => Err(e.into()),
                }
            }
            // The authorization server no longer knows the dynamic client the tokens
            // were issued to (deleted, expired): forget it, so the next authorization
            // registers anew instead of sending the person to a page for an unknown
            // client. The refresh token is dead with its client.
            Err(RefreshError::Failed(e))
                if e.code() == Some("invalid_client")
                    && grant.client.kind == RegistrationKind::Dynamic =>
            {
                let registrations = self.registrations();
                if let Ok(Some(r)) = registrations.load(&grant.issuer).await
                    && r.client_id == grant.client.client_id
                    && let Err(err) = registrations.forget(&grant.issuer).await
                {
                    tracing::warn!(error = %err, "could not forget a registration the server no longer knows");
                }
                tracing::info!(server = %self.server_id, error = %e, "the authorization server no longer knows keyway's client; authorization is needed");
                self.count(crate::gateway::metrics::RefreshOutcome::Rejected);
                self.needs_auth(
                    "the authorization server no longer knows keyway's client",
                    seen.version,
                )
                .await;
                Ok(if grant.expired(now) {
                    Outcome::Unusable
                } else {
                    Outcome::Use(seen.credential.clone(), seen.version)
                })
            }
            Err(RefreshError::Rejected(e)) => {
                tracing::info!(server = %self.server_id, error = %e, "refresh token rejected; authorization is needed");
                self.count(crate::gateway::metrics::RefreshOutcome::Rejected);
                self.needs_auth("the refresh token was rejected", seen.version)
                    .await;
                // The stored credential stays as it is; an expired token is not offered.
                Ok(if grant.expired(now) {
                    Outcome::Unusable
                } else {
                    Outcome::Use(seen.credential.clone(), seen.version)
                })
            }
            Err(e) if !grant.expired(now) => {
                tracing::warn!(server = %self.server_id, error = %e, "refresh failed; using the current token while it lasts");
                self.count(crate::gateway::metrics::RefreshOutcome::Failed);
                Ok(Outcome::Use(seen.credential.clone(), seen.version))
            }
            Err(e) => {
                self.count(crate::gateway::metrics::RefreshOutcome::Failed);
                Err(TokenFailure::Refresh(e))
            }
        }
    }

    /// The credential these tokens are: the person's, else the server's.
    async fn read(&self) -> Result<Option<StoredCredential>, StoreError> {
        match &self.person {
            None => self.store.credential(&self.server_id).await,
            Some(p) => self.store.person_credential(&self.server_id, p).await,
        }
    }

    /// Write `c` in place of version `seen` (compare-and-swap).
    async fn write(&self, c: &Credential, seen: u64) -> Result<u64, StoreError> {
        match &self.person {
            None => {
                self.store
                    .save_credential(&self.server_id, c, Some(seen))
                    .await
            }
            Some(p) => {
                self.store
                    .save_person_credential(&self.server_id, p, c, Some(seen))
                    .await
            }
        }
    }

    /// The authorization server refused the refresh: the server's status says so.
    /// A person's refusal is theirs alone, and is not the server's status: their
    /// dead credential (version `seen`, unless another process replaced it since) is
    /// forgotten, so their next call gets a link instead of trying it again.
    async fn needs_auth(&self, why: &str, seen: u64) {
        match &self.person {
            None => {
                let _ = self
                    .store
                    .set_status(&self.server_id, LastStatus::NeedsAuth, Some(why))
                    .await;
            }
            Some(p) => {
                if let Err(e) = self
                    .store
                    .forget_person_credential(&self.server_id, p, Some(seen))
                    .await
                {
                    tracing::warn!(server = %self.server_id, error = %e, "could not forget a person's refused credential");
                }
            }
        }
    }

    /// Where the tokens' client is registered.
    fn registrations(&self) -> &dyn crate::auth::RegistrationStore {
        match &self.registrations {
            Some(r) => r.as_ref(),
            None => self.store.as_ref(),
        }
    }

    /// The stored credential as a [`Grant`], with the client it belongs to.
    async fn grant(&self, o: &OAuthCredential) -> Result<Grant, TokenFailure> {
        let registration = self
            .registrations()
            .load(&o.issuer)
            .await
            .map_err(|e| StoreError::Sqlite(e.to_string()))?;
        let client = client_of(o, registration);
        Ok(Grant {
            access_token: o.access_token.clone(),
            refresh_token: o.refresh_token.clone(),
            expires_at: o.expires_at,
            issued_at: o.issued_at,
            requested_scopes: o.scopes.clone(),
            granted_scopes: None,
            resource: o.resource.clone(),
            issuer: o.issuer.clone(),
            token_endpoint: o.token_endpoint.clone(),
            client,
            as_metadata: o.as_metadata.clone(),
            token_type: o.token_type,
            dpop: o.dpop.clone(),
            quirks: o.quirks.clone(),
        })
    }
}

/// A grant as a stored credential.
pub fn credential_from_grant(g: &Grant) -> OAuthCredential {
    OAuthCredential {
        access_token: g.access_token.clone(),
        refresh_token: g.refresh_token.clone(),
        expires_at: g.expires_at,
        issued_at: g.issued_at,
        scopes: g
            .granted_scopes
            .clone()
            .unwrap_or_else(|| g.requested_scopes.clone()),
        issuer: g.issuer.clone(),
        token_endpoint: g.token_endpoint.clone(),
        client_id: g.client.client_id.clone(),
        resource: g.resource.clone(),
        as_metadata: g.as_metadata.clone(),
        token_type: g.token_type,
        dpop: g.dpop.clone(),
        quirks: g.quirks.clone(),
    }
}

impl TokenSource for StoredTokens {
    fn token<'a>(
        &'a self,
        uri: &'a str,
    ) -> BoxFuture<'a, Result<Option<Presented>, RmcpAuthError>> {
        Box::pin(async move {
            let credential = match self.reusable() {
                Some(Some(c)) => c,
                Some(None) => return Ok(None),
                None => match self.current().await {
                    Ok(Some(c)) => Arc::new(c),
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(RmcpAuthError::CredentialStoreError(e.to_string())),
                },
            };
            match &*credential {
                Credential::Bearer { token } => Ok(Some(Presented::bearer(AccessToken::new(
                    token.expose().to_owned(),
                )))),
                Credential::OAuth(o) => {
                    let for_uri = self.sendable(&o.resource, uri);
                    if !for_uri {
                        tracing::warn!(uri, resource = %o.resource, "not sending a token issued for another resource");
                        return Ok(None);
                    }
                    let dpop = match o.token_type {
                        TokenType::Bearer => None,
                        TokenType::Dpop => match &o.dpop {
                            Some(key) => Some(key.clone()),
                            None => {
                                tracing::warn!(server = %self.server_id, "a DPoP-bound token without its key is never sent as Bearer");
                                return Ok(None);
                            }
                        },
                    };
                    Ok(Some(Presented {
                        token: o.access_token.clone(),
                        dpop,
                    }))
                }
            }
        })
    }
}

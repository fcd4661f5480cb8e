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
use rand::Rng;
use rmcp::transport::auth::AuthError as RmcpAuthError;

use super::{Credential, LastStatus, OAuthCredential, Store, StoreError, StoredCredential};
use crate::{
    auth::{ClientAuth, Grant, OAuthClient, RefreshError, RegistrationKind, refresh},
    mcp::TokenSource,
};

/// How long a refresh lease lasts (longer than a token request may take).
const LEASE_TTL: Duration = Duration::from_secs(35);
/// How long a process waits for another's refresh before giving up.
const WAIT_LIMIT: Duration = Duration::from_secs(40);

/// What using a stored credential can end in.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenFailure {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("refreshing the token failed: {0}")]
    Refresh(RefreshError),
    #[error("another keyway process held the refresh for more than {} s", WAIT_LIMIT.as_secs())]
    Stuck,
}

enum Outcome {
    Use(Credential),
    Unusable,
    Changed,
}

/// A [`TokenSource`] over a stored server's credential.
#[derive(Debug)]
pub struct StoredTokens {
    store: Arc<dyn Store>,
    server_id: String,
    http: reqwest::Client,
    holder: String,
    local: tokio::sync::Mutex<()>,
    refreshes: AtomicU64,
}

impl StoredTokens {
    pub fn new(store: Arc<dyn Store>, server_id: &str, http: reqwest::Client) -> Arc<Self> {
        let mut tag = [0u8; 6];
        rand::rng().fill_bytes(&mut tag);
        let holder = format!(
            "{}-{}",
            std::process::id(),
            tag.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        Arc::new(Self {
            store,
            server_id: server_id.to_owned(),
            http,
            holder,
            local: tokio::sync::Mutex::new(()),
            refreshes: AtomicU64::new(0),
        })
    }

    /// Refreshes this source made.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// The token to use now, refreshing first when it is about to expire. `None`: no
    /// usable credential (authorization is needed; what is stored is left as it is).
    pub async fn current(&self) -> Result<Option<Credential>, TokenFailure> {
        self.current_with(false).await
    }

    /// Refresh now (after the server refused a token that looked valid), unless another
    /// task or process already did.
    pub async fn force_refresh(&self) -> Result<Option<Credential>, TokenFailure> {
        self.current_with(true).await
    }

    async fn current_with(&self, force: bool) -> Result<Option<Credential>, TokenFailure> {
        let mut force = force;
        let mut first_seen = None;
        // One refresh per process at a time; the lease makes it one across processes.
        let _local = self.local.lock().await;
        let started = tokio::time::Instant::now();
        let mut wait = Duration::from_millis(20);
        loop {
            let Some(stored) = self.store.credential(&self.server_id).await? else {
                return Ok(None);
            };
            // A forced refresh is satisfied by anyone's newer version.
            if *first_seen.get_or_insert(stored.version) != stored.version {
                force = false;
            }
            let oauth = match &stored.credential {
                Credential::Bearer { .. } => return Ok(Some(stored.credential)),
                Credential::OAuth(o) => o.clone(),
            };
            let now = SystemTime::now();
            let grant_view = self.grant(&oauth).await?;
            if !force && !grant_view.needs_refresh(now) {
                return Ok(Some(stored.credential));
            }
            if oauth.refresh_token.is_none() {
                return Ok(if grant_view.expired(now) {
                    None
                } else {
                    Some(stored.credential)
                });
            }
            let lease = format!("refresh:{}", self.server_id);
            if self
                .store
                .try_lease(&lease, &self.holder, LEASE_TTL)
                .await?
            {
                let outcome = self.refresh_under_lease(&stored, grant_view, now).await;
                self.store.release_lease(&lease, &self.holder).await?;
                match outcome? {
                    Outcome::Use(c) => return Ok(Some(c)),
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
        match self.store.credential(&self.server_id).await? {
            Some(cur) if cur.version == seen.version => {}
            _ => return Ok(Outcome::Changed),
        }
        match refresh(&self.http, &grant, now).await {
            Ok(fresh) => {
                let c = Credential::OAuth(Box::new(credential_from_grant(&fresh)));
                match self
                    .store
                    .save_credential(&self.server_id, &c, Some(seen.version))
                    .await
                {
                    Ok(_) => {
                        self.refreshes.fetch_add(1, Ordering::Relaxed);
                        Ok(Outcome::Use(c))
                    }
                    Err(StoreError::Conflict) => Ok(Outcome::Changed),
                    Err(e) => Err(e.into()),
                }
            }
            Err(RefreshError::Rejected(e)) => {
                tracing::info!(server = %self.server_id, error = %e, "refresh token rejected; authorization is needed");
                let _ = self
                    .store
                    .set_status(
                        &self.server_id,
                        LastStatus::NeedsAuth,
                        Some("the refresh token was rejected"),
                    )
                    .await;
                // The stored credential stays as it is; an expired token is not offered.
                Ok(if grant.expired(now) {
                    Outcome::Unusable
                } else {
                    Outcome::Use(seen.credential.clone())
                })
            }
            Err(e) if !grant.expired(now) => {
                tracing::warn!(server = %self.server_id, error = %e, "refresh failed; using the current token while it lasts");
                Ok(Outcome::Use(seen.credential.clone()))
            }
            Err(e) => Err(TokenFailure::Refresh(e)),
        }
    }

    /// The stored credential as a [`Grant`], with the client it belongs to.
    async fn grant(&self, o: &OAuthCredential) -> Result<Grant, TokenFailure> {
        let client =
            match RegistrationStoreExt::registration(self.store.as_ref(), &o.issuer).await? {
                Some(r) if r.client_id == o.client_id => r.client(),
                _ => OAuthClient {
                    client_id: o.client_id.clone(),
                    auth: ClientAuth::None,
                    kind: RegistrationKind::Dynamic,
                    issuer: o.issuer.clone(),
                    redirect_uris: Vec::new(),
                },
            };
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
    }
}

/// Registrations through the store, with store errors.
#[async_trait::async_trait]
trait RegistrationStoreExt {
    async fn registration(
        &self,
        issuer: &str,
    ) -> Result<Option<crate::auth::StoredRegistration>, StoreError>;
}

#[async_trait::async_trait]
impl<T: Store + ?Sized> RegistrationStoreExt for T {
    async fn registration(
        &self,
        issuer: &str,
    ) -> Result<Option<crate::auth::StoredRegistration>, StoreError> {
        crate::auth::RegistrationStore::load(self, issuer)
            .await
            .map_err(|e| StoreError::Sqlite(e.to_string()))
    }
}

impl TokenSource for StoredTokens {
    fn bearer<'a>(
        &'a self,
        uri: &'a str,
    ) -> BoxFuture<'a, Result<Option<AccessToken>, RmcpAuthError>> {
        Box::pin(async move {
            match self.current().await {
                Ok(Some(Credential::Bearer { token })) => {
                    Ok(Some(AccessToken::new(token.expose().to_owned())))
                }
                Ok(Some(Credential::OAuth(o))) => {
                    let for_uri = url::Url::parse(uri)
                        .is_ok_and(|u| crate::auth::urls::resource_matches(&o.resource, &u));
                    if !for_uri {
                        tracing::warn!(uri, resource = %o.resource, "not sending a token issued for another resource");
                        return Ok(None);
                    }
                    Ok(Some(o.access_token))
                }
                Ok(None) => Ok(None),
                Err(e) => Err(RmcpAuthError::CredentialStoreError(e.to_string())),
            }
        })
    }
}

//! keyway's store behind rmcp's `CredentialStore` and `StateStore` traits, for Rust
//! programs that drive rmcp's own `AuthorizationManager`: persistence, encryption, and
//! the cross-process refresh guard (a store lease held from load to save).

use std::time::Duration;

use oauth2::{AccessToken, RefreshToken, TokenResponse, basic::BasicTokenType};
use rmcp::transport::auth::{
    AuthError, CredentialRefreshGuard, CredentialStore, OAuthTokenResponse, StateStore,
    StoredAuthorizationState, StoredCredentials, VendorExtraTokenFields,
};

use super::{AnyStore, Credential, OAuthCredential, Store, from_unix, unix};

/// rmcp's `CredentialStore` for one stored server. rmcp's credentials carry no token
/// endpoint or resource, so the adapter is made with the binding they belong to.
#[derive(Debug, Clone)]
pub struct RmcpCredentials {
    store: AnyStore,
    server_id: String,
    token_endpoint: String,
    resource: String,
    holder: String,
}

impl RmcpCredentials {
    /// The adapter for the stored server `server_id`; credentials rmcp saves are bound
    /// to `token_endpoint` and `resource`.
    pub fn new(
        store: impl Into<AnyStore>,
        server_id: &str,
        token_endpoint: &str,
        resource: &str,
    ) -> Self {
        let store = store.into();
        Self {
            store,
            server_id: server_id.to_owned(),
            token_endpoint: token_endpoint.to_owned(),
            resource: resource.to_owned(),
            holder: super::lease_holder(&format!("rmcp-{server_id}")),
        }
    }
}

fn store_error(e: impl std::fmt::Display) -> AuthError {
    AuthError::CredentialStoreError(e.to_string())
}

#[async_trait::async_trait]
impl CredentialStore for RmcpCredentials {
    async fn load(&self) -> Result<Option<StoredCredentials>, AuthError> {
        let Some(stored) = self
            .store
            .credential(&self.server_id)
            .await
            .map_err(store_error)?
        else {
            return Ok(None);
        };
        let Credential::OAuth(o) = stored.credential else {
            return Ok(None);
        };
        // rmcp presents every token as Bearer and refreshes without proofs: a
        // DPoP-bound credential is not its to use (keyway's own wire presents it).
        if o.token_type == crate::auth::token::TokenType::Dpop || o.dpop.is_some() {
            return Ok(None);
        }
        let mut response = OAuthTokenResponse::new(
            o.access_token.clone(),
            BasicTokenType::Bearer,
            VendorExtraTokenFields::default(),
        );
        response.set_refresh_token(o.refresh_token.clone());
        response.set_expires_in(
            o.expires_at
                .and_then(|e| e.duration_since(o.issued_at).ok())
                .as_ref(),
        );
        Ok(Some(
            StoredCredentials::new(
                o.client_id.clone(),
                Some(response),
                o.scopes.clone(),
                Some(unix(o.issued_at)),
            )
            .with_issuer(Some(o.issuer.clone())),
        ))
    }

    async fn save(&self, c: StoredCredentials) -> Result<(), AuthError> {
        let Some(response) = &c.token_response else {
            return Err(store_error("rmcp saved credentials without tokens"));
        };
        let issued_at = from_unix(
            c.token_received_at
                .unwrap_or_else(|| unix(std::time::SystemTime::now())),
        );
        let previous = match self
            .store
            .credential(&self.server_id)
            .await
            .map_err(store_error)?
        {
            Some(super::StoredCredential {
                credential: Credential::OAuth(o),
                ..
            }) => Some(o),
            _ => None,
        };
        let issuer = c
            .issuer
            .clone()
            .or_else(|| previous.as_ref().map(|p| p.issuer.clone()))
            .ok_or_else(|| store_error("the credential has no issuer to bind it to"))?;
        let credential = OAuthCredential {
            access_token: AccessToken::new(response.access_token().secret().clone()),
            refresh_token: response
                .refresh_token()
                .map(|r| RefreshToken::new(r.secret().clone()))
                .or_else(|| previous.as_ref().and_then(|p| p.refresh_token.clone())),
            expires_at: response.expires_in().map(|d: Duration| issued_at + d),
            issued_at,
            scopes: c.granted_scopes.clone(),
            issuer,
            token_endpoint: self.token_endpoint.clone(),
            client_id: c.client_id.clone(),
            resource: self.resource.clone(),
            as_metadata: previous.as_ref().and_then(|p| p.as_metadata.clone()),
            // rmcp's flow sends no DPoP proofs: its tokens are Bearer.
            token_type: crate::auth::token::TokenType::Bearer,
            dpop: None,
            // The provider's quirks stay with the server, whoever refreshed.
            quirks: previous.map(|p| p.quirks.clone()).unwrap_or_default(),
        };
        self.store
            .save_credential(
                &self.server_id,
                &Credential::OAuth(Box::new(credential)),
                None,
            )
            .await
            .map(|_| ())
            .map_err(store_error)
    }

    async fn clear(&self) -> Result<(), AuthError> {
        self.store
            .forget_credential(&self.server_id)
            .await
            .map_err(store_error)
    }

    /// The stored credential is left as it is (seed: `invalid_grant` means "needs
    /// authorization", not "forget").
    async fn on_refresh_token_rejected(&self, _c: &StoredCredentials) -> Result<(), AuthError> {
        Ok(())
    }

    async fn acquire_refresh_guard(&self) -> Result<Option<CredentialRefreshGuard>, AuthError> {
        let key = format!("refresh:{}", self.server_id);
        let started = tokio::time::Instant::now();
        while !self
            .store
            .try_lease(&key, &self.holder, Duration::from_secs(35))
            .await
            .map_err(store_error)?
        {
            if started.elapsed() > Duration::from_secs(40) {
                return Err(store_error(
                    "another process held the refresh lease too long",
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Some(CredentialRefreshGuard::new(LeaseGuard {
            store: self.store.clone(),
            key,
            holder: self.holder.clone(),
        })))
    }
}

/// Releases the lease when dropped.
struct LeaseGuard {
    store: AnyStore,
    key: String,
    holder: String,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let (store, key, holder) = (self.store.clone(), self.key.clone(), self.holder.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = store.release_lease(&key, &holder).await;
            });
        }
    }
}

/// rmcp's `StateStore` over the pending flows table.
#[derive(Debug, Clone)]
pub struct RmcpStates {
    store: AnyStore,
    issuer: String,
}

impl RmcpStates {
    /// The adapter for flows against the authorization server `issuer`.
    pub fn new(store: impl Into<AnyStore>, issuer: &str) -> Self {
        let store = store.into();
        Self {
            store,
            issuer: issuer.to_owned(),
        }
    }
}

#[async_trait::async_trait]
impl StateStore for RmcpStates {
    async fn save(
        &self,
        csrf_token: &str,
        state: StoredAuthorizationState,
    ) -> Result<(), AuthError> {
        let data = zeroize::Zeroizing::new(serde_json::to_vec(&state).map_err(store_error)?);
        self.store
            .save_pending_flow(csrf_token, None, &self.issuer, &data)
            .await
            .map_err(store_error)
    }

    async fn load(&self, csrf_token: &str) -> Result<Option<StoredAuthorizationState>, AuthError> {
        match self
            .store
            .load_pending_flow(csrf_token)
            .await
            .map_err(store_error)?
        {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(store_error),
            None => Ok(None),
        }
    }

    async fn delete(&self, csrf_token: &str) -> Result<(), AuthError> {
        self.store
            .delete_pending_flow(csrf_token)
            .await
            .map_err(store_error)
    }
}

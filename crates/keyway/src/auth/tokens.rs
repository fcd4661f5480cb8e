//! Tokens as keyway holds them: bound to the resource, issuer and client that
//! produced them, refreshed shortly before they expire, and only ever handed to a
//! request for their own resource.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures::future::BoxFuture;
use oauth2::{AccessToken, RefreshToken};
use rmcp::transport::auth::AuthError as RmcpAuthError;
use url::Url;

use super::{
    client::OAuthClient,
    dpop::DpopKey,
    profile::Quirks,
    token::{self, TokenError, TokenResponse, TokenType},
    urls,
};
use crate::mcp::{Presented, TokenSource};

/// Refresh when less than this remains (seed: "less than 60 s").
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// When a token issued at `issued_at` and expiring at `expires_at` falls due for a
/// refresh: 60 s before it expires, or half-way for tokens that live under two minutes
/// (else a 30 s token would be refreshed on every request). `None`: it never expires.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use keyway::auth::refresh_due;
///
/// let issued = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let hour = issued + Duration::from_secs(3600);
/// assert_eq!(refresh_due(Some(hour), issued), Some(hour - Duration::from_secs(60)));
/// let short = issued + Duration::from_secs(30);
/// assert_eq!(refresh_due(Some(short), issued), Some(issued + Duration::from_secs(15)));
/// assert_eq!(refresh_due(None, issued), None);
/// ```
pub fn refresh_due(expires_at: Option<SystemTime>, issued_at: SystemTime) -> Option<SystemTime> {
    let at = expires_at?;
    let life = at.duration_since(issued_at).unwrap_or_default();
    Some(at.checked_sub(REFRESH_MARGIN.min(life / 2)).unwrap_or(at))
}

/// An access grant for one resource.
#[derive(Clone)]
pub struct Grant {
    /// The access token, sent as `Authorization: Bearer` to
    /// [`resource`](Self::resource) only.
    pub access_token: AccessToken,
    /// The refresh token, if the server issued one.
    pub refresh_token: Option<RefreshToken>,
    /// When the access token expires; `None` when the server did not say.
    pub expires_at: Option<SystemTime>,
    /// When the access token was obtained.
    pub issued_at: SystemTime,
    /// The scopes keyway asked for (the base of a step-up union).
    pub requested_scopes: Vec<String>,
    /// The scopes the server says it granted, when it says.
    pub granted_scopes: Option<Vec<String>>,
    /// Binding: the resource indicator (RFC 8707) the grant was issued for.
    pub resource: String,
    /// Binding: the issuer of the authorization server that issued it.
    pub issuer: String,
    /// Binding: the token endpoint refreshes go to (checked again before each).
    pub token_endpoint: String,
    /// Binding: the client it was issued to, which refreshes it.
    pub client: OAuthClient,
    /// The authorization server metadata the grant was obtained under.
    pub as_metadata: Option<super::metadata::AuthServerMetadata>,
    /// How the access token is presented: a [`TokenType::Dpop`] token goes only with
    /// a proof of [`dpop`](Self::dpop), never as Bearer.
    pub token_type: TokenType,
    /// The DPoP key the tokens were requested with (RFC 9449): every refresh proves
    /// it, and a DPoP-bound access token is presented with it.
    pub dpop: Option<Arc<DpopKey>>,
    /// What the provider needs done differently, on refresh too (no `resource`, more
    /// parameters, the scopes again).
    pub quirks: Quirks,
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("access_token", &self.access_token)
            .field("refresh_token", &self.refresh_token)
            .field("expires_at", &self.expires_at)
            .field("requested_scopes", &self.requested_scopes)
            .field("resource", &self.resource)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client.client_id)
            .field("token_type", &self.token_type)
            .field("dpop", &self.dpop)
            .finish_non_exhaustive()
    }
}

impl Grant {
    /// The grant a token response gives: for `target`'s resource from its issuer,
    /// refreshed at `token_endpoint` by `client` (with `dpop`'s proofs, when bound).
    pub(crate) fn from_response(
        r: TokenResponse,
        requested: Vec<String>,
        target: &super::discovery::AuthTarget,
        token_endpoint: String,
        client: OAuthClient,
        now: SystemTime,
        dpop: Option<Arc<DpopKey>>,
    ) -> Self {
        Self {
            token_type: r.token_type,
            dpop,
            quirks: Quirks::default(),
            access_token: r.access_token,
            refresh_token: r.refresh_token,
            expires_at: r.expires_in.map(|d| now + d),
            issued_at: now,
            requested_scopes: requested,
            granted_scopes: r.scope,
            resource: target.resource.clone(),
            issuer: target.issuer.clone(),
            token_endpoint,
            client,
            as_metadata: None,
        }
    }

    /// Whether the access token should be refreshed at `now`: less than 60 s left, or
    /// less than half its life for tokens that live under two minutes (else a 30 s
    /// token would be refreshed on every request).
    pub fn needs_refresh(&self, now: SystemTime) -> bool {
        refresh_due(self.expires_at, self.issued_at).is_some_and(|due| due <= now)
    }

    /// Whether the access token has expired at `now` (never, without an expiry).
    pub fn expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The access token as a request presents it: with its DPoP key when bound.
    /// `None` for a DPoP-bound token without its key: it is never sent as Bearer.
    pub fn presented(&self) -> Option<Presented> {
        let dpop = match self.token_type {
            TokenType::Dpop => Some(self.dpop.clone()?),
            TokenType::Bearer => None,
        };
        Some(Presented {
            token: self.access_token.clone(),
            dpop,
        })
    }

    /// Whether this grant may be sent to `uri` (invariant 1): the test of
    /// [`urls::resource_matches`] against [`resource`](Self::resource).
    pub fn is_for(&self, uri: &str) -> bool {
        Url::parse(uri).is_ok_and(|u| urls::resource_matches(&self.resource, &u))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::client::{ClientAuth, RegistrationKind};

    fn grant(life: u64) -> Grant {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        Grant {
            access_token: AccessToken::new("a".into()),
            refresh_token: None,
            expires_at: Some(now + Duration::from_secs(life)),
            issued_at: now,
            requested_scopes: vec![],
            granted_scopes: None,
            resource: "https://r.example/mcp".into(),
            issuer: "https://as".into(),
            token_endpoint: "https://as/token".into(),
            client: OAuthClient {
                client_id: "c".into(),
                auth: ClientAuth::None,
                kind: RegistrationKind::Dynamic,
                issuer: "https://as".into(),
                redirect_uris: vec![],
            },
            as_metadata: None,
            token_type: TokenType::Bearer,
            dpop: None,
            quirks: Quirks::default(),
        }
    }

    #[test]
    fn refresh_timing() {
        let g = grant(3600);
        let t0 = g.issued_at;
        assert!(!g.needs_refresh(t0 + Duration::from_secs(3539)));
        assert!(g.needs_refresh(t0 + Duration::from_secs(3541)));
        let short = grant(30);
        assert!(!short.needs_refresh(t0 + Duration::from_secs(14)));
        assert!(short.needs_refresh(t0 + Duration::from_secs(16)));
        let mut forever = grant(1);
        forever.expires_at = None;
        assert!(!forever.needs_refresh(t0 + Duration::from_secs(1 << 30)));
    }

    #[test]
    fn a_grant_goes_only_to_its_resource() {
        let g = grant(60);
        assert!(g.is_for("https://r.example/mcp"));
        assert!(!g.is_for("https://r.example/other"));
        assert!(!g.is_for("https://evil.example/mcp"));
        assert!(!format!("{g:?}").contains("\"a\""));
    }
}

/// Why a refresh failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    /// The grant has no refresh token (or there is no grant). Authorize again.
    #[error("there is no refresh token; authorize again")]
    NoRefreshToken,
    /// `invalid_grant`: the refresh token is dead. Authorize again.
    #[error("the authorization server rejected the refresh token; authorize again")]
    Rejected(#[source] TokenError),
    /// Any other failure of the token request (no answer, another OAuth error, an
    /// unusable answer): the refresh token may still be good.
    #[error(transparent)]
    Failed(TokenError),
    /// The token endpoint the grant names is refused by the URL rules (nothing was
    /// sent to it). Authorize again.
    #[error(
        "refusing to send the refresh token to the stored token endpoint: {0}; authorize again"
    )]
    Refused(#[source] urls::UrlRefusal),
}

/// The URL rules for the requests a grant for `resource` makes: the server is the
/// resource (resolved), and plain http is allowed only where the resource itself is
/// plain http on a host that is not loopback (it was added with `--allow-http`).
pub(crate) async fn policy_for_resource(resource: &str) -> Result<urls::UrlPolicy, RefreshError> {
    let url = Url::parse(resource).map_err(|_| {
        RefreshError::Refused(urls::UrlRefusal::NotAUrl {
            url: resource.to_owned(),
        })
    })?;
    let allow_http = url.scheme() == "http" && urls::host_class(&url) != urls::HostClass::Loopback;
    Ok(urls::UrlPolicy::for_server_resolved(&url, allow_http).await)
}

/// Refresh `grant` (RFC 6749 §6, with `resource`). The old refresh token is kept
/// when none comes back; the expiry is recomputed; the scope kept if omitted. The
/// token endpoint is checked again by the URL rules of the grant's resource before
/// the refresh token goes anywhere, and the request goes through the guarded client.
pub async fn refresh(grant: &Grant, now: SystemTime) -> Result<Grant, RefreshError> {
    let Some(rt) = &grant.refresh_token else {
        return Err(RefreshError::NoRefreshToken);
    };
    let policy = policy_for_resource(&grant.resource).await?;
    policy
        .check(&grant.token_endpoint)
        .map_err(RefreshError::Refused)?;
    let http = crate::http::guarded(&policy)
        .map_err(|e| RefreshError::Failed(TokenError::Transport(e.to_string())))?;
    let http = &http;
    let mut form = vec![
        ("grant_type", "refresh_token".to_owned()),
        ("refresh_token", rt.secret().clone()),
        ("resource", grant.resource.clone()),
    ];
    if grant.quirks.scope_on_refresh {
        let scopes = grant
            .granted_scopes
            .as_ref()
            .unwrap_or(&grant.requested_scopes);
        if !scopes.is_empty() {
            form.push(("scope", scopes.join(" ")));
        }
    }
    let r = token::request(
        http,
        &grant.token_endpoint,
        &grant.issuer,
        &grant.client,
        form,
        now,
        token::Extras {
            dpop: grant.dpop.as_deref(),
            quirks: Some(&grant.quirks),
        },
    )
    .await
    .map_err(|e| match e {
        TokenError::Refused { refusal, .. } => RefreshError::Refused(refusal),
        // GitHub says bad_refresh_token for what everyone else calls invalid_grant.
        e if matches!(e.code(), Some("invalid_grant" | "bad_refresh_token")) => {
            RefreshError::Rejected(e)
        }
        e => RefreshError::Failed(e),
    })?;
    Ok(Grant {
        access_token: r.access_token,
        refresh_token: r.refresh_token.or_else(|| grant.refresh_token.clone()),
        expires_at: r.expires_in.map(|d| now + d),
        issued_at: now,
        requested_scopes: grant.requested_scopes.clone(),
        granted_scopes: r.scope.or_else(|| grant.granted_scopes.clone()),
        resource: grant.resource.clone(),
        issuer: grant.issuer.clone(),
        token_endpoint: grant.token_endpoint.clone(),
        client: grant.client.clone(),
        as_metadata: grant.as_metadata.clone(),
        token_type: r.token_type,
        dpop: grant.dpop.clone(),
        quirks: grant.quirks.clone(),
    })
}

/// A [`TokenSource`] over a grant held in memory: refreshed once (the lock makes
/// concurrent requests wait for the one refresh), never sent to another resource.
#[derive(Debug)]
pub struct OAuthTokens {
    grant: tokio::sync::Mutex<Option<Grant>>,
    refreshes: std::sync::atomic::AtomicU64,
}

impl OAuthTokens {
    /// A source holding no grant yet: it sends no token until [`set`](Self::set).
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            grant: tokio::sync::Mutex::new(None),
            refreshes: Default::default(),
        })
    }

    /// Hold `grant`, replacing any other.
    pub async fn set(&self, grant: Grant) {
        *self.grant.lock().await = Some(grant);
    }

    /// A copy of the grant held now (as refreshed), if any.
    pub async fn current(&self) -> Option<Grant> {
        self.grant.lock().await.clone()
    }

    /// Drop the grant: no token is sent until the next [`set`](Self::set).
    pub async fn clear(&self) {
        *self.grant.lock().await = None;
    }

    /// How many refreshes this source made.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Refresh now, whatever the expiry (after a 401 with a token that looked valid).
    pub async fn force_refresh(&self) -> Result<(), RefreshError> {
        let mut slot = self.grant.lock().await;
        let Some(g) = slot.as_ref() else {
            return Err(RefreshError::NoRefreshToken);
        };
        let fresh = refresh(g, SystemTime::now()).await?;
        self.refreshes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *slot = Some(fresh);
        Ok(())
    }
}

impl TokenSource for OAuthTokens {
    fn token<'a>(
        &'a self,
        uri: &'a str,
    ) -> BoxFuture<'a, Result<Option<Presented>, RmcpAuthError>> {
        Box::pin(async move {
            let mut slot = self.grant.lock().await;
            let Some(g) = slot.as_ref() else {
                return Ok(None);
            };
            if !g.is_for(uri) {
                tracing::warn!(uri, resource = %g.resource, "not sending a token issued for another resource");
                return Ok(None);
            }
            let now = SystemTime::now();
            if !g.needs_refresh(now) || g.refresh_token.is_none() {
                return Ok(g.presented());
            }
            match refresh(g, now).await {
                Ok(fresh) => {
                    self.refreshes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let token = fresh.presented();
                    *slot = Some(fresh);
                    Ok(token)
                }
                // Still valid for a moment: use it; the next request tries again.
                Err(RefreshError::Failed(e)) if !g.expired(now) => {
                    tracing::warn!(error = %e, "refresh failed; using the current token while it lasts");
                    Ok(g.presented())
                }
                Err(e) => {
                    tracing::info!(error = %e, "refresh failed; authorization is needed");
                    Ok(None)
                }
            }
        })
    }
}

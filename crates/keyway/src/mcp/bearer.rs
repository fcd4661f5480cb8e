//! Where a connection's access token comes from: asked for on every request, so a
//! refreshed token is picked up at once, and never kept in a struct that derives
//! `Debug`. A DPoP-bound token comes with its key, so it is never sent as Bearer.

use std::{fmt, sync::Arc};

use futures::future::BoxFuture;
use oauth2::AccessToken;
use rmcp::transport::auth::AuthError;

use crate::{Secret, auth::dpop::DpopKey};

/// The access token for one request, and how to present it.
#[derive(Clone)]
pub struct Presented {
    /// The access token.
    pub token: AccessToken,
    /// `Some`: the token is DPoP-bound to this key (RFC 9449): it goes as
    /// `Authorization: DPoP` with a fresh proof of the key, never as Bearer.
    pub dpop: Option<Arc<DpopKey>>,
}

impl Presented {
    /// A Bearer token.
    pub fn bearer(token: AccessToken) -> Self {
        Self { token, dpop: None }
    }
}

impl fmt::Debug for Presented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Presented")
            .field("token", &self.token)
            .field("dpop", &self.dpop)
            .finish()
    }
}

/// Where a connection gets the token for its next request.
pub trait TokenSource: Send + Sync + fmt::Debug + 'static {
    /// The token to send to `uri` now, or `None` to send the request without one
    /// (the server's 401 challenge then says what it takes).
    fn token<'a>(&'a self, uri: &'a str) -> BoxFuture<'a, Result<Option<Presented>, AuthError>>;
}

/// A fixed token (or none): static API tokens, and tests.
#[derive(Debug, Clone, Default)]
pub struct StaticToken(Option<AccessToken>);

impl StaticToken {
    /// Send `token` with every request (`None`: no `Authorization` header).
    pub fn new(token: Option<Secret>) -> Self {
        Self(token.map(|t| AccessToken::new(t.expose().to_owned())))
    }
}

impl TokenSource for StaticToken {
    fn token<'a>(&'a self, _uri: &'a str) -> BoxFuture<'a, Result<Option<Presented>, AuthError>> {
        Box::pin(async move { Ok(self.0.clone().map(Presented::bearer)) })
    }
}

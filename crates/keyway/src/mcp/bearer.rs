//! Where a connection's bearer token comes from: asked for on every request, so a
//! refreshed token is picked up at once, and never kept in a struct that derives
//! `Debug`.

use std::fmt;

use futures::future::BoxFuture;
use oauth2::AccessToken;
use rmcp::transport::auth::AuthError;

use crate::Secret;

/// Where a connection gets the token for its next request.
pub trait TokenSource: Send + Sync + fmt::Debug + 'static {
    /// The token to send to `uri` now, or `None` to send the request without one
    /// (the server's 401 challenge then says what it takes).
    fn bearer<'a>(&'a self, uri: &'a str) -> BoxFuture<'a, Result<Option<AccessToken>, AuthError>>;
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
    fn bearer<'a>(
        &'a self,
        _uri: &'a str,
    ) -> BoxFuture<'a, Result<Option<AccessToken>, AuthError>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

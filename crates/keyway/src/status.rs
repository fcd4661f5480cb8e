//! The state of a stored server and the action it offers, from what is stored. One
//! pure function serves `add` and `list`, so a token-only server never offers
//! "authorize" (a defect the reference application shipped).

use std::time::SystemTime;

use serde::Serialize;

use crate::store::{AuthKind, Credential, LastStatus};

/// Where a stored server stands, as `keyway list` and `keyway add` show it. Serialized
/// in kebab-case, the same text as [`State::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Reachable without (further) credentials.
    Ready,
    /// OAuth tokens that work (or refresh).
    Authorized,
    /// A static token is stored.
    Token,
    /// OAuth authorization is needed: no tokens, expired tokens that cannot be
    /// refreshed, or the server answered 401.
    NeedsAuth,
    /// The server takes a static token and none is stored.
    NeedsToken,
    /// The server answered 401 to the stored static token.
    TokenRejected,
    /// The last connection failed for another reason (the record's `last_error` says
    /// why).
    Error,
    /// The server was disabled (`keyway disable`); keyway does not connect to it until
    /// it is enabled again.
    Disabled,
}

/// The one thing to offer for a server in a [`State`]. Serialized in kebab-case, the
/// same text as [`Action::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Nothing to do.
    None,
    /// Run the OAuth flow.
    Authorize,
    /// Store a (new) static token.
    SetToken,
    /// Enable the disabled server.
    Enable,
}

impl State {
    /// The kebab-case name shown to people and in JSON output (`needs-auth`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Authorized => "authorized",
            Self::Token => "token",
            Self::NeedsAuth => "needs-auth",
            Self::NeedsToken => "needs-token",
            Self::TokenRejected => "token-rejected",
            Self::Error => "error",
            Self::Disabled => "disabled",
        }
    }
}

impl Action {
    /// The kebab-case name shown to people and in JSON output (`set-token`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Authorize => "authorize",
            Self::SetToken => "set-token",
            Self::Enable => "enable",
        }
    }
}

/// What the stored credential says, without its secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialView {
    /// No credential is stored.
    None,
    /// A static token is stored.
    Bearer,
    /// No token, but secret headers (an API key) are: what a server saved for a
    /// token authenticates with when its operator gave a header instead.
    Headers,
    /// OAuth tokens are stored.
    OAuth {
        /// The access token's expiry time has passed.
        expired: bool,
        /// A refresh token is stored with it.
        refreshable: bool,
    },
}

impl CredentialView {
    /// The view of `c`, judging expiry at `now`.
    pub fn of(c: Option<&Credential>, now: SystemTime) -> Self {
        match c {
            None => Self::None,
            Some(Credential::Bearer { .. }) => Self::Bearer,
            Some(Credential::OAuth(o)) => Self::OAuth {
                expired: o.expires_at.is_some_and(|e| e <= now),
                refreshable: o.refresh_token.is_some(),
            },
        }
    }

    /// The view of a server that has no credential but has secret headers.
    pub fn with_headers(self, has_headers: bool) -> Self {
        match self {
            Self::None if has_headers => Self::Headers,
            other => other,
        }
    }
}

/// The state of a server and the one action to offer, from what it takes to get in
/// (`auth`), its stored credential, the last status a connection recorded and whether
/// it is enabled. A server with a static token stored is never offered authorization.
pub fn state_and_action(
    auth: AuthKind,
    cred: CredentialView,
    last: Option<LastStatus>,
    enabled: bool,
) -> (State, Action) {
    if !enabled {
        return (State::Disabled, Action::Enable);
    }
    match (auth, cred, last) {
        // A static token, whatever the server also offers: never "authorize" for it.
        (_, CredentialView::Bearer, Some(LastStatus::TokenRejected | LastStatus::NeedsAuth)) => {
            (State::TokenRejected, Action::SetToken)
        }
        (_, CredentialView::Bearer, Some(LastStatus::Error)) => (State::Error, Action::None),
        (_, CredentialView::Bearer, _) => (State::Token, Action::None),
        // Headers only: nothing keyway can renew; a refusal is the error it is.
        (AuthKind::Token, CredentialView::Headers, Some(LastStatus::Connected) | None) => {
            (State::Ready, Action::None)
        }
        (AuthKind::Token, CredentialView::Headers, _) => (State::Error, Action::None),
        (AuthKind::Token, _, Some(LastStatus::Error)) => (State::Error, Action::None),
        (AuthKind::Token, _, _) => (State::NeedsToken, Action::SetToken),
        (AuthKind::Oauth, CredentialView::None | CredentialView::Headers, _) => {
            (State::NeedsAuth, Action::Authorize)
        }
        (
            AuthKind::Oauth,
            CredentialView::OAuth {
                expired: true,
                refreshable: false,
            },
            _,
        ) => (State::NeedsAuth, Action::Authorize),
        (AuthKind::Oauth, _, Some(LastStatus::NeedsAuth | LastStatus::TokenRejected)) => {
            (State::NeedsAuth, Action::Authorize)
        }
        (AuthKind::Oauth, _, Some(LastStatus::Error)) => (State::Error, Action::None),
        // Healthy: nothing to do (re-authorizing is always there, not an action to offer).
        (AuthKind::Oauth, _, _) => (State::Authorized, Action::None),
        (AuthKind::None, _, Some(LastStatus::Error)) => (State::Error, Action::None),
        // An open server that started answering 401: it needs authorization now.
        (AuthKind::None, _, Some(LastStatus::NeedsAuth)) => (State::NeedsAuth, Action::Authorize),
        (AuthKind::None, CredentialView::OAuth { .. }, _) => (State::Authorized, Action::None),
        (AuthKind::None, _, _) => (State::Ready, Action::None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CredentialView as C;

    #[test]
    fn a_token_only_server_never_offers_authorize() {
        for cred in [
            C::None,
            C::Bearer,
            C::OAuth {
                expired: true,
                refreshable: false,
            },
        ] {
            for last in [
                None,
                Some(LastStatus::Connected),
                Some(LastStatus::NeedsAuth),
                Some(LastStatus::TokenRejected),
                Some(LastStatus::Error),
            ] {
                let (_, action) = state_and_action(AuthKind::Token, cred, last, true);
                assert_ne!(action, Action::Authorize, "{cred:?} {last:?}");
            }
        }
    }

    #[test]
    fn oauth_states() {
        let ok = C::OAuth {
            expired: false,
            refreshable: true,
        };
        assert_eq!(
            state_and_action(AuthKind::Oauth, C::None, None, true),
            (State::NeedsAuth, Action::Authorize)
        );
        assert_eq!(
            state_and_action(AuthKind::Oauth, ok, None, true),
            (State::Authorized, Action::None)
        );
        assert_eq!(
            state_and_action(
                AuthKind::Oauth,
                C::OAuth {
                    expired: true,
                    refreshable: true
                },
                None,
                true
            ),
            (State::Authorized, Action::None),
            "an expired token with a refresh token is still authorized"
        );
        assert_eq!(
            state_and_action(
                AuthKind::Oauth,
                C::OAuth {
                    expired: true,
                    refreshable: false
                },
                None,
                true
            ),
            (State::NeedsAuth, Action::Authorize)
        );
        assert_eq!(
            state_and_action(AuthKind::Oauth, ok, Some(LastStatus::NeedsAuth), true),
            (State::NeedsAuth, Action::Authorize)
        );
        assert_eq!(
            state_and_action(AuthKind::Oauth, ok, Some(LastStatus::Error), true),
            (State::Error, Action::None)
        );
        assert_eq!(
            state_and_action(AuthKind::Oauth, ok, None, false),
            (State::Disabled, Action::Enable)
        );
    }

    #[test]
    fn bearer_and_open_states() {
        assert_eq!(
            state_and_action(AuthKind::Token, C::Bearer, None, true),
            (State::Token, Action::None)
        );
        assert_eq!(
            state_and_action(
                AuthKind::Token,
                C::Bearer,
                Some(LastStatus::TokenRejected),
                true
            ),
            (State::TokenRejected, Action::SetToken)
        );
        assert_eq!(
            state_and_action(AuthKind::Token, C::None, None, true),
            (State::NeedsToken, Action::SetToken)
        );
        assert_eq!(
            state_and_action(AuthKind::None, C::None, None, true),
            (State::Ready, Action::None)
        );
        assert_eq!(
            state_and_action(AuthKind::None, C::None, Some(LastStatus::Error), true),
            (State::Error, Action::None)
        );
    }
}

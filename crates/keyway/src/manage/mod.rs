//! Saved servers as a person manages them: the card each one shows (`keyway list`,
//! the settings page), adding one (probe, save, authorize, roll back on failure),
//! authorizing, replacing a static token, revoking and removing. `keyway` commands
//! and `keyway ui` both call these, so the two never disagree about a server.
//!
//! Nothing here prints: waits are announced through [`Progress`], a flow's steps
//! through [`crate::auth::Reporter`].

mod add;

use std::time::SystemTime;

use serde::Serialize;

pub use add::new_id;
pub use add::{AddError, AddRequest, Added, AuthorizeError, VerifyError, add, authorize, verify};

use crate::{
    Secret,
    auth::{RegistrationKind, RegistrationStore, token},
    mcp::TransportChoice,
    probe::{Probe, ProbeClass, ProbeOptions},
    status::{Action, CredentialView, State, state_and_action},
    store::{
        AnyStore, AuthKind, Credential, LastStatus, ServerRecord, Store, StoreError,
        StoredCredential, Transport,
    },
};

/// Something that shows a wait to a person (the CLI's spinner). [`Progress::waiting`]
/// returns a guard; the wait is over when it is dropped.
pub trait Progress: Send + Sync {
    /// A wait for `what` ("listing github's tools") begins.
    fn waiting(&self, _what: String) -> Box<dyn Send> {
        Box::new(())
    }
}

/// A [`Progress`] that shows nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;
impl Progress for Quiet {}

/// One saved server as `keyway list` prints it and the settings page shows it. The
/// field names are a contract (`keyway list --json`).
#[derive(Clone, Debug, Serialize)]
pub struct Card {
    /// The name people use for it.
    pub name: String,
    /// Its id.
    pub id: String,
    /// The MCP endpoint.
    pub url: String,
    /// `http` (Streamable HTTP) or `sse` (legacy).
    pub transport: String,
    /// Whether keyway connects to it.
    pub enabled: bool,
    /// What it authenticates with ([`shown_auth`]).
    pub auth: String,
    /// Where it stands.
    pub state: State,
    /// The one thing to offer for it.
    pub action: Action,
    /// Unix seconds when the access token expires, if known.
    pub expires_at: Option<u64>,
    /// What the last connection failed with.
    pub last_error: Option<String>,
    /// The MCP revision the server spoke when keyway last connected; `None` before.
    pub protocol: Option<String>,
    /// How many tools it listed at the last connection that listed them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<u32>,
    /// Why the stored credential (or headers) cannot be used: the row was changed
    /// outside keyway, or damaged. The other servers are unaffected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

/// The card of `rec`, and its credential when it can be read. A credential that does
/// not open is this server's problem ([`Card::unreadable`]), not an error.
pub async fn card(
    st: &AnyStore,
    rec: &ServerRecord,
) -> Result<(Card, Option<Credential>), StoreError> {
    let per_row = |e: &StoreError| {
        matches!(
            e,
            StoreError::Unreadable { .. } | StoreError::Decode(_) | StoreError::Sqlite(_)
        )
    };
    let (cred, unreadable) = match st.credential(&rec.id).await {
        Ok(c) => (c.map(|c| c.credential), None),
        Err(e) if per_row(&e) => (None, Some(e.to_string())),
        Err(e) => return Err(e),
    };
    let unreadable = match (unreadable, st.headers(&rec.id).await) {
        (None, Err(e)) if per_row(&e) => Some(e.to_string()),
        (u, _) => u,
    };
    let view = CredentialView::of(cred.as_ref(), SystemTime::now())
        .with_headers(!rec.header_names.is_empty());
    let (state, action) = match &unreadable {
        None => state_and_action(rec.auth, view, rec.last_status, rec.enabled),
        Some(_) if !rec.enabled => state_and_action(rec.auth, view, rec.last_status, false),
        Some(_) => (
            State::Error,
            match rec.auth {
                AuthKind::Oauth => Action::Authorize,
                AuthKind::Token => Action::SetToken,
                AuthKind::None => Action::None,
            },
        ),
    };
    let expires_at = match &cred {
        Some(Credential::OAuth(o)) => o.expires_at.map(crate::store::unix),
        _ => None,
    };
    Ok((
        Card {
            name: rec.name.clone(),
            id: rec.id.clone(),
            url: rec.url.clone(),
            transport: rec.transport.as_str().to_owned(),
            enabled: rec.enabled,
            auth: shown_auth(rec, cred.as_ref()).to_owned(),
            state,
            action,
            expires_at,
            last_error: rec.last_error.clone(),
            protocol: rec.protocol.clone(),
            tools: rec.tools,
            unreadable,
        },
        cred,
    ))
}

/// The cards of every saved server, in the store's order.
pub async fn cards(st: &AnyStore) -> Result<Vec<Card>, StoreError> {
    let mut out = Vec::new();
    for rec in st.servers().await? {
        out.push(card(st, &rec).await?.0);
    }
    Ok(out)
}

/// What a server authenticates with, as far as what is stored tells: the credential
/// it holds, else the kind it was saved as (`headers` for a server whose only secrets
/// are its headers, e.g. an API key).
pub fn shown_auth(rec: &ServerRecord, cred: Option<&Credential>) -> &'static str {
    match cred {
        Some(Credential::OAuth(_)) => "oauth",
        Some(Credential::Bearer { .. }) => "token",
        None if rec.auth == AuthKind::Token && !rec.header_names.is_empty() => "headers",
        None => rec.auth.as_str(),
    }
}

/// The transport to save: the one asked for, else the one the probe found, else
/// (nothing answered) the one the URL's path suggests (`/sse` is legacy SSE).
pub fn saved_transport(asked: Option<Transport>, probe: &Probe) -> Transport {
    if let Some(t) = asked {
        return t;
    }
    match (probe.class, probe.transport) {
        (ProbeClass::Unreachable, _) => {
            let sse_path = url::Url::parse(&probe.url)
                .is_ok_and(|u| u.path().trim_end_matches('/').ends_with("/sse"));
            if sse_path {
                Transport::Sse
            } else {
                Transport::Http
            }
        }
        (_, "sse") => Transport::Sse,
        _ => Transport::Http,
    }
}

/// How to connect to a server saved with transport `t`.
pub fn transport_choice(t: Transport) -> TransportChoice {
    match t {
        Transport::Http => TransportChoice::StreamableHttp,
        Transport::Sse => TransportChoice::LegacySse,
    }
}

/// Saved `(name, value)` headers as they are sent: names were checked when saved, so
/// one that no longer parses (a store written by hand) is skipped.
pub fn header_names(
    saved: impl IntoIterator<Item = (String, Secret)>,
) -> Vec<(http::HeaderName, Secret)> {
    saved
        .into_iter()
        .filter_map(|(k, v)| {
            http::HeaderName::from_bytes(k.as_bytes())
                .ok()
                .map(|k| (k, v))
        })
        .collect()
}

/// A saved server's headers as they are sent ([`header_names`]).
pub async fn saved_headers(
    st: &AnyStore,
    rec: &ServerRecord,
) -> Result<Vec<(http::HeaderName, Secret)>, StoreError> {
    Ok(header_names(st.headers(&rec.id).await?))
}

/// A probe's finding and its next step on one line, as a saved server's last error.
pub fn probe_line(p: &Probe) -> String {
    match &p.detail {
        Some(d) => format!("{}: {d} (next: {})", p.class.as_str(), p.next_step),
        None => format!("{} (next: {})", p.class.as_str(), p.next_step),
    }
}

/// What became of a credential's tokens at their authorization server.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Revocation {
    /// A static token: keyway cannot revoke it (revoke it where it was issued).
    StaticToken,
    /// The stored credential could not be opened, so nothing could be sent.
    Unreadable,
    /// The authorization server names no revocation endpoint (RFC 7009).
    NoEndpoint,
    /// Revoked at this issuer.
    Revoked {
        /// The authorization server.
        issuer: String,
    },
    /// The revocation request failed (the credential is forgotten anyway).
    Failed {
        /// Why, in words.
        reason: String,
    },
}

impl std::fmt::Display for Revocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::StaticToken => f.write_str("not revoked (static token)"),
            Self::Unreadable => {
                f.write_str("not revoked: the stored credential could not be opened")
            }
            Self::NoEndpoint => {
                f.write_str("not revoked: the authorization server has no revocation endpoint")
            }
            Self::Revoked { issuer } => write!(f, "revoked at {issuer}"),
            Self::Failed { reason } => write!(f, "revocation failed ({reason}); forgotten anyway"),
        }
    }
}

/// Revoke a stored credential at its authorization server, when it can be (RFC 7009:
/// the refresh token, which takes the access tokens with it, else the access token).
pub async fn revoke(st: &AnyStore, credential: &Credential) -> Revocation {
    let Credential::OAuth(o) = credential else {
        return Revocation::StaticToken;
    };
    let Some(endpoint) = o
        .as_metadata
        .as_ref()
        .and_then(|m| m.revocation_endpoint.clone())
    else {
        return Revocation::NoEndpoint;
    };
    // A registration that cannot be read: revoke as a public client.
    let registration = RegistrationStore::load(st, &o.issuer).await.ok().flatten();
    let client = crate::store::tokens::client_of(o, registration);
    let (token, hint) = match &o.refresh_token {
        Some(rt) => (Secret::new(rt.secret().clone()), "refresh_token"),
        None => (Secret::new(o.access_token.secret().clone()), "access_token"),
    };
    // The endpoint came from the server's metadata: it obeys the same URL rules as
    // every other request of a flow, checked in `revoke`.
    match token::revoke(&o.resource, &endpoint, &o.issuer, &client, &token, hint).await {
        Ok(()) => Revocation::Revoked {
            issuer: o.issuer.clone(),
        },
        Err(e) => Revocation::Failed {
            reason: e.to_string(),
        },
    }
}

/// What happened to a removed server's dynamic registration (RFC 7592).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deregistration {
    /// Deleted at this issuer, and forgotten.
    Deleted {
        /// The authorization server.
        issuer: String,
    },
    /// Kept: another saved server uses the same client.
    Shared,
    /// The server gave no management endpoint: forgotten here only.
    Unmanaged,
    /// The delete failed (forgotten here anyway).
    Failed {
        /// Why, in words.
        reason: String,
    },
}

impl std::fmt::Display for Deregistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Deleted { issuer } => write!(f, "its registration deleted at {issuer}"),
            Self::Shared => f.write_str("its registration kept for the other servers using it"),
            Self::Unmanaged => {
                f.write_str("its registration forgotten (the server offers no way to delete it)")
            }
            Self::Failed { reason } => {
                write!(
                    f,
                    "deleting its registration failed ({reason}); forgotten anyway"
                )
            }
        }
    }
}

/// What [`remove`] did besides removing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Removal {
    /// The revocation of its tokens (`None`: it held no credential).
    pub revocation: Option<Revocation>,
    /// What became of its dynamic registration (`None`: it had none).
    pub registration: Option<Deregistration>,
}

impl std::fmt::Display for Removal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.revocation {
            Some(r) => write!(f, "{r}")?,
            None => f.write_str("it had no credential")?,
        }
        if let Some(d) = &self.registration {
            write!(f, "; {d}")?;
        }
        Ok(())
    }
}

/// Revoke what `rec` holds, if anything can be read (RFC 7009), then remove it and
/// its credential; then delete its dynamic registration where the server allows it
/// (RFC 7592) and no other saved server uses that client.
pub async fn remove(st: &AnyStore, rec: &ServerRecord) -> Result<Removal, StoreError> {
    let stored = st.credential(&rec.id).await;
    let revocation = match &stored {
        Ok(Some(stored)) => Some(revoke(st, &stored.credential).await),
        Ok(None) => None,
        Err(_) => Some(Revocation::Unreadable),
    };
    st.remove_server(&rec.id).await?;
    let registration = match stored {
        Ok(Some(StoredCredential {
            credential: Credential::OAuth(o),
            ..
        })) => deregister(st, &o).await,
        _ => None,
    };
    Ok(Removal {
        revocation,
        registration,
    })
}

/// Delete (RFC 7592) and forget the dynamic registration `o` was issued to, unless
/// another saved server's credential names the same client.
async fn deregister(st: &AnyStore, o: &crate::store::OAuthCredential) -> Option<Deregistration> {
    let registration = RegistrationStore::load(st, &o.issuer)
        .await
        .ok()
        .flatten()?;
    if registration.kind != RegistrationKind::Dynamic || registration.client_id != o.client_id {
        return None;
    }
    for other in st.servers().await.ok()? {
        if let Ok(Some(StoredCredential {
            credential: Credential::OAuth(c),
            ..
        })) = st.credential(&other.id).await
            && c.issuer == o.issuer
            && c.client_id == o.client_id
        {
            return Some(Deregistration::Shared);
        }
    }
    let outcome = match &registration.extras.management {
        None => Deregistration::Unmanaged,
        Some(m) => match crate::auth::registration::delete(&o.resource, m).await {
            Ok(()) => Deregistration::Deleted {
                issuer: o.issuer.clone(),
            },
            Err(e) => Deregistration::Failed {
                reason: e.to_string(),
            },
        },
    };
    if let Err(e) = RegistrationStore::forget(st, &o.issuer).await {
        tracing::warn!(error = %e, "could not forget the removed server's registration");
    }
    Some(outcome)
}

/// What trying a new static token found ([`set_token`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenCheck {
    /// The server accepted it and listed this many tools.
    Accepted {
        /// The tools listed.
        tools: usize,
    },
    /// It could not be tried (saved anyway, as asked); why.
    Unchecked {
        /// What stopped the try.
        why: String,
    },
}

/// Why a new static token was not saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetTokenError {
    /// The server signs in with OAuth: keyway gets its tokens itself.
    #[error("{name} signs in with OAuth: keyway gets and refreshes its tokens itself")]
    OAuthServer {
        /// The server.
        name: String,
    },
    /// The saved URL does not parse (a store written by hand).
    #[error("the saved URL {url} is not a URL: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why not.
        reason: String,
    },
    /// The token would go over plain http to a host that is not this machine.
    #[error("not sending the token: {0}")]
    Insecure(#[source] crate::auth::urls::UrlRefusal),
    /// The server refused the new token; the old one is kept.
    #[error("{name} refused the new token; the one it had is kept")]
    Rejected {
        /// The server.
        name: String,
        /// What the server said, if anything.
        detail: Option<String>,
    },
    /// The token could not be tried, and a try was asked for; nothing changed.
    #[error("the new token could not be tried on {name}: {why}; nothing was changed")]
    NotTried {
        /// The server.
        name: String,
        /// What stopped the try.
        why: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Replace `rec`'s static token with `token`, after trying it on the server (unless
/// `check` is false, when a token that cannot be tried is saved anyway). A refused
/// token is never saved.
pub async fn set_token(
    st: &AnyStore,
    http: &crate::http::WireClient,
    rec: &ServerRecord,
    token: &Secret,
    check: bool,
    progress: &dyn Progress,
) -> Result<TokenCheck, SetTokenError> {
    if rec.auth == AuthKind::Oauth {
        return Err(SetTokenError::OAuthServer {
            name: rec.name.clone(),
        });
    }
    let url = url::Url::parse(&rec.url).map_err(|e| SetTokenError::BadUrl {
        url: rec.url.clone(),
        reason: e.to_string(),
    })?;
    crate::auth::urls::may_carry_secrets(&url, false).map_err(SetTokenError::Insecure)?;
    let opts = ProbeOptions {
        token: Some(token.clone()),
        headers: saved_headers(st, rec).await?,
        transport: transport_choice(rec.transport),
        ..Default::default()
    };
    let p = {
        let _waiting = progress.waiting(format!("trying the new token on {}", rec.name));
        crate::probe::probe_within(http, url.as_str(), &opts, crate::probe::PROBE_TIMEOUT).await
    };
    let why = || {
        p.detail
            .clone()
            .unwrap_or_else(|| "the server did not answer".into())
    };
    let outcome = match p.class {
        ProbeClass::Open => TokenCheck::Accepted {
            tools: p.tools.len(),
        },
        ProbeClass::TokenRejected => {
            return Err(SetTokenError::Rejected {
                name: rec.name.clone(),
                detail: p.detail.clone(),
            });
        }
        _ if !check => TokenCheck::Unchecked {
            why: format!("not checked: {}", why()),
        },
        _ => {
            return Err(SetTokenError::NotTried {
                name: rec.name.clone(),
                why: why(),
            });
        }
    };
    st.set_token(&rec.id, token).await?;
    match &outcome {
        TokenCheck::Accepted { tools } => {
            st.set_status(&rec.id, LastStatus::Connected, None).await?;
            st.set_tools(&rec.id, u32::try_from(*tools).ok()).await?;
        }
        TokenCheck::Unchecked { why } => {
            st.set_status(&rec.id, LastStatus::Error, Some(why)).await?;
        }
    }
    Ok(outcome)
}

//! Adding a server (probe first, pick a name, save; an OAuth server is authorized at
//! once), authorizing a saved one, and checking a new credential by listing tools.
//! A failure before a flow completes rolls the new server back; a failure after it
//! never deletes the newly authorized server.

use std::sync::Arc;

use serde::Serialize;
use url::Url;

use super::{Progress, card, probe_line, saved_headers, saved_transport, transport_choice};
use crate::{
    Secret,
    auth::{AuthError, AuthOptions, Authorizer, ClientOptions, Grant, Reporter},
    client::ClientError,
    mcp::{ConnectError, Connection, RequestError, StaticToken},
    naming,
    probe::{Probe, ProbeClass, ProbeOptions},
    store::{
        AnyStore, AuthKind, Credential, LastStatus, NewServer, ServerRecord, Store, StoreError,
        Transport, tokens::StoredTokens,
    },
};

/// A server to add.
#[derive(Clone, Debug)]
pub struct AddRequest {
    /// The MCP endpoint (http or https).
    pub url: Url,
    /// Its name; `None` derives one from the URL ([`naming::default_name`]), made
    /// unique among the saved servers.
    pub name: Option<String>,
    /// Its id; `None` makes one. A retried add with the same id reports what is there.
    pub id: Option<String>,
    /// A static token to send.
    pub token: Option<Secret>,
    /// Extra headers (API keys).
    pub headers: Vec<(http::HeaderName, Secret)>,
    /// The transport; `None` takes the one the probe found.
    pub transport: Option<Transport>,
    /// How to authorize an OAuth server (its client options also go to the probe).
    pub auth: AuthOptions,
    /// Authorize an OAuth server now (`false`: save it to authorize later).
    pub authorize: bool,
    /// Save an unreachable server anyway, and replace a server saved under the name.
    pub force: bool,
}

/// What [`add`] did. The field names are a contract (`keyway add --json`).
#[derive(Clone, Debug, Serialize)]
pub struct Added {
    /// The name it was saved under.
    pub name: String,
    /// Its id.
    pub id: String,
    /// Its URL.
    pub url: String,
    /// The probe's class (`open`, `oauth`, ...), or `already added`.
    pub class: String,
    /// What it authenticates with.
    pub auth: String,
    /// Its state now.
    pub state: String,
    /// The action its state offers.
    pub action: String,
    /// How many tools it listed, when it was listed.
    pub tools: Option<usize>,
    /// The authorization server that issued its tokens.
    pub issuer: Option<String>,
    /// Anything else: why listing tools failed after authorizing, the probe's finding.
    pub note: Option<String>,
    /// What `force` replaced, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced: Option<String>,
}

/// Why a server was not added. Nothing was saved (the old server, when replacing, is
/// as it was).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddError {
    /// The name is empty or holds control characters.
    #[error("{0:?} is not a usable name: use a plain name")]
    BadName(String),
    /// Another saved server has the name.
    #[error("a server named {0} is already saved")]
    NameTaken(String),
    /// The server refused the token given.
    #[error("{url} rejected the token; nothing was saved")]
    TokenRejected {
        /// The server.
        url: String,
        /// What the probe found.
        probe: Box<Probe>,
    },
    /// The server needs an access token keyway cannot obtain, and none was given.
    #[error("this server needs an access token; nothing was saved{}", detail(.probe))]
    TokenNeeded {
        /// What the probe found.
        probe: Box<Probe>,
    },
    /// The server did not answer, or not usably.
    #[error("{url} is {}; nothing was saved{}", if .probe.class == ProbeClass::Unreachable { "unreachable" } else { "not usable" }, detail(.probe))]
    NotUsable {
        /// The server.
        url: String,
        /// What the probe found.
        probe: Box<Probe>,
    },
    /// Authorizing the new server failed: it was rolled back.
    #[error(transparent)]
    Authorize(#[from] AuthorizeError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn detail(p: &Probe) -> String {
    p.detail
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default()
}

impl AddError {
    /// The probe behind a refusal, for its next step.
    pub fn probe(&self) -> Option<&Probe> {
        match self {
            Self::TokenRejected { probe, .. }
            | Self::TokenNeeded { probe }
            | Self::NotUsable { probe, .. } => Some(probe),
            _ => None,
        }
    }
}

/// Add a server: probe it, save it as what it takes to get in, and authorize an
/// OAuth server when asked. Before the flow completes any failure takes the new row
/// (and its headers) away; after it, the server stays whatever happens, and listing
/// its tools only records how that went.
pub async fn add(
    st: &AnyStore,
    http: &crate::http::WireClient,
    req: AddRequest,
    reporter: Arc<dyn Reporter>,
    progress: &dyn Progress,
) -> Result<Added, AddError> {
    let url = req.url.clone();
    // The name first: a taken one is an error before anything else happens.
    let taken: Vec<String> = st.servers().await?.into_iter().map(|s| s.name).collect();
    let name = match &req.name {
        Some(n) => {
            if n.trim().is_empty() || n.chars().any(char::is_control) {
                return Err(AddError::BadName(n.clone()));
            }
            n.clone()
        }
        None => naming::unique(&naming::default_name(&url), &taken),
    };
    let id = req.id.clone().unwrap_or_else(new_id);
    if let Some(existing) = st.server(&id).await?
        && existing.id == id
    {
        // A retried add: report what is there.
        return Ok(report(st, &existing, "already added", None, None, None).await?);
    }
    // A taken name is an error, unless `force`: then the new server is made under a
    // name of its own and takes the old one's place once it is saved (and authorized),
    // so a failed replacement leaves the old server as it was.
    let replacing = if taken.contains(&name) {
        if !req.force {
            return Err(AddError::NameTaken(name));
        }
        st.server(&name).await?
    } else {
        None
    };
    let final_name = name.clone();
    let name = match &replacing {
        Some(_) => naming::unique(&format!("{name}.new"), &taken),
        None => name,
    };

    let probe_opts = ProbeOptions {
        token: req.token.clone(),
        headers: req.headers.clone(),
        client: ClientOptions {
            client_id: req.auth.client.client_id.clone(),
            client_metadata_url: req.auth.client.client_metadata_url.clone(),
            ..Default::default()
        },
        allow_http: req.auth.allow_http,
        transport: match req.transport {
            Some(t) => transport_choice(t),
            None => crate::mcp::TransportChoice::Auto,
        },
    };
    let probe = {
        let _waiting = progress.waiting(format!(
            "probing {url} (connecting; discovery if it asks for authorization)"
        ));
        crate::probe::probe_within(http, url.as_str(), &probe_opts, crate::probe::PROBE_TIMEOUT)
            .await
    };
    let transport = saved_transport(req.transport, &probe);
    let header_pairs: Vec<(String, Secret)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
        .collect();
    let new = |auth: AuthKind| NewServer {
        id: id.clone(),
        name: name.clone(),
        url: url.to_string(),
        transport,
        auth,
        headers: header_pairs.clone(),
    };
    let has_secrets = req.token.is_some() || !req.headers.is_empty();
    // Another add (another process, another tab) may have taken the name meanwhile.
    let create = |auth: AuthKind, cred: Option<Credential>| {
        let new = new(auth);
        async move {
            st.create_server(&new, cred.as_ref())
                .await
                .map_err(|e| match e {
                    StoreError::NameTaken(n) => AddError::NameTaken(n),
                    e => AddError::Store(e),
                })
        }
    };
    let class = probe.class.as_str();
    let added = match probe.class {
        ProbeClass::Open => {
            let auth = if has_secrets {
                AuthKind::Token
            } else {
                AuthKind::None
            };
            let cred = req.token.clone().map(|t| Credential::Bearer { token: t });
            let rec = create(auth, cred).await?;
            st.set_status(&rec.id, LastStatus::Connected, None).await?;
            if let Some(server) = &probe.server {
                st.set_protocol(&rec.id, Some(&server.protocol_version))
                    .await?;
            }
            st.set_tools(&rec.id, u32::try_from(probe.tools.len()).ok())
                .await?;
            report(st, &rec, class, Some(probe.tools.len()), None, None).await?
        }
        ProbeClass::TokenRejected => {
            return Err(AddError::TokenRejected {
                url: url.to_string(),
                probe: Box::new(probe),
            });
        }
        ProbeClass::TokenOnly if req.authorize => {
            return Err(AddError::TokenNeeded {
                probe: Box::new(probe),
            });
        }
        ProbeClass::TokenOnly => {
            let rec = create(AuthKind::Token, None).await?;
            report(st, &rec, class, None, None, Some(probe.next_step.clone())).await?
        }
        ProbeClass::Oauth if !req.authorize => {
            let rec = create(AuthKind::Oauth, None).await?;
            report(st, &rec, class, None, None, None).await?
        }
        ProbeClass::Oauth => {
            let rec = create(AuthKind::Oauth, None).await?;
            // Before the flow completes, any failure takes the row (and its headers) away.
            let grant = match authorize(st, http, &rec, req.auth.clone(), reporter).await {
                Ok(g) => g,
                Err(e) => {
                    if let Err(rollback) = st.purge_server(&rec.id).await {
                        tracing::warn!(error = %rollback, "rolling back the new server failed");
                    }
                    return Err(e.into());
                }
            };
            // After it, the server stays whatever happens.
            let tools = verify(st, http, &rec, progress).await;
            let note = tools.as_ref().err().map(ToString::to_string);
            report(st, &rec, class, tools.ok(), Some(grant.issuer), note).await?
        }
        ProbeClass::Unreachable | ProbeClass::Error if req.force => {
            let auth = if req.token.is_some() {
                AuthKind::Token
            } else {
                AuthKind::None
            };
            let cred = req.token.clone().map(|t| Credential::Bearer { token: t });
            let rec = create(auth, cred).await?;
            st.set_status(&rec.id, LastStatus::Error, Some(&probe_line(&probe)))
                .await?;
            report(st, &rec, class, None, None, Some(probe_line(&probe))).await?
        }
        ProbeClass::Unreachable | ProbeClass::Error => {
            return Err(AddError::NotUsable {
                url: url.to_string(),
                probe: Box::new(probe),
            });
        }
    };
    let Some(old) = replacing else {
        return Ok(added);
    };
    // The old server's tokens are revoked first, as `remove` does.
    let revoked = match st.credential(&old.id).await {
        Ok(Some(stored)) => Some(super::revoke(st, &stored.credential).await),
        _ => None,
    };
    let rec = st.replace_server(&old.id, &added.id).await?;
    let mut added = report(
        st,
        &rec,
        &added.class,
        added.tools,
        added.issuer,
        added.note,
    )
    .await?;
    added.replaced = Some(match revoked {
        Some(r) => format!("replaced the saved {final_name} ({}); {r}", old.url),
        None => format!("replaced the saved {final_name} ({})", old.url),
    });
    Ok(added)
}

/// A new server id: 16 hex digits from the OS's random source.
pub fn new_id() -> String {
    let mut b = [0u8; 8];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn report(
    st: &AnyStore,
    rec: &ServerRecord,
    class: &str,
    tools: Option<usize>,
    issuer: Option<String>,
    note: Option<String>,
) -> Result<Added, StoreError> {
    let rec = st.server(&rec.id).await?.unwrap_or_else(|| rec.clone());
    // The same card `list` prints and the settings page shows, so they never disagree.
    let (card, _) = card(st, &rec).await?;
    Ok(Added {
        name: rec.name.clone(),
        id: rec.id.clone(),
        url: rec.url.clone(),
        class: class.to_owned(),
        auth: card.auth,
        state: card.state.as_str().to_owned(),
        action: card.action.as_str().to_owned(),
        tools,
        issuer,
        note,
        replaced: None,
    })
}

/// Why a saved server could not be authorized.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorizeError {
    /// The saved URL does not parse (a store written by hand).
    #[error("the saved URL {url} is not a URL: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why not.
        reason: String,
    },
    /// The server answers without authorization.
    #[error("{name} answers without authorization; there is nothing to authorize")]
    NotNeeded {
        /// The server.
        name: String,
    },
    /// Connecting to learn what the server asks for failed.
    #[error(transparent)]
    Connect(ConnectError),
    /// The flow failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The grant could not be saved.
    #[error(transparent)]
    Save(ClientError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Run the flow for a saved server and save what it yields (with the pre-registered
/// client it used, so refreshes can authenticate later).
pub async fn authorize(
    st: &AnyStore,
    http: &crate::http::WireClient,
    rec: &ServerRecord,
    options: AuthOptions,
    reporter: Arc<dyn Reporter>,
) -> Result<Grant, AuthorizeError> {
    let url = Url::parse(&rec.url).map_err(|e| AuthorizeError::BadUrl {
        url: rec.url.clone(),
        reason: e.to_string(),
    })?;
    let headers = saved_headers(st, rec).await?;
    let challenge = match Connection::open_transport(
        url.as_str(),
        http.clone(),
        Arc::new(StaticToken::default()),
        headers,
        transport_choice(rec.transport),
    )
    .await
    {
        Err(ConnectError::AuthorizationRequired { challenge, .. }) => challenge,
        Err(ConnectError::InsufficientScope { challenge, .. }) => Some(challenge),
        Ok(conn) => {
            conn.close().await;
            return Err(AuthorizeError::NotNeeded {
                name: rec.name.clone(),
            });
        }
        Err(e) => return Err(AuthorizeError::Connect(e)),
    };
    // The quirks of its last authorization apply again unless the options name some.
    let mut options = options;
    if options.remembered.is_none()
        && let Ok(Some(crate::store::StoredCredential {
            credential: crate::store::Credential::OAuth(o),
            ..
        })) = st.credential(&rec.id).await
        && o.quirks != crate::auth::profile::Quirks::default()
    {
        options.remembered = Some(o.quirks.clone());
    }
    let authorizer = Authorizer::new(options, Arc::new(st.clone()), reporter)?
        .with_pending_flows(Arc::new(st.clone()));
    let values: Vec<String> = challenge.into_iter().collect();
    let grant = authorizer.authorize(&url, &values, None).await?;
    crate::client::save_grant(st, &rec.id, &grant)
        .await
        .map_err(AuthorizeError::Save)?;
    Ok(grant)
}

/// Why listing a server's tools failed ([`verify`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The connection failed.
    #[error("{}", .0.one_line())]
    Connect(ConnectError),
    /// The server refused or failed `tools/list`.
    #[error(transparent)]
    List(RequestError),
}

/// Connect with the stored credential and list tools; the outcome becomes the
/// server's status (and tool count, and protocol revision).
pub async fn verify(
    st: &AnyStore,
    http: &crate::http::WireClient,
    rec: &ServerRecord,
    progress: &dyn Progress,
) -> Result<usize, VerifyError> {
    let tokens = StoredTokens::new(Arc::new(st.clone()), &rec.id);
    let _waiting = progress.waiting(format!(
        "listing {}'s tools with the new credentials",
        rec.name
    ));
    let headers = saved_headers(st, rec).await.unwrap_or_default();
    let result = async {
        let conn = Connection::open_transport(
            &rec.url,
            http.clone(),
            tokens,
            headers,
            transport_choice(rec.transport),
        )
        .await
        .map_err(VerifyError::Connect)?;
        let spoken = conn.server().protocol_version;
        if let Err(e) = st.set_protocol(&rec.id, Some(&spoken)).await {
            tracing::debug!(error = %e, "the server's protocol revision was not saved");
        }
        let n = conn
            .list_tools()
            .await
            .map(|t| t.len())
            .map_err(VerifyError::List);
        conn.close().await;
        n
    }
    .await;
    let (status, error) = match &result {
        Ok(_) => (LastStatus::Connected, None),
        Err(e) => (LastStatus::Error, Some(e.to_string())),
    };
    let _ = st.set_status(&rec.id, status, error.as_deref()).await;
    if let Ok(n) = &result {
        let _ = st.set_tools(&rec.id, u32::try_from(*n).ok()).await;
    }
    result
}

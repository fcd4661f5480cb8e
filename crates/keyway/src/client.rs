//! Authorized MCP sessions, for keyway's own commands and for any Rust program.
//!
//! [`Session`] connects to a server saved with `keyway add` (by name) or to a URL, and
//! lists and calls tools, reads resources and gets prompts. When the server refuses,
//! the session does what keyway's commands do, in this order:
//!
//! 1. 401 with a token that looked valid: another process's newer token from the
//!    store, else one refresh (once across every process: a lease in the store).
//! 2. Still 401: an authorization flow (browser, device or headless, as
//!    [`AuthOptions`] says). For a saved server one process at a time runs it (a lease
//!    in the store); the others wait for its tokens, so several processes open one
//!    browser.
//! 3. 403 `insufficient_scope`: a step-up, asking for the union of the scopes held and
//!    the ones the challenge names, at most [`StepUp::MAX_ATTEMPTS`] per operation.
//! 4. At most [`MAX_SIGN_INS`] flows in a row without a request getting through, and
//!    two recoveries per request: a server that refuses whatever it is given is
//!    reported, not looped on.
//!
//! [`Policy`] is that logic on its own: `keyway proxy` and `keyway serve` use it for
//! their bridges, and [`AuthorizedTransport`] puts it under rmcp's client for programs
//! built on rmcp.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyway::client::ClientError> {
//! use keyway::client::{Options, Session};
//!
//! // A server saved with `keyway add`, by name (in keyway's default home).
//! let session = Session::connect("github", Options::default()).await?;
//! for tool in session.list_tools().await? {
//!     println!("{}", tool.name);
//! }
//! let args = serde_json::json!({"text": "hi"});
//! let result = session.call_tool("echo", args.as_object().cloned()).await?;
//! println!("{}", keyway::mcp::result_text(&result));
//! session.close().await;
//! # Ok(()) }
//! ```

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use futures::future::BoxFuture;
use rmcp::model::{
    CallToolResult, GetPromptResult, JsonObject, Prompt, ReadResourceResult, Resource, Tool,
};
use url::Url;

use crate::auth::profile::Quirks;
use crate::{
    Secret,
    auth::{
        AuthError, AuthOptions, Authorizer, Grant, MemoryRegistrations, OAuthTokens,
        RegistrationKind, RegistrationStore, Reporter, Silent, StepUp, StoredRegistration,
        challenge,
    },
    http::Deadlines,
    mcp::{
        ConnectError, Connection, Protocol, RequestError, ServerSummary, StaticToken, TokenSource,
        TransportChoice,
        wire::{self, Wire, WireConfig, WireError, WireKind},
    },
    store::{
        AnyStore, AuthKind, Credential, LastStatus, OpenOptions, ServerRecord, Store, StoreError,
        StoreLocation, Transport,
        tokens::{StoredTokens, credential_from_grant},
    },
};

/// Sign-ins a session may start in a row without any of them letting a request
/// through: the first, and a few step-ups. A server that keeps refusing whatever it is
/// given would otherwise open a browser for every request.
pub const MAX_SIGN_INS: u32 = 5;

/// Recoveries (refresh, authorization, step-ups) one request may need before it is
/// reported as refused: a 401's refresh and authorization, then the step-ups
/// [`StepUp`] allows (its own cap is what stops an endless step-up, with its message).
const MAX_RECOVERIES: u32 = StepUp::MAX_ATTEMPTS + 2;

/// How long a lease to authorize a saved server lasts (longer than any flow).
const AUTHORIZE_LEASE: Duration = Duration::from_secs(600);

/// How often a process waiting for another's authorization looks at the store.
const AUTHORIZE_POLL: Duration = Duration::from_millis(200);

/// keyway's home: `KEYWAY_HOME`, else the platform's data directory
/// (`~/.local/share/keyway` on Linux).
pub fn default_home() -> PathBuf {
    if let Some(home) = std::env::var_os("KEYWAY_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    directories::ProjectDirs::from("dev", "keyway", "keyway")
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".keyway"))
}

/// Whether the store key lives in the OS keychain (`KEYWAY_NO_KEYCHAIN=1` turns it
/// off: a key file beside the store instead).
pub fn keychain_wanted() -> bool {
    std::env::var_os("KEYWAY_NO_KEYCHAIN").is_none_or(|v| v.is_empty() || v == "0")
}

/// How a session authorizes and how long it waits.
#[derive(Clone)]
pub struct Options {
    /// How to authorize when a server asks (browser mode, client, scopes...).
    pub auth: AuthOptions,
    /// The time limits of every request.
    pub deadlines: Deadlines,
    /// Where a flow's progress goes (the CLI prints it; [`Silent`] by default).
    pub reporter: Arc<dyn Reporter>,
    /// keyway's home, for servers given by name ([`default_home`] by default).
    pub home: PathBuf,
    /// Whether the store key is in the OS keychain ([`keychain_wanted`] by default).
    pub use_keychain: bool,
    /// Where saved servers are: the home's SQLite store (the default) or a Postgres
    /// database, whose key comes from `KEYWAY_STORE_KEY` or the home's key file.
    pub store: StoreLocation,
    /// The MCP revision to speak ([`Protocol::Auto`] by default).
    pub protocol: Protocol,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            auth: AuthOptions::default(),
            deadlines: Deadlines::default(),
            reporter: Arc::new(Silent),
            home: default_home(),
            use_keychain: keychain_wanted(),
            store: StoreLocation::Home,
            protocol: Protocol::Auto,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("deadlines", &self.deadlines)
            .field("home", &self.home)
            .field("use_keychain", &self.use_keychain)
            .finish_non_exhaustive()
    }
}

/// Why a session could not do what was asked, in terms a person can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The saved server is disabled.
    #[error("{name} is disabled (keyway enable {name})")]
    Disabled {
        /// Its name.
        name: String,
    },
    /// The saved server's URL does not parse (a store written by hand).
    #[error("the saved URL {url} is not a URL: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why not.
        reason: String,
    },
    /// Opening the connection failed.
    #[error(transparent)]
    Connect(ConnectError),
    /// A request failed.
    #[error(transparent)]
    Request(RequestError),
    /// An authorization flow failed.
    #[error(transparent)]
    Authorization(#[from] AuthError),
    /// A server saved for an access token has none.
    #[error("{name} needs an access token, and none is saved")]
    TokenMissing {
        /// The saved server's name.
        name: String,
        /// Its URL.
        url: String,
    },
    /// The server refused the static token it was given.
    #[error("{server} rejected the {} token", if *.saved { "saved" } else { "given" })]
    TokenRejected {
        /// The server (its name, or its URL).
        server: String,
        /// Whether the token was saved (else given for this session).
        saved: bool,
    },
    /// 401 again right after authorizing: the server rejects what its own
    /// authorization server issues.
    #[error("{url} still answers 401 after {attempts} authorizations")]
    StillUnauthorized {
        /// The server.
        url: String,
        /// How many were tried.
        attempts: u32,
    },
    /// 403 that is not about scopes: nothing keyway can fix by authorizing.
    #[error("{url} refused {operation} (403 Forbidden): {challenge}")]
    Forbidden {
        /// The server.
        url: String,
        /// What was refused (`tools/call NAME`, a method).
        operation: String,
        /// The `WWW-Authenticate` challenge.
        challenge: String,
    },
    /// [`MAX_SIGN_INS`] flows in a row and no request got through.
    #[error(
        "the server still refuses after {attempts} sign-ins in a row in this session; not signing in again"
    )]
    SignInLimit {
        /// How many flows ran.
        attempts: u32,
    },
    /// Another process has held the authorization lease for too long.
    #[error("another keyway has been authorizing {name} for too long")]
    AuthorizeWait {
        /// The saved server's name.
        name: String,
    },
    /// The saved server was removed or disabled while the session ran.
    #[error("{name} was removed or disabled meanwhile; not reconnecting")]
    Gone {
        /// Its name.
        name: String,
    },
}

impl ClientError {
    /// What a saved server's status becomes after this failure; `None` when the
    /// failure says nothing new about the server: a deadline (which may be the
    /// caller's own short limit), the store, a disabled or removed server. A JSON-RPC
    /// error (an unknown tool, bad arguments) is an answer: the server is connected.
    pub fn status(&self) -> Option<LastStatus> {
        match self {
            Self::TokenRejected { .. } => Some(LastStatus::TokenRejected),
            Self::TokenMissing { .. }
            | Self::StillUnauthorized { .. }
            | Self::SignInLimit { .. }
            | Self::AuthorizeWait { .. }
            | Self::Authorization(_) => Some(LastStatus::NeedsAuth),
            Self::Connect(e) if e.needs_authorization() => Some(LastStatus::NeedsAuth),
            Self::Request(RequestError::Server { .. }) => Some(LastStatus::Connected),
            Self::Request(RequestError::Transport {
                error: Some(WireError::Deadline { limit, .. }),
                ..
            }) if !matches!(limit, crate::mcp::wire::Limit::Connect(_)) => None,
            Self::Store(_) | Self::Disabled { .. } | Self::Gone { .. } => None,
            _ => Some(LastStatus::Error),
        }
    }

    /// Whether the fix is an authorization (or a token) the person must provide.
    pub fn needs_authorization(&self) -> bool {
        matches!(
            self.status(),
            Some(LastStatus::NeedsAuth | LastStatus::TokenRejected)
        )
    }

    /// What the person can do next, when the library knows (the connection's
    /// [`ConnectError::next_step`]; the CLI words the rest itself).
    pub fn next_step(&self) -> Option<String> {
        match self {
            Self::Connect(e) => e.next_step(),
            Self::Disabled { name } => Some(format!("keyway enable {name}")),
            Self::TokenMissing { name, .. }
            | Self::TokenRejected {
                server: name,
                saved: true,
            } => Some(format!("keyway set-token {name}")),
            _ => None,
        }
    }

    /// The failure and its next step on one line, as a saved server's last error.
    pub fn one_line(&self) -> String {
        let text = crate::http::reply::describe(self);
        match self.next_step() {
            Some(step) => format!("{text} (next: {step})"),
            None => text,
        }
    }
}

/// Where a session's credentials live, and where new ones go.
pub enum Credentials {
    /// A saved server: tokens in the store, refreshed once across processes; new
    /// authorizations are saved there.
    Stored {
        /// The store.
        store: AnyStore,
        /// The server.
        server: ServerRecord,
        /// Its tokens.
        tokens: Arc<StoredTokens>,
    },
    /// A URL: tokens in memory, gone with the session.
    Memory(Arc<OAuthTokens>),
    /// A token given for the session (or none): never refreshed or authorized.
    Static(Arc<StaticToken>),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stored { server, .. } => f
                .debug_struct("Stored")
                .field("server", &server.name)
                .finish_non_exhaustive(),
            Self::Memory(_) => f.write_str("Memory"),
            Self::Static(_) => f.write_str("Static"),
        }
    }
}

impl Credentials {
    /// The token source requests take their bearer token from.
    pub fn token_source(&self) -> Arc<dyn TokenSource> {
        match self {
            Self::Stored { tokens, .. } => tokens.clone(),
            Self::Memory(t) => t.clone(),
            Self::Static(t) => t.clone(),
        }
    }
}

/// What keyway does when a server refuses: refresh, authorize, step up, with the caps
/// described in the [module documentation](self). Shared by [`Session`],
/// [`AuthorizedTransport`] and keyway's bridges.
pub struct Policy {
    url: Url,
    authorizer: Authorizer,
    credentials: Credentials,
    step_up: tokio::sync::Mutex<StepUp>,
    sign_ins: AtomicU32,
    /// One flow at a time in this process: the requests refused meanwhile wait for
    /// it and use what it yields, instead of each starting (and printing) its own.
    signing_in: tokio::sync::Mutex<()>,
    /// Flows completed, so a waiter can tell that one finished while it waited.
    flows_done: std::sync::atomic::AtomicU64,
    /// The MCP revision the server spoke last (a saved server's record, then what
    /// this process found).
    spoken: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("url", &self.url.as_str())
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// Makes stored tokens read the store again when dropped.
struct ForgetOnDrop<'a>(&'a StoredTokens);

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.forget();
    }
}

impl Policy {
    /// The policy for the server at `url`, authorizing with `authorizer`.
    pub fn new(url: Url, authorizer: Authorizer, credentials: Credentials) -> Self {
        let spoken = match &credentials {
            Credentials::Stored { server, .. } => server.protocol.clone(),
            _ => None,
        };
        Self {
            spoken: std::sync::Mutex::new(spoken),
            url,
            authorizer,
            credentials,
            step_up: tokio::sync::Mutex::new(StepUp::default()),
            sign_ins: AtomicU32::new(0),
            signing_in: tokio::sync::Mutex::new(()),
            flows_done: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The server's URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Where the credentials live.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The MCP revision the server spoke last, when known: a saved server's record,
    /// or what a connection of this process found since.
    pub fn last_protocol(&self) -> Option<String> {
        self.spoken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The server spoke `revision` (`None`: what it speaks is in doubt, so the next
    /// connection asks). A saved server's record is updated when it changed.
    pub async fn spoke(&self, revision: Option<&str>) {
        {
            let mut known = self.spoken.lock().unwrap_or_else(|p| p.into_inner());
            if known.as_deref() == revision {
                return;
            }
            *known = revision.map(str::to_owned);
        }
        if let Credentials::Stored { store, server, .. } = &self.credentials
            && let Err(e) = store.set_protocol(&server.id, revision).await
        {
            tracing::debug!(error = %e, "the server's protocol revision was not saved");
        }
    }

    /// A request got through: the sign-in cap starts over.
    pub fn delivered(&self) {
        self.sign_ins.store(0, Ordering::SeqCst);
    }

    /// `operation` got through: its authorization count starts again (the cap is per
    /// attempt of an operation, not per session).
    pub async fn operation_done(&self, operation: &str) {
        self.step_up.lock().await.done(self.url.as_str(), operation);
    }

    /// Whether a saved server is still saved and enabled (asked before reconnecting).
    pub async fn still_wanted(&self) -> bool {
        match &self.credentials {
            Credentials::Stored { store, server, .. } => {
                matches!(store.server(&server.id).await, Ok(Some(s)) if s.enabled)
            }
            _ => true,
        }
    }

    fn server_name(&self) -> String {
        match &self.credentials {
            Credentials::Stored { server, .. } => server.name.clone(),
            _ => self.url.to_string(),
        }
    }

    async fn stored_credential(&self) -> Option<(Credential, u64)> {
        match &self.credentials {
            Credentials::Stored { store, server, .. } => store
                .credential(&server.id)
                .await
                .ok()
                .flatten()
                .map(|c| (c.credential, c.version)),
            _ => None,
        }
    }

    /// The scopes asked last time (the base of a step-up's union).
    async fn previous_scopes(&self) -> Option<Vec<String>> {
        match &self.credentials {
            Credentials::Stored { .. } => match self.stored_credential().await?.0 {
                Credential::OAuth(o) => Some(o.scopes),
                Credential::Bearer { .. } => None,
            },
            Credentials::Memory(t) => t.current().await.map(|g| g.requested_scopes),
            Credentials::Static(_) => None,
        }
    }

    /// The server answered 401. `Ok` once new credentials are in place (the token
    /// source hands them out from the next request on). With `operation` (what was
    /// refused), an authorization flow counts against that operation's step-up limit
    /// too, as the MCP spec's scope-challenge handling asks: a server that answers
    /// every new token with another challenge is not authorized for endlessly.
    pub async fn unauthorized(
        &self,
        challenge: Option<String>,
        operation: Option<&str>,
    ) -> Result<(), ClientError> {
        match &self.credentials {
            Credentials::Static(_) => {
                return Err(ClientError::TokenRejected {
                    server: self.server_name(),
                    saved: false,
                });
            }
            Credentials::Stored { server, tokens, .. } => {
                let stored = self.stored_credential().await.map(|(c, _)| c);
                if matches!(stored, Some(Credential::Bearer { .. })) {
                    return Err(ClientError::TokenRejected {
                        server: server.name.clone(),
                        saved: true,
                    });
                }
                if server.auth == AuthKind::Token {
                    return Err(ClientError::TokenMissing {
                        name: server.name.clone(),
                        url: server.url.clone(),
                    });
                }
                // Another process's newer token, else one refresh.
                if matches!(stored, Some(Credential::OAuth(_)))
                    && tokens.renew().await.unwrap_or(false)
                {
                    return Ok(());
                }
            }
            Credentials::Memory(t) => {
                if t.current().await.is_some_and(|g| g.refresh_token.is_some())
                    && t.force_refresh().await.is_ok()
                {
                    return Ok(());
                }
            }
        }
        match operation {
            Some(operation)
                if !self
                    .step_up
                    .lock()
                    .await
                    .allow(self.url.as_str(), operation) =>
            {
                let scopes = self.previous_scopes().await.unwrap_or_default().join(" ");
                return Err(AuthError::StepUpExhausted {
                    attempts: StepUp::MAX_ATTEMPTS,
                    scopes,
                }
                .into());
            }
            // Without an operation (the proxy's own retries), the sign-in cap applies.
            _ => {}
        }
        let previous = self.previous_scopes().await;
        self.authorize(challenge.into_iter().collect(), previous)
            .await
    }

    /// The server answered 403 for `operation` (`tools/call NAME`, or a method). A
    /// step-up when the challenge says `insufficient_scope`; anything else is
    /// [`ClientError::Forbidden`].
    pub async fn insufficient_scope(
        &self,
        challenge: &str,
        operation: &str,
    ) -> Result<(), ClientError> {
        let step_up = challenge::bearer([challenge]).is_some_and(|c| c.is_insufficient_scope());
        if !step_up {
            return Err(ClientError::Forbidden {
                url: self.url.to_string(),
                operation: operation.to_owned(),
                challenge: challenge.to_owned(),
            });
        }
        if !self
            .step_up
            .lock()
            .await
            .allow(self.url.as_str(), operation)
        {
            let scopes = self.previous_scopes().await.unwrap_or_default().join(" ");
            return Err(AuthError::StepUpExhausted {
                attempts: StepUp::MAX_ATTEMPTS,
                scopes,
            }
            .into());
        }
        let previous = self.previous_scopes().await;
        self.authorize(vec![challenge.to_owned()], previous).await
    }

    /// Run a flow, unless [`MAX_SIGN_INS`] ran in a row already.
    async fn sign_in(
        &self,
        challenge: &[String],
        previous: Option<&[String]>,
    ) -> Result<Grant, ClientError> {
        if self.sign_ins.fetch_add(1, Ordering::SeqCst) >= MAX_SIGN_INS {
            return Err(ClientError::SignInLimit {
                attempts: MAX_SIGN_INS,
            });
        }
        // A saved server keeps its provider's quirks (its profile, --no-resource,
        // extra parameters) for the next authorization too, unless this command
        // names its own.
        let remembered = match self.stored_credential().await {
            Some((Credential::OAuth(o), _)) if o.quirks != Quirks::default() => Some(o.quirks),
            _ => None,
        };
        let authorizer = match remembered {
            Some(q) => self.authorizer.remembering(q),
            None => self.authorizer.clone(),
        };
        Ok(authorizer.authorize(&self.url, challenge, previous).await?)
    }

    /// Run the flow and keep what it yields. For a saved server, one process at a
    /// time: whoever holds the lease authorizes; the others wait until the stored
    /// credential changes, then use it.
    async fn authorize(
        &self,
        challenge: Vec<String>,
        previous: Option<Vec<String>>,
    ) -> Result<(), ClientError> {
        let seen = self.flows_done.load(Ordering::SeqCst);
        let _one_at_a_time = self.signing_in.lock().await;
        if self.flows_done.load(Ordering::SeqCst) != seen {
            // A flow finished while this request waited: its tokens are the answer.
            return Ok(());
        }
        let outcome = self.authorize_now(challenge, previous).await;
        if outcome.is_ok() {
            self.flows_done.fetch_add(1, Ordering::SeqCst);
        }
        outcome
    }

    async fn authorize_now(
        &self,
        challenge: Vec<String>,
        previous: Option<Vec<String>>,
    ) -> Result<(), ClientError> {
        match &self.credentials {
            Credentials::Static(_) => Err(ClientError::TokenRejected {
                server: self.server_name(),
                saved: false,
            }),
            Credentials::Memory(tokens) => {
                let grant = self.sign_in(&challenge, previous.as_deref()).await?;
                tokens.set(grant).await;
                Ok(())
            }
            Credentials::Stored {
                store,
                server,
                tokens,
            } => {
                // The version the refused request sent (none, when there was no
                // credential), read before anything is forgotten: any other one in the
                // store, even one saved before this flow began (another process
                // finished first), is someone else's fresh authorization to use. When
                // that is not known, what is stored now is the mark.
                let version = || async { self.stored_credential().await.map(|(_, v)| v) };
                let before = match tokens.handed_out() {
                    Some(sent) => sent,
                    None => version().await,
                };
                // Whatever comes of it, the credential may have changed under us.
                let _forget = ForgetOnDrop(tokens);
                let lease = format!("authorize:{}", server.id);
                let holder = crate::store::lease_holder("keyway");
                let started = tokio::time::Instant::now();
                let wait_limit =
                    self.authorizer.options().callback_timeout + Duration::from_secs(30);
                loop {
                    if store.try_lease(&lease, &holder, AUTHORIZE_LEASE).await? {
                        // Someone may have finished while we waited for the lease.
                        let outcome = if version().await != before {
                            Ok(())
                        } else {
                            match self.sign_in(&challenge, previous.as_deref()).await {
                                Ok(grant) => save_grant(store, &server.id, &grant).await,
                                Err(e) => Err(e),
                            }
                        };
                        let _ = store.release_lease(&lease, &holder).await;
                        return outcome;
                    }
                    if version().await != before {
                        tracing::info!(
                            "another keyway authorized {}; using its tokens",
                            server.name
                        );
                        return Ok(());
                    }
                    if started.elapsed() > wait_limit {
                        return Err(ClientError::AuthorizeWait {
                            name: server.name.clone(),
                        });
                    }
                    tokio::time::sleep(AUTHORIZE_POLL).await;
                }
            }
        }
    }

    /// Note how a request to a saved server went (`keyway list` shows it).
    async fn record(&self, status: LastStatus, detail: Option<&str>) {
        if let Credentials::Stored { store, server, .. } = &self.credentials
            && let Err(e) = store.set_status(&server.id, status, detail).await
        {
            tracing::debug!(error = %e, "the server's status was not saved");
        }
    }
}

/// Save what an authorization yielded for a saved server: its pre-registered client
/// (so a refresh finds it), the credential, and the status.
pub async fn save_grant(
    store: &AnyStore,
    server_id: &str,
    grant: &Grant,
) -> Result<(), ClientError> {
    if grant.client.kind == RegistrationKind::Preregistered {
        let registration = StoredRegistration {
            issuer: grant.issuer.clone(),
            client_id: grant.client.client_id.clone(),
            client_secret: grant.client.auth.secret().cloned(),
            auth_method: grant.client.auth.method(),
            redirect_uris: grant.client.redirect_uris.clone(),
            kind: RegistrationKind::Preregistered,
            extras: crate::auth::registration::RegistrationExtras {
                private_key: grant.client.auth.signing_key().cloned(),
                management: None,
            },
        };
        RegistrationStore::save(store, &registration).await?;
    }
    let credential = Credential::OAuth(Box::new(credential_from_grant(grant)));
    store.save_credential(server_id, &credential, None).await?;
    store
        .set_status(server_id, LastStatus::Connected, None)
        .await?;
    Ok(())
}

/// An authorized session with one MCP server.
pub struct Session {
    policy: Arc<Policy>,
    config: WireConfig,
    transport: TransportChoice,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("policy", &self.policy)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Connect to `target`: a URL (`http://` or `https://`: tokens live in memory for
    /// the session), else the name or id of a server saved in `options.home`.
    pub async fn connect(target: &str, options: Options) -> Result<Self, ClientError> {
        if target.starts_with("http://") || target.starts_with("https://") {
            let url = Url::parse(target).map_err(|e| ClientError::BadUrl {
                url: target.to_owned(),
                reason: e.to_string(),
            })?;
            return Self::open_url(url, options).await;
        }
        let store = AnyStore::open(
            &options.store,
            &options.home,
            OpenOptions {
                use_keychain: options.use_keychain,
            },
        )
        .await?;
        Self::open_stored(store, target, options).await
    }

    /// A session with the server saved as `name` (or with that id) in `store`.
    pub async fn open_stored(
        store: impl Into<AnyStore>,
        name: &str,
        options: Options,
    ) -> Result<Self, ClientError> {
        let store = store.into();
        let server = store
            .server(name)
            .await?
            .ok_or_else(|| StoreError::NoSuchServer(name.to_owned()))?;
        if !server.enabled {
            return Err(ClientError::Disabled { name: server.name });
        }
        let url = Url::parse(&server.url).map_err(|e| ClientError::BadUrl {
            url: server.url.clone(),
            reason: e.to_string(),
        })?;
        let headers = crate::manage::saved_headers(&store, &server).await?;
        let authorizer = Authorizer::new(options.auth, Arc::new(store.clone()), options.reporter)?
            .with_pending_flows(Arc::new(store.clone()));
        let tokens = StoredTokens::new(Arc::new(store.clone()), &server.id);
        let transport = match server.transport {
            Transport::Http => TransportChoice::StreamableHttp,
            Transport::Sse => TransportChoice::LegacySse,
        };
        let policy = Policy::new(
            url,
            authorizer,
            Credentials::Stored {
                store,
                server,
                tokens,
            },
        );
        Self::with_policy(Arc::new(policy), headers, options.deadlines, transport)
            .map(|s| s.speaking(options.protocol))
    }

    /// A session with the server at `url`, authorizing when it asks; tokens live in
    /// memory for the session.
    pub async fn open_url(url: Url, options: Options) -> Result<Self, ClientError> {
        let authorizer = Authorizer::new(
            options.auth,
            Arc::new(MemoryRegistrations::default()),
            options.reporter,
        )?;
        let policy = Policy::new(url, authorizer, Credentials::Memory(OAuthTokens::new()));
        Self::with_policy(
            Arc::new(policy),
            Vec::new(),
            options.deadlines,
            TransportChoice::StreamableHttp,
        )
        .map(|s| s.speaking(options.protocol))
    }

    /// A session with the server at `url` sending a fixed token (or none) and extra
    /// headers; it never authorizes.
    pub fn open_with_token(
        url: Url,
        token: Option<Secret>,
        headers: Vec<(http::HeaderName, Secret)>,
        options: Options,
    ) -> Result<Self, ClientError> {
        let authorizer = Authorizer::new(
            options.auth,
            Arc::new(MemoryRegistrations::default()),
            options.reporter,
        )?;
        let policy = Policy::new(
            url,
            authorizer,
            Credentials::Static(Arc::new(StaticToken::new(token))),
        );
        Self::with_policy(
            Arc::new(policy),
            headers,
            options.deadlines,
            TransportChoice::StreamableHttp,
        )
        .map(|s| s.speaking(options.protocol))
    }

    /// The session, speaking `protocol` ([`Protocol::Auto`] unless set).
    pub fn speaking(mut self, protocol: Protocol) -> Self {
        self.config.protocol = protocol;
        self
    }

    /// A session over a [`Policy`] made by hand.
    pub fn with_policy(
        policy: Arc<Policy>,
        headers: Vec<(http::HeaderName, Secret)>,
        deadlines: Deadlines,
        transport: TransportChoice,
    ) -> Result<Self, ClientError> {
        let http = crate::http::WireClient::new(&deadlines).map_err(|e| {
            ClientError::Connect(ConnectError::Failed {
                url: policy.url.to_string(),
                reason: format!("building the HTTP client failed: {e}"),
                status: None,
            })
        })?;
        let mut config =
            WireConfig::new(policy.url.clone(), http, policy.credentials.token_source());
        config.headers = headers;
        config.deadlines = deadlines;
        config.kind = match transport {
            TransportChoice::LegacySse => WireKind::LegacySse,
            _ => WireKind::StreamableHttp,
        };
        Ok(Self {
            policy,
            config,
            transport,
            connection: tokio::sync::Mutex::new(None),
        })
    }

    /// The policy the session recovers with.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// The server's name, version and protocol revision (connecting first if needed).
    pub async fn server(&self) -> Result<ServerSummary, ClientError> {
        self.run("initialize", |c| Box::pin(async move { Ok(c.server()) }))
            .await
    }

    /// Every tool the server offers.
    pub async fn list_tools(&self) -> Result<Vec<Tool>, ClientError> {
        self.run("tools/list", |c| {
            Box::pin(async move { c.list_tools().await })
        })
        .await
    }

    /// Call the tool `name`.
    pub async fn call_tool(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
    ) -> Result<CallToolResult, ClientError> {
        let operation = format!("tools/call {name}");
        self.run(&operation, |c| {
            let arguments = arguments.clone();
            Box::pin(async move { c.call_tool(name, arguments).await })
        })
        .await
    }

    /// Every resource the server offers.
    pub async fn list_resources(&self) -> Result<Vec<Resource>, ClientError> {
        self.run("resources/list", |c| {
            Box::pin(async move { c.list_resources().await })
        })
        .await
    }

    /// Read the resource at `uri`.
    pub async fn read_resource(&self, uri: &str) -> Result<ReadResourceResult, ClientError> {
        self.run("resources/read", |c| {
            Box::pin(async move { c.read_resource(uri).await })
        })
        .await
    }

    /// Every prompt the server offers.
    pub async fn list_prompts(&self) -> Result<Vec<Prompt>, ClientError> {
        self.run("prompts/list", |c| {
            Box::pin(async move { c.list_prompts().await })
        })
        .await
    }

    /// Get the prompt `name` with its arguments.
    pub async fn get_prompt(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
    ) -> Result<GetPromptResult, ClientError> {
        self.run("prompts/get", |c| {
            let arguments = arguments.clone();
            Box::pin(async move { c.get_prompt(name, arguments).await })
        })
        .await
    }

    /// An rmcp transport to the same server with the same credentials and policy, for
    /// a program built on rmcp: `rmcp::ServiceExt::serve(client_info, transport)`.
    pub async fn rmcp_transport(&self) -> Result<AuthorizedTransport, ClientError> {
        AuthorizedTransport::connect(self.config.clone(), self.policy.clone()).await
    }

    /// End the session (the server gets a `DELETE` for it).
    pub async fn close(self) {
        if let Some(c) = self.connection.into_inner() {
            close(c).await;
        }
    }

    /// Run `op` on the connection (opened first if needed), recovering from what
    /// the policy can recover from; the saved server's status notes how it went.
    async fn run<'a, T>(
        &'a self,
        operation: &str,
        op: impl Fn(Arc<Connection>) -> BoxFuture<'a, Result<T, RequestError>> + Send,
    ) -> Result<T, ClientError>
    where
        T: Send,
    {
        let outcome = self.attempts(operation, op).await;
        match &outcome {
            Ok(_) => self.policy.record(LastStatus::Connected, None).await,
            Err(e) => {
                if let Some(status) = e.status() {
                    let detail = (status != LastStatus::Connected).then(|| e.one_line());
                    self.policy.record(status, detail.as_deref()).await;
                }
            }
        }
        outcome
    }

    async fn attempts<'a, T>(
        &'a self,
        operation: &str,
        op: impl Fn(Arc<Connection>) -> BoxFuture<'a, Result<T, RequestError>> + Send,
    ) -> Result<T, ClientError>
    where
        T: Send,
    {
        let method = operation.split(' ').next().unwrap_or(operation);
        let mut recoveries = 0;
        let mut unauthorized = 0;
        let mut reconnected = false;
        let mut took_handshake = false;
        loop {
            // Connecting is part of the operation the caller wanted: its sign-in and
            // the operation's step-ups share the operation's one cap of
            // `StepUp::MAX_ATTEMPTS` authorizations, the first included. (A
            // 2026-07-28 server wants a token for `server/discover` where many let
            // `initialize` through without one.)
            let failure = match self.connected().await {
                Err(ConnectError::AuthorizationRequired { challenge, .. }) => {
                    Refusal::Unauthorized(challenge, operation.to_owned())
                }
                Err(ConnectError::InsufficientScope { challenge, .. }) => {
                    Refusal::Forbidden(challenge, operation.to_owned())
                }
                Err(e) => return Err(ClientError::Connect(e)),
                Ok(conn) => {
                    let modern = conn.is_modern();
                    match op(conn).await {
                        Ok(v) => {
                            self.policy.delivered();
                            if recoveries > 0 {
                                self.policy.operation_done(operation).await;
                            }
                            return Ok(v);
                        }
                        Err(RequestError::AuthorizationRequired { challenge, .. }) => {
                            Refusal::Unauthorized(challenge, operation.to_owned())
                        }
                        Err(RequestError::InsufficientScope { challenge, .. }) => {
                            Refusal::Forbidden(challenge, operation.to_owned())
                        }
                        Err(RequestError::Transport { error: Some(w), .. })
                            if !reconnected && w.may_retry(method, true) =>
                        {
                            if !self.policy.still_wanted().await {
                                return Err(ClientError::Gone {
                                    name: self.policy.server_name(),
                                });
                            }
                            reconnected = true;
                            self.reset().await;
                            continue;
                        }
                        // A server that named 2026-07-28 in server/discover yet wants a
                        // session for the requests after it speaks the handshake: it
                        // gets that (once), and the saved record follows.
                        Err(RequestError::Server { message, .. })
                            if !took_handshake
                                && self.config.protocol == Protocol::Auto
                                && self.config.kind == WireKind::StreamableHttp
                                && modern
                                && message.to_ascii_lowercase().contains("session") =>
                        {
                            tracing::info!(
                                url = %self.policy.url,
                                "the server claimed MCP 2026-07-28 but wants a session ({message}); using the handshake"
                            );
                            took_handshake = true;
                            self.policy.spoke(Some("2025-11-25")).await;
                            self.reset().await;
                            continue;
                        }
                        Err(e) => return Err(ClientError::Request(e)),
                    }
                }
            };
            recoveries += 1;
            if recoveries > MAX_RECOVERIES {
                return Err(ClientError::StillUnauthorized {
                    url: self.policy.url.to_string(),
                    attempts: MAX_RECOVERIES,
                });
            }
            match failure {
                Refusal::Unauthorized(challenge, operation) => {
                    unauthorized += 1;
                    if unauthorized > 2 {
                        return Err(ClientError::StillUnauthorized {
                            url: self.policy.url.to_string(),
                            attempts: unauthorized - 1,
                        });
                    }
                    self.policy
                        .unauthorized(challenge, Some(&operation))
                        .await?;
                }
                Refusal::Forbidden(challenge, operation) => {
                    self.policy
                        .insufficient_scope(&challenge, &operation)
                        .await?;
                }
            }
            // New credentials: a new session, so they are in use from the handshake.
            self.reset().await;
        }
    }

    /// The open connection, opened first if there is none.
    async fn connected(&self) -> Result<Arc<Connection>, ConnectError> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let mut config = self.config.clone();
        config.last_protocol = self.policy.last_protocol();
        let c = Arc::new(Connection::connect(config, self.transport).await?);
        let spoken = c.server().protocol_version;
        if !spoken.is_empty() {
            self.policy.spoke(Some(&spoken)).await;
        }
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Drop the connection: the next use opens a new one.
    async fn reset(&self) {
        let old = self.connection.lock().await.take();
        if let Some(c) = old {
            close(c).await;
        }
    }
}

/// End a connection's session once nothing else uses it (if something still does, it
/// ends when that lets go: rmcp closes the transport when its service is dropped).
async fn close(c: Arc<Connection>) {
    if let Ok(c) = Arc::try_unwrap(c) {
        c.close().await;
    }
}

/// Why a request was refused, as the policy sees it.
enum Refusal {
    Unauthorized(Option<String>, String),
    Forbidden(String, String),
}

/// rmcp's client transport over keyway's wire with a [`Policy`] underneath: a
/// request refused with 401 or 403 `insufficient_scope` is retried once the policy
/// has new credentials, so rmcp's client never sees a refusal keyway can fix.
#[derive(Debug)]
pub struct AuthorizedTransport {
    inner: wire::WireTransport,
    policy: Arc<Policy>,
}

impl AuthorizedTransport {
    /// Open the wire (legacy SSE opens its stream here) with `policy`'s credentials.
    pub async fn connect(config: WireConfig, policy: Arc<Policy>) -> Result<Self, ClientError> {
        let url = config.url.to_string();
        let (w, inbound) = Wire::connect(config)
            .await
            .map_err(|e| ClientError::Connect(ConnectError::from_wire(&url, e)))?;
        Ok(Self {
            inner: wire::WireTransport::new(w, inbound),
            policy,
        })
    }
}

impl rmcp::transport::Transport<rmcp::RoleClient> for AuthorizedTransport {
    type Error = WireError;

    fn send(
        &mut self,
        item: rmcp::service::TxJsonRpcMessage<rmcp::RoleClient>,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send + 'static {
        let wire = self.inner.wire().clone();
        let policy = self.policy.clone();
        async move {
            let text = serde_json::to_string(&item).map_err(|e| WireError::Protocol {
                server: policy.url.origin().ascii_serialization(),
                reason: format!("a message rmcp made does not serialize: {e}"),
            })?;
            let message = wire::Message::parse(text).map_err(|e| WireError::Protocol {
                server: policy.url.origin().ascii_serialization(),
                reason: format!("a message rmcp made is not JSON-RPC: {e}"),
            })?;
            let method = message.method().unwrap_or("").to_owned();
            let operation = match message.value().pointer("/params/name") {
                Some(serde_json::Value::String(tool)) if method == "tools/call" => {
                    format!("tools/call {tool}")
                }
                _ => method.clone(),
            };
            let mut recoveries = 0;
            loop {
                let sent = wire.send_message(&message).await;
                let recovered = match &sent {
                    Err(WireError::Unauthorized { challenge }) if recoveries < MAX_RECOVERIES => {
                        policy
                            .unauthorized(challenge.clone(), Some(&operation))
                            .await
                    }
                    Err(WireError::Forbidden { challenge }) if recoveries < MAX_RECOVERIES => {
                        policy.insufficient_scope(challenge, &operation).await
                    }
                    _ => {
                        if sent.is_ok() {
                            policy.delivered();
                            if recoveries > 0 {
                                policy.operation_done(&operation).await;
                            }
                            if method == "notifications/initialized"
                                && let Err(e) = wire.open_standalone_stream().await
                            {
                                tracing::debug!(error = %e, "no standalone stream");
                            }
                        }
                        return sent;
                    }
                };
                if let Err(e) = recovered {
                    tracing::warn!(error = %e, "could not recover from the server's refusal");
                    return sent;
                }
                recoveries += 1;
            }
        }
    }

    fn receive(
        &mut self,
    ) -> impl std::future::Future<Output = Option<rmcp::service::RxJsonRpcMessage<rmcp::RoleClient>>>
    + Send {
        self.inner.receive()
    }

    fn close(&mut self) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}

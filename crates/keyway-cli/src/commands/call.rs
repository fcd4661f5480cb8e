//! `keyway call NAME TOOL` and `keyway call --url URL TOOL`: connect, list tools,
//! call one, print the result, authorizing as the server asks (401: one refresh, then
//! authorize; 403 insufficient_scope: step up with the union of scopes; at most 3
//! authorizations per operation).

use std::sync::Arc;

use anyhow::anyhow;
use keyway::{
    Secret,
    auth::{Authorizer, Grant, MemoryRegistrations, OAuthTokens, StepUp, challenge},
    mcp::{ConnectError, Connection, RequestError, TokenSource, result_text},
    store::{Credential, LastStatus, ServerRecord, SqliteStore, Store, tokens::StoredTokens},
};
use rmcp::model::{CallToolResult, JsonObject};
use url::Url;

use super::{auth, authorize::save_grant, store};
use crate::{
    cli::CallArgs,
    exit::{CliError, ExitStatus},
    printer::Printer,
    settings::Settings,
};

/// How many times a plain 401 may send keyway back to authorize.
const MAX_AUTHORIZATIONS: u32 = 2;

pub async fn run(args: CallArgs, settings: &Settings, printer: &Printer) -> Result<(), CliError> {
    let (tool, arguments) = match (&args.url, args.target.as_slice()) {
        (Some(_), [tool]) => (tool.clone(), &args.args),
        (None, [_, tool]) => (tool.clone(), &args.args),
        (Some(_), _) => {
            return Err(store::usage(
                "with --url, give only the tool: keyway call --url URL TOOL".into(),
            ));
        }
        (None, _) => {
            return Err(store::usage(
                "give the server and the tool: keyway call NAME TOOL (or --url URL TOOL)".into(),
            ));
        }
    };
    let arguments: JsonObject = match serde_json::from_str(arguments) {
        Ok(serde_json::Value::Object(o)) => o,
        Ok(_) => {
            return Err(store::usage(
                "--args must be a JSON object, e.g. '{\"text\":\"hi\"}'".into(),
            ));
        }
        Err(e) => return Err(store::usage(format!("--args is not JSON: {e}"))),
    };
    let options = auth::options(&args.auth)?;
    let http = args.deadlines.client()?;

    let mut session = match &args.url {
        Some(raw) => {
            let url = Url::parse(raw).map_err(|e| store::usage(format!("--url {raw}: {e}")))?;
            let authorizer = Authorizer::new(
                options,
                Arc::new(MemoryRegistrations::default()),
                auth::reporter(printer.quiet()),
            )
            .map_err(auth::error)?;
            Session::new(
                url,
                http.clone(),
                authorizer,
                Tokens::Memory(OAuthTokens::new()),
                Vec::new(),
            )
        }
        None => {
            let st = store::open(settings)?;
            let server = store::find(&st, &args.target[0]).await?;
            store::ensure_enabled(&server)?;
            let url = store::saved_url(&server)?;
            let headers = store::saved_headers(&st, &server).await?;
            let authorizer = Authorizer::new(
                options,
                Arc::new(st.clone()),
                auth::reporter(printer.quiet()),
            )
            .map_err(auth::error)?
            .with_pending_flows(Arc::new(st.clone()));
            let tokens = StoredTokens::new(Arc::new(st.clone()), &server.id);
            Session::new(
                url,
                http,
                authorizer,
                Tokens::Stored {
                    store: st,
                    server,
                    tokens,
                },
                headers,
            )
        }
    };
    session.deadlines = args.deadlines.deadlines();
    let outcome = session.call(&tool, arguments).await;
    session.record(&outcome).await;
    let result = outcome?;

    if printer.json_mode() {
        printer.json(&result)?;
    } else {
        printer.result(result_text(&result));
    }
    if result.is_error == Some(true) {
        return Err(CliError::failure(anyhow!(
            "the tool {tool} reported an error"
        )));
    }
    Ok(())
}

/// Where the tokens of this call live.
enum Tokens {
    /// `--url`: in memory, gone when keyway exits.
    Memory(Arc<OAuthTokens>),
    /// A saved server: the store, refreshed once across processes.
    Stored {
        store: SqliteStore,
        server: ServerRecord,
        tokens: Arc<StoredTokens>,
    },
}

impl Tokens {
    fn source(&self) -> Arc<dyn TokenSource> {
        match self {
            Self::Memory(t) => t.clone(),
            Self::Stored { tokens, .. } => tokens.clone(),
        }
    }

    /// The scopes asked last time (the base of a step-up union).
    async fn previous_scopes(&self) -> Option<Vec<String>> {
        match self {
            Self::Memory(t) => t.current().await.map(|g| g.requested_scopes),
            Self::Stored { store, server, .. } => match store
                .credential(&server.id)
                .await
                .ok()
                .flatten()?
                .credential
            {
                Credential::OAuth(o) => Some(o.scopes),
                Credential::Bearer { .. } => None,
            },
        }
    }

    /// One refresh after the server refused a token; whether a new token came.
    async fn refresh(&self) -> bool {
        match self {
            Self::Memory(t) => {
                t.current().await.is_some_and(|g| g.refresh_token.is_some())
                    && t.force_refresh().await.is_ok()
            }
            Self::Stored {
                store,
                server,
                tokens,
            } => {
                let refreshable = matches!(
                    store.credential(&server.id).await.ok().flatten().map(|c| c.credential),
                    Some(Credential::OAuth(ref o)) if o.refresh_token.is_some()
                );
                refreshable && tokens.renew().await.unwrap_or(false)
            }
        }
    }

    /// The transport to use: a saved server's, else Streamable HTTP.
    fn transport(&self) -> keyway::mcp::TransportChoice {
        match self {
            Self::Stored { server, .. } => store::choice(server.transport),
            Self::Memory(_) => keyway::mcp::TransportChoice::StreamableHttp,
        }
    }

    /// Whether a static token is what was refused (then never authorize).
    async fn is_static(&self) -> bool {
        match self {
            Self::Memory(_) => false,
            Self::Stored { store, server, .. } => {
                matches!(
                    store
                        .credential(&server.id)
                        .await
                        .ok()
                        .flatten()
                        .map(|c| c.credential),
                    Some(Credential::Bearer { .. })
                )
            }
        }
    }

    async fn keep(&self, grant: Grant) -> Result<(), CliError> {
        match self {
            Self::Memory(t) => {
                t.set(grant).await;
                Ok(())
            }
            Self::Stored { store, server, .. } => save_grant(store, &server.id, &grant).await,
        }
    }
}

/// What went wrong at one step, in the terms that decide what to do.
enum Failure {
    Unauthorized(Option<String>),
    Forbidden(String),
    Other(anyhow::Error),
}

impl From<ConnectError> for Failure {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::AuthorizationRequired { challenge, .. } => Self::Unauthorized(challenge),
            ConnectError::InsufficientScope { challenge, .. } => Self::Forbidden(challenge),
            other => Self::Other(other.into()),
        }
    }
}

impl From<RequestError> for Failure {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::AuthorizationRequired { challenge, .. } => Self::Unauthorized(challenge),
            RequestError::InsufficientScope { challenge, .. } => Self::Forbidden(challenge),
            other => Self::Other(other.into()),
        }
    }
}

struct Session {
    url: Url,
    http: reqwest::Client,
    authorizer: Authorizer,
    tokens: Tokens,
    headers: Vec<(http::HeaderName, Secret)>,
    deadlines: keyway::http::Deadlines,
    authorizations: u32,
    step_up: StepUp,
    /// The failure that ended the call, for the saved server's status.
    last: Option<LastStatus>,
}

impl Session {
    fn new(
        url: Url,
        http: reqwest::Client,
        authorizer: Authorizer,
        tokens: Tokens,
        headers: Vec<(http::HeaderName, Secret)>,
    ) -> Self {
        Self {
            url,
            http,
            authorizer,
            tokens,
            headers,
            deadlines: keyway::http::Deadlines::default(),
            authorizations: 0,
            step_up: StepUp::default(),
            last: None,
        }
    }

    async fn call(
        &mut self,
        tool: &str,
        arguments: JsonObject,
    ) -> Result<CallToolResult, CliError> {
        loop {
            let (op, failure) = match self.attempt(tool, &arguments).await {
                Ok(result) => return Ok(result),
                Err(f) => f,
            };
            match failure {
                Failure::Other(e) => {
                    self.last = Some(LastStatus::Error);
                    return Err(CliError::failure(e));
                }
                Failure::Unauthorized(challenge) => self.unauthorized(&op, challenge).await?,
                Failure::Forbidden(challenge) => self.forbidden(&op, &challenge).await?,
            }
        }
    }

    /// Remember how it went, for a saved server.
    async fn record(&self, outcome: &Result<CallToolResult, CliError>) {
        if let Tokens::Stored { store, server, .. } = &self.tokens {
            let status = match outcome {
                Ok(_) => LastStatus::Connected,
                Err(_) => self.last.unwrap_or(LastStatus::Error),
            };
            let _ = store.set_status(&server.id, status, None).await;
        }
    }

    /// One pass: connect, list, call. The connection is fresh each pass, so a new
    /// token is in use from the handshake on.
    async fn attempt(
        &mut self,
        tool: &str,
        arguments: &JsonObject,
    ) -> Result<CallToolResult, (String, Failure)> {
        let mut config =
            keyway::mcp::WireConfig::new(self.url.clone(), self.http.clone(), self.tokens.source());
        config.headers = self.headers.clone();
        config.deadlines = self.deadlines;
        let conn = Connection::connect(config, self.tokens.transport())
            .await
            .map_err(|e| ("initialize".to_owned(), Failure::from(e)))?;
        let outcome = async {
            let tools = conn
                .list_tools()
                .await
                .map_err(|e| ("tools/list".to_owned(), Failure::from(e)))?;
            if !tools.iter().any(|t| t.name == tool) {
                let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
                return Err((
                    "tools/list".to_owned(),
                    Failure::Other(anyhow!(
                        "the server has no tool {tool:?}; it has: {}",
                        names.join(", ")
                    )),
                ));
            }
            let op = format!("tools/call {tool}");
            conn.call_tool(tool, Some(arguments.clone()))
                .await
                .map_err(|e| (op, Failure::from(e)))
        }
        .await;
        conn.close().await;
        outcome
    }

    async fn unauthorized(&mut self, op: &str, challenge: Option<String>) -> Result<(), CliError> {
        if let Tokens::Stored { server, .. } = &self.tokens
            && server.auth == keyway::store::AuthKind::Token
            && !self.tokens.is_static().await
        {
            self.last = Some(LastStatus::NeedsAuth);
            return Err(CliError::failure(anyhow!(
                "{} needs an access token, and none is saved",
                server.name
            ))
            .with_status(ExitStatus::AuthorizationNeeded)
            .with_hint(format!(
                "keyway remove {0}, then keyway add {1} --name {0} --token <TOKEN>",
                server.name, server.url
            )));
        }
        if self.tokens.is_static().await {
            self.last = Some(LastStatus::TokenRejected);
            return Err(
                CliError::failure(anyhow!("{} rejected the saved token", self.url))
                    .with_status(ExitStatus::AuthorizationNeeded)
                    .with_hint("get a new token and add the server again with --token"),
            );
        }
        // A refused token: one silent refresh first, if there is a refresh token.
        if self.authorizations < MAX_AUTHORIZATIONS && self.tokens.refresh().await {
            self.authorizations += 1;
            return Ok(());
        }
        if self.authorizations >= MAX_AUTHORIZATIONS {
            self.last = Some(LastStatus::NeedsAuth);
            return Err(CliError::failure(anyhow!("{} still answers 401 after {} authorizations", self.url, self.authorizations))
                .with_status(ExitStatus::AuthorizationNeeded)
                .with_hint("the server rejects the tokens its own authorization server issues; check its configuration"));
        }
        // Every authorization for an operation counts against its step-up limit too.
        if !self.step_up.allow(self.url.as_str(), op) {
            return Err(self.exhausted().await);
        }
        self.authorizations += 1;
        let previous = self.tokens.previous_scopes().await;
        let values: Vec<String> = challenge.into_iter().collect();
        let grant = self
            .authorizer
            .authorize(&self.url, &values, previous.as_deref())
            .await
            .map_err(|e| {
                self.last = Some(LastStatus::NeedsAuth);
                auth::error(e)
            })?;
        self.tokens.keep(grant).await
    }

    async fn exhausted(&mut self) -> CliError {
        self.last = Some(LastStatus::NeedsAuth);
        let scopes = self
            .tokens
            .previous_scopes()
            .await
            .unwrap_or_default()
            .join(" ");
        auth::error(keyway::auth::AuthError::StepUpExhausted {
            attempts: StepUp::MAX_ATTEMPTS,
            scopes,
        })
    }

    async fn forbidden(&mut self, op: &str, header: &str) -> Result<(), CliError> {
        let parsed = challenge::bearer([header]);
        if !parsed.as_ref().is_some_and(|c| c.is_insufficient_scope()) {
            self.last = Some(LastStatus::Error);
            return Err(CliError::failure(anyhow!(
                "{} refused {op} (403 Forbidden): {header}",
                self.url
            ))
            .with_hint("this is not a scope problem keyway can fix by authorizing again"));
        }
        if !self.step_up.allow(self.url.as_str(), op) {
            return Err(self.exhausted().await);
        }
        let previous = self.tokens.previous_scopes().await;
        let grant = self
            .authorizer
            .authorize(&self.url, &[header.to_owned()], previous.as_deref())
            .await
            .map_err(auth::error)?;
        self.tokens.keep(grant).await
    }
}

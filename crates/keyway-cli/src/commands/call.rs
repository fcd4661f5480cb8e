//! `keyway call --url URL TOOL [--args JSON]`: connect, list tools, call one, print
//! the result, authorizing as the server asks (401: authorize; 403
//! insufficient_scope: step up with the union of scopes, at most 3 times).

use std::sync::Arc;

use anyhow::{Context, anyhow};
use keyway::{
    auth::{Authorizer, MemoryRegistrations, OAuthTokens, StepUp, challenge},
    mcp::{ConnectError, Connection, RequestError, result_text},
};
use rmcp::model::{CallToolResult, JsonObject};
use url::Url;

use super::auth;
use crate::{cli::CallArgs, exit::CliError, printer::Printer};

/// How many times a plain 401 may send keyway back to authorize.
const MAX_AUTHORIZATIONS: u32 = 2;

pub async fn run(args: CallArgs, printer: &Printer) -> Result<(), CliError> {
    let url = Url::parse(&args.url)
        .map_err(|e| anyhow!("--url {}: {e}", args.url))
        .map_err(|e| CliError::failure(e).with_status(crate::exit::ExitStatus::Usage))?;
    let arguments: JsonObject = match serde_json::from_str(&args.args) {
        Ok(serde_json::Value::Object(o)) => o,
        Ok(_) => {
            return Err(usage(
                "--args must be a JSON object, e.g. '{\"text\":\"hi\"}'",
            ));
        }
        Err(e) => return Err(usage(&format!("--args is not JSON: {e}"))),
    };
    let options = auth::options(&args.auth)?;
    let http = keyway::http::client().context("building the HTTP client")?;
    let authorizer = Authorizer::new(
        http.clone(),
        options,
        Arc::new(MemoryRegistrations::default()),
        auth::reporter(printer.quiet()),
    );
    let tokens = OAuthTokens::new(http.clone());
    let mut session = Session {
        url,
        http,
        authorizer,
        tokens,
        authorizations: 0,
        step_up: StepUp::default(),
    };
    let result = session.call(&args.tool, arguments).await?;

    if printer.json_mode() {
        printer.json(&result)?;
    } else {
        printer.result(result_text(&result));
    }
    if result.is_error == Some(true) {
        return Err(CliError::failure(anyhow!(
            "the tool {} reported an error",
            args.tool
        )));
    }
    Ok(())
}

fn usage(msg: &str) -> CliError {
    CliError::failure(anyhow!(msg.to_owned())).with_status(crate::exit::ExitStatus::Usage)
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
    tokens: Arc<OAuthTokens>,
    authorizations: u32,
    step_up: StepUp,
}

impl Session {
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
                Failure::Other(e) => return Err(CliError::failure(e)),
                Failure::Unauthorized(challenge) => self.unauthorized(&op, challenge).await?,
                Failure::Forbidden(challenge) => self.forbidden(&op, &challenge).await?,
            }
        }
    }

    /// One pass: connect, list, call. The connection is fresh each pass, so a new
    /// token is in use from the handshake on.
    async fn attempt(
        &mut self,
        tool: &str,
        arguments: &JsonObject,
    ) -> Result<CallToolResult, (String, Failure)> {
        let conn = Connection::open(self.url.as_str(), self.http.clone(), self.tokens.clone())
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
        // A token that was refused: one silent refresh first, if there is a refresh token.
        if let Some(g) = self.tokens.current().await
            && g.refresh_token.is_some()
            && self.tokens.force_refresh().await.is_ok()
            && self.authorizations < MAX_AUTHORIZATIONS
        {
            self.authorizations += 1;
            return Ok(());
        }
        if self.authorizations >= MAX_AUTHORIZATIONS {
            return Err(CliError::failure(anyhow!(
                "{} still answers 401 after {} authorizations",
                self.url,
                self.authorizations
            ))
            .with_status(crate::exit::ExitStatus::AuthorizationNeeded)
            .with_hint("the server rejects the tokens its own authorization server issues; check its configuration"));
        }
        // Every authorization for an operation counts against its step-up limit too.
        if !self.step_up.allow(self.url.as_str(), op) {
            return Err(self.exhausted().await);
        }
        self.authorizations += 1;
        let previous = self.tokens.current().await;
        let values: Vec<String> = challenge.into_iter().collect();
        let grant = self
            .authorizer
            .authorize(&self.url, &values, previous.as_ref())
            .await
            .map_err(auth::error)?;
        self.tokens.set(grant).await;
        Ok(())
    }

    async fn exhausted(&self) -> CliError {
        let scopes = self
            .tokens
            .current()
            .await
            .map(|g| g.requested_scopes.join(" "))
            .unwrap_or_default();
        auth::error(keyway::auth::AuthError::StepUpExhausted {
            attempts: StepUp::MAX_ATTEMPTS,
            scopes,
        })
    }

    async fn forbidden(&mut self, op: &str, header: &str) -> Result<(), CliError> {
        let parsed = challenge::bearer([header]);
        if !parsed.as_ref().is_some_and(|c| c.is_insufficient_scope()) {
            return Err(CliError::failure(anyhow!(
                "{} refused {op} (403 Forbidden): {header}",
                self.url
            ))
            .with_hint("this is not a scope problem keyway can fix by authorizing again"));
        }
        if !self.step_up.allow(self.url.as_str(), op) {
            return Err(self.exhausted().await);
        }
        let previous = self.tokens.current().await;
        let grant = self
            .authorizer
            .authorize(&self.url, &[header.to_owned()], previous.as_ref())
            .await
            .map_err(auth::error)?;
        self.tokens.set(grant).await;
        Ok(())
    }
}

//! `keyway proxy NAME|URL`: the stdio bridge. It authorizes by itself when the server
//! asks, and across processes only one proxy opens the browser for a server: the
//! others wait for its tokens (a lease in the store).

use std::{sync::Arc, time::Duration};

use anyhow::anyhow;
use keyway::{
    auth::{AuthOptions, Authorizer, BrowserMode, MemoryRegistrations, OAuthTokens, StepUp},
    bridge::{self, Authorize},
    mcp::{
        StaticToken, TokenSource,
        wire::{WireConfig, WireKind},
    },
    store::{AuthKind, Credential, ServerRecord, SqliteStore, Store, tokens::StoredTokens},
};
use url::Url;

use super::{auth, authorize::save_grant, store};
use crate::{
    cli::{ProxyArgs, TransportArg},
    exit::CliError,
    printer::Printer,
    settings::Settings,
};

pub async fn run(args: ProxyArgs, settings: &Settings, printer: &Printer) -> Result<(), CliError> {
    let mut options = auth::options(&args.auth)?;
    if options.browser == BrowserMode::None {
        return Err(store::usage(
            "--browser none reads stdin, which the MCP client uses; use system, follow or --device"
                .into(),
        ));
    }
    options.allow_paste = false;
    let http = args.deadlines.client()?;
    let deadlines = args.deadlines.deadlines();
    let reporter = auth::reporter(printer.quiet());

    let (config, target, url) =
        if args.target.starts_with("http://") || args.target.starts_with("https://") {
            let url = Url::parse(&args.target)
                .map_err(|e| store::usage(format!("{}: {e}", args.target)))?;
            let token = store::token(&args.credential)?;
            store::check_secrets_destination(
                &url,
                token.is_some() || !args.credential.headers.is_empty(),
                args.auth.allow_http,
            )?;
            let (tokens, target): (Arc<dyn TokenSource>, Target) = match token {
                Some(t) => (Arc::new(StaticToken::new(Some(t))), Target::Static),
                None => {
                    let t = OAuthTokens::new();
                    (t.clone(), Target::Memory(t))
                }
            };
            let kind = match args.transport {
                TransportArg::Http | TransportArg::Auto => WireKind::StreamableHttp,
                TransportArg::Sse => WireKind::LegacySse,
            };
            let config = WireConfig {
                url: url.clone(),
                http: http.clone(),
                tokens,
                headers: store::headers(&args.credential)?,
                kind,
                deadlines,
            };
            let authorizer =
                Authorizer::new(options, Arc::new(MemoryRegistrations::default()), reporter)
                    .map_err(auth::error)?;
            (config, (target, authorizer), url)
        } else {
            let st = store::open(settings)?;
            let server = store::find(&st, &args.target).await?;
            store::ensure_enabled(&server)?;
            let url = store::saved_url(&server)?;
            let headers = store::saved_headers(&st, &server).await?;
            let tokens = StoredTokens::new(Arc::new(st.clone()), &server.id);
            let kind = store::wire_kind(server.transport);
            let config = WireConfig {
                url: url.clone(),
                http: http.clone(),
                tokens: tokens.clone(),
                headers,
                kind,
                deadlines,
            };
            let authorizer = Authorizer::new(options, Arc::new(st.clone()), reporter)
                .map_err(auth::error)?
                .with_pending_flows(Arc::new(st.clone()));
            (
                config,
                (
                    Target::Stored {
                        store: st,
                        server,
                        tokens,
                    },
                    authorizer,
                ),
                url,
            )
        };
    let (target, authorizer) = target;
    let handler = Arc::new(ProxyAuth {
        url,
        authorizer,
        target,
        step_up: tokio::sync::Mutex::new(StepUp::default()),
        sign_ins: Default::default(),
    });
    tracing::info!(url = %handler.url, "proxy started");
    let stats = bridge::run(
        config,
        handler,
        keyway::stdio::input(),
        keyway::stdio::output(),
    )
    .await
    .map_err(|e| CliError::failure(anyhow!("{e}")))?;
    tracing::info!(?stats, "proxy ended");
    Ok(())
}

enum Target {
    Stored {
        store: SqliteStore,
        server: ServerRecord,
        tokens: Arc<StoredTokens>,
    },
    Memory(Arc<OAuthTokens>),
    Static,
}

struct ProxyAuth {
    url: Url,
    authorizer: Authorizer,
    target: Target,
    step_up: tokio::sync::Mutex<StepUp>,
    /// Sign-ins started since a message last got through after one (each may open a
    /// browser).
    sign_ins: std::sync::atomic::AtomicU32,
}

/// Sign-ins a proxy session may start in a row without any of them letting a message
/// through: the first, and a few step-ups. A server that keeps refusing whatever it
/// is given would otherwise open a browser for every message the client sends.
const MAX_SIGN_INS: u32 = 5;

/// Makes the token source read the store again when dropped.
struct ForgetOnDrop<'a>(&'a StoredTokens);

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.forget();
    }
}

/// How long a proxy waits for another one's authorization.
fn wait_limit(options: &AuthOptions) -> Duration {
    options.callback_timeout + Duration::from_secs(30)
}

impl ProxyAuth {
    async fn version(&self) -> Option<u64> {
        match &self.target {
            Target::Stored { store, server, .. } => store
                .credential(&server.id)
                .await
                .ok()
                .flatten()
                .map(|c| c.version),
            _ => None,
        }
    }

    async fn previous_scopes(&self) -> Option<Vec<String>> {
        match &self.target {
            Target::Stored { store, server, .. } => match store
                .credential(&server.id)
                .await
                .ok()
                .flatten()?
                .credential
            {
                Credential::OAuth(o) => Some(o.scopes),
                Credential::Bearer { .. } => None,
            },
            Target::Memory(t) => t.current().await.map(|g| g.requested_scopes),
            Target::Static => None,
        }
    }

    /// Run an authorization flow, unless this session already ran [`MAX_SIGN_INS`].
    async fn sign_in(
        &self,
        challenge: &[String],
        previous: Option<&[String]>,
    ) -> Result<keyway::auth::Grant, String> {
        use std::sync::atomic::Ordering;
        if self.sign_ins.fetch_add(1, Ordering::SeqCst) >= MAX_SIGN_INS {
            return Err(format!(
                "the server still refuses after {MAX_SIGN_INS} sign-ins in a row in this session; not signing in again. Run `keyway authorize` for it in a terminal (or check the server), then restart the MCP client"
            ));
        }
        self.authorizer
            .authorize(&self.url, challenge, previous)
            .await
            .map_err(|e| e.to_string())
    }

    /// Run the flow and keep what it yields. For a saved server, one proxy at a time
    /// across processes: whoever holds the lease authorizes; the others wait until
    /// the stored credential changes, then use it.
    async fn authorize(
        &self,
        challenge: Vec<String>,
        previous: Option<Vec<String>>,
    ) -> Result<(), String> {
        match &self.target {
            Target::Static => Err("the server rejected the token given to the proxy".into()),
            Target::Memory(tokens) => {
                let grant = self.sign_in(&challenge, previous.as_deref()).await?;
                tokens.set(grant).await;
                Ok(())
            }
            Target::Stored {
                store,
                server,
                tokens,
            } => {
                // Whatever comes of it, the credential may have changed under us.
                let _forget = ForgetOnDrop(tokens);
                let before = self.version().await;
                let lease = format!("authorize:{}", server.id);
                let holder = format!("proxy-{}", std::process::id());
                let started = tokio::time::Instant::now();
                loop {
                    if store
                        .try_lease(&lease, &holder, Duration::from_secs(600))
                        .await
                        .map_err(|e| e.to_string())?
                    {
                        // Someone may have finished while we waited for the lease.
                        let outcome = if self.version().await != before {
                            Ok(())
                        } else {
                            match self.sign_in(&challenge, previous.as_deref()).await {
                                Ok(grant) => save_grant(store, &server.id, &grant)
                                    .await
                                    .map_err(|_| "saving the new tokens failed".to_owned()),
                                Err(e) => Err(e),
                            }
                        };
                        let _ = store.release_lease(&lease, &holder).await;
                        return outcome;
                    }
                    if self.version().await != before {
                        tracing::info!(
                            "another keyway authorized {}; using its tokens",
                            server.name
                        );
                        return Ok(());
                    }
                    if started.elapsed() > wait_limit(self.authorizer.options()) {
                        return Err(format!(
                            "another keyway has been authorizing {} for too long",
                            server.name
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Authorize for ProxyAuth {
    async fn unauthorized(&self, challenge: Option<String>) -> Result<(), String> {
        if let Target::Stored {
            store,
            server,
            tokens,
        } = &self.target
        {
            let cred = store
                .credential(&server.id)
                .await
                .ok()
                .flatten()
                .map(|c| c.credential);
            if matches!(cred, Some(Credential::Bearer { .. })) {
                return Err(format!(
                    "{} rejected its saved token; add it again with a new --token",
                    server.name
                ));
            }
            if server.auth == AuthKind::Token {
                return Err(format!(
                    "{} needs an access token: keyway add {} --name {} --token <TOKEN>",
                    server.name, server.url, server.name
                ));
            }
            // Another process's new token, else one refresh, before a new authorization.
            if matches!(&cred, Some(Credential::OAuth(_))) && tokens.renew().await.unwrap_or(false)
            {
                return Ok(());
            }
        }
        if let Target::Memory(t) = &self.target
            && t.current().await.is_some_and(|g| g.refresh_token.is_some())
            && t.force_refresh().await.is_ok()
        {
            return Ok(());
        }
        let previous = self.previous_scopes().await;
        self.authorize(challenge.into_iter().collect(), previous)
            .await
    }

    fn delivered_after_authorizing(&self) {
        self.sign_ins.store(0, std::sync::atomic::Ordering::SeqCst);
    }

    async fn still_wanted(&self) -> bool {
        match &self.target {
            Target::Stored { store, server, .. } => {
                store::StillSaved {
                    store: store.clone(),
                    id: server.id.clone(),
                }
                .check()
                .await
            }
            _ => true,
        }
    }

    async fn insufficient_scope(&self, challenge: &str, operation: &str) -> Result<(), String> {
        if !self
            .step_up
            .lock()
            .await
            .allow(self.url.as_str(), operation)
        {
            return Err(format!(
                "the server still refuses {operation} after {} authorizations",
                StepUp::MAX_ATTEMPTS
            ));
        }
        let previous = self.previous_scopes().await;
        self.authorize(vec![challenge.to_owned()], previous).await
    }
}

//! `keyway proxy NAME|URL`: the stdio bridge. When the server asks, it authorizes by
//! the library's policy (`keyway::client::Policy`): refresh once, then a flow, step-up
//! on insufficient_scope; across processes only one proxy opens the browser for a
//! server, the others wait for its tokens (a lease in the store).

use std::sync::Arc;

use anyhow::anyhow;
use keyway::{
    auth::{Authorizer, BrowserMode, MemoryRegistrations, OAuthTokens},
    bridge,
    client::{Credentials, Policy},
    mcp::{
        StaticToken,
        wire::{WireConfig, WireKind},
    },
    store::tokens::StoredTokens,
};
use url::Url;

use super::{auth, store};
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

    if !args.target.contains("://") && args.target.contains('/') {
        // Not a name (names have no slash): a URL without its scheme.
        return Err(store::usage(format!(
            "{}: {}",
            args.target,
            crate::cli::server_url(&args.target)
                .err()
                .unwrap_or_default()
        )));
    }
    let (config, credentials, authorizer, url) =
        if args.target.starts_with("http://") || args.target.starts_with("https://") {
            let url = Url::parse(&args.target)
                .map_err(|e| store::usage(format!("{}: {e}", args.target)))?;
            let token = store::token(&args.credential)?;
            store::check_secrets_destination(
                &url,
                token.is_some() || !args.credential.headers.is_empty(),
                args.auth.allow_http,
            )?;
            let credentials = match token {
                Some(t) => Credentials::Static(Arc::new(StaticToken::new(Some(t)))),
                None => Credentials::Memory(OAuthTokens::new()),
            };
            let kind = match args.transport {
                TransportArg::Http | TransportArg::Auto => WireKind::StreamableHttp,
                TransportArg::Sse => WireKind::LegacySse,
            };
            let config = WireConfig {
                url: url.clone(),
                http: http.clone(),
                tokens: credentials.token_source(),
                headers: store::headers(&args.credential)?,
                kind,
                deadlines,
            };
            let authorizer =
                Authorizer::new(options, Arc::new(MemoryRegistrations::default()), reporter)
                    .map_err(auth::error)?;
            (config, credentials, authorizer, url)
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
            let credentials = Credentials::Stored {
                store: st,
                server,
                tokens,
            };
            (config, credentials, authorizer, url)
        };
    let policy = Arc::new(Policy::new(url, authorizer, credentials));
    tracing::info!(url = %policy.url(), "proxy started");
    let stats = bridge::run(
        config,
        policy,
        keyway::stdio::input(),
        keyway::stdio::output(),
    )
    .await
    .map_err(|e| CliError::failure(anyhow!("{e}")))?;
    tracing::info!(?stats, "proxy ended");
    Ok(())
}

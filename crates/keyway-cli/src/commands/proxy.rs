//! `keyway proxy NAME|URL`: the stdio bridge. When the server asks, it authorizes by
//! the library's policy (`keyway::client::Policy`): refresh once, then a flow, step-up
//! on insufficient_scope; across processes only one proxy opens the browser for a
//! server, the others wait for its tokens (a lease in the store).

use std::sync::Arc;

use anyhow::anyhow;
use keyway::{
    auth::{Authorizer, BrowserMode, MemoryRegistrations},
    bridge,
    client::{Credentials, Policy},
    mcp::{StaticToken, wire::WireConfig},
    naming,
    store::{AuthKind, NewServer, Store, Transport, tokens::StoredTokens},
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
    let is_url = args.target.starts_with("http://") || args.target.starts_with("https://");
    if !is_url {
        // These describe a URL's server; a saved one has its own (keyway edit changes
        // them). (--token is not among them: it may come from KEYWAY_TOKEN, set for
        // other commands; a saved server's own credential is used.)
        let given: Vec<&str> = [
            (args.transport != TransportArg::Auto, "--transport"),
            (args.save.is_some(), "--save"),
            (!args.credential.headers.is_empty(), "--header"),
        ]
        .into_iter()
        .filter_map(|(set, flag)| set.then_some(flag))
        .collect();
        if !given.is_empty() {
            return Err(store::usage(format!(
                "{} {} for a URL's server; {} is saved with its own (keyway edit {} changes it)",
                given.join(", "),
                if given.len() == 1 { "is" } else { "are" },
                args.target,
                args.target
            )));
        }
    }
    let (st, server) = if is_url {
        let url =
            Url::parse(&args.target).map_err(|e| store::usage(format!("{}: {e}", args.target)))?;
        let (token, headers) = store::secrets_for(&args.credential, &url, args.auth.allow_http)?;
        let asked = match args.transport {
            TransportArg::Http => Some(Transport::Http),
            TransportArg::Sse => Some(Transport::Sse),
            TransportArg::Auto => None,
        };
        if token.is_some() && args.save.is_none() {
            // A token given each time (the client's config has it): kept in memory
            // only, as the client keeps it.
            // Nothing is saved here, so this runs on every start of the client: only a
            // URL that looks like a legacy endpoint is probed (a probe costs a
            // session's round trips before the client's own initialize).
            let kind = match asked {
                Some(t) => store::wire_kind(t),
                None if sse_like(&url) => {
                    store::wire_kind(detect(&http, &url, &token, &headers).await)
                }
                None => store::wire_kind(Transport::Http),
            };
            let credentials = Credentials::Static(Arc::new(StaticToken::new(token)));
            let config = WireConfig {
                url: url.clone(),
                http: http.clone(),
                tokens: credentials.token_source(),
                headers,
                kind,
                deadlines,
                protocol: args.protocol.clone(),
                last_protocol: None,
            };
            let authorizer =
                Authorizer::new(options, Arc::new(MemoryRegistrations::default()), reporter)
                    .map_err(auth::error)?;
            return bridge_to(
                config,
                Arc::new(Policy::new(url, authorizer, credentials)),
                &args.ignore_tool,
            )
            .await;
        }
        // The tokens it obtains are kept for the URL: in the server saved for it, or
        // a new entry (named by --save, or after the host), so the next start of the
        // client does not authorize again.
        let st = store::open(settings).await?;
        let saved = match &args.save {
            Some(name) => st.server(name).await.map_err(store::store_error)?,
            None => st
                .servers()
                .await
                .map_err(store::store_error)?
                .into_iter()
                .find(|s| super::transfer::same_url(&s.url, url.as_str())),
        };
        let server = match saved {
            Some(s) if super::transfer::same_url(&s.url, url.as_str()) => {
                tracing::info!(name = %s.name, "using the saved server for this URL");
                s
            }
            Some(s) => {
                return Err(store::store_error(keyway::store::StoreError::NameTaken(
                    s.name.clone(),
                ))
                .with_hint(format!(
                    "{} is saved for {}; --save another name, or keyway proxy {}",
                    s.name, s.url, s.name
                )));
            }
            None => {
                // Saved once, so found once, as add finds it: Streamable HTTP first,
                // legacy SSE when that is refused.
                let transport = match asked {
                    Some(t) => t,
                    None => detect(&http, &url, &token, &headers).await,
                };
                let taken = store::names(&st).await?;
                let name = args
                    .save
                    .clone()
                    .unwrap_or_else(|| naming::unique(&naming::default_name(&url), &taken));
                let auth = if token.is_some() || !headers.is_empty() {
                    AuthKind::Token
                } else {
                    AuthKind::None
                };
                let new = NewServer {
                    id: store::new_id(),
                    name: name.clone(),
                    url: url.to_string(),
                    transport,
                    auth,
                    headers: store::header_pairs(&headers),
                };
                let cred = token.map(|t| keyway::store::Credential::Bearer { token: t });
                match st.create_server(&new, cred.as_ref()).await {
                    Ok(rec) => {
                        if !printer.quiet() {
                            eprintln!(
                                "keyway: saved {url} as {name}, so its tokens outlast this proxy (keyway remove {name} forgets it)"
                            );
                        }
                        rec
                    }
                    // Another proxy for this URL, started at the same moment, saved it
                    // first: use its entry.
                    Err(keyway::store::StoreError::NameTaken(_)) => st
                        .servers()
                        .await
                        .map_err(store::store_error)?
                        .into_iter()
                        .find(|s| super::transfer::same_url(&s.url, url.as_str()))
                        .ok_or_else(|| {
                            store::store_error(keyway::store::StoreError::NameTaken(name.clone()))
                        })?,
                    Err(e) => return Err(store::store_error(e)),
                }
            }
        };
        (st, server)
    } else {
        let st = store::open(settings).await?;
        let server = store::find(&st, &args.target).await?;
        (st, server)
    };
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
        protocol: args.protocol.clone(),
        last_protocol: server.protocol.clone(),
    };
    let authorizer = Authorizer::new(options, Arc::new(st.clone()), reporter)
        .map_err(auth::error)?
        .with_pending_flows(Arc::new(st.clone()));
    let credentials = Credentials::Stored {
        store: st,
        server,
        tokens,
    };
    bridge_to(
        config,
        Arc::new(Policy::new(url, authorizer, credentials)),
        &args.ignore_tool,
    )
    .await
}

/// Bridge stdio to the server until the client closes stdin.
async fn bridge_to(
    config: WireConfig,
    policy: Arc<Policy>,
    ignore_tools: &[String],
) -> Result<(), CliError> {
    tracing::info!(url = %policy.url(), "proxy started");
    let stats = bridge::run_with(
        config,
        policy,
        keyway::stdio::input(),
        keyway::stdio::output(),
        bridge::BridgeOptions {
            ignore_tools: keyway::merge::ToolFilter::new(ignore_tools.iter().cloned()),
        },
    )
    .await
    .map_err(|e| CliError::failure(anyhow!("{e}")))?;
    tracing::info!(?stats, "proxy ended");
    Ok(())
}

/// A URL whose path ends in `/sse`, where legacy HTTP+SSE servers listen.
fn sse_like(url: &Url) -> bool {
    url.path().trim_end_matches('/').ends_with("/sse")
}

/// The transport of a server not saved yet, as add finds it: Streamable HTTP, else
/// legacy SSE (a probe; when nothing answers, the URL's path decides).
async fn detect(
    http: &keyway::http::WireClient,
    url: &Url,
    token: &Option<keyway::Secret>,
    headers: &[(http::HeaderName, keyway::Secret)],
) -> Transport {
    let opts = keyway::probe::ProbeOptions {
        token: token.clone(),
        headers: headers.to_vec(),
        transport: keyway::mcp::TransportChoice::Auto,
        ..Default::default()
    };
    let probe = super::probe::run_probe(http, url.as_str(), &opts).await;
    keyway::manage::saved_transport(None, &probe)
}

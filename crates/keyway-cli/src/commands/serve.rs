//! `keyway serve`: the gateway, on stdio or on a local HTTP listener.

use std::sync::Arc;

use anyhow::{Context, anyhow};
use keyway::{
    Secret,
    gateway::{self, Gateway, UpstreamConfig, edge::EdgeLimits, http::Guard},
    mcp::wire::WireConfig,
    store::{Store, tokens::StoredTokens},
};

use super::{store, testbed_signals::StopSignals};
use crate::{cli::ServeArgs, exit::CliError, printer::Printer, settings::Settings};

pub async fn run(args: ServeArgs, settings: &Settings, printer: &Printer) -> Result<(), CliError> {
    let _ = printer;
    if let Some(addr) = args.listen
        && !addr.ip().is_loopback()
        && args.token_file.is_none()
    {
        return Err(store::usage(format!(
            "listening on {addr}, beyond loopback, needs --token-file (a token you hand to the clients on purpose)"
        )));
    }
    let st = store::open(settings).await?;
    let http = args.deadlines.client()?;
    let mut upstreams = Vec::new();
    for s in st
        .servers()
        .await
        .map_err(store::store_error)?
        .into_iter()
        .filter(|s| s.enabled)
    {
        let url = store::saved_url(&s)?;
        // One server whose headers do not open is left out, named; the rest are served.
        let headers = match st.headers(&s.id).await {
            Ok(h) => store::header_names(h),
            Err(e @ keyway::store::StoreError::Unreadable { .. }) => {
                tracing::warn!(server = %s.name, "not served: {e}");
                eprintln!("warning: {} is not served: {e}", s.name);
                continue;
            }
            Err(e) => return Err(store::store_error(e)),
        };
        let kind = store::wire_kind(s.transport);
        let tokens = StoredTokens::new(Arc::new(st.clone()), &s.id);
        upstreams.push(UpstreamConfig {
            name: s.name.clone(),
            wire: WireConfig {
                url,
                http: http.clone(),
                tokens,
                headers,
                kind,
                deadlines: args.deadlines.deadlines(),
                protocol: args.protocol.clone(),
                last_protocol: s.protocol.clone(),
            },
            liveness: Some(Arc::new(store::StillSaved {
                store: st.clone(),
                id: s.id.clone(),
            })),
            request_timeout: std::time::Duration::from_secs(args.request_timeout),
            ignore_tools: keyway::merge::ToolFilter::new(args.ignore_tool.iter().cloned()),
        });
    }
    if upstreams.is_empty() {
        tracing::warn!("no enabled servers: the gateway has nothing to offer (keyway add URL)");
    }
    let count = upstreams.len();
    let prefix = args.prefix;
    let gw = Gateway::start_with(upstreams, prefix).await;
    if prefix == keyway::gateway::PrefixMode::Never {
        for clash in gw.clashes().await {
            tracing::warn!("{clash}");
            eprintln!("warning: {clash} (--prefix never: the first server wins a name)");
        }
    }
    match args.listen {
        None => {
            gateway::serve_stdio(gw, keyway::stdio::input(), keyway::stdio::output())
                .await
                .context("serving on stdio")?;
            Ok(())
        }
        Some(addr) => {
            let stop = StopSignals::install()?;
            // Always a token: any web page the user visits can send requests to a
            // loopback port; only a page that knows the token gets an answer.
            let token_path = args
                .token_file
                .clone()
                .unwrap_or_else(|| settings.home.join(GATEWAY_TOKEN_FILE));
            let token = read_token(&token_path, args.token_file.is_none())?;
            let listener = gateway::edge::listen(addr).map_err(|e| {
                CliError::failure(anyhow!("cannot listen on {addr}: {e}"))
                    .with_hint("pick another port")
            })?;
            let local = listener
                .local_addr()
                .context("reading the listen address")?;
            let limits = EdgeLimits {
                max_connections: args.max_connections as usize,
                ..EdgeLimits::default()
            };
            let app = gateway::http::app(
                gw.clone(),
                Guard::for_addr(local, token, &args.allowed_host),
                limits,
            );
            eprintln!("keyway gateway on http://{local}/mcp for {count} server(s)");
            eprintln!(
                "clients send Authorization: Bearer <the token in {}>",
                token_path.display()
            );
            gateway::edge::serve(
                listener,
                app,
                limits,
                async move {
                    let _ = stop.wait().await;
                },
                DRAIN,
            )
            .await
            .context("serving HTTP")?;
            gw.close().await;
            Ok(())
        }
    }
}

/// The shortest gateway token keyway accepts.
const MIN_TOKEN_LEN: usize = 16;

/// The token file `keyway serve --listen` makes in the home when none is given.
pub const GATEWAY_TOKEN_FILE: &str = "gateway.token";

/// How long requests under way may take to finish once the gateway is told to stop.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The gateway's token: from `path`, made there first when keyway owns the file.
/// Either way it must be readable by its owner only.
fn read_token(path: &std::path::Path, ours: bool) -> Result<Secret, CliError> {
    if ours {
        std::fs::create_dir_all(path.parent().unwrap_or(path))
            .with_context(|| format!("creating {}", path.display()))?;
        let token = keyway::store::private_token_file(path).map_err(store::store_error)?;
        if token.expose().len() < MIN_TOKEN_LEN {
            return Err(CliError::failure(anyhow!(
                "the gateway's token file {} is empty or cut short",
                path.display()
            ))
            .with_hint("delete it: keyway makes a new one at the next start"));
        }
        return Ok(token);
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_LEN {
        return Err(store::usage(format!(
            "the token in {} is shorter than {MIN_TOKEN_LEN} characters",
            path.display()
        )));
    }
    // A file you were handed (a container's secret mount is often root's, 0444) is
    // fine to read; one that others could change is not.
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        let me = rustix::process::getuid().as_raw();
        if meta.mode() & 0o022 != 0 || (meta.uid() != me && meta.uid() != 0) {
            return Err(store::usage(format!(
                "the token file {} can be changed by other users (mode {:03o}, owner {}); `chmod 600` it",
                path.display(),
                meta.mode() & 0o777,
                meta.uid()
            )));
        }
        if meta.mode() & 0o004 != 0 {
            tracing::warn!(file = %path.display(), "the token file is readable by every user of this machine");
        }
    }
    Ok(Secret::new(token.to_owned()))
}

//! `keyway serve`: the gateway, on stdio or on a local HTTP listener.

use std::sync::Arc;

use anyhow::{Context, anyhow};
use keyway::{
    Secret,
    gateway::{self, Gateway, UpstreamConfig, http::Guard},
    mcp::wire::WireConfig,
    store::{Store, tokens::StoredTokens},
};

use super::{store, testbed_signals::StopSignals};
use crate::{cli::ServeArgs, exit::CliError, printer::Printer, settings::Settings};

pub async fn run(args: ServeArgs, settings: &Settings, printer: &Printer) -> Result<(), CliError> {
    let _ = printer;
    let token = match &args.token_file {
        Some(path) => Some(read_token(path)?),
        None => None,
    };
    if let Some(addr) = args.listen
        && !addr.ip().is_loopback()
        && token.is_none()
    {
        return Err(store::usage(format!(
            "listening on {addr}, beyond loopback, needs --token-file"
        )));
    }
    let st = store::open(settings)?;
    let http = keyway::http::client().context("building the HTTP client")?;
    let mut upstreams = Vec::new();
    for s in st
        .servers()
        .await
        .map_err(store::store_error)?
        .into_iter()
        .filter(|s| s.enabled)
    {
        let url = store::saved_url(&s)?;
        let headers = store::saved_headers(&st, &s).await?;
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
            },
            liveness: Some(Arc::new(store::StillSaved {
                store: st.clone(),
                id: s.id.clone(),
            })),
            request_timeout: std::time::Duration::from_secs(args.request_timeout),
        });
    }
    if upstreams.is_empty() {
        tracing::warn!("no enabled servers: the gateway has nothing to offer (keyway add URL)");
    }
    let count = upstreams.len();
    let gw = Gateway::start(upstreams).await;
    match args.listen {
        None => {
            gateway::serve_stdio(gw, keyway::stdio::input(), keyway::stdio::output())
                .await
                .context("serving on stdio")?;
            Ok(())
        }
        Some(addr) => {
            let stop = StopSignals::install()?;
            let listener = gateway::http::listen(addr).map_err(|e| {
                CliError::failure(anyhow!("cannot listen on {addr}: {e}"))
                    .with_hint("pick another port")
            })?;
            let local = listener
                .local_addr()
                .context("reading the listen address")?;
            let app = gateway::http::app(
                gw.clone(),
                Guard::for_addr(local, token, &args.allowed_host),
            );
            eprintln!("keyway gateway on http://{local}/mcp for {count} server(s)");
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait().await;
                })
                .await
                .context("serving HTTP")?;
            gw.close().await;
            Ok(())
        }
    }
}

fn read_token(path: &std::path::Path) -> Result<Secret, CliError> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = text.trim();
    if token.len() < 16 {
        return Err(store::usage(format!(
            "the token in {} is shorter than 16 characters",
            path.display()
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o077 != 0)
            .unwrap_or(false)
        {
            tracing::warn!(file = %path.display(), "the token file is readable by others; chmod 600 it");
        }
    }
    Ok(Secret::new(token.to_owned()))
}

//! `keyway tools [NAME...]`: every enabled server's tools at once, merged under
//! per-server prefixes. Each server has its own deadline; a failing one is retried
//! once (a dropped connection), reported in its row, and never holds up the others.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, anyhow};
use futures::future::join_all;
use keyway::{
    mcp::{ConnectError, Connection},
    merge,
    store::{LastStatus, ServerRecord, SqliteStore, Store, tokens::StoredTokens},
};
use serde::Serialize;

use super::store;
use crate::{cli::ToolsArgs, exit::CliError, printer::Printer, settings::Settings};

#[derive(Debug, Serialize)]
struct ServerRow {
    name: String,
    prefix: String,
    /// `ok`, `needs-auth`, `error`, `timeout`.
    status: &'static str,
    error: Option<String>,
    tools: usize,
    elapsed_ms: u128,
}

#[derive(Debug, Serialize)]
struct ToolRow {
    name: String,
    server: String,
    tool: String,
    description: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    servers: Vec<ServerRow>,
    tools: Vec<ToolRow>,
}

type Listed = Result<Vec<(String, Option<String>)>, (&'static str, String)>;

pub async fn run(args: ToolsArgs, settings: &Settings, printer: &Printer) -> Result<(), CliError> {
    if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout < 3600.0) {
        return Err(store::usage(
            "--timeout must be a number of seconds between 0 and 3600".into(),
        ));
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    let st = store::open(settings)?;
    let mut servers = Vec::new();
    if args.names.is_empty() {
        servers = st
            .servers()
            .await
            .map_err(store::store_error)?
            .into_iter()
            .filter(|s| s.enabled)
            .collect();
    } else {
        for n in &args.names {
            servers.push(store::find(&st, n).await?);
        }
    }
    if servers.is_empty() {
        printer.result("no servers: keyway add URL");
        return Ok(());
    }
    let http =
        keyway::http::WireClient::new(&Default::default()).context("building the HTTP client")?;
    let results = join_all(servers.iter().map(|s| {
        let (st, http) = (st.clone(), http.clone());
        async move {
            let started = tokio::time::Instant::now();
            let listed = match tokio::time::timeout(timeout, list_with_retry(&st, s, &http)).await {
                Ok(r) => r,
                Err(_) => Err((
                    "timeout",
                    format!("no answer within {:.1} s", timeout.as_secs_f64()),
                )),
            };
            (listed, started.elapsed())
        }
    }))
    .await;

    let prefixes = merge::prefixes(servers.iter().map(|s| s.name.as_str()));
    let mut rows = Vec::new();
    let mut per_server = Vec::new();
    for ((s, prefix), (listed, elapsed)) in servers.iter().zip(&prefixes).zip(&results) {
        let status = match listed {
            Ok(_) => LastStatus::Connected,
            Err(("needs-auth", _)) => LastStatus::NeedsAuth,
            Err(_) => LastStatus::Error,
        };
        let _ = st
            .set_status(&s.id, status, listed.as_ref().err().map(|e| e.1.as_str()))
            .await;
        rows.push(ServerRow {
            name: s.name.clone(),
            prefix: prefix.clone(),
            status: match listed {
                Ok(_) => "ok",
                Err((kind, _)) => kind,
            },
            error: listed.as_ref().err().map(|e| e.1.clone()),
            tools: listed.as_ref().map(Vec::len).unwrap_or(0),
            elapsed_ms: elapsed.as_millis(),
        });
        per_server.push((
            prefix.clone(),
            listed
                .as_ref()
                .map(|t| t.iter().map(|(n, _)| n.clone()).collect())
                .unwrap_or_default(),
        ));
    }
    let merged = merge::merge(&per_server);
    let tools: Vec<ToolRow> = merged
        .into_iter()
        .map(|m| {
            let description = results[m.server]
                .0
                .as_ref()
                .ok()
                .and_then(|t| t.iter().find(|(n, _)| *n == m.tool))
                .and_then(|(_, d)| d.clone());
            ToolRow {
                name: m.name,
                server: servers[m.server].name.clone(),
                tool: m.tool,
                description,
            }
        })
        .collect();
    let report = Report {
        servers: rows,
        tools,
    };
    if printer.json_mode() {
        printer.json(&report)?;
    } else {
        for t in &report.tools {
            let d = t
                .description
                .as_deref()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("");
            printer.result(format!("{:<40} {d}", t.name));
        }
        for s in report.servers.iter().filter(|s| s.status != "ok") {
            printer.result(format!(
                "{}: {} ({})",
                s.name,
                s.status,
                s.error.as_deref().unwrap_or("")
            ));
        }
        printer.step(format!(
            "{} tools from {} of {} servers",
            report.tools.len(),
            report.servers.iter().filter(|s| s.status == "ok").count(),
            report.servers.len()
        ));
    }
    if report.servers.iter().all(|s| s.status != "ok") {
        return Err(CliError::failure(anyhow!("no server answered")));
    }
    Ok(())
}

/// Connect and list; a dropped connection gets one more try.
async fn list_with_retry(
    st: &SqliteStore,
    s: &ServerRecord,
    http: &keyway::http::WireClient,
) -> Listed {
    let first = list_once(st, s, http).await;
    match &first {
        Err(("error", _)) | Err(("unreachable", _)) => list_once(st, s, http)
            .await
            .map_err(|(k, e)| (if k == "unreachable" { "error" } else { k }, e)),
        _ => first,
    }
}

async fn list_once(st: &SqliteStore, s: &ServerRecord, http: &keyway::http::WireClient) -> Listed {
    let headers = store::header_names(
        st.headers(&s.id)
            .await
            .map_err(|e| ("error", e.to_string()))?,
    );
    let tokens = StoredTokens::new(Arc::new(st.clone()), &s.id);
    let conn = match Connection::open_transport(
        &s.url,
        http.clone(),
        tokens,
        headers,
        store::choice(s.transport),
    )
    .await
    {
        Ok(c) => c,
        Err(
            e @ (ConnectError::AuthorizationRequired { .. }
            | ConnectError::InsufficientScope { .. }),
        ) => {
            return Err(("needs-auth", format!("{e}: keyway authorize {}", s.name)));
        }
        Err(e @ ConnectError::Unreachable { .. }) => return Err(("unreachable", e.to_string())),
        Err(e) => return Err(("error", e.to_string())),
    };
    let listed = conn.list_tools().await;
    conn.close().await;
    listed
        .map(|tools| {
            tools
                .into_iter()
                .map(|t| (t.name.to_string(), t.description.map(|d| d.to_string())))
                .collect()
        })
        .map_err(|e| ("error", e.to_string()))
}

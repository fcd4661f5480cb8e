//! `keyway tools [NAME...]`: every enabled server's tools at once, merged under
//! per-server prefixes. Each server has its own deadline; a failing one is retried
//! once (a dropped connection), reported in its row, and never holds up the others.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, anyhow};
use futures::{StreamExt, stream::FuturesUnordered};
use keyway::{
    mcp::{ConnectError, Connection, WireConfig},
    merge,
    store::{AnyStore, LastStatus, ServerRecord, Store, tokens::StoredTokens},
};
use serde::Serialize;

use super::store;
use crate::{
    cli::ToolsArgs,
    exit::{CliError, ExitStatus},
    printer::Printer,
    settings::Settings,
};

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
    #[serde(skip_serializing_if = "Option::is_none")]
    input_schema: Option<serde_json::Value>,
}

/// One tool, prompt or resource of a server.
#[derive(Debug, Clone)]
pub struct Item {
    /// The name (a resource's URI).
    pub name: String,
    pub description: Option<String>,
    /// A tool's input schema.
    pub schema: Option<serde_json::Value>,
}

/// What a listing asks each server for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    Tools,
    Prompts,
    Resources,
}

impl What {
    fn plural(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources => "resources",
        }
    }
}

type Listed = Result<Vec<Item>, (&'static str, String)>;

pub async fn run(
    args: ToolsArgs,
    what: What,
    settings: &Settings,
    printer: &Printer,
) -> Result<(), CliError> {
    let timeout = Duration::from_secs_f64(args.timeout);
    let st = store::open(settings).await?;
    let servers = store::chosen(&st, &args.names).await?;
    if servers.is_empty() {
        let saved = st.servers().await.map_err(store::store_error)?.len();
        if saved == 0 {
            printer.result("no servers yet: keyway add URL");
            return Ok(());
        }
        return Err(
            CliError::failure(anyhow!("all {saved} saved servers are disabled"))
                .with_hint("keyway enable NAME (keyway list shows them)"),
        );
    }
    let http =
        keyway::http::WireClient::new(&Default::default()).context("building the HTTP client")?;
    let prefixes = merge::prefixes(servers.iter().map(|s| s.name.as_str()));
    let mut pending: FuturesUnordered<_> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (st, http) = (st.clone(), http.clone());
            async move {
                let (listed, elapsed) = check_one(&st, s, &http, timeout, what).await;
                (i, listed, elapsed)
            }
        })
        .collect();

    // Each server's rows are printed as it answers; --json waits for all.
    let mut results: Vec<Option<(Listed, Duration)>> = servers.iter().map(|_| None).collect();
    let waiting_for = |results: &[Option<(Listed, Duration)>]| {
        let left: Vec<&str> = servers
            .iter()
            .zip(results)
            .filter(|(_, r)| r.is_none())
            .map(|(s, _)| s.name.as_str())
            .collect();
        format!(
            "waiting for {} of {} servers: {}",
            left.len(),
            servers.len(),
            left.join(", ")
        )
    };
    let waiting = crate::progress::Waiting::start(waiting_for(&results));
    let mut printed = std::collections::HashSet::new();
    while let Some((i, listed, elapsed)) = pending.next().await {
        let s = &servers[i];
        if !printer.json_mode() {
            match &listed {
                Ok(tools) => {
                    for item in tools {
                        let name = match what {
                            What::Resources => item.name.clone(),
                            _ => format!("{}{}{}", prefixes[i], merge::SEPARATOR, item.name),
                        };
                        if printed.insert(name.clone()) {
                            let d = item
                                .description
                                .as_deref()
                                .unwrap_or("")
                                .lines()
                                .next()
                                .unwrap_or("");
                            let line = match what {
                                What::Resources => format!("{:<16} {name:<40} {d}", s.name),
                                _ => format!("{name:<40} {d}"),
                            };
                            printer.result(line.trim_end());
                            if args.schema
                                && let Some(schema) = &item.schema
                            {
                                let text = serde_json::to_string_pretty(schema).unwrap_or_default();
                                for l in text.lines() {
                                    printer.result(format!("    {l}"));
                                }
                            }
                        }
                    }
                }
                Err((kind, why)) => printer.result(format!("{}: {kind} ({why})", s.name)),
            }
        }
        results[i] = Some((listed, elapsed));
        waiting.set(waiting_for(&results));
    }
    drop(waiting);
    let results: Vec<(Listed, Duration)> = results
        .into_iter()
        .map(|r| r.unwrap_or((Err(("error", "not listed".into())), Duration::ZERO)))
        .collect();

    let mut rows = Vec::new();
    let mut per_server = Vec::new();
    for ((s, prefix), (listed, elapsed)) in servers.iter().zip(&prefixes).zip(&results) {
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
                .map(|t| t.iter().map(|i| i.name.clone()).collect())
                .unwrap_or_default(),
        ));
    }
    let merged = merge::merge(&per_server);
    let tools: Vec<ToolRow> = merged
        .into_iter()
        .map(|m| {
            let item = results[m.server]
                .0
                .as_ref()
                .ok()
                .and_then(|t| t.iter().find(|i| i.name == m.tool));
            ToolRow {
                name: match what {
                    What::Resources => m.tool.clone(),
                    _ => m.name,
                },
                server: servers[m.server].name.clone(),
                tool: m.tool,
                description: item.and_then(|i| i.description.clone()),
                input_schema: item.and_then(|i| i.schema.clone()).filter(|_| args.schema),
            }
        })
        .collect();
    if printer.json_mode() {
        // `{"servers": [...], "tools": [...]}` (or "prompts", "resources"); each
        // server's count is under the same name.
        let servers: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                if let Some(o) = v.as_object_mut()
                    && let Some(n) = o.remove("tools")
                {
                    o.insert(what.plural().to_owned(), n);
                }
                v
            })
            .collect();
        let items: Vec<serde_json::Value> = tools
            .iter()
            .map(|t| {
                let mut v = serde_json::to_value(t).unwrap_or_default();
                // A prompt's own name is "prompt", a resource's URI "uri".
                if let Some(o) = v.as_object_mut()
                    && what != What::Tools
                    && let Some(n) = o.remove("tool")
                {
                    let key = if what == What::Prompts {
                        "prompt"
                    } else {
                        "uri"
                    };
                    o.insert(key.to_owned(), n);
                }
                v
            })
            .collect();
        printer.json(&serde_json::json!({"servers": servers, what.plural(): items}))?;
    } else {
        printer.step(format!(
            "{} {} from {} of {} servers",
            tools.len(),
            what.plural(),
            rows.iter().filter(|s| s.status == "ok").count(),
            rows.len()
        ));
    }
    nothing_answered(&rows)
}

/// The error when no server listed its tools, saying why: authorization needed (exit 3,
/// with the command), or no answer.
fn nothing_answered(rows: &[ServerRow]) -> Result<(), CliError> {
    if rows.iter().any(|s| s.status == "ok") {
        return Ok(());
    }
    let needing: Vec<&str> = rows
        .iter()
        .filter(|s| s.status == "needs-auth")
        .map(|s| s.name.as_str())
        .collect();
    if needing.len() == rows.len() {
        let what = if rows.len() == 1 {
            format!("{} needs authorization", rows[0].name)
        } else {
            "every server needs authorization".to_owned()
        };
        return Err(CliError::failure(anyhow!(what))
            .with_status(ExitStatus::AuthorizationNeeded)
            .with_hint(
                needing
                    .iter()
                    .map(|n| format!("keyway authorize {n}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            ));
    }
    let mut err = CliError::failure(anyhow!(if rows.len() == 1 {
        format!("{} did not answer", rows[0].name)
    } else {
        "no server answered".to_owned()
    }));
    if !needing.is_empty() {
        err = err.with_hint(format!(
            "{} also need authorization: keyway authorize NAME",
            needing.join(", ")
        ));
    }
    Err(err)
}

/// Connect to one server and list its tools within `timeout` (a dropped connection
/// gets one more try), and record how it went as the server's state; how long it took.
pub async fn check_one(
    st: &AnyStore,
    s: &ServerRecord,
    http: &keyway::http::WireClient,
    timeout: Duration,
    what: What,
) -> (Listed, Duration) {
    let started = tokio::time::Instant::now();
    let listed = match tokio::time::timeout(timeout, list_with_retry(st, s, http, what)).await {
        Ok(r) => r,
        Err(_) => Err((
            "timeout",
            format!(
                "no answer within {:.1} s (--timeout; the server may just be slow)",
                timeout.as_secs_f64()
            ),
        )),
    };
    // --timeout is the caller's own limit: running out of it says nothing new about
    // the server, whose state stays what it was.
    let status = match &listed {
        Ok(_) => Some(LastStatus::Connected),
        Err(("needs-auth", _)) => Some(LastStatus::NeedsAuth),
        Err(("timeout", _)) => None,
        Err(_) => Some(LastStatus::Error),
    };
    if let Some(status) = status {
        let _ = st
            .set_status(&s.id, status, listed.as_ref().err().map(|e| e.1.as_str()))
            .await;
    }
    (listed, started.elapsed())
}

/// One server's row in `keyway check` and `keyway doctor`.
#[derive(Debug, Serialize)]
pub struct Checked {
    pub name: String,
    /// `ok`, `needs-auth`, `error`, `timeout`, `disabled`.
    pub status: &'static str,
    pub tools: Option<usize>,
    pub error: Option<String>,
    pub elapsed_ms: u128,
}

/// Check `servers` at once (the disabled ones are reported, not contacted).
pub async fn check_servers(
    st: &AnyStore,
    servers: &[ServerRecord],
    timeout: Duration,
) -> anyhow::Result<Vec<Checked>> {
    let http =
        keyway::http::WireClient::new(&Default::default()).context("building the HTTP client")?;
    let _waiting = crate::progress::Waiting::start(format!(
        "checking {} servers (at most {:.0} s each)",
        servers.len(),
        timeout.as_secs_f64()
    ));
    Ok(futures::future::join_all(servers.iter().map(|s| {
        let (st, http) = (st.clone(), http.clone());
        async move {
            if !s.enabled {
                return Checked {
                    name: s.name.clone(),
                    status: "disabled",
                    tools: None,
                    error: None,
                    elapsed_ms: 0,
                };
            }
            let (listed, elapsed) = check_one(&st, s, &http, timeout, What::Tools).await;
            Checked {
                name: s.name.clone(),
                status: match &listed {
                    Ok(_) => "ok",
                    Err((kind, _)) => match *kind {
                        "unreachable" => "error",
                        k => k,
                    },
                },
                tools: listed.as_ref().ok().map(Vec::len),
                error: listed.err().map(|e| e.1),
                elapsed_ms: elapsed.as_millis(),
            }
        }
    }))
    .await)
}

/// `keyway check [NAME...]`: re-check servers and update their state.
pub async fn check(
    args: crate::cli::CheckArgs,
    settings: &Settings,
    printer: &Printer,
) -> Result<(), CliError> {
    let st = store::open(settings).await?;
    let servers = if args.names.is_empty() {
        st.servers().await.map_err(store::store_error)?
    } else {
        let mut v = Vec::new();
        for n in &args.names {
            v.push(store::find(&st, n).await?);
        }
        v
    };
    if servers.is_empty() {
        printer.result("no servers yet: keyway add URL");
        return Ok(());
    }
    let checked = check_servers(&st, &servers, Duration::from_secs_f64(args.timeout)).await?;
    if printer.json_mode() {
        printer.json(&checked)?;
    } else {
        print_checked(&checked, printer);
    }
    checked_outcome(&checked)
}

/// The checked servers as a table, with each one's error under it.
pub fn print_checked(checked: &[Checked], printer: &Printer) {
    let width = checked
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    printer.result(crate::progress::paint::heading(&format!(
        "{:<width$}  {:<10}  TOOLS  TIME",
        "NAME", "STATUS"
    )));
    for c in checked {
        printer.result(format!(
            "{:<width$}  {}  {:<5}  {}",
            c.name,
            crate::progress::paint::state(c.status, 10),
            c.tools.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            if c.status == "disabled" {
                "-".to_owned()
            } else {
                format!("{} ms", c.elapsed_ms)
            }
        ));
        if let Some(e) = &c.error {
            printer.result(format!("{:<width$}  {e}", ""));
        }
    }
}

/// Exit 0 when every enabled server answered, 3 when the ones that did not need
/// authorization, 1 otherwise.
pub fn checked_outcome(checked: &[Checked]) -> Result<(), CliError> {
    let bad: Vec<&Checked> = checked
        .iter()
        .filter(|c| !matches!(c.status, "ok" | "disabled"))
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    let names = bad
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if bad.iter().all(|c| c.status == "needs-auth") {
        return Err(CliError::failure(anyhow!("{names}: authorization needed"))
            .with_status(ExitStatus::AuthorizationNeeded)
            .with_hint(
                bad.iter()
                    .map(|c| format!("keyway authorize {}", c.name))
                    .collect::<Vec<_>>()
                    .join("; "),
            ));
    }
    Err(CliError::failure(anyhow!(
        "{} of {} servers did not answer as they should: {names}",
        bad.len(),
        checked.len()
    )))
}

/// Connect and list; a dropped connection gets one more try.
async fn list_with_retry(
    st: &AnyStore,
    s: &ServerRecord,
    http: &keyway::http::WireClient,
    what: What,
) -> Listed {
    let first = list_once(st, s, http, what).await;
    match &first {
        Err(("error", _)) | Err(("unreachable", _)) => list_once(st, s, http, what)
            .await
            .map_err(|(k, e)| (if k == "unreachable" { "error" } else { k }, e)),
        _ => first,
    }
}

async fn list_once(
    st: &AnyStore,
    s: &ServerRecord,
    http: &keyway::http::WireClient,
    what: What,
) -> Listed {
    let headers = store::header_names(
        st.headers(&s.id)
            .await
            .map_err(|e| ("error", e.to_string()))?,
    );
    let tokens = StoredTokens::new(Arc::new(st.clone()), &s.id);
    let url = url::Url::parse(&s.url).map_err(|e| ("error", format!("{}: {e}", s.url)))?;
    let mut config = WireConfig::new(url, http.clone(), tokens);
    config.headers = headers;
    config.last_protocol = s.protocol.clone();
    let conn = match Connection::connect(config, store::choice(s.transport)).await {
        Ok(c) => {
            let spoken = c.server().protocol_version;
            if s.protocol.as_deref() != Some(spoken.as_str())
                && let Err(e) = st.set_protocol(&s.id, Some(&spoken)).await
            {
                tracing::debug!(error = %e, "the server's protocol revision was not saved");
            }
            c
        }
        Err(
            e @ (ConnectError::AuthorizationRequired { .. }
            | ConnectError::InsufficientScope { .. }),
        ) => {
            return Err(("needs-auth", format!("{e}: keyway authorize {}", s.name)));
        }
        Err(e @ ConnectError::Unreachable { .. }) => return Err(("unreachable", e.one_line())),
        Err(e) => return Err(("error", e.one_line())),
    };
    let caps = conn.capabilities().unwrap_or_default();
    let listed = match what {
        What::Tools => conn.list_tools().await.map(|tools| {
            tools
                .into_iter()
                .map(|t| Item {
                    name: t.name.to_string(),
                    description: t.description.map(|d| d.to_string()),
                    schema: Some(serde_json::Value::Object((*t.input_schema).clone())),
                })
                .collect()
        }),
        // A server that offers none is not asked (it would answer "method not found").
        What::Prompts if caps.prompts.is_none() => Ok(Vec::new()),
        What::Prompts => conn.list_prompts().await.map(|prompts| {
            prompts
                .into_iter()
                .map(|p| Item {
                    name: p.name.to_string(),
                    description: p.description.map(|d| d.to_string()),
                    schema: None,
                })
                .collect()
        }),
        What::Resources if caps.resources.is_none() => Ok(Vec::new()),
        What::Resources => conn.list_resources().await.map(|resources| {
            resources
                .into_iter()
                .map(|r| Item {
                    description: r
                        .description
                        .clone()
                        .map(|d| d.to_string())
                        .or_else(|| Some(r.name.to_string())),
                    name: r.uri.to_string(),
                    schema: None,
                })
                .collect()
        }),
    };
    conn.close().await;
    listed.map_err(|e| ("error", e.to_string()))
}

//! `keyway import FILE` from the MCP client configs people already have, and
//! `keyway export --format` for the snippet that runs `keyway proxy NAME`.

use std::io::Write;

use anyhow::{Context, anyhow};
use keyway::{
    Secret, naming,
    probe::{ProbeClass, ProbeOptions},
    store::{AuthKind, Credential, LastStatus, NewServer, Store, Transport},
};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{probe::run_probe, store};
use crate::{
    cli::{ExportArgs, ExportFormat, ImportArgs},
    exit::CliError,
    printer::Printer,
    settings::Settings,
};

/// A remote server found in a config.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub url: String,
    pub transport: Transport,
    pub token: Option<Secret>,
    pub headers: Vec<(String, Secret)>,
}

/// What import did with one entry.
#[derive(Debug, Serialize)]
pub struct Imported {
    pub name: String,
    pub url: Option<String>,
    /// `added`, `skipped`.
    pub outcome: &'static str,
    pub detail: String,
}

/// Every remote server in a Claude Desktop / Cursor (`mcpServers`) or VS Code
/// (`servers`, also under `mcp`) config. Pure. Local (stdio) entries come back as
/// skipped, except `mcp-remote` bridges, whose URL and headers are read.
pub fn parse(config: &Value) -> (Vec<Entry>, Vec<Imported>) {
    let servers = config
        .get("mcpServers")
        .or_else(|| config.get("servers"))
        .or_else(|| config.get("mcp").and_then(|m| m.get("servers")))
        .and_then(Value::as_object);
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    let Some(servers) = servers else {
        return (entries, skipped);
    };
    for (name, def) in servers {
        let env = def
            .get("env")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let (url, transport, raw_headers) =
            if let Some(url) = def.get("url").and_then(Value::as_str) {
                let transport = match def
                    .get("type")
                    .or_else(|| def.get("transport"))
                    .and_then(Value::as_str)
                {
                    Some("sse") => Transport::Sse,
                    _ => Transport::Http,
                };
                let headers: Vec<(String, String)> = def
                    .get("headers")
                    .and_then(Value::as_object)
                    .map(|h| {
                        h.iter()
                            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default();
                (url.to_owned(), transport, headers)
            } else if let Some((url, headers)) = mcp_remote(def) {
                (url, Transport::Http, headers)
            } else {
                skipped.push(Imported {
                    name: name.clone(),
                    url: None,
                    outcome: "skipped",
                    detail: "a local (stdio) server; keyway bridges remote ones".into(),
                });
                continue;
            };
        let mut token = None;
        let mut headers = Vec::new();
        for (k, v) in raw_headers {
            let v = interpolate(&v, &env);
            match v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
            {
                Some(t) if k.eq_ignore_ascii_case("authorization") => {
                    token = Some(Secret::new(t.trim().to_owned()))
                }
                _ => headers.push((k, Secret::new(v))),
            }
        }
        entries.push(Entry {
            name: name.clone(),
            url,
            transport,
            token,
            headers,
        });
    }
    (entries, skipped)
}

/// `npx mcp-remote URL --header 'Name: value'`: the URL and headers it bridges to.
fn mcp_remote(def: &Value) -> Option<(String, Vec<(String, String)>)> {
    let args: Vec<&str> = def
        .get("args")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let at = args
        .iter()
        .position(|a| a.starts_with("mcp-remote") || a.ends_with("/mcp-remote"))?;
    let rest = &args[at + 1..];
    let url = rest
        .iter()
        .find(|a| a.starts_with("http://") || a.starts_with("https://"))?;
    let mut headers = Vec::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        if *a == "--header"
            && let Some(h) = it.next()
            && let Some((k, v)) = h.split_once(':')
        {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    Some(((*url).to_owned(), headers))
}

/// `${VAR}` from the entry's `env`.
fn interpolate(v: &str, env: &Map<String, Value>) -> String {
    let mut out = v.to_owned();
    for (k, val) in env {
        if let Some(s) = val.as_str() {
            out = out.replace(&format!("${{{k}}}"), s);
        }
    }
    out
}

pub async fn import(
    args: ImportArgs,
    settings: &Settings,
    printer: &Printer,
) -> Result<(), CliError> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let config: Value = serde_json::from_str(&text)
        .map_err(|e| store::usage(format!("{} is not JSON: {e}", args.file.display())))?;
    let (entries, mut results) = parse(&config);
    if entries.is_empty() && results.is_empty() {
        return Err(store::usage(format!(
            "{} has no `mcpServers` or `servers`; is it an MCP client config?",
            args.file.display()
        )));
    }
    let st = store::open(settings)?;
    let http =
        keyway::http::WireClient::new(&Default::default()).context("building the HTTP client")?;
    // A token or header for a plain-http server elsewhere is neither sent nor stored:
    // it would cross the network in the clear on every request.
    let in_clear = |e: &Entry| {
        (e.token.is_some() || !e.headers.is_empty())
            && url::Url::parse(&e.url)
                .is_ok_and(|u| keyway::auth::urls::may_carry_secrets(&u, false).is_err())
    };
    // Probe them all at once: one slow server does not hold up the others.
    let probes = futures::future::join_all(entries.iter().map(|e| {
        let opts = (!in_clear(e)).then(|| ProbeOptions {
            token: e.token.clone(),
            headers: store::header_names(e.headers.iter().cloned()),
            ..Default::default()
        });
        let http = http.clone();
        let url = e.url.clone();
        async move {
            match opts {
                Some(opts) => Some(run_probe(&http, &url, &opts).await),
                None => None,
            }
        }
    }))
    .await;
    for (e, p) in entries.into_iter().zip(probes) {
        let Some(p) = p else {
            results.push(Imported {
                name: e.name.clone(),
                url: Some(e.url.clone()),
                outcome: "skipped",
                detail: "its token or headers would go over plain http to another machine; add it with its https URL (or `keyway add URL --allow-http` for development)".into(),
            });
            continue;
        };
        let taken: Vec<String> = st
            .servers()
            .await
            .map_err(store::store_error)?
            .into_iter()
            .map(|s| s.name)
            .collect();
        let base = if e.name.trim().is_empty() {
            url::Url::parse(&e.url)
                .map(|u| naming::default_name(&u))
                .unwrap_or_else(|_| "mcp".into())
        } else {
            e.name.trim().to_owned()
        };
        let name = naming::unique(&base, &taken);
        let auth = match (p.class, e.token.is_some() || !e.headers.is_empty()) {
            (ProbeClass::Oauth, false) => AuthKind::Oauth,
            (_, true) | (ProbeClass::TokenOnly, _) => AuthKind::Token,
            _ => AuthKind::None,
        };
        let server = NewServer {
            id: store::new_id(),
            name: name.clone(),
            url: e.url.clone(),
            transport: e.transport,
            auth,
            headers: e.headers.clone(),
        };
        let cred = e.token.clone().map(|token| Credential::Bearer { token });
        let rec = st
            .create_server(&server, cred.as_ref())
            .await
            .map_err(store::store_error)?;
        let status = match p.class {
            ProbeClass::Open => Some(LastStatus::Connected),
            ProbeClass::TokenRejected => Some(LastStatus::TokenRejected),
            ProbeClass::Unreachable | ProbeClass::Error => Some(LastStatus::Error),
            _ => None,
        };
        if let Some(s) = status {
            let detail = (s != LastStatus::Connected).then(|| super::add::probe_line(&p));
            st.set_status(&rec.id, s, detail.as_deref())
                .await
                .map_err(store::store_error)?;
        }
        results.push(Imported {
            name,
            url: Some(e.url),
            outcome: "added",
            detail: p.class.as_str().to_owned(),
        });
    }
    if printer.json_mode() {
        printer.json(&results)?;
    } else {
        for r in &results {
            printer.result(format!(
                "{:<8} {}{} ({})",
                r.outcome,
                r.name,
                r.url
                    .as_deref()
                    .map(|u| format!(" {u}"))
                    .unwrap_or_default(),
                r.detail
            ));
        }
        printer.step("next: keyway list, then keyway authorize NAME for the oauth ones");
    }
    Ok(())
}

/// How an MCP client should start this keyway: the `PATH` entry that leads to this
/// binary when there is one (`~/.cargo/bin/keyway`, `/usr/local/bin/keyway`: it keeps
/// working after an upgrade), else this binary's own absolute path, never a symlink
/// resolved to a versioned file.
fn command_path() -> String {
    let Ok(me) = std::env::current_exe() else {
        return "keyway".into();
    };
    let real = me.canonicalize().unwrap_or_else(|_| me.clone());
    let file = me
        .file_name()
        .map(ToOwned::to_owned)
        .unwrap_or_else(|| "keyway".into());
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .filter(|dir| dir.is_absolute())
            .map(|dir| dir.join(&file))
            .find(|candidate| candidate.canonicalize().is_ok_and(|c| c == real))
    });
    on_path.unwrap_or(me).display().to_string()
}

pub async fn export(
    args: ExportArgs,
    settings: &Settings,
    printer: &Printer,
) -> Result<(), CliError> {
    let st = store::open(settings)?;
    let servers = st.servers().await.map_err(store::store_error)?;
    let exe = command_path();
    // The client starts keyway from its own directory: the home must not be relative.
    let home = std::path::absolute(&settings.home).unwrap_or_else(|_| settings.home.clone());
    let mut map = Map::new();
    for s in servers.iter().filter(|s| s.enabled) {
        let mut a: Vec<String> = Vec::new();
        if settings.home_explicit {
            a.push("--home".into());
            a.push(home.display().to_string());
        }
        a.push("proxy".into());
        a.push(s.name.clone());
        let entry = match args.format {
            ExportFormat::Vscode => json!({"type": "stdio", "command": exe, "args": a}),
            ExportFormat::Claude | ExportFormat::Cursor => json!({"command": exe, "args": a}),
        };
        map.insert(s.name.clone(), entry);
    }
    let key = match args.format {
        ExportFormat::Vscode => "servers",
        ExportFormat::Claude | ExportFormat::Cursor => "mcpServers",
    };
    let doc = json!({ key: map });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| anyhow!("{e}"))?;
    // The snippet is the result, JSON either way.
    crate::printer::emit(|out| writeln!(out, "{text}"))?;
    let _ = printer;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_formats_and_mcp_remote() {
        let claude = json!({"mcpServers": {
            "local": {"command": "node", "args": ["server.js"]},
            "bridged": {"command": "npx", "args": ["-y", "mcp-remote", "https://a.example/mcp", "--header", "Authorization: Bearer ${TOK}"], "env": {"TOK": "t0k"}},
            "remote": {"url": "https://b.example/mcp", "headers": {"X-Api-Key": "k"}}
        }});
        let (entries, skipped) = parse(&claude);
        assert_eq!(skipped.len(), 1);
        let bridged = entries.iter().find(|e| e.name == "bridged").unwrap();
        assert_eq!(bridged.url, "https://a.example/mcp");
        assert_eq!(bridged.token.as_ref().unwrap().expose(), "t0k");
        let remote = entries.iter().find(|e| e.name == "remote").unwrap();
        assert_eq!(remote.headers[0].0, "X-Api-Key");
        assert!(remote.token.is_none());

        let vscode = json!({"servers": {"v": {"type": "sse", "url": "https://c.example/sse"}}});
        let (entries, _) = parse(&vscode);
        assert_eq!(entries[0].transport, Transport::Sse);
        let nested =
            json!({"mcp": {"servers": {"v": {"type": "http", "url": "https://c.example/mcp"}}}});
        assert_eq!(parse(&nested).0.len(), 1);
        assert!(parse(&json!({"other": 1})).0.is_empty());
    }
}

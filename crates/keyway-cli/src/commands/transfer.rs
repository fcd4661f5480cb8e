//! `keyway import FILE` from the MCP client configs people already have, and
//! `keyway export --format` for the snippet that runs `keyway proxy NAME`.

use std::{io::Write, path::PathBuf};

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
    cli::{ExportArgs, ExportFormat, ImportArgs, ImportClient},
    exit::CliError,
    printer::Printer,
    settings::Settings,
};

/// A remote server found in a config.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub url: String,
    /// The transport the config names (`type`, mcp-remote's `--transport`); `None`:
    /// detected as `add` does.
    pub transport: Option<Transport>,
    pub token: Option<Secret>,
    pub headers: Vec<(String, Secret)>,
    /// Header values not saved: placeholders nobody filled in (`${input:...}`, an
    /// unset `${VAR}`), another Authorization scheme, what HTTP cannot carry. The
    /// header, and why.
    pub unfilled: Vec<(String, String)>,
    /// Run through `mcp-remote` (a bridge `keyway proxy` replaces).
    pub bridged: bool,
}

/// What import did with one entry.
#[derive(Debug, Serialize)]
pub struct Imported {
    pub name: String,
    pub url: Option<String>,
    /// `added`, `exists` (the URL is saved already), `skipped`.
    pub outcome: &'static str,
    pub detail: String,
    /// What is left to do for it, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl Imported {
    fn skipped(name: &str, url: Option<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            url,
            outcome: "skipped",
            detail: detail.into(),
            next: None,
        }
    }
}

/// A config file as its clients write it: JSON with comments and trailing commas
/// (VS Code's and Claude Code's JSONC).
pub fn parse_text(text: &str) -> Result<Value, String> {
    jsonc_parser::parse_to_serde_value::<Option<Value>>(text, &jsonc())
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the file is empty".to_owned())
}

/// What client configs are written in: JSON with comments and trailing commas
/// (JSONC), nothing looser.
fn jsonc() -> jsonc_parser::ParseOptions {
    jsonc_parser::ParseOptions {
        allow_comments: true,
        allow_trailing_commas: true,
        allow_loose_object_property_names: false,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
    }
}

/// The server maps of a config: Claude Desktop, Cursor and Claude Code's
/// `mcpServers`, VS Code's `servers` (also under `mcp`), and Claude Code's
/// per-project `projects.<dir>.mcpServers` for `project` (the current directory).
fn server_maps<'a>(config: &'a Value, project: Option<&str>) -> Vec<&'a Map<String, Value>> {
    let mut maps: Vec<&Map<String, Value>> = [
        config.get("mcpServers"),
        config.get("servers"),
        config.get("mcp").and_then(|m| m.get("servers")),
    ]
    .into_iter()
    .flatten()
    .filter_map(Value::as_object)
    .collect();
    if let Some(dir) = project
        && let Some(p) = config
            .get("projects")
            .and_then(|p| p.get(dir))
            .and_then(|p| p.get("mcpServers"))
            .and_then(Value::as_object)
    {
        maps.push(p);
    }
    maps
}

/// Every remote server in a config. Pure (`lookup` is the environment). Local
/// (stdio) entries come back as skipped, except `mcp-remote` bridges, whose URL,
/// headers and transport are read.
pub fn parse(
    config: &Value,
    project: Option<&str>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> (Vec<Entry>, Vec<Imported>) {
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    for servers in server_maps(config, project) {
        for (name, def) in servers {
            let env = def
                .get("env")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let declared = def
                .get("type")
                .or_else(|| def.get("transport"))
                .and_then(Value::as_str);
            let (url, transport, raw_headers, bridged) = if let Some(url) =
                def.get("url").and_then(Value::as_str)
            {
                let transport = match declared {
                    Some("sse") => Some(Transport::Sse),
                    Some("http" | "streamable-http" | "streamableHttp") => Some(Transport::Http),
                    _ => None,
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
                (url.to_owned(), transport, headers, false)
            } else if let Some(bridge) = mcp_remote(def) {
                (bridge.url, bridge.transport, bridge.headers, true)
            } else {
                skipped.push(Imported::skipped(
                    name,
                    None,
                    "a local (stdio) server; keyway bridges remote ones",
                ));
                continue;
            };
            let expand = |v: &str| interpolate(v, &env, lookup);
            // A URL is never filled in from variables: it is stored and shown in the
            // clear, and a secret there (`?apiKey=${KEY}`) would be too.
            if url.contains("${") {
                skipped.push(Imported::skipped(
                    name,
                    Some(url),
                    "its URL has a placeholder; keyway add URL with the real URL (and the secret as --header or --token)",
                ));
                continue;
            }
            if let Err(why) = crate::cli::server_url(&url) {
                skipped.push(Imported::skipped(name, Some(url), why));
                continue;
            }
            if name.trim().is_empty() || name.chars().any(char::is_control) {
                skipped.push(Imported::skipped(
                    name,
                    Some(url),
                    "its name is not a plain name; keyway add URL --name NAME",
                ));
                continue;
            }
            let mut token = None;
            let mut headers = Vec::new();
            let mut unfilled = Vec::new();
            for (k, v) in raw_headers {
                let v = expand(&v);
                if let Some(at) = v.find("${") {
                    let placeholder = v[at..]
                        .split_inclusive('}')
                        .next()
                        .unwrap_or(&v[at..])
                        .to_owned();
                    unfilled.push((
                        k,
                        format!("{placeholder} is a placeholder nothing fills in"),
                    ));
                    continue;
                }
                if k.eq_ignore_ascii_case("authorization") {
                    // The token, as add takes it; another scheme is not something
                    // keyway sends, and is never stored as a plain header.
                    match v.split_once(' ') {
                        Some((scheme, t))
                            if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() =>
                        {
                            token = Some(Secret::new(t.trim().to_owned()))
                        }
                        _ => unfilled.push((k, "a scheme other than Bearer".to_owned())),
                    }
                    continue;
                }
                if http::HeaderName::from_bytes(k.as_bytes()).is_err()
                    || http::HeaderValue::from_str(&v).is_err()
                {
                    unfilled.push((k, "a header name or value HTTP cannot carry".to_owned()));
                    continue;
                }
                headers.push((k, Secret::new(v)));
            }
            entries.push(Entry {
                name: name.clone(),
                url,
                transport,
                token,
                headers,
                unfilled,
                bridged,
            });
        }
    }
    (entries, skipped)
}

/// What an `npx mcp-remote URL ...` entry bridges to.
struct Bridge {
    url: String,
    headers: Vec<(String, String)>,
    transport: Option<Transport>,
}

/// `npx mcp-remote URL --header 'Name: value' --transport sse-only`.
fn mcp_remote(def: &Value) -> Option<Bridge> {
    let args: Vec<&str> = def
        .get("args")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let at = args.iter().position(|a| {
        let a = a.split('@').next().unwrap_or(a);
        a == "mcp-remote" || a.ends_with("/mcp-remote")
    })?;
    let rest = &args[at + 1..];
    let url = rest
        .iter()
        .find(|a| a.starts_with("http://") || a.starts_with("https://"))?;
    let mut headers = Vec::new();
    let mut transport = None;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        if *a == "--header"
            && let Some(h) = it.next()
            && let Some((k, v)) = h.split_once(':')
        {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        if *a == "--transport"
            && let Some(t) = it.next()
        {
            transport = match *t {
                "sse-only" => Some(Transport::Sse),
                "http-only" => Some(Transport::Http),
                _ => None,
            };
        }
    }
    Some(Bridge {
        url: (*url).to_owned(),
        headers,
        transport,
    })
}

/// `${VAR}` (and VS Code's `${env:VAR}`) from the entry's `env`, else `lookup`;
/// what nothing fills in (`${input:id}` prompts included) stays as written.
fn interpolate(
    v: &str,
    env: &Map<String, Value>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> String {
    store::substitute(v, &|inner| {
        if inner.starts_with("input:") {
            return None;
        }
        let var = inner.strip_prefix("env:").unwrap_or(inner);
        env.get(var)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| lookup(var))
    })
    .text
}

/// A URL as saved URLs are compared: parsed and printed again (case of the
/// scheme and host, default ports), without a trailing slash.
pub fn same_url(a: &str, b: &str) -> bool {
    let norm = |u: &str| {
        url::Url::parse(u)
            .map(|u| u.to_string())
            .unwrap_or_else(|_| u.to_owned())
            .trim_end_matches('/')
            .to_owned()
    };
    norm(a) == norm(b)
}

/// The configs each client keeps, where it keeps them (those that exist are read
/// by `keyway import` without a file).
pub fn default_configs(client: Option<ImportClient>) -> Vec<(ImportClient, PathBuf)> {
    let mut out = Vec::new();
    let base = directories::BaseDirs::new();
    let cwd = std::env::current_dir().ok();
    let want = |c: ImportClient| client.is_none_or(|x| x == c);
    if let Some(b) = &base {
        if want(ImportClient::Claude) {
            out.push((
                ImportClient::Claude,
                b.config_dir()
                    .join("Claude")
                    .join("claude_desktop_config.json"),
            ));
        }
        if want(ImportClient::ClaudeCode) {
            out.push((ImportClient::ClaudeCode, b.home_dir().join(".claude.json")));
        }
        if want(ImportClient::Cursor) {
            out.push((
                ImportClient::Cursor,
                b.home_dir().join(".cursor").join("mcp.json"),
            ));
        }
        if want(ImportClient::Vscode) {
            out.push((
                ImportClient::Vscode,
                b.config_dir().join("Code").join("User").join("mcp.json"),
            ));
        }
    }
    if let Some(d) = &cwd {
        if want(ImportClient::ClaudeCode) {
            out.push((ImportClient::ClaudeCode, d.join(".mcp.json")));
        }
        if want(ImportClient::Cursor) {
            out.push((ImportClient::Cursor, d.join(".cursor").join("mcp.json")));
        }
        if want(ImportClient::Vscode) {
            out.push((ImportClient::Vscode, d.join(".vscode").join("mcp.json")));
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|(_, p)| seen.insert(p.clone()));
    out
}

pub async fn import(
    args: ImportArgs,
    settings: &Settings,
    printer: &Printer,
) -> Result<(), CliError> {
    let files: Vec<PathBuf> = match &args.file {
        Some(f) => vec![f.clone()],
        None => {
            let found: Vec<PathBuf> = default_configs(args.from)
                .into_iter()
                .map(|(_, p)| p)
                .filter(|p| p.is_file())
                .collect();
            if found.is_empty() {
                let looked: Vec<String> = default_configs(args.from)
                    .into_iter()
                    .map(|(_, p)| p.display().to_string())
                    .collect();
                return Err(CliError::failure(anyhow!(
                    "no MCP client config found; looked in {}",
                    looked.join(", ")
                ))
                .with_hint("give the file: keyway import PATH"));
            }
            found
        }
    };
    let project = std::env::current_dir()
        .ok()
        .map(|d| d.display().to_string());
    let mut entries = Vec::new();
    let mut results = Vec::new();
    for file in &files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let config = parse_text(&text)
            .map_err(|e| store::usage(format!("{} is not JSON: {e}", file.display())))?;
        // `${VAR}` comes from the environment only for a file named on the command
        // line; a config found in the current directory (a cloned project's
        // .mcp.json) gets the entry's own `env` only, so it cannot send this
        // machine's secrets to a server it names.
        let named = args.file.is_some();
        let (found, skipped) = parse(&config, project.as_deref(), &|v| {
            if named { std::env::var(v).ok() } else { None }
        });
        if found.is_empty() && skipped.is_empty() && args.file.is_some() {
            return Err(store::usage(format!(
                "{} has no `mcpServers` or `servers`; is it an MCP client config?",
                file.display()
            )));
        }
        printer.step(format!("reading {}", file.display()));
        entries.extend(found);
        results.extend(skipped);
    }
    let st = store::open(settings).await?;
    let http =
        keyway::http::WireClient::new(&Default::default()).context("building the HTTP client")?;
    // A URL that is saved already (by an earlier import or an add) is not added again.
    let saved = st.servers().await.map_err(store::store_error)?;
    let mut fresh: Vec<Entry> = Vec::new();
    for e in entries {
        let same = saved
            .iter()
            .find(|s| same_url(&s.url, &e.url))
            .map(|s| s.name.clone())
            .or_else(|| {
                fresh
                    .iter()
                    .find(|f| same_url(&f.url, &e.url))
                    .map(|f| f.name.clone())
            });
        match same {
            Some(name) => results.push(Imported {
                name: e.name.clone(),
                url: Some(e.url.clone()),
                outcome: "exists",
                detail: format!("already there as {name}"),
                next: None,
            }),
            None => fresh.push(e),
        }
    }
    // A token or header for a plain-http server elsewhere is neither sent nor stored:
    // it would cross the network in the clear on every request.
    let in_clear = |e: &Entry| {
        (e.token.is_some() || !e.headers.is_empty())
            && url::Url::parse(&e.url)
                .is_ok_and(|u| keyway::auth::urls::may_carry_secrets(&u, false).is_err())
    };
    // Probe them all at once: one slow server does not hold up the others.
    let probes = futures::future::join_all(fresh.iter().map(|e| {
        let opts = (!in_clear(e)).then(|| ProbeOptions {
            token: e.token.clone(),
            headers: store::header_names(e.headers.iter().cloned()),
            transport: match e.transport {
                Some(t) => store::choice(t),
                None => keyway::mcp::TransportChoice::Auto,
            },
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
    let mut bridged = 0;
    for (e, p) in fresh.into_iter().zip(probes) {
        let Some(p) = p else {
            results.push(Imported::skipped(
                &e.name,
                Some(e.url.clone()),
                "its token or headers would go over plain http to another machine; add it with its https URL (or `keyway add URL --allow-http` for development)",
            ));
            continue;
        };
        let taken = store::names(&st).await?;
        let base = if e.name.trim().is_empty() {
            url::Url::parse(&e.url)
                .map(|u| naming::default_name(&u))
                .unwrap_or_else(|_| "mcp".into())
        } else {
            e.name.trim().to_owned()
        };
        let name = naming::unique(&base, &taken);
        let secrets = e.token.is_some() || !e.headers.is_empty();
        let token_unfilled = e
            .unfilled
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        let auth = match (p.class, secrets || token_unfilled) {
            (ProbeClass::Oauth, false) => AuthKind::Oauth,
            (_, true) | (ProbeClass::TokenOnly, _) => AuthKind::Token,
            _ => AuthKind::None,
        };
        let server = NewServer {
            id: store::new_id(),
            name: name.clone(),
            url: e.url.clone(),
            transport: keyway::manage::saved_transport(e.transport, &p),
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
        let mut detail = p.class.as_str().to_owned();
        let mut next: Vec<String> = match auth {
            AuthKind::Oauth => vec![format!("keyway authorize {name}")],
            AuthKind::Token if cred.is_none() && (e.headers.is_empty() || token_unfilled) => {
                vec![format!("keyway set-token {name}")]
            }
            _ => Vec::new(),
        };
        for (header, placeholder) in &e.unfilled {
            detail.push_str(&format!("; {header} not saved: {placeholder}"));
            if !header.eq_ignore_ascii_case("authorization") {
                next.push(format!("keyway edit {name} --header '{header}: VALUE'"));
            }
        }
        let next = (!next.is_empty()).then(|| next.join("; "));
        if e.bridged {
            bridged += 1;
        }
        results.push(Imported {
            name,
            url: Some(e.url),
            outcome: "added",
            detail,
            next,
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
            if let Some(n) = &r.next {
                printer.step(format!("         next: {n}"));
            }
        }
        if bridged > 0 {
            printer.step(format!(
                "{bridged} of them ran through mcp-remote: `keyway export --format FORMAT --write` rewrites those entries to run `keyway proxy NAME` (FORMAT: claude, claude-code, cursor, vscode; --dry-run shows the change first)"
            ));
        }
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
    let st = store::open(settings).await?;
    let servers = store::chosen(&st, &args.names).await?;
    if servers.is_empty() {
        return Err(CliError::failure(anyhow!("no enabled servers to export"))
            .with_hint("keyway add URL (or keyway enable NAME)"));
    }
    let exe = command_path();
    // The client starts keyway from its own directory: the home must not be relative.
    let home = std::path::absolute(&settings.home).unwrap_or_else(|_| settings.home.clone());
    let entries: Vec<(String, String, Value)> = servers
        .iter()
        .map(|s| {
            let mut a: Vec<String> = Vec::new();
            if settings.home_explicit {
                a.push("--home".into());
                a.push(home.display().to_string());
            }
            a.push("proxy".into());
            a.push(s.name.clone());
            let entry = match args.format {
                ExportFormat::Vscode | ExportFormat::ClaudeCode => {
                    json!({"type": "stdio", "command": exe, "args": a})
                }
                ExportFormat::Claude | ExportFormat::Cursor => json!({"command": exe, "args": a}),
            };
            (s.name.clone(), s.url.clone(), entry)
        })
        .collect();
    let key = match args.format {
        ExportFormat::Vscode => "servers",
        _ => "mcpServers",
    };
    if !args.write {
        let map: Map<String, Value> = entries
            .iter()
            .map(|(name, _, e)| (name.clone(), e.clone()))
            .collect();
        let text =
            serde_json::to_string_pretty(&json!({ key: map })).map_err(|e| anyhow!("{e}"))?;
        // The snippet is the result, JSON either way.
        crate::printer::emit(|out| writeln!(out, "{text}"))?;
        return Ok(());
    }
    let path = match &args.config {
        Some(p) => p.clone(),
        None => client_config_path(args.format).ok_or_else(|| {
            anyhow!("no home directory to find the client's config in; give --config FILE")
        })?,
    };
    // A config that is a link (a dotfiles checkout) is edited where it lives.
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    let before = match std::fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(anyhow!("reading {}: {e}", path.display()).into()),
    };
    let (after, notes) =
        write_entries(before.as_deref().unwrap_or(""), key, &entries).map_err(|e| {
            store::usage(format!(
                "{} is not JSON keyway can edit: {e}",
                path.display()
            ))
        })?;
    let diff = similar::TextDiff::from_lines(before.as_deref().unwrap_or(""), &after)
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("{} (before)", path.display()),
            &format!("{} (after)", path.display()),
        )
        .to_string();
    let changed = before.as_deref() != Some(after.as_str());
    if printer.json_mode() {
        printer.json(&json!({
            "config": path,
            "changed": changed,
            "written": changed && !args.dry_run,
            "backup": (changed && !args.dry_run && before.is_some()).then(|| backup_path(&path)),
            "notes": notes,
            "diff": diff,
        }))?;
    } else {
        for n in &notes {
            printer.step(n);
        }
        if changed {
            printer.result(diff.trim_end());
        }
    }
    if !changed {
        printer.step(format!("{} already has these entries", path.display()));
        return Ok(());
    }
    if args.dry_run {
        printer.step("--dry-run: nothing written");
        return Ok(());
    }
    if let Some(old) = &before {
        let backup = backup_path(&path);
        write_keeping_mode(&backup, old, &path)
            .map_err(|e| anyhow!("writing the backup {}: {e}", backup.display()))?;
        printer.step(format!("the old file is kept as {}", backup.display()));
    }
    write_keeping_mode(&path, &after, &path)
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
    printer.step(format!(
        "wrote {}; restart the client to use it",
        path.display()
    ));
    Ok(())
}

/// Where each client keeps the config `export --write` edits.
fn client_config_path(format: ExportFormat) -> Option<PathBuf> {
    let base = directories::BaseDirs::new()?;
    let cwd = std::env::current_dir().ok()?;
    Some(match format {
        ExportFormat::Claude => base
            .config_dir()
            .join("Claude")
            .join("claude_desktop_config.json"),
        ExportFormat::ClaudeCode => cwd.join(".mcp.json"),
        ExportFormat::Cursor => base.home_dir().join(".cursor").join("mcp.json"),
        ExportFormat::Vscode => cwd.join(".vscode").join("mcp.json"),
    })
}

/// `FILE.keyway.bak`, or, when that is there already (an earlier write's), one with
/// the time in its name: the first backup is the user's own file and is kept.
fn backup_path(path: &std::path::Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".keyway.bak");
    let first = path.with_file_name(&name);
    if !first.exists() {
        return first;
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    name.push(format!(".{secs}"));
    path.with_file_name(name)
}

/// Write `text` to `path` through a file beside it renamed into place, with the mode
/// `like` has (a config may hold other servers' secrets: a new one is private).
fn write_keeping_mode(
    path: &std::path::Path,
    text: &str,
    like: &std::path::Path,
) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(like)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0o600);
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = like;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The config `text` (JSONC; empty for a new file) with `entries` written under `key`,
/// comments and other entries kept. An entry that ran mcp-remote (or connected by URL)
/// to a server's URL is the one replaced, under its own name; else the server's name
/// is used. Returns the new text and what was done, in words.
pub fn write_entries(
    text: &str,
    key: &str,
    entries: &[(String, String, Value)],
) -> Result<(String, Vec<String>), String> {
    let source = if text.trim().is_empty() { "{}\n" } else { text };
    let existing = parse_text(source)?;
    let (found, _) = parse(&existing, None, &|_| None);
    let root =
        jsonc_parser::cst::CstRootNode::parse(source, &jsonc()).map_err(|e| e.to_string())?;
    let top = root
        .object_value()
        .ok_or_else(|| "the file is not a JSON object".to_owned())?;
    if top
        .get(key)
        .is_some_and(|p| p.value().is_none_or(|v| v.as_object().is_none()))
    {
        return Err(format!(
            "its \"{key}\" is not an object; fix it by hand first"
        ));
    }
    let servers = top.object_value_or_set(key);
    let mut notes = Vec::new();
    for (name, url, entry) in entries {
        // The entry to rewrite: one that reaches this URL through mcp-remote or by
        // URL, else the server's name.
        let target = found
            .iter()
            .find(|e| same_url(&e.url, url))
            .map(|e| e.name.clone());
        let slot = target.clone().unwrap_or_else(|| name.clone());
        // An entry of that name that is something else (a local server, another
        // URL) is not overwritten.
        let current = existing.get(key).and_then(|m| m.get(&slot));
        let ours = |v: &Value| {
            v.get("args")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| x == "proxy"))
                && v.get("command")
                    .and_then(Value::as_str)
                    .is_some_and(|c| c.ends_with("keyway") || c.ends_with("keyway.exe"))
        };
        if target.is_none() && current.is_some_and(|v| !ours(v)) {
            notes.push(format!(
                "{slot}: left as it is (an entry of that name runs something else); keyway export {name} --format ... prints the entry to add under another name"
            ));
            continue;
        }
        if current == Some(entry) {
            notes.push(format!("{slot}: already runs keyway proxy {name}"));
            continue;
        }
        let value = cst_value(entry);
        match servers.get(&slot) {
            Some(prop) => {
                prop.set_value(value);
                notes.push(match target {
                    Some(t) => format!("{t}: reached {url} itself; now keyway proxy {name}"),
                    None => format!("{slot}: replaced with keyway proxy {name}"),
                });
            }
            None => {
                servers.append(&slot, value);
                notes.push(format!("{slot}: added (keyway proxy {name})"));
            }
        }
    }
    let mut out = root.to_string();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok((out, notes))
}

fn cst_value(v: &Value) -> jsonc_parser::cst::CstInputValue {
    use jsonc_parser::cst::CstInputValue as C;
    match v {
        Value::Null => C::Null,
        Value::Bool(b) => C::Bool(*b),
        Value::Number(n) => C::Number(n.to_string()),
        Value::String(s) => C::String(s.clone()),
        Value::Array(a) => C::Array(a.iter().map(cst_value).collect()),
        Value::Object(o) => C::Object(o.iter().map(|(k, v)| (k.clone(), cst_value(v))).collect()),
    }
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
        let none = |_: &str| None;
        let (entries, skipped) = parse(&claude, None, &none);
        assert_eq!(skipped.len(), 1);
        let bridged = entries.iter().find(|e| e.name == "bridged").unwrap();
        assert_eq!(bridged.url, "https://a.example/mcp");
        assert_eq!(bridged.token.as_ref().unwrap().expose(), "t0k");
        let remote = entries.iter().find(|e| e.name == "remote").unwrap();
        assert_eq!(remote.headers[0].0, "X-Api-Key");
        assert!(remote.token.is_none());

        let vscode = json!({"servers": {"v": {"type": "sse", "url": "https://c.example/sse"}}});
        let (entries, _) = parse(&vscode, None, &none);
        assert_eq!(entries[0].transport, Some(Transport::Sse));
        let nested =
            json!({"mcp": {"servers": {"v": {"type": "http", "url": "https://c.example/mcp"}}}});
        assert_eq!(parse(&nested, None, &none).0.len(), 1);
        assert!(parse(&json!({"other": 1}), None, &none).0.is_empty());
    }
}

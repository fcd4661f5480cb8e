//! `keyway list`, `show`, `remove`, `enable`, `disable`, `doctor`.

use std::time::SystemTime;

use keyway::{
    status::{Action, State},
    store::{AnyStore, Credential, ServerRecord, Store},
};

use super::store;
use crate::{cli::NameArg, exit::CliError, printer::Printer, settings::Settings};

/// One row of `list` (and the core of `show`): the library's card, whose field
/// names are a contract.
pub type Row = keyway::manage::Card;

/// The row of `rec` and its credential, when it can be read.
pub async fn row(st: &AnyStore, rec: &ServerRecord) -> Result<(Row, Option<Credential>), CliError> {
    keyway::manage::card(st, rec)
        .await
        .map_err(store::store_error)
}

/// An action as the table and `show` print it: `-` for none.
pub fn action_cell(a: Action) -> String {
    if a == Action::None {
        "-".into()
    } else {
        a.as_str().to_owned()
    }
}

/// The command that does what the action asks, for `name`.
pub fn action_command(a: Action, name: &str) -> Option<String> {
    match a {
        Action::None => None,
        other => Some(format!("keyway {} {name}", other.as_str())),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub async fn list(settings: &Settings, printer: &Printer) -> Result<(), CliError> {
    let st = store::open(settings).await?;
    let mut rows = Vec::new();
    for rec in st.servers().await.map_err(store::store_error)? {
        rows.push(row(&st, &rec).await?.0);
    }
    if printer.json_mode() {
        printer.json(&rows)?;
        return Ok(());
    }
    if rows.is_empty() {
        printer.result("no servers yet: keyway add URL");
        return Ok(());
    }
    print_table(&rows, printer);
    print_unreadable(&rows);
    Ok(())
}

/// The rows whose secrets cannot be opened, named on stderr with what to do.
fn print_unreadable(rows: &[Row]) {
    for r in rows {
        if let Some(why) = &r.unreadable {
            eprintln!("warning: {}: {why}", r.name);
        }
    }
}

pub fn print_table(rows: &[Row], printer: &Printer) {
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.url.clone(),
                r.auth.clone(),
                r.protocol.clone().unwrap_or_else(|| "-".into()),
                r.state.as_str().to_owned(),
                action_cell(r.action),
                r.expires_at
                    .map(|t| store::relative(t, now()))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = ["NAME", "URL", "AUTH", "MCP", "STATE", "ACTION", "EXPIRES"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.chars().count());
    for c in &cells {
        for (w, v) in widths.iter_mut().zip(c) {
            *w = (*w).max(v.chars().count());
        }
    }
    // Padded first, then coloured (the colour codes take no room on the terminal).
    let line = |c: &[String; 7], paint: bool| {
        c.iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (v, w))| match i {
                4 if paint => crate::progress::paint::state(v, w),
                _ => format!("{v:<w$}"),
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    printer.result(crate::progress::paint::heading(&line(&header, false)));
    for c in &cells {
        printer.result(line(c, true));
    }
}

pub async fn show(args: NameArg, settings: &Settings, printer: &Printer) -> Result<(), CliError> {
    let st = store::open(settings).await?;
    let rec = store::find(&st, &args.name).await?;
    let (r, cred) = row(&st, &rec).await?;
    let credential = match &cred {
        None => serde_json::json!(null),
        Some(Credential::Bearer { .. }) => serde_json::json!({"kind": "bearer"}),
        Some(Credential::OAuth(o)) => serde_json::json!({
            "kind": "oauth",
            "issuer": o.issuer,
            "client_id": o.client_id,
            "resource": o.resource,
            "scopes": o.scopes,
            "refresh_token": o.refresh_token.is_some(),
            "expires_at": r.expires_at,
            "token_type": match o.token_type {
                keyway::auth::token::TokenType::Dpop => "DPoP",
                keyway::auth::token::TokenType::Bearer => "Bearer",
            },
            "dpop_jkt": o.dpop.as_ref().map(|k| k.thumbprint().to_owned()),
        }),
    };
    if printer.json_mode() {
        let mut v = serde_json::to_value(&r).unwrap_or_default();
        v["headers"] = serde_json::json!(rec.header_names);
        v["credential"] = credential;
        v["created_at"] = serde_json::json!(rec.created_at);
        printer.json(&v)?;
        return Ok(());
    }
    let field = |k: &str, v: String| printer.result(format!("{k:<12} {v}"));
    field("name", r.name.clone());
    field("id", r.id.clone());
    field("url", r.url.clone());
    field("transport", r.transport.clone());
    field("enabled", r.enabled.to_string());
    field("auth", r.auth.clone());
    field(
        "protocol",
        r.protocol
            .clone()
            .unwrap_or_else(|| "not known yet (keyway tools NAME connects)".into()),
    );
    field("state", r.state.as_str().to_owned());
    field(
        "action",
        match action_command(r.action, &r.name) {
            Some(cmd) => format!("{} ({cmd})", action_cell(r.action)),
            None => action_cell(r.action),
        },
    );
    if !rec.header_names.is_empty() {
        field("headers", rec.header_names.join(", "));
    }
    match &cred {
        None => field("credential", "none".into()),
        Some(Credential::Bearer { .. }) => field("credential", "static token".into()),
        Some(Credential::OAuth(o)) => {
            field(
                "credential",
                format!(
                    "oauth{}",
                    if o.refresh_token.is_some() {
                        " (refreshable)"
                    } else {
                        ""
                    }
                ),
            );
            field("issuer", o.issuer.clone());
            field("client id", o.client_id.clone());
            if let Some(key) = &o.dpop {
                field(
                    "bound to",
                    format!(
                        "a DPoP key keyway holds (jkt {}){}",
                        key.thumbprint(),
                        match o.token_type {
                            keyway::auth::token::TokenType::Dpop => "",
                            keyway::auth::token::TokenType::Bearer =>
                                "; the access token itself is Bearer",
                        }
                    ),
                );
            }
            field("resource", o.resource.clone());
            field(
                "scopes",
                if o.scopes.is_empty() {
                    "-".into()
                } else {
                    o.scopes.join(" ")
                },
            );
            if let Some(t) = r.expires_at {
                field("expires", store::relative(t, now()));
            }
        }
    }
    if let Some(e) = &r.last_error {
        field("last error", e.clone());
    }
    if let Some(e) = &r.unreadable {
        field("unreadable", e.clone());
    }
    Ok(())
}

pub async fn remove(args: NameArg, settings: &Settings, printer: &Printer) -> Result<(), CliError> {
    let st = store::open(settings).await?;
    let rec = store::find(&st, &args.name).await?;
    // Its tokens are revoked first, as logout does: a removed server should leave no
    // live grant behind at its authorization server.
    let removal = keyway::manage::remove(&st, &rec)
        .await
        .map_err(store::store_error)?;
    let revocation = removal
        .revocation
        .as_ref()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "it had no credential".to_owned());
    printer.json(&serde_json::json!({
        "name": rec.name,
        "removed": true,
        "revocation": revocation,
        "registration": removal.registration.as_ref().map(|d| d.to_string()),
    }))?;
    printer.result(format!("removed {} ({removal})", rec.name));
    Ok(())
}

pub async fn set_enabled(
    args: NameArg,
    enabled: bool,
    settings: &Settings,
    printer: &Printer,
) -> Result<(), CliError> {
    let st = store::open(settings).await?;
    let rec = store::find(&st, &args.name).await?;
    st.set_enabled(&rec.id, enabled)
        .await
        .map_err(store::store_error)?;
    printer.json(&serde_json::json!({"name": rec.name, "enabled": enabled}))?;
    printer.result(format!(
        "{} {}",
        if enabled { "enabled" } else { "disabled" },
        rec.name
    ));
    Ok(())
}

pub async fn doctor(
    args: crate::cli::DoctorArgs,
    settings: &Settings,
    printer: &Printer,
) -> Result<(), CliError> {
    let home_mode = home_mode(&settings.home);
    let db = settings.home.join("keyway.db");
    // A doctor that made a store (and a key) would change what it reports on. A
    // Postgres store is opened whatever it holds.
    let in_home = matches!(settings.store, Ok(keyway::store::StoreLocation::Home));
    if in_home && !db.exists() {
        if printer.json_mode() {
            printer.json(&serde_json::json!({
                "home": settings.home,
                "home_mode": home_mode,
                "store": null,
                "key_source": null,
                "servers": [],
                "pending_flows": [],
                "problems": [],
            }))?;
        } else {
            printer.result(format!("home        {}", settings.home.display()));
            printer.result(format!(
                "store       none yet ({} is made by the first `keyway add URL`)",
                db.display()
            ));
        }
        return Ok(());
    }
    let st = store::open(settings).await?;
    let info = st.describe();
    let records = st.servers().await.map_err(store::store_error)?;
    let checked = if args.offline {
        Vec::new()
    } else {
        super::tools::check_servers(
            &st,
            &records,
            std::time::Duration::from_secs_f64(args.timeout),
        )
        .await?
    };
    let mut rows = Vec::new();
    for rec in st.servers().await.map_err(store::store_error)? {
        rows.push(row(&st, &rec).await?.0);
    }
    let flows = st.pending_flows().await.map_err(store::store_error)?;
    let mut problems: Vec<String> = Vec::new();
    if home_mode.as_deref().is_some_and(|m| m != "700") {
        problems.push(format!(
            "the home {} can be read by others (mode {}): chmod 700 it",
            settings.home.display(),
            home_mode.as_deref().unwrap_or("?")
        ));
    }
    for r in &rows {
        if let Some(why) = &r.unreadable {
            problems.push(format!("{}: {why}", r.name));
        } else if matches!(r.state, State::Error | State::TokenRejected) {
            problems.push(format!(
                "{}: {}{}",
                r.name,
                r.state.as_str(),
                r.last_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
        }
    }
    let needs_auth: Vec<&Row> = rows
        .iter()
        .filter(|r| matches!(r.state, State::NeedsAuth | State::NeedsToken))
        .collect();
    if printer.json_mode() {
        printer.json(&serde_json::json!({
            "home": settings.home,
            "home_mode": home_mode,
            "store": info.path,
            "key_source": info.key_source,
            "keychain": settings.use_keychain,
            "servers": rows,
            "checked": checked,
            "pending_flows": flows,
            "problems": problems,
        }))?;
    } else {
        printer.result(format!(
            "home        {} ({})",
            settings.home.display(),
            home_mode.as_deref().unwrap_or("?")
        ));
        printer.result(format!("store       {}", info.path.display()));
        printer.result(format!("key         {}", info.key_source));
        if !settings.use_keychain {
            printer.result("keychain    off (KEYWAY_NO_KEYCHAIN)");
        }
        printer.result(format!(
            "servers     {}{}",
            rows.len(),
            if args.offline {
                " (not contacted: --offline)"
            } else {
                " (each checked just now)"
            }
        ));
        if !rows.is_empty() {
            print_table(&rows, printer);
        }
        for r in rows.iter().filter(|r| r.last_error.is_some()) {
            printer.result(format!(
                "  {}: {}",
                r.name,
                r.last_error.as_deref().unwrap_or_default()
            ));
        }
        printer.result(format!("pending     {} authorization flow(s)", flows.len()));
        for f in &flows {
            printer.result(format!(
                "  {} started {}",
                f.issuer,
                store::relative(f.created_at, now())
            ));
        }
        if problems.is_empty() && needs_auth.is_empty() {
            printer.result("all well");
        }
        for p in &problems {
            printer.result(format!("problem     {p}"));
        }
    }
    if !problems.is_empty() {
        return Err(
            CliError::failure(anyhow::anyhow!("{} problem(s) found", problems.len()))
                .with_hint("each is listed above with what to do"),
        );
    }
    if !needs_auth.is_empty() {
        let hint = needs_auth
            .iter()
            .filter_map(|r| action_command(r.action, &r.name))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(CliError::failure(anyhow::anyhow!(
            "{} server(s) need authorization or a token",
            needs_auth.len()
        ))
        .with_status(crate::exit::ExitStatus::AuthorizationNeeded)
        .with_hint(hint));
    }
    Ok(())
}

fn home_mode(home: &std::path::Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(home)
            .ok()
            .map(|m| format!("{:o}", m.permissions().mode() & 0o777))
    }
    #[cfg(not(unix))]
    {
        let _ = home;
        None
    }
}

//! `keyway demo`: keyway's main job end to end against the built-in testbed, in a
//! temporary home (yours is never touched): probe, add with authorization (no
//! browser: `--browser follow`), list, call, move keyway's clock past the token's
//! refresh time, call again (after exactly one refresh).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, anyhow};
use clap::Parser;
use keyway::{
    mcp::{Connection, result_text},
    probe::{ProbeOptions, probe},
    store::{Credential, Store, tokens::StoredTokens},
};
use keyway_testbed::{Announcement, Knobs, Testbed};
use serde::Serialize;
use serde_json::json;

use super::{add, servers, store};
use crate::{
    cli::{Cli, Command, DemoArgs},
    exit::CliError,
    printer::Printer,
    settings::Settings,
};

/// Access tokens of the demo's server live this long. The demo does not wait for one
/// to near its expiry: it moves keyway's clock there (the testbed keeps real time), so
/// exactly one refresh happens however loaded the machine is.
const TOKEN_LIFETIME: u64 = 120;

#[derive(Serialize)]
struct Report {
    testbed: Announcement,
    probe: String,
    registration: Vec<&'static str>,
    added: add::Added,
    list: Vec<servers::Row>,
    calls: Vec<Call>,
    refreshes: u64,
    elapsed_ms: u128,
}

#[derive(Serialize)]
struct Call {
    tool: &'static str,
    arguments: serde_json::Value,
    result: String,
}

pub async fn run(args: DemoArgs, _settings: &Settings, printer: &Printer) -> Result<(), CliError> {
    let started = Instant::now();
    let home = tempfile::Builder::new()
        .prefix("keyway-demo-")
        .tempdir()
        .context("making a temporary home")?;
    // A throwaway store: its key goes in a file beside it, never in your keychain.
    let settings = Settings {
        home: home.path().join("home"),
        home_explicit: true,
        use_keychain: false,
        store: Ok(keyway::store::StoreLocation::Home),
    };
    let mut knobs = Knobs::default();
    knobs.token_lifetime = TOKEN_LIFETIME;
    let testbed = Testbed::start(knobs)
        .await
        .context("starting the built-in test server")?;
    let url = testbed.mcp_url().to_owned();
    let http =
        keyway::http::WireClient::new(&Default::default()).context("building the HTTP client")?;
    printer.step("keyway demo: the whole job against a built-in test server on 127.0.0.1");
    printer.step(format!(
        "(a temporary home, deleted at the end: {})\n",
        home.path().display()
    ));
    printer.step(format!(
        "  testbed   MCP server {url} (access tokens live {TOKEN_LIFETIME} s)"
    ));
    printer.step(format!(
        "            authorization server {}",
        testbed.issuer()
    ));

    // 1. Probe: what does it take to get in?
    let p = probe(&http, &url, &ProbeOptions::default()).await;
    let tried = p.discovery.as_ref().map(|d| d.steps.len()).unwrap_or(0);
    printer.step(format!(
        "  1 probe   {}: register by {}, device flow {}; {tried} metadata URLs tried",
        p.class.as_str(),
        p.registration.join(", "),
        if p.device { "offered" } else { "not offered" }
    ));

    // 2. Add: the same code as `keyway add URL --browser follow`.
    let add_args = match Cli::try_parse_from(["keyway", "add", url.as_str(), "--browser", "follow"])
    {
        Ok(Cli {
            command: Command::Add(a),
            ..
        }) => {
            let mut a = a;
            a.resolve()
                .map_err(|e| CliError::failure(anyhow!("the demo's own add command line: {e}")))?;
            a
        }
        _ => {
            return Err(CliError::failure(anyhow!(
                "the demo's own add command line does not parse"
            )));
        }
    };
    let added = add::execute(&add_args, &settings, true).await?;
    printer.step(format!(
        "  2 add     {} saved and authorized by {} ({} tools)",
        added.name,
        added.issuer.as_deref().unwrap_or("?"),
        added.tools.unwrap_or(0)
    ));

    // 3. List.
    let st = store::open(&settings).await?;
    let mut rows = Vec::new();
    for rec in st.servers().await.map_err(store::store_error)? {
        rows.push(servers::row(&st, &rec).await?.0);
    }
    for r in &rows {
        printer.step(format!(
            "  3 list    {}  {}  {}  {}",
            r.name,
            r.auth,
            r.state.as_str(),
            r.url
        ));
    }

    // 4. Call, with the stored (encrypted) credential.
    let rec = store::find(&st, &added.name).await?;
    // keyway's clock for this credential: real time plus an offset step 5 sets.
    let ahead = Arc::new(AtomicU64::new(0));
    let clock = {
        let ahead = ahead.clone();
        Arc::new(move || SystemTime::now() + Duration::from_millis(ahead.load(Ordering::SeqCst)))
    };
    let tokens = StoredTokens::with_clock(Arc::new(st.clone()), &rec.id, clock);
    let mut calls = Vec::new();
    let text = call_echo(&url, &http, &tokens, &args.text).await?;
    printer.step(format!(
        "  4 call    echo {{\"text\":{:?}}} -> {text:?}",
        args.text
    ));
    calls.push(Call {
        tool: "echo",
        arguments: json!({"text": args.text}),
        result: text,
    });

    // 5. Move keyway's clock just past the token's refresh time, then call again:
    //    keyway refreshes it first (once, whatever the number of processes).
    let due = match st
        .credential(&rec.id)
        .await
        .map_err(store::store_error)?
        .map(|c| c.credential)
    {
        Some(Credential::OAuth(o)) => {
            keyway::auth::refresh_due(o.expires_at, o.issued_at).map(|due| (due, o.issued_at))
        }
        _ => None,
    };
    let Some((due, issued)) = due else {
        return Err(CliError::failure(anyhow!(
            "the stored token has no expiry, so there is nothing to refresh"
        )));
    };
    let skip = due
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .saturating_add(Duration::from_secs(1));
    ahead.store(
        u64::try_from(skip.as_millis()).unwrap_or(u64::MAX),
        Ordering::SeqCst,
    );
    printer.step(format!(
        "  5 clock   keyway's clock moves past the token's refresh time ({} s after it was issued)",
        due.duration_since(issued).unwrap_or_default().as_secs()
    ));
    let again = format!("{} (again)", args.text);
    let text = call_echo(&url, &http, &tokens, &again).await?;
    let refreshes = testbed.stats().refreshes;
    let plural = if refreshes == 1 { "" } else { "es" };
    printer.step(format!(
        "  6 call    echo again -> {text:?}, after {refreshes} refresh{plural}"
    ));
    calls.push(Call {
        tool: "echo",
        arguments: json!({"text": again}),
        result: text,
    });
    if refreshes != 1 {
        return Err(CliError::failure(anyhow!(
            "the token was refreshed {refreshes} times, not once"
        )));
    }

    let report = Report {
        testbed: testbed.announcement(),
        probe: p.class.as_str().to_owned(),
        registration: p.registration,
        added,
        list: rows,
        calls,
        refreshes,
        elapsed_ms: started.elapsed().as_millis(),
    };
    testbed.shutdown().await;
    printer.step("");
    printer.result(format!("demo ok in {} ms", report.elapsed_ms));
    printer.json(&report)?;
    Ok(())
}

async fn call_echo(
    url: &str,
    http: &keyway::http::WireClient,
    tokens: &Arc<StoredTokens>,
    text: &str,
) -> Result<String, CliError> {
    let conn = Connection::open(url, http.clone(), tokens.clone())
        .await
        .map_err(CliError::connect)?;
    let result = conn
        .call_tool("echo", json!({ "text": text }).as_object().cloned())
        .await;
    conn.close().await;
    let result = result.context("calling echo")?;
    if result.is_error == Some(true) {
        return Err(CliError::failure(anyhow!(
            "echo answered with an error: {}",
            result_text(&result)
        )));
    }
    Ok(result_text(&result))
}

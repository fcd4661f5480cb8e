//! `keyway demo`: keyway's main job end to end against the built-in testbed, with
//! nothing saved. It starts the testbed on 127.0.0.1, shows the server's challenge to
//! an unauthenticated client, connects with a bearer token, lists the tools, calls
//! `echo`, and closes the session.

use std::{sync::Arc, time::Instant};

use anyhow::{Context, anyhow};
use keyway::{
    Secret,
    mcp::{ConnectError, Connection, StaticToken, result_text},
};
use keyway_testbed::{Announcement, Knobs, Testbed};
use serde::Serialize;
use serde_json::json;

use crate::{cli::DemoArgs, exit::CliError, printer::Printer};

#[derive(Serialize)]
struct Report {
    testbed: Announcement,
    challenge: Option<String>,
    server: Server,
    tools: Vec<String>,
    call: Call,
    session_closed: bool,
    elapsed_ms: u128,
}

#[derive(Serialize)]
struct Server {
    name: Option<String>,
    version: Option<String>,
    protocol_version: String,
}

#[derive(Serialize)]
struct Call {
    tool: &'static str,
    arguments: serde_json::Value,
    result: String,
    elapsed_ms: f64,
}

pub async fn run(args: DemoArgs, printer: &Printer) -> Result<(), CliError> {
    let started = Instant::now();
    let testbed = Testbed::start(Knobs::default())
        .await
        .context("starting the built-in test server")?;
    let url = testbed.mcp_url().to_owned();
    let http = keyway::http::client().context("building the HTTP client")?;
    printer.step("keyway demo: a real MCP session against a built-in test server on 127.0.0.1\n");
    printer.step(format!(
        "  testbed   MCP server {url}\n            authorization server {}",
        testbed.issuer()
    ));

    // 1. No token: the server must say what it takes.
    let challenge =
        match Connection::open(&url, http.clone(), Arc::new(StaticToken::default())).await {
            Err(ConnectError::AuthorizationRequired { challenge, .. }) => challenge,
            Err(e) => {
                return Err(
                    CliError::failure(e).with_hint("the testbed should answer 401; run with -vv")
                );
            }
            Ok(conn) => {
                conn.close().await;
                return Err(CliError::failure(anyhow!(
                    "the testbed let an unauthenticated client in"
                )));
            }
        };
    printer.step(format!(
        "  ✓ without a token: 401 Unauthorized, {}",
        challenge.as_deref().unwrap_or("no challenge")
    ));

    // 2. A static bearer token, as an administrator would hand out.
    let scope = "mcp:tools";
    let token = Secret::new(testbed.mint_access_token(scope));
    printer.step(format!(
        "  ✓ bearer token issued by the test server (scope {scope})"
    ));

    let t = Instant::now();
    let conn = Connection::open(&url, http, Arc::new(StaticToken::new(Some(token))))
        .await
        .map_err(CliError::connect)?;
    let summary = conn.server();
    printer.step(format!(
        "  ✓ connected to {} {}, protocol {} ({})",
        summary.name.as_deref().unwrap_or("(unnamed server)"),
        summary.version.as_deref().unwrap_or(""),
        summary.protocol_version,
        ms(t),
    ));

    let tools: Vec<String> = conn
        .list_tools()
        .await
        .context("listing tools")?
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    printer.step(format!("  ✓ {} tools: {}", tools.len(), tools.join(", ")));

    let arguments = json!({ "text": args.text });
    let t = Instant::now();
    let result = conn
        .call_tool("echo", arguments.as_object().cloned())
        .await
        .context("calling echo")?;
    let call_ms = t.elapsed().as_secs_f64() * 1000.0;
    if result.is_error == Some(true) {
        return Err(CliError::failure(anyhow!(
            "echo answered with an error: {}",
            result_text(&result)
        )));
    }
    let text = result_text(&result);
    printer.step(format!(
        "  ✓ called echo {arguments} -> {text:?} ({call_ms:.1} ms)"
    ));

    conn.close().await;
    let session_closed = testbed
        .stats()
        .path(&format!("DELETE {}", testbed.knobs().mcp_path))
        > 0;
    printer.step(format!(
        "  {} session closed{}",
        if session_closed { "✓" } else { "!" },
        if session_closed {
            " (DELETE sent)"
        } else {
            " without a DELETE"
        }
    ));

    let report = Report {
        testbed: testbed.announcement(),
        challenge,
        server: Server {
            name: summary.name,
            version: summary.version,
            protocol_version: summary.protocol_version,
        },
        tools,
        call: Call {
            tool: "echo",
            arguments,
            result: text,
            elapsed_ms: call_ms,
        },
        session_closed,
        elapsed_ms: started.elapsed().as_millis(),
    };
    testbed.shutdown().await;
    printer.step("");
    printer.result(format!("demo ok in {} ms", report.elapsed_ms));
    printer.json(&report)?;
    Ok(())
}

fn ms(since: Instant) -> String {
    format!("{:.1} ms", since.elapsed().as_secs_f64() * 1000.0)
}

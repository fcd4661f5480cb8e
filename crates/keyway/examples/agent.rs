//! A small agent on keyway: it lists the tools of every server saved with `keyway add`
//! and calls one of them where a server has it. Authorization is keyway's own: stored
//! tokens are refreshed once across processes, and a server that asks for a new
//! authorization gets one (the browser opens, as with `keyway call`).
//!
//! ```sh
//! cargo run -p keyway --example agent                      # list every tool
//! cargo run -p keyway --example agent -- echo '{"text":"hi"}'  # and call `echo`
//! ```
//!
//! It reads keyway's default home (`KEYWAY_HOME`, else the platform's data directory).

use std::process::ExitCode;

use keyway::{
    client::{ClientError, Options, Session},
    mcp::result_text,
    store::{OpenOptions, SqliteStore, Store},
};
use rmcp::model::JsonObject;

/// What the agent did, per server.
#[derive(Debug, Default)]
struct Report {
    /// (server, its tools) for each server that answered.
    tools: Vec<(String, Vec<String>)>,
    /// (server, the tool's text answer) for each server that had the tool.
    calls: Vec<(String, String)>,
    /// (server, why it failed) for the others.
    failures: Vec<(String, String)>,
}

/// List the tools of every enabled saved server; call `call`'s tool where it exists.
async fn run(options: Options, call: Option<(&str, JsonObject)>) -> Result<Report, ClientError> {
    let store = SqliteStore::open(
        &options.home,
        OpenOptions {
            use_keychain: options.use_keychain,
        },
    )?;
    let mut report = Report::default();
    for server in store.servers().await?.into_iter().filter(|s| s.enabled) {
        let session = match Session::open_stored(store.clone(), &server.name, options.clone()).await
        {
            Ok(s) => s,
            Err(e) => {
                report.failures.push((server.name, e.to_string()));
                continue;
            }
        };
        let outcome = async {
            let tools: Vec<String> = session
                .list_tools()
                .await?
                .into_iter()
                .map(|t| t.name.to_string())
                .collect();
            let answer = match &call {
                Some((tool, args)) if tools.iter().any(|t| t == tool) => Some(result_text(
                    &session.call_tool(tool, Some(args.clone())).await?,
                )),
                _ => None,
            };
            Ok::<_, ClientError>((tools, answer))
        }
        .await;
        session.close().await;
        match outcome {
            Ok((tools, answer)) => {
                if let Some(text) = answer {
                    report.calls.push((server.name.clone(), text));
                }
                report.tools.push((server.name, tools));
            }
            Err(e) => report.failures.push((server.name, e.to_string())),
        }
    }
    Ok(report)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let call = match args.as_slice() {
        [] => None,
        [tool] => Some((tool.as_str(), JsonObject::new())),
        [tool, json] => match serde_json::from_str(json) {
            Ok(serde_json::Value::Object(o)) => Some((tool.as_str(), o)),
            _ => {
                eprintln!("the arguments must be a JSON object, e.g. '{{\"text\":\"hi\"}}'");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: agent [TOOL [JSON_ARGUMENTS]]");
            return ExitCode::from(2);
        }
    };
    match run(Options::default(), call).await {
        Ok(report) => {
            for (server, tools) in &report.tools {
                println!("{server}: {}", tools.join(", "));
            }
            for (server, text) in &report.calls {
                println!("{server} answered: {text}");
            }
            for (server, why) in &report.failures {
                eprintln!("{server}: {why}");
            }
            if report.tools.is_empty() && report.failures.is_empty() {
                eprintln!("no servers saved yet: keyway add URL");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use keyway::{
        auth::{AuthOptions, BrowserMode},
        store::{AuthKind, NewServer, Transport},
    };
    use keyway_testbed::{Knobs, Testbed};

    use super::*;

    /// The agent against two testbeds saved in a fresh home: one it must authorize
    /// (OAuth, no token saved yet: the flow runs headless, following the redirects),
    /// one open.
    #[tokio::test]
    async fn lists_every_server_and_calls_where_the_tool_is() {
        let home = tempfile::tempdir().unwrap();
        let oauth = Testbed::start(Knobs::default()).await.unwrap();
        let mut knobs = Knobs::default();
        knobs.open = true;
        let open = Testbed::start(knobs).await.unwrap();
        let store = SqliteStore::open(
            home.path(),
            OpenOptions {
                use_keychain: false,
            },
        )
        .unwrap();
        for (id, name, url, auth) in [
            ("s1", "guarded", oauth.mcp_url(), AuthKind::Oauth),
            ("s2", "open", open.mcp_url(), AuthKind::None),
        ] {
            let server = NewServer {
                id: id.into(),
                name: name.into(),
                url: url.into(),
                transport: Transport::Http,
                auth,
                headers: Vec::new(),
            };
            store.create_server(&server, None).await.unwrap();
        }
        let options = Options {
            auth: AuthOptions {
                browser: BrowserMode::Follow,
                ..AuthOptions::default()
            },
            home: home.path().to_owned(),
            use_keychain: false,
            ..Options::default()
        };
        let args = serde_json::json!({"text": "hi"})
            .as_object()
            .cloned()
            .unwrap();
        let report = run(options.clone(), Some(("echo", args))).await.unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        let names: Vec<&str> = report.tools.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, ["guarded", "open"]);
        assert!(
            report
                .tools
                .iter()
                .all(|(_, t)| t.iter().any(|t| t == "echo"))
        );
        assert_eq!(
            report.calls,
            [
                ("guarded".into(), "hi".into()),
                ("open".into(), "hi".into())
            ]
        );
        assert_eq!(oauth.stats().authorizations, 1, "authorized once");
        // A second run uses the stored tokens: no new authorization.
        run(options, None).await.unwrap();
        assert_eq!(oauth.stats().authorizations, 1);
    }
}

//! `keyway call NAME TOOL` and `keyway call --url URL TOOL`: connect, list tools,
//! call one, print the result. Authorizing as the server asks (401: one refresh, then
//! authorize; 403 insufficient_scope: step up with the union of scopes) is the
//! library's session policy (`keyway::client`); this command only words the outcome.

use anyhow::anyhow;
use keyway::{
    client::{Options, Session},
    mcp::result_text,
};
use rmcp::model::JsonObject;
use url::Url;

use super::{auth, store};
use crate::{cli::CallArgs, exit::CliError, printer::Printer, settings::Settings};

pub async fn run(args: CallArgs, settings: &Settings, printer: &Printer) -> Result<(), CliError> {
    let arguments = arguments(&args.args)?;
    let (target, tool) = match (&args.url, args.target.as_slice()) {
        (Some(_), [tool]) => (None, tool.clone()),
        (None, [server, tool]) => (Some(server.clone()), tool.clone()),
        // `github__search_issues`, as `keyway tools` and `keyway serve` name it.
        (None, [prefixed]) => {
            let st = store::open(settings).await?;
            let (server, tool) = by_prefixed_name(&st, prefixed).await?;
            (Some(server), tool)
        }
        (Some(_), _) => {
            return Err(store::usage(
                "with --url, give only the tool: keyway call --url URL TOOL".into(),
            ));
        }
        (None, _) => {
            return Err(store::usage(
                "give the server and the tool: keyway call NAME TOOL (or NAME__TOOL, or --url URL TOOL)".into(),
            ));
        }
    };
    let options = Options {
        auth: auth::options(&args.auth)?,
        deadlines: args.deadlines.deadlines(),
        reporter: auth::reporter(printer.quiet()),
        home: settings.home.clone(),
        use_keychain: settings.use_keychain,
        // The store is opened here, below, and handed over.
        store: keyway::store::StoreLocation::Home,
        protocol: args.protocol.clone(),
    };
    let waiting = crate::progress::Waiting::start(format!(
        "connecting to {}",
        args.url
            .as_deref()
            .or(target.as_deref())
            .unwrap_or_default()
    ));
    let session = match &args.url {
        Some(raw) => {
            let url = Url::parse(raw).map_err(|e| store::usage(format!("--url {raw}: {e}")))?;
            Session::open_url(url, options).await
        }
        None => {
            let st = store::open(settings).await?;
            Session::open_stored(st, target.as_deref().unwrap_or_default(), options).await
        }
    }
    .map_err(auth::client_error)?;
    let outcome = async {
        let tools = session.list_tools().await.map_err(auth::client_error)?;
        if !tools.iter().any(|t| t.name == tool) {
            let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
            return Err(CliError::failure(anyhow!(
                "the server has no tool {tool:?}; it has: {}",
                names.join(", ")
            )));
        }
        waiting.set(format!("calling {tool}"));
        session
            .call_tool(&tool, Some(arguments))
            .await
            .map_err(auth::client_error)
    }
    .await;
    session.close().await;
    drop(waiting);
    let result = outcome?;

    if printer.json_mode() {
        printer.json(&result)?;
    } else {
        printer.result(result_text(&result));
    }
    if result.is_error == Some(true) {
        return Err(CliError::failure(anyhow!(
            "the tool {tool} reported an error"
        )));
    }
    Ok(())
}

/// `--args`: a JSON object, `@FILE` (read from FILE) or `-` (read from stdin).
fn arguments(raw: &str) -> Result<JsonObject, CliError> {
    let (text, from) = match raw.trim() {
        "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| store::usage(format!("--args -: reading stdin: {e}")))?;
            (text, "stdin".to_owned())
        }
        r if r.starts_with('@') => {
            let path = &r[1..];
            let text = std::fs::read_to_string(path)
                .map_err(|e| store::usage(format!("--args {r}: {e}")))?;
            (text, path.to_owned())
        }
        r => (r.to_owned(), "--args".to_owned()),
    };
    match serde_json::from_str(&text) {
        Ok(serde_json::Value::Object(o)) => Ok(o),
        Ok(_) => Err(store::usage(format!(
            "{from} must hold a JSON object, e.g. '{{\"text\":\"hi\"}}'"
        ))),
        Err(e) => Err(store::usage(format!("{from} is not JSON: {e}"))),
    }
}

/// The saved server and tool of a prefixed name (`github__search_issues`), with the
/// prefixes `keyway tools` gives the enabled servers.
async fn by_prefixed_name(
    st: &keyway::store::AnyStore,
    name: &str,
) -> Result<(String, String), CliError> {
    use keyway::store::Store;
    let Some((_, _)) = keyway::merge::split(name) else {
        return Err(store::usage(format!(
            "give the server and the tool: keyway call NAME {name} (or NAME__TOOL as keyway tools prints it)"
        )));
    };
    let servers: Vec<_> = st
        .servers()
        .await
        .map_err(store::store_error)?
        .into_iter()
        .filter(|s| s.enabled)
        .collect();
    let prefixes = keyway::merge::prefixes(servers.iter().map(|s| s.name.as_str()));
    // The longest prefix that fits: `a__b__c` is server `a__b`'s `c` when there is one.
    let found = servers
        .iter()
        .zip(&prefixes)
        .filter_map(|(s, p)| {
            name.strip_prefix(p.as_str())
                .and_then(|rest| rest.strip_prefix(keyway::merge::SEPARATOR))
                .filter(|tool| !tool.is_empty())
                .map(|tool| (p.len(), s.name.clone(), tool.to_owned()))
        })
        .max_by_key(|(len, _, _)| *len);
    match found {
        Some((_, server, tool)) => Ok((server, tool)),
        None => Err(
            CliError::failure(anyhow!("no enabled server has the prefix of {name}"))
                .with_hint("keyway tools lists the names it can call"),
        ),
    }
}

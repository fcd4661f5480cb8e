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
    let (tool, arguments) = match (&args.url, args.target.as_slice()) {
        (Some(_), [tool]) => (tool.clone(), &args.args),
        (None, [_, tool]) => (tool.clone(), &args.args),
        (Some(_), _) => {
            return Err(store::usage(
                "with --url, give only the tool: keyway call --url URL TOOL".into(),
            ));
        }
        (None, _) => {
            return Err(store::usage(
                "give the server and the tool: keyway call NAME TOOL (or --url URL TOOL)".into(),
            ));
        }
    };
    let arguments: JsonObject = match serde_json::from_str(arguments) {
        Ok(serde_json::Value::Object(o)) => o,
        Ok(_) => {
            return Err(store::usage(
                "--args must be a JSON object, e.g. '{\"text\":\"hi\"}'".into(),
            ));
        }
        Err(e) => return Err(store::usage(format!("--args is not JSON: {e}"))),
    };
    let options = Options {
        auth: auth::options(&args.auth)?,
        deadlines: args.deadlines.deadlines(),
        reporter: auth::reporter(printer.quiet()),
        home: settings.home.clone(),
        use_keychain: settings.use_keychain,
    };
    let session = match &args.url {
        Some(raw) => {
            let url = Url::parse(raw).map_err(|e| store::usage(format!("--url {raw}: {e}")))?;
            Session::open_url(url, options).await
        }
        None => {
            let st = store::open(settings)?;
            Session::open_stored(st, &args.target[0], options).await
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
        session
            .call_tool(&tool, Some(arguments))
            .await
            .map_err(auth::client_error)
    }
    .await;
    session.close().await;
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

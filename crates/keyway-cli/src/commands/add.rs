//! `keyway add URL`: probe first, pick a name, save; an OAuth server is authorized
//! at once. A failure before the flow completes rolls the server back; a failure
//! after it never deletes the newly authorized server.

use anyhow::{Context, anyhow};
use keyway::{
    manage::{AddError, AddRequest},
    probe::{Probe, ProbeClass},
    store::Transport,
};

use super::{auth, store};
use crate::{
    cli::{AddArgs, TransportArg},
    exit::{CliError, ExitStatus},
    printer::Printer,
    settings::Settings,
};

/// What `add` did ([`keyway::manage::Added`]).
pub type Added = keyway::manage::Added;

pub async fn run(
    mut args: AddArgs,
    settings: &Settings,
    printer: &Printer,
) -> Result<(), CliError> {
    args.resolve().map_err(store::usage)?;
    let added = execute(&args, settings, printer.quiet()).await?;
    if printer.json_mode() {
        printer.json(&added)?;
    } else {
        printer.result(format!("added {} ({})", added.name, added.url));
        printer.step(format!("  auth    {}", added.auth));
        printer.step(format!("  state   {}", added.state));
        if let Some(next) = next_step(&added) {
            printer.step(format!("  next    {next}"));
        }
        if let Some(n) = added.tools {
            printer.step(format!("  tools   {n}"));
        }
        if let Some(i) = &added.issuer {
            printer.step(format!("  issuer  {i}"));
        }
        if let Some(n) = &added.note {
            printer.step(format!("  note    {n}"));
        }
        if let Some(r) = &added.replaced {
            printer.step(format!("  note    {r}"));
        }
    }
    Ok(())
}

pub async fn execute(args: &AddArgs, settings: &Settings, quiet: bool) -> Result<Added, CliError> {
    // `args.url` passed `cli::server_url` in `AddArgs::resolve` (http or https, a
    // host); parsing it again only gives the parsed form.
    let url = url::Url::parse(&args.url)
        .map_err(|e| store::usage(format!("{} is not a URL: {e}", args.url)))?;
    let (token, headers) = store::secrets_for(&args.credential, &url, args.auth.allow_http)?;
    let options = auth::options(&args.auth)?;
    let http =
        keyway::http::WireClient::new(&Default::default()).context("building the HTTP client")?;
    let st = store::open(settings).await?;
    let req = AddRequest {
        url: url.clone(),
        name: args.name.clone(),
        id: args.id.clone(),
        token,
        headers,
        transport: match args.transport {
            TransportArg::Http => Some(Transport::Http),
            TransportArg::Sse => Some(Transport::Sse),
            TransportArg::Auto => None,
        },
        auth: options,
        authorize: !args.no_authorize,
        force: args.force,
    };
    keyway::manage::add(
        &st,
        &http,
        req,
        auth::reporter(quiet),
        &crate::progress::Spinners,
    )
    .await
    .map_err(|e| add_error(e, &url))
}

/// An [`AddError`] with what to do next, in the command line's terms.
fn add_error(e: AddError, url: &url::Url) -> CliError {
    match e {
        AddError::BadName(n) => store::usage(format!("--name {n:?}: use a plain name")),
        AddError::NameTaken(name) => {
            store::store_error(keyway::store::StoreError::NameTaken(name.clone())).with_hint(
                format!("--force replaces the saved {name}; --name gives the new one another name"),
            )
        }
        AddError::TokenRejected { .. } => CliError::failure(anyhow!(e))
            .with_status(ExitStatus::AuthorizationNeeded)
            .with_hint("get a new token from the server's operator and add again"),
        AddError::TokenNeeded { probe } => refusal(
            &probe,
            "this server needs an access token; nothing was saved",
        ),
        AddError::NotUsable { probe, .. } => refusal(
            &probe,
            &format!(
                "{url} is {}; nothing was saved (--force saves it anyway)",
                if probe.class == ProbeClass::Unreachable {
                    "unreachable"
                } else {
                    "not usable"
                }
            ),
        ),
        AddError::Authorize(e) => super::authorize::authorize_error(e),
        AddError::Store(e) => store::store_error(e),
        other => CliError::failure(anyhow!(other)),
    }
}

/// The command that does what the state asks for, if anything.
pub fn next_step(a: &Added) -> Option<String> {
    match a.action.as_str() {
        "authorize" => Some(format!("keyway authorize {}", a.name)),
        "set-token" => Some(format!("keyway set-token {}", a.name)),
        "enable" => Some(format!("keyway enable {}", a.name)),
        _ => None,
    }
}

fn refusal(p: &Probe, what: &str) -> CliError {
    let detail = p
        .detail
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    let status = if p.class == ProbeClass::TokenOnly {
        ExitStatus::AuthorizationNeeded
    } else {
        ExitStatus::Failure
    };
    CliError::failure(anyhow!("{what}{detail}"))
        .with_status(status)
        .with_hint(p.next_step.clone())
}

/// A probe's finding and its next step on one line, as a saved server's last error.
pub fn probe_line(p: &Probe) -> String {
    keyway::manage::probe_line(p)
}

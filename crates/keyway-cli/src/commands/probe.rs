//! `keyway probe URL`: what it takes to get in, and what is wrong, saving nothing.

use std::time::Duration;

use anyhow::Context;
use keyway::{
    auth::ClientOptions,
    probe::{Probe, ProbeClass, ProbeOptions},
};

use super::store;
use crate::{cli::ProbeArgs, exit::CliError, printer::Printer};

/// A probe that takes longer than this reports the server as unreachable.
pub const PROBE_TIMEOUT: Duration = keyway::probe::PROBE_TIMEOUT;

pub async fn run(args: ProbeArgs, printer: &Printer) -> Result<(), CliError> {
    let opts = ProbeOptions {
        token: store::token(&args.credential)?,
        headers: store::headers(&args.credential)?,
        client: ClientOptions {
            client_id: args.client_id.clone(),
            client_metadata_url: args.client_metadata_url.clone(),
            ..Default::default()
        },
        allow_http: args.allow_http,
        transport: keyway::mcp::TransportChoice::Auto,
    };
    if let Ok(url) = url::Url::parse(&args.url) {
        store::check_secrets_destination(
            &url,
            opts.token.is_some() || !opts.headers.is_empty(),
            args.allow_http,
        )?;
    }
    let http =
        keyway::http::WireClient::new(&Default::default()).context("building the HTTP client")?;
    let p = run_probe(&http, &args.url, &opts).await;
    if printer.json_mode() {
        printer.json(&p)?;
    } else {
        print_probe(&p, printer);
    }
    match p.class {
        ProbeClass::Unreachable | ProbeClass::Error => Err(CliError::failure(anyhow::anyhow!(
            "{} is {}{}",
            p.url,
            if p.class == ProbeClass::Unreachable {
                "unreachable"
            } else {
                "not usable"
            },
            match (&p.detail, p.class) {
                // "could not reach ORIGIN: why": the why is what is new here.
                (Some(d), ProbeClass::Unreachable) => format!(
                    ": {}",
                    d.split_once(": ").map_or(d.as_str(), |(_, why)| why)
                ),
                (Some(d), _) => format!(": {d}"),
                (None, _) => String::new(),
            }
        ))
        .with_hint(p.next_step.clone())),
        _ => Ok(()),
    }
}

/// A probe with an overall deadline, with a spinner while it runs.
pub async fn run_probe(http: &keyway::http::WireClient, url: &str, opts: &ProbeOptions) -> Probe {
    let _waiting = crate::progress::Waiting::start(format!(
        "probing {url} (connecting; discovery if it asks for authorization)"
    ));
    keyway::probe::probe_within(http, url, opts, PROBE_TIMEOUT).await
}

pub fn print_probe(p: &Probe, printer: &Printer) {
    printer.result(format!("{}: {}", p.url, p.class.as_str()));
    let yes = |b: bool| if b { "offered" } else { "no" };
    match p.class {
        ProbeClass::Open => {
            if let Some(s) = &p.server {
                printer.step(format!(
                    "  server       {} {} (protocol {})",
                    s.name.as_deref().unwrap_or("?"),
                    s.version.as_deref().unwrap_or(""),
                    s.protocol_version
                ));
            }
            printer.step(format!(
                "  tools        {} ({})",
                p.tools.len(),
                p.tools.join(", ")
            ));
        }
        ProbeClass::Oauth | ProbeClass::TokenOnly => {
            if let Some(s) = p
                .discovery
                .as_ref()
                .and_then(|d| d.authorization_server.as_ref())
            {
                printer.step(format!("  issuer       {}", s.issuer));
            }
            let reg = if p.registration.is_empty() {
                "none".to_owned()
            } else {
                p.registration
                    .iter()
                    .map(|r| match *r {
                        "dcr" => "dcr (dynamic client registration)",
                        "cimd" => "cimd (client ID metadata document)",
                        "pre-registered" => "pre-registered (your --client-id)",
                        other => other,
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            printer.step(format!("  registration {reg}"));
            printer.step(format!("  device flow  {}", yes(p.device)));
            printer.step(format!(
                "  client credentials {}",
                yes(p.client_credentials)
            ));
            if let Some(d) = &p.dpop {
                printer.step(format!("  dpop         {d}"));
            }
            if let Some(profile) = &p.profile {
                printer.step(format!("  profile      {profile}"));
            }
        }
        _ => {}
    }
    if let Some(d) = &p.detail {
        printer.step(format!("  detail       {d}"));
    }
    if let Some(report) = &p.discovery {
        if let Some(c) = &report.challenge {
            let rm = c.resource_metadata.as_deref().unwrap_or("(none)");
            let scope = c
                .scope
                .as_ref()
                .map(|s| s.join(" "))
                .unwrap_or_else(|| "(none)".into());
            printer.step(format!(
                "  challenge    resource_metadata {rm}, scope {scope}"
            ));
        }
        printer.step("  tried");
        for s in &report.steps {
            let status = s
                .status
                .map(|x| x.to_string())
                .unwrap_or_else(|| "---".into());
            let detail = s
                .detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            printer.step(format!(
                "    {status} {} {}{detail}",
                s.url,
                s.outcome.replace('_', " ")
            ));
        }
        if !report.problems.is_empty() {
            printer.step("  problems");
            for pr in &report.problems {
                printer.step(format!(
                    "    {} {}",
                    if pr.fatal { "x" } else { "!" },
                    pr.message
                ));
            }
        }
    }
    printer.step(format!("  next         {}", p.next_step));
}

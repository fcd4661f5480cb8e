//! `keyway add URL`: probe first, pick a name, save; an OAuth server is authorized
//! at once. A failure before the flow completes rolls the server back; a failure
//! after it never deletes the newly authorized server.

use std::sync::Arc;

use anyhow::{Context, anyhow};
use keyway::{
    auth::ClientOptions,
    mcp::Connection,
    naming,
    probe::{Probe, ProbeClass, ProbeOptions},
    store::{
        AuthKind, Credential, LastStatus, NewServer, ServerRecord, SqliteStore, Store, Transport,
        tokens::StoredTokens,
    },
};
use serde::Serialize;

use super::{auth, authorize::authorize_server, probe::run_probe, store};
use crate::{
    cli::{AddArgs, TransportArg},
    exit::{CliError, ExitStatus},
    printer::Printer,
    settings::Settings,
};

/// What `add` did.
#[derive(Debug, Serialize)]
pub struct Added {
    pub name: String,
    pub id: String,
    pub url: String,
    pub class: String,
    pub auth: String,
    pub state: String,
    pub action: String,
    pub tools: Option<usize>,
    pub issuer: Option<String>,
    pub note: Option<String>,
    /// What `--force` replaced, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced: Option<String>,
}

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
    let st = store::open(settings)?;

    // The name first: a taken one is an error before anything else happens.
    let taken = store::names(&st).await?;
    let name = match &args.name {
        Some(n) => {
            if n.trim().is_empty() || n.chars().any(char::is_control) {
                return Err(store::usage(format!("--name {n:?}: use a plain name")));
            }
            n.clone()
        }
        None => naming::unique(&naming::default_name(&url), &taken),
    };
    let id = args.id.clone().unwrap_or_else(store::new_id);
    if let Some(existing) = st.server(&id).await.map_err(store::store_error)?
        && existing.id == id
    {
        // A retried add: report what is there.
        return report(&st, &existing, "already added", None, None, None).await;
    }
    // A taken name is an error, unless --force: then the new server is made under a
    // name of its own and takes the old one's place once it is saved (and authorized),
    // so a failed replacement leaves the old server as it was.
    let replacing = if taken.contains(&name) {
        if !args.force {
            return Err(
                store::store_error(keyway::store::StoreError::NameTaken(name.clone())).with_hint(
                    format!(
                        "--force replaces the saved {name}; --name gives the new one another name"
                    ),
                ),
            );
        }
        st.server(&name).await.map_err(store::store_error)?
    } else {
        None
    };
    let final_name = name.clone();
    let name = match &replacing {
        Some(_) => naming::unique(&format!("{name}.new"), &taken),
        None => name,
    };

    let probe_opts = ProbeOptions {
        token: token.clone(),
        headers: headers.clone(),
        client: ClientOptions {
            client_id: args.auth.client_id.clone(),
            client_metadata_url: args.auth.client_metadata_url.clone(),
            ..Default::default()
        },
        allow_http: args.auth.allow_http,
        transport: match args.transport {
            TransportArg::Http => keyway::mcp::TransportChoice::StreamableHttp,
            TransportArg::Sse => keyway::mcp::TransportChoice::LegacySse,
            TransportArg::Auto => keyway::mcp::TransportChoice::Auto,
        },
    };
    let probe = run_probe(&http, url.as_str(), &probe_opts).await;
    let transport = super::transfer::saved_transport(
        match args.transport {
            TransportArg::Http => Some(Transport::Http),
            TransportArg::Sse => Some(Transport::Sse),
            TransportArg::Auto => None,
        },
        &probe,
    );
    let new = |auth: AuthKind| NewServer {
        id: id.clone(),
        name: name.clone(),
        url: url.to_string(),
        transport,
        auth,
        headers: store::header_pairs(&headers),
    };
    let class = probe.class.as_str();
    let added = match probe.class {
        ProbeClass::Open => {
            let auth = if token.is_some() || !headers.is_empty() {
                AuthKind::Token
            } else {
                AuthKind::None
            };
            let cred = token.map(|t| Credential::Bearer { token: t });
            let rec = st
                .create_server(&new(auth), cred.as_ref())
                .await
                .map_err(store::store_error)?;
            st.set_status(&rec.id, LastStatus::Connected, None)
                .await
                .map_err(store::store_error)?;
            if let Some(server) = &probe.server {
                st.set_protocol(&rec.id, Some(&server.protocol_version))
                    .await
                    .map_err(store::store_error)?;
            }
            report(&st, &rec, class, Some(probe.tools.len()), None, None).await
        }
        ProbeClass::TokenRejected => Err(CliError::failure(anyhow!(
            "{url} rejected the token; nothing was saved"
        ))
        .with_status(ExitStatus::AuthorizationNeeded)
        .with_hint("get a new token from the server's operator and add again")),
        ProbeClass::TokenOnly if !args.no_authorize => Err(refusal(
            &probe,
            "this server needs an access token; nothing was saved",
        )),
        ProbeClass::TokenOnly => {
            let rec = st
                .create_server(&new(AuthKind::Token), None)
                .await
                .map_err(store::store_error)?;
            report(&st, &rec, class, None, None, Some(probe.next_step.clone())).await
        }
        ProbeClass::Oauth if args.no_authorize => {
            let rec = st
                .create_server(&new(AuthKind::Oauth), None)
                .await
                .map_err(store::store_error)?;
            report(&st, &rec, class, None, None, None).await
        }
        ProbeClass::Oauth => {
            let rec = st
                .create_server(&new(AuthKind::Oauth), None)
                .await
                .map_err(store::store_error)?;
            // Before the flow completes, any failure takes the row (and its headers) away.
            let grant = match authorize_server(&st, &rec, options, quiet).await {
                Ok(g) => g,
                Err(e) => {
                    if let Err(rollback) = st.purge_server(&rec.id).await {
                        tracing::warn!(error = %rollback, "rolling back the new server failed");
                    }
                    return Err(e);
                }
            };
            // After it, the server stays whatever happens.
            let tools = verify(&st, &rec, &http).await;
            let note = tools.as_ref().err().cloned();
            report(&st, &rec, class, tools.ok(), Some(grant.issuer), note).await
        }
        ProbeClass::Unreachable | ProbeClass::Error if args.force => {
            let auth = if token.is_some() {
                AuthKind::Token
            } else {
                AuthKind::None
            };
            let cred = token.map(|t| Credential::Bearer { token: t });
            let rec = st
                .create_server(&new(auth), cred.as_ref())
                .await
                .map_err(store::store_error)?;
            st.set_status(&rec.id, LastStatus::Error, Some(&probe_line(&probe)))
                .await
                .map_err(store::store_error)?;
            report(&st, &rec, class, None, None, Some(probe_line(&probe))).await
        }
        ProbeClass::Unreachable | ProbeClass::Error => Err(refusal(
            &probe,
            &format!(
                "{url} is {}; nothing was saved (--force saves it anyway)",
                if probe.class == ProbeClass::Unreachable {
                    "unreachable"
                } else {
                    "not usable"
                }
            ),
        )),
    }?;
    let Some(old) = replacing else {
        return Ok(added);
    };
    // The old server's tokens are revoked first, as `remove` does.
    let revoked = match st.credential(&old.id).await {
        Ok(Some(stored)) => Some(super::authorize::revoke_stored(&st, &stored.credential).await?),
        _ => None,
    };
    let rec = st
        .replace_server(&old.id, &added.id)
        .await
        .map_err(store::store_error)?;
    let mut added = report(
        &st,
        &rec,
        &added.class,
        added.tools,
        added.issuer,
        added.note,
    )
    .await?;
    added.replaced = Some(match revoked {
        Some(r) => format!("replaced the saved {final_name} ({}); {r}", old.url),
        None => format!("replaced the saved {final_name} ({})", old.url),
    });
    Ok(added)
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
    match &p.detail {
        Some(d) => format!("{}: {d} (next: {})", p.class.as_str(), p.next_step),
        None => format!("{} (next: {})", p.class.as_str(), p.next_step),
    }
}

/// Connect with the new credential and list tools; the outcome becomes the status.
async fn verify(
    st: &SqliteStore,
    rec: &ServerRecord,
    http: &keyway::http::WireClient,
) -> Result<usize, String> {
    let tokens = StoredTokens::new(Arc::new(st.clone()), &rec.id);
    let _waiting = crate::progress::Waiting::start(format!(
        "listing {}'s tools with the new credentials",
        rec.name
    ));
    let result = async {
        let conn = Connection::open_transport(
            &rec.url,
            http.clone(),
            tokens,
            Vec::new(),
            store::choice(rec.transport),
        )
        .await
        .map_err(|e| e.one_line())?;
        let spoken = conn.server().protocol_version;
        if let Err(e) = st.set_protocol(&rec.id, Some(&spoken)).await {
            tracing::debug!(error = %e, "the server's protocol revision was not saved");
        }
        let n = conn
            .list_tools()
            .await
            .map(|t| t.len())
            .map_err(|e| e.to_string());
        conn.close().await;
        n
    }
    .await;
    let (status, error) = match &result {
        Ok(_) => (LastStatus::Connected, None),
        Err(e) => (LastStatus::Error, Some(e.as_str())),
    };
    let _ = st.set_status(&rec.id, status, error).await;
    result
}

async fn report(
    st: &SqliteStore,
    rec: &ServerRecord,
    class: &str,
    tools: Option<usize>,
    issuer: Option<String>,
    note: Option<String>,
) -> Result<Added, CliError> {
    let rec = st
        .server(&rec.id)
        .await
        .map_err(store::store_error)?
        .unwrap_or_else(|| rec.clone());
    // The same row `list` and `show` print, so the three never disagree.
    let (row, _) = super::servers::row(st, &rec).await?;
    Ok(Added {
        name: rec.name.clone(),
        id: rec.id.clone(),
        url: rec.url.clone(),
        class: class.to_owned(),
        auth: row.auth,
        state: row.state.as_str().to_owned(),
        action: row.action.as_str().to_owned(),
        tools,
        issuer,
        note,
        replaced: None,
    })
}

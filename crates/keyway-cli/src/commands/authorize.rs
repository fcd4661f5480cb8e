//! `keyway authorize NAME` and `keyway logout NAME`, and the authorization step
//! `keyway add` shares.

use anyhow::{Context, anyhow};
use keyway::{
    auth::{AuthOptions, Grant},
    manage::AuthorizeError,
    store::{AnyStore, Credential, LastStatus, ServerRecord, Store, StoreError},
};

use super::{auth, store};
use crate::{
    cli::{AuthorizeArgs, NameArg},
    exit::CliError,
    printer::Printer,
    settings::Settings,
};

pub async fn run(
    args: AuthorizeArgs,
    settings: &Settings,
    printer: &Printer,
) -> Result<(), CliError> {
    let options = auth::options(&args.auth)?;
    let store = store::open(settings).await?;
    let server = store::find(&store, &args.name).await?;
    if server.auth == keyway::store::AuthKind::Token {
        let client = keyway::auth::ClientOptions {
            client_id: args.auth.client_id.clone(),
            client_metadata_url: args.auth.client_metadata_url.clone(),
            ..Default::default()
        };
        refuse_token_only(&store, &server, client).await?;
    }
    let grant = authorize_server(&store, &server, options, printer.quiet()).await?;
    if printer.json_mode() {
        printer.json(&serde_json::json!({
            "name": server.name,
            "issuer": grant.issuer,
            "scopes": grant.requested_scopes,
            "state": "authorized",
        }))?;
    } else {
        printer.result(format!(
            "authorized {} (issuer {})",
            server.name, grant.issuer
        ));
    }
    Ok(())
}

/// A server saved with a static token whose server offers no OAuth sign-in: say so,
/// rather than try to register with an authorization server that is not there.
async fn refuse_token_only(
    store: &AnyStore,
    server: &ServerRecord,
    client: keyway::auth::ClientOptions,
) -> Result<(), CliError> {
    let http =
        keyway::http::WireClient::new(&Default::default()).context("building the HTTP client")?;
    let url = store::saved_url(server)?;
    let opts = keyway::probe::ProbeOptions {
        headers: store::saved_headers(store, server).await?,
        transport: store::choice(server.transport),
        client,
        ..Default::default()
    };
    let p = super::probe::run_probe(&http, url.as_str(), &opts).await;
    if p.class == keyway::probe::ProbeClass::TokenOnly {
        return Err(CliError::failure(anyhow!(
            "{} takes an access token only: its server offers no OAuth sign-in to authorize with",
            server.name
        ))
        .with_status(crate::exit::ExitStatus::Usage)
        .with_hint(format!(
            "`keyway set-token {}` replaces its token (get one from the server's operator)",
            server.name
        )));
    }
    Ok(())
}

/// Run the flow for a saved server and save what it yields
/// ([`keyway::manage::authorize`]).
pub async fn authorize_server(
    store: &AnyStore,
    server: &ServerRecord,
    options: AuthOptions,
    quiet: bool,
) -> Result<Grant, CliError> {
    let http =
        keyway::http::WireClient::new(&Default::default()).context("building the HTTP client")?;
    keyway::manage::authorize(store, &http, server, options, auth::reporter(quiet))
        .await
        .map_err(authorize_error)
}

/// An [`AuthorizeError`] with what to do next.
pub fn authorize_error(e: AuthorizeError) -> CliError {
    match e {
        AuthorizeError::Connect(e) => CliError::connect(e),
        AuthorizeError::Auth(e) => auth::error(e),
        AuthorizeError::Save(e) => auth::client_error(e),
        AuthorizeError::Store(e) => store::store_error(e),
        other => CliError::failure(anyhow!(other)),
    }
}

pub async fn logout(args: NameArg, settings: &Settings, printer: &Printer) -> Result<(), CliError> {
    let store = store::open(settings).await?;
    let server = store::find(&store, &args.name).await?;
    let stored = match store.credential(&server.id).await {
        Ok(s) => s,
        // It cannot be used, nor revoked: forgetting it is all there is to do.
        Err(StoreError::Unreadable { .. }) => None,
        Err(e) => return Err(store::store_error(e)),
    };
    let revoked = match &stored {
        None if !has_credential(&store, &server.id).await? => {
            printer.result(format!("{} has no credential to forget", server.name));
            return Ok(());
        }
        None => "not revoked: the stored credential could not be opened".to_owned(),
        Some(stored) => keyway::manage::revoke(&store, &stored.credential)
            .await
            .to_string(),
    };
    store
        .forget_credential(&server.id)
        .await
        .map_err(store::store_error)?;
    store
        .set_status(&server.id, LastStatus::NeedsAuth, None)
        .await
        .map_err(store::store_error)?;
    if printer.json_mode() {
        printer.json(
            &serde_json::json!({"name": server.name, "forgotten": true, "revocation": revoked}),
        )?;
    } else if matches!(
        stored.as_ref().map(|s| &s.credential),
        Some(Credential::Bearer { .. })
    ) {
        printer.result(format!(
            "forgot the static token of {name} (keyway cannot revoke a static token: revoke it where it was issued); `keyway set-token {name}` gives it a new one",
            name = server.name
        ));
    } else {
        printer.result(format!(
            "logged out of {}: tokens forgotten, {revoked}",
            server.name
        ));
    }
    Ok(())
}

/// Whether a credential row exists, readable or not.
async fn has_credential(store: &AnyStore, server_id: &str) -> Result<bool, CliError> {
    store
        .has_credential(server_id)
        .await
        .map_err(store::store_error)
}

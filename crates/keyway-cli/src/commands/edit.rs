//! `keyway edit NAME`: change a saved server's URL, transport, headers or name.
//! A new URL drops the server's tokens (they were issued for the old one; they are
//! revoked first, as logout does), so it is authorized again for the new one.

use anyhow::anyhow;
use keyway::{
    Secret,
    store::{AuthKind, ServerChange, Store, Transport},
};

use super::store;
use crate::{
    cli::{EditArgs, TransportArg},
    exit::CliError,
    printer::Printer,
    settings::Settings,
};

pub async fn run(args: EditArgs, settings: &Settings, printer: &Printer) -> Result<(), CliError> {
    let st = store::open(settings).await?;
    let rec = store::find(&st, &args.name).await?;
    let mut change = ServerChange::default();
    let mut notes = Vec::new();

    if let Some(name) = &args.rename {
        if name.trim().is_empty() || name.chars().any(char::is_control) {
            return Err(store::usage(format!("--rename {name:?}: use a plain name")));
        }
        if *name != rec.name {
            change.name = Some(name.clone());
        }
    }
    if let Some(name) = &change.name
        && store::names(&st).await?.contains(name)
    {
        // Before anything is revoked below.
        return Err(store::store_error(keyway::store::StoreError::NameTaken(
            name.clone(),
        )));
    }
    let new_url = match &args.url {
        Some(url) if url != &rec.url => {
            Some(url::Url::parse(url).map_err(|e| store::usage(format!("--url {url}: {e}")))?)
        }
        _ => None,
    };
    if let Some(t) = args.transport {
        change.transport = Some(match t {
            TransportArg::Http => Transport::Http,
            TransportArg::Sse => Transport::Sse,
            TransportArg::Auto => {
                return Err(store::usage(
                    "--transport auto is for add; edit takes http or sse".into(),
                ));
            }
        });
    }
    let new_headers = store::headers(&crate::cli::CredentialArgs {
        token: None,
        headers: args.headers.clone(),
    })?;
    if args.headers.iter().any(|h| {
        h.split_once(':')
            .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case("authorization"))
    }) {
        return Err(store::usage(format!(
            "the token is not a header to edit: keyway set-token {}",
            rec.name
        )));
    }
    if !new_headers.is_empty() || !args.remove_header.is_empty() {
        let mut headers: Vec<(String, Secret)> =
            st.headers(&rec.id).await.map_err(store::store_error)?;
        for gone in &args.remove_header {
            let before = headers.len();
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case(gone));
            if headers.len() == before {
                return Err(store::usage(format!(
                    "{} has no header {gone}{}",
                    rec.name,
                    if rec.header_names.is_empty() {
                        String::new()
                    } else {
                        format!(" (it has: {})", rec.header_names.join(", "))
                    }
                )));
            }
        }
        for (name, value) in new_headers {
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name.as_str()));
            headers.push((name.as_str().to_owned(), value));
        }
        // A server saved for its headers alone is a token server only while it has
        // some (or a token).
        if rec.auth == AuthKind::None && !headers.is_empty() {
            change.auth = Some(AuthKind::Token);
        }
        change.headers = Some(headers);
    }
    if let Some(parsed) = &new_url {
        // What goes to the new URL: the headers it will have (a static token does
        // not follow a new URL, see below).
        let has_secrets = match &change.headers {
            Some(h) => !h.is_empty(),
            None => !rec.header_names.is_empty(),
        };
        store::check_secrets_destination(parsed, has_secrets, args.allow_http)?;
        change.url = args.url.clone();
    }
    let per_person = match (args.per_person, args.shared) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
    .filter(|p| *p != rec.per_person);
    let nothing = change.name.is_none()
        && change.url.is_none()
        && change.transport.is_none()
        && change.headers.is_none();
    if nothing && per_person.is_none() {
        if args.per_person || args.shared {
            printer.result(format!(
                "{} is already {}",
                rec.name,
                if rec.per_person {
                    "per-person"
                } else {
                    "shared"
                }
            ));
            return Ok(());
        }
        return Err(store::usage(
            "nothing to change: give --url, --transport, --header, --remove-header, --rename, --per-person or --shared"
                .into(),
        ));
    }

    if change.url.is_some()
        && let Ok(Some(stored)) = st.credential(&rec.id).await
    {
        let bearer = matches!(stored.credential, keyway::store::Credential::Bearer { .. });
        let revoked = keyway::manage::revoke(&st, &stored.credential).await;
        notes.push(if bearer {
            // A token given for one server is not sent to another.
            format!(
                "its static token was for the old URL and is gone: keyway set-token {} gives the new one",
                change.name.as_deref().unwrap_or(&rec.name)
            )
        } else {
            format!("its credential was for the old URL and is gone ({revoked})")
        });
    }
    if let Some(p) = per_person {
        st.set_per_person(&rec.id, p)
            .await
            .map_err(store::store_error)?;
        notes.push(if p {
            "behind a team gateway, each person authorizes it as themselves".to_owned()
        } else {
            "behind a team gateway, everyone uses its own credential".to_owned()
        });
    }
    let updated = if nothing {
        store::find(&st, &rec.id).await?
    } else {
        st.update_server(&rec.id, &change)
            .await
            .map_err(store::store_error)?
    };
    let (row, _) = super::servers::row(&st, &updated).await?;
    if printer.json_mode() {
        let mut v = serde_json::to_value(&row).map_err(|e| anyhow!("{e}"))?;
        v["notes"] = serde_json::json!(notes);
        printer.json(&v)?;
        return Ok(());
    }
    printer.result(format!("edited {} ({})", updated.name, updated.url));
    if change.name.is_some() {
        printer.step(format!("  name      {} (was {})", updated.name, rec.name));
    }
    if change.transport.is_some() {
        printer.step(format!("  transport {}", updated.transport.as_str()));
    }
    if change.headers.is_some() {
        printer.step(format!(
            "  headers   {}",
            if updated.header_names.is_empty() {
                "-".to_owned()
            } else {
                updated.header_names.join(", ")
            }
        ));
    }
    for n in notes {
        printer.step(format!("  note      {n}"));
    }
    if let Some(cmd) = super::servers::action_command(row.action, &updated.name) {
        printer.step(format!("  next      {cmd}"));
    }
    Ok(())
}

//! `keyway set-token NAME`: replace a saved server's static token.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, anyhow};
use keyway::{
    Secret,
    probe::{ProbeClass, ProbeOptions},
    store::{AuthKind, LastStatus, Store},
};

use super::{probe::run_probe, store};
use crate::{
    cli::SetTokenArgs,
    exit::{CliError, ExitStatus},
    printer::Printer,
    settings::Settings,
};

pub async fn set_token(
    args: SetTokenArgs,
    settings: &Settings,
    printer: &Printer,
) -> Result<(), CliError> {
    let st = store::open(settings)?;
    let server = store::find(&st, &args.name).await?;
    if server.auth == AuthKind::Oauth {
        return Err(CliError::failure(anyhow!(
            "{} signs in with OAuth: keyway gets and refreshes its tokens itself",
            server.name
        ))
        .with_status(ExitStatus::Usage)
        .with_hint(format!(
            "`keyway authorize {}` signs in again; to use a static token instead, `keyway add URL --force --token ...` replaces it",
            server.name
        )));
    }
    let token = read_token(args.from.as_deref())?;
    let url = store::saved_url(&server)?;
    store::check_secrets_destination(&url, true, false)?;
    let headers = store::saved_headers(&st, &server).await?;
    let http =
        keyway::http::WireClient::new(&Default::default()).context("building the HTTP client")?;
    let opts = ProbeOptions {
        token: Some(token.clone()),
        headers,
        transport: store::choice(server.transport),
        ..Default::default()
    };
    let p = run_probe(&http, url.as_str(), &opts).await;
    let (status, checked) = match p.class {
        ProbeClass::Open => (LastStatus::Connected, format!("{} tools", p.tools.len())),
        ProbeClass::TokenRejected => {
            return Err(CliError::failure(anyhow!(
                "{} refused the new token; the one it had is kept",
                server.name
            ))
            .with_status(ExitStatus::AuthorizationNeeded)
            .with_hint(match p.detail {
                Some(d) => format!("the server said: {d}"),
                None => "check the token with whoever issued it".to_owned(),
            }));
        }
        _ if args.no_check => (
            LastStatus::Error,
            format!(
                "not checked: {}",
                p.detail.as_deref().unwrap_or("the server did not answer")
            ),
        ),
        _ => {
            return Err(CliError::failure(anyhow!(
                "the new token could not be tried on {}: {}; nothing was changed",
                server.name,
                p.detail.as_deref().unwrap_or("the server did not answer")
            ))
            .with_hint("--no-check saves it without trying it"));
        }
    };
    st.set_token(&server.id, &token)
        .await
        .map_err(store::store_error)?;
    st.set_status(
        &server.id,
        status,
        (status == LastStatus::Error).then_some(checked.as_str()),
    )
    .await
    .map_err(store::store_error)?;
    if printer.json_mode() {
        printer.json(&serde_json::json!({
            "name": server.name,
            "saved": true,
            "checked": status == LastStatus::Connected,
            "tools": p.tools.len(),
        }))?;
    } else {
        printer.result(format!("{} has a new token ({checked})", server.name));
    }
    Ok(())
}

/// The token from `@FILE`, KEYWAY_TOKEN, or stdin (`-`, the default). A value on the
/// command line is refused: other users of the machine can read it (`ps`).
fn read_token(from: Option<&str>) -> Result<Secret, CliError> {
    let env = std::env::var("KEYWAY_TOKEN").ok().filter(|t| !t.is_empty());
    let raw = match (from, env) {
        (Some(path), _) if path.starts_with('@') => store::secret_value(path, "the token")?,
        (None, Some(t)) => Secret::new(t),
        (Some("-") | None, _) => read_stdin()?,
        (Some(_), _) => {
            return Err(store::usage(
                "a token on the command line can be read by other users of this machine (ps): give it on stdin, as @FILE, or in KEYWAY_TOKEN".into(),
            ));
        }
    };
    let token = raw.expose().trim();
    if token.is_empty() {
        return Err(store::usage("no token was given".into()));
    }
    if http::HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
        return Err(store::usage(
            "the token has characters an HTTP header cannot carry (its text is not shown)".into(),
        ));
    }
    Ok(Secret::new(token.to_owned()))
}

/// One line from stdin; on a terminal, asked for on stderr and not echoed.
fn read_stdin() -> Result<Secret, CliError> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    if terminal {
        eprint!("Paste the token, then press Enter (it is not shown): ");
    }
    let _echo = terminal.then(NoEcho::new).flatten();
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| anyhow!("reading the token from stdin: {e}"))?;
    if terminal {
        eprintln!();
    }
    Ok(Secret::new(line))
}

/// Terminal echo turned off until dropped (Unix; elsewhere the token is echoed).
struct NoEcho {
    #[cfg(unix)]
    saved: rustix::termios::Termios,
}

impl NoEcho {
    #[cfg(unix)]
    fn new() -> Option<Self> {
        use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        tcsetattr(&stdin, OptionalActions::Now, &quiet).ok()?;
        Some(Self { saved })
    }

    #[cfg(not(unix))]
    fn new() -> Option<Self> {
        None
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        #[cfg(unix)]
        {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                &self.saved,
            );
        }
    }
}

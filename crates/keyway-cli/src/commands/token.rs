//! `keyway set-token NAME`: replace a saved server's static token.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, anyhow};
use keyway::{
    Secret,
    manage::{SetTokenError, TokenCheck},
    store::AuthKind,
};

use super::store;
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
    let st = store::open(settings).await?;
    let server = store::find(&st, &args.name).await?;
    if server.auth == AuthKind::Oauth {
        return Err(CliError::failure(anyhow!(SetTokenError::OAuthServer {
            name: server.name.clone()
        }))
        .with_status(ExitStatus::Usage)
        .with_hint(format!(
            "`keyway authorize {}` signs in again; to use a static token instead, `keyway add URL --force --token ...` replaces it",
            server.name
        )));
    }
    let token = read_token(args.from.as_deref())?;
    let http =
        keyway::http::WireClient::new(&Default::default()).context("building the HTTP client")?;
    let checked = keyway::manage::set_token(
        &st,
        &http,
        &server,
        &token,
        !args.no_check,
        &crate::progress::Spinners,
    )
    .await
    .map_err(|e| match e {
        SetTokenError::Rejected { ref detail, .. } => {
            let hint = match detail {
                Some(d) => format!("the server said: {d}"),
                None => "check the token with whoever issued it".to_owned(),
            };
            CliError::failure(anyhow!(e))
                .with_status(ExitStatus::AuthorizationNeeded)
                .with_hint(hint)
        }
        SetTokenError::NotTried { .. } => {
            CliError::failure(anyhow!(e)).with_hint("--no-check saves it without trying it")
        }
        SetTokenError::Insecure(_) => store::usage(e.to_string()).with_hint(
            "use the server's https URL; --allow-http sends them anyway (development only)",
        ),
        SetTokenError::Store(e) => store::store_error(e),
        other => CliError::failure(anyhow!(other)),
    })?;
    let (accepted, tools, said) = match &checked {
        TokenCheck::Accepted { tools } => (true, *tools, format!("{tools} tools")),
        TokenCheck::Unchecked { why } => (false, 0, why.clone()),
    };
    if printer.json_mode() {
        printer.json(&serde_json::json!({
            "name": server.name,
            "saved": true,
            "checked": accepted,
            "tools": tools,
        }))?;
    } else {
        printer.result(format!("{} has a new token ({said})", server.name));
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
